"""The clock set back between checks (issue 20: the monitor never tells a confident wrong story).

When a cycle's ts is before a site's last one, the clock now puts the site's later history
in the future, and the next cycles observe that time again: the store drops it (runs cut
at ts, later status changes deleted). So no `since` lies ahead of the observation being
recorded, the status runs never overlap, and a report never counts an instant twice.

First at the store with an injected clock (record_cycle with chosen ts, the report's pure
compute), then with real `wanmon check` runs under libfaketime (Debian `faketime`) in a
private network namespace where IPv4 echo is ignored (127.0.0.1 down, ::1 up).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from datetime import datetime, timezone

import pytest

import prereq

from conftest import wanmon
from wanmon import account
from wanmon import report as rp
from wanmon.alerts.engine import evaluate
from wanmon.config import AlertSettings, load
from wanmon.model import Observation
from wanmon.store import Store

CAP = 120.0  # 2 x icmp_interval_s = 60

CONFIG = """\
[store]
path = "var/wanmon.db"

[schedule]
icmp_interval_s = {interval}

[icmp]
count = 3
interval_ms = 50
timeout_ms = 300

[snmp]
enabled = false

[[sites]]
id = "core"
name = "Trung tâm dữ liệu"
level = "province"
address = "::1"

[[sites]]
id = "gia-binh"
name = "UBND huyện Gia Bình"
level = "district"
district = "Gia Bình"
parent = "core"
address = "127.0.0.1"

[[sites]]
id = "gia-binh-dong-cuu"
name = "UBND xã Đông Cứu"
level = "commune"
district = "Gia Bình"
parent = "gia-binh"
address = "127.10.2.1"
"""
SITES = ("core", "gia-binh", "gia-binh-dong-cuu")
T = 1_900_000_800.0  # the old clock's first cycle


def _obs(cfg, sid: str, ts: float, status: str) -> Observation:
    s = next(x for x in cfg.sites if x.id == sid)
    up = status in ("up", "degraded")
    return Observation(sid, s.name, s.level, s.district, s.address, ts, status, None if up else "no reply", 3,
                       3 if up else 0, 0.0 if up else 100.0, 1.0 if up else None, 1.0 if up else None,
                       1.0 if up else None, 0.0 if up else None)


@pytest.fixture
def setup(tmp_path):
    p = tmp_path / "sites.toml"
    p.write_text(CONFIG.format(interval=60), encoding="utf-8")
    cfg = load(p)
    store = Store.open(cfg.store_path)
    yield cfg, store
    store.close()


def _runs_of(store: Store, now: float) -> dict[str, list[tuple[str, float, float]]]:
    out: dict[str, list] = {}
    for sid, status, _maint, a, b in store.status_runs(0.0, math.inf, now, CAP):
        out.setdefault(sid, []).append((status, a, b))
    return {sid: sorted(rs, key=lambda r: r[1]) for sid, rs in out.items()}


def _report(cfg, store, a: float, b: float, now: float) -> dict[str, rp.Figures]:
    tz = datetime.now().astimezone().tzinfo
    period = rp.Period(datetime.fromtimestamp(a, tz), datetime.fromtimestamp(b, tz), "range", "test")
    rep = rp.compute(cfg, store.status_runs(a - (b - a), b, now, CAP), store.site_labels(), period,
                     rp.previous(period), now, CAP)
    return {r.id: r.figures for r in rep.sites}


def test_clock_set_back_an_hour_at_the_store(setup):
    """Old clock: 4 cycles from T, gia-binh down from T+120 (its commune unreachable). The
    clock is set back an hour; 70 cycles a minute apart from T-3360 replay the old hour and
    pass it, gia-binh down for the first 5. At every cycle no `since` (store or alerts) is
    after the cycle; the runs never overlap; the report over the new clock's span counts
    each second once and equals the method by hand."""
    cfg, store = setup
    rules = AlertSettings(noc=("noc@x.example",), guard_min_sites=99, confirm_cycles=1)
    parents = {s.id: s.parent for s in cfg.sites}
    old = [(T + 60 * i, "down" if i >= 2 else "up") for i in range(4)]
    back = T + 240 - 3600
    new = [(back + 60 * i, "down" if i < 5 else "up") for i in range(70)]
    alerts: dict = {}
    for ts, gb in old + new:
        statuses = {"core": "up", "gia-binh": gb, "gia-binh-dong-cuu": "unreachable" if gb == "down" else "up"}
        store.record_cycle(ts, ts + 1, [_obs(cfg, sid, ts, st) for sid, st in statuses.items()], run_cap_s=CAP)
        alerts, _, _ = evaluate(alerts, statuses, ts, rules, parents)
        for st in store.states():
            assert st.since <= st.last_ts == ts, (ts, st)
        for sid, a in alerts.items():
            assert a.streak_since <= ts and (a.hard_since is None or a.hard_since <= ts), (ts, a)
        if ts == back:  # the first cycle on the set-back clock: down since this cycle, not since T+120
            gb_state = next(s for s in store.states() if s.site_id == "gia-binh")
            assert (gb_state.status, gb_state.since) == ("down", back)
            assert alerts["gia-binh"].hard_since == back

    last = new[-1][0]
    now = last + 60
    for sid, runs in _runs_of(store, now).items():
        for (_, _, end), (_, start, _) in zip(runs, runs[1:]):
            assert end <= start, (sid, runs)  # a run's end never passes the next one's start
        assert runs[0][1] == back, (sid, runs)  # what the old clock said came after `back` is gone
    # the status-change log: none after the newest observation; gia-binh down then up again
    changes = store.conn.execute("SELECT ts, site_id, detail FROM events WHERE kind = 'status' ORDER BY ts").fetchall()
    assert all(ts <= last for ts, _, _ in changes), changes
    assert [(ts, d) for ts, sid, d in changes if sid == "gia-binh"] == [(back, "up -> down"), (back + 300, "down -> up")]

    # the report over the new clock's span (cut at now): wall time 4200 s, each counted once
    figs = _report(cfg, store, back, now, now)
    wall = now - back
    for sid in SITES:
        f = figs[sid]
        assert f.observed_s + f.maintenance_s + f.unobserved_s == pytest.approx(wall), sid
        assert f.observed_s <= wall + 1e-6, (sid, f)
    assert figs["core"].available_s == pytest.approx(wall)
    assert (figs["gia-binh"].down_s, figs["gia-binh"].available_s, figs["gia-binh"].outages) == \
        (pytest.approx(300), pytest.approx(wall - 300), 1)
    assert figs["gia-binh-dong-cuu"].unreachable_s == pytest.approx(300)


def test_clock_set_back_within_a_run_keeps_its_start_and_trims_the_rest(setup):
    """Set back 5 minutes in the middle of core's up run: the run goes on from its start
    (it was observed before the new ts); gia-binh's outage, which began after the new ts,
    is dropped and its `since` is not after the observation."""
    cfg, store = setup
    old = [(T + 60 * i, "down" if i >= 7 else "up") for i in range(11)]  # gia-binh down from T+420 to T+600
    new = [(T + 300 + 60 * i, "up") for i in range(10)]                # then the clock says T+300 again
    for ts, gb in old + new:
        statuses = {"core": "up", "gia-binh": gb, "gia-binh-dong-cuu": "unreachable" if gb == "down" else "up"}
        store.record_cycle(ts, ts + 1, [_obs(cfg, sid, ts, st) for sid, st in statuses.items()], run_cap_s=CAP)
        for st in store.states():
            assert st.since <= st.last_ts == ts, (ts, st)
    now = new[-1][0] + 60
    runs = _runs_of(store, now)
    assert runs["core"] == [("up", T, now)]
    assert runs["gia-binh"] == [("up", T, T + 300), ("up", T + 300, now)]  # its later runs cut at T+300
    assert store.conn.execute("SELECT count(*) FROM events WHERE kind = 'status'").fetchone()[0] == 0
    figs = _report(cfg, store, T, now, now)
    assert figs["gia-binh"].available_s == pytest.approx(now - T) and figs["gia-binh"].down_s == 0


def test_overlapping_runs_from_an_older_store_count_each_instant_once():
    """A store written before the set-back clock was handled holds overlapping runs (134 s
    observed in a 120 s window): the report counts each instant once, the earlier run first."""
    runs = [("up", 0, 1000.0, 1100.0), ("down", 0, 1050.0, 1120.0), ("down", 0, 1080.0, 1134.0)]
    f = account.site_figures(runs, 1000.0, 1120.0)
    assert f.observed_s == pytest.approx(120.0) and f.unobserved_s == 0
    assert (f.available_s, f.down_s, f.outages) == (pytest.approx(100.0), pytest.approx(20.0), 1)


# -- real checks under libfaketime ------------------------------------------------------

FAKETIME = shutil.which("faketime")


def _netns(ipv4_answers: bool) -> list[str]:
    """A private network namespace with only `lo`; IPv4 echo ignored unless ipv4_answers."""
    flag = 0 if ipv4_answers else 1
    return ["unshare", "--net", "sh", "-c",
            f'ip link set lo up && sysctl -qw net.ipv4.icmp_echo_ignore_all={flag} && exec "$@"', "netns"]


def _netns_ok() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run([*_netns(False), "true"], capture_output=True).returncode == 0


def _fake(ts: float) -> list[str]:
    """libfaketime: the process's clock starts at ts (UTC) and runs on from there."""
    return prereq.faketime("@" + datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S"))


def _method(history: dict[str, list[tuple[float, str]]], start: float, end: float, cap: float) -> dict[str, dict]:
    """The README's method, written out plainly, on what the checks printed in the order they
    ran: a check before the last one drops the history from its ts on (the clock set back);
    each status holds until the next check's ts, at most cap; cut to [start, end)."""
    out = {}
    for sid, seq in history.items():
        kept: list[tuple[float, str]] = []
        for ts, st in seq:
            kept = [x for x in kept if x[0] < ts] + [(ts, st)]
        avail = down = unreach = 0.0
        for i, (ts, st) in enumerate(kept):
            nxt = kept[i + 1][0] if i + 1 < len(kept) else end
            a, b = max(ts, start), min(ts + min(nxt - ts, cap), end)
            if b > a:
                avail += (b - a) * (st in ("up", "degraded"))
                down += (b - a) * (st == "down")
                unreach += (b - a) * (st == "unreachable")
        out[sid] = {"available": avail, "down": down, "unreachable": unreach, "observed": avail + down + unreach}
    return out


@prereq.needs(FAKETIME is not None, "faketime (libfaketime)", prereq.FAKETIME)
@prereq.needs(_netns_ok(), "unshare --net (root)", prereq.NETNS, "for a private loopback")
def test_real_checks_with_the_clock_set_back_an_hour(tmp_path):
    """Cron-style `wanmon check` runs, each under libfaketime at a chosen start time, every
    10 minutes of the fake clock (icmp_interval_s = 600, cap 1200 s). Old clock B, B+10m,
    B+20m (gia-binh, 127.0.0.1, down from the second); then the clock is set back an hour:
    B-30m ... B+20m, gia-binh down for the first two. No `since` in `status --json` is after
    the last check, and `report --json` over the set-back clock's hour (3600 s, which the old
    clock's runs overlapped by 1200 s) observes no more than 3600 s per site, equal to the
    method on what `check --json` printed. The fake clock runs ahead of the real one: the
    kernel's receive stamps (SO_TIMESTAMPNS) are not faked, so RTTs are clamped to 0 there
    (none is asserted)."""
    cfg = tmp_path / "sites.toml"
    cfg.write_text(CONFIG.format(interval=600), encoding="utf-8")
    base = math.ceil(time.time() / 3600) * 3600 + 2 * 86400  # B: two days ahead, on the hour
    env = {"TZ": "UTC"}
    history: dict[str, list[tuple[float, str]]] = {}

    def run(at: float, *args: str, ipv4: bool = True) -> subprocess.CompletedProcess:
        r = wanmon("--config", str(cfg), *args, cwd=tmp_path, env=env, prefix=[*_netns(ipv4), *_fake(at)])
        assert r.returncode == 0, r.stderr
        return r

    def check(at: float, ipv4: bool) -> float:
        out = json.loads(run(at, "check", "--json", ipv4=ipv4).stdout)
        for s in out:
            history.setdefault(s["id"], []).append((s["ts"], s["status"]))
            assert at <= s["ts"] < at + 60, s  # the check ran on the fake clock
        return out[0]["ts"]

    def since_never_after(at: float, last_ts: float) -> dict[str, dict]:
        sites = {s["id"]: s for s in json.loads(run(at, "status", "--json").stdout)["sites"]}
        for sid, s in sites.items():
            assert s["since"] <= s["last_ts"] == pytest.approx(last_ts), (sid, s)
        return sites

    for i, ipv4 in enumerate((True, False, False)):
        last = check(base + 600 * i, ipv4)
    old_since = since_never_after(base + 1230, last)["gia-binh"]["since"]
    assert old_since >= base + 600  # down since the second check (old clock)

    back = base - 1800
    last = check(back, ipv4=False)  # the clock set back an hour
    sites = since_never_after(back + 30, last)
    assert sites["gia-binh"]["status"] == "down" and sites["gia-binh"]["since"] == pytest.approx(last)
    assert sites["gia-binh-dong-cuu"]["status"] == "unreachable"
    for i, ipv4 in enumerate((False, True, True, True, True), start=1):
        last = check(back + 600 * i, ipv4)
    sites = since_never_after(base + 1230, last)
    assert sites["gia-binh"]["status"] == "up" and sites["gia-binh"]["since"] < base - 600 + 60

    start, end = back, base + 1800  # the set-back clock's hour: the old clock's runs lay inside it
    span = [datetime.fromtimestamp(x, timezone.utc).isoformat() for x in (start, end)]
    rep = json.loads(run(end + 60, "report", "--from", span[0], "--to", span[1], "--format", "json",
                         "--out", "-").stdout)
    want = _method(history, start, end, cap=1200.0)
    got = {s["id"]: s for s in rep["sites"]}
    assert set(got) == set(SITES)
    for sid in SITES:
        g, w = got[sid], want[sid]
        assert g["observed_s"] <= end - start, (sid, g)
        assert g["observed_s"] + g["maintenance_s"] + g["unobserved_s"] == pytest.approx(end - start), (sid, g)
        assert g["observed_s"] == pytest.approx(w["observed"], abs=1.0), (sid, g, w)
        assert g["available_s"] == pytest.approx(w["available"], abs=1.0), (sid, g, w)
        assert g["downtime_s"] == pytest.approx(w["down"], abs=1.0), (sid, g, w)
        assert g["unreachable_s"] == pytest.approx(w["unreachable"], abs=1.0), (sid, g, w)
    assert got["gia-binh"]["outages"] == 1 and got["gia-binh"]["downtime_s"] == pytest.approx(1200, abs=5)
    assert got["core"]["availability_pct"] == 100.0
