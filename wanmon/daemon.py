"""`wanmon run`: the same cycle as `wanmon check`, on a schedule (APScheduler AsyncIOScheduler).

* a cycle at start, then every [schedule] icmp_interval_s; one at a time
  (max_instances=1, coalesce): an overrun is logged with its duration, never
  stacked;
* SNMP polls, the InfluxDB drain, alert mail and the page are parts of the
  cycle (each with its own cadence rules), retention runs with every cycle;
* SIGTERM / SIGINT: let the running cycle finish within grace_s, then exit 0;
* SIGHUP: reload sites.toml if it validates; else log why and keep the old one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time

from wanmon.config import Config, load
from wanmon.errors import ConfigError, StoreBusyError, WanmonError

logger = logging.getLogger(__name__)


def _release_memory() -> None:
    """Between cycles: hand the heap the cycle freed back to the OS.

    A cycle at 10,000 sites builds a page snapshot of ~50 MB and frees it;
    glibc keeps freed heap (in the worker thread's arena too) mapped, so the
    daemon's RSS would sit at its cycle peak. malloc_trim(0) returns it (a few
    ms). Not glibc: nothing to do."""
    import gc

    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


class Daemon:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.stopping = asyncio.Event()
        self.running: asyncio.Task | None = None
        self.cycles = 0

    async def cycle(self) -> None:
        """The scheduled job: one cycle, guarded so a failure never kills the daemon."""
        from wanmon.cycle import run_cycle

        if self.stopping.is_set():
            return
        t0 = time.monotonic()
        cfg = self.cfg
        self.running = asyncio.current_task()
        try:
            res = await run_cycle(cfg)
            self.cycles += 1
            took = time.monotonic() - t0
            counts = {}
            for o in res.observations:
                counts[o.status] = counts.get(o.status, 0) + 1
            logger.info("cycle id=%d took=%.2fs alerts_ms=%.1f %s", res.cycle_id, took, res.alerts_ms,
                        " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
            if took > cfg.schedule.icmp_interval_s:
                logger.warning("cycle overran its interval: took %.1f s, interval %.0f s (the next one is not "
                               "stacked: it runs at its next slot)", took, cfg.schedule.icmp_interval_s)
        except StoreBusyError as exc:
            logger.warning("cycle skipped: %s", exc)
        except WanmonError as exc:
            logger.error("cycle failed: %s", exc)
        except Exception:
            logger.exception("cycle failed with an internal error")
        finally:
            self.running = None
            _release_memory()

    def reload(self) -> None:
        path = self.cfg.path
        try:
            new = load(path)
        except ConfigError as exc:
            logger.error("SIGHUP: %s is invalid, keeping the configuration in use:\n%s", path, exc)
            return
        self.cfg = new
        _release_memory()
        logger.info("SIGHUP: reloaded %s (%d sites)", path, len(new.sites))

    async def serve(self) -> int:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from datetime import datetime

        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run is noise
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        sched = AsyncIOScheduler()
        interval = self.cfg.schedule.icmp_interval_s
        _release_memory()  # what loading and validating sites.toml left behind
        # misfire_grace_time: a cycle that could not start on time still runs if it is
        # at most one interval late; coalesce: missed runs collapse into one.
        sched.add_job(self.cycle, "interval", seconds=interval, next_run_time=datetime.now(),
                      max_instances=1, coalesce=True, misfire_grace_time=max(1, int(interval)), id="cycle")
        sched.start()
        logger.info("daemon started: %d sites, a cycle every %.0f s (pid %d)", len(self.cfg.sites), interval,
                    __import__("os").getpid())
        await self.stopping.wait()
        logger.info("stopping: waiting up to %.0f s for the running cycle", self.cfg.schedule.grace_s)
        sched.pause()
        task = self.running
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), self.cfg.schedule.grace_s)
            except asyncio.TimeoutError:
                logger.warning("the running cycle did not finish within grace_s=%.0f: abandoning it",
                               self.cfg.schedule.grace_s)
        sched.shutdown(wait=False)
        logger.info("stopped after %d cycles", self.cycles)
        return 0


def run(cfg: Config) -> int:
    return asyncio.run(Daemon(cfg).serve())
