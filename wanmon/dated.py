"""The dated inventory: a site keeps its id for life; its other keys change at instants.

A site in sites.toml is its keys as first written, plus (all optional):

- `in_service_from`: the instant it entered service (before it: "not in service", never down);
- `retired_at`: the instant it left service (after it: history kept, never down);
- `[[sites.changes]]`: from `at` on, the keys given hold (name, level, district, parent,
  address, admins, contact, snmp); `unset = ["parent", ...]` removes optional keys.

`Timeline` turns that into the inventory valid at an instant: `at(ts)` is the `Epoch` holding
ts, a stretch of time over which no key and no service period changes. Epochs are built on
demand and cached, each from the nearest cached one before it (10,000 sites with a change
each: one copy of the site list per epoch asked for, never a rebuild per site per call).

Pure: no I/O, no clock; config.py validates the file and builds one Timeline per Config.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # config imports this module: only the names, never at run time
    from wanmon.config import Site, SiteChange

BEFORE = -math.inf  # the start of the first epoch: "always, until the first instant"
AFTER = math.inf

# Keys a change may remove with `unset` (the others are required of every site).
UNSETTABLE = ("district", "parent", "contact", "snmp", "admins")
# Keys a change may set; the rest of a site's keys (id, in_service_from, retired_at, changes) are for life.
CHANGEABLE = ("name", "level", "district", "parent", "address", "admins", "contact", "snmp")


def instant(dt: datetime) -> float:
    """A TOML offset date-time as the POSIX seconds that the store's timestamps use."""
    return dt.timestamp()


def apply(site: Site, change: SiteChange) -> Site:
    """The site's keys after one change: the keys it gives replace, `unset` removes; a change's
    `snmp` table updates the site's (the keys it does not give stay)."""
    update: dict[str, Any] = {}
    for key in CHANGEABLE:
        value = getattr(change, key)
        if value is None:
            continue
        if key == "snmp" and site.snmp is not None:
            value = site.snmp.model_copy(update=value.model_dump(exclude_none=True))
        update[key] = value
    for key in change.unset:
        update[key] = () if key == "admins" else None
    return site.model_copy(update=update)


@dataclass(frozen=True, slots=True)
class Span:
    """One stretch of a site's life with one set of keys: [start, end), inside its service period.
    change: the index of the change that began it (None: the site's own keys)."""

    start: float
    end: float
    site: Site
    change: int | None


def constant(site: Site) -> bool:
    """Whether the site is the same all its life: no change, in service always."""
    return not site.changes and site.in_service_from is None and site.retired_at is None


def spans(site: Site, states: Sequence[Site] | None = None) -> list[Span]:
    """The site's life as stretches of constant keys, clipped to its service period (empty when
    the period is empty: validate says so). states: the site after each of its changes, when
    the caller has them already (config's validation: 10,000 copies fewer)."""
    if constant(site):
        return [Span(BEFORE, AFTER, site, None)]  # most sites, most of the time
    lo = instant(site.in_service_from) if site.in_service_from is not None else BEFORE
    hi = instant(site.retired_at) if site.retired_at is not None else AFTER
    out: list[Span] = []
    state, start, index = site, BEFORE, None
    for k, ch in enumerate(site.changes):
        t = instant(ch.at)
        if t > start:
            out.append(Span(start, t, state, index))
        state, start, index = (apply(state, ch) if states is None else states[k]), t, k
    out.append(Span(start, AFTER, state, index))
    if lo == BEFORE and hi == AFTER:
        return out
    clipped = [Span(max(s.start, lo), min(s.end, hi), s.site, s.change) for s in out]
    return [s for s in clipped if s.start < s.end]


@dataclass(frozen=True, slots=True)
class Epoch:
    """The inventory over [start, end): every site with the keys valid then (file order), and
    those in service."""

    start: float
    end: float
    sites: tuple[Site, ...]
    active: tuple[Site, ...]
    by_id: dict[str, Site] = field(repr=False)
    _active_ids: frozenset[str] = field(repr=False)

    def in_service(self, site_id: str) -> bool:
        return site_id in self._active_ids


class Timeline:
    """The inventory through time, from the sites as written (config.Config.timeline)."""

    def __init__(self, sites: Sequence[Site], states: Mapping[str, Sequence[Site]] | None = None):
        """states: {site id: the site after each of its changes}, when the caller has them (the
        config's validation made them: an epoch then takes them instead of applying again)."""
        self.base = tuple(sites)
        self._states = states or {}
        self.base_by_id = {s.id: s for s in self.base}
        # instant -> [(site index, what)]: what is a change index, "in" or "out"
        events: dict[float, list[tuple[int, int | str]]] = {}
        self.labels: dict[float, str] = {}  # instant -> as written in the file
        for i, s in enumerate(self.base):
            if s.in_service_from is not None:
                self._event(events, s.in_service_from, (i, "in"))
            if s.retired_at is not None:
                self._event(events, s.retired_at, (i, "out"))
            for k, ch in enumerate(s.changes):
                self._event(events, ch.at, (i, k))
        self.instants: tuple[float, ...] = tuple(sorted(events))
        self._events = [events[t] for t in self.instants]
        self._cache: dict[int, Epoch] = {}
        self._spans: dict[str, tuple[Site, list[Span]]] = {}  # site id -> (the site asked for, its spans)
        self._first = self._epoch0()

    def site_spans(self, site: Site) -> list[Span]:
        """spans(site) with the states the config's validation made (no change applied again),
        worked out once per site (validation asks, then each report)."""
        got = self._spans.get(site.id)
        if got is None or got[0] is not site:
            got = self._spans[site.id] = (site, spans(site, self._states.get(site.id)))
        return got[1]

    def _event(self, events: dict, dt: datetime, what: tuple[int, int | str]) -> None:
        t = instant(dt)
        got = events.get(t)
        if got is None:  # a new instant: its text as written (a reform: one for 10,000 changes)
            events[t] = [what]
            self.labels[t] = dt.isoformat()
        else:
            got.append(what)

    @property
    def dated(self) -> bool:
        """Whether anything in the file changes with time."""
        return bool(self.instants)

    def _epoch0(self) -> Epoch:
        end = self.instants[0] if self.instants else AFTER
        active = [s.in_service_from is None for s in self.base]
        return self._make(BEFORE, end, list(self.base), active)

    def _make(self, start: float, end: float, states: list[Site], active: list[bool]) -> Epoch:
        on = tuple(s for s, a in zip(states, active, strict=True) if a)
        return Epoch(start, end, tuple(states), on, {s.id: s for s in states}, frozenset(s.id for s in on))

    def at(self, ts: float) -> Epoch:
        """The inventory valid at ts (POSIX seconds): a change at `at` holds from that instant on."""
        k = bisect.bisect_right(self.instants, ts)
        if k == 0:
            return self._first
        hit = self._cache.get(k)
        if hit is not None:
            return hit
        below = [j for j in self._cache if j < k]
        j = max(below, default=0)
        src = self._cache[j] if j else self._first
        states = list(src.sites)
        active = [src.in_service(s.id) for s in states]
        for m in range(j, k):
            for i, what in self._events[m]:
                if what == "in":
                    active[i] = True
                elif what == "out":
                    active[i] = False
                else:
                    assert isinstance(what, int)
                    made = self._states.get(self.base[i].id)
                    states[i] = made[what] if made is not None else apply(states[i], self.base[i].changes[what])
        end = self.instants[k] if k < len(self.instants) else AFTER
        epoch = self._make(self.instants[k - 1], end, states, active)
        self._cache[k] = epoch
        return epoch

    def epochs(self, start: float = BEFORE, end: float = AFTER) -> Iterable[Epoch]:
        """The epochs that overlap [start, end), in time order."""
        ts = start
        while ts < end:
            e = self.at(ts)
            yield e
            ts = e.end

    def changed(self, start: float, end: float) -> dict[str, list[float]]:
        """{site id: its instants in (start, end]} for the sites whose keys or service change then:
        the only ones a stretch of time ending at `end` may have to split (one lookup when none do)."""
        lo = bisect.bisect_right(self.instants, start)
        hi = bisect.bisect_right(self.instants, end)
        out: dict[str, list[float]] = {}
        for k in range(lo, hi):
            for i, _ in self._events[k]:
                out.setdefault(self.base[i].id, []).append(self.instants[k])
        return out

    def pieces(self, site_id: str, start: float, end: float) -> list[tuple[float, float, Site]]:
        """[start, end) of one site's life cut where its keys change, inside its service period:
        [(from, to, its keys then)], in time order (empty outside the period). From the cached
        epochs: no key is applied again, however many sites ask."""
        out: list[tuple[float, float, Site]] = []
        for e in self.epochs(start, end) if start < end else ():
            if not e.in_service(site_id):
                continue
            a, b, keys = max(e.start, start), min(e.end, end), e.by_id[site_id]
            if out and out[-1][2] is keys and out[-1][1] == a:  # another site's change: one piece
                out[-1] = (out[-1][0], b, keys)
            else:
                out.append((a, b, keys))
        return out
