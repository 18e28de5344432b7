"""The status page of a dated inventory (README "Dated inventory"): today's tree, a site's old
keys, sites out of service, and the levels' names from [page.level_names].

Histories are written into real stores with Store.record_cycle (test_page.record: the sites in
service at each cycle, with their keys then, as `check` records them) and rendered at a given
instant in-process (test_page.render with `now`), or by the real CLI (`check`, `render`) on
the wall clock with instants written relative to it.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest
from conftest import wanmon
from test_page import (
    SMALL,
    VN,
    BeautifulSoup,
    cards,
    group_name,
    groups,
    level_table,
    record,
    render,
    rows_by_id,
    vn_time,
    write_config,
)

from wanmon.config import load as load_config
from wanmon.text import fold
from wanmon.words import LEVEL_NAMES, Fmt, level_names

REFORM = "2025-07-01T00:00:00+07:00"
T = datetime.fromisoformat(REFORM).timestamp()
HOUR, DAY = 3600.0, 86400.0
P, D1, C1, C2, D2, C3 = "dc-core", "tien-du", "tien-du-phat-tich", "tien-du-lien-bao", "tu-son", "tu-son-dong-ngan"
GONE, LATER = "tien-du-noi-due", "tu-son-tan-hong"  # retired 2 h before T; enters service 10 days after


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, VN).isoformat(timespec="seconds")


def dated_small(t: float = T) -> str:
    """SMALL, where Phật Tích (C1) moves from Tiên Du to Từ Sơn at t, renamed and re-homed; plus a
    commune retired 2 h before t and one that enters service 10 days after it."""
    text = SMALL.replace(
        'parent = "tien-du"\naddress = "127.10.4.11"\n',
        f'parent = "tien-du"\naddress = "127.10.4.11"\n\n  [[sites.changes]]\n  at = {_iso(t)}\n'
        '  district = "Từ Sơn"\n  parent = "tu-son"\n  name = "Điểm cầu xã Phật Tích (nay thuộc Từ Sơn)"\n',
    )
    assert text != SMALL
    return (
        text
        + f"""
[[sites]]
id = "{GONE}"
name = "UBND xã Nội Duệ"
level = "commune"
district = "Tiên Du"
parent = "tien-du"
address = "127.10.4.13"
retired_at = {_iso(t - 2 * HOUR)}

[[sites]]
id = "{LATER}"
name = "UBND phường Tân Hồng"
level = "commune"
district = "Từ Sơn"
parent = "tu-son"
address = "127.10.5.12"
in_service_from = {_iso(t + 10 * DAY)}
"""
    )


def cycles(start: float, end: float, rule) -> list:
    """A cycle a minute in [start, end): (ts, {site: own status})."""
    n = int((end - start) // 60)
    return [(start + 60 * i, rule(start + 60 * i)) for i in range(n)]


def c1_down(ts: float) -> dict[str, str]:
    """Phật Tích down from T - 2 h on (across its move); Nội Duệ down in its last half hour."""
    own = {C1: "down"} if ts >= T - 2 * HOUR else {}
    if ts >= T - 2.5 * HOUR:
        own[GONE] = "down"
    return own


@pytest.fixture(scope="module")
def moved(tmp_path_factory):
    """The page an hour before T, then (the same store, an hour and more of cycles later) 2 h after."""
    folder = tmp_path_factory.mktemp("moved")
    cfg = write_config(folder, dated_small())
    out = {}
    record(cfg, cycles(T - 3 * HOUR, T - HOUR, c1_down))
    out["before"] = render(cfg, folder / "before", T - HOUR + 30)
    record(cfg, cycles(T - HOUR, T + 2 * HOUR, c1_down))
    out["after"] = render(cfg, folder / "after", T + 2 * HOUR + 30)
    return out


def _group_ids(soup) -> dict[str, set[str]]:
    """{group name: its site ids} (the province section under "")."""
    out = {}
    for d, (_, ids) in zip(soup.select("main details.group"), groups(soup)):
        out[group_name(d) if "district" in d["class"] else ""] = set(ids)
    return out


def test_before_the_instant_the_commune_is_under_its_first_district(moved):
    soup, data, _ = moved["before"]
    assert _group_ids(soup) == {"": {P}, "Tiên Du": {D1, C1, C2}, "Từ Sơn": {D2, C3}}
    assert data["sites"][C1]["district"] == "Tiên Du" and data["sites"][C1]["before"] is None
    row = rows_by_id(soup)[C1]
    assert row.select_one("div.name").get_text() == "UBND xã Phật Tích"
    assert not row.select("div.was")  # nothing changed yet: no note
    tien_du = next(d for d in data["districts"] if d["name"] == "Tiên Du")
    assert tien_du["communes"] == [C1, C2] and tien_du["badge"] == "partial"


def test_after_the_instant_the_commune_is_under_its_new_district_with_its_old_group_shown(moved):
    soup, data, _ = moved["after"]
    assert _group_ids(soup) == {"": {P}, "Tiên Du": {D1, C2}, "Từ Sơn": {D2, C1, C3}}
    c1 = data["sites"][C1]
    assert (c1["district"], c1["parent"], c1["name"]) == ("Từ Sơn", D2, "Điểm cầu xã Phật Tích (nay thuộc Từ Sơn)")
    assert c1["before"] == {
        "at": T,
        "name": "UBND xã Phật Tích",
        "district": "Tiên Du",
        "level": "commune",
        "parent": D1,
        "parent_name": "UBND huyện Tiên Du",
    }
    row = rows_by_id(soup)[C1]
    assert (
        row.select_one("div.was").get_text()
        == "trước 01/07/2025: UBND xã Phật Tích, huyện Tiên Du, tuyến trên UBND huyện Tiên Du"
    )
    # typing its old name or its old district finds it
    assert fold("Phật Tích") in row["data-search"] and fold("Tiên Du") in row["data-search"]
    # the problem is counted under the district of now: Từ Sơn's badge, not Tiên Du's
    badges = {
        group_name(d): d.select_one("summary .badge").get_text(" ", strip=True) for d in soup.select("details.district")
    }
    assert badges == {"Tiên Du": "● Hoạt động", "Từ Sơn": "◐ 1/2 xã có sự cố"}
    tu_son = next(d for d in data["districts"] if d["name"] == "Từ Sơn")
    sites = data["sites"]
    for w in ("24h", "7d", "30d"):  # its availability: its sites', Phật Tích's whole history included
        avail = sum(sites[i]["availability"][w] / 100 * sites[i]["observed_s"][w] for i in (D2, C1, C3))
        observed = sum(sites[i]["observed_s"][w] for i in (D2, C1, C3))
        assert tu_son["availability"][w] == pytest.approx(100 * avail / observed, abs=1e-6)
    assert sites[C1]["observed_s"]["24h"] == pytest.approx(5 * HOUR + 30, abs=1)  # before and after the move


def test_sites_out_of_service_are_neither_listed_nor_down_nor_unobserved(moved):
    for key in ("before", "after"):
        soup, data, _ = moved[key]
        assert GONE not in data["sites"] and LATER not in data["sites"]
        assert GONE not in rows_by_id(soup) and LATER not in rows_by_id(soup)
        assert data["counts"]["unknown"] == 0 and sum(cards(soup).values()) == 6
        assert not any(p["site"] in (GONE, LATER) for p in data["problems"])
        assert data["out_of_service"] == {"retired": [GONE], "upcoming": [LATER], "upcoming_from": T + 10 * DAY}
        assert soup.select_one("#out-of-service").get_text() == (
            "1 điểm đã ngừng phục vụ trong 30 ngày qua · 1 điểm sẽ vào phục vụ, sớm nhất từ 11/07/2025 "
            "(không tính là mất kết nối, không có trong danh sách)."
        )
        # Nội Duệ was down when it left service: its outage ended then, it is not going on
        (gone,) = [i for i in data["incidents"] if i["site"] == GONE]
        assert (gone["kind"], gone["start"], gone["end"]) == ("down", T - 2.5 * HOUR, T - 2 * HOUR)
        line = next(tr for tr in soup.select("table.incidents tr.incident") if GONE in tr.get_text())
        assert "đang diễn ra" not in line.get_text() and vn_time(T - 2 * HOUR) in line.get_text()


def test_an_undated_page_has_no_note_and_no_out_of_service_line(tmp_path):
    cfg = write_config(tmp_path, SMALL)
    record(cfg, cycles(T - HOUR, T, lambda ts: {}))
    soup, data, _ = render(cfg, tmp_path / "out", T)
    assert all(s["before"] is None for s in data["sites"].values())
    assert data["out_of_service"] == {"retired": [], "upcoming": [], "upcoming_from": None}
    assert soup.select_one("#out-of-service") is None and not soup.select("div.was")
    assert soup.select_one("#levels-since") is None


def test_check_and_render_on_the_wall_clock_show_todays_tree(tmp_path):
    """`wanmon check` (its cycle's view) and `wanmon render` (the whole config) write the same
    tree: the change of a day ago applied, the retired and the future site absent."""
    cfg = write_config(tmp_path, dated_small(time.time() - DAY))
    r = wanmon("--config", str(cfg), "check", cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    pages = {}
    for how in ("check", "render"):
        if how == "render":
            r = wanmon("--config", str(cfg), "render", cwd=tmp_path)
            assert r.returncode == 0, r.stderr
        html = (tmp_path / "public" / "index.html").read_text(encoding="utf-8")
        data = json.loads((tmp_path / "public" / "status.json").read_text(encoding="utf-8"))
        pages[how] = (BeautifulSoup(html, "html.parser"), data)
    for soup, data in pages.values():
        assert _group_ids(soup) == {"": {P}, "Tiên Du": {D1, C2}, "Từ Sơn": {D2, C1, C3}}
        assert sorted(data["sites"]) == sorted([P, D1, C1, C2, D2, C3])
        assert data["counts"]["up"] == 6  # loopback answers: Phật Tích, checked as of now, too
        assert rows_by_id(soup)[C1].select_one("div.was").get_text().startswith("trước ")


# ----------------------------------------------------------------------------
# the levels' names: [page.level_names], dated

LEVEL_NAMES_TOML = f"""
[page.level_names]
vi.province = "Cơ quan tỉnh"
en.province = "Provincial bodies"

[[page.level_names.changes]]
at = {REFORM}
vi.district = {{ name = "UBND xã, phường mới", noun = "xã/phường", heading = "Xã/phường" }}
vi.commune = {{ name = "Điểm cầu", noun = "điểm cầu" }}
en.district = {{ name = "New communes and wards", noun = "unit", nouns = "units", heading = "Unit" }}
en.commune = {{ name = "Connection points", noun = "connection point", nouns = "connection points" }}
"""


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    """SMALL with level names changed at T; Tiên Du's router down with its 2 communes behind it
    and Từ Sơn's commune down, before and after T, in Vietnamese and English."""
    folder = tmp_path_factory.mktemp("named")
    vi = write_config(folder, SMALL + LEVEL_NAMES_TOML)
    en = write_config(
        folder,
        SMALL + LEVEL_NAMES_TOML.replace("[page.level_names]", '[page]\nlanguage = "en"\n\n[page.level_names]'),
        name="sites-en.toml",
    )
    record(
        vi, cycles(T - 2 * HOUR, T + HOUR, lambda ts: dict.fromkeys((D1, C1, C2, C3), "down") if ts >= T - HOUR else {})
    )
    out = {}
    for lang, cfg in (("vi", vi), ("en", en)):
        for when, now in (("before", T - 30 * 60), ("after", T + 30 * 60)):
            out[lang, when] = render(cfg, folder / f"{lang}-{when}", now)[0]
    return out


def _words(soup) -> dict[str, object]:
    """What the page says with the levels' words: its level table, province heading, incident
    column, district badges, the "now" entry's count and the filter's hint."""
    return {
        "levels": list(level_table(soup)),
        "province": soup.select_one("details#g-province summary").get_text(" ", strip=True).split(" · ")[0],
        "column": soup.select("table.incidents th")[4].get_text(),
        "badges": [d.select_one("summary .badge").get_text(" ", strip=True) for d in soup.select("details.district")],
        "impact": soup.select_one("ul.causes .impact").get_text(),
        "hint": soup.select_one("#filter")["placeholder"],
        "since": soup.select_one("#levels-since").get_text() if soup.select_one("#levels-since") else None,
    }


def test_level_names_follow_the_configured_words_of_the_day(named):
    assert _words(named["vi", "before"]) == {
        "levels": ["Cơ quan tỉnh", "UBND cấp huyện", "UBND cấp xã"],
        "province": "● Hoạt động Sở, ban, ngành và Trung tâm dữ liệu tỉnh",
        "column": "Huyện",
        "badges": ["✖ Mất kết nối", "◐ 1/1 xã có sự cố"],
        "impact": "2 xã không tới được",
        "hint": "Tìm theo tên, mã, huyện…",
        "since": None,
    }
    assert _words(named["vi", "after"]) == {
        "levels": ["Cơ quan tỉnh", "UBND xã, phường mới", "Điểm cầu"],
        "province": "● Hoạt động Sở, ban, ngành và Trung tâm dữ liệu tỉnh",
        "column": "Xã/phường",
        "badges": ["✖ Mất kết nối", "◐ 1/1 điểm cầu có sự cố"],
        "impact": "2 điểm cầu không tới được",
        "hint": "Tìm theo tên, mã, xã/phường…",
        "since": "Các cấp từ 01/07/2025: UBND xã, phường mới (trước đó: UBND cấp huyện) · "
        "Điểm cầu (trước đó: UBND cấp xã).",
    }
    assert _words(named["en", "after"]) == {
        "levels": ["Provincial bodies", "New communes and wards", "Connection points"],
        "province": "● Up Provincial agencies and data centre",
        "column": "Unit",
        "badges": ["✖ Down", "◐ 1 of 1 connection point with problems"],
        "impact": "2 connection points unreachable",
        "hint": "Search by name, id, unit…",
        "since": "Levels since 2025-07-01: New communes and wards (before: District People's Committees) · "
        "Connection points (before: Commune People's Committees).",
    }
    assert _words(named["en", "before"])["levels"] == [
        "Provincial bodies",
        "District People's Committees",
        "Commune People's Committees",
    ]


def test_level_names_function_for_the_report(write_config):
    """level_names(cfg, ts, language): wanmon's words, then the file's, then its changes up to ts."""
    cfg = load_config(write_config(SMALL + LEVEL_NAMES_TOML))
    assert level_names(cfg, T - 1, "vi")["district"] == LEVEL_NAMES["vi"]["district"]
    assert level_names(cfg, T - 1, "vi")["province"].name == "Cơ quan tỉnh"
    assert level_names(cfg, T - 1, "vi")["province"].heading == LEVEL_NAMES["vi"]["province"].heading
    after = level_names(cfg, T, "vi")
    assert (after["district"].name, after["district"].noun, after["district"].heading) == (
        "UBND xã, phường mới",
        "xã/phường",
        "Xã/phường",
    )
    assert (after["commune"].noun, after["commune"].nouns, after["commune"].heading) == ("điểm cầu", "điểm cầu", "Xã")
    assert level_names(cfg, T, "vi", before=True) == level_names(cfg, T - 1, "vi")
    en = level_names(cfg, T + DAY, "en")
    assert (en["commune"].count(1), en["commune"].count(2)) == ("connection point", "connection points")
    undated = load_config(write_config(SMALL, name="plain.toml"))
    assert level_names(undated, T, "en") == LEVEL_NAMES["en"]


@pytest.mark.parametrize(
    "ts,vi,en",
    [
        (T, "01/07/2025", "2025-07-01"),  # a midnight in the page's time zone: the day
        (T + 14 * HOUR + 30 * 60, "01/07/2025 14:30", "2025-07-01 14:30"),  # else the minute
        (T + 7 * HOUR, "01/07/2025 07:00", "2025-07-01 07:00"),  # midnight UTC is not one here
    ],
)
def test_an_instant_is_a_day_when_it_is_a_midnight_of_the_page(ts, vi, en):
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Asia/Ho_Chi_Minh")
    assert (Fmt("vi", tz).when(ts), Fmt("en", tz).when(ts)) == (vi, en)


def test_an_old_name_is_literal_text(tmp_path):
    """A name from the file is data, in the note of a renamed site too."""
    from test_page import HOSTILE

    text = SMALL.replace('name = "UBND xã Liên Bão"', f"name = '{HOSTILE[0]}{HOSTILE[1]}'").replace(
        'address = "127.10.4.12"\n', f'address = "127.10.4.12"\n[[sites.changes]]\nat = {REFORM}\nname = "Liên Bão"\n'
    )
    cfg = write_config(tmp_path, text)
    record(cfg, cycles(T - HOUR, T + HOUR, lambda ts: {}))
    soup, _, html = render(cfg, tmp_path / "out", T + HOUR)
    assert rows_by_id(soup)[C2].select_one("div.was").get_text() == f"trước 01/07/2025: {HOSTILE[0]}{HOSTILE[1]}"
    assert soup.find("img") is None and len(soup.find_all("script")) == 1  # the page's own script only
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
