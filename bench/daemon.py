#!/usr/bin/env python3
"""Daemon benchmark: `wanmon run` on N loopback sites for M minutes.

Generates a sites.toml with --sites loopback sites in a province / district /
commune hierarchy, starts the daemon exactly as systemd would,

    python -m wanmon --config FILE run

as a child inside a network namespace this script creates (wmbench-<pid>),
lets it run --minutes at a cycle every --interval seconds, then stops it with
SIGTERM and reports:

  * cycle durations (min / median / max), each cycle's start lateness, and
    whether every cycle finished within its interval;
  * cycles that ran in the window against the number expected;
  * the daemon's CPU % (utime + stime from /proc/<pid>/stat);
  * its peak RSS (VmHWM from /proc/<pid>/status, read just before SIGTERM)
    and its RSS after every cycle (growth = a leak);
  * alert evaluation time per cycle (the daemon's own `alerts_ms`);
  * whether it exited 0 within [schedule] grace_s after SIGTERM.

A few % of the sites are silently dead (an nftables drop rule in the
namespace, as in bench/icmp_sweep.py), one whole district among them, and
1 % of the communes go down and come back every few cycles, so the alert
engine, the mail outbox (no [smtp]: mails are recorded as unsent) and the
status page do real work.

It prints PASS/FAIL for the acceptance figures but always exits 0 once the
measurements are done (1 if the daemon did not run or stop as it should,
2 if the lab could not be set up).  Must run as root (ip netns, nft).  Only
127.0.0.0/8 inside the private namespace is ever probed.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
import _lab  # noqa: E402
from _measure import default_python, log  # noqa: E402
from _measure import fmt, render_table  # noqa: E402

COUNT = 3              # [icmp] count
INTERVAL_MS = 200      # [icmp] interval_ms
TIMEOUT_MS = 1000      # [icmp] timeout_ms
RATE_PPS = 10000       # [icmp] rate_pps
RSS_LIMIT_BYTES = 200 * 1000 * 1000  # "200 MB", decimal: the stricter reading (as icmp_sweep.py)

BOUNCE_NET = ipaddress.ip_network("127.32.0.0/16")  # sites that go down and come back
BOUNCE_TABLE = "wmbench_bounce"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WINDOW_EDGE_S = 0.25   # the window sample is taken this long before the next cycle is due


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run `wanmon run` on loopback sites inside a private network namespace "
                    "(needs root) and report cycle times, CPU, peak RSS and the shutdown.")
    p.add_argument("--sites", type=int, default=10000, help="sites (default: %(default)s)")
    p.add_argument("--interval", type=float, default=60.0,
                   help="[schedule] icmp_interval_s in seconds (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=10.0,
                   help="length of the run; cycles expected = ceil(minutes*60 / interval) "
                        "(default: %(default)s)")
    p.add_argument("--districts", type=int, default=None,
                   help="district sites under the core (default: sites/100, at most 100)")
    p.add_argument("--dead-pct", type=float, default=2.0,
                   help="%% of the sites, communes picked at random, that are silently dead "
                        "for the whole run (default: %(default)s)")
    p.add_argument("--dead-districts", type=int, default=1,
                   help="whole districts (the district site and all its communes) dead for the "
                        "whole run (default: %(default)s)")
    p.add_argument("--bounce-pct", type=float, default=1.0,
                   help="%% of the sites (communes) that are down for --bounce-cycles cycles, then "
                        "up as long, and so on (default: %(default)s)")
    p.add_argument("--bounce-cycles", type=int, default=4,
                   help="half period of the bouncing sites, in cycles (default: %(default)s)")
    p.add_argument("--grace", type=float, default=30.0,
                   help="[schedule] grace_s (default: %(default)s)")
    p.add_argument("--stop", choices=["mid-cycle", "idle"], default="mid-cycle",
                   help="send SIGTERM --stop-delay s after the cycle following the window has "
                        "started (mid-cycle: the daemon must finish it within grace_s), or just "
                        "before that cycle is due (idle) (default: %(default)s)")
    p.add_argument("--stop-delay", type=float, default=1.0,
                   help="mid-cycle stop: seconds into that cycle (default: %(default)s)")
    p.add_argument("--prefill-hours", type=float, default=0.0,
                   help="before starting the daemon, fill the store with this many hours of history "
                        "at --interval spacing (raw samples, hourly rollups, cycles), as a daemon "
                        "that has run that long has it; 24 = the page's full 24-hour window "
                        "(default: %(default)s, a fresh store)")
    p.add_argument("--sample-s", type=float, default=0.5,
                   help="/proc sampling period in seconds (default: %(default)s)")
    p.add_argument("--seed", type=int, default=20261127, help="site layout seed (default: %(default)s)")
    p.add_argument("--json", action="store_true",
                   help="print machine-readable JSON on stdout instead of the table")
    p.add_argument("--python", default=default_python(),
                   help="interpreter that runs `-m wanmon` (default: %(default)s)")
    p.add_argument("--profile", metavar="FILE.prof",
                   help="afterwards, run one `wanmon check` under cProfile with the same config "
                        "and store (its worker-thread part inline), save FILE.prof and print the "
                        "top entries")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the temp dir (config, store, page, the daemon's log)")
    a = p.parse_args(argv)
    if a.sites < 3:
        p.error("--sites must be >= 3")
    if a.districts is None:
        a.districts = max(1, min(100, a.sites // 100))
    if not 1 <= a.districts <= a.sites - 2:
        p.error("--districts must be in 1..sites-2")
    if a.interval < 1:
        p.error("--interval must be >= 1 (the daemon's minimum)")
    if a.minutes * 60 < a.interval:
        p.error("--minutes must cover at least one interval")
    if not 0 <= a.dead_pct < 50 or not 0 <= a.bounce_pct < 50:
        p.error("--dead-pct and --bounce-pct must be in [0, 50)")
    if not 0 <= a.dead_districts < a.districts or a.bounce_cycles < 1:
        p.error("--dead-districts must be < --districts; --bounce-cycles >= 1")
    if not 0 <= a.prefill_hours <= 24 * 40:
        p.error("--prefill-hours must be in [0, 960]")
    if not 0 < a.stop_delay < a.interval / 2:
        p.error("--stop-delay must be in (0, interval/2)")
    return a


# --------------------------------------------------------------------------
# the inventory


@dataclass(frozen=True)
class Site:
    id: str
    name: str
    level: str
    address: str
    kind: str                     # live | dead | bounce
    district: str | None = None
    parent: str | None = None
    admins: tuple[str, ...] = ()


def make_sites(n: int, n_districts: int, dead_pct: float, dead_districts: int,
               bounce_pct: float, seed: int) -> list[Site]:
    """1 core router (province level), n_districts district sites under it and
    the rest communes spread evenly over the districts.  Whole dead districts
    (the district and its communes) and the dead and bouncing communes are
    picked with a fixed seed.  Live sites get 127.30.x.y, dead ones 127.31.x.y,
    bouncing ones 127.32.x.y."""
    rng = random.Random(seed + n)
    n_comm = n - 1 - n_districts
    per = [n_comm // n_districts + (1 if d < n_comm % n_districts else 0) for d in range(n_districts)]
    # (id, name, level, district, parent, admins, district index)
    plan: list[tuple] = [("core", "Trung tâm dữ liệu tỉnh – Router lõi", "province", None, None,
                          ("noc-core@bench.example",), None)]
    communes_of: dict[int, list[int]] = {}
    k = 0
    for d in range(n_districts):
        dname = f"D{d + 1}"
        did = f"d{d + 1:03d}"
        plan.append((did, f"UBND huyện Thử Nghiệm {d + 1:03d}", "district", dname, "core",
                     (f"huyen{d + 1}@bench.example",), d))
        for _ in range(per[d]):
            k += 1
            communes_of.setdefault(d, []).append(len(plan))
            plan.append((f"c{k:05d}", f"UBND xã Thử Nghiệm {k:05d} (huyện {d + 1:03d})", "commune", dname,
                         did, (f"xa{k}@bench.example", f"huyen{d + 1}@bench.example"), d))
    kind = ["live"] * len(plan)
    for d in rng.sample(range(n_districts), dead_districts):
        kind[1 + sum(per[:d]) + d] = "dead"  # the district site itself
        for i in communes_of.get(d, []):
            kind[i] = "dead"
    free = [i for i in range(len(plan)) if plan[i][2] == "commune" and kind[i] == "live"]
    rng.shuffle(free)
    n_dead = min(len(free), int(round(n * dead_pct / 100.0)))
    n_bounce = min(len(free) - n_dead, int(round(n * bounce_pct / 100.0)))
    for i in free[:n_dead]:
        kind[i] = "dead"
    for i in free[n_dead:n_dead + n_bounce]:
        kind[i] = "bounce"
    pools = {
        "live": iter(_lab._hosts(_lab.LIVE_NET, kind.count("live"))),
        "dead": iter(_lab._hosts(_lab.DEAD_NET, kind.count("dead"))),
        "bounce": iter(_lab._hosts(BOUNCE_NET, kind.count("bounce"))),
    }
    return [Site(id=sid, name=name, level=level, address=next(pools[kd]), kind=kd, district=dist,
                 parent=parent, admins=admins)
            for (sid, name, level, dist, parent, admins, _), kd in zip(plan, kind)]


def wanmon_config(sites: list[Site], store_path: str, page_dir: str, interval_s: float,
                  grace_s: float) -> str:
    q = _lab.toml_str
    lines = [
        "# generated by bench/daemon.py",
        "[store]", f"path = {q(store_path)}", "",
        "[icmp]", f"count = {COUNT}", f"interval_ms = {INTERVAL_MS}", f"timeout_ms = {TIMEOUT_MS}",
        f"rate_pps = {RATE_PPS}", "",
        "[snmp]", "enabled = false", "",
        "[schedule]", f"icmp_interval_s = {float(interval_s)!r}", f"grace_s = {float(grace_s)!r}", "",
        "[alerts]", 'noc = ["noc@bench.example"]', "",
        "[page]", f"out_dir = {q(page_dir)}",
    ]
    for s in sites:
        lines += ["", "[[sites]]", f"id = {q(s.id)}", f"name = {q(s.name)}", f"level = {q(s.level)}"]
        if s.district:
            lines.append(f"district = {q(s.district)}")
        if s.parent:
            lines.append(f"parent = {q(s.parent)}")
        lines.append(f"address = {q(s.address)}")
        lines.append("admins = [" + ", ".join(q(a) for a in s.admins) + "]")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# history: a store as a daemon that has run --prefill-hours leaves it


def prefill_store(store_path: str, sites: list[Site], interval: float, hours: float, seed: int) -> dict:
    """Create the store with wanmon's own schema (Store.open) and write `hours`
    of cycles at `interval` spacing, ending one interval ago: every site's raw
    samples (live sites up with a steady RTT, dead sites down, the communes of
    a dead district unreachable; the bouncing sites up), the hourly rollups
    computed from them as record_cycle does, and the cycles rows.  Alert
    state, site state and events are left to the daemon."""
    sys.path.insert(0, REPO)
    from wanmon.store import Store

    t_build = time.perf_counter()
    Store.open(store_path).close()
    n_cyc = int(hours * 3600 // interval)
    now = time.time()
    first = now - n_cyc * interval
    rng = random.Random(seed)
    dead = {s.id for s in sites if s.kind == "dead"}
    tpl = []
    for s in sites:
        if s.id in dead:
            st = "unreachable" if s.parent in dead else "down"
            tpl.append((s.id, st, 0, 100.0, None))
        else:
            tpl.append((s.id, "up", COUNT, 0.0, round(1 + rng.random() * 30, 3)))
    counts = {k: sum(t[1] == k for t in tpl) for k in ("up", "degraded", "down", "unreachable", "unknown")}
    conn = sqlite3.connect(store_path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        conn.execute("CREATE TEMP TABLE tpl (site_id TEXT, status TEXT, received INTEGER, loss REAL, rtt REAL)")
        conn.executemany("INSERT INTO tpl VALUES (?,?,?,?,?)", tpl)
        conn.execute(
            "WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n + 1 < ?)"
            " INSERT INTO cycles (id, started_at, finished_at, duration_ms, sites, up, degraded, down,"
            " unreachable, unknown) SELECT n + 1, ? + n * ?, ? + n * ? + 4.0, 4000.0, ?, ?, ?, ?, ?, ? FROM k",
            (n_cyc, first, interval, first, interval, len(sites), *counts.values()))
        conn.execute(
            "WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n + 1 < ?)"
            " INSERT INTO icmp_samples (cycle_id, site_id, ts, status, reason, sent, received, loss_pct,"
            " rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms)"
            " SELECT n + 1, site_id, ? + n * ?, status, NULL, ?, received, loss, rtt * 0.9, rtt, rtt * 1.2,"
            " rtt * 0.1 FROM k, tpl",
            (n_cyc, first, interval, COUNT))
        conn.execute(
            "INSERT INTO icmp_hourly (site_id, hour, samples, reachable, sent, received, rtt_sum_ms, rtt_n,"
            " rtt_min_ms, rtt_max_ms)"
            " SELECT site_id, ts - ts % 3600 AS h, count(*), sum(status IN ('up', 'degraded')), sum(sent),"
            " sum(received), coalesce(sum(rtt_avg_ms), 0), count(rtt_avg_ms), min(rtt_min_ms), max(rtt_max_ms)"
            " FROM icmp_samples GROUP BY site_id, h")
        conn.execute("COMMIT")
        rows = conn.execute("SELECT count(*) FROM icmp_samples").fetchone()[0]
    finally:
        conn.close()
    return {"hours": hours, "cycles": n_cyc, "raw_rows": rows,
            "store_bytes": os.path.getsize(store_path), "build_s": time.perf_counter() - t_build}


# --------------------------------------------------------------------------
# the bouncing sites: their own nftables table in the namespace


class Bouncer:
    """Drops echo requests to BOUNCE_NET while 'down'; counts them always."""

    def __init__(self, ns: _lab.Netns) -> None:
        self.ns = ns
        self.down = False

    def _nft(self, script: str) -> None:
        r = subprocess.run(self.ns.exec_prefix() + ["nft", "-f", "-"], input=script,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise _lab.LabError(f"nft in {self.ns.name}: {r.stderr.strip()}")

    def create(self) -> None:
        self._nft(
            f"table inet {BOUNCE_TABLE} {{\n"
            "  counter bounce_req { }\n"
            "  set down { type ipv4_addr; flags interval; }\n"
            "  chain in {\n"
            "    type filter hook input priority -10; policy accept;\n"
            f'    ip daddr {BOUNCE_NET} icmp type echo-request counter name "bounce_req"\n'
            "    ip daddr @down icmp type echo-request drop\n"
            "  }\n"
            "}\n")

    def set_down(self, down: bool) -> None:
        if down == self.down:
            return
        if down:
            self._nft(f"add element inet {BOUNCE_TABLE} down {{ {BOUNCE_NET} }}\n")
        else:
            self._nft(f"flush set inet {BOUNCE_TABLE} down\n")
        self.down = down

    def count(self) -> int:
        out = self.ns._check(self.ns.exec_prefix() + [
            "nft", "-j", "list", "counter", "inet", BOUNCE_TABLE, "bounce_req"])
        for obj in json.loads(out).get("nftables", []):
            if obj.get("counter"):
                return int(obj["counter"]["packets"])
        return 0


def echo_requests(ns: _lab.Netns, bouncer: Bouncer) -> int:
    c = ns.counters()
    return c.get("live_req", 0) + c.get("dead_req", 0) + bouncer.count()


# --------------------------------------------------------------------------
# watching the daemon: /proc sampling and its log


def read_proc(pid: int) -> dict | None:
    """utime+stime (s), VmRSS, VmHWM (KiB) and threads of pid; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = stat[stat.rindex(")") + 2:].split()
    vals: dict[str, int] = {}
    for line in status.splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "Threads"):
            vals[k] = int(v.split()[0])
    if "VmRSS" not in vals:  # a zombie has no mm
        return None
    return {"t": time.time(), "cpu_s": (int(rest[11]) + int(rest[12])) / CLK_TCK,
            "rss_kib": vals["VmRSS"], "hwm_kib": vals["VmHWM"], "threads": vals.get("Threads")}


_CYCLE_RE = re.compile(r"wanmon\.daemon: cycle id=(\d+) took=([\d.]+)s alerts_ms=([\d.]+)\s*(.*)$")
_PAGE_RE = re.compile(r"wanmon\.page: page written .* bytes=(\d+)")
_ALERT_RE = re.compile(r"alert kind=(\S+) site=")
_UNSENT_RE = re.compile(r"(\d+) alert mail\(s\) not sent")


@dataclass
class LogCycle:
    id: int
    took_s: float
    alerts_ms: float
    counts: dict[str, int]
    t_logged: float
    proc: dict | None               # /proc figures when the line arrived
    alerts: dict[str, int] = field(default_factory=dict)
    mails_unsent: int = 0
    page_bytes: int | None = None


class LogWatcher(threading.Thread):
    """Reads the daemon's stderr line by line: keeps it in a file, timestamps
    the lines that matter and collects the per-cycle figures."""

    def __init__(self, stream, path: str, pid: int) -> None:
        super().__init__(daemon=True)
        self.stream, self.path, self.pid = stream, path, pid
        self.lock = threading.Lock()
        self.started = threading.Event()
        self.t_started: float | None = None
        self.started_proc: dict | None = None   # /proc figures when 'daemon started' arrived
        self.t_stopping: float | None = None
        self.t_stopped: float | None = None
        self.stopped_line = ""
        self.cycles: list[LogCycle] = []
        self.overruns: list[str] = []
        self.problems: list[str] = []    # cycle failed/skipped, tracebacks, scheduler warnings
        self.abandoned = False
        self._alerts: dict[str, int] = {}
        self._unsent = 0
        self._page_bytes: int | None = None
        self.tail: list[str] = []

    def run(self) -> None:
        with open(self.path, "w", encoding="utf-8") as out:
            for raw in self.stream:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                now = time.time()
                out.write(line + "\n")
                self.tail = (self.tail + [line])[-40:]
                self._parse(line, now)
        self.started.set()  # unblock a waiter if the daemon died before starting

    def _parse(self, line: str, now: float) -> None:
        with self.lock:
            if m := _ALERT_RE.search(line):
                self._alerts[m.group(1)] = self._alerts.get(m.group(1), 0) + 1
            elif m := _UNSENT_RE.search(line):
                self._unsent += int(m.group(1))
            elif m := _PAGE_RE.search(line):
                self._page_bytes = int(m.group(1))
            elif m := _CYCLE_RE.search(line):
                counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(4))}
                self.cycles.append(LogCycle(int(m.group(1)), float(m.group(2)), float(m.group(3)), counts,
                                            now, read_proc(self.pid), self._alerts, self._unsent,
                                            self._page_bytes))
                self._alerts, self._unsent, self._page_bytes = {}, 0, None
            elif "wanmon.daemon: daemon started" in line:
                self.t_started = now
                self.started_proc = read_proc(self.pid)
                self.started.set()
            elif "cycle overran its interval" in line:
                self.overruns.append(line)
            elif "wanmon.daemon: stopping:" in line:
                self.t_stopping = now
            elif "wanmon.daemon: stopped after" in line:
                self.t_stopped, self.stopped_line = now, line
            elif "did not finish within grace_s" in line:
                self.abandoned = True
                self.problems.append(line)
            elif ("cycle failed" in line or "cycle skipped" in line or "Traceback" in line
                  or " apscheduler" in line or " ERROR " in line or " CRITICAL " in line):
                self.problems.append(line)


class Sampler(threading.Thread):
    """Samples /proc/<pid> every period until the process is gone or stop()."""

    def __init__(self, pid: int, period: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[dict] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            s = read_proc(self.pid)
            if s is None:
                break
            self.samples.append(s)
            self._halt.wait(self.period)

    def stop(self) -> None:
        self._halt.set()


# --------------------------------------------------------------------------
# one run


def _sleep_until(t: float, proc: subprocess.Popen) -> bool:
    """Sleep until time t; False if the daemon exited meanwhile."""
    while True:
        if proc.poll() is not None:
            return False
        left = t - time.time()
        if left <= 0:
            return True
        time.sleep(min(left, 0.2))


def read_store(path: str, after_id: int = 0) -> dict:
    """The cycles the daemon recorded (ids above the prefilled ones), the outbox and sizes."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cycles = [dict(zip(("id", "started_at", "finished_at", "duration_ms", "sites", "up", "degraded",
                            "down", "unreachable", "unknown"), r))
                  for r in conn.execute("SELECT id, started_at, finished_at, duration_ms, sites, up, degraded,"
                                        " down, unreachable, unknown FROM cycles WHERE id > ? ORDER BY id",
                                        (after_id,))]
        outbox = dict(conn.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall())
        samples = conn.execute("SELECT count(*) FROM icmp_samples").fetchone()[0]
    finally:
        conn.close()
    return {"cycles": cycles, "outbox": outbox, "icmp_samples": samples,
            "size_bytes": sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))}


def run_daemon(args, ns: _lab.Netns, bouncer: Bouncer, cfg_path: str, tmp: str) -> dict:
    interval = args.interval
    duration = args.minutes * 60.0
    n_expected = max(1, math.ceil(duration / interval - 1e-9))
    argv = [args.python, "-m", "wanmon", "--config", cfg_path, "run"]
    req0 = echo_requests(ns, bouncer)
    # `ip netns exec` execs the command in place: the pid we get is the daemon's
    t_spawn = time.time()
    with open(os.path.join(tmp, "daemon.out"), "wb") as out:
        proc = subprocess.Popen(ns.exec_prefix() + argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.PIPE, cwd=REPO, start_new_session=True)
    pid = proc.pid
    res: dict[str, Any] = {"pid": pid, "argv": argv, "n_expected": n_expected, "errors": []}
    watcher = LogWatcher(proc.stderr, os.path.join(tmp, "daemon.log"), pid)
    watcher.start()
    sampler = Sampler(pid, args.sample_s)
    sampler.start()
    try:
        if not watcher.started.wait(180) or watcher.t_started is None:
            raise RuntimeError("the daemon did not log 'daemon started' within 180 s")
        t0 = watcher.t_started
        t_window = t0 + n_expected * interval - WINDOW_EDGE_S
        log(f"daemon pid {pid} started {t0 - t_spawn:.2f} s after spawn; {n_expected} cycles "
            f"expected in {n_expected * interval:.0f} s (until {time.strftime('%H:%M:%S', time.localtime(t_window))})")
        # bouncing sites: toggled half an interval after each cycle's slot, so
        # they are down for cycles k with (k // bounce_cycles) odd
        k = 0
        last_logged = 0
        while True:
            t_toggle = t0 + k * interval + interval / 2
            if t_toggle >= t_window:
                break
            if not _sleep_until(t_toggle, proc):
                raise RuntimeError(f"the daemon exited early with status {proc.returncode}")
            bouncer.set_down(((k + 1) // args.bounce_cycles) % 2 == 1)
            k += 1
            with watcher.lock:
                new = watcher.cycles[last_logged:]
                last_logged = len(watcher.cycles)
            for c in new:
                log(f"  cycle {c.id:3d}  took {c.took_s:6.2f} s  alerts {c.alerts_ms:8.1f} ms  "
                    f"rss {(c.proc or {}).get('rss_kib', 0) / 1024:6.1f} MiB  "
                    + " ".join(f"{kk}={v}" for kk, v in sorted(c.counts.items())))
        if not _sleep_until(t_window, proc):
            raise RuntimeError(f"the daemon exited early with status {proc.returncode}")
        res["window_proc"] = read_proc(pid)
        res["t_window"] = time.time()
        if args.stop == "mid-cycle":
            if not _sleep_until(t0 + n_expected * interval + args.stop_delay, proc):
                raise RuntimeError(f"the daemon exited early with status {proc.returncode}")
        res["stop_proc"] = read_proc(pid)   # VmHWM "at the end, before stopping"
        with watcher.lock:
            res["cycles_logged_before_stop"] = len(watcher.cycles)
        t_term = time.time()
        os.kill(pid, signal.SIGTERM)
        log(f"SIGTERM sent ({args.stop}); waiting up to grace_s={args.grace:g} s for exit")
        try:
            rc = proc.wait(timeout=args.grace + 15)
            t_exit = time.time()
        except subprocess.TimeoutExpired:
            os.kill(pid, signal.SIGKILL)
            rc = proc.wait()
            t_exit = None
            res["errors"].append(f"the daemon did not exit within grace_s + 15 s; killed (pid {pid})")
        res.update(rc=rc, t_spawn=t_spawn, t0=t0, t_term=t_term, t_exit=t_exit,
                   exit_s=(t_exit - t_term) if t_exit else None)
    except RuntimeError as e:
        res["errors"].append(str(e))
        res["log_tail"] = watcher.tail[-20:]
    finally:
        if proc.poll() is None:
            os.kill(pid, signal.SIGKILL)   # our own child, by its pid
            proc.wait()
        sampler.stop()
        sampler.join(5)
        watcher.join(10)
    res["echo_requests"] = echo_requests(ns, bouncer) - req0
    res["watcher"] = watcher
    res["samples"] = sampler.samples
    return res


# --------------------------------------------------------------------------
# figures


def mmm(vals: list[float]) -> dict | None:
    if not vals:
        return None
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "n": len(vals)}


def analyse(args, res: dict, store: dict | None, sites: list[Site]) -> dict:
    w: LogWatcher = res["watcher"]
    interval = args.interval
    n_expected = res["n_expected"]
    t0 = res.get("t0")
    by_id = {c["id"]: c for c in (store or {}).get("cycles", [])}
    rows = []
    prev_cpu = w.started_proc["cpu_s"] if w.started_proc else None
    for c in w.cycles:
        sc = by_id.get(c.id, {})
        row: dict[str, Any] = {
            "id": c.id, "took_s": c.took_s, "alerts_ms": c.alerts_ms, "counts": c.counts,
            "alert_notices": c.alerts, "mails_unsent": c.mails_unsent, "page_bytes": c.page_bytes,
            "probe_s": sc["duration_ms"] / 1000 if sc else None,
        }
        if sc and t0:
            off = sc["started_at"] - t0
            slot = max(0, round(off / interval))
            row.update(start_s=off, slot=slot, late_s=off - slot * interval)
        if c.proc:
            row.update(rss_mib=c.proc["rss_kib"] / 1024, hwm_mib=c.proc["hwm_kib"] / 1024,
                       cpu_s_since_prev=(c.proc["cpu_s"] - prev_cpu) if prev_cpu is not None else None)
            prev_cpu = c.proc["cpu_s"]
        row["in_window"] = "slot" in row and row["slot"] < n_expected
        rows.append(row)
    win = [r for r in rows if r["in_window"]]
    slots = {r["slot"] for r in win}
    after = [r for r in rows if not r["in_window"]]
    wp, sp = res.get("window_proc"), res.get("stop_proc")
    cpu: dict[str, Any] = {}
    if wp and t0:
        whole = res["t_window"] - res["t_spawn"]
        startup_cpu = w.started_proc["cpu_s"] if w.started_proc else None
        cpu = {
            "window_s": whole, "cpu_s": wp["cpu_s"], "pct_of_one_core": 100 * wp["cpu_s"] / whole,
            "startup_cpu_s": startup_cpu, "startup_wall_s": t0 - res["t_spawn"],
            "per_cycle_s": ((wp["cpu_s"] - startup_cpu) / n_expected) if startup_cpu is not None else None,
            "steady_pct": (100 * (wp["cpu_s"] - startup_cpu) / (res["t_window"] - t0))
            if startup_cpu is not None else None,
        }
    rss: dict[str, Any] = {}
    if sp:
        rss = {"hwm_kib_at_stop": sp["hwm_kib"], "rss_kib_at_stop": sp["rss_kib"],
               "hwm_bytes_at_stop": sp["hwm_kib"] * 1024}
        after_first = next((r for r in rows if r.get("rss_mib") is not None), None)
        last_win = next((r for r in reversed(win) if r.get("rss_mib") is not None), None)
        if after_first and last_win:
            rss["rss_mib_after_first_cycle"] = after_first["rss_mib"]
            rss["rss_mib_after_last_window_cycle"] = last_win["rss_mib"]
            n = last_win["id"] - after_first["id"]
            rss["growth_mib_per_cycle"] = ((last_win["rss_mib"] - after_first["rss_mib"]) / n) if n else None
    if res["samples"]:
        rss["max_sampled_rss_kib"] = max(s["rss_kib"] for s in res["samples"])
        rss["threads_max"] = max(s["threads"] or 0 for s in res["samples"])
    completed = len((store or {}).get("cycles", []))
    out = {
        "rows": rows,
        "expected": n_expected,
        "ran_in_window": len(win),
        "missed_slots": sorted(set(range(n_expected)) - slots),
        "after_window": [r["id"] for r in after],
        "took_s": mmm([r["took_s"] for r in rows]),
        "probe_s": mmm([r["probe_s"] for r in rows if r["probe_s"] is not None]),
        "alerts_ms": mmm([r["alerts_ms"] for r in rows]),
        "late_s": mmm([r["late_s"] for r in rows if "late_s" in r]),
        "cpu": cpu,
        "rss": rss,
        "overruns": len(w.overruns),
        "problems": w.problems,
        "store_cycles": completed,
        "echo_requests": res.get("echo_requests"),
        "echo_requests_expected": completed * len(sites) * COUNT,
        "outbox": (store or {}).get("outbox"),
        "store_bytes": (store or {}).get("size_bytes"),
        "inflight_at_stop": None,
        "stopped_line": w.stopped_line,
    }
    # the cycle running when SIGTERM arrived: one that was logged after the stop
    n_before = res.get("cycles_logged_before_stop")
    if n_before is not None and res.get("t_term"):
        late = [r for r in rows[n_before:]]
        out["inflight_at_stop"] = late[0] if late else None
    return out


def acceptance(args, res: dict, a: dict) -> list[dict]:
    checks = []

    def add(name, ok, detail):
        checks.append({"check": name, "result": "PASS" if ok else "FAIL", "detail": detail})

    took = a["took_s"]
    worst = took["max"] if took else None
    add(f"every cycle within its {args.interval:g} s interval",
        took is not None and worst <= args.interval and a["overruns"] == 0,
        f"{took['n'] if took else 0} cycles, slowest {fmt(worst, '.2f')} s, "
        f"{a['overruns']} overrun warning(s)")
    add("cycles ran = expected",
        a["ran_in_window"] == a["expected"] and not a["missed_slots"] and not a["problems"],
        f"{a['ran_in_window']} of {a['expected']} in the window"
        + (f", missed slots {a['missed_slots']}" if a["missed_slots"] else "")
        + (f", {len(a['problems'])} error/warning line(s)" if a["problems"] else ""))
    hwm = a["rss"].get("hwm_bytes_at_stop")
    add("peak RSS (VmHWM) <= 200 MB", hwm is not None and hwm <= RSS_LIMIT_BYTES,
        "-" if hwm is None else f"{hwm / 1e6:.1f} MB ({hwm / 2**20:.1f} MiB)")
    inflight = a["inflight_at_stop"]
    ok = res.get("rc") == 0 and res.get("exit_s") is not None and res["exit_s"] <= args.grace \
        and "abandon" not in " ".join(a["problems"])
    add(f"SIGTERM: exit 0 within grace_s={args.grace:g} s", ok,
        f"rc {res.get('rc')}, exited {fmt(res.get('exit_s'), '.2f')} s after SIGTERM"
        + (f"; the running cycle {inflight['id']} finished first ({inflight['took_s']:.2f} s)"
           if inflight else "; no cycle was running"))
    return checks


# --------------------------------------------------------------------------
# reporting


def print_report(meta: dict, a: dict, checks: list[dict], profile_text: str | None) -> None:
    p = print
    lay = meta["layout"]
    p()
    p(f"wanmon run: {meta['sites']} sites ({lay['districts']} districts, {lay['communes']} communes; "
      f"{lay['dead']} dead incl. {lay['dead_districts']} whole district(s), {lay['bounce']} bouncing "
      f"{meta['bounce_cycles']} down / {meta['bounce_cycles']} up), a cycle every {meta['interval_s']:g} s "
      f"for {meta['minutes']:g} min  |  netns {meta['netns']}")
    p(f"daemon: {meta['daemon_cmd']}")
    pf = meta.get("prefill")
    p("store: " + (f"prefilled with {pf['hours']:g} h of history ({pf['cycles']} cycles, {pf['raw_rows']:,} raw "
                   f"samples, {pf['store_bytes'] / 2**20:.0f} MiB)" if pf else "fresh (empty at start)"))
    p(f"[icmp] count {COUNT}, interval_ms {INTERVAL_MS}, timeout_ms {TIMEOUT_MS}, rate_pps {RATE_PPS}; "
      f"{meta['kernel']}, {meta['cpus']} CPUs, Python {meta['python']}")
    p()

    def g(key, spec, scale=1.0):
        return lambda r: fmt(None if r.get(key) is None else r[key] * scale, spec)

    def counts(r):
        c = r["counts"]
        return "/".join(str(c.get(k, 0)) for k in ("up", "degraded", "down", "unreachable"))

    def notices(r):
        return ",".join(f"{k}:{v}" for k, v in sorted(r["alert_notices"].items())) or "-"

    cols = [
        ("", "cycle", 5, lambda r: f"{r['id']}" + ("" if r["in_window"] else "*")),
        ("start", "at s", 6, g("start_s", ".1f")),
        ("start", "late ms", 7, g("late_s", ".0f", 1000)),
        ("duration s", "cycle", 6, g("took_s", ".2f")),
        ("duration s", "probe", 6, g("probe_s", ".2f")),
        ("", "alerts ms", 9, g("alerts_ms", ".1f")),
        ("", "CPU s", 5, g("cpu_s_since_prev", ".2f")),
        ("MiB", "RSS", 6, g("rss_mib", ".1f")),
        ("MiB", "HWM", 6, g("hwm_mib", ".1f")),
        ("", "up/deg/down/unr", 15, counts),
        ("", "notices", 7, notices),
        ("", "mails", 5, lambda r: str(r["mails_unsent"])),
        ("", "HTML kchar", 10, g("page_bytes", ".0f", 1 / 1000)),
    ]
    for line in render_table(cols, a["rows"]):
        p(line)
    p("  duration cycle: the daemon's `took=` (probe, store, alerts, page); probe: the store's "
      "cycles.duration_ms")
    p("  start at s / late ms: the store's cycles.started_at (taken after the store is opened) after "
      "'daemon started' was logged, and after the cycle's slot")
    p("  CPU s: the daemon's utime+stime since the previous cycle's log line (the first: since start-up); "
      "RSS/HWM: VmRSS/VmHWM when the cycle's line was logged")
    p("  notices: alert notifications logged in the cycle; mails: alert mails recorded as unsent (no [smtp]); "
      "HTML kchar: index.html as logged by the page writer")
    if a["after_window"]:
        p(f"  * after the window: cycle(s) {', '.join(map(str, a['after_window']))} (running at SIGTERM)")
    p()

    summ = [
        ("cycle duration s (took=)", a["took_s"], ".2f"),
        ("probe phase s (cycles.duration_ms)", a["probe_s"], ".2f"),
        ("alert evaluation ms (alerts_ms)", a["alerts_ms"], ".1f"),
        ("start lateness ms", a["late_s"] and {k: (v * 1000 if k != "n" else v)
                                              for k, v in a["late_s"].items()}, ".0f"),
    ]
    scols = [
        ("", "", 10, lambda r: r[0]),
        ("", "min", 6, lambda r: fmt(r[1] and r[1]["min"], r[2])),
        ("", "median", 6, lambda r: fmt(r[1] and r[1]["median"], r[2])),
        ("", "max", 6, lambda r: fmt(r[1] and r[1]["max"], r[2])),
        ("", "cycles", 6, lambda r: str(r[1]["n"]) if r[1] else "0"),
    ]
    for line in render_table(scols, summ):
        p(line)
    p()
    c, r = a["cpu"], a["rss"]
    p(f"cycles ran in the window: {a['ran_in_window']} of {a['expected']} expected"
      + (f" (missed slots {a['missed_slots']})" if a["missed_slots"] else "")
      + f"; {a['store_cycles']} in the store in all")
    if c:
        p(f"CPU: {c['cpu_s']:.1f} s in {c['window_s']:.1f} s from spawn to the end of the window = "
          f"{c['pct_of_one_core']:.1f} % of one core ({c['pct_of_one_core'] / meta['cpus']:.1f} % of the machine)")
        if c.get("startup_cpu_s") is not None:
            p(f"     start-up {c['startup_cpu_s']:.2f} s CPU in {c['startup_wall_s']:.2f} s; then "
              f"{c['per_cycle_s']:.2f} s CPU per cycle = {c['steady_pct']:.1f} % of one core in steady state")
    if r.get("hwm_kib_at_stop") is not None:
        p(f"RSS: VmHWM {r['hwm_kib_at_stop'] / 1024:.1f} MiB just before SIGTERM, VmRSS then "
          f"{r['rss_kib_at_stop'] / 1024:.1f} MiB; after cycle 1 {fmt(r.get('rss_mib_after_first_cycle'), '.1f')} MiB, "
          f"after the last window cycle {fmt(r.get('rss_mib_after_last_window_cycle'), '.1f')} MiB "
          f"({fmt(r.get('growth_mib_per_cycle'), '+.2f')} MiB per cycle); {r.get('threads_max')} threads at most")
    if a["echo_requests"] is not None:
        same = "=" if a["echo_requests"] == a["echo_requests_expected"] else "!="
        p(f"echo requests counted by nftables: {a['echo_requests']} {same} {a['store_cycles']} cycles x "
          f"{meta['sites']} sites x {COUNT} = {a['echo_requests_expected']}")
    pg = a.get("page_files_bytes") or {}
    p(f"outbox: {a['outbox']}; store {fmt(a['store_bytes'] and a['store_bytes'] / 2**20, '.1f')} MiB; page "
      + (", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in pg.items()) or "not written"))
    if a["stopped_line"]:
        p(f"daemon's last words: {a['stopped_line'].split(': ', 1)[-1]}")
    if a["problems"]:
        p("log lines worth a look:")
        for line in a["problems"][:20]:
            p(f"  {line}")
    p()
    p("Acceptance:")
    for ck in checks:
        p(f"  {ck['result']:4s}  {ck['check']:40s}  {ck['detail']}")
    if meta.get("errors"):
        p()
        p("Errors:")
        for e in meta["errors"]:
            p(f"  {e}")
    if profile_text:
        p()
        p(profile_text)


# cProfile sees only the thread it runs in, and a cycle does its store, alert and
# page work in asyncio.to_thread: run that inline so the profile shows all of it
_PROFILE_DRIVER = """\
import asyncio, runpy, sys

async def _inline(fn, /, *a, **kw):
    return fn(*a, **kw)

asyncio.to_thread = _inline
sys.argv = ["wanmon"] + sys.argv[1:]
runpy.run_module("wanmon", run_name="__main__", alter_sys=True)
"""


def profile_check(runner, args, cfg_path: str, tmp: str, out_prof: str) -> str:
    import io
    import pstats
    out_prof = os.path.abspath(out_prof)
    driver = os.path.join(tmp, "profile_driver.py")
    with open(driver, "w") as f:
        f.write(_PROFILE_DRIVER)
    argv = [args.python, "-m", "cProfile", "-o", out_prof, driver, "--config", cfg_path, "check"]
    rr = runner.run(argv, stdout_path=os.path.join(tmp, "profile.out"),
                    stderr_path=os.path.join(tmp, "profile.err"), timeout_s=600, cwd=REPO)
    buf = io.StringIO()
    buf.write(f"cProfile of one `wanmon check` with the same config and store (asyncio.to_thread run "
              f"inline, so the store, alert and page work is in the profile): wall {rr.wall_s:.2f} s, "
              f"CPU {rr.cpu_s:.2f} s, peak RSS {rr.maxrss_kib / 1024:.1f} MiB (under the profiler), "
              f"rc {rr.rc}; saved {out_prof}\n")
    if os.path.exists(out_prof):
        st = pstats.Stats(out_prof, stream=buf)
        st.sort_stats("cumulative").print_stats(35)
        st.sort_stats("tottime").print_stats(20)
    return buf.getvalue()


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _lab.install_signal_cleanup()
    r = _lab._run([args.python, "-m", "wanmon", "--help"], cwd=REPO, timeout=60)
    if r.returncode != 0 or not re.search(r"^\s+run\s", r.stdout, re.M):
        log(f"error: `{args.python} -m wanmon --help` failed (rc {r.returncode}):\n"
            f"{(r.stderr or r.stdout).strip()[-800:]}")
        return 2

    sites = make_sites(args.sites, args.districts, args.dead_pct, args.dead_districts,
                       args.bounce_pct, args.seed)
    tmp = tempfile.mkdtemp(prefix="wmbench-daemon-", dir="/tmp")
    store_path = os.path.join(tmp, "store", "wanmon.db")
    page_dir = os.path.join(tmp, "public")
    os.makedirs(os.path.dirname(store_path))
    cfg_path = os.path.join(tmp, "sites.toml")
    with open(cfg_path, "w", encoding="utf-8") as f:
        f.write(wanmon_config(sites, store_path, page_dir, args.interval, args.grace))
    ns = _lab.Netns()
    bouncer = Bouncer(ns)
    errors: list[str] = []
    res: dict = {}
    store = None
    page: dict[str, int] = {}
    prefill: dict | None = None
    profile_text = None
    try:
        log(f"creating network namespace {ns.name} (temp dir {tmp})")
        ns.create()
        bouncer.create()
        by_kind = {k: [s.address for s in sites if s.kind == k] for k in ("live", "dead", "bounce")}
        live_chk = sorted({by_kind["live"][0], by_kind["live"][-1]})
        dead_chk = sorted({by_kind["dead"][0], by_kind["dead"][-1]}) if by_kind["dead"] else \
            _lab._hosts(_lab.DEAD_NET, 1)
        bounce_chk = sorted({by_kind["bounce"][0], by_kind["bounce"][-1]}) if by_kind["bounce"] else \
            _lab._hosts(BOUNCE_NET, 1)
        fping = shutil.which("fping")
        if fping:
            bouncer.set_down(True)
            ns.verify(live_chk, dead_chk + bounce_chk, fping)
            bouncer.set_down(False)
            for note in ns.verify(live_chk + bounce_chk, dead_chk, fping):
                log(f"verified in {ns.name}: {note}; bouncing sites answer only while up")
        else:
            log("warning: fping not found: the namespace's drop rules are not verified")
        r = _lab._run(ns.exec_prefix() + [args.python, "-m", "wanmon", "--config", cfg_path, "validate"],
                      cwd=REPO)
        if r.returncode != 0:
            raise _lab.LabError(f"wanmon validate rejects the generated config:\n{(r.stderr or r.stdout)[-2000:]}")
        if args.prefill_hours > 0:
            log(f"prefilling the store with {args.prefill_hours:g} h of history ...")
            prefill = prefill_store(store_path, sites, args.interval, args.prefill_hours, args.seed)
            log(f"  {prefill['cycles']} cycles, {prefill['raw_rows']:,} raw samples, "
                f"{prefill['store_bytes'] / 2**20:.0f} MiB, in {prefill['build_s']:.0f} s")
        log(f"running the daemon for {args.minutes:g} min ...")
        res = run_daemon(args, ns, bouncer, cfg_path, tmp)
        errors += res["errors"]
        for line in res.get("log_tail", []):
            log(f"    {line}")
        try:
            store = read_store(store_path, (prefill or {}).get("cycles", 0))
        except sqlite3.Error as e:
            errors.append(f"reading the store: {e}")
        page = {name: os.path.getsize(os.path.join(page_dir, name))
                for name in ("index.html", "status.json") if os.path.exists(os.path.join(page_dir, name))}
        if args.profile:
            log("profiling one `wanmon check` with the same config ...")
            runner = _lab.Runner(ns.name, _lab.build_helper(tmp))
            profile_text = profile_check(runner, args, cfg_path, tmp, args.profile)
    except _lab.LabError as e:
        log(f"error: lab setup failed: {e}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        _lab.teardown(ns, tmp, args.keep_tmp)

    a = analyse(args, res, store, sites)
    a["page_files_bytes"] = page
    if not a["rows"]:
        errors.append("the daemon logged no cycle")
    checks = acceptance(args, res, a)
    n_dist = sum(s.level == "district" for s in sites)
    meta = {
        "netns": ns.name, "sites": len(sites), "interval_s": args.interval, "minutes": args.minutes,
        "grace_s": args.grace, "stop": args.stop, "bounce_cycles": args.bounce_cycles, "prefill": prefill,
        "layout": {"districts": n_dist, "communes": len(sites) - 1 - n_dist,
                   "dead": sum(s.kind == "dead" for s in sites), "dead_districts": args.dead_districts,
                   "bounce": sum(s.kind == "bounce" for s in sites)},
        "icmp": {"count": COUNT, "interval_ms": INTERVAL_MS, "timeout_ms": TIMEOUT_MS, "rate_pps": RATE_PPS},
        "daemon_cmd": f"{args.python} -m wanmon --config FILE run",
        "kernel": f"Linux {platform.release()}", "cpus": os.cpu_count(),
        "python": sys.version.split()[0], "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "errors": errors,
    }
    if args.json:
        samples = res.get("samples", [])
        out = {"meta": meta, "result": a, "acceptance": checks, "profile": profile_text,
               "daemon": {k: res.get(k) for k in ("pid", "rc", "exit_s", "t_spawn", "t0", "t_window", "t_term",
                                                 "t_exit", "window_proc", "stop_proc")},
               "samples": [{k: s[k] for k in ("t", "cpu_s", "rss_kib", "hwm_kib")} for s in samples]}
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        print_report(meta, a, checks, profile_text)
    bad_run = bool(errors) or res.get("rc") is None
    return 1 if bad_run else 0


if __name__ == "__main__":
    sys.exit(main())
