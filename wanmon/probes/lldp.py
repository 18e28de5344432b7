"""A device's neighbours as it reports them over SNMP: LLDP-MIB's lldpRemTable and, where a
Cisco device keeps one, CDP-MIB's cdpCacheTable (`wanmon topology`).

Read with the SNMP poll's own machinery (wanmon.probes.snmp: one socket, v1/v2c/v3, the same
deadlines): per agent, one walk of three columns together,

* lldpRemSysName (1.0.8802.1.1.2.1.4.1.1.9), indexed (timeMark, localPort, remIndex);
* lldpRemManAddrIfSubtype (1.0.8802.1.1.2.1.4.2.1.3), whose index carries the neighbour's
  management address: (timeMark, localPort, remIndex, addrSubtype, length, address...);
  subtype 1 is IPv4, 2 IPv6 (IANA address family numbers);
* cdpCacheAddress (1.3.6.1.4.1.9.9.23.1.2.1.1.4, four octets for an IP neighbour) and
  cdpCacheDeviceId (.6), indexed (ifIndex, deviceIndex).

An agent without these MIBs answers with the next object after them (or endOfMibView): no
neighbours, not an error. A failure is a result with its status and reason, as in the poll.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass

from wanmon.probes import snmp

LLDP_REM_SYS_NAME = (1, 0, 8802, 1, 1, 2, 1, 4, 1, 1, 9)
LLDP_REM_MAN_ADDR_IF_SUBTYPE = (1, 0, 8802, 1, 1, 2, 1, 4, 2, 1, 3)
CDP_CACHE_ADDRESS = (1, 3, 6, 1, 4, 1, 9, 9, 23, 1, 2, 1, 1, 4)
CDP_CACHE_DEVICE_ID = (1, 3, 6, 1, 4, 1, 9, 9, 23, 1, 2, 1, 1, 6)
COLUMNS = {
    "lldp_name": LLDP_REM_SYS_NAME,
    "lldp_addr": LLDP_REM_MAN_ADDR_IF_SUBTYPE,
    "cdp_addr": CDP_CACHE_ADDRESS,
    "cdp_name": CDP_CACHE_DEVICE_ID,
}


@dataclass(frozen=True, slots=True)
class Neighbour:
    protocol: str  # "lldp" | "cdp"
    sys_name: str | None  # lldpRemSysName, cdpCacheDeviceId
    address: str | None  # its management address


@dataclass(frozen=True, slots=True)
class Neighbours:
    status: str  # ok | timeout | auth_error | error (as SnmpResult.status)
    reason: str | None
    neighbours: tuple[Neighbour, ...] = ()
    duration_ms: float = 0.0


def _address(sub: tuple[int, ...]) -> str | None:
    """(subtype, length, octets...) of an lldpRemManAddrTable index -> the address."""
    if len(sub) < 2 or len(sub) != 2 + sub[1]:
        return None
    raw = bytes(x & 0xFF for x in sub[2:])
    if sub[0] == 1 and len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if sub[0] == 2 and len(raw) == 16:
        return ipaddress.IPv6Address(raw).compressed
    return None


def neighbours_of(rows: dict) -> tuple[Neighbour, ...]:
    """The walk's rows ({index: {column: value}}) as neighbours, one per remote (LLDP: its name
    and first management address; CDP: its device id and address)."""
    lldp: dict[tuple, dict] = {}
    cdp: dict[tuple, dict] = {}
    for index, row in rows.items():
        if "lldp_name" in row and len(index) == 3:
            lldp.setdefault(index, {})["name"] = snmp._text(row["lldp_name"])
        if "lldp_addr" in row and len(index) > 3:
            lldp.setdefault(index[:3], {}).setdefault("addr", _address(index[3:]))
        if "cdp_addr" in row and len(index) == 2:
            raw = row["cdp_addr"]
            if isinstance(raw, bytes | bytearray) and len(raw) == 4:
                cdp.setdefault(index, {})["addr"] = str(ipaddress.IPv4Address(bytes(raw)))
        if "cdp_name" in row and len(index) == 2:
            cdp.setdefault(index, {})["name"] = snmp._text(row["cdp_name"])
    return tuple(
        [Neighbour("lldp", r.get("name"), r.get("addr")) for _, r in sorted(lldp.items())]
        + [Neighbour("cdp", r.get("name"), r.get("addr")) for _, r in sorted(cdp.items())]
    )


async def _walk(net, keyring, target: snmp.SnmpTarget) -> Neighbours:
    spec = target.spec
    t0 = time.perf_counter()
    try:
        dest, family = await snmp._resolve(target.host, spec.port, snmp.dns_budget_s(spec))
        agent = snmp._Agent(net, spec, dest, family, keyring.get(spec) if spec.version == "3" else None)
        rows = await agent.table(COLUMNS, 8, whole_index=True)
    except snmp._Failed as f:
        return Neighbours(f.status, f.reason, duration_ms=(time.perf_counter() - t0) * 1000)
    return Neighbours("ok", None, neighbours_of(rows), (time.perf_counter() - t0) * 1000)


async def probe(
    targets: Sequence[snmp.SnmpTarget], max_concurrency: int = 256, budget_s: float | None = None
) -> list[Neighbours | None]:
    """Each target's neighbours; one result per target, same order (None: not read within budget_s)."""

    def bug(exc: Exception) -> Neighbours:
        return Neighbours("error", f"internal error while reading neighbours: {type(exc).__name__}")

    return await snmp.each(targets, _walk, bug, max_concurrency, budget_s)
