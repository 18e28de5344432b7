"""Real SNMP agents for tests (no pytest dependency).

Two kinds of agent, both listening on loopback only (127.0.0.0/8 and ::1):

* :class:`NetSnmpAgent` -- Debian's net-snmp ``snmpd`` (package ``snmpd``):
  a v2c read-only community and SNMPv3 users (SHA/AES, SHA-256/AES,
  SHA authNoPriv, noAuthNoPriv), sysName/sysLocation/sysContact set to known
  values (sysLocation is Vietnamese UTF-8), and the machine's real interfaces
  (``lo``, ``eth0``...) in ifTable/ifXTable.  ``restart()`` is a real reboot
  (sysUpTime starts again near 0, snmpEngineBoots goes up).

* :class:`SnmpSim` -- many simulated devices in ONE ``snmpsim-command-responder``
  process (pip ``snmpsim`` 1.2, which imports ``pysmi``).  Device k is served
  from ``data/<community_k>.snmprec`` on its own endpoint address
  127.0.<a>.<b> (all devices share one UDP port); the data file is picked by
  the COMMUNITY, not the address (per-address selection does not work with
  pysnmp 7.1), so a device must be polled with its own community.

  Growing counters use snmpsim's ``numeric`` variation with ``atime=1``:
  value = initial + rate * unix_time, so ``initial`` is written as
  ``value_at_epoch - rate * epoch``; the counter is continuous across
  simulator restarts.  32-bit counters wrap (``wrap=1``: snmpsim wraps modulo
  2**32-1, one octet off per wrap).

  ``set_device(spec)`` rewrites a device's .snmprec.  snmpsim notices a changed
  file on the next request (it compares the file's integer st_mtime with the
  one it indexed, then rebuilds the index), so static-value changes are served
  at once with no restart ("reload").  But snmpsim caches a variation's
  parsed settings per (file, OID) for the life of the process, so a CHANGED
  numeric/delay line for an OID that was already served needs a process
  restart ("restart"), which ``set_device`` then does by itself.

  The ``delay`` variation sleeps inside the simulator's only thread and so
  blocks every device of that process: a slow device gets its own process,
  see :func:`slow_agent`.

  snmpsim binds its endpoints with SO_REUSEADDR: a port already in use does
  not make it fail (the other socket silently gets the requests), so the
  port is checked free on every endpoint address before start.

Helpers :func:`snmpget`, :func:`snmpcmd` run the net-snmp CLI tools
(package ``snmp``) for self-checks.

Every agent is a context manager that stops its process (SIGTERM, then
SIGKILL) on exit, even when the body raised; processes still alive at
interpreter exit are stopped by an atexit hook.  Only processes started here
are ever signalled, by their own Popen objects.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib.util
import ipaddress
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

# ---------------------------------------------------------------------------
# OIDs
# ---------------------------------------------------------------------------
SYS_DESCR = "1.3.6.1.2.1.1.1.0"
SYS_OBJECT_ID = "1.3.6.1.2.1.1.2.0"
SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
SYS_CONTACT = "1.3.6.1.2.1.1.4.0"
SYS_NAME = "1.3.6.1.2.1.1.5.0"
SYS_LOCATION = "1.3.6.1.2.1.1.6.0"
SYS_SERVICES = "1.3.6.1.2.1.1.7.0"
IF_NUMBER = "1.3.6.1.2.1.2.1.0"
IF_ENTRY = "1.3.6.1.2.1.2.2.1"          # .<col>.<ifIndex>
IFX_ENTRY = "1.3.6.1.2.1.31.1.1.1"      # .<col>.<ifIndex>
ENGINE_ID = "1.3.6.1.6.3.10.2.1.1.0"
ENGINE_BOOTS = "1.3.6.1.6.3.10.2.1.2.0"
ENGINE_TIME = "1.3.6.1.6.3.10.2.1.3.0"

# ifTable columns
IF_INDEX, IF_DESCR, IF_TYPE, IF_MTU, IF_SPEED, IF_PHYS = 1, 2, 3, 4, 5, 6
IF_ADMIN, IF_OPER, IF_LAST_CHANGE, IF_IN_OCTETS, IF_IN_UCAST = 7, 8, 9, 10, 11
IF_IN_DISCARDS, IF_IN_ERRORS, IF_OUT_OCTETS, IF_OUT_UCAST = 13, 14, 16, 17
IF_OUT_DISCARDS, IF_OUT_ERRORS = 19, 20
# ifXTable columns
IFX_NAME, IFX_HC_IN_OCTETS, IFX_HC_OUT_OCTETS, IFX_HIGH_SPEED, IFX_ALIAS = 1, 6, 10, 15, 18

# sysObjectIDs of a few vendors
CISCO = "1.3.6.1.4.1.9.1.1"
JUNIPER = "1.3.6.1.4.1.2636.1.1.1.2.1"
MIKROTIK = "1.3.6.1.4.1.14988.1"
HUAWEI = "1.3.6.1.4.1.2011.2.23.1"
NET_SNMP = "1.3.6.1.4.1.8072.3.2.10"

# snmprec type tags
TAG_INTEGER, TAG_STRING, TAG_OID = "2", "4", "6"
TAG_COUNTER32, TAG_GAUGE32, TAG_TIMETICKS, TAG_COUNTER64 = "65", "66", "67", "70"

C32 = 2 ** 32
C64 = 2 ** 64

VI_LOCATION = "Tầng 3, UBND huyện Tiên Du"

# Keep net-snmp tools and snmpd from loading (and complaining about) MIBs:
# everything here is numeric.
NOMIB_ENV = {"MIBS": "", "MIBDIRS": "/nonexistent/wanmon-tests-no-mibs"}

# ---------------------------------------------------------------------------
# availability
# ---------------------------------------------------------------------------


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}")
         if os.access(p, os.X_OK)), None)


def cli_available() -> tuple[bool, str]:
    """The net-snmp command line tools (Debian package ``snmp``)."""
    missing = [t for t in ("snmpget", "snmpbulkwalk") if _which(t) is None]
    if missing:
        return False, f"net-snmp CLI tools missing ({', '.join(missing)}): apt-get install snmp"
    return True, ""


def netsnmp_available() -> tuple[bool, str]:
    """snmpd (Debian package ``snmpd``) plus the CLI tools used to wait for it."""
    if not sys.platform.startswith("linux"):
        return False, f"snmpd tests need Linux (platform is {sys.platform})"
    if _which("snmpd") is None:
        return False, "net-snmp agent `snmpd` not installed: apt-get install snmpd"
    return cli_available()


def snmpsim_command() -> list[str] | None:
    exe = Path(sys.executable).parent / "snmpsim-command-responder"
    if exe.exists():
        return [str(exe)]
    if importlib.util.find_spec("snmpsim") is not None:
        return [sys.executable, "-m", "snmpsim.commands.responder"]
    return None


def snmpsim_available() -> tuple[bool, str]:
    """snmpsim (+ pysmi, which it imports without declaring) plus the CLI tools."""
    for mod, pkg in (("snmpsim", "snmpsim"), ("pysmi", "pysmi")):
        if importlib.util.find_spec(mod) is None:
            return False, f"python package {pkg!r} not installed in {sys.executable} (pip install {pkg})"
    if snmpsim_command() is None:
        return False, "snmpsim-command-responder not found"
    return cli_available()


# ---------------------------------------------------------------------------
# ports and addresses
# ---------------------------------------------------------------------------


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _check_loopback(host: str) -> None:
    ip = ipaddress.ip_address(host)
    if not ip.is_loopback:
        raise ValueError(f"test agents listen on loopback only (127.0.0.0/8 or ::1), not {host}")


def port_free(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_udp_port(hosts: Iterable[str] = ("127.0.0.1",), tries: int = 200) -> int:
    """A UDP port free on every one of ``hosts`` (kernel-chosen, then checked)."""
    hosts = list(hosts)
    for _ in range(tries):
        with socket.socket(_family(hosts[0]), socket.SOCK_DGRAM) as s:
            s.bind((hosts[0], 0))
            port = s.getsockname()[1]
        if all(port_free(h, port) for h in hosts[1:]):
            return port
    raise RuntimeError(f"no UDP port free on all of {hosts[:5]}...")


def loopback_addresses(n: int, third: int | None = None, start: int = 1) -> list[str]:
    """``n`` distinct addresses 127.0.<a>.<b> (b in 1..254), beginning in block
    ``third`` (random in 100..199 when None, so parallel runs rarely share one)."""
    a = random.randint(100, 199) if third is None else third
    out, b = [], start
    while len(out) < n:
        if b > 254:
            a, b = a + 1, 1
            if a > 254:
                raise ValueError("out of 127.0.x.y addresses")
        out.append(f"127.0.{a}.{b}")
        b += 1
    return out


def _ipv6_loopback_ok() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# process bookkeeping
# ---------------------------------------------------------------------------
_LIVE: dict[int, "_Proc"] = {}


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Linux: SIGTERM the agent if the test process dies without cleaning up
    (SIGKILL, a crash), where neither finally nor atexit runs."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)     # PR_SET_PDEATHSIG
    except Exception:
        pass


class _Proc:
    """One child process we started; stopped by its own Popen, never by name.
    Start agents from the main thread: PR_SET_PDEATHSIG follows the thread."""

    def __init__(self, argv: list[str], log_path: Path, env: dict | None = None):
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, env=env, close_fds=True,
                                      preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        _LIVE[id(self)] = self

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 5.0) -> int | None:
        p = self.popen
        try:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(timeout=timeout)
        finally:
            with contextlib.suppress(Exception):
                self._log.close()
            _LIVE.pop(id(self), None)
        return p.returncode

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""


@atexit.register
def _stop_all() -> None:
    for proc in list(_LIVE.values()):
        with contextlib.suppress(Exception):
            proc.stop(timeout=2)


# ---------------------------------------------------------------------------
# net-snmp CLI helpers
# ---------------------------------------------------------------------------

# wanmon's spelling -> net-snmp's
_NETSNMP_AUTH = {"MD5": "MD5", "SHA": "SHA", "SHA224": "SHA-224", "SHA256": "SHA-256",
                 "SHA384": "SHA-384", "SHA512": "SHA-512"}
_NETSNMP_PRIV = {"DES": "DES", "AES": "AES", "AES128": "AES",
                 # wanmon's AES192/AES256 are pysnmp's usmAesCfb192/256Protocol: the Reeder key extension,
                 # which net-snmp calls "-C" (Cisco); plain "AES-256" there is Blumenthal's.
                 "AES192": "AES-192-C", "AES256": "AES-256-C"}


@dataclass(frozen=True)
class V3User:
    """An SNMPv3 USM user.  Protocol names use wanmon's spelling
    ("SHA", "SHA256", "AES", ...); ``level`` is derived from them."""
    name: str
    auth_protocol: str = "none"
    auth_key: str | None = None
    priv_protocol: str = "none"
    priv_key: str | None = None

    @property
    def level(self) -> str:
        if self.auth_protocol == "none":
            return "noAuthNoPriv"
        return "authNoPriv" if self.priv_protocol == "none" else "authPriv"

    @property
    def rouser_level(self) -> str:   # snmpd.conf `rouser NAME LEVEL`
        return {"noAuthNoPriv": "noauth", "authNoPriv": "auth", "authPriv": "priv"}[self.level]

    def create_user_line(self) -> str:
        parts = ["createUser", self.name]
        if self.auth_protocol != "none":
            parts += [_NETSNMP_AUTH[self.auth_protocol], _quote(self.auth_key or "")]
            if self.priv_protocol != "none":
                parts += [_NETSNMP_PRIV[self.priv_protocol], _quote(self.priv_key or "")]
        return " ".join(parts)

    def cli_args(self, *, auth_key: str | None = None, priv_key: str | None = None,
                 name: str | None = None) -> list[str]:
        """Arguments for snmpget & co.; override a key or the name to test failures."""
        args = ["-v3", "-u", name or self.name, "-l", self.level]
        if self.auth_protocol != "none":
            args += ["-a", _NETSNMP_AUTH[self.auth_protocol], "-A", auth_key or self.auth_key]
            if self.priv_protocol != "none":
                args += ["-x", _NETSNMP_PRIV[self.priv_protocol], "-X", priv_key or self.priv_key]
        return args


def _quote(s: str) -> str:
    if any(c in s for c in '"\\\n'):
        raise ValueError("keys with quotes, backslashes or newlines are not supported here")
    return f'"{s}"'


@dataclass
class SnmpResult:
    rc: int
    stdout: str
    stderr: str
    elapsed: float
    values: dict[str, tuple[str, str]] = field(default_factory=dict)  # oid -> (type, value)

    @property
    def ok(self) -> bool:
        return self.rc == 0 and bool(self.values)

    @property
    def timed_out(self) -> bool:
        return "Timeout" in self.stderr or "Timeout" in self.stdout

    def value(self, oid: str | None = None) -> str:
        if oid is None:
            return next(iter(self.values.values()))[1]
        return self.values[_norm_oid(oid)][1]

    def int(self, oid: str | None = None) -> int:
        return int(self.value(oid))


def _norm_oid(oid: str) -> str:
    return oid.lstrip(".")


def _parse_value(typ: str, raw: str) -> str:
    raw = raw.strip()
    if typ == "STRING":
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        return raw
    if typ == "Hex-STRING":
        try:
            return bytes.fromhex(raw.replace("\n", " ")).decode("utf-8", "replace")
        except ValueError:
            return raw
    if typ == "Timeticks":     # "(12345) 0:02:03.45"
        if raw.startswith("("):
            return raw[1:raw.index(")")]
        return raw
    if typ == "OID":
        return raw.lstrip(".")
    return raw


def _parse_output(text: str) -> dict[str, tuple[str, str]]:
    """Parse `-On -Oe` output: '.1.3... = TYPE: value' (values may span lines)."""
    out: dict[str, tuple[str, str]] = {}
    cur_oid = cur_typ = None
    cur_val: list[str] = []

    def flush():
        if cur_oid is not None and cur_typ is not None:
            out[cur_oid] = (cur_typ, _parse_value(cur_typ, "\n".join(cur_val)))

    for line in text.splitlines():
        if line.startswith(".") and " = " in line:
            flush()
            oid, rest = line.split(" = ", 1)
            cur_oid = _norm_oid(oid)
            if ": " in rest:
                cur_typ, val = rest.split(": ", 1)
            elif rest.endswith(":"):
                cur_typ, val = rest[:-1], ""
            else:           # e.g. 'No Such Object available on this agent at this OID'
                cur_typ, val = "ERROR", rest
            cur_val = [val]
        elif cur_oid is not None:
            cur_val.append(line)
    flush()
    return out


def _target(host: str, port: int) -> str:
    return f"udp6:[{host}]:{port}" if ":" in host else f"udp:{host}:{port}"


def snmpcmd(tool: str, host: str, port: int, oids: Sequence[str] | str, *,
            community: str | None = None, v3: V3User | None = None, v3_args: list[str] | None = None,
            version: str = "2c", timeout: float = 1.0, retries: int = 0,
            extra: Sequence[str] = (), wrap: Sequence[str] = ()) -> SnmpResult:
    """Run a net-snmp CLI tool (snmpget, snmpbulkwalk, snmpwalk, snmpgetnext)
    with numeric output; ``v3_args`` (from ``V3User.cli_args``) wins over ``v3``.
    ``wrap`` prefixes the command (e.g. ``["ip", "netns", "exec", NS]``): then the host is one
    of that namespace of the test's own (a routed lab's router), else on loopback."""
    if not wrap:
        _check_loopback(host)
    exe = _which(tool)
    if exe is None:
        raise RuntimeError(f"{tool} not installed (apt-get install snmp)")
    if isinstance(oids, str):
        oids = [oids]
    if v3_args is not None:
        auth = list(v3_args)
    elif v3 is not None:
        auth = v3.cli_args()
    else:
        auth = [f"-v{version}", "-c", community if community is not None else "public"]
    argv = [*wrap, exe, *auth, "-On", "-Oe", "-t", str(timeout), "-r", str(retries), *extra,
            _target(host, port), *oids]
    env = {**os.environ, **NOMIB_ENV}
    t0 = time.monotonic()
    cp = subprocess.run(argv, capture_output=True, text=True, env=env,
                        timeout=timeout * (retries + 1) * max(1, len(oids)) + 30,
                        errors="replace")
    res = SnmpResult(cp.returncode, cp.stdout, cp.stderr, time.monotonic() - t0)
    res.values = _parse_output(cp.stdout)
    return res


def snmpget(host: str, port: int, community: str, oid: str | Sequence[str], **kw) -> SnmpResult:
    """``snmpget -v2c -c COMMUNITY HOST:PORT OID...`` (see :func:`snmpcmd`)."""
    return snmpcmd("snmpget", host, port, oid, community=community, **kw)


def snmpbulkwalk(host: str, port: int, community: str | None, oid: str, **kw) -> SnmpResult:
    return snmpcmd("snmpbulkwalk", host, port, oid, community=community, **kw)


def _wait_answer(probe, proc: _Proc, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while True:
        if not proc.alive():
            raise RuntimeError(f"{what} exited (rc={proc.popen.returncode}) before answering:\n"
                               f"{proc.log_tail()}")
        last = probe()
        if last.ok:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within {timeout:.0f} s "
                               f"(last: rc={last.rc} {last.stderr.strip()!r});\nlog:\n{proc.log_tail()}")
        time.sleep(0.1)


# ---------------------------------------------------------------------------
# net-snmp snmpd
# ---------------------------------------------------------------------------


def _secret(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def default_users() -> dict[str, V3User]:
    users = [
        V3User("u_sha_aes", "SHA", _secret("auth"), "AES", _secret("priv")),
        V3User("u_sha256_aes", "SHA256", _secret("auth"), "AES", _secret("priv")),
        V3User("u_authnopriv", "SHA", _secret("auth")),
        V3User("u_noauth"),
    ]
    return {u.name: u for u in users}


class _AgentProcess:
    """pid / running / log_text of an agent run as one child process (`_proc`, `log_path`)."""

    _proc: _Proc | None
    log_path: Path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.alive()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""


class NetSnmpAgent(_AgentProcess):
    """Debian's snmpd on udp:HOST:PORT (and udp6:[::1]:PORT), as a context manager.

    ::

        with NetSnmpAgent() as a:
            snmpget(a.host, a.port, a.community, SYS_NAME)
            u = a.users["u_sha_aes"]; u.auth_key ...

    snmpd runs in the foreground (``-f``), reads only the files given with
    ``-c`` (``-C``: not /etc/snmp), keeps its persistent data in a temporary
    folder (``--persistentDir``), has the SMUX module off (``-I -smux``: no
    TCP port 199) and logs to ``<tmp>/snmpd.log``.  The v3 users are written
    as ``createUser`` lines into the persistent ``snmpd.conf``, which snmpd
    replaces by ``usmUser`` lines (localized keys) as usual; that file is also
    passed with ``-c`` because ``-C`` would skip it otherwise, so engineID and
    users survive ``restart()`` and snmpEngineBoots goes up.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None, ipv6: bool = True,
                 community: str | None = None, users: dict[str, V3User] | Iterable[V3User] | None = None,
                 sys_name: str | None = None, sys_location: str = VI_LOCATION,
                 sys_contact: str = "noc@sotttt.example", sys_descr: str | None = None,
                 extra_conf: str = "", start_timeout: float = 20.0,
                 extra_hosts: Sequence[str] = (), netns: str | None = None, clients: str = "127.0.0.0/8"):
        if netns is None:  # inside a namespace of the test's own, any address of that namespace
            for h in (host, *extra_hosts):
                _check_loopback(h)
        self.clients = clients                 # who may ask (rocommunity's source)
        self.host = host
        self.extra_hosts = list(extra_hosts)   # more 127.x addresses to listen on (same port)
        self.netns = netns                     # run inside this network namespace (its own loopback)
        self.wrap = [_which("ip") or "ip", "netns", "exec", netns] if netns else []
        self.ipv6 = ipv6 and netns is None and _ipv6_loopback_ok()
        self.host6 = "::1" if self.ipv6 else None
        self.port = port
        self._auto_port = port is None          # retry on another port only if we chose it
        self.community = community or _secret("comm")
        if users is None:
            users = default_users()
        elif not isinstance(users, dict):
            users = {u.name: u for u in users}
        self.users: dict[str, V3User] = dict(users)
        self.sys_name = sys_name or f"netsnmp-{secrets.token_hex(3)}"
        self.sys_location = sys_location
        self.sys_contact = sys_contact
        self.sys_descr = sys_descr
        self.extra_conf = extra_conf
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self._own_dir = False
        self._proc: _Proc | None = None
        self.starts = 0

    # -- public ------------------------------------------------------------
    @property
    def conf_path(self) -> Path:
        return self.dir / "snmpd.conf"

    @property
    def persist_dir(self) -> Path:
        return self.dir / "persist"

    @property
    def log_path(self) -> Path:
        return self.dir / "snmpd.log"

    def get(self, oids, **kw) -> SnmpResult:
        """v2c GET with the agent's community (kwargs go to snmpcmd)."""
        kw.setdefault("community", self.community)
        kw.setdefault("wrap", self.wrap)
        return snmpcmd("snmpget", self.host, self.port, oids, **kw)

    def start(self) -> "NetSnmpAgent":
        if self.running:
            return self
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="wm-snmpd-"))
            self._own_dir = True
            self.persist_dir.mkdir()
            self._write_persistent_users()
        hosts = [self.host, *self.extra_hosts] + (["::1"] if self.ipv6 else [])
        for attempt in range(3):
            if self.port is None:
                # in a namespace the port is checked here (root namespace): a fresh
                # namespace has nothing listening anyway
                self.port = free_udp_port(hosts if not self.netns else ["127.0.0.1"])
            self._write_conf()
            exe = _which("snmpd")
            argv = [*self.wrap, exe, "-f", "-Lo", "-C", "-c", f"{self.conf_path},{self.persist_dir / 'snmpd.conf'}",
                    f"--persistentDir={self.persist_dir}", "-I", "-smux",
                    "-p", str(self.dir / "snmpd.pid")]
            env = {**os.environ, **NOMIB_ENV}
            self._proc = _Proc(argv, self.log_path, env=env)
            try:
                _wait_answer(lambda: self.get(SYS_NAME, timeout=0.3), self._proc,
                             f"snmpd on {self.host}:{self.port}", self.start_timeout)
            except RuntimeError:
                self._proc.stop()
                self._proc = None
                busy = "Error opening specified endpoint" in self.log_text()
                if busy and self._auto_port and self.starts == 0 and attempt < 2:
                    self.port = None     # lost a race for the port: take another
                    continue
                raise
            self.starts += 1
            return self
        raise RuntimeError("snmpd did not start")  # pragma: no cover

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def restart(self, down_s: float = 0.0) -> None:
        """Stop and start again on the same port: a reboot as a poller sees
        it (sysUpTime near 0, snmpEngineBoots + 1).  ``down_s``: stay down that long."""
        self.stop()
        if down_s:
            time.sleep(down_s)
        self.start()

    def close(self) -> None:
        try:
            self.stop()
        finally:
            if self._own_dir and self.dir is not None and not os.environ.get("WANMON_KEEP_AGENT_DIRS"):
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    def __enter__(self) -> "NetSnmpAgent":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    # -- config ------------------------------------------------------------
    def _write_persistent_users(self) -> None:
        lines = [u.create_user_line() for u in self.users.values()]
        (self.persist_dir / "snmpd.conf").write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.chmod(self.persist_dir / "snmpd.conf", 0o600)

    def _write_conf(self) -> None:
        addrs = [f"udp:{h}:{self.port}" for h in (self.host, *self.extra_hosts)]
        addrs += [f"udp6:[::1]:{self.port}"] if self.ipv6 else []
        for v in (self.community, self.sys_name, self.sys_location, self.sys_contact, self.sys_descr or ""):
            if "\n" in v:
                raise ValueError("newline in an snmpd.conf value")
        lines = [
            f"agentAddress {','.join(addrs)}",
            f"rocommunity {self.community} {self.clients}",
        ]
        if self.ipv6:
            lines.append(f"rocommunity6 {self.community} ::1/128")
        lines += [
            f"sysName {self.sys_name}",
            f"sysLocation {self.sys_location}",
            f"sysContact {self.sys_contact}",
            "sysServices 72",
        ]
        if self.sys_descr:
            lines.append(f"sysDescr {self.sys_descr}")
        for u in self.users.values():
            lines.append(f"rouser {u.name} {u.rouser_level}")
        if self.extra_conf:
            lines.append(self.extra_conf)
        self.conf_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.chmod(self.conf_path, 0o600)


# ---------------------------------------------------------------------------
# snmpsim
# ---------------------------------------------------------------------------


@dataclass
class Interface:
    """One interface of a simulated device.

    Octet counts are the TRUE (64-bit) count at the device's epoch: the 32-bit
    ifInOctets/ifOutOctets serve it modulo 2**32, the HC columns serve it as
    is.  ``in_rate``/``out_rate`` are octets per second (0 = static)."""
    if_index: int
    name: str
    descr: str | None = None            # ifDescr; defaults to name
    alias: str = ""
    if_type: int = 6                    # 6 ethernetCsmacd, 24 softwareLoopback, 131 tunnel...
    speed_bps: int = 1_000_000_000      # ifSpeed = min(speed, 2**32-1); ifHighSpeed = speed / 1e6
    admin_status: int = 1               # 1 up, 2 down, 3 testing
    oper_status: int = 1                # 1 up, 2 down, ... 7 lowerLayerDown
    mtu: int = 1500
    mac: bytes | None = None
    in_octets: int = 0
    out_octets: int = 0
    in_rate: float = 0.0
    out_rate: float = 0.0
    in_errors: int = 0
    out_errors: int = 0
    in_discards: int = 0
    out_discards: int = 0
    in_ucast: int = 0
    out_ucast: int = 0
    last_change: int = 0                # TimeTicks


@dataclass
class Device:
    """A simulated device.  ``community`` selects its data file and is the key
    for ``SnmpSim.set_device``; ``address`` is its endpoint (127.0.a.b)."""
    community: str
    address: str
    sys_name: str
    sys_object_id: str = NET_SNMP
    sys_descr: str = "simulated device"
    sys_location: str = ""
    sys_contact: str = ""
    sys_uptime: int = 8_640_000         # TimeTicks (1/100 s) at the epoch
    uptime_grows: bool = True           # sysUpTime += 100/s (numeric); False: static
    engine_time: int | None = None      # snmpEngineTime (s) at the epoch; grows with uptime_grows
    engine_boots: int | None = None
    interfaces: list[Interface] = field(default_factory=list)
    hc_counters: bool = True            # ifHCInOctets/ifHCOutOctets present (ifXTable HC)
    ifx: bool = True                    # ifXTable ifName/ifAlias/ifHighSpeed present
    epoch: float | None = None          # when the values above hold (default: the SnmpSim's epoch)
    delay_ms: int | None = None         # sysUpTime.0 answers after this delay (own process only!)
    extra: dict[str, tuple[str, object]] = field(default_factory=dict)  # oid -> (tag, value)

    def with_(self, **changes) -> "Device":
        """A copy with some fields changed (interfaces are copied too)."""
        d = dataclasses.replace(self, **changes)
        if "interfaces" not in changes:
            d.interfaces = [dataclasses.replace(i) for i in self.interfaces]
        return d

    def iface(self, if_index: int) -> Interface:
        return next(i for i in self.interfaces if i.if_index == if_index)

    def with_iface(self, if_index: int, **changes) -> "Device":
        """A copy with one interface changed, e.g. ``with_iface(2, in_octets=2**32 + 200)``
        (a 32-bit wrap from 4294967000 reads 200 on ifInOctets)."""
        if not any(i.if_index == if_index for i in self.interfaces):
            raise KeyError(f"no ifIndex {if_index}")
        return self.with_(interfaces=[dataclasses.replace(i, **changes) if i.if_index == if_index
                                      else dataclasses.replace(i) for i in self.interfaces])

    def rebooted(self, uptime: int = 1000, *, grows: bool = False, reset_counters: bool = False,
                 at: float | None = None) -> "Device":
        """The same device after a reboot: sysUpTime drops to ``uptime`` ticks
        (static unless ``grows``: then growing from ``at``, default now, which
        makes set_device restart the simulator, and growing octet counters
        start again from their spec values at that moment); ``reset_counters``
        also drops every counter to a small value (a counter reset)."""
        d = self.with_(sys_uptime=uptime, uptime_grows=grows,
                       epoch=(time.time() if at is None else at) if grows else self.epoch)
        if self.engine_time is not None:
            d.engine_time = uptime // 100
        if self.engine_boots is not None:
            d.engine_boots = self.engine_boots + 1
        if reset_counters:
            d.interfaces = [dataclasses.replace(i, in_octets=100 + i.if_index, out_octets=50 + i.if_index,
                                                in_errors=0, out_errors=0, in_discards=0, out_discards=0,
                                                in_ucast=0, out_ucast=0) for i in d.interfaces]
        return d


def standard_interfaces(n_eth: int = 2, *, rate: float = 0.0, speed_bps: int = 100_000_000,
                        names: Sequence[str] | None = None) -> list[Interface]:
    """lo (ifIndex 1) plus ``n_eth`` ethernet ports (2..), optional growth rate on all ports."""
    ifs = [Interface(1, "lo", descr="lo", if_type=24, speed_bps=10_000_000, mtu=65536,
                     in_octets=123456, out_octets=123456)]
    for k in range(n_eth):
        name = names[k] if names else f"eth{k}"
        ifs.append(Interface(2 + k, name, descr=f"{name} port", alias=f"uplink {k}" if k == 0 else "",
                             speed_bps=speed_bps, mac=bytes([0x02, 0, 0, 0, k >> 8, k & 0xFF]),
                             in_octets=1_000_000 * (k + 1), out_octets=500_000 * (k + 1),
                             in_rate=rate, out_rate=rate / 2))
    return ifs


def _oid_key(oid: str) -> tuple[int, ...]:
    return tuple(int(x) for x in oid.split("."))


def _str_record(oid: str, s: str | bytes) -> str:
    b = s if isinstance(s, bytes) else s.encode("utf-8")
    if all(32 <= c < 127 for c in b) and b"|" not in b:
        return f"{oid}|4|{b.decode('ascii')}"
    return f"{oid}|4x|{b.hex()}"


def _fmt_num(x: float) -> str:
    return str(int(round(x)))


class SnmpSim(_AgentProcess):
    """Many simulated devices in one snmpsim process (see the module doc).

    ::

        devs = [Device(f"c{k}", addr, f"dev-{k}", interfaces=standard_interfaces())
                for k, addr in enumerate(loopback_addresses(20))]
        with SnmpSim(devs) as sim:
            snmpget(devs[3].address, sim.port, devs[3].community, SYS_NAME)
            sim.set_device(devs[3].with_(sys_uptime=1000, uptime_grows=False))
    """

    def __init__(self, devices: Sequence[Device], *, port: int | None = None,
                 start_timeout: float = 60.0, epoch: float | None = None):
        if not devices:
            raise ValueError("SnmpSim needs at least one device")
        comms = [d.community for d in devices]
        if len(set(comms)) != len(comms):
            raise ValueError("each device needs its own community (it selects the data file)")
        addrs = [d.address for d in devices]
        if len(set(addrs)) != len(addrs):
            raise ValueError("each device needs its own endpoint address")
        for d in devices:
            _check_loopback(d.address)
            if ":" in d.address:
                raise ValueError("SnmpSim here serves IPv4 loopback endpoints only")
            if not d.community or "/" in d.community or d.community.startswith("."):
                raise ValueError(f"community {d.community!r} cannot name a data file")
        if any(d.delay_ms for d in devices) and len(devices) > 1:
            raise ValueError("the delay variation blocks the whole simulator: run a slow device "
                             "in its own SnmpSim (see slow_agent())")
        self.devices: dict[str, Device] = {d.community: d for d in devices}
        self.port = port
        self.epoch = time.time() if epoch is None else epoch
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self._proc: _Proc | None = None
        self._mtime: dict[str, int] = {}
        # variation lines the running process may have cached: community -> {oid: line}
        self._served_variations: dict[str, dict[str, str]] = {}
        self.restarts = 0
        self.last_update: str | None = None    # "reload" | "restart" (what set_device did)

    # -- public ------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "snmpsim.log"

    def device(self, community: str) -> Device:
        return self.devices[community]

    def get(self, dev: Device | str, oids, **kw) -> SnmpResult:
        d = self.devices[dev if isinstance(dev, str) else dev.community]
        return snmpcmd("snmpget", d.address, self.port, oids, community=d.community, **kw)

    def walk(self, dev: Device | str, oid: str, **kw) -> SnmpResult:
        d = self.devices[dev if isinstance(dev, str) else dev.community]
        return snmpcmd("snmpbulkwalk", d.address, self.port, oid, community=d.community, **kw)

    def start(self) -> "SnmpSim":
        if self.running:
            return self
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="wm-snmpsim-"))
            self.data_dir.mkdir()
            (self.dir / "cache").mkdir()
            for d in self.devices.values():
                self._write_device(d)
        if self.port is None:
            # snmpsim binds with SO_REUSEADDR: a port already taken does NOT make it
            # fail, the other socket just gets the requests. So check here, first.
            self.port = free_udp_port([d.address for d in self.devices.values()])
        self._spawn()
        try:
            self._wait_ready()
        except BaseException:
            self._stop_proc()
            raise
        return self

    def stop(self) -> None:
        self._stop_proc()

    def restart(self) -> None:
        """Stop and start the simulator process (same port, same data)."""
        self._stop_proc()
        self.restarts += 1
        self._spawn()
        self._wait_ready()

    def set_device(self, spec: Device) -> str:
        """Serve new data for the device with ``spec.community``.  Returns
        "reload" (file rewritten, snmpsim re-reads it on the next request) or
        "restart" (a variation line changed, or the address did: process restarted)."""
        old = self.devices.get(spec.community)
        if old is None:
            raise KeyError(f"no device with community {spec.community!r} (new devices need a new SnmpSim)")
        if bool(spec.delay_ms) and len(self.devices) > 1:
            raise ValueError("the delay variation must run in its own SnmpSim")
        self.devices[spec.community] = spec
        new_var = {oid: line for oid, line in self._records(spec) if _is_variation(line)}
        seen = self._served_variations.get(spec.community, {})
        need_restart = old.address != spec.address or any(
            oid in seen and seen[oid] != line for oid, line in new_var.items())
        self._write_device(spec)
        if need_restart and self.running:
            self.restart()
            self.last_update = "restart"
        else:
            # the running process may cache these from now on
            self._served_variations.setdefault(spec.community, {}).update(new_var)
            self.last_update = "reload"
        return self.last_update

    def close(self) -> None:
        try:
            self._stop_proc()
        finally:
            if self.dir is not None and not os.environ.get("WANMON_KEEP_AGENT_DIRS"):
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    def __enter__(self) -> "SnmpSim":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ---------------------------------------------------------
    def _spawn(self) -> None:
        argv = [*snmpsim_command(), f"--data-dir={self.data_dir}", f"--cache-dir={self.dir / 'cache'}",
                "--log-level=error"]
        argv += [f"--agent-udpv4-endpoint={d.address}:{self.port}" for d in self.devices.values()]
        env = {**os.environ, "SNMPSIM_ALLOW_ROOT": "true"}
        env.pop("PYTHONSAFEPATH", None)
        self._proc = _Proc(argv, self.log_path, env=env)
        # a fresh process has no cached variation settings: what is on disk now is what it serves
        self._served_variations = {
            c: {oid: line for oid, line in self._records(d) if _is_variation(line)}
            for c, d in self.devices.items()}

    def _stop_proc(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        pending = list(self.devices.values())
        while pending:
            d = pending[0]
            left = max(1.0, deadline - time.monotonic())
            # a slow device answers sysName at once (the delay is on sysUpTime only)
            _wait_answer(lambda: snmpcmd("snmpget", d.address, self.port, SYS_NAME,
                                         community=d.community, timeout=0.5),
                         self._proc, f"snmpsim endpoint {d.address}:{self.port}", left)
            pending.pop(0)

    def _write_device(self, d: Device) -> None:
        path = self.data_dir / f"{d.community}.snmprec"
        text = "\n".join(line for _, line in self._records(d)) + "\n"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="ascii")
        # snmpsim re-reads a data file when its INTEGER st_mtime differs from
        # the one it indexed, and rebuilds the index when the file is not older
        # than the index: a strictly increasing mtime in the future does both.
        m = max(int(time.time()) + 1, self._mtime.get(d.community, 0) + 1)
        os.utime(tmp, (m, m))
        os.replace(tmp, path)
        self._mtime[d.community] = m

    def _records(self, d: Device) -> list[tuple[str, str]]:
        epoch = self.epoch if d.epoch is None else d.epoch
        recs: dict[str, str] = {}

        def put(oid: str, line: str) -> None:
            recs[oid] = line

        def growing(oid: str, tag: str, value: int, rate: float, wrap: bool, modulo: int | None = None) -> None:
            if modulo:
                value %= modulo
            if not rate:
                put(oid, f"{oid}|{tag}|{int(value)}")
                return
            initial = value - rate * epoch
            opts = f"rate={rate:g},initial={_fmt_num(initial)},atime=1"
            if wrap:
                opts += ",wrap=1"
            put(oid, f"{oid}|{tag}:numeric|{opts}")

        put(SYS_DESCR, _str_record(SYS_DESCR, d.sys_descr))
        put(SYS_OBJECT_ID, f"{SYS_OBJECT_ID}|6|{d.sys_object_id}")
        if d.delay_ms:
            put(SYS_UPTIME, f"{SYS_UPTIME}|67:delay|value={int(d.sys_uptime) % C32},wait={int(d.delay_ms)}")
        else:
            growing(SYS_UPTIME, TAG_TIMETICKS, d.sys_uptime, 100 if d.uptime_grows else 0, True, C32)
        put(SYS_CONTACT, _str_record(SYS_CONTACT, d.sys_contact))
        put(SYS_NAME, _str_record(SYS_NAME, d.sys_name))
        put(SYS_LOCATION, _str_record(SYS_LOCATION, d.sys_location))
        put(SYS_SERVICES, f"{SYS_SERVICES}|2|78")
        put(IF_NUMBER, f"{IF_NUMBER}|2|{len(d.interfaces)}")
        for i in d.interfaces:
            x = i.if_index

            def col(c: int, tag: str, v) -> None:
                oid = f"{IF_ENTRY}.{c}.{x}"
                put(oid, f"{oid}|{tag}|{v}")

            col(IF_INDEX, TAG_INTEGER, x)
            put(f"{IF_ENTRY}.{IF_DESCR}.{x}", _str_record(f"{IF_ENTRY}.{IF_DESCR}.{x}", i.descr or i.name))
            col(IF_TYPE, TAG_INTEGER, i.if_type)
            col(IF_MTU, TAG_INTEGER, i.mtu)
            col(IF_SPEED, TAG_GAUGE32, min(i.speed_bps, C32 - 1))
            put(f"{IF_ENTRY}.{IF_PHYS}.{x}", f"{IF_ENTRY}.{IF_PHYS}.{x}|4x|{(i.mac or b'').hex()}")
            col(IF_ADMIN, TAG_INTEGER, i.admin_status)
            col(IF_OPER, TAG_INTEGER, i.oper_status)
            col(IF_LAST_CHANGE, TAG_TIMETICKS, i.last_change % C32)
            growing(f"{IF_ENTRY}.{IF_IN_OCTETS}.{x}", TAG_COUNTER32, i.in_octets, i.in_rate, True, C32)
            col(IF_IN_UCAST, TAG_COUNTER32, i.in_ucast % C32)
            col(IF_IN_DISCARDS, TAG_COUNTER32, i.in_discards % C32)
            col(IF_IN_ERRORS, TAG_COUNTER32, i.in_errors % C32)
            growing(f"{IF_ENTRY}.{IF_OUT_OCTETS}.{x}", TAG_COUNTER32, i.out_octets, i.out_rate, True, C32)
            col(IF_OUT_UCAST, TAG_COUNTER32, i.out_ucast % C32)
            col(IF_OUT_DISCARDS, TAG_COUNTER32, i.out_discards % C32)
            col(IF_OUT_ERRORS, TAG_COUNTER32, i.out_errors % C32)
            if d.ifx:
                oid = f"{IFX_ENTRY}.{IFX_NAME}.{x}"
                put(oid, _str_record(oid, i.name))
                oid = f"{IFX_ENTRY}.{IFX_HIGH_SPEED}.{x}"
                put(oid, f"{oid}|{TAG_GAUGE32}|{i.speed_bps // 1_000_000}")
                oid = f"{IFX_ENTRY}.{IFX_ALIAS}.{x}"
                put(oid, _str_record(oid, i.alias))
            if d.hc_counters:
                growing(f"{IFX_ENTRY}.{IFX_HC_IN_OCTETS}.{x}", TAG_COUNTER64, i.in_octets, i.in_rate, True, C64)
                growing(f"{IFX_ENTRY}.{IFX_HC_OUT_OCTETS}.{x}", TAG_COUNTER64, i.out_octets, i.out_rate, True, C64)
        if d.engine_boots is not None:
            put(ENGINE_BOOTS, f"{ENGINE_BOOTS}|2|{d.engine_boots}")
        if d.engine_time is not None:
            growing(ENGINE_TIME, TAG_INTEGER, d.engine_time, 1 if d.uptime_grows else 0, False)
        for oid, (tag, value) in d.extra.items():
            if tag == TAG_STRING:
                put(oid, _str_record(oid, value))
            else:
                put(oid, f"{oid}|{tag}|{value}")
        return sorted(recs.items(), key=lambda kv: _oid_key(kv[0]))  # snmpsim binary-searches by OID


def _is_variation(line: str) -> bool:
    return ":" in line.split("|", 2)[1]


def slow_agent(spec: Device, delay_ms: int, **kw) -> SnmpSim:
    """A separate SnmpSim process serving only ``spec``, whose sysUpTime.0
    answers after ``delay_ms`` (snmpsim ``delay`` variation; every request
    that includes sysUpTime.0 waits once, other OIDs answer at once).  Use as
    a context manager."""
    return SnmpSim([spec.with_(delay_ms=delay_ms)], **kw)


SnmpSim.slow_agent = staticmethod(slow_agent)  # type: ignore[attr-defined]


if __name__ == "__main__":  # manual smoke test: python tests/snmp_agents.py
    print("net-snmp:", netsnmp_available(), "snmpsim:", snmpsim_available())
    with NetSnmpAgent() as a:
        print("snmpd", a.host, a.port, a.get([SYS_NAME, SYS_LOCATION, SYS_UPTIME]).values)
    devs = [Device(f"c{k}", addr, f"dev-{k}", interfaces=standard_interfaces(rate=1000))
            for k, addr in enumerate(loopback_addresses(3))]
    with SnmpSim(devs) as sim:
        for d in devs:
            print(d.address, sim.port, sim.get(d, [SYS_NAME, f"{IF_ENTRY}.{IF_IN_OCTETS}.2"]).values)
