#!/usr/bin/env python3
"""Userspace ICMP / ICMPv6 echo responder for the network-namespace test lab.

Stdlib only.  Meant to be started with ``ip netns exec NS python responder.py``
inside a namespace whose kernel echo replies are switched off
(``net.ipv4.icmp_echo_ignore_all=1`` and ``net.ipv6.icmp.echo_ignore_all=1``).

One raw socket is opened per configured local address and bound to it, so
the kernel only hands that socket requests addressed to that address, and
replies leave with that address as their source.

Rules (``--rule ADDR=SPEC``, repeatable), SPEC being comma-separated tokens:

  ``echo``        answer every request at once (the default token)
  ``delay:MS``    answer after MS milliseconds (scheduled, never blocking)
  ``drop-odd``    drop requests whose ICMP sequence number is odd
  ``drop-alt``    drop every second request of a flow (flow = source address
                  and ICMP identifier): answers the 1st, 3rd, 5th ...
  ``silent``      never answer (the socket is not even opened)

e.g. ``--rule 198.18.2.3=delay:300 --rule 198.18.2.4=drop-alt,delay:0``.

Prints ``ready`` on stdout once every socket is open.  Exits on SIGTERM /
SIGINT, when stdin reaches EOF (so it dies with the process that started it
when that one passes ``stdin=PIPE``), or after ``--max-seconds``.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import socket
import struct
import sys
import time

ICMP_ECHO_REQUEST = 8
ICMP_ECHO_REPLY = 0
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129


def inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_reply_v4(icmp: bytes) -> bytes:
    """Echo reply for an IPv4 echo request (ICMP part only, no IP header)."""
    body = bytes([ICMP_ECHO_REPLY, 0]) + b"\x00\x00" + icmp[4:]
    csum = inet_checksum(body)
    return body[:2] + struct.pack("!H", csum) + body[4:]


def build_reply_v6(icmp: bytes) -> bytes:
    """Echo reply for an ICMPv6 echo request; the kernel fills the checksum."""
    return bytes([ICMP6_ECHO_REPLY, 0]) + b"\x00\x00" + icmp[4:]


class Rule:
    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.delay_s = 0.0
        self.drop_odd = False
        self.drop_alt = False
        self.silent = False
        for tok in (t.strip() for t in spec.split(",")):
            if not tok or tok == "echo":
                continue
            if tok.startswith("delay:"):
                self.delay_s = float(tok.split(":", 1)[1]) / 1000.0
                if self.delay_s < 0:
                    raise ValueError(f"negative delay in {spec!r}")
            elif tok == "drop-odd":
                self.drop_odd = True
            elif tok == "drop-alt":
                self.drop_alt = True
            elif tok == "silent":
                self.silent = True
            else:
                raise ValueError(f"unknown rule token {tok!r} in {spec!r}")
        self.flows: dict[tuple[str, int], int] = {}

    def should_answer(self, src: str, ident: int, seq: int) -> bool:
        if self.silent:
            return False
        if self.drop_odd and seq % 2 == 1:
            return False
        if self.drop_alt:
            key = (src, ident)
            n = self.flows.get(key, 0)
            self.flows[key] = n + 1
            if n % 2 == 1:
                return False
        return True


def parse_rules(items: list[str]) -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"bad --rule {item!r}: expected ADDR=SPEC")
        addr, spec = item.split("=", 1)
        try:
            ip = ipaddress.ip_address(addr.strip())
            rules[str(ip)] = Rule(spec)
        except ValueError as e:
            raise SystemExit(f"bad --rule {item!r}: {e}")
    return rules


class Responder:
    def __init__(self, rules: dict[str, Rule], verbose: bool = False) -> None:
        self.rules = rules
        self.verbose = verbose
        self.socks: list[socket.socket] = []
        self.loop = asyncio.get_running_loop()
        self.stats = {"requests": 0, "replies": 0, "dropped": 0}

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"{time.monotonic():.3f} {msg}", file=sys.stderr, flush=True)

    def open(self) -> None:
        for addr, rule in self.rules.items():
            if rule.silent:
                continue
            ip = ipaddress.ip_address(addr)
            if ip.version == 4:
                s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
                s.bind((addr, 0))
            else:
                s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
                s.bind((addr, 0, 0, 0))
            s.setblocking(False)
            self.socks.append(s)
            self.loop.add_reader(s.fileno(), self.on_readable, s, addr, ip.version, rule)

    def on_readable(self, s: socket.socket, local: str, version: int, rule: Rule) -> None:
        while True:
            try:
                pkt, peer = s.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # pragma: no cover - diagnostic only
                self.log(f"recv error on {local}: {e}")
                return
            self.handle(s, local, version, rule, pkt, peer)

    def handle(self, s, local, version, rule, pkt, peer) -> None:
        if version == 4:
            if len(pkt) < 20:
                return
            ihl = (pkt[0] & 0x0F) * 4
            dst = socket.inet_ntoa(pkt[16:20])
            if dst != local:
                return
            icmp = pkt[ihl:]
            if len(icmp) < 8 or icmp[0] != ICMP_ECHO_REQUEST or icmp[1] != 0:
                return
            reply = build_reply_v4(icmp)
        else:
            icmp = pkt
            if len(icmp) < 8 or icmp[0] != ICMP6_ECHO_REQUEST or icmp[1] != 0:
                return
            reply = build_reply_v6(icmp)
        src = peer[0]
        ident, seq = struct.unpack("!HH", icmp[4:8])
        self.stats["requests"] += 1
        if not rule.should_answer(src, ident, seq):
            self.stats["dropped"] += 1
            self.log(f"drop {src}->{local} id={ident} seq={seq}")
            return
        dest = (src, 0) if version == 4 else (src, 0, 0, peer[3] if len(peer) > 3 else 0)
        self.log(f"reply {src}->{local} id={ident} seq={seq} in {rule.delay_s * 1000:.0f}ms")
        if rule.delay_s > 0:
            self.loop.call_later(rule.delay_s, self.send, s, reply, dest)
        else:
            self.send(s, reply, dest)

    def send(self, s, reply, dest) -> None:
        try:
            s.sendto(reply, dest)
            self.stats["replies"] += 1
        except OSError as e:
            self.log(f"send error to {dest}: {e}")

    def close(self) -> None:
        for s in self.socks:
            try:
                self.loop.remove_reader(s.fileno())
            except Exception:
                pass
            s.close()


async def amain(args) -> int:
    rules = parse_rules(args.rule)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    r = Responder(rules, verbose=args.verbose)
    r.open()

    if args.watch_stdin:
        def on_stdin():
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(0)
                stop.set()
        try:
            loop.add_reader(0, on_stdin)
        except (OSError, ValueError, PermissionError):
            pass  # stdin not pollable (e.g. a regular file): ignore

    print("ready", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.max_seconds)
    except asyncio.TimeoutError:
        pass
    r.close()
    if args.verbose:
        print(f"stats {r.stats}", file=sys.stderr, flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rule", action="append", default=[], help="ADDR=SPEC (repeatable)")
    p.add_argument("--max-seconds", type=float, default=3600.0,
                   help="exit by itself after this long (safety bound)")
    p.add_argument("--watch-stdin", action="store_true",
                   help="exit when stdin reaches EOF")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if not args.rule:
        p.error("at least one --rule is required")
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
