"""Several agents and one set of admins: who sends which mail (issues 14 and 20).

Every agent evaluates alerts as usual and queues its mail. Before the publishing tail
delivers it, `gate()` reads InfluxDB (InfluxQL, within `[influxdb] timeout_ms`):

* A **standby** (`[agent] role = "standby"`) holds every queued mail while a primary's
  heartbeat is fresh (within 3 x that primary's icmp_interval_s) and says its mail gets
  out: the primary sends. Held mail is never sent later (it may be old news): status
  'held', with why.
* The standby **takes over** while no primary is fresh, or the fresh one's heartbeat says
  its mail fails (MAIL_FAILING_RUNS delivery runs in a row, or as many of its intervals:
  a relay that refuses its login or every message). Then it first sends the news no agent
  has sent (`catch_up`): for each site, its own hard alert state against the newest
  `wanmon_notice` of any agent; a DOWN (or RECOVERY) nobody sent is composed afresh and
  sent, and its notice recorded, so it goes out once. It tells the NOC once when a primary
  goes stale and once when it is back, once when a primary's mail fails and once when it
  works again (remembered in the store's meta, PRIMARIES).
* Every agent holds a mail whose status notifications (down, unreachable, degraded,
  recovery) were all the latest news already sent for those sites by some agent: the
  newest `wanmon_notice` point of each site (written when a mail goes out, by whichever
  agent sent it). So across a handover each DOWN and RECOVERY reaches the admins once:
  a primary back after a stop does not repeat the DOWN the standby sent meanwhile, nor a
  RECOVERY of an outage the standby closed.

Edges left open (README, 'Several agents'): InfluxDB unreachable or slow: nothing is
known of the others, mail is sent (a duplicate is better than silence), and nothing is
caught up; a notice point the standby could not write yet may let it send the same catch-up
once more; a mail that mixes news with old news is sent whole; reminders, flapping,
reboots and the guard are not compared across agents (the standby rule still applies);
only the standby catches up: a site the primary sees up and the standby saw down (a path
problem) gets no RECOVERY from a primary back meanwhile.
"""

from __future__ import annotations

import json
import logging
import time

from wanmon import influxql
from wanmon.config import Config, InfluxSpec
from wanmon.lineproto import line
from wanmon.store import Store

logger = logging.getLogger(__name__)

NOTICE = "wanmon_notice"
STATUS_KINDS = ("down", "unreachable", "degraded", "recovery")
NOTICE_DAYS = 30
MAIL_FAILING_RUNS = 2  # a primary whose mail failed this many delivery runs in a row (or intervals) is not sending
PRIMARIES = "standby.primaries"  # meta: what this standby last knew of each primary (the NOC told once per change)


def latest_notices(spec: InfluxSpec) -> dict[str, str]:
    """{site_id: kind} of the newest status notice any agent sent for each site."""
    q = (
        f'SELECT last("kind") AS "kind" FROM {influxql.ident(NOTICE)} WHERE time > now() - {NOTICE_DAYS}d '
        'GROUP BY "site_id"'
    )
    out = {}
    for s in influxql.query(spec, q):
        sid = (s.get("tags") or {}).get("site_id")
        if sid and s.get("values"):
            out[sid] = s["values"][0][1]
    return out


def gate(cfg: Config, store: Store, now: float | None = None) -> int:
    """Hold the queued mail this agent must not send; a standby taking over also queues the
    news no agent has sent and its notices to the NOC (see the module docstring). Returns how
    many mails were held."""
    spec = cfg.influx
    if spec is None:
        return 0
    now = time.time() if now is None else now
    if cfg.agent.role == "standby":
        return _standby(cfg, spec, store, now)
    due = store.outbox_due(now)
    if not due:
        return 0
    try:
        latest = latest_notices(spec)
    except influxql.QueryError as exc:
        _unknown(exc)
        return 0
    return _hold_old_news(store, due, latest)


def _unknown(exc: Exception) -> None:
    logger.warning(
        "cannot read the other agents' heartbeats and notices from InfluxDB (%s): the mail is sent as usual", exc
    )


def _hold_old_news(store: Store, due: list[dict], latest: dict[str, str]) -> int:
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


def _standby(cfg: Config, spec: InfluxSpec, store: Store, now: float) -> int:
    """A standby holds everything while a primary runs and its mail gets out; otherwise it
    sends, first the news no agent has sent (`catch_up`)."""
    try:
        seen = influxql.agents(spec)
        primaries = [a for a in seen if a.role == "primary" and a.agent != cfg.agent.id]
        sending = [a for a in primaries if a.fresh(now) and not a.mail_failing(now, MAIL_FAILING_RUNS)]
        latest = None if sending else latest_notices(spec)
    except influxql.QueryError as exc:
        _unknown(exc)
        return 0
    due = store.outbox_due(now)
    held = 0
    if sending:
        p = sending[0]
        if due:
            why = (
                f"held: the primary agent {p.agent!r} is running (heartbeat {now - p.last_ts:.0f} s ago) and "
                "sends the mail; this agent is the standby"
            )
            store.outbox_hold([r["id"] for r in due], why)
            logger.info("standby: %d mail(s) held, the primary %r is running", len(due), p.agent)
            held = len(due)
        mails = []
    else:
        assert latest is not None, "read above when no primary is sending"
        held = _hold_old_news(store, due, latest)
        pending = {tuple(n) for r in store.outbox_due(now) for n in json.loads(r.get("notes") or "[]")}
        mails = catch_up(cfg, store, latest, pending, now)
    _primaries(cfg, store, primaries, now, mails)
    return held


def catch_up(cfg: Config, store: Store, latest: dict[str, str], pending: set, now: float) -> list:
    """Mails for the news no agent has sent: each site whose hard alert state here (a notified
    problem, or up again after one) differs from the newest notice any agent sent for it, and
    that no queued mail carries already. Composed fresh from the current state (a held mail
    may be old news). Empty while the guard is raised (this agent may be blind). The sites in
    service now, with their keys now (admins, names, districts of a dated inventory): a site
    retired meanwhile gets no news, not even a recovery."""
    from wanmon.alerts.mail import compose
    from wanmon.alerts.maintenance import sites_in_maintenance
    from wanmon.model import Notification
    from wanmon.status import PROBLEMS, UP

    states, guard = store.alert_states()
    if guard:
        return []
    cfg = cfg.as_of(now)
    resting = set(sites_in_maintenance(cfg, now))
    quiet = {"unreachable": not cfg.alerts.notify_unreachable, "degraded": not cfg.alerts.notify_degraded}
    notes = []
    for s in cfg.sites:
        a = states.get(s.id)
        if a is None or a.flapping or s.id in resting:
            continue
        last = latest.get(s.id)
        if a.hard in PROBLEMS and a.notified and last != a.hard and not quiet.get(a.hard):
            n = Notification(a.hard, s.id, now, a.hard, since=a.hard_since)
        elif a.hard == UP and a.streak_status == UP and a.streak >= cfg.alerts.recover_cycles and last in PROBLEMS:
            n = Notification("recovery", s.id, now, UP, detail=f"was {last}", was=last)
        else:
            continue
        if (s.id, n.kind) not in pending:
            notes.append(n)
            logger.info("standby: site=%s kind=%s not sent by any agent yet: sent now", s.id, n.kind)
    return compose(cfg, notes, now) if notes else []


def _primaries(cfg: Config, store: Store, primaries: list, now: float, mails: list) -> None:
    """Queue `mails` with the NOC's notices about the primaries, once per change (stale and back,
    mail failing and working again), remembered in the store's meta (PRIMARIES)."""
    import dataclasses

    from wanmon.alerts.mail import primary_mails

    known = json.loads(store.meta(PRIMARIES) or "{}")
    notices = []
    for p in primaries:
        was = known.get(p.agent) or {"stale": False, "mail_failing_since": None}
        stale = not p.fresh(now)
        if stale:  # nothing known of its mail now: as it was
            failing_since = was["mail_failing_since"]
        else:
            failing_since = p.mail_failing_since if p.mail_failing(now, MAIL_FAILING_RUNS) else None
        if stale != was["stale"]:
            notices += primary_mails(cfg, "stale" if stale else "back", p, now)
            logger.warning(
                "standby: the primary agent %r %s",
                p.agent,
                "has stopped (its heartbeat is stale): this agent sends" if stale else "is running again",
            )
        if (failing_since is None) != (was["mail_failing_since"] is None):
            back = dataclasses.replace(p, mail_failing_since=was["mail_failing_since"])
            notices += primary_mails(cfg, "mail" if failing_since else "mail_back", p if failing_since else back, now)
            logger.warning(
                "standby: the primary agent %r %s",
                p.agent,
                "cannot send mail: this agent sends" if failing_since else "delivers mail again",
            )
        known[p.agent] = {"stale": stale, "mail_failing_since": failing_since}
    if mails or notices or json.dumps(known, sort_keys=True) != (store.meta(PRIMARIES) or "{}"):
        store.note_output(PRIMARIES, json.dumps(known, sort_keys=True), [*mails, *notices])


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
    lines = [
        line(NOTICE, {"site_id": sid, "agent": cfg.agent.id}, {"kind": kind}, ts, v1=v1)
        for (sid, kind), ts in sorted(seen.items(), key=lambda x: x[1])
    ]
    store.spool_points(time.time(), [x for x in lines if x])
    return len(lines)
