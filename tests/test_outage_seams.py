"""The path at the outage through the seams (tests/seams.py): cycles of `wanmon check` and of
the daemon in-process, an injected clock, a fake ICMP sweep and a fake tracer whose paths the
test sets, mail delivered by a fake relay. What is asserted is what the operator reads: which
sites were traced and when, the page's incident, the DOWN mail's text, the store's records, the
log, and that traces never hold a cycle. The real network (a routed lab, real SMTP) is
tests/test_outage_lab.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seams import Clock, Net, Sched, query, run
from test_alerts_integration import FROM, base_sites, site_toml, write_config

from wanmon import daemon as daemon_mod
from wanmon.config import load
from wanmon.cycle import Peers, run_check, run_traces
from wanmon.model import TraceJob
from wanmon.page import out_dir
from wanmon.store import Store

SMTP = f'[smtp]\nhost = "127.0.0.1"\nport = 9\nfrom = "{FROM}"\nstarttls = false\nssl = false\ntimeout_s = 5\n'
MINUTE = 60.0
CORE = "198.18.1.2"  # base_sites' root, "Trung tâm dữ liệu": the fake network's addresses, never sent to
DISTRICT = "198.18.1.30"
COMMUNES = ["198.18.1.31", "198.18.1.32", "198.18.1.33"]
CARRIER = "198.18.9.1"  # an [[hops]] entry: the carrier's router between the core and the district
HOPS = f'[[hops]]\naddress = "{CARRIER}"\nname = "Router VNPT Gia Bình"\n'


def config(tmp_path: Path, confirm_cycles: int = 3, trace: str = "") -> Path:
    """core and 4 fillers (base_sites), gia-binh under the core, 3 communes under gia-binh;
    test_alerts_integration's [alerts] (confirm_cycles 3, recover_cycles 2, unreachable told)."""
    sites = base_sites(4) + site_toml(
        "gia-binh", "UBND huyện Gia Bình", "district", DISTRICT, ["gb@x.example"], district="Gia Bình", parent="core"
    )
    for k, a in enumerate(COMMUNES):
        sites += site_toml(f"xa-{k}", f"UBND xã {k}", "commune", a, [f"xa{k}@x.example"], "Gia Bình", "gia-binh")
    path = write_config(tmp_path, None, sites, extra=SMTP + HOPS + f"[trace]\n{trace}\n")
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("confirm_cycles = 3\n", f"confirm_cycles = {confirm_cycles}\n"), encoding="utf-8")
    return path


def cron(path: Path, clock: Clock, net: Net) -> None:
    clock.advance(MINUTE)
    run_check(load(path), now=clock, peers=net.peers())


def snapshot(path: Path) -> dict:
    return json.loads((out_dir(load(path)) / "status.json").read_text(encoding="utf-8"))


def mails(net: Net, recipient: str) -> list[dict]:
    return [r for r in net.sent if r["recipient"] == recipient]


def good_path(path: Path, hops: list[str]) -> None:
    """The district's good path as `wanmon topology` would have kept it."""
    from wanmon.model import Hop, Trace

    s = Store.open(load(path).store_path)
    try:
        s.record_good_paths(
            {"gia-binh": Trace(DISTRICT, DISTRICT, 1.0, tuple(Hop(d, a, 0.5) for d, a in enumerate(hops, 1)), True)}
        )
    finally:
        s.close()


def test_a_district_down_is_traced_once_its_communes_never_and_its_down_mail_says_where(tmp_path):
    path = config(tmp_path, trace="refresh_h = 0")  # only the outages' traces here
    clock = Clock()
    net = Net(clock)
    cron(path, clock, net)
    good_path(path, [CORE, CARRIER, DISTRICT])
    net.down = {DISTRICT, *COMMUNES}
    net.paths[DISTRICT] = [CORE, CARRIER]  # the carrier's router says it has no route on
    want = f"đường truyền dừng sau {CARRIER} (Router VNPT Gia Bình), hop 2 của 3"

    cron(path, clock, net)  # the first down cycle: traced after its page
    assert net.traced == [DISTRICT]
    snap = snapshot(path)
    inc = next(i for i in snap["incidents"] if i["site"] == "gia-binh")
    assert inc["path"]["text"] == want and inc["start"] == snap["sites"]["gia-binh"]["since"]
    (cause,) = [p for p in snap["problems"] if p["kind"] == "down"]
    assert cause["site"] == "gia-binh" and cause["path"]["text"] == want and len(cause["unreachable"]) == 3
    assert want in (out_dir(load(path)) / "index.html").read_text(encoding="utf-8")

    cron(path, clock, net)
    cron(path, clock, net)  # confirm_cycles = 3: the DOWN now
    assert net.traced == [DISTRICT], "an incident is traced once"
    (down,) = mails(net, "gb@x.example")
    assert "Dò đường lúc " in down["body_text"] and f": {want}." in down["body_text"]
    assert want in down["body_html"]
    for k in range(3):  # the communes' UNREACHABLE names the district as the cause, no path of their own
        (m,) = [r for r in net.sent if r["recipient"] == f"xa{k}@x.example"]
        assert "UBND huyện Gia Bình" in m["body_text"] and "Dò đường" not in m["body_text"]
    assert query(load(path).store_path, "SELECT site_id, good_hops FROM outage_paths") == [("gia-binh", 3)]

    net.down = set()  # back (recover_cycles = 2), then down again: another incident, traced again
    cron(path, clock, net)
    cron(path, clock, net)
    assert all(i["path"] is None or i["end"] is not None for i in snapshot(path)["incidents"])
    net.down = {DISTRICT}
    cron(path, clock, net)
    assert net.traced == [DISTRICT, DISTRICT]
    got = query(load(path).store_path, "SELECT count(*) FROM outage_paths WHERE site_id = 'gia-binh'")
    assert got == [(2,)]
    snap = snapshot(path)
    old, new = sorted((i for i in snap["incidents"] if i["site"] == "gia-binh"), key=lambda i: i["start"])
    assert old["end"] is not None and new["end"] is None and old["path"]["ts"] < new["path"]["ts"]


def test_with_confirm_cycles_1_the_down_mail_goes_at_once_without_the_path(tmp_path):
    """The mail is composed when the cycle records it, before any trace: it never waits for one;
    the page, written again after the trace, has the path."""
    path = config(tmp_path, confirm_cycles=1, trace="refresh_h = 0")
    clock = Clock()
    net = Net(clock)
    cron(path, clock, net)
    net.down = {DISTRICT, *COMMUNES}
    net.paths[DISTRICT] = [CORE]
    cron(path, clock, net)
    (down,) = mails(net, "gb@x.example")
    assert "Dò đường" not in down["body_text"] and "đường truyền" not in down["body_text"]
    cause = next(p for p in snapshot(path)["problems"] if p["kind"] == "down")
    assert cause["path"]["text"] == f"đường truyền dừng sau {CORE} (Trung tâm dữ liệu), hop 1"  # no good path kept


def test_good_paths_are_refreshed_a_few_a_cycle_and_a_site_that_came_back_first(tmp_path):
    """[trace] refresh_h = 0.5 with 9 sites and a minute's cycle: ceil(2 x 9 x 60 / 1800) = 1 a
    cycle; every site has a good path after 9 cycles, none traced twice meanwhile."""
    path = config(tmp_path, trace="refresh_h = 0.5")
    clock = Clock()
    net = Net(clock)
    for k in range(9):
        cron(path, clock, net)
        assert len(net.traced) == k + 1
    assert sorted(net.traced) == sorted([CORE, DISTRICT, *COMMUNES, *(f"127.0.0.{i + 2}" for i in range(4))])
    net.traced.clear()
    net.down = {COMMUNES[1]}  # a commune down: traced for its outage, no refresh that cycle
    net.paths[COMMUNES[1]] = [CORE, DISTRICT]
    cron(path, clock, net)
    assert net.traced == [COMMUNES[1]]
    net.down, net.paths = set(), {}
    cron(path, clock, net)  # it answers again: its good path is older than that, it comes first
    assert net.traced == [COMMUNES[1], COMMUNES[1]]
    s = Store.open_readonly(load(path).store_path)
    try:
        assert s.good_paths()["xa-1"].ts == clock()
    finally:
        s.close()


def test_the_daemons_traces_never_hold_a_cycle_and_stop_at_once(tmp_path, caplog):
    path = config(tmp_path, trace="refresh_h = 0")
    cfg = load(path)
    clock = Clock()
    net = Net(clock)
    caplog.set_level(logging.INFO, logger="wanmon")

    async def main():
        net.in_loop()
        d = daemon_mod.Daemon(cfg, now=clock, peers=net.peers())
        await d.cycle()
        net.down = {DISTRICT, *COMMUNES}
        net.hold_trace = asyncio.Event()  # this trace never ends
        clock.advance(MINUTE)
        await d.cycle()
        await net.tracing.wait()
        tracing = d.tracing
        assert tracing is not None and not tracing.done()
        page_before = snapshot(path)["last_cycle"]["id"]
        for _ in range(2):  # the next cycles run and write their pages while it hangs
            clock.advance(MINUTE)
            await d.cycle()
        assert d.cycles == 4 and snapshot(path)["last_cycle"]["id"] == page_before + 2
        assert d.tracing is tracing and net.traced == [DISTRICT], "a second tracer while the first runs"
        d.stopping.set()  # SIGTERM
        await d._stop(Sched())
        assert tracing.done()

    run(main())
    assert caplog.text.count("traces still running from an earlier cycle") == 2
    assert "traces stopped" in caplog.text
    assert query(cfg.store_path, "SELECT count(*) FROM outage_paths") == [(0,)]  # asked again by the next cycle


def test_no_real_trace_beside_a_fake_sweep(tmp_path):
    """The tracer sends only to addresses the real sweep probed: with a fake sweep (these seams)
    and the real tracer, nothing is traced (a test's addresses are no network's)."""
    cfg = load(config(tmp_path))
    clock = Clock()
    net = Net(clock)
    run_check(cfg, now=clock, peers=net.peers())
    jobs = [TraceJob("gia-binh", DISTRICT, "outage", clock())]
    assert run(run_traces(cfg, jobs, now=clock, peers=Peers(icmp=net.icmp))) == []
    assert query(cfg.store_path, "SELECT count(*) FROM outage_paths") == [(0,)]
