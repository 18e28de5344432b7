"""Deadlines for blocking network operations, enforced while they run.

A per-read timeout does not bound an operation: a server that drips one byte
a second satisfies every read and holds the caller forever. A `Deadline` is an
absolute point in time (monotonic clock) for a whole operation (an InfluxDB
write, a whole SMTP session, a DNS lookup). Sockets opened under it are
*watched*: when the deadline passes, a watchdog thread shuts them down, so a
read blocked in any library (aiosmtplib, http.client, urllib3, TLS) returns at
once with an error. Each blocking call is also given at most the time left.

    with Deadline(10.0, "InfluxDB write") as d:
        sock = d.connect("influx.example", 8086)   # DNS + connect within the deadline, then watched
        ...                                         # reads fail at most 10 s after the start
    d.expired  # True once it has passed (watchdog fired, or the clock is past it): report "deadline exceeded", not the library's error

`abort_all()` fires every live deadline now (the daemon on SIGTERM).
DNS lookups run in daemon threads: a resolver that never answers is abandoned
at the deadline (the thread ends whenever the resolver gives up) and never
keeps the process from exiting.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


class DeadlineExceeded(TimeoutError):
    """The whole operation ran past its deadline."""


class _Watchdog:
    """One daemon thread for the process: fires deadlines in time order."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.heap: list[tuple[float, int, Deadline]] = []
        self.live: set[Deadline] = set()
        self.seq = itertools.count()
        self.thread: threading.Thread | None = None

    def add(self, d: Deadline) -> None:
        with self.cond:
            heapq.heappush(self.heap, (d.at, next(self.seq), d))
            self.live.add(d)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="wanmon-deadlines", daemon=True)
                self.thread.start()
            self.cond.notify()

    def remove(self, d: Deadline) -> None:
        with self.cond:
            self.live.discard(d)  # its heap entry is skipped when it comes up

    def abort_all(self) -> int:
        with self.cond:
            live = list(self.live)
        for d in live:
            d.fire()
        return len(live)

    def _run(self) -> None:
        with self.cond:
            while True:
                while self.heap and self.heap[0][2] not in self.live:
                    heapq.heappop(self.heap)  # removed (operation finished): skip
                if not self.heap:
                    self.cond.wait()
                    continue
                at, _, d = self.heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self.cond.wait(wait)
                    continue
                heapq.heappop(self.heap)
                self.live.discard(d)
                self.cond.release()
                try:
                    d.fire()
                finally:
                    self.cond.acquire()


_WATCHDOG = _Watchdog()


class Deadline:
    """An absolute deadline for one operation; a context manager that watches its sockets."""

    def __init__(self, seconds: float, what: str = "operation"):
        self.seconds = max(0.0, float(seconds))
        self.what = what
        self.at = time.monotonic() + self.seconds
        self._fired = False
        self._ended: float | None = None  # when the `with` block ended (an operation that ended in time stays in time)
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._active = False

    # -- time ------------------------------------------------------------
    @property
    def expired(self) -> bool:
        """The deadline has passed: the watchdog fired, or the clock is past it. (A socket
        timeout set to the time left can go off a moment before the watchdog: its error
        is the deadline's too, found by the suite run on a loaded machine.)"""
        return self._fired or (time.monotonic() if self._ended is None else self._ended) >= self.at

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def timeout(self, per_op: float | None = None) -> float:
        """The timeout for one blocking call: the time left, or less. Raises when none is left."""
        left = self.at - time.monotonic()
        if left <= 0 or self._fired:
            self._fired = True
            raise DeadlineExceeded(self.message())
        return left if per_op is None else min(per_op, left)

    def message(self) -> str:
        # rounded: a deadline cut to what is left of a budget is 3.2791... s, not worth printing
        return f"{self.what}: no complete answer within {round(self.seconds, 1):g} s (deadline)"

    # -- sockets ---------------------------------------------------------
    def watch(self, sock: socket.socket) -> socket.socket:
        """Shut `sock` down when the deadline passes (it may already have)."""
        with self._lock:
            self._socks.append(sock)
            fired = self.expired
        if fired:
            _shutdown(sock)
        return sock

    def fire(self) -> None:
        with self._lock:
            if self._fired and not self._socks:
                return
            self._fired = True
            socks, self._socks = self._socks, []
        for s in socks:
            _shutdown(s)
        if socks:
            logger.debug("deadline fired what=%r sockets=%d", self.what, len(socks))

    def __enter__(self) -> Deadline:
        self._active = True
        _WATCHDOG.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._ended = time.monotonic()
        _WATCHDOG.remove(self)
        with self._lock:
            self._socks = []
        self._active = False

    # -- DNS and connect -------------------------------------------------
    def getaddrinfo(self, host: str, port: int | str | None, **kw: Any) -> list:
        """socket.getaddrinfo within the deadline (in a daemon thread; abandoned when it passes)."""
        return getaddrinfo(host, port, self.timeout(), **kw)

    def connect(
        self, host: str, port: int, per_op: float | None = None, source_address: tuple[str, int] | None = None
    ) -> socket.socket:
        """Resolve and connect within the deadline; the socket is watched, and its timeout is
        the per-operation timeout (or the time left)."""
        last: OSError | None = None
        for family, type_, proto, _, addr in self.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            sock = socket.socket(family, type_, proto)
            try:
                self.watch(sock)
                sock.settimeout(self.timeout(per_op))
                if source_address:
                    sock.bind(source_address)
                sock.connect(addr)
                return sock
            except DeadlineExceeded:
                sock.close()
                raise
            except OSError as exc:
                sock.close()
                if self.expired:
                    raise DeadlineExceeded(self.message()) from None
                last = exc
        raise last or OSError(f"cannot connect to {host}:{port}")

    def wrap_tls(
        self, context: ssl.SSLContext, sock: socket.socket, server_hostname: str | None, per_op: float | None = None
    ) -> ssl.SSLSocket:
        """TLS over `sock`, the handshake within the deadline too.

        Wrapping hands the file descriptor to a new socket object and detaches the
        old one, which then can no longer be shut down: the TLS socket is watched
        before its handshake starts, so a peer that drips its handshake is cut off
        at the deadline like any other read."""
        tls = context.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=False)
        try:
            self.watch(tls)
            tls.settimeout(self.timeout(per_op))
            tls.do_handshake()
        except DeadlineExceeded:
            tls.close()
            raise
        except OSError:
            tls.close()
            if self.expired:
                raise DeadlineExceeded(self.message()) from None
            raise
        return tls


def _shutdown(sock: socket.socket) -> None:
    try:
        # socket.socket's own shutdown, also for an SSLSocket: the fd, not the TLS layer
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def getaddrinfo(host: str, port: int | str | None, timeout_s: float, **kw: Any) -> list:
    """socket.getaddrinfo that gives up after timeout_s (socket.timeout naming the host).

    IP literals answer at once without a thread. A lookup still running at the
    deadline is left to finish in its daemon thread."""
    try:
        return socket.getaddrinfo(host, port, flags=socket.AI_NUMERICHOST, **kw)
    except socket.gaierror:
        pass
    try:
        return call_within(timeout_s, f"dns-{host}", socket.getaddrinfo, host, port, **kw)
    except TimeoutError:
        raise TimeoutError(f"DNS lookup of {host!r} timed out after {timeout_s:g} s") from None


def call_within(timeout_s: float, name: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """fn(*args, **kw) in a daemon thread `name`: its result or exception, or TimeoutError after
    timeout_s (the call is left to finish on its own, and never keeps the process from exiting)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["ok"] = fn(*args, **kw)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["err"] = exc
        done.set()

    threading.Thread(target=work, name=name, daemon=True).start()
    if not done.wait(max(0.0, timeout_s)):
        raise TimeoutError(f"{name}: no answer within {timeout_s:g} s")
    if "err" in box:
        raise box["err"]
    return box["ok"]


def abort_all() -> int:
    """Fire every live deadline now (shutdown): blocked network calls return at once."""
    return _WATCHDOG.abort_all()
