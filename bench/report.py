#!/usr/bin/env python3
"""Report benchmark: `wanmon report` in every format on long histories (issue 13).

Cases (default): the shipped 177-site sites.toml with 1 year of history, and a
generated 10,000-site inventory (bench/render.py's) with 1 month. Each case's
store is created by `Store.open` (the real schema) and filled with what a year
(or month) of 1-minute cycles leaves in it for the report: the status runs
(`status_runs`, and the open run in `site_state`), written with executemany.
Writing 92 million (or 432 million) cycles through `record_cycle` would take
days; the report reads only the runs, so the runs are what is generated, the
way record_cycle lays them out (one row per change of status, of maintenance,
or gap longer than the cap). Deterministic (seeded) history per site and month:

  * 2 own outages of 1 to 180 minutes; communes behind a down district are
    unreachable meanwhile;
  * 2 % of sites flap: 150 down/up changes of 1 to 5 minutes in a month;
  * one agent stop of 20 minutes a month (unobserved, every site);
  * one 2-hour maintenance window a month on 1 % of sites.

Then, for each format, as cron would run it:

    python -m wanmon --config FILE report --from START --to END --format F --out FILE

as a child process: wall time, CPU and peak RSS (wait4 rusage, through
bench/_measure.py's helper), output size. Goals (issue 13): 177 sites x 1 year
json/csv <= 2 s, pdf <= 10 s; 10,000 sites x 1 month <= 30 s, <= 300 MB.

Long names (issue 22): on the 177-site case, the PDF again with one site (tien-du,
on the first page's worst list) renamed to --long-name characters without a space
(5,000 by default; the HTML and PDF cap it at wanmon.report.NAME_CAP), on the same
store; printed as the ratio of its time to the normal PDF's. Goal: <= 2 (it was 44:
175 s against 4 s). No network is used at all.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _measure as M  # noqa: E402
from render import generated_config, shipped_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
CAP = 120.0
GOALS = {("177", "json"): 2.0, ("177", "csv"): 2.0, ("177", "html"): None, ("177", "pdf"): 10.0}
RSS_GOAL_MB = 300.0


def month_starts(end: datetime, months: int) -> list[datetime]:
    out = []
    y, m = end.year, end.month
    for _ in range(months + 1):
        out.append(datetime(y, m, 1, tzinfo=TZ))
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return sorted(out)


def build(cfg_path: Path, months: int, seed: int) -> dict:
    """Fill the store with `months` calendar months of runs, ending with the last full month."""
    from wanmon.config import load
    from wanmon.store import Store

    t0 = time.perf_counter()
    cfg = load(cfg_path)
    now = datetime.now(TZ)
    bounds = month_starts(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0), months)
    start, end = bounds[0].timestamp(), bounds[-1].timestamp()
    rnd = random.Random(seed)
    sites = list(cfg.sites)
    children: dict[str, list[str]] = {}
    for s in sites:
        if s.parent:
            children.setdefault(s.parent, []).append(s.id)
    # per month: the agent's stop, and each site's events [(from, to, status, maint)]
    events: dict[str, list[tuple[float, float, str, int]]] = {s.id: [] for s in sites}
    for a, b in zip(bounds, bounds[1:]):
        a, b = a.timestamp(), b.timestamp()
        stop = a + rnd.random() * (b - a - 3600)
        for s in sites:
            events[s.id].append((stop, stop + 1200, "gap", 0))
        for s in sites:
            for _ in range(2):
                t = a + rnd.random() * (b - a - 3 * 3600)
                d = 60 * rnd.randint(1, 180)
                events[s.id].append((t, t + d, "down", 0))
                for c in children.get(s.id, []):
                    events[c].append((t, t + d, "unreachable", 0))
            if rnd.random() < 0.02:
                t = a
                for _ in range(150):
                    t += 60 * rnd.randint(60, 240)
                    d = 60 * rnd.randint(1, 5)
                    if t + d < b:
                        events[s.id].append((t, t + d, "down", 0))
            if rnd.random() < 0.01:
                t = a + rnd.random() * (b - a - 3 * 3600)
                events[s.id].append((t, t + 7200, "up", 1))
    runs = []
    states = []
    for s in sites:
        # minute-aligned timeline: up, except the events (later ones win where they overlap)
        ev = sorted((round((x - start) / 60), round((y - start) / 60), st, m) for x, y, st, m in events[s.id])
        cur, t = ("up", 0), 0
        seg_start = 0
        marks = []
        for x, y, st, m in ev:
            if x < t:
                continue
            marks.append((x, st, m))
            marks.append((y, "up", 0))
            t = y
        total = round((end - start) / 60)
        for x, st, m in marks + [(total, None, 0)]:
            x = min(x, total)
            if x > seg_start and cur[0] != "gap":
                runs.append((s.id, cur[0], cur[1], start + 60 * seg_start, start + 60 * x))
            if st is None:
                break
            cur, seg_start = (st, m), x
        # the open run: up since the last segment, last cycle a minute before the end
        states.append((s.id, s.name, s.level, s.district, s.address, "up", end - 60, end - 60, 1, 0, end - 60,
                       0.0, 1.0, 0.0, None, end - 60, 0))
    store = Store.open(cfg.store_path)
    try:
        with store.transaction():
            store.conn.executemany("INSERT INTO status_runs (site_id, status, maint, start_ts, end_ts) "
                                   "VALUES (?,?,?,?,?)", runs)
            store.conn.executemany(
                "INSERT OR REPLACE INTO site_state (site_id, name, level, district, address, status, since, last_ts,"
                " last_cycle_id, consecutive_failures, last_reachable_ts, loss_pct, rtt_avg_ms, jitter_ms, reason,"
                " run_start, run_maint) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", states)
    finally:
        store.close()
    return {"runs": len(runs), "from": bounds[0].isoformat(), "to": bounds[-1].isoformat(),
            "build_s": time.perf_counter() - t0, "store_mib": cfg.store_path.stat().st_size / 2**20}


LONG_NAME_GOAL = 2.0  # the long-name PDF's time over the normal PDF's
DATED_GOAL = 1.2  # issue 23: a dated inventory (a change for every site) against "today" (M.ISSUE23_TODAY)


def long_name_config(cfg: Path, chars: int, site: str = "tien-du") -> Path:
    """A copy of cfg beside it (so the same store) with one site's name `chars` characters long,
    one word (the hardest case for line breaking)."""
    lines = cfg.read_text(encoding="utf-8").splitlines()
    i = lines.index(f'id = "{site}"')
    j = next(k for k in range(i, i + 10) if lines[k].startswith("name = "))
    lines[j] = 'name = "' + ("UBND" + "Ả" * chars)[:chars] + '"'
    out = cfg.with_name("sites-long-name.toml")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Time `wanmon report` in every format on long histories.")
    p.add_argument("--cases", default="177:12,10000:1",
                   help="SITES:MONTHS pairs; 177 = the shipped sites.toml (default: %(default)s)")
    p.add_argument("--formats", default="json,csv,html,pdf")
    p.add_argument("--repeat", type=int, default=1, help="runs per format; the table shows medians")
    p.add_argument("--long-name", type=int, default=5000, metavar="CHARS",
                   help="the 177-site PDF again with a name this long (0: skip; default: %(default)s)")
    p.add_argument("--dated", action="store_true",
                   help="a dated inventory (generated sizes only): every site has a change in the middle of the "
                        "reported months, a commune moved to another district and renamed (bench/render.py); the "
                        "report (default --grouping then) splits every site's row there")
    p.add_argument("--today", default=M.ISSUE23_TODAY, metavar="REV",
                   help="with --dated: also run the same sites undated with wanmon as it was at this git revision "
                        "(its own store, built by its code with the same seed), in turn: issue 23's \"today\", the "
                        "tree it was filed on (default: %(default)s; '' to skip)")
    p.add_argument("--python", default=M.default_python())
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--keep-tmp", action="store_true")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="wanmon-report-bench-"))
    results = []
    undated_of: dict[str, Path] = {}  # --dated: a dated file -> the same sites undated, on its store
    pairs = []  # --dated: per format, the dated and the undated runs taken in turn
    today_of: dict[str, Path] = {}  # --dated: a dated file -> the same sites undated for --today's tree
    env_today: dict[str, str] | None = None
    try:
        M.compile_package(args.python, REPO)
        runner = M.Runner(None, M.build_helper(str(tmp)))
        generated = any(not c.startswith("177:") for c in args.cases.split(","))  # --dated compares these
        tree = M.git_tree(args.today, str(tmp / "today"), args.python) if args.dated and args.today and generated else None
        if tree is not None:
            env_today = {**os.environ, "PYTHONPATH": tree}
        for case in args.cases.split(","):
            n, months = (int(x) for x in case.split(":"))
            work = tmp / f"n{n}-m{months}"
            work.mkdir()
            if args.dated and n != 177:
                now = datetime.now(TZ)
                bounds = month_starts(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0), months)
                mid = (bounds[0].timestamp() + bounds[-1].timestamp()) / 2
                cfg = generated_config(work, n, dated=True, at_ts=mid)
                # the same sites without their changes, on the same store: run in turn with the dated
                # file, each repeat (a busy host slows both alike), for the dated / undated ratio
                (work / "undated").mkdir()
                plain = generated_config(work / "undated", n)
                plain.write_text(plain.read_text(encoding="utf-8").replace(
                    'path = "var/wanmon.db"', f'path = "{(work / "var" / "wanmon.db").as_posix()}"', 1),
                    encoding="utf-8")
                undated_of[str(cfg)] = plain
                if tree is not None:  # the same sites undated, run by the tree of "today" on its own store
                    (work / "today").mkdir()
                    old = generated_config(work / "today", n)
                    old.write_text(old.read_text(encoding="utf-8").replace(
                        'path = "var/wanmon.db"', f'path = "{(work / "today" / "var" / "wanmon.db").as_posix()}"', 1),
                        encoding="utf-8")
                    M.log(f"{n} sites x {months} month(s): building the store of {args.today}'s tree ...")
                    M.build_with(args.python, tree, "report", "build", old, months, 20261202 + n)
                    today_of[str(cfg)] = old
            else:
                cfg = shipped_config(work) if n == 177 else generated_config(work, n)
            M.log(f"{n} sites x {months} month(s): building the store ...")
            info = build(cfg, months, seed=20261202 + n)
            M.log(f"  {info['runs']:,} status runs, {info['store_mib']:.0f} MiB, built in {info['build_s']:.1f} s")
            fmts = args.formats.split(",")
            if n == 177 and "pdf" in fmts and args.long_name:
                fmts.append("pdf-long-name")
            for fmt in fmts:
                runs = []
                conf, ext = cfg, fmt
                if fmt == "pdf-long-name":
                    conf, ext = long_name_config(cfg, args.long_name), "pdf"
                plain = undated_of.get(str(conf))
                old = today_of.get(str(conf))
                plain_runs = []
                old_runs = []

                def one(conf: Path, tag: str, k: int, env: dict[str, str] | None = None) -> dict:
                    out = work / f"report-{tag}{k}-{fmt}.{ext}"
                    rr = runner.run([args.python, "-m", "wanmon", "--config", str(conf), "report", "--from",
                                     info["from"], "--to", info["to"], "--format", ext, "--out", str(out)],
                                    stdout_path=str(work / f"{tag}{fmt}-{k}.out"),
                                    stderr_path=str(work / f"{tag}{fmt}-{k}.err"), timeout_s=1800, cwd=str(work),
                                    env=env)
                    if rr.rc != 0 or rr.timed_out:
                        err = Path(rr.stderr_path).read_text(errors="replace")[-1500:]
                        raise M.LabError(f"wanmon report --format {fmt} failed (rc={rr.rc}): {err}")
                    return {"wall_s": rr.wall_s, "cpu_s": rr.cpu_s, "rss_mib": rr.maxrss_kib / 1024,
                            "bytes": out.stat().st_size}

                if plain is not None:  # each file's first run parses it and fills the TOML cache: not timed
                    one(conf, "warm-", 0)
                    one(plain, "warm-undated-", 0)
                if old is not None:
                    one(old, "warm-today-", 0, env_today)
                for k in range(args.repeat):
                    runs.append(one(conf, "", k))
                    if plain is not None:
                        plain_runs.append(one(plain, "undated-", k))
                    if old is not None:
                        old_runs.append(one(old, "today-", k, env_today))
                med = {k: M.median_or_none([r[k] for r in runs]) for k in runs[0]}
                results.append({"sites": n, "months": months, "format": fmt, "runs": info["runs"], **med})
                if plain_runs:
                    pm = {k: M.median_or_none([r[k] for r in plain_runs]) for k in plain_runs[0]}
                    pairs.append({"sites": n, "months": months, "format": fmt, "dated": med, "undated": pm,
                                  "ratio": med["wall_s"] / pm["wall_s"]})
                    if old_runs:
                        om = {k: M.median_or_none([r[k] for r in old_runs]) for k in old_runs[0]}
                        pairs[-1].update(today=om, today_rev=args.today, ratio_today=med["wall_s"] / om["wall_s"])
                M.log(f"  {fmt}: {med['wall_s']:.2f} s, {med['rss_mib']:.0f} MiB, {med['bytes'] / 1024:.0f} KiB")
    finally:
        if args.keep_tmp:
            M.log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    ratios = []
    for r in results:
        if r["format"] == "pdf-long-name":
            base = next(x for x in results if x["sites"] == r["sites"] and x["months"] == r["months"]
                        and x["format"] == "pdf")
            ratios.append({"sites": r["sites"], "months": r["months"], "long_name_chars": args.long_name,
                           "ratio": r["wall_s"] / base["wall_s"], "long_s": r["wall_s"], "normal_s": base["wall_s"]})
    if args.json:
        print(json.dumps({"results": results, "long_name": ratios, "dated_vs_undated": pairs}, indent=1))
        return 0
    print(f"wanmon report: {datetime.now():%Y-%m-%d %H:%M}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
          f"medians of {args.repeat}")
    print(f"{'sites':>6} {'months':>6} {'runs':>9} {'format':>13} {'wall s':>7} {'CPU s':>6} {'RSS MiB':>8} {'KiB':>8}  goal")
    for r in results:
        if r["sites"] == 177 and r["months"] == 12:
            g = GOALS.get(("177", r["format"]))
            goal = "-" if g is None else ("PASS" if r["wall_s"] <= g else "FAIL") + f" (<= {g:g} s)"
        elif r["sites"] == 10000 and r["months"] == 1:
            ok = r["wall_s"] <= 30 and r["rss_mib"] * 1.048576 <= RSS_GOAL_MB
            goal = ("PASS" if ok else "FAIL") + " (<= 30 s, <= 300 MB)"
        else:
            goal = "-"
        print(f"{r['sites']:>6} {r['months']:>6} {r['runs']:>9,} {r['format']:>13} {r['wall_s']:>7.2f} "
              f"{r['cpu_s']:>6.2f} {r['rss_mib']:>8.1f} {r['bytes'] / 1024:>8.0f}  {goal}")
    if pairs:
        print(f"a dated inventory (every site changes mid-period: --grouping then writes two rows a site) against "
              f"the same sites undated, in turn, medians of {args.repeat}; issue 23's goal: <= {DATED_GOAL:g}x "
              f"\"today\", the tree it was filed on (bench/README.md, 'A dated inventory'):")
        for x in pairs:
            d, u = x["dated"], x["undated"]
            print(f"  {x['sites']} sites x {x['months']} month(s) {x['format']:>5}: dated {d['wall_s']:.2f} s "
                  f"(CPU {d['cpu_s']:.2f}, {d['bytes'] / 1024:.0f} KiB)")
            if "today" in x:
                t = x["today"]
                verdict = "PASS" if x["ratio_today"] <= DATED_GOAL else "FAIL"
                print(f"      {x['today_rev']} (today), undated: {t['wall_s']:.2f} s (CPU {t['cpu_s']:.2f}, "
                      f"{t['bytes'] / 1024:.0f} KiB): ratio {x['ratio_today']:.2f}  {verdict}")
            print(f"      this tree, undated:     {u['wall_s']:.2f} s (CPU {u['cpu_s']:.2f}, {u['bytes'] / 1024:.0f} "
                  f"KiB): ratio {x['ratio']:.2f}")
    for x in ratios:
        verdict = "PASS" if x["ratio"] <= LONG_NAME_GOAL else "FAIL"
        print(f"pdf with a {x['long_name_chars']:,}-character name, {x['sites']} sites x {x['months']} month(s): "
              f"{x['long_s']:.2f} s vs {x['normal_s']:.2f} s: ratio {x['ratio']:.2f}  "
              f"{verdict} (<= {LONG_NAME_GOAL:g})")
    return 0


if __name__ == "__main__":
    M.install_signal_cleanup()
    sys.exit(main())
