"""The picture of the tree: tree.html beside the page, the configured tree of the page's instant
with each site's status, drawn as plain SVG here (no script, no library), and the uplinks
`wanmon topology` found to differ marked (wanmon.topology.last: its last run, compared again
with the config of the instant; nothing is traced here).

Layout: one panel per site with children (a branch: the province's core, each district's
router), its children in rows of COLS boxes under it, in the inventory's order, on one trunk;
a child that has children of its own links to its own panel (its line says how many). Each
site is drawn once, where its configured uplink is; a root with children heads its own panel,
the roots without children share one. A site whose uplink was found to differ says so in its
box (≠, the uplink found; a dashed outline) and is drawn again, dashed, on a dashed line under
the uplink found, each linking to the other.

Why panels, not one picture: 10,000 sites in one SVG are ~60,000 px tall, one image nobody can
scroll through; as the page's district groups, a panel is a <details>, closed when everything
in it is up and no uplink differs, once the tree has more than OPEN_ALL sites (at 177 every
panel is open: the whole tree reads top to bottom). Every site is in the file either way.

Status is told by shape and pattern as well as colour (for colour-blind readers and grey
printouts): the page's symbols drawn (● up, ▲ degraded, ✖ down, ⊘ unreachable; a hollow ◇ unknown),
a hatched box with a thick border when down, dotted when unreachable; each box has a <title>
(its whole name, id, status, address, the uplink found) and its words in plain text.

Written in Python rather than in the template, as the page's rows (wanmon.page._row_writer):
a Jinja expression per attribute cost several times more at 10,000 boxes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from wanmon.config import Config
from wanmon.status import SEVERITY
from wanmon.words import NBSP, TREE, Fmt, counted, level_names
from wanmon.words import PAGE as TEXT

OPEN_ALL = 500  # up to this many sites every panel is open
DIFFS_OPEN = 10  # the list of differences is open up to this many (the picture comes first)
COLS = 4  # boxes in a row
W, H = 232, 34  # a box
GX, GY = 8, 8  # between boxes
PAD = 4  # around the picture
INDENT = 24  # the children's left edge from the head's
TRUNK = PAD + 12  # the trunk's x
LINE1, LINE2 = 30, 36  # characters shown on a box's two lines (12 px, 11 px type); the rest in its <title>


@dataclass
class Panel:
    head: str | None  # None: the roots without children
    real_head: bool  # the head drawn here as itself (a root), else as a link to its place
    kids: list[str]
    ghosts: list[str] = field(default_factory=list)  # sites found under head, configured elsewhere


def panels(sites: dict[str, dict[str, Any]], found: dict[str, str]) -> list[Panel]:
    """The panels in reading order (depth first, the inventory's order). sites: the snapshot's
    (in its order, with "parent"); found: {site: the uplink found, where it differs}."""
    kids: dict[str, list[str]] = {}
    roots = []
    for sid, s in sites.items():
        p = s["parent"]
        if p is not None and p in sites:
            kids.setdefault(p, []).append(sid)
        else:
            roots.append(sid)
    ghosts: dict[str, list[str]] = {}
    for sid in sites:  # the inventory's order
        if sid in found:
            ghosts.setdefault(found[sid], []).append(sid)
    heads = kids.keys() | ghosts.keys()
    out = []
    loose = [r for r in roots if r not in heads]
    if loose:
        out.append(Panel(None, False, loose))
    for r in roots:
        if r not in heads:
            continue
        todo = [(r, True)]
        while todo:
            h, real = todo.pop()
            out.append(Panel(h, real, kids.get(h, []), ghosts.get(h, [])))
            todo.extend((c, False) for c in reversed(kids.get(h, [])) if c in heads)
    return out


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "…"


class _Drawer:
    """The SVG of each panel, and the words around it."""

    def __init__(self, cfg: Config, snap: dict[str, Any], found: dict[str, dict[str, Any]]):
        from wanmon.page import html_text

        lang = cfg.page.language
        self.e = html_text
        self.sites = snap["sites"]
        self.found = found  # {site: its suggestion (wanmon.topology: site, discovered_parent, evidence)}
        self.t = {**TEXT[lang], **TREE[lang]}
        self.fmt = Fmt(lang, ZoneInfo(cfg.page.timezone), NBSP)
        self.names = level_names(cfg, snap["generated_at"], lang)
        self.kids_n: dict[str, list[str]] = {}
        for sid, s in self.sites.items():
            if s["parent"] in self.sites:
                self.kids_n.setdefault(s["parent"], []).append(sid)
        self._what: dict[str, str] = {}

    def name(self, sid: str | None) -> str:
        if sid is None:
            return self.t["no_parent"]
        s = self.sites.get(sid)
        return f"{s['name']} ({sid})" if s else sid

    def evidence(self, sid: str) -> str:
        return ", ".join(self.t.get(k, k) for k in self.found[sid]["evidence"])

    def diff_line(self, sid: str) -> str:
        f = self.found[sid]
        return self.t["diff_line"].format(
            configured=self.name(f["configured_parent"]),
            found=self.name(f["discovered_parent"]),
            evidence=self.evidence(sid),
        )

    def below(self, sid: str) -> str:
        """What is under a site: "14 xã bên dưới", or "50 điểm bên dưới" when of several levels."""
        text = self._what.get(sid)
        if text is None:
            ids = self.kids_n[sid]
            levels = {self.sites[i]["level"] for i in ids}
            what = self.names[levels.pop()].count(len(ids)) if len(levels) == 1 else self.t["sites"]
            text = self._what[sid] = self.t["below"].format(n=len(ids), what=what)
        return text

    def title(self, sid: str) -> str:
        s = self.sites[sid]
        st = s["status"]
        text = f"{s['name']} ({sid}): {self.t[st]}"
        if st == "down" and s["since"]:
            text += f" ({self.t['since']} {self.fmt.dt(s['since'])})"
        text += f" · {s['address']}"
        if sid in self.kids_n:
            text += f" · {self.below(sid)}"
        if sid in self.found:
            text += f" · ≠ {self.diff_line(sid)}"
        return text

    def box(self, sid: str, x: int, y: int, kind: str, panel_of: set[str]) -> str:
        """One site's box at (x, y). kind: "n" (the site, once in the file), "head" (the same, heading
        its own panel), "ref" (a panel's head drawn again: a link to its place), "ghost" (drawn
        again under the uplink found)."""
        e, s, t = self.e, self.sites[sid], self.t
        st = s["status"]
        if kind == "ghost":
            p = s["parent"]
            line2 = t["ghost_line"].format(name=self.sites[p]["name"] if p in self.sites else t["no_parent"])
            href, cls, ident = f"#n-{sid}", f"ghost st-{st}", f' id="g-{sid}"'
        elif kind == "ref":
            line2 = f"{t[st]} · {sid} ↑"
            href, cls, ident = f"#n-{sid}", f"ref st-{st}", ""
        else:
            href, cls, ident = None, f"n st-{st}", f' id="n-{sid}" data-site="{sid}"'
            if kind == "head":
                line2 = f"{t[st]} · {sid}"
            elif sid in self.found:
                line2 = t["found_via"].format(name=self.sites[self.found[sid]["discovered_parent"]]["name"])
                cls += " diff"
                href = f"#g-{sid}"
            elif sid in panel_of and sid in self.kids_n:
                line2 = f"{t[st]} · {self.below(sid)} ↓"
            else:
                line2 = f"{t[st]} · {sid}"
            if sid in panel_of and kind != "head":
                href = f"#b-{sid}"
        outline = (
            f'<rect class="dx" x="{x - 3}" y="{y - 3}" width="{W + 6}" height="{H + 6}" rx="6"/>'
            if kind != "ghost" and kind != "ref" and sid in self.found
            else ""
        )
        g = (
            f'<g class="{cls}"{ident} role="img"><title>{e(self.title(sid))}</title>{outline}'
            f'<rect x="{x}" y="{y}" width="{W}" height="{H}" rx="4"/><use href="#m-{st}" x="{x + 5}" y="{y + 5}"/>'
            f'<text x="{x + 22}" y="{y + 14}">{e(_clip(s["name"], LINE1))}</text>'
            f'<text class="s" x="{x + 22}" y="{y + 28}">{e(_clip(line2, LINE2))}</text></g>'
        )
        return f'<a href="{href}">{g}</a>' if href else g

    def svg(self, p: Panel, panel_of: set[str]) -> str:
        parts: list[str] = []
        edges: list[str] = []
        dashed: list[str] = []
        if p.head is None:  # the roots without children: rows, no lines
            x0, y0 = PAD, PAD
        else:
            parts.append(self.box(p.head, PAD, PAD, "head" if p.real_head else "ref", panel_of))
            x0, y0 = PAD + INDENT, PAD + H + GY + 4
        bottom = y0 - GY
        right = x0
        for ids, kind, lines in ((p.kids, "n", edges), (p.ghosts, "ghost", dashed)):
            if not ids:
                continue
            top = bottom + GY
            rows = (len(ids) + COLS - 1) // COLS
            for i, sid in enumerate(ids):
                r, c = divmod(i, COLS)
                parts.append(self.box(sid, x0 + c * (W + GX), top + r * (H + GY), kind, panel_of))
            if p.head is not None:
                mid_last = top + (rows - 1) * (H + GY) + H // 2
                start = PAD + H if kind == "n" or not p.kids else bottom - H // 2
                lines.append(f"M{TRUNK},{start}V{mid_last}")
                for r in range(rows):
                    n_row = min(COLS, len(ids) - r * COLS)
                    lines.append(f"M{TRUNK},{top + r * (H + GY) + H // 2}H{x0 + (n_row - 1) * (W + GX) + W // 2}")
            bottom = top + rows * (H + GY) - GY
            right = max(right, x0 + min(COLS, len(ids)) * (W + GX) - GX)
        if p.head is not None:
            right = max(right, PAD + W)
        width, height = right + PAD, bottom + PAD
        paths = (f'<path class="e" d="{"".join(edges)}"/>' if edges else "") + (
            f'<path class="e d" d="{"".join(dashed)}"/>' if dashed else ""
        )
        return (
            f'<svg class="tree" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f"{paths}{''.join(parts)}</svg>"
        )

    def summary(self, p: Panel) -> dict[str, Any]:
        """A panel's summary line: its worst status (its head's included: whose problem it is),
        its head, how many sites under it, their problems and the differences in it; open or not."""
        st = [self.sites[i]["status"] for i in p.kids]
        worst = min(
            st + ([self.sites[p.head]["status"]] if p.head is not None else []),
            key=lambda x: SEVERITY[x],
            default="unknown",
        )
        problems = [(k, n) for k in ("down", "unreachable", "degraded") if (n := st.count(k))]
        diffs = sum(1 for i in p.kids if i in self.found) + len(p.ghosts)
        return {
            "id": f"b-{p.head}" if p.head is not None else "loose",
            "head": p.head,
            "name": self.sites[p.head]["name"] if p.head is not None else self.t["loose"],
            "status": worst,
            "count": counted(self.t, "sites_n", n=len(p.kids)),
            "problems": [f"{n}{NBSP}{self.t[k].lower()}" for k, n in problems],
            "diffs": self.t["diffs_n"].format(n=diffs) if diffs else "",
            "attention": diffs > 0 or worst != "up",
        }


def tree_fragments(cfg: Config, snap: dict[str, Any]) -> Iterable[str]:
    """tree.html as a stream of text fragments: the template's shell, each panel's SVG made
    when the template reaches it."""
    from markupsafe import Markup

    from wanmon.page import STATUS_SYMBOL, _env

    lang = cfg.page.language
    topo = snap["topology"]
    found = {f["site"]: f for f in topo["suggestions"]}
    d = _Drawer(cfg, snap, found)
    ps = panels(snap["sites"], {sid: f["discovered_parent"] for sid, f in found.items()})
    panel_of = {p.head for p in ps if p.head is not None}
    open_all = len(snap["sites"]) <= OPEN_ALL

    def svg(p: Panel) -> Markup:
        return Markup(d.svg(p, panel_of))

    shown: list[tuple[Panel, dict[str, Any]]] = []
    for p in ps:
        s = d.summary(p)
        s["open"] = open_all or s["attention"]
        shown.append((p, s))
    diffs = [
        {"site": sid, "name": snap["sites"][sid]["name"], "text": d.diff_line(sid), "details": found[sid]["details"]}
        for sid in snap["sites"]
        if sid in found
    ]
    now = snap["generated_at"]
    data_ts = min(snap["last_cycle"]["started_at"], now) if snap["last_cycle"] else None
    return (
        _env(cfg)
        .get_template("tree.html.j2")
        .generate(
            s=snap,
            t=d.t,
            f=d.fmt,
            lang=lang,
            now=now,
            data_ts=data_ts,
            province=cfg.page.province,
            symbol=STATUS_SYMBOL,
            panels=shown,
            svg=svg,
            diffs=diffs,
            topology_ts=topo["ts"],
            statuses=("up", "degraded", "down", "unreachable", "unknown"),
            counted=counted,
            diffs_open=DIFFS_OPEN,
        )
    )


def differences(cfg: Config, store: Any) -> dict[str, Any]:
    """The snapshot's "topology": {"ts": when `wanmon topology` last ran (None: never),
    "suggestions": its differences that still hold today, as its --json writes them, with their
    details}. cfg: the config of the page's instant."""
    from wanmon import topology

    ts, found = topology.last(cfg, store)
    return {"ts": ts, "suggestions": [{**sg.as_json(), "details": list(sg.details)} for sg in found]}
