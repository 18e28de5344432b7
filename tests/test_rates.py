"""Pure SNMP arithmetic: counter deltas, rates, reboots, uplink choice, derive() (table-driven)."""

from __future__ import annotations

import pytest

from wanmon import rates
from wanmon.devices import derive
from wanmon.probes.snmp import Interface, SnmpResult
from wanmon.vendors import model, vendor

W32 = 2**32


@pytest.mark.parametrize(
    "prev,cur,bits,dt,speed,reset,expected",
    [
        (1000, 2000, 64, 10, 10**9, False, 800.0),  # plain increase
        (4294967000, 200, 32, 60, 10**8, False, (200 + W32 - 4294967000) * 8 / 60),  # 32-bit wrap
        (1000, 500, 64, 60, 10**9, False, None),  # 64-bit went down: reset, no rate
        (1_000_000, 500, 32, 60, 10**8, False, None),  # "wrap" faster than the link: a reset
        (1000, 2000, 32, 10, 10**9, True, None),  # reboot / discontinuity
        (None, 2000, 32, 10, 10**9, False, None),  # no previous reading
        (1000, None, 32, 10, 10**9, False, None),  # counter absent now
        (1000, 2000, 32, 0, 10**9, False, None),  # no time elapsed
        (1000, 1000, 32, 10, 10**9, False, 0.0),  # idle link: 0, not absent
    ],
)
def test_rate_bps(prev, cur, bits, dt, speed, reset, expected):
    got = rates.rate_bps(prev, cur, bits, dt, speed, reset)
    assert got == (None if expected is None else pytest.approx(expected))
    assert got is None or got >= 0


def test_utilisation():
    assert rates.utilisation_pct(50e6, 100_000_000) == pytest.approx(50.0)
    assert rates.utilisation_pct(50e6, 0) is None and rates.utilisation_pct(None, 10) is None


U = rates.Uptime


@pytest.mark.parametrize(
    "prev,cur,expected",
    [
        (U(0, 500_000), U(300, 530_000), False),  # normal: +300 s
        (U(0, 500_000), U(300, 1_000), True),  # uptime dropped: restart
        (U(0, 10_000), U(7 * 86400, 5 * 86400 * 100), True),  # up 5 d, last poll 7 d ago: booted in between
        (U(0, W32 - 10_000), U(300, 30_000 - 10_000), False),  # the 497-day wrap, arithmetic
        (U(0, W32 - 10_000, 1, 42_949_572), U(300, 20_000, 1, 42_949_872), False),  # wrap, engine clock ran on
        (U(0, W32 - 10_000, 1, 42_949_572), U(300, 20_000, 2, 100), True),  # wrap-looking, but engineBoots +1
        (U(0, 500_000, 3, 5000), U(300, 530_000, 4, 3), True),  # engineBoots went up
        (None, U(300, 1_000), False),  # first poll: nothing to compare
        (U(0, None), U(300, 1_000), False),
    ],
)
def test_rebooted(prev, cur, expected):
    assert rates.rebooted(prev, cur) is expected


V = rates.IfView


def test_uplink_rule():
    ifs = [
        V(1, "lo", "lo", "", 24, "up", 10**7),
        V(2, "ge-0/0/0", "ge-0/0/0", "LAN", 6, "up", 10**9),
        V(3, "ge-0/0/1", "ge-0/0/1", "WAN to TTDL", 6, "up", 10**8),
        V(4, "ge-0/0/2", "ge-0/0/2", "", 6, "down", 10**10),
    ]
    assert rates.choose_uplink(ifs, None).if_index == 3  # labelled wins over faster
    assert rates.choose_uplink(ifs[:2] + ifs[3:], None).if_index == 2  # fastest that is up; lo never
    assert rates.choose_uplink(ifs, "ge-0/0/2").if_index == 4  # configured by name, even if down
    assert rates.choose_uplink(ifs, 2).if_index == 2  # by ifIndex
    assert rates.choose_uplink(ifs, "nope") is None
    assert rates.choose_uplink([ifs[0]], None) is None


def _if(idx=1, in_o=1000, out_o=2000, bits=32, oper="up", speed=100_000_000, disc=0):
    return Interface(if_index=idx, name=f"eth{idx}", descr=f"eth{idx}", alias="", type=6, admin_status="up",
                     oper_status=oper, speed_bps=speed, in_octets=in_o, out_octets=out_o, counter_bits=bits,
                     in_errors=0, out_errors=0, in_discards=0, out_discards=0, discontinuity=disc)


def _res(ts, uptime, ifs=(), name="r1", oid="1.3.6.1.4.1.9.1.1", status="ok"):
    if status != "ok":
        return SnmpResult(status=status, reason="no response", ts=ts)
    return SnmpResult(status="ok", reason=None, ts=ts, sys_name=name, sys_object_id=oid, sys_uptime_ticks=uptime,
                      interfaces=tuple(ifs))


def test_derive_sequence_wrap_timeout_reboot():
    d1, ifs1, ev1 = derive("s", None, {}, _res(1000, 100_000, [_if(in_o=4294967000)]))
    assert ev1 == [] and ifs1[0].in_bps is None and d1.first_seen == 1000
    prev_ifs = {i.if_index: i for i in ifs1}
    # 32-bit wrap 4294967000 -> 200 in 60 s
    d2, ifs2, ev2 = derive("s", d1, prev_ifs, _res(1060, 106_000, [_if(in_o=200)]))
    assert ifs2[0].in_bps == pytest.approx((200 + W32 - 4294967000) * 8 / 60)
    assert d2.uplink_in_bps == ifs2[0].in_bps and d2.uplink_name == "eth1"
    assert ev2 == []
    # a timeout: status changes, counters and uptime stay, no event
    d3, ifs3, ev3 = derive("s", d2, {i.if_index: i for i in ifs2}, _res(1120, None, status="timeout"))
    assert (d3.status, d3.uptime_ticks, d3.last_ok_ts, ifs3, ev3) == ("timeout", 106_000, 1060, None, [])
    # a reboot: exactly one event, no rate (counters restarted), last_reboot set
    d4, ifs4, ev4 = derive("s", d3, {i.if_index: i for i in ifs2}, _res(1180, 3_000, [_if(in_o=50)]))
    assert [e.kind for e in ev4] == ["reboot"]
    assert ifs4[0].in_bps is None and d4.last_reboot_ts == pytest.approx(1180 - 30)
    # the next poll: no second reboot event, a rate again
    d5, ifs5, ev5 = derive("s", d4, {i.if_index: i for i in ifs4}, _res(1240, 9_000, [_if(in_o=650)]))
    assert ev5 == [] and ifs5[0].in_bps == pytest.approx(600 * 8 / 60) and d5.last_reboot_ts == d4.last_reboot_ts


def test_derive_interface_change_and_device_replaced():
    d1, ifs1, _ = derive("s", None, {}, _res(0, 100, [_if(oper="up")]))
    d2, ifs2, ev = derive("s", d1, {1: ifs1[0]}, _res(60, 6100, [_if(oper="down")], name="r2", oid="1.3.6.1.4.1.2636.1"))
    kinds = sorted(e.kind for e in ev)
    assert kinds == ["device_changed", "if_oper"]
    assert "eth1: up -> down" in next(e.detail for e in ev if e.kind == "if_oper")
    assert ifs2[0].last_change_ts == 60


def test_derive_discontinuity_gives_no_rate():
    _, ifs1, _ = derive("s", None, {}, _res(0, 100, [_if(in_o=1000, disc=0)]))
    _, ifs2, _ = derive("s", None, {1: ifs1[0]}, _res(60, 6100, [_if(in_o=900_000, disc=5000)]))
    assert ifs2[0].in_bps is None


@pytest.mark.parametrize("oid,name", [
    ("1.3.6.1.4.1.9.1.1", "Cisco"), ("1.3.6.1.4.1.2636.1.1.1.2.1", "Juniper"), ("1.3.6.1.4.1.2011.2.23.1", "Huawei"),
    ("1.3.6.1.4.1.14988.1", "MikroTik"), ("1.3.6.1.4.1.25506.1.1", "H3C"), ("1.3.6.1.4.1.12356.101.1.1", "Fortinet"),
    ("1.3.6.1.4.1.8072.3.2.10", "net-snmp"), ("1.3.6.1.4.1.999999.1", "enterprise 999999"), (None, None),
    ("1.3.6.1.2.1.1", None),
])
def test_vendor(oid, name):
    assert vendor(oid) == name


def test_model_is_first_line():
    assert model("Cisco IOS Software, C2900 Software\nTechnical Support: x") == "Cisco IOS Software, C2900 Software"
    assert model(None) is None and len(model("x" * 500)) == 120
