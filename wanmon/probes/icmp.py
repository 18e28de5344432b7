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

Packets go out in rounds (round k sends packet k to every target), paced by
a global rate cap; two packets to the same target are at least `interval_ms`
apart; a packet without reply after `timeout_ms` is lost.  A dead target
therefore costs exactly its own timeout and never delays the others.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import secrets
import socket
import struct
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import icmplib

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
_RESOLVE_TIMEOUT_S = 5.0

Progress = Callable[[int, int, int], None]  # (packets sent, replies, packets total)


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

    @property
    def ok(self) -> bool:
        return self.received > 0


def summarize(address: str, ip: str | None, sent: int, rtts_ms: Sequence[float | None], reason: str | None = None) -> IcmpResult:
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
        return IcmpResult(address, ip, sent, 0, 100.0 if sent else 0.0, None, None, None, None, reason)
    jitter = None
    if received > 1:
        jitter = sum(abs(b - a) for a, b in zip(got, got[1:])) / (received - 1)
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
        f"this process's group id ({gid}) inside net.ipv4.ping_group_range (now \"{rng}\"; e.g. "
        f"`sudo sysctl -w net.ipv4.ping_group_range=\"{gid} {gid}\"`, persisted in /etc/sysctl.d/)."
    )


class _Family:
    """One ICMP socket (of one address family) plus how to read it."""

    def __init__(self, family: int, raw: bool):
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
            # Only echo replies: a raw socket otherwise also sees every echo
            # request (our own, on loopback) and all other ICMP traffic.
            if v6:
                words = [0xFFFFFFFF] * 8
                words[self.reply_type >> 5] &= ~(1 << (self.reply_type & 31))
                self.sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *words))
            else:
                self.sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("=I", ~(1 << self.reply_type) & 0xFFFFFFFF))
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


def _open_one(mode: str, family: int) -> _Family:
    tries = {"raw": [True], "unprivileged": [False], "auto": [True, False]}[mode]
    last: Exception | None = None
    for raw in tries:
        try:
            fam = _Family(family, raw)
            logger.debug("icmp socket family=%s kind=%s", family, "raw" if raw else "unprivileged")
            return fam
        except (icmplib.SocketPermissionError, PermissionError) as exc:
            last = exc
        except OSError as exc:
            if family == socket.AF_INET6 and exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
                raise ProbePermissionError(f"IPv6 is not available on this machine: {exc}") from None
            last = exc
    raise ProbePermissionError(f"{permission_help()} (mode={mode}: {last})")


async def _resolve(addresses: Sequence[str]) -> list[tuple[str | None, int | None, str | None]]:
    """(ip, family, reason) per address; literals skip DNS, names resolve concurrently."""
    out: list[tuple[str | None, int | None, str | None]] = [(None, None, None)] * len(addresses)
    names: dict[str, list[int]] = {}
    for i, a in enumerate(addresses):
        try:
            ip = ipaddress.ip_address(a.strip("[]"))
            out[i] = (ip.compressed, socket.AF_INET6 if ip.version == 6 else socket.AF_INET, None)
        except ValueError:
            names.setdefault(a, []).append(i)

    async def one(name: str) -> tuple[str | None, int | None, str | None]:
        try:
            ips = await asyncio.wait_for(icmplib.async_resolve(name), _RESOLVE_TIMEOUT_S)
        except icmplib.NameLookupError:
            return None, None, f"host name {name!r} does not resolve"
        except asyncio.TimeoutError:
            return None, None, f"host name {name!r}: DNS lookup timed out after {_RESOLVE_TIMEOUT_S:.0f} s"
        except OSError as exc:
            return None, None, f"host name {name!r}: lookup failed: {exc}"
        ip = ipaddress.ip_address(ips[0])
        return ip.compressed, socket.AF_INET6 if ip.version == 6 else socket.AF_INET, None

    if names:
        results = await asyncio.gather(*(one(n) for n in names))
        for (name, idxs), res in zip(names.items(), results):
            for i in idxs:
                out[i] = res
    return out


async def probe(addresses: Sequence[str], spec: IcmpSettings, progress: Progress | None = None) -> list[IcmpResult]:
    """Ping every address `spec.count` times; one result per address, same order.

    Unreachable, unresolvable or silent targets are results with a reason;
    only a missing permission (ProbePermissionError) or a bug raises.
    """
    resolved = await _resolve(addresses)
    families = {fam for _, fam, _ in resolved if fam is not None}
    socks = open_sockets(spec.mode, families) if families else {}
    try:
        return await _Sweep(addresses, resolved, socks, spec, progress).run()
    finally:
        for f in socks.values():
            f.close()


class _Sweep:
    def __init__(self, addresses, resolved, socks: dict[int, _Family], spec: IcmpSettings, progress: Progress | None):
        self.addresses = list(addresses)
        self.spec = spec
        self.socks = socks
        self.progress = progress
        # Only resolved targets take part; packet n goes to live[n % T] in round n // T.
        self.live = [i for i, (ip, _, _) in enumerate(resolved) if ip is not None]
        self.resolved = resolved
        self.T = len(self.live)
        self.N = self.T * spec.count
        self.token = secrets.token_bytes(_TOKEN_LEN)
        self.base_id = secrets.randbits(16)
        self.tx_ns = [0] * self.N
        self.rtt: list[float | None] = [None] * self.N
        self.sent_ok = bytearray(self.N)  # 1 when sendto succeeded
        self.send_error: dict[int, str] = {}
        self.answered = 0
        self.sent = 0
        self.timeout_ns = int(spec.timeout_ms * 1e6)
        self.done = asyncio.Event()
        pad = max(0, spec.payload_bytes - _TOKEN_LEN - 4)
        self.padding = bytes(pad)
        self.dest = []
        self.src_ip = []
        for i in self.live:
            ip, fam, _ = resolved[i]
            self.dest.append((fam, (ip, 0) if fam == socket.AF_INET else (ip, 0, 0, 0)))
            self.src_ip.append(ip)

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

    def _send(self, n: int) -> None:
        t = n % self.T
        famnum, sockaddr = self.dest[t]
        fam = self.socks[famnum]
        pkt = self._packet(n, fam)
        self.tx_ns[n] = time.time_ns()  # before sendto: on loopback the reply can arrive inside it
        try:
            fam.sock.sendto(pkt, sockaddr)
            self.sent_ok[n] = 1
        except OSError as exc:
            self.send_error[t] = f"send failed: {exc.strerror or exc}"
        self.sent += 1

    async def _send_all(self) -> None:
        loop = asyncio.get_running_loop()
        spec = self.spec
        gap = 1.0 / spec.rate_pps
        interval = spec.interval_ms / 1000.0
        round_start = last_report = loop.time()
        n = 0
        for k in range(spec.count):
            if k:
                round_start = max(loop.time(), round_start + interval)
                delay = round_start - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            end = n + self.T
            j0 = n
            while n < end:
                # Send every packet that is due by now, then let replies in.
                due = j0 + int((loop.time() - round_start) / gap) + 1
                while n < min(due, end):
                    self._send(n)
                    n += 1
                if self.progress and loop.time() - last_report > 0.1:
                    self.progress(self.sent, self.answered, self.N)
                    last_report = loop.time()
                if n < end:
                    await asyncio.sleep(max(0.0, (n - j0) * gap - (loop.time() - round_start)))
                else:
                    await asyncio.sleep(0)

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
        t = n % self.T
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
            self.done.set()

    # -- the sweep -------------------------------------------------------

    async def run(self) -> list[IcmpResult]:
        loop = asyncio.get_running_loop()
        for fam in self.socks.values():
            loop.add_reader(fam.sock.fileno(), self._on_readable, fam)
        try:
            if self.N:
                await self._send_all()
                # The last packet sent has the latest deadline: wait for it, or for all replies.
                last = max(self.tx_ns[self.N - 1], time.time_ns() - self.timeout_ns)
                wait_s = (last + self.timeout_ns - time.time_ns()) / 1e9
                if wait_s > 0 and not self.done.is_set():
                    await self._wait(wait_s)
                for fam in self.socks.values():
                    self._on_readable(fam)  # anything already queued
        finally:
            for fam in self.socks.values():
                loop.remove_reader(fam.sock.fileno())
        if self.progress:
            self.progress(self.sent, self.answered, self.N)
        return self._results()

    async def _wait(self, wait_s: float) -> None:
        if self.progress is None:
            try:
                await asyncio.wait_for(self.done.wait(), wait_s)
            except asyncio.TimeoutError:
                pass
            return
        end = asyncio.get_running_loop().time() + wait_s
        while not self.done.is_set():
            left = end - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self.done.wait(), min(left, 0.1))
            except asyncio.TimeoutError:
                pass
            self.progress(self.sent, self.answered, self.N)

    def _results(self) -> list[IcmpResult]:
        count = self.spec.count
        out: list[IcmpResult | None] = [None] * len(self.addresses)
        for t, i in enumerate(self.live):
            rtts = [self.rtt[k * self.T + t] for k in range(count)]
            reason = self.send_error.get(t)
            out[i] = summarize(self.addresses[i], self.src_ip[t], count, rtts, reason)
        for i, (ip, _, reason) in enumerate(self.resolved):
            if ip is None:
                out[i] = summarize(self.addresses[i], None, 0, [], reason)
        return out  # type: ignore[return-value]
