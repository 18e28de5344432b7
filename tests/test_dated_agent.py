"""The agent over time with a dated inventory (issue 23), through the seams: no sleeping, no network.

Cycles, the daemon's jobs, alert mail and the standby's catch-up across the instants of a
dated sites.toml, in-process with an injected clock and fake ICMP/SNMP/relay
(tests/seams.py), so a cycle can fall exactly on an instant. The same thing with a real
`wanmon run`, real ICMP and a real SMTP server: test_dated_daemon.py; real checks and the
report and page across a change: test_dated_lab.py.

* a change of `parent` and `admins` at T applies from the first cycle at or after T, not
  before: suppression behind the old parent before, DOWN mail to the new admins after;
* a site retired while DOWN gets no REMINDER, no RECOVERY and no catch-up, is no open
  problem and no status row any more; a site entering service is handled as a new site;
* the daemon's SNMP job polls what is enabled at its own instant, at the address valid then.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prereq
from conftest import wanmon
from seams import T0, Clock, Net, Sched, query, run
from test_account_lab import FAKETIME
from test_alerts_integration import NOC, base_sites, site_toml, write_config
from test_alerts_seams import MINUTE, SMTP, cron, kinds

from wanmon.config import load
from wanmon.daemon import Daemon
from wanmon.store import Store

HOUR = 3600.0


def iso(ts: float) -> str:
    """An instant as sites.toml writes it (a TOML offset date-time)."""
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _toml(v) -> str:
    if isinstance(v, dict):  # an inline table
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    return json.dumps(v, ensure_ascii=False)  # strings, numbers, booleans and lists read alike


def change(at: float, **keys) -> str:
    """A [[sites.changes]] table for the site written just before it."""
    body = "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items())
    return f"\n[[sites.changes]]\nat = {iso(at)}\n{body}"


def cli_at(path: Path, ts: float, *args: str) -> dict:
    """`wanmon ARGS --json` as a process whose clock reads ts (libfaketime)."""
    fake = prereq.faketime("@" + datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S"))
    r = wanmon("--config", str(path), *args, "--json", cwd=path.parent, env={"TZ": "UTC"}, prefix=fake)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def statuses(path: Path, site_id: str) -> list[tuple[float, str]]:
    db = load(path).store_path
    return query(db, "SELECT ts, status FROM icmp_samples WHERE site_id = ? ORDER BY ts", (site_id,))


# ---------------------------------------------------------------------------


def test_parent_and_admins_change_at_their_instant_in_the_running_daemon(tmp_path):
    """huyen-cu is down, huyen-moi answers; the commune xa (down all along) hangs off huyen-cu
    until T, off huyen-moi from T, with other admins from T. One daemon runs a cycle every
    minute, one of them exactly at T."""
    T = T0 + 10 * MINUTE
    old_p, new_p, xa = "198.18.1.10", "198.18.1.11", "198.18.1.12"  # names for the fake network
    sites = (base_sites()
             + site_toml("huyen-cu", "UBND huyện Cũ", "district", old_p, ["cu@huyen.example"],
                         district="Huyện Cũ", parent="core")
             + site_toml("huyen-moi", "UBND huyện Mới", "district", new_p, ["moi@huyen.example"],
                         district="Huyện Mới", parent="core")
             + site_toml("xa", "UBND xã Đông", "commune", xa, ["cu@xa.example"], district="Huyện Cũ",
                         parent="huyen-cu")
             + change(T, parent="huyen-moi", district="Huyện Mới", admins=["moi@xa.example", "it@xa.example"]))
    path = write_config(tmp_path, None, sites, extra=SMTP)
    clock = Clock()
    net = Net(clock)
    net.down.update({old_p, xa})
    mails: dict[float, list[tuple[str, str]]] = {}

    async def main() -> None:
        net.in_loop()
        d = Daemon(load(path), now=clock, peers=net.peers())
        while clock() < T + 5 * MINUTE:
            clock.advance(MINUTE)
            n = len(net.sent)
            await d.cycle()
            await d.publishing
            mails[clock()] = kinds(net.sent[n:])
        await d._stop(Sched())

    run(main())
    assert T in mails, "no cycle exactly at T"
    # before T: the commune is unreachable behind huyen-cu, whose DOWN lists it; its old admins
    # are told it is cut off, once; nothing to its new admins
    before = [m for ts, got in mails.items() if ts < T for m in got]
    assert sorted(before) == sorted([("down", "cu@huyen.example"), ("down", NOC), ("unreachable", "cu@xa.example")])
    # from T: its own outage, confirmed on its third cycle (T + 2 min), told to its new admins
    assert mails[T] == mails[T + MINUTE] == []
    assert mails[T + 2 * MINUTE] == sorted([("down", "moi@xa.example"), ("down", "it@xa.example"), ("down", NOC)])
    assert not any(to == "cu@xa.example" for ts, got in mails.items() if ts >= T for _, to in got)
    assert all(got == [] for ts, got in mails.items() if ts > T + 2 * MINUTE)
    # each cycle's status under the parent of its instant: unreachable before T, down from T on
    seen = statuses(path, "xa")
    assert [st for ts, st in seen if ts < T] == ["unreachable"] * 9
    assert [st for ts, st in seen if ts >= T] == ["down"] * 6
    row = next(r for r in net.sent if r["recipient"] == "moi@xa.example")
    assert "UBND xã Đông" in row["subject"] and "UBND xã Đông" in row["body_text"]


@prereq.needs(FAKETIME is not None, "faketime (libfaketime)", prereq.FAKETIME)
def test_a_site_retired_while_down_gets_no_more_mail_and_is_no_open_problem(tmp_path):
    """cu goes down and its DOWN is sent; it is retired at R while still down: no REMINDER
    after reminder_h, no RECOVERY when it answers again, no catch-up by a standby; from R it
    is not swept, not an open problem and not in `status`."""
    R = T0 + 10 * MINUTE
    a = "198.18.1.10"
    sites = (base_sites() + site_toml("cu", "Điểm cũ", "district", a, ["cu@x.example"], district="N", parent="core")
             + f"retired_at = {iso(R)}\n")
    path = write_config(tmp_path, None, sites, extra=SMTP)
    assert load(path).timeline.instants == (R,) and [s.id for s in load(path).at(R).active][-1] != "cu"
    clock = Clock()
    net = Net(clock)
    assert cron(path, clock, net) == []
    net.down.add(a)
    got = [cron(path, clock, net) for _ in range(3)]
    assert got[:2] == [[], []] and kinds(got[2]) == [("down", "cu@x.example"), ("down", NOC)]
    while clock() < R - MINUTE:
        assert cron(path, clock, net) == []
    assert [p["id"] for p in cli_at(path, clock(), "alerts")["problems"]] == ["cu"]

    # retired, still down; then 4 h on (reminder_h); then it answers again
    assert cron(path, clock, net) == [] and clock() == R
    assert cron(path, clock, net, advance=4 * HOUR) == []
    net.down.discard(a)
    assert [cron(path, clock, net) for _ in range(3)] == [[], [], []]
    assert max(ts for ts, _ in statuses(path, "cu")) < R, "swept after its retirement"
    assert cli_at(path, clock(), "alerts")["problems"] == []
    assert "cu" not in {s["id"] for s in cli_at(path, clock(), "status")["sites"]}

    # a standby taking over with no news sent by anyone: DOWN for cu before R, nothing from R
    from wanmon.agents import catch_up

    store = Store.open(load(path).store_path)
    try:
        assert [m.notes for m in catch_up(load(path), store, {}, set(), R - 1)] == [(("cu", "down"),)] * 2
        assert catch_up(load(path), store, {}, set(), R) == []
    finally:
        store.close()


@prereq.needs(FAKETIME is not None, "faketime (libfaketime)", prereq.FAKETIME)
def test_a_site_entering_service_is_handled_as_a_new_site(tmp_path):
    """moi is in service from E and does not answer: not swept before E; at E its first cycle,
    its DOWN on its third (confirm_cycles = 3), as for a site just added to the file."""
    E = T0 + 5 * MINUTE
    a = "198.18.1.10"
    sites = (base_sites() + site_toml("moi", "Điểm mới", "district", a, ["moi@x.example"], district="N", parent="core")
             + f"in_service_from = {iso(E)}\n")
    path = write_config(tmp_path, None, sites, extra=SMTP)
    clock = Clock()
    net = Net(clock)
    net.down.add(a)
    while clock() < E - MINUTE:
        assert cron(path, clock, net) == []
    assert statuses(path, "moi") == []
    assert "moi" not in {s["id"] for s in cli_at(path, clock(), "status")["sites"]}
    assert [cron(path, clock, net) for _ in range(2)] == [[], []] and clock() == E + MINUTE
    assert kinds(cron(path, clock, net)) == [("down", "moi@x.example"), ("down", NOC)]
    assert statuses(path, "moi") == [(E, "down"), (E + MINUTE, "down"), (E + 2 * MINUTE, "down")]


def test_the_snmp_job_polls_what_is_enabled_at_its_instant_at_the_address_valid_then(tmp_path):
    """SNMP is off in [snmp]; from T the site sw has its agent on, and a new address. The daemon's
    last cycle ran before T (it resolved the old address); its SNMP job runs after T."""
    T = T0 + 10 * MINUTE
    old, new = "198.18.1.10", "198.18.1.20"
    sites = base_sites() + site_toml("sw", "Điểm SNMP", "district", old, ["sw@x.example"], district="N", parent="core")
    sites += change(T, address=new, snmp={"enabled": True, "interval_s": 0})
    path = write_config(tmp_path, None, sites)
    cfg = load(path)
    assert cfg.snmp_specs == {} and list(cfg.as_of(T).snmp_specs) == ["sw"]
    clock = Clock(T - 30)
    net = Net(clock)

    async def main() -> None:
        net.in_loop()
        d = Daemon(cfg, now=clock, peers=net.peers())
        await d.cycle()
        await d.snmp()
        assert net.polls == [], "SNMP polled before T"
        clock.advance(60)  # T + 30 s: no cycle since the one before T
        await d.cycle()  # (its sweep pings the new address)
        clock.advance(1)
        await d.snmp()
        await d._stop(Sched())

    # the cycle at T + 30 s resolves the new address: poll it. And when only the cycle before T
    # resolved (the next one not run yet), the job resolves again rather than use the old one.
    run(main())
    assert net.polls == [[new]]

    (tmp_path / "b").mkdir()
    cfg2 = load(write_config(tmp_path / "b", None, sites))
    clock2 = Clock(T - 30)
    net2 = Net(clock2)

    async def main2() -> None:
        net2.in_loop()
        d = Daemon(cfg2, now=clock2, peers=net2.peers())
        await d.cycle()  # before T: sw answered at the old address
        assert d.last_ips["sw"] == old
        clock2.advance(60)
        await d.snmp()
        await d._stop(Sched())

    run(main2())
    assert net2.polls == [[new]]


def test_a_view_as_of_another_instant_is_the_loaded_configs(tmp_path):
    """The page gets the cycle's view of the config and asks it for its own instant: the answer
    is the loaded config's view of that instant (its sites and SNMP settings), not a view of
    the view."""
    T = T0 + HOUR
    sites = (base_sites() + site_toml("sw", "Điểm SNMP", "district", "198.18.1.10", [], district="N", parent="core")
             + f"in_service_from = {iso(T)}\nsnmp = {{ enabled = true }}\n")
    cfg = load(write_config(tmp_path, None, sites))
    before, after = cfg.as_of(T - 1), cfg.as_of(T)
    assert "sw" not in {s.id for s in before.sites} and "sw" not in before.snmp_specs
    assert before.as_of(T) is after and after.as_of(T - 1) is before
    assert "sw" in {s.id for s in after.sites} and after.snmp_specs["sw"] is cfg.snmp_specs["sw"]

