"""A change in the future, applied at its instant by a running `wanmon run` (issue 23, acceptance 4).

The real daemon in the lab's client namespace (tests/test_daemon.py), real ICMP to hosts in
the lab (tests/test_alerts_integration.py: /32 addresses that stop answering), a real SMTP
server (tests/smtp_server.py). sites.toml says that at T the commune xa is re-homed from
huyen-cu (down) to huyen-moi (up) and gets other admins.

The daemon's clock is libfaketime's, read from a file the test writes (FAKETIME_TIMESTAMP_FILE,
"start at" form): it starts an hour before T and runs at the real pace; the test moves it past
T at once when it has seen what happens before T. So no cycle can reach T early and none after
the move is before it, however slow the machine (no wall-clock window between the processes).
The monotonic clock is left real: asyncio's timers keep running, and the daemon sees a wall-clock
step, as after NTP, and re-plans its jobs from the new time.

Before T: xa's outage is suppressed (unreachable behind huyen-cu, whose DOWN lists it); its old
admins are told once that it is cut off, nobody gets a DOWN for it. From T: its own DOWN, on
its third cycle from T, to its new admins and the NOC, and nothing to the old ones.
"""

from __future__ import annotations

import email
import email.policy
import glob
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prereq
from test_alerts_integration import (
    CYCLE_DONE,
    NOC,
    alerts_json,
    base_sites,
    hosts,  # noqa: F401 - a fixture
    site_toml,
    smtp,  # noqa: F401 - a fixture
    store_query,
    write_config,
)
from test_daemon import daemons, lab  # noqa: F401 - fixtures
from test_dated_agent import change

# libfaketime for a threaded process (the daemon's worker threads read the clock too)
LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")
                               + glob.glob("/usr/local/lib/faketime/libfaketimeMT.so.1"))), None)
pytestmark = prereq.needs(LIBFAKETIME is not None, "libfaketimeMT.so.1 (libfaketime)", prereq.FAKETIME)


class FileClock:
    """The clock of the processes started with `prefix`: "start at" `ts`, moved by set(ts)."""

    def __init__(self, path: Path, ts: float):
        self.path = path
        self.set(ts)
        # the file read at every clock call; the monotonic clock real (with it real, this
        # libfaketime makes time.sleep() fail with EINVAL: the daemon without InfluxDB never sleeps)
        self.prefix = ("env", f"LD_PRELOAD={LIBFAKETIME}", f"FAKETIME_TIMESTAMP_FILE={path}",
                       "FAKETIME_NO_CACHE=1", "FAKETIME_DONT_FAKE_MONOTONIC=1")

    def set(self, ts: float) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("@" + datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") + "\n")
        tmp.replace(self.path)  # read whole or not at all


def parsed(m) -> email.message.EmailMessage:
    """A received message as the standard library's parser reads its raw bytes."""
    return email.message_from_bytes(m.raw, policy=email.policy.default)


def test_a_change_in_the_future_moves_suppression_and_mail_at_its_instant(lab, hosts, smtp, daemons,  # noqa: F811
                                                                          tmp_path):
    old_p, new_p, xa = hosts.new(), hosts.new(), hosts.new()
    start = math.ceil(time.time() / 3600) * 3600 + 2 * 86400  # the daemon's clock: two days ahead
    T = start + 3600
    name = "UBND xã Đông Cứu"
    sites = (base_sites()
             + site_toml("huyen-cu", "UBND huyện Cũ", "district", old_p, ["cu@huyen.example"],
                         district="Huyện Cũ", parent="core")
             + site_toml("huyen-moi", "UBND huyện Mới", "district", new_p, ["moi@huyen.example"],
                         district="Huyện Mới", parent="core")
             + site_toml("xa", name, "commune", xa, ["cu@xa.example"], district="Huyện Cũ", parent="huyen-cu")
             + change(T, parent="huyen-moi", admins=["moi@xa.example", "it@xa.example"]))
    cfg = write_config(tmp_path, smtp, sites, interval_s=1, grace_s=10)
    hosts.down(old_p, xa)
    clock = FileClock(tmp_path / "faketime.rc", start)
    d = daemons(lab, cfg, tmp_path / "daemon.log", prefix=clock.prefix)

    # before T: huyen-cu's DOWN (its admins, the NOC) and xa cut off (its old admins); then
    # three more cycles, still before T: nothing else
    smtp.wait_for(3, timeout=60)
    d.out.wait_for(CYCLE_DONE, 30, start=d.out.mark(), n=3)
    before = {m.message_id: m for m in smtp.snapshot()}
    queued = {o["message_id"]: o for o in alerts_json(lab, cfg)["outbox"]}
    assert set(queued) == set(before), "mail queued before T and not delivered yet"
    got = sorted((tuple(queued[i]["kinds"]), str(parsed(m)["To"])) for i, m in before.items())
    assert got == sorted([(("down",), "cu@huyen.example"), (("down",), NOC), (("unreachable",), "cu@xa.example")])
    assert all(o["created_ts"] < T for o in queued.values())
    cut_off = parsed(next(m for m in before.values() if m.rcpt_tos == ["cu@xa.example"]))
    assert name in cut_off["Subject"] and "UBND huyện Cũ" in cut_off.get_body(("plain",)).get_content()

    # the clock moves past T: the first cycle from then on sees xa's own outage
    clock.set(T + 1)
    smtp.wait_for(6, timeout=60)
    d.out.wait_for(CYCLE_DONE, 30, start=d.out.mark(), n=3)
    assert d.stop() == 0, d.text()[-3000:]
    after = [m for m in smtp.snapshot() if m.message_id not in before]
    queued = {o["message_id"]: o for o in alerts_json(lab, cfg)["outbox"]}
    assert set(queued) == set(before) | {m.message_id for m in after}, "more mail than the DOWN to the new admins"
    mails = [(queued[m.message_id], parsed(m)) for m in after]
    assert sorted(str(p["To"]) for _, p in mails) == sorted(["moi@xa.example", "it@xa.example", NOC])
    for o, p in mails:
        assert o["kinds"] == ["down"] and o["status"] == "sent"
        assert str(p["Subject"]) == f"[wanmon] 1 điểm mất kết nối: {name}", str(p["Subject"])
        assert name in p.get_body(("plain",)).get_content()
    assert not smtp.to("cu@xa.example")[1:], "the old admins were told after T"

    # each cycle under the parent of its instant: unreachable before T, down from the first at T
    seen = store_query(cfg, "SELECT ts, status FROM icmp_samples WHERE site_id = 'xa' ORDER BY ts")
    assert {st for ts, st in seen if ts < T} == {"unreachable"} and len([1 for ts, _ in seen if ts < T]) >= 6
    assert {st for ts, st in seen if ts >= T} == {"down"}
    # and the DOWN on the third cycle from T, not before: composed when that cycle ended
    third = store_query(cfg, "SELECT finished_at FROM cycles WHERE started_at >= ? ORDER BY started_at", (T,))[2][0]
    assert {o["created_ts"] for o, _ in mails} == {third}
