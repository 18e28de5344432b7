"""`wanmon report`: the accounting method against hand computations on known histories
(written through the real store, cycle by cycle), the period arguments, the formats
(JSON shape, CSV with BOM and no formula injection, HTML inert, PDF read back by
poppler's pdftotext), and bad input."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from bs4 import BeautifulSoup

from conftest import wanmon
from wanmon import report as rp
from wanmon.config import load
from wanmon.model import Observation
from wanmon.store import Store
from wanmon.words import REPORT

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
CAP = 120.0  # 2 x icmp_interval_s = 60

CONFIG = """\
[store]
path = "var/wanmon.db"

[schedule]
icmp_interval_s = 60

[report]
target_pct = 99.5

[snmp]
enabled = false

[[sites]]
id = "core"
name = "Trung tâm dữ liệu"
level = "province"
address = "127.0.0.1"

[[sites]]
id = "d1"
name = "UBND huyện Gia Bình"
level = "district"
district = "Gia Bình"
parent = "core"
address = "127.0.0.2"

[[sites]]
id = "c1"
name = "UBND xã Đông Cứu"
level = "commune"
district = "Gia Bình"
parent = "d1"
address = "127.0.0.3"

[[sites]]
id = "c2"
name = "UBND xã Lãng Ngâm"
level = "commune"
district = "Gia Bình"
parent = "d1"
address = "127.0.0.4"
"""

T0 = datetime(2026, 10, 31, 23, 50, tzinfo=TZ).timestamp()  # ten minutes before November (local)


@pytest.fixture
def setup(tmp_path):
    p = tmp_path / "sites.toml"
    p.write_text(CONFIG, encoding="utf-8")
    cfg = load(p)
    store = Store.open(cfg.store_path)
    yield cfg, store
    store.close()


def _obs(cfg, sid: str, ts: float, status: str) -> Observation:
    s = next(x for x in cfg.sites if x.id == sid)
    up = status in ("up", "degraded")
    return Observation(sid, s.name, s.level, s.district, s.address, ts, status, None, 3 if status != "unknown" else 0,
                       3 if up else 0, 0.0 if up else 100.0, 1.0 if up else None, 1.0 if up else None,
                       1.0 if up else None, 0.0 if up else None)


def record(cfg, store, history: dict[float, dict[str, str]], maint: dict[float, set] | None = None) -> None:
    """history: {cycle ts: {site: status}}, one record_cycle per ts, as the cycle does."""
    for ts in sorted(history):
        obs = [_obs(cfg, sid, ts, st) for sid, st in history[ts].items()]
        store.record_cycle(ts, ts + 1, obs, maintenance=(maint or {}).get(ts, set()), run_cap_s=CAP)


def period(a: float, b: float) -> rp.Period:
    return rp.Period(datetime.fromtimestamp(a, TZ), datetime.fromtimestamp(b, TZ), "range", "test")


def build(cfg, store, a: float, b: float, now: float) -> rp.Report:
    return rp.compute(cfg, store.status_runs(a - (b - a), b, now, CAP), store.site_labels(), period(a, b),
                      rp.previous(period(a, b)), now, CAP)


def site(rep: rp.Report, sid: str) -> rp.Figures:
    return next(r.figures for r in rep.sites if r.id == sid)


def every(ts_list, status="up", sites=("core", "d1", "c1", "c2")):
    return {t: {s: status for s in sites} for t in ts_list}


# -- the method, by hand -----------------------------------------------------------

def test_a_gap_longer_than_the_cap_is_unobserved_and_the_open_run_holds_until_now(setup):
    cfg, store = setup
    h = {T0 + 0: {"core": "up"}, T0 + 60: {"core": "up"}, T0 + 120: {"core": "up"},
         # the agent stopped for 8 minutes
         T0 + 600: {"core": "up"}, T0 + 660: {"core": "down"}, T0 + 720: {"core": "down"}, T0 + 780: {"core": "up"}}
    record(cfg, store, h)
    rep = build(cfg, store, T0, T0 + 840, now=T0 + 840)
    f = site(rep, "core")
    # up 0..120 held to 120+cap=240; up 600 held 60; down 660..780 = 120; up 780 held until now (60)
    assert f.available_s == pytest.approx(240 + 60 + 60)
    assert f.down_s == pytest.approx(120)
    assert f.observed_s == pytest.approx(480)
    assert f.unobserved_s == pytest.approx(840 - 480)
    assert f.availability_pct == pytest.approx(75.0)
    assert (f.outages, f.longest_outage_s, f.mttr_s) == (1, pytest.approx(120), pytest.approx(120))


def test_maintenance_is_excluded_and_unreachable_is_apart_from_own_downtime(setup):
    cfg, store = setup
    ts = [T0 + 60 * i for i in range(10)]
    h = every(ts)
    for t in ts[2:5]:          # the district router down for 3 cycles: its communes unreachable
        h[t] = {"core": "up", "d1": "down", "c1": "unreachable", "c2": "unreachable"}
    h[ts[7]]["c2"] = "down"    # c2 down on its own once, in maintenance
    h[ts[8]]["c2"] = "down"    # and once more, outside it
    record(cfg, store, h, maint={ts[7]: {"c2"}})
    rep = build(cfg, store, T0, T0 + 600, now=T0 + 600)
    d1, c1, c2 = site(rep, "d1"), site(rep, "c1"), site(rep, "c2")
    assert (d1.down_s, d1.unreachable_s, d1.outages) == (pytest.approx(180), 0, 1)
    assert d1.availability_pct == pytest.approx(100 * 420 / 600)
    assert (c1.down_s, c1.unreachable_s, c1.outages) == (0, pytest.approx(180), 0)
    assert c1.availability_pct == pytest.approx(100 * 420 / 600)
    # c2: unreachable 180, maintenance 60 (excluded), own down 60 after it
    assert (c2.maintenance_s, c2.down_s, c2.unreachable_s, c2.outages) == (pytest.approx(60), pytest.approx(60),
                                                                          pytest.approx(180), 1)
    assert c2.observed_s == pytest.approx(540)
    assert c2.availability_pct == pytest.approx(100 * 300 / 540)
    # the district's and the level's figures are sums of times, not means of percentages
    gb = dict(rep.districts)["Gia Bình"]
    assert gb.availability_pct == pytest.approx(100 * (420 + 420 + 300) / (600 + 600 + 540))
    communes = dict(rep.levels)["commune"]
    assert communes.availability_pct == pytest.approx(100 * (420 + 300) / (600 + 540))
    assert communes.unreachable_s == pytest.approx(360) and communes.maintenance_s == pytest.approx(60)
    assert dict(rep.levels)["province"].availability_pct == pytest.approx(100.0)
    # worst first, and who is under the 99.5 % target
    assert [r.id for r in rep.sites][:3] == ["c2", "c1", "d1"] or [r.id for r in rep.sites][:3] == ["c2", "d1", "c1"]
    assert {r.id for r in rep.sites if r.figures.below_target} == {"d1", "c1", "c2"}


def test_flapping_counts_each_own_outage(setup):
    cfg, store = setup
    ts = [T0 + 60 * i for i in range(9)]
    h = {t: {"core": "down" if i % 2 else "up"} for i, t in enumerate(ts)}  # up, down, up, ... up
    record(cfg, store, h)
    f = site(build(cfg, store, T0, T0 + 540, now=T0 + 540), "core")
    assert (f.outages, f.down_s, f.available_s) == (4, pytest.approx(240), pytest.approx(300))
    assert f.longest_outage_s == pytest.approx(60) and f.mttr_s == pytest.approx(60)


def test_an_outage_crossing_the_month_boundary_is_cut_there_and_counted_in_both(setup):
    cfg, store = setup
    ts = [T0 + 60 * i for i in range(20)]  # 23:50 on 31 Oct to 00:09 on 1 Nov
    h = {t: {"core": "down" if 5 <= i < 15 else "up"} for i, t in enumerate(ts)}  # down 23:55 to 00:05
    record(cfg, store, h)
    nov = rp.parse_period(TZ, T0 + 1200, month="2026-11")
    assert nov.cut_at_now and nov.start.timestamp() == T0 + 600
    rep = rp.compute(cfg, store.status_runs(rp.previous(nov).start.timestamp(), nov.end.timestamp(), T0 + 1200, CAP),
                     store.site_labels(), nov, rp.previous(nov), T0 + 1200, CAP)
    f = site(rep, "core")
    assert (f.down_s, f.outages, f.longest_outage_s) == (pytest.approx(300), 1, pytest.approx(300))
    assert f.available_s == pytest.approx(300)  # 00:05 to 00:10 (the last cycle, 00:09, held until now)
    assert f.previous_pct == pytest.approx(100 * 300 / 600)  # October: 23:50-23:55 up, 23:55-24:00 down


def test_nothing_observed_is_blank_not_100(setup):
    cfg, store = setup
    rep = build(cfg, store, T0, T0 + 3600, now=T0 + 7200)
    assert rep.total.availability_pct is None and rep.total.observed_s == 0
    assert all(r.figures.availability_pct is None for r in rep.sites)
    j = rp.to_json(rep)
    assert j["levels"][0]["availability_pct"] is None and j["sites"][0]["unobserved_s"] == pytest.approx(3600)


def test_the_pdf_lists_the_worst_sites_and_says_how_many_more(setup):
    cfg, store = setup
    ts = [T0 + 60 * i for i in range(5)]
    h = every(ts)
    h[ts[1]]["c2"] = "down"
    record(cfg, store, h)
    rep = build(cfg, store, T0, T0 + 300, now=T0 + 300)
    html = rp.to_html(cfg, rep, max_sites=2)
    assert html.count('<br><span class="prev">') == 2  # the site rows (name, then id and level)
    assert "… và 2 điểm khác" in html and "Lãng Ngâm" in html  # c2, the worst, is listed
    assert "… và" not in rp.to_html(cfg, rep)


def test_unknown_is_unobserved(setup):
    cfg, store = setup
    record(cfg, store, {T0: {"core": "up"}, T0 + 60: {"core": "unknown"}, T0 + 120: {"core": "up"}})
    f = site(build(cfg, store, T0, T0 + 180, now=T0 + 180), "core")
    assert (f.available_s, f.observed_s, f.unobserved_s) == (pytest.approx(120), pytest.approx(120), pytest.approx(60))


# -- periods -------------------------------------------------------------------------

def test_periods():
    now = datetime(2026, 12, 2, 10, 0, tzinfo=TZ).timestamp()
    p = rp.parse_period(TZ, now)
    assert (p.start, p.end, p.label) == (datetime(2026, 11, 1, tzinfo=TZ), datetime(2026, 12, 1, tzinfo=TZ), "2026-11")
    q = rp.parse_period(TZ, now, quarter="2026-Q3")
    assert (q.start.month, q.end.month, rp.previous(q).label) == (7, 10, "2026-Q2")
    y = rp.parse_period(TZ, now, year="2025")
    assert (y.start.year, y.end.year, rp.previous(y).label) == (2025, 2026, "2024")
    assert rp.previous(rp.parse_period(TZ, now, month="2026-01")).label == "2025-12"
    r = rp.parse_period(TZ, now, frm="2026-11-01", to="2026-11-30")
    assert r.end == datetime(2026, 12, 1, tzinfo=TZ)  # a bare --to date includes that day
    r = rp.parse_period(TZ, now, frm="2026-11-01T00:00:00+00:00", to="2026-11-02T00:00:00+00:00")
    assert r.seconds == 86400 and rp.previous(r).end == r.start
    for kw, msg in [({"month": "2026-13"}, "month 01 to 12"), ({"frm": "2026-11-05", "to": "2026-11-01"}, "not before"),
                    ({"month": "2027-01"}, "has not begun"), ({"to": "2026-11-01"}, "needs --from"),
                    ({"month": "2026-11", "year": "2026"}, "give one period"), ({"frm": "yesterday"}, "ISO 8601"),
                    ({"quarter": "2026-Q5"}, "quarter 1 to 4")]:
        with pytest.raises(rp.PeriodError, match=msg):
            rp.parse_period(TZ, now, **kw)


# -- the command and its formats -------------------------------------------------------

HOSTILE = {"core": "=HYPERLINK(\"http://evil.example\",\"x\")", "d1": "+cmd|' /C calc'!A0",
           "c1": "-2+3 <script>alert(1)</script>", "c2": "@SUM(1+1)"}


def _hostile_config(tmp_path: Path) -> Path:
    text = CONFIG
    for sid, name in HOSTILE.items():
        old = next(line for line in text.splitlines() if line.startswith("name = ") and
                   text.index(line) > text.index(f'id = "{sid}"'))
        text = text.replace(old, f"name = {json.dumps(name)}", 1)
    p = tmp_path / "sites.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_cli_formats_on_real_checks_with_hostile_names(tmp_path):
    cfg = _hostile_config(tmp_path)
    for _ in range(2):
        r = wanmon("--config", str(cfg), "check", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    outs = {}
    # an end already past: every format names the same period (cut at now, the file name would
    # follow the minute each report ran in)
    to = datetime.fromtimestamp(int(time.time()), timezone.utc).isoformat()
    for fmt in ("json", "csv", "html", "pdf"):
        r = wanmon("--config", str(cfg), "report", "--from", "2026-01-01", "--to", to, "--format", fmt, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        path = Path(r.stdout.rsplit(" written to ", 1)[1].strip())
        assert path.parent == tmp_path / "public" / "reports"
        outs[fmt] = (tmp_path / path if not path.is_absolute() else path).read_bytes()
    # the status page links the archive
    r = wanmon("--config", str(cfg), "render", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "public" / "index.html").read_text(encoding="utf-8")
    for fmt in ("html", "pdf", "csv", "json"):
        assert f'href="reports/{path.stem}.{fmt}"' in page
    j = json.loads(outs["json"])
    assert set(j) >= {"period", "levels", "districts", "sites"}
    assert [lv["level"] for lv in j["levels"]] == ["province", "district", "commune"]
    for s in j["sites"]:
        assert set(s) >= {"id", "name", "level", "district", "availability_pct", "downtime_s", "outages",
                          "longest_outage_s", "unreachable_s", "maintenance_s", "unobserved_s"}
        assert s["availability_pct"] == 100.0 and s["name"] == HOSTILE[s["id"]]
    # CSV: a BOM, then cells a spreadsheet would run as formulas start with an apostrophe
    assert outs["csv"].startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(outs["csv"].decode("utf-8-sig"))))
    assert {r["id"]: r["name"] for r in rows} == {sid: "'" + name for sid, name in HOSTILE.items()}
    assert not any(v.startswith(("=", "+", "-", "@")) for r in rows for v in r.values())
    # HTML: the names are text
    html = outs["html"].decode()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # PDF, read back by an independent decoder: Vietnamese intact
    assert outs["pdf"].startswith(b"%PDF")
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", "-layout", "-", "-"], input=outs["pdf"], capture_output=True,
                              check=True).stdout.decode()
        assert "Báo cáo tỷ lệ sẵn sàng mạng WAN" in text and "Phương pháp tính" in text
        assert "Cơ quan cấp tỉnh" in text and "Gia Bình" in text


def test_cli_bad_input_and_an_empty_store(tmp_path):
    p = tmp_path / "sites.toml"
    p.write_text(CONFIG, encoding="utf-8")
    for args, msg in [(["--month", "2026-13"], "month 01 to 12"), (["--from", "2026-11-05", "--to", "2026-11-01"],
                      "the period is empty"), (["--year", "2999"], "has not begun"),
                      (["--format", "docx"], "Invalid value")]:
        r = wanmon("--config", str(p), "report", *args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert msg in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    r = wanmon("--config", str(p), "report", "--format", "json", "--out", "-", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "nothing was observed" in r.stderr
    j = json.loads(r.stdout)
    assert all(lv["availability_pct"] is None for lv in j["levels"])


@pytest.mark.parametrize("args,reason", [
    (["--year", "0001"], "--year 0001: the year must be from 1970 to 9999"),
    (["--year", "0000"], "--year 0000: the year must be from 1970 to 9999"),
    (["--year", "1969"], "--year 1969: the year must be from 1970 to 9999"),
    (["--month", "0001-01"], "--month 0001-01: the year must be from 1970 to 9999"),
    (["--quarter", "1969-Q4"], "--quarter 1969-Q4: the year must be from 1970 to 9999"),
    (["--from", "0001-01-01"], "--from 0001-01-01: the year must be from 1970 to 9999"),
    (["--from", "1969-12-31T23:00:00+00:00"], "--from 1969-12-31T23:00:00+00:00: the year must be from 1970 to 9999"),
    (["--from", "2026-01-01", "--to", "0001-01-01"], "--to 0001-01-01: the year must be from 1970 to 9999"),
    (["--year", "9999"], "the period 9999 has not begun yet"),
    (["--month", "9999-12"], "the period 9999-12 has not begun yet"),
    (["--quarter", "9999-Q4"], "the period 9999-Q4 has not begun yet"),
    (["--from", "9999-12-31"], "--from 9999-12-31 is not before --to now"),
])
def test_cli_periods_outside_1970_to_9999_exit_2_with_one_line(tmp_path, args, reason):
    """They were tracebacks (datetime has no year 0 and no year 10000)."""
    p = tmp_path / "sites.toml"
    p.write_text(CONFIG, encoding="utf-8")
    r = wanmon("--config", str(p), "report", *args, cwd=tmp_path)
    assert (r.returncode, r.stdout) == (2, ""), r.stderr
    assert r.stderr.startswith(f"wanmon: error: {reason}") and r.stderr.count("\n") == 1, r.stderr


def _strict_json(text: str):
    def refuse(name: str):
        raise AssertionError(f"{name} in JSON output")
    return json.loads(text, parse_constant=refuse)


def test_cli_the_edges_of_the_range_are_reports(tmp_path):
    """1970 and a --to at the end of 9999 (cut at now) are fine; the JSON holds only finite numbers,
    also with the longest daemon interval (its status hold cap is in the report)."""
    p = tmp_path / "sites.toml"
    p.write_text(CONFIG.replace("icmp_interval_s = 60", "icmp_interval_s = 86400"), encoding="utf-8")
    for args in (["--year", "1970"], ["--month", "1970-01"], ["--from", "1970-01-01", "--to", "9999-12-31"],
                 ["--from", "2026-01-01T00:00:00", "--to", "9999-12-31T23:59:59-12:00"]):
        r = wanmon("--config", str(p), "report", *args, "--format", "json", "--out", "-", cwd=tmp_path)
        assert r.returncode == 0, (args, r.stderr)
        j = _strict_json(r.stdout)
        assert j["status_hold_cap_s"] == 172800, j
        assert j["period"]["from"][:4] in ("1970", "2026") and j["period"]["to"] < "9999", j["period"]
    assert j["period"]["cut_at_now"] is True


def test_english_with_page_language_en(tmp_path):
    p = tmp_path / "sites.toml"
    p.write_text(CONFIG.replace("[snmp]", '[page]\nlanguage = "en"\n\n[snmp]'), encoding="utf-8")
    cfg = load(p)
    store = Store.open(cfg.store_path)
    try:
        record(cfg, store, every([T0, T0 + 60]))
        rep = build(cfg, store, T0, T0 + 120, now=T0 + 120)
    finally:
        store.close()
    html = rp.to_html(cfg, rep)
    assert '<html lang="en">' in html and "Availability by level" in html and "Commune People&#39;s Committees" in html
    assert "Method" in html and "Tỷ lệ" not in html
    assert rp.to_json(rep)["method"][0].startswith("Each check's result holds")


def test_the_html_rows_show_names_groups_and_level_words_as_text(tmp_path):
    """Markup and control characters in a name, a group or a level's words are shown as text in
    every row that carries them (the site rows are written in Python: wanmon.report._html_writers)."""
    name, group, level = 'Đông <b>Cứu</b> & "x" \x1b[31m', "Gia <Bình> & Co", 'Xã <phường> & "thị trấn"'
    p = tmp_path / "sites.toml"
    p.write_text(CONFIG.replace('"UBND xã Đông Cứu"', json.dumps(name)).replace('"Gia Bình"', json.dumps(group))
                 .replace("[snmp]", f"[page.level_names]\nvi.commune = {json.dumps(level)}\n\n[snmp]"), encoding="utf-8")
    cfg = load(p)
    store = Store.open(cfg.store_path)
    try:
        h = every([T0, T0 + 60, T0 + 120])
        h[T0 + 60]["c1"] = "down"
        record(cfg, store, h)
        rep = build(cfg, store, T0, T0 + 180, now=T0 + 180)
    finally:
        store.close()
    html = rp.to_html(cfg, rep)
    soup = BeautifulSoup(html, "html.parser")
    assert "\x1b" not in html
    assert soup.find(["b", "bình", "phường"]) is None  # no tag made of a name
    shown = name.replace("\x1b", "\\x1b")
    site_rows = soup.select("table.full")[-1].tbody.find_all("tr")
    c1 = next(r for r in site_rows if r.td.span.get_text().startswith("c1 "))
    assert c1.td.contents[0] == shown
    assert c1.td.span.get_text() == f"c1 · {level} · {group} · {REPORT['vi']['below']}"
    assert c1.get("class") == ["below"]
    names = [td.get_text() for td in soup.select("td.name")]
    assert names.count(level) == 2 and names.count(group) == 2  # the level and district tables
    assert soup.select_one("table.worst td.name").get_text().startswith(shown)


# -- what a director reads first, Excel, long names (issue 22) --------------------------

# a name of 5,000 characters (words, as a careless import would give): capped in HTML and PDF
LONG = ("UBND phường Phượng Mao, thị xã Quế Võ, tỉnh Bắc Ninh, " * 100)[:5000].strip()


def vi(x: float) -> str:
    """A number as the Vietnamese report writes it: 2 decimals, decimal comma."""
    return f"{x:.2f}".replace(".", ",")


def build_177(folder: Path) -> dict:
    """The shipped 177-site inventory, 2 hours of 1-minute cycles ending 2 hours ago or more: in the
    first hour (the previous period) a Gia Bình commune is down 5 minutes; in the second (the period)
    the Tiên Du district router is down 20 minutes with the communes behind it (unreachable), the
    long-named Phượng Mao is down 10 minutes, and Phù Lãng flaps 6 times."""
    import tomllib

    from test_page import record, shipped_config

    cfg = shipped_config(folder, names={"que-vo-phuong-mao": LONG})
    raw = tomllib.loads(cfg.read_text(encoding="utf-8"))
    sites = raw["sites"]
    behind = [s["id"] for s in sites if s.get("parent") == "tien-du"]
    t0 = (int(time.time()) // 3600 - 4) * 3600
    cycles = []
    for k in range(120):
        own: dict[str, str] = {}
        if 15 <= k < 20:
            own["gia-binh-van-ninh"] = "down"
        if 80 <= k < 100:
            own.update({"tien-du": "down", **{c: "down" for c in behind}})
        if 90 <= k < 100:
            own["que-vo-phuong-mao"] = "down"
        if k in (63, 73, 83, 93, 103, 113):
            own["que-vo-phu-lang"] = "down"
        cycles.append((t0 + 60 * k, own))
    record(cfg, cycles)
    districts: dict[str, list[dict]] = {}
    for s in sites:
        if s.get("district"):
            districts.setdefault(s["district"], []).append(s)
    iso = lambda t: datetime.fromtimestamp(t, timezone.utc).isoformat()  # noqa: E731
    return {"cfg": cfg, "sites": sites, "behind": behind, "districts": districts,
            "period": ("--from", iso(t0 + 3600), "--to", iso(t0 + 7200))}


def report_file(big: dict, fmt: str) -> bytes:
    out = big["cfg"].parent / f"report.{fmt}"
    r = wanmon("--config", str(big["cfg"]), "report", *big["period"], "--format", fmt, "--out", str(out),
               cwd=big["cfg"].parent)
    assert r.returncode == 0, r.stderr
    return out.read_bytes()


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    return build_177(tmp_path_factory.mktemp("big"))


def _pdftotext(pdf: bytes, page: int) -> str:
    return subprocess.run(["pdftotext", "-raw", "-f", str(page), "-l", str(page), "-", "-"], input=pdf,
                          capture_output=True, check=True).stdout.decode()


@pytest.mark.skipif(not shutil.which("pdftotext"), reason="poppler-utils (pdftotext) is not installed")
def test_the_pdfs_first_page_answers_how_did_we_do(big):
    pdf = report_file(big, "pdf")
    page1 = _pdftotext(pdf, 1)
    lines = page1.splitlines()
    flat = " ".join(page1.split())
    for level in ("Cơ quan cấp tỉnh", "UBND cấp huyện", "UBND cấp xã", "Toàn mạng"):
        assert any(line.startswith(level + " ") for line in lines), (level, page1)
    # every district on the first page: sites, availability, target met or not, previous, change
    hour = 3600
    td, gb, qv = (len(big["districts"][d]) for d in ("Tiên Du", "Gia Bình", "Quế Võ"))
    assert set(big["behind"]) <= {s["id"] for s in big["districts"]["Tiên Du"]}
    td_pct = 100 * (td * hour - (1 + len(big["behind"])) * 1200) / (td * hour)
    qv_pct = 100 * (qv * hour - 600 - 6 * 60) / (qv * hour)
    gb_prev = 100 * (gb * hour - 300) / (gb * hour)
    expect = {d: f"{d} {len(s)} 100,00% Đạt 100,00% 0,00 điểm %" for d, s in big["districts"].items()}
    expect["Tiên Du"] = f"Tiên Du {td} {vi(td_pct)}% Không đạt 100,00% −{vi(100 - td_pct)} điểm %"
    expect["Quế Võ"] = f"Quế Võ {qv} {vi(qv_pct)}% Không đạt 100,00% −{vi(100 - qv_pct)} điểm %"
    expect["Gia Bình"] = f"Gia Bình {gb} 100,00% Đạt {vi(gb_prev)}% +{vi(100 - gb_prev)} điểm %"
    for d, line in expect.items():
        assert line in lines, (line, page1)
    assert "Mục tiêu 99,00%: Không đạt" in flat
    # the worst sites and why: the district router, with the communes it cut off counted behind it
    # (not listed one by one), then the two communes down on their own
    assert ("UBND huyện Tiên Du tien-du · Tiên Du 66,67% 1 0:20 0:00 Mất kết nối 1 lần, lâu nhất 0:20; "
            f"kéo theo {len(big['behind'])} điểm phía sau không tới được") in flat, flat
    assert "que-vo-phuong-mao · Quế Võ 83,33% 1 0:10 0:00 Mất kết nối 1 lần, lâu nhất 0:10" in flat
    assert "que-vo-phu-lang · Quế Võ 90,00% 6 0:06 0:00 Mất kết nối 6 lần, lâu nhất 0:01" in flat
    by_id = {s["id"]: s for s in big["sites"]}
    for c in big["behind"]:
        assert by_id[c]["name"] not in flat, c
    # the 5,000-character name: 120 characters with an ellipsis
    assert " ".join(rp.short(LONG).split()) in flat and rp.short(LONG).endswith("…")
    assert len(rp.short(LONG)) == rp.NAME_CAP and LONG[:200] not in flat
    # the detailed tables begin on page 2
    assert "Tóm tắt" in page1 and "Chi tiết" not in page1
    assert _pdftotext(pdf, 2).startswith("Chi tiết: Tỷ lệ sẵn sàng theo cấp")


def test_xlsx_read_back_by_openpyxl_has_numbers_percentages_and_durations(big):
    openpyxl = pytest.importorskip("openpyxl")
    from datetime import timedelta

    data = report_file(big, "xlsx")
    j = json.loads(report_file(big, "json"))
    book = openpyxl.load_workbook(io.BytesIO(data))
    assert book.sheetnames == ["Cấp", "Huyện", "Điểm kết nối", "Điểm kém nhất và nguyên nhân"]
    ws = book["Điểm kết nối"]
    head = [c.value for c in ws[1]]
    col = {h: i for i, h in enumerate(head)}
    rows = {r[0].value: r for r in ws.iter_rows(min_row=2)}
    assert set(rows) == {s["id"] for s in j["sites"]}
    for s in j["sites"]:
        r = rows[s["id"]]
        assert r[col["Điểm kết nối"]].value == s["name"]  # whole: 5,000 characters for Phượng Mao
        a = r[col["Sẵn sàng"]]
        assert isinstance(a.value, float | int) and a.number_format == "0.00%"
        assert a.value == pytest.approx(s["availability_pct"] / 100)
        d = r[col["Mất kết nối (giờ:phút)"]]
        assert d.number_format == "[h]:mm" and isinstance(d.value, timedelta)  # an Excel duration
        assert d.value.total_seconds() == pytest.approx(s["downtime_s"], abs=0.01)
        assert r[col["Số lần"]].value == s["outages"] and isinstance(r[col["Số lần"]].value, int)
    assert rows["que-vo-phuong-mao"][col["Điểm kết nối"]].value == LONG
    # the district's figures and the change in percentage points are numbers too
    ws = book["Huyện"]
    head = [c.value for c in ws[1]]
    tien_du = next(r for r in ws.iter_rows(min_row=2) if r[0].value == "Tiên Du")
    n = len(big["districts"]["Tiên Du"])
    pct = (n * 3600 - (1 + len(big["behind"])) * 1200) / (n * 3600)
    assert tien_du[head.index("Sẵn sàng")].value == pytest.approx(pct)
    assert tien_du[head.index("Thay đổi (điểm %)")].value == pytest.approx(100 * pct - 100)
    assert tien_du[head.index("Mục tiêu 99,00%")].value == "Không đạt"
    worst = book["Điểm kém nhất và nguyên nhân"]
    assert [r[0].value for r in worst.iter_rows(min_row=2)] == ["tien-du", "que-vo-phuong-mao", "que-vo-phu-lang"]


def test_the_json_says_the_same_first_page(big):
    j = json.loads(report_file(big, "json"))
    td = next(d for d in j["districts"] if d["district"] == "Tiên Du")
    assert td["target_met"] is False and td["change_pp"] == pytest.approx(td["availability_pct"] - 100, abs=1e-3)
    assert [w["id"] for w in j["worst"]] == ["tien-du", "que-vo-phuong-mao", "que-vo-phu-lang"]
    assert j["worst"][0]["sites_behind"] == len(big["behind"]) and j["worst"][1]["name"] == LONG


def test_the_json_files_rows_are_what_jsons_encoder_writes_for_them():
    """The report's file writes its site rows as text (site_json_text), not through dicts: the same
    text as json's encoder gives for the rows' data (to_json), for awkward names and figures."""
    from wanmon.account import Figures

    names = ['UBND "Xã" \\ Đông\x01', "Ủy ban 🌾\u2028", "<b>&amp;</b>", ""]
    figures = [
        Figures(),  # nothing observed: availability, MTTR and the previous figure are null
        Figures(available_s=1234.56789, down_s=0.1 + 0.2, unreachable_s=7, outages=3, longest_outage_s=1 / 3,
                maintenance_s=60.0, unobserved_s=2.5e-7, out_of_service_s=86400.0, below_target=1,
                prev_available_s=10.0, prev_observed_s=30.0),
        Figures(available_s=2**53 + 1.0, down_s=1e-9, outages=1, longest_outage_s=1e-9),
    ]
    rows = [rp.SiteRow(f"s{i}", n, lv, d, f, 1.5e9 + i, 1.6e9 - i * 0.25)
            for i, (n, f, lv, d) in enumerate(zip(names * 3, figures * 4, ["commune", "province", "district"] * 4,
                                                  [None, "Huyện \"A\"", "Thị xã Quế Võ"] * 4))]
    iso = {t: datetime.fromtimestamp(t, timezone.utc).isoformat() for r in rows for t in (r.start, r.end)}.__getitem__
    enc = json.JSONEncoder(ensure_ascii=False)
    for r in rows:
        assert rp.site_json_text(r, iso) == enc.encode(rp._site_json(r, iso))


def test_the_csv_files_text_cells_are_quoted_as_the_csv_module_does():
    """The CSV rows are written as text (csv_field), not through csv.writer: a cell reads back the
    same, quoted where csv.writer quotes it (commas, quotes, line breaks), for awkward names."""
    cells = ["Tiên Du", 'UBND "Xã", Đông', "a\r\nb", "x\ny", '"', ",", "", " lead", "tab\there", "=1+2", "🌾;"]
    for v in cells:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\r\n").writerow(["x", v, "y"])
        assert f"x,{rp.csv_field(v)},y\r\n" == buf.getvalue(), v
        assert next(csv.reader(io.StringIO(f"{rp.csv_field(v)},end", newline=""))) == [v, "end"]


def test_the_command_offers_every_format():
    from wanmon.cli import report as command

    fmt = next(p for p in command.params if p.name == "fmt")
    assert tuple(fmt.type.choices) == rp.FORMATS


def test_upstream_causes_walk_up_to_the_site_that_was_down():
    """c1 unreachable 0-100: its district d1 was down 0-30, then the core was down 30-80 (d1
    unreachable meanwhile), and 80-100 no upstream site was down (cause unknown); c1's
    unreachable time in maintenance is not owed to anyone."""
    runs = {"c1": [("unreachable", 0, 0.0, 100.0), ("unreachable", 1, 100.0, 120.0)],
            "d1": [("down", 0, 0.0, 30.0), ("unreachable", 0, 30.0, 100.0)],
            "core": [("up", 0, 0.0, 30.0), ("down", 0, 30.0, 80.0), ("up", 0, 80.0, 200.0)]}
    parents = {"c1": "d1", "d1": "core", "core": None}
    from wanmon.account import UpstreamCauses

    upstream_causes = UpstreamCauses(runs, parents).of
    assert upstream_causes("c1", 0, 200) == {"d1": 30.0, "core": 50.0, None: 20.0}
    assert upstream_causes("c1", 50, 90) == {"core": 30.0, None: 10.0}
    assert upstream_causes("d1", 0, 200) == {"core": 50.0, None: 20.0}
    assert upstream_causes("core", 0, 200) == {}


@pytest.mark.parametrize("seed", range(6))
def test_the_worst_list_counts_behind_each_site_every_site_it_cut_off(seed):
    """_worst works a row's upstream cause out only where the list needs it; its entries and
    their counts must be those of asking every row: a random tree (a root, districts, communes,
    some communes split at a change), random outages."""
    import random

    from wanmon.account import Figures, UpstreamCauses, by_site, site_figures

    rnd = random.Random(seed)
    parents: dict[str, str | None] = {"root": None}
    for d in range(6):
        parents[f"d{d}"] = "root"
        for c in range(rnd.randint(0, 8)):
            parents[f"d{d}c{c}"] = f"d{d}"
    runs = []
    for sid in parents:
        t = 0.0
        while t < 1000:
            b = t + rnd.uniform(5, 120)
            runs.append((sid, rnd.choice(["up", "up", "down", "unreachable"]), 0, t, b))
            t = b
    mine = by_site(runs)
    rows = []
    for sid in parents:
        cuts = [0.0, rnd.uniform(100, 900), 1000.0] if rnd.random() < 0.3 else [0.0, 1000.0]
        for a, b in zip(cuts, cuts[1:]):
            f = site_figures(mine[sid], a, b)
            rows.append(rp.SiteRow(sid, sid, "commune", None, f, a, b))
    rows.sort(key=rp._worst_first)
    got = rp._worst(rows, mine, parents)

    causes = UpstreamCauses(mine, parents)  # every row asked, as a reader would count
    cause = {}
    for n, r in enumerate(rows):
        owed = causes.of(r.id, r.start, r.end) if r.figures.unreachable_s > 0 else {}
        cause[n] = max(owed, key=lambda k: owed[k]) if owed else None
    want = []
    for n, r in enumerate(rows):
        f: Figures = r.figures
        if f.down_s + f.unreachable_s <= 0 or (f.unreachable_s > f.down_s and cause[n] is not None):
            continue
        want.append((r.id, r.start, len({rows[m].id for m in cause if cause[m] == r.id})))
    assert [(x.row.id, x.row.start, x.behind) for x in got] == want[: rp.WORST_N]
