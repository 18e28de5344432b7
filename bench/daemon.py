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

With --snmp-dead-pct P, SNMP is on for every site (v2c, polled by the
daemon's SNMP job): one real net-snmp `snmpd` in the namespace answers on
udp:161 for every address (it replies from the address asked, IP_PKTINFO),
and P % of the sites, communes that do answer ICMP, have a dead agent (their
SNMP requests are silently dropped by nftables; ICMP-dead sites are SNMP-dead
too).  The report then adds, per cycle, how long after the sweep ended the
page was written (the daemon's page_after and the page file's mtime against
the store's cycles.finished_at) and the SNMP job's runs, and PASS/FAIL for
"page within 2 s of each sweep".  --diag (bench/_daemon_diag.py) and
--asyncio-debug show what held the daemon's event loop, and when.

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
SNMPDEAD_NET = ipaddress.ip_network("127.33.0.0/16")  # answer ICMP, but their SNMP agent is dead
SNMP_TABLE = "wmbench_snmp"
PAGE_LIMIT_S = 2.0     # acceptance: the page is written within 2 s of the sweep's end
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
    p.add_argument("--rate-pps", type=int, default=RATE_PPS,
                   help="[icmp] rate_pps (default: %(default)s; wanmon's shipped default is 1000)")
    g = p.add_argument_group("SNMP (off unless --snmp-dead-pct is given)")
    g.add_argument("--snmp-dead-pct", type=float, default=None, metavar="P",
                   help="turn SNMP on for every site, with one real snmpd answering for all of them in the "
                        "namespace, and make P %% of the sites (communes that answer ICMP) have a dead agent: "
                        "their SNMP requests are silently dropped")
    g.add_argument("--snmp-interval", type=float, default=None, metavar="S",
                   help="[snmp] interval_s (default: --interval, so every agent is due every cycle; "
                        "wanmon's shipped default is 300)")
    g.add_argument("--snmp-timeout-ms", type=float, default=1000.0,
                   help="[snmp] timeout_ms (default: %(default)s, as shipped)")
    g.add_argument("--snmp-retries", type=int, default=1, help="[snmp] retries (default: %(default)s, as shipped)")
    g.add_argument("--snmp-budget", type=float, default=30.0,
                   help="[snmp] budget_s (default: %(default)s, as shipped)")
    g.add_argument("--snmp-max-concurrency", type=int, default=256,
                   help="[snmp] max_concurrency (default: %(default)s, as shipped)")
    g.add_argument("--snmp-max-backoff", type=float, default=3600.0,
                   help="[snmp] max_backoff_s (default: %(default)s, as shipped)")
    g.add_argument("--snmp-ifaces", type=int, default=8,
                   help="extra interfaces (veth pairs, both ends in the namespace) the agent reports besides lo, "
                        "so an interface-table walk is router-sized (default: %(default)s)")
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
    p.add_argument("--asyncio-debug", action="store_true",
                   help="run the daemon with PYTHONASYNCIODEBUG=1 and report every callback that held its event "
                        "loop >= 0.1 s (asyncio's slow-callback warnings; debug mode itself costs some CPU)")
    p.add_argument("--diag", action="store_true",
                   help="run the daemon through bench/_daemon_diag.py, which times some of wanmon's functions "
                        "(SNMP outcome processing, store reads, Inventory.from_config ...) and the jobs' "
                        "firings, and report which ones held the event loop and when")
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
    if a.rate_pps < 1:
        p.error("--rate-pps must be >= 1")
    a.snmp = a.snmp_dead_pct is not None
    if a.snmp:
        if not 0 <= a.snmp_dead_pct <= 90 or a.dead_pct + a.bounce_pct + a.snmp_dead_pct > 95:
            p.error("--snmp-dead-pct must be in [0, 90], and dead + bounce + snmp-dead <= 95 %")
        if a.snmp_interval is None:
            a.snmp_interval = a.interval
        if a.snmp_interval < 0 or a.snmp_timeout_ms <= 0 or not 0 <= a.snmp_retries <= 10 \
                or a.snmp_budget <= 0 or not 0 < a.snmp_max_concurrency <= 4096 or a.snmp_max_backoff < 0:
            p.error("an --snmp-* value is out of range (see wanmon's [snmp] limits)")
        if not 0 <= a.snmp_ifaces <= 64 or a.snmp_ifaces % 2:
            p.error("--snmp-ifaces must be even (veth pairs), 0..64")
    return a


# --------------------------------------------------------------------------
# the inventory


@dataclass(frozen=True)
class Site:
    id: str
    name: str
    level: str
    address: str
    kind: str                     # live | dead | bounce | snmpdead (answers ICMP, dead SNMP agent)
    district: str | None = None
    parent: str | None = None
    admins: tuple[str, ...] = ()


def make_sites(n: int, n_districts: int, dead_pct: float, dead_districts: int,
               bounce_pct: float, seed: int, snmp_dead_pct: float = 0.0) -> list[Site]:
    """1 core router (province level), n_districts district sites under it and
    the rest communes spread evenly over the districts.  Whole dead districts
    (the district and its communes) and the dead, bouncing and SNMP-dead
    communes are picked with a fixed seed.  Live sites get 127.30.x.y, dead
    ones 127.31.x.y, bouncing ones 127.32.x.y, SNMP-dead ones (ICMP answers,
    the agent does not) 127.33.x.y.  The dead and bouncing picks do not depend
    on snmp_dead_pct."""
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
    n_sdead = min(len(free) - n_dead - n_bounce, int(round(n * snmp_dead_pct / 100.0)))
    for i in free[n_dead + n_bounce:n_dead + n_bounce + n_sdead]:
        kind[i] = "snmpdead"
    pools = {
        "live": iter(_lab._hosts(_lab.LIVE_NET, kind.count("live"))),
        "dead": iter(_lab._hosts(_lab.DEAD_NET, kind.count("dead"))),
        "bounce": iter(_lab._hosts(BOUNCE_NET, kind.count("bounce"))),
        "snmpdead": iter(_lab._hosts(SNMPDEAD_NET, kind.count("snmpdead"))),
    }
    return [Site(id=sid, name=name, level=level, address=next(pools[kd]), kind=kd, district=dist,
                 parent=parent, admins=admins)
            for (sid, name, level, dist, parent, admins, _), kd in zip(plan, kind)]


def wanmon_config(sites: list[Site], store_path: str, page_dir: str, args,
                  community_file: str | None = None) -> str:
    q = _lab.toml_str
    if args.snmp:
        snmp = ["[snmp]", "enabled = true", 'version = "2c"', "port = 161",
                f"timeout_ms = {float(args.snmp_timeout_ms)!r}", f"retries = {args.snmp_retries}",
                f"interval_s = {float(args.snmp_interval)!r}", f"max_concurrency = {args.snmp_max_concurrency}",
                f"budget_s = {float(args.snmp_budget)!r}", f"max_backoff_s = {float(args.snmp_max_backoff)!r}",
                f"community_file = {q(community_file)}"]
    else:
        snmp = ["[snmp]", "enabled = false"]
    lines = [
        "# generated by bench/daemon.py",
        "[store]", f"path = {q(store_path)}", "",
        "[icmp]", f"count = {COUNT}", f"interval_ms = {INTERVAL_MS}", f"timeout_ms = {TIMEOUT_MS}",
        f"rate_pps = {args.rate_pps}", "",
        *snmp, "",
        "[schedule]", f"icmp_interval_s = {float(args.interval)!r}", f"grace_s = {float(args.grace)!r}", "",
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
    """Drops echo requests (and SNMP requests) to BOUNCE_NET while 'down'; counts the echo requests always."""

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
            f'    ip daddr {BOUNCE_NET} ip ttl >= {_lab.SWEEP_TTL} icmp type echo-request counter name "bounce_req"\n'
            "    ip daddr @down icmp type echo-request drop\n"
            "    ip daddr @down udp dport 161 drop\n"   # a router that is down answers no SNMP either
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


def echo_requests(ns: _lab.Netns, bouncer: Bouncer, agent: "SnmpLab | None" = None) -> int:
    """The sweeps' echo requests (a trace's probes, with shorter TTLs, are not counted here)."""
    c = ns.counters()
    extra = agent.counters().get("snmpdead_echo", 0) if agent is not None else 0
    return c.get("live_req", 0) + c.get("dead_req", 0) + bouncer.count() + extra


# --------------------------------------------------------------------------
# SNMP: one real net-snmp agent for every address, dead agents dropped by nftables

# A v2c GET of sysName.0 by hand, to check that snmpd answers FROM the address
# that was asked (wanmon drops a reply whose source is not the agent's address).
_SRC_CHECK = r"""
import json, socket, sys, time
comm = sys.argv[1].encode()
oid = bytes([0x06, 0x08, 0x2b, 6, 1, 2, 1, 1, 5, 0])
vb = bytes([0x30, len(oid) + 2]) + oid + b"\x05\x00"
vbl = bytes([0x30, len(vb)]) + vb
body = b"\x02\x01\x01\x02\x01\x00\x02\x01\x00" + vbl
pdu = bytes([0xa0, len(body)]) + body
msg = b"\x02\x01\x01" + bytes([0x04, len(comm)]) + comm + pdu
msg = bytes([0x30, len(msg)]) + msg
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
out = {}
for a in sys.argv[2:]:
    s.sendto(msg, (a, 161))
    s.settimeout(1.0)
    t_end = time.time() + 1.0
    out[a] = None
    try:
        while time.time() < t_end:
            data, src = s.recvfrom(4096)
            out[a] = src[0]
            break
    except socket.timeout:
        pass
print(json.dumps(out))
"""


def _udp_counters(ns: _lab.Netns) -> dict[str, int]:
    """The namespace's own UDP counters (/proc/net/snmp is per network namespace)."""
    text = ns._check(ns.exec_prefix() + ["cat", "/proc/net/snmp"])
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp:")]
    return {k: int(v) for k, v in zip(rows[0], rows[1])} if len(rows) >= 2 else {}


class SnmpLab:
    """The SNMP side of the lab: --snmp-ifaces veth interfaces (so the agent's
    interface table is router-sized), an nftables table that silently drops
    SNMP requests to the dead agents (SNMPDEAD_NET and the ICMP-dead
    DEAD_NET) and counts requests, and ONE net-snmp snmpd listening on udp:161
    on every address of the namespace.  net-snmp reads the destination of each
    request (IP_PKTINFO) and replies from it, so every 127.x address is an
    agent of its own as far as the poller can tell (checked at start-up)."""

    def __init__(self, ns: _lab.Netns, tmp: str, n_ifaces: int) -> None:
        self.ns, self.n_ifaces = ns, n_ifaces
        self.dir = os.path.join(tmp, "snmpd")
        self.community = "wmb" + os.urandom(6).hex()
        self.community_file = os.path.join(tmp, "snmp-community")
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        # wanmon reads the community from this file (sites.toml is written before the lab exists)
        fd = os.open(self.community_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.community + "\n")

    def _nft(self, script: str) -> None:
        r = subprocess.run(self.ns.exec_prefix() + ["nft", "-f", "-"], input=script, capture_output=True, text=True)
        if r.returncode != 0:
            raise _lab.LabError(f"nft in {self.ns.name}: {r.stderr.strip()}")

    def create(self) -> None:
        snmpd = shutil.which("snmpd") or ("/usr/sbin/snmpd" if os.path.exists("/usr/sbin/snmpd") else None)
        if not snmpd:
            raise _lab.LabError("snmpd not found: apt-get install snmpd (net-snmp's agent)")
        for i in range(self.n_ifaces // 2):
            a, b = f"wmif{2 * i}", f"wmif{2 * i + 1}"
            self.ns._check(["ip", "-n", self.ns.name, "link", "add", a, "type", "veth", "peer", "name", b])
            for dev in (a, b):
                self.ns._check(["ip", "-n", self.ns.name, "link", "set", dev, "up"])
        # priority -5: after the bouncer's table (-10), so a bouncing site that is down is dropped there
        self._nft(
            f"table inet {SNMP_TABLE} {{\n"
            "  counter snmpdead_echo { }\n"
            "  counter snmp_req_agent { }\n"
            "  counter snmp_req_dropped { }\n"
            "  chain in {\n"
            "    type filter hook input priority -5; policy accept;\n"
            f'    ip daddr {SNMPDEAD_NET} ip ttl >= {_lab.SWEEP_TTL} icmp type echo-request counter name "snmpdead_echo"\n'
            f'    ip daddr {{ {_lab.DEAD_NET}, {SNMPDEAD_NET} }} udp dport 161 counter name "snmp_req_dropped" drop\n'
            '    udp dport 161 counter name "snmp_req_agent"\n'
            "  }\n"
            "}\n")
        os.makedirs(os.path.join(self.dir, "persist"))
        conf = os.path.join(self.dir, "snmpd.conf")
        with open(conf, "w") as f:
            f.write("agentAddress udp:161\n"                     # every address of the namespace
                    f"rocommunity {self.community} 127.0.0.0/8\n"
                    "sysName wmbench-router\n"
                    "sysLocation Phòng máy UBND (bench)\n"
                    "sysContact noc@bench.example\n"
                    "sysDescr Linux wmbench-router (net-snmp snmpd, bench/daemon.py)\n"
                    "sysServices 72\n"
                    "dontLogTCPWrappersConnects yes\n")       # no log line per request
        os.chmod(conf, 0o600)
        argv = self.ns.exec_prefix() + [snmpd, "-f", "-Lo", "-C", "-c", conf,
                                        f"--persistentDir={os.path.join(self.dir, 'persist')}", "-I", "-smux",
                                        "-p", os.path.join(self.dir, "snmpd.pid")]
        env = {**os.environ, "MIBS": "", "MIBDIRS": "/nonexistent/wmbench-no-mibs"}
        with open(os.path.join(self.dir, "snmpd.log"), "wb") as logf:
            # `ip netns exec` execs in place: this pid is snmpd's; its own session, stopped by that pid
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)
        self.pid = self.proc.pid

    def check_sources(self, addrs: list[str], tmp: str, wait_s: float = 15.0) -> dict[str, str | None]:
        """addr -> source address of snmpd's reply (None: no reply within 1 s).  The
        first address is retried until snmpd answers or wait_s passes (start-up)."""
        script = os.path.join(tmp, "snmp_src_check.py")
        with open(script, "w") as f:
            f.write(_SRC_CHECK)
        t_end = time.time() + wait_s
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise _lab.LabError(f"snmpd exited with status {self.proc.returncode}: {self.log_tail()}")
            r = _lab._run(self.ns.exec_prefix() + [sys.executable, script, self.community, *addrs])
            if r.returncode != 0:
                raise _lab.LabError(f"the SNMP source check failed: {r.stderr.strip()[-500:]}")
            out = json.loads(r.stdout)
            if out.get(addrs[0]) is not None or time.time() > t_end:
                return out
            time.sleep(0.5)

    def log_tail(self) -> str:
        try:
            with open(os.path.join(self.dir, "snmpd.log"), encoding="utf-8", errors="replace") as f:
                return f.read()[-800:]
        except OSError:
            return ""

    def counters(self) -> dict[str, int]:
        out = self.ns._check(self.ns.exec_prefix() + ["nft", "-j", "list", "counters", "table", "inet", SNMP_TABLE])
        return {o["counter"]["name"]: int(o["counter"]["packets"])
                for o in json.loads(out).get("nftables", []) if o.get("counter")}

    def stop(self) -> dict | None:
        """SIGTERM snmpd (our child, by its pid); its CPU figures read just before."""
        if self.proc is None:
            return None
        fig = read_proc(self.proc.pid)
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        return fig


def start_and_verify_snmp(args, agent: SnmpLab, sites: list[Site], by_kind: dict[str, list[str]],
                          tmp: str) -> dict:
    """Start snmpd and check the SNMP side of the lab before the run: a live
    address answers FROM that address (wanmon drops any other source), dead
    agents stay silent, and wanmon itself (`inventory --refresh` on a 3-site
    config with the same [snmp] settings) polls a live one as ok with every
    interface and the dead ones as timeouts."""
    live = [by_kind["live"][0], by_kind["live"][-1]]
    silent = [a for a in (by_kind["snmpdead"][:1] + by_kind["snmpdead"][-1:] + by_kind["dead"][:1]) if a]
    t = time.time()
    src = agent.check_sources(live + silent, tmp)
    for a in live:
        if src.get(a) != a:
            raise _lab.LabError(f"snmpd at {a}: " + ("no reply" if src.get(a) is None else
                                f"the reply came from {src[a]}, not {a}: wanmon would drop it")
                                + f"; snmpd log: {agent.log_tail()}")
    for a in silent:
        if src.get(a) is not None:
            raise _lab.LabError(f"the dead agent at {a} answered (from {src[a]}): the nftables drop does not work")
    start_s = time.time() - t
    log(f"verified in {agent.ns.name}: snmpd (pid {agent.pid}) answers {', '.join(live)} from the address asked; "
        f"dead agents {', '.join(silent)} stay silent")
    # the same through wanmon: a 3-site config, same [snmp] settings
    pick = {k: next(s for s in sites if s.kind == k) for k in ("live", "snmpdead", "dead")
            if any(s.kind == k for s in sites)}
    mini = [Site(id=s.id, name=s.name, level="province", address=s.address, kind=s.kind) for s in pick.values()]
    d = os.path.join(tmp, "snmp-check")
    os.makedirs(d)
    cfg = os.path.join(d, "sites.toml")
    with open(cfg, "w", encoding="utf-8") as f:
        f.write(wanmon_config(mini, os.path.join(d, "wanmon.db"), os.path.join(d, "public"), args,
                              agent.community_file))
    r = _lab._run(agent.ns.exec_prefix() + [args.python, "-m", "wanmon", "--config", cfg, "inventory", "--refresh",
                                            "--json"], cwd=REPO, timeout=120)
    try:
        rows = {row["id"]: row for row in json.loads(r.stdout)}
    except (ValueError, TypeError, KeyError):
        raise _lab.LabError(f"wanmon inventory --refresh failed (rc {r.returncode}): {r.stderr.strip()[-800:]}")
    want_ifs = args.snmp_ifaces + 1   # + lo
    notes = []
    for k, s in pick.items():
        row = rows.get(s.id, {})
        st, n_if = row.get("snmp_status"), len(row.get("interfaces") or [])
        ok = (st == "ok" and n_if == want_ifs) if k == "live" else st == "timeout"
        if not ok:
            raise _lab.LabError(f"wanmon inventory --refresh: {k} site {s.id} ({s.address}) has snmp_status {st} "
                                f"and {n_if} interfaces (expected " + (f"ok with {want_ifs})" if k == "live" else
                                                                       "timeout)") + f": {json.dumps(row)[:600]}")
        notes.append(f"{k} {st}" + (f" ({n_if} interfaces, sysName {row.get('sys_name')})" if k == "live" else ""))
    log(f"verified with `wanmon inventory --refresh`: {'; '.join(notes)}")
    ver = _lab._run([shutil.which("snmpd") or "/usr/sbin/snmpd", "-v"]).stdout
    m = re.search(r"NET-SNMP version:\s*(\S+)", ver)
    return {"dead_pct": args.snmp_dead_pct, "interval_s": args.snmp_interval, "timeout_ms": args.snmp_timeout_ms,
            "retries": args.snmp_retries, "budget_s": args.snmp_budget,
            "max_concurrency": args.snmp_max_concurrency, "max_backoff_s": args.snmp_max_backoff,
            "interfaces": want_ifs, "snmpd_version": m.group(1) if m else "?", "source_check_s": start_s}


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


_CYCLE_RE = re.compile(r"wanmon\.daemon: cycle id=(\d+) took=([\d.]+)s(?: page_after=([\d.]+)s)? "
                       r"alerts_ms=([\d.]+)\s*(.*)$")
_SNMP_RE = re.compile(r"wanmon\.cycle: snmp polled=(\d+) answered=(\d+) failed=(\d+) not_reached=(\d+) "
                      r"(?:poll=[\d.]+s )?took=([\d.]+)s")
_SNMP_BUDGET_RE = re.compile(r"snmp poll budget of ([\d.]+) s spent: (\d+) of (\d+) agents not polled")
_PAGE_RE = re.compile(r"wanmon\.page: page written .* bytes=(\d+)")
_SLOW_RE = re.compile(r"asyncio: Executing (.*) took ([\d.]+) seconds")   # PYTHONASYNCIODEBUG
_DIAG_RE = re.compile(r"diag: diag (?:fn=(\S+) took=([\d.]+) thread=(\S+)|job=(\w+) fired|snmp probe n=(\d+) "
                      r"took=([\d.]+))")   # bench/_daemon_diag.py
_ALERT_RE = re.compile(r"alert kind=(\S+) site=")
_UNSENT_RE = re.compile(r"(\d+) alert mail\(s\) not sent")


@dataclass
class LogCycle:
    id: int
    took_s: float
    alerts_ms: float
    counts: dict[str, int]
    t_logged: float
    page_after_s: float | None      # the daemon's page_after: cycle start (started_at) to page written
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
        self.snmp_runs: list[dict] = []  # one per `snmp polled=` line
        self.snmp_notes: list[str] = []  # budget spent, skipped, stuck, failed
        self.slow: list[dict] = []       # --asyncio-debug: callbacks that held the event loop >= 0.1 s
        self.diag: list[dict] = []       # --diag: timed calls, job firings, SNMP probes
        self.overruns: list[str] = []
        self.problems: list[str] = []    # cycle failed/skipped, tracebacks, scheduler warnings
        self.abandoned = False
        self._alerts: dict[str, int] = {}
        self._unsent = 0
        self._page_bytes: int | None = None
        self._snmp_budget: int | None = None
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
            elif m := _DIAG_RE.search(line):
                if m.group(1):
                    self.diag.append({"t_logged": now, "kind": "call", "what": m.group(1),
                                      "took_s": float(m.group(2)), "thread": m.group(3)})
                elif m.group(4):
                    self.diag.append({"t_logged": now, "kind": "job", "what": f"job {m.group(4)} fired",
                                      "took_s": 0.0, "thread": "MainThread"})
                else:
                    self.diag.append({"t_logged": now, "kind": "probe", "what": f"snmp probe of {m.group(5)}",
                                      "took_s": float(m.group(6)), "thread": "(awaited)"})
            elif m := _SLOW_RE.search(line):
                what = m.group(1)
                coro = re.search(r"coro=<([\w.<>]+)\(", what) or re.search(r"<(?:Handle|TimerHandle) ([\w.<>]+)", what)
                self.slow.append({"t_logged": now, "took_s": float(m.group(2)),
                                  "what": coro.group(1) if coro else what[:80]})
            elif m := _PAGE_RE.search(line):
                self._page_bytes = int(m.group(1))
            elif m := _CYCLE_RE.search(line):
                counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(5))}
                self.cycles.append(LogCycle(int(m.group(1)), float(m.group(2)), float(m.group(4)), counts,
                                            now, float(m.group(3)) if m.group(3) else None, read_proc(self.pid),
                                            self._alerts, self._unsent, self._page_bytes))
                self._alerts, self._unsent, self._page_bytes = {}, 0, None
            elif m := _SNMP_RE.search(line):
                polled, answered, failed, not_reached = (int(m.group(i)) for i in range(1, 5))
                self.snmp_runs.append({"t_logged": now, "polled": polled, "answered": answered, "failed": failed,
                                       "not_reached": not_reached, "took_s": float(m.group(5)),
                                       "budget_spent": self._snmp_budget})
                self._snmp_budget = None
            elif m := _SNMP_BUDGET_RE.search(line):
                self._snmp_budget = int(m.group(2))
                self.snmp_notes.append(line)
            elif "wanmon.cycle: snmp skipped" in line or "snmp job" in line:
                self.snmp_notes.append(line)
                if " ERROR " in line:
                    self.problems.append(line)
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


class PageWatcher(threading.Thread):
    """Watches the page folder every period.  The page writer builds a snapshot
    from the store, then writes status.json and index.html, each to a temp file
    (`.status.json.XXXX`, `.index.html.XXXX`) renamed over the real one; so each
    index.html write is a new inode whose mtime is when its last byte was
    written, and the temp files' first sightings mark when the JSON and the HTML
    began (to `period`).  Both the cycle and the SNMP job write the page."""

    def __init__(self, folder: str, period: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.folder, self.period = folder, period
        self.writes: list[float] = []      # index.html mtimes (unix s), in order
        self.temps: list[tuple[str, float]] = []   # ("json" | "html", first seen), in order
        self._halt = threading.Event()

    def run(self) -> None:
        last = None
        seen: set[str] = set()
        path = os.path.join(self.folder, "index.html")
        while not self._halt.is_set():
            now = time.time()
            try:
                names = [e.name for e in os.scandir(self.folder)]
            except FileNotFoundError:
                names = []
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            for n in names:
                if n not in seen and n.startswith((".status.json.", ".index.html.")):
                    seen.add(n)
                    self.temps.append(("json" if n.startswith(".status") else "html", now))
            if st is not None and (st.st_ino, st.st_mtime_ns) != last:
                last = (st.st_ino, st.st_mtime_ns)
                self.writes.append(st.st_mtime_ns / 1e9)
            self._halt.wait(self.period)

    def stop(self) -> None:
        self._halt.set()


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


ANSWERING = ("live", "snmpdead")   # site kinds that answer ICMP all the time


def read_health(path: str, sites: list[Site], after_id: int = 0) -> dict:
    """Lab health from the store: per cycle, the always-answering sites reported
    with any loss and their RTTs (a busy event loop during the sweep would show
    here); per site kind, the SNMP polls by status (a live agent polled as
    'timeout' is a spurious failure)."""
    kind = {s.id: s.kind for s in sites}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        icmp: dict[int, dict] = {}
        for cid, sid, sent, rcv, rtt in conn.execute(
                "SELECT cycle_id, site_id, sent, received, rtt_max_ms FROM icmp_samples WHERE cycle_id > ?",
                (after_id,)):
            if kind.get(sid) not in ANSWERING:
                continue
            d = icmp.setdefault(cid, {"answering": 0, "false_loss": 0, "rtt_max": []})
            d["answering"] += 1
            d["false_loss"] += rcv < sent
            if rtt is not None:
                d["rtt_max"].append(rtt)
        per_cycle = {cid: {"answering": d["answering"], "false_loss": d["false_loss"],
                           "rtt_max_ms_median": statistics.median(d["rtt_max"]) if d["rtt_max"] else None,
                           "rtt_max_ms_max": max(d["rtt_max"]) if d["rtt_max"] else None}
                     for cid, d in icmp.items()}
        snmp: dict[str, dict[str, int]] = {}
        polled_sites: dict[str, set] = {}
        for sid, st, n in conn.execute("SELECT site_id, status, count(*) FROM snmp_samples GROUP BY site_id, status"):
            k = kind.get(sid, "?")
            snmp.setdefault(k, {})
            snmp[k][st] = snmp[k].get(st, 0) + n
            polled_sites.setdefault(k, set()).add(sid)
        spurious = conn.execute("SELECT count(*) FROM snmp_samples WHERE status != 'ok' AND site_id IN "
                                "(SELECT value FROM json_each(?))",
                                (json.dumps([s.id for s in sites if s.kind == "live"]),)).fetchone()[0]
    finally:
        conn.close()
    return {"icmp": per_cycle, "snmp_by_kind": snmp,
            "snmp_sites_polled": {k: len(v) for k, v in polled_sites.items()},
            "snmp_sites": {k: sum(s.kind == k for s in sites) for k in ("live", "snmpdead", "bounce", "dead")},
            "snmp_spurious": spurious}


def run_daemon(args, ns: _lab.Netns, bouncer: Bouncer, cfg_path: str, tmp: str, page_dir: str,
               agent: SnmpLab | None = None) -> dict:
    interval = args.interval
    duration = args.minutes * 60.0
    n_expected = max(1, math.ceil(duration / interval - 1e-9))
    argv = [args.python, "-m", "wanmon", "-v", "--config", cfg_path, "run"]   # -v: its INFO lines are read
    if args.diag:   # the same CLI, through a driver that times some of wanmon's functions
        argv = [args.python, os.path.join(BENCH, "_daemon_diag.py"), "-v", "--config", cfg_path, "run"]
    req0 = echo_requests(ns, bouncer, agent)
    udp0 = _udp_counters(ns)
    snmp0 = agent.counters() if agent else {}
    pages = PageWatcher(page_dir)
    pages.start()
    # `ip netns exec` execs the command in place: the pid we get is the daemon's
    t_spawn = time.time()
    with open(os.path.join(tmp, "daemon.out"), "wb") as out:
        env = {**os.environ, "PYTHONASYNCIODEBUG": "1"} if args.asyncio_debug else None
        proc = subprocess.Popen(ns.exec_prefix() + argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.PIPE, cwd=REPO, start_new_session=True, env=env)
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
        last_logged = last_snmp = 0
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
                new_snmp = watcher.snmp_runs[last_snmp:]
                last_snmp = len(watcher.snmp_runs)
            for c in new:
                log(f"  cycle {c.id:3d}  took {c.took_s:6.2f} s  page_after {fmt(c.page_after_s, '5.2f')} s  "
                    f"alerts {c.alerts_ms:8.1f} ms  rss {(c.proc or {}).get('rss_kib', 0) / 1024:6.1f} MiB  "
                    + " ".join(f"{kk}={v}" for kk, v in sorted(c.counts.items())))
            for r in new_snmp:
                log(f"  snmp  at {r['t_logged'] - r['took_s'] - t0:6.1f} s  polled {r['polled']}  answered "
                    f"{r['answered']}  failed {r['failed']}  not_reached {r['not_reached']}  took {r['took_s']:.2f} s")
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
        pages.stop()
        pages.join(5)
    res["echo_requests"] = echo_requests(ns, bouncer, agent) - req0
    udp1 = _udp_counters(ns)
    res["udp"] = {k: udp1.get(k, 0) - udp0.get(k, 0) for k in udp1}
    if agent:
        snmp1 = agent.counters()
        res["snmp_requests"] = {k: snmp1.get(k, 0) - snmp0.get(k, 0) for k in snmp1 if k.startswith("snmp_req")}
    res["page_writes"] = pages.writes
    res["page_temps"] = pages.temps
    res["watcher"] = watcher
    res["samples"] = sampler.samples
    return res


# --------------------------------------------------------------------------
# figures


def mmm(vals: list[float]) -> dict | None:
    if not vals:
        return None
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "n": len(vals)}


def analyse(args, res: dict, store: dict | None, sites: list[Site], health: dict | None = None) -> dict:
    w: LogWatcher = res["watcher"]
    interval = args.interval
    n_expected = res["n_expected"]
    t0 = res.get("t0")
    by_id = {c["id"]: c for c in (store or {}).get("cycles", [])}
    # the SNMP job's runs: poll + record (+ its page) from `took=` back from its log line
    snmp_runs = []
    for r in w.snmp_runs:
        start = r["t_logged"] - r["took_s"]
        snmp_runs.append({**r, "start": start, "end": r["t_logged"],
                          "start_s": (start - t0) if t0 else None, "end_s": (r["t_logged"] - t0) if t0 else None})
    page_writes = res.get("page_writes", [])
    page_temps = res.get("page_temps", [])
    icmp_health = (health or {}).get("icmp", {})
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
        if sc:
            row["page_after_s"] = c.page_after_s
            end = sc["started_at"] + (c.page_after_s if c.page_after_s is not None else c.took_s)
            # page_after is (page written - started_at), logged with 2 decimals; a daemon that
            # does not log it (older wanmon): the page is written before the cycle's `took` ends
            page_ts = end
            if c.page_after_s is not None:
                row["page_lag_log_s"] = page_ts - sc["finished_at"]
            # the cycle's own write: the last new index.html between the sweep's end and page_ts
            # (the SNMP job writes the page too, but not in that gap unless it races the cycle)
            cands = [m for m in page_writes if sc["finished_at"] - 0.005 <= m <= page_ts + 0.01]
            row["page_lag_mtime_s"] = (max(cands) - sc["finished_at"]) if cands else None
            # where that time went: the temp files of that write, first seen (+- the watch period)
            if cands:
                html = [t for k, t in page_temps if k == "html" and sc["finished_at"] <= t <= max(cands)]
                jsn = [t for k, t in page_temps if k == "json" and html and sc["finished_at"] <= t <= html[-1]]
                if html and jsn:
                    row["phase_record_s"] = jsn[-1] - sc["finished_at"]   # record, alerts, snapshot
                    row["phase_json_s"] = html[-1] - jsn[-1]
                    row["phase_html_s"] = max(cands) - html[-1]
            row["snmp_overlap"] = [i for i, r in enumerate(snmp_runs)
                                   if r["start"] < end and r["end"] > sc["started_at"]]
        h = icmp_health.get(c.id)
        if h:
            row.update(false_loss=h["false_loss"], answering=h["answering"],
                       rtt_max_ms_median=h["rtt_max_ms_median"], rtt_max_ms_max=h["rtt_max_ms_max"])
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
        "page_lag_log_s": mmm([r["page_lag_log_s"] for r in rows if r.get("page_lag_log_s") is not None]),
        "page_lag_mtime_s": mmm([r["page_lag_mtime_s"] for r in rows if r.get("page_lag_mtime_s") is not None]),
        "page_lag_missing": [r["id"] for r in rows if r.get("page_lag_log_s") is None
                             or r.get("page_lag_mtime_s") is None],
        "page_writes": len(page_writes),
        **{k: mmm([r[k] for r in rows if r.get(k) is not None])
           for k in ("phase_record_s", "phase_json_s", "phase_html_s")},
        "snmp_runs": [{k: v for k, v in r.items() if k not in ("start", "end", "t_logged")} for r in snmp_runs],
        "snmp_notes": w.snmp_notes,
        "scheduler_warnings": [x for x in w.problems if "WARNING apscheduler" in x],
        "slow_callbacks": [_where(x, rows, snmp_runs, by_id, t0) for x in w.slow] if t0 else [],
        "diag": [{**_where(x, rows, snmp_runs, by_id, t0), "thread": x["thread"], "kind": x["kind"]}
                 for x in w.diag] if t0 else [],
        "health": {k: v for k, v in (health or {}).items() if k != "icmp"},
        "false_loss_total": sum(r.get("false_loss", 0) for r in rows),
        "udp": res.get("udp"),
        "snmp_requests": res.get("snmp_requests"),
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
        "abandoned_at_stop": w.abandoned,
        "stopped_line": w.stopped_line,
    }
    # the cycle running when SIGTERM arrived: one that was logged after the stop
    n_before = res.get("cycles_logged_before_stop")
    if n_before is not None and res.get("t_term"):
        late = [r for r in rows[n_before:]]
        out["inflight_at_stop"] = late[0] if late else None
    return out


def _where(x: dict, rows: list[dict], snmp_runs: list[dict], by_id: dict, t0: float) -> dict:
    """A slow event-loop callback (--asyncio-debug), with what it overlapped: a cycle's sweep
    (started_at..finished_at) or the rest of its critical path (..page written), and an SNMP
    run (from 2 s before its poll began, which covers the job's store reads, to its log line)."""
    start = x["t_logged"] - x["took_s"]
    end = x["t_logged"]
    during = []
    for r in rows:
        sc = by_id.get(r["id"])
        if not sc:
            continue
        page_ts = sc["started_at"] + (r.get("page_after_s") or r["took_s"])
        if start < sc["finished_at"] and end > sc["started_at"]:
            during.append(f"cycle {r['id']} sweep")
        elif start < page_ts and end > sc["finished_at"]:
            during.append(f"cycle {r['id']} after sweep")
    for i, r in enumerate(snmp_runs):
        if start < r["end"] and end > r["start"] - 2.0:
            during.append(f"SNMP run {i + 1}")
    return {"at_s": start - t0, "took_s": x["took_s"], "what": x["what"], "during": during}


def acceptance(args, res: dict, a: dict) -> list[dict]:
    checks = []

    def add(name, ok, detail):
        checks.append({"check": name, "result": "PASS" if ok else "FAIL", "detail": detail})

    took = a["took_s"]
    worst = took["max"] if took else None
    add(f"every ICMP cycle within its {args.interval:g} s interval",
        took is not None and worst <= args.interval and a["overruns"] == 0,
        f"{took['n'] if took else 0} cycles, slowest {fmt(worst, '.2f')} s, "
        f"{a['overruns']} overrun warning(s)")
    add("cycles ran = expected",
        a["ran_in_window"] == a["expected"] and not a["missed_slots"] and not a["problems"],
        f"{a['ran_in_window']} of {a['expected']} in the window"
        + (f", missed slots {a['missed_slots']}" if a["missed_slots"] else "")
        + (f", {len(a['problems'])} error/warning line(s)" if a["problems"] else ""))
    lag_log, lag_mt = a["page_lag_log_s"], a["page_lag_mtime_s"]
    worst_lag = max([x["max"] for x in (lag_log, lag_mt) if x] or [None]) if (lag_log or lag_mt) else None
    add(f"page within {PAGE_LIMIT_S:g} s of each sweep",
        took is not None and worst_lag is not None and worst_lag <= PAGE_LIMIT_S and not a["page_lag_missing"],
        f"page written - sweep end: max {fmt(lag_log and lag_log['max'], '.2f')} s (log) / "
        f"{fmt(lag_mt and lag_mt['max'], '.2f')} s (mtime), median {fmt(lag_log and lag_log['median'], '.2f')} / "
        f"{fmt(lag_mt and lag_mt['median'], '.2f')} s"
        + (f"; no figure for cycle(s) {a['page_lag_missing']}" if a["page_lag_missing"] else ""))
    hwm = a["rss"].get("hwm_bytes_at_stop")
    add("peak RSS (VmHWM) <= 200 MB", hwm is not None and hwm <= RSS_LIMIT_BYTES,
        "-" if hwm is None else f"{hwm / 1e6:.1f} MB ({hwm / 2**20:.1f} MiB)")
    inflight = a["inflight_at_stop"]
    ok = res.get("rc") == 0 and res.get("exit_s") is not None and res["exit_s"] <= args.grace \
        and "abandon" not in " ".join(a["problems"])
    add(f"SIGTERM: exit 0 within grace_s={args.grace:g} s", ok,
        f"rc {res.get('rc')}, exited {fmt(res.get('exit_s'), '.2f')} s after SIGTERM"
        + (f"; the running cycle {inflight['id']} finished first ({inflight['took_s']:.2f} s)" if inflight else
           "; the running cycle was abandoned at grace_s" if a.get("abandoned_at_stop") else "; no cycle was running"))
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
    p(f"[icmp] count {COUNT}, interval_ms {INTERVAL_MS}, timeout_ms {TIMEOUT_MS}, rate_pps {meta['icmp']['rate_pps']}; "
      f"{meta['kernel']}, {meta['cpus']} CPUs, Python {meta['python']}")
    sn = meta.get("snmp")
    if sn:
        p(f"[snmp] v2c at every site, interval_s {sn['interval_s']:g}, timeout_ms {sn['timeout_ms']:g}, retries "
          f"{sn['retries']}, budget_s {sn['budget_s']:g}, max_concurrency {sn['max_concurrency']}, max_backoff_s "
          f"{sn['max_backoff_s']:g}; agent: one net-snmp snmpd ({sn['snmpd_version']}) on udp:161 for every address, "
          f"{sn['interfaces']} interfaces; {lay['snmpdead']} sites ({sn['dead_pct']:g} %) answer ICMP but their agent "
          f"is dead (dropped), plus the {lay['dead']} ICMP-dead and the bouncing ones while down")
    else:
        p("[snmp] enabled = false (give --snmp-dead-pct to turn it on)")
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
        ("page s after", "sweep log", 9, g("page_lag_log_s", ".2f")),
        ("page s after", "mtime", 5, g("page_lag_mtime_s", ".2f")),
        ("page s after", "rec/json/html", 13, lambda r: "/".join(fmt(r.get(k), ".1f") for k in
                                                                 ("phase_record_s", "phase_json_s", "phase_html_s"))),
        ("", "SNMP run", 8, lambda r: ",".join(str(i + 1) for i in r.get("snmp_overlap") or []) or "-"),
        ("ICMP live", "lossy", 5, lambda r: str(r["false_loss"]) if "false_loss" in r else "-"),
        ("ICMP live", "rtt max ms", 10, g("rtt_max_ms_max", ".1f")),
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
    p("  page s after sweep: page written - the store's cycles.finished_at (end of the sweep); log: from the "
      "daemon's page_after; mtime: index.html's mtime (the cycle's own write)")
    p("  rec/json/html: of that, the store (record, alerts, retention) and the page's snapshot; writing "
      "status.json; rendering index.html (from the page's temp files, +- 0.02 s)")
    p("  SNMP run: the SNMP job's run(s) (numbered below) in flight during the cycle's critical path; ICMP live: "
      "sites that always answer, reported with any loss, and the largest rtt_max_ms among them")
    if a["after_window"]:
        p(f"  * after the window: cycle(s) {', '.join(map(str, a['after_window']))} (running at SIGTERM)")
    p()

    summ = [
        ("cycle duration s (took=)", a["took_s"], ".2f"),
        ("probe phase s (cycles.duration_ms)", a["probe_s"], ".2f"),
        ("alert evaluation ms (alerts_ms)", a["alerts_ms"], ".1f"),
        ("start lateness ms", a["late_s"] and {k: (v * 1000 if k != "n" else v)
                                              for k, v in a["late_s"].items()}, ".0f"),
        ("page written - sweep end s (log)", a["page_lag_log_s"], ".2f"),
        ("page written - sweep end s (mtime)", a["page_lag_mtime_s"], ".2f"),
        ("of which record+alerts+snapshot s", a["phase_record_s"], ".2f"),
        ("of which status.json s", a["phase_json_s"], ".2f"),
        ("of which index.html s", a["phase_html_s"], ".2f"),
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
    sw = a.get("scheduler_warnings") or []
    p(f"APScheduler warnings (a run skipped: 'maximum number of running instances', or missed): {len(sw)}")
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
          f"{meta['sites']} sites x {COUNT} = {a['echo_requests_expected']}"
          + (" (the cycle abandoned at SIGTERM swept but recorded nothing)" if a.get("abandoned_at_stop") else ""))
    if a.get("snmp_runs") or meta.get("snmp"):
        p()
        p("SNMP job runs (`snmp polled=` lines; a run with nothing due logs no line):")
        scols2 = [
            ("", "run", 3, lambda r: str(r["i"])),
            ("", "at s", 6, lambda r: fmt(r["start_s"], ".1f")),
            ("", "end s", 6, lambda r: fmt(r["end_s"], ".1f")),
            ("", "polled", 6, lambda r: str(r["polled"])),
            ("", "answered", 8, lambda r: str(r["answered"])),
            ("", "failed", 6, lambda r: str(r["failed"])),
            ("", "not_reached", 11, lambda r: str(r["not_reached"])),
            ("", "took s", 6, lambda r: f"{r['took_s']:.2f}"),
        ]
        for line in render_table(scols2, [{**r, "i": i + 1} for i, r in enumerate(a["snmp_runs"])]):
            p(line)
        p("  at s: when the poll began (log line time - took), from time 0; took: poll + record (+ the page it "
          "writes)")
        h = a.get("health") or {}
        if h.get("snmp_by_kind") is not None:
            for k in ("live", "snmpdead", "bounce", "dead"):
                if h["snmp_sites"].get(k):
                    st = h["snmp_by_kind"].get(k, {})
                    p(f"  {k:8s} {h['snmp_sites'][k]:5d} sites: {h['snmp_sites_polled'].get(k, 0)} polled at least "
                      f"once; polls by status: " + (", ".join(f"{kk} {v}" for kk, v in sorted(st.items())) or "none"))
            p(f"  live agents polled as not ok (spurious): {h.get('snmp_spurious')}")
        if a.get("snmp_requests"):
            q = a["snmp_requests"]
            p(f"  SNMP requests counted by nftables: {q.get('snmp_req_agent', 0)} reached the agent, "
              f"{q.get('snmp_req_dropped', 0)} dropped (dead agents)")
        if meta.get("snmpd_cpu_s") is not None:
            p(f"  snmpd: {meta['snmpd_cpu_s']:.1f} s CPU, VmHWM {meta['snmpd_hwm_kib'] / 1024:.1f} MiB")
        for line in a.get("snmp_notes", [])[:10]:
            p(f"  {line}")
    if meta.get("asyncio_debug"):
        sl = a.get("slow_callbacks") or []
        p()
        p(f"event loop (PYTHONASYNCIODEBUG=1): {len(sl)} callback(s) held it >= 0.1 s"
          + (f", {sum(x['took_s'] for x in sl):.2f} s in all" if sl else ""))
        by: dict[str, list[float]] = {}
        for x in sl:
            by.setdefault(x["what"], []).append(x["took_s"])
        for what, v in sorted(by.items(), key=lambda kv: -sum(kv[1])):
            p(f"  {what}: {len(v)} x, max {max(v):.3f} s, total {sum(v):.2f} s")
        for x in sorted(sl, key=lambda x: -x["took_s"])[:12]:
            p(f"    at {fmt(x['at_s'], '7.2f')} s  {x['took_s']:.3f} s  {x['what']}  during: "
              + (", ".join(x["during"]) or "-"))
    if meta.get("diag"):
        dg = a.get("diag") or []
        p()
        p("timed calls (--diag, bench/_daemon_diag.py); on MainThread a call holds the event loop:")
        by2: dict[tuple, list[float]] = {}
        for x in dg:
            if x["kind"] == "call":
                by2.setdefault((x["what"], x["thread"]), []).append(x["took_s"])
        for (what, thr), v in sorted(by2.items(), key=lambda kv: -max(kv[1])):
            p(f"  {what:24s} {thr:20s} {len(v):4d} x  max {max(v):7.3f} s  median {statistics.median(v):7.3f} s")
        p("  on the event loop for >= 0.1 s, or SNMP probes, and job firings:")
        for x in dg:
            if x["kind"] != "call" or x["thread"] == "MainThread" and x["took_s"] >= 0.1:
                p(f"    at {fmt(x['at_s'], '7.2f')} s  {x['took_s']:7.3f} s  {x['what']:26s} {x['thread']:20s} during: "
                  + (", ".join(x["during"]) or "-"))
    if a.get("udp"):
        u = a["udp"]
        p(f"UDP in the namespace during the run: {u.get('InDatagrams', 0)} datagrams in, RcvbufErrors "
          f"{u.get('RcvbufErrors', 0)}, InErrors {u.get('InErrors', 0)}")
    p(f"ICMP: always-answering sites reported with loss, all cycles: {a.get('false_loss_total', 0)}; "
      f"index.html written {a.get('page_writes', 0)} times (cycles and SNMP job)")
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
# page work in a thread (wanmon.cycle.in_thread, asyncio.to_thread before): run
# that inline so the profile shows all of it
_PROFILE_DRIVER = """\
import asyncio, runpy, sys

async def _inline(fn, /, *a, **kw):
    return fn(*a, **kw)

asyncio.to_thread = _inline
try:
    import wanmon.cycle
    wanmon.cycle.in_thread = _inline
except (ImportError, AttributeError):
    pass
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
    buf.write(f"cProfile of one `wanmon check` with the same config and store (its worker threads run "
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
                       args.bounce_pct, args.seed, args.snmp_dead_pct or 0.0)
    tmp = tempfile.mkdtemp(prefix="wmbench-daemon-", dir="/tmp")
    store_path = os.path.join(tmp, "store", "wanmon.db")
    page_dir = os.path.join(tmp, "public")
    os.makedirs(os.path.dirname(store_path))
    cfg_path = os.path.join(tmp, "sites.toml")
    ns = _lab.Netns()
    bouncer = Bouncer(ns)
    agent = SnmpLab(ns, tmp, args.snmp_ifaces) if args.snmp else None
    with open(cfg_path, "w", encoding="utf-8") as f:
        f.write(wanmon_config(sites, store_path, page_dir, args, agent and agent.community_file))
    health: dict | None = None
    snmp_meta: dict | None = None
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
        by_kind = {k: [s.address for s in sites if s.kind == k] for k in ("live", "dead", "bounce", "snmpdead")}
        live_chk = sorted({by_kind["live"][0], by_kind["live"][-1]}
                          | ({by_kind["snmpdead"][0], by_kind["snmpdead"][-1]} if by_kind["snmpdead"] else set()))
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
        if agent is not None:
            agent.create()
            snmp_meta = start_and_verify_snmp(args, agent, sites, by_kind, tmp)
        if args.prefill_hours > 0:
            log(f"prefilling the store with {args.prefill_hours:g} h of history ...")
            prefill = prefill_store(store_path, sites, args.interval, args.prefill_hours, args.seed)
            log(f"  {prefill['cycles']} cycles, {prefill['raw_rows']:,} raw samples, "
                f"{prefill['store_bytes'] / 2**20:.0f} MiB, in {prefill['build_s']:.0f} s")
        log(f"running the daemon for {args.minutes:g} min ...")
        res = run_daemon(args, ns, bouncer, cfg_path, tmp, page_dir, agent)
        errors += res["errors"]
        if agent is not None:
            fig = agent.stop()
            if fig and snmp_meta is not None:
                snmp_meta.update(snmpd_cpu_s=fig["cpu_s"], snmpd_hwm_kib=fig["hwm_kib"])
        for line in res.get("log_tail", []):
            log(f"    {line}")
        try:
            store = read_store(store_path, (prefill or {}).get("cycles", 0))
            health = read_health(store_path, sites, (prefill or {}).get("cycles", 0))
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
        if agent is not None:
            agent.stop()   # before the namespace goes: snmpd lives in it
        _lab.teardown(ns, tmp, args.keep_tmp)

    a = analyse(args, res, store, sites, health)
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
                   "bounce": sum(s.kind == "bounce" for s in sites),
                   "snmpdead": sum(s.kind == "snmpdead" for s in sites)},
        "icmp": {"count": COUNT, "interval_ms": INTERVAL_MS, "timeout_ms": TIMEOUT_MS, "rate_pps": args.rate_pps},
        "snmp": snmp_meta, "asyncio_debug": args.asyncio_debug, "diag": args.diag,
        "snmpd_cpu_s": (snmp_meta or {}).get("snmpd_cpu_s"), "snmpd_hwm_kib": (snmp_meta or {}).get("snmpd_hwm_kib"),
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
