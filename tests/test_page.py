"""The static status page (index.html + status.json): structure, numbers, formatting, safety.

Everything goes through the real CLI (`wanmon check`, `wanmon render`) in a
subprocess. Known histories are written straight into the store with
`Store.record_cycle`, exactly as a real cycle records them (samples, hourly
rollups, site state, status-change events), at past timestamps relative to
now, so `render` (which uses the wall clock) sees them where they belong.

The HTML is read with BeautifulSoup (the stdlib html.parser builder), the
way a browser would see the document, never with regexes on the markup.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import threading
import time
import tomllib
import unicodedata
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import prereq

from conftest import REPO, wanmon

bs4 = prereq.need_module("bs4", what="beautifulsoup4 (a test extra)")
BeautifulSoup = bs4.BeautifulSoup

from wanmon.config import load as load_config  # noqa: E402
from wanmon.model import DeviceState, Observation, SnmpOutcome  # noqa: E402
from wanmon.inventory import Inventory  # noqa: E402
from wanmon.status import with_parents  # noqa: E402
from wanmon.store import Store  # noqa: E402

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
SSTI = "{{7*7}}"
HOSTILE = (SCRIPT, IMG, SSTI)
STATUSES = ("up", "degraded", "down", "unreachable", "unknown")
VN = timezone(timedelta(hours=7))  # Asia/Ho_Chi_Minh: UTC+7, no DST since 1975
NB = "\u00a0"  # the page joins a number to its unit (a count to its noun) with a no-break space


# ----------------------------------------------------------------------------
# helpers: configs, histories, reading the page


def shipped_config(folder: Path, *, page: str = "", names: dict[str, str] | None = None) -> Path:
    """Copy the shipped 177-site sites.toml into folder with SNMP off (keeps `check` fast and
    on loopback), optional site renames (TOML literal strings) and an optional [page] table."""
    lines = (REPO / "sites.toml").read_text(encoding="utf-8").splitlines()
    start = lines.index("[snmp]")
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("["))
    key = next((i for i in range(start + 1, end) if re.match(r"enabled\s*=", lines[i])), None)
    if key is None:
        lines.insert(start + 1, "enabled = false")
    else:
        lines[key] = "enabled = false"
    for sid, name in (names or {}).items():
        i = lines.index(f'id = "{sid}"')
        j = next(k for k in range(i, i + 10) if lines[k].startswith("name = "))
        assert "'" not in name and "\n" not in name
        lines[j] = f"name = '{name}'"
    if page and "[page]" in lines:  # the shipped file has a [page] table: the given keys replace its own
        at = lines.index("[page]")
        end = next((i for i in range(at + 1, len(lines)) if lines[i].startswith("[")), len(lines))
        keys = {ln.split("=")[0].strip() for ln in page.splitlines() if "=" in ln}
        lines[at + 1:end] = [ln for ln in lines[at + 1:end] if ln.split("=")[0].strip() not in keys]
        lines.insert(at + 1, page)
        page = ""
    text = "\n".join(lines) + "\n" + (f"\n[page]\n{page}\n" if page else "")
    raw = tomllib.loads(text)
    assert raw["snmp"]["enabled"] is False and len(raw["sites"]) == 177
    path = folder / "sites.toml"
    path.write_text(text, encoding="utf-8")
    return path


SMALL = """\
[store]
path = "var/wanmon.db"

[snmp]
enabled = false

[[sites]]
id = "dc-core"
name = "Trung tâm dữ liệu"
level = "province"
address = "127.0.0.1"

[[sites]]
id = "tien-du"
name = "UBND huyện Tiên Du"
level = "district"
district = "Tiên Du"
parent = "dc-core"
address = "127.10.4.1"

[[sites]]
id = "tien-du-phat-tich"
name = "UBND xã Phật Tích"
level = "commune"
district = "Tiên Du"
parent = "tien-du"
address = "127.10.4.11"

[[sites]]
id = "tien-du-lien-bao"
name = "UBND xã Liên Bão"
level = "commune"
district = "Tiên Du"
parent = "tien-du"
address = "127.10.4.12"

[[sites]]
id = "tu-son"
name = "UBND thị xã Từ Sơn"
level = "district"
district = "Từ Sơn"
parent = "dc-core"
address = "127.10.5.1"

[[sites]]
id = "tu-son-dong-ngan"
name = "UBND phường Đông Ngàn"
level = "commune"
district = "Từ Sơn"
parent = "tu-son"
address = "127.10.5.11"
"""


def write_config(folder: Path, text: str, name: str = "sites.toml", page: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text + (f"\n[page]\n{page}\n" if page else ""), encoding="utf-8")
    return path


def observation(site, ts: float, status: str) -> Observation:
    """A realistic observation: 3 echo requests; degraded = 1 of 3 lost; down/unreachable = none back."""
    got = {"up": 3, "degraded": 2}.get(status, 0)
    rtt = 4.0 + len(site.id) % 7 if got else None
    reason = None
    if status == "down":
        reason = "timeout"
    elif status == "unreachable":
        reason = f"parent '{site.parent}' is down; timeout"
    return Observation(
        site_id=site.id, name=site.name, level=site.level, district=site.district, address=site.address, ts=ts,
        status=status, reason=reason, sent=3, received=got, loss_pct=100.0 * (3 - got) / 3,
        rtt_min_ms=rtt and rtt - 1, rtt_avg_ms=rtt, rtt_max_ms=rtt and rtt + 1, jitter_ms=rtt and 0.5,
    )


def record(cfg_path: Path, cycles, snmp_last=()) -> dict[str, dict]:
    """Record cycles [(ts, {site_id: own status, default up})] in order, as real cycles are:
    a silent child of a down parent becomes unreachable (wanmon.status.with_parents); the sites
    in service at ts, with their keys then.
    snmp_last: SNMP outcomes stored with the last cycle. Returns the final statuses."""
    cfg = load_config(cfg_path, secrets=False)
    store = Store.open(cfg.store_path)
    final: dict[str, str] = {}
    inv = None
    try:
        cycles = list(cycles)
        for n, (ts, own) in enumerate(cycles):
            view = cfg.as_of(ts)  # a dated inventory: the sites in service then, their keys then (as `check`)
            if inv is None or inv.sites is not view.sites:
                inv = Inventory.from_config(view)
            final = with_parents({s.id: own.get(s.id, "up") for s in view.sites}, inv.by_id)
            obs = [observation(s, ts, final[s.id]) for s in view.sites]
            store.record_cycle(ts, ts + 1.5, obs, snmp=snmp_last if n == len(cycles) - 1 else ())
    finally:
        store.close()
    return final


def render(cfg_path: Path, out: Path, now: float | None = None) -> tuple[BeautifulSoup, dict, str]:
    """`wanmon render` as a user runs it; with `now`, the same page written in this process at
    that instant (figures that depend on the time of rendering stay exact)."""
    if now is None:
        r = wanmon("--config", str(cfg_path), "render", "--out", str(out), cwd=cfg_path.parent)
        assert r.returncode == 0, r.stderr
    else:
        from wanmon.page import write_page

        cfg = load_config(cfg_path, secrets=False)
        store = Store.open_readonly(cfg.store_path)
        try:
            write_page(cfg, store, out, now)
        finally:
            store.close()
    html = (out / "index.html").read_text(encoding="utf-8")
    data = json.loads((out / "status.json").read_text(encoding="utf-8"))
    return BeautifulSoup(html, "html.parser"), data, html


def row_id(tr) -> str:
    """A site row's id: the first part of its `id · address` line."""
    return tr.select_one("div.meta").get_text().split(" · ")[0].strip()


def rows_by_id(soup) -> dict[str, object]:
    out = {}
    for tr in soup.select("tr.site"):
        sid = row_id(tr)
        assert sid not in out, f"site {sid} appears twice"
        out[sid] = tr
    return out


def avail_cells(tr) -> list[str]:
    """The 24h / 7d / 30d availability cells: the last three numeric cells."""
    return [td.get_text(strip=True) for td in tr.find_all("td", class_="num")[-3:]]


def level_table(soup) -> dict[str, list[str]]:
    return {tr.find("td").get_text(strip=True): [td.get_text(strip=True) for td in tr.find_all("td")[1:]]
            for tr in soup.select("table.levels tbody tr")}


def cards(soup) -> dict[str, int]:
    out = {}
    for card in soup.select(".cards .card"):
        badge = card.select_one(".badge")
        st = next(c[3:] for c in badge["class"] if c.startswith("st-"))
        out[st] = int(card.find("b").get_text())
    return out


def groups(soup):
    """[(summary text, [row ids])] for every <details> group, in page order."""
    return [(d.find("summary").get_text(" ", strip=True), [row_id(tr) for tr in d.select("tr.site")])
            for d in soup.select("main details.group")]


def group_name(details) -> str:
    """A district block's name: its summary after the status badge, up to the first ' · '."""
    summary = details.find("summary")
    badge = summary.select_one(".badge").get_text(" ", strip=True)
    return summary.get_text(" ", strip=True)[len(badge):].strip().split(" · ")[0]


def vn_time(ts: float) -> str:
    """dd/mm/yyyy HH:MM in Vietnam (UTC+7), computed without zoneinfo."""
    return (datetime.fromtimestamp(ts, timezone.utc).astimezone(VN)).strftime("%d/%m/%Y %H:%M")


# ----------------------------------------------------------------------------
# the shipped 177-site inventory after a real `wanmon check`


@pytest.fixture(scope="module")
def checked177(tmp_path_factory):
    folder = tmp_path_factory.mktemp("p177")
    cfg = shipped_config(folder)
    r = wanmon("--config", str(cfg), "check", cwd=folder, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    out = folder / "public"  # [page] out_dir default, relative to the config file
    html = (out / "index.html").read_text(encoding="utf-8")
    return {"cfg": cfg, "out": out, "html": html, "soup": BeautifulSoup(html, "html.parser"),
            "data": json.loads((out / "status.json").read_text(encoding="utf-8")),
            "raw": tomllib.loads(cfg.read_text(encoding="utf-8"))}


def test_check_writes_page_with_all_177_sites_once(checked177):
    soup, raw = checked177["soup"], checked177["raw"]
    ids = [s["id"] for s in raw["sites"]]
    rows = [row_id(tr) for tr in soup.select("tr.site")]
    assert len(rows) == 177 and sorted(rows) == sorted(ids)  # each exactly once
    names = {row_id(tr): tr.select_one("div.name").get_text() for tr in soup.select("tr.site")}
    assert names == {s["id"]: s["name"] for s in raw["sites"]}
    assert soup.html["lang"] == "vi"
    # no <meta refresh> (it threw away the filter and the open groups): the script reloads, keeping them
    assert soup.find("meta", attrs={"http-equiv": "refresh"}) is None
    assert soup.find(id="refresh-note").get_text() == f"Trang tự cập nhật mỗi 60{NB}giây."
    assert soup.title.get_text() == "Tình trạng mạng WAN tỉnh Bắc Ninh"
    assert not soup.select(".banner")  # fresh data: no stale banner


def test_grouping_province_then_8_districts_with_their_communes(checked177):
    soup, raw = checked177["soup"], checked177["raw"]
    sites = raw["sites"]
    by_id = {s["id"]: s for s in sites}
    province = [s["id"] for s in sites if s["level"] == "province"]
    order = list(dict.fromkeys(s["district"] for s in sites if s.get("district")))
    assert len(order) == 8

    got = groups(soup)
    assert len(got) == 9  # province + 8 districts, one <details> each
    assert soup.select("main details")[0].get("class") == ["group"]
    assert len(soup.select("main details.group.district")) == 8
    head, prov_rows = got[0]
    assert prov_rows == province and len(province) == 35
    assert f"35{NB}điểm" in head
    for name, (summary, ids) in zip(order, got[1:]):
        dsites = [s["id"] for s in sites if s["level"] == "district" and s.get("district") == name]
        communes = [s["id"] for s in sites if s["level"] == "commune" and s.get("district") == name]
        assert summary.split(" · ")[0].endswith(name), summary
        assert f"· {len(dsites) + len(communes)}{NB}điểm" in summary
        assert ids == dsites + communes  # district-level sites first, then its communes
        ubnd = dsites[0]
        for c in communes:  # every commune hangs from a site of its own district block
            assert by_id[c]["parent"] in dsites, c
        assert by_id[ubnd]["parent"] == "dc-core"
    total = sum(len(ids) for _, ids in got)
    assert total == 177


def test_nothing_wrong_is_one_line_and_every_group_closed(checked177):
    soup, data = checked177["soup"], checked177["data"]
    assert data["problems"] == [] and data["counts"]["up"] == 177
    now = soup.select_one("section#now")
    assert now.select_one("p.allok").get_text(" ", strip=True) == "● Hoạt động Tất cả 177 điểm đều hoạt động bình thường."
    assert not now.select("ul.causes")
    groups_ = soup.select("details.group")
    assert len(groups_) == 9 and not any(d.has_attr("open") for d in groups_)  # the province group too
    # the summary cards are links to the list filtered by their status
    assert [a["href"] for a in soup.select(".cards a.card")] == ["#st=up", "#st=degraded", "#st=down",
                                                                  "#st=unreachable", "#st=unknown"]


def test_partial_district_badge_degraded_figures_and_snmp_line(tmp_path):
    """Communes with problems under a router that is up: the district's badge says 'n/m xã'
    (not the router's red); a degraded site says which threshold; an up site whose agent is
    silent gets a quieter line."""
    cfg = write_config(tmp_path, SMALL)
    t0 = time.time() - 300
    silent = DeviceState(site_id=D2, status="timeout", reason="timeout", last_poll_ts=t0 + 120, last_ok_ts=t0 - 600,
                         sys_name="r", fail_streak=3, fail_since=t0 - 60)
    record(cfg, [(t0 + 60 * i, {C3: "down", C1: "degraded"}) for i in range(3)],
           snmp_last=[SnmpOutcome(device=silent, interfaces=None, events=[])])
    soup, data, _ = render(cfg, tmp_path / "out")
    kinds = [(p["kind"], p["site"]) for p in data["problems"]]
    assert kinds == [("down", C3), ("degraded", C1), ("snmp", D2)], kinds
    causes = [li.get_text(" ", strip=True) for li in soup.select("ul.causes > li")]
    assert causes[0].startswith("✖ Mất kết nối UBND phường Đông Ngàn mất kết nối từ ") and causes[0].endswith("· Từ Sơn")
    assert causes[1] == f"▲ Suy giảm UBND xã Phật Tích mất gói 33{NB}% ≥ 10{NB}% · Tiên Du", causes
    assert soup.select_one("details.quietbox").has_attr("open")  # a few: shown; more than 10: one closed line
    (quiet,) = [li.get_text(" ", strip=True) for li in soup.select("ul.quiet li")]
    assert quiet == f"UBND thị xã Từ Sơn (tu-son) : không có phản hồi SNMP từ {vn_time(t0 - 60)}", quiet
    badges = {group_name(d): d.select_one("summary .badge").get_text(" ", strip=True) for d in soup.select("details.district")}
    assert badges == {"Tiên Du": "◐ 1/2 xã có sự cố", "Từ Sơn": "◐ 1/1 xã có sự cố"}, badges
    assert all(d.has_attr("open") for d in soup.select("details.district"))
    assert not soup.select_one("details#g-province").has_attr("open")  # all up: closed


def test_summary_counts_match_rows_and_json(checked177):
    soup, data = checked177["soup"], checked177["data"]
    c = cards(soup)
    assert list(c) == ["up", "degraded", "down", "unreachable", "unknown"]
    by_row = {st: len(soup.select(f'tr.site[data-status="{st}"]')) for st in STATUSES}
    assert c == by_row == data["counts"]
    assert sum(c.values()) == 177
    assert c["up"] == 177  # the shipped placeholders are all on loopback: every one answers
    assert data["last_cycle"]["sites"] == 177 and data["last_cycle"]["up"] == 177
    for d in data["districts"]:
        assert d["status"] == "up" and sum(d["counts"].values()) == len(d["sites"]) + len(d["communes"])


def test_status_json_has_the_page_data(checked177):
    soup, data = checked177["soup"], checked177["data"]
    rows = [row_id(tr) for tr in soup.select("tr.site")]
    assert list(data["sites"]) == rows  # same sites, same order
    assert [g["name"] for g in data["districts"]] == [group_name(d) for d in soup.select("details.district")]
    assert data["province"]["sites"] == groups(soup)[0][1]
    for d, (_, ids) in zip(data["districts"], groups(soup)[1:]):
        assert d["sites"] + d["communes"] == ids
    table = level_table(soup)
    for lv, label in (("province", "Cơ quan cấp tỉnh"), ("district", "UBND cấp huyện"), ("commune", "UBND cấp xã")):
        assert table[label] == ["100,00%"] * 3
        assert data["levels"][lv] == {"24h": 100.0, "7d": 100.0, "30d": 100.0}
    for s in data["sites"].values():
        assert s["status"] == "up" and s["observed_s"]["24h"] > 0
    assert data["stale"] is False and data["refresh_s"] == 60


def test_page_files_are_written_atomically_and_readers_never_see_half_a_file(checked177, tmp_path):
    cfg, out = checked177["cfg"], tmp_path / "web"
    render(cfg, out)
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "index.html.gz", "status.json", "status.json.gz", "tree.html", "tree.html.gz"]
    for name in ("index.html", "status.json", "tree.html"):  # the .gz copies are the files, byte for byte
        assert gzip.decompress((out / (name + ".gz")).read_bytes()) == (out / name).read_bytes()
    for p in out.iterdir():
        assert p.stat().st_mode & 0o777 == 0o644
    size = (out / "index.html").stat().st_size
    assert size > 100_000  # large enough that a non-atomic write would be caught mid-way

    stop = threading.Event()
    seen = {"reads": 0, "bad": []}

    def reader():
        while not stop.is_set():
            try:
                text = (out / "status.json").read_text(encoding="utf-8")
                json.loads(text)
                for name in ("index.html", "tree.html"):
                    html = (out / name).read_text(encoding="utf-8")
                    if not html.startswith("<!DOCTYPE html>") or not html.rstrip().endswith("</html>"):
                        seen["bad"].append((name, len(html)))
                seen["reads"] += 1
            except (ValueError, FileNotFoundError) as exc:  # partial JSON, or a missing file mid-rename
                seen["bad"].append((type(exc).__name__, str(exc)[:80]))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        for _ in range(20):
            render(cfg, out)
    finally:
        stop.set()
        t.join(10)
    assert seen["bad"] == []
    assert seen["reads"] >= 20
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "index.html.gz", "status.json", "status.json.gz", "tree.html", "tree.html.gz"]  # no temp files left


# ----------------------------------------------------------------------------
# a known history, with a gap and known outages, computed by hand
#
# Sites: P = dc-core (province); D1 = tien-du (district) with communes
# C1 = tien-du-phat-tich and C2 = tien-du-lien-bao; D2 = tu-son (district) with
# commune C3 = tu-son-dong-ngan. Blocks of 60 one-minute cycles, oldest first
# (E = the last cycle, 30 s before now). The account (wanmon/account.py): each
# cycle's status holds until the next cycle, at most the cap (2 x 60 s): so in a
# block cycles 0-58 hold 60 s and cycle 59 holds 120 s (3,660 s observed), except
# the last block's cycle 59, which holds until now (30 s: 3,570 s observed).
#
#   X  40 days ago    everything down (P down, the rest unreachable): outside every window
#   D  10 days ago    cycles 0-29: P down, the rest unreachable        -> every site 29 x 60 + 120 = 1,860 s up
#   C   3 days ago    cycles 0-19: D2 down, C3 unreachable             -> D2, C3 39 x 60 + 120 = 2,460; others 3,660
#   A  ~3 h ago       cycles 10-24: D1 down, C1, C2 unreachable;
#                     cycles 40-49: C1 down on its own (parent up);
#                     cycles 0-29: D2 degraded (available)             -> D1, C2 44 x 60 + 120 = 2,760,
#                                                                         C1 34 x 60 + 120 = 2,160, others 3,660
#      then a 2-hour GAP: no cycle at all (agent stopped): unobserved, not downtime
#   B  last hour      cycles 0-29: C3 down on its own;
#                     cycles 57-59 (the last 3): D1 down, C1, C2 unreachable
#                                                                      -> D1, C1, C2 57 x 60 = 3,420,
#                                                                         C3 29 x 60 + 30 = 1,770, others 3,570
#
# 24 h = A + B (7,230 s observed), 7 d = + C (10,890), 30 d = + D (14,550).

P, D1, C1, C2, D2, C3 = "dc-core", "tien-du", "tien-du-phat-tich", "tien-du-lien-bao", "tu-son", "tu-son-dong-ngan"
ALL = (P, D1, C1, C2, D2, C3)
OBS = (7230, 10890, 14550)  # observed seconds in 24h, 7d, 30d
EXPECTED_AVAILABLE = {  # available seconds in 24h, 7d, 30d
    P: (7230, 10890, 12750),
    D1: (6180, 9840, 11700),
    C1: (5580, 9240, 11100),
    C2: (6180, 9840, 11700),
    D2: (7230, 9690, 11550),
    C3: (5430, 7890, 9750),
}
EXPECTED_SITES = {sid: tuple(zip(av, OBS)) for sid, av in EXPECTED_AVAILABLE.items()}


def _sum(ids) -> tuple:
    return tuple((sum(EXPECTED_AVAILABLE[i][k] for i in ids), OBS[k] * len(ids)) for k in range(3))


def _text(pairs, sep: str = ",") -> list[str]:
    return [f"{100.0 * r / n:.2f}".replace(".", sep) + "%" for r, n in pairs]


EXPECTED_SITE_TEXT = {sid: _text(pairs) for sid, pairs in EXPECTED_SITES.items()}
EXPECTED_LEVELS = {"province": _sum([P]), "district": _sum([D1, D2]), "commune": _sum([C1, C2, C3])}
EXPECTED_LEVEL_TEXT_VI = {
    "Cơ quan cấp tỉnh": _text(EXPECTED_LEVELS["province"]),
    "UBND cấp huyện": _text(EXPECTED_LEVELS["district"]),
    "UBND cấp xã": _text(EXPECTED_LEVELS["commune"]),
}
EXPECTED_GROUPS = {name: (*pairs, *_text(pairs))
                   for name, pairs in (("Tiên Du", _sum([D1, C1, C2])), ("Từ Sơn", _sum([D2, C3])))}
WINDOWS = ("24h", "7d", "30d")


def history(now: float):
    """The cycles of the table above: [(ts, {site: own status})], oldest first."""
    end = now - 30
    b0 = end - 59 * 60
    a0 = b0 - 2 * 3600 - 59 * 60  # A's last cycle is 2 h before B's first
    blocks = []

    def block(start, rule):
        return [(start + i * 60, rule(i)) for i in range(60)]

    blocks += block(now - 40 * 86400, lambda i: {P: "down", **{s: "down" for s in ALL}})
    blocks += block(now - 10 * 86400, lambda i: {s: "down" for s in ALL} if i < 30 else {})
    blocks += block(now - 3 * 86400, lambda i: {D2: "down", C3: "down"} if i < 20 else {})

    def rule_a(i):
        own = {}
        if 10 <= i < 25:
            own.update({D1: "down", C1: "down", C2: "down"})
        if 40 <= i < 50:
            own[C1] = "down"
        if i < 30:
            own[D2] = "degraded"
        return own

    def rule_b(i):
        own = {}
        if i < 30:
            own[C3] = "down"
        if i >= 57:
            own.update({D1: "down", C1: "down", C2: "down"})
        return own

    blocks += block(a0, rule_a)
    blocks += block(b0, rule_b)
    return blocks, {"end": end, "b0": b0, "a0": a0, "down_since": b0 + 57 * 60, "c3_up_since": b0 + 30 * 60,
                    "c0": now - 3 * 86400, "d0": now - 10 * 86400, "p0": now - 40 * 86400}


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    """The known history, rendered at once in Vietnamese (default) and English."""
    folder = tmp_path_factory.mktemp("known")
    vi = write_config(folder, SMALL)
    en = write_config(folder, SMALL, name="sites-en.toml", page='language = "en"')  # same store
    now = time.time()
    cycles, marks = history(now)
    final = record(vi, cycles)
    assert final == {P: "up", D1: "down", C1: "unreachable", C2: "unreachable", D2: "up", C3: "up"}
    out = {}
    for lang, cfg in (("vi", vi), ("en", en)):
        soup, data, html = render(cfg, folder / f"out-{lang}", now)
        out[lang] = {"soup": soup, "data": data, "html": html}
    return {"folder": folder, "marks": marks, **out}


def test_availability_per_site_and_level_equals_hand_computation(known):
    data = known["vi"]["data"]
    for sid, pairs in EXPECTED_SITES.items():
        site = data["sites"][sid]
        for w, (r, n) in zip(WINDOWS, pairs):
            assert site["observed_s"][w] == pytest.approx(n, abs=0.01), (sid, w)  # the gap is not observed
            assert site["availability"][w] == pytest.approx(100.0 * r / n), (sid, w)
    for lv, pairs in EXPECTED_LEVELS.items():
        for w, (r, n) in zip(WINDOWS, pairs):
            assert data["levels"][lv][w] == pytest.approx(100.0 * r / n), (lv, w)
    for g in data["districts"]:
        exp = EXPECTED_GROUPS[g["name"]]
        for w, (r, n) in zip(WINDOWS, exp[:3]):
            assert g["availability"][w] == pytest.approx(100.0 * r / n), (g["name"], w)
    assert data["province"]["availability"]["24h"] == 100.0  # P through a 2-hour gap: still 100 %


def test_availability_shown_in_vietnamese_format(known):
    soup = known["vi"]["soup"]
    rows = rows_by_id(soup)
    for sid, text in EXPECTED_SITE_TEXT.items():
        assert avail_cells(rows[sid]) == text, sid
    assert level_table(soup) == EXPECTED_LEVEL_TEXT_VI
    heads = {s.split(" · ")[0]: s for s, _ in groups(soup)}
    for name, exp in EXPECTED_GROUPS.items():
        head = next(v for k, v in heads.items() if k.endswith(name))
        assert f"Sẵn sàng 24{NB}giờ {exp[3]} / 7{NB}ngày {exp[4]} / 30{NB}ngày {exp[5]}" in head
    prov = groups(soup)[0][0]
    assert prov.endswith(f"Sẵn sàng 24{NB}giờ 100,00%")


def test_down_for_3_cycles_shows_since_and_children_unreachable(known):
    soup, data, marks = known["vi"]["soup"], known["vi"]["data"], known["marks"]
    rows = rows_by_id(soup)
    d1 = rows[D1]
    assert d1["data-status"] == "down" and "st-down" in d1["class"]
    assert d1.select_one(".badge").get_text(" ", strip=True) == "✖ Mất kết nối"
    note = d1.select_one("div.note").get_text(" ", strip=True)
    since = marks["down_since"]
    assert note.startswith(f"Mất kết nối từ {vn_time(since)} (")
    assert re.fullmatch(r"Mất kết nối từ \d\d/\d\d/\d{4} \d\d:\d\d \(\d+\xa0phút\)", note), note
    assert data["sites"][D1]["since"] == pytest.approx(since)
    for c in (C1, C2):  # its communes: unreachable, not down, and the page says why
        assert rows[c]["data-status"] == "unreachable"
        assert rows[c].select_one(".badge").get_text(" ", strip=True) == "⊘ Không tới được"
        assert rows[c].select_one("div.note").get_text(" ", strip=True) == \
            "Không tới được vì tuyến trên (UBND huyện Tiên Du) mất kết nối"
        assert data["sites"][c]["parent_name"] == "UBND huyện Tiên Du"
    assert data["counts"] == {"up": 3, "degraded": 0, "down": 1, "unreachable": 2, "unknown": 0}
    assert cards(soup) == data["counts"]
    # the district block is open and says what is wrong; the healthy one stays closed
    tien_du, tu_son = soup.select("details.district")
    assert tien_du.has_attr("open") and not tu_son.has_attr("open")
    head = tien_du.find("summary").get_text(" ", strip=True)
    assert f"· 1{NB}mất kết nối" in head and f"· 2{NB}không tới được" in head
    assert tien_du.select_one("summary .badge").get_text(" ", strip=True) == "✖ Mất kết nối"
    # a site back up shows when it last changed
    assert f"Ở trạng thái này từ: {vn_time(marks['c3_up_since'])}" in rows[C3].get_text(" ", strip=True)
    # incident log: one line per root cause, newest first: the ongoing outage of D1 with the
    # 2 communes it cuts off; C1 and C2 have no line of their own for it
    first = soup.select("table.incidents tbody tr")[0]
    cells = [td.get_text(" ", strip=True) for td in first.find_all("td")]
    assert cells[0] == vn_time(since) and cells[1] == "đang diễn ra", cells
    assert re.fullmatch(r"\d+\xa0phút", cells[2]) and "UBND huyện Tiên Du" in cells[3] and D1 in cells[3], cells
    assert cells[4] == "Tiên Du" and cells[5] == "2 điểm không tới được", cells
    inc = data["incidents"]
    assert inc[0]["site"] == D1 and inc[0]["end"] is None and inc[0]["unreachable"] == 2
    assert not any(i["site"] in (C1, C2) and i["start"] == pytest.approx(since) for i in inc)


def test_now_section_one_entry_per_root_cause_first_on_the_page(known):
    """D1 down with its 2 communes: one entry, first in <main>, that names the communes it cuts off."""
    soup, data, marks = known["vi"]["soup"], known["vi"]["data"], known["marks"]
    assert [(p["kind"], p["site"], p["unreachable"]) for p in data["problems"]] == [("down", D1, [C1, C2])]
    now = soup.select_one("main section#now")
    assert soup.select_one("main").find(["section", "h2", "details", "table"]) is now  # before anything else
    (entry,) = now.select("ul.causes > li")
    text = entry.find("summary").get_text(" ", strip=True)
    assert re.fullmatch(rf"✖ Mất kết nối UBND huyện Tiên Du mất kết nối từ {re.escape(vn_time(marks['down_since']))} "
                        r"\(\d+\xa0phút\) — 2 xã không tới được · Tiên Du", text), text
    assert [li.get_text(" ", strip=True) for li in entry.select(".children li")] == \
        ["UBND xã Phật Tích tien-du-phat-tich", "UBND xã Liên Bão tien-du-lien-bao"]


def test_a_group_shows_its_own_problems_and_folds_the_sites_cut_off_and_the_healthy(known):
    """Tiên Du: its router's row shown; the 2 communes it cuts off behind one click (the
    root cause explains them), like healthy sites would be."""
    soup = known["vi"]["soup"]
    tien_du = next(d for d in soup.select("details.district") if group_name(d) == "Tiên Du")
    body = tien_du.find("div")
    first = body.find("table", recursive=False)
    assert [row_id(tr) for tr in first.select("tr.site")] == [D1]
    cut = body.select_one("details.cut")
    assert not cut.has_attr("open")
    assert cut.find("summary").get_text(" ", strip=True) == "⊘ Không tới được 2 điểm không tới được do tuyến trên mất kết nối"
    assert sorted(row_id(tr) for tr in cut.select("tr.site")) == sorted([C1, C2])


def test_incidents_are_one_line_per_root_cause_equal_to_a_hand_computation(known):
    """From the table above: root causes only (an unreachable period is counted under its
    cause), newest first, ongoing first; P's outage began before the 30 days, at its first
    observation (down when first seen: the start is that, marked first seen)."""
    data, m = known["vi"]["data"], known["marks"]
    got = [(i["site"], i["kind"], i["start"], i["end"], i["unreachable"], i["district"], i["first_seen"])
           for i in data["incidents"]]
    a0, b0, c0, d0, p0 = m["a0"], m["b0"], m["c0"], m["d0"], m["p0"]
    want = [
        (D1, "down", b0 + 57 * 60, None, 2, "Tiên Du", False),
        (C3, "down", b0, b0 + 30 * 60, 0, "Từ Sơn", False),
        (C1, "down", a0 + 40 * 60, a0 + 50 * 60, 0, "Tiên Du", False),
        (D2, "degraded", a0, a0 + 30 * 60, 0, "Từ Sơn", False),
        (D1, "down", a0 + 10 * 60, a0 + 25 * 60, 2, "Tiên Du", False),
        (D2, "down", c0, c0 + 20 * 60, 1, "Từ Sơn", False),
        (P, "down", p0, d0 + 30 * 60, 5, None, True),
    ]
    assert len(got) == len(want), got
    for g, w in zip(got, want):
        assert g[:2] == w[:2] and g[4:] == w[4:], (g, w)
        for x, y in zip(g[2:4], w[2:4]):
            assert (x is None and y is None) or x == pytest.approx(y), (g, w)
    rows = [[td.get_text(" ", strip=True) for td in tr.find_all("td")] for tr in
            known["vi"]["soup"].select("table.incidents tbody tr")]
    assert rows[1][:3] == [vn_time(b0), vn_time(b0 + 30 * 60), f"30{NB}phút"]
    assert rows[6][:3] == [f"từ lần đầu ghi nhận lúc {vn_time(p0)}", vn_time(d0 + 30 * 60), f"ít nhất 30{NB}ngày"]
    assert rows[6][5] == "5 điểm không tới được"


def test_an_incident_down_at_the_first_observation_keeps_its_start_marked_first_seen(tmp_path):
    """Sites down (or unreachable) when first observed: no status change marks their start,
    yet their incidents start at the first observation, marked "first seen" (they may have
    begun before anyone looked), in status.json and on the page, Vietnamese and English; the
    duration is a lower bound. C3 has been down since its first observation 40 days ago (no
    change in the 30 days shown); D1 was first seen down 3 hours ago, its communes
    unreachable, and came back after 20 minutes; D2's later degradation is an ordinary one.
    C3's entry in what is wrong now says "since first seen" too."""
    vi = write_config(tmp_path, SMALL)
    en = write_config(tmp_path, SMALL, name="sites-en.toml", page='language = "en"')
    cfg = load_config(vi, secrets=False)
    by_id = {s.id: s for s in cfg.sites}
    now = time.time()
    p0, b0 = now - 40 * 86400, now - 3 * 3600
    cycles = [(p0 + 60 * i, {P: "up", D2: "up", C3: "down"}) for i in range(3)]
    for i in range(60):
        first = "down" if i < 20 else "up"
        cycles.append((b0 + 60 * i, {P: "up", D1: first, C1: "unreachable" if i < 20 else "up",
                                     C2: "unreachable" if i < 20 else "up", D2: "degraded" if 30 <= i < 40 else "up",
                                     C3: "down"}))
    store = Store.open(cfg.store_path)
    try:
        for ts, own in cycles:
            store.record_cycle(ts, ts + 1.5, [observation(by_id[sid], ts, st) for sid, st in own.items()])
    finally:
        store.close()

    soup, data, _ = render(vi, tmp_path / "out-vi")
    got = {(i["site"], i["kind"]): i for i in data["incidents"]}
    assert set(got) == {(C3, "down"), (D1, "down"), (D2, "degraded")}, data["incidents"]
    c3, d1, d2 = got[(C3, "down")], got[(D1, "down")], got[(D2, "degraded")]
    assert (c3["start"], c3["end"], c3["first_seen"]) == (pytest.approx(p0), None, True)
    assert (d1["start"], d1["end"], d1["first_seen"], d1["unreachable"]) == \
        (pytest.approx(b0), pytest.approx(b0 + 20 * 60), True, 2)
    assert (d2["start"], d2["end"], d2["first_seen"]) == (pytest.approx(b0 + 30 * 60), pytest.approx(b0 + 40 * 60),
                                                          False)
    rows = {tr.find_all("td")[3].select_one(".id").get_text(strip=True): [td.get_text(" ", strip=True)
                                                                            for td in tr.find_all("td")[:3]]
            for tr in soup.select("table.incidents tbody tr")}
    assert rows[C3] == [f"từ lần đầu ghi nhận lúc {vn_time(p0)}", "đang diễn ra", f"ít nhất 40{NB}ngày"]
    assert rows[D1] == [f"từ lần đầu ghi nhận lúc {vn_time(b0)}", vn_time(b0 + 20 * 60), f"ít nhất 20{NB}phút"]
    assert rows[D2] == [vn_time(b0 + 30 * 60), vn_time(b0 + 40 * 60), f"10{NB}phút"]
    # what is wrong now says it too: C3 has been down at least since it was first seen
    assert [(p["kind"], p["site"], p["first_seen"]) for p in data["problems"]] == [("down", C3, True)]
    now_text = soup.select_one("main section#now").get_text(" ", strip=True)
    assert f"mất kết nối từ lần đầu ghi nhận lúc {vn_time(p0)} (ít nhất 40{NB}ngày)" in now_text, now_text

    soup, data_en, _ = render(en, tmp_path / "out-en")
    assert data_en["incidents"] == data["incidents"]
    en_time = lambda ts: datetime.fromtimestamp(ts, timezone.utc).astimezone(VN).strftime("%Y-%m-%d %H:%M")  # noqa: E731
    rows = {tr.find_all("td")[3].select_one(".id").get_text(strip=True): [td.get_text(" ", strip=True)
                                                                            for td in tr.find_all("td")[:3]]
            for tr in soup.select("table.incidents tbody tr")}
    assert rows[C3] == [f"since first seen at {en_time(p0)}", "ongoing", f"at least 40{NB}d"]
    assert rows[D1] == [f"since first seen at {en_time(b0)}", en_time(b0 + 20 * 60), f"at least 20{NB}min"]
    now_text = soup.select_one("main section#now").get_text(" ", strip=True)
    assert f"down since first seen at {en_time(p0)} (at least 40{NB}d)" in now_text, now_text


def test_english_page(known):
    soup, data = known["en"]["soup"], known["en"]["data"]
    assert soup.html["lang"] == "en"
    rows = rows_by_id(soup)
    for sid, text in EXPECTED_SITE_TEXT.items():
        assert avail_cells(rows[sid]) == [t.replace(",", ".") for t in text], sid
    assert level_table(soup) == {
        "Provincial agencies": _text(EXPECTED_LEVELS["province"], "."),
        "District People's Committees": _text(EXPECTED_LEVELS["district"], "."),
        "Commune People's Committees": _text(EXPECTED_LEVELS["commune"], "."),
    }
    assert avail_cells(rows[C3])[0] == "75.10%"  # 5,430 of 7,230 s
    since = datetime.fromtimestamp(known["marks"]["down_since"], timezone.utc).astimezone(VN)
    note = rows[D1].select_one("div.note").get_text(" ", strip=True)
    assert note.startswith(f"Down since {since:%Y-%m-%d %H:%M} (") and note.endswith(f"{NB}min)")
    assert rows[C1].select_one("div.note").get_text(" ", strip=True) == \
        "Unreachable because its uplink (UBND huyện Tiên Du) is down"
    assert data["levels"] == known["vi"]["data"]["levels"]  # the data does not depend on the language


def test_formatting_units():
    """Numbers and times, Vietnamese and English (the page's Fmt)."""
    from wanmon.words import Fmt

    vi, en = Fmt("vi", ZoneInfo("Asia/Ho_Chi_Minh")), Fmt("en", ZoneInfo("Asia/Ho_Chi_Minh"))
    assert vi.pct(75.0) == "75,00%" and en.pct(75.0) == "75.00%"
    assert vi.num(1234.5) == "1.234,50" and en.num(1234.5) == "1,234.50"
    assert vi.ms(0.0234) == "0,023 ms" and vi.ms(12.44) == "12,4 ms" and vi.ms(1250) == "1.250 ms"
    assert vi.pct(None) == "–"
    # 2024-12-31 17:30 UTC is already New Year's Day in Hà Nội
    ts = datetime(2024, 12, 31, 17, 30, tzinfo=timezone.utc).timestamp()
    assert vi.dt(ts) == "01/01/2025 00:30" and en.dt(ts) == "2025-01-01 00:30"
    assert vi.age(59) == "59 giây" and vi.age(180) == "3 phút" and vi.age(7200) == "2 giờ" and vi.age(3 * 86400) == "3 ngày"
    assert en.age(180) == "3 min"


def test_header_times_are_in_vietnam_time(known):
    soup, data = known["vi"]["soup"], known["vi"]["data"]
    # the data's time, absolute and near the top: the written page never says "1 second ago"
    # (without JavaScript it would say so forever); the script adds the age (test_page_browser)
    asof = soup.select_one("header .asof")
    assert asof.get_text(" ", strip=True) == f"Lần kiểm tra gần nhất: {vn_time(data['last_cycle']['started_at'])}"
    assert asof.time["datetime"] == datetime.fromtimestamp(data["last_cycle"]["started_at"], VN).isoformat(
        timespec="seconds")
    meta = soup.select_one("header .meta").get_text(" ", strip=True)
    assert meta == f"Tạo lúc: {vn_time(data['generated_at'])} · kiểm tra mỗi 60{NB}giây"


# ----------------------------------------------------------------------------
# stale data


def _stale_case(folder: Path, last_age_s: float, refresh_s: int | None, interval_s: float | None = None):
    page = f"refresh_s = {refresh_s}" if refresh_s else ""
    schedule = f"\n[schedule]\nicmp_interval_s = {interval_s}\n" if interval_s else ""
    cfg = write_config(folder, SMALL + schedule, page=page)
    now = time.time()
    record(cfg, [(now - last_age_s - 60 * k, {}) for k in range(5, -1, -1)])
    return render(cfg, folder / "out")


def test_stale_banner_when_last_cycle_older_than_3_poll_intervals(tmp_path):
    soup, data, _ = _stale_case(tmp_path, last_age_s=400, refresh_s=None)  # 400 s > 3 x 60 s
    banner = soup.select(".banner")
    assert len(banner) == 1 and banner[0]["role"] == "alert"
    text = banner[0].get_text(" ", strip=True)
    assert re.fullmatch(r"Dữ liệu đã cũ: lần kiểm tra gần nhất cách đây (6|7)\xa0phút\. "
                        r"Máy giám sát có thể đã ngừng kiểm tra\.", text), text
    assert data["stale"] is True and data["stale_after_s"] == 180 and data["icmp_interval_s"] == 60
    # written stale: no green even without JavaScript (html.stale greys --up, favicon included)
    assert soup.html["class"] == ["stale"] and "%231a7f37" not in soup.find("link", rel="icon")["href"]


def test_stale_follows_the_poll_interval_not_the_refresh(tmp_path):
    soup, data, _ = _stale_case(tmp_path / "a", last_age_s=100, refresh_s=None)  # 100 s < 3 x 60 s
    assert not soup.select(".banner") and data["stale"] is False and not soup.html.get("class")
    soup, data, _ = _stale_case(tmp_path / "b", last_age_s=100, refresh_s=20)  # the refresh does not matter
    assert not soup.select(".banner") and data["stale"] is False
    assert soup.find("meta", attrs={"http-equiv": "refresh"}) is None
    assert soup.find(id="refresh-note").get_text() == f"Trang tự cập nhật mỗi 20{NB}giây."
    soup, data, _ = _stale_case(tmp_path / "c", last_age_s=100, refresh_s=None, interval_s=20)  # 100 s > 3 x 20 s
    assert soup.select(".banner") and data["stale"] is True and data["stale_after_s"] == 60
    assert soup.select_one("header .meta").get_text(" ", strip=True).endswith(f"kiểm tra mỗi 20{NB}giây")


def test_no_cycle_yet_says_what_to_do(tmp_path):
    cfg = write_config(tmp_path, SMALL)
    Store.open(tmp_path / "var" / "wanmon.db").close()
    soup, data, _ = render(cfg, tmp_path / "out")
    assert soup.select_one(".banner").get_text(strip=True) == "Chưa có lần kiểm tra nào: hãy chạy `wanmon check`."
    assert data["last_cycle"] is None and data["stale"] is True
    assert {tr["data-status"] for tr in soup.select("tr.site")} == {"unknown"}
    assert len(soup.select("tr.site")) == 6


# ----------------------------------------------------------------------------
# hostile names: data, never markup or template code

HOSTILE_NAMES = {"dc-fw-1": SCRIPT, "tien-du": IMG, "tien-du-phat-tich": SSTI}


def hostile_snmp(ts: float) -> list[SnmpOutcome]:
    devs = [("dc-core", SCRIPT), ("tien-du", IMG), ("tien-du-lien-bao", SSTI)]
    return [SnmpOutcome(DeviceState(site_id=sid, status="ok", reason=None, last_poll_ts=ts, last_ok_ts=ts,
                                    first_seen=ts - 86400, last_seen=ts, sys_name=name, uptime_ticks=360000,
                                    uplink_name=SSTI, uplink_util_in_pct=1.5, uplink_util_out_pct=0.5),
                        [], []) for sid, name in devs]


def build_hostile177(folder: Path, page: str = "") -> Path:
    """The 177-site inventory with hostile site names and sysNames, and a history in which
    the hostile district goes down (so its name is also shown as a parent and in the incident
    log), a district with 3 communes of its own down, and a degraded commune."""
    cfg = shipped_config(folder, page=page, names=HOSTILE_NAMES)
    raw = tomllib.loads(cfg.read_text(encoding="utf-8"))
    behind = [s["id"] for s in raw["sites"] if s.get("parent") == "tien-du"]  # silent when tien-du is down
    now = time.time()
    cycles = []
    for k in range(60):
        own = {}
        if k >= 57:
            own.update({"tien-du": "down", "dc-fw-1": "down", **{c: "down" for c in behind}})
        if k >= 50:
            own.update({"que-vo-phuong-mao": "down", "que-vo-phu-lang": "down", "gia-binh-van-ninh": "degraded"})
        cycles.append((now - 30 - (59 - k) * 60, own))
    ids = {s["id"] for s in raw["sites"]}
    assert {"que-vo-phuong-mao", "que-vo-phu-lang", "gia-binh-van-ninh", "tien-du-lien-bao"} <= ids
    record(cfg, cycles, snmp_last=hostile_snmp(cycles[-1][0]))
    return cfg


def test_hostile_names_are_literal_text(tmp_path):
    cfg = build_hostile177(tmp_path)
    soup, data, html = render(cfg, tmp_path / "out")
    assert "<script>alert" not in html and "<img src=x" not in html.lower()
    assert len(soup.find_all("script")) == 1 and not soup.find_all("img")
    assert not soup.find_all(attrs={"onerror": True})
    rows = rows_by_id(soup)
    for sid, name in HOSTILE_NAMES.items():
        assert rows[sid].select_one("div.name").get_text() == name
        assert name.lower() in rows[sid]["data-search"]
        assert data["sites"][sid]["name"] == name
    assert html.count(SSTI) >= 3  # name, sysName, uplink name: literally
    # the hostile parent's name in its communes' notes
    assert rows["tien-du-lien-bao"].select_one("div.note").get_text() == \
        f"Không tới được vì tuyến trên ({IMG}) mất kết nối"
    # sysNames (snmp_device.sys_name) shown as text
    assert rows["dc-core"].select("div.meta")[-1].get_text().startswith(SCRIPT + " · ")
    assert rows["tien-du"].select("div.meta")[-1].get_text().startswith(IMG + " · ")
    assert rows["tien-du-lien-bao"].select("div.meta")[-1].get_text().startswith(SSTI + " · ")
    assert data["sites"]["dc-core"]["snmp"]["sys_name"] == SCRIPT
    assert data["sites"]["tien-du-lien-bao"]["snmp"]["uplink"] == SSTI
    # the incident log names them too
    inc = {td.get_text(" ", strip=True) for tr in soup.select("table.incidents tbody tr") for td in tr.find_all("td")[3:4]}
    assert any(SCRIPT in t for t in inc) and any(IMG in t for t in inc), inc
    assert {data["sites"][i["site"]]["name"] for i in data["incidents"]} >= {SCRIPT, IMG}
    # and the "now" section: the down root and the sites it cuts off, as text
    now = soup.select_one("section#now")
    names = {n.get_text() for n in now.select(".cause-name")} | {li.get_text(" ", strip=True) for li in now.select(".children li")}
    assert any(IMG == n or n.startswith(IMG) for n in names), names
    assert not now.select("img, script, iframe, [onerror]")
    # and the raw JSON file round-trips them exactly
    text = (tmp_path / "out" / "status.json").read_text(encoding="utf-8")
    assert json.loads(text)["sites"]["tien-du-phat-tich"]["name"] == SSTI


def test_hostile_province_name_in_title(tmp_path):
    cfg = write_config(tmp_path, SMALL, page=f"province = '{SCRIPT}{SSTI}'")
    record(cfg, [(time.time() - 30, {})])
    soup, _, html = render(cfg, tmp_path / "out")
    assert soup.title.get_text() == f"Tình trạng mạng WAN tỉnh {SCRIPT}{SSTI}"
    assert soup.find("h1").get_text() == soup.title.get_text()
    assert "<script>alert" not in html and len(soup.find_all("script")) == 1


def test_render_needs_no_write_access_to_the_store(known, tmp_path):
    """`render` opens the store read-only: rendering twice changes nothing in it."""
    db = known["folder"] / "var" / "wanmon.db"
    before = db.stat().st_size
    soup, data, _ = render(known["folder"] / "sites.toml", tmp_path / "again")
    assert db.stat().st_size == before
    assert data["counts"] == known["vi"]["data"]["counts"]


def test_shipped_page_copy_has_no_leftover_tmp_in_default_out(checked177):
    names = sorted(p.name for p in checked177["out"].iterdir())
    assert names == ["index.html", "index.html.gz", "status.json", "status.json.gz", "tree.html", "tree.html.gz"]
    assert not [n for n in os.listdir(checked177["out"]) if n.startswith(".")]


# ----------------------------------------------------------------------------
# the page's files on disk: folders 0755 and files 0644 whatever the umask; no stale temporaries

_WRITER = """\
import sys
from pathlib import Path
from wanmon.files import replacing
with replacing(Path(sys.argv[1])) as f:
    f.write("half a page")
    f.flush()
    print("writing", flush=True)
    sys.stdin.read()  # until the test lets it finish (or kills it)
"""


def _writer(target: Path):
    """A real writer of `target`, stopped mid-write (its temp exists) until its stdin closes."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline() == "writing\n"
    (tmp,) = [n for n in os.listdir(target.parent) if n.startswith(f".{target.name}.{p.pid}.")]
    return p, target.parent / tmp


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_a_killed_writers_temporary_is_removed_by_the_next_write_a_live_ones_never(tmp_path):
    import signal

    cfg = write_config(tmp_path, SMALL)
    Store.open(tmp_path / "var" / "wanmon.db").close()
    out = tmp_path / "public"
    assert wanmon("--config", str(cfg), "render", cwd=tmp_path).returncode == 0
    dead, dead_tmp = _writer(out / "index.html")
    dead.kill()  # SIGKILL mid-write: no cleanup runs
    dead.wait()
    assert dead.returncode == -signal.SIGKILL and dead_tmp.exists()
    dead_fresh, dead_fresh_tmp = _writer(out / "status.json")
    dead_fresh.kill()
    dead_fresh.wait()
    live, live_tmp = _writer(out / "index.html")
    try:
        legacy = out / ".index.html.k3j4x9a_"       # an older wanmon's temp (no pid in its name)
        legacy.write_text("old")
        swap = out / ".index.html.swp"              # not ours
        swap.write_text("editor")
        for p in (dead_tmp, live_tmp, legacy, swap):
            _age(p, 3600)
        r = wanmon("--config", str(cfg), "render", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        left = {p for p in out.iterdir() if p.name.startswith(".")}
        # gone: the killed writer's and the old one; kept: the live writer's (however old), the
        # temp of a writer killed a moment ago (not yet STALE_S untouched), and what is not ours
        assert left == {live_tmp, dead_fresh_tmp, swap}
    finally:
        live.communicate("")
    assert live.returncode == 0 and not live_tmp.exists()
    assert (out / "index.html").read_text() == "half a page"  # the live writer finished its write


@pytest.mark.parametrize("umask", ["000", "077"])
def test_output_folders_are_0755_and_page_files_0644_whatever_the_umask(tmp_path, umask):
    """Under `umask 000` public/ was world-writable (and under 077 a web server could not
    read it). The store's own folder stays 0700; its new parents are 0755."""
    import stat

    cfg = write_config(tmp_path, SMALL.replace('path = "var/wanmon.db"', 'path = "data/var/wanmon.db"'),
                       page='out_dir = "www/wan/public"')
    umasked = ["sh", "-c", f'umask {umask} && exec "$0" "$@"']
    r = wanmon("--config", str(cfg), "check", cwd=tmp_path, prefix=umasked)
    assert r.returncode == 0, r.stderr
    r = wanmon("--config", str(cfg), "report", "--format", "csv", cwd=tmp_path, prefix=umasked)
    assert r.returncode == 0, r.stderr

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    public = tmp_path / "www" / "wan" / "public"
    folders = [tmp_path / "www", tmp_path / "www" / "wan", public, public / "reports", tmp_path / "data"]
    assert {str(p.relative_to(tmp_path)): oct(mode(p)) for p in folders} == \
        {str(p.relative_to(tmp_path)): "0o755" for p in folders}
    assert mode(tmp_path / "data" / "var") == 0o700
    files = [p for p in public.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"index.html", "status.json", "index.html.gz", "status.json.gz", "tree.html"}
    assert any(p.suffix == ".csv" for p in files)
    assert {p.name: oct(mode(p)) for p in files} == {p.name: "0o644" for p in files}


# ----------------------------------------------------------------------------
# words: the filter's fold, one duration format, English plurals (issue 22)


@pytest.mark.parametrize("text,folded", [
    ("UBND xã Xuân Lai", "ubnd xa xuan lai"),
    ("UBND huyện Gia Bình", "ubnd huyen gia binh"),
    ("ĐẠI ĐỒNG đường", "dai dong duong"),                      # đ is a letter of its own, not d + a mark
    (unicodedata.normalize("NFD", "Thị trấn Phố Mới"), "thi tran pho moi"),  # typed decomposed
    ("Ưu ơ Ở Ữ", "uu o o u"),                                  # the horn is a mark
    ("  gia\u00a0\u2003 binh\t\n", "gia binh"),                # every kind of space: one, none at the ends
    ("tien-du-lien-bao 127.10.3.1", "tien-du-lien-bao 127.10.3.1"),
    ("<script>", "<script>"),
])
def test_fold(text, folded):
    from wanmon.text import fold

    assert fold(text) == folded


def test_fold_spaces_are_pythons_white_space():
    """The script's space class is Python's str.isspace, exactly (JS's \\s is another set)."""
    import sys

    from wanmon.text import FOLD_SPACES

    rx = re.compile(f"[{FOLD_SPACES}]")
    chars = [chr(i) for i in range(sys.maxunicode + 1)]
    assert [c for c in chars if c.isspace()] == [c for c in chars if rx.match(c)]


@pytest.mark.parametrize("seconds,vi,en", [
    (0, "0 giây", "0 s"), (52, "52 giây", "52 s"), (59.4, "59 giây", "59 s"), (59.5, "1 phút", "1 min"), (60, "1 phút", "1 min"),
    (119, "1 phút", "1 min"), (2 * 3600 + 5 * 60 + 7, "2 giờ 5 phút", "2 h 5 min"), (3600, "1 giờ", "1 h"),
    (3 * 86400 + 4 * 3600 + 59, "3 ngày 4 giờ", "3 d 4 h"), (30 * 86400 + 600, "30 ngày", "30 d"), (-5, "0 giây", "0 s"),
])
def test_one_duration_format(seconds, vi, en):
    from wanmon.words import Fmt, duration

    assert duration(seconds, "vi") == vi and duration(seconds, "en") == en
    # the page's problems, notes and incidents (Fmt.span, Fmt.age) say it the same way
    fmt = Fmt("vi", VN)
    assert fmt.span(seconds) == fmt.age(seconds) == vi


def test_the_page_joins_a_number_to_its_unit():
    from wanmon.words import Fmt, duration

    assert duration(7507, "vi", NB) == f"2{NB}giờ 5{NB}phút"  # a break between the parts, none inside one
    page = Fmt("vi", VN, NB)
    assert page.ms(12.4) == f"12,4{NB}ms" and page.num(33, 0, " %") == f"33{NB}%" and page.span(52) == f"52{NB}giây"
    assert Fmt("vi", VN).ms(12.4) == "12,4 ms"  # mail and reports: a plain space


def test_english_plurals_on_the_page(tmp_path):
    """One of a thing is singular in English: "1 site up", "1 commune unreachable"."""
    from wanmon.words import counted, unreachable_count, unreachable_n, PAGE

    assert counted(PAGE["en"], "healthy_n", n=1) == "1 site up" and counted(PAGE["en"], "healthy_n", n=2) == "2 sites up"
    assert counted(PAGE["vi"], "healthy_n", n=1) == "1 điểm hoạt động bình thường"
    assert unreachable_count("en", ["commune"]) == "1 commune unreachable"
    assert unreachable_count("en", ["commune", "district"]) == "2 sites unreachable"
    assert unreachable_n("vi", 1) == "1 điểm không tới được"
    cfg = build_hostile177(tmp_path, page='language = "en"')
    soup, _, _ = render(cfg, tmp_path / "out")
    text = soup.get_text(" ", strip=True).replace(NB, " ")
    assert "1 site up" in text  # Tiên Du: its district router down, one other site up
    assert not re.search(r"\b1 (sites|communes|districts|agencies|incidents|emails|points)\b", text)
    assert "Availability 24 h" in text and "7 days" in text and "24h" not in text
