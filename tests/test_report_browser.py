"""The HTML report (also the body of `report --email`) in a real browser: Debian's headless
Chromium driven by Playwright, as tests/test_page_browser.py does it (no `playwright install`,
no network: the report is a file:// page and any http(s) request would be aborted).

The report is the 177-site inventory with a history (tests/test_report.py's build_177): a
district router down with the communes behind it, a commune with a 5,000-character name, a
flapping commune. On a phone (390 x 844) nothing scrolls sideways and no word is broken
inside; screenshots go to test-artifacts/."""

from __future__ import annotations

import re

import pytest

from conftest import REPO
from test_page_browser import browser  # noqa: F401 - the page tests' headless Chromium (a fixture)
from test_report import LONG, build_177, report_file
from wanmon import report as rp

ARTIFACTS = REPO / "test-artifacts"

# Words (runs of non-space) whose glyphs sit on more than one line: a word broken inside.
BROKEN_WORDS = """() => {
  const bad = [];
  const walker = document.createTreeWalker(document.querySelector('main'), NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (!n.parentElement.getClientRects().length) continue;  // not shown (a phone hides the headers)
    for (const m of n.data.matchAll(/\\S+/g)) {
      const r = document.createRange();
      r.setStart(n, m.index);
      r.setEnd(n, m.index + m[0].length);
      const tops = new Set([...r.getClientRects()].filter(x => x.width > 0).map(x => Math.round(x.top)));
      if (tops.size > 1) bad.push(m[0]);
    }
  }
  return bad;
}"""


@pytest.fixture(scope="module")
def report_url(tmp_path_factory):
    big = build_177(tmp_path_factory.mktemp("report-browser"))
    path = big["cfg"].parent / "report.html"
    path.write_bytes(report_file(big, "html"))
    return path.as_uri()


def _open(browser, url, **ctx):
    context = browser.new_context(**ctx)
    requests: list[str] = []
    context.route(re.compile(r"^(https?|wss?|ftp)://"), lambda route: route.abort())
    page = context.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url, wait_until="load")
    return context, page, requests


def test_on_a_phone_nothing_scrolls_sideways_and_no_word_is_broken(browser, report_url):
    context, page, requests = _open(browser, report_url, viewport={"width": 390, "height": 844}, is_mobile=True,
                                    has_touch=True, device_scale_factor=2)
    try:
        assert requests == [report_url]
        width = page.evaluate("() => [document.documentElement.scrollWidth, document.body.scrollWidth, innerWidth]")
        assert width[0] <= 390 and width[1] <= 390 and width[2] == 390, width
        wider = page.evaluate("""() => [...document.querySelectorAll('main *')]
            .filter(e => e.getBoundingClientRect().right > innerWidth + 0.5).map(e => e.tagName + ' ' + e.textContent.slice(0, 40))""")
        assert wider == []
        assert page.evaluate(BROKEN_WORDS) == []
        # the first screen answers the director: the whole network against the target, then the levels
        first = page.evaluate("() => document.querySelector('p.headline').getBoundingClientRect().bottom")
        assert first < 844
        text = page.inner_text("main")
        assert "Mục tiêu 99,00%: Không đạt" in text
        # each figure has its label before it (the column headers are hidden on a phone)
        cell = "document.querySelector('table.worst td[data-label]')"
        assert page.evaluate(f"() => getComputedStyle(document.querySelector('table.worst thead')).display") == "none"
        assert page.evaluate(f"() => [getComputedStyle({cell}, '::before').content, {cell}.textContent]") == \
            ['"Sẵn sàng: "', "66,67%"]
        # the long name is capped here, whole in CSV/JSON/xlsx
        assert rp.short(LONG) in text and LONG[:200] not in text
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report-390x844.png"))
        page.screenshot(path=str(ARTIFACTS / "report-390x844-full.png"), full_page=True)
    finally:
        context.close()


def test_on_a_desktop_the_tables_are_tables(browser, report_url):
    context, page, _ = _open(browser, report_url, viewport={"width": 1366, "height": 768})
    try:
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 1366
        assert page.evaluate("() => getComputedStyle(document.querySelector('thead')).display") == "table-header-group"
        assert page.evaluate(BROKEN_WORDS) == []
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report-1366x768.png"))
    finally:
        context.close()
