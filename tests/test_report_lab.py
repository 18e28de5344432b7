"""`wanmon report` on a history made by real `wanmon check` runs (issue 13, acceptance 1).

Sites behind real ICMP in a tests/netns.py lab go down and come back between cron-style
checks (see test_alerts_integration.py for the lab); the agent also stops for longer
than 2 x icmp_interval_s once. The figures `wanmon report --format json` gives are
compared with the method computed here, independently, from the `ts` and statuses
that `check --json` printed: to 0.2 percentage point and 1 s."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from test_alerts_integration import base_sites, check, hosts, lab, site_toml, wm, write_config  # noqa: F401

INTERVAL_S = 1.0
CAP = 2 * INTERVAL_S


def expected(history: dict[str, list[tuple[float, str]]], start: float, end: float, cap: float = CAP) -> dict[str, dict]:
    """The README's method, written out plainly: each check's status holds until the next
    check's ts, at most cap; the last one until `end`, at most cap; cut to [start, end)."""
    out = {}
    for sid, seq in history.items():
        seq = sorted(seq)
        avail = down = unreach = 0.0
        for i, (ts, st) in enumerate(seq):
            nxt = seq[i + 1][0] if i + 1 < len(seq) else end
            a, b = max(ts, start), min(ts + min(nxt - ts, cap), end)
            if b <= a:
                continue
            if st in ("up", "degraded"):
                avail += b - a
            elif st == "down":
                down += b - a
            elif st == "unreachable":
                unreach += b - a
        out[sid] = {"available": avail, "down": down, "unreachable": unreach, "observed": avail + down + unreach}
    return out


def test_report_equals_the_method_on_real_checks(lab, hosts, tmp_path):  # noqa: F811
    d, c, e = hosts.new(), hosts.new(), hosts.new()
    sites = (base_sites(3)
             + site_toml("gia-binh", "UBND huyện Gia Bình", "district", d, district="Gia Bình", parent="core")
             + site_toml("gia-binh-dong-cuu", "UBND xã Đông Cứu", "commune", c, district="Gia Bình", parent="gia-binh")
             + site_toml("gia-binh-lang-ngam", "UBND xã Lãng Ngâm", "commune", e, district="Gia Bình", parent="core"))
    # checks back to back, 1 s apart: the agent's own traces of a new outage (a tail of up to
    # [trace] budget_s, tests/test_outage_*) would lengthen a check past the 2 s cap
    traces_off = "[trace]\non_outage = false\nrefresh_h = 0\n"
    cfg = write_config(tmp_path, None, sites, interval_s=INTERVAL_S, alerts="", timeout_ms=200, extra=traces_off)
    history: dict[str, list[tuple[float, str]]] = {}

    def run() -> None:
        out = json.loads(check(lab, cfg, "--json").stdout)
        for s in out:
            history.setdefault(s["id"], []).append((s["ts"], s["status"]))

    for _ in range(3):
        run()
    hosts.down(d, c)               # the district router down: its commune behind it silent too
    for _ in range(3):
        run()
    hosts.up(d, c)
    run()
    hosts.down(e)                  # a commune on its own
    run()
    run()
    time.sleep(CAP + 1.5)          # the agent stops for longer than the cap: unobserved
    hosts.up(e)
    for _ in range(3):
        run()

    statuses = {sid: [st for _, st in seq] for sid, seq in history.items()}
    assert "down" in statuses["gia-binh"] and "unreachable" in statuses["gia-binh-dong-cuu"]
    assert "down" in statuses["gia-binh-lang-ngam"]
    first = min(ts for seq in history.values() for ts, _ in seq)
    last = max(ts for seq in history.values() for ts, _ in seq)
    start, end = first, last + 1.0
    while time.time() <= end + 0.1:
        time.sleep(0.05)
    iso = lambda t: datetime.fromtimestamp(t, timezone.utc).isoformat()  # noqa: E731
    r = wm(lab, cfg, "report", "--from", iso(start), "--to", iso(end), "--format", "json", "--out", "-")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    exp = expected(history, start, end)

    for s in rep["sites"]:
        x = exp[s["id"]]
        assert s["downtime_s"] == pytest.approx(x["down"], abs=1.0), s
        assert s["unreachable_s"] == pytest.approx(x["unreachable"], abs=1.0), s
        assert s["availability_pct"] == pytest.approx(100 * x["available"] / x["observed"], abs=0.2), s
        assert s["unobserved_s"] == pytest.approx(end - start - x["observed"], abs=1.0), s
    by_id = {s["id"]: s for s in rep["sites"]}
    assert by_id["gia-binh"]["outages"] == 1 and by_id["gia-binh-lang-ngam"]["outages"] == 1
    # the stop (3.5 s between two checks' starts at least) was seen as unobserved beyond the cap, not as up
    assert by_id["gia-binh"]["unobserved_s"] >= 1.5 - 0.01

    def group(ids):
        av = sum(exp[i]["available"] for i in ids)
        ob = sum(exp[i]["observed"] for i in ids)
        return 100 * av / ob, sum(exp[i]["down"] for i in ids)

    levels = {lv["level"]: lv for lv in rep["levels"]}
    for lv in ("province", "district", "commune"):
        ids = [s["id"] for s in rep["sites"] if s["level"] == lv]
        pct, down = group(ids)
        assert levels[lv]["availability_pct"] == pytest.approx(pct, abs=0.2), lv
        assert levels[lv]["downtime_s"] == pytest.approx(down, abs=1.0), lv
    gb = next(x for x in rep["districts"] if x["district"] == "Gia Bình")
    pct, down = group([s["id"] for s in rep["sites"] if s["district"] == "Gia Bình"])
    assert gb["availability_pct"] == pytest.approx(pct, abs=0.2) and gb["downtime_s"] == pytest.approx(down, abs=1.0)
