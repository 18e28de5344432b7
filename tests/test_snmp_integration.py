"""wanmon's SNMP polling end to end, run as a user runs it:

    python -m wanmon --config FILE check --json
    python -m wanmon --config FILE inventory --json | --csv

(subprocesses, secrets in the environment) against REAL agents on loopback
(tests/snmp_agents.py): Debian's net-snmp snmpd (v2c and SNMPv3 users) and
snmpsim devices whose data the tests change between two polls (32-bit wrap,
counter reset, reboot, growing counters, a slow agent, a stopped agent).

Every config uses `interval_s = 0` (poll SNMP every cycle) and its own store
in the test's tmp_path.  A rate from static counters is checked exactly, over
the time between the two readings of the interface table that wanmon recorded
(the store's snmp_if.sample_ts, within each poll); a rate from counters that
grow in real time, against the simulator's rate.

The arithmetic over time (wraps, resets, reboots, timeouts, back-off) is also
tested through the seams, with an injected clock and a fake SNMP peer, in
test_snmp_seams.py and test_cycle.py; here the real agents keep it honest.
Two tests still let real time pass, because real counters must grow: a real
snmpd's uptime before its restart, and growing counters.
"""
from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import prereq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import snmp_agents as sa  # noqa: E402
from conftest import REPO, wanmon  # noqa: E402
from snmp_agents import Device, Interface, NetSnmpAgent, SnmpSim, V3User  # noqa: E402

_ns_ok, _ns_why = sa.netsnmp_available()
_sim_ok, _sim_why = sa.snmpsim_available()
need_snmpd = prereq.needs(_ns_ok, "net-snmp (snmpd, snmpget)", prereq.NETSNMP, _ns_why)
need_snmpsim = prereq.needs(_sim_ok, "snmpsim", prereq.TEST_EXTRAS + " and " + prereq.NETSNMP, _sim_why)

C32 = 2 ** 32
RATE_IN = 1_250_000      # octets/s: 10 Mbit/s
RATE_OUT = 400_000       # octets/s: 3.2 Mbit/s
SPEED = 100_000_000      # 100 Mbit/s ports
SLOW_DELAY_MS = 10_000   # the slow agent's sysUpTime.0 answers after 10 s
ANSWERED = ("up", "degraded")   # ICMP status of a host that replies (degraded: some loss under load)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def wanmon_has_snmp():
    cp = subprocess.run([sys.executable, "-m", "wanmon", "inventory", "--help"], cwd=REPO,
                        capture_output=True, text=True, timeout=60)
    if cp.returncode != 0:
        pytest.fail(f"`python -m wanmon inventory --help` does not work (rc={cp.returncode}):\n"
                    f"{cp.stderr[-2000:]}")


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)   # a JSON string is a valid TOML basic string
    raise TypeError(v)


def config_text(sites: list[dict], snmp: dict | None = None, icmp: dict | None = None) -> str:
    """A sites.toml: [store], [icmp], [snmp] defaults, and sites (each may hold an "snmp" dict)."""
    out = ['[store]', 'path = "var/wanmon.db"', '', '[icmp]']
    for k, v in {"count": 3, "interval_ms": 50, "timeout_ms": 500, **(icmp or {})}.items():
        out.append(f"{k} = {_toml_value(v)}")
    out += ["", "[snmp]"]
    # generous for agents that answer (a loaded 2-core CI machine); tests that
    # expect a timeout and time it set their own timeout_ms/retries
    for k, v in {"enabled": True, "interval_s": 0, "timeout_ms": 2000, "retries": 1, **(snmp or {})}.items():
        out.append(f"{k} = {_toml_value(v)}")
    for s in sites:
        s = dict(s)
        own = s.pop("snmp", None)
        s.setdefault("level", "province")
        s.setdefault("name", s["id"])
        out += ["", "[[sites]]"] + [f"{k} = {_toml_value(v)}" for k, v in s.items()]
        if own is not None:
            out += ["[sites.snmp]"] + [f"{k} = {_toml_value(v)}" for k, v in own.items()]
    return "\n".join(out) + "\n"


class Run:
    """One config + store in a folder; runs wanmon there with the given env."""

    def __init__(self, folder: Path, text: str, env: dict | None = None, prefix: list[str] | None = None):
        self.dir = folder
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = folder / "sites.toml"
        self.path.write_text(text, encoding="utf-8")
        self.env = dict(env or {})
        self.prefix = prefix

    def cli(self, *args: str, ok: bool = True, timeout: float = 120, verbose: int = 0) -> subprocess.CompletedProcess:
        v = ["-" + "v" * verbose] if verbose else []
        r = wanmon(*v, "--config", str(self.path), *args, cwd=self.dir, env=self.env, timeout=timeout,
                   prefix=self.prefix)
        if ok:
            assert r.returncode == 0, f"wanmon {' '.join(args)} rc={r.returncode}\n{r.stderr[-3000:]}"
        return r

    def check(self) -> dict[str, dict]:
        r = self.cli("check", "--json")
        return {s["id"]: s for s in json.loads(r.stdout)}

    def inventory(self) -> dict[str, dict]:
        r = self.cli("inventory", "--json")
        return {s["id"]: s for s in json.loads(r.stdout)}


def _sample_ts(run: Run, site_id: str, if_index: int) -> float:
    """When wanmon read this interface's counters at its last poll (the store's snmp_if.sample_ts)."""
    con = sqlite3.connect(f"file:{run.dir / 'var' / 'wanmon.db'}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute("SELECT sample_ts FROM snmp_if WHERE site_id = ? AND if_index = ?",
                           (site_id, if_index)).fetchone()[0]
    finally:
        con.close()


def iface(inv_site: dict, name: str) -> dict:
    return next(i for i in inv_site["interfaces"] if i["name"] == name)


def reboots(inv_site: dict) -> list[dict]:
    return [e for e in inv_site["events"] if e["kind"] == "reboot"]


def within(got, want, rel=0.10) -> bool:
    return got is not None and abs(got - want) <= rel * abs(want)


def _sim_device(community: str, address: str, name: str, *, hc=True, in_octets=10_000_000,
                out_octets=5_000_000, in_rate=0.0, out_rate=0.0, uptime=500_000, vendor=sa.CISCO) -> Device:
    ifs = [
        Interface(1, "lo", descr="Loopback0", if_type=24, speed_bps=10_000_000, in_octets=1000, out_octets=1000),
        Interface(2, "eth0", descr="GigabitEthernet0/0", alias="WAN uplink", speed_bps=SPEED,
                  in_octets=in_octets, out_octets=out_octets, in_rate=in_rate, out_rate=out_rate,
                  in_errors=3, out_errors=1, in_discards=7, out_discards=2),
        Interface(3, "eth1", descr="GigabitEthernet0/1", alias="LAN", speed_bps=SPEED, oper_status=2,
                  admin_status=1),
    ]
    return Device(community, address, name, sys_object_id=vendor, sys_descr=f"{name} simulated",
                  sys_location="Xã Phật Tích", sys_contact="quantri@phattich.example", sys_uptime=uptime,
                  interfaces=ifs, hc_counters=hc)


def _set_eth0(dev: Device, **kw) -> Device:
    return dev.with_iface(2, **kw)


# ---------------------------------------------------------------------------
# agents (module scope: started once, stopped at the end even on failure)
# ---------------------------------------------------------------------------

SECRET_COMMUNITY = "S3cr3t-community-XYZ"
SECRET_AUTH = "authkey-XYZ-12345"
SECRET_PRIV = "privkey-XYZ-67890"
SECRET_AUTH256 = "authkey-XYZ-256-54321"
SECRET_PRIV256 = "privkey-XYZ-256-09876"
WRONG_COMMUNITY = "S3cr3t-wrongcomm-XYZ"
WRONG_AUTH = "authkey-XYZ-wrong-777"
FILE_COMMUNITY = "S3cr3t-filecomm-XYZ"   # never valid: read from a community_file
ALL_SECRETS = [SECRET_COMMUNITY, SECRET_AUTH, SECRET_PRIV, SECRET_AUTH256, SECRET_PRIV256, WRONG_COMMUNITY,
               WRONG_AUTH, FILE_COMMUNITY]

# 127.0.0.1 + these: one snmpd answers on several site addresses (wanmon wants one address per site)
NETSNMP_EXTRA = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"]


@pytest.fixture(scope="module")
def netsnmp():
    if not _ns_ok:
        prereq.need("net-snmp (snmpd, snmpget)", prereq.NETSNMP, _ns_why)
    users = [
        V3User("u_sha_aes", "SHA", SECRET_AUTH, "AES", SECRET_PRIV),
        V3User("u_sha256_aes", "SHA256", SECRET_AUTH256, "AES", SECRET_PRIV256),
        V3User("u_authnopriv", "SHA", SECRET_AUTH),
        V3User("u_noauth"),
    ]
    with NetSnmpAgent(community=SECRET_COMMUNITY, users=users, sys_name="tien-du-core",
                      extra_hosts=NETSNMP_EXTRA) as a:
        yield a


def _v3(user: V3User, auth_env="AK", priv_env="PK") -> dict:
    d = {"version": "3", "user": user.name, "auth_protocol": user.auth_protocol, "priv_protocol": user.priv_protocol}
    if user.auth_protocol != "none":
        d["auth_key_env"] = auth_env
    if user.priv_protocol != "none":
        d["priv_key_env"] = priv_env
    return d


@pytest.fixture(scope="module")
def fleet():
    """One snmpsim process, one device per scenario."""
    if not _sim_ok:
        prereq.need("snmpsim", prereq.TEST_EXTRAS + " and " + prereq.NETSNMP, _sim_why)
    tag = os.urandom(3).hex()
    addrs = iter(sa.loopback_addresses(10))
    devs = {
        "wrap32": _sim_device(f"wrap32-{tag}", next(addrs), "wrap32", hc=False, in_octets=4294967000),
        "reset": _sim_device(f"reset-{tag}", next(addrs), "reset", hc=True, in_octets=9_000_000_000,
                             out_octets=8_000_000_000, vendor=sa.JUNIPER),
        "grow64": _sim_device(f"grow64-{tag}", next(addrs), "grow64", hc=True, in_rate=RATE_IN,
                              out_rate=RATE_OUT, vendor=sa.HUAWEI),
        "grow32": _sim_device(f"grow32-{tag}", next(addrs), "grow32", hc=False, in_rate=RATE_IN,
                              out_rate=RATE_OUT, vendor=sa.MIKROTIK),
        "good": _sim_device(f"good-{tag}", next(addrs), "good", vendor=sa.NET_SNMP),
        "reboot": _sim_device(f"reboot-{tag}", next(addrs), "reboot", in_rate=RATE_IN),
    }
    with SnmpSim(list(devs.values())) as sim:
        sim.specs = devs
        yield sim


def _sim_site(sim: SnmpSim, key: str, env_name: str, **snmp) -> dict:
    d = sim.specs[key]
    return {"id": key, "address": d.address,
            "snmp": {"port": sim.port, "community_env": env_name, "uplink": "eth0", **snmp}}


def _sim_env(sim: SnmpSim, keys) -> dict:
    return {f"COMM_{k.upper()}": sim.specs[k].community for k in keys}


def _sim_run(tmp_path: Path, sim: SnmpSim, keys: list[str], name="run", **snmp) -> Run:
    sites = [_sim_site(sim, k, f"COMM_{k.upper()}", **snmp) for k in keys]
    return Run(tmp_path / name, config_text(sites), _sim_env(sim, keys))


# ---------------------------------------------------------------------------
# (a) net-snmp: v2c and v3
# ---------------------------------------------------------------------------


@need_snmpd
def test_netsnmp_v2c_and_v3_check_and_inventory(netsnmp, tmp_path):
    a = netsnmp
    u1, u2 = a.users["u_sha_aes"], a.users["u_sha256_aes"]
    u3, u4 = a.users["u_authnopriv"], a.users["u_noauth"]
    sites = [
        {"id": "v2c", "address": "127.0.0.1", "snmp": {"port": a.port}},
        {"id": "v3-sha-aes", "address": "127.0.0.2", "snmp": {"port": a.port, **_v3(u1)}},
        {"id": "v3-sha256-aes", "address": "127.0.0.3",
         "snmp": {"port": a.port, **_v3(u2, "AK256", "PK256")}},
        {"id": "v3-authnopriv", "address": "127.0.0.4", "snmp": {"port": a.port, **_v3(u3)}},
        {"id": "v3-noauth", "address": "127.0.0.5", "snmp": {"port": a.port, **_v3(u4)}},
    ]
    if a.ipv6:
        sites.append({"id": "v2c-ipv6", "address": "::1", "snmp": {"port": a.port}})
    run = Run(tmp_path, config_text(sites, snmp={"community_env": "COMM"}),
              {"COMM": a.community, "AK": u1.auth_key, "PK": u1.priv_key,
               "AK256": u2.auth_key, "PK256": u2.priv_key})
    res = run.check()
    for s in sites:
        snmp = res[s["id"]]["snmp"]
        assert snmp["status"] == "ok", (s["id"], snmp)
        assert snmp["reason"] is None
        assert snmp["sys_name"] == "tien-du-core"
        assert snmp["uptime_s"] is not None and snmp["uptime_s"] > 0
        assert isinstance(snmp["ts"], float) and abs(snmp["ts"] - time.time()) < 120
        assert res[s["id"]]["status"] in ANSWERED     # ICMP: loopback answers

    inv = run.inventory()
    # what the agent itself lists, through the net-snmp CLI
    walk = sa.snmpbulkwalk(a.host, a.port, a.community, f"{sa.IFX_ENTRY}.{sa.IFX_NAME}", timeout=3)
    names = {oid.rsplit(".", 1)[1]: v for oid, (_, v) in walk.values.items()}
    assert "lo" in names.values(), walk.stderr

    assert [x["id"] for x in inv.values()] == [s["id"] for s in sites]
    for s in sites:
        site = inv[s["id"]]
        assert site["snmp_status"] == "ok" and site["sys_name"] == "tien-du-core"
        assert site["sys_location"] == "Tầng 3, UBND huyện Tiên Du"
        assert site["sys_contact"] == a.sys_contact
        assert site["sys_object_id"] == sa.NET_SNMP
        assert site["sys_descr"] and site["uptime_s"] > 0
        assert site["first_seen"] and site["last_seen"] and site["last_reboot"] is None
        got = {str(i["if_index"]): i["name"] for i in site["interfaces"]}
        assert got == names, (got, names)
        lo = iface(site, "lo")
        assert lo["type"] == 24 and lo["oper_status"] == "up" and lo["admin_status"] == "up"
        assert isinstance(lo["speed_bps"], int)
        for i in site["interfaces"]:
            assert i["oper_status"] in ("up", "down", "testing", "unknown", "dormant", "notPresent",
                                        "lowerLayerDown"), i
            assert i["in_bps"] is None   # one poll: no rate yet
        assert site["events"] == []


@need_snmpd
def test_netsnmp_v1_check_and_inventory(netsnmp, tmp_path):
    """SNMPv1: GET and a GETNEXT walk; the agent has no Counter64 in v1, so the
    HC columns end at once and the interfaces fall back to the 32-bit counters."""
    a = netsnmp
    sites = [{"id": "v1", "address": "127.0.0.6", "snmp": {"port": a.port, "version": "1"}}]
    run = Run(tmp_path, config_text(sites, snmp={"community_env": "COMM"}), {"COMM": a.community})
    first = run.check()["v1"]["snmp"]
    assert first["status"] == "ok", first
    assert first["sys_name"] == "tien-du-core" and first["uptime_s"] > 0
    second = run.check()["v1"]["snmp"]    # a new process, a second or so later: time enough for a rate
    assert second["status"] == "ok" and second["uptime_s"] >= first["uptime_s"]
    walk = sa.snmpbulkwalk(a.host, a.port, a.community, f"{sa.IFX_ENTRY}.{sa.IFX_NAME}", timeout=3)
    names = {oid.rsplit(".", 1)[1]: v for oid, (_, v) in walk.values.items()}
    site = run.inventory()["v1"]
    assert site["snmp_status"] == "ok" and site["sys_object_id"] == sa.NET_SNMP
    assert {str(i["if_index"]): i["name"] for i in site["interfaces"]} == names
    lo = iface(site, "lo")
    assert lo["oper_status"] == "up" and isinstance(lo["speed_bps"], int)
    assert lo["in_bps"] is not None and lo["in_bps"] >= 0   # a rate from two polls of Counter32
    assert reboots(site) == []


@need_snmpd
def test_netsnmp_v3_protocol_matrix(tmp_path):
    """Every auth and privacy protocol wanmon offers, each with each, against a real snmpd: the
    keys and ciphers are wanmon's own (wanmon/probes/usm.py), net-snmp is the independent peer.
    One more user has non-ASCII pass phrases: both sides take them as UTF-8."""
    combos = [(a, p) for a in ("MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512")
              for p in ("none", "DES", "AES", "AES192", "AES256")]
    users = [V3User(f"u_{a.lower()}_{p.lower()}", a, f"ak-{a}-{os.urandom(4).hex()}", p,
                    None if p == "none" else f"pk-{p}-{os.urandom(4).hex()}") for a, p in combos]
    users.append(V3User("u_utf8", "SHA256", f"Mật khẩu Đông Cứu {os.urandom(2).hex()}", "AES256",
                        f"Khóa riêng Đại Phúc {os.urandom(2).hex()}"))
    hosts = ["127.0.0.1"] + [f"127.0.0.{i + 2}" for i in range(len(users) - 1)]
    with NetSnmpAgent(users=users, sys_name="ma-tran-v3", extra_hosts=hosts[1:]) as agent:
        sites, env = [], {}
        for i, u in enumerate(users):
            sites.append({"id": u.name.replace("_", "-"), "address": hosts[i],
                          "snmp": {"port": agent.port, **_v3(u, f"AK{i}", f"PK{i}"), "timeout_ms": 3000}})
            env[f"AK{i}"] = u.auth_key
            if u.priv_key:
                env[f"PK{i}"] = u.priv_key
        res = Run(tmp_path, config_text(sites), env).check()
    for s in sites:
        snmp = res[s["id"]]["snmp"]
        assert snmp["status"] == "ok", (s["id"], snmp)
        assert snmp["sys_name"] == "ma-tran-v3" and snmp["uptime_s"] is not None


@need_snmpd
def test_netsnmp_restart_is_one_reboot_event(tmp_path):
    with NetSnmpAgent(sys_name="reboots") as a:
        u = a.users["u_sha_aes"]
        sites = [{"id": "r2c", "address": "127.0.0.1", "snmp": {"port": a.port}},
                 {"id": "r3", "address": "::1" if a.ipv6 else "127.0.0.1",
                  "snmp": {"port": a.port, **_v3(u)}}]
        if not a.ipv6:
            sites = sites[:1]
        run = Run(tmp_path, config_text(sites, snmp={"community_env": "COMM"}),
                  {"COMM": a.community, "AK": u.auth_key, "PK": u.priv_key})
        time.sleep(4.0)        # an uptime clearly above what it will be right after the restart
        first = run.check()
        a.restart()
        second = run.check()
        third = run.check()
    for s in sites:
        assert first[s["id"]]["snmp"]["status"] == "ok"
        assert second[s["id"]]["snmp"]["status"] == "ok", second[s["id"]]["snmp"]
        assert third[s["id"]]["snmp"]["status"] == "ok"
        assert second[s["id"]]["snmp"]["uptime_s"] < first[s["id"]]["snmp"]["uptime_s"]
    inv = run.inventory()
    for s in sites:
        evs = reboots(inv[s["id"]])
        assert len(evs) == 1, inv[s["id"]]["events"]
        assert inv[s["id"]]["last_reboot"] is not None
        assert abs(evs[0]["ts"] - second[s["id"]]["snmp"]["ts"]) < 5


# ---------------------------------------------------------------------------
# (b) counter arithmetic with snmpsim: 32-bit wrap, reset, reboot, timeout
# ---------------------------------------------------------------------------


@need_snmpsim
def test_counter32_wrap_gives_the_true_rate(fleet, tmp_path):
    sim = fleet
    d0 = sim.specs["wrap32"]
    sim.set_device(_set_eth0(d0, in_octets=4294967000))
    run = _sim_run(tmp_path, sim, ["wrap32"])
    one = run.check()["wrap32"]["snmp"]
    assert one["status"] == "ok" and one["uplink"]["name"] == "eth0", one
    assert one["uplink"]["in_bps"] is None           # first sample: no rate yet
    how = sim.set_device(_set_eth0(d0, in_octets=C32 + 200))
    assert how == "reload"
    assert sim.get(d0, f"{sa.IF_ENTRY}.{sa.IF_IN_OCTETS}.2").int() == 200
    t1 = _sample_ts(run, "wrap32", 2)
    two = run.check()["wrap32"]["snmp"]
    assert two["status"] == "ok"
    # The counters are static: the true rate is the wrapped delta over the time between the two
    # readings of the table (which wanmon records), whatever the load; and those readings are
    # the two polls' (each within its poll, ts taken at its start).
    t2 = _sample_ts(run, "wrap32", 2)
    elapsed = t2 - t1
    assert one["ts"] <= t1 < two["ts"] <= t2 and abs(elapsed - (two["ts"] - one["ts"])) < 1.0, (t1, t2, one, two)
    want = (200 + C32 - 4294967000) * 8 / elapsed
    assert within(two["uplink"]["in_bps"], want, rel=1e-6), (two["uplink"], want, elapsed)
    assert two["uplink"]["out_bps"] == 0
    eth0 = iface(run.inventory()["wrap32"], "eth0")
    assert within(eth0["in_bps"], want, rel=1e-6)
    assert within(eth0["util_in_pct"], 100 * want / SPEED, rel=1e-6)
    assert reboots(run.inventory()["wrap32"]) == []
    sim.set_device(d0)


@need_snmpsim
def test_counter_reset_with_reboot_gives_no_rate_then_one_reboot_event(fleet, tmp_path):
    sim = fleet
    d0 = sim.specs["reset"]
    run = _sim_run(tmp_path, sim, ["reset"])
    one = run.check()["reset"]["snmp"]
    assert one["status"] == "ok" and one["uptime_s"] > 4000, one
    # the device reboots: sysUpTime restarts from 10 s, every counter restarts low
    assert sim.set_device(d0.rebooted(1000, grows=True, reset_counters=True)) == "restart"
    two = run.check()["reset"]["snmp"]
    assert two["status"] == "ok"
    assert two["uptime_s"] < 60
    assert two["uplink"]["in_bps"] is None and two["uplink"]["out_bps"] is None, two["uplink"]
    inv = run.inventory()["reset"]
    for i in inv["interfaces"]:
        for k in ("in_bps", "out_bps", "util_in_pct", "util_out_pct"):
            assert i[k] is None, (i["name"], k, i[k])     # no rate, no spike, never negative
    assert len(reboots(inv)) == 1, inv["events"]
    assert inv["last_reboot"] is not None
    # booted about uptime seconds before the poll
    assert abs(inv["last_reboot"] - (two["ts"] - two["uptime_s"])) < 5
    ev = reboots(inv)[0]
    assert set(ev) >= {"ts", "kind", "detail"} and isinstance(ev["detail"], str)
    # a following normal poll (a new process: a second or so later): rates again (static
    # counters: 0), and no second reboot
    three = run.check()["reset"]["snmp"]
    assert three["status"] == "ok" and three["uptime_s"] > two["uptime_s"]
    assert three["uplink"]["in_bps"] == 0
    inv = run.inventory()["reset"]
    assert len(reboots(inv)) == 1, inv["events"]
    sim.set_device(d0)


@need_snmpsim
def test_reboot_by_static_uptime_drop_is_one_event(fleet, tmp_path):
    """The brief's plain form: sysUpTime 500000 -> 1000 (static) between two polls."""
    sim = fleet
    d0 = sim.specs["reboot"]
    sim.set_device(d0.with_(sys_uptime=500_000, uptime_grows=False))
    run = _sim_run(tmp_path, sim, ["reboot"])
    one = run.check()["reboot"]["snmp"]
    assert one["status"] == "ok" and one["uptime_s"] == 5000.0
    assert sim.set_device(d0.rebooted(1000)) == "reload"
    two = run.check()["reboot"]["snmp"]
    assert two["status"] == "ok" and two["uptime_s"] == 10.0
    inv = run.inventory()["reboot"]
    assert len(reboots(inv)) == 1 and inv["last_reboot"] is not None
    assert abs(inv["last_reboot"] - (two["ts"] - 10.0)) < 2
    assert reboots(inv)[0]["data"] == {"uptime_was_s": 5000.0, "uptime_s": 10.0}  # figures, not only text
    run.check()
    inv = run.inventory()["reboot"]
    assert len(reboots(inv)) == 1, inv["events"]
    sim.set_device(d0)


@need_snmpsim
def test_timeout_is_not_a_reboot(tmp_path):
    addr = sa.loopback_addresses(1, third=253)[0]
    dev = _sim_device("down-" + os.urandom(3).hex(), addr, "goes-down", in_rate=RATE_IN)
    with SnmpSim([dev]) as sim:
        sim.specs = {"down": dev}
        run = _sim_run(tmp_path, sim, ["down"], timeout_ms=1000, retries=1)
        one = run.check()["down"]["snmp"]
        assert one["status"] == "ok"
        sim.stop()
        down = run.check()["down"]
        assert down["snmp"]["status"] == "timeout", down["snmp"]
        assert down["status"] in ANSWERED               # ICMP still answers: only the agent is gone
        assert down["snmp"]["reason"]
        inv = run.inventory()["down"]
        assert inv["snmp_status"] == "timeout" and reboots(inv) == [] and inv["last_reboot"] is None
        sim.start()            # same port, counters continue (no reboot); returns once it answers
        back = run.check()["down"]["snmp"]
        assert back["status"] == "ok"
    inv = run.inventory()["down"]
    assert reboots(inv) == [] and inv["last_reboot"] is None, inv["events"]
    # the rate after the gap is measured from the last good sample: never a spike
    in_bps = back["uplink"]["in_bps"]
    assert in_bps is None or within(in_bps, RATE_IN * 8), back["uplink"]


# ---------------------------------------------------------------------------
# (c) growing counters: 64-bit, and 32-bit only (fallback)
# ---------------------------------------------------------------------------


@need_snmpsim
def test_growing_counters_give_rates_hc_and_32bit_fallback(fleet, tmp_path):
    sim = fleet
    run = _sim_run(tmp_path, sim, ["grow64", "grow32"])
    one = run.check()
    time.sleep(5.0)      # the sample's ts is taken before the GETs: a longer gap dilutes that jitter
    two = run.check()
    for key in ("grow64", "grow32"):
        a, b = one[key]["snmp"], two[key]["snmp"]
        assert a["status"] == b["status"] == "ok", (key, b)
        up = b["uplink"]
        assert up["name"] == "eth0" and up["if_index"] == 2
        assert within(up["in_bps"], RATE_IN * 8), (key, up)
        assert within(up["out_bps"], RATE_OUT * 8), (key, up)
        assert within(up["util_in_pct"], 100 * RATE_IN * 8 / SPEED), (key, up)
    inv = run.inventory()
    for key in ("grow64", "grow32"):
        site = inv[key]
        eth0 = iface(site, "eth0")
        assert within(eth0["in_bps"], RATE_IN * 8) and within(eth0["out_bps"], RATE_OUT * 8)
        assert eth0["speed_bps"] == SPEED and eth0["alias"] == "WAN uplink"
        assert eth0["descr"] == "GigabitEthernet0/0" and eth0["type"] == 6
        assert (eth0["in_errors"], eth0["out_errors"], eth0["in_discards"], eth0["out_discards"]) == (3, 1, 7, 2)
        assert eth0["oper_status"] == "up" and iface(site, "eth1")["oper_status"] == "down"
        assert iface(site, "eth1")["in_bps"] == 0
        assert site["sys_location"] == "Xã Phật Tích"
    assert inv["grow64"]["sys_object_id"] == sa.HUAWEI and inv["grow32"]["sys_object_id"] == sa.MIKROTIK


# ---------------------------------------------------------------------------
# (d) failures: wrong community, wrong v3 key, unknown user, slow agent
# ---------------------------------------------------------------------------


@need_snmpd
@need_snmpsim
def test_failures_are_classified_and_do_not_hold_up_good_sites(netsnmp, fleet, tmp_path):
    a, sim = netsnmp, fleet
    u = a.users["u_sha_aes"]
    slow_addr = sa.loopback_addresses(1, third=254)[0]
    slow_dev = _sim_device("slow-" + os.urandom(3).hex(), slow_addr, "slow")
    with sa.slow_agent(slow_dev, SLOW_DELAY_MS) as slow:
        sites = [
            _sim_site(sim, "good", "COMM_GOOD"),
            {"id": "bad-community", "address": sim.specs["grow64"].address,
             "snmp": {"port": sim.port, "community_env": "COMM_BAD", "timeout_ms": 1000, "retries": 0}},
            {"id": "v3-ok", "address": "127.0.0.2", "snmp": {"port": a.port, **_v3(u)}},
            {"id": "v3-wrong-key", "address": "127.0.0.3",
             "snmp": {"port": a.port, **_v3(u, "AK_BAD", "PK"), "timeout_ms": 5000, "retries": 1}},
            {"id": "v3-unknown-user", "address": "127.0.0.4",
             "snmp": {"port": a.port, **_v3(V3User("nobody", "SHA", SECRET_AUTH, "AES", SECRET_PRIV)),
                      "timeout_ms": 5000, "retries": 1}},
            {"id": "slow", "address": slow_addr,
             "snmp": {"port": slow.port, "community_env": "COMM_SLOW", "timeout_ms": 1000, "retries": 0}},
        ]
        env = {"COMM_GOOD": sim.specs["good"].community, "COMM_BAD": WRONG_COMMUNITY,
               "COMM_SLOW": slow_dev.community, "AK": u.auth_key, "PK": u.priv_key, "AK_BAD": WRONG_AUTH}
        run = Run(tmp_path, config_text(sites), env)
        t0 = time.monotonic()
        res = run.check()
        wall = time.monotonic() - t0
    s = {k: v["snmp"] for k, v in res.items()}
    assert s["good"]["status"] == "ok" and s["good"]["sys_name"] == "good"
    assert s["v3-ok"]["status"] == "ok" and s["v3-ok"]["sys_name"] == "tien-du-core"
    assert s["bad-community"]["status"] == "timeout"
    assert "community" in s["bad-community"]["reason"].lower(), s["bad-community"]
    assert s["v3-wrong-key"]["status"] == "auth_error", s["v3-wrong-key"]
    assert s["v3-unknown-user"]["status"] == "auth_error", s["v3-unknown-user"]
    assert "nobody" in s["v3-unknown-user"]["reason"] or "user" in s["v3-unknown-user"]["reason"].lower()
    assert s["slow"]["status"] == "timeout", s["slow"]
    for k in ("bad-community", "v3-wrong-key", "v3-unknown-user", "slow"):
        assert s[k]["sys_name"] is None and s[k]["uptime_s"] is None, (k, s[k])
        assert res[k]["status"] in ANSWERED            # ICMP is independent of SNMP
    # Auth errors come back at once (waiting them out would take 2 x 5 s), and the
    # slow agent (10 s) costs only its own 1 s timeout, in parallel with the rest.
    # Generous: wanmon's own start-up takes 1-3 s on a busy 2-core machine.
    assert wall < 8.0, f"check took {wall:.1f} s"


@need_snmpd
def test_wrong_v3_key_is_reported_quickly_alone(netsnmp, tmp_path):
    a = netsnmp
    u = a.users["u_sha256_aes"]
    sites = [{"id": "k", "address": "127.0.0.6",
              "snmp": {"port": a.port, **_v3(u), "timeout_ms": 5000, "retries": 2}}]
    run = Run(tmp_path, config_text(sites), {"AK": "authkey-XYZ-not-it", "PK": u.priv_key})
    t0 = time.monotonic()
    s = run.check()["k"]["snmp"]
    wall = time.monotonic() - t0
    assert s["status"] == "auth_error" and s["reason"], s
    assert "authkey-XYZ-not-it" not in s["reason"]
    assert wall < 5.0, wall     # a timeout would be 3 x 5 s


# ---------------------------------------------------------------------------
# (e) ICMP x SNMP in one check
# ---------------------------------------------------------------------------


@need_snmpsim
def test_icmp_and_snmp_are_independent_on_loopback(fleet, tmp_path):
    sim = fleet
    no_agent = sa.loopback_addresses(1, third=249, start=200)[0]     # ICMP answers, nothing on the port
    sites = [_sim_site(sim, "good", "COMM_GOOD"),
             {"id": "no-agent", "address": no_agent,
              "snmp": {"port": sim.port, "community_env": "COMM_GOOD"}},
             {"id": "snmp-off", "address": "127.0.0.1", "snmp": {"enabled": False}}]
    run = Run(tmp_path, config_text(sites), {"COMM_GOOD": sim.specs["good"].community})
    res = run.check()
    assert res["good"]["status"] in ANSWERED and res["good"]["snmp"]["status"] == "ok"
    assert res["no-agent"]["status"] in ANSWERED and res["no-agent"]["snmp"]["status"] == "timeout"
    assert res["snmp-off"]["status"] in ANSWERED and res["snmp-off"]["snmp"]["status"] == "disabled"
    inv = run.inventory()
    assert inv["no-agent"]["snmp_status"] == "timeout" and inv["no-agent"]["interfaces"] == []


def _netns_ok() -> tuple[bool, str]:
    try:
        import netns
    except Exception as exc:   # pragma: no cover
        return False, f"tests/netns.py not importable: {exc}"
    return netns.available()


@need_snmpd
def test_icmp_and_snmp_combinations_in_a_namespace(tmp_path):
    """In the lab's client namespace: both up (snmpd on that namespace's own
    loopback), ICMP up + SNMP down (another loopback address, no agent), and
    both down (the lab's `dead` host), all in one check. A site that does not
    answer ICMP is not SNMP-polled that cycle (its agent's timeout would only
    cost time): its SNMP status says so, and nothing is recorded for it."""
    ok, why = _netns_ok()
    if not ok:
        prereq.need("network namespaces", prereq.NETNS, why)
    import netns
    with netns.lab() as lab:
        with NetSnmpAgent(netns=lab.client, sys_name="ns-agent") as a:
            sites = [
                {"id": "both-up", "address": "127.0.0.1", "snmp": {"port": a.port}},
                {"id": "icmp-only", "address": "127.0.0.2", "snmp": {"port": a.port}},
                {"id": "both-down", "address": lab.dead4, "snmp": {"port": a.port}},
                {"id": "alive-no-agent", "address": lab.alive4, "snmp": {"port": a.port}},
            ]
            run = Run(tmp_path, config_text(sites, snmp={"community_env": "COMM"},
                                            icmp={"count": 2, "timeout_ms": 500}),
                      {"COMM": a.community}, prefix=[sa._which("ip"), "netns", "exec", lab.client])
            res = run.check()
    assert res["both-up"]["status"] in ANSWERED and res["both-up"]["snmp"]["status"] == "ok"
    assert res["both-up"]["snmp"]["sys_name"] == "ns-agent"
    assert res["icmp-only"]["status"] in ANSWERED and res["icmp-only"]["snmp"]["status"] == "timeout"
    assert res["alive-no-agent"]["status"] in ANSWERED and res["alive-no-agent"]["snmp"]["status"] == "timeout"
    assert res["both-down"]["status"] == "down" and res["both-down"]["snmp"]["status"] == "not_polled"
    assert "ICMP" in res["both-down"]["snmp"]["reason"] and res["both-down"]["snmp"]["ts"] is None


# ---------------------------------------------------------------------------
# (f) secrets never leak
# ---------------------------------------------------------------------------


@need_snmpd
def test_secrets_never_appear_in_output_logs_or_store(netsnmp, tmp_path):
    a = netsnmp
    u1, u2 = a.users["u_sha_aes"], a.users["u_sha256_aes"]
    assert (a.community, u1.auth_key, u1.priv_key) == (SECRET_COMMUNITY, SECRET_AUTH, SECRET_PRIV)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "community.txt").write_text(FILE_COMMUNITY + "\n")
    sites = [
        {"id": "v2c", "address": "127.0.0.1", "snmp": {"port": a.port, "community_env": "COMM"}},
        {"id": "v3", "address": "127.0.0.2", "snmp": {"port": a.port, **_v3(u1)}},
        {"id": "v3-256", "address": "127.0.0.3", "snmp": {"port": a.port, **_v3(u2, "AK256", "PK256")}},
        {"id": "bad-comm", "address": "127.0.0.4", "snmp": {"port": a.port, "community_env": "COMM_BAD"}},
        {"id": "file-comm", "address": "127.0.0.5",
         "snmp": {"port": a.port, "community_file": "community.txt"}},
        {"id": "bad-key", "address": "127.0.0.6", "snmp": {"port": a.port, **_v3(u1, "AK_BAD", "PK")}},
    ]
    env = {"COMM": SECRET_COMMUNITY, "COMM_BAD": WRONG_COMMUNITY, "AK": SECRET_AUTH, "PK": SECRET_PRIV,
           "AK256": SECRET_AUTH256, "PK256": SECRET_PRIV256, "AK_BAD": WRONG_AUTH}
    run = Run(tmp_path / "run", config_text(sites, snmp={"timeout_ms": 500}), env)
    outputs = []
    for args, verbose in [
        (("validate",), 2),
        (("check", "--json"), 0), (("check", "--json"), 2), (("check",), 2),
        (("inventory", "--json"), 0), (("inventory", "--json"), 2), (("inventory", "--csv"), 2),
        (("inventory",), 2), (("inventory", "--refresh", "--json"), 2),
        (("status",), 2), (("status", "--json"), 2),
    ]:
        r = run.cli(*args, verbose=verbose)
        outputs.append((args, verbose, r.stdout + r.stderr))
    # the run did what it should (so the search below means something)
    res = run.check()
    assert [res[k]["snmp"]["status"] for k in ("v2c", "v3", "v3-256", "bad-key")] == ["ok", "ok", "ok", "auth_error"]
    for k in ("bad-comm", "file-comm"):  # timed out at every poll so far: backed off now, and said so
        assert res[k]["snmp"]["status"] == "not_due" and "no SNMP answer since" in res[k]["snmp"]["reason"], res[k]
    out = run.cli("inventory", "--csv").stdout
    assert out.startswith("\ufeff"), out[:40]  # UTF-8 with a BOM: Excel reads the Vietnamese right
    table = list(csv.reader(io.StringIO(out[1:])))
    assert {len(r) for r in table} == {len(table[0])}, "every row has every column"  # one shape per row
    rows = [dict(zip(table[0], r)) for r in table[1:]]
    assert any(r["site_id"] == "v2c" and r.get("if_name") == "lo" for r in rows), rows[:3]
    assert any(r["site_id"] == "bad-comm" and r["if_index"] == "" for r in rows), rows  # no interfaces: empty cells
    assert any("DEBUG" in out for _, v, out in outputs if v == 2), "-vv gave no debug log at all"
    for args, verbose, out in outputs:
        for secret in ALL_SECRETS:
            assert secret not in out, f"{secret!r} leaked by wanmon {'-vv ' if verbose else ''}{' '.join(args)}"
    var = run.dir / "var"
    files = [p for p in var.rglob("*") if p.is_file()]
    assert any(p.name == "wanmon.db" for p in files), files
    for p in files:
        data = p.read_bytes()
        for secret in ALL_SECRETS:
            for form in (secret.encode(), secret.encode("utf-16-le")):
                assert form not in data, f"{secret!r} found in {p}"


@need_snmpd
def test_terminal_escapes_in_a_sysname_are_shown_not_sent_to_the_terminal(tmp_path):
    """A router whose sysName holds ESC]0;… (set the terminal title) and ESC[31m (colour):
    `inventory`, `--csv`, `status`, the logs and the page show them escaped, never raw (issue 11)."""
    hostile = "r1\x1b]0;pwned\x07\x1b[31mred\x1b[0m"
    with NetSnmpAgent(sys_name=hostile) as a:
        sites = [{"id": "esc", "address": "127.0.0.1", "snmp": {"port": a.port}}]
        run = Run(tmp_path, config_text(sites, snmp={"community_env": "COMM"}), {"COMM": a.community})
        res = run.check()
        assert res["esc"]["snmp"]["sys_name"] == hostile          # the data is kept as the device sent it (JSON)
        outputs = {
            "inventory": run.cli("inventory").stdout,
            "inventory --csv": run.cli("inventory", "--csv").stdout,
            "inventory --refresh -v": (lambda r: r.stdout + r.stderr)(run.cli("inventory", "--refresh", verbose=2)),
            "status": run.cli("status").stdout,
        }
    for what, text in outputs.items():
        assert "\x1b" not in text and "\x07" not in text, (what, text)
    assert "r1\\x1b]0;pwned\\x07\\x1b[31mred" in outputs["inventory --csv"], outputs["inventory --csv"]
    assert "r1\\x1b]0;pwned" in outputs["inventory"], outputs["inventory"]
    html = (tmp_path / "public" / "index.html").read_text(encoding="utf-8")
    raw_json = (tmp_path / "public" / "status.json").read_bytes()
    assert not any(c in html for c in "\x00\x07\x1b"), "raw control characters in index.html"
    assert "r1\\x1b]0;pwned" in html
    assert not any(b in raw_json for b in (b"\x00", b"\x07", b"\x1b"))
