"""`wanmon topology`: each site's parent as the network shows it, against the configured one.

Evidence, each named in the output:

* "traceroute": the last known site before a site on a path that reached it (wanmon.trace,
  parent_on_path). The store's good paths are used (the last path that reached each site);
  a site without one is traced now, one after the other, within the command's budget, and
  the paths that reach are kept in the store for the next run and for the outage's story.
* "lldp": the site's LLDP neighbours read over SNMP (wanmon.probes.lldp), matched to sites;
  of those, the parent is the one nearer the agent (fewer hops on its good path, else the
  higher level).

A suggestion is made only where the evidence names a site other than the configured parent;
where no hop before a site is a known site, nothing is suggested (the path's routers may
simply not be in the inventory: [[hops]] names them). The TOML patch changes `parent` in each
such site's [[sites]] table, as a unified diff to review and apply by hand or with `patch`.

Each run keeps its differences in the store (meta LAST_KEY, with their evidence and time): the
page's picture of the tree (wanmon.tree) draws them, compared again with the config of its
instant (`last`), without tracing anything. Imports of the probing side (asyncio, wanmon.trace,
the SNMP probes) are made where they are used: the page imports this module, and they cost
~50 ms, a sixth of a 177-site render.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from wanmon.config import LEVELS, Config, site_key_lines
from wanmon.errors import WanmonError
from wanmon.model import Trace

if TYPE_CHECKING:
    from wanmon.probes.lldp import Neighbours
    from wanmon.store import Store
    from wanmon.trace import Names

logger = logging.getLogger(__name__)

TRACEROUTE, LLDP = "traceroute", "lldp"
LAST_KEY = "topology"  # the store's meta key of the last run's differences (remember, last)


@dataclass(frozen=True)
class Suggestion:
    site: str
    configured_parent: str | None
    discovered_parent: str
    evidence: tuple[str, ...]  # TRACEROUTE, LLDP: what names discovered_parent
    details: tuple[str, ...]  # one line per evidence, for people

    def as_json(self) -> dict:
        return {
            "site": self.site,
            "configured_parent": self.configured_parent,
            "discovered_parent": self.discovered_parent,
            "evidence": list(self.evidence),
        }


def by_traceroute(cfg: Config, paths: Mapping[str, Trace], names: Names) -> dict[str, str]:
    """{site: its parent by its good path} for the sites whose path shows a known site before them."""
    from wanmon.trace import parent_on_path

    out = {}
    for s in cfg.sites:
        t = paths.get(s.id)
        if t is not None and (p := parent_on_path(s.id, t, names)) is not None:
            out[s.id] = p
    return out


def by_lldp(cfg: Config, neighbours: Mapping[str, set[str]], paths: Mapping[str, Trace]) -> dict[str, str]:
    """{site: its parent among its LLDP neighbour sites}: the one a hop nearer the agent (by their
    good paths), or without paths the one of a higher level; none when that is not exactly one."""
    level = {s.id: LEVELS.index(s.level) for s in cfg.sites}  # 0: province
    depth = {sid: len(t.hops) for sid, t in paths.items()}
    out = {}
    for s in cfg.sites:
        near = [n for n in neighbours.get(s.id, ()) if n != s.id and n in level]
        if s.id in depth and near and all(n in depth for n in near):
            up = [n for n in near if depth[n] == depth[s.id] - 1]
        else:
            up = [n for n in near if level[n] < level[s.id]]
        if len(up) == 1:
            out[s.id] = up[0]
    return out


def suggest(
    cfg: Config,
    traced: Mapping[str, str],
    lldp: Mapping[str, str],
    details: Mapping[tuple[str, str], str],
) -> list[Suggestion]:
    """One suggestion per site whose evidence names another parent than the configured one (the
    parent most evidence names; traceroute first on a tie). details: (site, evidence) -> its line."""
    out = []
    for s in cfg.sites:
        found: dict[str, list[str]] = {}
        for kind, table in ((TRACEROUTE, traced), (LLDP, lldp)):
            if s.id in table:
                found.setdefault(table[s.id], []).append(kind)
        if not found:
            continue
        parent, evidence = max(found.items(), key=lambda kv: len(kv[1]))
        if parent == s.parent:
            continue
        out.append(
            Suggestion(
                s.id,
                s.parent,
                parent,
                tuple(evidence),
                tuple(details.get((s.id, k), k) for k in evidence),
            )
        )
    return out


def patch(cfg: Config, text: str, suggestions: list[Suggestion]) -> tuple[str, list[str]]:
    """(a unified diff of the config setting each suggested parent, the sites it could not patch:
    written inline, or with a dated parent)."""
    lines = text.splitlines(keepends=True)
    blocks: dict[str, dict[str, int]] = {}
    for _header, lines_of in site_key_lines(text):
        at = lines_of.get("id")
        m = re.match(r'\s*id\s*=\s*"([^"]*)"', lines[at - 1]) if at else None
        if m:
            blocks[m.group(1)] = lines_of
    by_id = {s.id: s for s in cfg.sites}
    new = list(lines)
    inserts: dict[int, str] = {}
    skipped = []
    for sg in suggestions:
        keys = blocks.get(sg.site)
        site = cfg.timeline.base_by_id.get(sg.site) if cfg.timeline.dated else by_id.get(sg.site)
        dated = site is not None and any(ch.parent is not None or "parent" in ch.unset for ch in site.changes)
        if keys is None or dated:
            skipped.append(sg.site)
            continue
        value = f'"{sg.discovered_parent}"'
        if "parent" in keys:
            i = keys["parent"] - 1
            m = re.match(r'(\s*parent\s*=\s*)"[^"]*"', new[i])
            if m is None:  # not a plain string on its line: leave it to the operator
                skipped.append(sg.site)
                continue
            new[i] = m.group(1) + value + new[i][m.end() :]
        else:
            i = keys["id"] - 1
            indent = re.match(r"\s*", lines[i]).group(0)  # type: ignore[union-attr]
            inserts[i] = f"{indent}parent = {value}\n"
    out = []
    for i, line in enumerate(new):
        out.append(line)
        if i in inserts:
            out.append(inserts[i])
    name = str(cfg.path)
    diff = "".join(difflib.unified_diff(lines, out, fromfile=name, tofile=name))
    return diff, skipped


async def trace_missing(
    cfg: Config, stored: Mapping[str, Trace], budget_s: float, now=time.monotonic
) -> tuple[dict[str, Trace], list[str]]:
    """Trace the sites without a stored good path, one after the other, each within the
    [trace] budget and all within budget_s: ({site: its path}, the sites left untraced)."""
    from wanmon.trace import trace

    end = now() + budget_s
    paths: dict[str, Trace] = {}
    left = []
    for s in cfg.sites:
        if s.id in stored:
            continue
        remaining = end - now()
        if remaining <= 0:
            left.append(s.id)
            continue
        paths[s.id] = await trace(
            s.address,
            cfg.trace,
            cfg.icmp.mode,
            dns_timeout_s=cfg.icmp.dns_timeout_ms / 1000.0,
            budget_s=min(cfg.trace.budget_s, remaining),
        )
    return paths, left


@dataclass
class Findings:
    suggestions: list[Suggestion]
    paths: dict[str, Trace]  # every site's good path used (stored or traced now)
    traced: int  # of them, traced now
    unreached: list[str]  # traced now without reaching the site
    untraced: list[str]  # left for lack of time
    lldp_sites: int  # sites whose LLDP neighbours were read


async def read_neighbours(cfg: Config) -> dict[str, Neighbours | None]:
    """The LLDP/CDP neighbours of every site with SNMP enabled, within [snmp] budget_s."""
    from wanmon.probes import lldp, snmp

    ids = [s.id for s in cfg.sites if s.id in cfg.snmp_specs]
    by_id = {s.id: s for s in cfg.sites}
    targets = [snmp.SnmpTarget(by_id[sid].address, cfg.snmp_specs[sid]) for sid in ids]
    got = await lldp.probe(targets, cfg.snmp.max_concurrency, cfg.snmp.budget_s)
    return dict(zip(ids, got))


def neighbour_sites(
    read: Mapping[str, Neighbours | None], names: Names, sys_names: Mapping[str, str]
) -> tuple[dict[str, set[str]], dict[str, dict[str, str]]]:
    """({site: the sites among its neighbours}, {site: {neighbour site: how it was known}}): a
    neighbour is a site by its management address (a site's, or an [[hops]] entry with `site`),
    else by its system name (the sysName the store has for a site)."""
    out: dict[str, set[str]] = {}
    how: dict[str, dict[str, str]] = {}
    for sid, r in read.items():
        if r is None or r.status != "ok":
            continue
        out[sid] = set()
        for n in r.neighbours:
            other = names.site(n.address) or (sys_names.get(n.sys_name) if n.sys_name else None)
            if other is not None and other != sid:
                out[sid].add(other)
                how.setdefault(sid, {})[other] = ", ".join(x for x in (n.address, n.sys_name) if x)
    return out, how


def discover(cfg: Config, budget_s: float, fresh: bool = False, now: float | None = None) -> Findings:
    """Gather the evidence (stored paths, traces now, LLDP) and compare it with the config; the
    differences are kept in the store for the page (remember), as of now."""
    import asyncio

    from wanmon.store import Store
    from wanmon.trace import Names

    store = None
    if cfg.store_path.exists():
        try:
            store = Store.open(cfg.store_path)
        except WanmonError as exc:
            logger.warning("the store is not usable (%s): every site is traced now", exc)
    sys_names: dict[str, str] = {}
    try:
        stored = {} if store is None or fresh else store.good_paths()
        dns_cache = store.dns_cache() if store is not None else {}
        if store is not None:
            sys_names = {d.sys_name: sid for sid, d in store.devices().items() if d.sys_name}
        ids = {s.id for s in cfg.sites}
        stored = {sid: t for sid, t in stored.items() if sid in ids}

        async def both() -> tuple[tuple[dict[str, Trace], list[str]], dict[str, Neighbours | None]]:
            return await asyncio.gather(trace_missing(cfg, stored, budget_s), read_neighbours(cfg))

        (new, left), read = asyncio.run(both())
        if store is not None:
            store.record_good_paths(new)
        names = Names.of(cfg, dns_cache)
        paths = {**stored, **{sid: t for sid, t in new.items() if t.reached}}
        traced = by_traceroute(cfg, paths, names)
        details = {
            (sid, TRACEROUTE): "traceroute: "
            + " -> ".join(names.hop(h.address) if h.address else "*" for h in paths[sid].hops)
            for sid in traced
        }
        neighbours, how = neighbour_sites(read, names, sys_names)
        lldp = by_lldp(cfg, neighbours, paths)
        for sid, parent in lldp.items():
            details[(sid, LLDP)] = f"lldp: {sid}'s device lists {parent} ({how[sid][parent]}) as a neighbour"
        found = Findings(
            suggest(cfg, traced, lldp, details),
            paths,
            len(new),
            [sid for sid, t in new.items() if not t.reached],
            left,
            len(neighbours),
        )
        if store is not None:
            remember(store, found.suggestions, time.time() if now is None else now)
    finally:
        if store is not None:
            store.close()
    return found


def remember(store: Store, suggestions: list[Suggestion], ts: float) -> None:
    """Keep a run's differences in the store (meta LAST_KEY), replacing the last run's: what the
    page's tree draws (last)."""
    rows = [{**sg.as_json(), "details": list(sg.details)} for sg in suggestions]
    store.set_meta(**{LAST_KEY: json.dumps({"ts": ts, "suggestions": rows}, ensure_ascii=False)})


class _Meta(Protocol):
    def meta_prefixed(self, prefix: str) -> dict[str, str]: ...


def last(cfg: Config, store: _Meta) -> tuple[float | None, list[Suggestion]]:
    """(when `wanmon topology` last ran, None: never; its differences that still hold against
    cfg's parents). cfg: the config of the page's instant (Config.as_of): a site out of service, or
    whose parent is now the one found, has none; configured_parent is cfg's. Reads what remember
    wrote, sends nothing."""
    text = store.meta_prefixed(LAST_KEY).get(LAST_KEY)
    if text is None:
        return None, []
    try:
        data: dict[str, Any] = json.loads(text)
        ts, rows = float(data["ts"]), list(data["suggestions"])
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("the store's last topology result is unreadable (%s): run `wanmon topology` again", exc)
        return None, []
    by_id = {s.id: s for s in cfg.sites}
    out = []
    for r in rows:
        site = by_id.get(r.get("site"))
        found = r.get("discovered_parent")
        if site is None or found not in by_id or found == site.parent or found == site.id:
            continue
        out.append(Suggestion(site.id, site.parent, found, tuple(r.get("evidence", ())), tuple(r.get("details", ()))))
    return ts, out


def text_report(cfg: Config, f: Findings, config_text: str) -> list[str]:
    by_id = {s.id: s for s in cfg.sites}

    def who(sid: str | None) -> str:
        return "none" if sid is None else f"{sid} ({by_id[sid].name})" if sid in by_id else sid

    out = [
        f"Evidence: {len(f.paths)} of {len(cfg.sites)} sites with a good path"
        + (f" ({f.traced} traced now)" if f.traced else "")
        + (f", {f.lldp_sites} with LLDP neighbours read" if f.lldp_sites else "")
    ]
    if f.unreached:
        out.append(f"No path reached {len(f.unreached)} site(s): {', '.join(f.unreached)}")
    if f.untraced:
        out.append(f"Not traced (the budget ran out): {', '.join(f.untraced)}: run again, or pass a larger --budget")
    if not f.suggestions:
        out.append("The configured parents agree with the evidence.")
        return out
    out.append(f"{len(f.suggestions)} parent(s) differ from the configuration:")
    for sg in f.suggestions:
        out.append(
            f"  {who(sg.site)}: configured parent {who(sg.configured_parent)}, found {who(sg.discovered_parent)}"
        )
        out.extend(f"    {d}" for d in sg.details)
    diff, skipped = patch(cfg, config_text, f.suggestions)
    for sid in skipped:
        out.append(
            f"  {sid}: not in the patch (written inline, or its parent is dated): set its parent by hand "
            "(a dated site: a [[sites.changes]] entry with the new parent)"
        )
    if diff:
        out.append(f"Proposed change to {cfg.path} (review it; apply by hand or with `patch -p0`):")
        out.extend(diff.splitlines())
    return out
