"""The status page through independent auditors (npm packages in tests/node, installed by
scripts/test.sh with `npm ci`), on the 177-site page with hostile names and a history with
down, unreachable and degraded sites (test_page.build_hostile177):

* axe-core's WCAG 2.1 A and AA rules in Debian's headless Chromium, every group opened;
* html-validate's recommended preset;
* Lighthouse's accessibility, best-practices and SEO scores (>= 95), the page served on
  127.0.0.1 as nginx's gzip_static serves it (tools/audit_page.py's server).

Lighthouse's performance score is a timing: it is measured by tools/audit_page.py (at
2,000 sites), never asserted here.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

import prereq

from conftest import REPO
from test_page import build_hostile177, render

NODE = REPO / "tests" / "node" / "node_modules"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = [
    prereq.needs(CHROMIUM is not None, "chromium", prereq.CHROMIUM),
    prereq.needs((NODE / "axe-core").is_dir(), "tests/node's packages (axe-core)", prereq.NODE),
]
sys.path.insert(0, str(REPO / "tools"))


@pytest.fixture(scope="module")
def page_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit")
    render(build_hostile177(folder), folder / "out")
    return folder / "out"


def test_axe_finds_no_wcag21_a_or_aa_violation(page_dir):
    prereq.need_module("playwright.sync_api")
    from audit_page import axe

    bad, passes = axe((page_dir / "index.html").as_uri(),
                      viewports=({"width": 1366, "height": 768}, {"width": 390, "height": 844}))
    assert bad == [], bad
    assert passes > 20  # it did audit the page


def test_html_validate_recommended_preset_finds_no_error(page_dir, tmp_path):
    from audit_page import html_validate

    assert html_validate(page_dir / "index.html") == []
    # and it does find errors when there are some: the same page with one tag left open
    broken = tmp_path / "broken.html"
    broken.write_text((page_dir / "index.html").read_text(encoding="utf-8").replace("</summary>", "", 1), encoding="utf-8")
    assert html_validate(broken) != []


def test_lighthouse_accessibility_best_practices_and_seo_at_least_95(page_dir, tmp_path):
    from audit_page import lighthouse, serve

    server = serve(page_dir)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
        for preset in ("desktop", "mobile"):
            scores = lighthouse(url, preset, tmp_path / f"lh-{preset}.json")
            low = {k: scores[k] for k in ("accessibility", "best-practices", "seo") if scores[k] < 95}
            assert low == {}, (preset, low, scores["misses"])
            report = json.loads((tmp_path / f"lh-{preset}.json").read_text(encoding="utf-8"))
            assert report["finalDisplayedUrl"] == url  # it audited our page, not an error page
    finally:
        server.shutdown()


def test_a_stale_page_passes_axe_and_html_validate(tmp_path):
    """The page as it is once stale (written 7 minutes after its last cycle: greyed, labelled,
    the banner on top): its greys and labels keep WCAG contrast."""
    prereq.need_module("playwright.sync_api")
    import time

    from audit_page import axe, html_validate
    from test_page import SMALL, record, write_config

    cfg = write_config(tmp_path, SMALL)
    now = time.time()
    record(cfg, [(now - 420 - 60 * k, {"tu-son-dong-ngan": "down"}) for k in range(2, -1, -1)])
    _, data, _ = render(cfg, tmp_path / "out")
    assert data["stale"] is True
    bad, passes = axe((tmp_path / "out" / "index.html").as_uri(),
                      viewports=({"width": 1366, "height": 768}, {"width": 390, "height": 844}))
    assert bad == [] and passes > 20, bad
    assert html_validate(tmp_path / "out" / "index.html") == []


def test_a_dated_page_passes_axe_and_html_validate(tmp_path):
    """A dated inventory's page after its change (test_page_dated): old names and groups under
    the sites, the line of the sites out of service, the line of the levels' new names."""
    prereq.need_module("playwright.sync_api")
    from audit_page import axe, html_validate
    from test_page import record, write_config
    from test_page_dated import HOUR, LEVEL_NAMES_TOML, T, c1_down, cycles, dated_small

    cfg = write_config(tmp_path, dated_small() + LEVEL_NAMES_TOML)
    record(cfg, cycles(T - 3 * HOUR, T + 2 * HOUR, c1_down))
    soup, _, _ = render(cfg, tmp_path / "out", T + 2 * HOUR + 30)
    assert soup.select("div.was") and soup.select_one("#out-of-service") and soup.select_one("#levels-since")
    bad, passes = axe((tmp_path / "out" / "index.html").as_uri(),
                      viewports=({"width": 1366, "height": 768}, {"width": 390, "height": 844}))
    assert bad == [] and passes > 20, bad
    assert html_validate(tmp_path / "out" / "index.html") == []


def test_the_tree_page_passes_axe_and_html_validate(tmp_path):
    """tree.html (wanmon/tree.py, acceptance 4 of issue 24) on the 177-site hostile history with
    an uplink that `wanmon topology` found to differ: every panel's SVG boxes (opened), the copy
    drawn dashed under the uplink found, the list of differences, the legend."""
    prereq.need_module("playwright.sync_api")
    from audit_page import axe, html_validate
    from test_tree import WRONG, read_tree, with_wrong_parent

    cfg = with_wrong_parent(tmp_path)
    render(cfg, tmp_path / "out")
    tree = tmp_path / "out" / "tree.html"
    soup = read_tree(tmp_path / "out")
    assert len(soup.select("g[data-site]")) == 177 and soup.find("g", id=f"g-{WRONG}") is not None
    bad, passes = axe(tree.as_uri(), viewports=({"width": 1366, "height": 768}, {"width": 390, "height": 844}))
    assert bad == [] and passes > 20, bad
    assert html_validate(tree) == []
