"""The status page in a real browser: Debian's headless Chromium driven by Playwright.

The page is the 177-site inventory with a history that has down, unreachable
and degraded sites, and hostile site names and sysNames (see
test_page.build_hostile177). It is loaded from file://: no server, and the
browser is started with every background-networking feature off, so nothing
leaves the machine; any http(s)/ws request the page itself made would be
aborted and reported.

Playwright drives /usr/bin/chromium (`executable_path`); `playwright install`
(which downloads a browser) is never needed. Playwright gives each launch a
new temporary profile (`--user-data-dir`) and removes it on close.

Screenshots go to test-artifacts/ at the repository root.
"""

from __future__ import annotations

import re
import shutil
import time
import unicodedata
from datetime import datetime
from pathlib import Path

import pytest

import prereq

from conftest import REPO
from test_page import HOSTILE, IMG, SCRIPT, SSTI, VN, build_hostile177, render

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
if CHROMIUM is None:
    prereq.need("chromium", prereq.CHROMIUM, module=True)
sync_api = prereq.need_module("playwright.sync_api", install=prereq.TEST_EXTRAS + " (no `playwright install`)")

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts"

VISIBLE_ROWS = """() => Array.from(document.querySelectorAll('tr.site'))
  .filter(tr => tr.getClientRects().length > 0)
  .map(tr => tr.querySelector('div.meta').textContent.split(' · ')[0].trim())"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    cfg = build_hostile177(folder)
    soup, data, html = render(cfg, folder / "out")
    index = folder / "out" / "index.html"
    return {"url": index.as_uri(), "data": data}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield b
        finally:
            b.close()


class Watch:
    """Everything a page does that a test may want to forbid."""

    def __init__(self, context, page):
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.dialogs: list[str] = []
        context.route(re.compile(r"^(https?|wss?|ftp)://"), self._block)
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("dialog", self._dialog)

    def _block(self, route):
        self.blocked.append(route.request.url)
        route.abort()

    def _dialog(self, d):
        self.dialogs.append(f"{d.type}: {d.message}")
        d.dismiss()


@pytest.fixture
def open_page(browser, site):
    contexts = []

    def _open(after_data_s: float = 60.0, **ctx):
        """The page in a new context whose clock reads `after_data_s` after the data's time (the
        last cycle's): the page says it is stale past 3 poll intervals, whenever the test runs."""
        context = browser.new_context(**ctx)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.clock.set_fixed_time(site["data"]["last_cycle"]["started_at"] + after_data_s)
        watch = Watch(context, page)
        page.goto(site["url"], wait_until="load")
        return page, watch

    yield _open
    for c in contexts:
        c.close()


def fill(page, text: str) -> None:
    """Type into the filter box and wait until the (debounced) filter has applied it."""
    page.fill("#filter", text)
    page.wait_for_function("t => document.getElementById('tools').getAttribute('data-applied') === t", arg=text)


def expected(site, pred) -> set[str]:
    return {sid for sid, s in site["data"]["sites"].items() if pred(s)}


def test_loads_from_file_without_errors_or_network(open_page, site):
    page, w = open_page(viewport={"width": 1366, "height": 768})
    page.wait_for_timeout(300)
    assert w.requests == [site["url"]]
    assert w.blocked == [] and w.console_errors == [] and w.page_errors == []
    assert page.title() == "Tình trạng mạng WAN tỉnh Bắc Ninh"
    assert page.locator("tr.site").count() == 177
    assert page.is_visible("#tools")  # the script ran and showed the filter tools


def test_hostile_names_do_not_execute(open_page, site):
    page, w = open_page(viewport={"width": 1366, "height": 768})
    page.wait_for_timeout(500)  # let an injected onerror (x is not an image) fire, if there were one
    assert w.dialogs == [] and w.page_errors == []
    assert page.evaluate("document.querySelectorAll('img, [onerror]').length") == 0
    assert page.evaluate("document.scripts.length") == 1
    names = page.evaluate("Array.from(document.querySelectorAll('div.name')).map(e => e.textContent)")
    for h in HOSTILE:
        assert h in names
    text = page.inner_text("body")
    assert SCRIPT in text and IMG in text and SSTI in text and "49" not in page.inner_text(
        "tr.site:has-text('tien-du-phat-tich') div.name")


def test_filter_box_hides_non_matching_sites(open_page, site):
    page, _ = open_page(viewport={"width": 1366, "height": 768})
    fill(page, "tien-du")
    want = expected(site, lambda s: "tien-du" in f"{s['id']} {s['name']} {s['address']}".lower())
    assert len(want) == 16
    assert set(page.evaluate(VISIBLE_ROWS)) == want
    assert page.locator("details.group:visible").count() == 1

    fill(page, "LIÊN BÃO")  # case-insensitive, Vietnamese letters
    assert page.evaluate(VISIBLE_ROWS) == ["tien-du-lien-bao"]

    # the same words with decomposed tone marks (NFD), as some Vietnamese keyboards type them
    fill(page, unicodedata.normalize("NFD", "Liên Bão"))
    assert page.evaluate(VISIBLE_ROWS) == ["tien-du-lien-bao"]

    fill(page, "127.10.3.1")  # by address too
    want = expected(site, lambda s: "127.10.3.1" in s["address"])
    assert set(page.evaluate(VISIBLE_ROWS)) == want and len(want) >= 1

    fill(page, "khong-co-diem-nao")
    assert page.evaluate(VISIBLE_ROWS) == []
    assert page.locator("details.group:visible").count() == 0

    fill(page, "")
    assert page.evaluate("document.querySelectorAll('tr.site[hidden], details.group[hidden]').length") == 0


PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
SHOWN_GROUPS = """() => Array.from(document.querySelectorAll('details.group'))
  .filter(d => d.getClientRects().length > 0).map(d => ({open: d.open, head: d.querySelector('summary').textContent}))"""


def by_name(site, words: str) -> set[str]:
    """The sites whose name holds `words` as Vietnamese write them (accents and all), any case."""
    return expected(site, lambda s: words in s["name"].lower())


def test_filter_matches_without_accents_and_by_district(open_page, site):
    """Issue 22, acceptance 2: staff type on phones without accents. A district's name shows
    its group with all its sites (the communes are not named after it)."""
    page, w = open_page(**PHONE)
    gia_binh = expected(site, lambda s: s["district"] == "Gia Bình")
    assert len(gia_binh) == 16 and {"gia-binh", "gia-binh-van-ninh", "gia-binh-xuan-lai"} <= gia_binh
    for typed in ("gia binh", "GIA BINH", " gia  binh ", "Gia Bình"):
        fill(page, typed)
        assert set(page.evaluate(VISIBLE_ROWS)) == gia_binh | by_name(site, "gia bình"), typed
        (group,) = page.evaluate(SHOWN_GROUPS)
        assert group["open"] and " Gia Bình · 16" in group["head"], group

    fill(page, "xuan lai")
    assert page.evaluate(VISIBLE_ROWS) == ["gia-binh-xuan-lai"]
    assert page.locator("tr.site:visible div.name").inner_text() == "UBND xã Xuân Lai"
    for typed, words in (("phu lam", "phú lâm"), ("thi tran", "thị trấn"), ("dai dong", "đại đồng"),
                         ("DAI DONG", "đại đồng"), ("Đại Đồng", "đại đồng")):
        fill(page, typed)
        want = by_name(site, words)
        assert want and set(page.evaluate(VISIBLE_ROWS)) == want, typed
        assert page.locator("#nomatch").inner_text() == ""
    assert len(by_name(site, "thị trấn")) == 4  # towns in four districts: found across the groups
    assert w.console_errors == [] and w.page_errors == []


def test_nothing_matches_says_so(open_page, site):
    page, w = open_page(**PHONE)
    none = page.locator("#nomatch")
    assert none.get_attribute("role") == "status" and none.inner_text() == ""  # a live region, there from the start
    fill(page, "qqxz khong co")
    assert page.evaluate(VISIBLE_ROWS) == [] and page.locator("details.group:visible").count() == 0
    assert none.is_visible() and none.inner_text() == "Không tìm thấy điểm nào khớp với \u201cqqxz khong co\u201d."
    box, tools = none.bounding_box(), page.locator("#filter").bounding_box()
    assert 0 < box["y"] - tools["y"] < 250  # just under the search box, where the eyes are
    fill(page, "")
    assert none.inner_text() == "" and len(page.evaluate(VISIBLE_ROWS)) > 0
    # no site of the chosen status: the same line, about the filters
    assert site["data"]["counts"]["unknown"] == 0
    page.select_option("#st", "unknown")
    page.wait_for_function("() => document.getElementById('nomatch').textContent !== ''")
    assert none.inner_text() == "Không có điểm nào khớp với bộ lọc đã chọn."
    page.select_option("#st", "")
    page.wait_for_function("() => document.getElementById('nomatch').textContent === ''")
    assert w.console_errors == [] and w.page_errors == []


# each number with its unit, as the page's text holds them (figures, percentages, durations)
NUMBER_UNIT = r"\d[\d.,]*\s*(?:%|ms(?![a-z])|giờ|ngày|phút|giây)"
SPLIT_UNITS = """(re) => {
  const rx = new RegExp(re, 'g'), split = [];
  let n = 0;
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let t = walk.nextNode(); t; t = walk.nextNode()) {
    const el = t.parentElement;
    if (!el || el.closest('script, style') || !el.getClientRects().length) continue;
    for (const m of t.data.matchAll(rx)) {
      const r = document.createRange();
      r.setStart(t, m.index);
      r.setEnd(t, m.index + m[0].length);
      const rects = Array.from(r.getClientRects()).filter(x => x.width > 0);
      if (!rects.length) continue;
      n++;
      // one line: every piece of the number and its unit overlaps the others vertically
      if (Math.max(...rects.map(x => x.top)) >= Math.min(...rects.map(x => x.bottom)))
        split.push(JSON.stringify(m[0]) + ' in ' + JSON.stringify(el.textContent.slice(0, 100)));
    }
  }
  return {n, split};
}"""


@pytest.mark.parametrize("width", [390, 360, 320])
def test_no_number_is_separated_from_its_unit_on_a_phone(open_page, site, width):
    """Issue 22, acceptance 2: at 390 px (and a smaller phone), each number and its unit, in
    every text the page shows with every group open, lies on one line."""
    page, w = open_page(viewport={"width": width, "height": 844}, is_mobile=True, has_touch=True)
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    got = page.evaluate(SPLIT_UNITS, NUMBER_UNIT)
    assert got["n"] > 177 * 3, got["n"]  # the check saw the page's figures (3 availabilities a site, and more)
    assert got["split"] == [], got["split"][:10]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"page-units-{width}.png"), full_page=True)


# what people type and what sites are called: the script's fold must give what wanmon.text.fold wrote
FOLD_CASES = ["Xuân Lai", "ĐẠI ĐỒNG", "đường", unicodedata.normalize("NFD", "Thị trấn Phố Mới"), "  a\u00a0\u2003b\tc\n",
              "Ưu Ơ ư ơ", "İstanbul", "ΟΔΥΣΣΕΥΣ", "Ångström \u212b", "ǅemal", "ﬁlé", "한국어", "❤\ufe0f a\u20dd",
              "x\u0345y", "Straße ẞ", "a\x1cb\x85c", "\u200bzero width", "Nguyễn Thị Minh Khai – 127.0.0.1"]


def test_the_scripts_fold_and_durations_are_wanmons(open_page, site, small_pages, browser):
    """One rule each: the script folds what is typed as wanmon.text.fold folded the rows, and
    words the data's age as wanmon.words.duration words every duration on the page."""
    from wanmon.text import fold
    from wanmon.words import duration

    page, _ = open_page(viewport={"width": 1366, "height": 768})
    texts = FOLD_CASES + [x for s in site["data"]["sites"].values() for x in (s["name"], s["district"] or "", s["id"])]
    got = page.evaluate("ts => ts.map(t => window.wanmon.fold(t))", texts)
    assert [(t, g) for t, g in zip(texts, got) if g != fold(t)] == []
    assert fold("UBND xã Xuân Lai") == "ubnd xa xuan lai"  # the rule folds at all
    seconds = [0, 1, 59, 60, 61, 119, 150, 3599, 3600, 3660, 7199, 86399, 86400, 90000, 2592005, 59.4, 59.5, 3599.5, 0.4]
    got = page.evaluate("ss => ss.map(s => window.wanmon.duration(s * 1000))", seconds)
    assert got == [duration(s, "vi", NB) for s in seconds]
    context = browser.new_context()
    try:
        en = context.new_page()
        en.goto(small_pages["en"]["url"], wait_until="load")
        got = en.evaluate("ss => ss.map(s => window.wanmon.duration(s * 1000))", seconds)
        assert got == [duration(s, "en", NB) for s in seconds]
    finally:
        context.close()


def test_only_problems_leaves_non_up_sites(open_page, site):
    page, _ = open_page(viewport={"width": 1366, "height": 768})
    page.check("#problems")
    want = expected(site, lambda s: s["status"] != "up")
    counts = site["data"]["counts"]
    assert len(want) == counts["down"] + counts["unreachable"] + counts["degraded"] + counts["unknown"]
    assert {site["data"]["sites"][i]["status"] for i in want} == {"down", "unreachable", "degraded"}
    assert set(page.evaluate(VISIBLE_ROWS)) == want
    fill(page, "que-vo")
    assert set(page.evaluate(VISIBLE_ROWS)) == {i for i in want if i.startswith("que-vo")} != set()
    fill(page, "")
    page.uncheck("#problems")
    assert page.evaluate("document.querySelectorAll('tr.site[hidden], details.group[hidden]').length") == 0


def test_everything_readable_without_javascript(open_page, site):
    page, w = open_page(viewport={"width": 1366, "height": 768}, java_script_enabled=False)
    assert w.requests == [site["url"]] and w.blocked == []
    assert page.is_hidden("#tools")  # no filter box that would not work
    assert page.locator("tr.site").count() == 177
    # province and districts with problems are open by default; the rest open with a click
    opened = set(page.evaluate(VISIBLE_ROWS))
    assert expected(site, lambda s: s["status"] != "up") <= opened
    closed = page.query_selector_all("details:not([open]) > summary")  # a fixed list, unlike a locator
    assert closed
    for summary in closed:
        summary.click()
    assert len(page.evaluate(VISIBLE_ROWS)) == 177


@pytest.mark.parametrize("width,height,mobile", [(1366, 768, False), (390, 844, True)])
def test_screenshots(open_page, site, width, height, mobile):
    page, w = open_page(viewport={"width": width, "height": height}, is_mobile=mobile, has_touch=mobile,
                        device_scale_factor=1)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"page-{width}x{height}.png"
    page.screenshot(path=str(shot))
    page.screenshot(path=str(ARTIFACTS / f"page-{width}x{height}-full.png"), full_page=True)
    assert shot.stat().st_size > 10_000
    # the page itself never scrolls sideways: wide tables scroll inside their own box
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert w.console_errors == [] and w.page_errors == []


@pytest.fixture(scope="module")
def fast_site(tmp_path_factory):
    """The same page with [page] refresh_s = 2: the script reloads it every 2 s."""
    folder = tmp_path_factory.mktemp("browser-fast")
    cfg = build_hostile177(folder, page="refresh_s = 2")
    _, data, _ = render(cfg, folder / "out")
    return {"url": (folder / "out" / "index.html").as_uri(), "data": data}


def test_a_refresh_keeps_the_filter_the_checkbox_and_the_open_groups(browser, fast_site):
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(fast_site["url"], wait_until="load")
        groups_open = "Array.from(document.querySelectorAll('details.group')).map(d => d.open)"
        first = page.evaluate(groups_open)
        page.click("details#g-2 > summary")               # the user opens a healthy district
        opened = page.evaluate(groups_open)
        assert opened != first
        fill(page, "que-vo")
        page.check("#problems")
        page.wait_for_function("() => document.getElementById('tools').getAttribute('data-applied') === 'que-vo'")
        visible = set(page.evaluate(VISIBLE_ROWS))
        want = expected(fast_site, lambda s: s["status"] != "up" and "que-vo" in s["id"])
        assert visible == want != set()
        with page.expect_event("load", timeout=10_000):   # the script's own reload, refresh_s later
            pass
        page.wait_for_function("() => !document.getElementById('tools').hidden")
        assert page.input_value("#filter") == "que-vo" and page.is_checked("#problems")
        assert set(page.evaluate(VISIBLE_ROWS)) == visible
        fill(page, "")                                     # clearing the filter gives the groups back
        page.uncheck("#problems")
        page.wait_for_function("() => document.querySelectorAll('tr.site[hidden]').length === 0")
        assert page.evaluate(groups_open) == opened
        with page.expect_event("load", timeout=10_000):
            pass
        page.wait_for_function("() => !document.getElementById('tools').hidden")
        assert page.evaluate(groups_open) == opened and page.input_value("#filter") == ""
    finally:
        context.close()


def test_a_summary_card_shows_the_sites_of_its_status(open_page, site):
    page, _ = open_page(viewport={"width": 1366, "height": 768})
    page.click(".cards a.card[href='#st=down']")
    page.wait_for_function("() => document.getElementById('st').value === 'down'")
    assert set(page.evaluate(VISIBLE_ROWS)) == expected(site, lambda s: s["status"] == "down") != set()
    page.select_option("#st", "")
    page.wait_for_function("() => document.querySelectorAll('tr.site[hidden]').length === 0")


def test_phone_layout_one_compact_block_per_site(open_page, site):
    """390 px: every site is one block, no empty cell takes room, 24h / 7d / 30d on one line,
    ids never broken inside."""
    page, _ = open_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.evaluate("document.querySelectorAll('details.group').forEach(d => d.open = true)")
    report = page.evaluate("""() => Array.from(document.querySelectorAll('tr.site')).map(tr => {
        const tds = Array.from(tr.children);
        const empty = tds.filter(td => td.textContent.trim() === '' && !td.querySelector('svg')
                                 && td.getClientRects().length > 0).length;
        const av = tds.slice(-3).map(td => Math.round(td.getBoundingClientRect().top));
        const id = tr.querySelector('.id');
        return {id: id.textContent, empty, oneLine: new Set(av).size === 1, idLines: id.getClientRects().length,
                right: Math.max(...tds.map(td => td.getBoundingClientRect().right))};
    })""")
    assert len(report) == 177
    bad = [r for r in report if r["empty"] or not r["oneLine"] or r["idLines"] != 1 or r["right"] > 390]
    assert bad == [], bad[:5]
    # no group's box scrolls sideways (a scrolling box also needs keyboard access: axe)
    wide = page.evaluate("() => Array.from(document.querySelectorAll('details.group > div'))"
                         ".filter(d => d.scrollWidth > d.clientWidth).map(d => d.parentElement.id)")
    assert wide == []


def _first_screen_config(folder: Path, healthy: int) -> Path:
    """`healthy` provincial agencies on the client namespace's loopback (always up) listed
    first, then a department and a district router on lab addresses nothing answers
    (198.18.2.50-51, inside the lab only), the district's 14 communes behind it (silent too:
    unreachable), and a healthy district with 20 communes."""
    from test_alerts_integration import site_toml

    parts = ['[store]\npath = "var/wanmon.db"\n\n[icmp]\ncount = 1\ninterval_ms = 20\ntimeout_ms = 500\n\n'
             '[snmp]\nenabled = false\n\n[page]\nout_dir = "public"\nprovince = "Bắc Ninh"\n\n',
             site_toml("dc-core", "Trung tâm dữ liệu tỉnh", "province", "127.0.0.1")]
    parts += [site_toml(f"so-{i:03d}", f"Sở ban ngành thử nghiệm số {i:03d}", "province",
                        f"127.0.{1 + i // 250}.{1 + i % 250}", parent="dc-core") for i in range(healthy)]
    parts.append(site_toml("so-tai-chinh", "Sở Tài chính", "province", "198.18.2.50", parent="dc-core"))
    parts.append(site_toml("gia-binh", "UBND huyện Gia Bình", "district", "198.18.2.51", parent="dc-core",
                           district="Gia Bình"))
    parts += [site_toml(f"gia-binh-xa-{c:02d}", f"UBND xã Gia Bình {c:02d}", "commune", f"198.18.2.{60 + c}",
                        parent="gia-binh", district="Gia Bình") for c in range(14)]
    parts.append(site_toml("que-vo", "UBND thị xã Quế Võ", "district", "127.0.9.1", parent="dc-core", district="Quế Võ"))
    parts += [site_toml(f"que-vo-xa-{c:02d}", f"UBND xã Quế Võ {c:02d}", "commune", f"127.0.9.{10 + c}",
                        parent="que-vo", district="Quế Võ") for c in range(20)]
    cfg = folder / "sites.toml"
    cfg.write_text("\n".join(parts), encoding="utf-8")
    return cfg


def test_both_root_causes_on_the_first_screen_behind_real_icmp(browser, tmp_path):
    """Acceptance 1 of issue 12: a department down and a district router down (its 14
    communes unreachable), found by a real `wanmon check` (real ICMP, in a network
    namespace lab), under 400 healthy agencies listed before them: both root causes are
    in the first screen at 1366×768 and within two screens at 390×844."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import netns

    ok, why = netns.available()
    if not ok:
        prereq.need("network namespaces", prereq.NETNS, why)
    cfg = _first_screen_config(tmp_path, healthy=400)
    with netns.lab() as lab:
        r = lab.run([sys.executable, "-m", "wanmon", "--config", str(cfg), "check", "--json"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    status = {s["id"]: s["status"] for s in __import__("json").loads(r.stdout)}
    assert status["so-tai-chinh"] == "down" and status["gia-binh"] == "down"
    assert {status[f"gia-binh-xa-{c:02d}"] for c in range(14)} == {"unreachable"}
    assert sum(st == "up" for st in status.values()) == 1 + 400 + 21
    url = (tmp_path / "public" / "index.html").as_uri()
    for viewport, screens in (({"width": 1366, "height": 768}, 1), ({"width": 390, "height": 844}, 2)):
        context = browser.new_context(viewport=viewport, is_mobile=viewport["width"] < 500)
        try:
            page = context.new_page()
            page.goto(url, wait_until="load")
            boxes = {}
            for name in ("Sở Tài chính", "UBND huyện Gia Bình"):
                entry = page.locator("ul.causes > li", has=page.locator(".cause-name", has_text=name))
                assert entry.count() == 1, name
                boxes[name] = entry.bounding_box()
            assert "14 xã không tới được" in page.locator("ul.causes > li").nth(0).inner_text()
            for name, box in boxes.items():
                assert box["y"] + box["height"] <= screens * viewport["height"], (viewport, name, box)
        finally:
            context.close()


# ----------------------------------------------------------------------------
# stale data: the page says so by itself, against the browser's clock (issue 20)

# every element painted green (a colour, background, border, SVG fill or stroke), and a green favicon
GREEN = """() => {
  const greenish = c => { const m = /rgba?\\((\\d+), (\\d+), (\\d+)/.exec(c);
    return !!m && +m[2] > 60 && +m[2] > 1.3 * +m[1] && +m[2] > 1.3 * +m[3]; };
  const props = ['color', 'background-color', 'border-top-color', 'border-left-color', 'outline-color', 'fill', 'stroke'];
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    if (!el.getClientRects().length) continue;  // not shown
    const cs = getComputedStyle(el);
    for (const p of props) if (greenish(cs.getPropertyValue(p))) out.push(`${el.tagName}.${el.className} ${p}`);
  }
  if (/%231a7f37/i.test(document.querySelector('link[rel=icon]').href)) out.push('favicon');
  return out;
}"""
NB = "\u00a0"  # the page joins a number to its unit with a no-break space
STALE_VI = f"Dữ liệu đã cũ: lần kiểm tra gần nhất cách đây 10{NB}phút. Máy giám sát có thể đã ngừng kiểm tra."


def in_first_screen(locator, height: int) -> bool:
    box = locator.bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height


@pytest.mark.parametrize("width,height,mobile", [(1366, 768, False), (390, 844, True)])
def test_ten_minutes_after_its_data_the_page_says_stale_on_the_first_screen_and_nothing_is_green(
        open_page, width, height, mobile):
    """The page was fresh when written (its data 30 s old, 3 x 60 s allowed); the browser's clock
    reads 10 minutes after its data, as when the agent stopped and the page stayed."""
    page, w = open_page(after_data_s=600, viewport={"width": width, "height": height}, is_mobile=mobile,
                        has_touch=mobile)
    banner = page.locator("#stale")
    assert banner.inner_text() == STALE_VI and in_first_screen(banner, height)
    assert banner.get_attribute("role") == "alert"
    asof = page.locator("header .asof")
    assert asof.inner_text().endswith(f"(cách đây 10{NB}phút)") and in_first_screen(asof, height)
    assert page.title() == "[dữ liệu cũ] Tình trạng mạng WAN tỉnh Bắc Ninh"
    # no green anywhere: the summary's up card, the sites' up badges, the favicon
    assert page.evaluate(GREEN) == []
    tags = page.locator(".cards a.card .stale-tag")
    assert tags.count() == 5 and all(tags.nth(i).is_visible() for i in range(5))
    assert tags.nth(0).inner_text() == "dữ liệu cũ"
    assert "dữ liệu cũ" in page.locator("#now-h").inner_text()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"page-stale-{width}x{height}.png"))
    assert w.console_errors == [] and w.page_errors == []


def test_a_fresh_page_is_not_stale_and_its_up_sites_are_green(open_page):
    page, w = open_page(after_data_s=150, viewport={"width": 1366, "height": 768})  # within 3 x 60 s
    assert page.locator(".banner").count() == 0
    assert page.locator("header .asof").inner_text().endswith(f"(cách đây 2{NB}phút)")
    assert page.title() == "Tình trạng mạng WAN tỉnh Bắc Ninh"
    assert page.locator(".stale-tag:visible").count() == 0
    green = page.evaluate(GREEN)  # the same check finds green on a fresh page: it can fail
    assert "SPAN.badge st-up background-color" in green and "favicon" in green
    assert w.console_errors == [] and w.page_errors == []


def test_an_open_page_turns_stale_between_reloads(browser, site):
    """No reload needed: the script checks again every 10 s (the browser's timers driven by
    Playwright's clock; the 60 s reload has not come)."""
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    try:
        page = context.new_page()
        data_ts = site["data"]["last_cycle"]["started_at"]
        page.clock.install(time=data_ts + 60)
        page.goto(site["url"], wait_until="load")
        assert page.locator("#stale").count() == 0 and page.evaluate(GREEN) != []
        page.evaluate("window.sameDocument = true")
        page.clock.set_system_time(data_ts + 600)  # the clock moves on (no timer runs): not seen yet
        assert page.locator("#stale").count() == 0
        page.clock.run_for(10_000)
        assert page.locator("#stale").inner_text() == STALE_VI
        assert page.evaluate(GREEN) == []
        assert page.evaluate("window.sameDocument === true")  # no reload
    finally:
        context.close()


@pytest.fixture(scope="module")
def small_pages(tmp_path_factory):
    """The 6-site page in English (data 30 s old when written), and in Vietnamese written stale
    (the last cycle 7 minutes before `render`)."""
    from test_page import SMALL, record, write_config

    out = {}
    for name, page, age_s in (("en", 'language = "en"', 30), ("old", "", 420)):
        folder = tmp_path_factory.mktemp(f"stale-{name}")
        cfg = write_config(folder, SMALL, page=page)
        now = time.time()
        record(cfg, [(now - age_s - 60 * k, {}) for k in range(2, -1, -1)])
        _, data, _ = render(cfg, folder / "out")
        out[name] = {"url": (folder / "out" / "index.html").as_uri(), "data": data}
    return out


def test_the_english_page_says_stale_in_english(browser, small_pages):
    en = small_pages["en"]
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    try:
        page = context.new_page()
        page.clock.set_fixed_time(en["data"]["last_cycle"]["started_at"] + 600)
        page.goto(en["url"], wait_until="load")
        banner = page.locator("#stale")
        assert banner.inner_text() == f"Data is stale: the last check was 10{NB}min ago. The monitoring agent may have stopped."
        assert in_first_screen(banner, 844)
        assert page.locator("header .asof").inner_text().endswith(f"(10{NB}min ago)")
        assert page.title() == "[stale data] Bắc Ninh provincial WAN status"
        assert page.evaluate(GREEN) == [] and page.locator(".cards .stale-tag").first.inner_text() == "stale data"
    finally:
        context.close()


@pytest.mark.parametrize("width,height", [(1366, 768), (390, 844)])
def test_without_javascript_the_data_time_is_on_the_first_screen(browser, small_pages, width, height):
    """The written page cannot know how old it has become: it shows the data's time (absolute,
    never "1 second ago"); a page written stale says so and shows no green."""
    for name in ("en", "old"):
        data = small_pages[name]["data"]
        context = browser.new_context(viewport={"width": width, "height": height}, java_script_enabled=False)
        try:
            page = context.new_page()
            page.goto(small_pages[name]["url"], wait_until="load")
            asof = page.locator("header .asof")
            assert in_first_screen(asof, height)
            assert asof.locator("time").get_attribute("datetime").startswith(
                datetime.fromtimestamp(data["last_cycle"]["started_at"], VN).strftime("%Y-%m-%dT%H:%M"))
            assert "ago" not in asof.inner_text() and "cách đây" not in asof.inner_text()
            if name == "old":
                assert in_first_screen(page.locator("#stale"), height)
                assert page.locator("#stale").inner_text().startswith(f"Dữ liệu đã cũ: lần kiểm tra gần nhất cách đây 7{NB}phút")
                assert page.evaluate(GREEN) == []
            else:
                assert page.locator(".banner").count() == 0 and page.evaluate(GREEN) != []
        finally:
            context.close()
