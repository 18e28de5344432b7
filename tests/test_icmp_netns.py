"""Integration tests of wanmon's ICMP sweep in the network-namespace lab.

wanmon is run as a user runs it:

    ip netns exec CLIENT python -m wanmon --config FILE check --json

against a temporary sites.toml that lists the lab's hosts (see tests/netns.py):
alive (kernel echo, v4+v6), the client namespace's own loopback, dead (never
answers), slow (userspace responder, fixed delay) and lossy (responder drops
every second request of a flow: exactly 50 % for an even count).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import prereq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netns  # noqa: E402

_ok, _why = netns.available()
pytestmark = prereq.needs(_ok, "network namespaces", prereq.NETNS, _why)

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SLOW_MS = 300
COUNT = 4
INTERVAL_MS = 200
TIMEOUT_MS = 1000
DEGRADED_RTT_MS = 150.0   # below the slow host's delay: slow must be "degraded"
SLACK_S = 3.0             # functional bound, not a benchmark
NO_NET_RAW = ["setpriv", "--inh-caps=-all", "--bounding-set=-net_raw"]

# id -> (lab attribute, level, district, parent)
SITES = {
    "alive4": ("alive4", "province", None, None),
    "alive6": ("alive6", "district", "D1", "alive4"),
    "lo4": ("loop4", "district", "D2", "alive4"),
    "lo6": ("loop6", "district", "D3", "alive4"),
    "dead4": ("dead4", "district", "D4", "alive4"),
    "dead6": ("dead6", "district", "D5", "dead4"),     # own down + parent down
    "c-up": ("127.0.0.2", "commune", "D4", "dead4"),   # parent down, itself up
    "slow4": ("slow4", "district", "D6", "alive4"),
    "slow6": ("slow6", "district", "D7", "alive4"),
    "lossy4": ("lossy4", "district", "D8", "alive4"),
    "lossy6": ("lossy6", "district", "D9", "alive4"),
}
UP_IDS = ("alive4", "alive6", "lo4", "lo6", "c-up")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PYTHONSAFEPATH", None)
    return env


@pytest.fixture(scope="module")
def wanmon_cli():
    cp = subprocess.run([PY, "-m", "wanmon", "--help"], cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=60)
    if cp.returncode != 0:
        pytest.fail(f"`{PY} -m wanmon --help` does not work yet (rc={cp.returncode}):\n"
                    f"{cp.stderr[-2000:]}")
    return True


@pytest.fixture(scope="module")
def lab():
    with netns.lab(slow_ms=SLOW_MS) as lb:
        yield lb


def _addr(lab, key: str) -> str:
    return getattr(lab, key) if hasattr(lab, key) else key


def write_config(folder: Path, lab, *, sites=SITES, count=COUNT, mode="auto",
                 store="var/wanmon.db") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "[store]",
        f'path = "{store}"',
        "[icmp]",
        f"count = {count}",
        f"interval_ms = {INTERVAL_MS}",
        f"timeout_ms = {TIMEOUT_MS}",
        "rate_pps = 1000",
        f'mode = "{mode}"',
        "[thresholds]",
        "degraded_loss_pct = 10.0",
        f"degraded_rtt_ms = {DEGRADED_RTT_MS}",
        "[snmp]",
        "enabled = false  # these tests are about ICMP",
        "[trace]  # and about the sweep: the agent's own traces are a tail of their own (test_outage_*)",
        "on_outage = false",
        "refresh_h = 0",
    ]
    for sid, (key, level, district, parent) in sites.items():
        lines += ["", "[[sites]]", f'id = "{sid}"', f'name = "Lab {sid}"', f'level = "{level}"',
                  f'address = "{_addr(lab, key)}"', 'admins = ["noc@lab.example"]']
        if district:
            lines.append(f'district = "{district}"')
        if parent:
            lines.append(f'parent = "{parent}"')
    path = folder / "sites.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _argv(cfg: Path, prefix=()) -> list[str]:
    return [*prefix, PY, "-m", "wanmon", "--config", str(cfg), "check", "--json"]


def run_check(lab, cfg: Path, prefix=(), timeout=120):
    t0 = time.monotonic()
    cp = lab.run(_argv(cfg, prefix), cwd=REPO, env=_env(), timeout=timeout)
    return cp, time.monotonic() - t0


def parse(cp) -> dict:
    assert cp.returncode == 0, f"rc={cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
    try:
        data = json.loads(cp.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"stdout is not JSON ({e}):\n{cp.stdout}\nstderr:\n{cp.stderr}")
    assert isinstance(data, list), data
    by_id = {o["id"]: o for o in data}
    assert len(by_id) == len(data), "duplicate ids in output"
    return by_id


def wall_bound(count=COUNT) -> float:
    return count * INTERVAL_MS / 1000 + TIMEOUT_MS / 1000 + SLACK_S


def check_results(by_id: dict, lab, sites=SITES, count=COUNT) -> None:
    assert set(by_id) == set(sites), (set(by_id) ^ set(sites))
    for sid, (key, level, district, parent) in sites.items():
        o = by_id[sid]
        ctx = json.dumps(o)
        for k in ("id", "name", "level", "district", "address", "status", "reason", "icmp"):
            assert k in o, f"missing {k}: {ctx}"
        assert o["name"] == f"Lab {sid}" and o["level"] == level, ctx
        assert o["district"] == district, ctx
        assert o["address"] == _addr(lab, key), ctx
        assert o["status"] in ("up", "degraded", "down", "unreachable", "unknown"), ctx
        assert o["reason"] is None or isinstance(o["reason"], str), ctx
        icmp = o["icmp"]
        for k in ("sent", "received", "loss_pct", "rtt_min_ms", "rtt_avg_ms", "rtt_max_ms",
                  "jitter_ms"):
            assert k in icmp, f"missing icmp.{k}: {ctx}"
        assert icmp["sent"] == count, ctx
        if icmp["received"]:
            assert icmp["rtt_min_ms"] <= icmp["rtt_avg_ms"] <= icmp["rtt_max_ms"], ctx
            assert icmp["jitter_ms"] is not None and icmp["jitter_ms"] >= 0, ctx
        else:
            for k in ("rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "jitter_ms"):
                assert icmp[k] is None, f"{k} must be null when nothing was received: {ctx}"

    def icmp(sid):
        return by_id[sid]["icmp"]

    for sid in UP_IDS:
        if sid not in sites:
            continue
        assert by_id[sid]["status"] == "up", json.dumps(by_id[sid])
        assert icmp(sid)["received"] == count and icmp(sid)["loss_pct"] == 0, json.dumps(by_id[sid])
        assert icmp(sid)["rtt_avg_ms"] < 50, json.dumps(by_id[sid])
    if "dead4" in sites:
        assert icmp("dead4")["received"] == 0 and icmp("dead4")["loss_pct"] == 100
        assert by_id["dead4"]["status"] == "down", json.dumps(by_id["dead4"])
    if "dead6" in sites:
        assert icmp("dead6")["received"] == 0 and icmp("dead6")["loss_pct"] == 100
        # down itself, and its parent dead4 is down: the outage is upstream
        assert by_id["dead6"]["status"] == "unreachable", json.dumps(by_id["dead6"])
    for sid in ("slow4", "slow6"):
        if sid not in sites:
            continue
        i = icmp(sid)
        assert i["received"] == count and i["loss_pct"] == 0, json.dumps(by_id[sid])
        assert SLOW_MS <= i["rtt_avg_ms"] <= SLOW_MS + 150, json.dumps(by_id[sid])
        assert i["rtt_min_ms"] >= SLOW_MS - 1, json.dumps(by_id[sid])
        assert by_id[sid]["status"] == "degraded", json.dumps(by_id[sid])
    for sid in ("lossy4", "lossy6"):
        if sid not in sites:
            continue
        i = icmp(sid)
        assert i["loss_pct"] == 50 and i["received"] == count // 2, json.dumps(by_id[sid])
        assert i["rtt_avg_ms"] < 50, json.dumps(by_id[sid])
        assert by_id[sid]["status"] == "degraded", json.dumps(by_id[sid])


# --------------------------------------------------------------------------


def test_check_sweep_results_and_wall_time(wanmon_cli, lab, tmp_path):
    cfg = write_config(tmp_path / "a", lab)
    cp, wall = run_check(lab, cfg)
    by_id = parse(cp)
    check_results(by_id, lab)
    # Two dead hosts (4 packets each, 1 s timeout) probed one after another
    # would take > 8 s; a sweep costs about count*interval + one timeout.
    assert wall <= wall_bound(), f"check took {wall:.2f}s > {wall_bound():.2f}s\n{cp.stderr}"
    assert (tmp_path / "a" / "var" / "wanmon.db").exists(), "store file not written"


def test_lossy_exactly_half_with_count_10(wanmon_cli, lab, tmp_path):
    sites = {k: SITES[k] for k in ("alive4", "lossy4", "lossy6", "dead4")}
    cfg = write_config(tmp_path, lab, sites=sites, count=10)
    cp, wall = run_check(lab, cfg)
    check_results(parse(cp), lab, sites=sites, count=10)
    assert wall <= wall_bound(10), f"check took {wall:.2f}s\n{cp.stderr}"


def test_two_concurrent_sweeps_do_not_cross_talk(wanmon_cli, lab, tmp_path):
    cfgs = [write_config(tmp_path / name, lab) for name in ("one", "two")]
    t0 = time.monotonic()
    procs = [lab.popen(_argv(c), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True) for c in cfgs]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        outs.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    wall = time.monotonic() - t0
    for cp in outs:
        check_results(parse(cp), lab)
    for name in ("one", "two"):
        assert (tmp_path / name / "var" / "wanmon.db").exists(), f"store {name} not written"
    assert wall <= wall_bound() + 2, f"two concurrent checks took {wall:.2f}s"


def _gate_ping_group_range(lab, value: str):
    class _Ctx:
        def __enter__(self):
            self.old = lab.sysctl("net.ipv4.ping_group_range").split()
            got = lab.sysctl("net.ipv4.ping_group_range", value).split()
            assert got == value.split(), got
            return self

        def __exit__(self, *exc):
            lab.sysctl("net.ipv4.ping_group_range", " ".join(self.old))
            return False
    return _Ctx()


@pytest.fixture(scope="module")
def no_net_raw(lab):
    if shutil.which("setpriv") is None:
        prereq.need("setpriv (util-linux)", "Debian package util-linux")
    # The prefix really takes CAP_NET_RAW away from a root process.
    probe = "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)"
    cp = lab.run([*NO_NET_RAW, PY, "-c", probe])
    assert cp.returncode != 0 and "PermissionError" in cp.stderr, cp.stderr
    cp = lab.run([PY, "-c", probe])
    assert cp.returncode == 0, cp.stderr
    return NO_NET_RAW


@pytest.mark.parametrize("mode", ["auto", "unprivileged"])
def test_unprivileged_sockets_without_cap_net_raw(wanmon_cli, lab, no_net_raw, tmp_path, mode):
    cfg = write_config(tmp_path, lab, mode=mode)
    with _gate_ping_group_range(lab, "0 0"):
        cp, wall = run_check(lab, cfg, prefix=no_net_raw)
    check_results(parse(cp), lab)
    assert wall <= wall_bound(), f"check took {wall:.2f}s\n{cp.stderr}"
    assert (tmp_path / "var" / "wanmon.db").exists(), "store file not written"


def test_no_icmp_permission_fails_clearly(wanmon_cli, lab, no_net_raw, tmp_path):
    cfg = write_config(tmp_path, lab, mode="auto")
    with _gate_ping_group_range(lab, "1 0"):
        cp, _ = run_check(lab, cfg, prefix=no_net_raw)
    assert cp.returncode == 1, f"rc={cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
    assert "CAP_NET_RAW" in cp.stderr, cp.stderr
    assert "ping_group_range" in cp.stderr, cp.stderr
    store = tmp_path / "var" / "wanmon.db"
    written = sorted(str(p) for p in tmp_path.rglob("wanmon.db*"))
    assert not store.exists() and not written, f"store written despite failure: {written}"


def test_a_link_local_address_with_its_zone_answers_and_a_missing_zone_is_a_config_error(lab, wanmon_cli, tmp_path):
    """fe80::…%<veth>: the alive host's link-local address, reached through the client's veth
    (issue 11). Without the zone, or with an interface that does not exist, the config says why."""
    client_if, alive_if = f"{lab.tag}ca", f"{lab.tag}ac"
    cp = lab.run(["ip", "-6", "-o", "addr", "show", "dev", alive_if, "scope", "link"], ns=lab.alive_ns)
    assert cp.returncode == 0 and "fe80::" in cp.stdout, cp.stdout + cp.stderr
    ll = cp.stdout.split("inet6", 1)[1].split()[0].split("/")[0]
    ping = lab.run(["ping", "-6", "-c", "1", "-W", "2", f"{ll}%{client_if}"])
    assert ping.returncode == 0, ping.stdout + ping.stderr      # the kernel's own ping reaches it

    sites = {"ll": (f"{ll}%{client_if}", "province", None, None), "lo4": ("loop4", "district", "D1", "ll")}
    cfg = write_config(tmp_path / "zone", lab, sites=sites, count=2)
    got = parse(run_check(lab, cfg)[0])
    assert got["ll"]["status"] == "up", got["ll"]
    assert got["ll"]["icmp"]["received"] == 2, got["ll"]

    for address, words in ((ll, "needs the interface"), (f"{ll}%wmnosuch0", "no network interface 'wmnosuch0'")):
        bad = write_config(tmp_path / address.replace(":", "_").replace("%", "_"), lab,
                           sites={"ll": (address, "province", None, None)})
        cp = lab.run([PY, "-m", "wanmon", "--config", str(bad), "validate"], cwd=REPO, env=_env())
        assert cp.returncode != 0 and words in cp.stderr, (address, cp.returncode, cp.stderr)
