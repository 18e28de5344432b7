"""ICMP echo sweep over many targets, fping-style: one socket per address family.

Why not one icmplib ping per host: every raw ICMP socket receives every ICMP
packet on the machine, so N raw sockets cost N x the packets and gave false
loss past a few dozen hosts (see NOTES-libraries.md).  Here one socket per
family sends to every target, and each reply is matched on

* its source address (must be the target's address),
* the ICMP identifier (ours in raw mode; the kernel's in unprivileged mode,
  where the kernel already delivers only this socket's replies),
* the sequence number, and
* a per-sweep random token plus the packet number in the payload,

so a second wanmon, a `ping` or any other process on the host never
cross-talks with this sweep.  RTTs use the kernel's receive timestamp
(SO_TIMESTAMPNS), so a busy event loop does not inflate them.

Packets go out in due order under a global rate cap: every target's first
packet is due when it joins the sweep, its next one `interval_ms` after the
previous one actually left, so with all targets present at the start this is
round k = packet k to every target.  A packet without reply after
`timeout_ms` is lost.  A dead target therefore costs exactly its own timeout
and never delays the others.

Host names never hold the sweep: IP literals start at once, and a named
target joins the running sweep as soon as its name resolves (wanmon.dns, in
daemon threads under `dns_timeout_ms`), or at that deadline with its last good
address, or ends as a result without packets.  The sweep ends when every
name is settled and every joined target's packets are answered or timed out.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import os
import secrets
import socket
import struct
import time
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import icmplib

from wanmon import dns
from wanmon.config import IcmpSettings
from wanmon.errors import ProbePermissionError

logger = logging.getLogger(__name__)

# Linux socket options that the socket module does not name.
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE = 33
SOL_RAW = 255
ICMP_FILTER = 1
ICMP6_FILTER = 1

ECHO_REPLY_V4, ECHO_REQUEST_V4 = 0, 8
ECHO_REPLY_V6, ECHO_REQUEST_V6 = 129, 128
_TOKEN_LEN = 8
_RCVBUF = 8 * 1024 * 1024
_MAX_LAG_S = 0.05  # the rate cap catches up at most this much lost time in one burst

Progress = Callable[[int, int, int], None]  # (packets sent, replies, packets total so far)


@dataclass(frozen=True, slots=True)
class IcmpResult:
    """One target's outcome for one sweep. Times in milliseconds."""

    address: str
    ip: str | None
    sent: int
    received: int
    loss_pct: float
    rtt_min_ms: float | None
    rtt_avg_ms: float | None
    rtt_max_ms: float | None
    jitter_ms: float | None
    reason: str | None = None
    # Where `ip` came from when the address is a host name (None for an IP literal):
    # "fresh" (the DNS answered now: the caller records it in its cache), "cache" (no answer
    # in time: the last good address, said in `reason`), "timeout", "error" or "nxdomain"
    # (no address: nothing sent, `reason` says why). See wanmon.dns.
    dns: str | None = None

    @property
    def ok(self) -> bool:
        return self.received > 0


def summarize(
    address: str,
    ip: str | None,
    sent: int,
    rtts_ms: Sequence[float | None],
    reason: str | None = None,
    dns: str | None = None,
) -> IcmpResult:
    """Statistics of one target's packets, in send order (None = lost).

    loss_pct = lost / sent; jitter = mean absolute difference between the RTTs
    of consecutive received replies (as SmokePing/RFC 3550 style "ipdv"),
    None with fewer than two replies.
    """
    got = [r for r in rtts_ms if r is not None]
    received = len(got)
    loss = 0.0 if sent == 0 else round(100.0 * (sent - received) / sent, 3)
    if not got:
        if reason is None and sent:
            reason = "no reply"
        return IcmpResult(address, ip, sent, 0, 100.0 if sent else 0.0, None, None, None, None, reason, dns)
    jitter = None
    if received > 1:
        jitter = sum(abs(b - a) for a, b in itertools.pairwise(got)) / (received - 1)
    return IcmpResult(
        address,
        ip,
        sent,
        received,
        loss,
        round(min(got), 3),
        round(sum(got) / received, 3),
        round(max(got), 3),
        None if jitter is None else round(jitter, 3),
        None,
        dns,
    )


def _checksum(data: bytes) -> int:
    """Internet checksum in host byte order (to be packed with '=H')."""
    if len(data) % 2:
        data += b"\x00"
    s = sum(array("H", data))
    s = (s & 0xFFFF) + (s >> 16)
    s += s >> 16
    return ~s & 0xFFFF


def permission_help() -> str:
    try:
        with open("/proc/sys/net/ipv4/ping_group_range") as f:
            rng = " ".join(f.read().split())
    except OSError:
        rng = "unknown"
    gid = os.getgid()
    return (
        "cannot send ICMP echo requests: raw ICMP sockets need root or the CAP_NET_RAW capability "
        "(run as a systemd service with AmbientCapabilities=CAP_NET_RAW, or "
        "`sudo setcap cap_net_raw+ep <the python interpreter>`), and unprivileged ICMP sockets need "
        f'this process\'s group id ({gid}) inside net.ipv4.ping_group_range (now "{rng}"; e.g. '
        f'`sudo sysctl -w net.ipv4.ping_group_range="{gid} {gid}"`, persisted in /etc/sysctl.d/).'
    )


# ICMP errors a trace reads (wanmon.trace): destination unreachable and time exceeded.
ERRORS_V4 = (3, 11)
ERRORS_V6 = (1, 3)
IP_RECVERR = 11  # Linux: queue ICMP errors on an unprivileged socket (read with MSG_ERRQUEUE)
IPV6_RECVERR = 25


class _Family:
    """One ICMP socket (of one address family) plus how to read it. errors: the socket also
    receives the ICMP errors about its own packets (a trace's time exceeded): in raw mode through
    its type filter, unprivileged on the socket's error queue (IP_RECVERR)."""

    def __init__(self, family: int, raw: bool, errors: bool = False):
        self.family = family
        self.raw = raw
        v6 = family == socket.AF_INET6
        cls = icmplib.ICMPv6Socket if v6 else icmplib.ICMPv4Socket
        # icmplib creates the socket and maps EPERM/EACCES to SocketPermissionError.
        self._icmplib_sock = cls(privileged=raw)
        self.sock: socket.socket = self._icmplib_sock.sock
        self.sock.setblocking(False)
        self.reply_type = ECHO_REPLY_V6 if v6 else ECHO_REPLY_V4
        self.request_type = ECHO_REQUEST_V6 if v6 else ECHO_REQUEST_V4
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, _RCVBUF)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RCVBUF)
        if raw:
            # Only echo replies (and the errors a trace asks for): a raw socket otherwise also
            # sees every echo request (our own, on loopback) and all other ICMP traffic.
            wanted = (self.reply_type, *((ERRORS_V6 if v6 else ERRORS_V4) if errors else ()))
            if v6:
                words = [0xFFFFFFFF] * 8
                for t in wanted:
                    words[t >> 5] &= ~(1 << (t & 31))
                self.sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *words))
            else:
                mask = 0xFFFFFFFF
                for t in wanted:
                    mask &= ~(1 << t)
                self.sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("=I", mask))
        elif errors:
            if v6:
                self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            else:
                self.sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        # Unprivileged sockets get their ICMP identifier from the kernel (the
        # "port"); it is only assigned at bind or first send, so bind now to learn it.
        self.kernel_id = None
        if not raw:
            self.sock.bind(("::", 0, 0, 0) if v6 else ("0.0.0.0", 0))
            self.kernel_id = self.sock.getsockname()[1]

    def close(self) -> None:
        self._icmplib_sock.close()


def open_sockets(mode: str, families: set[int]) -> dict[int, _Family]:
    """Open one socket per needed family; raise ProbePermissionError if not allowed."""
    out: dict[int, _Family] = {}
    try:
        for fam in sorted(families):
            out[fam] = _open_one(mode, fam)
    except BaseException:
        for f in out.values():
            f.close()
        raise
    return out


def _open_one(mode: str, family: int, errors: bool = False) -> _Family:
    tries = {"raw": [True], "unprivileged": [False], "auto": [True, False]}[mode]
    last: Exception | None = None
    for raw in tries:
        try:
            fam = _Family(family, raw, errors)
            logger.debug("icmp socket family=%s kind=%s", family, "raw" if raw else "unprivileged")
            return fam
        except (icmplib.SocketPermissionError, PermissionError) as exc:
            last = exc
        except OSError as exc:
            if family == socket.AF_INET6 and exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
                raise ProbePermissionError(f"IPv6 is not available on this machine: {exc}") from None
            last = exc
    raise ProbePermissionError(f"{permission_help()} (mode={mode}: {last})")


def dns_updates(results: Sequence[IcmpResult]) -> dict[str, str]:
    """{host name: ip} of the fresh DNS answers in a sweep: what to record with
    `Store.dns_cache_update(dns_updates(results), now)` for the next sweep's `dns_cache`."""
    return {r.address: r.ip for r in results if r.dns == "fresh" and r.ip is not None}


async def probe(
    addresses: Sequence[str],
    spec: IcmpSettings,
    progress: Progress | None = None,
    dns_cache: dict[str, tuple[str, float]] | None = None,
) -> list[IcmpResult]:
    """Ping every address `spec.count` times; one result per address, same order.

    Unreachable, unresolvable or silent targets are results with a reason;
    only a missing permission (ProbePermissionError) or a bug raises.

    Host names resolve while the sweep runs, each within `spec.dns_timeout_ms`;
    no site waits for another's DNS. `dns_cache` is {name: (ip, resolved_ts)},
    the last good addresses (`Store.dns_cache()`): a name without an answer in
    time (or with a temporary DNS failure) is pinged at its cached address,
    and its `reason` says so ("DNS timeout; using last address 127.0.0.5
    (resolved 02/12 10:00)") even when it answers. Each result's `dns` says
    where its ip came from (None: literal; "fresh", "cache", "timeout",
    "error", "nxdomain"); the caller records the fresh ones,
    `store.dns_cache_update(dns_updates(results), now)`. A name the DNS says
    does not exist never uses the cache ("host name 'x' does not resolve").
    """
    literals = [dns.literal(a) for a in addresses]
    families: set[int] = set()
    for ip in literals:
        if ip is not None:
            families.add(socket.AF_INET6 if ":" in ip else socket.AF_INET)
        else:
            # Most names resolve to IPv4: open it now, so a missing permission fails
            # before anything is sent (an IPv6 socket for a name opens when needed).
            families.add(socket.AF_INET)
    socks = open_sockets(spec.mode, families) if families else {}
    sweep = _Sweep(addresses, socks, spec, progress, dns_cache, literals)
    try:
        return await sweep.run()
    finally:
        for f in sweep.socks.values():
            f.close()


async def ping(ip: str, spec: IcmpSettings) -> tuple[IcmpResult, list[float | None]]:
    """One IP literal pinged exactly as the sweep pings a site: its result, and each packet's RTT
    in send order (None: no reply within timeout_ms), for `wanmon probe` to show one by one."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    socks = open_sockets(spec.mode, {family})
    sweep = _Sweep([ip], socks, spec, None, None, [ip])
    try:
        (result,) = await sweep.run()
    finally:
        for f in sweep.socks.values():
            f.close()
    return result, list(sweep.rtt[: spec.count]) if sweep.index else []


class _Sweep:
    """One sweep. Target t (in join order) is site `index[t]`; its packet k has the
    sweep-wide number n = t * count + k (in the payload, and the raw-mode sequence)."""

    def __init__(
        self,
        addresses,
        socks: dict[int, _Family],
        spec: IcmpSettings,
        progress: Progress | None,
        dns_cache: dict[str, tuple[str, float]] | None = None,
        literals: list[str | None] | None = None,
    ):
        self.addresses = list(addresses)
        self.literals = literals if literals is not None else [dns.literal(a) for a in self.addresses]
        self.spec = spec
        self.count = spec.count
        self.socks = socks
        self.progress = progress
        self.dns_cache = dns_cache or {}
        self.token = secrets.token_bytes(_TOKEN_LEN)
        self.base_id = secrets.randbits(16)
        # per target
        self.index: list[int] = []
        self.dest: list[tuple[int, tuple]] = []
        self.src_ip: list[str] = []
        # per packet
        self.N = 0
        self.tx_ns: list[int] = []
        self.rtt: list[float | None] = []
        self.sent_ok = bytearray()  # 1 when sendto succeeded
        self.send_error: dict[int, str] = {}
        self.answered = 0
        self.sent = 0
        self.last_tx_ns = 0
        self.timeout_ns = int(spec.timeout_ms * 1e6)
        self.done = asyncio.Event()
        pad = max(0, spec.payload_bytes - _TOKEN_LEN - 4)
        self.padding = bytes(pad)
        # what is due: first packets (join order) and next packets (send order); both are
        # in due order, so the next packet to send is the earlier of the two heads.
        self.first: deque[tuple[float, int]] = deque()
        self.again: deque[tuple[float, int, int]] = deque()
        # names
        self.answers: dict[int, dns.Answer] = {}  # site index -> how its name resolved
        self.settled: dict[int, IcmpResult] = {}  # sites that take no part (no address, no socket)
        self.pending_sites = 0
        self.fam_error: dict[int, str] = {}
        self._nap_fut: asyncio.Future | None = None

    # -- targets ---------------------------------------------------------

    def _join(self, i: int, ip: str, famnum: int, due: float) -> None:
        fam = self._family(famnum)
        if fam is None:
            ans = self.answers.get(i)
            self.settled[i] = summarize(
                self.addresses[i], ip, 0, [], self.fam_error[famnum], ans.source if ans else None
            )
            return
        scope = 0
        if famnum == socket.AF_INET6 and "%" in ip:
            # A link-local address with its zone (fe80::1%eth0): the zone goes in the socket
            # address's scope id (Python would take the text's zone, then overwrite it with 0).
            ip, zone = ip.split("%", 1)
            try:
                scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
            except OSError:
                ans = self.answers.get(i)
                self.settled[i] = summarize(
                    self.addresses[i], ip, 0, [], f"no network interface '{zone}'", ans.source if ans else None
                )
                return
        t = len(self.index)
        self.index.append(i)
        self.dest.append((famnum, (ip, 0) if famnum == socket.AF_INET else (ip, 0, 0, scope)))
        self.src_ip.append(ip)
        c = self.count
        self.N += c
        self.tx_ns.extend([0] * c)
        self.rtt.extend([None] * c)
        self.sent_ok.extend(bytes(c))
        self.first.append((due, t))
        self._kick()

    def _family(self, famnum: int) -> _Family | None:
        """The family's socket, opened now if a late name is the first to need it."""
        fam = self.socks.get(famnum)
        if fam is not None or famnum in self.fam_error:
            return fam
        try:
            fam = _open_one(self.spec.mode, famnum)
        except ProbePermissionError as exc:
            logger.warning("icmp cannot open a socket family=%s: %s", famnum, exc)
            self.fam_error[famnum] = str(exc)
            return None
        self.socks[famnum] = fam
        asyncio.get_running_loop().add_reader(fam.sock.fileno(), self._on_readable, fam)
        return fam

    async def _name(self, name: str, idxs: list[int]) -> None:
        try:
            try:
                ans = await dns.resolve(name, self.spec.dns_timeout_ms / 1000.0, self.dns_cache)
            except Exception as exc:  # a bug here must cost this name only
                logger.exception("dns resolve failed name=%s", name)
                ans = dns.Answer(name, None, "error", f"host name {name!r}: lookup failed ({type(exc).__name__})")
            loop = asyncio.get_running_loop()
            for i in idxs:
                self.answers[i] = ans
                if ans.ip is None:
                    self.settled[i] = summarize(self.addresses[i], None, 0, [], ans.reason, ans.source)
                else:
                    family = ans.family
                    assert family is not None, "ans.ip is set, so it has a family"
                    self._join(i, ans.ip, family, loop.time())
        finally:
            self.pending_sites -= len(idxs)
            self._check_done()
            self._kick()

    def _check_done(self) -> None:
        if self.answered == self.N and not self.pending_sites:
            self.done.set()

    # -- sending ---------------------------------------------------------

    def _ident(self, n: int, fam: _Family) -> tuple[int, int]:
        if fam.kernel_id is not None:
            return fam.kernel_id, n & 0xFFFF
        return (self.base_id + (n >> 16)) & 0xFFFF, n & 0xFFFF

    def _packet(self, n: int, fam: _Family) -> bytes:
        ident, seq = self._ident(n, fam)
        payload = self.token + n.to_bytes(4, "big") + self.padding
        header = struct.pack("!BBHHH", fam.request_type, 0, 0, ident, seq)
        if fam.raw and fam.family == socket.AF_INET:
            csum = _checksum(header + payload)
            header = header[:2] + struct.pack("=H", csum) + header[4:]
        return header + payload

    def _send(self, t: int, k: int) -> None:
        n = t * self.count + k
        famnum, sockaddr = self.dest[t]
        fam = self.socks[famnum]
        pkt = self._packet(n, fam)
        self.tx_ns[n] = self.last_tx_ns = time.time_ns()  # before sendto: on loopback the reply can arrive inside it
        try:
            fam.sock.sendto(pkt, sockaddr)
            self.sent_ok[n] = 1
        except OSError as exc:
            self.send_error[t] = f"send failed: {exc.strerror or exc}"
        self.sent += 1

    def _next_due(self) -> float | None:
        a = self.first[0][0] if self.first else None
        b = self.again[0][0] if self.again else None
        if a is None:
            return b
        return a if b is None or a <= b else b

    async def _send_all(self) -> None:
        """Send every packet when due, under the rate cap, until no name is pending and
        nothing is left to send."""
        loop = asyncio.get_running_loop()
        spec = self.spec
        gap = 1.0 / spec.rate_pps
        interval = spec.interval_ms / 1000.0
        last_count = self.count - 1
        first, again = self.first, self.again
        slot = loop.time()  # when the rate cap lets the next packet go
        last_report = slot
        while True:
            now = loop.time()
            slot = max(slot, now - _MAX_LAG_S)  # a late loop catches up, in bounded bursts
            while slot <= now:
                # the earlier head of the two queues (first packets win ties: join order)
                if first and (not again or first[0][0] <= again[0][0]):
                    if first[0][0] > now:
                        break
                    _, t = first.popleft()
                    k = 0
                elif again and again[0][0] <= now:
                    _, t, k = again.popleft()
                else:
                    break
                self._send(t, k)
                slot += gap
                now = loop.time()
                if k < last_count:
                    again.append((now + interval, t, k + 1))
            if self.progress and now - last_report > 0.1:
                self.progress(self.sent, self.answered, self._total())
                last_report = now
            due = self._next_due()
            if due is None:
                if not self.pending_sites:
                    return
                await self._nap(None)  # until a name settles
                slot = max(slot, loop.time())  # time spent idle is no credit for a burst
                continue
            if due > slot:  # idle until the next packet is due (or a name joins)
                delay = due - loop.time()
                if delay > 0:
                    await self._nap(delay)
                slot = max(slot, min(due, loop.time()))
            else:  # the rate cap
                delay = slot - loop.time()
                if delay > 0:
                    await self._nap(delay)
                else:
                    await asyncio.sleep(0)  # let replies in

    async def _nap(self, delay: float | None) -> None:
        """Sleep `delay` seconds (None: until kicked), or less when a name joins."""
        loop = asyncio.get_running_loop()
        fut = self._nap_fut = loop.create_future()
        handle = loop.call_later(delay, _wake, fut) if delay is not None else None
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()
            self._nap_fut = None

    def _kick(self) -> None:
        fut = self._nap_fut
        if fut is not None:
            _wake(fut)

    def _total(self) -> int:
        return self.N + self.count * self.pending_sites

    # -- receiving -------------------------------------------------------

    def _on_readable(self, fam: _Family) -> None:
        sock = fam.sock
        ancsize = socket.CMSG_SPACE(16)
        while True:
            try:
                data, anc, _flags, addr = sock.recvmsg(2048, ancsize)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors queued on the socket
                logger.debug("icmp recv error: %s", exc)
                return
            rx_ns = None
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS and len(cdata) >= 16:
                    sec, nsec = struct.unpack("=qq", cdata[:16])
                    rx_ns = sec * 1_000_000_000 + nsec
            self._handle(fam, data, addr[0], rx_ns or time.time_ns())

    def _handle(self, fam: _Family, data: bytes, src: str, rx_ns: int) -> None:
        off = 0
        if fam.raw and fam.family == socket.AF_INET:
            off = (data[0] & 0x0F) * 4 if data else 0
        if len(data) < off + 8 + _TOKEN_LEN + 4 or data[off] != fam.reply_type:
            return
        ident, seq = struct.unpack_from("!HH", data, off + 4)
        p = off + 8
        if data[p : p + _TOKEN_LEN] != self.token:
            return  # another process's ping
        n = int.from_bytes(data[p + _TOKEN_LEN : p + _TOKEN_LEN + 4], "big")
        if n >= self.N or not self.sent_ok[n] or self.rtt[n] is not None:
            return  # unknown, or a duplicate reply
        if (ident, seq) != self._ident(n, fam):
            return
        t = n // self.count
        if "%" in src:
            src = src.split("%", 1)[0]
        if src != self.src_ip[t]:
            return  # right packet number, wrong host: not our target's reply
        rtt_ns = rx_ns - self.tx_ns[n]
        if rtt_ns > self.timeout_ns:
            return  # late: counted as lost, like fping
        self.rtt[n] = max(rtt_ns, 0) / 1e6
        self.answered += 1
        if self.answered == self.N:
            self._check_done()

    # -- the sweep -------------------------------------------------------

    async def run(self) -> list[IcmpResult]:
        loop = asyncio.get_running_loop()
        for fam in self.socks.values():
            loop.add_reader(fam.sock.fileno(), self._on_readable, fam)
        names: dict[str, list[int]] = {}
        start = loop.time()
        for i, (a, ip) in enumerate(zip(self.addresses, self.literals)):
            if ip is None:
                names.setdefault(a, []).append(i)
            else:
                self._join(i, ip, socket.AF_INET6 if ":" in ip else socket.AF_INET, start)
        self.pending_sites = sum(len(v) for v in names.values())
        tasks = [asyncio.ensure_future(self._name(n, idxs)) for n, idxs in names.items()]
        try:
            await self._send_all()
            if self.N:
                # The last packet sent has the latest deadline: wait for it, or for all replies.
                last = max(self.last_tx_ns, time.time_ns() - self.timeout_ns)
                wait_s = (last + self.timeout_ns - time.time_ns()) / 1e9
                if wait_s > 0 and not self.done.is_set():
                    await self._wait(wait_s)
                for fam in self.socks.values():
                    self._on_readable(fam)  # anything already queued
        finally:
            for task in tasks:
                task.cancel()
            for fam in self.socks.values():
                loop.remove_reader(fam.sock.fileno())
        if self.progress:
            self.progress(self.sent, self.answered, self.N)
        return self._results()

    async def _wait(self, wait_s: float) -> None:
        if self.progress is None:
            try:
                await asyncio.wait_for(self.done.wait(), wait_s)
            except TimeoutError:
                pass
            return
        end = asyncio.get_running_loop().time() + wait_s
        while not self.done.is_set():
            left = end - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self.done.wait(), min(left, 0.1))
            except TimeoutError:
                pass
            self.progress(self.sent, self.answered, self.N)

    def _results(self) -> list[IcmpResult]:
        count = self.count
        out: list[IcmpResult | None] = [None] * len(self.addresses)
        for t, i in enumerate(self.index):
            rtts = self.rtt[t * count : (t + 1) * count]
            ans = self.answers.get(i)
            res = summarize(
                self.addresses[i], self.src_ip[t], count, rtts, self.send_error.get(t), ans.source if ans else None
            )
            if ans is not None and ans.source == "cache":
                assert ans.reason is not None, "a cached address always says why (dns.decide)"
                res = replace(res, reason=ans.reason + (f"; {res.reason}" if res.reason else ""))
            out[i] = res
        out_settled = self.settled
        for i, res in out_settled.items():
            out[i] = res
        return out  # type: ignore[return-value]


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


# -- the interpreter's own capability ----------------------------------------

CAP_NET_RAW = 13


def file_has_cap_net_raw(path: str) -> bool:
    """Does the file carry CAP_NET_RAW in its permitted file capabilities (`setcap cap_net_raw+ep`)?
    Reads the security.capability extended attribute (struct vfs_cap_data: magic, then permitted
    and inheritable words)."""
    import struct

    try:
        raw = os.getxattr(path, "security.capability")
    except OSError:
        return False
    if len(raw) < 12:
        return False
    _magic, permitted_lo = struct.unpack_from("<II", raw)
    return bool(permitted_lo >> CAP_NET_RAW & 1)


def shared_interpreter_with_net_raw(executable: str, prefix: str, base_prefix: str) -> str | None:
    """The interpreter file, when it carries CAP_NET_RAW and is not wanmon's own copy: the venv's
    python is a symlink to the system's (setcap follows it), or this is no venv at all. Then
    every user of that interpreter may open raw sockets. None otherwise."""
    real = os.path.realpath(executable)
    if not file_has_cap_net_raw(real):
        return None
    in_venv = prefix != base_prefix
    own = in_venv and os.path.commonpath([real, os.path.realpath(prefix)]) == os.path.realpath(prefix)
    return None if own else real
