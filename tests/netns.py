"""Network-namespace test lab (no pytest dependency).

Builds, per run, a private set of namespaces joined by veth pairs:

    client  ----veth----  alive      kernel answers echo (IPv4 + IPv6)
            ----veth----  resp       kernel echo OFF; holds three hosts:
                                       dead   never answers
                                       slow   userspace responder, fixed delay
                                       lossy  userspace responder, drops 1 in 2

Only 198.18.0.0/15 and fd00:5747::/64 are used, and only inside the
namespaces made here; nothing is added to the root namespace (veths are
created directly inside the client namespace and moved to the peer).

Usage::

    ok, why = netns.available()
    with netns.lab() as lab:
        lab.run(["ping", "-c", "1", lab.alive4])

Names include the pid and a per-process counter, so parallel runs do not
collide, and interface names stay within 15 characters.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESPONDER = HERE / "responder.py"
PREFIX = "wm"

# Addressing plan (inside the lab only).
NET_A4 = "198.18.1.{}/24"           # client <-> alive
NET_R4 = "198.18.2.{}/24"           # client <-> resp
NET_A6 = "fd00:5747::1:{}/112"
NET_R6 = "fd00:5747::2:{}/112"

DEFAULT_SLOW_MS = 300

_counter = 0
_counter_lock = threading.Lock()
_live: dict[int, "Lab"] = {}
_available_cache: tuple[bool, str] | None = None


def _ip_bin() -> str | None:
    return shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip") if os.path.exists(p)), None)


def _sh(argv: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 30)
    cp = subprocess.run(argv, **kw)
    if check and cp.returncode != 0:
        raise RuntimeError(f"command failed ({cp.returncode}): {' '.join(argv)}\n"
                           f"stdout: {cp.stdout}\nstderr: {cp.stderr}")
    return cp


def available() -> tuple[bool, str]:
    """(True, "") when network namespaces can be built here, else (False, reason)."""
    global _available_cache
    if _available_cache is not None:
        return _available_cache
    if not sys.platform.startswith("linux"):
        res = (False, f"network namespaces need Linux (platform is {sys.platform})")
    elif os.geteuid() != 0:
        res = (False, "network namespaces need root (euid is %d)" % os.geteuid())
    elif _ip_bin() is None:
        res = (False, "the 'ip' command (iproute2) is not installed")
    else:
        name = f"{PREFIX}{os.getpid()}probe"
        cp = _sh([_ip_bin(), "netns", "add", name], check=False)
        if cp.returncode != 0:
            res = (False, f"'ip netns add' failed: {cp.stderr.strip()}")
        else:
            cp2 = _sh([_ip_bin(), "-n", name, "link", "add", "p0", "type", "veth",
                       "peer", "name", "p1"], check=False)
            _sh([_ip_bin(), "netns", "del", name], check=False)
            if cp2.returncode != 0:
                res = (False, f"veth pairs unavailable: {cp2.stderr.strip()}")
            else:
                res = (True, "")
    _available_cache = res
    return res


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale() -> list[str]:
    """Delete lab namespaces left behind by runs whose process is gone
    (e.g. killed with SIGKILL, where atexit cannot run).  Only names of the
    form wm<pid>n<k><role> whose <pid> no longer exists are touched."""
    ip = _ip_bin()
    if ip is None:
        return []
    cp = _sh([ip, "netns", "list"], check=False)
    removed = []
    pat = re.compile(rf"^{PREFIX}(\d+)n\d+[a-z][a-z0-9]*$")  # netns.py: c, a, r; routed.py: agent, core, d1, c11
    for line in cp.stdout.splitlines():
        m = pat.match(line.split()[0]) if line.split() else None
        if not m or int(m.group(1)) == os.getpid():
            continue
        if not _pid_alive(int(m.group(1))):
            _sh([ip, "netns", "del", m.group(0)], check=False)
            removed.append(m.group(0))
    return removed


@dataclass
class Lab:
    tag: str
    slow_ms: int
    client: str = ""
    alive_ns: str = ""
    resp_ns: str = ""
    # addresses (strings, no prefix length)
    client4_a: str = "198.18.1.1"
    alive4: str = "198.18.1.2"
    client4_r: str = "198.18.2.1"
    dead4: str = "198.18.2.2"
    slow4: str = "198.18.2.3"
    lossy4: str = "198.18.2.4"
    client6_a: str = "fd00:5747::1:1"
    alive6: str = "fd00:5747::1:2"
    client6_r: str = "fd00:5747::2:1"
    dead6: str = "fd00:5747::2:2"
    slow6: str = "fd00:5747::2:3"
    lossy6: str = "fd00:5747::2:4"
    loop4: str = "127.0.0.1"
    loop6: str = "::1"
    namespaces: list[str] = field(default_factory=list)
    responder: subprocess.Popen | None = None
    _procs: list[subprocess.Popen] = field(default_factory=list)
    _closed: bool = False

    # -- public helpers -------------------------------------------------
    @property
    def hosts(self) -> dict[str, str]:
        return {
            "alive4": self.alive4, "alive6": self.alive6,
            "dead4": self.dead4, "dead6": self.dead6,
            "slow4": self.slow4, "slow6": self.slow6,
            "lossy4": self.lossy4, "lossy6": self.lossy6,
            "loop4": self.loop4, "loop6": self.loop6,
        }

    def _wrap(self, argv, ns=None) -> list[str]:
        return [_ip_bin(), "netns", "exec", ns or self.client, *map(str, argv)]

    def run(self, argv, ns: str | None = None, **kw) -> subprocess.CompletedProcess:
        """Run argv inside the client namespace (or ``ns``); kwargs go to
        subprocess.run (text/capture_output default True, timeout 120 s)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 120)
        return subprocess.run(self._wrap(argv, ns), **kw)

    def popen(self, argv, ns: str | None = None, **kw) -> subprocess.Popen:
        """Start argv inside the client namespace (or ``ns``).  The process is
        tracked and killed at teardown if still running."""
        p = subprocess.Popen(self._wrap(argv, ns), **kw)
        self._procs.append(p)
        return p

    def sysctl(self, key: str, value: str | None = None, ns: str | None = None) -> str:
        """Read (or set, then read) a sysctl inside a lab namespace."""
        if value is not None:
            cp = self.run(["sysctl", "-q", "-w", f"{key}={value}"], ns=ns)
            if cp.returncode != 0:
                raise RuntimeError(f"sysctl {key}={value} failed: {cp.stderr}")
        cp = self.run(["sysctl", "-n", key], ns=ns)
        if cp.returncode != 0:
            raise RuntimeError(f"sysctl {key} failed: {cp.stderr}")
        return cp.stdout.strip()

    # -- building -------------------------------------------------------
    def _ip(self, *args, ns=None):
        argv = [_ip_bin()]
        if ns:
            argv += ["-n", ns]
        return _sh(argv + [str(a) for a in args])

    def _add_ns(self, name: str) -> None:
        self._ip("netns", "add", name)
        self.namespaces.append(name)
        self._ip("link", "set", "lo", "up", ns=name)
        # Fresh addresses must be usable at once: no DAD anywhere in the lab.
        for key in ("net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"):
            _sh([_ip_bin(), "netns", "exec", name, "sysctl", "-q", "-w", f"{key}=0"])

    def _veth(self, a_ns, a_if, b_ns, b_if) -> None:
        for n in (a_if, b_if):
            assert len(n) <= 15, f"interface name too long: {n}"
        self._ip("link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b_ns, ns=a_ns)
        self._ip("link", "set", a_if, "up", ns=a_ns)
        self._ip("link", "set", b_if, "up", ns=b_ns)

    def build(self) -> None:
        t = self.tag
        self.client, self.alive_ns, self.resp_ns = f"{t}c", f"{t}a", f"{t}r"
        for ns in (self.client, self.alive_ns, self.resp_ns):
            self._add_ns(ns)
        ca, ac, cr, rc = f"{t}ca", f"{t}ac", f"{t}cr", f"{t}rc"
        self._veth(self.client, ca, self.alive_ns, ac)
        self._veth(self.client, cr, self.resp_ns, rc)

        def addr(ns, dev, cidr):
            extra = ["nodad"] if ":" in cidr else []
            self._ip("addr", "add", cidr, "dev", dev, *extra, ns=ns)

        addr(self.client, ca, NET_A4.format(1))
        addr(self.client, ca, NET_A6.format(1))
        addr(self.client, cr, NET_R4.format(1))
        addr(self.client, cr, NET_R6.format(1))
        addr(self.alive_ns, ac, NET_A4.format(2))
        addr(self.alive_ns, ac, NET_A6.format(2))
        for host in (2, 3, 4):
            addr(self.resp_ns, rc, NET_R4.format(host))
            addr(self.resp_ns, rc, NET_R6.format(host))

        # Responder namespace: kernel never answers echo; the responder does.
        for key in ("net.ipv4.icmp_echo_ignore_all", "net.ipv6.icmp.echo_ignore_all"):
            _sh([_ip_bin(), "netns", "exec", self.resp_ns, "sysctl", "-q", "-w", f"{key}=1"])

        self._wait_v6_ready()
        self._start_responder()

    def _wait_v6_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            pending = []
            for ns in (self.client, self.alive_ns, self.resp_ns):
                cp = _sh([_ip_bin(), "-n", ns, "-6", "addr", "show", "tentative"], check=False)
                if "inet6" in cp.stdout:
                    pending.append(ns)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"IPv6 addresses still tentative in {pending}")
            time.sleep(0.05)

    def _start_responder(self, timeout: float = 15.0) -> None:
        rules = [
            f"{self.slow4}=delay:{self.slow_ms}", f"{self.slow6}=delay:{self.slow_ms}",
            f"{self.lossy4}=drop-alt,delay:0", f"{self.lossy6}=drop-alt,delay:0",
            f"{self.dead4}=silent", f"{self.dead6}=silent",
        ]
        argv = [sys.executable, str(RESPONDER), "--watch-stdin", "--max-seconds", "3600"]
        for r in rules:
            argv += ["--rule", r]
        p = subprocess.Popen(self._wrap(argv, self.resp_ns), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.responder = p
        line: list[str] = []

        def reader():
            line.append(p.stdout.readline())

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        th.join(timeout)
        if not line or line[0].strip() != "ready":
            err = ""
            if p.poll() is not None:
                err = p.stderr.read()
            raise RuntimeError(f"responder did not become ready (rc={p.poll()}): {err}")

    # -- teardown -------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        procs = list(self._procs)
        if self.responder is not None:
            procs.append(self.responder)
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=5)
        if self.responder is not None:
            for s in (self.responder.stdin, self.responder.stdout, self.responder.stderr):
                with contextlib.suppress(Exception):
                    s.close()
        # Anything still inside our own namespaces was started by this lab
        # (the namespaces are brand new): end it by pid before deleting them.
        for ns in self.namespaces:
            cp = _sh([_ip_bin(), "netns", "pids", ns], check=False)
            for tok in cp.stdout.split():
                if tok.isdigit():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(tok), signal.SIGKILL)
        for ns in reversed(self.namespaces):
            _sh([_ip_bin(), "netns", "del", ns], check=False)
        self.namespaces.clear()
        _live.pop(id(self), None)


def _atexit_cleanup() -> None:
    for lab_ in list(_live.values()):
        with contextlib.suppress(Exception):
            lab_.close()


atexit.register(_atexit_cleanup)


def _next_tag() -> str:
    global _counter
    with _counter_lock:
        _counter += 1
        n = _counter
    tag = f"{PREFIX}{os.getpid()}n{n}"
    # longest interface name is tag + 2 chars
    if len(tag) + 2 > 15:
        raise RuntimeError(f"lab tag {tag!r} too long for interface names")
    return tag


@contextlib.contextmanager
def lab(slow_ms: int = DEFAULT_SLOW_MS):
    """Build a lab, yield it, and always tear it down."""
    ok, why = available()
    if not ok:
        raise RuntimeError(f"network namespaces unavailable: {why}")
    cleanup_stale()
    lb = Lab(tag=_next_tag(), slow_ms=slow_ms)
    _live[id(lb)] = lb
    try:
        lb.build()
        yield lb
    finally:
        lb.close()


if __name__ == "__main__":  # manual smoke test: python tests/netns.py
    ok, why = available()
    print("available:", ok, why)
    if ok:
        with lab() as lb:
            print("client ns:", lb.client, "hosts:", lb.hosts)
            for name, a in lb.hosts.items():
                cp = lb.run(["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", a])
                print(name, cp.stdout.strip().splitlines()[-2:] if cp.stdout else cp.stderr)
