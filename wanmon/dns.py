"""Host-name resolution for the probes: concurrent, under a deadline, with a last-good cache.

Why: a DNS server that never answers must not hold the cycle. The system
resolver (getaddrinfo) has no per-call timeout and, in asyncio's default
executor, its threads are joined at interpreter exit, so one hung lookup
delays every site and then the process exit.  Here every lookup runs in a
daemon thread (`wanmon.deadline.getaddrinfo`) and is abandoned at its
deadline; the thread ends whenever the resolver gives up and never keeps the
process alive.

Outcome of one name (`Answer.source`):

=========  ===============================================  ==================
source     when                                             address used
=========  ===============================================  ==================
literal    the "name" is an IP literal (no DNS at all)      the literal
fresh      the DNS answered within the deadline             the answer
cache      no answer in time (timeout), or a temporary      the last good one,
           failure (SERVFAIL, no server reachable), and     with a reason that
           the name has a last good address                 says so and when
timeout    no answer in time and no last good address       none: "DNS timeout"
error      temporary failure and no last good address       none
nxdomain   the DNS said the name does not exist (or has     none, never the
           no address)                                      cache
=========  ===============================================  ==================

The cache is for a silent or failing DNS, not for a wrong name: an
authoritative "no such name" means the record was removed or the name is
misspelt, and pinging an old address would hide that. Cached addresses do not
expire; the reason always shows when the address was last resolved.

Callers keep the cache (`Store.dns_cache()` / `Store.dns_cache_update()`):
they pass it in and record the `fresh` answers afterwards.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from wanmon import deadline

logger = logging.getLogger(__name__)

Cache = Mapping[str, tuple[str, float]]  # name -> (ip, resolved_ts)

SOURCES = ("literal", "fresh", "cache", "timeout", "error", "nxdomain")
# getaddrinfo errors that are the DNS's definitive answer ("no such name", "no address").
_NO_SUCH_NAME = {getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY") if hasattr(socket, n)}


@dataclass(frozen=True, slots=True)
class Lookup:
    """What the resolver itself did (before the cache rules): kind is ok | timeout | nxdomain | error."""

    kind: str
    ip: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """The address to use for one name, where it came from, and why (see the module doc)."""

    name: str
    ip: str | None
    source: str  # one of SOURCES
    reason: str | None = None  # None for literal/fresh; the site's reason otherwise
    resolved_ts: float | None = None  # cache: when the address was last resolved

    @property
    def family(self) -> int | None:
        if self.ip is None:
            return None
        return socket.AF_INET6 if ipaddress.ip_address(self.ip.split("%", 1)[0]).version == 6 else socket.AF_INET


def literal(address: str) -> str | None:
    """The compressed IP if `address` is an IP literal ("[::1]" too), else None."""
    try:  # fast path (a sweep may hold 10000 addresses): a canonical dotted quad
        if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, address)) == address:
            return address
    except OSError:
        pass
    try:
        return ipaddress.ip_address(address.strip("[]")).compressed
    except ValueError:
        return None


def _when(ts: float) -> str:
    return time.strftime("%d/%m %H:%M", time.localtime(ts))


def decide(name: str, lookup: Lookup, cache: Cache | None, timeout_s: float) -> Answer:
    """The cache rules (pure): the resolver's outcome + the last good addresses -> the answer."""
    if lookup.kind == "ok":
        return Answer(name, lookup.ip, "fresh")
    if lookup.kind == "nxdomain":
        return Answer(name, None, "nxdomain", f"host name {name!r} does not resolve")
    detail = lookup.detail or "temporary failure"
    if lookup.kind == "timeout":
        why = "DNS timeout"
        alone = f"DNS timeout: no answer for {name!r} within {timeout_s:g} s (no last good address)"
    else:
        why = f"DNS failure ({detail})"
        alone = f"host name {name!r} does not resolve ({detail}; no last good address)"
    hit = (cache or {}).get(name)
    if hit is not None and literal(hit[0]) is not None:
        ip, ts = literal(hit[0]), float(hit[1])
        return Answer(name, ip, "cache", f"{why}; using last address {ip} (resolved {_when(ts)})", ts)
    return Answer(name, None, "timeout" if lookup.kind == "timeout" else "error", alone)


def _classify(exc: BaseException) -> Lookup:
    if isinstance(exc, socket.gaierror):
        if exc.errno in _NO_SUCH_NAME:
            return Lookup("nxdomain", detail=exc.strerror)
        return Lookup("error", detail=exc.strerror or str(exc))
    if isinstance(exc, TimeoutError):  # socket.timeout from deadline.getaddrinfo
        return Lookup("timeout", detail=str(exc))
    return Lookup("error", detail=str(exc))


def _first_ip(infos: list) -> str:
    return ipaddress.ip_address(infos[0][4][0].split("%", 1)[0]).compressed


async def lookup(name: str, timeout_s: float) -> Lookup:
    """Resolve `name` within timeout_s (a daemon thread; never the default executor).

    The first address getaddrinfo returns (the system's preference order) is used."""
    ip = literal(name)
    if ip is not None:
        return Lookup("ok", ip)
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[Lookup] = loop.create_future()

    def post(res: Lookup) -> None:
        if not fut.done():
            fut.set_result(res)

    def work() -> None:
        try:
            infos = deadline.getaddrinfo(name, None, timeout_s, type=socket.SOCK_DGRAM)
            res = Lookup("ok", _first_ip(infos)) if infos else Lookup("nxdomain", detail="no address")
        except BaseException as exc:  # noqa: BLE001 - every failure is an outcome
            res = _classify(exc)
        try:
            loop.call_soon_threadsafe(post, res)
        except RuntimeError:  # the loop is gone: nobody waits any more
            pass

    threading.Thread(target=work, name=f"dns-wait-{name}", daemon=True).start()
    try:
        # The thread answers by the deadline; the margin only guards against a stalled thread.
        return await asyncio.wait_for(asyncio.shield(fut), timeout_s + 0.5)
    except TimeoutError:
        return Lookup("timeout", detail=f"DNS lookup of {name!r} timed out after {timeout_s:g} s")


async def resolve(name: str, timeout_s: float, cache: Cache | None = None) -> Answer:
    """One name -> Answer (literals at once, names under the deadline, then the cache rules)."""
    ip = literal(name)
    if ip is not None:
        return Answer(name, ip, "literal")
    t0 = time.monotonic()
    res = await lookup(name, timeout_s)
    ans = decide(name, res, cache, timeout_s)
    if ans.source != "fresh":
        logger.info(
            "dns name=%s kind=%s source=%s ip=%s after_ms=%.0f detail=%s",
            name,
            res.kind,
            ans.source,
            ans.ip,
            (time.monotonic() - t0) * 1000,
            res.detail,
        )
    return ans


async def resolve_many(names: Iterable[str], timeout_s: float, cache: Cache | None = None) -> dict[str, Answer]:
    """Every distinct name concurrently, each under its own deadline from now."""
    uniq = list(dict.fromkeys(names))
    answers = await asyncio.gather(*(resolve(n, timeout_s, cache) for n in uniq))
    return dict(zip(uniq, answers))


def fresh_entries(answers: Iterable[Answer]) -> dict[str, str]:
    """{name: ip} of the fresh answers: what the caller records with Store.dns_cache_update."""
    return {a.name: a.ip for a in answers if a.source == "fresh" and a.ip is not None}
