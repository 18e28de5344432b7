"""Several agents and one set of admins: who sends which mail (issue 14).

Every agent evaluates alerts as usual and queues its mail. Before the publishing tail
delivers it, `gate()` reads InfluxDB (InfluxQL, within `[influxdb] timeout_ms`):

* A **standby** (`[agent] role = "standby"`) holds every queued mail while a primary's
  heartbeat is fresh (within 3 x that primary's icmp_interval_s): the primary sends.
  Held mail is never sent later (it would be old news): status 'held', with why.
* Every agent holds a mail whose status notifications (down, unreachable, degraded,
  recovery) were all the latest news already sent for those sites by some agent: the
  newest `wanmon_notice` point of each site (written when a mail goes out, by whichever
  agent sent it). So across a handover each DOWN and RECOVERY reaches the admins once:
  a primary back after a stop does not repeat the DOWN the standby sent meanwhile, nor a
  RECOVERY of an outage the standby closed.

Edges left open (README, 'Several agents'): InfluxDB unreachable or slow: nothing is
known of the others, mail is sent (a duplicate is better than silence); the primary
stopped after confirming a DOWN but before sending it: the standby held its own DOWN
while the primary was fresh, so that DOWN is lost, and the site's RECOVERY still comes;
a mail that mixes news with old news is sent whole; reminders, flapping, reboots and
the guard are not compared across agents (the standby rule still applies).
"""

from __future__ import annotations

import json
import logging
import time

from wanmon import influxql
from wanmon.config import Config
from wanmon.lineproto import line
from wanmon.store import Store

logger = logging.getLogger(__name__)

NOTICE = "wanmon_notice"
STATUS_KINDS = ("down", "unreachable", "degraded", "recovery")
NOTICE_DAYS = 30


def latest_notices(cfg: Config) -> dict[str, str]:
    """{site_id: kind} of the newest status notice any agent sent for each site."""
    q = (f'SELECT last("kind") AS "kind" FROM {influxql.ident(NOTICE)} WHERE time > now() - {NOTICE_DAYS}d '
         'GROUP BY "site_id"')
    out = {}
    for s in influxql.query(cfg.influx, q):
        sid = (s.get("tags") or {}).get("site_id")
        if sid and s.get("values"):
            out[sid] = s["values"][0][1]
    return out


def gate(cfg: Config, store: Store, now: float | None = None) -> int:
    """Hold the queued mail this agent must not send (see the module docstring). Returns how many."""
    if cfg.influx is None:
        return 0
    now = time.time() if now is None else now
    due = store.outbox_due(now)
    if not due:
        return 0
    try:
        seen = influxql.agents(cfg.influx) if cfg.agent.role == "standby" else []
        primary = [a for a in seen if a.role == "primary" and a.agent != cfg.agent.id and a.fresh(now)]
        if primary:
            p = primary[0]
            why = (f"held: the primary agent {p.agent!r} is running (heartbeat {now - p.last_ts:.0f} s ago) and "
                   "sends the mail; this agent is the standby")
            store.outbox_hold([r["id"] for r in due], why)
            logger.info("standby: %d mail(s) held, the primary %r is running", len(due), p.agent)
            return len(due)
        latest = latest_notices(cfg)
    except influxql.QueryError as exc:
        logger.warning("cannot read the other agents' heartbeats and notices from InfluxDB (%s): the mail is sent as "
                       "usual", exc)
        return 0
    old = []
    for r in due:
        notes = [tuple(n) for n in json.loads(r.get("notes") or "[]")]
        status_notes = [(sid, kind) for sid, kind in notes if kind in STATUS_KINDS and sid]
        if status_notes and len(status_notes) == len(notes) and all(latest.get(sid) == kind for sid, kind in notes):
            old.append(r["id"])
    if old:
        store.outbox_hold(old, "held: another agent already sent this news (wanmon_notice in InfluxDB)")
        logger.info("%d mail(s) held: another agent already sent the same news", len(old))
    return len(old)


def record_notices(cfg: Config, store: Store, since_ts: float) -> int:
    """Spool a wanmon_notice point per (site, status kind) of the mail sent since since_ts."""
    if cfg.influx is None:
        return 0
    v1 = cfg.influx.settings.api == "v1"
    seen: dict[tuple[str, str], float] = {}
    for r in store.outbox_sent_since(since_ts):
        for sid, kind in (tuple(n) for n in json.loads(r.get("notes") or "[]")):
            if sid and kind in STATUS_KINDS:
                seen[(sid, kind)] = max(seen.get((sid, kind), 0.0), r["sent_ts"] or since_ts)
    lines = [line(NOTICE, {"site_id": sid, "agent": cfg.agent.id}, {"kind": kind}, ts, v1=v1)
             for (sid, kind), ts in sorted(seen.items(), key=lambda x: x[1])]
    store.spool_points(time.time(), [x for x in lines if x])
    return len(lines)
