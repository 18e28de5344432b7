"""The alert state machine: evaluate(state, statuses, now) -> (state, notifications). Pure.

Per site, per cycle:
* a problem (down, degraded, unreachable) becomes HARD after `confirm_cycles`
  consecutive cycles in that status; only hard changes notify;
* recovery after `recover_cycles` consecutive up cycles (notified only if the
  problem was);
* flapping, the Nagios way: the weighted share of state changes over the last
  `flap_window` cycles (newer changes weigh more, 0.8 -> 1.2); flapping starts
  above `flap_high_pct` and stops below `flap_low_pct`; one notice at start and
  one at end, nothing in between;
* a site UNREACHABLE because of its uplink is not a DOWN: its own admins are
  told once (`notify_unreachable`), with the upstream site that cut it off, and
  its parent's DOWN notice lists it; the parent's RECOVERY lists the sites that
  came back with it;
* reminders every `reminder_h` while a notified problem lasts;
* maintenance: state advances, nothing is notified;
* the monitor-side guard: when `guard_fraction` of all sites (at least
  `guard_min_sites`) fail in one cycle, the agent itself is probably cut off:
  no site state moves, one "agent cut off" notice goes to the NOC, and one
  "restored" notice when it ends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from wanmon.config import AlertSettings
from wanmon.model import Event, Notification, SiteAlert
from wanmon.status import DOWN, FAILING, PROBLEMS, UNKNOWN, UNREACHABLE, UP, Track, advance, root_of

GUARD_SITE = "*"  # the key of the agent-wide guard state


def flap_pct(history: str) -> float:
    """Weighted percent of state changes (Nagios): changes near the end weigh up to 1.2, the oldest 0.8."""
    n = len(history)
    if n < 2 or "1" not in history or "0" not in history:  # one state throughout: no change (most sites)
        return 0.0
    total = 0.0
    for i in range(1, n):
        if history[i] != history[i - 1]:
            total += 0.8 + 0.4 * (i - 1) / max(1, n - 2)
    return 100.0 * total / (n - 1)


def _children(parents: Mapping[str, str | None]) -> dict[str, list[str]]:
    children: dict[str, list[str]] = {}
    for s, p in parents.items():
        if p:
            children.setdefault(p, []).append(s)
    return children


def _descendants(site: str, children: Mapping[str, list[str]]) -> set[str]:
    out, todo = set(), [site]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def guard_sites(rules: AlertSettings, parents: Mapping[str, str | None]) -> list[str]:
    """The agent's own upstream: [alerts] guard_sites, or the sites without a parent."""
    return list(rules.guard_sites) if rules.guard_sites is not None else [s for s, p in parents.items() if not p]


def _guard(statuses: Mapping[str, str], rules: AlertSettings, parents: Mapping[str, str | None]) -> tuple:
    """Is the agent itself probably cut off? Only when its own upstream (guard_sites) does not
    answer: a district router down with all its communes is one root cause, however many
    sites that is, and the district's admins get their DOWN. Root causes are the down sites
    whose parent answers (a down site's unreachable children are not counted).
    Returns (raised, a log line, the silent upstream sites, the counts of Notification.counts)."""
    total = len(statuses)
    upstream = [s for s in guard_sites(rules, parents) if s in statuses and statuses[s] != UNKNOWN]
    silent = [s for s in upstream if statuses[s] in FAILING]
    roots = sum(1 for st in statuses.values() if st == DOWN)
    failing = sum(1 for st in statuses.values() if st in FAILING)
    raised = bool(upstream) and total >= rules.guard_min_sites and len(silent) >= rules.guard_fraction * len(upstream)
    detail = (
        f"{len(silent)} of {len(upstream)} upstream site(s) not answering ({', '.join(silent[:5])}); "
        f"{failing} of {total} sites failing, {roots} root cause(s)"
    )
    return raised, detail, tuple(silent), (len(silent), len(upstream), failing, total, roots)


def evaluate(
    states: Mapping[str, SiteAlert],
    statuses: Mapping[str, str],
    now: float,
    rules: AlertSettings,
    parents: Mapping[str, str | None],
    maintenance: Iterable[str] = (),
    reboots: Iterable[Event] = (),
    guard_active: bool = False,
) -> tuple[dict[str, SiteAlert], list[Notification], bool]:
    """One cycle. Returns (new states, notifications, guard active)."""
    quiet = set(maintenance)
    out: dict[str, SiteAlert] = dict(states)
    notes: list[Notification] = []

    cut_off, detail, silent, counts = _guard(statuses, rules, parents)
    if cut_off:
        if not guard_active:
            notes.append(Notification("guard", None, now, detail=detail, children=silent, counts=counts))
        return out, notes, True  # nothing moves while the agent may be blind
    if guard_active:
        notes.append(Notification("guard_end", None, now, detail=detail, counts=counts))

    cap, calm = max(rules.confirm_cycles, rules.recover_cycles), "0" * rules.flap_window
    for sid, status in statuses.items():
        if status == UNKNOWN:
            continue
        prev = out.get(sid)
        if (
            status == UP
            and prev is not None
            and prev.hard == UP
            and prev.streak_status == UP
            and prev.streak >= cap
            and prev.history == calm
            and not prev.flapping
        ):
            continue  # up again after a calm stretch: _step would change nothing (most sites, most cycles)
        prev = prev or SiteAlert(site_id=sid, streak_since=now)
        out[sid], new = _step(prev, status, now, rules, sid in quiet)
        notes.extend(new)

    if any(n.kind in _GROUPED for n in notes):
        notes = _group(notes, states, out, statuses, parents)
    if not rules.notify_unreachable:
        notes = [n for n in notes if n.kind != "unreachable"]
    if not rules.notify_degraded:
        notes = [n for n in notes if n.kind != "degraded"]
    if rules.notify_reboot:
        notes.extend(
            Notification("reboot", e.site_id, now, detail=e.detail, uptimes=_uptimes(e))
            for e in reboots
            if e.site_id not in quiet
        )
    return out, notes, False


_GROUPED = ("down", "reminder", "unreachable", "recovery")


def _group(
    notes: list[Notification],
    before: Mapping[str, SiteAlert],
    after: Mapping[str, SiteAlert],
    statuses: Mapping[str, str],
    parents: Mapping[str, str | None],
) -> list[Notification]:
    """Tie each outage to its root cause, so that a mail says it once:
    * a DOWN (and its reminder) lists the sites it makes unreachable; those get no DOWN;
    * an UNREACHABLE names the upstream site that cut it off (the nearest one down) and since when;
    * the RECOVERY of a site that was down lists the sites that were unreachable behind it and
      recovered in the same cycle, and each of their recoveries names it as the cause."""
    children = _children(parents)
    out = list(notes)
    back_with: dict[str, str] = {}  # site back this cycle -> the root cause whose recovery lists it
    for i, n in enumerate(out):
        if not n.site_id:
            continue
        if n.kind in ("down", "reminder") and n.status == DOWN:
            below = sorted(d for d in _descendants(n.site_id, children) if statuses.get(d) == UNREACHABLE)
            if below:
                out[i] = dataclasses.replace(n, children=tuple(below))
        elif n.kind == "recovery" and n.was == DOWN:
            below = sorted(
                d
                for d in _descendants(n.site_id, children)
                if d in before and before[d].hard == UNREACHABLE and d in after and after[d].hard == UP
            )
            if below:
                out[i] = dataclasses.replace(n, children=tuple(below))
                back_with.update(dict.fromkeys(below, n.site_id))
    for i, n in enumerate(out):
        if n.kind == "unreachable" and n.site_id:
            root = root_of(n.site_id, statuses.get, parents.get)
            if root is not None:
                out[i] = dataclasses.replace(n, cause=root, cause_since=_down_since(after.get(root)))
        elif n.kind == "recovery" and n.was == UNREACHABLE and n.site_id in back_with:
            root = back_with[n.site_id]
            out[i] = dataclasses.replace(n, cause=root, cause_since=before[root].hard_since if root in before else None)
    return out


def _down_since(a: SiteAlert | None) -> float | None:
    """Since when a site that is down now has been: its hard problem's start, or its streak's."""
    if a is None:
        return None
    if a.hard == DOWN and a.hard_since is not None:
        return a.hard_since
    return a.streak_since if a.streak_status == DOWN else None


def _uptimes(e: Event) -> tuple[float | None, ...]:
    """A reboot event's (uptime at the previous poll, uptime now); () for events from before they had figures."""
    d = e.data or {}
    return (d.get("uptime_was_s"), d["uptime_s"]) if "uptime_s" in d else ()


def _step(
    a: SiteAlert, status: str, now: float, rules: AlertSettings, quiet: bool
) -> tuple[SiteAlert, list[Notification]]:
    notes: list[Notification] = []
    bad = status in PROBLEMS
    history = (a.history + ("1" if bad else "0"))[-rules.flap_window :]
    # The streak is the site's status track (status.advance), counted up to the largest
    # threshold it is compared with, no further: a site that stays up keeps the same state
    # from cycle to cycle (only changed states are stored).
    # every state the engine makes has one: evaluate() starts a site with streak_since=now
    assert a.streak_since is not None, f"alert state of {a.site_id} without streak_since"
    track = advance(
        Track(a.streak_status, a.streak_since, a.streak),
        status,
        now,
        cap=max(rules.confirm_cycles, rules.recover_cycles),
    )
    streak, streak_since = track.cycles, track.since
    if a.hard_since is not None and a.hard_since > now:  # the clock set back: as the streak, not after now
        a = dataclasses.replace(a, hard_since=now)
    if (history, streak, streak_since) != (a.history, a.streak, a.streak_since) or status != a.streak_status:
        a = dataclasses.replace(a, history=history, streak_status=status, streak=streak, streak_since=streak_since)

    pct = flap_pct(history)
    if not a.flapping and len(history) >= rules.flap_window and pct >= rules.flap_high_pct:
        a = dataclasses.replace(a, flapping=True)
        if not quiet:
            notes.append(
                Notification("flap_start", a.site_id, now, status, detail=f"{pct:.0f}% state change", value=pct)
            )
    elif a.flapping and pct < rules.flap_low_pct:
        a = dataclasses.replace(a, flapping=False)
        if not quiet:
            notes.append(Notification("flap_end", a.site_id, now, status, detail=f"{pct:.0f}% state change", value=pct))

    speak = not quiet and not a.flapping
    if bad and status != a.hard and streak >= rules.confirm_cycles:
        # A new hard problem (or a change of kind, e.g. degraded -> down).
        a = dataclasses.replace(a, hard=status, hard_since=streak_since if a.hard == UP else a.hard_since)
        if speak:
            notes.append(Notification(status, a.site_id, now, status, since=a.hard_since))
            a = dataclasses.replace(a, notified=True, last_notified=now)
    elif not bad and a.hard != UP and streak >= rules.recover_cycles:
        if speak and a.notified:
            notes.append(
                Notification(
                    "recovery",
                    a.site_id,
                    now,
                    status,
                    since=a.hard_since,
                    detail=f"was {a.hard}",
                    was=a.hard,
                    back_ts=streak_since,
                )
            )
        a = dataclasses.replace(a, hard=UP, hard_since=None, notified=False, last_notified=None)
    elif (
        a.hard not in (UP, UNREACHABLE)
        and a.notified
        and speak
        and rules.reminder_h > 0
        and a.last_notified is not None
        and now - a.last_notified >= rules.reminder_h * 3600
    ):
        notes.append(Notification("reminder", a.site_id, now, a.hard, since=a.hard_since))
        a = dataclasses.replace(a, last_notified=now)
    return a, notes
