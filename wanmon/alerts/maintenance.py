"""Which sites are in a maintenance window now (pure: config + time)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from wanmon.config import Config, Maintenance

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def active(m: Maintenance, now: float, tz: ZoneInfo) -> bool:
    local = datetime.fromtimestamp(now, tz)
    if m.start and m.end:
        start = datetime.fromisoformat(m.start)
        end = datetime.fromisoformat(m.end)
        start = start if start.tzinfo else start.replace(tzinfo=tz)
        end = end if end.tzinfo else end.replace(tzinfo=tz)
        return start <= local < end
    if m.days and m.from_ and m.to:
        fh, fm = map(int, m.from_.split(":"))
        th, tm = map(int, m.to.split(":"))
        # A window opened on one of `days`; one that ends earlier than it starts runs past midnight.
        for back in (0, 1):
            day = (local - timedelta(days=back)).date()
            if DAYS[day.weekday()] not in m.days:
                continue
            start = datetime(day.year, day.month, day.day, fh, fm, tzinfo=tz)
            end = datetime(day.year, day.month, day.day, th, tm, tzinfo=tz)
            if end <= start:
                end += timedelta(days=1)
            if start <= local < end:
                return True
    return False


def sites_in_maintenance(cfg: Config, now: float) -> set[str]:
    tz = ZoneInfo(cfg.page.timezone)
    out: set[str] = set()
    for m in cfg.maintenance:
        if active(m, now, tz):
            out.update(m.sites)
            out.update(s.id for s in cfg.sites if s.district and s.district in m.districts)
    return out
