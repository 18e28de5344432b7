"""Fakes for wanmon's seams: an injectable wall clock (the cycle's `now`) and the
network behind `wanmon.cycle.Peers`, so cycle, alert and daemon logic is tested
in-process, without sleeping and without sending a packet.

* `Clock`: the wall clock the cycle, the alerts and the SNMP rates see; the
  test moves it (four hours pass in one statement).
* `Net`: ICMP answers per address as the test says (`down`); a sweep or an
  SNMP poll can be held on an asyncio event to play a long or hung one; the
  SNMP answers are what the test puts in `snmp` (an address -> SnmpResult
  factory); `deliver` plays an SMTP relay that accepts everything: it takes
  the due outbox oldest first, marks each mail sent and keeps the row in
  `sent` (a mail queued twice would be delivered twice); `deliver` and
  `drain` can be held on a threading event (a hung peer); `trace` gives the
  path the test puts in `paths` (an address -> the addresses that answer, in
  order; default: the address itself, reached), records each address traced
  in `traced`, and can be held on an asyncio event (a slow trace).

The real peers are exercised end to end in test_alerts_integration.py,
test_daemon.py, test_snmp_integration.py and test_publish_faults.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from wanmon.cycle import Peers
from wanmon.model import Hop, Trace
from wanmon.probes.icmp import summarize
from wanmon.probes.snmp import SnmpResult

T0 = 1_800_000_000.0  # 2027-01-15: a fixed wall clock


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Net:
    def __init__(self, clock: Clock, down=()):
        self.clock = clock
        self.down = set(down)  # addresses that do not answer ICMP
        self.hold_sweep: asyncio.Event | None = None  # when set (the attribute), sweeps wait for the event
        self.sweeping: asyncio.Event | None = None  # set when a sweep starts (created in the test's loop)
        self.sweeps = 0
        self.snmp: dict[str, Callable[[], SnmpResult | None]] = {}  # address -> answer (default: ok)
        self.hold_snmp: asyncio.Event | None = None
        self.polling: asyncio.Event | None = None
        self.polls: list[list[str]] = []
        self.sent: list[dict] = []  # outbox rows "delivered", in delivery order
        self.deliveries = 0
        self.drains = 0
        self.hold_deliver: threading.Event | None = None  # a hung relay until set
        self.delivering = threading.Event()
        self.paths: dict[str, list[str]] = {}  # address -> the hops that answer (the last one "unreachable")
        self.traced: list[str] = []  # every address traced, in order
        self.hold_trace: asyncio.Event | None = None
        self.tracing: asyncio.Event | None = None  # set when a trace starts

    # -- the peers -----------------------------------------------------------
    async def icmp(self, addresses, spec, progress=None, **kw):
        self.sweeps += 1
        if self.sweeping is not None:
            self.sweeping.set()
        if self.hold_sweep is not None:
            await self.hold_sweep.wait()
        return [summarize(a, a, 1, [None] if a in self.down else [0.4], None) for a in addresses]

    async def snmp_probe(self, targets, max_concurrency=256, budget_s=None):
        self.polls.append([t.host for t in targets])
        if self.polling is not None:
            self.polling.set()
        if self.hold_snmp is not None:
            await self.hold_snmp.wait()
        out = []
        for t in targets:
            answer = self.snmp.get(t.host)
            out.append(
                answer()
                if answer
                else SnmpResult("ok", None, self.clock(), sys_name=f"r-{t.host}", sys_uptime_ticks=100_000)
            )
        return out

    async def trace(self, address, spec, mode="auto", dns_timeout_s=1.0, budget_s=None, pacer=None):
        self.traced.append(address)
        if self.tracing is not None:
            self.tracing.set()
        if self.hold_trace is not None:
            await self.hold_trace.wait()
        hops = self.paths.get(address)
        if hops is None:  # reached: the site answers at distance 1
            return Trace(address, address, self.clock(), (Hop(1, address, 0.4),), True)
        path = tuple(Hop(d, a, 0.4, d == len(hops)) for d, a in enumerate(hops, 1))
        return Trace(address, address, self.clock(), path, False, f"{hops[-1]} answered that it has no route on")

    def drain(self, store, spec, budget_s):
        self.drains += 1

    def deliver(self, store, spec, budget_s):
        self.deliveries += 1
        self.delivering.set()
        if self.hold_deliver is not None:
            self.hold_deliver.wait(30)
        for row in store.outbox_due(self.clock()):
            store.outbox_mark(row["id"], "sent", None, self.clock())
            self.sent.append(row)

    def peers(self) -> Peers:
        return Peers(icmp=self.icmp, snmp=self.snmp_probe, drain=self.drain, deliver=self.deliver, trace=self.trace)

    # -- asyncio events belong to the loop that runs the test ------------------
    def in_loop(self) -> None:
        """Fresh events for the running loop (call at the start of each asyncio.run)."""
        self.sweeping, self.polling, self.tracing = asyncio.Event(), asyncio.Event(), asyncio.Event()


def run(coro, timeout: float = 30):
    """asyncio.run, but a test whose event never comes fails after `timeout` instead of hanging."""

    async def bounded():
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


class Sched:
    """What Daemon._stop needs of the APScheduler: it records the calls."""

    def __init__(self):
        self.paused = asyncio.Event()
        self.shut = False

    def pause(self) -> None:
        self.paused.set()

    def shutdown(self, wait: bool = True) -> None:
        self.shut = True


def query(db: Path, sql: str, args=()) -> list:
    """Read the store as a user would (read-only)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()
