#!/usr/bin/env python3
"""Upgrade benchmark (issue 20): what the first `wanmon check` after an upgrade costs.

A store of schema 4 (what wanmon 5758b19 wrote: no status runs) for the shipped 177-site
sites.toml, filled as `retention_raw_days` (35 by default) of 1-minute cycles leave it: raw
samples, hourly rollups, site_state, cycles. Each site has down stretches (97 minutes every
~14 days, staggered), so the rebuilt history has runs to write. Filled by SQL in one go
(recursive CTE): writing 8.9 million samples through the old code would take days.

Then, each as cron runs it, measured by bench/_measure.py's helper (wall, CPU, peak RSS):

    python -m wanmon --config FILE store backup DEST      # on the old store, as it is
    python -m wanmon --config FILE store check
    python -m wanmon --config FILE check                  # backup, migrate 4 -> 11, rebuild runs, a cycle
    python -m wanmon --config FILE check                  # an ordinary cycle, for comparison

ICMP goes to the shipped config's loopback addresses only. Run as root (raw ICMP):

    sudo .venv/bin/python bench/upgrade.py [--days 35]
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import sys
import tempfile
import time
import tomllib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _measure import REPO, Runner, build_helper, default_python, log  # noqa: E402

sys.path.insert(0, REPO)
from wanmon.store import APPLICATION_ID, MIGRATIONS, _split_sql  # noqa: E402

OLD_SCHEMA = 4


def old_store(path: str, site_ids: list[str], days: int, now: float) -> int:
    """A schema-4 store with `days` of 1-minute cycles ending at now. Returns the samples written."""
    c = sqlite3.connect(path, isolation_level=None)
    c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("BEGIN")
    for script in MIGRATIONS[:OLD_SCHEMA]:
        for stmt in _split_sql(script):
            c.execute(stmt)
    c.execute(f"PRAGMA user_version = {OLD_SCHEMA}")
    c.execute("CREATE TEMP TABLE s (k INTEGER PRIMARY KEY, id TEXT)")
    c.executemany("INSERT INTO s VALUES (?, ?)", enumerate(site_ids))
    n = days * 1440
    first = now - now % 60 - n * 60
    c.execute("""WITH RECURSIVE cyc(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM cyc WHERE i < ?)
                 INSERT INTO cycles (id, started_at, finished_at, duration_ms, sites, up, degraded, down, unreachable,
                                     unknown)
                 SELECT i, ? + 60 * i, ? + 60 * i + 1, 1000, ?, ?, 0, 0, 0, 0 FROM cyc""",
              (n, first, first, len(site_ids), len(site_ids)))
    c.execute("""INSERT INTO icmp_samples (cycle_id, site_id, ts, status, reason, sent, received, loss_pct,
                                           rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms)
                 SELECT cid, sid, ts, st, CASE st WHEN 'down' THEN 'no reply' END, 3,
                        CASE st WHEN 'down' THEN 0 ELSE 3 END, CASE st WHEN 'down' THEN 100.0 ELSE 0.0 END,
                        0.04, 0.05, 0.06, 0.01
                 FROM (SELECT y.id AS cid, s.id AS sid, y.started_at AS ts,
                              CASE WHEN ((y.id + s.k * 577) / 97) % 211 = 0 THEN 'down' ELSE 'up' END AS st
                       FROM cycles y CROSS JOIN s)""")
    c.execute("""INSERT INTO icmp_hourly (site_id, hour, samples, reachable, sent, received, rtt_sum_ms, rtt_n,
                                          rtt_min_ms, rtt_max_ms)
                 SELECT site_id, ts - ts % 3600, count(*), sum(status = 'up'), sum(sent), sum(received),
                        sum(received * rtt_avg_ms), sum(received), min(rtt_min_ms), max(rtt_max_ms)
                 FROM icmp_samples GROUP BY site_id, ts - ts % 3600""")
    last = c.execute("SELECT max(id), max(started_at) FROM cycles").fetchone()
    c.execute("""INSERT INTO site_state (site_id, name, level, district, address, status, since, last_ts,
                                         last_cycle_id, consecutive_failures)
                 SELECT site_id, site_id, 'commune', NULL, '127.0.0.1', status, ts, ts, ?, 0
                 FROM icmp_samples WHERE ts = ?""", last)
    c.execute("COMMIT")
    samples = c.execute("SELECT count(*) FROM icmp_samples").fetchone()[0]
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=35, help="days of raw samples in the old store (default 35)")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="wanmon-upgrade-bench-")
    cfg = os.path.join(work, "sites.toml")
    text = open(os.path.join(REPO, "sites.toml"), encoding="utf-8").read()
    with open(cfg, "w", encoding="utf-8") as f:
        f.write(text)
    ids = [s["id"] for s in tomllib.loads(text)["sites"]]
    os.makedirs(os.path.join(work, "var"), mode=0o700)
    db = os.path.join(work, "var", "wanmon.db")
    t0 = time.monotonic()
    samples = old_store(db, ids, args.days, time.time() - 60)
    log(f"old store: {len(ids)} sites, {args.days} days, {samples:,} samples, "
        f"{os.path.getsize(db) / 2**20:.0f} MiB, filled in {time.monotonic() - t0:.0f} s")
    runner = Runner(None, build_helper(work))
    py = default_python()
    env = {**os.environ, "PYTHONPATH": REPO}
    steps = [("store backup (old schema)", ["store", "backup", os.path.join(work, "copy.db")]),
             ("store check (old schema)", ["store", "check"]),
             ("check: upgrade", ["check"]),
             ("check: next cycle", ["check"])]
    print(f"{'step':28} {'rc':>3} {'wall s':>8} {'cpu s':>8} {'peak MiB':>9}")
    for name, argv in steps:
        out = os.path.join(work, re.sub(r"\W+", "_", name))
        r = runner.run([py, "-m", "wanmon", "--config", cfg, *argv], stdout_path=out + ".out",
                       stderr_path=out + ".err", timeout_s=3600, cwd=work, env=env)
        print(f"{name:28} {r.rc:>3} {r.wall_s:8.2f} {r.cpu_s:8.2f} {r.maxrss_kib / 1024:9.0f}")
        if r.rc != 0:
            log(open(out + ".err", encoding="utf-8").read())
    c = sqlite3.connect(db)
    runs = c.execute("SELECT count(*) FROM status_runs").fetchone()[0]
    c.close()
    log(f"status runs rebuilt: {runs:,}; files in {work} (delete when done)")


if __name__ == "__main__":
    main()
