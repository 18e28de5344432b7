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
import re
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from wanmon import account
from wanmon.account import Figures, site_figures
from wanmon.config import LEVELS, Config
from wanmon.errors import WanmonError
from wanmon.inventory import Inventory

if TYPE_CHECKING:  # wanmon.words is imported where the text is written
    from wanmon.words import ReportWords

FORMATS = ("html", "pdf", "csv", "json")


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
    id: str
    name: str
    level: str
    district: str | None
    figures: Figures


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

    def history_note(self) -> str | None:
        """Where history starts and why, when the period begins before it."""
        if self.history_from is None:
            return None
        from wanmon.words import REPORT, Fmt

        fmt = Fmt(self.language, self.period.tz)
        return REPORT[self.language]["history_from"].format(t=fmt.dt(self.history_from))


def compute(
    cfg: Config,
    runs: list[tuple[str, str, int, float, float]],
    labels: dict[str, tuple],
    period: Period,
    prev: Period,
    now: float,
    cap_s: float,
    history_from: float | None = None,
) -> Report:
    """The report from the runs [(site_id, status, maint, from, to)] of both periods. history_from:
    where an upgraded store's history starts (meta history_from; before it, only hourly rollups)."""
    by_site = account.by_site(runs)
    inv = Inventory.from_config(cfg)
    start, end = period.start.timestamp(), period.end.timestamp()
    p_start, p_end = prev.start.timestamp(), prev.end.timestamp()
    if history_from is not None and history_from <= start:
        history_from = None  # the whole period is history: nothing to say
    target = cfg.report.target_pct
    rows: list[SiteRow] = []
    known = set()
    for s in inv.ordered():
        known.add(s.id)
        rows.append(SiteRow(s.id, s.name, s.level, s.district, Figures()))
    # sites no longer in the config that were observed in the period still count
    for sid in sorted(set(by_site) - known):
        name, level, district = labels.get(sid, (sid, "province", None))
        rows.append(SiteRow(sid, name, level if level in LEVELS else "province", district, Figures()))
    for r in rows:
        mine = by_site.get(r.id, [])
        f = site_figures(mine, start, end, history_from)
        pf = site_figures(mine, p_start, p_end)
        f.prev_available_s, f.prev_observed_s = pf.available_s, pf.observed_s
        f.below_target = int(f.availability_pct is not None and f.availability_pct < target)
        r.figures = f
    rows = [r for r in rows if r.id in known or r.figures.observed_s or r.figures.maintenance_s]
    levels = []
    for lv in LEVELS:
        g = Figures()
        for r in rows:
            if r.level == lv:
                g.add(r.figures)
                g.sites += 1
                g.below_target += r.figures.below_target
        levels.append((lv, g))
    districts: dict[str, Figures] = {}
    order = [d.name for d in inv.districts]
    for r in rows:
        if r.district:
            g = districts.setdefault(r.district, Figures())
            g.add(r.figures)
            g.sites += 1
            g.below_target += r.figures.below_target
    total = Figures()
    for r in rows:
        total.add(r.figures)
        total.sites += 1
        total.below_target += r.figures.below_target
    dist_list = [(d, districts[d]) for d in order if d in districts] + [
        (d, g) for d, g in sorted(districts.items()) if d not in order
    ]
    rows.sort(key=_worst_first)
    return Report(
        period,
        prev,
        now,
        target,
        cap_s,
        rows,
        levels,
        dist_list,
        total,
        language=cfg.page.language,
        province=cfg.page.province,
        history_from=history_from,
    )


def _worst_first(r: SiteRow):
    a = r.figures.availability_pct
    return (a is None, a if a is not None else 0.0, -r.figures.down_s, -r.figures.unreachable_s, r.id)


def build(cfg: Config, store, period: Period, now: float | None = None) -> Report:
    """Read the runs of the period and the one before, and compute."""
    now = time.time() if now is None else now
    prev = previous(period)
    cap = store.run_cap_s(cfg.run_cap_s)
    runs = store.status_runs(prev.start.timestamp(), period.end.timestamp(), now, cap)
    history_from = store.meta("history_from")
    rep = compute(
        cfg, runs, store.site_labels(), period, prev, now, cap, None if history_from is None else float(history_from)
    )
    cadence = store.cadence_s()
    if slow := account.slow_cadence_note(cfg.schedule.icmp_interval_s, cadence, cfg.path.name):
        rep.notes.append(slow)
    return rep


# -- formats -----------------------------------------------------------------------


def _fig_json(f: Figures) -> dict[str, Any]:
    r = lambda v: round(v, 3)  # noqa: E731
    pct = f.availability_pct
    prev = f.previous_pct
    return {
        "availability_pct": None if pct is None else round(pct, 4),
        "downtime_s": r(f.down_s),
        "outages": f.outages,
        "longest_outage_s": r(f.longest_outage_s),
        "mttr_s": None if f.mttr_s is None else r(f.mttr_s),
        "observed_s": r(f.observed_s),
        "available_s": r(f.available_s),
        "unreachable_s": r(f.unreachable_s),
        "maintenance_s": r(f.maintenance_s),
        "unobserved_s": r(f.unobserved_s),
        "previous_availability_pct": None if prev is None else round(prev, 4),
    }


def to_json(rep: Report) -> dict[str, Any]:
    def group(f: Figures) -> dict[str, Any]:
        return _fig_json(f) | {"sites": f.sites, "below_target": f.below_target}

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
        "sites": [
            {"id": r.id, "name": r.name, "level": r.level, "district": r.district}
            | _fig_json(r.figures)
            | {"below_target": bool(r.figures.below_target)}
            for r in rep.sites
        ],
        "method": method_text(rep.language, rep.cap_s),
        "notes": rep.notes,
    }


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(v: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a leading
    apostrophe (OWASP's CSV injection advice); numbers stay numbers."""
    if isinstance(v, str) and v.startswith(_FORMULA):
        return "'" + v
    return v


def to_csv(rep: Report) -> bytes:
    """UTF-8 with a BOM (Excel then reads Vietnamese right), one row per site, worst first."""
    from wanmon.words import REPORT

    w = REPORT[rep.language]
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
    ]
    out.writerow(cols)
    for r in rep.sites:
        j = _fig_json(r.figures)
        out.writerow(
            [
                csv_cell(x)
                for x in (
                    r.id,
                    r.name,
                    w["levels"][r.level],
                    r.district or "",
                    "" if j["availability_pct"] is None else f"{j['availability_pct']:.4f}",
                    "" if j["previous_availability_pct"] is None else f"{j['previous_availability_pct']:.4f}",
                    round(r.figures.down_s),
                    r.figures.outages,
                    round(r.figures.longest_outage_s),
                    "" if j["mttr_s"] is None else round(j["mttr_s"]),
                    round(r.figures.unreachable_s),
                    round(r.figures.maintenance_s),
                    round(r.figures.unobserved_s),
                    round(r.figures.observed_s),
                    int(bool(r.figures.below_target)),
                )
            ]
        )
    return "\ufeff".encode() + buf.getvalue().encode("utf-8")


def method_text(lang: str, cap_s: float) -> list[str]:
    from wanmon.words import REPORT

    cap = f"{cap_s:g}"
    return [line.format(cap=cap) for line in REPORT[lang]["method"]]


PDF_MAX_SITES = 300  # the PDF's site table: the worst ones (the full list is in the CSV, HTML, JSON)


def to_html(cfg: Config, rep: Report, max_sites: int | None = None) -> str:
    """The report page; max_sites: list only the worst ones, with a line saying how many more."""
    from wanmon.page import _env
    from wanmon.words import REPORT, Fmt

    fmt = Fmt(rep.language, rep.period.tz)
    w = REPORT[rep.language]
    shown = rep.sites if max_sites is None else rep.sites[:max_sites]
    return (
        _env(cfg)
        .get_template("report.html.j2")
        .render(
            rep=rep,
            w=w,
            fmt=fmt,
            hm=hm,
            method=method_text(rep.language, rep.cap_s),
            sites=shown,
            more=len(rep.sites) - len(shown),
            period_text=period_text(rep.period, fmt, w),
            prev_text=period_text(rep.prev, fmt, w),
            history_note=rep.history_note(),
            generated=fmt.dt(rep.generated),
        )
    )


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
        return (json.dumps(to_json(rep), ensure_ascii=False, indent=1) + "\n").encode()
    if fmt == "csv":
        return to_csv(rep)
    if fmt == "html":
        return to_html(cfg, rep).encode()
    if fmt == "pdf":
        return to_pdf(cfg, rep)
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
