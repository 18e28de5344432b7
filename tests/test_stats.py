"""Pure logic: per-target statistics and site status (table-driven)."""

from __future__ import annotations

import pytest

from wanmon.config import Site, Thresholds
from wanmon.probes.icmp import _checksum, summarize
from wanmon.status import icmp_status, with_parents


@pytest.mark.parametrize(
    "rtts,loss,mn,avg,mx,jitter",
    [
        ([1.0, 2.0, 3.0], 0.0, 1.0, 2.0, 3.0, 1.0),
        ([10.0, None, 14.0], 33.333, 10.0, 12.0, 14.0, 4.0),  # jitter over received replies
        ([None, None, None], 100.0, None, None, None, None),
        ([5.0, None, None, None], 75.0, 5.0, 5.0, 5.0, None),  # one reply: no jitter
        ([1.0, 3.0, 2.0, 6.0], 0.0, 1.0, 3.0, 6.0, (2 + 1 + 4) / 3),
    ],
)
def test_summarize(rtts, loss, mn, avg, mx, jitter):
    r = summarize("x", "127.0.0.1", len(rtts), rtts)
    assert r.sent == len(rtts)
    assert r.received == sum(v is not None for v in rtts)
    assert r.loss_pct == pytest.approx(loss, abs=1e-3)
    assert (r.rtt_min_ms, r.rtt_avg_ms, r.rtt_max_ms) == (mn, avg, mx)
    assert r.jitter_ms == (None if jitter is None else pytest.approx(jitter, abs=1e-3))
    assert (r.reason == "no reply") == (r.received == 0)


def test_unresolved_keeps_reason():
    r = summarize("nohost.invalid", None, 0, [], "host name 'nohost.invalid' does not resolve")
    assert r.sent == 0 and r.received == 0 and "does not resolve" in r.reason


def test_checksum_known_vector():
    # RFC 1071 example words 0x0001 0xf203 0xf4f5 0xf6f7 -> sum 0xddf2, checksum 0x220d
    data = bytes.fromhex("0001f203f4f5f6f7")
    import struct

    assert struct.pack("=H", _checksum(data)) == bytes.fromhex("220d")


TH = Thresholds(degraded_loss_pct=10.0, degraded_rtt_ms=300.0)


@pytest.mark.parametrize(
    "rtts,expected",
    [
        ([1.0, 1.0, 1.0], "up"),
        ([1.0, None, 1.0], "degraded"),  # 33% loss >= 10%
        ([400.0, 400.0, 400.0], "degraded"),  # slow
        ([299.0, 299.0, 299.0], "up"),
        ([None, None, None], "down"),
    ],
)
def test_icmp_status(rtts, expected):
    assert icmp_status(summarize("x", "127.0.0.1", len(rtts), rtts), TH) == expected


def test_unresolvable_is_down_not_unknown():
    r = summarize("nohost.invalid", None, 0, [], "does not resolve")
    assert icmp_status(r, TH) == "down"
    assert icmp_status(None, TH) == "unknown"


def _site(sid, parent=None, level="province", district=None):
    return Site(id=sid, name=sid, level=level, district=district, parent=parent, address="127.0.0.1")


def test_parent_down_makes_children_unreachable_not_down():
    sites = {s.id: s for s in [
        _site("core"), _site("d1", "core", "district", "D1"), _site("c1", "d1", "commune", "D1"),
        _site("c2", "d1", "commune", "D1"), _site("d2", "core", "district", "D2"),
    ]}
    own = {"core": "up", "d1": "down", "c1": "down", "c2": "up", "d2": "degraded"}
    assert with_parents(own, sites) == {"core": "up", "d1": "down", "c1": "unreachable", "c2": "up", "d2": "degraded"}
    own = {"core": "down", "d1": "down", "c1": "down", "c2": "degraded", "d2": "down"}
    assert with_parents(own, sites) == {"core": "down", "d1": "unreachable", "c1": "unreachable", "c2": "degraded",
                                        "d2": "unreachable"}
