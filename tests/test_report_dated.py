"""Reports on a dated inventory (issue 23): `--grouping then|now` and time out of service.

The account on constructed runs (pure), then the report on histories written through the real
store cycle by cycle, as the agent writes them (a site out of service is not probed: it has no
cycle then), and `wanmon report` on the shipped example carried through the 2025 reform
(examples/bacninh-2025.toml), a month before and a month after 2025-07-01, in both views."""

from __future__ import annotations

import csv
import io
import json
import math
import random
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from conftest import REPO, wanmon
from test_page import observation
from wanmon import account
from wanmon import report as rp
from wanmon.config import load
from wanmon.status import with_parents
from wanmon.store import Store

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
A = datetime(2026, 11, 1, tzinfo=TZ).timestamp()  # the period [A, A + H); the previous one [A - H, A)
H = 3600.0
T = A + 1800  # the commune moves from Huyện Một to Huyện Hai
IN, OUT = A + 900, A + 2700  # a commune enters service, another is retired
CAP = 120.0  # 2 x icmp_interval_s = 60


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, TZ).isoformat()


CONFIG = f"""\
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
name = "UBND Huyện Một"
level = "district"
district = "Huyện Một"
parent = "core"
address = "127.0.0.2"

[[sites]]
id = "d2"
name = "UBND Huyện Hai"
level = "district"
district = "Huyện Hai"
parent = "core"
address = "127.0.0.3"

[[sites]]
id = "c"
name = "UBND xã Chuyển"
level = "commune"
district = "Huyện Một"
parent = "d1"
address = "127.0.0.4"

  [[sites.changes]]
  at = {iso(T)}
  district = "Huyện Hai"
  parent = "d2"
  name = "Điểm cầu xã Chuyển (nay thuộc Huyện Hai)"

[[sites]]
id = "n"
name = "UBND xã Mới"
level = "commune"
district = "Huyện Hai"
parent = "d2"
address = "127.0.0.5"
in_service_from = {iso(IN)}

[[sites]]
id = "r"
name = "UBND xã Cũ"
level = "commune"
district = "Huyện Một"
parent = "d1"
address = "127.0.0.6"
retired_at = {iso(OUT)}

[[sites]]
id = "f"
name = "UBND xã Sắp Có"
level = "commune"
district = "Huyện Hai"
parent = "d2"
address = "127.0.0.7"
in_service_from = {iso(A + 2 * H)}

[[sites]]
id = "o"
name = "UBND xã Đã Bỏ"
level = "commune"
district = "Huyện Một"
parent = "d1"
address = "127.0.0.8"
retired_at = {iso(A - 2 * H)}
"""

CLASSES = ("available_s", "down_s", "unreachable_s", "maintenance_s", "unobserved_s", "out_of_service_s")


def seconds(f: account.Figures) -> float:
    """Every second of a row is in exactly one class."""
    return sum(getattr(f, k) for k in CLASSES)


# -- the account, on constructed runs ----------------------------------------------------

@pytest.fixture
def sites(tmp_path):
    p = tmp_path / "sites.toml"
    p.write_text(CONFIG, encoding="utf-8")
    return load(p).timeline.base_by_id


def test_time_out_of_service_is_never_down_nor_unobserved(sites):
    # the device answered (or not) before it entered service and after it was retired: not counted
    n_runs = [("down", 0, A - H, A + 1200), ("up", 0, A + 1200, A + H)]
    f = account.in_service_figures(n_runs, sites["n"], A, A + H)
    assert f is not None
    assert (f.down_s, f.available_s, f.out_of_service_s, f.unobserved_s) == (300, 2400, 900, 0)
    assert f.availability_pct == pytest.approx(100 * 2400 / 2700) and f.outages == 1
    r_runs = [("up", 0, A - H, A + 2400), ("down", 0, A + 2400, A + H + 600)]
    f = account.in_service_figures(r_runs, sites["r"], A, A + H)
    assert (f.down_s, f.available_s, f.out_of_service_s, f.unobserved_s) == (300, 2400, 900, 0)
    # nothing observed while in service: unobserved, and only for that time
    f = account.in_service_figures([], sites["r"], A, A + H)
    assert (f.unobserved_s, f.out_of_service_s, f.availability_pct) == (2700, 900, None)
    # out of service for the whole period: nothing to tell
    for sid in ("f", "o"):
        assert account.in_service_figures([("down", 0, A, A + H)], sites[sid], A, A + H) is None
        assert account.stretches([("down", 0, A, A + H)], sites[sid], A, A + H) == []


def test_stretches_split_at_a_change_and_tile_the_period(sites):
    runs = [("up", 0, A - H, A + 1200), ("down", 0, A + 1200, A + 2400), ("up", 0, A + 2400, A + 2 * H)]
    a, b = account.stretches(runs, sites["c"], A, A + H)
    assert (a.start, a.end, b.start, b.end) == (A, T, T, A + H)
    assert (a.site.district, b.site.district) == ("Huyện Một", "Huyện Hai")
    assert b.site.name == "Điểm cầu xã Chuyển (nay thuộc Huyện Hai)"
    # the outage across the change is cut there and counted in both, as at a period's edge
    assert (a.figures.down_s, a.figures.outages, b.figures.down_s, b.figures.outages) == (600, 1, 600, 1)
    whole = account.in_service_figures(runs, sites["c"], A, A + H)
    assert (whole.down_s, whole.outages, whole.longest_outage_s) == (1200, 1, 1200)
    for k in CLASSES:
        assert getattr(a.figures, k) + getattr(b.figures, k) == getattr(whole, k), k
    # keys that do not matter to the caller do not split
    (one,) = account.stretches(runs, sites["c"], A, A + H, keys=lambda s: s.level)
    assert (one.start, one.end, one.figures.down_s, one.figures.outages) == (A, A + H, 1200, 1)
    # a site entering service mid-period with no change: one stretch over the whole period
    (s,) = account.stretches(runs, sites["n"], A, A + H)
    assert (s.start, s.end, s.figures.out_of_service_s) == (A, A + H, 900)
    assert seconds(s.figures) == H


def test_an_undated_site_takes_one_stretch_equal_to_site_figures(sites):
    runs = [("up", 0, A, A + 100), ("down", 0, A + 100, A + 700), ("unknown", 0, A + 700, A + 800)]
    (s,) = account.stretches(runs, sites["d1"], A, A + H)
    assert s.site is sites["d1"] and (s.start, s.end) == (A, A + H)
    assert s.figures == account.site_figures(runs, A, A + H)
    assert account.in_service_figures(runs, sites["d1"], A, A + H) == account.site_figures(runs, A, A + H)


# -- the report, on a history written through the store ---------------------------------

@pytest.fixture
def history(tmp_path):
    """Cycles every minute over [A - H, A + H), as the agent records them: each cycle observes the
    sites in service then (Config.as_of), a silent child of a down parent is unreachable.
    c is down 20 minutes across T (its move), and 5 minutes in the previous period (in Huyện
    Một then); r is down its last 5 minutes before it is retired; n answers from its entry on."""
    p = tmp_path / "sites.toml"
    p.write_text(CONFIG, encoding="utf-8")
    cfg = load(p)
    store = Store.open(cfg.store_path)
    try:
        for k in range(int(2 * H / 60)):
            ts = A - H + 60 * k
            view = cfg.as_of(ts)
            own = {s.id: "up" for s in view.sites}
            if A + 1200 <= ts < A + 2400 or A - 1800 <= ts < A - 1500:
                own["c"] = "down"
            if A + 2400 <= ts < OUT:
                own["r"] = "down"
            final = with_parents(own, {s.id: s for s in view.sites})
            obs = [observation(s, ts, final[s.id]) for s in view.sites]
            store.record_cycle(ts, ts + 1, obs, run_cap_s=CAP)
    finally:
        store.close()
    return cfg


def report(cfg, grouping: str, start: float = A, now: float = A + H) -> rp.Report:
    period = rp.Period(datetime.fromtimestamp(start, TZ), datetime.fromtimestamp(start + H, TZ), "range", "test")
    prev = rp.previous(period)
    store = Store.open_readonly(cfg.store_path)
    try:
        runs = store.status_runs(prev.start.timestamp(), period.end.timestamp(), now, CAP)
        return rp.compute(cfg, runs, store.site_labels(), period, prev, now, CAP, grouping=grouping)
    finally:
        store.close()


def rows(rep: rp.Report, sid: str) -> list[rp.SiteRow]:
    return sorted((r for r in rep.sites if r.id == sid), key=lambda r: r.start)


def test_then_counts_each_stretch_under_its_group_and_now_the_whole_period_under_todays(history):
    then, now = report(history, "then"), report(history, "now")
    # then: the commune's time before the move is Huyện Một's, after it Huyện Hai's, one row each
    before, after = rows(then, "c")
    assert (before.district, before.name, before.start, before.end) == ("Huyện Một", "UBND xã Chuyển", A, T)
    assert (after.district, after.start, after.end) == ("Huyện Hai", T, A + H)
    assert after.name == "Điểm cầu xã Chuyển (nay thuộc Huyện Hai)"
    assert (before.figures.down_s, before.figures.available_s) == (600, 1200)
    assert (after.figures.down_s, after.figures.available_s) == (600, 1200)
    # now: all of it under today's keys, one outage
    (whole,) = rows(now, "c")
    assert (whole.district, whole.name, whole.start, whole.end) == ("Huyện Hai", after.name, A, A + H)
    assert (whole.figures.down_s, whole.figures.available_s, whole.figures.outages) == (1200, 2400, 1)

    d_then, d_now = dict(then.districts), dict(now.districts)
    assert list(d_then) == list(d_now) == ["Huyện Một", "Huyện Hai"]
    # Huyện Một then: d1, c before the move, r (down 5 min, retired after 45 min); Huyện Hai: d2, c after, n
    assert d_then["Huyện Một"].availability_pct == pytest.approx(100 * (3600 + 1200 + 2400) / (3600 + 1800 + 2700))
    assert d_then["Huyện Hai"].availability_pct == pytest.approx(100 * (3600 + 1200 + 2700) / (3600 + 1800 + 2700))
    assert (d_then["Huyện Một"].sites, d_then["Huyện Hai"].sites) == (3, 3)
    assert d_now["Huyện Một"].availability_pct == pytest.approx(100 * (3600 + 2400) / (3600 + 2700))
    assert d_now["Huyện Hai"].availability_pct == pytest.approx(100 * (3600 + 2400 + 2700) / (3600 + 3600 + 2700))
    assert (d_now["Huyện Một"].sites, d_now["Huyện Hai"].sites) == (2, 3)
    # the previous period, grouped the same way: the commune was in Huyện Một then (5 min down)
    assert d_then["Huyện Một"].previous_pct == pytest.approx(100 * (3 * 3600 - 300) / (3 * 3600))
    assert d_then["Huyện Hai"].previous_pct == pytest.approx(100.0)
    assert d_now["Huyện Một"].previous_pct == pytest.approx(100.0)
    assert d_now["Huyện Hai"].previous_pct == pytest.approx(100 * (2 * 3600 - 300) / (2 * 3600))
    # ... which is what the previous period's own report says, in either view
    for g in ("then", "now"):
        cur, old = dict(report(history, g).districts), dict(report(history, g, start=A - H).districts)
        for d in cur:
            assert cur[d].previous_pct == pytest.approx(old[d].availability_pct), (g, d)

    # the whole network is the same figure in both views, and the groups add up to it
    for k in CLASSES:
        assert getattr(then.total, k) == pytest.approx(getattr(now.total, k)), k
        for rep in (then, now):
            assert sum(getattr(f, k) for _d, f in rep.districts) + getattr(rows(rep, "core")[0].figures, k) == \
                pytest.approx(getattr(rep.total, k)), k
            assert sum(getattr(f, k) for _lv, f in rep.levels) == pytest.approx(getattr(rep.total, k)), k
    assert then.total.sites == now.total.sites == 6  # c counted once; f and o out of service throughout
    assert dict(then.levels)["commune"].sites == 3  # c (two rows), n, r
    # every row accounts for each second of its stretch once
    for rep in (then, now):
        for r in rep.sites:
            assert seconds(r.figures) == pytest.approx(r.end - r.start), r.id


def test_a_site_enters_and_one_leaves_service_mid_period(history):
    for g in ("then", "now"):
        rep = report(history, g)
        (n,) = rows(rep, "n")
        (r,) = rows(rep, "r")
        # n: out of service its first 15 minutes, then up: never down, never unobserved, 100 %
        assert (n.figures.out_of_service_s, n.figures.unobserved_s, n.figures.down_s) == (900, 0, 0)
        assert n.figures.availability_pct == pytest.approx(100.0) and n.figures.observed_s == 2700
        # r: down its last 5 minutes in service; its last run (held up to 2 minutes by the method)
        # stops at its retirement: the rest of the period is out of service, not down, not unobserved
        assert (r.figures.down_s, r.figures.out_of_service_s, r.figures.unobserved_s) == (300, 900, 0)
        assert r.figures.availability_pct == pytest.approx(100 * 2400 / 2700)
        assert (n.start, n.end, r.start, r.end) == (A, A + H, A, A + H)
        # f (enters after the period) and o (retired before it) are not rows, nor counted anywhere
        assert not rows(rep, "f") and not rows(rep, "o")
        communes = dict(rep.levels)["commune"]
        assert communes.out_of_service_s == 1800 and communes.unobserved_s == 0
        assert dict(rep.districts)["Huyện Hai"].out_of_service_s == 900
        assert rep.total.out_of_service_s == 1800


def test_the_report_says_where_the_period_is_split_and_which_tree_now_is(history, tmp_path):
    then, now = report(history, "then"), report(history, "now")
    assert len(then.notes) == 1 and "01/11/2026 00:30" in then.notes[0] and "--grouping then" in then.notes[0]
    assert len(now.notes) == 1 and "01/11/2026 01:00" in now.notes[0] and "--grouping now" in now.notes[0]
    # from the change on: then is not split, now has nothing to say (r retired meanwhile keeps its keys)
    later = report(history, "then", start=T), report(history, "now", start=T, now=T + H)
    assert [r.notes for r in later] == [[], []]
    en = tmp_path / "en.toml"
    en.write_text(CONFIG.replace("[snmp]", '[page]\nlanguage = "en"\n\n[snmp]'), encoding="utf-8")
    rep = rp.compute(load(en), [], {}, then.period, then.prev, A + H, CAP)
    assert rep.notes == ["The period is split at 2026-11-01 00:30: each stretch is counted under the name, level "
                         "and group valid then (--grouping then); a site whose name, level or group changed has "
                         "one row per stretch."]


def test_every_format_has_the_out_of_service_column_and_each_rows_stretch(history):
    then = report(history, "then")
    j = rp.to_json(then)
    assert j["grouping"] == "then" and rp.to_json(report(history, "now"))["grouping"] == "now"
    c = sorted((s for s in j["sites"] if s["id"] == "c"), key=lambda s: s["from"])
    assert [(s["from"], s["to"], s["district"]) for s in c] == [
        (iso(A), iso(T), "Huyện Một"), (iso(T), iso(A + H), "Huyện Hai")]
    n = next(s for s in j["sites"] if s["id"] == "n")
    assert (n["out_of_service_s"], n["unobserved_s"], n["from"], n["to"]) == (900, 0, iso(A), iso(A + H))
    assert j["total"]["out_of_service_s"] == 1800
    assert {d["district"]: d["out_of_service_s"] for d in j["districts"]} == {"Huyện Một": 900, "Huyện Hai": 900}
    assert [lv["out_of_service_s"] for lv in j["levels"]] == [0, 0, 1800]
    assert j["method"][-1].startswith("Thời gian một điểm chưa đưa vào sử dụng")
    # CSV: the new columns last, every row's seconds add up to its stretch
    table = list(csv.DictReader(io.StringIO(rp.to_csv(then).decode("utf-8-sig"))))
    assert list(table[0])[-3:] == ["out_of_service_s", "from", "to"]
    for row in table:
        length = datetime.fromisoformat(row["to"]).timestamp() - datetime.fromisoformat(row["from"]).timestamp()
        assert int(row["observed_s"]) + int(row["maintenance_s"]) + int(row["unobserved_s"]) + \
            int(row["out_of_service_s"]) == pytest.approx(length, abs=2), row
    assert {r["id"]: int(r["out_of_service_s"]) for r in table if r["id"] in ("n", "r")} == {"n": 900, "r": 900}
    # HTML (and so the PDF): the column in every table, the stretch beside a split row, the grouping
    html = rp.to_html(history, then)
    assert html.count('<th scope="col">Ngoài thời gian sử dụng</th>') == 3
    assert html.count('data-label="Ngoài thời gian sử dụng">0:15</td>') == 4  # n, r and their two districts
    assert "c · UBND cấp xã · Huyện Một · 01/11/2026 00:00 – 01/11/2026 00:30" in html
    assert "Cách nhóm:</strong> theo đơn vị có hiệu lực ở từng thời điểm" in html
    # xlsx: a duration column, and the row's stretch as Excel times
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.load_workbook(io.BytesIO(rp.to_xlsx(then)))
    for name in ("Cấp", "Huyện", "Điểm kết nối"):
        head = [cell.value for cell in book[name][1]]
        assert "Ngoài thời gian sử dụng" in head, name
    ws = book["Điểm kết nối"]
    head = [cell.value for cell in ws[1]]
    got = {(r[0].value, r[head.index("Từ")].value): r for r in ws.iter_rows(min_row=2)}
    cell = got[("n", datetime(2026, 11, 1))][head.index("Ngoài thời gian sử dụng")]
    assert cell.number_format == "[h]:mm" and cell.value.total_seconds() == pytest.approx(900, abs=0.01)
    assert got[("c", datetime(2026, 11, 1, 0, 30))][head.index("Đến")].value == datetime(2026, 11, 1, 1, 0)


def test_an_undated_inventory_gives_the_same_report_in_both_views(tmp_path):
    from test_report import CONFIG as UNDATED
    from test_report import T0, every, record

    p = tmp_path / "sites.toml"
    p.write_text(UNDATED, encoding="utf-8")
    cfg = load(p)
    store = Store.open(cfg.store_path)
    try:
        h = every([T0 + 60 * i for i in range(10)])
        h[T0 + 120]["c1"] = "down"
        record(cfg, store, h)
        runs = store.status_runs(T0 - 600, T0 + 600, T0 + 600, CAP)
    finally:
        store.close()
    period = rp.Period(datetime.fromtimestamp(T0, TZ), datetime.fromtimestamp(T0 + 600, TZ), "range", "test")
    got = [rp.to_json(rp.compute(cfg, runs, {}, period, rp.previous(period), T0 + 600, CAP, grouping=g))
           for g in rp.GROUPINGS]
    assert got[0].pop("grouping") == "then" and got[1].pop("grouping") == "now"
    assert got[0] == got[1] and got[0]["notes"] == []
    assert all(s["out_of_service_s"] == 0 and (s["from"], s["to"]) == (period.start.isoformat(), period.end.isoformat())
               for s in got[0]["sites"])


def test_the_command_offers_both_groupings_then_first():
    from wanmon.cli import report as command

    opt = next(p for p in command.params if p.name == "grouping")
    assert tuple(opt.type.choices) == rp.GROUPINGS and opt.default == rp.GROUPINGS[0] == "then"


# -- the 2025 reform: the shipped example, a month before and a month after -------------------

EXAMPLE = REPO / "examples" / "bacninh-2025.toml"
REFORM = datetime(2025, 7, 1, tzinfo=TZ).timestamp()
SPACING = 6 * 3600.0  # a cycle every 6 hours: [schedule] icmp_interval_s = 21600 in the copy


@pytest.fixture(scope="module")
def reform(tmp_path_factory):
    """The example with SNMP off and a 6-hour interval, and three months of cycles (May to July
    2025) written through the store as the agent writes them: a district router down a day in
    June (its communes unreachable behind it), a commune down across the reform's instant, and
    another down 18 hours in July."""
    folder = tmp_path_factory.mktemp("reform")
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("icmp_interval_s = 60\n", "icmp_interval_s = 21600\n", 1)
    at = text.index("[snmp]")
    text = text[:at] + text[at:].replace("enabled = true", "enabled = false", 1)
    cfg_path = folder / "sites.toml"
    cfg_path.write_text(text, encoding="utf-8")
    cfg = load(cfg_path)
    assert cfg.schedule.icmp_interval_s == 21600 and not cfg.snmp.enabled
    june = cfg.at(REFORM - 1)
    moved = next(s.id for s in june.active if s.level == "commune" and s.district == "Tiên Du")
    router = next(s for s in june.active if s.level == "district" and s.district == "Gia Bình")
    behind = {s.id for s in june.active if s.parent == router.id}
    start = datetime(2025, 5, 1, tzinfo=TZ).timestamp()
    end = datetime(2025, 8, 1, tzinfo=TZ).timestamp()
    store = Store.open(cfg.store_path)
    try:
        ts = start
        while ts < end:
            view = cfg.as_of(ts)
            own = {s.id: "up" for s in view.sites}
            if datetime(2025, 6, 10, tzinfo=TZ).timestamp() <= ts < datetime(2025, 6, 11, tzinfo=TZ).timestamp():
                own.update({router.id: "down", **{c: "down" for c in behind}})
            if REFORM - SPACING <= ts < REFORM + SPACING:
                own[moved] = "down"
            if datetime(2025, 7, 20, tzinfo=TZ).timestamp() <= ts < datetime(2025, 7, 20, 18, tzinfo=TZ).timestamp():
                own["que-vo-phu-lang"] = "down"
            final = with_parents(own, {s.id: s for s in view.sites})
            store.record_cycle(ts, ts + 1, [observation(s, ts, final[s.id]) for s in view.sites],
                               run_cap_s=2 * SPACING)
            ts += SPACING
    finally:
        store.close()
    return {"cfg": cfg, "path": cfg_path, "moved": moved, "router": router.id, "behind": behind}


def cli_report(reform: dict, month: str, grouping: str) -> dict:
    r = wanmon("--config", str(reform["path"]), "report", "--month", month, "--grouping", grouping,
               "--format", "json", "--out", "-", cwd=reform["path"].parent)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_month_before_and_a_month_after_the_reform_in_both_views(reform):
    cfg = reform["cfg"]
    june_units = list(dict.fromkeys(s.district for s in cfg.at(REFORM - 1).active if s.district))
    today_units = list(dict.fromkeys(s.district for s in cfg.at(REFORM).active if s.district))
    assert len(june_units) == 8 and len(today_units) == 41 and not set(june_units) & set(today_units)
    got = {(m, g): cli_report(reform, m, g) for m in ("2025-06", "2025-07") for g in rp.GROUPINGS}
    groups = {k: [d["district"] for d in j["districts"]] for k, j in got.items()}
    # June as it was: the 8 districts; June under today's tree, and July either way: the 41 units
    assert groups[("2025-06", "then")] == june_units
    assert groups[("2025-06", "now")] == groups[("2025-07", "then")] == groups[("2025-07", "now")] == today_units
    assert {j["grouping"] for j in got.values()} == {"then", "now"}
    for (month, g), j in got.items():
        total = j["total"]
        # every site in service all along, observed throughout: nothing out of service, nothing unobserved
        assert (total["sites"], total["out_of_service_s"], total["unobserved_s"]) == (177, 0, 0), (month, g)
        assert len(j["sites"]) == 177, (month, g)
        # no change inside either month; June under today's tree says so
        assert len(j["notes"]) == ((month, g) == ("2025-06", "now")), (month, g, j["notes"])
        # the groups and the sites without one add up to the whole network, and so do the levels
        for k in ("available_s", "observed_s", "downtime_s", "unreachable_s"):
            loose = sum(s[k] for s in j["sites"] if not s["district"])
            assert sum(d[k] for d in j["districts"]) + loose == pytest.approx(total[k], abs=0.01), (month, g, k)
            assert sum(lv[k] for lv in j["levels"]) == pytest.approx(total[k], abs=0.01), (month, g, k)
    for month in ("2025-06", "2025-07"):
        then, now = got[(month, "then")], got[(month, "now")]
        for k in ("availability_pct", "downtime_s", "unreachable_s", "observed_s", "previous_availability_pct"):
            assert then["total"][k] == pytest.approx(now["total"][k]), (month, k)
        # each site's figures are the same in both views (no split): only its keys differ
        assert {s["id"]: s["downtime_s"] for s in then["sites"]} == {s["id"]: s["downtime_s"] for s in now["sites"]}
    # June as it was: the Gia Bình district router down a day, its communes behind it unreachable
    june = {d["district"]: d for d in got[("2025-06", "then")]["districts"]}
    n = sum(1 for s in cfg.at(REFORM - 1).active if s.district == "Gia Bình")
    assert june["Gia Bình"]["downtime_s"] == 86400
    assert june["Gia Bình"]["unreachable_s"] == 86400 * len(reform["behind"])
    assert june["Gia Bình"]["sites"] == n
    # the commune down across the instant: June's 6 hours under its old district, July's under its new unit
    moved_then = {m: next(s for s in got[(m, "then")]["sites"] if s["id"] == reform["moved"])
                  for m in ("2025-06", "2025-07")}
    assert moved_then["2025-06"]["district"] == cfg.at(REFORM - 1).by_id[reform["moved"]].district
    assert moved_then["2025-07"]["district"] == cfg.at(REFORM).by_id[reform["moved"]].district
    assert moved_then["2025-06"]["downtime_s"] == moved_then["2025-07"]["downtime_s"] == 6 * 3600
    # July's previous period: June as it was has none of the new units (then); under today's tree
    # it is June's figure of each unit (now)
    assert all(d["previous_availability_pct"] is None for d in got[("2025-07", "then")]["districts"])
    june_now = {d["district"]: d["availability_pct"] for d in got[("2025-06", "now")]["districts"]}
    assert {d["district"]: d["previous_availability_pct"] for d in got[("2025-07", "now")]["districts"]} == \
        pytest.approx(june_now)
    assert any(v < 100 for v in june_now.values())


def test_a_period_across_the_reform_is_split_then_and_whole_now(reform):
    cfg = reform["cfg"]
    store = Store.open_readonly(cfg.store_path)
    try:
        now = datetime(2026, 1, 1, tzinfo=TZ).timestamp()
        period = rp.parse_period(TZ, now, frm="2025-06-16", to="2025-07-15")
        prev = rp.previous(period)
        runs = store.status_runs(prev.start.timestamp(), period.end.timestamp(), now, 2 * SPACING)
        then, whole = (rp.compute(cfg, runs, store.site_labels(), period, prev, now, 2 * SPACING, grouping=g)
                       for g in rp.GROUPINGS)
    finally:
        store.close()
    changed = {s.id for s in cfg.at(REFORM).active
               if rp._report_keys(s) != rp._report_keys(cfg.at(REFORM - 1).by_id[s.id])}
    assert len(changed) > 100
    split = {r.id for r in then.sites if r.start > period.start.timestamp()}
    assert split == changed and len(then.sites) == 177 + len(changed) and len(whole.sites) == 177
    assert len(then.notes) == 1 and "01/07/2025 00:00" in then.notes[0]
    # then: the 8 districts (to the instant) after the 41 units (valid at the period's end)
    today_units = list(dict.fromkeys(s.district for s in cfg.at(REFORM).active if s.district))
    assert [d for d, _f in then.districts][:41] == today_units and len(then.districts) == 41 + 8
    assert [d for d, _f in whole.districts] == today_units
    # the same seconds, split or not; the moved commune's outage is one in each stretch
    for k in ("available_s", "down_s", "unreachable_s", "unobserved_s", "out_of_service_s"):
        assert getattr(then.total, k) == pytest.approx(getattr(whole.total, k)), k
    a, b = rows(then, reform["moved"])
    (w,) = rows(whole, reform["moved"])
    assert (a.end, b.start) == (REFORM, REFORM) and a.figures.down_s == b.figures.down_s == 6 * 3600
    assert (a.figures.outages, b.figures.outages, w.figures.outages, w.figures.down_s) == (1, 1, 1, 12 * 3600)
    assert math.isclose(then.total.availability_pct, whole.total.availability_pct)


def test_the_report_names_the_levels_as_the_page_does_in_the_tree_of_its_period(reform):
    """One definition of the levels' names ([page.level_names], words.level_names): June 2025's
    report names them as the 2023 tree did, July's as the file's change at 2025-07-01 says."""
    from wanmon.words import level_names

    cfg = reform["cfg"]
    html = {}
    for month in ("2025-06", "2025-07"):
        r = wanmon("--config", str(reform["path"]), "report", "--month", month, "--format", "html", "--out", "-",
                   cwd=reform["path"].parent)
        assert r.returncode == 0, r.stderr
        html[month] = r.stdout
    june, july = level_names(cfg, REFORM - 1, "vi"), level_names(cfg, REFORM, "vi")
    assert june["district"].name != july["district"].name  # the example renames the levels at the reform
    for lv in ("province", "district", "commune"):
        assert f'<td class="name">{july[lv].name}</td>' in html["2025-07"], lv
        assert f'<td class="name">{june[lv].name}</td>' in html["2025-06"], lv
    assert july["district"].name not in html["2025-06"]


def test_the_network_counts_a_site_below_target_by_its_whole_period_not_by_a_stretch():
    """A commune split at its move: 10 s down in its first half-hour (99.44 % there, below 99.5)
    and none in the second: its old district has it below target for its time there, the new one
    not, and the network not (99.72 % over the hour): "N sites below target" counts sites."""
    def row(district: str, down: float, a: float, b: float) -> rp.SiteRow:
        f = account.Figures(available_s=1800 - down, down_s=down)
        f.below_target = int(f.availability_pct < 99.5)
        return rp.SiteRow("c", "UBND xã Chuyển", "commune", district, f, a, b)

    rows = [row("Huyện Một", 10, A, T), row("Huyện Hai", 0, T, A + H)]
    levels, groups, total = rp._sums(rows, None, 99.5)
    assert (groups["Huyện Một"].below_target, groups["Huyện Hai"].below_target) == (1, 0)
    assert (total.sites, total.below_target) == (1, 0) and total.availability_pct == pytest.approx(100 * 3590 / 3600)
    assert (levels["commune"].sites, levels["commune"].below_target) == (1, 0)  # a commune all the hour: 99.72 %
    rows[1] = row("Huyện Hai", 20, T, A + H)  # 30 s down in the hour: 99.17 %, below
    assert rp._sums(rows, None, 99.5)[2].below_target == 1


@pytest.mark.parametrize("seed", range(60))
def test_the_sums_count_each_site_once_per_sum_and_judge_its_whole_time_there(seed):
    """_sums against a plain reference: per level, group and over all, each site counted once, below
    target by its available over observed time in that sum; sites of one, two (its own fast path)
    and three rows, levels and groups alike or not, groups missing (None)."""
    rnd = random.Random(seed)
    target = 99.0
    rows = []
    for n in range(rnd.randint(1, 40)):
        for _ in range(rnd.choice((1, 1, 2, 2, 3))):
            f = account.Figures(available_s=rnd.choice((0.0, 1.0, 980.0, 995.0, 1000.0)),
                                down_s=rnd.choice((0.0, 5.0, 30.0)), unreachable_s=rnd.choice((0.0, 2.0)),
                                outages=rnd.randint(0, 2))
            f.below_target = int(f.availability_pct is not None and f.availability_pct < target)
            rows.append(rp.SiteRow(f"s{n}", "x", rnd.choice(("commune", "district")), rnd.choice(("D1", "D2", None)),
                                   f))
    levels, groups, total = rp._sums(rows, None, target)

    def reference(member) -> tuple[int, int, float, float]:
        mine: dict[str, list[float]] = {}
        for r in rows:
            if member(r):
                t = mine.setdefault(r.id, [0.0, 0.0])
                t[0] += r.figures.available_s
                t[1] += r.figures.observed_s
        below = sum(1 for a, o in mine.values() if o > 0 and 100 * a / o < target)
        return len(mine), below, sum(t[0] for t in mine.values()), sum(t[1] for t in mine.values())

    def got(g: account.Figures) -> tuple[int, int, float, float]:
        return g.sites, g.below_target, g.available_s, g.observed_s

    assert got(total) == pytest.approx(reference(lambda r: True))
    for lv in ("commune", "district"):
        assert got(levels[lv]) == pytest.approx(reference(lambda r: r.level == lv)), lv
    for d in ("D1", "D2"):
        want = reference(lambda r: r.district == d)
        assert (got(groups[d]) if d in groups else (0, 0, 0.0, 0.0)) == pytest.approx(want), d
    assert set(groups) <= {"D1", "D2"}
