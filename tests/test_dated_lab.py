"""A commune moves from one district to another while it is down (issue 23, acceptance 1).

Real `wanmon check` runs in the lab (tests/netns.py; real ICMP to hosts that stop answering and
come back, tests/test_alerts_integration.py), each under libfaketime at its chosen instant, every
5 s of the fake clock ([schedule] icmp_interval_s = 5), as in test_account_lab.py. The commune
xa-x belongs to Gia Bình (parent huyen-gb) until X, a local midnight, and to Lương Tài (parent
huyen-lt), under a new name, from X on; it stops answering 13 s before X and answers again 17 s
after it.

What is expected is computed here from what the checks printed (`check --json`: each site's
status and its instant) by the README's method (tests/test_clock_back.py `_method`: a status
holds until the next check, at most the cap the report states), then compared with:

* `report --grouping then` (the default): Gia Bình gets xa-x's time before X, Lương Tài its time
  from X; `report --grouping now`: Lương Tài gets all of it. District figures within 0.5 pp and
  1 s, and xa-x's own rows by district within 1 s;
* the page the last check wrote (after X): xa-x in Lương Tài's group, not in Gia Bình's, with
  its old name and group shown ("trước DD/MM/YYYY: …, Gia Bình").
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import prereq
from test_account_lab import FAKETIME, _at
from test_alerts_integration import PY, Hosts, base_sites, lab, site_toml, wm_env, write_config  # noqa: F401
from test_clock_back import _method
from test_dated_agent import change

pytestmark = prereq.needs(FAKETIME is not None, "faketime (libfaketime)", prereq.FAKETIME)

TZ = ZoneInfo("Asia/Ho_Chi_Minh")  # [page] timezone by default
SPACING_S = 5
D1, D2 = "Gia Bình", "Lương Tài"
OLD_NAME, NEW_NAME = "UBND xã Xuân Lai", "Điểm cầu xã Xuân Lai (nay thuộc Lương Tài)"
UP_BEFORE, DOWN, UP_AFTER = 3, 6, 3  # checks: xa-x answers, then not, then again


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@pytest.fixture(scope="module")
def moved(lab, tmp_path_factory):  # noqa: F811
    """The lab's run: the checks' outputs, the instants, and `wm` to run wanmon at an instant."""
    tmp = tmp_path_factory.mktemp("dated-lab")
    hosts = Hosts(lab)
    gb, lt, xa = hosts.new(), hosts.new(), hosts.new()
    day = (datetime.now(TZ) + timedelta(days=2)).date()
    X = datetime(day.year, day.month, day.day, tzinfo=TZ).timestamp()
    sites = (base_sites(2)
             + site_toml("huyen-gb", "UBND huyện Gia Bình", "district", gb, district=D1, parent="core")
             + site_toml("huyen-lt", "UBND huyện Lương Tài", "district", lt, district=D2, parent="core")
             + site_toml("xa-x", OLD_NAME, "commune", xa, district=D1, parent="huyen-gb")
             + change(X, district=D2, parent="huyen-lt", name=NEW_NAME))
    cfg = write_config(tmp, None, sites, interval_s=SPACING_S, timeout_ms=500)

    def wm(at: float, *args: str) -> subprocess.CompletedProcess:
        r = lab.run([*prereq.faketime("@" + _at(at)), PY, "-m", "wanmon", "--config", str(cfg), *args],
                    cwd=cfg.parent, env=wm_env({"TZ": "UTC"}), timeout=60)
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    # the checks' clocks: X - 28 s, X - 23 s ...; xa-x down from the 4th (X - 13 s) to the 9th (X + 12 s)
    clocks = [X - 28 + SPACING_S * k for k in range(UP_BEFORE + DOWN + UP_AFTER)]
    outputs = []
    try:
        for k, at in enumerate(clocks):
            if k == UP_BEFORE:
                hosts.down(xa)
            if k == UP_BEFORE + DOWN:
                hosts.up(xa)
            outputs.append(json.loads(wm(at, "check", "--json").stdout))
    finally:
        hosts.close()
    history: dict[str, list[tuple[float, str]]] = {}
    for out in outputs:
        for s in out:
            history.setdefault(s["id"], []).append((s["ts"], s["status"]))
    start, end = clocks[0], clocks[-1] + SPACING_S
    return SimpleNamespace(cfg=cfg, wm=wm, X=X, start=start, end=end, outputs=outputs, history=history)


def _report(m, *grouping: str) -> dict:
    r = m.wm(m.end + 5, "report", "--from", iso(m.start), "--to", iso(m.end), *grouping,
             "--format", "json", "--out", "-")
    return json.loads(r.stdout)


def _expected(m, cap: float) -> dict[str, dict[str, dict[str, float]]]:
    """{grouping: {district: figures}} by the README's method on what the checks printed."""
    whole = _method(m.history, m.start, m.end, cap)
    before = _method(m.history, m.start, m.X, cap)["xa-x"]
    after = _method(m.history, m.X, m.end, cap)["xa-x"]

    def plus(*figs: dict[str, float]) -> dict[str, float]:
        return {k: sum(f[k] for f in figs) for k in figs[0]}

    return {
        "then": {D1: plus(whole["huyen-gb"], before), D2: plus(whole["huyen-lt"], after)},
        "now": {D1: whole["huyen-gb"], D2: plus(whole["huyen-lt"], whole["xa-x"])},
    }


def _assert_districts(rep: dict, want: dict[str, dict[str, float]]) -> None:
    got = {d["district"]: d for d in rep["districts"]}
    for name, f in want.items():
        g = got[name]
        pct = 100.0 * f["available"] / f["observed"]
        assert abs(g["availability_pct"] - pct) < 0.5, (name, g, f)
        assert abs(g["downtime_s"] - f["down"]) < 1.0, (name, g, f)
        assert abs(g["observed_s"] - f["observed"]) < 1.0, (name, g, f)


def _xa_by_district(rep: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in rep["sites"]:
        if r["id"] == "xa-x":
            out[r["district"]] = out.get(r["district"], 0.0) + r["downtime_s"]
    return out


# ---------------------------------------------------------------------------


def test_each_check_reports_the_keys_of_its_instant(moved):
    """The cycle's own view: before X the commune is Gia Bình's under its old name, from X
    Lương Tài's under its new one; it was down on both sides of X."""
    rows = [next(s for s in out if s["id"] == "xa-x") for out in moved.outputs]
    assert {(r["district"], r["name"]) for r in rows if r["ts"] < moved.X} == {(D1, OLD_NAME)}
    assert {(r["district"], r["name"]) for r in rows if r["ts"] >= moved.X} == {(D2, NEW_NAME)}
    down = [r["ts"] for r in rows if r["status"] == "down"]
    assert len(down) == DOWN and down[1] < moved.X <= down[-2], "not down for two checks on each side of X"
    assert all(r["status"] == "up" for out in moved.outputs for r in out if r["id"] != "xa-x")


def test_report_then_counts_each_stretch_under_the_district_of_its_time(moved):
    rep = _report(moved, "--grouping", "then")
    assert rep["grouping"] == "then"
    want = _expected(moved, rep["status_hold_cap_s"])["then"]
    _assert_districts(rep, want)
    xa = _xa_by_district(rep)
    before = _method(moved.history, moved.start, moved.X, rep["status_hold_cap_s"])["xa-x"]["down"]
    after = _method(moved.history, moved.X, moved.end, rep["status_hold_cap_s"])["xa-x"]["down"]
    assert before > SPACING_S and after > SPACING_S  # down on both sides of X
    assert set(xa) == {D1, D2} and abs(xa[D1] - before) < 1.0 and abs(xa[D2] - after) < 1.0, xa
    # the default is "then"
    default = _report(moved)
    assert default["grouping"] == "then" and default["districts"] == rep["districts"]


def test_report_now_counts_the_whole_period_under_todays_district(moved):
    rep = _report(moved, "--grouping", "now")
    assert rep["grouping"] == "now"
    want = _expected(moved, rep["status_hold_cap_s"])["now"]
    _assert_districts(rep, want)
    assert {d["district"]: d["availability_pct"] for d in rep["districts"]}[D1] == 100.0
    xa = _xa_by_district(rep)
    whole = _method(moved.history, moved.start, moved.end, rep["status_hold_cap_s"])["xa-x"]["down"]
    assert set(xa) == {D2} and abs(xa[D2] - whole) < 1.0, xa


def test_the_page_groups_it_under_its_district_of_today_with_its_old_group(moved):
    """index.html as the last check (after X) wrote it."""
    html = (moved.cfg.parent / "public" / "index.html").read_text(encoding="utf-8")
    first = html.index('<details class="group district"')
    groups = {}  # district -> its <details> (the district groups run up to the incidents' <h2>)
    for chunk in re.split(r'(?=<details class="group district")', html[first:].split("<h2>", 1)[0])[1:]:
        summary = re.search(r"<summary>(.*?)</summary>", chunk, re.S)
        assert summary, chunk[:300]
        name = next(d for d in (D1, D2, "Huyện phụ 0", "Huyện phụ 1") if f"{d} ·" in summary.group(1))
        groups[name] = chunk
    assert set(groups) == {D1, D2, "Huyện phụ 0", "Huyện phụ 1"}
    row = re.compile(r'<tr class="site[^"]*"[^>]*>(?:(?!</tr>).)*<span class="id">xa-x</span>(?:(?!</tr>).)*</tr>', re.S)
    assert not row.search(groups[D1]), "still shown in its former district"
    mine = row.search(groups[D2])
    assert mine, "not in its district of today"
    text = " ".join(re.sub(r"<[^>]+>", " ", mine.group(0)).split())  # the row as read, tags left out
    assert NEW_NAME in text
    # its past group where it matters: "trước <date of X>: <old name>, <old district>"
    when = datetime.fromtimestamp(moved.X, TZ).strftime("%d/%m/%Y")
    note = re.search(rf"trước {re.escape(when)}:? (.{{0,120}})", text)
    assert note, text
    assert OLD_NAME in note.group(1) and D1 in note.group(1), note.group(0)
