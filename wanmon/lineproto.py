"""InfluxDB line protocol for a cycle's results (pure). The schema is in the README.

Tags hold identity only (bounded cardinality): site_id, site_name, level,
district, address (+ ifname, kind). Values are fields. Timestamps are the
sample times in nanoseconds, so a retried write lands on the same point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from wanmon.account import held_fields, held_split
from wanmon.model import Observation, SnmpOutcome

STATUS_CODE = {"up": 0, "degraded": 1, "down": 2, "unreachable": 3, "unknown": 4}


def _esc_key(s: str, v1: bool = False) -> str:
    r"""Measurement, tag keys and values, field keys: escape comma, equals and space,
    and (v2 line protocol, as influxdb-client does) backslash.

    InfluxDB 1.x does not unescape a doubled backslash in tags (it would keep
    both), so for `api = "v1"` backslashes are written as they are.

    InfluxDB 1.x cannot store a tag value that ends in a backslash: its parser takes
    the space or comma after one as escaped, however many backslashes come before, and
    it never unescapes "\\", so no spelling survives and the whole line is refused
    ("invalid tag format"; measured on 1.6). Such a value is written with a space after
    it (stored as "...\ "). `validate` refuses a trailing backslash in the config's own
    tag values (names, districts, addresses, [agent] id) so those round-trip exactly;
    only what a device reports (an interface's name) can take this path.
    """
    s = s.replace("\r", " ").replace("\n", " ")
    if not v1:
        s = s.replace("\\", "\\\\")
    elif s.endswith("\\"):
        s += " "
    return s.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _esc_str(s: str) -> str:
    """String field value: quoted; escape backslash and double quote; no raw newlines."""
    s = s.replace("\r", " ").replace("\n", " ")
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _field(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else repr(value)
    return _esc_str(str(value))


def _line(
    measurement: str, tags: dict[str, str | None], fields: Mapping[str, object], ts: float, v1: bool = False
) -> str | None:
    """One point; None when it has no field (line protocol needs at least one)."""
    tag_part = "".join(f",{_esc_key(k, v1)}={_esc_key(v, v1)}" for k, v in sorted(tags.items()) if v not in (None, ""))
    encoded = [(k, _field(v)) for k, v in fields.items()]
    field_part = ",".join(f"{_esc_key(k, v1)}={v}" for k, v in encoded if v is not None)
    if not field_part:
        return None
    return f"{_esc_key(measurement, v1)}{tag_part} {field_part} {round(ts * 1e9)}"


def site_tags(site_id: str, o, agent: str | None = None, parent: str | None = None) -> dict[str, str | None]:
    """A site's tags from anything with its name, level, district and address (an observation, a
    config Site); `agent` ([agent] id) says which agent saw it (several may write to one database),
    `parent` its uplink (a page built from InfluxDB finds the root causes with it)."""
    return {
        "site_id": site_id,
        "site_name": o.name,
        "level": o.level,
        "district": o.district,
        "address": o.address,
        "parent": parent,
        "agent": agent,
    }


def cycle_points(
    obs: Sequence[Observation],
    snmp: Sequence[SnmpOutcome],
    agent: dict[str, object],
    host: str,
    started: float,
    v1: bool = False,
    prev: dict[str, tuple[str, float, int]] | None = None,
    cap_s: float = 120.0,
    agent_id: str | None = None,
    parents: dict[str, str | None] | None = None,
    cuts: Mapping[str, Sequence[tuple[dict[str, str | None], float, float]]] | None = None,
) -> list[str]:
    """Every point of one cycle: ICMP per site, SNMP per polled site and interface, events, the agent.
    prev: each site's previous cycle (status, ts, in maintenance), for the prev_*_s fields.
    cuts: the sites whose previous hold a dated inventory cuts (their tags changed, or their
    service ended, meanwhile): {site_id: [(tags, from, to)]} (wanmon.cycle.held_pieces)."""
    out: list[str | None] = []
    prev = prev or {}
    parents = parents or {}
    cuts = cuts or {}
    for o in obs:
        tags = site_tags(o.site_id, o, agent_id, parents.get(o.site_id))
        held = held_fields(prev.get(o.site_id), o.ts, cap_s)
        cut = cuts.get(o.site_id)
        if cut and o.site_id in prev:
            held = _cut_hold(out, cut, prev[o.site_id], tags, v1)
        out.append(
            _line(
                "wanmon_icmp",
                tags,
                {
                    "sent": o.sent,
                    "received": o.received,
                    "loss_pct": float(o.loss_pct),
                    "rtt_min_ms": o.rtt_min_ms,
                    "rtt_avg_ms": o.rtt_avg_ms,
                    "rtt_max_ms": o.rtt_max_ms,
                    "jitter_ms": o.jitter_ms,
                    "up": int(o.status in ("up", "degraded")),
                    "status": o.status,
                    "status_code": STATUS_CODE.get(o.status, 4),
                    **held,
                },
                o.ts,
                v1=v1,
            )
        )
    seen = {o.site_id for o in obs} if cuts else ()
    for sid, cut in cuts.items():
        if sid not in seen and sid in prev:  # out of service now: its last hold, up to the end of its service
            _cut_hold(out, cut, prev[sid], None, v1)
    if snmp:
        out.extend(
            snmp_points(snmp, {o.site_id: site_tags(o.site_id, o, agent_id, parents.get(o.site_id)) for o in obs}, v1)
        )
    out.append(agent_point(host, agent, started, v1, agent_id))
    return [p for p in out if p is not None]


def _cut_hold(
    out: list[str | None],
    cut: Sequence[tuple[dict[str, str | None], float, float]],
    prev: tuple[str, float, int],
    tags: dict[str, str | None] | None,
    v1: bool,
) -> dict[str, float]:
    """A previous hold cut where the site's tags changed: each piece under other tags than `tags`
    (the new point's; None: no new point) becomes a point of its own with those tags and only the
    prev_*_s fields, at the piece's end, so InfluxQL grouped by a tag counts every stretch under
    the tags valid then (the report's "then"). Returns the fields of the pieces under `tags`."""
    status, _, maint = prev
    for t, a, b in cut:
        if t != tags:
            out.append(_line("wanmon_icmp", t, held_split(status, maint, b - a), b, v1=v1))
    return held_split(status, maint, sum(b - a for t, a, b in cut if t == tags))


def snmp_points(
    snmp: Sequence[SnmpOutcome], tags_by_site: dict[str, dict[str, str | None]], v1: bool = False
) -> list[str]:
    """The points of SNMP outcomes (a poll, wherever it ran): device, interfaces, events."""
    out: list[str | None] = []
    for so in snmp:
        d = so.device
        tags = tags_by_site.get(d.site_id)
        if tags is None:
            continue
        ok = d.status == "ok"
        out.append(
            _line(
                "wanmon_snmp",
                tags,
                {
                    "ok": int(ok),
                    "status": d.status,
                    "uptime_s": d.uptime_s if ok else None,
                    "uplink_in_bps": d.uplink_in_bps if ok else None,
                    "uplink_out_bps": d.uplink_out_bps if ok else None,
                    "uplink_util_in_pct": d.uplink_util_in_pct if ok else None,
                    "uplink_util_out_pct": d.uplink_util_out_pct if ok else None,
                },
                d.last_poll_ts,
                v1=v1,
            )
        )
        for i in so.interfaces or ():
            out.append(
                _line(
                    "wanmon_if",
                    {**tags, "ifname": i.label},
                    {
                        "in_bps": i.in_bps,
                        "out_bps": i.out_bps,
                        "util_in_pct": i.util_in_pct,
                        "util_out_pct": i.util_out_pct,
                        "oper_up": None if i.oper_status is None else int(i.oper_status == "up"),
                        "in_errors": i.in_errors,
                        "out_errors": i.out_errors,
                        "in_discards": i.in_discards,
                        "out_discards": i.out_discards,
                    },
                    i.sample_ts,
                    v1=v1,
                )
            )
        for e in so.events:
            out.append(_line("wanmon_event", {**tags, "kind": e.kind}, {"detail": e.detail}, e.ts, v1=v1))
    return [p for p in out if p is not None]


def agent_point(
    host: str, fields: dict[str, object], ts: float, v1: bool = False, agent_id: str | None = None
) -> str | None:
    """The agent's own point: each cycle's is its heartbeat (at the cycle's start)."""
    return _line("wanmon_agent", {"host": host, "agent": agent_id}, fields, ts, v1=v1)


line = _line
