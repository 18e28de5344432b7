"""`wanmon check`'s sweep in a child process, started as soon as the config is read.

A cron check at 2,000 sites spent about 0.3 s before its sweep (the interpreter,
its imports, the config) and 0.25 s after it (alerts, the store, the page), one
after the other, around a 0.63 s sweep that mostly waits on its rate cap. Here
the sweep starts right after the config: the parent takes the cycle lock and
checks the ICMP permission (so a busy store or a missing capability fails
before anything is sent, with the same messages as in-process), then forks.
The child runs exactly the in-process sweep (`icmp.probe`) and pickles its
results into a pipe; meanwhile the parent loads the rest of wanmon, opens the
store and readies the page, then reads the results (`ForkedSweep.result`,
under a deadline: a child that never answers is killed, by its PID, and the
check fails with a clear message instead of hanging cron).

Only where a fork is safe and changes nothing the user sees: no other thread
yet (forking a threaded process is unsafe), and no progress bar (`check`
on a terminal sweeps in-process, so its bar moves). The daemon keeps its
sweep in-process: its imports are paid once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import select
import signal
import socket
import threading
import time

from wanmon import dns
from wanmon.config import Config
from wanmon.errors import WanmonError
from wanmon.locks import CycleLock
from wanmon.probes import icmp

logger = logging.getLogger(__name__)

SLACK_S = 30.0  # on top of the sweep's own bound, before the child is given up on


class SweepLostError(WanmonError):
    """The child sweeping never answered or died without results."""


def eligible(progress: object) -> bool:
    return progress is None and threading.active_count() == 1 and hasattr(os, "fork")


def bound_s(cfg: Config) -> float:
    """The longest a sweep can take by its settings: every packet at the rate cap, the last
    target's packets spaced by interval_ms, its timeout, and the DNS budget."""
    spec = cfg.icmp
    n = len(cfg.sites) * spec.count
    return (
        n / spec.rate_pps
        + spec.count * spec.interval_ms / 1000
        + spec.timeout_ms / 1000
        + spec.dns_timeout_ms / 1000
        + SLACK_S
    )


class ForkedSweep:
    def __init__(self, pid: int, fd: int, lock: CycleLock, deadline: float):
        self.pid = pid
        self.fd = fd
        self.lock = lock
        self.deadline = deadline  # time.monotonic()

    @classmethod
    def start(cls, cfg: Config) -> ForkedSweep:
        """Take the cycle lock, check the permission, fork the sweep. Raises what the in-process
        path raises (StoreBusyError, ProbePermissionError) before anything is sent."""
        addresses = [s.address for s in cfg.sites]
        icmp.open_sockets(cfg.icmp.mode, {socket.AF_INET}).popitem()[1].close()  # before any file is made
        lock = CycleLock(cfg.store_path).__enter__()
        try:
            assert lock.fd is not None, "__enter__ returned: it holds the lock file open"
            cache = _dns_cache(cfg) if any(dns.literal(a) is None for a in addresses) else None
            deadline = time.monotonic() + bound_s(cfg)
            parent = os.getpid()
            r, w = os.pipe()
            pid = os.fork()
        except BaseException:
            lock.__exit__(None, None, None)
            raise
        if pid == 0:  # the child: never returns
            os.close(r)
            os.close(lock.fd)  # the parent's copy holds the lock; a parent killed with -9 leaves none
            _child(w, addresses, cfg, cache, parent)
        os.close(w)
        logger.debug("icmp sweep in child process pid=%d sites=%d", pid, len(addresses))
        return cls(pid, r, lock, deadline)

    def result(self) -> tuple[float, float, list[icmp.IcmpResult]]:
        """(started, finished, results) as the child measured them; raises what the sweep
        raised, or SweepLostError."""
        chunks = []
        try:
            while True:
                left = self.deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    raise SweepLostError(
                        f"the ICMP sweep (child process {self.pid}) did not finish in time; "
                        "it was stopped. Run `wanmon -v check` to see where it stands."
                    )
                ready, _, _ = select.select([self.fd], [], [], left)
                if ready:
                    b = os.read(self.fd, 1 << 20)
                    if not b:
                        break
                    chunks.append(b)
        finally:
            os.close(self.fd)
        _, status = os.waitpid(self.pid, 0)
        try:
            outcome = pickle.loads(b"".join(chunks))
        except Exception:  # noqa: BLE001 - whatever the pipe held, the sweep is lost
            raise SweepLostError(
                f"the ICMP sweep (child process {self.pid}) ended without results ({_how(status)})"
            ) from None
        if outcome[0] == "error":
            raise outcome[1]
        return outcome[1], outcome[2], outcome[3]

    def kill(self) -> None:
        """Stop the child (ours, by its PID) and reap it."""
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _dns_cache(cfg: Config) -> dict[str, tuple[str, float]]:
    from wanmon.store import Store

    store = Store.open(cfg.store_path)
    try:
        return store.dns_cache()
    finally:
        store.close()


def _die_with(parent: int) -> None:
    """The child goes when its parent goes (Linux: PR_SET_PDEATHSIG), so a check killed
    mid-sweep leaves no orphan sending packets."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # gone before the call took effect
        os._exit(2)


def _child(w: int, addresses: list[str], cfg: Config, cache, parent: int) -> None:
    code = 0
    try:
        _die_with(parent)
        try:
            started = time.time()
            results = asyncio.run(icmp.probe(addresses, cfg.icmp, None, dns_cache=cache))
            data = pickle.dumps(("ok", started, time.time(), results), pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # noqa: BLE001 - handed to the parent, which raises it
            code = 1
            try:
                data = pickle.dumps(("error", exc), pickle.HIGHEST_PROTOCOL)
            except Exception:  # noqa: BLE001 - an exception that does not pickle
                data = pickle.dumps(("error", SweepLostError(f"the ICMP sweep failed: {exc!r}")))
        view = memoryview(data)
        while view:
            view = view[os.write(w, view) :]
    except BaseException:  # noqa: BLE001 - the child only reports
        code = 2  # the parent is gone (broken pipe): nobody to tell
    finally:
        os._exit(code)
