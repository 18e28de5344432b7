"""SNMP counters, rates and reboots over many cron runs, through the seams: no sleeping.

What tests/test_snmp_integration.py checks against real agents (a 32-bit wrap,
a timeout that is not a reboot, a counter reset with a reboot, growing
counters), as the cycle records it from one run to the next: the wall clock is
a `Clock` the test moves (five minutes between polls, in one statement) and
the SNMP peer a fake that answers what the test says, so every rate is known
exactly. Each `wanmon check` is `run_check` with the file read again: nothing
lives in memory from one run to the next, as under cron.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seams import Clock, Net, query  # noqa: E402

from wanmon.config import load  # noqa: E402
from wanmon.cycle import run_check  # noqa: E402
from wanmon.probes.snmp import Interface, SnmpResult  # noqa: E402

C32 = 2 ** 32
SPEED = 100_000_000
ADDR = "127.88.0.2"
GAP = 300.0  # s between two cron runs


def config(tmp_path: Path) -> Path:
    path = tmp_path / "sites.toml"
    path.write_text(f"""
[store]
path = "var/wanmon.db"
[page]
out_dir = "public"
[snmp]
interval_s = 0
[alerts]
enabled = false

[[sites]]
id = "core"
name = "Trung tâm"
level = "province"
address = "127.88.0.1"
[sites.snmp]
enabled = false

[[sites]]
id = "r"
name = "Bộ định tuyến"
level = "district"
district = "D"
parent = "core"
address = "{ADDR}"
[sites.snmp]
uplink = "eth0"
""", encoding="utf-8")
    return path


def eth0(in_octets: int, out_octets: int, bits: int = 32) -> Interface:
    return Interface(2, "eth0", "GigabitEthernet0/0", "WAN uplink", 6, "up", "up", SPEED, in_octets, out_octets,
                     bits, 3, 1, 7, 2, None)


class Agent:
    """What the fake SNMP peer answers for ADDR: a device whose uptime and counters the test sets."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.boot_ts = clock() - 5000.0  # up for 5000 s
        self.ifs = (eth0(0, 0),)
        self.down = False

    def __call__(self) -> SnmpResult:
        if self.down:
            return SnmpResult("timeout", "no response (community or agent)", self.clock())
        ticks = int(round((self.clock() - self.boot_ts) * 100))
        return SnmpResult("ok", None, self.clock(), sys_name="r1", sys_object_id="1.3.6.1.4.1.9.1.1",
                          sys_uptime_ticks=ticks, interfaces=self.ifs, if_ts=self.clock())


@pytest.fixture
def lab(tmp_path):
    clock = Clock()
    net = Net(clock)
    agent = Agent(clock)
    net.snmp[ADDR] = agent
    path = config(tmp_path)

    def check(advance: float = GAP) -> dict:
        """One cron run `advance` seconds after the last; the site's SNMP view (as `check --json`)."""
        clock.advance(advance)
        res = run_check(load(path, secrets=False), now=clock, peers=net.peers(), publish_tail=False)
        return res.snmp["r"]

    return clock, agent, check, path


def reboot_events(path: Path) -> list[tuple]:
    return query(path.parent / "var" / "wanmon.db", "SELECT ts, detail FROM events WHERE kind = 'reboot'")


def test_wrap_timeout_reset_and_reboot_over_cron_runs(lab):
    clock, agent, check, path = lab

    # first poll: no rate yet
    agent.ifs = (eth0(4294967000, 1000),)
    one = check()
    assert one.status == "ok" and one.device.uplink_name == "eth0" and one.device.uplink_in_bps is None

    # a 32-bit wrap: the true rate, not a reset
    agent.ifs = (eth0(200, 1000),)
    two = check()
    assert two.device.uplink_in_bps == pytest.approx((200 + C32 - 4294967000) * 8 / GAP)
    assert two.device.uplink_out_bps == 0
    assert two.device.uplink_util_in_pct == pytest.approx(100 * two.device.uplink_in_bps / SPEED)

    # the agent stops answering: a timeout, not a reboot; the last good figures stay
    agent.down = True
    gone = check()
    assert gone.status == "timeout" and gone.reason
    assert gone.device.uptime_ticks == two.device.uptime_ticks and gone.device.last_reboot_ts is None
    # it answers again (counters went on: 1000 octets/s since the last good poll, 2 x GAP ago)
    agent.down = False
    agent.ifs = (eth0(200 + int(2 * GAP) * 1000, 1000),)
    back = check()
    assert back.status == "ok" and back.device.uplink_in_bps == pytest.approx(8000.0), "not from the last good sample"
    assert reboot_events(path) == [] and back.device.last_reboot_ts is None

    # the device reboots: uptime 10 s, every counter restarts low: no rate (no spike), one reboot
    agent.boot_ts = clock() + GAP - 10.0
    agent.ifs = (eth0(102, 52),)
    rebooted = check()
    assert rebooted.device.uptime_ticks == 1000
    assert rebooted.device.uplink_in_bps is None and rebooted.device.uplink_out_bps is None
    [(ts, detail)] = reboot_events(path)
    assert ts == clock() and "device restarted" in detail
    assert rebooted.device.last_reboot_ts == pytest.approx(clock() - 10.0)
    rows = query(path.parent / "var" / "wanmon.db", "SELECT in_bps, out_bps, util_in_pct FROM snmp_if WHERE site_id = 'r'")
    assert rows == [(None, None, None)]

    # a following normal poll: rates again (static counters: 0), still one reboot
    after = check()
    assert after.device.uptime_ticks == 1000 + int(GAP * 100)
    assert after.device.uplink_in_bps == 0 and after.device.uplink_out_bps == 0
    assert len(reboot_events(path)) == 1


def test_growing_counters_64_bit_and_a_switch_to_32_bit(lab):
    clock, agent, check, path = lab
    rate_in, rate_out = 1_250_000, 400_000   # octets/s
    agent.ifs = (eth0(9_000_000_000, 5_000_000, bits=64),)
    check()
    agent.ifs = (eth0(9_000_000_000 + int(rate_in * GAP), 5_000_000 + int(rate_out * GAP), bits=64),)
    up = check().device
    assert up.uplink_in_bps == pytest.approx(rate_in * 8) and up.uplink_out_bps == pytest.approx(rate_out * 8)
    assert up.uplink_util_in_pct == pytest.approx(100 * rate_in * 8 / SPEED)
    # the HC columns vanish (32-bit counters only from now on): a different counter, no rate once
    agent.ifs = (eth0((9_000_000_000 + int(rate_in * 2 * GAP)) % C32, 1000, bits=32),)
    assert check().device.uplink_in_bps is None
    agent.ifs = (eth0((9_000_000_000 + int(rate_in * 3 * GAP)) % C32, 1000 + int(rate_out * GAP), bits=32),)
    again = check().device
    assert again.uplink_in_bps == pytest.approx(rate_in * 8) and again.uplink_out_bps == pytest.approx(rate_out * 8)
    assert reboot_events(path) == []
