"""Pure arithmetic on SNMP samples: counter deltas, rates, reboots, the uplink.

Everything here works from the previous stored sample and the current one,
so it gives the same answer in cron mode (a new process each cycle) and in
the daemon.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

TICKS_WRAP = 2**32  # sysUpTime is TimeTicks (1/100 s) in 32 bits: wraps after 497.1 days
_PLAUSIBLE = 1.10  # a "wrap" implying more than 110% of the interface speed was a reset


def counter_delta(prev: int | None, cur: int | None, bits: int) -> int | None:
    """Increase of a counter between two readings; None when it cannot be known.

    A 32-bit counter that went down wrapped: the delta is modulo 2^32. A 64-bit
    counter practically never wraps, so going down means it was reset.
    """
    if prev is None or cur is None:
        return None
    if cur >= prev:
        return cur - prev
    if bits == 32:
        return cur + 2**32 - prev
    return None


def rate_bps(
    prev: int | None, cur: int | None, bits: int, dt_s: float, speed_bps: int | None, reset: bool = False
) -> float | None:
    """Bits per second from two octet-counter readings dt_s apart.

    None (no rate, never a spike or a negative) when: the counters were reset
    (reboot, discontinuity), a reading is missing, the interval is not
    positive, a 64-bit counter went down, or a 32-bit "wrap" implies more than
    the interface can carry (then it was really a reset).
    """
    if reset or dt_s <= 0:
        return None
    d = counter_delta(prev, cur, bits)
    if d is None:
        return None
    bps = d * 8 / dt_s
    if cur is not None and prev is not None and cur < prev and speed_bps and bps > speed_bps * _PLAUSIBLE:
        return None
    return bps


def utilisation_pct(bps: float | None, speed_bps: int | None) -> float | None:
    if bps is None or not speed_bps:
        return None
    return 100.0 * bps / speed_bps


@dataclass(frozen=True, slots=True)
class Uptime:
    """What one successful poll said about the agent's clock."""

    ts: float  # when we polled (unix s)
    uptime_ticks: int | None  # sysUpTime, 1/100 s
    engine_boots: int | None = None  # snmpEngineBoots
    engine_time_s: int | None = None  # snmpEngineTime: s since last boot, no 497-day wrap


def rebooted(prev: Uptime | None, cur: Uptime) -> bool:
    """Did the agent restart between two successful polls?

    The agent booted after our previous poll if its boot time (poll time minus
    uptime) is later than that poll. A 497-day sysUpTime wrap looks the same,
    so it is told apart by snmpEngineTime when the agent has it, else by the
    arithmetic of the wrap. A timeout is no sample at all: never a reboot.
    """
    if prev is None or cur.uptime_ticks is None or prev.uptime_ticks is None:
        return False
    elapsed = cur.ts - prev.ts
    if elapsed < 0:
        return False
    if prev.engine_boots is not None and cur.engine_boots is not None and cur.engine_boots > prev.engine_boots:
        return True
    tol = max(5.0, 0.02 * elapsed)  # poll jitter and agent clock granularity
    booted_after_prev_poll = cur.uptime_ticks / 100.0 < elapsed - tol
    went_down = cur.uptime_ticks < prev.uptime_ticks
    if not (booted_after_prev_poll or went_down):
        return False
    expected = prev.uptime_ticks + elapsed * 100.0
    if expected < TICKS_WRAP:
        return True  # no wrap possible: the agent restarted
    # A wrap could explain it. snmpEngineTime does not wrap: if the agent's
    # engine clock ran on through the interval, it did not restart.
    if cur.engine_time_s is not None and prev.engine_time_s is not None and cur.engine_boots == prev.engine_boots:
        return cur.engine_time_s + tol < prev.engine_time_s + elapsed
    return abs((expected % TICKS_WRAP) - cur.uptime_ticks) > tol * 100


@dataclass(frozen=True, slots=True)
class IfView:
    """The facts the uplink rule needs about one interface."""

    if_index: int
    name: str | None
    descr: str | None
    alias: str | None
    type: int | None
    oper_status: str | None
    speed_bps: int | None


_UPLINK_WORDS = re.compile(r"uplink|wan|internet|isp|upstream", re.IGNORECASE)
_SOFTWARE_LOOPBACK = 24


def choose_uplink(ifs: Sequence[IfView], configured: str | int | None) -> IfView | None:
    """The site's uplink interface.

    1. `uplink` in the site's snmp table: the interface whose ifName, ifDescr
       or ifIndex equals it (None if the device has no such interface);
    2. else, among interfaces that are up and not software loopbacks: one whose
       ifAlias or ifName says uplink/WAN/internet/ISP/upstream, then the
       fastest, then the lowest ifIndex.
    """
    if configured is not None:
        want = str(configured)
        for i in ifs:
            if want in (i.name, i.descr, str(i.if_index)):
                return i
        return None
    cands = [i for i in ifs if i.oper_status == "up" and i.type != _SOFTWARE_LOOPBACK]
    if not cands:
        return None

    def key(i: IfView):
        labelled = bool(_UPLINK_WORDS.search(f"{i.alias or ''} {i.name or ''}"))
        return (not labelled, -(i.speed_bps or 0), i.if_index)

    return min(cands, key=key)
