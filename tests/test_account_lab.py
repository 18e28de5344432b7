"""One account (issue 20, acceptance 2): the page and the report tell the same figure.

A history of real `wanmon check` runs in the lab (tests/netns.py: real ICMP to hosts that
go down and come back), as cron slower than `[schedule] icmp_interval_s` runs them (the
interval says 10 s, the checks come every 25 s): a district router down with its commune
unreachable behind it, a site down inside a maintenance window, and a gap (the agent stopped
for longer than the cap). Each process runs under libfaketime at its chosen instant (the
clock injected, not slept for: no race with a busy machine). Then the page (status.json) and
`wanmon report --from <page time - 30 d> --to <page time>` must agree for every site,
district and level to 0.01 percentage point, and the district's continuous outage is one
outage although the checks came further apart than twice the interval.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prereq  # noqa: E402
from test_alerts_integration import PY, base_sites, hosts, lab, site_toml, wm_env, write_config  # noqa: E402,F401

FAKETIME = shutil.which("faketime")
SPACING_S = 25.0  # cron slower than the 10 s interval
GAP_S = 200.0  # the agent stopped: longer than the cap (2 x the real cadence, 50 s)


def _at(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@prereq.needs(FAKETIME is not None, "faketime (libfaketime)", prereq.FAKETIME)
def test_page_and_report_tell_the_same_figures(lab, hosts, tmp_path):  # noqa: F811
    d, c, e = hosts.new(), hosts.new(), hosts.new()
    sites = (base_sites(2)
             + site_toml("gia-binh", "UBND huyện Gia Bình", "district", d, district="Gia Bình", parent="core")
             + site_toml("gia-binh-dong-cuu", "UBND xã Đông Cứu", "commune", c, district="Gia Bình", parent="gia-binh")
             + site_toml("que-vo", "UBND huyện Quế Võ", "district", e, district="Quế Võ", parent="core"))
    cfg = write_config(tmp_path, None, sites, interval_s=10, timeout_ms=500)
    plain = cfg.read_text(encoding="utf-8")
    clock = [math.ceil(time.time() / 3600) * 3600 + 2 * 86400]  # two days ahead, on the hour

    def wm(*args: str) -> subprocess.CompletedProcess:
        return lab.run([*prereq.faketime("@" + _at(clock[0])), PY, "-m", "wanmon", "--config", str(cfg), *args],
                       cwd=cfg.parent, env=wm_env({"TZ": "UTC"}), timeout=60)

    def run(n: int) -> None:
        for _ in range(n):
            r = wm("check")
            assert r.returncode == 0, r.stderr[-3000:]
            clock[0] += SPACING_S

    run(3)
    hosts.down(d, c)                    # the district router down, its commune unreachable behind it
    run(4)
    hosts.up(d, c)
    run(2)
    # que-vo goes down inside a maintenance window: not downtime, time apart
    day = datetime.fromtimestamp(clock[0] - 86400, timezone.utc).strftime("%Y-%m-%dT%H:%M")
    end = datetime.fromtimestamp(clock[0] + 86400, timezone.utc).strftime("%Y-%m-%dT%H:%M")
    window = f'[[maintenance]]\nsites = ["que-vo"]\nstart = "{day}"\nend = "{end}"\nreason = "test"\n\n'
    cfg.write_text(window + plain, encoding="utf-8")
    hosts.down(e)
    run(3)
    hosts.up(e)
    cfg.write_text(plain, encoding="utf-8")
    run(2)
    clock[0] += GAP_S                   # the agent stopped: unobserved, not down
    run(3)

    out = tmp_path / "page"
    r = wm("render", "--out", str(out))
    assert r.returncode == 0, r.stderr
    snap = json.loads((out / "status.json").read_text(encoding="utf-8"))
    t = snap["generated_at"]
    iso = lambda x: datetime.fromtimestamp(x, timezone.utc).isoformat()  # noqa: E731
    r = wm("report", "--from", iso(t - 30 * 86400), "--to", iso(t), "--format", "json", "--out", "-")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)

    by_id = {s["id"]: s for s in rep["sites"]}
    assert set(snap["sites"]) <= set(by_id)
    for sid, s in snap["sites"].items():
        page, report = s["availability"]["30d"], by_id[sid]["availability_pct"]
        assert (page is None) == (report is None), sid
        if page is not None:
            assert abs(page - report) < 0.01, (sid, page, report)
    for g in snap["districts"]:
        report = next(x for x in rep["districts"] if x["district"] == g["name"])["availability_pct"]
        assert abs(g["availability"]["30d"] - report) < 0.01, (g["name"], g["availability"]["30d"], report)
    for lv in rep["levels"]:
        page = snap["levels"][lv["level"]]["30d"]
        assert (page is None) == (lv["availability_pct"] is None), lv["level"]
        if page is not None:
            assert abs(page - lv["availability_pct"]) < 0.01, (lv["level"], page, lv["availability_pct"])

    gb, commune, qv = by_id["gia-binh"], by_id["gia-binh-dong-cuu"], by_id["que-vo"]
    assert gb["outages"] == 1, gb              # one continuous outage, though checks came > 2 x interval apart
    assert gb["downtime_s"] > 3 * SPACING_S - 1 and gb["availability_pct"] < 100
    assert commune["unreachable_s"] > 3 * SPACING_S - 1 and commune["downtime_s"] == 0
    assert qv["downtime_s"] == 0 and qv["maintenance_s"] > SPACING_S and qv["availability_pct"] == 100
    assert gb["unobserved_s"] > GAP_S - 2 * SPACING_S   # the stop is unobserved, not down
    # cron slower than the interval is said, with the fix
    st = json.loads(wm("status", "--json").stdout)
    assert st["slow_cadence"] and "icmp_interval_s" in st["slow_cadence"]
    assert rep["notes"] and "icmp_interval_s" in rep["notes"][0]
    assert snap["slow_cadence"]
