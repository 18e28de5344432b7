"""The path to a site: which routers answer, hop by hop, where it stops, and who they are.

How a trace works: ICMP echo requests to the site's address only, with growing TTLs (hop
limits in IPv6); a router where a probe's TTL runs out answers "time exceeded", one without a
way on answers "destination unreachable", the site itself answers the echo. Nothing is ever
sent to a router: routers answer probes addressed to the site.

Why not `icmplib.traceroute` (icmplib 3.0.4, read in its source): it is synchronous (in the
agent's event loop it would stop the cycle; in a thread it cannot be stopped), it has no
overall deadline (a silent path costs max_hops x count x timeout, 60 s with its defaults and
the whole 30 hops), it waits for each distance before the next, and it numbers every
distance's probes 0..count-1, so a late answer from distance n is taken for distance n+1
(in a lab with a cut link it reported the same router at distances 3 and 5). icmplib's async
primitive `AsyncSocket.receive` does not say who answered ("does not specify the IP address
of the host that replied"), so it cannot name a hop either. So the trace sends and reads
itself on the ICMP socket the sweep opens through icmplib (wanmon.probes.icmp: raw, or
unprivileged where the kernel hands the errors over on the socket's error queue):

* several distances are in flight at once, `gap_ms` apart (routers rate-limit their ICMP
  errors; Linux drops the first "unreachable" to a new peer and then allows one a second):
  distances up to SILENT_AHEAD past the farthest answer go out at once, so a 3-hop path
  takes a round trip, not three; a distance that stays silent is asked again (`attempts`),
  each time half a timeout later than the time before, and twice more when it lies right
  below a router that said "unreachable" (where that router stands is the answer);
* every probe has its own sequence number and a random identifier per trace, and an answer
  is taken only if it quotes our probe to our target, so no answer is ever put at another
  distance and another process's traceroute never mixes in;
* the whole trace has one deadline (`budget_s`), checked while it runs: whatever answered
  by then is the result, with the reason.

`Names` says who an address on a path is (a site, or an [[hops]] entry), `stops` words
where a broken path stops against the last good one, and `parent_on_path` reads from a good
path the last known site before its target (`wanmon topology`).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import secrets
import socket
import struct
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from wanmon import dns
from wanmon.config import Config, HopEntry, Site, TraceSettings
from wanmon.model import Hop, OutagePath, SiteState, Trace, TraceJob
from wanmon.probes import icmp
from wanmon.status import DOWN, REACHABLE

logger = logging.getLogger(__name__)

SILENT_AHEAD = 5  # distances probed past the farthest one that answered (mtr's max-unknown)
BELOW_REFUSAL = 2  # more probes for a silent distance right below a router that said "unreachable"
_TOKEN_LEN = 8
MSG_ERRQUEUE = 0x2000
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3
ECHO, TIME_EXCEEDED, UNREACHABLE = "echo", "time", "unreachable"
_KIND_V4 = {0: ECHO, 11: TIME_EXCEEDED, 3: UNREACHABLE}
_KIND_V6 = {129: ECHO, 3: TIME_EXCEEDED, 1: UNREACHABLE}
_RECVERR = {(socket.IPPROTO_IP, icmp.IP_RECVERR), (socket.IPPROTO_IPV6, icmp.IPV6_RECVERR)}


@dataclass
class _Answer:
    address: str
    rtt_ms: float
    kind: str


class _Tracer:
    """One trace: probe k (k = 0, 1, ...) has sequence base + k; sent[k] is (distance, send time)."""

    def __init__(self, ip: str, spec: TraceSettings, fam: icmp._Family):
        self.ip = ip
        self.spec = spec
        self.fam = fam
        self.v6 = fam.family == socket.AF_INET6
        self.token = secrets.token_bytes(_TOKEN_LEN)
        self.ident = fam.kernel_id if fam.kernel_id is not None else secrets.randbits(16)
        self.base = secrets.randbits(16)
        self.sent: list[tuple[int, int]] = []  # per probe: (distance, tx_ns)
        self.tries = [0] * (spec.max_hops + 1)  # per distance
        self.last_tx = [0.0] * (spec.max_hops + 1)  # loop time of its last probe
        self.answers: dict[int, _Answer] = {}  # distance -> its first answer
        self.arrived = asyncio.Event()
        ip_only = ip.split("%", 1)[0]
        self.dest_bytes = socket.inet_pton(socket.AF_INET6 if self.v6 else socket.AF_INET, ip_only)
        self.ip_text = ip_only
        scope = 0
        if "%" in ip:
            zone = ip.split("%", 1)[1]
            scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
        self.sockaddr: tuple = (ip_only, 0, 0, scope) if self.v6 else (ip_only, 0)

    # -- what is due ----------------------------------------------------------

    def _limit(self) -> int:
        """The farthest distance worth probing now."""
        limit = self.spec.max_hops
        farthest = 0
        for d, a in self.answers.items():
            if a.kind != TIME_EXCEEDED:
                limit = min(limit, d)  # the target, or a router with no way on: nothing beyond
            farthest = max(farthest, d)
        return min(limit, farthest + SILENT_AHEAD)

    def _below_refusal(self) -> range:
        """The silent distances right below the nearest router that answered "unreachable": they
        get BELOW_REFUSAL more probes than `attempts`. Such a router answers every distance
        from its own on, so the nearest one it answers at is its place on the path, and only
        its rate limit hides it: Linux lets one error a second through to a peer, which a
        sweep's pings to the cut site have just spent, and the one that gets through may be the
        answer to a farther distance."""
        refused = [x for x, a in self.answers.items() if a.kind == UNREACHABLE]
        if not refused:
            return range(0)
        u = min(refused)
        return range(max((x for x in self.answers if x < u), default=0) + 1, u)

    def _due(self, now: float) -> tuple[int | None, float | None]:
        """(the nearest distance to probe now, or None; the next instant something changes:
        a probe in flight times out, or a silent distance may be asked again). A distance is
        asked again `timeout_ms` after its first probe, then half a timeout later each time,
        so that retries do not keep in step with a limiter that lets one answer a second
        through (a retry every second can arrive just before each new token, every time)."""
        timeout = self.spec.timeout_ms / 1000.0
        gap = self._below_refusal()
        wake = None
        for d in range(1, self._limit() + 1):
            if d in self.answers:
                continue
            tries = self.tries[d]
            if tries == 0:
                return d, wake
            most = self.spec.attempts + (BELOW_REFUSAL if d in gap else 0)
            ends = self.last_tx[d] + (timeout if tries >= most else timeout * (1 + (tries - 1) / 2))
            if ends > now:
                wake = ends if wake is None else min(wake, ends)
            elif tries < most:
                return d, wake
        return None, wake

    # -- sending --------------------------------------------------------------

    def _send(self, d: int, now: float) -> None:
        k = len(self.sent)
        seq = (self.base + k) & 0xFFFF
        payload = self.token + k.to_bytes(4, "big")
        header = struct.pack("!BBHHH", self.fam.request_type, 0, 0, self.ident, seq)
        if self.fam.raw and not self.v6:
            csum = icmp._checksum(header + payload)
            header = header[:2] + struct.pack("=H", csum) + header[4:]
        sock = self.fam.sock
        if self.v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, d)
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, d)
        self.sent.append((d, time.time_ns()))
        self.tries[d] += 1
        self.last_tx[d] = now
        try:
            sock.sendto(header + payload, self.sockaddr)
        except OSError as exc:  # no route at all from here: nothing will answer this probe
            logger.debug("trace send failed ip=%s ttl=%d: %s", self.ip, d, exc)

    # -- receiving ------------------------------------------------------------

    def on_readable(self) -> None:
        sock = self.fam.sock
        anc = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(512)
        for flags in (0,) if self.fam.raw else (MSG_ERRQUEUE, 0):
            for _ in range(4096):  # what is queued now, not a loop that a flood could keep going
                try:
                    data, ancdata, _f, addr = sock.recvmsg(2048, anc, flags)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # the pending error of an unprivileged socket: the queue has it
                    logger.debug("trace recv ip=%s: %s", self.ip, exc)
                    continue
                self._handle(data, ancdata, addr[0], flags == MSG_ERRQUEUE)

    def _handle(self, data: bytes, ancdata, src: str, queued: bool) -> None:
        rx_ns = None
        offender = None
        err_type = None
        for level, typ, cdata in ancdata:
            if level == socket.SOL_SOCKET and typ == icmp.SO_TIMESTAMPNS and len(cdata) >= 16:
                sec, nsec = struct.unpack("=qq", cdata[:16])
                rx_ns = sec * 1_000_000_000 + nsec
            elif queued and (level, typ) in _RECVERR and len(cdata) >= 16 + 8:
                # struct sock_extended_err (16 bytes), then the offender's sockaddr
                _errno, origin, err_type, _code = struct.unpack_from("=IBBB", cdata)
                if origin not in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
                    return
                fam = struct.unpack_from("=H", cdata, 16)[0]
                if fam == socket.AF_INET:
                    offender = socket.inet_ntop(socket.AF_INET, cdata[20:24])
                elif fam == socket.AF_INET6 and len(cdata) >= 16 + 24:
                    offender = socket.inet_ntop(socket.AF_INET6, cdata[24:40])
        parsed = self._parse_queued(data, src, err_type, offender) if queued else self._parse(data, src)
        if parsed is None:
            return
        k, kind, who = parsed
        if not 0 <= k < len(self.sent):
            return
        d, tx_ns = self.sent[k]
        if d in self.answers:
            return  # a second answer at this distance (a retry's, or a duplicate)
        rtt_ms = max((rx_ns or time.time_ns()) - tx_ns, 0) / 1e6
        self.answers[d] = _Answer(who.split("%", 1)[0], round(rtt_ms, 3), kind)
        self.arrived.set()

    def _probe_no(self, ident: int, seq: int) -> int | None:
        if self.fam.raw and ident != self.ident:
            return None
        return (seq - self.base) & 0xFFFF

    def _parse(self, data: bytes, src: str) -> tuple[int, str, str] | None:
        """(probe number, kind, who answered) of an echo reply or an ICMP error quoting our probe."""
        off = (data[0] & 0x0F) * 4 if self.fam.raw and not self.v6 and data else 0
        if len(data) < off + 8:
            return None
        kind = (_KIND_V6 if self.v6 else _KIND_V4).get(data[off])
        if kind is None:
            return None
        if kind == ECHO:
            if src.split("%", 1)[0] != self.ip_text or data[off + 8 : off + 8 + _TOKEN_LEN] != self.token:
                return None
            ident, seq = struct.unpack_from("!HH", data, off + 4)
            k = self._probe_no(ident, seq)
            payload_k = int.from_bytes(data[off + 8 + _TOKEN_LEN : off + 12 + _TOKEN_LEN], "big")
            return (k, kind, src) if k == payload_k else None
        inner = off + 8  # the quoted packet: our IP header, then our echo request's first 8 bytes
        if self.v6:
            if len(data) < inner + 48 or data[inner + 6] != 58 or data[inner + 24 : inner + 40] != self.dest_bytes:
                return None
            quoted = inner + 40
        else:
            if len(data) < inner + 20:
                return None
            ihl = (data[inner] & 0x0F) * 4
            if data[inner + 9] != 1 or data[inner + 16 : inner + 20] != self.dest_bytes or len(data) < inner + ihl + 8:
                return None
            quoted = inner + ihl
        if data[quoted] != self.fam.request_type:
            return None
        ident, seq = struct.unpack_from("!HH", data, quoted + 4)
        k = self._probe_no(ident, seq)
        return None if k is None else (k, kind, src)

    def _parse_queued(
        self, data: bytes, dest: str, err_type: int | None, offender: str | None
    ) -> tuple[int, str, str] | None:
        """An ICMP error from the unprivileged socket's error queue: the kernel matched it to this
        socket's identifier; data is what the router quoted of our probe (8 bytes at least)."""
        kind = (_KIND_V6 if self.v6 else _KIND_V4).get(err_type) if err_type is not None else None
        if kind in (None, ECHO) or offender is None or dest.split("%", 1)[0] != self.ip_text or len(data) < 8:
            return None
        seq = struct.unpack_from("!H", data, 6)[0]
        return self._probe_no(0, seq), kind, offender  # type: ignore[return-value]

    # -- the trace ------------------------------------------------------------

    async def run(self, budget_s: float, pacer: Pacer | None = None) -> bool:
        """Probe until every distance worth probing answered or went silent (True), or until
        budget_s is spent (False). pacer: a send rate shared with other traces in flight."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        gap = self.spec.gap_ms / 1000.0
        next_send = loop.time()
        loop.add_reader(self.fam.sock.fileno(), self.on_readable)
        try:
            while True:
                now = loop.time()
                if now >= deadline:
                    return False
                d, wake = self._due(now)
                if d is not None and now >= next_send:
                    at = pacer.take(now) if pacer is not None else now
                    if at > now:  # a slot of the shared rate, reserved: wait for it, then look again
                        await asyncio.sleep(min(at, deadline) - now)
                        next_send = at
                        if loop.time() >= deadline:
                            return False
                        d, _ = self._due(loop.time())
                        if d is None:
                            continue
                    now = loop.time()
                    self._send(d, now)
                    next_send = now + gap
                    continue
                if d is None and wake is None:
                    return True
                until = min(x for x in (deadline, wake, next_send if d is not None else None) if x is not None)
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), max(until - loop.time(), 0))
                except TimeoutError:
                    pass
        finally:
            loop.remove_reader(self.fam.sock.fileno())
            self.on_readable()  # answers already queued count

    def hops(self) -> tuple[tuple[Hop, ...], bool]:
        """The path: distances 1..the target (reached), or 1..the router with no way on, or
        1..the farthest answer. A router that said "unreachable" at several distances stands
        at the nearest one."""
        reached_at = min((d for d, a in self.answers.items() if a.kind == ECHO), default=None)
        end = reached_at
        if end is None:
            refused = [d for d, a in self.answers.items() if a.kind == UNREACHABLE]
            if refused:
                who = self.answers[min(refused)].address
                end = min(d for d, a in self.answers.items() if a.address == who)
            else:
                end = max(self.answers, default=0)
        out = []
        for d in range(1, end + 1):
            a = self.answers.get(d)
            if a is None:
                out.append(Hop(d, None, None))
            else:
                out.append(Hop(d, a.address, a.rtt_ms, unreachable=a.kind == UNREACHABLE))
        return tuple(out), reached_at is not None


class Pacer:
    """One send rate for the probes of every trace in flight (the agent's own traces share the
    sweep's [icmp] rate_pps): each probe takes the next free slot, whichever trace sends it; a
    trace still keeps gap_ms between its own probes."""

    def __init__(self, rate_pps: float):
        self.gap_s = 1.0 / rate_pps
        self.next = 0.0

    def take(self, now: float) -> float:
        """The instant a probe may leave (its slot, reserved): now, or the next free one."""
        at = max(now, self.next)
        self.next = at + self.gap_s
        return at


async def trace(
    address: str,
    spec: TraceSettings,
    mode: str = "auto",
    dns_timeout_s: float = 1.0,
    budget_s: float | None = None,
    pacer: Pacer | None = None,
) -> Trace:
    """Trace the path to `address` (an IP literal or a host name) within spec.budget_s (or
    budget_s): a Trace, whatever the network does. Only a missing permission
    (ProbePermissionError, with the fix) or a bug raises, as for the sweep. pacer: a send rate
    shared with the other traces in flight (wanmon.cycle.run_traces)."""
    t0 = time.time()
    loop = asyncio.get_running_loop()
    start = loop.time()
    budget = spec.budget_s if budget_s is None else budget_s
    ip = dns.literal(address)  # a link-local address keeps its zone (fe80::1%eth0)
    if ip is None:
        ans = await dns.resolve(address, min(dns_timeout_s, budget))
        if ans.ip is None:
            return Trace(address, None, t0, (), False, ans.reason or "no address", (time.time() - t0) * 1000)
        ip = ans.ip
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    fam = icmp._open_one(mode, family, errors=True)
    try:
        tracer = _Tracer(ip, spec, fam)
        whole = await tracer.run(max(budget - (loop.time() - start), 0.0), pacer)
    finally:
        fam.close()
    hops, reached = tracer.hops()
    reason = None if whole else f"the trace's budget of {budget:g} s was spent"
    if reason is None and not reached:
        last = next((h for h in reversed(hops) if h.address is not None), None)
        if last is None:
            reason = "no answer from any hop"
        elif last.unreachable:
            reason = f"{last.address} answered that it has no route on"
        else:
            reason = f"no answer after distance {last.distance}"
    duration = (loop.time() - start) * 1000
    logger.info("trace ip=%s reached=%s hops=%d ms=%.0f reason=%s", ip, reached, len(hops), duration, reason)
    return Trace(address, ip, t0, hops, reached, reason, round(duration, 1))


# -- who is on a path ---------------------------------------------------------


class Names:
    """Who an address on a path is: a site (its own address, or an [[hops]] entry with `site`),
    or an [[hops]] entry of its own (the carrier's equipment)."""

    def __init__(self, sites: Iterable[Site], hops: Iterable[HopEntry] = (), resolved: Mapping[str, str] = {}):
        self.site_of: dict[str, str] = {}  # ip -> site id
        self.label: dict[str, str] = {}  # ip -> name
        by_id = {}
        for s in sites:
            by_id[s.id] = s
            ip = dns.literal(s.address) or resolved.get(s.address)
            if ip is not None:
                self.site_of.setdefault(ip, s.id)
                self.label.setdefault(ip, s.name)
        for h in hops:
            ip = dns.literal(h.address)
            if ip is None:
                continue
            self.label.setdefault(ip, h.name)
            if h.site is not None and h.site in by_id:
                self.site_of.setdefault(ip, h.site)

    @classmethod
    def of(cls, cfg: Config, dns_cache: Mapping[str, tuple[str, float]] | None = None) -> Names:
        """The config's sites and [[hops]]; sites written as host names by their last good
        address (Store.dns_cache())."""
        return cls(cfg.sites, cfg.hops, {name: ip for name, (ip, _ts) in (dns_cache or {}).items()})

    def name(self, ip: str | None) -> str | None:
        return self.label.get(ip) if ip else None

    def site(self, ip: str | None) -> str | None:
        return self.site_of.get(ip) if ip else None

    def hop(self, ip: str) -> str:
        """ "127.10.7.1 (UBND huyện Gia Bình)", or the address alone when nobody is known by it."""
        name = self.name(ip)
        return f"{ip} ({name})" if name else ip


def stops(lang: str, t: Trace, good: Trace | None, names: Names) -> str | None:
    """Where a path that did not reach its site stops, against its last good path: "đường
    truyền dừng sau 127.10.7.1 (UBND huyện Gia Bình), hop 3 của 5". None when it reached."""
    return stops_of(lang, t, len(good.hops) if good is not None and good.reached else None, names)


def stops_of(lang: str, t: Trace, good_hops: int | None, names: Names) -> str | None:
    """stops(), the good path given by its length (None: no good path known)."""
    from wanmon.words import PATH

    w = PATH[lang]
    if t.reached:
        return None
    last = t.last_answer
    if last is None or last.address is None:
        return w["silent"]
    hop = names.hop(last.address)
    if good_hops is not None:
        return w["stops"].format(hop=hop, n=last.distance, m=good_hops)
    return w["stops_open"].format(hop=hop, n=last.distance)


def outage_json(o: OutagePath, names: Names, lang: str) -> dict:
    """An outage path as the page's status.json and `status --json` give it (README, *Finding
    the break*): where it stops (hop, of, address, name, site), the sentence, the hops."""
    t = o.trace
    last = t.last_answer
    return {
        "ts": t.ts,
        "reached": t.reached,
        "hop": last.distance if last is not None and not t.reached else None,
        "of": o.good_hops,
        "address": last.address if last is not None and not t.reached else None,
        "name": names.name(last.address) if last is not None and not t.reached else None,
        "site": names.site(last.address) if last is not None and not t.reached else None,
        "text": stops_of(lang, t, o.good_hops, names),
        "good_ts": o.good_ts,
        "reason": t.reason,
        "hops": [
            {"distance": h.distance, "address": h.address, "rtt_ms": h.rtt_ms, "unreachable": h.unreachable}
            for h in t.hops
        ],
    }


# -- the agent's own traces: which ones a cycle asks for -------------------------


def plan(
    spec: TraceSettings,
    states: Iterable[SiteState],
    ips: Mapping[str, str | None],
    good_ts: Mapping[str, float],
    traced: Collection[tuple[str, float]],
    now: float,
    interval_s: float,
) -> list[TraceJob]:
    """The traces a cycle starts after its page (pure), at most spec.per_cycle:

    * first, each site down on its own (status down: a site behind a down parent is
      unreachable, never traced) whose incident has no outage path yet (`traced`: (site,
      incident start) pairs), the newest incidents first; one trace per root cause, and the
      ones left over are traced by the next cycles;
    * else (a cycle that traces no outage: refreshing waits for a calm one), good paths to
      refresh, at the rate that goes round every site in half of refresh_h (at least one a
      cycle): the sites that answer whose good path is older than their status (they came
      back, or changed, since), then those without one, then those older than refresh_h, the
      oldest first.

    states: the sites' states this cycle (status, since); ips: the addresses the sweep used."""
    jobs: list[TraceJob] = []
    rest: list[tuple[int, float, str]] = []
    horizon = now - spec.refresh_h * 3600
    n = 0
    for st in states:
        n += 1
        ip = ips.get(st.site_id)
        if ip is None:
            continue  # no address (a name that did not resolve): nothing to trace
        if st.status == DOWN:
            if spec.on_outage and (st.site_id, st.since) not in traced:
                jobs.append(TraceJob(st.site_id, ip, "outage", st.since))
        elif spec.refresh_h > 0 and st.status in REACHABLE:
            ts = good_ts.get(st.site_id)
            if ts is None:
                rest.append((1, 0.0, st.site_id))
            elif ts < st.since:
                rest.append((0, ts, st.site_id))
            elif ts < horizon:
                rest.append((2, ts, st.site_id))
    if jobs:
        jobs.sort(key=lambda j: (-(j.start_ts or 0.0), j.site_id))
        return jobs[: spec.per_cycle]
    rate = math.ceil(2 * n * interval_s / (spec.refresh_h * 3600)) if rest else 0
    return [
        TraceJob(sid, ips[sid] or "", "refresh") for _p, _ts, sid in heapq.nsmallest(min(spec.per_cycle, rate), rest)
    ]


def parent_on_path(site_id: str, t: Trace, names: Names) -> str | None:
    """The last known site before `site_id` on a path that reached it: its parent by traceroute
    (None when no hop before it is a known site)."""
    if not t.reached:
        return None
    for h in reversed(t.hops[:-1]):
        sid = names.site(h.address)
        if sid is not None and sid != site_id:
            return sid
    return None
