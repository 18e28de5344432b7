"""The domain types: what one cycle observes, what the store keeps, what alerts send. Data only.

Every module speaks these (probes -> cycle -> store, alerts, page, InfluxDB lines);
none of them imports another wanmon module, so any module can use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


def _ticks_to_s(ticks: int | None) -> float | None:
    """sysUpTime (hundredths of a second) in seconds."""
    return None if ticks is None else ticks / 100.0


@dataclass(frozen=True, slots=True)
class Observation:
    """One site's result in one cycle, as stored."""

    site_id: str
    name: str
    level: str
    district: str | None
    address: str
    ts: float
    status: str
    reason: str | None
    sent: int
    received: int
    loss_pct: float
    rtt_min_ms: float | None
    rtt_avg_ms: float | None
    rtt_max_ms: float | None
    jitter_ms: float | None


@dataclass(frozen=True, slots=True)
class SiteState:
    site_id: str
    name: str
    level: str
    district: str | None
    address: str
    status: str
    since: float
    last_ts: float
    consecutive_failures: int
    last_reachable_ts: float | None
    loss_pct: float | None
    rtt_avg_ms: float | None
    jitter_ms: float | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class DeviceState:
    site_id: str
    status: str  # last poll: ok | timeout | auth_error | error
    reason: str | None
    last_poll_ts: float
    last_ok_ts: float | None = None
    first_seen: float | None = None
    last_seen: float | None = None
    sys_descr: str | None = None
    sys_object_id: str | None = None
    sys_name: str | None = None
    sys_contact: str | None = None
    sys_location: str | None = None
    uptime_ticks: int | None = None
    engine_boots: int | None = None
    engine_time_s: int | None = None
    last_reboot_ts: float | None = None
    uplink_if_index: int | None = None
    uplink_name: str | None = None
    uplink_in_bps: float | None = None
    uplink_out_bps: float | None = None
    uplink_util_in_pct: float | None = None
    uplink_util_out_pct: float | None = None
    fail_streak: int = 0  # consecutive failed polls (timeouts, errors): the back-off doubles with each
    fail_since: float | None = None  # time of the first failed poll of the streak ("no SNMP answer since")

    @property
    def uptime_s(self) -> float | None:
        return _ticks_to_s(self.uptime_ticks)


@dataclass(frozen=True, slots=True)
class IfState:
    if_index: int
    name: str | None
    descr: str | None
    alias: str | None
    type: int | None
    admin_status: str | None
    oper_status: str | None
    speed_bps: int | None
    in_octets: int | None
    out_octets: int | None
    counter_bits: int
    discontinuity: int | None
    sample_ts: float
    in_bps: float | None
    out_bps: float | None
    util_in_pct: float | None
    util_out_pct: float | None
    in_errors: int | None
    out_errors: int | None
    in_discards: int | None
    out_discards: int | None
    last_change_ts: float | None

    @property
    def label(self) -> str:
        return self.name or self.descr or f"ifIndex {self.if_index}"


@dataclass(frozen=True, slots=True)
class Event:
    ts: float
    site_id: str
    kind: str  # reboot | device_changed | if_oper | status
    detail: str  # one English line for logs and `inventory`
    # The event's figures, for mails (in their language) and JSON; never parsed from detail:
    # reboot {"uptime_was_s": float | None, "uptime_s": float}; if_oper {"interface", "from", "to"};
    # device_changed {"sys_object_id": [old, new], "sys_name": [old, new]} (those that changed);
    # status {"from", "to"}
    data: dict | None = None


class DeviceLine(NamedTuple):
    """A device as the status page shows it (Store.device_lines): DeviceState's columns of that name."""

    site_id: str
    status: str
    last_ok_ts: float | None
    fail_since: float | None
    sys_name: str | None
    uptime_ticks: int | None
    last_reboot_ts: float | None
    uplink_name: str | None
    uplink_util_in_pct: float | None
    uplink_util_out_pct: float | None

    @property
    def uptime_s(self) -> float | None:
        return _ticks_to_s(self.uptime_ticks)  # the same derived figure as DeviceState's


@dataclass(frozen=True, slots=True)
class SnmpOutcome:
    """One site's SNMP poll as the store records it (see devices.derive)."""

    device: DeviceState
    interfaces: list[IfState] | None  # None: the poll failed, keep the last good data
    events: list[Event]


@dataclass(frozen=True, slots=True)
class AlertUpdate:
    """What one cycle's alert evaluation writes (see alerts.engine and alerts.mail)."""

    states: dict  # site id -> SiteAlert: the states that changed (the others stay as stored)
    guard: bool
    mails: list  # alerts.mail.Mail
    mail_status: str = "queued"  # "unsent" without [smtp], "dry-run" for --dry-run
    events_seen: int | None = None  # the last SNMP event id these alerts took into account


@dataclass(frozen=True, slots=True)
class SiteAlert:
    site_id: str
    hard: str = "up"  # "up" or a problem status
    hard_since: float | None = None
    streak_status: str = "up"
    streak: int = 0
    streak_since: float | None = None
    history: str = ""  # the last flap_window cycles, "1" = problem, oldest first
    flapping: bool = False
    notified: bool = False  # a notice was sent for the current hard problem
    last_notified: float | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    kind: (
        str  # down | degraded | unreachable | recovery | flap_start | flap_end | reminder | reboot | guard | guard_end
    )
    site_id: str | None
    ts: float
    status: str | None = None
    since: float | None = None
    # down, reminder: the sites this outage makes unreachable; recovery: those back with it (guard: the
    # silent upstream sites)
    children: tuple[str, ...] = ()
    detail: str = ""  # for logs; mails say it in their language from the fields below (alerts.mail.detail)
    value: float | None = None  # flap_*: the weighted % of state changes
    counts: tuple[int, ...] = ()  # guard*: (upstream sites silent, upstream sites, sites failing, sites, root causes)
    uptimes: tuple[float | None, ...] = ()  # reboot: (uptime at the previous poll or None, uptime now), seconds
    # unreachable (and the recovery of a site that was): the upstream site whose outage cut it off,
    # and since when that site is down (None: not known)
    cause: str | None = None
    cause_since: float | None = None
    was: str | None = None  # recovery: the problem it recovered from (down, unreachable, degraded)
    back_ts: float | None = None  # recovery: when it answered again (the first of its good cycles)


@dataclass(frozen=True, slots=True)
class Mail:
    recipient: str
    subject: str
    text: str
    html: str
    message_id: str
    kinds: tuple[str, ...]
    created_ts: float
    notes: tuple[tuple[str, str], ...] = ()  # (site id, kind) of each notification in it ("" for no site)


@dataclass(frozen=True, slots=True)
class Hop:
    """One distance (TTL) of a traced path: who answered the probes that expired there."""

    distance: int
    address: str | None  # None: nothing answered at this distance
    rtt_ms: float | None
    unreachable: bool = False  # it answered "destination unreachable": it has no way on to the target


@dataclass(frozen=True, slots=True)
class Trace:
    """The path to one address (wanmon.trace): its hops by distance, and whether the address itself
    answered (then it is the last hop)."""

    target: str  # the address traced, as the inventory writes it
    ip: str | None  # where the probes went (None: the name did not resolve)
    ts: float  # when the trace began, POSIX seconds
    hops: tuple[Hop, ...]  # distances 1..n, silent ones included
    reached: bool
    reason: str | None = None  # why it is not a whole path: no answer, budget spent, no address, no permission
    duration_ms: float = 0.0

    @property
    def last_answer(self) -> Hop | None:
        """The farthest hop that answered, the target itself not counted: where a broken path stops."""
        end = len(self.hops) - 1 if self.reached else len(self.hops)
        return next((h for h in reversed(self.hops[:end]) if h.address is not None), None)


@dataclass(frozen=True, slots=True)
class OutagePath:
    """The path traced when a site went down on its own (wanmon.trace), kept with its incident:
    the site's down stretch that began at start_ts (its status `since`)."""

    site_id: str
    start_ts: float  # the incident's start: the first cycle that found the site down
    trace: Trace
    good_hops: int | None  # the length of the site's last good path then (None: none was kept)
    good_ts: float | None  # when that good path was traced


@dataclass(frozen=True, slots=True)
class TraceJob:
    """One trace a cycle asks for, after its page (wanmon.cycle.run_traces)."""

    site_id: str
    address: str  # where to send: the address the sweep used (an IP), else the inventory's
    why: str  # "outage" (down on its own, start_ts its incident's start) | "refresh" (its good path)
    start_ts: float | None = None
