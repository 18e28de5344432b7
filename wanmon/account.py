"""The account: how long each site was available, down, unreachable, in maintenance or
unobserved, from its status runs. One module, so the page (every window, site, district and
level), `wanmon report`, InfluxDB's prev_*_s fields and the page from InfluxDB tell the same
figure. Pure: no I/O.

The method (also in the README and at the foot of every report):

* Each cycle's status for a site holds from the cycle's `ts` until the next cycle's `ts`,
  but never longer than the cap (`cap_s`): 2 x the agent's cadence, which is [schedule]
  icmp_interval_s, or the real spacing of the checks when cron runs them further apart
  (the median of the last ones, so one long stop does not raise it). Beyond the cap the
  time is *unobserved* (the agent was not running).
* up and degraded are available; down and unreachable are not; unknown is unobserved.
  Time in a maintenance window (any status) is excluded, shown apart.
* availability = available / observed, observed = available + down + unreachable. A
  group's figure is the sum of its sites' available time over the sum of their observed
  time (not the mean of their percentages).
* An outage is a stretch of own downtime without a break: an unobserved gap or a
  maintenance window ends it; outages crossing a period's edges are cut there. MTTR =
  downtime / outages.
* A site's time outside its service period (before `in_service_from`, from `retired_at`
  on: wanmon.dated) is *out of service*: never down, never unobserved, not in the
  availability; its runs there are not counted.
"""

from __future__ import annotations

import itertools
import math
import operator
import statistics
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from wanmon import dated
from wanmon.status import DEGRADED, DOWN, UNKNOWN, UNREACHABLE, UP

if TYPE_CHECKING:
    from wanmon.config import Site

Runs = list[tuple[str, int, float, float]]  # one site's runs [(status, maint, from, to)]

AVAILABLE = (UP, DEGRADED)
COUNTED = (UP, DEGRADED, DOWN, UNREACHABLE)  # observed; unknown is not
CADENCE_CYCLES = 10  # the spacings of the last cycles that tell the real cadence
SLOW_CADENCE = 1.5  # checks further apart than this x icmp_interval_s: said, with the fix


_FROM = operator.itemgetter(2)  # a run's start; sorting 10,000 sites' runs: 16 ms, 26 with a lambda


def held_s(last_ts: float, ts: float, cap_s: float) -> float:
    """How long a cycle's status at last_ts holds when the next one comes at ts (a clock set
    back gives 0, never a negative time)."""
    return min(max(ts - last_ts, 0.0), cap_s)


def run_goes_on(
    status: str, maint: int, last_ts: float, new_status: str, new_maint: int, ts: float, cap_s: float
) -> bool:
    """Does an observation at ts continue the run whose last cycle was at last_ts? The same status
    and maintenance flag, and not further than the cap after it (a gap, or a clock set back, ends it)."""
    return status == new_status and maint == new_maint and 0 <= ts - last_ts <= cap_s


def cadence_s(starts: Sequence[float]) -> float | None:
    """The checks' real spacing: the median of the gaps between the cycles' starts (oldest
    first), clock steps back left out. None with fewer than two cycles."""
    gaps = [b - a for a, b in itertools.pairwise(starts) if b > a]
    return statistics.median(gaps) if gaps else None


def cap_s(interval_s: float, cadence: float | None) -> float:
    """The longest one cycle's status holds: twice the slower of the configured interval and
    the checks' real cadence."""
    return 2.0 * max(interval_s, cadence or 0.0)


def slow_cadence(interval_s: float, cadence: float | None) -> bool:
    return cadence is not None and cadence > SLOW_CADENCE * interval_s


def slow_cadence_text(interval_s: float, cadence: float, where: object) -> str:
    """What `check`, `status` and the report say when checks come further apart than [schedule]
    icmp_interval_s, with the fix."""
    return (
        f"checks arrive every {cadence:.0f} s but [schedule] icmp_interval_s = {interval_s:g} in {where}: "
        f"set icmp_interval_s = {cadence:.0f} (the cron interval) so staleness and alert timing match the "
        "real cadence; availability already counts the time between checks"
    )


def slow_cadence_note(interval_s: float, cadence: float | None, where: object) -> str | None:
    """slow_cadence_text when the checks come too far apart (slow_cadence), else None."""
    if cadence is None or not slow_cadence(interval_s, cadence):
        return None
    return slow_cadence_text(interval_s, cadence, where)


def held_fields(prev: tuple[str, float, int] | None, ts: float, cap: float) -> dict[str, float]:
    """How long the site's previous cycle held, split as the account counts it: prev = (its
    status, its ts, in maintenance). Written to InfluxDB with the next cycle, since only then
    is it known: InfluxQL's sum() of these over a period gives the report's figures."""
    if prev is None:
        return {}
    status, last, maint = prev
    return held_split(status, maint, held_s(last, ts, cap))


def held_split(status: str, maint: int, held: float) -> dict[str, float]:
    """`held` seconds of one status as the prev_*_s fields count them (0 in maintenance): also
    each piece of a hold that a change of the site's keys cuts (wanmon.cycle.held_pieces)."""
    held = 0.0 if maint else held
    return {
        "prev_available_s": held if status in AVAILABLE else 0.0,
        "prev_observed_s": held if status in COUNTED else 0.0,
        "prev_down_s": held if status == DOWN else 0.0,
        "prev_unreachable_s": held if status == UNREACHABLE else 0.0,
    }


def pct(available_s: float, observed_s: float) -> float | None:
    """Availability: available over observed time, in percent (None: nothing observed)."""
    return 100.0 * available_s / observed_s if observed_s > 0 else None


@dataclass(slots=True)
class Figures:
    """Seconds in each class over the period, for one site or summed over a group."""

    available_s: float = 0.0
    down_s: float = 0.0
    unreachable_s: float = 0.0
    maintenance_s: float = 0.0
    unobserved_s: float = 0.0
    out_of_service_s: float = 0.0  # outside the site's service period: in no other class
    outages: int = 0
    longest_outage_s: float = 0.0
    sites: int = 0
    below_target: int = 0
    prev_available_s: float = 0.0
    prev_observed_s: float = 0.0

    @property
    def observed_s(self) -> float:
        return self.available_s + self.down_s + self.unreachable_s

    @property
    def availability_pct(self) -> float | None:
        return pct(self.available_s, self.observed_s)

    @property
    def previous_pct(self) -> float | None:
        return 100.0 * self.prev_available_s / self.prev_observed_s if self.prev_observed_s > 0 else None

    @property
    def mttr_s(self) -> float | None:
        return self.down_s / self.outages if self.outages else None

    def add(self, o: Figures) -> None:
        self.available_s += o.available_s
        self.down_s += o.down_s
        self.unreachable_s += o.unreachable_s
        self.maintenance_s += o.maintenance_s
        self.unobserved_s += o.unobserved_s
        self.out_of_service_s += o.out_of_service_s
        self.outages += o.outages
        self.longest_outage_s = max(self.longest_outage_s, o.longest_outage_s)
        self.prev_available_s += o.prev_available_s
        self.prev_observed_s += o.prev_observed_s


def site_figures(
    runs: list[tuple[str, int, float, float]],
    start: float,
    end: float,
    history_from: float | None = None,
) -> Figures:
    """One site's figures over [start, end) from its runs [(status, maint, from, to)]. Time before
    history_from (an upgraded store's history starts there) is not counted as unobserved."""
    return figures_over(runs, (start, end), history_from)[0]


def figures_over(
    runs: list[tuple[str, int, float, float]],
    bounds: Sequence[float],
    history_from: float | None = None,
) -> list[Figures]:
    """One site's figures over each of the consecutive windows [bounds[i], bounds[i+1]) (bounds in
    order), in one pass over its runs: each window's figures are what site_figures gives for it
    alone (an outage across an edge counts in both windows, cut there). The report asks for the
    previous period and the period, or a site's stretches, at once: one sort and one pass a site,
    not one per window. Sums in local variables, clipped with comparisons rather than min()/max()
    (10,000 sites x 3 windows: 0.09 s against 0.17)."""
    out: list[Figures] = []
    last = len(bounds) - 1
    w = 0
    start, end = bounds[0], bounds[1]
    available = down = unreachable = maintenance = 0.0
    outage_end = None
    outage_len = 0.0
    lengths: list[float] = []
    # Counted up to here: each instant counts once, also where runs overlap (a store written
    # before the clock set back was handled has such runs).
    covered = start
    # the runs in order of their start, then one that begins where the last window ends (counted
    # nowhere): it closes the windows still open
    for status, maint, a, b in itertools.chain(sorted(runs, key=_FROM), ((UNKNOWN, 0, bounds[-1], math.inf),)):
        if a < covered:
            a = covered
        if b <= a:
            continue
        covered = b
        while w < last:  # the run [a, b), cut at the windows' edges
            if a >= end:  # it begins after this window: the window is complete
                if outage_end is not None:
                    lengths.append(outage_len)
                    outage_end = None
                out.append(_window(start, end, history_from, available, down, unreachable, maintenance, lengths))
                available = down = unreachable = maintenance = 0.0
                lengths = []
                w += 1
                if w < last:
                    start, end = bounds[w], bounds[w + 1]
                continue
            e = b if b < end else end
            d = e - a
            if maint:
                maintenance += d
            elif status in AVAILABLE:
                available += d
            elif status == DOWN:
                down += d
                if outage_end is not None and abs(a - outage_end) < 1e-6:
                    outage_len += d  # touches the previous down stretch: the same outage
                else:
                    if outage_end is not None:
                        lengths.append(outage_len)
                    outage_len = d
                outage_end = e
                if b <= end:
                    break
                a = end
                continue
            elif status == UNREACHABLE:
                unreachable += d
            # unknown: unobserved (counted in _window)
            if outage_end is not None:
                lengths.append(outage_len)
                outage_end = None
            if b <= end:
                break
            a = end
        else:
            break  # past the last window: the rest begin later still
    return out


def _window(
    start: float,
    end: float,
    history_from: float | None,
    available: float,
    down: float,
    unreachable: float,
    maintenance: float,
    lengths: list[float],
) -> Figures:
    """A window's figures from its sums (figures_over): the rest of its time known is unobserved."""
    known = end - start if history_from is None else end - min(max(start, history_from), end)
    unobserved = known - (available + down + unreachable) - maintenance
    return Figures(
        available_s=available,
        down_s=down,
        unreachable_s=unreachable,
        maintenance_s=maintenance,
        unobserved_s=unobserved if unobserved > 0.0 else 0.0,
        outages=len(lengths),
        longest_outage_s=max(lengths) if lengths else 0.0,
        sites=1,
    )


def service_period(site: Site) -> tuple[float, float]:
    """The site's service period [from, to) in POSIX seconds (infinite where it is open)."""
    lo = dated.instant(site.in_service_from) if site.in_service_from is not None else dated.BEFORE
    hi = dated.instant(site.retired_at) if site.retired_at is not None else dated.AFTER
    return lo, hi


def _served(runs: Runs, start: float, end: float, lo: float, hi: float, history_from: float | None) -> Figures:
    """The figures over [start, end) of a site in service over [lo, hi): site_figures over the part in
    service, the rest out of service."""
    return _served_over(runs, (start, end), lo, hi, history_from)[0]


def _served_over(
    runs: Runs, bounds: Sequence[float], lo: float, hi: float, history_from: float | None
) -> list[Figures]:
    """_served over each of the consecutive windows [bounds[i], bounds[i+1]), in one pass: the
    windows cut to the service period [lo, hi) stay consecutive (an empty one has no figures)."""
    if lo == dated.BEFORE and hi == dated.AFTER:  # in service all along (most sites): nothing out of it
        return figures_over(runs, bounds, history_from)
    served = [min(max(t, lo), hi) for t in bounds]
    out = figures_over(runs, served, history_from)
    for f, a, b, sa, sb in zip(out, bounds, bounds[1:], served, served[1:]):
        f.out_of_service_s = (b - a) - (sb - sa)
    return out


def in_service_figures(
    runs: Runs, site: Site, start: float, end: float, history_from: float | None = None
) -> Figures | None:
    """One site's figures over [start, end), not split where its keys change: its time out of service
    in out_of_service_s. None when it is out of service for the whole period."""
    lo, hi = service_period(site)
    if max(start, lo) >= min(end, hi):
        return None
    return _served(runs, start, end, lo, hi, history_from)


class Stretch(NamedTuple):
    """A part [start, end) of a period over which a site's keys (`site`) hold, with its figures. A
    site's stretches tile the period: its time out of service before the first span and after the
    last is in the first's and the last's out_of_service_s. (A tuple: made for every site and
    stretch of a report, 20,000 at once; a frozen dataclass took four times as long to make.)"""

    start: float
    end: float
    site: Site
    figures: Figures


def stretches(
    runs: Runs,
    site: Site,
    start: float,
    end: float,
    history_from: float | None = None,
    keys: Callable[[Site], Hashable] | None = None,
    spans: Sequence[dated.Span] | None = None,
) -> list[Stretch]:
    """One site's figures over [start, end) split by its dated spans (wanmon.dated.spans: the
    stretches of constant keys), in time order; neighbours whose keys(state) are equal are one
    stretch (keys: the keys that matter to the caller; default all of them). An outage across a
    split counts in both stretches, as one across a period's edge. Empty when the site is out of
    service for the whole period. An undated site: one stretch, site_figures over the period.
    spans: dated.spans(site), when the caller has them (they cost a copy of the site per change)."""
    return stretches_over(runs, site, (start, end), history_from, keys, spans)[0]


def stretches_over(
    runs: Runs,
    site: Site,
    bounds: Sequence[float],
    history_from: float | None = None,
    keys: Callable[[Site], Hashable] | None = None,
    spans: Sequence[dated.Span] | None = None,
) -> list[list[Stretch]]:
    """stretches() over each of the consecutive periods [bounds[i], bounds[i+1]) (the report's
    previous period and its period), with one pass over the runs for all of them."""
    lo, hi = service_period(site)
    if spans is None:
        spans = dated.spans(site)
    span_keys = [keys(sp.site) if keys is not None else sp for sp in spans]  # once for all periods
    per: list[list[list]] = []  # each period's parts: [from, to, keys then, keys(keys then)]
    for start, end in itertools.pairwise(bounds):
        parts: list[list] = []
        if max(start, lo) < min(end, hi):
            for sp, k in zip(spans, span_keys, strict=True):
                if sp.end <= start or sp.start >= end:
                    continue
                if parts and keys is not None and parts[-1][3] == k:
                    parts[-1][1], parts[-1][2] = sp.end, sp.site
                else:
                    parts.append([sp.start, sp.end, sp.site, k])
        if parts:  # (none: out of service all period, or no span in it: validate reports that)
            # the first starts and the last ends with the period (time out of service there included)
            parts[0][0], parts[-1][1] = start, end
        per.append(parts)
    # The periods with parts are those that meet the service period (the spans tile it): one after
    # the other, so their parts' edges are consecutive windows, figured in one pass.
    edges = [p[0] for parts in per for p in parts]
    if not edges:
        return [[] for _ in per]
    edges.append(next(parts[-1][1] for parts in reversed(per) if parts))
    figures = iter(_served_over(runs, edges, lo, hi, history_from))
    return [[Stretch(a, b, state, next(figures)) for a, b, state, _k in parts] for parts in per]


def by_site(runs: Iterable[tuple[str, str, int, float, float]]) -> dict[str, list[tuple[str, int, float, float]]]:
    """[(site_id, status, maint, from, to)] -> {site_id: [(status, maint, from, to)]}."""
    out: dict[str, list[tuple[str, int, float, float]]] = {}
    for sid, status, maint, a, b in runs:
        out.setdefault(sid, []).append((status, maint, a, b))
    return out


def windows(
    runs: dict[str, list[tuple[str, int, float, float]]], now: float, spans: Mapping[str, float]
) -> dict[str, dict[str, tuple[float, float]]]:
    """{window: {site_id: (available_s, observed_s)}} over [now - span, now) for each window."""
    out: dict[str, dict[str, tuple[float, float]]] = {w: {} for w in spans}
    for sid, mine in runs.items():
        for w, span in spans.items():
            f = site_figures(mine, now - span, now)
            if f.observed_s:
                out[w][sid] = (f.available_s, f.observed_s)
    return out


class UpstreamCauses:
    """Whose outage made a site unreachable (the report's worst list), over the runs of by_site:
    each site's unreachable and down stretches picked out once, when first asked for (a
    report asks for each row with unreachable time, and a site split at a change has two)."""

    def __init__(self, runs: Mapping[str, list[tuple[str, int, float, float]]], parents: Mapping[str, str | None]):
        self.runs = runs
        self.parents = parents
        self._unreachable: dict[str, list[tuple[float, float]]] = {}
        self._down: dict[str, list[tuple[float, float]]] = {}

    def _stretches(self, site_id: str, down: bool) -> list[tuple[float, float]]:
        memo = self._down if down else self._unreachable
        got = memo.get(site_id)
        if got is None:
            mine = self.runs.get(site_id, ())
            if down:
                got = sorted((a, b) for status, _m, a, b in mine if status == DOWN)
            else:
                got = [(a, b) for status, maint, a, b in mine if status == UNREACHABLE and not maint]
            memo[site_id] = got
        return got

    def of(self, site_id: str, start: float, end: float) -> dict[str | None, float]:
        """{upstream site id: seconds} over [start, end). Each unreachable stretch (outside
        maintenance) goes to the nearest upstream site that was down meanwhile, walking up the
        parents; what no upstream's own downtime covers (its parent left the config, or was
        unreachable from us itself to the top) goes to None."""
        left = [(max(a, start), min(b, end)) for a, b in self._stretches(site_id, False) if min(b, end) > max(a, start)]
        out: dict[str | None, float] = {}
        seen = {site_id}
        up = self.parents.get(site_id)
        while left and up is not None and up not in seen:
            seen.add(up)
            downs = self._stretches(up, True)
            rest: list[tuple[float, float]] = []
            for a, b in left:
                for da, db in downs:
                    if db <= a or da >= b:
                        continue
                    if da > a:
                        rest.append((a, da))
                    lo, hi = max(a, da), min(b, db)
                    out[up] = out.get(up, 0.0) + hi - lo
                    a = hi
                    if a >= b:
                        break
                if a < b:
                    rest.append((a, b))
            left = rest
            up = self.parents.get(up)
        if left:
            out[None] = out.get(None, 0.0) + sum(b - a for a, b in left)
        return out
