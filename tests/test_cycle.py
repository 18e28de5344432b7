"""The cycle's critical path and its tails, through the seams (no sleeping, no network).

The network is behind `wanmon.cycle.Peers` (ICMP, SNMP, InfluxDB drain, SMTP
delivery) and time behind `now`: these tests pass fakes whose answers and
delays the test controls with events, so a "hung InfluxDB" is a drain that
blocks until the test lets it go. Real peers are exercised end to end in
test_publish_faults.py, test_alerts_integration.py, test_snmp_integration.py
and test_daemon.py.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from wanmon.config import load
from wanmon.cycle import Peers, backoff_s, publish, refresh_snmp, run_check, run_cycle, run_snmp, snmp_due
from wanmon.model import DeviceState
from wanmon.errors import StoreBusyError
from wanmon.probes.icmp import summarize
from wanmon.probes.snmp import SnmpResult
from wanmon.store import CycleLock, Store

T0 = 1_800_000_000.0  # a fixed wall clock for the tests


def config(tmp: Path, n: int = 4, snmp: bool = True, interval_s: float = 300, extra: str = "") -> Path:
    sites = "\n".join(f"""
[[sites]]
id = "s{i}"
name = "Điểm {i}"
level = "province"
{'' if i == 0 else 'parent = "s0"'}
address = "127.77.0.{i + 1}"
admins = ["a{i}@x.example"]
""" for i in range(n))
    text = f"""
[store]
path = "var/wanmon.db"
[page]
out_dir = "public"
[snmp]
enabled = {'true' if snmp else 'false'}
interval_s = {interval_s}
budget_s = 5
[alerts]
confirm_cycles = 1
recover_cycles = 1
guard_min_sites = 100
{extra}
{sites}
"""
    path = tmp / "sites.toml"
    path.write_text(text, encoding="utf-8")
    return path


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeNet:
    """Answers as the test says; records what was asked."""

    def __init__(self, down: set[str] = frozenset(), snmp_status: dict[str, str] | None = None):
        self.down = set(down)  # addresses without ICMP reply
        self.snmp_status = snmp_status or {}
        self.snmp_asked: list[list[str]] = []
        self.drain_calls = 0
        self.deliver_calls = 0
        self.release = threading.Event()  # a "hung" drain blocks until set
        self.hang = False
        self.draining = threading.Event()

    def peers(self, clock: Clock) -> Peers:
        async def icmp(addresses, spec, progress=None, **kw):
            return [summarize(a, a, 1, [None] if a in self.down else [0.5],
                              "no reply" if a in self.down else None) for a in addresses]

        async def snmp(targets, max_concurrency=256, budget_s=None):
            self.snmp_asked.append([t.host for t in targets])
            out = []
            for t in targets:
                st = self.snmp_status.get(t.host, "ok")
                if st == "ok":
                    out.append(SnmpResult(status="ok", reason=None, ts=clock(), sys_name=f"r-{t.host}",
                                          sys_uptime_ticks=100_000, interfaces=()))
                elif st == "skip":
                    out.append(None)
                else:
                    out.append(SnmpResult(status=st, reason="no response", ts=clock()))
            return out

        def drain(store, spec, budget_s):
            self.drain_calls += 1
            self.draining.set()
            if self.hang:
                self.release.wait(30)

        def deliver(store, spec, budget_s):
            self.deliver_calls += 1

        return Peers(icmp=icmp, snmp=snmp, drain=drain, deliver=deliver)


def statuses(cfg) -> dict[str, str]:
    st = Store.open_readonly(cfg.store_path)
    try:
        return {s.site_id: s.status for s in st.states()}
    finally:
        st.close()


def devices(cfg) -> dict[str, DeviceState]:
    st = Store.open_readonly(cfg.store_path)
    try:
        return st.devices()
    finally:
        st.close()


# -- pure scheduling rules ----------------------------------------------------

def dev(status="ok", last=T0, streak=0) -> DeviceState:
    return DeviceState(site_id="x", status=status, reason=None, last_poll_ts=last, fail_streak=streak,
                       fail_since=last if streak else None)


@pytest.mark.parametrize("status,streak,expect", [
    ("ok", 0, 300), ("timeout", 1, 300), ("timeout", 2, 600), ("timeout", 3, 1200), ("timeout", 4, 2400),
    ("timeout", 5, 3600), ("timeout", 12, 3600), ("auth_error", 6, 300), ("error", 3, 300),
])
def test_backoff_doubles_for_timeouts_up_to_an_hour(status, streak, expect):
    assert backoff_s(dev(status, streak=streak), 300, 3600) == expect


def test_backoff_with_interval_zero_and_a_longer_interval_than_the_cap():
    assert backoff_s(dev("timeout", streak=1), 0, 3600) == 0          # every cycle until it times out twice
    assert backoff_s(dev("timeout", streak=2), 0, 3600) == 120
    assert backoff_s(dev("timeout", streak=9), 7200, 3600) == 7200    # never more often than configured


def test_snmp_due_rules(tmp_path):
    cfg = load(config(tmp_path, 4), secrets=False)
    devs = {
        "s0": replace(dev(last=T0 - 400), site_id="s0"),                      # interval passed: due
        "s1": replace(dev(last=T0 - 100), site_id="s1"),                      # not yet
        "s2": replace(dev("timeout", last=T0 - 400, streak=3), site_id="s2"),  # backed off to 1200 s
        "s3": replace(dev(last=T0 + 3600), site_id="s3"),                     # the clock went back an hour
    }
    assert [s.id for s in snmp_due(cfg, devs, T0)] == ["s0", "s3"]
    assert [s.id for s in snmp_due(cfg, devs, T0 + 900)] == ["s0", "s2", "s1", "s3"]  # oldest first
    assert [s.id for s in snmp_due(cfg, devs, T0, reachable={"s1", "s3"})] == ["s3"]
    assert [s.id for s in snmp_due(cfg, devs, T0, force=True)] == ["s0", "s2", "s1", "s3"]
    assert [s.id for s in snmp_due(cfg, {}, T0, reachable={"s2"})] == ["s2"]          # never polled


# -- the critical path never waits for publishing -----------------------------

def test_page_and_lock_come_before_publishing_and_a_second_check_records_its_cycle(tmp_path):
    path = config(tmp_path, 3, snmp=False, extra="""
[influxdb]
url = "http://127.0.0.1:9"
api = "v1"
""")
    cfg = load(path, secrets=False)
    clock, net = Clock(), FakeNet()
    net.hang = True
    peers = net.peers(clock)
    done = {}
    first = threading.Thread(target=lambda: done.setdefault("a", run_check(cfg, now=clock, peers=peers)))
    first.start()
    try:
        assert net.draining.wait(20), "the first check never reached publishing"
        # The drain hangs: the page is written and the cycle lock is free already.
        page = cfg.path.parent / "public" / "index.html"
        assert page.exists()
        with CycleLock(cfg.store_path):
            pass
        # A second check runs its whole cycle now; its publish sees the first one's lock and skips.
        clock.t += 60
        second = run_check(cfg, now=clock, peers=peers)
        assert second.cycle_id == 2
        assert net.drain_calls == 1, "two publishers ran at once"
        assert publish(cfg, peers=peers).skipped
    finally:
        net.release.set()
        first.join(30)
    assert done["a"].cycle_id == 1
    assert publish(cfg, peers=peers).skipped is None and net.drain_calls == 2


# -- SNMP off the ICMP path ----------------------------------------------------

def test_sites_without_icmp_reply_are_not_snmp_polled(tmp_path):
    cfg = load(config(tmp_path, 4, interval_s=0), secrets=False)
    clock, net = Clock(), FakeNet(down={"127.77.0.3"})
    res = run_check(cfg, now=clock, peers=net.peers(clock), publish_tail=False)
    assert net.snmp_asked == [["127.77.0.1", "127.77.0.2", "127.77.0.4"]]
    assert res.snmp["s2"].status == "not_polled" and "ICMP" in res.snmp["s2"].reason
    assert res.snmp["s0"].status == "ok"
    assert set(devices(cfg)) == {"s0", "s1", "s3"}


def test_an_agent_that_keeps_timing_out_backs_off_and_refresh_polls_it_anyway(tmp_path):
    cfg = load(config(tmp_path, 2, interval_s=60), secrets=False)
    clock, net = Clock(), FakeNet(snmp_status={"127.77.0.2": "timeout"})
    peers = net.peers(clock)
    polls = []
    for _ in range(40):                                  # 40 minutes of cron runs, one a minute
        net.snmp_asked.clear()
        run_check(cfg, now=clock, peers=peers, publish_tail=False)
        polls.append("127.77.0.2" in sum(net.snmp_asked, []))
        clock.t += 60
    minutes = [i for i, p in enumerate(polls) if p]
    # 1st, 2nd timeout at the interval, then 120 s, 240 s, 480 s, 960 s ...
    assert minutes[:6] == [0, 1, 3, 7, 15, 31], minutes
    d = devices(cfg)["s1"]
    assert d.status == "timeout" and d.fail_streak == 6 and d.fail_since == T0
    res = run_check(cfg, now=clock, peers=peers, publish_tail=False)
    assert "no SNMP answer since" in res.snmp["s1"].reason
    net.snmp_asked.clear()
    views = refresh_snmp(cfg, now=clock, peers=peers)
    assert "127.77.0.2" in net.snmp_asked[0] and views["s1"].status == "timeout"
    # it answers again: the streak ends
    net.snmp_status.clear()
    refresh_snmp(cfg, now=clock, peers=peers)
    d = devices(cfg)["s1"]
    assert d.status == "ok" and d.fail_streak == 0 and d.fail_since is None


def test_snmp_after_the_clock_steps_back_an_hour(tmp_path):
    cfg = load(config(tmp_path, 1, interval_s=300), secrets=False)
    clock, net = Clock(), FakeNet()
    peers = net.peers(clock)
    run_check(cfg, now=clock, peers=peers, publish_tail=False)
    clock.t -= 3600
    net.snmp_asked.clear()
    res = run_check(cfg, now=clock, peers=peers, publish_tail=False)
    assert net.snmp_asked, "SNMP stayed not_due after the clock went back"
    assert res.snmp["s0"].status == "ok"
    net.snmp_asked.clear()
    clock.t += 60
    run_check(cfg, now=clock, peers=peers, publish_tail=False)
    assert net.snmp_asked == [], "after the step the interval counts from the new clock"


def test_agents_not_reached_within_the_budget_record_nothing_and_come_first_next_time(tmp_path):
    cfg = load(config(tmp_path, 3, interval_s=300), secrets=False)
    clock, net = Clock(), FakeNet(snmp_status={"127.77.0.3": "skip"})
    peers = net.peers(clock)
    res = run_check(cfg, now=clock, peers=peers, publish_tail=False)
    assert res.snmp["s2"].status == "not_polled" and "budget" in res.snmp["s2"].reason
    assert "s2" not in devices(cfg)
    net.snmp_status.clear()
    net.snmp_asked.clear()
    clock.t += 60
    run_check(cfg, now=clock, peers=peers, publish_tail=False)
    assert net.snmp_asked == [["127.77.0.3"]]


def test_a_second_snmp_poll_is_skipped_while_one_runs(tmp_path):
    cfg = load(config(tmp_path, 2, interval_s=0), secrets=False)
    clock, net = Clock(), FakeNet()
    peers = net.peers(clock)
    run_check(cfg, now=clock, peers=peers, snmp_tail=False, publish_tail=False)
    from wanmon.store import SnmpLock

    with SnmpLock(cfg.store_path):
        assert asyncio.run(run_snmp(cfg, now=clock, peers=peers)) is None
        with pytest.raises(StoreBusyError):
            refresh_snmp(cfg, now=clock, peers=peers)


def test_a_reboot_seen_by_snmp_reaches_the_next_cycles_alerts(tmp_path):
    cfg = load(config(tmp_path, 1, interval_s=0), secrets=False)
    clock, net = Clock(), FakeNet()
    peers = net.peers(clock)
    run_check(cfg, now=clock, peers=peers, publish_tail=False)
    clock.t += 60

    async def rebooted(targets, max_concurrency=256, budget_s=None):  # uptime 10 s: it restarted
        return [SnmpResult(status="ok", reason=None, ts=clock(), sys_name="r", sys_uptime_ticks=1000, interfaces=())
                for _ in targets]

    refresh_snmp(cfg, now=clock, peers=replace(peers, snmp=rebooted))   # seen outside a cycle
    clock.t += 60
    res = asyncio.run(run_cycle(cfg, now=clock, peers=peers))
    kinds = [k for m in res.mails for k in m.kinds]
    assert "reboot" in kinds, res.mails
    # the figures come with the event (uptime 1,000 s at the poll before, 10 s now), in the mail's language
    mail = next(m for m in res.mails if "reboot" in m.kinds)
    assert "thời gian chạy 16 phút ở lần hỏi trước, nay 10 giây" in mail.text, mail.text
    clock.t += 60
    res = asyncio.run(run_cycle(cfg, now=clock, peers=peers))
    assert not any("reboot" in m.kinds for m in res.mails), "the same reboot was notified twice"
