"""The daemon's bookkeeping through the seams: `wanmon.daemon.Daemon` driven in an
event loop with fake peers (tests/seams.py) and an injected wall clock.

No process, no signal, no sleeping: a "long" or "hung" cycle is a fake sweep
held on an asyncio event; a hung relay is a delivery held on a threading
event. What is asserted is what an operator sees: cycles recorded in the
store, the log lines, the lock free, nothing recorded twice or half.
The real `wanmon run` (signals, the scheduler's cadence, exit within grace_s
of a real process) is tested end to end in test_daemon.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seams import Clock, Net, Sched, query, run  # noqa: E402
from test_alerts_integration import base_sites, site_toml, write_config  # noqa: E402

from wanmon import daemon as daemon_mod  # noqa: E402
from wanmon.config import load  # noqa: E402
from wanmon.cycle import run_check  # noqa: E402
from wanmon.errors import ConfigError, StoreBusyError  # noqa: E402
from wanmon.store import CycleLock  # noqa: E402

SMTP = '[smtp]\nhost = "127.0.0.1"\nport = 9\nfrom = "wanmon@x.example"\nstarttls = false\nssl = false\n'


def cycles(cfg) -> int:
    return query(cfg.store_path, "SELECT count(*) FROM cycles")[0][0]


def statuses(cfg) -> dict[str, str]:
    return dict(query(cfg.store_path, "SELECT site_id, status FROM site_state"))


def lock_free(cfg) -> bool:
    try:
        with CycleLock(cfg.store_path):
            return True
    except StoreBusyError:
        return False


@pytest.fixture
def setup(tmp_path):
    """A config like test_daemon.py's (core + 4 fillers, a 1 s interval), mail on, a clock, a fake net."""
    def make(grace_s: float = 10, snmp: bool = False):
        path = write_config(tmp_path, None, base_sites(4), interval_s=1, grace_s=grace_s, extra=SMTP)
        if snmp:  # every site's agent, polled every cycle
            text = path.read_text(encoding="utf-8")
            assert "[snmp]\nenabled = false\n" in text
            path.write_text(text.replace("[snmp]\nenabled = false\n", "[snmp]\nenabled = true\ninterval_s = 0\n"),
                            encoding="utf-8")
        clock = Clock()
        return load(path), clock, Net(clock)
    return make


def test_cycles_are_recorded_and_publishing_never_runs_twice_at_once(setup, caplog):
    cfg, clock, net = setup()
    caplog.set_level(logging.INFO, logger="wanmon")

    async def main():
        net.in_loop()
        d = daemon_mod.Daemon(cfg, now=clock, peers=net.peers())
        net.hold_deliver = threading.Event()  # the relay hangs
        await d.cycle()
        assert d.cycles == 1 and d.running is None
        assert await asyncio.to_thread(net.delivering.wait, 10), "no publishing after the cycle"
        first = d.publishing
        for _ in range(2):  # two more cycles while the first publish is stuck
            clock.advance(60)
            await d.cycle()
        assert d.cycles == 3 and d.publishing is first and net.deliveries == 1, "two publishers at once"
        net.hold_deliver.set()
        await first
        clock.advance(60)
        await d.cycle()
        await d.publishing
        assert d.publishing is not first and net.deliveries == 2
        return d

    d = run(main())
    assert cycles(cfg) == 4 and d.cancelled == 0
    assert set(statuses(cfg).values()) == {"up"}
    assert caplog.text.count("publish still running from an earlier cycle") == 2
    assert len([r for r in caplog.records if r.getMessage().startswith("cycle id=") and " took=" in r.getMessage()]) == 4


def test_a_stuck_cycle_is_cancelled_logged_and_the_next_one_runs(setup, caplog, monkeypatch):
    """The stuck limit runs on the event loop's clock (asyncio.timeout); the test moves that clock
    past the limit once the sweep hangs, instead of a limit of 50 ms of real time that a busy
    machine spent before the sweep even began."""
    cfg, clock, net = setup()
    monkeypatch.setattr(daemon_mod, "stuck_after_s", lambda cfg: 60.0)  # as in real life: at least a minute
    caplog.set_level(logging.INFO, logger="wanmon")

    async def main():
        loop = asyncio.get_running_loop()
        real_time, ahead = loop.time, {"s": 0.0}
        loop.time = lambda: real_time() + ahead["s"]  # the loop's clock, which the test moves on
        net.in_loop()
        d = daemon_mod.Daemon(cfg, now=clock, peers=net.peers())
        net.hold_sweep = asyncio.Event()  # never set: this sweep never ends
        cycle = asyncio.create_task(d.cycle())
        await net.sweeping.wait()
        await asyncio.sleep(0)
        assert not cycle.done() and d.cancelled == 0
        ahead["s"] += 61  # a minute passes while the sweep hangs
        await cycle
        assert d.cancelled == 1 and d.cycles == 0 and d.running is None
        assert lock_free(cfg), "the cancelled cycle kept the lock"
        net.hold_sweep = None
        clock.advance(60)
        await d.cycle()
        assert d.cycles == 1 and d.cancelled == 1
        return d

    run(main(), timeout=120)  # seams.run bounds it on the loop clock too: the 61 s moved on count
    assert "cycle stuck: still running after 60 s" in caplog.text and "cancelled" in caplog.text
    assert cycles(cfg) == 1, "the stuck cycle recorded something, or the next one did not run"
    assert query(cfg.store_path, "PRAGMA integrity_check")[0][0] == "ok"


def test_stop_lets_the_running_cycle_finish_within_grace_and_stops_snmp_at_once(setup, caplog):
    """SIGTERM during a cycle: SNMP in flight is cancelled at once (nothing recorded for it),
    the cycle finishes and is recorded, then _stop returns."""
    cfg, clock, net = setup(grace_s=30, snmp=True)
    assert len(cfg.snmp_specs) == 5
    caplog.set_level(logging.INFO, logger="wanmon")
    run_check(cfg, now=clock, peers=net.peers(), snmp_tail=False, publish_tail=False)  # a first cycle

    async def main():
        net.in_loop()
        d = daemon_mod.Daemon(cfg, now=clock, peers=net.peers())
        net.hold_sweep, net.hold_snmp = asyncio.Event(), asyncio.Event()
        clock.advance(60)
        snmp = asyncio.create_task(d.snmp())  # polling (between cycles: it waits for a running one)
        await net.polling.wait()
        cycle = asyncio.create_task(d.cycle())
        await net.sweeping.wait()
        sched = Sched()
        d.stopping.set()
        stop = asyncio.create_task(d._stop(sched))
        await sched.paused.wait()  # _stop runs: it now waits for the cycle
        assert snmp.done() or snmp.cancelling(), "SNMP was not stopped at once"
        assert not cycle.done()
        net.hold_sweep.set()  # the cycle ends (well within grace_s)
        await stop
        assert cycle.done() and not cycle.cancelled() and d.cycles == 1
        assert snmp.done() and sched.shut
        await d.cycle()  # after stop: no new cycle
        assert d.cycles == 1

    t0 = time.monotonic()
    run(main())
    assert time.monotonic() - t0 < 10
    assert cycles(cfg) == 2, "the running cycle was not finished and recorded"
    assert query(cfg.store_path, "SELECT count(*) FROM snmp_device")[0][0] == 0, "the stopped SNMP poll recorded"
    assert "waiting up to 30 s for the running cycle" in caplog.text
    assert "abandoning" not in caplog.text
    assert lock_free(cfg)


def test_stop_abandons_a_cycle_longer_than_grace_at_grace(setup, caplog):
    grace = 0.2
    cfg, clock, net = setup(grace_s=grace)
    caplog.set_level(logging.INFO, logger="wanmon")
    run_check(cfg, now=clock, peers=net.peers(), snmp_tail=False, publish_tail=False)

    async def main():
        net.in_loop()
        d = daemon_mod.Daemon(cfg, now=clock, peers=net.peers())
        net.hold_sweep = asyncio.Event()  # never set
        clock.advance(60)
        cycle = asyncio.create_task(d.cycle())
        await net.sweeping.wait()
        t0 = time.monotonic()
        await d._stop(Sched())
        took = time.monotonic() - t0
        await asyncio.wait([cycle])
        return took, cycle

    took, cycle = run(main())
    assert grace - 0.05 <= took < grace + 0.5, f"_stop took {took:.2f} s with grace_s = {grace}"
    assert cycle.cancelled()
    assert "did not finish within grace_s=0: abandoning it" in caplog.text
    assert cycles(cfg) == 1, "the abandoned cycle left something half-written"
    assert lock_free(cfg)
    assert query(cfg.store_path, "PRAGMA integrity_check")[0][0] == "ok"
    net.hold_sweep = None
    clock.advance(60)
    run_check(cfg, now=clock, peers=net.peers(), snmp_tail=False, publish_tail=False)  # the next run proceeds
    assert cycles(cfg) == 2


def test_sighup_with_a_broken_file_keeps_the_config_in_use_and_a_good_one_is_picked_up(setup, caplog):
    cfg, clock, net = setup()
    caplog.set_level(logging.INFO, logger="wanmon")
    good_text = cfg.path.read_text(encoding="utf-8")
    new_site = site_toml("moi", "Điểm mới", "district", "127.0.0.42", ["moi@x.example"],
                         district="Huyện mới", parent="core")
    # a new site plus an invalid [icmp] count; then a TOML syntax error
    bad_value = good_text.replace("count = 1\n", "count = 0\n") + "\n" + new_site
    bad_syntax = good_text + "\n" + new_site + "\n[[sites\n"

    async def main():
        net.in_loop()
        d = daemon_mod.Daemon(cfg, now=clock, peers=net.peers())
        await d.cycle()
        for broken, why in ((bad_value, "count"), (bad_syntax, "sites.toml:")):
            assert broken != good_text + "\n" + new_site
            cfg.path.write_text(broken, encoding="utf-8")
            with pytest.raises(ConfigError):  # what `wanmon validate` says (exit 2)
                load(cfg.path)
            caplog.clear()
            d.reload()
            assert d.cfg is cfg, "a broken file replaced the configuration"
            assert "SIGHUP" in caplog.text and "keeping the configuration in use" in caplog.text
            assert why in caplog.text and str(cfg.path) in caplog.text, caplog.text
            for _ in range(3):  # still running, on the old configuration
                clock.advance(60)
                await d.cycle()
            assert "moi" not in statuses(cfg)
        cfg.path.write_text(good_text + "\n" + new_site, encoding="utf-8")
        caplog.clear()
        d.reload()
        assert "SIGHUP: reloaded" in caplog.text and len(d.cfg.sites) == len(cfg.sites) + 1
        clock.advance(60)
        await d.cycle()
        return d

    d = run(main())
    assert d.cycles == 8 and cycles(cfg) == 8
    assert statuses(cfg)["moi"] == "up"
    assert set(statuses(cfg)) == {"core", "fill-0", "fill-1", "fill-2", "fill-3", "moi"}


def test_daemon_and_check_share_the_lock(setup, caplog):
    """While the daemon is in a cycle, a check gives up at once (exit 75 in the CLI); while a
    check holds the lock, the daemon skips its cycle, logs it, and runs the next."""
    cfg, clock, net = setup()
    caplog.set_level(logging.INFO, logger="wanmon")

    async def main():
        net.in_loop()
        d = daemon_mod.Daemon(cfg, now=clock, peers=net.peers())
        net.hold_sweep = asyncio.Event()
        cycle = asyncio.create_task(d.cycle())
        await net.sweeping.wait()
        t0 = time.monotonic()
        with pytest.raises(StoreBusyError) as busy:
            await asyncio.to_thread(run_check, cfg, now=clock, peers=Net(clock).peers(), publish_tail=False)
        assert time.monotonic() - t0 < 2.5
        assert "another wanmon cycle is running" in str(busy.value)
        assert f"pid {os.getpid()} " in str(busy.value)
        net.hold_sweep.set()
        await cycle
        net.hold_sweep = None
        with CycleLock(cfg.store_path):  # a cron check is in its cycle
            clock.advance(60)
            await d.cycle()
        assert d.cycles == 1 and d.cancelled == 0
        clock.advance(60)
        await d.cycle()
        return d

    d = run(main())
    assert d.cycles == 2 and cycles(cfg) == 2
    assert "cycle skipped: another wanmon cycle is running" in caplog.text


def test_damage_found_by_the_daily_check_is_told_to_the_noc_once_off_the_cycle(tmp_path, caplog):
    """The daemon's integrity job finds damage: writes stop, the NOC gets one mail (a real SMTP
    server), sent in a thread; the cycles that then fail say why and mail nobody again."""
    from conftest import damage_store
    from smtp_server import SMTPServer
    from test_alerts_integration import NOC

    caplog.set_level(logging.INFO, logger="wanmon")
    with SMTPServer() as smtp:
        cfg = load(write_config(tmp_path, smtp, base_sites(4), interval_s=1))
        clock = Clock()
        net = Net(clock)

        async def main():
            net.in_loop()
            d = daemon_mod.Daemon(cfg, now=clock, peers=net.peers())
            for _ in range(2):
                await d.cycle()
                clock.advance(60)
            if d.publishing is not None:
                await d.publishing
            damage_store(cfg.store_path)
            await d.integrity()
            assert d.telling is not None, "no notice started"
            await d.telling
            first = d.telling
            for _ in range(2):
                clock.advance(60)
                await d.cycle()
            assert d.telling is first or d.telling.done()
            if d.telling is not first:
                await d.telling
            return d

        d = run(main())
        assert d.cycles == 2
        got = smtp.snapshot()
        assert [m.rcpt_tos for m in got] == [[NOC]] and "bị hỏng" in got[0].subject, [m.subject for m in got]
        assert caplog.text.count("was found damaged") >= 2  # the failing cycles say why
