#!/usr/bin/env python3
"""Audit the status page with independent tools, the way a reviewer would.

For each size in --sizes (177 = the shipped sites.toml, other numbers a
generated inventory) it builds a store with 30 days of history as
bench/render.py does, renders the page with `python -m wanmon render`, serves
the folder on 127.0.0.1 the way nginx's `gzip_static on` does (index.html.gz
with Content-Encoding: gzip when the browser accepts it; README, "Serving
it"), and runs on it:

  * Lighthouse (npm `lighthouse`, tests/node) in Debian's headless Chromium,
    desktop and mobile presets: performance, accessibility, best practices, SEO;
  * axe-core (npm `axe-core`) in Chromium through Playwright, WCAG 2.1 A and
    AA rules, with every group opened (so every row is audited);
  * html-validate (npm `html-validate`), the recommended preset.

It prints one table and exits 1 when a figure is under its bar: accessibility,
best practices and SEO >= 95 on every run; performance >= 90 on the desktop
preset. Network: 127.0.0.1 only.

    bash scripts/test.sh --setup-only    # or any run of it: installs tests/node
    .venv/bin/python tools/audit_page.py --sizes 177,2000
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NODE = REPO / "tests" / "node"
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
BARS = {"accessibility": 95, "best-practices": 95, "seo": 95}
DESKTOP_PERFORMANCE_BAR = 90
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class GzipStatic(http.server.SimpleHTTPRequestHandler):
    """nginx's gzip_static: FILE.gz served for FILE, Content-Encoding: gzip, to clients that accept it."""

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        gz = path.with_name(path.name + ".gz")
        if gz.is_file() and "gzip" in self.headers.get("Accept-Encoding", ""):
            f = open(gz, "rb")
            self.send_response(200)
            self.send_header("Content-Type", self.guess_type(str(path)))
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(gz.stat().st_size))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            return f
        return super().send_head()

    def log_message(self, *args):
        pass


def serve(folder: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(GzipStatic, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def lighthouse(url: str, preset: str, out: Path) -> dict[str, int]:
    argv = [str(NODE / "node_modules" / ".bin" / "lighthouse"), url, "--quiet", "--output=json",
            f"--output-path={out}", f"--only-categories={','.join(CATEGORIES)}",
            "--chrome-flags=--headless=new --no-sandbox --disable-gpu --disable-background-networking"]
    if preset == "desktop":
        argv.append("--preset=desktop")
    subprocess.run(argv, check=True, env={**os.environ, "CHROME_PATH": CHROMIUM}, timeout=300)
    report = json.loads(out.read_text(encoding="utf-8"))
    scores = {k: round(100 * report["categories"][k]["score"]) for k in CATEGORIES}
    misses = [f"{a['id']} {report['audits'][a['id']].get('displayValue', '')}".strip()
              for k in CATEGORIES for a in report["categories"][k]["auditRefs"]
              if a["weight"] > 0 and (report["audits"][a["id"]]["score"] or 1) < 1]
    return {**scores, "misses": misses}


def axe(url: str, viewports=({"width": 1366, "height": 768},)) -> tuple[list[str], int]:
    """axe-core's WCAG 2.1 A and AA rules on the page with every group opened, at each viewport:
    (the violations, "rule (n nodes): help: first nodes", and the fewest rules passed at one)."""
    from playwright.sync_api import sync_playwright

    bad, passes = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            for viewport in viewports:
                page = browser.new_page(viewport=viewport)
                page.goto(url, wait_until="load")
                page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
                page.add_script_tag(path=str(NODE / "node_modules" / "axe-core" / "axe.min.js"))
                result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})", WCAG)
                bad += [f"{viewport['width']} px: {v['id']} ({len(v['nodes'])} nodes): {v['help']}: "
                        f"{[n['html'][:120] for n in v['nodes'][:3]]}" for v in result["violations"]]
                passes.append(len(result["passes"]))
                page.close()
        finally:
            browser.close()
    return bad, min(passes)


def interaction(url: str) -> dict[str, float]:
    """What a user feels, in Chromium at 1366x768 (no throttling): the page loaded (ms), a
    filter applied after the last keystroke (ms, the 150 ms debounce taken out), the page's
    height before a filter and after it is cleared (px: the groups given back closed)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            page.goto(url, wait_until="load")
            nav = page.evaluate("(() => { const n = performance.getEntriesByType('navigation')[0];"
                                " return [n.domContentLoadedEventEnd, n.loadEventEnd]; })()")
            height = page.evaluate("document.documentElement.scrollHeight")
            times = []
            for text in ("xa", "thử", "zzz-none", ""):
                t = page.evaluate("""t => new Promise(done => {
                    const q = document.getElementById('filter'), tools = document.getElementById('tools');
                    tools.removeAttribute('data-applied');
                    q.value = t;
                    const start = performance.now();
                    q.dispatchEvent(new Event('input'));
                    const poll = () => tools.getAttribute('data-applied') === t
                        ? done(performance.now() - start) : requestAnimationFrame(poll);
                    requestAnimationFrame(poll); })""", text)
                times.append(max(0.0, t - 150))
            after = page.evaluate("document.documentElement.scrollHeight")
        finally:
            browser.close()
    return {"dom_ms": nav[0], "load_ms": nav[1], "filter_ms": max(times), "height_px": height, "height_after_px": after}


def html_validate(page: Path) -> list[str]:
    """html-validate's recommended preset on the file: its error lines ([] when it passes)."""
    with tempfile.TemporaryDirectory(prefix="wanmon-hv-") as tmp:
        cfg = Path(tmp) / "htmlvalidate.json"
        cfg.write_text('{"extends": ["html-validate:recommended"]}', encoding="utf-8")
        r = subprocess.run([str(NODE / "node_modules" / ".bin" / "html-validate"), "--config", str(cfg),
                            "--formatter", "text", str(page)], capture_output=True, text=True, timeout=300)
    if r.returncode == 0:
        return []
    return [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()] or [f"html-validate exited {r.returncode}"]


def build(size: int, work: Path) -> Path:
    import render as bench

    folder = work / f"n{size}"
    folder.mkdir(parents=True)
    cfg = bench.shipped_config(folder) if size == 177 else bench.generated_config(folder, size)
    bench.build_store(cfg, raw_days=1, seed=size)
    out = folder / "out"
    subprocess.run([sys.executable, "-m", "wanmon", "--config", str(cfg), "render", "--out", str(out)],
                   check=True, cwd=REPO, capture_output=True, timeout=600)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="177,2000", help="site counts; 177 = the shipped sites.toml (default 177,2000)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    if not (NODE / "node_modules" / ".bin" / "lighthouse").exists():
        print(f"audit: run `npm ci` in {NODE} first (scripts/test.sh does)", file=sys.stderr)
        return 2
    results, failed = [], []
    with tempfile.TemporaryDirectory(prefix="wanmon-audit-") as tmp:
        for size in (int(x) for x in args.sizes.split(",")):
            out = build(size, Path(tmp))
            kib = {f.name: f.stat().st_size // 1024 for f in sorted(out.iterdir())}
            server = serve(out)
            url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
            try:
                row = {"sites": size, "kib": kib}
                for preset in ("desktop", "mobile"):
                    row[preset] = lighthouse(url, preset, Path(tmp) / f"lh-{size}-{preset}.json")
                row["axe"] = axe(url)[0]
                row["browser"] = interaction(url)
                row["html_validate"] = html_validate(out / "index.html")
            finally:
                server.shutdown()
            results.append(row)
            for preset in ("desktop", "mobile"):
                for k, bar in {**BARS, **({"performance": DESKTOP_PERFORMANCE_BAR} if preset == "desktop" else {})}.items():
                    if row[preset][k] < bar:
                        failed.append(f"{size} sites, {preset}: {k} {row[preset][k]} < {bar}")
            failed += [f"{size} sites, axe: {v}" for v in row["axe"]]
            failed += [f"{size} sites, html-validate: {v}" for v in row["html_validate"][:10]]
    if args.json:
        print(json.dumps({"results": results, "failed": failed}, indent=1, ensure_ascii=False))
    else:
        print(f"{'sites':>6}  {'preset':8} {'perf':>5} {'a11y':>5} {'b.p.':>5} {'seo':>5}   axe  html-validate  "
              "index.html / .gz KiB")
        for r in results:
            for preset in ("desktop", "mobile"):
                s = r[preset]
                print(f"{r['sites']:>6}  {preset:8} {s['performance']:>5} {s['accessibility']:>5} "
                      f"{s['best-practices']:>5} {s['seo']:>5}   {len(r['axe']):>3}  {len(r['html_validate']):>13}  "
                      f"{r['kib']['index.html']:,} / {r['kib']['index.html.gz']:,}")
                for m in s["misses"]:
                    print(f"{'':16}- {m}")
        print(f"\n{'sites':>6}  {'DOM ms':>7} {'load ms':>8} {'filter ms':>10} {'height px':>10} {'after clear':>12}")
        for r in results:
            b = r["browser"]
            print(f"{r['sites']:>6}  {b['dom_ms']:>7.0f} {b['load_ms']:>8.0f} {b['filter_ms']:>10.0f} "
                  f"{b['height_px']:>10,} {b['height_after_px']:>12,}")
        for f in failed:
            print(f"FAIL: {f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
