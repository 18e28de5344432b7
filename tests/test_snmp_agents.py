"""Self-tests of the SNMP test agents (tests/snmp_agents.py), checked with
net-snmp's own CLI tools (snmpget, snmpbulkwalk): Debian's snmpd with v2c and
v3 users, and snmpsim serving many simulated devices from one process."""
from __future__ import annotations

import os
import select
import socket
import sys
import time
from pathlib import Path

import pytest

import prereq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import snmp_agents as sa  # noqa: E402
from snmp_agents import (  # noqa: E402
    IF_ENTRY, IF_IN_OCTETS, IF_OUT_OCTETS, IFX_ENTRY, IFX_HC_IN_OCTETS, IFX_NAME,
    SYS_CONTACT, SYS_LOCATION, SYS_NAME, SYS_OBJECT_ID, SYS_UPTIME, ENGINE_BOOTS,
    Device, NetSnmpAgent, SnmpSim, snmpcmd, snmpget,
)

from wanmon.probes import snmpwire  # noqa: E402

_ns_ok, _ns_why = sa.netsnmp_available()
_sim_ok, _sim_why = sa.snmpsim_available()
need_snmpd = prereq.needs(_ns_ok, "net-snmp (snmpd, snmpget)", prereq.NETSNMP, _ns_why)
need_snmpsim = prereq.needs(_sim_ok, "snmpsim", prereq.TEST_EXTRAS + " and " + prereq.NETSNMP, _sim_why)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still "exists": look at its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------------------
# net-snmp snmpd
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent():
    if not _ns_ok:
        prereq.need("net-snmp (snmpd, snmpget)", prereq.NETSNMP, _ns_why)
    with NetSnmpAgent(sys_name="tien-du-core") as a:
        yield a


@need_snmpd
def test_v2c_system_group(agent):
    r = agent.get([SYS_NAME, SYS_LOCATION, SYS_CONTACT, SYS_UPTIME, SYS_OBJECT_ID])
    assert r.ok, r.stderr
    assert r.value(SYS_NAME) == "tien-du-core"
    assert r.value(SYS_LOCATION) == "Tầng 3, UBND huyện Tiên Du" == agent.sys_location
    assert r.value(SYS_CONTACT) == agent.sys_contact
    assert r.int(SYS_UPTIME) >= 0
    assert r.value(SYS_OBJECT_ID) == sa.NET_SNMP


@need_snmpd
def test_v2c_over_ipv6(agent):
    if not agent.ipv6:
        prereq.need("IPv6 loopback (::1)", "enable IPv6 on lo: sysctl -w net.ipv6.conf.lo.disable_ipv6=0")
    r = snmpget("::1", agent.port, agent.community, SYS_NAME)
    assert r.ok and r.value() == "tien-du-core", r.stderr


@need_snmpd
def test_bulkwalk_lists_real_interfaces(agent):
    r = sa.snmpbulkwalk(agent.host, agent.port, agent.community, f"{IFX_ENTRY}.{IFX_NAME}")
    assert r.rc == 0, r.stderr
    names = [v for _, v in r.values.values()]
    assert "lo" in names, names
    r2 = sa.snmpbulkwalk(agent.host, agent.port, agent.community, f"{IF_ENTRY}.{sa.IF_SPEED}")
    assert len(r2.values) == len(names)


@need_snmpd
@pytest.mark.parametrize("user", ["u_sha_aes", "u_sha256_aes", "u_authnopriv", "u_noauth"])
def test_v3_users(agent, user):
    u = agent.users[user]
    r = snmpcmd("snmpget", agent.host, agent.port, SYS_NAME, v3=u)
    assert r.ok and r.value() == "tien-du-core", (u.level, r.stderr)


@need_snmpd
def test_v3_levels_and_protocols(agent):
    assert agent.users["u_sha_aes"].level == "authPriv"
    assert agent.users["u_sha256_aes"].auth_protocol == "SHA256"
    assert agent.users["u_authnopriv"].level == "authNoPriv"
    assert agent.users["u_noauth"].level == "noAuthNoPriv"
    # an authPriv user asking without privacy is refused by its rouser level
    u = agent.users["u_sha_aes"]
    args = ["-v3", "-u", u.name, "-l", "authNoPriv", "-a", "SHA", "-A", u.auth_key]
    r = snmpcmd("snmpget", agent.host, agent.port, SYS_NAME, v3_args=args)
    assert not r.ok and "authorizationError" in (r.stdout + r.stderr)


@need_snmpd
def test_wrong_community_times_out(agent):
    r = snmpget(agent.host, agent.port, agent.community + "x", SYS_NAME, timeout=0.5)
    assert r.rc != 0 and r.timed_out, (r.stdout, r.stderr)
    assert r.elapsed >= 0.45


@need_snmpd
def test_wrong_v3_auth_key_fails_fast(agent):
    u = agent.users["u_sha_aes"]
    r = snmpcmd("snmpget", agent.host, agent.port, SYS_NAME, v3_args=u.cli_args(auth_key="wrong-key-123"),
                timeout=3)
    assert r.rc != 0 and "Authentication failure" in r.stderr, r.stderr
    assert r.elapsed < 2.5


@need_snmpd
def test_wrong_v3_priv_key_times_out(agent):
    """A wrong privacy key is not reported by the agent: the PDU does not decrypt."""
    u = agent.users["u_sha_aes"]
    r = snmpcmd("snmpget", agent.host, agent.port, SYS_NAME, v3_args=u.cli_args(priv_key="wrong-key-123"),
                timeout=0.5)
    assert r.rc != 0 and r.timed_out, r.stderr


@need_snmpd
def test_unknown_v3_user(agent):
    u = agent.users["u_sha_aes"]
    r = snmpcmd("snmpget", agent.host, agent.port, SYS_NAME, v3_args=u.cli_args(name="nobody"), timeout=3)
    assert r.rc != 0 and "Unknown user name" in r.stderr, r.stderr
    assert r.elapsed < 2.5


@need_snmpd
def test_restart_is_a_reboot_and_stop_cleans_up():
    with NetSnmpAgent() as a:
        u = a.users["u_sha256_aes"]
        r1 = a.get([SYS_UPTIME, ENGINE_BOOTS])
        time.sleep(1.2)
        r1b = a.get(SYS_UPTIME)
        assert r1b.int() > r1.int(SYS_UPTIME)
        old_pid, port = a.pid, a.port
        a.restart()
        assert a.pid != old_pid and a.port == port and not _pid_alive(old_pid)
        r2 = a.get([SYS_UPTIME, ENGINE_BOOTS])
        assert r2.int(SYS_UPTIME) < r1b.int(), "sysUpTime must drop after a restart"
        assert r2.int(ENGINE_BOOTS) == r1.int(ENGINE_BOOTS) + 1
        r3 = snmpcmd("snmpget", a.host, a.port, SYS_NAME, v3=u)
        assert r3.ok, r3.stderr   # users survive the restart
        pid, d = a.pid, a.dir
    assert not _pid_alive(pid)
    assert sa.port_free("127.0.0.1", port)
    assert not d.exists()


@need_snmpd
def test_agent_stopped_when_body_raises():
    pid = None
    with pytest.raises(ZeroDivisionError):
        with NetSnmpAgent() as a:
            pid = a.pid
            1 / 0
    assert pid and not _pid_alive(pid)


# ---------------------------------------------------------------------------
# snmpsim
# ---------------------------------------------------------------------------

VENDORS = [sa.CISCO, sa.JUNIPER, sa.MIKROTIK, sa.HUAWEI, sa.NET_SNMP]
RATE = 250_000          # octets/s on eth0 of every device (2 Mbit/s)


def _fleet(n: int = 20) -> list[Device]:
    devs = []
    for k, addr in enumerate(sa.loopback_addresses(n)):
        devs.append(Device(
            community=f"sim-{k:02d}-{os.urandom(3).hex()}", address=addr, sys_name=f"sim-dev-{k:02d}",
            sys_object_id=VENDORS[k % len(VENDORS)], sys_descr=f"simulated {k}",
            sys_location="Xã Phật Tích" if k == 0 else "", sys_uptime=500_000 + k,
            interfaces=sa.standard_interfaces(2, rate=RATE), hc_counters=(k % 4 != 3)))
    return devs


@pytest.fixture(scope="module")
def fleet():
    if not _sim_ok:
        prereq.need("snmpsim", prereq.TEST_EXTRAS + " and " + prereq.NETSNMP, _sim_why)
    devs = _fleet()
    with SnmpSim(devs) as sim:
        yield sim, devs


@need_snmpsim
def test_twenty_devices_answer_with_their_own_data(fleet):
    sim, devs = fleet
    for k, d in enumerate(devs):
        r = snmpget(d.address, sim.port, d.community, [SYS_NAME, SYS_OBJECT_ID, SYS_UPTIME])
        assert r.ok, (d.address, r.stderr)
        assert r.value(SYS_NAME) == f"sim-dev-{k:02d}"
        assert r.value(SYS_OBJECT_ID) == VENDORS[k % len(VENDORS)]
        assert r.int(SYS_UPTIME) >= 500_000 + k
    assert sim.get(devs[0], SYS_LOCATION).value() == "Xã Phật Tích"


@need_snmpsim
def test_unknown_community_times_out(fleet):
    sim, devs = fleet
    r = snmpget(devs[0].address, sim.port, "no-such-community", SYS_NAME, timeout=0.5)
    assert r.rc != 0 and r.timed_out


@need_snmpsim
def test_interfaces_and_hc_columns(fleet):
    sim, devs = fleet
    r = sim.walk(devs[0], f"{IFX_ENTRY}.{IFX_NAME}")
    assert [v for _, v in r.values.values()] == ["lo", "eth0", "eth1"]
    hc = sim.get(devs[0], f"{IFX_ENTRY}.{IFX_HC_IN_OCTETS}.2")
    assert hc.ok and hc.values[f"{IFX_ENTRY}.{IFX_HC_IN_OCTETS}.2"][0] == "Counter64"
    no_hc = sim.get(devs[3], [f"{IFX_ENTRY}.{IFX_HC_IN_OCTETS}.2", f"{IF_ENTRY}.{IF_IN_OCTETS}.2"])
    assert no_hc.values[f"{IFX_ENTRY}.{IFX_HC_IN_OCTETS}.2"][0] == "ERROR"   # noSuchInstance
    assert no_hc.values[f"{IF_ENTRY}.{IF_IN_OCTETS}.2"][0] == "Counter32"
    walk = sim.walk(devs[3], IFX_ENTRY)
    assert not any(o.startswith(f"{IFX_ENTRY}.{IFX_HC_IN_OCTETS}.") for o in walk.values)


def _read(sim: SnmpSim, d: Device, oids) -> tuple[sa.SnmpResult, float, float]:
    """One GET and the wall-clock times just before and after it: the simulator computed its
    values somewhere in between."""
    t0 = time.time()
    r = sim.get(d, oids)
    t1 = time.time()
    assert r.ok, r.stderr
    return r, t0, t1


def _assert_on_model(got: int, value_at_epoch: int, rate: float, epoch: float, t0: float, t1: float, what="") -> None:
    """A growing counter serves value_at_epoch + rate * (now - epoch): between its values at t0
    and t1 (give or take the integer roundings)."""
    lo, hi = value_at_epoch + rate * (t0 - epoch), value_at_epoch + rate * (t1 - epoch)
    assert lo - 2 <= got <= hi + 2, (what, got, lo, hi, t0 - epoch)


@need_snmpsim
def test_counters_grow_at_the_given_rate(fleet):
    """Each reading is value_at_epoch + rate * (now - epoch), `now` pinned between the times around
    the request: the counters have grown at the given rate since the epoch (seconds ago), to
    better than 10 %, without waiting for them to grow."""
    sim, devs = fleet
    d = devs[1]
    eth = d.iface(2)
    oids = [f"{IF_ENTRY}.{IF_IN_OCTETS}.2", f"{IFX_ENTRY}.{IFX_HC_IN_OCTETS}.2", f"{IF_ENTRY}.{IF_OUT_OCTETS}.2"]
    models = [(eth.in_octets, RATE), (eth.in_octets, RATE), (eth.out_octets, RATE / 2)]
    readings = [_read(sim, d, oids) for _ in range(2)]
    for r, t0, t1 in readings:
        assert t1 - t0 < 0.1 * (t0 - sim.epoch), "too soon after the start to pin the rate to 10 %"
        for oid, (v0, rate) in zip(oids, models):
            _assert_on_model(r.int(oid), v0, rate, sim.epoch, t0, t1, oid)
    (a, _, _), (b, _, _) = readings
    assert all(b.int(oid) > a.int(oid) for oid in oids)


@need_snmpsim
def test_set_device_static_values_reload_without_restart(fleet):
    sim, devs = fleet
    d = devs[2]
    pid = sim.pid
    # 32-bit wrap between two polls: 4294967000 -> 200 (true count 2**32 + 200)
    eth = d.iface(2)
    before = d.with_iface(2, in_octets=4294967000, in_rate=0)
    assert sim.set_device(before) in ("reload", "restart")   # rate 250000 -> static: a changed line
    assert sim.get(d, f"{IF_ENTRY}.{IF_IN_OCTETS}.2").int() == 4294967000
    pid = sim.pid
    after = before.with_iface(2, in_octets=2 ** 32 + 200)
    assert sim.set_device(after) == "reload"
    assert sim.pid == pid
    r = sim.get(d, [f"{IF_ENTRY}.{IF_IN_OCTETS}.2", f"{IFX_ENTRY}.{IFX_HC_IN_OCTETS}.2"])
    assert r.int(f"{IF_ENTRY}.{IF_IN_OCTETS}.2") == 200
    assert r.int(f"{IFX_ENTRY}.{IFX_HC_IN_OCTETS}.2") == 2 ** 32 + 200
    # a reboot: sysUpTime drops to a low static value; then a rename, still no restart
    up = sim.get(d, SYS_UPTIME).int()
    assert up > 500_000
    assert sim.set_device(after.rebooted(1000)) == "reload"
    assert sim.get(d, SYS_UPTIME).int() == 1000
    assert sim.set_device(after.rebooted(1000).with_(sys_name="renamed")) == "reload"
    assert sim.get(d, SYS_NAME).value() == "renamed"
    assert sim.pid == pid
    # other devices are untouched
    assert sim.get(devs[5], SYS_NAME).value() == "sim-dev-05"
    sim.set_device(d)   # back to the original spec for the other tests
    assert sim.get(d, SYS_NAME).value() == "sim-dev-02" and eth.in_rate == RATE


@need_snmpsim
def test_set_device_changed_rate_restarts_the_simulator(fleet):
    sim, devs = fleet
    d = devs[4]
    oid = f"{IF_ENTRY}.{IF_IN_OCTETS}.2"
    sim.get(d, oid)                                    # the numeric settings are now cached
    pid = sim.pid
    fast = d.with_iface(2, in_rate=4 * RATE)
    assert sim.set_device(fast) == "restart"
    assert sim.pid != pid and not _pid_alive(pid)
    # it now serves the new rate: value_at_epoch + 4 x RATE x (now - epoch), the epoch seconds ago
    for _ in range(2):
        r, t0, t1 = _read(sim, d, oid)
        assert t1 - t0 < 0.1 * (t0 - sim.epoch)
        _assert_on_model(r.int(oid), fast.iface(2).in_octets, 4 * RATE, sim.epoch, t0, t1)
    # every device still answers after the restart
    for dev in devs:
        assert sim.get(dev, SYS_NAME).ok
    sim.set_device(d)


@need_snmpsim
def test_slow_agent_answers_after_its_delay_and_blocks_only_itself(fleet):
    sim, devs = fleet
    addr = sa.loopback_addresses(1, third=250, start=77)[0]
    spec = Device("slow-" + os.urandom(3).hex(), addr, "slow-dev", interfaces=sa.standard_interfaces(1))
    with sa.slow_agent(spec, 700) as slow:
        fast_name = slow.get(spec, SYS_NAME, timeout=3)
        assert fast_name.ok and fast_name.elapsed < 0.5        # only sysUpTime.0 is delayed
        # The slow request goes first, from a socket of ours: when send() returns its bytes are
        # in the agent's queue, so the other request below is made while the slow one waits.
        oids = [tuple(map(int, o.split("."))) for o in (SYS_UPTIME, SYS_NAME)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((addr, slow.port))
            t0 = time.monotonic()
            s.send(snmpwire.community_message(1, spec.community.encode(), snmpwire.pdu(snmpwire.GET, 4242, 0, 0, oids)))
            other = sim.get(devs[0], SYS_NAME, timeout=3)        # the main simulator is not blocked
            still_waiting = not select.select([s], [], [], 0)[0]
            answered = select.select([s], [], [], 3)[0]
            elapsed = time.monotonic() - t0
            reply = snmpwire.parse_community(s.recv(65535))[2] if answered else None
        assert other.ok and other.elapsed < 0.5, other.elapsed
        assert still_waiting, "the slow agent answered before its delay"
        assert reply is not None and reply.request_id == 4242 and reply.error_status == 0, reply
        assert dict(reply.varbinds)[oids[1]] == b"slow-dev"
        assert 0.65 <= elapsed < 2.5, elapsed
        # a client timeout shorter than the delay gives a timeout
        short = slow.get(spec, SYS_UPTIME, timeout=0.3)
        assert short.timed_out
        pid = slow.pid
    assert not _pid_alive(pid)


@need_snmpsim
def test_delay_refused_in_a_shared_simulator():
    a, b = sa.loopback_addresses(2, third=251)
    with pytest.raises(ValueError, match="own SnmpSim"):
        SnmpSim([Device("x1", a, "x1", delay_ms=100), Device("x2", b, "x2")])
    with pytest.raises(ValueError, match="loopback"):
        SnmpSim([Device("x1", "192.0.2.1", "x1")])


@need_snmpsim
def test_simulator_stopped_when_body_raises():
    addr = sa.loopback_addresses(1, third=252)[0]
    pid = port = None
    with pytest.raises(RuntimeError, match="boom"):
        with SnmpSim([Device("boom", addr, "boom")]) as sim:
            pid, port = sim.pid, sim.port
            raise RuntimeError("boom")
    assert pid and not _pid_alive(pid)
    assert sa.port_free(addr, port)


@need_snmpd
def test_extra_hosts_answer_on_the_same_port():
    with NetSnmpAgent(extra_hosts=["127.0.0.2", "127.0.0.3"], ipv6=False) as a:
        for h in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            r = snmpget(h, a.port, a.community, SYS_NAME)
            assert r.ok and r.value() == a.sys_name, (h, r.stderr)
        assert a.host6 is None


@need_snmpsim
def test_reboot_helper_with_growing_uptime_and_counter_reset(fleet):
    sim, devs = fleet
    d = devs[6]
    before = sim.get(d, [SYS_UPTIME, f"{IFX_ENTRY}.{IFX_HC_IN_OCTETS}.2"])
    spec = d.rebooted(1000, grows=True, reset_counters=True)
    assert sim.set_device(spec) == "restart"                   # growing from the reboot (spec.epoch)
    oids = [SYS_UPTIME, f"{IFX_ENTRY}.{IFX_HC_IN_OCTETS}.2", f"{IF_ENTRY}.{IF_IN_OCTETS}.2"]
    readings = [_read(sim, d, oids)]
    # the second reading one uptime tick (10 ms) after the first ended at least: two GETs within
    # one tick read the same sysUpTime (seen once in a full run)
    while time.time() < readings[0][2] + 0.011:
        pass
    readings.append(_read(sim, d, oids))
    for after, t0, t1 in readings:
        # sysUpTime: 10 s at the reboot, growing 100 ticks/s since; the counters from 102
        _assert_on_model(after.int(SYS_UPTIME), 1000, 100, spec.epoch, t0, t1, "uptime")
        _assert_on_model(after.int(oids[1]), 102, RATE, spec.epoch, t0, t1, "HC")
        _assert_on_model(after.int(oids[2]), 102, RATE, spec.epoch, t0, t1, "32-bit")
        assert after.int(oids[1]) < before.int(oids[1])      # a counter reset
    (a, _, _), (b, _, _) = readings
    assert 1000 < a.int(SYS_UPTIME) < b.int(SYS_UPTIME)      # growing again from 10 s
    sim.set_device(d)
