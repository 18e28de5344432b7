"""The static status page: snapshot(store) -> data -> index.html + status.json, written atomically.

Availability ("uptime") = reachable samples / observed samples in the window.
Each cycle's sample stands for one poll interval of observation; time without
any cycle (agent not running) is a gap: shown, never counted as down. 24 h is
exact to the sample (hourly rollups for its whole hours, raw samples for its
first partial hour); 7 d and 30 d and the sparklines use the hourly rollups.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import logging
import math
import re
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar
from zoneinfo import ZoneInfo

from wanmon import account, outputs, tree
from wanmon.alerts.maintenance import sites_in_maintenance
from wanmon.config import Config
from wanmon.files import make_folder, replacing
from wanmon.inventory import Inventory
from wanmon.model import DeviceLine, OutagePath, SiteState
from wanmon.status import PROBLEMS, SEVERITY, below, children_of, root_of
from wanmon.store import damaged
from wanmon.text import FOLD_MAP, FOLD_SPACES, fold, printable
from wanmon.words import (
    CAUSE,
    DURATION_UNITS,
    NBSP,
    TREE,
    Fmt,
    LevelName,
    counted,
    degraded_why,
    level_names,
    page_level_words,
    since_text,
    unreachable_count,
    unreachable_n,
)
from wanmon.words import PAGE as TEXT

logger = logging.getLogger(__name__)


class PageSource(Protocol):
    """What the page reads: a wanmon.store.Store, or wanmon.fromflux.FluxView (the page from
    InfluxDB, which answers the same reads from InfluxDB's data)."""

    @property
    def path(self) -> Path | None: ...  # the store file (None: no file, nothing can be damaged)

    def states(self) -> list[SiteState]: ...

    def last_cycle(self) -> dict[str, Any] | None: ...

    def status_runs(
        self, start: float, end: float, now: float, cap_s: float
    ) -> list[tuple[str, str, int, float, float]]: ...

    def hourly_since(self, start: float) -> Iterable[tuple[str, float, float, int, int, int]]: ...

    def run_cap_s(self, default: float) -> float: ...

    def cadence_s(self) -> float | None: ...

    def device_lines(self) -> dict[str, DeviceLine]: ...

    def status_events_since(self, start: float) -> list[tuple[float, str, str, str]]: ...

    def status_change_before(self, site_id: str, ts: float) -> tuple[float, str, str] | None: ...

    def alert_states(self) -> tuple[dict, bool]: ...

    def outbox_summary(self, since_ts: float) -> dict[str, int]: ...

    def meta_prefixed(self, prefix: str) -> dict[str, str]: ...  # outputs.health

    def outage_paths(self, since: float) -> list[OutagePath]: ...  # the paths traced at outages


WINDOWS = {"24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
SPARK_BUCKETS = 25  # hourly points: the last 24 whole hours and the current one
LEVELS = ("province", "district", "commune")
STALE_INTERVALS = 3  # data older than 3 x [schedule] icmp_interval_s is stale: the agent has stopped

STATUS_SYMBOL = {"up": "●", "degraded": "▲", "down": "✖", "unreachable": "⊘", "unknown": "?", "partial": "◐"}


# ----------------------------------------------------------------------------
# snapshot: everything the page shows, as plain data (also status.json)


def _availability(cfg: Config, store: PageSource, now: float) -> dict[str, dict[str, tuple[float, float]]]:
    """{window: {site_id: (available_s, observed_s)}}: the account (wanmon/account.py) of the
    status runs, the report's figures exactly."""
    runs = store.status_runs(now - WINDOWS["30d"], now, now, store.run_cap_s(cfg.run_cap_s))
    return account.windows(account.by_site(runs), now, WINDOWS)


def _sparklines(store: PageSource, now: float) -> dict[str, list[tuple]]:
    """{site_id: [(hour index 0..24, avg RTT ms (None: no reply), loss %), ...]} from the hourly rollups.

    Hourly, from icmp_hourly: reading 24 h of raw samples for every site costs
    14 M rows (and hundreds of MB) at 10,000 sites with one-minute cycles.
    Built once in the page's own format: at 10,000 sites a second copy of the
    250,000 points costs ~30 MB.
    """
    start = now - now % 3600 - 24 * 3600  # 24 whole hours + the current one
    out: dict[str, list] = {}
    for sid, hour, rtt_sum, rtt_n, sent, received in store.hourly_since(start):
        rtt = round(rtt_sum / rtt_n, 3) if rtt_n else None
        loss = round(100.0 * (sent - received) / sent, 1) if sent else 0.0
        pts = out.get(sid)
        if pts is None:
            pts = out[sid] = []
        pts.append((int((hour - start) // 3600), rtt, loss))  # a tuple: 24 bytes less than a list, same JSON
    return out


LEVEL_ORDER = {lv: i for i, lv in enumerate(LEVELS)}
# A site's note gives its keys before its last change of name, group, level or uplink within a
# year: the longest report (`wanmon report --year`) still counts time under them.
NOTE_DAYS = 366
SHOWN_KEYS = ("name", "district", "level", "parent")


def _before(cfg: Config, now: float) -> dict[str, dict[str, Any]]:
    """{site id: its keys just before its most recent change of name, district, level or parent
    in the NOTE_DAYS before now (and after it entered service), with the change's instant and the
    uplink's name then}: the page's "trước 01/07/2025: UBND xã Xuân Lai, huyện Gia Bình".

    cfg: a view (Config.as_of(now)): its sites are those in service now. The four keys are
    followed by hand, never as Site copies (wanmon.dated.apply): 10,000 sites with a change each
    cost ~45 ms here (60 ms with a loop over the keys)."""
    timeline = cfg.timeline
    if not timeline.dated:
        return {}
    since = now - NOTE_DAYS * 86400
    out: dict[str, dict[str, Any]] = {}
    for site in cfg.sites:
        base = timeline.base_by_id.get(site.id)
        if base is None or not base.changes:
            continue
        entered = base.in_service_from.timestamp() if base.in_service_from is not None else -math.inf
        keys: tuple[Any, ...] = (base.name, base.district, base.level, base.parent)
        found: tuple[float, tuple] | None = None
        for ch in base.changes:
            t = ch.at.timestamp()
            if t > now:
                break
            name, district, level, parent = keys
            new = (
                name if ch.name is None else ch.name,
                None if "district" in ch.unset else district if ch.district is None else ch.district,
                level if ch.level is None else ch.level,
                None if "parent" in ch.unset else parent if ch.parent is None else ch.parent,
            )
            if new != keys and t > since and t > entered:
                found = (t, keys)
            keys = new
        if found is not None:
            t, old = found
            note: dict[str, Any] = {"at": t, **dict(zip(SHOWN_KEYS, old, strict=True)), "parent_name": None}
            if old[3] is not None and old[3] != site.parent:
                k = bisect.bisect_left(timeline.instants, t)
                then = timeline.at(timeline.instants[k - 1] if k else -math.inf)
                parent = then.by_id.get(old[3])
                note["parent_name"] = parent.name if parent is not None else None
            out[site.id] = note
    return out


def _out_of_service(cfg: Config, now: float) -> dict[str, Any]:
    """The sites not in service now that the page does not list: retired in the last 30 days
    (the incidents' days), and those that enter service later (with the first instant)."""
    retired: list[str] = []
    upcoming: list[tuple[float, str]] = []
    if cfg.timeline.dated:
        for s in cfg.timeline.base:
            if s.retired_at is not None and now - WINDOWS["30d"] < s.retired_at.timestamp() <= now:
                retired.append(s.id)
            elif s.in_service_from is not None and s.in_service_from.timestamp() > now:
                upcoming.append((s.in_service_from.timestamp(), s.id))
    upcoming.sort()
    return {
        "retired": retired,
        "upcoming": [sid for _, sid in upcoming],
        "upcoming_from": upcoming[0][0] if upcoming else None,
    }


INCIDENT_DAYS = 30
INCIDENTS_MAX = 500  # the newest root causes kept in status.json; the page shows INCIDENTS_SHOWN
INCIDENTS_SHOWN = 200


def _root_of(sid: str, sites: dict[str, dict[str, Any]]) -> str | None:
    """The down site an unreachable site is unreachable through (wanmon.status.root_of)."""
    return root_of(sid, lambda s: sites[s]["status"] if s in sites else None, lambda s: sites[s]["parent"])


def _problems(
    sites: dict[str, dict[str, Any]],
    now: float,
    flapping: set[str],
    maintenance: set[str],
    first_seen: Collection[str] = (),
) -> list[dict[str, Any]]:
    """What is wrong now, one entry per cause, most important first:

    * a site down on its own, with the sites it makes unreachable (kind "down");
    * an unreachable site whose uplink is not down (an older state; kind "unreachable");
    * degraded sites, with their figures (kind "degraded");
    * flapping sites that are up at the moment (kind "flapping");
    * sites in maintenance that are up (kind "maintenance"; a problem in maintenance
      keeps its kind, flagged, after the others);
    * quieter: up sites whose SNMP agent does not answer, or whose device rebooted in
      the last 24 h (kind "snmp").

    first_seen: the sites down or degraded since their first observation (their entry says so).
    """
    below: dict[str, list[str]] = {}
    out: list[dict[str, Any]] = []
    for sid, s in sites.items():
        if s["status"] == "unreachable":
            root = _root_of(sid, sites)
            if root is not None:
                below.setdefault(root, []).append(sid)
            else:
                out.append({"kind": "unreachable", "site": sid, "since": s["since"]})
    for sid, s in sites.items():
        st = s["status"]
        if st == "down":
            out.append({"kind": "down", "site": sid, "since": s["since"], "unreachable": below.get(sid, [])})
        elif st == "degraded":
            out.append(
                {
                    "kind": "degraded",
                    "site": sid,
                    "since": s["since"],
                    "rtt_avg_ms": s["rtt_avg_ms"],
                    "loss_pct": s["loss_pct"],
                }
            )
        elif st == "up" and sid in flapping:
            out.append({"kind": "flapping", "site": sid, "since": s["since"]})
        elif st == "up" and sid in maintenance:
            out.append({"kind": "maintenance", "site": sid, "since": s["since"]})
        elif st == "up" and s["snmp"]:
            silent = s["snmp"]["silent_since"]
            rebooted = s["snmp"]["last_reboot"]
            rebooted = rebooted if rebooted is not None and now - rebooted <= 86400 else None
            if silent or rebooted:
                out.append({"kind": "snmp", "site": sid, "silent_since": silent, "rebooted": rebooted})
    for e in out:
        e["maintenance"] = e["site"] in maintenance
        e["flapping"] = e["site"] in flapping
        e["first_seen"] = e["kind"] in ("down", "degraded") and e["site"] in first_seen
    rank = {"down": 0, "unreachable": 1, "degraded": 2, "flapping": 3, "maintenance": 4, "snmp": 5}
    out.sort(
        key=lambda e: (
            e["kind"] == "snmp",
            e["maintenance"] and e["kind"] != "maintenance",
            rank[e["kind"]],
            -len(e.get("unreachable", ())),
            LEVEL_ORDER.get(sites[e["site"]]["level"], 9),
            e.get("since") or 0.0,
            e["site"],
        )
    )
    return out


def _incidents(
    store: PageSource,
    sites: dict[str, dict[str, Any]],
    children: dict[str, list[str]],
    now: float,
    retired: dict[str, float] | None = None,
) -> list:
    """The last INCIDENT_DAYS days, one entry per root cause, newest first: a site's own
    outage (down) or degradation, with its start, end (None: ongoing), and the sites it made
    unreachable meanwhile (descendants that became unreachable during it). Unreachable
    periods are not entries of their own: they are counted under their cause. first_seen:
    the site was in that state at its first observation, the start (it may have begun earlier).
    retired: {site id: the instant it left service} of the sites not in service now (a problem
    it had then ends there: a retired site is never down afterwards)."""
    retired = retired or {}
    cut = now - INCIDENT_DAYS * 86400
    events = store.status_events_since(cut)
    open_: dict[str, dict[str, Any]] = {}
    done: list[dict[str, Any]] = []
    unreach: dict[str, list[list[float]]] = {}  # site: [[start, end]] of its unreachable periods (end inf: still)
    met: set[str] = set()
    for ts, sid, old, new in events:
        if sid not in met:
            met.add(sid)
            if old in ("down", "degraded"):  # it began before the window: when?
                prev = store.status_change_before(sid, cut)
                known = prev if prev is not None and prev[2] == old else None  # the change into it
                open_[sid] = {
                    "site": sid,
                    "kind": old,
                    "start": known[0] if known else None,
                    "end": None,
                    "first_seen": known is not None and known[1] is None,
                }
            elif old == "unreachable":
                unreach[sid] = [[cut, float("inf")]]
        if old == "unreachable" and sid in unreach:
            unreach[sid][-1][1] = ts
        if new == "unreachable":
            unreach.setdefault(sid, []).append([ts, float("inf")])
        if sid in open_ and new != open_[sid]["kind"]:
            inc = open_.pop(sid)
            inc["end"] = ts
            done.append(inc)
        if new in ("down", "degraded") and sid not in open_:
            # old None: the site's first observation (the store logs a problem seen first)
            open_[sid] = {"site": sid, "kind": new, "start": ts, "end": None, "first_seen": old is None}
    for sid, inc in list(open_.items()):  # a site out of service now: its problem ended when it left
        if sid not in sites:
            left = retired.get(sid)
            if left is None:
                continue
            del open_[sid]
            if inc["start"] is None or inc["start"] < left:
                done.append({**inc, "end": left})
    for sid, s in sites.items():  # still going: the site's state says since when
        if s["status"] in ("down", "degraded") and sid not in open_:
            began = store.status_change_before(sid, math.inf)
            open_[sid] = {
                "site": sid,
                "kind": s["status"],
                "start": s["since"],
                "end": None,
                "first_seen": began is not None and began[1] is None and began[0] == s["since"],
            }
    done.extend(open_.values())
    for inc in done:
        n = 0
        if inc["kind"] == "down":
            lo = inc["start"] if inc["start"] is not None else cut
            hi = inc["end"] if inc["end"] is not None else float("inf")
            for c in below(children, inc["site"]):
                if any(a < hi and b > lo for a, b in unreach.get(c, ())) or (
                    inc["end"] is None and sites.get(c, {}).get("status") == "unreachable"
                ):
                    n += 1
        inc["unreachable"] = n
        site = sites.get(inc["site"])
        inc["district"] = site["district"] if site else None
    done.sort(key=lambda i: (i["end"] is None, i["end"] or 0.0, i["start"] or 0.0), reverse=True)
    return done[:INCIDENTS_MAX]


def _with_paths(
    cfg: Config, store: PageSource, now: float, incidents: list[dict[str, Any]], problems: list[dict[str, Any]]
) -> None:
    """Each down incident (and each site down now) with the path traced at its outage, where it
    stops (wanmon.trace.outage_json): "path", or None. One read; nothing more when none is kept."""
    paths: dict[str, list[OutagePath]] = {}
    for o in store.outage_paths(now - INCIDENT_DAYS * 86400):
        paths.setdefault(o.site_id, []).append(o)
    for i in incidents:
        i["path"] = None
    for p in problems:
        if p["kind"] == "down":
            p["path"] = None
    if not paths:
        return
    from wanmon.trace import Names, outage_json

    names = Names.of(cfg, getattr(store, "dns_cache", dict)())  # cfg: as of now (snapshot's)
    lang = cfg.page.language

    def find(sid: str, start: float | None, end: float | None) -> dict[str, Any] | None:
        lo, hi = start if start is not None else -math.inf, end if end is not None else math.inf
        o = next((o for o in paths.get(sid, ()) if lo <= o.start_ts < hi), None)
        return outage_json(o, names, lang) if o is not None else None

    for i in incidents:
        if i["kind"] == "down":
            i["path"] = find(i["site"], i["start"], i["end"])
    for p in problems:
        if p["kind"] == "down":
            p["path"] = find(p["site"], p["since"], None)


def pct(pair: tuple[float, float] | None) -> float | None:
    if not pair or not pair[1]:
        return None
    return 100.0 * pair[0] / pair[1]


def snapshot(
    cfg: Config,
    store: PageSource,
    now: float | None = None,
    states: Iterable[SiteState] | None = None,
    alerts: dict | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """states: the sites' states if the caller has them (the cycle that just wrote them);
    alerts: the alert states likewise ({site_id: SiteAlert}: who is flapping);
    extra: more top-level keys (a page from InfluxDB: source, agents, disagreements)."""
    now = time.time() if now is None else now
    cfg = cfg.as_of(now)  # today's tree: the sites in service now, with their keys now
    inv = Inventory.from_config(cfg)
    before = _before(cfg, now)
    by_site = {s.site_id: s for s in (store.states() if states is None else states)}
    devices = store.device_lines()
    avail = _availability(cfg, store, now)
    sparks = _sparklines(store, now)
    last = store.last_cycle()

    windows = list(WINDOWS)
    # {site_id: [(available_s, observed_s) or None per window]}: read once, summed per group below
    pairs = {s.id: [avail[w].get(s.id) for w in windows] for s in inv.sites}

    def site_data(s) -> dict[str, Any]:
        p = pairs[s.id]
        st = by_site.get(s.id)
        dev = devices.get(s.id)
        status = st.status if st else "unknown"
        parent = inv.by_id.get(s.parent) if s.parent else None
        silent = dev is not None and dev.status == "timeout" and dev.fail_since is not None
        snmp = None
        if dev is not None and (dev.last_ok_ts is not None or silent):
            # the figures are the last good poll's (none before the first); a silent agent says since when
            snmp = {
                "status": dev.status,
                "sys_name": dev.sys_name,
                "uptime_s": dev.uptime_s,
                "last_reboot": dev.last_reboot_ts,
                "uplink": dev.uplink_name,
                "uplink_util_in_pct": dev.uplink_util_in_pct,
                "uplink_util_out_pct": dev.uplink_util_out_pct,
                "silent_since": dev.fail_since if silent else None,
            }
        return {
            "id": s.id,
            "name": s.name,
            "level": s.level,
            "district": s.district,
            "address": s.address,
            "parent": s.parent,
            "parent_name": parent.name if parent else None,
            "status": status,
            "since": st.since if st else None,
            "last_ts": st.last_ts if st else None,
            "reason": st.reason if st else None,
            "rtt_avg_ms": st.rtt_avg_ms if st else None,
            "loss_pct": st.loss_pct if st else None,
            "availability": {w: pct(pw) for w, pw in zip(windows, p)},
            "observed_s": {w: round(pw[1], 3) if pw else 0 for w, pw in zip(windows, p)},
            # [hour index (0 = 24 h ago .. 24 = this hour), avg RTT ms (null: no reply), loss %]:
            # compact lists, since 10,000 sites x 25 points of dicts would cost far more.
            "spark": sparks.get(s.id, []),
            "snmp": snmp,
            # its keys before its last change of them (in the last NOTE_DAYS), or null
            "before": before.get(s.id),
        }

    sites = {s.id: site_data(s) for s in inv.ordered()}
    counts = {k: 0 for k in SEVERITY}
    for data in sites.values():
        counts[data["status"]] += 1

    def availability(ids) -> dict[str, float | None]:  # a group's: its sites' sums, window by window
        out = {}
        for k, w in enumerate(windows):
            r: float = 0
            n: float = 0
            for i in ids:
                p = pairs[i][k]
                if p:
                    r += p[0]
                    n += p[1]
            out[w] = 100.0 * r / n if n else None
        return out

    levels = {lv: availability([s.id for s in inv.sites if s.level == lv]) for lv in LEVELS}

    def group(ids: list[str]) -> dict[str, Any]:
        c = {k: 0 for k in SEVERITY}
        for i in ids:
            c[sites[i]["status"]] += 1
        worst = min((sites[i]["status"] for i in ids), key=lambda st: SEVERITY[st], default="unknown")
        return {"counts": c, "status": worst, "availability": availability(ids)}

    districts = []
    for d in inv.districts:
        ids = [s.id for s in (*d.sites, *d.communes)]
        g = group(ids)
        # The badge says whose problem it is: the district's own router (its status), or only
        # some communes ("partial": n of m communes with a problem).
        own = min((sites[s.id]["status"] for s in d.sites), key=lambda st: SEVERITY[st], default="up")
        bad_communes = sum(1 for s in d.communes if sites[s.id]["status"] in PROBLEMS)
        badge = own if own in PROBLEMS else "partial" if bad_communes else g["status"]
        districts.append(
            {
                "name": d.name,
                "sites": [s.id for s in d.sites],
                "communes": [s.id for s in d.communes],
                "badge": badge,
                "communes_with_problems": bad_communes,
                **g,
            }
        )
    children = children_of((s.id, s.parent) for s in inv.sites)
    out_of_service = _out_of_service(cfg, now)
    by_base = cfg.timeline.base_by_id
    retired = {sid: by_base[sid].retired_at.timestamp() for sid in out_of_service["retired"]}  # type: ignore[union-attr]
    incidents = _incidents(store, sites, children, now, retired)
    alert_states, _ = store.alert_states() if alerts is None else (alerts, False)
    flapping = {sid for sid, a in alert_states.items() if getattr(a, "flapping", False)}
    first_seen = {i["site"] for i in incidents if i["end"] is None and i["first_seen"]}
    problems = _problems(sites, now, flapping, sites_in_maintenance(cfg, now), first_seen)
    _with_paths(cfg, store, now, incidents, problems)
    return {
        "generated_at": now,
        "last_cycle": last,
        "refresh_s": cfg.page.refresh_s,
        # the data is stale past 3 poll intervals: here at render time, and in the page's script
        # against the browser's clock (a page whose agent stopped says so by itself)
        "icmp_interval_s": cfg.schedule.icmp_interval_s,
        "stale_after_s": STALE_INTERVALS * cfg.schedule.icmp_interval_s,
        "stale": last is None or now - last["started_at"] > STALE_INTERVALS * cfg.schedule.icmp_interval_s,
        "counts": counts,
        "levels": levels,
        "province": {"sites": [s.id for s in inv.province], **group([s.id for s in inv.province])},
        "districts": districts,
        "sites": sites,
        # sites not listed: retired in the last 30 days, and those that enter service later
        "out_of_service": out_of_service,
        "problems": problems,
        "incidents": incidents,
        # alert mail the relay did not take: failed for good (last 7 days), or waiting for a retry
        "mail": store.outbox_summary(now - WINDOWS["7d"]),
        # SQLite found the store damaged: nothing is recorded until it is restored
        "store_damaged": damaged(store.path) if store.path is not None else None,
        # checks further apart than [schedule] icmp_interval_s: said, with the fix
        "slow_cadence": account.slow_cadence_note(cfg.schedule.icmp_interval_s, store.cadence_s(), "sites.toml"),
        # outputs (wanmon.outputs) failing now: the page shows them when it is the one that works
        "outputs_failing": {k: dataclasses.asdict(h) for k, h in outputs.failing(store).items() if k != "page"},
        "skipped_points": {},  # a page from InfluxDB: points it could not read, by reason
        "source": "store",
        "agents": [],  # a page from InfluxDB: every agent, fresh or stale
        "disagreements": [],  # and the sites fresh agents see differently
        # the uplinks `wanmon topology` last found to differ from today's parents (the tree's picture)
        "topology": tree.differences(cfg, store),
        **(extra or {}),
    }


def sparkline_svg(points: list[list], width: int = 144, height: int = 28) -> str:
    """Inline SVG: RTT line over 24 h (hourly points), loss as red ticks, gaps left empty."""
    if not points:
        return ""
    rtts = [r for _, r, _ in points if r is not None]
    top = max(rtts) if rtts else 1.0
    top = top if top > 0 else 1.0
    step = width / SPARK_BUCKETS
    parts: list[str] = []
    path: list[str] = []
    prev_b = None
    for b, rtt, loss in points:
        x = b * step + step / 2
        if rtt is not None:
            y = height - 2 - (height - 6) * (rtt / top)
            cmd = "L" if prev_b is not None and b == prev_b + 1 else "M"  # a gap breaks the line
            path.append(f"{cmd}{x:.1f},{y:.1f}")
            prev_b = b
        else:
            prev_b = None
        if loss > 0:
            parts.append(f'<rect x="{x - step / 2:.1f}" y="0" width="{max(step, 1):.1f}" height="4" class="lossmark"/>')
    line = f'<path d="{" ".join(path)}" class="rttline"/>' if path else ""
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-hidden="true">{line}{"".join(parts)}</svg>'
    )


# ----------------------------------------------------------------------------
# rendering and writing


def template_loader(cfg: Config):
    """[page] templates_dir if set, then the installed package's templates (wanmon/templates,
    where `pip install .` puts them), then a checkout's top-level templates/."""
    import jinja2

    here = Path(__file__).resolve().parent
    paths = [here / "templates", here.parent / "templates"]
    if cfg.page.templates_dir:
        paths.insert(0, cfg.path.parent / cfg.page.templates_dir)
    return jinja2.FileSystemLoader([str(p) for p in paths if p.is_dir()])


def _shown(value: Any) -> Any:
    """Jinja's finalize: data as printable text; markup already made (the site rows) as it is."""
    return value if hasattr(value, "__html__") else printable(value)


_ENVS: dict[tuple[str, ...], Any] = {}  # one Environment per template search path: it keeps compiled templates


def _env(cfg: Config):
    """The page's Jinja environment. Kept per process (the daemon renders every cycle: compiling
    the template cost 50 ms each time), with Jinja's bytecode cache on disk for cron runs (its
    own per-user temp folder, created private and checked by Jinja); a template edited is
    compiled again (Jinja compares the source)."""
    import jinja2

    loader = template_loader(cfg)
    key = tuple(loader.searchpath)
    env = _ENVS.get(key)
    if env is None:
        try:
            cache = jinja2.FileSystemBytecodeCache()
        except (OSError, RuntimeError):  # no usable temp folder: compile every time
            cache = None
        # finalize: every {{ value }} shows its control characters as \xNN (wanmon.text) before escaping
        env = _ENVS[key] = jinja2.Environment(
            loader=loader,
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=_shown,
            bytecode_cache=cache,
        )
    return env


def _cause_lines(
    snap: dict[str, Any], fmt: Fmt, thresholds, names: dict[str, LevelName] | None = None
) -> list[dict[str, Any]]:
    """The "now" section's entries (snapshot's problems) as the page words them (names: the
    levels' words now)."""
    c = CAUSE[fmt.lang]
    sites, now = snap["sites"], snap["generated_at"]
    out = []
    for p in snap["problems"]:
        s = sites[p["site"]]
        kind, since = p["kind"], p.get("since")
        bits = []
        if kind in ("down", "unreachable") and since is not None:
            bits.append(since_text(fmt, kind, since, now, p.get("first_seen", False)))
        if kind == "down" and p.get("path") and p["path"]["text"]:
            bits.append(p["path"]["text"])  # where its path stops (traced at the outage)
        elif kind == "degraded":
            bits.append(
                degraded_why(fmt, p["rtt_avg_ms"], p["loss_pct"], thresholds)
                or (since_text(fmt, kind, since, now, p.get("first_seen", False)) if since else "")
            )
        elif kind == "flapping":
            bits.append(c["flapping"])
        elif kind == "maintenance":
            bits.append(c["maintenance"])
        elif kind == "snmp":
            if p["silent_since"]:
                bits.append(c["snmp_silent"].format(since=fmt.dt(p["silent_since"])))
            if p["rebooted"]:
                bits.append(c["rebooted"].format(when=fmt.dt(p["rebooted"])))
        if p["flapping"] and kind != "flapping":
            bits.append(c["flapping"])
        if p["maintenance"] and kind != "maintenance":
            bits.append(c["maintenance"])
        below = p.get("unreachable") or []
        out.append(
            {
                "kind": kind,
                "status": s["status"],
                "id": s["id"],
                "name": s["name"],
                "district": s["district"],
                "text": " · ".join(b for b in bits if b),
                "impact": unreachable_count(fmt.lang, [sites[x]["level"] for x in below], names) if below else "",
                "children": [(sites[x]["name"], x) for x in below],
            }
        )
    return out


def html_fragments(cfg: Config, snap: dict[str, Any]) -> Iterable[str]:
    """The page as a stream of text fragments (Jinja's generate())."""
    from markupsafe import Markup

    lang = cfg.page.language
    fmt = Fmt(lang, ZoneInfo(cfg.page.timezone), NBSP)  # no number apart from its unit on a phone
    now = snap["generated_at"]
    names = level_names(cfg, now, lang)  # the levels' words of today's tree
    t = {**TEXT[lang], **page_level_words(names)}
    sites = snap["sites"]

    row = _row_writer(t, fmt, now, lambda ts: level_names(cfg, ts, lang, before=True))

    def site_rows(ids: list[str]) -> Markup:  # one group's rows: see _row_writer
        return Markup("".join([row(sites[i]) for i in ids]))

    def split(ids: list[str]) -> tuple[list[str], list[str], list[str]]:
        """(sites with a problem of their own, sites unreachable through an uplink, sites up)."""
        own = [i for i in ids if sites[i]["status"] not in ("up", "unreachable")]
        return (
            own,
            [i for i in ids if sites[i]["status"] == "unreachable"],
            [i for i in ids if sites[i]["status"] == "up"],
        )

    causes = _cause_lines(snap, fmt, cfg.thresholds, names)
    return (
        _env(cfg)
        .get_template("page.html.j2")
        .generate(
            s=snap,
            t=t,
            c=CAUSE[lang],
            f=fmt,
            lang=lang,
            now=now,
            province=cfg.page.province,
            tree_link=TREE[lang]["link"],  # tree.html beside it (wanmon.tree)
            site_rows=site_rows,
            symbol=STATUS_SYMBOL,
            windows=list(WINDOWS),
            wl={w: t[f"w_{w}"] for w in WINDOWS},  # 24 giờ, 7 ngày, 30 ngày
            counted=counted,
            unreachable_n=unreachable_n,
            levels=LEVELS,
            ln=names,  # the levels' words now ({level: LevelName}): group words, counts
            levels_since=_levels_since(cfg, now, lang, fmt),
            unreachable_count=unreachable_count,
            loud=[x for x in causes if x["kind"] != "snmp"],
            quiet=[x for x in causes if x["kind"] == "snmp"],
            split=split,
            incidents_shown=INCIDENTS_SHOWN,
            reports=report_archive(cfg),
            # the data's time: its last cycle's, never after the page's own (a page rendered as of a past `now`)
            data_ts=min(snap["last_cycle"]["started_at"], now) if snap["last_cycle"] else None,
            # the script's words (the name kept from its first use: a customised template may read it)
            stale_words={
                "stale": t["stale"],
                "ago": t["ago"],
                "tag": t["stale_tag"],
                "units": DURATION_UNITS[lang],
                "sep": NBSP,
                "none": t["no_match"],
                "none_filters": t["no_match_filters"],
            },
            # the filter's rule for what is typed: wanmon.text.fold's, whose result each row carries
            fold_rule={"spaces": FOLD_SPACES, "map": FOLD_MAP},
        )
    )


def _levels_since(cfg: Config, now: float, lang: str, fmt: Fmt) -> dict[str, Any] | None:
    """The last change of the levels' names ([page.level_names] changes) at or before now, as
    the page says it under its level summary: {when, levels: [(name now, name before)]} for the
    levels it renamed; None when there is none."""
    last = max((ch.at.timestamp() for ch in cfg.page.level_names.changes if ch.at.timestamp() <= now), default=None)
    if last is None:
        return None
    now_names, was = level_names(cfg, now, lang), level_names(cfg, last, lang, before=True)
    changed = [(now_names[lv].name, was[lv].name) for lv in LEVELS if now_names[lv].name != was[lv].name]
    return {"when": fmt.when(last), "levels": changed} if changed else None


REPORTS_SHOWN = 24


def report_archive(cfg: Config) -> list[dict[str, Any]]:
    """The reports under [page] out_dir/reports (wanmon report), newest first: one entry per
    period with a link per format found ({label, links: [(format, href)]})."""
    from urllib.parse import quote

    from wanmon.report import FORMATS

    folder = out_dir(cfg) / "reports"
    try:
        names = [p.name for p in folder.iterdir() if p.is_file()]
    except OSError:
        return []
    by_stem: dict[str, dict[str, str]] = {}
    for n in names:
        stem, dot, ext = n.rpartition(".")
        if dot and stem.startswith("wanmon-report-") and ext in FORMATS:
            by_stem.setdefault(stem, {})[ext] = "reports/" + quote(n)
    return [
        {"label": stem.removeprefix("wanmon-report-"), "links": [(f, links[f]) for f in FORMATS if f in links]}
        for stem, links in sorted(by_stem.items(), reverse=True)[:REPORTS_SHOWN]
    ]


_NEEDS_ESCAPE = re.compile(r"[&<>\"']").search
_AS_IS = re.compile(r"[&<>\"'\x00-\x1f\x7f-\x9f]").search  # neither escaped nor made printable (wanmon.text)


def html_text(v: Any) -> str:
    """A value from the config or a device as HTML text: printable (wanmon.text), escaped as
    Jinja's autoescape would (markupsafe). Most names need neither: one search (~10x cheaper
    than escape()) says so, and they go in as they are."""
    if not isinstance(v, str):
        v = str(v)
    if _AS_IS(v) is None:
        return v
    from markupsafe import escape

    v = printable(v)
    return str(escape(v)) if _NEEDS_ESCAPE(v) else v


_V = TypeVar("_V")


def _memo(fn: Callable[[Any], _V]) -> Callable[[Any], _V]:
    """fn with its results kept: at 10,000 sites most values repeat (100,00%, 0%, the same minute)."""
    cache: dict[Any, _V] = {}

    def get(v: Any) -> _V:
        r = cache.get(v)
        if r is None:
            r = cache[v] = fn(v)
        return r

    return get


def _row_writer(
    t: dict[str, str], fmt: Fmt, now: float, names_before: Callable[[float], dict[str, LevelName]]
) -> Callable[[dict[str, Any]], str]:
    """The page's site rows, written in Python rather than in the template: at 10,000 sites
    Jinja spent 0.7 s of the page's 2 s on them (an escape() and a Markup per value, a
    context lookup per name), this ~0.2 s. The markup is the template's own: the template
    keeps the table, its head and everything around it, and calls site_rows(ids).
    names_before(ts): the levels' words before the instant ts (a site's note of its old keys).

    Every value from the config or a device goes through markupsafe's escape (as Jinja's
    autoescape would); the fixed texts are escaped once here. What Fmt writes (digits,
    separators, unit words, dates) has no character to escape, and goes in as is."""
    e = html_text
    te = {k: e(v) for k, v in t.items()}
    silent = e(CAUSE[fmt.lang]["snmp_silent"])  # the words of the "now" section's SNMP line
    badge = {
        st: f'<span class="badge st-{st}"><span aria-hidden="true">{sym}</span> {te[st]}</span>'
        for st, sym in STATUS_SYMBOL.items()
    }
    wl = {w: te[f"w_{w}"] for w in WINDOWS}
    cells_head = (f'<td class="num" data-label="{te["rtt"]}">', f'<td class="num" data-label="{te["loss"]}">')
    pct, ms, loss = _memo(fmt.pct), _memo(fmt.ms), _memo(lambda v: fmt.num(v, 0, "%"))
    minute = _memo(lambda m: fmt.dt(m * 60))

    def dt(ts: float) -> str:  # dates are shown to the minute: one strftime per distinct minute
        return minute(ts // 60)

    names_then = _memo(names_before)  # one per instant of change (a reform: one for every site)
    when = _memo(fmt.when)

    def was(site: dict[str, Any], before: dict[str, Any]) -> str:
        """The site's keys before its last change, those that differ from now: "trước
        01/07/2025: UBND xã Xuân Lai, huyện Gia Bình" (a group's name without its kind gets the
        level's noun of then)."""
        names = names_then(before["at"])
        parts = []
        if before["name"] != site["name"]:
            parts.append(e(before["name"]))
        group = before["district"]
        if group and group != site["district"]:
            parts.append(e(group if group[:1].islower() else f"{names['district'].noun} {group}"))
        if before["level"] != site["level"]:
            parts.append(e(names[before["level"]].name))
        if before["parent"] and before["parent"] != site["parent"]:
            parts.append(e(t["uplink_was"].format(name=before["parent_name"] or before["parent"])))
        if not parts:
            return ""
        return f'<div class="meta was">{te["before"].format(when=when(before["at"]), what=", ".join(parts))}</div>'

    def row(site: dict[str, Any]) -> str:
        status, since, snmp = site["status"], site["since"], site["snmp"]
        if status == "unreachable" and site["parent_name"]:
            note = f'<div class="note">{e(t["unreachable_because"].format(parent=site["parent_name"]))}</div>'
        elif status == "down" and since:
            note = f'<div class="note">{te["down_since"]} {dt(since)} ({fmt.span(now - since)})</div>'
        elif since:
            note = f'<div class="meta">{te["last_change"]}: {dt(since)}</div>'
        else:
            note = ""
        if snmp:
            bits = [e(snmp["sys_name"] or "")]
            if snmp["uptime_s"] is not None:
                bits.append(f" · {te['device_uptime']} {fmt.span(snmp['uptime_s'])}")
            if snmp["last_reboot"]:
                bits.append(f" · {te['last_reboot']} {dt(snmp['last_reboot'])}")
            if snmp["uplink_util_in_pct"] is not None:
                bits.append(
                    f" · {te['uplink']} {e(snmp['uplink'] or '')} ↓{pct(snmp['uplink_util_in_pct'])}"
                    f" ↑{pct(snmp['uplink_util_out_pct'])}"
                )
            if snmp["silent_since"]:
                bits.append(f"{' · ' if snmp['sys_name'] else ''}{silent.format(since=dt(snmp['silent_since']))}")
            snmp_html = f'<div class="meta">{"".join(bits)}</div>'
        else:
            snmp_html = ""
        a = site["availability"]
        avail = "".join([f'<td class="num" data-label="{wl[w]}">{pct(a[w])}</td>' for w in WINDOWS])
        sid, name, address = e(site["id"]), e(site["name"]), e(site["address"])
        # what the filter compares, without accents (wanmon.text.fold), as shown (printable), with
        # the district: typing a district's name shows its group and all its communes; with the
        # name and group before the last change: typing the old name finds the site
        text = f"{site['id']} {site['name']} {site['address']} {site['district'] or ''}"
        before = site["before"]
        if before:
            text += f" {before['name']} {before['district'] or ''}"
            note = was(site, before) + note
        search = e(fold(printable(text)))
        return (
            f'<tr class="site st-{status}" data-status="{status}" data-search="{search}">\n'
            f"  <td>{badge[status]}</td>\n"
            f'  <td><div class="name">{name}</div><div class="meta"><span class="id">{sid}</span> · {address}</div>\n'
            f"  {note}{snmp_html}\n  </td>\n"
            f"  {cells_head[0]}{ms(site['rtt_avg_ms'])}</td>\n"
            f"  {cells_head[1]}{loss(site['loss_pct'])}</td>\n"
            f'  <td class="spk">{sparkline_svg(site["spark"])}</td>\n'
            f"  {avail}\n</tr>\n"
        )

    return row


def _atomic_write(path: Path, chunks: Iterable[str]) -> int:
    """Write to a temp file in the same folder, then rename (wanmon.files.replacing): readers
    never see half a file. chunks are written as they come: a 10,000-site page is never
    one 20 MB string. Returns the characters written."""
    n = 0
    with replacing(path, encoding="utf-8", buffering=1 << 16) as f:  # 0644: a web server or a colleague reads it
        for chunk in chunks:
            f.write(chunk)
            n += len(chunk)
    return n


GZIP_LEVEL = 1  # 12.4 MB -> 1.0 MB in 0.13 s at 10,000 sites (level 6: 0.6 MB in 0.35 s)


def _gzip_beside(path: Path) -> int:
    """path + ".gz", written atomically beside it (nginx's gzip_static serves it as is).
    Streamed in 1 MB pieces: a 10,000-site page is never held whole. Returns its size."""
    import gzip

    target = path.with_name(path.name + ".gz")
    with (
        replacing(target, binary=True) as raw,
        open(path, "rb") as src,
        gzip.GzipFile(
            filename=path.name, mode="wb", fileobj=raw, compresslevel=GZIP_LEVEL, mtime=int(path.stat().st_mtime)
        ) as gz,
    ):
        while chunk := src.read(1 << 20):
            gz.write(chunk)
    return target.stat().st_size


def _json_chunks(snap: dict[str, Any]) -> Iterable[str]:
    """status.json as a stream, one site at a time: the same text as
    json.dumps(snap, compact) + newline, without one 8 MB string at 10,000 sites.
    Compact separators keep the C encoder (indent= falls back to the slow
    pure-Python one)."""
    enc = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    yield "{"
    for i, (key, value) in enumerate(snap.items()):
        yield ("," if i else "") + enc(key) + ":"
        if key == "sites":
            yield "{"
            for j, (sid, site) in enumerate(value.items()):
                yield ("," if j else "") + enc(sid) + ":" + enc(site)
            yield "}"
        else:
            yield enc(value)
    yield "}\n"


def out_dir(cfg: Config, override: str | Path | None = None) -> Path:
    p = Path(override) if override else Path(cfg.page.out_dir).expanduser()
    return p if p.is_absolute() else (Path.cwd() / p if override else cfg.path.parent / p)


def write_page(
    cfg: Config,
    store: PageSource,
    out: str | Path | None = None,
    now: float | None = None,
    on_html: Callable[[], None] | None = None,
    states: Iterable[SiteState] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Render index.html, then status.json, then tree.html (the picture of the tree,
    wanmon.tree), into the output folder, atomically. Returns the folder.
    on_html: called the moment index.html is in place (what the IT staff read comes first).
    states, extra: as for snapshot()."""
    folder = out_dir(cfg, out)
    make_folder(folder)  # 0755 whatever the umask: the web server reads it, nobody else writes it
    snap = snapshot(cfg, store, now, states, extra=extra)
    chars = _atomic_write(folder / "index.html", html_fragments(cfg, snap))
    if on_html is not None:
        on_html()
    _atomic_write(folder / "status.json", _json_chunks(snap))
    chars += _atomic_write(folder / "tree.html", tree.tree_fragments(cfg, snap))
    # Compressed copies for a web server (nginx gzip_static), once the page is in place
    gz = sum(_gzip_beside(folder / name) for name in ("index.html", "status.json", "tree.html"))
    logger.info("page written dir=%s sites=%d bytes=%d gzipped=%d", folder, len(snap["sites"]), chars, gz)
    return folder
