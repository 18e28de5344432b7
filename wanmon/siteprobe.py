"""`wanmon probe SITE`: one site under the magnifier, for the IT staffer on the phone with it.

Like blackbox_exporter's debug output: what was asked and what came back, step by step: the
DNS (when the address is a name), each ICMP echo reply with its RTT (the sweep's own code,
wanmon.probes.icmp), the path (wanmon.trace) against the last good one, the SNMP answers with
their timings (wanmon.probes.snmp, only where SNMP is enabled for the site), and what the agent
would conclude: the site's own status by wanmon.status's rules, unreachable behind a parent
when the store's last check found that parent down. Nothing is recorded but a path that
reached the site (the store's good path, when a store exists). Exit 0 up (or degraded: it
answers), 1 down or unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from wanmon import dns, status
from wanmon.config import Config, Site, SnmpSpec
from wanmon.errors import ProbePermissionError, WanmonError
from wanmon.model import SiteState, Trace
from wanmon.probes import icmp, snmp
from wanmon.trace import Names, stops, trace
from wanmon.words import Fmt, degraded_why

logger = logging.getLogger(__name__)


@dataclass
class Seen:
    """What one probe of a site found (the network part; conclude() adds the store's)."""

    site: Site
    dns: dns.Answer | None = None
    dns_ms: float = 0.0
    ping: icmp.IcmpResult | None = None
    rtts: list[float | None] = field(default_factory=list)
    ping_error: str | None = None
    path: Trace | None = None
    path_error: str | None = None
    snmp_spec: SnmpSpec | None = None  # None: SNMP is off for the site
    snmp: snmp.SnmpResult | None = None


async def look(cfg: Config, site: Site, dns_cache: dict | None = None) -> Seen:
    """Resolve, then ping, trace and poll SNMP at once (each within its own deadline)."""
    seen = Seen(site)
    t0 = time.perf_counter()
    ans = await dns.resolve(site.address, cfg.icmp.dns_timeout_ms / 1000.0, dns_cache)
    seen.dns, seen.dns_ms = ans, (time.perf_counter() - t0) * 1000
    if ans.ip is None:
        return seen

    async def ping() -> None:
        assert ans.ip is not None
        try:
            seen.ping, seen.rtts = await icmp.ping(ans.ip, cfg.icmp)
        except ProbePermissionError as exc:
            seen.ping_error = str(exc)

    async def path() -> None:
        assert ans.ip is not None
        try:
            seen.path = await trace(ans.ip, cfg.trace, cfg.icmp.mode)
        except ProbePermissionError as exc:
            seen.path_error = str(exc)

    async def poll() -> None:
        spec = cfg.snmp_specs.get(site.id)
        if spec is None:
            return
        seen.snmp_spec = spec
        (seen.snmp,) = await snmp.probe([snmp.SnmpTarget(ans.ip or site.address, spec)], 1, cfg.snmp.budget_s)

    await asyncio.gather(ping(), path(), poll())
    return seen


@dataclass(frozen=True)
class Verdict:
    status: str  # wanmon.status: up, degraded, down, unreachable
    root: str | None  # the down ancestor an unreachable site is behind
    text: str


def conclude(cfg: Config, seen: Seen, states: dict[str, SiteState]) -> Verdict:
    """The site's status now by wanmon.status's rules: its own from this ping, its parents'
    from the store's last check (states)."""
    sid = seen.site.id
    if seen.ping is None:
        own = status.DOWN if seen.dns is not None and seen.dns.ip is None else status.UNKNOWN
    else:
        own = status.icmp_status(seen.ping, cfg.thresholds)
    parent_of = {s.id: s.parent for s in cfg.sites}
    by_id = {s.id: s for s in cfg.sites}
    known = {k: v.status for k, v in states.items() if k != sid}
    st = status.with_parents({**known, sid: own}, by_id)[sid]
    root = None
    if st == status.UNREACHABLE:
        root = status.root_of(sid, known.get, parent_of.get)
    why = {
        status.UP: "up: it answers",
        status.DEGRADED: "degraded: it answers, but " + _degraded(cfg, seen),
        status.DOWN: "down: " + _down_why(seen),
        status.UNKNOWN: "unknown: it could not be pinged from here",
    }.get(st)
    if st == status.UNREACHABLE:
        p = seen.site.parent
        if root is not None and root in by_id:
            r = by_id[root]
            rs = states.get(root)
            when = f" since {_local(cfg, rs.since)}, last check {_local(cfg, rs.last_ts)}" if rs else ""
            via = f" through its parent {p}" if p != root else ""
            why = f"unreachable behind parent {root} ({r.name}), down{when}{via}: its own outage is upstream"
        else:
            why = f"unreachable: its parent {p} is not answering in the last check"
    if st == status.DOWN and seen.site.parent and seen.site.parent not in states:
        why = f"{why} (no check of its parent {seen.site.parent} is recorded: `wanmon check` records one)"
    return Verdict(st, root, why or st)


def _down_why(seen: Seen) -> str:
    if seen.ping is None:
        return seen.dns.reason if seen.dns is not None and seen.dns.reason else "no address"
    n = seen.ping.sent
    text = f"no reply to {n} echo request{'s' if n != 1 else ''}"
    if seen.ping.reason and seen.ping.reason != "no reply":
        text += f" ({seen.ping.reason})"
    return text


def _degraded(cfg: Config, seen: Seen) -> str:
    """The threshold crossed, with its figure, as the page and `check` word it (words.degraded_why)."""
    p = seen.ping
    assert p is not None
    return degraded_why(Fmt("en", ZoneInfo(cfg.page.timezone)), p.rtt_avg_ms, p.loss_pct, cfg.thresholds)


def _local(cfg: Config, ts: float) -> str:
    return Fmt("en", ZoneInfo(cfg.page.timezone)).dt(ts)


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f} ms" if v < 1 else f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms"


def report(
    cfg: Config, seen: Seen, verdict: Verdict, names: Names, good: Trace | None, verbose: bool = False
) -> list[str]:
    """The lines `wanmon probe` prints, in the order things were asked."""
    s = seen.site
    where = f", district {s.district}" if s.district else ""
    parent = f", parent {s.parent}" if s.parent else ""
    out = [f"Site {s.id}: {s.name} ({s.level}{where}{parent}), address {s.address}"]
    a = seen.dns
    if a is not None and a.source != "literal":
        if a.ip is None:
            out.append(f"DNS: {s.address}: {a.reason} ({seen.dns_ms:.0f} ms)")
        elif a.source == "fresh":
            out.append(f"DNS: {s.address} -> {a.ip} in {seen.dns_ms:.0f} ms")
        else:
            out.append(f"DNS: {s.address}: {a.reason}")
    ip = a.ip if a is not None else None
    if ip is None:
        pass
    elif seen.ping_error is not None:
        out.append(f"ICMP: cannot ping: {seen.ping_error}")
    elif seen.ping is not None:
        p = seen.ping
        ic = cfg.icmp
        out.append(
            f"ICMP: {p.sent} echo requests to {ip}, {ic.interval_ms:g} ms apart, each waited for {ic.timeout_ms:g} ms"
        )
        for k, rtt in enumerate(seen.rtts, start=1):
            out.append(f"  reply {k}: {_ms(rtt)}" if rtt is not None else f"  request {k}: no reply")
        line = f"ICMP: {p.received}/{p.sent} replies, loss {p.loss_pct:g} %"
        if p.received:
            line += f", RTT min/avg/max {_ms(p.rtt_min_ms)} / {_ms(p.rtt_avg_ms)} / {_ms(p.rtt_max_ms)}"
        out.append(line)
    if seen.path_error is not None:
        out.append(f"Path: cannot trace: {seen.path_error}")
    elif seen.path is not None:
        out.extend(_path_lines(cfg, seen.path, names, good, verbose))
    out.extend(_snmp_lines(seen, verbose))
    out.append(f"Conclusion: {verdict.text}")
    return out


def _path_lines(cfg: Config, t: Trace, names: Names, good: Trace | None, verbose: bool) -> list[str]:
    out = [f"Path to {t.ip} ({len(t.hops)} hop{'s' if len(t.hops) != 1 else ''}, traced in {t.duration_ms:.0f} ms):"]
    for h in t.hops:
        if h.address is None:
            out.append(f"  {h.distance:>2}  *  no answer")
            continue
        who = names.name(h.address)
        sid = names.site(h.address)
        label = f"  ({who}{', ' + sid if sid else ''})" if who else ""
        note = ""
        if h.unreachable:
            note = "  says: no route on (ICMP destination unreachable)"
        elif t.reached and h is t.hops[-1]:
            note = "  reached"
        out.append(f"  {h.distance:>2}  {h.address}{label}  {_ms(h.rtt_ms)}{note}")
    if not t.reached:
        where = stops("en", t, good, names)
        tail = f" (last good path {_local(cfg, good.ts)})" if good is not None else " (no good path recorded yet)"
        out.append(f"Path: {where}{tail}" + (f"; {t.reason}" if "budget" in (t.reason or "") else ""))
        if verbose and good is not None:
            out.append(
                "  last good path: " + " -> ".join(names.hop(h.address) if h.address else "*" for h in good.hops)
            )
    return out


def _snmp_lines(seen: Seen, verbose: bool) -> list[str]:
    r, spec = seen.snmp, seen.snmp_spec
    if spec is None:
        return ["SNMP: not enabled for this site"]
    to = f"SNMP v{spec.version} to {seen.dns.ip if seen.dns is not None else seen.site.address}:{spec.port}"
    if r is None:
        return [f"{to}: not polled (no address, or the poll's budget ran out)"]
    if not r.ok:
        return [f"{to}: {r.status} after {r.duration_ms:.0f} ms: {r.reason}"]
    up = sum(1 for i in r.interfaces if i.oper_status == "up")
    uptime = r.sys_uptime_ticks / 100 if r.sys_uptime_ticks is not None else None
    out = [
        f"{to}: answered in {r.duration_ms:.0f} ms: sysName {r.sys_name!r}, uptime "
        f"{Fmt('en', ZoneInfo('UTC')).span(uptime)}, {len(r.interfaces)} interfaces ({up} up)"
    ]
    if verbose:
        out.append(f"  sysDescr {r.sys_descr!r}, sysLocation {r.sys_location!r}")
        for i in r.interfaces:
            out.append(f"  interface {i.if_index} {i.label}: {i.oper_status}, {i.speed_bps or '?'} b/s")
    return out


def probe_site(cfg: Config, site_id: str, verbose: bool = False) -> tuple[list[str], int]:
    """Probe one site: (lines to print, exit status)."""
    from wanmon.store import Store

    site = next(s for s in cfg.sites if s.id == site_id)
    states: dict[str, SiteState] = {}
    good: Trace | None = None
    dns_cache: dict = {}
    store = None
    if cfg.store_path.exists():
        try:
            store = Store.open(cfg.store_path)
        except WanmonError as exc:
            logger.warning("the store is not usable (%s): no parent states, no good path", exc)
    if store is not None:
        try:
            states = {s.site_id: s for s in store.states()}
            good = store.good_paths().get(site_id)
            dns_cache = store.dns_cache()
        except Exception:
            store.close()
            raise
    try:
        seen = asyncio.run(look(cfg, site, dns_cache))
        if store is not None and seen.path is not None and seen.path.reached:
            store.record_good_paths({site_id: seen.path})
    finally:
        if store is not None:
            store.close()
    verdict = conclude(cfg, seen, states)
    names = Names.of(cfg, dns_cache)
    lines = report(cfg, seen, verdict, names, good, verbose)
    return lines, 0 if verdict.status in status.REACHABLE else 1
