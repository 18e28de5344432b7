#!/usr/bin/env python3
"""Status page benchmark: `wanmon render` on a store with 30 days of history.

For each size in --sizes (default: the shipped 177-site sites.toml and a
generated 10,000-site inventory) the script builds a store the way `wanmon`
lays it out (created by `Store.open`, so the real schema and indexes), fills
it with executemany, then runs, as cron would,

    python -m wanmon --config FILE render --out DIR

as a child process and reports its wall-clock time, CPU (user+sys) and peak
RSS (wait4 rusage through bench/_measure.py's helper), and the size of
index.html and status.json.  No acceptance figure is set: it prints numbers.

History written per site (1-minute samples for 30 days would be 432 M rows
at 10,000 sites, too many to generate):
  * 30 days of hourly rollups (`icmp_hourly`), 12 samples per hour;
  * the last 24 h of raw samples (`icmp_samples`) at 5-minute spacing
    (288 cycles, with their `cycles` rows); the rollups of those hours are
    computed from the same samples, as `record_cycle` does;
  * `site_state` from the last sample, and a `status` event per change;
  * the status runs (`status_runs`, and the open run in `site_state`
    run_start/run_maint) that those cycles leave, over the whole history:
    the rollup-only hours' cycles at the same 5-minute times the rollups
    count, then the raw ones; each run held from its last cycle for at most
    the cap, 2 x 5 min (meta `run_cap_s`), as `Store._update_state` writes
    them. The page's availability reads these, not the rollups. Between the
    last rollup-only hour and the first raw sample (up to an hour) there are
    no cycles, in the rollups as in the runs: unobserved time;
  * --raw-days N keeps N days of raw samples instead of 1 (a real store
    keeps `retention_raw_days` = 35 of them): the render's 24-hour queries
    should not depend on it.
Outages are deterministic (seeded): 5 % of sites have one outage of 5 min
to 6 h somewhere in the 30 days (communes behind a down district count as
unreachable), 0.2 % of samples are degraded, and at the end one district in
eight (at least one) is down for the last 3 cycles and 1 % of communes for
the last hour, so the page has incidents, unreachable sites and open blocks.

Everything is local: no network at all.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(0, REPO)
import _measure as M  # noqa: E402
from _measure import default_python, log  # noqa: E402

HOUR = 3600
DAY = 86400
RAW_STEP = 300          # raw samples every 5 minutes
HOURLY_SAMPLES = 12     # 5-minute cycles per hour
RUN_CAP_S = 2.0 * RAW_STEP  # the longest one cycle's status holds (wanmon.account.cap_s at a 5-minute cadence)
HISTORY_DAYS = 30
DATED_GOAL = 1.2  # issue 23: a dated inventory's render against "today" (M.ISSUE23_TODAY), undated
PROFILE_ABOVE_S = 30.0  # profile a size whose render takes longer than this


# --------------------------------------------------------------------------
# inventories


def shipped_config(folder: Path) -> Path:
    """The shipped sites.toml, with SNMP off (render never polls; keeps it like the tests)."""
    lines = (Path(REPO) / "sites.toml").read_text(encoding="utf-8").splitlines()
    start = lines.index("[snmp]")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("["))
    key = next((i for i in range(start + 1, end) if lines[i].startswith("enabled")), None)
    if key is None:
        lines.insert(start + 1, "enabled = false")
    else:
        lines[key] = "enabled = false"
    path = folder / "sites.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def generated_config(folder: Path, n: int, dated: bool = False, at_ts: float | None = None) -> Path:
    """n sites: 1 % provincial bodies (dc-core the root), the rest in 60 districts,
    each a district UBND with its communes; Vietnamese-length names.

    dated: a change for every site at one instant 10 days ago (a midnight in Vietnam), as a
    reform writes them: each commune moves to the next district (its parent kept: a decree
    moves no cable) and is renamed, each district and provincial site is renamed; the page
    shows every site's old name and group."""
    n_prov = max(1, n // 100)
    n_dist = 60
    rest = n - n_prov
    per = [rest // n_dist + (1 if d < rest % n_dist else 0) for d in range(n_dist)]
    out = ['[store]\npath = "var/wanmon.db"\n\n[snmp]\nenabled = false\n\n[page]\nprovince = "Bắc Ninh"\n']

    midnight = time.time() - 10 * DAY if at_ts is None else at_ts  # at_ts: bench/report.py's mid-period
    midnight -= (midnight + 7 * HOUR) % DAY  # 00:00 in Vietnam (UTC+7)
    at = time.strftime("%Y-%m-%dT%H:%M:%S+07:00", time.gmtime(midnight + 7 * HOUR))

    def site(sid, name, level, addr, district=None, parent=None, moved_to=None):
        s = f'\n[[sites]]\nid = "{sid}"\nname = "{name}"\nlevel = "{level}"\n'
        if district:
            s += f'district = "{district}"\n'
        if parent:
            s += f'parent = "{parent}"\n'
        s += f'address = "{addr}"\n'
        if dated:
            s += f'\n  [[sites.changes]]\n  at = {at}\n  name = "{name} (nay đổi tên)"\n'
            if moved_to:
                s += f'  district = "{moved_to}"\n'
        return s

    k = 0

    def addr():
        nonlocal k
        k += 1
        return f"127.{20 + k // 65025}.{k // 255 % 255}.{k % 255 + 1}"

    out.append(site("dc-core", "Trung tâm dữ liệu tỉnh – Router lõi chính", "province", addr()))
    for i in range(1, n_prov):
        out.append(site(f"so-{i:03d}", f"Sở ban ngành số {i} tỉnh Bắc Ninh", "province", addr(), parent="dc-core"))
    for d in range(n_dist):
        dname = f"Huyện Thử Nghiệm {d + 1:02d}"
        did = f"huyen-{d + 1:02d}"
        out.append(site(did, f"UBND {dname}", "district", addr(), district=dname, parent="dc-core"))
        moved_to = f"Huyện Thử Nghiệm {(d + 1) % n_dist + 1:02d}"
        for c in range(1, per[d]):
            out.append(site(f"{did}-xa-{c:03d}", f"UBND xã Phường Thử Nghiệm {c:03d} ({dname})", "commune", addr(),
                            district=dname, parent=did, moved_to=moved_to))
    path = folder / "sites.toml"
    path.write_text("".join(out), encoding="utf-8")
    return path


# --------------------------------------------------------------------------
# the history


def build_store(cfg_path: Path, raw_days: int, seed: int, history_days: int = HISTORY_DAYS) -> dict[str, Any]:
    """Fill the config's store; returns counts and the generation time."""
    from wanmon.config import load
    from wanmon.store import Store

    t0 = time.perf_counter()
    cfg = load(cfg_path, secrets=False)
    sites = list(cfg.sites)
    by_id = {s.id: s for s in sites}
    rng = random.Random(seed)
    Store.open(cfg.store_path).close()  # the real schema, indexes, permissions
    conn = sqlite3.connect(cfg.store_path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")

    now = time.time()
    hist_start = now - history_days * DAY
    n_raw = raw_days * DAY // RAW_STEP
    last_raw = now - 60
    first_raw = last_raw - (n_raw - 1) * RAW_STEP

    # outages: site -> [(start, end)], own failures; a child is unreachable inside its parent's
    outages: dict[str, list[tuple[float, float]]] = {}
    for s in sites:
        if rng.random() < 0.05:
            start = rng.uniform(hist_start, last_raw - 2 * HOUR)
            outages.setdefault(s.id, []).append((start, start + rng.uniform(300, 6 * HOUR)))
    parents = {s.parent for s in sites}
    districts = [s for s in sites if s.level == "district" and s.id in parents]  # with communes behind them
    communes = [s for s in sites if s.level == "commune"]
    for s in rng.sample(districts, max(1, len(districts) // 8)):
        outages.setdefault(s.id, []).append((last_raw - 2 * RAW_STEP - 1, now + 1))  # last 3 cycles
    for s in rng.sample(communes, max(1, len(communes) // 100)):
        outages.setdefault(s.id, []).append((last_raw - HOUR, now + 1))  # the last hour

    def own_down(sid: str, t: float) -> bool:
        return any(a <= t < b for a, b in outages.get(sid, ()))

    def status_at(sid: str, t: float) -> str:
        if own_down(sid, t):
            p = by_id[sid].parent
            while p:
                if own_down(p, t):
                    return "unreachable"
                p = by_id[p].parent
            return "down"
        p = by_id[sid].parent
        while p:  # a site whose uplink is down does not answer either
            if own_down(p, t):
                return "unreachable"
            p = by_id[p].parent
        return "up"

    base_rtt = {s.id: 2.0 + rng.random() * 30.0 for s in sites}
    conn.execute("BEGIN")

    # 1. hourly rollups for the hours wholly before the raw samples (site-major: primary-key order)
    first_roll = hist_start - hist_start % HOUR
    roll_end = first_raw - first_raw % HOUR  # hours from here on come from the raw samples
    hours = [first_roll + h * HOUR for h in range(int((roll_end - first_roll) // HOUR))]

    def hourly_rows():
        for s in sites:
            rtt = base_rtt[s.id]
            chain = [s.id]
            p = s.parent
            while p:
                chain.append(p)
                p = by_id[p].parent
            bad: dict[float, int] = {}  # only the hours an outage of the site or its uplinks overlaps
            for c in chain:
                for a, b in outages.get(c, ()):
                    h = a - a % HOUR
                    while h < min(b, roll_end):
                        if h >= first_roll and h not in bad:
                            bad[h] = sum(status_at(s.id, h + k * RAW_STEP) == "up" for k in range(HOURLY_SAMPLES))
                        h += HOUR
            for h in hours:
                reach = bad.get(h, HOURLY_SAMPLES)
                rec = reach * 3
                yield (s.id, h, HOURLY_SAMPLES, reach, HOURLY_SAMPLES * 3, rec, rtt * rec, rec,
                       rtt * 0.8 if rec else None, rtt * 1.5 if rec else None)

    conn.executemany(
        "INSERT INTO icmp_hourly (site_id, hour, samples, reachable, sent, received, rtt_sum_ms, rtt_n,"
        " rtt_min_ms, rtt_max_ms) VALUES (?,?,?,?,?,?,?,?,?,?)", hourly_rows())
    n_hourly = len(hours) * len(sites)
    log(f"  {len(sites)} sites: {n_hourly:,} hourly rollups in {time.perf_counter() - t0:.1f} s")

    # The status runs the agent's cycles leave (Store._update_state): the rollup-only hours' cycles
    # at first_roll + i * RAW_STEP (the times hourly_rows samples), then the raw cycles. A run ends
    # at a change of status or at a gap over the cap, held from its last cycle for at most the cap.
    runs: list[tuple] = []
    open_run: dict[str, list] = {}  # site -> [status, first ts, last ts]

    def observe(sid: str, st: str, first: float, last_ts: float) -> None:
        """Consecutive cycles of one status, first..last_ts (RAW_STEP apart)."""
        o = open_run.get(sid)
        if o is not None and o[0] == st and 0 <= first - o[2] <= RUN_CAP_S:
            o[2] = last_ts
            return
        if o is not None:
            runs.append((sid, o[0], 0, o[1], o[2] + min(max(first - o[2], 0.0), RUN_CAP_S)))
        open_run[sid] = [st, first, last_ts]

    n_roll_cycles = len(hours) * HOURLY_SAMPLES
    for s in sites:  # only the cycles inside an outage of the site or its uplinks can be other than up
        special: dict[int, str] = {}
        c = s.id
        while c:
            for a, b in outages.get(c, ()):
                lo = max(0, int((a - first_roll) // RAW_STEP) - 1)
                hi = min(n_roll_cycles, int((b - first_roll) // RAW_STEP) + 2)
                for i in range(lo, hi):
                    if i not in special:
                        special[i] = status_at(s.id, first_roll + i * RAW_STEP)
            c = by_id[c].parent
        i = 0
        for j in sorted(special):
            if j > i:
                observe(s.id, "up", first_roll + i * RAW_STEP, first_roll + (j - 1) * RAW_STEP)
            observe(s.id, special[j], first_roll + j * RAW_STEP, first_roll + j * RAW_STEP)
            i = j + 1
        if i < n_roll_cycles:
            observe(s.id, "up", first_roll + i * RAW_STEP, first_roll + (n_roll_cycles - 1) * RAW_STEP)

    # 2. raw samples, one cycle every 5 minutes, with cycles rows, rollups, state and events
    roll: dict[tuple[str, float], list] = {}
    prev: dict[str, tuple[str, float]] = {}
    last: dict[str, tuple] = {}
    fails: dict[str, int] = {}
    reach_ts: dict[str, float] = {}
    events = []
    for k in range(n_raw):
        ts = first_raw + k * RAW_STEP
        rows = []
        counts = dict.fromkeys(("up", "degraded", "down", "unreachable", "unknown"), 0)
        for i, s in enumerate(sites):
            st = status_at(s.id, ts)
            if st == "up" and rng.random() < 0.002:
                st = "degraded"
            counts[st] += 1
            if st in ("up", "degraded"):
                got = 3 if st == "up" else 2
                rtt = base_rtt[s.id] + ((k * 7919 + i) % 13) * 0.1
                sample = (st, None, 3, got, 100.0 * (3 - got) / 3, rtt * 0.8, rtt, rtt * 1.5, rtt * 0.1)
                reach_ts[s.id] = ts
                fails[s.id] = 0
            else:
                reason = "timeout" if st == "down" else f"parent '{s.parent}' is down; timeout"
                sample = (st, reason, 3, 0, 100.0, None, None, None, None)
                fails[s.id] = fails.get(s.id, 0) + 1
            rows.append((k + 1, s.id, ts, *sample))
            observe(s.id, st, ts, ts)
            p = prev.get(s.id)
            if p is None or p[0] != st:
                if p is not None:
                    events.append((ts, s.id, "status", f"{p[0]} -> {st}"))
                prev[s.id] = (st, ts)
            last[s.id] = (ts, k + 1, sample)
            if ts >= roll_end:
                key = (s.id, ts - ts % HOUR)
                a = roll.get(key)
                if a is None:
                    a = roll[key] = [0, 0, 0, 0, 0.0, 0, None, None]
                a[0] += 1
                a[1] += st in ("up", "degraded")
                a[2] += 3
                a[3] += sample[3]
                if sample[6] is not None:
                    a[4] += sample[6] * sample[3]
                    a[5] += sample[3]
                    a[6] = sample[5] if a[6] is None else min(a[6], sample[5])
                    a[7] = sample[7] if a[7] is None else max(a[7], sample[7])
        conn.execute(
            "INSERT INTO cycles (id, started_at, finished_at, duration_ms, sites, up, degraded, down, unreachable,"
            " unknown) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (k + 1, ts, ts + 1.2, 1200.0, len(sites), *counts.values()))
        conn.executemany(
            "INSERT INTO icmp_samples (cycle_id, site_id, ts, status, reason, sent, received, loss_pct,"
            " rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.executemany(
        "INSERT INTO icmp_hourly (site_id, hour, samples, reachable, sent, received, rtt_sum_ms, rtt_n,"
        " rtt_min_ms, rtt_max_ms) VALUES (?,?,?,?,?,?,?,?,?,?)",
        [(sid, h, *a) for (sid, h), a in roll.items()])
    n_hourly += len(roll)
    conn.executemany(
        "INSERT INTO site_state (site_id, name, level, district, address, status, since, last_ts, last_cycle_id,"
        " consecutive_failures, last_reachable_ts, loss_pct, rtt_avg_ms, jitter_ms, reason, run_start, run_maint)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,0)",
        [(s.id, s.name, s.level, s.district, s.address, prev[s.id][0], prev[s.id][1], last[s.id][0],
          last[s.id][1], fails.get(s.id, 0), reach_ts.get(s.id), last[s.id][2][4], last[s.id][2][6],
          last[s.id][2][8], last[s.id][2][1], open_run[s.id][1]) for s in sites])
    runs.sort(key=lambda r: r[4])  # the order the cycles close them in
    conn.executemany("INSERT INTO status_runs (site_id, status, maint, start_ts, end_ts) VALUES (?,?,?,?,?)", runs)
    # the cap the runs were closed with; the open runs are held by it too (Store.run_cap_s)
    conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('run_cap_s', ?)", (repr(RUN_CAP_S),))
    conn.executemany("INSERT INTO events (ts, site_id, kind, detail) VALUES (?,?,?,?)", events)
    n_moved = good_paths(conn, sites, by_id, rng, last_raw)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    gen_s = time.perf_counter() - t0
    n_raw_rows = n_raw * len(sites)
    size = sum(p.stat().st_size for p in cfg.store_path.parent.iterdir() if p.is_file())
    log(f"  {n_raw_rows:,} raw samples, {len(events):,} status events, {len(runs):,} closed status runs;"
        f" store {size / 2**20:.0f} MiB;"
        f" generated in {gen_s:.1f} s")
    final = {st: sum(1 for v in prev.values() if v[0] == st) for st in ("up", "degraded", "down", "unreachable")}
    return {"sites": len(sites), "moved": n_moved, "raw_rows": n_raw_rows, "hourly_rows": n_hourly, "events": len(events),
            "status_runs": len(runs), "store_bytes": size, "gen_s": gen_s, "final": final, "last_cycle_ts": last_raw}


def good_paths(conn: sqlite3.Connection, sites: list, by_id: dict, rng: random.Random, ts: float) -> int:
    """A good path for every site (table good_paths, as Store.record_good_paths writes it): the
    carrier's router, then the site's uplinks from the root down, then the site. 1 % of the
    communes (at least one) hang from another district's router than their configured parent
    (the page's tree marks them: wanmon.topology). Returns how many were moved."""
    routers = sorted({s.parent for s in sites if s.parent and by_id[s.parent].level == "district"})
    communes = [s for s in sites if s.level == "commune"]
    moved = {s.id for s in rng.sample(communes, max(1, len(communes) // 100))} if len(routers) > 1 else set()
    rows = []
    for s in sites:
        chain = [s.address]
        p = s.parent
        if s.id in moved:
            p = routers[(routers.index(p) + 1) % len(routers)] if p in routers else p
        while p:
            chain.append(by_id[p].address)
            p = by_id[p].parent
        hops = [["127.255.0.1", 0.4]] + [[a, round(1.0 + k, 1)] for k, a in enumerate(reversed(chain))]
        rows.append((s.id, ts, s.address, json.dumps(hops)))
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'good_paths'").fetchone() is None:
        return 0  # an older wanmon's store (--today's tree): no paths kept before issue 24
    conn.executemany("INSERT INTO good_paths (site_id, ts, ip, hops) VALUES (?, ?, ?, ?)", rows)
    return len(moved)


# --------------------------------------------------------------------------
# measuring

PHASES = r"""
import json, sys, time
t = {}
t0 = time.perf_counter()
from wanmon.config import load
from wanmon import page
from wanmon.store import Store
t["import"] = time.perf_counter() - t0
def lap(name, fn, *a):
    t1 = time.perf_counter(); r = fn(*a); t[name] = time.perf_counter() - t1; return r
cfg = lap("config load", load, sys.argv[1], False)
store = lap("store open", Store.open_readonly, cfg.store_path)
now = time.time()
lap("  availability: status runs + account (24 h, 7 d, 30 d)", page._availability, cfg, store, now)
lap("  sparkline query (hourly rollups)", page._sparklines, store, now)
snap = lap("snapshot (all of it)", page.snapshot, cfg, store, now)
out = page.out_dir(cfg, sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
lap("status.json, streamed per site (atomic)", page._atomic_write, out / "status.json", page._json_chunks(snap))
lap("index.html, Jinja streamed (atomic)", lambda: page._atomic_write(out / "index.html", page.html_fragments(cfg, snap)))
if hasattr(page, "tree"):  # the picture of the tree (issue 24)
    lap("tree.html, panels of SVG (atomic)", lambda: page._atomic_write(out / "tree.html", page.tree.tree_fragments(cfg, snap)))
t["total"] = time.perf_counter() - t0
print(json.dumps(t))
"""


def topology(py: str, cfg: Path, work: Path) -> None:
    """`wanmon topology` on the stored good paths (nothing traced: --budget 0), as an operator runs
    it: the store keeps the differences it finds, which the page's tree draws. Before issue 24's
    tree it kept nothing (and an older wanmon has no such command: skipped)."""
    r = M._run([py, "-m", "wanmon", "--config", str(cfg), "topology", "--budget", "0", "--json"], cwd=str(work),
               timeout=600)
    if r.returncode == 0:
        log(f"  wanmon topology: {len(json.loads(r.stdout)['suggestions'])} parents differ")
    else:
        log(f"  wanmon topology did not run (rc={r.returncode}): the tree has no difference to draw")


def measure(runner: M.Runner, py: str, cfg: Path, work: Path, tag: str, timeout: float,
            source: str = "store", env: dict[str, str] | None = None) -> dict[str, Any]:
    out = work / f"out-{tag}"
    rr = runner.run([py, "-m", "wanmon", "--config", str(cfg), "render", "--source", source, "--out", str(out)],
                    stdout_path=str(work / f"render-{tag}.out"), stderr_path=str(work / f"render-{tag}.err"),
                    timeout_s=timeout, cwd=str(work), env=env)
    if rr.rc != 0 or rr.timed_out:
        err = Path(rr.stderr_path).read_text(errors="replace")[-2000:]
        raise M.LabError(f"wanmon render failed (rc={rr.rc}, timed out={rr.timed_out}): {err}")
    tree = out / "tree.html"  # the picture of the tree (issue 24): absent before it
    return {"wall_s": rr.wall_s, "cpu_s": rr.cpu_s, "user_s": rr.user_s, "sys_s": rr.sys_s,
            "maxrss_mib": rr.maxrss_kib / 1024, "method": rr.method,
            "index_bytes": (out / "index.html").stat().st_size, "json_bytes": (out / "status.json").stat().st_size,
            "tree_bytes": tree.stat().st_size if tree.exists() else 0}


def phases(py: str, cfg: Path, work: Path) -> dict[str, float]:
    r = M._run([py, "-c", PHASES, str(cfg), str(work / "out-phases")], cwd=str(work), timeout=1800)
    if r.returncode != 0:
        raise M.LabError(f"phase timing failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def profile(py: str, cfg: Path, work: Path, prof: Path, top: int = 25) -> list[str]:
    r = M._run([py, "-m", "cProfile", "-o", str(prof), "-m", "wanmon", "--config", str(cfg), "render",
                "--out", str(work / "out-profile")], cwd=str(work), timeout=3600)
    if r.returncode != 0:
        raise M.LabError(f"profiled render failed: {r.stderr[-2000:]}")
    lines = []
    for key in ("cumulative", "tottime"):
        buf = _Capture()
        pstats.Stats(str(prof), stream=buf).sort_stats(key).print_stats(top)
        lines.append(f"--- top {top} by {key} ---")
        lines.extend(ln for ln in buf.text().splitlines() if ln.strip())
    return lines


class _Capture:
    def __init__(self):
        self.parts: list[str] = []

    def write(self, s: str) -> None:
        self.parts.append(s)

    def text(self) -> str:
        return "".join(self.parts)


# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Time `wanmon render` on stores with 30 days of history.")
    p.add_argument("--sizes", default="177,10000",
                   help="comma-separated site counts; 177 = the shipped sites.toml (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="renders per size; the table shows medians (default: 3)")
    p.add_argument("--raw-days", type=int, default=1,
                   help="days of raw 5-minute samples to keep in the store (default: 1 = only the 24 h the page "
                        "reads; a real store keeps retention_raw_days = 35)")
    p.add_argument("--history-days", type=int, default=HISTORY_DAYS,
                   help="days of hourly rollups in the store (default: %(default)s; a real store keeps "
                        "retention_rollup_days = 400 of them): the page reads 30 days whatever this is")
    p.add_argument("--dated", action="store_true",
                   help="a dated inventory: every site (generated, also at 177) has a change 10 days ago, a commune "
                        "moved to another district and renamed (README 'The page of a dated inventory')")
    p.add_argument("--today", default=M.ISSUE23_TODAY, metavar="REV",
                   help="with --dated (generated sizes): also render the same sites undated, with this tree and with "
                        "wanmon as it was at this git revision (issue 23's \"today\", the tree it was filed on), each on "
                        "its own store built by its own code with the same seed, in turn with the dated renders "
                        "(default: %(default)s; '' for this tree's undated run only)")
    p.add_argument("--no-phases", action="store_true", help="skip the in-process per-phase timing")
    p.add_argument("--profile", metavar="DIR",
                   help="cProfile every size's render into DIR/render-N.prof and print the top entries "
                        f"(done anyway, into the temp dir, for a size whose render takes more than {PROFILE_ABOVE_S:g} s)")
    p.add_argument("--python", default=default_python(), help="interpreter for -m wanmon (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout instead of the table")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, stores, pages)")
    p.add_argument("--timeout", type=float, default=900.0, help="kill one render after S seconds (default 900)")
    p.add_argument("--source", choices=("store", "influxdb"), default="store",
                   help="store: the agent's own store (default); influxdb: `render --source influxdb` against a "
                        "real InfluxDB 1.6 filled with 5-minute points (see --influx-cases)")
    p.add_argument("--influx-cases", default="177:30,10000:1",
                   help="with --source influxdb: SITES:DAYS pairs (default: %(default)s)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------
# --source influxdb


def influx_fill(cfg_path: Path, url: str, days: int, seed: int) -> dict[str, Any]:
    """Write `days` of 5-minute cycles of every site (two agents' worth of tags: one agent) and
    the agent's heartbeats, as wanmon writes them, through HTTP /write; the last cycle now."""
    import random
    import urllib.request

    from wanmon.config import load
    from wanmon.lineproto import line

    t0 = time.perf_counter()
    cfg = load(cfg_path)
    rnd = random.Random(seed)
    now = time.time()
    step = 300.0
    n_cycles = int(days * 86400 / step)
    first = now - (n_cycles - 1) * step
    down = {s.id for s in cfg.sites if rnd.random() < 0.02}
    batch: list[str] = []
    points = 0

    def flush() -> None:
        nonlocal batch
        if batch:
            req = urllib.request.Request(f"{url}/write?db=wanmon&precision=ns", data="\n".join(batch).encode(),
                                         method="POST")
            with urllib.request.urlopen(req, timeout=120) as r:
                assert r.status == 204, r.status
            batch = []

    for k in range(n_cycles):
        ts = first + k * step
        last_hour = ts > now - 3600
        for s in cfg.sites:
            st = "down" if (s.id in down and last_hour) else "up"
            up = st == "up"
            tags = {"site_id": s.id, "site_name": s.name, "level": s.level, "district": s.district,
                    "address": s.address, "parent": s.parent, "agent": "bench"}
            fields = {"sent": 3, "received": 3 if up else 0, "loss_pct": 0.0 if up else 100.0,
                      "rtt_min_ms": 1.0 if up else None, "rtt_avg_ms": 1.0 + rnd.random() if up else None,
                      "rtt_max_ms": 3.0 if up else None, "up": int(up), "status": st, "status_code": 0 if up else 2}
            if k:
                fields.update({"prev_available_s": step if up else 0.0, "prev_observed_s": step,
                               "prev_down_s": 0.0 if up else step, "prev_unreachable_s": 0.0})
            batch.append(line("wanmon_icmp", tags, fields, ts, v1=True))
        batch.append(line("wanmon_agent", {"host": "bench", "agent": "bench"},
                          {"cycle_ms": 100.0, "sites": len(cfg.sites), "spool_points": 0, "role": "primary",
                           "interval_s": step}, ts, v1=True))
        points += len(cfg.sites) + 1
        if len(batch) >= 50_000:
            flush()
    flush()
    return {"points": points, "cycles": n_cycles, "gen_s": time.perf_counter() - t0, "down": len(down)}


def influx_main(args) -> int:
    sys.path.insert(0, str(Path(REPO) / "tests"))
    from tsdb_servers import InfluxV1Server

    M.install_signal_cleanup()
    tmp = Path(tempfile.mkdtemp(prefix="wanmon-render-influx-bench-"))
    cases = []
    try:
        runner = M.Runner(None, M.build_helper(str(tmp)))
        for case in args.influx_cases.split(","):
            n, days = (int(x) for x in case.split(":"))
            work = tmp / f"n{n}-d{days}"
            work.mkdir()
            with InfluxV1Server(databases=["wanmon"], base_dir=work / "influxd") as srv:
                cfg = shipped_config(work) if n == 177 else generated_config(work, n)
                cfg.write_text(cfg.read_text(encoding="utf-8") + f'\n[influxdb]\nurl = "{srv.url}"\napi = "v1"\n'
                               'database = "wanmon"\ntimeout_ms = 120000\n', encoding="utf-8")
                log(f"{n} sites x {days} d: writing the points ...")
                gen = influx_fill(cfg, srv.url, days, seed=n)
                log(f"  {gen['points']:,} points in {gen['gen_s']:.0f} s")
                runs = []
                for i in range(args.repeat):
                    runs.append(measure(runner, args.python, cfg, work, f"{i}", args.timeout, source="influxdb"))
                    log(f"  render {i + 1}: {runs[-1]['wall_s']:.2f} s, {runs[-1]['maxrss_mib']:.0f} MiB")
                med = {k: M.median_or_none([r[k] for r in runs]) for k in ("wall_s", "cpu_s", "maxrss_mib",
                                                                             "index_bytes")}
                cases.append({"sites": n, "days": days, **gen, **med})
    except M.LabError as exc:
        log(f"error: {exc}")
        return 1
    finally:
        M.kill_current_children()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(cases, indent=1))
        return 0
    print(f"wanmon render --source influxdb: {time.strftime('%Y-%m-%d %H:%M')}, InfluxDB 1.6 on loopback, 5-minute "
          f"points, medians of {args.repeat}")
    print(f"{'sites':>6} {'days':>4} {'points':>11} {'wall s':>7} {'CPU s':>6} {'RSS MiB':>8} {'index KiB':>10}")
    for c in cases:
        print(f"{c['sites']:>6} {c['days']:>4} {c['points']:>11,} {c['wall_s']:>7.2f} {c['cpu_s']:>6.2f} "
              f"{c['maxrss_mib']:>8.0f} {c['index_bytes'] / 1024:>10,.0f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.source == "influxdb":
        return influx_main(args)
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    M.install_signal_cleanup()
    tmp = Path(tempfile.mkdtemp(prefix="wanmon-render-bench-"))
    cases = []
    try:
        helper = M.build_helper(str(tmp))
        if helper is None:
            log("warning: no C compiler: peak RSS has this script's own RSS as a floor (see README)")
        runner = M.Runner(None, helper)
        M.compile_package(args.python, REPO)
        generated = any(n != 177 for n in sizes)  # --dated compares these
        tree = M.git_tree(args.today, str(tmp / "today"), args.python) if args.dated and args.today and generated else None
        env_today = {**os.environ, "PYTHONPATH": tree} if tree is not None else None
        for n in sizes:
            work = tmp / f"n{n}"
            work.mkdir()
            log(f"size {n}: building the store ({args.history_days} d hourly + {args.raw_days} d raw at 5 min)")
            cfg = shipped_config(work) if n == 177 and not args.dated else generated_config(work, n, args.dated)
            gen = build_store(cfg, args.raw_days, seed=n, history_days=args.history_days)
            topology(args.python, cfg, work)
            # --dated: the same sites undated, with this tree and with --today's, each on its own store
            others: dict[str, tuple[Path, dict[str, str] | None]] = {}
            if args.dated and n != 177:
                (work / "undated").mkdir()
                plain = generated_config(work / "undated", n)
                log(f"size {n}: the same sites undated, this tree: building its store")
                build_store(plain, args.raw_days, seed=n, history_days=args.history_days)
                topology(args.python, plain, work / "undated")
                others["undated"] = (plain, None)
                if tree is not None:
                    (work / "today").mkdir()
                    old = generated_config(work / "today", n)
                    log(f"size {n}: the same sites undated, {args.today}'s tree: building its store with its code")
                    M.build_with(args.python, tree, "render", "build_store", old, args.raw_days, n, args.history_days)
                    others["today"] = (old, env_today)
                for name, (c, env) in others.items():  # each tree's first render (its caches) is not timed
                    measure(runner, args.python, c, c.parent, "warm", args.timeout, env=env)
            runs = []
            other_runs: dict[str, list[dict[str, Any]]] = {name: [] for name in others}
            for i in range(args.repeat):
                runs.append(measure(runner, args.python, cfg, work, f"{i}", args.timeout))
                log(f"  render {i + 1}/{args.repeat}: wall {runs[-1]['wall_s']:.2f} s, cpu {runs[-1]['cpu_s']:.2f} s,"
                    f" rss {runs[-1]['maxrss_mib']:.0f} MiB")
                for name, (c, env) in others.items():  # in turn: a busy host slows them alike
                    other_runs[name].append(measure(runner, args.python, c, c.parent, f"{i}", args.timeout, env=env))
                    log(f"    {name}: wall {other_runs[name][-1]['wall_s']:.2f} s")
            keys = ("wall_s", "cpu_s", "maxrss_mib", "index_bytes", "json_bytes", "tree_bytes")
            med = {k: M.median_or_none([r[k] for r in runs]) for k in keys}
            case: dict[str, Any] = {"sites": n, "gen": gen, "runs": runs, "median": med,
                                    "last_cycle_age_s_at_end": time.time() - gen["last_cycle_ts"]}
            for name, rs in other_runs.items():
                case[name] = {k: M.median_or_none([r[k] for r in rs]) for k in keys}
            if "today" in case:
                case["today_rev"] = args.today
            if not args.no_phases:
                case["phases"] = phases(args.python, cfg, work)
            if args.profile or med["wall_s"] > PROFILE_ABOVE_S:
                folder = Path(args.profile) if args.profile else work
                folder.mkdir(parents=True, exist_ok=True)
                prof = folder / f"render-{n}.prof"
                log(f"  profiling into {prof}")
                case["profile_file"] = str(prof)
                case["profile_top"] = profile(args.python, cfg, work, prof)
            cases.append(case)
    except M.LabError as exc:
        log(f"error: {exc}")
        return 1
    finally:
        M.kill_current_children()
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    meta = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version, "raw_days": args.raw_days, "repeat": args.repeat,
            "when": time.strftime("%Y-%m-%d %H:%M")}
    if args.json:
        print(json.dumps({"meta": meta, "cases": cases}, indent=1))
        return 0
    print(f"wanmon render: {meta['when']}, Python {meta['python']}, SQLite {meta['sqlite']}, {meta['cpus']} CPUs;"
          f" store: {args.history_days} d hourly rollups + {args.raw_days} d raw samples at 5 min; medians of {args.repeat}")
    cols: list[M.Column] = [
        ("", "sites", 6, lambda c: f"{c['sites']}"),
        ("store", "raw rows", 9, lambda c: f"{c['gen']['raw_rows']:,}"),
        ("store", "hourly rows", 11, lambda c: f"{c['gen']['hourly_rows']:,}"),
        ("store", "MiB", 5, lambda c: f"{c['gen']['store_bytes'] / 2**20:.0f}"),
        ("render", "wall s", 7, lambda c: M.fmt(c["median"]["wall_s"], ".2f")),
        ("render", "CPU s", 6, lambda c: M.fmt(c["median"]["cpu_s"], ".2f")),
        ("render", "RSS MiB", 7, lambda c: M.fmt(c["median"]["maxrss_mib"], ".0f")),
        ("page", "index.html KiB", 14, lambda c: f"{c['median']['index_bytes'] / 1024:,.0f}"),
        ("page", "status.json KiB", 15, lambda c: f"{c['median']['json_bytes'] / 1024:,.0f}"),
        ("page", "tree.html KiB", 13, lambda c: f"{c['median']['tree_bytes'] / 1024:,.0f}"),
    ]
    for line in M.render_table(cols, cases):
        print(line)
    for c in cases:
        f = c["gen"]["final"]
        print(f"\n{c['sites']} sites: final states up {f['up']}, degraded {f['degraded']}, down {f['down']},"
              f" unreachable {f['unreachable']}; {c['gen']['events']:,} status events; store built in"
              f" {c['gen']['gen_s']:.0f} s")
        if "undated" in c:
            d = c["median"]
            print(f"  dated (every site changes 10 days ago): {d['wall_s']:.2f} s (CPU {d['cpu_s']:.2f}); the same sites"
                  f" undated, in turn (issue 23's goal: <= {DATED_GOAL:g}x \"today\", the tree it was filed on):")
            if "today" in c:
                t = c["today"]
                r = d["wall_s"] / t["wall_s"]
                print(f"    {c['today_rev']} (today): {t['wall_s']:.2f} s (CPU {t['cpu_s']:.2f}): ratio {r:.2f}  "
                      f"{'PASS' if r <= DATED_GOAL else 'FAIL'}")
            u = c["undated"]
            print(f"    this tree:        {u['wall_s']:.2f} s (CPU {u['cpu_s']:.2f}): ratio {d['wall_s'] / u['wall_s']:.2f}")
        if "phases" in c:
            print("  where the time goes (one in-process render, seconds):")
            for k, v in c["phases"].items():
                print(f"    {k:<50} {v:8.3f}")
        if "profile_top" in c:
            print(f"  profile: {c['profile_file']}")
            for line in c["profile_top"]:
                print("    " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
