"""A routed lab of network namespaces (no pytest dependency), for traces and topology.

    agent ----veth---- core ----veth---- district d1 ----veth---- commune c11
                            |                       `---veth---- commune c12
                            `---veth---- district d2 ----veth---- commune c21 ...

Every box is a namespace of its own; the ones in the middle forward IPv4
(net.ipv4.ip_forward=1), so a probe with a short TTL expires on a router that
answers with ICMP time exceeded, and a cut link (`cut`) makes the router before
it answer "network unreachable": real multi-hop paths, as on the province's WAN.

Addressing (inside the lab only, 198.19.0.0/16, the upper half of netns.py's
198.18.0.0/15): link 0 joins the agent (198.19.0.1) and the core (198.19.0.2);
link L (1, 2, ... in build order) joins a parent (198.19.L.1) and its child
(198.19.L.2). A router answers a trace from its address on the link towards
the agent (Linux picks the source of an ICMP error by the route back), so
`node.addr` (198.19.L.2; 198.19.0.2 for the core) is both the address the
inventory names a site by and the hop a trace shows for it.

Routes are static and only towards the lab: the agent reaches 198.19.0.0/16
through the core; every router reaches each descendant's link through the
child on the way, and the agent's link through its parent. No default route
anywhere: a cut link leaves its parent without a route (it answers "network
unreachable") instead of bouncing packets back up into a routing loop.

ICMP error replies are rate-limited per destination by the kernel
(net.ipv4.icmp_ratelimit, 1000 ms by default for the types in icmp_ratemask):
a lab that traces the same routers many times in a row sets it to 0 in every
namespace, as `lab(ratelimit_ms=0)` does by default; pass None to keep the
kernel's default (what a real router does).

Namespace names are netns.py's (wm<pid>n<k><role>), so netns.cleanup_stale()
removes a lab left behind by a killed run; interface names are short and only
unique inside their namespace (up0 towards the parent, dn<i> towards children).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import netns

NET = "198.19.{}.{}"


@dataclass
class Node:
    """One namespace of the routed lab: the agent, the core, a district router or a commune."""

    role: str  # "agent", "core", "d1", "c11", ...
    ns: str
    parent: Node | None = None
    link: int = 0  # the link to its parent (198.19.<link>.0/24); the core's is 0 (to the agent)
    dev_up: str = "up0"  # its interface towards the parent
    dev_down: str = ""  # the parent's interface towards it
    children: list[Node] = field(default_factory=list)
    routes: list[tuple[str, str]] = field(default_factory=list)  # (prefix, via) it was given
    agentx: Path | None = None  # its snmpd's AgentX socket (RoutedLab.snmpd)

    @property
    def addr(self) -> str:
        """Its address towards the agent: what it answers a trace from (the agent: its own)."""
        return NET.format(self.link, 1 if self.role == "agent" else 2)

    @property
    def gateway(self) -> str:
        """Its parent's address on their link."""
        return NET.format(self.link, 1)

    def descendants(self) -> list[Node]:
        out = []
        for c in self.children:
            out.append(c)
            out.extend(c.descendants())
        return out


class RoutedLab:
    """Build with `lab(...)`; `nodes[role]` are the namespaces; `cut(role)` and `restore(role)`
    take the link between a node and its parent down and up again."""

    def __init__(self, base: netns.Lab, tree: dict[str, list[str]], ratelimit_ms: int | None):
        self.base = base  # netns.Lab: its run(), popen(), sysctl() and its teardown
        self.tree = tree
        self.ratelimit_ms = ratelimit_ms
        self.nodes: dict[str, Node] = {}
        self._links = 0
        self._agents: list = []  # snmp_agents.NetSnmpAgent
        self._logs: list = []
        self._folders: list[Path] = []

    # -- helpers ------------------------------------------------------------
    def run(self, argv, role: str = "agent", **kw) -> subprocess.CompletedProcess:
        """Run argv inside a node's namespace (the agent's by default)."""
        return self.base.run(argv, ns=self.nodes[role].ns, **kw)

    def popen(self, argv, role: str = "agent", **kw) -> subprocess.Popen:
        return self.base.popen(argv, ns=self.nodes[role].ns, **kw)

    def wrap(self, argv, role: str = "agent") -> list[str]:
        """argv prefixed to run inside a node's namespace (for a subprocess of the test's own)."""
        return self.base._wrap(argv, self.nodes[role].ns)

    def prefix(self, role: str = "agent") -> list[str]:
        """The command prefix that runs a program inside a node's namespace."""
        return self.wrap([], role)

    @contextlib.contextmanager
    def capture(self, role: str = "agent", ttl: bool = False):
        """Record every IPv4 packet a node sends, on all its interfaces, while the block runs:
        yields a list that holds (protocol, destination, ICMP type) for each after the block
        (with ttl: (protocol, destination, ICMP type, TTL): a trace's probes have short ones)."""
        proc = self.popen(
            [sys.executable, "-c", _CAPTURE],
            role,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        sent: list[tuple[int, str, int | None]] = []
        try:
            yield sent
        finally:
            out, err = proc.communicate(input="stop\n", timeout=30)
            assert proc.returncode == 0, err
            for line in out.splitlines():
                proto, dst, typ, hops = line.split()
                got = (int(proto), dst, None if typ == "-" else int(typ))
                sent.append((*got, int(hops)) if ttl else got)

    def snmpd(self, role: str, community: str):
        """A real net-snmp snmpd in a node's namespace, on its address, port 161, answering the
        lab (198.19.0.0/16), master of an AgentX socket of its own (for lldpd -x). Stopped at
        teardown."""
        from snmp_agents import NetSnmpAgent

        node = self.nodes[role]
        folder = Path(tempfile.mkdtemp(prefix=f"wm-routed-{role}-"))
        folder.chmod(0o755)  # lldpd's unprivileged half reaches its control socket here
        self._folders.append(folder)
        agent = NetSnmpAgent(
            host=node.addr,
            port=161,
            community=community,
            users={},
            netns=node.ns,
            clients="198.19.0.0/16",
            sys_name=role,
            extra_conf=f"master agentx\nagentXSocket {folder / 'agentx.sock'}",
        )
        self._agents.append(agent)
        agent.start()
        node.agentx = folder / "agentx.sock"
        return agent

    def lldpd(self, role: str) -> None:
        """Debian's lldpd in a node's namespace: LLDP on its veths every second, its address as
        the management address, its neighbours exported into the node's snmpd (`snmpd()` first)
        through AgentX. Ended at teardown with the namespace's other processes."""
        node = self.nodes[role]
        assert node.agentx is not None, f"start snmpd({role!r}) first"
        folder = node.agentx.parent
        conf = folder / "lldpd.conf"
        conf.write_text(f"configure system hostname {role}\nconfigure lldp tx-interval 1\n", encoding="utf-8")
        log = open(folder / "lldpd.log", "wb")  # noqa: SIM115 - the process writes it until teardown
        self._logs.append(log)
        argv = ["lldpd", "-d", "-x", "-X", str(node.agentx), "-u", str(folder / "lldpd.sock"), "-O", str(conf)]
        self.popen([*argv, "-m", node.addr], role, stdout=log, stderr=subprocess.STDOUT)

    def add_addresses(self, role: str, n: int) -> list[str]:
        """n more addresses for a node, on its link towards its parent (198.19.<link>.3, .4, ...):
        as many sites behind that parent as a test needs, without a namespace for each."""
        node = self.nodes[role]
        assert node.link and 0 < n <= 252, f"{role}: 1 to 252 more addresses on a link of its own"
        addrs = [NET.format(node.link, 3 + k) for k in range(n)]
        batch = "".join(f"address add {a}/24 dev {node.dev_up}\n" for a in addrs)
        netns._sh([netns._ip_bin(), "-n", node.ns, "-batch", "-"], input=batch)
        return addrs

    def close(self) -> None:
        for agent in self._agents:
            agent.close()
        for log in self._logs:
            log.close()
        for folder in self._folders:
            shutil.rmtree(folder, ignore_errors=True)

    @property
    def agent(self) -> Node:
        return self.nodes["agent"]

    @property
    def namespaces(self) -> list[str]:
        return [n.ns for n in self.nodes.values()]

    def _ip(self, node: Node, *args: object) -> None:
        self.base._ip(*args, ns=node.ns)

    # -- building -----------------------------------------------------------
    def _node(self, role: str, parent: Node | None) -> Node:
        ns = f"{self.base.tag}{role}"
        self.base._add_ns(ns)
        node = Node(role, ns, parent)
        self.nodes[role] = node
        for key, value in (
            ("net.ipv4.ip_forward", "1"),
            *((("net.ipv4.icmp_ratelimit", str(self.ratelimit_ms)),) if self.ratelimit_ms is not None else ()),
        ):
            netns._sh([netns._ip_bin(), "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}"])
        if parent is not None:
            node.link = 0 if parent.role == "agent" else self._next_link()
            node.dev_down = f"dn{len(parent.children)}"
            parent.children.append(node)
            self.base._veth(parent.ns, node.dev_down, ns, node.dev_up)
            self._ip(parent, "addr", "add", f"{node.gateway}/24", "dev", node.dev_down)
            self._ip(node, "addr", "add", f"{node.addr}/24", "dev", node.dev_up)
        return node

    def _next_link(self) -> int:
        self._links += 1
        if self._links > 254:
            raise RuntimeError("the routed lab has room for 254 links")
        return self._links

    def _route(self, node: Node, prefix: str, via: str) -> None:
        node.routes.append((prefix, via))
        self._ip(node, "route", "replace", prefix, "via", via)

    def build(self) -> None:
        agent = self._node("agent", None)
        core = self._node("core", agent)
        for district, communes in self.tree.items():
            d = self._node(district, core)
            for c in communes:
                self._node(c, d)
        self._route(agent, "198.19.0.0/16", core.addr)
        for node in self.nodes.values():
            if node.role == "agent":
                continue
            if node.parent is not None and node.parent.role != "agent":
                self._route(node, NET.format(0, 0) + "/24", node.gateway)
            for child in node.children:
                for below in child.descendants():
                    self._route(node, NET.format(below.link, 0) + "/24", child.addr)

    # -- faults -------------------------------------------------------------
    def cut(self, role: str) -> None:
        """The link between `role` and its parent goes down (the parent's interface: the
        parent loses its route to everything behind it and says so, "network unreachable")."""
        node = self.nodes[role]
        assert node.parent is not None and node.parent.role != "agent", f"{role} has no link to cut"
        self._ip(node.parent, "link", "set", node.dev_down, "down")

    def restore(self, role: str) -> None:
        """The link up again, with the static routes the kernel dropped when it went down."""
        node = self.nodes[role]
        assert node.parent is not None, f"{role} has no link to restore"
        self._ip(node.parent, "link", "set", node.dev_down, "up")
        for n in self.nodes.values():
            for prefix, via in n.routes:
                self._ip(n, "route", "replace", prefix, "via", via)


# A packet capture (AF_PACKET, outgoing IPv4 only) run inside a namespace: "ready" once it
# listens, then on a line on stdin one "protocol destination icmp-type" line per packet.
_CAPTURE = r"""
import select, socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))  # ETH_P_ALL: the only tap on outgoing
print("ready", flush=True)
seen = []
while True:
    r, _, _ = select.select([s, sys.stdin], [], [])
    if sys.stdin in r:
        break
    data, addr = s.recvfrom(65535)
    if addr[2] != socket.PACKET_OUTGOING or addr[1] != 0x0800 or len(data) < 20:
        continue
    ihl = (data[0] & 15) * 4
    typ = data[ihl] if data[9] == 1 and len(data) > ihl else None
    seen.append((data[9], socket.inet_ntoa(data[16:20]), typ, data[8]))
s.setblocking(False)
while True:  # what was queued before the stop
    try:
        data, addr = s.recvfrom(65535)
    except BlockingIOError:
        break
    if addr[2] == socket.PACKET_OUTGOING and addr[1] == 0x0800 and len(data) >= 20:
        ihl = (data[0] & 15) * 4
        seen.append((data[9], socket.inet_ntoa(data[16:20]), data[ihl] if data[9] == 1 else None, data[8]))
for proto, dst, typ, ttl in seen:
    print(proto, dst, "-" if typ is None else typ, ttl)
"""


@contextlib.contextmanager
def lab(tree: dict[str, list[str]] | None = None, ratelimit_ms: int | None = 0):
    """Build a routed lab (districts -> their communes; default: d1 with c11 and c12, d2 with
    c21), yield it, and always tear it down (netns.Lab's teardown: every namespace and every
    process started in them)."""
    ok, why = netns.available()
    if not ok:
        raise RuntimeError(f"network namespaces unavailable: {why}")
    netns.cleanup_stale()
    base = netns.Lab(tag=netns._next_tag(), slow_ms=0)
    netns._live[id(base)] = base
    routed = RoutedLab(base, tree or {"d1": ["c11", "c12"], "d2": ["c21"]}, ratelimit_ms)
    try:
        routed.build()
        yield routed
    finally:
        try:
            routed.close()
        finally:
            base.close()


if __name__ == "__main__":  # manual smoke test: python tests/routed.py
    with lab() as lb:
        for role, node in lb.nodes.items():
            print(role, node.ns, node.addr)
        print(lb.run(["traceroute", "-n", "-I", "-q", "1", lb.nodes["c11"].addr]).stdout)
