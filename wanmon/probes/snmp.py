"""SNMP poll of many agents with pysnmp 7 (asyncio): system group + interface table.

* One SnmpEngine per credential set (an engine keeps one key set per v3 user
  name, the last configured wins), created inside the running loop and closed
  at the end: never reused across `asyncio.run()` calls.
* Numeric OIDs with `lookupMib=False`: no MIB loading (IF-MIB is not bundled)
  and much less CPU.
* The interface table is read with GETBULK over all wanted columns at once
  (GETNEXT for v1), `max-repetitions` sized from ifNumber, so most agents
  answer in one round trip.
* A failure is a result: "timeout" (wrong community, ACL, agent down: they
  look the same on the wire), "auth_error" (wrong v3 key or protocol, unknown
  user: fast and explicit), "error" (anything else). Only bugs raise.
* noSuchObject / noSuchInstance / endOfMibView leave a value absent (None),
  never 0. Device strings are decoded as text and never interpreted.
* A concurrency cap keeps pysnmp's single UDP socket from overflowing under
  many v3 replies (see NOTES-libraries.md).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from wanmon.config import SnmpSpec

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
    """Device strings are data: decode, drop NULs, never interpret."""
    try:
        raw = bytes(v)
    except (TypeError, ValueError):
        return str(v)
    return raw.replace(b"\x00", b"").decode("utf-8", errors="replace").strip()


def _absent(v) -> bool:
    from pysnmp.proto import rfc1905

    return isinstance(v, (rfc1905.NoSuchObject, rfc1905.NoSuchInstance, rfc1905.EndOfMibView)) or v is None


def _int(v) -> int | None:
    if _absent(v):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------
# engines and credentials


_AUTH = {
    "none": "usmNoAuthProtocol", "MD5": "usmHMACMD5AuthProtocol", "SHA": "usmHMACSHAAuthProtocol",
    "SHA224": "usmHMAC128SHA224AuthProtocol", "SHA256": "usmHMAC192SHA256AuthProtocol",
    "SHA384": "usmHMAC256SHA384AuthProtocol", "SHA512": "usmHMAC384SHA512AuthProtocol",
}
_PRIV = {
    "none": "usmNoPrivProtocol", "DES": "usmDESPrivProtocol", "AES": "usmAesCfb128Protocol",
    "AES192": "usmAesCfb192Protocol", "AES256": "usmAesCfb256Protocol",
}


def _cred_key(spec: SnmpSpec) -> tuple:
    return (spec.version, spec.community, spec.user, spec.auth_protocol, spec.auth_key, spec.priv_protocol, spec.priv_key)


def _auth_data(spec: SnmpSpec):
    import pysnmp.hlapi.v3arch.asyncio as h

    if spec.version in ("1", "2c"):
        return h.CommunityData(spec.community.reveal(), mpModel=0 if spec.version == "1" else 1)
    return h.UsmUserData(
        spec.user,
        authKey=spec.auth_key.reveal() if spec.auth_key else None,
        privKey=spec.priv_key.reveal() if spec.priv_key else None,
        authProtocol=getattr(h, _AUTH[spec.auth_protocol]),
        privProtocol=getattr(h, _PRIV[spec.priv_protocol]),
    )


def _engine_slots(targets: Sequence[SnmpTarget]) -> list[int]:
    """Engine index per target: v3 credential sets that reuse a user name with
    other keys go to another engine (one key set per user name per engine)."""
    slot_of_cred: dict[tuple, int] = {}
    users_in_slot: list[dict[str, tuple]] = []
    out = []
    for t in targets:
        ck = _cred_key(t.spec)
        if ck not in slot_of_cred:
            user = t.spec.user if t.spec.version == "3" else None
            slot = 0
            while True:
                if slot == len(users_in_slot):
                    users_in_slot.append({})
                taken = users_in_slot[slot]
                if user is None or user not in taken or taken[user] == ck:
                    if user is not None:
                        taken[user] = ck
                    break
                slot += 1
            slot_of_cred[ck] = slot
        out.append(slot_of_cred[ck])
    return out


def _classify(err_ind, spec: SnmpSpec) -> tuple[str, str]:
    from pysnmp.proto import errind

    name = type(err_ind).__name__
    tries = spec.retries + 1
    if isinstance(err_ind, errind.RequestTimedOut):
        if spec.version == "3":
            hint = "agent down, blocked by an ACL or firewall, or the v3 engine does not answer"
        else:
            hint = "wrong community, agent down, or blocked by an ACL or firewall"
        return "timeout", f"no response ({tries} {'try' if tries == 1 else 'tries'} of {spec.timeout_ms / 1000:g} s): {hint}"
    if isinstance(err_ind, errind.UnknownUserName):
        return "auth_error", f"unknown SNMPv3 user '{spec.user}' on the agent"
    if isinstance(err_ind, (errind.WrongDigest, errind.AuthenticationFailure)):
        return "auth_error", f"SNMPv3 authentication failed for user '{spec.user}': wrong auth key or protocol ({spec.auth_protocol})"
    if isinstance(err_ind, errind.DecryptionError):
        return "auth_error", f"SNMPv3 decryption failed for user '{spec.user}': wrong privacy key or protocol ({spec.priv_protocol})"
    if isinstance(err_ind, (errind.UnsupportedSecurityLevel,)):
        return "auth_error", f"the agent does not accept security level {spec.security_level} for user '{spec.user}'"
    if isinstance(err_ind, errind.NotInTimeWindow):
        return "auth_error", "SNMPv3 message not in time window (agent clock/boots mismatch)"
    return "error", f"SNMP error: {name}: {err_ind}"


# ----------------------------------------------------------------------------
# one agent


class _Failed(Exception):
    def __init__(self, status: str, reason: str):
        self.status, self.reason = status, reason


class _Agent:
    """One agent's requests, through pysnmp's command generators directly.

    The hlapi wrappers resolve every OID against the MIB and re-run the target
    configuration on each request; with numeric OIDs neither is needed, and
    together they cost about a quarter of the CPU of a poll.
    """

    def __init__(self, engine, target: SnmpTarget, transport):
        from pysnmp.entity.rfc3413 import cmdgen as gen
        from pysnmp.hlapi.v3arch.asyncio.cmdgen import LCD

        self.engine = engine
        self.spec = target.spec
        self.addr, _ = LCD.configure(engine, _auth_data(target.spec), transport, "")
        self.gen = gen

    async def _call(self, generator, args: tuple, oids) -> tuple:
        from pyasn1.type import univ
        from pysnmp.proto import rfc1902

        fut = asyncio.get_running_loop().create_future()

        def done(_engine, _handle, err_ind, err_status, err_index, var_binds, _ctx):
            if not fut.done():
                fut.set_result((err_ind, err_status, err_index, var_binds))

        var_binds = [(rfc1902.ObjectName(o), univ.Null("")) for o in oids]
        generator.send_varbinds(self.engine, self.addr, None, "", *args, var_binds, done)
        err_ind, err_status, err_index, vbs = await fut
        if err_ind:
            raise _Failed(*_classify(err_ind, self.spec))
        return err_status, err_index, vbs

    async def get(self, names_oids: dict[str, tuple]) -> dict:
        err_status, err_index, vbs = await self._call(self.gen.GetCommandGenerator(), (), names_oids.values())
        if err_status:
            if self.spec.version == "1" and int(err_status) == 2:  # noSuchName: one OID is missing
                bad = int(err_index) - 1
                names = list(names_oids)
                if 0 <= bad < len(names) and len(names) > 1:
                    rest = {k: v for i, (k, v) in enumerate(names_oids.items()) if i != bad}
                    return {**(await self.get(rest)), names[bad]: None}
            raise _Failed("error", f"agent returned {err_status.prettyPrint()} for a GET")
        return {name: vb[1] for name, vb in zip(names_oids, vbs)}

    async def table(self, columns: dict[str, tuple], rows_hint: int) -> dict[int, dict]:
        """Walk the given columns together; {ifIndex: {column: value}}."""
        rows: dict[int, dict] = {}
        cursor = dict(columns)
        active = list(columns)
        reps = max(1, min(rows_hint + 1, _MAX_VARBINDS // max(1, len(active))))
        while active:
            if self.spec.version == "1":
                err_status, err_index, vbs = await self._call(self.gen.NextCommandGeneratorSingleRun(), (),
                                                              [cursor[c] for c in active])
                if err_status:
                    if int(err_status) == 2:  # noSuchName: that column ran off the end of the MIB
                        bad = int(err_index) - 1
                        active = [c for i, c in enumerate(active) if i != bad] if 0 <= bad < len(active) else []
                        continue
                    raise _Failed("error", f"agent returned {err_status.prettyPrint()} while walking the interface table")
            else:
                err_status, err_index, vbs = await self._call(self.gen.BulkCommandGeneratorSingleRun(), (0, reps),
                                                              [cursor[c] for c in active])
                if err_status:
                    if int(err_status) == 1 and reps > 1:  # tooBig: ask for fewer rows
                        reps = max(1, reps // 2)
                        continue
                    raise _Failed("error", f"agent returned {err_status.prettyPrint()} while walking the interface table")
            done: set[str] = set()
            progressed = False
            width = len(active)
            for k, vb in enumerate(vbs):
                col = active[k % width]
                if col in done:
                    continue
                oid, val = tuple(vb[0]), vb[1]
                prefix = columns[col]
                if _absent(val) or oid[: len(prefix)] != prefix or len(oid) != len(prefix) + 1 or oid <= cursor[col]:
                    done.add(col)  # left the column (or a non-increasing OID: agent bug)
                    continue
                rows.setdefault(oid[-1], {})[col] = val
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
        out.append(Interface(
            if_index=idx,
            name=_text(r["name"]) if "name" in r and not _absent(r["name"]) else None,
            descr=_text(r["descr"]) if "descr" in r and not _absent(r["descr"]) else None,
            alias=_text(r["alias"]) if "alias" in r and not _absent(r["alias"]) else None,
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
        ))
    return tuple(out)


async def _poll_one(engine, target: SnmpTarget) -> SnmpResult:
    import pysnmp.hlapi.v3arch.asyncio as h

    spec = target.spec
    ts = time.time()
    t0 = time.perf_counter()
    try:
        try:
            v6 = ":" in target.host
            cls = h.Udp6TransportTarget if v6 else h.UdpTransportTarget
            transport = await cls.create((target.host, spec.port), timeout=spec.timeout_ms / 1000.0, retries=spec.retries)
        except Exception as exc:  # resolution failures and the like
            raise _Failed("error", f"cannot reach {target.host}:{spec.port}: {exc}") from None
        agent = _Agent(engine, target, transport)
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
            status="ok", reason=None, ts=ts,
            sys_descr=None if _absent(sys_vals.get("sys_descr")) else _text(sys_vals["sys_descr"]),
            sys_object_id=None if _absent(oid) else ".".join(str(x) for x in tuple(oid)),
            sys_uptime_ticks=_int(sys_vals.get("sys_uptime")),
            sys_contact=None if _absent(sys_vals.get("sys_contact")) else _text(sys_vals["sys_contact"]),
            sys_name=None if _absent(sys_vals.get("sys_name")) else _text(sys_vals["sys_name"]),
            sys_location=None if _absent(sys_vals.get("sys_location")) else _text(sys_vals["sys_location"]),
            engine_boots=_int(engine_vals.get("engine_boots")),
            engine_time_s=_int(engine_vals.get("engine_time")),
            interfaces=_interfaces(rows),
            duration_ms=(time.perf_counter() - t0) * 1000,
            if_ts=if_ts,
        )
    except _Failed as f:
        return SnmpResult(status=f.status, reason=f.reason, ts=ts, duration_ms=(time.perf_counter() - t0) * 1000)


async def probe(targets: Sequence[SnmpTarget], max_concurrency: int = 64) -> list[SnmpResult]:
    """Poll every target; one result per target, same order. Must run inside the event loop."""
    if not targets:
        return []
    from pysnmp.hlapi.v3arch.asyncio import SnmpEngine

    slots = _engine_slots(targets)
    engines = [SnmpEngine() for _ in range(max(slots) + 1)]
    sem = asyncio.Semaphore(max_concurrency)
    grower = asyncio.ensure_future(_grow_receive_buffers(engines))

    async def one(t: SnmpTarget, slot: int) -> SnmpResult:
        async with sem:
            try:
                return await _poll_one(engines[slot], t)
            except Exception as exc:  # a bug in decoding one agent's answer must not stop the others
                logger.exception("snmp poll failed host=%s", t.host)
                return SnmpResult(status="error", reason=f"internal error while polling: {type(exc).__name__}",
                                  ts=time.time())

    try:
        return list(await asyncio.gather(*(one(t, s) for t, s in zip(targets, slots))))
    finally:
        grower.cancel()
        for e in engines:
            try:
                e.close_dispatcher()
            except Exception:  # closing is best effort
                logger.debug("snmp engine close failed", exc_info=True)


_RCVBUF = 8 * 1024 * 1024


async def _grow_receive_buffers(engines) -> None:
    """Enlarge each engine's UDP receive buffer as soon as pysnmp opens it.

    Many agents answering at once overflow the default buffer (about 200 KB)
    while pyasn1 decodes: dropped replies become timeouts and retries. The
    socket only exists after the first request is queued, hence the polling.
    """
    from pysnmp.carrier.asyncio.dgram import udp, udp6

    pending = {(id(e), d): e for e in engines for d in (udp.DOMAIN_NAME, udp6.DOMAIN_NAME)}
    for _ in range(2000):  # bounded: a few seconds of event-loop turns at most
        for key, eng in list(pending.items()):
            try:
                tr = eng.transport_dispatcher.get_transport(key[1]) if eng.transport_dispatcher else None
            except Exception:  # not registered yet
                continue
            sock = tr.transport.get_extra_info("socket") if tr is not None and tr.transport is not None else None
            if sock is None:
                continue
            for opt in (33, socket.SO_RCVBUF):  # SO_RCVBUFFORCE needs CAP_NET_ADMIN; SO_RCVBUF is capped
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, _RCVBUF)
                    break
                except OSError:
                    continue
            logger.debug("snmp udp receive buffer: %d bytes", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
            del pending[key]
        if not pending:
            return
        await asyncio.sleep(0.001)
