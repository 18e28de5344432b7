"""Site status from one cycle's observations: pure functions, no I/O.

UP          replies, loss and RTT under the thresholds
DEGRADED    replies, but loss >= degraded_loss_pct or avg RTT >= degraded_rtt_ms
DOWN        no reply at all (or the address does not resolve)
UNREACHABLE no reply, and its parent (uplink) is DOWN or UNREACHABLE: the
            outage is upstream, not the site's own
UNKNOWN     not observed in this cycle
"""

from __future__ import annotations

from collections.abc import Mapping

from wanmon.config import Site, Thresholds
from wanmon.probes.icmp import IcmpResult

UP, DEGRADED, DOWN, UNREACHABLE, UNKNOWN = "up", "degraded", "down", "unreachable", "unknown"
STATUSES = (UP, DEGRADED, DOWN, UNREACHABLE, UNKNOWN)
# Worst first: the order used to pick "the worst sites".
SEVERITY = {DOWN: 0, UNREACHABLE: 1, DEGRADED: 2, UNKNOWN: 3, UP: 4}


def icmp_status(result: IcmpResult | None, th: Thresholds) -> str:
    if result is None or result.sent == 0 and result.reason is None:
        return UNKNOWN
    if result.received == 0:
        return DOWN
    if result.loss_pct >= th.degraded_loss_pct:
        return DEGRADED
    if result.rtt_avg_ms is not None and result.rtt_avg_ms >= th.degraded_rtt_ms:
        return DEGRADED
    return UP


def with_parents(own: Mapping[str, str], sites: Mapping[str, Site]) -> dict[str, str]:
    """Turn DOWN into UNREACHABLE where an ancestor is DOWN (the outage is upstream)."""
    out: dict[str, str] = {}

    def resolve(sid: str, depth: int = 0) -> str:
        if sid in out:
            return out[sid]
        status = own.get(sid, UNKNOWN)
        parent = sites[sid].parent if sid in sites else None
        # depth guard: validated configs have no cycles, but be safe.
        if status == DOWN and parent and parent in sites and depth < 64:
            if resolve(parent, depth + 1) in (DOWN, UNREACHABLE):
                status = UNREACHABLE
        out[sid] = status
        return status

    for sid in own:
        resolve(sid)
    return out
