"""Site status: what one cycle's observations mean, and how a site's status moves. Pure, no I/O.

UP          replies, loss and RTT under the thresholds
DEGRADED    replies, but loss >= degraded_loss_pct or avg RTT >= degraded_rtt_ms
DOWN        no reply at all (or the address does not resolve)
UNREACHABLE no reply, and its parent (uplink) is DOWN or UNREACHABLE: the
            outage is upstream, not the site's own
UNKNOWN     not observed in this cycle
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from wanmon.config import Site, Thresholds
    from wanmon.probes.icmp import IcmpResult

UP, DEGRADED, DOWN, UNREACHABLE, UNKNOWN = "up", "degraded", "down", "unreachable", "unknown"
STATUSES = (UP, DEGRADED, DOWN, UNREACHABLE, UNKNOWN)
REACHABLE = (UP, DEGRADED)  # the site answers: available time in the history
FAILING = (DOWN, UNREACHABLE)  # no answer at all
PROBLEMS = (DOWN, DEGRADED, UNREACHABLE)  # what alerts are about
# Worst first: the order used to pick "the worst sites".
SEVERITY = {DOWN: 0, UNREACHABLE: 1, DEGRADED: 2, UNKNOWN: 3, UP: 4}


class Track(NamedTuple):
    """Where a site's status stands: the status, when it began, and for how many cycles in a row."""

    status: str
    since: float
    cycles: int


def advance(prev: Track | None, status: str, ts: float, cap: int = 1 << 30) -> Track:
    """The one status state machine, fed by every cycle: the site state the store keeps
    (status, since, the status-change events) and the alert engine's streaks both move
    with it. The same status again: one cycle more (counted up to cap), since kept, but
    never after ts (the clock set back: the status is known to hold at ts, no earlier
    time is known on this clock); another status: a new track from ts."""
    if prev is None or prev.status != status:
        return Track(status, ts, 1)
    return Track(status, min(prev.since, ts), min(prev.cycles + 1, max(cap, prev.cycles)))


def icmp_status(result: IcmpResult | None, th: Thresholds) -> str:
    if result is None or (result.sent == 0 and result.reason is None):
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
        if (
            status == DOWN
            and parent
            and parent in sites
            and depth < 64
            and resolve(parent, depth + 1) in (DOWN, UNREACHABLE)
        ):
            status = UNREACHABLE
        out[sid] = status
        return status

    for sid in own:
        resolve(sid)
    return out


def children_of(parents: Iterable[tuple[str, str | None]]) -> dict[str, list[str]]:
    """{site id: the sites hanging from it} from (site id, its parent) pairs."""
    out: dict[str, list[str]] = {}
    for sid, parent in parents:
        if parent is not None:
            out.setdefault(parent, []).append(sid)
    return out


def below(children: Mapping[str, list[str]], sid: str) -> Iterator[str]:
    """Every site under `sid` (its children, theirs, ...), each once, `sid` itself never: the
    sites an outage of `sid` can cut off (the page's incidents, the report's worst list)."""
    seen = {sid}
    todo = list(children.get(sid, ()))
    while todo:
        c = todo.pop()
        if c in seen:
            continue
        seen.add(c)
        todo.extend(children.get(c, ()))
        yield c


def root_of(sid: str, status_of: Callable[[str], str | None], parent_of: Callable[[str], str | None]) -> str | None:
    """The down site an unreachable site is unreachable through: its nearest ancestor that is
    down (None if an ancestor on the way is neither down nor unreachable, or is unknown to
    status_of). The page's problems and `check`'s summary group by it."""
    seen = 0
    p = parent_of(sid)
    while p and seen < 64:
        st = status_of(p)
        if st == DOWN:
            return p
        if st != UNREACHABLE:
            return None
        p, seen = parent_of(p), seen + 1
    return None
