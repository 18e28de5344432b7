"""What the store knows about each site's device, and how one poll changes it (pure).

`derive(prev, prev_ifs, result)` -> (device, interfaces, events): rates from
counter deltas, reboot and device-change detection, interface status changes,
the uplink figure. No I/O: the store reads `prev` and writes the outcome.
"""

from __future__ import annotations

import dataclasses

from wanmon import rates
from wanmon.model import DeviceState, Event, IfState
from wanmon.probes.snmp import Interface, SnmpResult
from wanmon.words import duration


def _uptime(d: DeviceState | None) -> rates.Uptime | None:
    if d is None or d.last_ok_ts is None:
        return None
    return rates.Uptime(d.last_ok_ts, d.uptime_ticks, d.engine_boots, d.engine_time_s)


def _interface(cur: Interface, prev: IfState | None, ts: float, reset: bool) -> IfState:
    in_bps = out_bps = None
    last_change = prev.last_change_ts if prev else None
    if prev is not None:
        # A discontinuity (counters re-created) or a switch between 32/64-bit counters is a reset too.
        reset = reset or prev.discontinuity != cur.discontinuity or prev.counter_bits != cur.counter_bits
        dt = ts - prev.sample_ts
        in_bps = rates.rate_bps(prev.in_octets, cur.in_octets, cur.counter_bits, dt, cur.speed_bps, reset)
        out_bps = rates.rate_bps(prev.out_octets, cur.out_octets, cur.counter_bits, dt, cur.speed_bps, reset)
        if prev.oper_status != cur.oper_status:
            last_change = ts
    return IfState(
        if_index=cur.if_index,
        name=cur.name,
        descr=cur.descr,
        alias=cur.alias,
        type=cur.type,
        admin_status=cur.admin_status,
        oper_status=cur.oper_status,
        speed_bps=cur.speed_bps,
        in_octets=cur.in_octets,
        out_octets=cur.out_octets,
        counter_bits=cur.counter_bits,
        discontinuity=cur.discontinuity,
        sample_ts=ts,
        in_bps=in_bps,
        out_bps=out_bps,
        util_in_pct=rates.utilisation_pct(in_bps, cur.speed_bps),
        util_out_pct=rates.utilisation_pct(out_bps, cur.speed_bps),
        in_errors=cur.in_errors,
        out_errors=cur.out_errors,
        in_discards=cur.in_discards,
        out_discards=cur.out_discards,
        last_change_ts=last_change,
    )


def derive(
    site_id: str,
    prev: DeviceState | None,
    prev_ifs: dict[int, IfState],
    res: SnmpResult,
    uplink: str | int | None = None,
) -> tuple[DeviceState, list[IfState] | None, list[Event]]:
    """Next device state, interface states (None = unchanged) and events from one poll."""
    if not res.ok:
        # A failed poll changes nothing but the status: counters and uptime stay
        # those of the last good poll, so the next one computes a correct rate
        # and a timeout never looks like a reboot.
        base = prev or DeviceState(site_id=site_id, status=res.status, reason=res.reason, last_poll_ts=res.ts)
        streak = prev.fail_streak if prev else 0
        since = (prev.fail_since if prev and streak else None) or res.ts
        return (
            dataclasses.replace(
                base,
                status=res.status,
                reason=res.reason,
                last_poll_ts=res.ts,
                fail_streak=streak + 1,
                fail_since=since,
            ),
            None,
            [],
        )

    ts = res.ts
    events: list[Event] = []
    cur_up = rates.Uptime(ts, res.sys_uptime_ticks, res.engine_boots, res.engine_time_s)
    reboot = rates.rebooted(_uptime(prev), cur_up)
    last_reboot = prev.last_reboot_ts if prev else None
    if reboot and res.sys_uptime_ticks is not None:
        last_reboot = ts - res.sys_uptime_ticks / 100.0
        was_s = prev.uptime_ticks / 100.0 if prev and prev.uptime_ticks is not None else None
        now_s = res.sys_uptime_ticks / 100.0
        was = duration(was_s, "en") if was_s is not None else "?"
        events.append(
            Event(
                ts,
                site_id,
                "reboot",
                f"device restarted (uptime was {was} at the previous poll, now {duration(now_s, 'en')})",
                {"uptime_was_s": was_s, "uptime_s": now_s},
            )
        )
    if prev is not None and prev.last_ok_ts is not None:
        changes, data = [], {}
        if prev.sys_object_id and res.sys_object_id and prev.sys_object_id != res.sys_object_id:
            changes.append(f"sysObjectID {prev.sys_object_id} -> {res.sys_object_id}")
            data["sys_object_id"] = [prev.sys_object_id, res.sys_object_id]
        if prev.sys_name and res.sys_name and prev.sys_name != res.sys_name:
            changes.append(f"sysName {prev.sys_name!r} -> {res.sys_name!r}")
            data["sys_name"] = [prev.sys_name, res.sys_name]
        if changes:
            events.append(
                Event(ts, site_id, "device_changed", "device replaced or renamed: " + "; ".join(changes), data)
            )

    # Counter rates use the time the counters were read, not the start of the poll.
    if_ts = res.if_ts if res.if_ts is not None else ts
    ifs = [_interface(i, prev_ifs.get(i.if_index), if_ts, reboot) for i in res.interfaces]
    for new in ifs:
        old = prev_ifs.get(new.if_index)
        if old is not None and old.oper_status != new.oper_status:
            events.append(
                Event(
                    ts,
                    site_id,
                    "if_oper",
                    f"{new.label}: {old.oper_status} -> {new.oper_status}",
                    {"interface": new.label, "from": old.oper_status, "to": new.oper_status},
                )
            )

    views = [rates.IfView(i.if_index, i.name, i.descr, i.alias, i.type, i.oper_status, i.speed_bps) for i in ifs]
    up = rates.choose_uplink(views, uplink)
    upl = next((i for i in ifs if up is not None and i.if_index == up.if_index), None)
    device = DeviceState(
        site_id=site_id,
        status="ok",
        reason=None,
        last_poll_ts=ts,
        last_ok_ts=ts,
        first_seen=prev.first_seen if prev and prev.first_seen else ts,
        last_seen=ts,
        sys_descr=res.sys_descr,
        sys_object_id=res.sys_object_id,
        sys_name=res.sys_name,
        sys_contact=res.sys_contact,
        sys_location=res.sys_location,
        uptime_ticks=res.sys_uptime_ticks,
        engine_boots=res.engine_boots,
        engine_time_s=res.engine_time_s,
        last_reboot_ts=last_reboot,
        uplink_if_index=upl.if_index if upl else None,
        uplink_name=upl.label if upl else None,
        uplink_in_bps=upl.in_bps if upl else None,
        uplink_out_bps=upl.out_bps if upl else None,
        uplink_util_in_pct=upl.util_in_pct if upl else None,
        uplink_util_out_pct=upl.util_out_pct if upl else None,
    )
    return device, ifs, events
