#!/usr/bin/env python3
"""ICMP sweep benchmark: `wanmon check` end to end against fping.

For every size in --sizes (and again with --dead-pct of the targets dead)
both tools probe the same loopback targets, 3 packets 200 ms apart, inside
a network namespace this script creates (wmbench-<pid>) and removes again:

    python -m wanmon --config FILE check --json          (exactly as cron runs it)
    fping -q -c 3 -p 200 -i 0.1 <targets>

and the script reports wall-clock, CPU (user+sys from wait4) and peak RSS
(ru_maxrss from wait4) of each, their ratios, false loss (live targets
reported with any loss), missing targets and the median per-target RTT
difference.  It prints PASS/FAIL for the acceptance figures, but always
exits 0 once the measurements are done (1 if a tool produced no usable
output, 2 if the lab could not be set up).

Must run as root (ip netns, nft).  Only 127.0.0.0/8 inside the private
namespace is ever probed.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _lab  # noqa: E402
from _measure import compile_package, default_python, log  # noqa: E402
from _measure import fmt, fmt_count, fmt_ratio, median_or_none, ratio, render_table  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COUNT = 3            # packets per target                 (fping -c 3)
INTERVAL_MS = 200    # between packets to one target      (fping -p 200)
TIMEOUT_MS = 200     # wanmon timeout_ms = what fping uses here: in count mode its
                     # timeout is the period (-p 200, see fping(8) -t), so both tools
                     # give a dead target the same wait
RATE_PPS = 10000     # 0.1 ms between any two packets     (fping -i 0.1)
FPING_I_MS = "0.1"

RSS_LIMIT_BYTES = 200 * 1000 * 1000  # "200 MB", decimal: the stricter reading
NOTRACE = "wanmon-notrace"  # --traces-cost: the same check with the agent's own traces off
TRACES_OFF = "\n[trace]\non_outage = false\nrefresh_h = 0\n"
TRACES_COST_LIMIT_S = 0.1  # issue 24: tracing never adds more than 0.1 s to check when nothing is down


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark `wanmon check` against fping on loopback targets "
                    "inside a private network namespace (needs root).")
    p.add_argument("--sizes", default="177,2000,10000",
                   help="comma-separated target counts (default: %(default)s)")
    p.add_argument("--dead-pct", type=float, default=20.0,
                   help="also run every size with this %% of targets dead; "
                        "0 = live-only cases (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=22,
                   help="wanmon runs per case before the measured ones, not counted: cron's steady "
                        "state, as every run after the first 22 minutes is (the config's parsed TOML "
                        "and the page template cached; alert states calm, which takes [alerts] "
                        "flap_window = 21 cycles); 0 measures a first run (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs per tool and case; the table shows medians "
                        "(default: %(default)s)")
    p.add_argument("--json", action="store_true",
                   help="print machine-readable JSON on stdout instead of the table")
    p.add_argument("--python", default=default_python(),
                   help="interpreter that runs `-m wanmon` (default: %(default)s)")
    p.add_argument("--fping", default=shutil.which("fping") or "/usr/bin/fping",
                   help="fping binary (default: %(default)s)")
    p.add_argument("--mode", default="auto", help='[icmp] mode for wanmon (default: "auto")')
    p.add_argument("--wanmon-timeout-ms", type=int, default=TIMEOUT_MS,
                   help="[icmp] timeout_ms for wanmon (default: %(default)s; note that "
                        "fping -c 3 -p 200 itself waits only 200 ms, see README)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="kill a single tool run after this many seconds (default: %(default)s)")
    p.add_argument("--fping-only", action="store_true",
                   help="measure fping only (e.g. while wanmon is not installed)")
    p.add_argument("--traces-cost", action="store_true",
                   help="also run wanmon with its own traces off ([trace] on_outage = false, refresh_h = 0), "
                        "warmed up and interleaved the same way, and print what the shipped traces add")
    p.add_argument("--profile", metavar="FILE.prof",
                   help="afterwards, run wanmon once more under cProfile on the "
                        "largest live case, save FILE.prof and print the top entries")
    p.add_argument("--keep-tmp", action="store_true",
                   help="keep the temp dir with configs, stores and raw outputs")
    a = p.parse_args(argv)
    try:
        a.sizes = [int(s.replace("_", "")) for s in a.sizes.split(",") if s.strip()]
    except ValueError:
        p.error("--sizes: comma-separated integers expected")
    if not a.sizes or any(s < 1 or s > 65000 for s in a.sizes):
        p.error("--sizes: each size must be 1..65000")
    if not 0 <= a.dead_pct < 100:
        p.error("--dead-pct must be in [0, 100)")
    if a.repeat < 1:
        p.error("--repeat must be >= 1")
    return a


# --------------------------------------------------------------------------
# evaluation


def evaluate(targets: list[_lab.Target], res: dict[str, dict]) -> dict:
    """Per-run quality metrics from address -> result."""
    live = [t for t in targets if not t.dead]
    dead = [t for t in targets if t.dead]
    false_loss = missing = dead_down = dead_answered = wrong_sent = live_not_up = 0
    rtts: dict[str, float] = {}
    statuses: dict[str, int] = {}
    for t in targets:
        r = res.get(t.address)
        if r is None:
            missing += 1
            continue
        st = r.get("status")
        if st is not None:
            statuses[st] = statuses.get(st, 0) + 1
        if r.get("sent") is not None and int(r["sent"]) != COUNT:
            wrong_sent += 1
        if t.dead:
            if r.get("received"):
                dead_answered += 1
            else:
                dead_down += 1
        else:
            if _lab.has_loss(r, COUNT):
                false_loss += 1
            if st is not None and st != "up":
                live_not_up += 1
            if r.get("rtt_avg_ms") is not None:
                rtts[t.address] = float(r["rtt_avg_ms"])
    return {
        "reported": sum(1 for t in targets if t.address in res),
        "missing": missing,
        "false_loss": false_loss,
        "live_not_up": live_not_up,
        "dead_total": len(dead),
        "dead_down": dead_down,
        "dead_answered": dead_answered,
        "wrong_sent": wrong_sent,
        "statuses": statuses,
        "rtt_avg_median_ms": statistics.median(rtts.values()) if rtts else None,
        "live_total": len(live),
        "_rtts": rtts,
    }


def summarize(runs: list[dict]) -> dict | None:
    ok = [r for r in runs if r.get("ok")]
    if not ok:
        return None
    keys = ["wall_s", "cpu_s", "user_s", "sys_s", "maxrss_mib", "reported", "missing",
            "false_loss", "live_not_up", "dead_down", "dead_answered", "wrong_sent",
            "rtt_avg_median_ms"]
    s = {k: median_or_none([r[k] for r in ok]) for k in keys}
    s["false_loss_max"] = max(r["false_loss"] for r in ok)
    s["missing_max"] = max(r["missing"] for r in ok)
    s["maxrss_mib_max"] = max(r["maxrss_mib"] for r in ok)
    s["statuses_last_run"] = ok[-1].get("statuses", {})
    s["runs_ok"] = len(ok)
    s["runs_failed"] = len(runs) - len(ok)
    return s


# --------------------------------------------------------------------------
# running


def run_tool(runner: _lab.Runner, ns: _lab.Netns, tool: str, argv: list[str],
             casedir: str, tag: str, targets: list[_lab.Target], timeout: float) -> dict:
    out = os.path.join(casedir, f"{tool}-{tag}.out")
    err = os.path.join(casedir, f"{tool}-{tag}.err")
    c0 = ns.counters()
    rr = runner.run(argv, stdout_path=out, stderr_path=err, timeout_s=timeout, cwd=REPO)
    c1 = ns.counters()
    req_live = c1.get("live_req", 0) - c0.get("live_req", 0)
    req_dead = c1.get("dead_req", 0) - c0.get("dead_req", 0)
    req_trace = c1.get("trace_req", 0) - c0.get("trace_req", 0)
    run: dict[str, Any] = {
        "tool": tool, "rc": rr.rc, "timed_out": rr.timed_out,
        "wall_s": rr.wall_s, "cpu_s": rr.cpu_s, "user_s": rr.user_s,
        "sys_s": rr.sys_s, "maxrss_mib": rr.maxrss_kib / 1024.0,
        "outer_wall_s": rr.outer_wall_s, "method": rr.method,
        "children_cpu_delta_s": rr.children_cpu_delta_s,
        # echo requests the namespace saw during the run (nftables counters)
        "echo_req_live": req_live, "echo_req_dead": req_dead,
        "echo_req_expected": len(targets) * COUNT, "ok": False,
        # a trace's probes (TTL under 64): good paths refreshed ([trace] refresh_h), outages
        "trace_probes": req_trace,
    }
    with open(out, errors="replace") as f:
        stdout = f.read()
    with open(err, errors="replace") as f:
        stderr = f.read()
    try:
        if rr.timed_out:
            raise ValueError(f"killed after {timeout:.0f} s timeout")
        if tool == "fping":
            res = _lab.parse_fping_summary(stderr)
            if not res:
                raise ValueError("no fping summary lines on stderr")
        else:
            res = _lab.parse_wanmon_check_json(stdout)
        run.update(evaluate(targets, res))
        run["ok"] = True
    except (ValueError, json.JSONDecodeError) as e:
        run["error"] = f"{tool} rc={rr.rc}: {e}"
        run["stdout_tail"] = stdout[-1500:]
        run["stderr_tail"] = stderr[-1500:]
    return run


def rtt_diff_median(f_run: dict, w_run: dict) -> float | None:
    if not (f_run.get("ok") and w_run.get("ok")):
        return None
    fr, wr = f_run["_rtts"], w_run["_rtts"]
    diffs = [wr[a] - fr[a] for a in fr.keys() & wr.keys()]
    return statistics.median(diffs) if diffs else None


def run_case(runner: _lab.Runner, ns: _lab.Netns, args, tmp: str, n: int, dead_pct: float) -> dict:
    targets = _lab.make_targets(n, dead_pct)
    n_dead = sum(t.dead for t in targets)
    casedir = os.path.join(tmp, f"n{n}-dead{n_dead}")
    os.makedirs(casedir, exist_ok=True)

    def config(name: str, store_dir: str, extra: str = "") -> str:
        """A wanmon config for the targets in the case folder, with its own store."""
        path = os.path.join(casedir, name)
        store = os.path.join(casedir, store_dir, "wanmon.db")
        os.makedirs(os.path.dirname(store), exist_ok=True)
        with open(path, "w") as f:
            f.write(_lab.wanmon_config(targets, store, count=COUNT, interval_ms=INTERVAL_MS,
                                       timeout_ms=args.wanmon_timeout_ms, rate_pps=RATE_PPS,
                                       mode=args.mode) + extra)
        return path

    cfg = config("wanmon.toml", "store")
    addrs = [t.address for t in targets]
    fping_argv = [args.fping, "-q", "-c", str(COUNT), "-p",
                                     str(INTERVAL_MS), "-i", FPING_I_MS] + addrs
    wanmon_argv = [args.python, "-m", "wanmon", "--config", cfg,
                                      "check", "--json"]
    tools = {"fping": fping_argv}
    if not args.fping_only:
        tools["wanmon"] = wanmon_argv
        if args.traces_cost:  # the same sites, its own store, the agent's own traces off
            cfg_off = config("wanmon-notrace.toml", "store-notrace", TRACES_OFF)
            tools[NOTRACE] = [args.python, "-m", "wanmon", "--config", cfg_off, "check", "--json"]
    runs: dict[str, list[dict]] = {k: [] for k in tools}
    rtt_diffs: list[float | None] = []
    for w in range(args.warmup if "wanmon" in tools else 0):
        for tool in [t for t in tools if t != "fping"]:
            r = run_tool(runner, ns, tool, tools[tool], casedir, f"w{w + 1}", targets, args.timeout)
            log(f"  [{n} targets, {n_dead} dead, warm-up {w + 1}/{args.warmup}] {tool} wall "
                f"{r.get('wall_s', 0):7.3f} s (not counted)")
    for rep in range(args.repeat):
        # each tool first in turn (with two: forwards, then backwards)
        names = list(tools)
        order = names[rep % len(names):] + names[:rep % len(names)] if len(names) > 2 else \
            (names if rep % 2 == 0 else list(reversed(names)))
        this: dict[str, dict] = {}
        for tool in order:
            r = run_tool(runner, ns, tool, tools[tool], casedir, f"r{rep + 1}", targets, args.timeout)
            this[tool] = r
            runs[tool].append(r)
            if r["ok"]:
                log(f"  [{n} targets, {n_dead} dead, run {rep + 1}/{args.repeat}] "
                    f"{tool:6s} wall {r['wall_s']:7.3f} s  cpu {r['cpu_s']:7.3f} s  "
                    f"rss {r['maxrss_mib']:7.1f} MiB  false-loss {r['false_loss']}  "
                    f"missing {r['missing']}  rc {r['rc']}")
            else:
                log(f"  [{n} targets, {n_dead} dead, run {rep + 1}/{args.repeat}] "
                    f"{tool} FAILED: {r['error']}")
                if r.get("stderr_tail"):
                    log("    stderr tail: " + r["stderr_tail"].strip().replace("\n", "\n    "))
        if "wanmon" in this:
            rtt_diffs.append(rtt_diff_median(this["fping"], this["wanmon"]))
    summ = {k: summarize(v) for k, v in runs.items()}
    case: dict[str, Any] = {
        "targets": n, "dead": n_dead, "live": n - n_dead, "dead_pct": dead_pct,
        "config": cfg, "fping": summ.get("fping"), "wanmon": summ.get("wanmon"),
        "rtt_diff_median_ms": median_or_none(rtt_diffs),
        "runs": {k: [{kk: vv for kk, vv in r.items() if not kk.startswith("_")}
                     for r in v] for k, v in runs.items()},
    }
    f, w = case["fping"], case["wanmon"]
    case["ratios"] = {
        "wall": ratio(w and w["wall_s"], f and f["wall_s"]),
        "cpu": ratio(w and w["cpu_s"], f and f["cpu_s"]),
        "rss": ratio(w and w["maxrss_mib"], f and f["maxrss_mib"]),
    }
    case["trace_probes"] = median_or_none([r["trace_probes"] for r in runs.get("wanmon", []) if r.get("ok")])
    if NOTRACE in runs:  # what the shipped traces add: each repetition's shipped run against its run without
        pairs = [(a["wall_s"], b["wall_s"]) for a, b in zip(runs["wanmon"], runs[NOTRACE]) if a["ok"] and b["ok"]]
        off = summarize(runs[NOTRACE])
        case["traces_cost"] = {
            "added_s": median_or_none([a - b for a, b in pairs]),
            "shipped_s": w and w["wall_s"], "off_s": off and off["wall_s"], "fping_s": f and f["wall_s"],
            "off_trace_probes": median_or_none([r["trace_probes"] for r in runs[NOTRACE] if r.get("ok")]),
        }
    return case


def profile_wanmon(runner: _lab.Runner, args, tmp: str, n: int, out_prof: str) -> str:
    import io
    import pstats
    targets = _lab.make_targets(n, 0)
    casedir = os.path.join(tmp, f"profile-n{n}")
    os.makedirs(os.path.join(casedir, "store"), exist_ok=True)
    cfg = os.path.join(casedir, "wanmon.toml")
    with open(cfg, "w") as f:
        f.write(_lab.wanmon_config(targets, os.path.join(casedir, "store", "wanmon.db"),
                                   count=COUNT, interval_ms=INTERVAL_MS,
                                   timeout_ms=args.wanmon_timeout_ms, rate_pps=RATE_PPS,
                                   mode=args.mode))
    out_prof = os.path.abspath(out_prof)
    argv = [args.python, "-m", "cProfile", "-o", out_prof, "-m",
                               "wanmon", "--config", cfg, "check", "--json"]
    rr = runner.run(argv, stdout_path=os.path.join(casedir, "out"),
                    stderr_path=os.path.join(casedir, "err"),
                    timeout_s=args.timeout, cwd=REPO)
    buf = io.StringIO()
    buf.write(f"cProfile of wanmon check, {n} live targets: wall {rr.wall_s:.3f} s, "
              f"cpu {rr.cpu_s:.3f} s (under the profiler), rc {rr.rc}; saved {out_prof}\n")
    if os.path.exists(out_prof):
        st = pstats.Stats(out_prof, stream=buf)
        st.sort_stats("cumulative").print_stats(30)
        st.sort_stats("tottime").print_stats(20)
    return buf.getvalue()


# --------------------------------------------------------------------------
# reporting


def acceptance(cases: list[dict], fping_only: bool) -> list[dict]:
    def find(n: int, live_only: bool) -> dict | None:
        for c in cases:
            if c["targets"] == n and (c["dead"] == 0) == live_only:
                return c
        return None

    checks = []

    def add(name, case, value_fn, limit_desc, ok_fn, primary=True):
        w = case and case.get("wanmon")
        if case is None:
            checks.append({"check": name, "result": "SKIP", "detail": "size not run",
                           "acceptance": primary})
            return
        if fping_only or w is None or case.get("fping") is None:
            checks.append({"check": name, "result": "SKIP" if fping_only else "FAIL",
                           "detail": "wanmon not measured" if fping_only else "no usable run",
                           "acceptance": primary})
            return
        val, detail = value_fn(case)
        checks.append({"check": name, "value": val, "limit": limit_desc,
                       "result": "PASS" if ok_fn(val) else "FAIL", "detail": detail,
                       "acceptance": primary})

    def fl(c):
        w = c["wanmon"]
        worst = int(w["false_loss_max"] + w["missing_max"])
        return worst, (f"false loss {w['false_loss_max']} + missing {w['missing_max']} "
                       f"of {c['live']} live (worst of {w['runs_ok']} run(s))")

    def wall(c):
        r = c["ratios"]["wall"]
        return r, (f"wanmon {c['wanmon']['wall_s']:.3f} s vs fping "
                   f"{c['fping']['wall_s']:.3f} s = {r:.2f}x")

    def rss(c):
        b = c["wanmon"]["maxrss_mib"] * 1024 * 1024
        return b / 1e6, f"wanmon peak RSS {b / 1e6:.1f} MB ({b / 2**20:.1f} MiB)"

    for live_only, primary in ((True, True), (False, False)):
        sfx = "live" if live_only else "with dead"
        c2k, c10k = find(2000, live_only), find(10000, live_only)
        if not live_only and not any(c["dead"] for c in cases):
            continue
        add(f"2,000 {sfx}: wanmon false loss = 0", c2k, fl, "0", lambda v: v == 0, primary)
        add(f"2,000 {sfx}: wall <= 1.2x fping", c2k, wall, "1.2x",
            lambda v: v is not None and v <= 1.2, primary)
        add(f"10,000 {sfx}: wall <= 1.2x fping", c10k, wall, "1.2x",
            lambda v: v is not None and v <= 1.2, primary)
        add(f"10,000 {sfx}: wanmon RSS <= 200 MB", c10k, rss, "200 MB",
            lambda v: v <= RSS_LIMIT_BYTES / 1e6, primary)
    for c in cases:  # --traces-cost: what the shipped traces add to a check with nothing down
        tc = c.get("traces_cost")
        if c["dead"] == 0 and tc and tc["added_s"] is not None:
            added = tc["added_s"]
            checks.append({"check": f"{c['targets']:,} live: traces add <= 0.1 s", "value": added,
                           "limit": "0.1 s", "result": "PASS" if added <= TRACES_COST_LIMIT_S else "FAIL",
                           "detail": f"shipped {tc['shipped_s']:.3f} s vs traces off {tc['off_s']:.3f} s: "
                                     f"{added:+.3f} s (fping {tc['fping_s']:.3f} s)",
                           "acceptance": True})
    return checks


def print_report(meta: dict, cases: list[dict], checks: list[dict],
                 profile_text: str | None) -> None:
    p = print
    p()
    p(f"wanmon check vs fping  |  {COUNT} packets {INTERVAL_MS} ms apart, timeout "
      f"{meta['icmp']['timeout_ms']} ms (wanmon), 0.1 ms between packets  |  "
      f"netns {meta['netns']}")
    p(f"fping: {meta['fping_cmd']}")
    p(f"wanmon: {meta['wanmon_cmd']}")
    p(f"{meta['fping_version']}, {meta['kernel']}, {meta['cpus']} CPUs; "
      f"medians of {meta['repeat']} run(s) per tool and case, after {meta['warmup']} wanmon warm-up run(s)")
    if meta["measurement"] == "helper":
        p("wall/CPU/RSS: the tool's own wait4() rusage, taken by a fork/exec helper "
          "that setns()es into the namespace")
    else:
        p("wall/CPU/RSS: wait4() of `ip netns exec ...` (no C compiler: RSS has this "
          "script's peak RSS as a floor)")
    p()
    # (group, header, width, value(case) -> str)
    def g(tool, key):
        return lambda c: (c.get(tool) or {}).get(key)

    def dead_down(c):
        w = c.get("wanmon")
        if c["dead"] == 0:
            return "-"
        return f"{w['dead_down']:g}/{c['dead']}" if w else "-"

    cols = [
        ("", "targets", 7, lambda c: f"{c['targets']}"),
        ("", "dead", 5, lambda c: f"{c['dead']}"),
        ("wall s", "fping", 7, lambda c: fmt(g("fping", "wall_s")(c), ".3f")),
        ("wall s", "wanmon", 7, lambda c: fmt(g("wanmon", "wall_s")(c), ".3f")),
        ("wall s", "ratio", 6, lambda c: fmt_ratio(c["ratios"]["wall"])),
        ("CPU s", "fping", 6, lambda c: fmt(g("fping", "cpu_s")(c), ".3f")),
        ("CPU s", "wanmon", 6, lambda c: fmt(g("wanmon", "cpu_s")(c), ".3f")),
        ("CPU s", "ratio", 7, lambda c: fmt_ratio(c["ratios"]["cpu"])),
        ("peak RSS MiB", "fping", 5, lambda c: fmt(g("fping", "maxrss_mib")(c), ".1f")),
        ("peak RSS MiB", "wanmon", 6, lambda c: fmt(g("wanmon", "maxrss_mib")(c), ".1f")),
        ("peak RSS MiB", "ratio", 6, lambda c: fmt_ratio(c["ratios"]["rss"])),
        ("false loss", "fping", 6, lambda c: fmt_count(g("fping", "false_loss")(c),
                                                      g("fping", "false_loss_max")(c))),
        ("false loss", "wanmon", 7, lambda c: fmt_count(g("wanmon", "false_loss")(c),
                                                       g("wanmon", "false_loss_max")(c))),
        ("wanmon", "missing", 7, lambda c: fmt_count(g("wanmon", "missing")(c),
                                                    g("wanmon", "missing_max")(c))),
        ("wanmon", "dead down", 9, dead_down),
        ("median RTT ms", "fping", 6, lambda c: fmt(g("fping", "rtt_avg_median_ms")(c), ".3f")),
        ("median RTT ms", "wanmon", 6, lambda c: fmt(g("wanmon", "rtt_avg_median_ms")(c), ".3f")),
        ("median RTT ms", "diff", 6, lambda c: fmt(c["rtt_diff_median_ms"], "+.3f")),
    ]
    for line in render_table(cols, cases):
        p(line)
    p()
    # anomalies worth a line
    for c in cases:
        for tool in ("fping", "wanmon"):
            s = c.get(tool)
            label = f"{c['targets']} targets/{c['dead']} dead, {tool}"
            if s is None:
                if tool == "wanmon" and meta["fping_only"]:
                    continue
                p(f"note: {label}: no usable run (see errors below)")
                continue
            if s["runs_failed"]:
                p(f"note: {label}: {s['runs_failed']} run(s) failed")
            if s["dead_answered"]:
                p(f"note: {label}: {s['dead_answered']:g} dead targets reported as answering")
            if s["wrong_sent"]:
                p(f"note: {label}: {s['wrong_sent']:g} targets with sent != {COUNT}")
            bad = [r for r in c["runs"][tool] if r.get("ok") and
                   r["echo_req_live"] + r["echo_req_dead"] != r["echo_req_expected"]]
            for r in bad:
                p(f"note: {label}: the namespace saw {r['echo_req_live']} + "
                  f"{r['echo_req_dead']} echo requests (live + dead), expected "
                  f"{r['echo_req_expected']}")
            if tool == "wanmon" and s["live_not_up"]:
                p(f"note: {label}: {s['live_not_up']:g} live targets with status != up")
    n_runs = sum(1 for c in cases for rs in c["runs"].values() for r in rs if r.get("ok"))
    n_match = sum(1 for c in cases for rs in c["runs"].values() for r in rs if r.get("ok")
                  and r["echo_req_live"] + r["echo_req_dead"] == r["echo_req_expected"])
    p(f"echo requests counted by nftables in the namespace = targets x {COUNT} "
      f"in {n_match} of {n_runs} runs (the sweep's: a trace's probes, with TTLs under 64, apart)")
    for c in cases:
        if c.get("trace_probes"):
            p(f"trace probes per wanmon run at {c['targets']} targets/{c['dead']} dead: median "
              f"{c['trace_probes']:g} (good paths refreshed, [trace] refresh_h; outages)")
    for c in cases:
        tc = c.get("traces_cost")
        if tc and tc["added_s"] is not None:
            p(f"traces' cost at {c['targets']} targets/{c['dead']} dead: shipped {tc['shipped_s']:.3f} s "
              f"({ratio(tc['shipped_s'], tc['fping_s']):.2f}x fping), traces off {tc['off_s']:.3f} s "
              f"({ratio(tc['off_s'], tc['fping_s']):.2f}x fping), fping's own {tc['fping_s']:.3f} s; "
              f"added {tc['added_s']:+.3f} s (median of the paired runs; {tc['off_trace_probes']:g} probes "
              "with traces off)")
    p()
    p("Acceptance (judged on the live-only cases; the 'with dead' lines are informational):")
    for ck in checks:
        tag = ck["result"] if ck["acceptance"] else f"({ck['result']})"
        p(f"  {tag:6s}  {ck['check']:38s}  {ck.get('detail', '')}")
    if meta.get("errors"):
        p()
        p("Errors:")
        for e in meta["errors"]:
            p(f"  {e}")
    if profile_text:
        p()
        p(profile_text)


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _lab.install_signal_cleanup()

    if not os.path.exists(args.fping):
        log(f"error: fping not found at {args.fping}")
        return 2
    if not args.fping_only:
        compile_package(args.python, REPO)  # bytecode, as `pip install` leaves it
        r = _lab._run([args.python, "-m", "wanmon", "--help"], cwd=REPO, timeout=60)
        if r.returncode != 0 or "check" not in r.stdout + r.stderr:
            log(f"error: `{args.python} -m wanmon --help` failed (rc {r.returncode}):\n"
                f"{(r.stderr or r.stdout).strip()[-800:]}\n"
                "(use --fping-only to measure fping alone)")
            return 2

    dead_pcts = [0.0] + ([args.dead_pct] if args.dead_pct > 0 else [])
    max_n = max(args.sizes)
    tmp = tempfile.mkdtemp(prefix="wmbench-", dir="/tmp")
    ns = _lab.Netns()
    cases: list[dict] = []
    errors: list[str] = []
    profile_text = None
    method = "?"
    try:
        log(f"creating network namespace {ns.name} (temp dir {tmp})")
        ns.create()
        # verify with the extreme addresses any case will use
        probe_targets = _lab.make_targets(max_n, max(dead_pcts))
        live_all = sorted((t.address for t in probe_targets if not t.dead),
                          key=lambda a: tuple(map(int, a.split("."))))
        dead_all = sorted((t.address for t in probe_targets if t.dead),
                          key=lambda a: tuple(map(int, a.split("."))))
        live_s = _lab._hosts(_lab.LIVE_NET, max_n)
        live_chk = sorted({live_s[0], live_s[-1], live_all[0], live_all[-1]})
        dead_chk = sorted({dead_all[0], dead_all[-1]}) if dead_all else [
            _lab._hosts(_lab.DEAD_NET, 1)[0]]
        for note in ns.verify(live_chk, dead_chk, args.fping):
            log(f"verified in {ns.name}: {note} ({', '.join(live_chk)} | {', '.join(dead_chk)})")
        helper = _lab.build_helper(tmp)
        if helper is None:
            log("warning: no C compiler: measuring `ip netns exec` directly; its ru_maxrss "
                "has this script's own peak RSS as a floor")
        runner = _lab.Runner(ns.name, helper)
        method = runner.method

        for n in args.sizes:
            for dp in dead_pcts:
                log(f"case: {n} targets, {dp:g}% dead")
                case = run_case(runner, ns, args, tmp, n, dp)
                cases.append(case)
                for tool, rs in case["runs"].items():
                    for i, r in enumerate(rs, 1):
                        if not r["ok"]:
                            errors.append(f"{n} targets/{case['dead']} dead, {tool} run {i}: "
                                          f"{r['error']}")
        if args.profile and not args.fping_only:
            log(f"profiling wanmon on {max_n} live targets ...")
            profile_text = profile_wanmon(runner, args, tmp, max_n, args.profile)
    except _lab.LabError as e:
        log(f"error: lab setup failed: {e}")
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        _lab.teardown(ns, tmp, args.keep_tmp)

    addrs_note = "<targets>"
    meta = {
        "netns": ns.name,
        "fping_version": _lab.fping_version(args.fping),
        "fping_cmd": f"{args.fping} -q -c {COUNT} -p {INTERVAL_MS} -i {FPING_I_MS} {addrs_note}",
        "wanmon_cmd": f"{args.python} -m wanmon --config FILE check --json",
        "kernel": f"Linux {platform.release()}",
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "sizes": args.sizes, "dead_pct": args.dead_pct, "repeat": args.repeat, "warmup": args.warmup,
        "mode": args.mode, "fping_only": args.fping_only, "measurement": method,
        "icmp": {"count": COUNT, "interval_ms": INTERVAL_MS,
                 "timeout_ms": args.wanmon_timeout_ms,
                 "rate_pps": RATE_PPS},
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "errors": errors,
    }
    checks = acceptance(cases, args.fping_only)
    if args.json:
        for c in cases:
            c.pop("config", None)
        json.dump({"meta": meta, "cases": cases, "acceptance": checks,
                   "profile": profile_text}, sys.stdout, indent=2)
        print()
    else:
        print_report(meta, cases, checks, profile_text)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
