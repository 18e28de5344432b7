"""Traces, `wanmon probe` and `wanmon topology` on the routed lab (tests/routed.py):

    agent -> core (the carrier's router, an [[hops]] entry) -> gia-binh (d1) -> dai-lai (c11)
                                                                           -> xuan-lai (c12)
                                                          -> luong-tai (d2) -> lai-ha (c21)

Everything runs as a user runs it, inside the agent's namespace (`ip netns exec`); links are
cut with `ip link set down` on the router before them and restored after each test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import prereq
import pytest
from conftest import REPO, wanmon

sys.path.insert(0, str(Path(__file__).resolve().parent))
import netns
import routed

from wanmon.config import load
from wanmon.model import Hop, Trace
from wanmon.trace import Names, stops

_ok, _why = netns.available()
pytestmark = prereq.needs(_ok, "network namespaces", prereq.NETNS, _why)

NO_NET_RAW = ["setpriv", "--inh-caps=-all", "--bounding-set=-net_raw"]
CORE_NAME = "Router lõi VNPT Bắc Ninh"
# site id -> (lab role, name, level, district, parent)
SITES = {
    "gia-binh": ("d1", "UBND huyện Gia Bình", "district", "Gia Bình", None),
    "dai-lai": ("c11", "UBND xã Đại Lai", "commune", "Gia Bình", "gia-binh"),
    "xuan-lai": ("c12", "UBND xã Xuân Lai", "commune", "Gia Bình", "gia-binh"),
    "luong-tai": ("d2", "UBND huyện Lương Tài", "district", "Lương Tài", None),
    "lai-ha": ("c21", "UBND xã Lai Hạ", "commune", "Lương Tài", "luong-tai"),
}


@pytest.fixture(scope="module")
def lab():
    with routed.lab() as lb:
        yield lb


@pytest.fixture
def cut(lab):
    """cut(role): take the link before `role` down until the test ends."""
    done = []

    def _cut(role: str) -> None:
        lab.cut(role)
        done.append(role)

    yield _cut
    for role in reversed(done):
        lab.restore(role)


def write_config(folder: Path, lab, parents: dict[str, str | None] | None = None, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = (
        textwrap.dedent(
            f"""\
        [store]
        path = "var/wanmon.db"
        [icmp]
        count = 3
        interval_ms = 50
        timeout_ms = 500
        [snmp]
        enabled = false
        [trace]
        timeout_ms = 1000
        [[hops]]
        address = "{lab.nodes["core"].addr}"
        name = "{CORE_NAME}"
        """
        )
        + extra
    )
    for sid, (role, name, level, district, parent) in SITES.items():
        parent = (parents or {}).get(sid, parent)
        text += f'\n[[sites]]\nid = "{sid}"\nname = "{name}"\nlevel = "{level}"\ndistrict = "{district}"\n'
        text += f'address = "{lab.nodes[role].addr}"\n' + (f'parent = "{parent}"\n' if parent else "")
    path = folder / "sites.toml"
    path.write_text(text, encoding="utf-8")
    return path


def run(lab, cfg: Path, *args: str, prefix: list[str] | None = None, timeout: float = 120):
    return wanmon("--config", str(cfg), *args, cwd=REPO, prefix=[*lab.prefix(), *(prefix or [])], timeout=timeout)


_TRACE = r"""
import asyncio, dataclasses, json, sys
from wanmon.config import TraceSettings
from wanmon.trace import trace
settings = TraceSettings(**json.loads(sys.argv[2]))
t = asyncio.run(trace(sys.argv[1], settings, mode=sys.argv[3]))
print(json.dumps(dataclasses.asdict(t)))
"""


def trace_in_lab(lab, address: str, mode: str = "auto", prefix: list[str] | None = None, **settings) -> Trace:
    """wanmon.trace.trace() run in the agent's namespace; its Trace."""
    cp = lab.run([*(prefix or []), sys.executable, "-c", _TRACE, address, json.dumps(settings), mode], cwd=REPO)
    assert cp.returncode == 0, cp.stderr
    d = json.loads(cp.stdout)
    return Trace(**{**d, "hops": tuple(Hop(**h) for h in d["hops"])})


def hops(t: Trace) -> list[tuple[int, str | None, bool]]:
    return [(h.distance, h.address, h.unreachable) for h in t.hops]


def rendered_tree(cfg: Path):
    """`wanmon render` (no packet: the page reads what topology kept in the store); its tree.html."""
    from test_tree import read_tree

    r = wanmon("--config", str(cfg), "render", cwd=cfg.parent)
    assert r.returncode == 0, r.stderr
    return read_tree(cfg.parent / "public")


# -- the trace ---------------------------------------------------------------------------


def test_a_whole_path_hop_by_hop(lab):
    n = lab.nodes
    t = trace_in_lab(lab, n["c11"].addr)
    assert t.reached and t.reason is None, t
    assert hops(t) == [(1, n["core"].addr, False), (2, n["d1"].addr, False), (3, n["c11"].addr, False)]
    assert all(h.rtt_ms is not None and 0 <= h.rtt_ms < 100 for h in t.hops)
    assert t.last_answer == t.hops[1]
    t2 = trace_in_lab(lab, n["d2"].addr)
    assert t2.reached and hops(t2) == [(1, n["core"].addr, False), (2, n["d2"].addr, False)]


def test_a_cut_is_told_at_its_hop_and_a_cut_further_up_at_its_own(lab, tmp_path, cut):
    """Acceptance 1, the trace's part: the commune's link behind the district router cut, the
    path stops after the district router, hop 2 of 3, named by its site; then the district's
    own uplink cut: it stops after the carrier's core, hop 1 of 3."""
    n = lab.nodes
    cfg = load(write_config(tmp_path, lab))
    names = Names.of(cfg)
    good = trace_in_lab(lab, n["c11"].addr)
    assert good.reached

    cut("c11")
    t = trace_in_lab(lab, n["c11"].addr)
    assert not t.reached
    assert hops(t) == [(1, n["core"].addr, False), (2, n["d1"].addr, True)]  # d1: "no route on"
    assert stops("vi", t, good, names) == f"đường truyền dừng sau {n['d1'].addr} (UBND huyện Gia Bình), hop 2 của 3"
    assert stops("en", t, good, names) == f"the path stops after {n['d1'].addr} (UBND huyện Gia Bình), hop 2 of 3"

    cut("d1")
    t = trace_in_lab(lab, n["c11"].addr)
    assert not t.reached and hops(t) == [(1, n["core"].addr, True)]
    assert stops("vi", t, good, names) == f"đường truyền dừng sau {n['core'].addr} ({CORE_NAME}), hop 1 của 3"


def test_the_trace_keeps_its_budget_on_a_silent_path(lab):
    """A router that drops silently (a blackhole route): nothing answers past it, and the trace
    ends at its budget, not after max_hops x attempts x timeout, with what answered by then."""
    n = lab.nodes
    prefix = f"{n['c12'].addr}/32"  # more specific than d1's own link to c12, which stays
    lab.run(["ip", "route", "add", "blackhole", prefix], role="d1")
    try:
        t = trace_in_lab(lab, n["c12"].addr, budget_s=1.5, attempts=5, timeout_ms=1000)
    finally:
        lab.run(["ip", "route", "del", "blackhole", prefix], role="d1")
    assert not t.reached and "budget of 1.5 s" in t.reason, t
    assert 1400 <= t.duration_ms <= 1500 + 300, t.duration_ms
    assert hops(t) == [(1, n["core"].addr, False)]


def test_the_trace_sends_only_to_its_target(lab, cut):
    """Every packet the agent sends while tracing (a whole path, then a cut one) is an ICMP echo
    request to the traced site: the routers only ever answer."""
    n = lab.nodes
    with lab.capture() as sent:
        assert trace_in_lab(lab, n["c21"].addr).reached
        cut("c11")
        assert not trace_in_lab(lab, n["c11"].addr).reached
    assert sent, "the capture saw nothing"
    assert {(proto, typ) for proto, _dst, typ in sent} == {(1, 8)}, sent
    assert {dst for _p, dst, _t in sent} == {n["c21"].addr, n["c11"].addr}, sent


def test_the_trace_without_cap_net_raw_reads_the_error_queue(lab, cut):
    """Unprivileged ICMP sockets (ping_group_range, no CAP_NET_RAW): the routers' answers come
    from the socket's error queue; the same hops as with raw sockets."""
    if shutil.which("setpriv") is None:
        prereq.need("setpriv (util-linux)", "Debian package util-linux")
    n = lab.nodes
    old = lab.run(["sysctl", "-n", "net.ipv4.ping_group_range"]).stdout.split()
    lab.run(["sysctl", "-q", "-w", "net.ipv4.ping_group_range=0 0"])
    try:
        t = trace_in_lab(lab, n["c11"].addr, mode="unprivileged", prefix=NO_NET_RAW)
        assert t.reached and hops(t) == [
            (1, n["core"].addr, False),
            (2, n["d1"].addr, False),
            (3, n["c11"].addr, False),
        ]
        cut("c11")
        t = trace_in_lab(lab, n["c11"].addr, mode="unprivileged", prefix=NO_NET_RAW)
        assert not t.reached and hops(t) == [(1, n["core"].addr, False), (2, n["d1"].addr, True)]
        with pytest.raises(AssertionError, match="CAP_NET_RAW"):
            trace_in_lab(lab, n["c11"].addr, mode="raw", prefix=NO_NET_RAW)
    finally:
        lab.run(["sysctl", "-q", "-w", f"net.ipv4.ping_group_range={' '.join(old)}"])


# -- wanmon probe --------------------------------------------------------------------------


def _path_lines(out: str) -> list[str]:
    lines = out.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("Path to "))
    return [line.split() for line in lines[i + 1 :] if line.startswith("  ")]


def test_probe_an_up_site_a_down_one_and_one_behind_a_down_parent(lab, tmp_path, cut):
    """Acceptance 5: each line true to what the lab does; exit 0, 1, 1."""
    n = lab.nodes
    cfg = write_config(tmp_path, lab)
    assert run(lab, cfg, "check").returncode == 0

    up = run(lab, cfg, "probe", "dai-lai")
    assert up.returncode == 0, up.stdout + up.stderr
    lines = up.stdout.splitlines()
    assert (
        lines[0]
        == f"Site dai-lai: UBND xã Đại Lai (commune, district Gia Bình, parent gia-binh), address {n['c11'].addr}"
    )
    assert lines[1] == f"ICMP: 3 echo requests to {n['c11'].addr}, 50 ms apart, each waited for 500 ms"
    assert [x.split(":")[0] for x in lines[2:5]] == ["  reply 1", "  reply 2", "  reply 3"]
    assert lines[5].startswith("ICMP: 3/3 replies, loss 0 %, RTT min/avg/max ")
    assert [p[:2] for p in _path_lines(up.stdout)[:3]] == [
        ["1", n["core"].addr],
        ["2", n["d1"].addr],
        ["3", n["c11"].addr],
    ]
    assert f"  1  {n['core'].addr}  ({CORE_NAME})  " in up.stdout
    assert f"  2  {n['d1'].addr}  (UBND huyện Gia Bình, gia-binh)  " in up.stdout
    assert up.stdout.splitlines()[-3].endswith("reached")
    assert lines[-2:] == ["SNMP: not enabled for this site", "Conclusion: up: it answers"]

    cut("c11")
    down = run(lab, cfg, "probe", "dai-lai")
    assert down.returncode == 1, down.stdout + down.stderr
    lines = down.stdout.splitlines()
    assert lines[2:6] == [
        "  request 1: no reply",
        "  request 2: no reply",
        "  request 3: no reply",
        "ICMP: 0/3 replies, loss 100 %",
    ]
    assert [p[:2] for p in _path_lines(down.stdout)] == [["1", n["core"].addr], ["2", n["d1"].addr]]
    assert "says: no route on (ICMP destination unreachable)" in lines[8]
    assert lines[9].startswith(
        f"Path: the path stops after {n['d1'].addr} (UBND huyện Gia Bình), hop 2 of 3 (last good path "
    )
    assert lines[-1] == "Conclusion: down: no reply to 3 echo requests"

    lab.restore("c11")
    cut("d1")
    assert run(lab, cfg, "check").returncode == 0  # the store now has gia-binh down
    behind = run(lab, cfg, "probe", "dai-lai")
    assert behind.returncode == 1, behind.stdout + behind.stderr
    lines = behind.stdout.splitlines()
    assert lines[5] == "ICMP: 0/3 replies, loss 100 %"
    assert [p[:2] for p in _path_lines(behind.stdout)] == [["1", n["core"].addr]]
    assert lines[8].startswith(f"Path: the path stops after {n['core'].addr} ({CORE_NAME}), hop 1 of 3 ")
    assert lines[-1].startswith("Conclusion: unreachable behind parent gia-binh (UBND huyện Gia Bình), down since ")
    status = json.loads(run(lab, cfg, "status", "--json").stdout)
    assert {s["id"]: s["status"] for s in status["sites"]}["gia-binh"] == "down"


def test_probe_an_unknown_site_exits_2_with_the_closest_id(lab, tmp_path):
    cfg = write_config(tmp_path, lab)
    cp = run(lab, cfg, "probe", "dai-lay")
    assert cp.returncode == 2 and cp.stdout == ""
    assert cp.stderr == f"wanmon: error: unknown site 'dai-lay' in {cfg} (did you mean 'dai-lai'?)\n"


# -- wanmon topology -----------------------------------------------------------------------


def test_topology_names_a_wrong_parent_with_the_right_one_and_its_evidence(lab, tmp_path):
    """Acceptance 3 (traceroute): xuan-lai configured under luong-tai hangs from gia-binh's
    router; the suggested patch, applied, leaves nothing to suggest (from the stored paths)."""
    cfg = write_config(tmp_path, lab, parents={"xuan-lai": "luong-tai"})
    cp = run(lab, cfg, "topology", "--json")
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout) == {
        "suggestions": [
            {
                "site": "xuan-lai",
                "configured_parent": "luong-tai",
                "discovered_parent": "gia-binh",
                "evidence": ["traceroute"],
            }
        ]
    }
    assert run(lab, cfg, "check").returncode == 0  # a store: topology keeps the paths it traces there
    text = run(lab, cfg, "topology")
    assert text.returncode == 0, text.stderr
    assert (
        "xuan-lai (UBND xã Xuân Lai): configured parent luong-tai (UBND huyện Lương Tài), found gia-binh" in text.stdout
    )
    n = lab.nodes
    assert (
        f"traceroute: {n['core'].addr} ({CORE_NAME}) -> {n['d1'].addr} (UBND huyện Gia Bình) -> "
        f"{n['c12'].addr} (UBND xã Xuân Lai)"
    ) in text.stdout
    # the page's tree draws it (wanmon/tree.py): xuan-lai under its configured parent, and again,
    # dashed, under gia-binh, the parent its path shows
    tree = rendered_tree(cfg)
    assert tree.find("g", id="n-xuan-lai").find_parent("details")["id"] == "b-luong-tai"
    assert tree.find("details", id="b-gia-binh").find("g", id="g-xuan-lai") is not None
    assert "thực tế qua UBND huyện Gia Bình (gia-binh) (theo traceroute)" in tree.select_one("ul.diffs li").get_text()
    diff = text.stdout[text.stdout.index(f"--- {cfg}") :]
    assert [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")] == [
        '-parent = "luong-tai"',
        '+parent = "gia-binh"',
    ]
    applied = subprocess.run(["patch", "-p0", str(cfg)], input=diff, capture_output=True, text=True)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert run(lab, cfg, "validate").returncode == 0
    again = run(lab, cfg, "topology", "--json")
    assert json.loads(again.stdout) == {"suggestions": []}
    assert "traced now" not in run(lab, cfg, "topology").stdout  # the stored good paths were used
    tree = rendered_tree(cfg)
    assert tree.find("g", id="n-xuan-lai").find_parent("details")["id"] == "b-gia-binh"
    assert tree.find("g", id="g-xuan-lai") is None and not tree.select("ul.diffs")


# -- LLDP (last: it leaves lldpd and snmpd running in the lab until its teardown) -----------

LLDP_MAN_ADDR = "1.0.8802.1.1.2.1.4.2.1.3"


def test_topology_with_lldp_neighbours_adds_their_evidence(lab, tmp_path):
    """Acceptance 3 (LLDP): lldpd in every site's namespace exports its neighbours through AgentX
    into a real snmpd there; topology reads them over SNMP and the wrong parent's suggestion has
    the evidence of both."""
    for tool, package in (("lldpd", "lldpd"), ("snmpd", "snmpd"), ("snmpwalk", "snmp")):
        if shutil.which(tool) is None:
            prereq.need(tool, f"Debian package {package}")
    community = "lab-community"
    roles = [role for role, *_ in SITES.values()]
    for role in roles:
        lab.snmpd(role, community)
    for role in roles:
        lab.lldpd(role)
    n = lab.nodes
    # xuan-lai's router has heard gia-binh's (its management address in the LLDP-MIB): wait for it
    walk = ["snmpwalk", "-v2c", "-c", community, "-On", "-t", "1", "-r", "0", n["c12"].addr, LLDP_MAN_ADDR]
    seen = ""
    for _ in range(60):
        seen = lab.run(walk).stdout
        if f".{n['d1'].addr} = " in seen:
            break
        lab.run(["sleep", "0.5"])
    assert f".{n['d1'].addr} = " in seen, seen
    (tmp_path / "community.txt").write_text(community + "\n")
    snmp = '[snmp]\nenabled = true\ncommunity_file = "community.txt"\ntimeout_ms = 1000\nretries = 1\n'
    cfg = write_config(tmp_path, lab, parents={"xuan-lai": "luong-tai"})
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("[snmp]\nenabled = false\n", snmp), encoding="utf-8")
    cp = run(lab, cfg, "topology", "--json")
    assert cp.returncode == 0, cp.stderr
    assert json.loads(cp.stdout) == {
        "suggestions": [
            {
                "site": "xuan-lai",
                "configured_parent": "luong-tai",
                "discovered_parent": "gia-binh",
                "evidence": ["traceroute", "lldp"],
            }
        ]
    }
    text = run(lab, cfg, "topology").stdout
    assert f"lldp: xuan-lai's device lists gia-binh ({n['d1'].addr}, d1) as a neighbour" in text, text
    assert "5 with LLDP neighbours read" in text, text
    # the same agents answer `wanmon probe`'s SNMP question (each line as the lab's snmpd has it)
    assert run(lab, cfg, "check").returncode == 0
    # with a store, topology keeps its finding: the page's tree gives both pieces of evidence
    assert json.loads(run(lab, cfg, "topology", "--json").stdout)["suggestions"][0]["evidence"] == ["traceroute", "lldp"]
    (item,) = rendered_tree(cfg).select("ul.diffs li")
    assert "(theo traceroute, LLDP)" in item.get_text()
    probe = run(lab, cfg, "probe", "xuan-lai", "-v")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    snmp_lines = [line for line in probe.stdout.splitlines() if line.startswith(("SNMP", "  sysDescr", "  interface"))]
    assert re.fullmatch(
        rf"SNMP v2c to {re.escape(n['c12'].addr)}:161: answered in \d+ ms: sysName 'c12', uptime \d+ s, "
        r"2 interfaces \(2 up\)",
        snmp_lines[0],
    ), snmp_lines
    assert snmp_lines[1].startswith("  sysDescr ") and "sysLocation 'Tầng 3, UBND huyện Tiên Du'" in snmp_lines[1]
    assert sorted(line.split(":")[0].split()[2] for line in snmp_lines[2:]) == ["lo", "up0"]  # its interfaces
