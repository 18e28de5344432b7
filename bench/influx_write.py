#!/usr/bin/env python3
"""InfluxDB sink benchmark: replaying a large spool with `wanmon influx drain`
against curl posting the same line protocol in the same batches.

For every server in --servers, in the same run:

  v1  Debian's InfluxDB 1.6.7 (POST /write?db=bench&precision=ns), wanmon's
      `api = "v1"` path (wanmon/httpclient.py under a deadline);
  v2  Debian's VictoriaMetrics (POST /api/v2/write?org=bench&bucket=bench&
      precision=ns), wanmon's `api = "v2"` path (the same client);

the script builds a spool of --points realistic `wanmon_icmp` points (the 177
sites of sites.toml, one cycle a minute apart) in a wanmon store, and measures

    python -m wanmon --config FILE influx drain --budget 3600
    curl --config FILE          (one process, one `next` block per batch)

each against a fresh server (own temp dir, started for that run, stopped with
SIGTERM after the count was verified), with the tool's wall time, CPU and
peak RSS from wait4 (bench/_measure.py's helper), the server's CPU during the
run (/proc/PID/stat), and the number of points the server holds afterwards
(InfluxQL count(*) for v1; count_over_time for VictoriaMetrics).

Then the cost the sink adds to one 177-site cycle: `wanmon check` on a
177-site loopback config with `[snmp] enabled = false`, without
`[influxdb]` and with it (v1 and/or v2, against a running server).

Servers listen on 127.0.0.1 only; every request goes to 127.0.0.1.
See bench/README.md.
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
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.parse
from dataclasses import asdict, dataclass
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(1, os.path.join(REPO, "tests"))
sys.path.insert(2, REPO)
# Every `python -m wanmon` below runs in a temp folder: without this it imports whatever wanmon the
# interpreter has installed (an editable install of another checkout), not the tree being measured.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)

from _measure import default_python, log  # noqa: E402
from _measure import (  # noqa: E402
    LabError,
    Runner,
    RunResult,
    build_helper,
    fmt,
    fmt_ratio,
    install_signal_cleanup,
    kill_current_children,
    median_or_none,
    ratio,
    render_table,
)
import tsdb_servers  # noqa: E402  (tests/tsdb_servers.py: the colleague's fixtures)
from tsdb_servers import InfluxV1Server, VictoriaMetricsServer, free_port, http_request  # noqa: E402
from wanmon import lineproto  # noqa: E402

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
ACCEPT_RATIO = 0.5          # wanmon throughput >= 0.5x curl's
CYCLE_SECONDS = 60          # spooled cycles are one minute apart
DB = "bench"                # v1 database
ORG = BUCKET = "bench"      # v2 org / bucket (VictoriaMetrics ignores both)
TOKEN_ENV = "BENCH_TOKEN"
TOKEN = "bench-token"       # VictoriaMetrics does not check it; sent like a real one
SERVER_LABEL = {"v1": "InfluxDB 1.6.7 (v1 /write)", "v2": "VictoriaMetrics (v2 /api/v2/write)"}
ICMP_FIELDS = ("sent", "received", "loss_pct", "rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "jitter_ms",
               "up", "status", "status_code")

_SENT_RE = re.compile(r"sent (\d+) points in (\d+) requests; (\d+) left in the spool")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Replay a large spool into InfluxDB 1.6.7 (v1) and VictoriaMetrics (v2) with "
                    "`wanmon influx drain`, against curl posting the same batches; plus the cost "
                    "[influxdb] adds to one 177-site `wanmon check`.")
    p.add_argument("--points", type=int, default=1_000_000, help="points in the spool (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=5000,
                   help="[influxdb] batch_size, and the lines per curl request (default: %(default)s)")
    p.add_argument("--servers", default="v1,v2", help="v1 (InfluxDB 1.6.7), v2 (VictoriaMetrics) (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per tool and server; medians are shown, tool order alternates (default: %(default)s)")
    p.add_argument("--curl-mode", choices=("config", "per-batch"), default="config",
                   help="config: one curl process, one `next` block per batch, keep-alive (default); "
                        "per-batch: one curl process per batch, from a shell script")
    p.add_argument("--cycle-repeat", type=int, default=7,
                   help="measured `wanmon check` runs per variant for the cycle cost; 0 skips it (default: %(default)s)")
    p.add_argument("--sites", default=os.path.join(REPO, "sites.toml"),
                   help="sites file whose [[sites]] give the tags and the cycle config (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout instead of the tables")
    p.add_argument("--python", default=default_python(), help="interpreter for `-m wanmon` (default: %(default)s)")
    p.add_argument("--curl", default=shutil.which("curl") or "/usr/bin/curl", help="curl binary (default: %(default)s)")
    p.add_argument("--profile", metavar="PREFIX",
                   help="afterwards, run one drain per server under cProfile, save PREFIX-v1.prof / PREFIX-v2.prof "
                        "and print the top entries")
    p.add_argument("--timeout", type=float, default=3600, help="kill a single tool run after S seconds (default: %(default)s)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp directory (configs, stores, logs)")
    a = p.parse_args(argv)
    a.servers = [s.strip() for s in a.servers.split(",") if s.strip()]
    bad = [s for s in a.servers if s not in ("v1", "v2")]
    if bad or not a.servers:
        p.error(f"--servers: unknown {bad or 'empty'}; use v1, v2 or v1,v2")
    if a.points < 1 or a.batch_size < 1 or a.repeat < 1 or a.cycle_repeat < 0:
        p.error("--points, --batch-size and --repeat must be >= 1, --cycle-repeat >= 0")
    return a


# --------------------------------------------------------------------------
# sites and the spooled points


def load_sites(path: str) -> list[dict]:
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    sites = raw.get("sites") or []
    if not sites:
        raise LabError(f"{path}: no [[sites]]")
    return sites


def loopback_sites(sites: list[dict]) -> tuple[list[dict], int]:
    """The sites with every address that is not an IPv4 address in
    127.0.0.0/8 replaced by one (127.77.x.y): the cycle-cost runs ping these
    addresses, and a sites file may hold real ones.  Returns (sites, replaced)."""
    out, replaced = [], 0
    for i, s in enumerate(sites):
        try:
            ok = ipaddress.ip_address(str(s.get("address", ""))) in LOOPBACK
        except ValueError:
            ok = False
        if not ok:
            s = {**s, "address": f"127.77.{i // 250}.{i % 250 + 1}"}
            replaced += 1
        out.append(s)
    return out, replaced


def toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


@dataclass
class SpoolInfo:
    points: int
    batches: int
    bytes: int
    cycles: int
    first_ts_ns: int
    last_ts_ns: int
    field_counts: dict[str, int]       # field -> points carrying it
    statuses: dict[str, int]


def _fmt_float(v: float) -> str:
    return repr(float(v))


def point_lines(sites: list[dict], n: int, base_s: int, seed: int = 20240531):
    """Yield (ts_s, line) for n wanmon_icmp points: cycle c at base + c*60 s,
    site i probed ~1.3 ms after site i-1; ~2% degraded, ~1.5% down.  The tag
    part comes from wanmon.lineproto.line itself; fields are formatted the
    way lineproto does it (checked against line() for the first points)."""
    rng = random.Random(seed)
    prefixes = []
    for s in sites:
        tags = {"site_id": s["id"], "site_name": s["name"], "level": s["level"],
                "district": s.get("district"), "address": s["address"]}
        ln = lineproto.line("wanmon_icmp", tags, {"x": 1}, 0.0)
        prefixes.append(ln[: ln.rindex(" x=1i ")] + " ")
    base_rtt = [0.4 + 2.5 * rng.random() for _ in sites]
    k = 0
    c = 0
    while k < n:
        t_cycle = base_s + c * CYCLE_SECONDS
        for i, s in enumerate(sites):
            if k >= n:
                break
            ts = t_cycle + 0.05 + i * 0.0013 + rng.random() * 0.0005
            r = rng.random()
            if r < 0.015:
                fields = {"sent": 3, "received": 0, "loss_pct": 100.0, "rtt_min_ms": None, "rtt_avg_ms": None,
                          "rtt_max_ms": None, "jitter_ms": None, "up": 0, "status": "down", "status_code": 2}
            else:
                got = sorted(round(base_rtt[i] * (0.8 + 0.6 * rng.random()), 3) for _ in range(3 if r >= 0.035 else 2))
                rec = len(got)
                jit = round(sum(abs(b - a) for a, b in zip(got, got[1:])) / (rec - 1), 3)
                status = "up" if rec == 3 else "degraded"
                fields = {"sent": 3, "received": rec, "loss_pct": round(100.0 * (3 - rec) / 3, 3),
                          "rtt_min_ms": got[0], "rtt_avg_ms": round(sum(got) / rec, 3), "rtt_max_ms": got[-1],
                          "jitter_ms": jit, "up": 1, "status": status, "status_code": lineproto.STATUS_CODE[status]}
            if k < 500:  # the fast path must produce exactly what wanmon produces
                tags = {"site_id": s["id"], "site_name": s["name"], "level": s["level"],
                        "district": s.get("district"), "address": s["address"]}
                want = lineproto.line("wanmon_icmp", tags, fields, ts)
            parts = []
            for key, v in fields.items():
                if v is None:
                    continue
                if isinstance(v, str):
                    parts.append(f'{key}="{v}"')
                elif isinstance(v, int):
                    parts.append(f"{key}={v}i")
                else:
                    parts.append(f"{key}={_fmt_float(v)}")
            line = prefixes[i] + ",".join(parts) + f" {int(round(ts * 1e9))}"
            if k < 500 and line != want:
                raise LabError(f"line generator differs from wanmon.lineproto:\n  {line}\n  {want}")
            yield ts, line, fields
            k += 1
        c += 1


def build_spool(args, sites: list[dict], work: str, python: str) -> tuple[str, str, SpoolInfo]:
    """The template store (a wanmon store whose spool holds exactly --points
    points) and the same points as curl batch files.  Returns (db, batch dir, info)."""
    tdir = os.path.join(work, "template")
    os.makedirs(tdir)
    store = os.path.join(tdir, "store", "wanmon.db")
    cfg = os.path.join(tdir, "tiny.toml")
    closed = free_port()  # nothing listens there: the check's points stay spooled
    with open(cfg, "w") as f:
        f.write(wanmon_config(store, {"url": f"http://127.0.0.1:{closed}", "api": "v1"}, args.batch_size,
                              [{"id": "a", "name": "A", "level": "province", "address": "127.0.0.1"}]))
    r = subprocess.run([python, "-m", "wanmon", "--config", cfg, "check"], capture_output=True, text=True,
                       cwd=tdir, stdin=subprocess.DEVNULL, timeout=120)
    if not os.path.exists(store):
        raise LabError(f"`wanmon check` on the tiny config made no store (rc {r.returncode}): {r.stderr.strip()}")
    bdir = os.path.join(work, "batches")
    os.makedirs(bdir)
    n_cycles = math.ceil(args.points / len(sites))
    base_s = (int(time.time()) // CYCLE_SECONDS) * CYCLE_SECONDS - (n_cycles + 60) * CYCLE_SECONDS
    con = sqlite3.connect(store)
    con.execute("PRAGMA synchronous=OFF")
    field_counts = {k: 0 for k in ICMP_FIELDS}
    statuses: dict[str, int] = {}
    total_bytes = 0
    n_batches = 0
    first_ns = last_ns = 0
    with con:
        con.execute("DELETE FROM spool")  # the tiny check's own 2 points: the spool holds exactly --points
        batch: list[tuple[float, str]] = []

        def flush() -> None:
            nonlocal n_batches, total_bytes
            if not batch:
                return
            con.executemany("INSERT INTO spool (ts, line) VALUES (?, ?)", batch)
            body = ("\n".join(b[1] for b in batch) + "\n").encode("utf-8")  # what wanmon's drain posts
            n_batches += 1
            total_bytes += len(body)
            with open(os.path.join(bdir, f"b{n_batches:07d}.lp"), "wb") as bf:
                bf.write(body)
            batch.clear()

        for ts, ln, fields in point_lines(sites, args.points, base_s):
            if not first_ns:
                first_ns = int(round(ts * 1e9))
            last_ns = int(round(ts * 1e9))
            for k, v in fields.items():
                if v is not None:
                    field_counts[k] += 1
            statuses[fields["status"]] = statuses.get(fields["status"], 0) + 1
            # the spool's ts is the cycle's start, as record_cycle writes it
            batch.append((base_s + ((int(ts) - base_s) // CYCLE_SECONDS) * CYCLE_SECONDS, ln))
            if len(batch) >= args.batch_size:
                flush()
        flush()
    (count,) = con.execute("SELECT count(*) FROM spool").fetchone()
    con.close()
    if count != args.points:
        raise LabError(f"template spool holds {count} points, expected {args.points}")
    info = SpoolInfo(args.points, n_batches, total_bytes, n_cycles, first_ns, last_ns, field_counts, statuses)
    return store, bdir, info


def wanmon_config(store: str, influx: dict | None, batch_size: int, sites: list[dict],
                  timeout_ms: int = 30000) -> str:
    lines = ["# generated by bench/influx_write.py", "[store]", f"path = {toml_str(store)}", "",
             "[snmp]", "enabled = false", ""]
    if influx is not None:
        lines += ["[influxdb]", f"url = {toml_str(influx['url'])}", f"api = {toml_str(influx['api'])}"]
        if influx["api"] == "v1":
            lines.append(f"database = {toml_str(influx.get('database', DB))}")
        else:
            lines += [f"org = {toml_str(ORG)}", f"bucket = {toml_str(BUCKET)}", f"token_env = {toml_str(TOKEN_ENV)}"]
        lines += [f"batch_size = {batch_size}", f"timeout_ms = {timeout_ms}",
                  "spool_max_points = 100000000", ""]
    for s in sites:
        lines += ["[[sites]]", f"id = {toml_str(s['id'])}", f"name = {toml_str(s['name'])}",
                  f"level = {toml_str(s['level'])}"]
        if s.get("district"):
            lines.append(f"district = {toml_str(s['district'])}")
        if s.get("parent"):
            lines.append(f"parent = {toml_str(s['parent'])}")
        lines += [f"address = {toml_str(s['address'])}", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# servers


def start_server(kind: str, base_dir: str):
    if kind == "v1":
        return InfluxV1Server(databases=[DB], base_dir=base_dir).start()
    return VictoriaMetricsServer(base_dir=base_dir).start()


def write_url(kind: str, srv) -> str:
    if kind == "v1":
        return srv.url + "/write?" + urllib.parse.urlencode({"db": DB, "precision": "ns"})
    return srv.url + "/api/v2/write?" + urllib.parse.urlencode({"org": ORG, "bucket": BUCKET, "precision": "ns"})


def proc_cpu_s(pid: int | None) -> float | None:
    """utime+stime of a process we started (read-only /proc)."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def machine_busy_s() -> float | None:
    """Non-idle CPU seconds of the whole machine so far (/proc/stat), to see
    how much other processes used during a run."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal (guest is already in user)
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / os.sysconf("SC_CLK_TCK")


def count_points(kind: str, srv, info: SpoolInfo, measurement: str = "wanmon_icmp") -> dict[str, Any]:
    """What the server holds: points (one field present in every point) and
    the per-field counts, compared with what was spooled."""
    if kind == "v1":
        rows = srv.rows(f'SELECT count(*) FROM "{measurement}"', DB)
        got = {k[len("count_"):]: int(v) for k, v in (rows[0].items() if rows else []) if k.startswith("count_")}
        points = got.get("sent", 0)
    else:
        srv.flush()
        span = (info.last_ts_ns - info.first_ts_ns) // 10**9 + 120
        t_end = info.last_ts_ns / 1e9 + 60
        got = {}
        for fld in (k for k, v in info.field_counts.items() if v):
            # count_over_time drops the metric name, so one query per <measurement>_<field> series
            q = f"sum(count_over_time({measurement}_{fld}[{span}s]))"
            r = http_request("GET", srv.url + "/api/v1/query?" + urllib.parse.urlencode(
                {"query": q, "time": f"{t_end:.3f}"}), timeout=120)
            if r.status != 200:
                raise LabError(f"VictoriaMetrics query {q}: HTTP {r.status}: {r.text[:300]}")
            res = r.json()["data"]["result"]
            if res:
                got[fld] = int(float(res[0]["value"][1]))
        points = got.get("sent", 0)
    want = {k: v for k, v in info.field_counts.items() if v}
    return {"points": points, "fields": got, "ok": points == info.points and got == want,
            "expected_fields": want}


def server_version(kind: str, srv) -> str:
    if kind == "v1":
        r = http_request("GET", srv.url + "/ping")
        return "InfluxDB " + r.headers.get("x-influxdb-version", "?")
    try:
        v = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "victoria-metrics"], capture_output=True,
                           text=True).stdout.strip()
    except OSError:
        v = ""
    return "VictoriaMetrics " + (v or "?")


# --------------------------------------------------------------------------
# the two tools


def curl_common_headers(kind: str) -> list[str]:
    h = ["Content-Type: text/plain; charset=utf-8",
         "Expect:"]  # no `Expect: 100-continue` round trip on bodies > 1 MiB (wanmon sends none)
    if kind == "v2":
        h += [f"Authorization: Token {TOKEN}", "Accept: application/json"]  # as influxdb-client sends
    return h


def curl_argv(args, kind: str, url: str, batches: list[str], rdir: str) -> list[str]:
    heads = curl_common_headers(kind)
    if args.curl_mode == "config":
        cfg = os.path.join(rdir, "curl.conf")
        with open(cfg, "w") as f:
            for i, b in enumerate(batches):
                if i:
                    f.write("next\n")
                f.write(f'url = "{url}"\n')
                f.write(f'data-binary = "@{b}"\n')
                for h in heads:
                    f.write(f'header = "{h}"\n')
                f.write('output = "/dev/null"\nwrite-out = "%{http_code}\\n"\nsilent\nshow-error\n')
        return [args.curl, "--config", cfg]
    script = os.path.join(rdir, "curl.sh")
    hargs = " ".join(f"-H '{h}'" for h in heads)
    with open(script, "w") as f:
        f.write("set -e\n")
        for b in batches:
            f.write(f"{args.curl} -sS -o /dev/null -w '%{{http_code}}\\n' {hargs} --data-binary @{b} '{url}'\n")
    return ["/bin/sh", script]


@dataclass
class ToolRun:
    server: str
    tool: str
    repeat: int
    rc: int | None
    wall_s: float
    cpu_s: float
    user_s: float
    sys_s: float
    maxrss_kib: int
    server_cpu_s: float | None
    requests: int | None
    sent: int | None
    left: int | None
    stored: int
    stored_fields: dict[str, int]
    verified: bool
    points_per_s: float | None
    error: str | None = None
    method: str = ""
    other_cpu_s: float | None = None   # CPU the rest of the machine used during the run (/proc/stat)


def run_tool(args, runner: Runner, kind: str, tool: str, rep: int, work: str, template_db: str,
             batches: list[str], info: SpoolInfo) -> ToolRun:
    rdir = os.path.join(work, f"{kind}-{tool}-{rep}")
    os.makedirs(rdir)
    srv = start_server(kind, os.path.join(rdir, "server"))
    try:
        env = dict(os.environ)
        env[TOKEN_ENV] = TOKEN
        env.pop("http_proxy", None)
        env.pop("HTTP_PROXY", None)
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        if tool == "wanmon":
            sdir = os.path.join(rdir, "store")
            os.makedirs(sdir, mode=0o700)
            os.chmod(sdir, 0o700)
            store = os.path.join(sdir, "wanmon.db")
            shutil.copyfile(template_db, store)
            os.chmod(store, 0o600)
            cfg = os.path.join(rdir, "wanmon.toml")
            with open(cfg, "w") as f:
                f.write(wanmon_config(store, {"url": srv.url, "api": kind}, args.batch_size,
                                      [{"id": "a", "name": "A", "level": "province", "address": "127.0.0.1"}]))
            argv = [args.python, "-m", "wanmon", "--config", cfg, "influx", "drain", "--budget", "3600"]
        else:
            argv = curl_argv(args, kind, write_url(kind, srv), batches, rdir)
        busy0 = machine_busy_s()
        cpu0 = proc_cpu_s(srv.pid)
        rr: RunResult = runner.run(argv, stdout_path=os.path.join(rdir, "stdout"),
                                   stderr_path=os.path.join(rdir, "stderr"), timeout_s=args.timeout, cwd=rdir, env=env)
        cpu1 = proc_cpu_s(srv.pid)
        busy1 = machine_busy_s()
        other = None
        if None not in (busy0, busy1, cpu0, cpu1):
            other = max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - rr.cpu_s)
        out = open(rr.stdout_path, encoding="utf-8", errors="replace").read()
        err = open(rr.stderr_path, encoding="utf-8", errors="replace").read().strip()
        error = None
        sent = left = requests = None
        if tool == "wanmon":
            m = _SENT_RE.search(out)
            if m:
                sent, requests, left = int(m.group(1)), int(m.group(2)), int(m.group(3))
            if not m or left != 0 or sent != info.points:
                error = f"wanmon: {out.strip()[-300:]} {err[-300:]}"
        else:
            codes = [c for c in out.split() if c.strip()]
            requests = len(codes)
            ok = sum(c in ("200", "204") for c in codes)
            sent = info.points if ok == len(batches) == requests else None
            left = 0 if sent else None
            if sent is None:
                error = f"curl: {ok}/{len(batches)} requests answered 2xx ({sorted(set(codes))}); {err[-300:]}"
        if rr.rc != 0 or rr.timed_out:
            error = (error or "") + f" (exit status {rr.rc}{', timed out' if rr.timed_out else ''})"
        counted = count_points(kind, srv, info)
        if not counted["ok"]:
            error = (error or "") + (f" server holds {counted['points']} points, expected {info.points}; fields "
                                     f"{counted['fields']} vs {counted['expected_fields']}")
        pps = info.points / rr.wall_s if rr.wall_s > 0 and counted["ok"] and not error else None
        return ToolRun(kind, tool, rep, rr.rc, rr.wall_s, rr.cpu_s, rr.user_s, rr.sys_s, rr.maxrss_kib,
                       None if cpu0 is None or cpu1 is None else cpu1 - cpu0, requests, sent, left,
                       counted["points"], counted["fields"], counted["ok"], pps, error.strip() if error else None,
                       rr.method, other)
    finally:
        srv.close()
        if not args.keep_tmp:
            shutil.rmtree(os.path.join(rdir, "server"), ignore_errors=True)
            store = os.path.join(rdir, "store")
            shutil.rmtree(store, ignore_errors=True)


# --------------------------------------------------------------------------
# the cost of [influxdb] in one 177-site cycle


def cycle_cost(args, runner: Runner, sites: list[dict], work: str) -> dict[str, Any]:
    sites, replaced = loopback_sites(sites)
    variants = ["none"] + list(args.servers)
    cdir = os.path.join(work, "cycle")
    os.makedirs(cdir)
    servers: dict[str, Any] = {}
    env = dict(os.environ)
    env[TOKEN_ENV] = TOKEN
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    runs: dict[str, list[RunResult]] = {v: [] for v in variants}
    errors: list[str] = []
    try:
        cfgs = {}
        for v in variants:
            vdir = os.path.join(cdir, v)
            os.makedirs(vdir)
            influx = None
            if v != "none":
                servers[v] = start_server(v, os.path.join(vdir, "server"))
                influx = {"url": servers[v].url, "api": v}
            cfgs[v] = os.path.join(vdir, "sites.toml")
            with open(cfgs[v], "w") as f:
                f.write(wanmon_config(os.path.join(vdir, "store", "wanmon.db"), influx, 5000, sites, timeout_ms=5000))
        total = 0
        for i in range(args.cycle_repeat + 1):  # run 0: warm-up (creates the store), not counted
            order = variants[i % len(variants):] + variants[:i % len(variants)]
            for v in order:
                d = os.path.join(cdir, v)
                rr = runner.run([args.python, "-m", "wanmon", "--config", cfgs[v], "check"],
                                stdout_path=os.path.join(d, f"check{i}.out"), stderr_path=os.path.join(d, f"check{i}.err"),
                                timeout_s=300, cwd=d, env=env)
                if rr.rc != 0:
                    errors.append(f"cycle {v} run {i}: exit {rr.rc}: "
                                  + open(rr.stderr_path, errors="replace").read().strip()[-300:])
                if i:
                    runs[v].append(rr)
                log(f"  cycle {'warm-up' if not i else f'run {i}'} {v:>4}: wall {rr.wall_s:.3f} s, "
                    f"CPU {rr.cpu_s:.3f} s, RSS {rr.maxrss_kib / 1024:.1f} MiB")
            total += 1
        delivered = {}
        for v in args.servers:
            db = os.path.join(cdir, v, "store", "wanmon.db")
            con = sqlite3.connect(db)
            (left,) = con.execute("SELECT count(*) FROM spool").fetchone()
            con.close()
            expect = len(sites) * total
            got = _count_cycle_points(v, servers[v])
            delivered[v] = {"expected_icmp_points": expect, "server_icmp_points": got, "left_in_spool": left}
            if got != expect or left:
                errors.append(f"cycle {v}: server holds {got} wanmon_icmp points, expected {expect}; "
                              f"{left} left in the spool")
    finally:
        for s in servers.values():
            s.close()
    out: dict[str, Any] = {"repeat": args.cycle_repeat, "sites": len(sites), "variants": {}, "delivered": delivered,
                           "errors": errors, "addresses_replaced": replaced}
    for v in variants:
        rs = runs[v]
        out["variants"][v] = {
            "wall_s": median_or_none([r.wall_s for r in rs]),
            "cpu_s": median_or_none([r.cpu_s for r in rs]),
            "maxrss_mib": median_or_none([r.maxrss_kib / 1024 for r in rs]),
            "wall_min_s": min((r.wall_s for r in rs), default=None),
            "runs": [{"wall_s": r.wall_s, "cpu_s": r.cpu_s, "maxrss_kib": r.maxrss_kib, "rc": r.rc} for r in rs],
        }
    return out


def _count_cycle_points(kind: str, srv) -> int:
    if kind == "v1":
        rows = srv.rows('SELECT count("sent") FROM "wanmon_icmp"', DB)
        return int(rows[0]["count"]) if rows else 0
    srv.flush()
    q = 'sum(count_over_time(wanmon_icmp_sent[1h]))'
    r = http_request("GET", srv.url + "/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": f"{time.time() + 60:.3f}"}))
    res = r.json()["data"]["result"] if r.status == 200 else []
    return int(float(res[0]["value"][1])) if res else 0


# --------------------------------------------------------------------------
# profile


def profile_drain(args, kind: str, work: str, template_db: str, info: SpoolInfo, prof: str) -> str:
    rdir = os.path.join(work, f"profile-{kind}")
    os.makedirs(rdir)
    srv = start_server(kind, os.path.join(rdir, "server"))
    try:
        sdir = os.path.join(rdir, "store")
        os.makedirs(sdir, mode=0o700)
        store = os.path.join(sdir, "wanmon.db")
        shutil.copyfile(template_db, store)
        os.chmod(store, 0o600)
        cfg = os.path.join(rdir, "wanmon.toml")
        with open(cfg, "w") as f:
            f.write(wanmon_config(store, {"url": srv.url, "api": kind}, args.batch_size,
                                  [{"id": "a", "name": "A", "level": "province", "address": "127.0.0.1"}]))
        env = dict(os.environ)
        env[TOKEN_ENV] = TOKEN
        t0 = time.perf_counter()
        r = subprocess.run([args.python, "-m", "cProfile", "-o", prof, "-m", "wanmon", "--config", cfg,
                            "influx", "drain", "--budget", "3600"], capture_output=True, text=True, cwd=rdir, env=env,
                           stdin=subprocess.DEVNULL, timeout=args.timeout)
        wall = time.perf_counter() - t0
    finally:
        srv.close()
    import io
    import pstats
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    st.sort_stats("tottime").print_stats(15)
    st.sort_stats("cumulative").print_stats(25)
    return f"{kind}: {r.stdout.strip()} (under cProfile: {wall:.1f} s wall)\n" + buf.getvalue()


# --------------------------------------------------------------------------
# output


def summarize(runs: list[ToolRun], servers: list[str], info: SpoolInfo) -> list[dict[str, Any]]:
    rows = []
    for kind in servers:
        for tool in ("curl", "wanmon"):
            rs = [r for r in runs if r.server == kind and r.tool == tool]
            rows.append({
                "server": kind, "tool": tool, "runs": len(rs),
                "requests": median_or_none([r.requests for r in rs]),
                "wall_s": median_or_none([r.wall_s for r in rs]),
                "points_per_s": median_or_none([r.points_per_s for r in rs]) if all(r.points_per_s for r in rs) else None,
                "cpu_s": median_or_none([r.cpu_s for r in rs]),
                "cpu_us_per_point": (lambda c: c * 1e6 / info.points if c is not None else None)(
                    median_or_none([r.cpu_s for r in rs])),
                "maxrss_mib": median_or_none([r.maxrss_kib / 1024 for r in rs]),
                "server_cpu_s": median_or_none([r.server_cpu_s for r in rs]),
                "stored": min((r.stored for r in rs), default=0),
                "verified": all(r.verified for r in rs) and bool(rs),
            })
    return rows


def acceptance(rows: list[dict], servers: list[str], runs: list[ToolRun]) -> list[dict[str, Any]]:
    out = []
    for kind in servers:
        c = next(r for r in rows if r["server"] == kind and r["tool"] == "curl")
        w = next(r for r in rows if r["server"] == kind and r["tool"] == "wanmon")
        rt = ratio(w["points_per_s"], c["points_per_s"])
        paired = []  # per repeat: the two tools ran back to back, so they saw similar machine load
        for rep in sorted({r.repeat for r in runs if r.server == kind}):
            cw = [r.points_per_s for r in runs if (r.server, r.repeat, r.tool) == (kind, rep, "wanmon")]
            cc = [r.points_per_s for r in runs if (r.server, r.repeat, r.tool) == (kind, rep, "curl")]
            if cw and cc and ratio(cw[0], cc[0]) is not None:
                paired.append(ratio(cw[0], cc[0]))
        out.append({"server": kind, "ratio": rt, "pass": rt is not None and rt >= ACCEPT_RATIO and w["verified"],
                    "wanmon_pps": w["points_per_s"], "curl_pps": c["points_per_s"], "paired_ratios": paired})
    return out


def print_report(args, meta, info: SpoolInfo, rows, acc, cycle, notes) -> None:
    print(f"spool: {info.points:,} wanmon_icmp points ({len(meta['sites_tags'])} sites x {info.cycles:,} cycles, "
          f"{CYCLE_SECONDS} s apart), {info.batches:,} batches of {args.batch_size:,}, "
          f"{info.bytes / 1e6:.1f} MB of line protocol ({info.bytes / info.points:.0f} B/point)")
    print(f"curl mode: {args.curl_mode}; runs per tool: {args.repeat} (medians)")
    print()
    by = {(r["server"], r["tool"]): r for r in rows}

    def cell(tool, key, spec):
        return lambda k: fmt(by[(k, tool)][key], spec)

    cols = [
        ("", "server", 6, lambda k: k),
        ("wall s", "curl", 6, cell("curl", "wall_s", ".2f")),
        ("wall s", "wanmon", 6, cell("wanmon", "wall_s", ".2f")),
        ("points/s", "curl", 8, cell("curl", "points_per_s", ",.0f")),
        ("points/s", "wanmon", 8, cell("wanmon", "points_per_s", ",.0f")),
        ("points/s", "ratio", 5, lambda k: fmt_ratio(next(a["ratio"] for a in acc if a["server"] == k))),
        ("CPU s", "curl", 5, cell("curl", "cpu_s", ".2f")),
        ("CPU s", "wanmon", 6, cell("wanmon", "cpu_s", ".2f")),
        ("CPU s", "wanmon us/pt", 6, cell("wanmon", "cpu_us_per_point", ".1f")),
        ("peak RSS MiB", "curl", 5, cell("curl", "maxrss_mib", ".1f")),
        ("peak RSS MiB", "wanmon", 6, cell("wanmon", "maxrss_mib", ".1f")),
        ("server CPU s", "curl", 5, cell("curl", "server_cpu_s", ".2f")),
        ("server CPU s", "wanmon", 6, cell("wanmon", "server_cpu_s", ".2f")),
        ("stored", "curl", 6, lambda k: "ok" if by[(k, "curl")]["verified"] else f"{by[(k, 'curl')]['stored']:,}"),
        ("stored", "wanmon", 6, lambda k: "ok" if by[(k, "wanmon")]["verified"] else f"{by[(k, 'wanmon')]['stored']:,}"),
    ]
    for ln in render_table(cols, args.servers):
        print(ln)
    print()
    for k in args.servers:
        print(f"  {k} = {meta['servers'].get(k, SERVER_LABEL[k])}; requests: curl "
              f"{fmt(by[(k, 'curl')]['requests'], '.0f')}, wanmon {fmt(by[(k, 'wanmon')]['requests'], '.0f')}")
    print('  stored "ok": the server holds every point and every field value (v1: count(*); '
          "v2: count_over_time of each <measurement>_<field> series)")
    print()
    for a in acc:
        verdict = "PASS" if a["pass"] else "FAIL"
        print(f"{verdict}: {a['server']} wanmon drain throughput >= {ACCEPT_RATIO}x curl: "
              f"{fmt(a['wanmon_pps'], ',.0f')} vs {fmt(a['curl_pps'], ',.0f')} points/s = {fmt(a['ratio'], '.3f')}x"
              + (f" (back-to-back pairs: {', '.join(f'{p:.2f}x' for p in a['paired_ratios'])})"
                 if len(a["paired_ratios"]) > 1 else ""))
    if cycle:
        print()
        print(f"cost of [influxdb] in one {cycle['sites']}-site `wanmon check` ([snmp] enabled = false; "
              f"medians of {cycle['repeat']} runs after a warm-up, order rotated):")
        base = cycle["variants"]["none"]
        ccols = [
            ("", "[influxdb]", 10, lambda v: {"none": "none", "v1": "v1 InfluxDB", "v2": "v2 VictoriaM."}[v]),
            ("wall s", "median", 6, lambda v: fmt(cycle["variants"][v]["wall_s"], ".3f")),
            ("wall s", "min", 5, lambda v: fmt(cycle["variants"][v]["wall_min_s"], ".3f")),
            ("wall s", "+ vs none", 6, lambda v: "" if v == "none" else
             fmt(_diff(cycle["variants"][v]["wall_s"], base["wall_s"]), "+.3f")),
            ("CPU s", "median", 6, lambda v: fmt(cycle["variants"][v]["cpu_s"], ".3f")),
            ("CPU s", "+ vs none", 6, lambda v: "" if v == "none" else
             fmt(_diff(cycle["variants"][v]["cpu_s"], base["cpu_s"]), "+.3f")),
            ("peak RSS MiB", "median", 6, lambda v: fmt(cycle["variants"][v]["maxrss_mib"], ".1f")),
            ("peak RSS MiB", "+ vs none", 6, lambda v: "" if v == "none" else
             fmt(_diff(cycle["variants"][v]["maxrss_mib"], base["maxrss_mib"]), "+.1f")),
        ]
        for ln in render_table(ccols, list(cycle["variants"])):
            print(ln)
        for v, d in cycle["delivered"].items():
            print(f"  {v}: server holds {d['server_icmp_points']:,} of {d['expected_icmp_points']:,} wanmon_icmp "
                  f"points written by the {cycle['repeat'] + 1} checks; {d['left_in_spool']} left in the spool")
    if notes:
        print()
        for n in notes:
            print(f"note: {n}")


def _diff(a, b):
    return None if a is None or b is None else a - b


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    install_signal_cleanup()
    work = tempfile.mkdtemp(prefix="wmbench-influx-")
    notes: list[str] = []
    errors: list[str] = []
    try:
        try:
            if not os.path.exists(args.curl):
                raise LabError(f"curl not found at {args.curl}")
            for k in args.servers:
                ok, why = (tsdb_servers.influx_available() if k == "v1" else tsdb_servers.victoria_available())
                if not ok:
                    raise LabError(why)
            r = subprocess.run([args.python, "-m", "wanmon", "--help"], capture_output=True, text=True)
            if r.returncode != 0:
                raise LabError(f"`{args.python} -m wanmon --help` failed: {r.stderr.strip()}")
            r = subprocess.run([args.python, "-c", "import wanmon; print(wanmon.__file__)"], capture_output=True,
                               text=True, cwd=work)
            if not r.stdout.strip().startswith(os.path.join(REPO, "wanmon", "")):
                raise LabError(f"`{args.python}` imports wanmon from {r.stdout.strip() or r.stderr.strip()}, "
                               f"not from {REPO}")
            helper = build_helper(work)
            if not helper:
                notes.append("no C compiler: wanmon's peak RSS has this script's own peak as a floor")
            runner = Runner(None, helper)
            sites = load_sites(args.sites)
            log(f"building a spool of {args.points:,} points in batches of {args.batch_size:,} ...")
            t0 = time.perf_counter()
            template_db, bdir, info = build_spool(args, sites, work, args.python)
            log(f"  done in {time.perf_counter() - t0:.1f} s: {info.batches:,} batches, {info.bytes / 1e6:.1f} MB")
        except LabError as exc:
            log(f"influx_write: {exc}")
            return 2
        batches = sorted(os.path.join(bdir, b) for b in os.listdir(bdir))
        meta: dict[str, Any] = {
            "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "kernel": platform.release(), "curl": subprocess.run([args.curl, "--version"], capture_output=True,
                                                                 text=True).stdout.splitlines()[0],
            "sites_tags": [s["id"] for s in sites], "servers": {}, "measure_method": runner.method,
        }
        runs: list[ToolRun] = []
        for kind in args.servers:
            for rep in range(args.repeat):
                order = ("curl", "wanmon") if rep % 2 == 0 else ("wanmon", "curl")
                for tool in order:
                    log(f"{kind} run {rep + 1}/{args.repeat}: {tool} ...")
                    tr = run_tool(args, runner, kind, tool, rep, work, template_db, batches, info)
                    runs.append(tr)
                    log(f"  {tool}: {tr.wall_s:.2f} s, {fmt(tr.points_per_s, ',.0f')} points/s, CPU {tr.cpu_s:.2f} s, "
                        f"RSS {tr.maxrss_kib / 1024:.1f} MiB, server CPU {fmt(tr.server_cpu_s, '.2f')} s, "
                        f"stored {tr.stored:,}{' ok' if tr.verified else ' MISMATCH'}; others' CPU {fmt(tr.other_cpu_s, '.2f')} s")
                    if tr.error:
                        errors.append(f"{kind} {tool} run {rep + 1}: {tr.error}")
            with start_server(kind, os.path.join(work, f"version-{kind}")) as s:
                meta["servers"][kind] = server_version(kind, s)
        rows = summarize(runs, args.servers, info)
        acc = acceptance(rows, args.servers, runs)
        cycle = None
        if args.cycle_repeat:
            log(f"cycle cost: {len(sites)} sites, {args.cycle_repeat} runs per variant ...")
            cycle = cycle_cost(args, runner, sites, work)
            errors += cycle["errors"]
            if cycle["addresses_replaced"]:
                notes.append(f"{cycle['addresses_replaced']} site addresses in {args.sites} are not in 127.0.0.0/8: "
                             "the cycle-cost runs pinged 127.77.x.y instead")
        prof_text = []
        if args.profile:
            for kind in args.servers:
                prof = f"{args.profile}-{kind}.prof"
                log(f"profiling one {kind} drain into {prof} ...")
                prof_text.append(profile_drain(args, kind, work, template_db, info, prof))
        busy = [r for r in runs if r.other_cpu_s is not None and r.other_cpu_s > 0.1 * r.wall_s]
        if busy:
            notes.append(f"{len(busy)} of {len(runs)} runs shared the machine: other processes used more than 10% "
                         f"of one core during them (worst {max(r.other_cpu_s / r.wall_s for r in busy):.0%}); "
                         "see other_cpu_s in --json, compare with --repeat")
        if args.curl_mode == "config":
            notes.append("curl --config reads every `@file` body while it parses the config, before the first "
                         f"request: its peak RSS is about the whole spool ({info.bytes / 2**20:.0f} MiB), not one "
                         "batch (--curl-mode per-batch: one batch)")
        if runner.method != "helper":
            notes.append("measured without the rusage helper (no C compiler)")
        if args.json:
            json.dump({"meta": meta, "args": {k: v for k, v in vars(args).items()}, "spool": asdict(info),
                       "summary": rows, "acceptance": acc, "runs": [asdict(r) for r in runs], "cycle": cycle,
                       "errors": errors, "notes": notes}, sys.stdout, indent=1, ensure_ascii=False)
            sys.stdout.write("\n")
        else:
            print_report(args, meta, info, rows, acc, cycle, notes)
            for t in prof_text:
                print()
                print(t)
        if errors:
            print("\nerrors:", file=sys.stderr)
            for e in errors:
                print(f"  {e}", file=sys.stderr)
            return 1
        return 0
    finally:
        kill_current_children()
        if args.keep_tmp:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
