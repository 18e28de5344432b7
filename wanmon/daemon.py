"""`wanmon run`: the cycle of `wanmon check` on a schedule (APScheduler AsyncIOScheduler).

Three jobs, none waiting on another:

* the cycle (the critical path: sweep, record, alerts, page) at start, then every
  [schedule] icmp_interval_s; one at a time (max_instances=1, coalesce). A cycle
  still running well past its interval (stuck: a disk, a lock) is cancelled and
  logged, so it never blocks the ones after it;
* SNMP, its own job on the same cadence: the agents that are due ([snmp]
  interval_s, back-off for agents that keep timing out) at the sites that
  answered ICMP, within [snmp] budget_s;
* publishing (InfluxDB drain, mail) after each cycle, in a thread, never two at
  once; every network operation there has a deadline (wanmon/deadline.py);
* the traces a cycle asks for (cycle.run_traces: the sites down on their own,
  a few good paths to refresh), after its page, within [trace] budget_s; never
  two at once (a cycle whose traces find the last ones still running leaves
  them to the next cycle, which asks again).

SIGTERM / SIGINT: publishing, SNMP and traces are stopped at once (points stay spooled,
mail stays queued, unpolled agents are polled next time); the running cycle may
finish within grace_s, else it is abandoned; exit 0 within grace_s whatever is in
flight. SIGHUP: reload sites.toml if it validates; else log why and keep the old one.

Wall-clock steps: the scheduler plans in wall time, so when the clock steps
(NTP after a long drift, an operator's `date -s`) the jobs are re-planned from
now instead of waiting for the clock to catch up.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import time
from datetime import datetime

from wanmon.config import Config, load
from wanmon.errors import ConfigError, StoreBusyError, WanmonError

logger = logging.getLogger(__name__)

CLOCK_STEP_S = 30.0  # a wall-clock jump larger than this (against the monotonic clock) re-plans the jobs


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


def _log_failure(job: str, exc: Exception) -> None:
    """A job's failure is logged, never fatal to the daemon."""
    if isinstance(exc, StoreBusyError):
        logger.warning("%s skipped: %s", job, exc)
    elif isinstance(exc, WanmonError):
        logger.error("%s failed: %s", job, exc)
    else:
        logger.error("%s failed with an internal error", job, exc_info=exc)


def _in_background(fn, *args, failed: str, on_error=None) -> asyncio.Future:
    """fn(*args) in a daemon thread (cycle.in_thread), never on the cycle's path: an exception
    is logged with `failed` (then on_error()), never raised into the loop."""
    from wanmon.cycle import in_thread

    async def run() -> None:
        try:
            await in_thread(fn, *args)
        except Exception:
            logger.exception(failed)
            if on_error is not None:
                on_error()

    return asyncio.ensure_future(run())


def stuck_after_s(cfg: Config) -> float:
    """When a running cycle counts as stuck: its interval, but never before its own sweep
    could have ended (count x interval_ms + timeout_ms + DNS) plus a minute for the store
    and the page."""
    ic = cfg.icmp
    sweep = (ic.count * ic.interval_ms + ic.timeout_ms + ic.dns_timeout_ms) / 1000.0
    return max(cfg.schedule.icmp_interval_s, sweep + 60.0)


class Daemon:
    def __init__(self, cfg: Config, now=time.time, peers=None):
        from wanmon.cycle import REAL

        self.cfg = cfg
        self.now = now
        self.peers = peers or REAL
        self.stopping = asyncio.Event()
        self.running: asyncio.Task | None = None  # the cycle in flight
        self.snmp_task: asyncio.Task | None = None
        self.tracing: asyncio.Task | None = None  # the last cycle's traces, in flight
        self.publishing: asyncio.Future | None = None
        self.telling: asyncio.Future | None = None  # the NOC's notice of a damaged store, in flight
        self.cycles = 0
        self.cancelled = 0
        self.last_ips: dict[str, str | None] = {}  # what the last sweep resolved: SNMP polls these
        self.last_ips_at: float | None = None  # that sweep's instant (a dated inventory's keys then)
        self.sched = None
        from wanmon.reportmail import Monthly

        self.monthly = Monthly()
        self.reporting: asyncio.Future | None = None

    # -- jobs ----------------------------------------------------------------
    async def cycle(self) -> None:
        """The scheduled cycle, guarded so a failure never kills the daemon."""
        from wanmon.cycle import run_cycle

        if self.stopping.is_set():
            return
        t0 = time.monotonic()
        cfg = self.cfg
        limit = stuck_after_s(cfg)
        self.running = asyncio.current_task()
        try:
            async with asyncio.timeout(limit):
                res = await run_cycle(cfg, now=self.now, peers=self.peers)
            self.cycles += 1
            self.last_ips, self.last_ips_at = res.ip_by_site, res.started_at
            took = time.monotonic() - t0
            counts: dict[str, int] = {}
            for o in res.observations:
                counts[o.status] = counts.get(o.status, 0) + 1
            logger.info(
                "cycle id=%d took=%.2fs page_after=%.2fs alerts_ms=%.1f %s",
                res.cycle_id,
                took,
                (res.page_ts or res.finished_at) - res.started_at,
                res.alerts_ms,
                " ".join(f"{k}={v}" for k, v in sorted(counts.items())),
            )
            if took > cfg.schedule.icmp_interval_s:
                logger.warning(
                    "cycle overran its interval: took %.1f s, interval %.0f s (the next one is not "
                    "stacked: it runs at its next slot)",
                    took,
                    cfg.schedule.icmp_interval_s,
                )
            self._start_publishing()
            self._start_tracing(res.to_trace, "page" not in res.failed)
            self._start_heartbeat(res)
            self._start_monthly_report()
        except asyncio.CancelledError:
            if not self.stopping.is_set():
                raise
            logger.info("cycle abandoned at grace_s: nothing of it was recorded")  # the store rolls it back
        except TimeoutError:
            self.cancelled += 1
            logger.error(
                "cycle stuck: still running after %.0f s (interval %.0f s): cancelled, the next one runs at its slot",
                limit,
                cfg.schedule.icmp_interval_s,
            )
        except Exception as exc:  # noqa: BLE001 - a job's failure is logged, never fatal to the daemon
            _log_failure("cycle", exc)
            self._damage_found(exc)
        finally:
            self.running = None
            _release_memory()

    async def snmp(self) -> None:
        """The SNMP job: due agents at the sites that answer ICMP, within [snmp] budget_s."""
        from wanmon.cycle import run_snmp

        # the agents enabled now (a dated inventory may turn SNMP on or off at an instant)
        if self.stopping.is_set() or not self.cfg.as_of(self.now()).snmp_specs:
            return
        self.snmp_task = asyncio.current_task()
        try:
            cycle = self.running
            if cycle is not None and not cycle.done():
                # Poll after the sweep, not during it: the sweep's send schedule and the
                # cycle's record/page share this process's CPU, and SNMP wants this
                # cycle's ICMP answers anyway.
                await asyncio.wait({cycle})
            async with asyncio.timeout(self.cfg.snmp.budget_s + 30.0):
                await run_snmp(self.cfg, now=self.now, peers=self.peers, ips=self.last_ips, ips_at=self.last_ips_at)
        except asyncio.CancelledError:
            if not self.stopping.is_set():
                raise
            logger.info("snmp job stopped: unpolled agents come first next time")
        except TimeoutError:
            logger.error("snmp job stuck past its budget (%.0f s): cancelled", self.cfg.snmp.budget_s)
        except Exception as exc:  # noqa: BLE001 - logged, never fatal to the daemon
            _log_failure("snmp job", exc)
        finally:
            self.snmp_task = None

    async def integrity(self) -> None:
        """The daily store check: damage found stops writes (store.mark_damaged) and is logged."""
        from wanmon.cycle import in_thread
        from wanmon.store import check_integrity

        if self.stopping.is_set():
            return
        t0 = time.monotonic()
        try:
            problems = await in_thread(check_integrity, self.cfg.store_path)
        except Exception as exc:  # noqa: BLE001 - logged, never fatal to the daemon
            _log_failure("integrity job", exc)
            return
        logger.info("store check %s in %.1f s", "FAILED" if problems else "ok", time.monotonic() - t0)
        if problems:
            self._damage_found(None)

    def _damage_found(self, exc: Exception | None) -> None:
        """A 'malformed' error marks the store damaged (writes stop); a damaged store is told to
        the NOC in a thread (cycle.tell_noc_of_damage: once, retried with back-off), never on
        the cycle's path."""
        import sqlite3

        from wanmon.cycle import tell_noc_of_damage
        from wanmon.errors import means_damage
        from wanmon.store import damaged, mark_damaged

        path = self.cfg.store_path
        if isinstance(exc, sqlite3.DatabaseError) and means_damage(str(exc)):
            mark_damaged(path, [str(exc)])
        mark = damaged(path)
        if mark is None or mark.get("noc_told_ts") or (self.telling is not None and not self.telling.done()):
            return  # nothing to tell, told already, or being told

        self.telling = _in_background(
            tell_noc_of_damage, self.cfg, self.now, failed="telling the NOC that the store is damaged failed"
        )

    def _start_publishing(self) -> None:
        """Publish in a thread after a cycle, unless a publish is still running (never two)."""
        from wanmon.cycle import publish

        cfg = self.cfg
        if cfg.influx is None and cfg.smtp is None:
            return
        if self.publishing is not None and not self.publishing.done():
            logger.info(
                "publish still running from an earlier cycle: this cycle's points and mail go with it or the next one"
            )
            return

        self.publishing = _in_background(publish, cfg, self.peers, failed="publish failed with an internal error")

    def _start_tracing(self, jobs, page: bool) -> None:
        """The cycle's traces on the loop, beside the next jobs (never two at once)."""
        if not jobs:
            return
        if self.tracing is not None and not self.tracing.done():
            logger.info("traces still running from an earlier cycle: the next cycle asks for these again")
            return
        self.tracing = asyncio.ensure_future(self._trace(jobs, page))

    async def _trace(self, jobs, page: bool) -> None:
        from wanmon.cycle import run_traces

        try:
            await run_traces(self.cfg, jobs, now=self.now, peers=self.peers, page=page)
        except asyncio.CancelledError:
            if not self.stopping.is_set():
                raise
            logger.info("traces stopped: the next cycles ask for them again")
        except Exception as exc:  # noqa: BLE001 - logged, never fatal to the daemon
            _log_failure("traces", exc)

    def _start_heartbeat(self, res) -> None:
        """[agent] heartbeat_url, in a thread of its own (cycle.send_heartbeat), once per recorded cycle."""
        from wanmon.cycle import send_heartbeat

        if self.cfg.agent.heartbeat_url:
            _in_background(
                send_heartbeat, self.cfg, res, self.now, failed="the heartbeat failed with an internal error"
            )

    def _start_monthly_report(self) -> None:
        """Last month's report by mail, once (wanmon.reportmail.Monthly), in a thread."""
        from wanmon.reportmail import RETRY_S

        cfg, now = self.cfg, self.now()
        if (self.reporting is not None and not self.reporting.done()) or not self.monthly.due(cfg, now):
            return

        def retry_later() -> None:
            self.monthly.next_try = now + RETRY_S

        self.reporting = _in_background(
            self.monthly.run, cfg, now, failed="monthly report failed with an internal error", on_error=retry_later
        )

    # -- signals -------------------------------------------------------------
    def reload(self) -> None:
        path = self.cfg.path
        try:
            new = load(path)
        except ConfigError as exc:
            logger.error("SIGHUP: %s is invalid, keeping the configuration in use:\n%s", path, exc)
            return
        self.cfg = new
        _release_memory()
        logger.info("SIGHUP: reloaded %s (%d sites in service)", path, len(new.as_of(self.now()).sites))

    async def _watch_clock(self) -> None:
        """Re-plan the jobs when the wall clock steps (see the module docstring)."""
        offset = time.time() - time.monotonic()
        while not self.stopping.is_set():
            try:
                await asyncio.wait_for(self.stopping.wait(), 2.0)
            except TimeoutError:
                pass
            new = time.time() - time.monotonic()
            if abs(new - offset) > CLOCK_STEP_S and self.sched is not None:
                logger.warning("the wall clock stepped by %+.0f s: re-planning the jobs from now", new - offset)
                for job in self.sched.get_jobs():
                    job.modify(next_run_time=datetime.now().astimezone())
            offset = new

    async def serve(self) -> int:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per job run is noise
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.sched = sched = AsyncIOScheduler()
        interval = self.cfg.schedule.icmp_interval_s
        _release_memory()  # what loading and validating sites.toml left behind
        # misfire_grace_time: a cycle that could not start on time still runs if it is
        # at most one interval late; coalesce: missed runs collapse into one.
        start = datetime.now().astimezone()
        sched.add_job(
            self.cycle,
            "interval",
            seconds=interval,
            next_run_time=start,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(interval)),
            id="cycle",
        )
        # SNMP a moment after each cycle starts, so it sees that cycle's ICMP answers
        from datetime import timedelta

        snmp_offset = min(
            interval / 2, (self.cfg.icmp.count * self.cfg.icmp.interval_ms + self.cfg.icmp.timeout_ms) / 1000.0 + 1.0
        )
        sched.add_job(
            self.snmp,
            "interval",
            seconds=interval,
            next_run_time=start + timedelta(seconds=snmp_offset),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(interval)),
            id="snmp",
        )
        # The store's integrity, daily (PRAGMA quick_check, in a thread: ~2.6 s for 86 MB here)
        sched.add_job(
            self.integrity,
            "interval",
            hours=24,
            next_run_time=start + timedelta(minutes=10),
            max_instances=1,
            coalesce=True,
            id="integrity",
        )
        sched.start()
        clock = asyncio.ensure_future(self._watch_clock())
        logger.info(
            "daemon started: %d sites in service, a cycle every %.0f s (pid %d)",
            len(self.cfg.as_of(self.now()).sites),
            interval,
            os.getpid(),
        )
        await self.stopping.wait()
        await self._stop(sched)
        clock.cancel()
        logger.info("stopped after %d cycles", self.cycles)
        return 0

    async def _stop(self, sched) -> None:
        """Exit within grace_s whatever is in flight (see the module docstring)."""
        from wanmon.deadline import abort_all

        grace = self.cfg.schedule.grace_s
        # Leave time to exit after the wait (tasks cancelled, the interpreter torn down: about
        # 0.3-0.7 s with a 10,000-site heap), so the process is gone within grace_s.
        t_end = time.monotonic() + grace - min(1.0, grace / 4)
        sched.pause()
        # Publishing, SNMP and traces stop now: nothing is lost (spool, outbox, next poll, next plan).
        for task in (self.snmp_task, self.tracing):
            if task is not None and not task.done():
                task.cancel()
        aborted = abort_all()
        if self.publishing is not None and not self.publishing.done():
            logger.info(
                "stopping: publishing interrupted (%d network operations aborted; points stay spooled, "
                "mail stays queued)",
                aborted,
            )
        task = self.running
        if task is not None and not task.done():
            logger.info("stopping: waiting up to %.0f s for the running cycle", grace)
            try:
                await asyncio.wait_for(asyncio.shield(task), max(0.0, t_end - time.monotonic()))
            except TimeoutError:
                logger.warning("the running cycle did not finish within grace_s=%.0f: abandoning it", grace)
                task.cancel()
        for fut in (self.publishing, self.snmp_task, self.tracing):
            if fut is not None and not fut.done():
                try:
                    await asyncio.wait_for(asyncio.shield(fut), max(0.0, min(1.0, t_end - time.monotonic())))
                except (TimeoutError, asyncio.CancelledError):
                    pass
        sched.shutdown(wait=False)


def run(cfg: Config) -> int:
    return asyncio.run(Daemon(cfg).serve())
