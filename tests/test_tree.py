"""The picture of the tree (tree.html beside index.html, wanmon/tree.py): every site of today's
tree once, under its configured uplink, with its status told by words, shape and pattern; the
uplinks `wanmon topology` found to differ marked (a dashed line under the uplink found, a note).

Real stores: the cycles are recorded by Store.record_cycle as `check` records them
(test_page.record), a good path with the store's own API (Store.record_good_paths, as `wanmon
probe` and `topology` keep theirs), then `wanmon topology` and `wanmon render` run as a user runs
them. The lab's real traces are in test_trace_lab.py. The HTML and SVG are read with
BeautifulSoup, as a browser's tree, never with regexes on the markup.
"""

from __future__ import annotations

import json
import subprocess
import time
import tomllib
from itertools import combinations
from pathlib import Path

from conftest import wanmon
from test_page import BeautifulSoup, build_hostile177, record, render, write_config

from wanmon.config import load as load_config
from wanmon.model import Hop, Trace
from wanmon.store import Store

WRONG = "yen-phong-tam-da"  # configured under yen-phong; its good path goes through que-vo's router
STATUS_VI = {
    "up": "Hoạt động",
    "degraded": "Suy giảm",
    "down": "Mất kết nối",
    "unreachable": "Không tới được",
    "unknown": "Chưa rõ",
}


def keep_good_path(cfg_path: Path, site: str, through: list[str], ts: float) -> None:
    """A path that reached `site` through the sites `through` (their addresses, in order), kept
    in the store as `wanmon probe` and `topology` keep theirs (Store.record_good_paths)."""
    cfg = load_config(cfg_path, secrets=False)
    by_id = {s.id: s for s in cfg.sites}
    hops = tuple(Hop(d, by_id[sid].address, 1.0 + d) for d, sid in enumerate([*through, site], start=1))
    store = Store.open(cfg.store_path)
    try:
        store.record_good_paths({site: Trace(by_id[site].address, by_id[site].address, ts, hops, True)})
    finally:
        store.close()


def topology(cfg_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`wanmon topology` from the stored good paths only (--budget 0: nothing is traced)."""
    r = wanmon("--config", str(cfg_path), "topology", "--budget", "0", *args, cwd=cfg_path.parent)
    assert r.returncode == 0, r.stderr
    return r


def with_wrong_parent(folder: Path) -> Path:
    """The 177-site hostile history (test_page.build_hostile177: a down district, down and
    degraded communes, hostile names) with WRONG found under que-vo by `wanmon topology`."""
    cfg = build_hostile177(folder)
    keep_good_path(cfg, WRONG, ["dc-core", "que-vo"], time.time())
    found = json.loads(topology(cfg, "--json").stdout)
    assert found == {
        "suggestions": [
            {"site": WRONG, "configured_parent": "yen-phong", "discovered_parent": "que-vo", "evidence": ["traceroute"]}
        ]
    }
    return cfg


def read_tree(out: Path) -> BeautifulSoup:
    return BeautifulSoup((out / "tree.html").read_text(encoding="utf-8"), "html.parser")


def nodes(soup) -> dict[str, object]:
    """{site id: its box} (each site's own box; the ghosts and a panel's head drawn again have none)."""
    out: dict[str, object] = {}
    for g in soup.select("g[data-site]"):
        assert g["data-site"] not in out, f"{g['data-site']} drawn twice"
        out[g["data-site"]] = g
    return out


def lines(g) -> list[str]:
    return [t.get_text() for t in g.find_all("text")]


def box(g) -> tuple[float, float, float, float]:
    r = g.find("rect", class_=lambda c: c != "dx")
    return float(r["x"]), float(r["y"]), float(r["width"]), float(r["height"])


def test_every_site_once_under_its_uplink_with_its_status_and_the_uplink_found(tmp_path):
    cfg = with_wrong_parent(tmp_path)
    soup_index, data, _ = render(cfg, tmp_path / "out")
    soup = read_tree(tmp_path / "out")
    raw = tomllib.loads(cfg.read_text(encoding="utf-8"))
    sites = {s["id"]: s for s in raw["sites"]}
    drawn = nodes(soup)
    assert sorted(drawn) == sorted(sites)  # every site, once
    assert soup_index.find("a", href="tree.html").get_text() == "Sơ đồ mạng"
    assert not soup.find_all("script") and not soup.find_all("img")  # the hostile names are text

    # each box: its name, its status in words and by its shape, the whole of it in its <title>
    shapes = {g["id"]: str(g) for g in soup.select("defs g[id^=m-]")}
    assert len(set(shapes.values())) == 5  # one shape per status, each drawn differently
    for sid, g in drawn.items():
        st = data["sites"][sid]["status"]
        assert f"st-{st}" in g["class"]
        assert g.find("use")["href"] == f"#m-{st}"
        assert g.find("title").get_text().startswith(f"{sites[sid]['name']} ({sid}): {STATUS_VI[st]}")
        first, second = lines(g)
        assert sites[sid]["name"].startswith(first.rstrip("…"))
        assert second.startswith("≠ " if sid == WRONG else STATUS_VI[st])
    down = [sid for sid, s in data["sites"].items() if s["status"] == "down"]
    assert {"tien-du", "dc-fw-1", "que-vo-phuong-mao", "que-vo-phu-lang"} <= set(down)
    assert lines(drawn["dc-fw-1"]) == ["<script>alert(1)</script>", "Mất kết nối · dc-fw-1"]
    assert "Mất kết nối (từ " in drawn["dc-fw-1"].find("title").get_text()

    # under its configured uplink: each panel holds the children of its head, in the inventory's order
    for sid in sites:
        kids = [k for k, s in sites.items() if s.get("parent") == sid]
        panel = soup.find("details", id=f"b-{sid}")
        if not kids:
            assert panel is None
            continue
        assert [g["data-site"] for g in panel.select("g[data-site]") if g["data-site"] != sid] == kids
    # the down district's panel is open and says whose problem it is; its communes cannot be reached
    tien_du = soup.find("details", id="b-tien-du")
    assert tien_du.has_attr("open")
    behind = [k for k, s in sites.items() if s.get("parent") == "tien-du"]
    summary = tien_du.find("summary").get_text(" ", strip=True)
    assert summary.startswith("✖ Mất kết nối") and f"{len(behind)}\u00a0không tới được" in summary
    assert all("st-unreachable" in drawn[k]["class"] for k in behind)

    # the uplink found: a note in the site's box, linked to its copy drawn dashed under que-vo
    g = drawn[WRONG]
    assert "diff" in g["class"] and g.find("rect", class_="dx") is not None
    assert lines(g)[1] == "≠ thực tế qua UBND thị xã Quế Võ" and g.parent["href"] == f"#g-{WRONG}"
    assert g.find_parent("details")["id"] == "b-yen-phong"
    que_vo = soup.find("details", id="b-que-vo")
    ghost = que_vo.find("g", id=f"g-{WRONG}")
    assert "ghost" in ghost["class"] and ghost.parent["href"] == f"#n-{WRONG}"
    assert lines(ghost) == ["UBND xã Tam Đa", "≠ cấu hình: UBND huyện Yên Phong"]
    # the dashed line leaves que-vo's trunk and ends in the middle of the copy
    head = que_vo.find("g", class_="ref")
    dashed = que_vo.find("path", class_="d")["d"]
    hx, _, hw, _ = box(head)
    gx, gy, gw, gh = box(ghost)
    first_move = dashed.split("V")[0]
    trunk_x = float(first_move[1:].split(",")[0])
    assert hx < trunk_x < hx + hw and trunk_x < gx
    assert dashed.endswith(f"M{trunk_x:g},{gy + gh / 2:g}H{gx + gw / 2:g}")
    assert que_vo.has_attr("open") and "1 khác cấu hình" in que_vo.find("summary").get_text()
    # and the list above says it in words, with the evidence
    (item,) = soup.select("ul.diffs li")
    assert item.find("a")["href"] == f"#n-{WRONG}"
    assert (
        "cấu hình nối qua UBND huyện Yên Phong (yen-phong), thực tế qua UBND thị xã Quế Võ (que-vo) (theo traceroute)"
    ) in item.get_text()
    assert item.select_one(".details").get_text().startswith(f"traceroute: {sites['dc-core']['address']} ")
    assert data["topology"]["suggestions"][0]["discovered_parent"] == "que-vo"

    # readable: no box covers another, every box inside its picture
    for svg in soup.select("details.panel svg"):
        w, h = float(svg["width"]), float(svg["height"])
        boxes = [box(g) for g in svg.find_all("g", role="img")]
        for x, y, bw, bh in boxes:
            assert 0 <= x <= x + bw <= w and 0 <= y <= y + bh <= h
        for (x1, y1, w1, h1), (x2, y2, w2, h2) in combinations(boxes, 2):
            assert x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1

    # the parent set as found (the patch `wanmon topology` prints, applied): nothing differs any more
    text = topology(cfg).stdout
    diff = text[text.index(f"--- {cfg}") :]
    applied = subprocess.run(["patch", "-p0", str(cfg)], input=diff, capture_output=True, text=True)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    render(cfg, tmp_path / "out")
    soup = read_tree(tmp_path / "out")
    assert not soup.select("details.panel g.ghost") and not soup.select("details.panel path.d")
    assert not soup.select("g.diff")
    assert nodes(soup)[WRONG].find_parent("details")["id"] == "b-que-vo"
    assert (
        soup.find("h2", id="diffs")
        .find_next("p")
        .get_text()
        .startswith("Tuyến trên trong cấu hình khớp với lần chạy `wanmon topology` lúc ")
    )


SMALL_EN = """\
[store]
path = "var/wanmon.db"
[snmp]
enabled = false
[page]
language = "en"
province = "Bắc Ninh"
"""


def generated(n_districts: int, communes: int) -> str:
    """A province core, n_districts routers under it and their communes."""
    out = [SMALL_EN, '\n[[sites]]\nid = "core"\nname = "Router lõi"\nlevel = "province"\naddress = "127.30.0.1"\n']
    for d in range(1, n_districts + 1):
        out.append(
            f'\n[[sites]]\nid = "d{d}"\nname = "UBND huyện {d}"\nlevel = "district"\ndistrict = "H{d}"\n'
            f'parent = "core"\naddress = "127.30.{d}.1"\n'
        )
        for c in range(1, communes + 1):
            out.append(
                f'\n[[sites]]\nid = "d{d}-c{c}"\nname = "UBND xã {d}.{c}"\nlevel = "commune"\n'
                f'district = "H{d}"\nparent = "d{d}"\naddress = "127.30.{d}.{c + 1}"\n'
            )
    return "".join(out)


def test_a_large_tree_keeps_every_site_and_closes_the_healthy_panels(tmp_path):
    """Past wanmon.tree.OPEN_ALL sites the panels with nothing wrong are closed (each still holds its
    sites); those with a problem or a difference are open. In English; before `wanmon topology`
    has run, then with more differences than the list shows open."""
    from wanmon.tree import DIFFS_OPEN, OPEN_ALL

    cfg = write_config(tmp_path, generated(6, 100))
    now = time.time()
    silent = {"d3": "down", **{f"d3-c{c}": "down" for c in range(1, 101)}}  # d3's router and all behind it
    assert record(cfg, [(now - 120, {}), (now - 60, silent)])["d3-c1"] == "unreachable"
    soup_index, data, _ = render(cfg, tmp_path / "out", now)
    soup = read_tree(tmp_path / "out")
    assert len(data["sites"]) > OPEN_ALL
    assert sorted(nodes(soup)) == sorted(data["sites"])
    opened = {d["id"] for d in soup.select("details.panel") if d.has_attr("open")}
    assert opened == {"b-core", "b-d3"}  # the down router's uplink's panel, and its communes'
    assert len(soup.select("details.panel")) == 7
    d3 = nodes(soup)["d3"]
    assert lines(d3) == ["UBND huyện 3", "Down · 100\u00a0communes below ↓"] and d3.parent["href"] == "#b-d3"
    assert (
        soup.find("details", id="b-d3").find("summary").get_text(" ", strip=True)
        == "✖ Down UBND huyện 3 d3 · 100\u00a0sites · 100\u00a0unreachable"
    )
    assert soup.find("h2", id="diffs").find_next("p").get_text().startswith("`wanmon topology` has not run")
    assert data["topology"] == {"ts": None, "suggestions": []}
    assert soup_index.find("a", href="tree.html").get_text() == "Network tree"
    assert (tmp_path / "out" / "tree.html").stat().st_size < 500 * len(data["sites"])

    moved = [f"d5-c{c}" for c in range(1, DIFFS_OPEN + 2)]  # found under d6's router
    for sid in moved:
        keep_good_path(cfg, sid, ["core", "d6"], now)
    assert len(json.loads(topology(cfg, "--json").stdout)["suggestions"]) == len(moved)
    render(cfg, tmp_path / "out", now)
    soup = read_tree(tmp_path / "out")
    opened = {d["id"] for d in soup.select("details.panel") if d.has_attr("open")}
    assert opened == {"b-core", "b-d3", "b-d5", "b-d6"}  # healthy, but with differences drawn in them
    assert [g["id"] for g in soup.find("details", id="b-d6").select("g.ghost")] == [f"g-{sid}" for sid in moved]
    diffbox = soup.select_one("details.diffbox")
    assert not diffbox.has_attr("open") and len(diffbox.select("li")) == len(moved)
    assert diffbox.find("summary").get_text() == f"{len(moved)} differ"
