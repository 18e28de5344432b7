"""The status page built from InfluxDB (`wanmon render --source influxdb`): every agent's view.

What the agents wrote is read with InfluxQL (`/query`: InfluxDB 1.x, 2.x's v1 API, 3.x),
all requests within `[page] influx_budget_s`, into a `FluxView`: the reading methods the page
calls on a store, answered from that data; the page is then written by the same code as
always (wanmon.page), so a page from InfluxDB looks and behaves like the agent's own.

* The sites are those seen in the last 30 days, in today's tree: a point's tags are the
  keys valid when it was written, so a site the inventory knows takes its keys valid now
  (by site_id; out of service now: not on the page), and only a site the inventory does not
  list (another shard's) takes its newest point's tags (name, level, district, address,
  parent): shards with disjoint sites make one page, grouped as usual.
* Agents: from their heartbeats (wanmon_agent); fresh = within 3 x its interval. A
  site's current status is the best one a fresh agent reports (up, degraded,
  unreachable, down); when fresh agents disagree the page says who sees what ("down
  from agent B, up from agent A": a path problem, not an outage). A site no fresh agent
  reports is unknown; a stale agent is listed with the time of its last heartbeat.
* Availability (24 h, 7 d, 30 d): the account (wanmon/account.py) of the hourly sums of
  the prev_*_s fields, per site the best agent's hour; the 24 h sparklines from hourly
  RTT and loss means.
* "since": the time of the best agent's last point with another kind of status (to the
  cycle). The incident list needs the status changes the agent's own store keeps: it
  is empty on a page from InfluxDB (the page says so).

Nothing is written unless every query answered: the last page stays in place.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from wanmon import influxql
from wanmon.config import LEVELS, Config, Site, valid_id
from wanmon.dated import Timeline
from wanmon.model import SiteState

logger = logging.getLogger(__name__)

RANK = {"up": 0, "degraded": 1, "unreachable": 2, "down": 3, "unknown": 4}
TAGS = ("site_id", "site_name", "level", "district", "address", "parent")
HISTORY_DAYS = 30


def _rows(series: list[dict]) -> list[tuple[dict, dict]]:
    """[(tags, row)] of every row of every series."""
    out = []
    for s in series:
        tags = s.get("tags") or {}
        for vals in s.get("values") or []:
            out.append((tags, dict(zip(s["columns"], vals))))
    return out


def gather(cfg: Config, now: float, history_days: int = HISTORY_DAYS) -> dict[str, Any]:
    """Everything the page needs, read from InfluxDB. Raises influxql.QueryError."""
    spec = cfg.influx
    if spec is None:  # the callers check first (`wanmon render`, the daemon): a clear error all the same
        raise influxql.QueryError(f"{cfg.path}: the page from InfluxDB needs an [influxdb] table")
    end = time.monotonic() + cfg.page.influx_budget_s  # one deadline for all the queries

    def left() -> float:
        rest = end - time.monotonic()
        if rest <= 0:
            raise influxql.QueryError(
                f"InfluxDB did not answer every query within [page] influx_budget_s = {cfg.page.influx_budget_s:g} s"
            )
        return rest

    seen = influxql.agents(spec, days=history_days, budget_s=left())
    fresh = {a.agent: a for a in seen if a.fresh(now)}
    window = max([3 * a.interval_s for a in seen] or [3 * cfg.schedule.icmp_interval_s])
    group = ", ".join(influxql.ident(t) for t in TAGS)
    icmp = influxql.ident("wanmon_icmp")
    inventory = _rows(
        influxql.query(
            spec,
            budget_s=left(),
            q=f'SELECT last("status") AS "status" FROM {icmp} WHERE time > now() - {history_days}d GROUP BY {group}',
        )
    )
    latest = _rows(
        influxql.query(
            spec,
            budget_s=left(),
            q=f'SELECT "status", "rtt_avg_ms", "loss_pct", "jitter_ms" FROM {icmp} '
            f'WHERE time > now() - {int(window) + 1}s GROUP BY "site_id", "agent" '
            "ORDER BY time DESC LIMIT 1",
        )
    )
    # four aggregates only: InfluxDB 1.6 spends ~1.3 s per aggregate over 2.9 M points (10,000 sites, a day)
    # the account's time per hour (the prev_*_s fields: wanmon/account.py), and RTT and loss for the sparklines
    hourly = influxql.query(
        spec,
        budget_s=left(),
        q='SELECT count("up") AS "n", sum("prev_available_s") AS "a", '
        'sum("prev_observed_s") AS "o", sum("prev_down_s") AS "d", mean("rtt_avg_ms") AS "rtt", '
        f'mean("loss_pct") AS "loss" FROM {icmp} WHERE time > now() - {history_days}d '
        'GROUP BY time(1h), "site_id", "agent" fill(none)',
    )  # series: read as they are
    changes = {}
    for cond, key in (('"up" = 0', "down"), ('"up" = 1', "up")):
        for tags, row in _rows(
            influxql.query(
                spec,
                budget_s=left(),
                q=f'SELECT last("up") AS "up" FROM {icmp} WHERE time > now() - '
                f'{history_days}d AND {cond} GROUP BY "site_id", "agent"',
            )
        ):
            changes[(tags.get("site_id"), tags.get("agent"), key)] = row["time"] / 1000.0
    return {
        "seen": seen,
        "fresh": fresh,
        "inventory": inventory,
        "latest": latest,
        "hourly": hourly,
        "changes": changes,
    }


def merge(cfg: Config, data: dict[str, Any], now: float):
    """(sites [Site], site_state rows, hourly rows, agents for the page, disagreements)."""
    fresh = data["fresh"]
    skipped = data.setdefault("skipped", Counter())
    sites: dict[str, dict] = {}
    for tags, _row in sorted(data["inventory"], key=lambda x: x[1].get("time") or 0):  # newest tags win
        why = _bad_tags(tags)
        if why:
            skipped[why] += 1
            continue
        sites[tags["site_id"]] = tags
    views: dict[str, list[tuple[str, dict]]] = {}
    for tags, row in data["latest"]:
        sid, agent = tags.get("site_id"), tags.get("agent") or ""
        if sid in sites and agent in fresh:
            why = _bad_row(row)
            if why:
                skipped[why] += 1
                continue
            views.setdefault(sid, []).append((agent, row))
    today = _today(cfg, sites, now)
    out_sites: list[Site] = []
    # (the site today, status, since, last ts, loss %, RTT ms, jitter ms, reason, the agent whose row it is)
    states: list[tuple[Site, str, float, float, float | None, float | None, float | None, str | None, str | None]] = []
    disagree: list[dict[str, Any]] = []
    known = set(today)
    for sid, site in today.items():
        if site.parent is not None and (site.parent not in known or site.parent == sid):
            site = site.model_copy(update={"parent": None})
        out_sites.append(site)
        # every row in views passed _bad_row: its status is one of RANK's
        v = sorted(views.get(sid, []), key=lambda x: (RANK[x[1]["status"]], x[0]))
        if not v:
            states.append((site, "unknown", now, now, None, None, None, "no fresh agent reports this site", None))
            continue
        agent, row = v[0]
        status = row.get("status") or "unknown"
        reason = None  # the site's reason on the page: who sees what, when the fresh agents disagree
        if len({r.get("status") for _, r in v}) > 1:
            worst_first = sorted(v, key=lambda x: -RANK[x[1]["status"]])
            reason = ", ".join(f"{r.get('status')} from agent {a}" for a, r in worst_first)
            disagree.append(
                {"site": sid, "views": [{"agent": a, "status": r.get("status")} for a, r in v], "text": reason}
            )
        key = "up" if status in ("up", "degraded") else "down"
        other = data["changes"].get((sid, agent, "down" if key == "up" else "up"))
        since = other if other is not None else now - HISTORY_DAYS * 86400
        states.append(
            (
                site,
                status,
                since,
                row["time"] / 1000.0,
                row.get("loss_pct"),
                row.get("rtt_avg_ms"),
                row.get("jitter_ms"),
                reason,
                agent,
            )
        )
    # hourly: per site and hour, the best agent's row (highest share available); rows stay the
    # server's lists: 240,000 dicts cost 100 MB at 10,000 sites
    best: dict[tuple[str, float], list] = {}
    for series in data["hourly"]:
        sid = (series.get("tags") or {}).get("site_id")
        if sid not in known:
            continue
        ix = [series["columns"].index(c) for c in ("time", "n", "a", "o", "d", "rtt", "loss")]
        for vals in series.get("values") or []:
            t, n, a, o, d, rtt, loss = (vals[i] for i in ix)
            if not all(v is None or _number(v) for v in (t, n, a, o, d, rtt, loss)) or t is None:
                skipped["a malformed value"] += 1
                continue
            if not n:
                continue
            k = (sid, t / 1000.0)
            cur = best.get(k)
            if cur is None or (a or 0) / (o or 1) > (cur[1] or 0) / (cur[2] or 1):
                best[k] = [n, a, o, d, rtt, loss]
    # the page reads an hour's RTT as rtt_sum / rtt_n and its loss as (sent - received) / sent, to 0.1 %:
    # the hour's mean loss is kept as 1,000 "sent" and as many "received" as it leaves
    hourly = [
        (
            sid,
            hour,
            int(n),
            0,
            1000 if loss is not None else 0,
            1000 - round(10 * loss) if loss is not None else 0,
            (rtt or 0.0) * int(n),
            int(n) if rtt is not None else 0,
            None,
            None,
        )
        for (sid, hour), (n, a, o, d, rtt, loss) in best.items()
    ]
    # the account's time of each hour as runs from the hour's start (available, then down, then
    # unreachable): the page's windows cut them like any other runs
    runs = []
    for (sid, hour), (_, a, o, d, _, _) in best.items():
        a, o, d = a or 0.0, o or 0.0, d or 0.0
        u = max(0.0, o - a - d)
        start = hour
        for status, span in (("up", a), ("down", d), ("unreachable", u)):
            if span > 0:
                runs.append((sid, status, 0, start, start + span))
                start += span
    data["runs"] = runs
    agents = [
        {
            "agent": a.agent,
            "host": a.host,
            "role": a.role,
            "last_ts": a.last_ts,
            "fresh": a.fresh(now),
            "interval_s": a.interval_s,
            "sites": a.sites,
        }
        for a in data["seen"]
    ]
    return out_sites, states, hourly, agents, disagree


def _today(cfg: Config, tags: dict[str, dict], now: float) -> dict[str, Site]:
    """The sites of the page, in today's tree: the tags of a point are the keys valid when it was
    written ("then"), so a site the inventory knows is shown with its keys valid now (Config.at),
    and not at all when it is out of service now (retired, or not yet in service: never down or
    unknown for it); a site only InfluxDB knows (another shard's) with its newest point's tags."""
    epoch = cfg.at(now)
    out: dict[str, Site] = {}
    for sid, t in tags.items():
        if sid in cfg.timeline.base_by_id:
            if epoch.in_service(sid):
                site = epoch.by_id[sid]
                if (
                    site.changes or site.in_service_from or site.retired_at
                ):  # applied already: the page's tree is today's
                    site = site.model_copy(update={"changes": (), "in_service_from": None, "retired_at": None})
                out[sid] = site
            continue
        out[sid] = Site(
            id=sid,
            name=t.get("site_name") or sid,
            level=t.get("level") or "province",
            district=t.get("district") or None,
            address=t.get("address") or "0.0.0.0",
            parent=t.get("parent") or None,
        )
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _bad_tags(tags: dict) -> str | None:
    """Why a site's tags cannot make a site of the page (None: they can). Points come from any
    writer: a level or id wanmon would refuse in sites.toml is skipped, counted, never fatal."""
    sid = tags.get("site_id")
    if not sid:
        return "a missing site_id tag"
    if tags.get("level") not in LEVELS:
        return "an unknown level tag"
    if not valid_id(sid):
        return "a site_id tag that is not a valid id"
    return None


def _bad_row(row: dict) -> str | None:
    if row.get("status") not in RANK or not _number(row.get("time")):
        return "a malformed value"
    if not all(row.get(k) is None or _number(row.get(k)) for k in ("rtt_avg_ms", "loss_pct", "jitter_ms")):
        return "a malformed value"
    return None


class FluxView:
    """What the page reads from a store (the reading methods page.snapshot calls), answered from
    InfluxDB's data: the page from InfluxDB is written by the same code as the agent's own page,
    without a temporary database. There is no incident log, device table, outbox or alert state
    here: those live in each agent's own store."""

    path = None  # no store file: nothing can be damaged

    def __init__(self, states: list[SiteState], hourly: list[tuple], runs: list[tuple], last: float, sites: int):
        self._states = states
        self._hourly = sorted(hourly)
        self._runs = runs
        self._last = {
            "id": 1,
            "started_at": last,
            "finished_at": last,
            "duration_ms": 0.0,
            "sites": sites,
            "up": 0,
            "degraded": 0,
            "down": 0,
            "unreachable": 0,
            "unknown": 0,
        }

    def states(self) -> list[SiteState]:
        return self._states

    def last_cycle(self) -> dict:
        return self._last

    def status_runs(self, start: float, end: float, now: float, cap_s: float) -> list[tuple]:
        return [r for r in self._runs if r[4] > start and r[3] < end]

    def hourly_since(self, start: float) -> list[tuple]:
        """(site_id, hour, rtt_sum_ms, rtt_n, sent, received) by site then hour, as Store.hourly_since."""
        return [h for h in self._hourly if h[1] >= start]

    def run_cap_s(self, default: float) -> float:
        return default

    def cadence_s(self) -> None:
        return None

    def device_lines(self) -> dict:
        return {}

    def status_events_since(self, start: float) -> list:
        return []

    def status_change_before(self, site_id: str, ts: float) -> None:
        return None

    def alert_states(self) -> tuple[dict, bool]:
        return {}, False

    def outbox_summary(self, since_ts: float) -> dict[str, int]:
        return {"failed": 0, "retrying": 0, "queued": 0}

    def outage_paths(self, since: float) -> list:
        return []  # traced paths live in each agent's own store

    def meta_prefixed(self, prefix: str) -> dict[str, str]:
        return {}


def render(cfg: Config, out: str | Path | None = None, now: float | None = None) -> Path:
    """Write the page and status.json from InfluxDB. Raises influxql.QueryError before writing anything."""
    from wanmon.page import write_page

    now = time.time() if now is None else now
    data = gather(cfg, now)
    sites, states, hourly, agents, disagree = merge(cfg, data, now)
    # the page's config: these sites as they are now, nothing dated left to apply (Config.as_of
    # gives it back as it is); maintenance windows are each agent's own
    view = dataclasses.replace(cfg, sites=tuple(sites), maintenance=(), timeline=Timeline(sites))
    last = max([a["last_ts"] for a in agents if a["fresh"]] or [a["last_ts"] for a in agents] or [now])
    source = FluxView(
        [
            SiteState(
                site.id,
                site.name,
                site.level,
                site.district,
                site.address,
                st,
                since,
                last_ts,
                0,
                None,
                loss,
                rtt,
                jit,
                reason,
            )
            for site, st, since, last_ts, loss, rtt, jit, reason, _ in states
        ],
        [
            (sid, hour, rtt_sum, rtt_n, sent, received)
            for sid, hour, _, _, sent, received, rtt_sum, rtt_n, _, _ in hourly
        ],
        data.get("runs", []),
        last,
        len(sites),
    )
    skipped = data.get("skipped") or {}
    if skipped:
        logger.warning(
            "the page from InfluxDB skipped %d point(s) it cannot show: %s",
            sum(skipped.values()),
            ", ".join(f"{n} with {why}" for why, n in sorted(skipped.items())),
        )
    return write_page(
        view,
        source,
        out,
        now,
        extra={"source": "influxdb", "agents": agents, "disagreements": disagree, "skipped_points": dict(skipped)},
    )
