"""`wanmon run` with timing probes, for bench/daemon.py --diag (a diagnosis aid).

Runs wanmon's CLI exactly as `python -m wanmon ARGS` would, after wrapping a
few of wanmon's functions (the module attributes only: wanmon's files are not
touched) so that each call logs one line on the daemon's stderr:

    WARNING diag: diag fn=NAME took=S thread=THREAD      (synchronous calls)
    WARNING diag: diag job=cycle|snmp fired              (the scheduler started a job)
    WARNING diag: diag snmp probe n=N took=S              (the SNMP poll itself)

A synchronous call on thread MainThread holds the daemon's event loop (the
ICMP sweep, the scheduler) for its whole duration.  The names are those of
wanmon at the time of writing; a name that no longer exists is skipped.
"""

from __future__ import annotations

import functools
import logging
import os
import runpy
import sys
import threading
import time

log = logging.getLogger("diag")


def _timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            log.warning("diag fn=%s took=%.3f thread=%s", name, time.perf_counter() - t,
                        threading.current_thread().name)
    return wrapper


def install() -> None:
    import wanmon.cycle as cycle
    import wanmon.daemon as daemon
    import wanmon.inventory as inventory
    import wanmon.store as store

    for name in ("snmp_due", "snmp_outcomes", "last_views", "observe"):
        if hasattr(cycle, name):
            setattr(cycle, name, _timed(name, getattr(cycle, name)))
    for name in ("states", "devices", "interfaces"):
        if hasattr(store.Store, name):
            setattr(store.Store, name, _timed(f"Store.{name}", getattr(store.Store, name)))
    if hasattr(inventory.Inventory, "from_config"):
        inner = inventory.Inventory.from_config.__func__
        inventory.Inventory.from_config = classmethod(_timed("Inventory.from_config", inner))
    for job in ("cycle", "snmp"):
        orig = getattr(daemon.Daemon, job, None)
        if orig is None:
            continue

        def make(orig, job):
            @functools.wraps(orig)
            async def wrapper(self, *a, **kw):
                log.warning("diag job=%s fired", job)
                return await orig(self, *a, **kw)
            return wrapper
        setattr(daemon.Daemon, job, make(orig, job))
    if hasattr(cycle, "Peers") and hasattr(cycle, "REAL"):
        probe = cycle.REAL.snmp

        async def snmp_probe(targets, *a, **kw):
            t = time.perf_counter()
            try:
                return await probe(targets, *a, **kw)
            finally:
                log.warning("diag snmp probe n=%d took=%.3f", len(targets), time.perf_counter() - t)
        from dataclasses import replace
        cycle.REAL = replace(cycle.REAL, snmp=snmp_probe)


def main() -> None:
    # the checkout this file belongs to, as `python -m wanmon` run from it would import
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = sys.argv[1:]
    if args[:2] == ["-m", "wanmon"]:
        args = args[2:]
    install()
    sys.argv = ["wanmon", *args]
    runpy.run_module("wanmon", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
