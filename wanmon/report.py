"""Availability reports over a period (`wanmon report`): per level, per district, per site.

The figures are the account's (wanmon/account.py, where the method is written down): the
page, InfluxDB's fields and this report tell the same figure.

Pure computation (`compute`) on the runs; reading the store, the period arguments and
the output formats around it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from json.encoder import encode_basestring as _json_str  # json's own (C) string encoder, ensure_ascii=False
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from wanmon import account, dated
from wanmon.account import Figures
from wanmon.config import LEVELS, Config, Site
from wanmon.errors import WanmonError
from wanmon.status import below, children_of

if TYPE_CHECKING:  # wanmon.words is imported where the text is written
    from wanmon.words import Fmt, ReportWords

FORMATS = ("html", "pdf", "xlsx", "csv", "json")  # also the order of the page's links to the archive
# --grouping, the default first: "then" counts each stretch under the keys valid then, "now" the
# whole period under today's (README: Availability reports)
GROUPINGS = ("then", "now")

NAME_CAP = 120  # characters of a name shown in the HTML and PDF (CSV, JSON and xlsx keep it whole)
WORST_N = 10  # the first page's worst sites
SUMMARY_DISTRICTS = 20  # the first page lists every district up to this many, else the ones below target


class PeriodError(WanmonError):
    """A bad period argument (exit 2)."""


# -- the period -----------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    start: datetime  # aware
    end: datetime  # aware, exclusive
    kind: str  # month | quarter | year | range
    label: str  # 2026-11, 2026-Q4, 2026, or from–to
    cut_at_now: bool = False

    @property
    def tz(self) -> tzinfo:
        """The period's time zone: [page] timezone, or the offset given with --from."""
        tz = self.start.tzinfo
        assert tz is not None, "a period's start is aware"
        return tz

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


# Reports cover years 1970 to 9999: before 1970 nothing was observed (timestamps are Unix
# time), and Python's datetime ends with 9999 (`--year 0001` was a traceback).
YEARS = (1970, 9999)


def _check_year(y: int, opt: str, text: str) -> None:
    if not YEARS[0] <= y <= YEARS[1]:
        raise PeriodError(f"{opt} {text}: the year must be from {YEARS[0]} to {YEARS[1]}")


def _end_of_time(tz: tzinfo) -> datetime:
    """Where a period that ends after 9999 stops: such a period is cut at now anyway."""
    return datetime.max.replace(tzinfo=tz)


def _month_start(y: int, m: int, tz: tzinfo) -> datetime:
    y, m = y + (m - 1) // 12, (m - 1) % 12 + 1
    return datetime(y, m, 1, tzinfo=tz) if y <= YEARS[1] else _end_of_time(tz)


def _calendar(kind: str, y: int, first_month: int, months: int, label: str, tz: ZoneInfo) -> Period:
    return Period(_month_start(y, first_month, tz), _month_start(y, first_month + months, tz), kind, label)


def _when(text: str, opt: str, tz: ZoneInfo, end: bool) -> datetime:
    """ISO 8601 with an offset, or without one (then in [page] timezone); a bare date is its
    midnight, and for --to the midnight after it (the day is included)."""
    if y := re.match(r"(\d{4})-", text):
        _check_year(int(y.group(1)), opt, text)
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            d = date.fromisoformat(text)
            if end and d == date.max:
                return _end_of_time(tz)
            return datetime(d.year, d.month, d.day, tzinfo=tz) + (timedelta(days=1) if end else timedelta())
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise PeriodError(
            f"{opt} {text!r} is not a date or time: use ISO 8601, e.g. 2026-11-01 or 2026-11-01T00:00:00+07:00"
        ) from None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=tz)


def parse_period(
    tz: ZoneInfo,
    now: float,
    month: str | None = None,
    quarter: str | None = None,
    year: str | None = None,
    frm: str | None = None,
    to: str | None = None,
) -> Period:
    """The report's period from the command's options (default: the previous calendar month in tz).
    A period still running is cut at now; one that has not begun is an error."""
    given = [o for o, v in (("--month", month), ("--quarter", quarter), ("--year", year)) if v]
    if len(given) > 1 or (given and (frm or to)):
        raise PeriodError(
            f"give one period: {', '.join(given + (['--from/--to'] if frm or to else []))} were given together"
        )
    nowdt = datetime.fromtimestamp(now, tz)
    if month:
        m = re.fullmatch(r"(\d{4})-(\d{1,2})", month)
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise PeriodError(f"--month {month!r}: give a year and a month 01 to 12, e.g. 2026-11")
        y, mo = int(m.group(1)), int(m.group(2))
        _check_year(y, "--month", month)
        p = _calendar("month", y, mo, 1, f"{y}-{mo:02d}", tz)
    elif quarter:
        m = re.fullmatch(r"(\d{4})-?[Qq]([1-4])", quarter)
        if not m:
            raise PeriodError(f"--quarter {quarter!r}: give a year and a quarter 1 to 4, e.g. 2026-Q4")
        y, q = int(m.group(1)), int(m.group(2))
        _check_year(y, "--quarter", quarter)
        p = _calendar("quarter", y, 3 * q - 2, 3, f"{y}-Q{q}", tz)
    elif year:
        if not re.fullmatch(r"\d{4}", year):
            raise PeriodError(f"--year {year!r}: give a year, e.g. 2026")
        _check_year(int(year), "--year", year)
        p = _calendar("year", int(year), 1, 12, year, tz)
    elif frm or to:
        if not frm:
            raise PeriodError("--to needs --from (the start of the period)")
        start = _when(frm, "--from", tz, end=False)
        end = _when(to, "--to", tz, end=True) if to else nowdt
        if start >= end:
            raise PeriodError(f"--from {frm} is not before --to {to or 'now'}: the period is empty")
        p = Period(start, end, "range", f"{start.isoformat(timespec='minutes')} – {end.isoformat(timespec='minutes')}")
    else:
        first = nowdt.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        prev = first - timedelta(days=1)
        p = _calendar("month", prev.year, prev.month, 1, f"{prev.year}-{prev.month:02d}", tz)
    if p.start >= nowdt:
        raise PeriodError(f"the period {p.label} has not begun yet (now is {nowdt.isoformat(timespec='minutes')})")
    if p.end > nowdt:
        p = Period(p.start, nowdt, p.kind, p.label, cut_at_now=True)
    return p


def previous(p: Period) -> Period:
    """The period before: the previous month, quarter or year; for a range, as long, just before."""
    tz = p.tz
    if p.kind in ("month", "quarter", "year"):
        months = {"month": 1, "quarter": 3, "year": 12}[p.kind]
        start = _month_start(p.start.year, p.start.month - months, tz)
        label = {
            "month": f"{start.year}-{start.month:02d}",
            "quarter": f"{start.year}-Q{(start.month + 2) // 3}",
            "year": f"{start.year}",
        }[p.kind]
        return Period(start, p.start, p.kind, label)
    start = p.start - (p.end - p.start)
    return Period(
        start, p.start, "range", f"{start.isoformat(timespec='minutes')} – {p.start.isoformat(timespec='minutes')}"
    )


# -- the figures ------------------------------------------------------------------


@dataclass
class SiteRow:
    """A site's row: its keys over [start, end), the part of the period it covers (the whole period,
    unless its keys changed inside it and the report is grouped "then")."""

    id: str
    name: str
    level: str
    district: str | None
    figures: Figures
    start: float = 0.0
    end: float = 0.0
    served: tuple[float, float] = (-math.inf, math.inf)  # its service period (wanmon.account.service_period)


@dataclass
class Worst:
    """One of the first page's worst sites, and why: its own outages, and how many sites behind it
    were unreachable because of them; or, for a site mostly unreachable whose upstream cause is
    not known (its parent left the config), that it was cut off from upstream."""

    row: SiteRow
    behind: int  # sites whose unreachable time was mostly this site's downtime
    cut_off: bool  # mostly unreachable, no known upstream site down meanwhile


@dataclass
class Report:
    period: Period
    prev: Period
    generated: float
    target_pct: float
    cap_s: float
    sites: list[SiteRow]
    levels: list[tuple[str, Figures]]
    districts: list[tuple[str, Figures]]
    total: Figures
    language: str = "vi"
    province: str = ""
    notes: list[str] = field(default_factory=list)  # what the reader must know to trust the figures
    history_from: float | None = None  # set when the period begins before an upgraded store's history
    worst: list[Worst] = field(default_factory=list)
    grouping: str = "then"  # GROUPINGS
    level_words: dict[str, str] = field(default_factory=dict)  # the levels' names (words.level_names)

    def words(self) -> ReportWords:
        """The report's words in its language, the levels named as the page names them then
        ([page.level_names]: one definition for page and report)."""
        from wanmon.words import LEVEL_NAMES, REPORT

        w: ReportWords = {**REPORT[self.language]}
        w["levels"] = self.level_words or {lv: n.name for lv, n in LEVEL_NAMES[self.language].items()}
        return w

    def met(self, f: Figures) -> bool | None:
        """The target met (availability at or above it); None when nothing was observed."""
        pct = f.availability_pct
        return None if pct is None else pct >= self.target_pct

    def summary_districts(self) -> tuple[list[tuple[str, Figures]], int]:
        """The first page's districts: all of them up to SUMMARY_DISTRICTS, else the ones below
        target, worst first, up to that many; and how many are left out."""
        if len(self.districts) <= SUMMARY_DISTRICTS:
            return self.districts, 0
        below = sorted((d for d in self.districts if self.met(d[1]) is False), key=lambda d: d[1].availability_pct or 0)
        shown = below[:SUMMARY_DISTRICTS]
        return shown, len(self.districts) - len(shown)

    def history_note(self) -> str | None:
        """Where history starts and why, when the period begins before it."""
        if self.history_from is None:
            return None
        from wanmon.words import REPORT, Fmt

        fmt = Fmt(self.language, self.period.tz)
        return REPORT[self.language]["history_from"].format(t=fmt.dt(self.history_from))


def _report_keys(s: Site) -> tuple[str, str, str | None]:
    """The keys a report row is counted under: a change of another key (address, admins, ...) does
    not split the period."""
    return (s.name, s.level, s.district)


def _districts_in_order(sites) -> list[str]:
    """The groups as the inventory lists them (wanmon.inventory: first appearance in file order)."""
    return list(dict.fromkeys(s.district for s in sites if s.district))


def compute(
    cfg: Config,
    runs: list[tuple[str, str, int, float, float]],
    labels: dict[str, tuple],
    period: Period,
    prev: Period,
    now: float,
    cap_s: float,
    history_from: float | None = None,
    grouping: str = GROUPINGS[0],
) -> Report:
    """The report from the runs [(site_id, status, maint, from, to)] of both periods (prev: the one
    just before, previous(period)). history_from: where an upgraded store's history starts (meta
    history_from; before it, only hourly rollups).

    grouping (a dated inventory, wanmon.dated): "then" counts each stretch of a site's time under
    the name, level and group valid then (a site whose keys change inside the period has one row
    per stretch); "now" counts the whole period under the keys valid at `now` (a retired site: its
    last keys). A site out of service for the whole period is not a row. The previous period's
    figure of a group is that period's, grouped the same way."""
    if grouping not in GROUPINGS:
        raise ValueError(grouping)
    by_site = account.by_site(runs)
    start, end = period.start.timestamp(), period.end.timestamp()
    p_start, p_end = prev.start.timestamp(), prev.end.timestamp()
    # the previous period ends where the period starts: a site's runs are figured over both in one pass
    assert p_end == start, "prev is the period just before (previous(period))"
    bounds = (p_start, start, end)
    if history_from is not None and history_from <= start:
        history_from = None  # the whole period is history: nothing to say
    target = cfg.report.target_pct
    changes = cfg.timeline.dated
    split = changes and grouping == "then"
    today = cfg.at(now) if changes and grouping == "now" else None
    last = cfg.at(math.nextafter(end, -math.inf)) if changes else None  # the inventory at the period's end

    rows: list[SiteRow] = []
    # a dated inventory: the previous period's figures, grouped the same way (level, group,
    # available_s, observed_s); and (now) whether a site is counted under keys it did not have then
    before: list[tuple[str, str | None, float, float]] = []
    regrouped = False

    def under_target(f: Figures) -> int:
        return int(f.availability_pct is not None and f.availability_pct < target)

    for s in cfg.sites:
        mine = by_site.get(s.id, [])
        if not changes or (split and dated.constant(s)):
            # the fast path: a site in service all along under one set of keys, one row under them
            pf, f = account.figures_over(mine, bounds, history_from)  # (prev: its available, observed)
            f.prev_available_s, f.prev_observed_s = pf.available_s, pf.observed_s
            f.below_target = under_target(f)
            rows.append(SiteRow(s.id, s.name, s.level, s.district, f, start, end))
            if changes:
                before.append((s.level, s.district, pf.available_s, pf.observed_s))
            continue
        if split:
            spans = cfg.timeline.site_spans(s)
            was, cur = account.stretches_over(mine, s, bounds, history_from, _report_keys, spans)
            old = [(x.site, x.figures) for x in was]
        else:
            assert today is not None, "a dated inventory, grouped now"
            keys = today.by_id[s.id]
            whole = account.in_service_figures(mine, s, start, end, history_from)
            whole_prev = account.in_service_figures(mine, s, p_start, p_end)
            cur = [] if whole is None else [account.Stretch(start, end, keys, whole)]
            old = [] if whole_prev is None else [(keys, whole_prev)]
            if today is not None and s.changes and cur and not regrouped:
                regrouped = any(
                    _report_keys(sp.site) != _report_keys(keys)
                    for sp in cfg.timeline.site_spans(s)
                    if sp.start < end and sp.end > start
                )
        pa = sum(f.available_s for _k, f in old)
        po = sum(f.observed_s for _k, f in old)
        served = account.service_period(s)
        for a, b, keys, f in cur:
            f.prev_available_s, f.prev_observed_s = pa, po
            f.below_target = under_target(f)
            rows.append(SiteRow(s.id, keys.name, keys.level, keys.district, f, a, b, served))
        before.extend((k.level, k.district, f.available_s, f.observed_s) for k, f in old)
    known_rows = len(rows)
    # sites no longer in the config that were observed in the period still count
    for sid in sorted(set(by_site) - {s.id for s in cfg.sites}):
        name, level, district = labels.get(sid, (sid, "province", None))
        level = level if level in LEVELS else "province"
        mine = by_site[sid]
        pf, f = account.figures_over(mine, bounds, history_from)  # (prev: its available, observed)
        if not (f.observed_s or f.maintenance_s):
            continue
        f.prev_available_s, f.prev_observed_s = pf.available_s, pf.observed_s
        f.below_target = under_target(f)
        rows.append(SiteRow(sid, name, level, district, f, start, end))
        before.append((level, district, pf.available_s, pf.observed_s))

    levels, groups, total = _sums(rows, before if changes else None, target)
    # the inventory's order at the relevant time (now; the period's end), then the groups that no
    # longer exist then, as they come (file order, time order), then those of sites left out
    ref = today.active if today is not None else last.active if last is not None else cfg.sites
    order = _districts_in_order(ref)
    seen = set(order)
    for r in rows[:known_rows]:
        if r.district and r.district not in seen:
            seen.add(r.district)
            order.append(r.district)
    dist_list = [(d, groups[d]) for d in order if d in groups] + [
        (d, g) for d, g in sorted(groups.items()) if d not in seen
    ]
    rows.sort(key=_worst_first)
    parents = {s.id: s.parent for s in (last.sites if last is not None else cfg.sites)}
    worst = _worst(rows, by_site, parents)
    from wanmon.words import level_names

    rep = Report(
        period,
        prev,
        now,
        target,
        cap_s,
        rows,
        [(lv, levels[lv]) for lv in LEVELS],
        dist_list,
        total,
        language=cfg.page.language,
        province=cfg.page.province,
        history_from=history_from,
        worst=worst,
        grouping=grouping,
        # the levels' names of the tree the rows are grouped by: today's (now), else the period's last
        level_words={
            lv: n.name
            for lv, n in level_names(cfg, now if grouping == "now" else min(end, now) - 1e-3, cfg.page.language).items()
        },
    )
    if note := _grouping_note(rep, start, regrouped):
        rep.notes.append(note)
    return rep


def _sums(
    rows: list[SiteRow], before: list[tuple[str, str | None, float, float]] | None, target: float
) -> tuple[dict[str, Figures], dict[str, Figures], Figures]:
    """The rows (a site's rows one after the other) summed per level, per group and over all; a site
    counted once in each (one split at a change may have two rows in one), and below target in
    each when its time there is (a stretch below target inside a period above it is not a site
    below target).
    before: the previous period's figures grouped the same way (a dated inventory); None: each
    row's own (its site's)."""
    levels = {lv: Figures() for lv in LEVELS}
    groups: dict[str, Figures] = {}
    total = Figures()

    def sums_of_group(district: str) -> Figures:
        g = groups.get(district)
        if g is None:
            g = groups[district] = Figures()
        return g

    def sums_of(level: str, district: str | None) -> list[Figures]:
        return [levels[level], total, sums_of_group(district)] if district else [levels[level], total]

    # the rows' time summed per (level, group) first, then into the sums (one addition a row, not
    # one per sum); with the sites counted, and their verdicts, where a site's verdict is its own
    acc: dict[tuple[str, str | None], Figures] = {}
    n = len(rows)
    i = 0
    while i < n:
        r = rows[i]
        j = i + 1
        while j < n and rows[j].id == r.id:
            j += 1
        if j == i + 1:  # one row (most sites): its own verdict is the site's in each sum
            f = r.figures
            key = (r.level, r.district)
            a = acc.get(key)
            if a is None:
                a = acc[key] = Figures()
            a.add(f)
            a.sites += 1
            a.below_target += f.below_target
        else:  # split at a change: the site's time in each sum, judged whole there
            tot_a = tot_o = 0.0
            there: dict[tuple[str, str], list[float]] = {}  # (kind, level or group) -> its available, observed
            for x in rows[i:j]:
                xf = x.figures
                key = (x.level, x.district)
                a = acc.get(key)
                if a is None:
                    a = acc[key] = Figures()
                a.add(xf)  # its time, into the sums with the others' (its count and verdict: below)
                av, ob = xf.available_s, xf.observed_s
                tot_a += av
                tot_o += ob
                for k in (("level", x.level), ("group", x.district)) if x.district else (("level", x.level),):
                    t = there.get(k)
                    if t is None:
                        there[k] = [av, ob]
                    else:
                        t[0] += av
                        t[1] += ob
            for g, av, ob in [(total, tot_a, tot_o)] + [
                (levels[name] if kind == "level" else sums_of_group(name), av, ob)
                for (kind, name), (av, ob) in there.items()
            ]:
                g.sites += 1
                a_pct = account.pct(av, ob)
                g.below_target += int(a_pct is not None and a_pct < target)
        i = j
    for (level, district), a in acc.items():  # each level and group's sites, into its sums
        for g in sums_of(level, district):
            g.add(a)
            g.sites += a.sites
            g.below_target += a.below_target
    if before is not None:
        for g in (*levels.values(), *groups.values(), total):
            g.prev_available_s = g.prev_observed_s = 0.0
        for level, district, pa, po in before:
            for h in (levels[level], groups.get(district) if district else None, total):
                if h is not None:
                    h.prev_available_s += pa
                    h.prev_observed_s += po
    return levels, groups, total


SPLIT_SHOWN = 5  # instants named in the note of a period split (then view); the rest counted


def _grouping_note(rep: Report, start: float, regrouped: bool) -> str | None:
    """What the reader must know about the grouping: where the period is split (then), or that sites
    are counted under keys they did not have in the period (now)."""
    from wanmon.words import Fmt

    w = rep.words()
    fmt = Fmt(rep.language, rep.period.tz)
    if rep.grouping == "now":
        return w["now_note"].format(t=fmt.dt(rep.generated)) if regrouped else None
    cuts = sorted({r.start for r in rep.sites if r.start > start})
    if not cuts:
        return None
    text = ", ".join(fmt.dt(t) for t in cuts[:SPLIT_SHOWN])
    if len(cuts) > SPLIT_SHOWN:
        text += " " + w["split_more"].format(n=len(cuts) - SPLIT_SHOWN)
    return w["split_note"].format(t=text)


def change_pp(f: Figures) -> float | None:
    """The change against the previous period, in percentage points."""
    pct, prev = f.availability_pct, f.previous_pct
    return None if pct is None or prev is None else pct - prev


def _worst(rows: list[SiteRow], by_site, parents) -> list[Worst]:
    """The WORST_N worst sites (rows are worst first) that were down or unreachable, as root causes:
    a site mostly unreachable because an upstream site was down is not listed itself but counted
    behind the site whose outage cut it off. A row's cause is worked out only when asked: for the
    rows the list passes over, and for the sites below each listed one (only a site below it can
    owe it its unreachable time), not for every row of the report."""
    causes = account.UpstreamCauses(by_site, parents)
    memo: dict[int, str | None] = {}  # row -> the upstream site most of its unreachable time is owed to

    def cause(n: int) -> str | None:
        if n not in memo:
            r = rows[n]
            up = None
            if r.figures.unreachable_s > 0:
                owed = causes.of(r.id, max(r.start, r.served[0]), min(r.end, r.served[1]))
                up = max(owed, key=lambda k: owed[k]) if owed else None
            memo[n] = up
        return memo[n]

    rows_of: dict[str, list[int]] = {}  # site id -> its rows (a site split at a change has several)
    for n, r in enumerate(rows):
        rows_of.setdefault(r.id, []).append(n)
    children = children_of(parents.items())

    def behind(site: str) -> int:
        """The sites below `site` that it cut off (a site split at a change: once)."""
        return sum(1 for sid in below(children, site) if any(cause(n) == site for n in rows_of.get(sid, ())))

    out: list[Worst] = []
    for n, r in enumerate(rows):
        f = r.figures
        if f.down_s + f.unreachable_s <= 0:
            continue
        cut_off = f.unreachable_s > f.down_s
        if cut_off and cause(n) is not None:
            continue  # the upstream site's entry says it
        out.append(Worst(r, behind(r.id), cut_off))
        if len(out) == WORST_N:
            break
    return out


def short(name: str | None, cap: int = NAME_CAP) -> str:
    """A name as the HTML and PDF show it: at most cap characters, an ellipsis where it was cut
    (WeasyPrint took 175 s instead of 4 to lay out one name of 5,000 characters)."""
    if name is None:
        return ""
    return name if len(name) <= cap else name[: cap - 1].rstrip() + "…"


def _worst_first(r: SiteRow):
    a = r.figures.availability_pct
    return (a is None, a if a is not None else 0.0, -r.figures.down_s, -r.figures.unreachable_s, r.id, r.start)


def build(cfg: Config, store, period: Period, now: float | None = None, grouping: str = GROUPINGS[0]) -> Report:
    """Read the runs of the period and the one before, and compute."""
    now = time.time() if now is None else now
    prev = previous(period)
    cap = store.run_cap_s(cfg.run_cap_s)
    runs = store.status_runs(prev.start.timestamp(), period.end.timestamp(), now, cap)
    history_from = store.meta("history_from")
    rep = compute(
        cfg,
        runs,
        store.site_labels(),
        period,
        prev,
        now,
        cap,
        None if history_from is None else float(history_from),
        grouping,
    )
    cadence = store.cadence_s()
    if slow := account.slow_cadence_note(cfg.schedule.icmp_interval_s, cadence, cfg.path.name):
        rep.notes.append(slow)
    return rep


# -- formats -----------------------------------------------------------------------


def _fig_json(f: Figures) -> dict[str, Any]:
    pct = f.availability_pct
    prev = f.previous_pct
    mttr = f.mttr_s
    return {
        "availability_pct": None if pct is None else round(pct, 4),
        "downtime_s": round(f.down_s, 3),
        "outages": f.outages,
        "longest_outage_s": round(f.longest_outage_s, 3),
        "mttr_s": None if mttr is None else round(mttr, 3),
        "observed_s": round(f.observed_s, 3),
        "available_s": round(f.available_s, 3),
        "unreachable_s": round(f.unreachable_s, 3),
        "maintenance_s": round(f.maintenance_s, 3),
        "unobserved_s": round(f.unobserved_s, 3),
        "out_of_service_s": round(f.out_of_service_s, 3),
        "previous_availability_pct": None if prev is None else round(prev, 4),
    }


def row_when(rep: Report, t: float) -> datetime:
    """A row's edge as a time in the period's zone (the period's own edges as they are)."""
    if t == rep.period.start.timestamp():
        return rep.period.start
    if t == rep.period.end.timestamp():
        return rep.period.end
    return datetime.fromtimestamp(t, rep.period.tz)


def row_iso(rep: Report) -> Callable[[float], str]:
    """A row's edges in ISO 8601 (row_when), each instant written once (10,000 rows, 2 edges each)."""
    memo: dict[float, str] = {}

    def iso(t: float) -> str:
        text = memo.get(t)
        if text is None:
            text = memo[t] = row_when(rep, t).isoformat()
        return text

    return iso


def is_split(rep: Report, r: SiteRow) -> bool:
    """Whether the row covers only a part of the period (its keys changed inside it)."""
    return r.start > rep.period.start.timestamp() or r.end < rep.period.end.timestamp()


class Encoded(str):
    """A list element that is JSON text already (json_text writes it as it is)."""

    __slots__ = ()


def json_text(obj: dict[str, Any]) -> str:
    """The report's JSON text: a key of the top level per line, and an element of its lists per
    line, each in the compact form of json's C encoder (`indent` makes json use its pure-Python
    encoder: 1.3 s for 20,000 site rows against ~0.15 s); still a row per line to read or diff."""
    enc = json.JSONEncoder(ensure_ascii=False)
    parts = []
    for k, v in obj.items():
        if isinstance(v, list) and v:
            items = (x if isinstance(x, Encoded) else enc.encode(x) for x in v)
            parts.append(f" {enc.encode(k)}: [\n  " + ",\n  ".join(items) + "\n ]")
        else:
            parts.append(f" {enc.encode(k)}: {enc.encode(v)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def to_json(rep: Report, encoded_rows: bool = False) -> dict[str, Any]:
    """The report as JSON data. encoded_rows: the site rows as their JSON text (site_json_text),
    for json_text: the report's file (20,000 rows of a dated month, 0.15 s less than as dicts)."""
    iso = row_iso(rep)

    def group(f: Figures) -> dict[str, Any]:
        change = change_pp(f)
        return _fig_json(f) | {
            "sites": f.sites,
            "below_target": f.below_target,
            "target_met": rep.met(f),
            "change_pp": None if change is None else round(change, 4),
        }

    return {
        "period": {
            "from": rep.period.start.isoformat(),
            "to": rep.period.end.isoformat(),
            "label": rep.period.label,
            "kind": rep.period.kind,
            "cut_at_now": rep.period.cut_at_now,
        },
        "previous_period": {
            "from": rep.prev.start.isoformat(),
            "to": rep.prev.end.isoformat(),
            "label": rep.prev.label,
        },
        "generated": datetime.fromtimestamp(rep.generated, rep.period.tz).isoformat(timespec="seconds"),
        "grouping": rep.grouping,
        "target_pct": rep.target_pct,
        "status_hold_cap_s": rep.cap_s,
        # the store was upgraded and its history starts inside the period: before it, not unobserved but unknown
        "history_from": None
        if rep.history_from is None
        else datetime.fromtimestamp(rep.history_from, rep.period.tz).isoformat(timespec="seconds"),
        "history_note": rep.history_note(),
        "total": group(rep.total),
        "levels": [{"level": lv} | group(f) for lv, f in rep.levels],
        "districts": [{"district": d} | group(f) for d, f in rep.districts],
        "sites": [site_json_text(r, iso) for r in rep.sites]
        if encoded_rows
        else [_site_json(r, iso) for r in rep.sites],
        # the first page's worst sites, as root causes (see _worst)
        "worst": [
            {
                "id": x.row.id,
                "name": x.row.name,
                "availability_pct": _fig_json(x.row.figures)["availability_pct"],
                "outages": x.row.figures.outages,
                "downtime_s": round(x.row.figures.down_s, 3),
                "unreachable_s": round(x.row.figures.unreachable_s, 3),
                "sites_behind": x.behind,
                "cut_off": x.cut_off,
            }
            for x in rep.worst
        ],
        "method": method_text(rep.language, rep.cap_s),
        "notes": rep.notes,
    }


def _site_json(r: SiteRow, iso: Callable[[float], str]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": r.id, "name": r.name, "level": r.level, "district": r.district}
    out.update(_fig_json(r.figures))
    out["below_target"] = bool(r.figures.below_target)
    out["from"], out["to"] = iso(r.start), iso(r.end)  # the row's stretch of the period
    return out


_SITE_JSON = (
    '{"id": %s, "name": %s, "level": %s, "district": %s, "availability_pct": %s, "downtime_s": %r, "outages": %r, '
    '"longest_outage_s": %r, "mttr_s": %s, "observed_s": %r, "available_s": %r, "unreachable_s": %r, '
    '"maintenance_s": %r, "unobserved_s": %r, "out_of_service_s": %r, "previous_availability_pct": %s, '
    '"below_target": %s, "from": %s, "to": %s}'
)


def site_json_text(r: SiteRow, iso: Callable[[float], str]) -> Encoded:
    """A site row's JSON text: what json's encoder writes for _site_json(r, iso), the same keys in the
    same order (tested), without making the dicts (numbers as json writes them: repr)."""
    f = r.figures
    pct, prev, mttr = f.availability_pct, f.previous_pct, f.mttr_s
    return Encoded(
        _SITE_JSON
        % (
            _json_str(r.id),
            _json_str(r.name),
            _json_str(r.level),
            "null" if r.district is None else _json_str(r.district),
            "null" if pct is None else repr(round(pct, 4)),
            round(f.down_s, 3),
            f.outages,
            round(f.longest_outage_s, 3),
            "null" if mttr is None else repr(round(mttr, 3)),
            round(f.observed_s, 3),
            round(f.available_s, 3),
            round(f.unreachable_s, 3),
            round(f.maintenance_s, 3),
            round(f.unobserved_s, 3),
            round(f.out_of_service_s, 3),
            "null" if prev is None else repr(round(prev, 4)),
            "true" if f.below_target else "false",
            _json_str(iso(r.start)),
            _json_str(iso(r.end)),
        )
    )


_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_CSV_QUOTED = re.compile(r'[,"\r\n]').search


def csv_field(v: str) -> str:
    """A text cell as csv.writer (QUOTE_MINIMAL, "\\r\\n" lines) writes it: in quotes, its quotes
    doubled, when it holds a comma, a quote or a line break."""
    return '"' + v.replace('"', '""') + '"' if _CSV_QUOTED(v) else v


def csv_cell(v: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a leading
    apostrophe (OWASP's CSV injection advice); numbers stay numbers."""
    if isinstance(v, str) and v.startswith(_FORMULA):
        return "'" + v
    return v


def to_csv(rep: Report) -> bytes:
    """UTF-8 with a BOM (Excel then reads Vietnamese right), one row per site, worst first."""

    w = rep.words()
    iso = row_iso(rep)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\r\n")
    cols = [
        "id",
        "name",
        "level",
        "district",
        "availability_pct",
        "previous_availability_pct",
        "downtime_s",
        "outages",
        "longest_outage_s",
        "mttr_s",
        "unreachable_s",
        "maintenance_s",
        "unobserved_s",
        "observed_s",
        "below_target",
        "out_of_service_s",  # the columns added since are last: programs reading by position go on
        "from",
        "to",
    ]
    out.writerow(cols)
    # the rows written as text (csv_field quotes as csv.writer does: tested), 0.07 s less at 20,000 rows
    level_words = {lv: csv_field(csv_cell(text)) for lv, text in w["levels"].items()}
    row = "%s,%s,%s,%s,%s,%s,%d,%d,%d,%s,%d,%d,%d,%d,%d,%d,%s,%s\r\n"
    lines = []
    for r in rep.sites:
        f = r.figures
        pct, prev = f.availability_pct, f.previous_pct
        mttr = f.mttr_s
        lines.append(
            row
            % (
                # the text cells (names come from the config): the others are numbers and times
                csv_field(csv_cell(r.id)),
                csv_field(csv_cell(r.name)),
                level_words[r.level],
                csv_field(csv_cell(r.district or "")),
                "" if pct is None else f"{round(pct, 4):.4f}",
                "" if prev is None else f"{round(prev, 4):.4f}",
                round(f.down_s),
                f.outages,
                round(f.longest_outage_s),
                "" if mttr is None else round(round(mttr, 3)),
                round(f.unreachable_s),
                round(f.maintenance_s),
                round(f.unobserved_s),
                round(f.observed_s),
                int(bool(f.below_target)),
                round(f.out_of_service_s),
                iso(r.start),  # ISO 8601: digits, '-', ':', '+', 'T': nothing to quote
                iso(r.end),
            )
        )
    buf.write("".join(lines))
    return "\ufeff".encode() + buf.getvalue().encode("utf-8")


XLSX_CELL_MAX = 32767  # characters Excel keeps in a cell


def to_xlsx(rep: Report) -> bytes:
    """An Excel workbook (XlsxWriter): levels, districts, sites and the worst ones, one sheet each.
    Availability is a number in Excel's percent format, durations are Excel durations ([h]:mm, a
    day is 1), counts are integers: they read right in any locale, and sum and sort as numbers.
    Names are whole and always text (never a formula)."""
    import xlsxwriter

    from wanmon.words import Fmt

    w = rep.words()
    fmt = Fmt(rep.language, rep.period.tz)
    buf = io.BytesIO()
    book = xlsxwriter.Workbook(buf, {"in_memory": True, "strings_to_formulas": False, "strings_to_urls": False})
    head = book.add_format({"bold": True, "text_wrap": True, "valign": "top", "bg_color": "#E8E8E8", "border": 1})
    pct = book.add_format({"num_format": "0.00%"})
    pp = book.add_format({"num_format": "+0.00;-0.00;0.00"})
    dur = book.add_format({"num_format": "[h]:mm"})
    when = book.add_format({"num_format": "yyyy-mm-dd hh:mm"})
    missed = book.add_format({"font_color": "#A00000", "bold": True})
    target = w["target_col"].format(t=fmt.pct(rep.target_pct))

    def text(v: str | None) -> str:
        return "" if v is None else v[:XLSX_CELL_MAX]

    def figures(f: Figures) -> list[tuple[str, Any, Any]]:
        """(header, value, format) of a row's figures: None is an empty cell."""
        a, b, c = f.availability_pct, f.previous_pct, change_pp(f)
        m = rep.met(f)
        return [
            (w["availability"], None if a is None else a / 100, pct),
            (w["previous"], None if b is None else b / 100, pct),
            (f"{w['change']} ({w['pp']})", c, pp),
            (target, None if m is None else w["met"] if m else w["missed"], missed if m is False else None),
            (w["downtime"], f.down_s / 86400, dur),
            (w["outages"], f.outages, None),
            (w["longest"], f.longest_outage_s / 86400, dur),
            (w["mttr"], None if f.mttr_s is None else f.mttr_s / 86400, dur),
            (w["unreachable"], f.unreachable_s / 86400, dur),
            (w["maintenance"], f.maintenance_s / 86400, dur),
            (w["unobserved"], f.unobserved_s / 86400, dur),
            (w["out_of_service"], f.out_of_service_s / 86400, dur),
        ]

    def sheet(title: str, build, items: list, dummy, widths: dict[int, int]) -> None:
        """One sheet: a header row (the headers build gives the dummy), then build(item) per item."""
        ws = book.add_worksheet(title[:31])
        heads = [h for h, _v, _f in build(dummy)]
        for col, name in enumerate(heads):
            ws.write_string(0, col, name, head)
            ws.set_column(col, col, widths.get(col, 12))
        for r, item in enumerate(items, start=1):
            for col, (_h, v, f) in enumerate(build(item)):
                if v is None:
                    ws.write_blank(r, col, None, f)
                elif isinstance(v, str):
                    ws.write_string(r, col, text(v), f)
                elif isinstance(v, datetime):
                    ws.write_datetime(r, col, v, f)
                else:
                    ws.write_number(r, col, v, f)
        ws.freeze_panes(1, 1)
        ws.autofilter(0, 0, len(items), len(heads) - 1)

    def level(item: tuple[str, Figures]) -> list[tuple[str, Any, Any]]:
        lv, f = item
        return [(w["level"], w["levels"].get(lv, w["total"]), None), (w["sites"], f.sites, None), *figures(f)]

    def district(item: tuple[str, Figures]) -> list[tuple[str, Any, Any]]:
        d, f = item
        return [(w["district"], d, None), (w["sites"], f.sites, None), *figures(f)]

    def site(r: SiteRow) -> list[tuple[str, Any, Any]]:
        return [
            ("id", r.id, None),
            (w["site"], r.name, None),
            (w["level"], w["levels"][r.level], None),
            (w["district"], r.district, None),
            *figures(r.figures),
            # the row's stretch, local time of the period (Excel has no time zones)
            (w["from_"], row_when(rep, r.start).replace(tzinfo=None), when),
            (w["to"], row_when(rep, r.end).replace(tzinfo=None), when),
        ]

    def worst(x: Worst) -> list[tuple[str, Any, Any]]:
        f = x.row.figures
        a = f.availability_pct
        return [
            ("id", x.row.id, None),
            (w["site"], x.row.name, None),
            (w["availability"], None if a is None else a / 100, pct),
            (w["outages"], f.outages, None),
            (w["downtime"], f.down_s / 86400, dur),
            (w["unreachable"], f.unreachable_s / 86400, dur),
            (w["why"], why_text(x, fmt, w) if x.row.id else "", None),
        ]

    empty = SiteRow("", "", "province", None, Figures(), rep.period.start.timestamp(), rep.period.end.timestamp())
    sheet(w["level"], level, [*rep.levels, ("total", rep.total)], ("", Figures()), {0: 28})
    sheet(w["district"], district, rep.districts, ("", Figures()), {0: 28})
    sheet(w["site"], site, rep.sites, empty, {0: 22, 1: 40, 2: 18, 3: 16})
    sheet(w["worst_title"], worst, rep.worst, Worst(empty, 0, False), {0: 22, 1: 40, 6: 60})
    book.close()
    return buf.getvalue()


def method_text(lang: str, cap_s: float) -> list[str]:
    from wanmon.words import REPORT

    cap = f"{cap_s:g}"
    return [line.format(cap=cap) for line in REPORT[lang]["method"]]


PDF_MAX_SITES = 300  # the PDF's site table: the worst ones (the full list is in the CSV, HTML, JSON)


def to_html(cfg: Config, rep: Report, max_sites: int | None = None) -> str:
    """The report page; max_sites: list only the worst ones, with a line saying how many more."""
    from markupsafe import Markup

    from wanmon.page import _env
    from wanmon.words import Fmt

    fmt = Fmt(rep.language, rep.period.tz)
    w = rep.words()
    shown = rep.sites if max_sites is None else rep.sites[:max_sites]
    districts, more_districts = rep.summary_districts()
    cells, site_row = _html_writers(rep, w, fmt)
    return (
        _env(cfg)
        .get_template("report.html.j2")
        .render(
            rep=rep,
            w=w,
            fmt=fmt,
            hm=hm,
            short=short,
            met=lambda f: met_text(rep, f, w),
            change=lambda f: change_text(f, fmt, w),
            why=lambda x: why_text(x, fmt, w),
            summary_districts=districts,
            more_districts=more_districts,
            method=method_text(rep.language, rep.cap_s),
            sites=shown,
            more=len(rep.sites) - len(shown),
            period_text=period_text(rep.period, fmt, w),
            prev_text=period_text(rep.prev, fmt, w),
            history_note=rep.history_note(),
            generated=fmt.dt(rep.generated),
            grouping_text=w["grouping_now"] if rep.grouping == "now" else w["grouping_then"],
            # the rows' markup, written in Python (_html_writers): a table's cells of figures, the site rows
            cells=lambda f: Markup(cells(f)),
            site_rows=lambda rows: Markup("".join([site_row(r) for r in rows])),
            # a customised template of before may still write the site rows itself, with these
            stretch=lambda r: f"{fmt.dt(r.start)} – {fmt.dt(r.end)}" if is_split(rep, r) else "",
        )
    )


def _html_writers(rep: Report, w: ReportWords, fmt: Fmt) -> tuple[Callable[[Figures], str], Callable[[SiteRow], str]]:
    """The report page's cells of figures (a row of the levels', districts' and sites' full
    tables) and its site rows, written in Python rather than in the template: at 10,000 sites
    with a dated inventory (20,000 rows) Jinja spent 1.3 s of the HTML's 1.6 s on the site rows (a
    macro call, an escape() and a Markup per value), undated 0.5 s of 0.6 s; the whole HTML now
    takes 0.19 s (0.09 s undated). The markup is the template's of before, byte for byte; the
    template keeps the tables, their heads and everything around them, and calls cells(f) and
    site_rows(rows), as the status page's calls site_rows(ids) (wanmon.page._row_writer).

    Every value from the config (ids, names, groups, the levels' words) goes through markupsafe's
    escape, as Jinja's autoescape would (wanmon.page.html_text); the fixed words are escaped once
    here. What Fmt and hm() write (digits, separators, units, dates) has nothing to escape, and
    goes in as is; each distinct value is written once (_memo)."""
    from wanmon.page import _memo, html_text

    e = html_text

    def td(key: str) -> str:  # a cell's start, with its label (a phone shows it before the figure)
        return f'<td class="num" data-label="{e(w[key])}">'  # type: ignore[literal-required]

    avail, prev, down, outages = td("availability"), td("previous"), td("downtime"), td("outages")
    longest, mttr, unr, maint = td("longest"), td("mttr"), td("unreachable"), td("maintenance")
    unobs, oos = td("unobserved"), td("out_of_service")
    pct, dur = _memo(fmt.pct), _memo(hm)

    def cells(f: Figures) -> str:
        return (
            f"{avail}{pct(f.availability_pct)}</td>{prev}{pct(f.previous_pct)}</td>\n"
            f"{down}{dur(f.down_s)}</td>{outages}{f.outages}</td>{longest}{dur(f.longest_outage_s)}</td>\n"
            f"{mttr}{dur(f.mttr_s)}</td>{unr}{dur(f.unreachable_s)}</td>{maint}{dur(f.maintenance_s)}</td>"
            f"{unobs}{dur(f.unobserved_s)}</td>{oos}{dur(f.out_of_service_s)}</td>"
        )

    levels = {lv: e(name) for lv, name in w["levels"].items()}
    group = _memo(lambda d: f" · {e(short(d))}" if d else "")  # a district: the same for its hundreds of sites
    when = _memo(fmt.dt)  # a dated inventory's rows start and end at its few instants of change
    below_tr, below = ' class="below"', f" · {e(w['below'])}"

    def site_row(r: SiteRow) -> str:
        f = r.figures
        stretch = f" · {when(r.start)} – {when(r.end)}" if is_split(rep, r) else ""
        low = f.below_target
        return (
            f'<tr{below_tr if low else ""}><td class="name">{e(short(r.name))}<br>'
            f'<span class="prev">{e(r.id)} · {levels[r.level]}{group(r.district)}{stretch}{below if low else ""}'
            f"</span></td>{cells(f)}</tr>\n"
        )

    return cells, site_row


def met_text(rep: Report, f: Figures, w: ReportWords) -> str:
    """Target met or not, in words ("–": nothing observed)."""
    m = rep.met(f)
    return "–" if m is None else w["met"] if m else w["missed"]


def change_text(f: Figures, fmt, w: ReportWords) -> str:
    """The change against the previous period: +0,12 điểm % / −2.93 pp ("–": no figure for one of them)."""
    c = change_pp(f)
    if c is None:
        return "–"
    num = fmt.num(abs(c), 2)
    sign = "" if num.strip("0,.") == "" else "+" if c > 0 else "\u2212"
    return f"{sign}{num}\u00a0{w['pp']}"


def why_text(x: Worst, fmt, w: ReportWords) -> str:
    """Why a worst site was not available: its own outages and the sites they cut off, or that it
    was cut off from upstream."""
    f = x.row.figures
    parts = []
    if x.cut_off:
        parts.append(w["why_cut_off"])
    if f.outages:
        parts.append(w["why_own"].format(n=f.outages, longest=hm(f.longest_outage_s)))
    if x.behind:
        parts.append(w["why_behind"].format(n=x.behind))
    text = "; ".join(parts)
    return text[:1].upper() + text[1:]


def hm(seconds: float | None) -> str:
    """Downtime as h:mm (hours may pass 24)."""
    if seconds is None:
        return "–"
    m = round(seconds / 60)
    return f"{m // 60}:{m % 60:02d}"


def period_text(p: Period, fmt, w: ReportWords) -> str:
    if p.kind == "month":
        return w["month"].format(m=p.start.month, y=p.start.year)
    if p.kind == "quarter":
        return w["quarter"].format(q=(p.start.month + 2) // 3, y=p.start.year)
    if p.kind == "year":
        return w["year"].format(y=p.start.year)
    return f"{fmt.dt(p.start.timestamp())} – {fmt.dt(p.end.timestamp())}"


def to_pdf(cfg: Config, rep: Report) -> bytes:
    try:
        import weasyprint
    except (ImportError, OSError) as exc:  # OSError: the Pango library is missing
        raise WanmonError(
            f"PDF needs WeasyPrint and Pango ({exc}); run scripts/quickstart.sh or "
            "apt-get install libpango-1.0-0 libpangoft2-1.0-0, or choose --format html"
        ) from None
    import logging

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    # WeasyPrint lays a 10,000-row table out in minutes and gigabytes: the PDF, the one people
    # print and send upward, lists the worst PDF_MAX_SITES sites (all of them up to that)
    return weasyprint.HTML(string=to_html(cfg, rep, PDF_MAX_SITES)).write_pdf()


def render(cfg: Config, rep: Report, fmt: str) -> bytes:
    if fmt == "json":
        return json_text(to_json(rep, encoded_rows=True)).encode()
    if fmt == "csv":
        return to_csv(rep)
    if fmt == "html":
        return to_html(cfg, rep).encode()
    if fmt == "pdf":
        return to_pdf(cfg, rep)
    if fmt == "xlsx":
        return to_xlsx(rep)
    raise ValueError(fmt)


def default_path(cfg: Config, rep: Report, fmt: str) -> Path:
    from wanmon.page import out_dir

    label = re.sub(
        r"[^0-9A-Za-z_-]+",
        "_",
        rep.period.label
        if rep.period.kind != "range"
        else f"{rep.period.start:%Y%m%dT%H%M}-{rep.period.end:%Y%m%dT%H%M}",
    )
    return out_dir(cfg, None) / "reports" / f"wanmon-report-{label}.{fmt}"


def pct_text(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f} %"
