"""SNMP poll of many agents (asyncio): system group + interface table.

* Messages are encoded and decoded by `snmpwire` (BER for exactly the PDUs
  the poll uses), not by pyasn1: pyasn1's generic decoder made a 177-site
  poll CPU-bound at ~10 ms per GETBULK reply. SNMPv3 key localization and
  privacy are wanmon's own `usm` module (on hashlib and cryptography) behind
  `snmpwire.V3Keys`: one key set per credential set, each pass phrase hashed
  once per poll, each key localized once per engine.
* One UDP socket per address family for the whole poll. A reply is matched
  on its request id / msgID and on the agent's address and port; a late
  reply to an earlier try of the same request is accepted.
* v3: engine ID discovery (and boots/time) per agent, one resync on a
  notInTimeWindow or unknownEngineID report.
* The interface table is read with GETBULK over all wanted columns at once
  (GETNEXT for v1), `max-repetitions` sized from ifNumber, so most agents
  answer in one round trip.
* A failure is a result: "timeout" (wrong community, ACL, agent down: they
  look the same on the wire), "auth_error" (wrong v3 key or protocol, unknown
  user: fast and explicit), "error" (anything else). Only bugs raise.
* noSuchObject / noSuchInstance / endOfMibView leave a value absent (None),
  never 0. Device strings are decoded as text and never interpreted.
* A concurrency cap (`[snmp] max_concurrency`) bounds the requests in flight.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import random
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from wanmon import dns
from wanmon.config import SnmpSpec
from wanmon.probes import snmpwire as wire

logger = logging.getLogger(__name__)

SYS = {
    "sys_descr": (1, 3, 6, 1, 2, 1, 1, 1, 0),
    "sys_object_id": (1, 3, 6, 1, 2, 1, 1, 2, 0),
    "sys_uptime": (1, 3, 6, 1, 2, 1, 1, 3, 0),
    "sys_contact": (1, 3, 6, 1, 2, 1, 1, 4, 0),
    "sys_name": (1, 3, 6, 1, 2, 1, 1, 5, 0),
    "sys_location": (1, 3, 6, 1, 2, 1, 1, 6, 0),
    "if_number": (1, 3, 6, 1, 2, 1, 2, 1, 0),
}
ENGINE = {
    "engine_boots": (1, 3, 6, 1, 6, 3, 10, 2, 1, 2, 0),
    "engine_time": (1, 3, 6, 1, 6, 3, 10, 2, 1, 3, 0),
}
_IF = (1, 3, 6, 1, 2, 1, 2, 2, 1)
_IFX = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)
COLUMNS = {
    "descr": _IF + (2,),
    "type": _IF + (3,),
    "speed": _IF + (5,),
    "admin": _IF + (7,),
    "oper": _IF + (8,),
    "in_octets": _IF + (10,),
    "in_discards": _IF + (13,),
    "in_errors": _IF + (14,),
    "out_octets": _IF + (16,),
    "out_discards": _IF + (19,),
    "out_errors": _IF + (20,),
    "name": _IFX + (1,),
    "hc_in_octets": _IFX + (6,),
    "hc_out_octets": _IFX + (10,),
    "high_speed": _IFX + (15,),
    "alias": _IFX + (18,),
    "discontinuity": _IFX + (19,),
}
IF_STATUS = {1: "up", 2: "down", 3: "testing", 4: "unknown", 5: "dormant", 6: "notPresent", 7: "lowerLayerDown"}
_MAX_VARBINDS = 256  # per GETBULK response (16 columns x 16 rows): one round trip for most routers


@dataclass(frozen=True, slots=True)
class Interface:
    if_index: int
    name: str | None
    descr: str | None
    alias: str | None
    type: int | None
    admin_status: str | None
    oper_status: str | None
    speed_bps: int | None
    in_octets: int | None
    out_octets: int | None
    counter_bits: int  # 64 when the HC counters were read, else 32
    in_errors: int | None
    out_errors: int | None
    in_discards: int | None
    out_discards: int | None
    discontinuity: int | None  # ifCounterDiscontinuityTime, TimeTicks

    @property
    def label(self) -> str:
        return self.name or self.descr or f"ifIndex {self.if_index}"


@dataclass(frozen=True, slots=True)
class SnmpResult:
    status: str  # ok | timeout | auth_error | error
    reason: str | None
    ts: float
    sys_descr: str | None = None
    sys_object_id: str | None = None
    sys_uptime_ticks: int | None = None
    sys_contact: str | None = None
    sys_name: str | None = None
    sys_location: str | None = None
    engine_boots: int | None = None
    engine_time_s: int | None = None
    interfaces: tuple[Interface, ...] = field(default=())
    duration_ms: float = 0.0
    if_ts: float | None = None  # when the interface counters were read (middle of the table walk)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, slots=True)
class SnmpTarget:
    host: str  # IP literal (resolved by the caller) or host name
    spec: SnmpSpec


# ----------------------------------------------------------------------------
# values


def _text(v) -> str | None:
    """Device strings are data: decode, drop NULs, never interpret. Absent: None."""
    if _absent(v):
        return None
    if isinstance(v, tuple):  # an OBJECT IDENTIFIER where text was expected
        return ".".join(str(x) for x in v)
    if not isinstance(v, (bytes, bytearray)):
        return str(v)
    return bytes(v).replace(b"\x00", b"").decode("utf-8", errors="replace").strip()


def _absent(v) -> bool:
    return v is None or isinstance(v, wire.Absent)


def _int(v) -> int | None:
    return v if type(v) is int else None


# ----------------------------------------------------------------------------
# transport: one UDP socket per address family for the whole poll


class _Timeout(Exception):
    pass


class _ByteBudget:
    """Bytes of replies that may be on their way at once, so that a burst of
    answers fits in the socket's receive buffer instead of being dropped by
    the kernel (a drop costs a timeout and a retry, two drops a false
    "timeout"). The buffer is what the kernel granted: 8 MB as root, but
    Debian's default cap (net.core.rmem_max) gives an unprivileged process
    only ~200 KB, about 30 GETBULK answers."""

    def __init__(self, limit: int):
        self.limit = max(limit, 1)
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future]] = collections.deque()

    async def acquire(self, n: int) -> int:
        """Wait until n bytes fit (first come, first served); returns what to release."""
        n = min(n, self.limit)
        if not self._waiters and (not self.used or self.used + n <= self.limit):
            self.used += n
            return n
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((n, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # granted just before the cancel: give it back
                self.release(n)
            else:
                fut.cancel()
            raise
        return n

    def release(self, n: int) -> None:
        self.used -= n
        while self._waiters:
            m, fut = self._waiters[0]
            if fut.done():  # its task was cancelled
                self._waiters.popleft()
                continue
            if self.used and self.used + m > self.limit:
                break
            self._waiters.popleft()
            self.used += m
            fut.set_result(None)


def reply_estimate(varbinds: int) -> int:
    """Receive-buffer bytes one reply may take: the datagram (~26 bytes per
    varbind for an interface table, more for long strings) plus the kernel's
    per-packet overhead."""
    return 1024 + 48 * varbinds


class _Net(asyncio.DatagramProtocol):
    """Requests and replies over one socket; a reply is matched on its
    request id (v1/v2c) or msgID (v3) *and* the agent's address and port."""

    def __init__(self) -> None:
        self.pending: dict[int, tuple[asyncio.Future, str, int]] = {}
        self._ids = itertools.count(random.randrange(1, 1 << 30))
        self._transports: dict[int, asyncio.DatagramTransport] = {}
        self._opening: dict[int, asyncio.Future] = {}
        self._budgets: dict[int, _ByteBudget] = {}

    def next_id(self) -> int:
        return next(self._ids) & 0x7FFFFFFF or 1

    def datagram_received(self, data: bytes, addr) -> None:
        ident = wire.peek_id(data)
        if ident is None:
            return
        entry = self.pending.get(ident[1])
        if entry is None:  # a late answer to a request already given up
            return
        fut, ip, port = entry
        if addr[1] != port or addr[0] != ip or fut.done():
            return
        fut.set_result(data)

    def error_received(self, exc: Exception) -> None:  # ICMP errors on an unconnected socket: nothing to match
        logger.debug("snmp socket error: %s", exc)

    async def transport(self, family: int) -> asyncio.DatagramTransport:
        tr = self._transports.get(family)
        if tr is not None:
            return tr
        opening = self._opening.get(family)
        if opening is None:
            opening = self._opening[family] = asyncio.ensure_future(self._open(family))
        return await asyncio.shield(opening)

    async def _open(self, family: int) -> asyncio.DatagramTransport:
        local = ("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0)
        tr, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: self, local_addr=local, family=family)
        sock = tr.get_extra_info("socket")
        # Many agents answering at once overflow the default buffer (~200 KB).
        for opt in (33, socket.SO_RCVBUF):  # SO_RCVBUFFORCE needs CAP_NET_ADMIN; SO_RCVBUF is capped
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, _RCVBUF)
                break
            except OSError:
                continue
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)  # already doubled by the kernel
        self._budgets[family] = _ByteBudget(granted // 2)
        logger.debug("snmp udp receive buffer: %d bytes", granted)
        self._transports[family] = tr
        return tr

    async def exchange(
        self, rid: int, msg: bytes, dest: tuple, family: int, timeout: float, retries: int, expect: int
    ) -> bytes:
        """Send msg (again after each timeout) until its reply comes; expect:
        receive-buffer bytes the reply may take (reply_estimate)."""
        tr = await self.transport(family)
        budget = self._budgets[family]
        held = await budget.acquire(expect)
        fut = asyncio.get_running_loop().create_future()
        self.pending[rid] = (fut, dest[0], dest[1])
        try:
            for _ in range(retries + 1):
                tr.sendto(msg, dest)
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), timeout)
                except TimeoutError:
                    continue
            raise _Timeout()
        finally:
            self.pending.pop(rid, None)
            budget.release(held)
            if not fut.done():
                fut.cancel()

    def close(self) -> None:
        for tr in self._transports.values():
            tr.close()
        self._transports.clear()


_RCVBUF = 8 * 1024 * 1024


# ----------------------------------------------------------------------------
# credentials


def _cred_key(spec: SnmpSpec) -> tuple:
    return (
        spec.version,
        spec.community,
        spec.user,
        spec.auth_protocol,
        spec.auth_key,
        spec.priv_protocol,
        spec.priv_key,
    )


class _Keyring:
    """V3 keys per credential set: each pass phrase is hashed once per poll."""

    def __init__(self) -> None:
        self._keys: dict[tuple, wire.V3Keys] = {}

    def get(self, spec: SnmpSpec) -> wire.V3Keys:
        ck = _cred_key(spec)
        k = self._keys.get(ck)
        if k is None:
            assert spec.user is not None, "config requires a user for SNMPv3 (and only v3 sites get keys)"
            k = self._keys[ck] = wire.V3Keys(
                spec.user,
                spec.auth_protocol,
                spec.auth_key.reveal() if spec.auth_key else None,
                spec.priv_protocol,
                spec.priv_key.reveal() if spec.priv_key else None,
            )
        return k


_REPORTS: dict[tuple[int, ...], str] = {
    wire.UNKNOWN_USER_NAME: "unknown_user",
    wire.WRONG_DIGEST: "wrong_digest",
    wire.DECRYPTION_ERROR: "decryption",
    wire.UNSUPPORTED_SEC_LEVEL: "sec_level",
    wire.NOT_IN_TIME_WINDOW: "time_window",
    wire.UNKNOWN_ENGINE_ID: "unknown_engine",
}


def _reason(kind: str, spec: SnmpSpec) -> tuple[str, str]:
    if kind == "timeout":
        tries = spec.retries + 1
        if spec.version == "3":
            hint = "agent down, blocked by an ACL or firewall, or the v3 engine does not answer"
        else:
            hint = "wrong community, agent down, or blocked by an ACL or firewall"
        return (
            "timeout",
            f"no response ({tries} {'try' if tries == 1 else 'tries'} of {spec.timeout_ms / 1000:g} s): {hint}",
        )
    if kind == "unknown_user":
        return "auth_error", f"unknown SNMPv3 user '{spec.user}' on the agent"
    if kind == "wrong_digest":
        return (
            "auth_error",
            f"SNMPv3 authentication failed for user '{spec.user}': wrong auth key or protocol ({spec.auth_protocol})",
        )
    if kind == "decryption":
        return (
            "auth_error",
            f"SNMPv3 decryption failed for user '{spec.user}': wrong privacy key or protocol ({spec.priv_protocol})",
        )
    if kind == "sec_level":
        return "auth_error", f"the agent does not accept security level {spec.security_level} for user '{spec.user}'"
    if kind == "time_window":
        return "auth_error", "SNMPv3 message not in time window (agent clock/boots mismatch)"
    if kind == "unknown_engine":
        return "error", "SNMPv3 engine discovery failed: the agent keeps reporting an unknown engine ID"
    return "error", f"SNMP error: {kind}"


# ----------------------------------------------------------------------------
# one agent


def _reply_varbinds(tag: int, b: int, oids: list) -> int:
    return len(oids) * max(b, 1) if tag == wire.GETBULK else len(oids)


class _Failed(Exception):
    def __init__(self, status: str, reason: str):
        self.status, self.reason = status, reason


class _Agent:
    """One agent's requests: encode, send, match, retry, decode (snmpwire)."""

    def __init__(self, net: _Net, spec: SnmpSpec, dest: tuple, family: int, keys: wire.V3Keys | None):
        self.net, self.spec, self.dest, self.family, self.keys = net, spec, dest, family, keys
        self.timeout = spec.timeout_ms / 1000.0
        if spec.version in ("1", "2c"):
            assert spec.community is not None, "config requires a community for SNMPv1/v2c"
            self.community = spec.community.reveal().encode()
        else:
            self.community = b""
        self.engine_id: bytes | None = None
        self.boots = self.time_s = 0
        self.synced = 0.0

    async def _exchange(self, rid: int, msg: bytes, varbinds: int) -> bytes:
        expect = reply_estimate(varbinds) + (256 if self.spec.version == "3" else 0)
        try:
            return await self.net.exchange(rid, msg, self.dest, self.family, self.timeout, self.spec.retries, expect)
        except _Timeout:
            raise _Failed(*_reason("timeout", self.spec)) from None

    async def _call(self, tag: int, a: int, b: int, oids) -> tuple[int, int, list]:
        oids = list(oids)
        if self.spec.version != "3":
            rid = self.net.next_id()
            data = await self._exchange(
                rid,
                wire.community_message(
                    0 if self.spec.version == "1" else 1, self.community, wire.pdu(tag, rid, a, b, oids)
                ),
                _reply_varbinds(tag, b, oids),
            )
            try:
                _, _, p = wire.parse_community(data)
            except wire.WireError as exc:
                raise _Failed("error", f"malformed SNMP reply: {exc}") from None
            return p.error_status, p.error_index, p.varbinds
        return await self._call_v3(tag, a, b, oids)

    async def _discover(self) -> None:
        rid = self.net.next_id()
        msg = wire.v3_message(rid, wire.FLAG_REPORTABLE, b"", 0, 0, b"", wire.pdu(wire.GET, rid, 0, 0, ()))
        data = await self._exchange(rid, msg, 1)
        try:
            r = wire.parse_v3(data, None)
        except wire.WireError as exc:
            raise _Failed("error", f"malformed SNMPv3 discovery reply: {exc}") from None
        if not r.engine_id:
            raise _Failed("error", "SNMPv3 engine discovery failed: the agent sent no engine ID")
        self._sync(r)

    def _sync(self, r: wire.V3Reply) -> None:
        self.engine_id, self.boots, self.time_s, self.synced = r.engine_id, r.boots, r.time_s, time.monotonic()

    async def _call_v3(self, tag: int, a: int, b: int, oids) -> tuple[int, int, list]:
        keys = self.keys
        assert keys is not None, "a v3 agent is made with its keys (_poll_one)"
        for attempt in range(3):  # discovery, then at most one resync for the time window or engine ID
            if self.engine_id is None:
                await self._discover()
            assert self.engine_id is not None, "_discover() sets it or raises _Failed"
            rid = self.net.next_id()
            now_s = self.time_s + int(time.monotonic() - self.synced)
            msg = wire.v3_message(
                rid,
                keys.flags | wire.FLAG_REPORTABLE,
                self.engine_id,
                self.boots,
                now_s,
                keys.user,
                wire.pdu(tag, rid, a, b, oids),
                keys,
            )
            data = await self._exchange(rid, msg, _reply_varbinds(tag, b, oids))
            try:
                r = wire.parse_v3(data, keys)
            except wire.DecryptError:
                raise _Failed(*_reason("decryption", self.spec)) from None
            except wire.AuthError:
                raise _Failed(*_reason("wrong_digest", self.spec)) from None
            except wire.WireError as exc:
                raise _Failed("error", f"malformed SNMPv3 reply: {exc}") from None
            p = r.pdu
            if p.tag == wire.REPORT:
                oid = p.varbinds[0][0] if p.varbinds else None
                if oid is None:
                    kind = "report (empty)"
                else:
                    kind = _REPORTS.get(oid, f"report {'.'.join(map(str, oid)) if oid else '(empty)'}")
                if kind in ("time_window", "unknown_engine") and attempt < 2:
                    if kind == "time_window" and r.flags & wire.FLAG_AUTH:
                        self._sync(r)  # authenticated: trust its boots and time
                    else:
                        self.engine_id = None
                    continue
                raise _Failed(*_reason(kind, self.spec))
            if (keys.auth and not r.flags & wire.FLAG_AUTH) or (keys.priv and not r.flags & wire.FLAG_PRIV):
                raise _Failed(
                    "error", f"the agent answered at a lower security level than asked ({self.spec.security_level})"
                )
            return p.error_status, p.error_index, p.varbinds
        raise _Failed(*_reason("time_window", self.spec))

    async def get(self, names_oids: dict[str, tuple]) -> dict:
        err_status, err_index, vbs = await self._call(wire.GET, 0, 0, names_oids.values())
        if err_status:
            if self.spec.version == "1" and err_status == 2:  # noSuchName: one OID is missing
                bad = err_index - 1
                names = list(names_oids)
                if 0 <= bad < len(names) and len(names) > 1:
                    rest = {k: v for i, (k, v) in enumerate(names_oids.items()) if i != bad}
                    return {**(await self.get(rest)), names[bad]: None}
            raise _Failed("error", f"agent returned {wire.ERROR_STATUS.get(err_status, err_status)} for a GET")
        if len(vbs) != len(names_oids):
            raise _Failed("error", f"agent answered {len(vbs)} values for a GET of {len(names_oids)}")
        return {name: vb[1] for name, vb in zip(names_oids, vbs)}

    async def table(self, columns: dict[str, tuple], rows_hint: int, whole_index: bool = False) -> dict:
        """Walk the given columns together; {ifIndex: {column: value}}. whole_index: tables indexed
        by several sub-identifiers (LLDP-MIB's): {index tuple: {column: value}}."""
        rows: dict = {}
        cursor = dict(columns)
        active = list(columns)
        reps = max(1, min(rows_hint + 1, _MAX_VARBINDS // max(1, len(active))))
        while active:
            if self.spec.version == "1":
                err_status, err_index, vbs = await self._call(wire.GETNEXT, 0, 0, [cursor[c] for c in active])
                if err_status:
                    if err_status == 2:  # noSuchName: that column ran off the end of the MIB
                        bad = err_index - 1
                        active = [c for i, c in enumerate(active) if i != bad] if 0 <= bad < len(active) else []
                        continue
                    raise _Failed(
                        "error",
                        "agent returned "
                        f"{wire.ERROR_STATUS.get(err_status, err_status)} while walking the interface table",
                    )
            else:
                err_status, err_index, vbs = await self._call(wire.GETBULK, 0, reps, [cursor[c] for c in active])
                if err_status:
                    if err_status == 1 and reps > 1:  # tooBig: ask for fewer rows
                        reps = max(1, reps // 2)
                        continue
                    raise _Failed(
                        "error",
                        "agent returned "
                        f"{wire.ERROR_STATUS.get(err_status, err_status)} while walking the interface table",
                    )
            done: set[str] = set()
            progressed = False
            width = len(active)
            for k, (oid, val) in enumerate(vbs):
                col = active[k % width]
                if col in done:
                    continue
                prefix = columns[col]
                width_ok = len(oid) > len(prefix) if whole_index else len(oid) == len(prefix) + 1
                if _absent(val) or not width_ok or oid[: len(prefix)] != prefix or oid <= cursor[col]:
                    done.add(col)  # left the column (or a non-increasing OID: agent bug)
                    continue
                rows.setdefault(oid[len(prefix) :] if whole_index else oid[-1], {})[col] = val
                cursor[col] = oid
                progressed = True
            active = [c for c in active if c not in done]
            if not progressed:
                break
        return rows


def _interfaces(rows: dict[int, dict]) -> tuple[Interface, ...]:
    out = []
    for idx in sorted(rows):
        r = rows[idx]
        hc_in, hc_out = _int(r.get("hc_in_octets")), _int(r.get("hc_out_octets"))
        hc = hc_in is not None and hc_out is not None
        high, speed = _int(r.get("high_speed")), _int(r.get("speed"))
        # ifSpeed (b/s) saturates at 4294967295 above ~4 Gb/s: then ifHighSpeed (Mb/s) is the truth.
        speed_bps = speed
        if high and (speed is None or speed >= 4_294_967_295):
            speed_bps = high * 1_000_000
        admin, oper = _int(r.get("admin")), _int(r.get("oper"))
        out.append(
            Interface(
                if_index=idx,
                name=_text(r.get("name")),
                descr=_text(r.get("descr")),
                alias=_text(r.get("alias")),
                type=_int(r.get("type")),
                admin_status=IF_STATUS.get(admin, str(admin)) if admin is not None else None,
                oper_status=IF_STATUS.get(oper, str(oper)) if oper is not None else None,
                speed_bps=speed_bps,
                in_octets=hc_in if hc else _int(r.get("in_octets")),
                out_octets=hc_out if hc else _int(r.get("out_octets")),
                counter_bits=64 if hc else 32,
                in_errors=_int(r.get("in_errors")),
                out_errors=_int(r.get("out_errors")),
                in_discards=_int(r.get("in_discards")),
                out_discards=_int(r.get("out_discards")),
                discontinuity=_int(r.get("discontinuity")),
            )
        )
    return tuple(out)


def dns_budget_s(spec: SnmpSpec) -> float:
    """How long a host name may take to resolve: what a dead agent costs anyway."""
    return spec.timeout_ms * (spec.retries + 1) / 1000.0


async def _resolve(host: str, port: int, timeout_s: float) -> tuple[tuple, int]:
    """(sockaddr, family) of the agent. A host name resolves in a daemon thread under
    `timeout_s` (wanmon.dns), never in the default executor: a silent DNS costs this
    target its budget, not the poll or the process exit."""
    ans = await dns.resolve(host, timeout_s)
    if ans.ip is None:
        if ans.source == "timeout":
            raise _Failed("timeout", f"DNS timeout for {host} (no answer within {timeout_s:g} s)")
        raise _Failed("error", ans.reason or f"host name {host!r} does not resolve")
    family = ans.family
    assert family is not None, "ans.ip is set, so it has a family"
    try:
        infos = socket.getaddrinfo(ans.ip, port, family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)
    except OSError as exc:
        raise _Failed("error", f"cannot reach {host}:{port}: {exc}") from None
    sockaddr = infos[0][4]
    return (sockaddr[0], sockaddr[1]) if family == socket.AF_INET else sockaddr, family


async def _poll_one(net: _Net, keyring: _Keyring, target: SnmpTarget) -> SnmpResult:
    spec = target.spec
    ts = time.time()
    t0 = time.perf_counter()
    try:
        dest, family = await _resolve(target.host, spec.port, dns_budget_s(spec))
        agent = _Agent(net, spec, dest, family, keyring.get(spec) if spec.version == "3" else None)
        if spec.version == "1":  # in v1 a missing OID fails the whole GET: skip the optional ones
            sys_vals, engine_vals = await agent.get(SYS), {}
        else:
            sys_vals = engine_vals = await agent.get({**SYS, **ENGINE})
        rows_hint = _int(sys_vals.get("if_number")) or 8
        walk_start = time.time()
        rows = await agent.table(COLUMNS, rows_hint)
        if_ts = (walk_start + time.time()) / 2
        oid = sys_vals.get("sys_object_id")
        return SnmpResult(
            status="ok",
            reason=None,
            ts=ts,
            sys_descr=_text(sys_vals.get("sys_descr")),
            sys_object_id=".".join(str(x) for x in oid) if isinstance(oid, tuple) else None,
            sys_uptime_ticks=_int(sys_vals.get("sys_uptime")),
            sys_contact=_text(sys_vals.get("sys_contact")),
            sys_name=_text(sys_vals.get("sys_name")),
            sys_location=_text(sys_vals.get("sys_location")),
            engine_boots=_int(engine_vals.get("engine_boots")),
            engine_time_s=_int(engine_vals.get("engine_time")),
            interfaces=_interfaces(rows),
            duration_ms=(time.perf_counter() - t0) * 1000,
            if_ts=if_ts,
        )
    except _Failed as f:
        return SnmpResult(status=f.status, reason=f.reason, ts=ts, duration_ms=(time.perf_counter() - t0) * 1000)


async def probe(
    targets: Sequence[SnmpTarget], max_concurrency: int = 256, budget_s: float | None = None
) -> list[SnmpResult | None]:
    """Poll every target; one result per target, same order. Must run inside the event loop.

    budget_s bounds the whole poll: targets still waiting or in flight when it
    runs out are abandoned and their result is None (not polled: no sample, no
    failure counted); the caller polls them next time."""

    def bug(exc: Exception) -> SnmpResult:
        return SnmpResult(status="error", reason=f"internal error while polling: {type(exc).__name__}", ts=time.time())

    return await each(targets, _poll_one, bug, max_concurrency, budget_s)


R = TypeVar("R")
PollOne = Callable[["_Net", "_Keyring", SnmpTarget], Awaitable[R]]


async def each(
    targets: Sequence[SnmpTarget],
    poll: PollOne[R],
    bug: Callable[[Exception], R],
    max_concurrency: int = 256,
    budget_s: float | None = None,
) -> list[R | None]:
    """poll(net, keyring, target) for every target over one socket per family, at most
    max_concurrency at once, within budget_s in all (None for the targets not done by then);
    a bug in one target's poll is bug(exc) for it, not the others' end. probe() reads the system
    group and interfaces; wanmon.probes.lldp the neighbour tables."""
    if not targets:
        return []
    net = _Net()
    keyring = _Keyring()
    sem = asyncio.Semaphore(max_concurrency)

    async def one(t: SnmpTarget) -> R:
        async with sem:
            try:
                return await poll(net, keyring, t)
            except Exception as exc:  # a bug in decoding one agent's answer must not stop the others
                logger.exception("snmp poll failed host=%s", t.host)
                return bug(exc)

    tasks = [asyncio.ensure_future(one(t)) for t in targets]
    try:
        done, pending = await asyncio.wait(tasks, timeout=budget_s)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            logger.warning(
                "snmp poll budget of %.1f s spent: %d of %d agents not polled this time (they come first next time)",
                budget_s,
                len(pending),
                len(tasks),
            )
        return [t.result() if t in done else None for t in tasks]
    finally:
        for t in tasks:
            t.cancel()
        net.close()
