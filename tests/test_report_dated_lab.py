"""`wanmon report --grouping then|now` on a history made by real `wanmon check` runs (issue 23,
acceptance 1, the report's side).

A commune behind real ICMP in a tests/netns.py lab moves from one district to another at an
instant written in sites.toml, while it is down. Each process runs under libfaketime at its chosen
instant (as test_account_lab.py: the clock injected, not slept for). `report --grouping then` must
give the first district the commune's time before the instant and the second its time after it;
`--grouping now` the second all of it; each within 0.5 percentage point and 1 s of the method
computed here from what `check --json` printed (test_report_lab.expected)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prereq  # noqa: E402
from test_alerts_integration import PY, base_sites, hosts, lab, site_toml, wm_env, write_config  # noqa: E402,F401
from test_report_lab import expected  # noqa: E402

FAKETIME = shutil.which("faketime")
INTERVAL_S = 10.0  # cap 20 s: the checks below come every 4 s (cadence under the interval)
SPACING_S = 4.0
CAP = 2 * INTERVAL_S
D1, D2 = "Huyện phụ 0", "Huyện phụ 1"  # base_sites' fill-0 and fill-1


def _at(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


@prereq.needs(FAKETIME is not None, "faketime (libfaketime)", prereq.FAKETIME)
def test_then_and_now_on_real_checks_across_a_move_while_down(lab, hosts, tmp_path):  # noqa: F811
    c = hosts.new()
    clock = [math.ceil(time.time() / 3600) * 3600 + 2 * 86400]  # two days ahead, on the hour
    move = clock[0] + 6.5 * SPACING_S  # between the 7th and the 8th check, while the commune is down
    commune = site_toml("xa-chuyen", "UBND xã Chuyển", "commune", c, district=D1, parent="fill-0") + (
        "\n  [[sites.changes]]\n"
        f"  at = {_iso(move)}\n"
        f'  district = "{D2}"\n'
        '  parent = "fill-1"\n'
        '  name = "Điểm cầu xã Chuyển (nay thuộc Huyện phụ 1)"\n'
    )
    cfg = write_config(tmp_path, None, base_sites(2) + commune, interval_s=INTERVAL_S, timeout_ms=500)

    def wm(*args: str) -> subprocess.CompletedProcess:
        return lab.run([*prereq.faketime("@" + _at(clock[0])), PY, "-m", "wanmon", "--config", str(cfg), *args],
                       cwd=cfg.parent, env=wm_env({"TZ": "UTC"}), timeout=60)

    history: dict[str, list[tuple[float, str]]] = {}

    def run(n: int) -> None:
        for _ in range(n):
            r = wm("check", "--json")
            assert r.returncode == 0, r.stderr[-3000:]
            for s in json.loads(r.stdout):
                history.setdefault(s["id"], []).append((s["ts"], s["status"]))
            clock[0] += SPACING_S

    run(3)
    hosts.down(c)
    run(8)                                     # down across the move
    hosts.up(c)
    run(3)

    seq = history["xa-chuyen"]
    assert [st for ts, st in seq if ts < move][-1] == "down" and next(st for ts, st in seq if ts > move) == "down"
    start = min(ts for s in history.values() for ts, _ in s)
    end = max(ts for s in history.values() for ts, _ in s) + 1.0
    clock[0] = end + 1.0

    def report(grouping: str) -> dict:
        r = wm("report", "--from", _iso(start), "--to", _iso(end), "--grouping", grouping, "--format", "json",
               "--out", "-")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    then, now = report("then"), report("now")
    assert (then["grouping"], now["grouping"]) == ("then", "now")
    before = expected(history, start, move, CAP)
    after = expected(history, move, end, CAP)
    whole = expected(history, start, end, CAP)
    assert before["xa-chuyen"]["down"] > SPACING_S and after["xa-chuyen"]["down"] > SPACING_S

    def close(row: dict, x: dict) -> None:
        assert row["downtime_s"] == pytest.approx(x["down"], abs=1.0), (row, x)
        assert row["available_s"] == pytest.approx(x["available"], abs=1.0), (row, x)
        assert row["unreachable_s"] == pytest.approx(x["unreachable"], abs=1.0), (row, x)
        if x["observed"]:
            assert row["availability_pct"] == pytest.approx(100 * x["available"] / x["observed"], abs=0.5), (row, x)

    # then: one row per stretch, under the keys of its time; now: one row under today's
    rows = sorted((s for s in then["sites"] if s["id"] == "xa-chuyen"), key=lambda s: s["from"])
    assert [(s["district"], s["from"], s["to"]) for s in rows] == [
        (D1, _iso(start), _iso(move)), (D2, _iso(move), _iso(end))]
    close(rows[0], before["xa-chuyen"])
    close(rows[1], after["xa-chuyen"])
    (one,) = (s for s in now["sites"] if s["id"] == "xa-chuyen")
    assert (one["district"], one["name"]) == (D2, "Điểm cầu xã Chuyển (nay thuộc Huyện phụ 1)")
    close(one, whole["xa-chuyen"])
    assert one["outages"] == 1 and [s["outages"] for s in rows] == [1, 1]
    assert len(then["notes"]) == 1 and "--grouping then" in then["notes"][0]

    def group(parts: list[tuple[dict, str]]) -> dict:
        return {k: sum(x[sid][k] for x, sid in parts) for k in ("available", "down", "unreachable", "observed")}

    want = {
        "then": {D1: group([(whole, "fill-0"), (before, "xa-chuyen")]), D2: group([(whole, "fill-1"), (after, "xa-chuyen")])},
        "now": {D1: group([(whole, "fill-0")]), D2: group([(whole, "fill-1"), (whole, "xa-chuyen")])},
    }
    for name, rep in (("then", then), ("now", now)):
        got = {d["district"]: d for d in rep["districts"]}
        assert list(got) == [D1, D2], name
        for d in (D1, D2):
            close(got[d], want[name][d])
    # the whole network is the same figure either way
    for k in ("availability_pct", "downtime_s", "observed_s"):
        assert then["total"][k] == pytest.approx(now["total"][k], abs=1e-6), k
