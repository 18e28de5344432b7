"""Alert mails over many cycles and restarts, through the seams: no sleeping, no network.

The scenarios of tests/test_alerts_integration.py whose point is time and
state (reminders after `reminder_h`, restarts of cron runs and of the daemon
without a duplicate), run in-process: the cycle's wall clock is a `Clock` the
test moves, ICMP is a fake whose answers the test sets per address, and mail
"delivery" marks the outbox sent the way a relay that accepts everything
would (tests/seams.py). The configuration is the one the end-to-end tests
write (same sites, same [alerts]), so the same mails are asserted: kinds,
recipients, subjects, and nothing sent twice. Real ICMP and a real SMTP server
keep the end-to-end side honest in test_alerts_integration.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from click.testing import CliRunner  # noqa: E402
from seams import Clock, Net, Sched, run  # noqa: E402
from test_alerts_integration import FROM, NOC, base_sites, site_toml, write_config  # noqa: E402

from wanmon.cli import cli  # noqa: E402
from wanmon.config import load  # noqa: E402
from wanmon.cycle import run_check  # noqa: E402
from wanmon.daemon import Daemon  # noqa: E402

# Never contacted: delivery is the fake relay of tests/seams.py.
SMTP = f'[smtp]\nhost = "127.0.0.1"\nport = 9\nfrom = "{FROM}"\nstarttls = false\nssl = false\ntimeout_s = 5\n'
MINUTE = 60.0


def cron(path: Path, clock: Clock, net: Net, advance: float = MINUTE) -> list[dict]:
    """One `wanmon check` as cron runs it a minute after the last: the file is read again,
    the cycle recorded, the mail delivered; returns the mails delivered by this run."""
    clock.advance(advance)
    n = len(net.sent)
    run_check(load(path), now=clock, peers=net.peers())
    return net.sent[n:]


def daemon_run(path: Path, clock: Clock, net: Net, cycles: int) -> list[dict]:
    """`wanmon run` started, `cycles` cycles a minute apart (each followed by its publishing),
    then stopped as on SIGTERM; returns the mails it delivered."""
    n = len(net.sent)

    async def main() -> None:
        net.in_loop()
        d = Daemon(load(path), now=clock, peers=net.peers())
        for _ in range(cycles):
            clock.advance(MINUTE)
            await d.cycle()
            assert d.publishing is not None, "no publishing after a cycle"
            await d.publishing
        await d._stop(Sched())
        assert d.cycles == cycles

    run(main())
    return net.sent[n:]


def kinds(rows) -> list[tuple[str, str]]:
    """[(kinds joined by '+', recipient)] sorted."""
    return sorted(("+".join(r["kinds"].split(",")), r["recipient"]) for r in rows)


def alerts_json(path: Path) -> dict:
    """`wanmon alerts --json`, in-process."""
    r = CliRunner().invoke(cli, ["--config", str(path), "alerts", "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def assert_mail(row: dict, names: list[str]) -> None:
    assert row["message_id"].startswith("<") and row["message_id"].endswith(">")
    for name in names:
        assert name in row["body_text"] and name in row["body_html"], (name, row["body_text"])


# ---------------------------------------------------------------------------


def test_reminder_while_a_problem_lasts(tmp_path):
    """reminder_h = 4: one REMINDER (admins + NOC) once 4 h have passed since the DOWN, not a
    minute before, and the next only 4 h after that one."""
    a = "198.18.1.10"  # a name for the fake network (tests/seams.py): no packet is ever sent
    sites = base_sites() + site_toml("nhac", "Điểm nhắc", "district", a, ["nhac@x.example"],
                                     district="N", parent="core")
    path = write_config(tmp_path, None, sites, extra=SMTP)
    assert load(path).alerts.reminder_h == 4
    clock = Clock()
    net = Net(clock)
    assert cron(path, clock, net) == []
    net.down.add(a)
    got = [cron(path, clock, net) for _ in range(3)]
    assert got[:2] == [[], []]
    assert kinds(got[2]) == [("down", "nhac@x.example"), ("down", NOC)]
    down_at = clock()
    assert cron(path, clock, net) == [], "right after the DOWN"
    # a minute short of reminder_h: nothing; at reminder_h: the reminder
    assert cron(path, clock, net, advance=down_at + 4 * 3600 - MINUTE - clock()) == []
    rem = cron(path, clock, net)
    assert clock() - down_at == 4 * 3600
    assert kinds(rem) == [("reminder", "nhac@x.example"), ("reminder", NOC)]
    for r in rem:
        assert r["subject"] == "[wanmon] 1 điểm vẫn mất kết nối: Điểm nhắc", r["subject"]
        assert_mail(r, ["Điểm nhắc"])
    assert cron(path, clock, net) == [], "no second reminder before reminder_h"
    for _ in range(3):
        assert cron(path, clock, net, advance=3600) == []
    assert kinds(cron(path, clock, net, advance=3600 - MINUTE)) == [("reminder", "nhac@x.example"), ("reminder", NOC)]
    assert len({r["message_id"] for r in net.sent}) == len(net.sent) == 6


def test_restarts_send_no_duplicate_and_recoveries_still_go(tmp_path):
    """Cron runs (a new process each time) and the daemon started and stopped twice while three
    sites are hard down: one DOWN each, never again; back up under the daemon: one RECOVERY per
    site; cron again afterwards: nothing duplicated."""
    addrs = ["198.18.1.20", "198.18.1.21", "198.18.1.22"]  # the fake network's: never sent to
    ids = ["yen-phong", "gia-binh", "luong-tai"]
    names = ["UBND huyện Yên Phong", "UBND huyện Gia Bình", "UBND huyện Lương Tài"]
    sites = base_sites()
    for sid, name, a in zip(ids, names, addrs):
        sites += site_toml(sid, name, "district", a, [f"qt@{sid}.example"], district=name[12:], parent="core")
    path = write_config(tmp_path, None, sites, interval_s=1, extra=SMTP)
    admins = [f"qt@{s}.example" for s in ids]
    clock = Clock()
    net = Net(clock)

    assert cron(path, clock, net) == []
    net.down.update(addrs)
    first = [m for _ in range(3) for m in cron(path, clock, net)]
    # one mail per recipient per cycle: each site's admins one, the NOC one for all three
    assert kinds(first) == sorted([("down", r) for r in admins + [NOC]])
    [noc] = [m for m in first if m["recipient"] == NOC]
    assert noc["subject"].startswith("[wanmon] 3 điểm mất kết nối: "), noc["subject"]
    assert_mail(noc, names)
    for sid, name in zip(ids, names):
        [own] = [m for m in first if m["recipient"] == f"qt@{sid}.example"]
        assert own["subject"] == f"[wanmon] 1 điểm mất kết nối: {name}"
        assert_mail(own, [name])
    assert {p["id"] for p in alerts_json(path)["problems"]} == set(ids)

    # more cron runs while hard down: nothing new
    for _ in range(2):
        assert cron(path, clock, net) == [], "cron runs while hard down"

    # the daemon, started and stopped twice while they are still down: nothing new
    for _ in range(2):
        assert daemon_run(path, clock, net, 3) == [], "daemon restarts while hard down"
    assert {p["id"] for p in alerts_json(path)["problems"]} == set(ids)

    # back up, under the daemon: one RECOVERY per site (admins + NOC)
    net.down.clear()
    rec = daemon_run(path, clock, net, 3)
    assert {r["kinds"] for r in rec} == {"recovery"}, kinds(rec)
    assert sorted(r["recipient"] for r in rec) == sorted(admins + [NOC])
    # and cron again afterwards: still nothing duplicated
    for _ in range(2):
        assert cron(path, clock, net) == [], "after recovery"
    mids = [m["message_id"] for m in net.sent]
    assert len(mids) == len(set(mids)) == 8
    assert alerts_json(path)["problems"] == []
    box = alerts_json(path)["outbox"]
    assert [o["status"] for o in box] == ["sent"] * 8 and [o["message_id"] for o in box] == mids
