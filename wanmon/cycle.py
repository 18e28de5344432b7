"""One cycle, the single code path behind `wanmon check` (cron) and `wanmon run` (daemon).

A cycle has a critical path and tails. The critical path is what the people
reading the page and the mail depend on, and it never waits on a peer we do not
control:

    sweep (names resolve alongside, under their own deadline)
      -> record -> evaluate alerts (mail queued in the same transaction)
      -> write the page -> release the cycle lock (`<store>.lock`)

The tails come after, each under its own lock and budget, so a slow peer never
holds the next cycle back (a cron run started meanwhile records its own cycle):

* SNMP (`run_snmp`, lock `<store>.snmp.lock`): the due agents of the sites
  that answered ICMP, within `[snmp] budget_s`; agents that keep timing out
  back off; the page is written again with what came back. Reboots it sees
  reach the alerts of the next cycle.
* publishing (`publish`, lock `<store>.publish.lock`, never two at once): the
  InfluxDB drain within `drain_budget_s` and mail delivery within its budget,
  every network operation under a deadline enforced while it runs
  (wanmon/deadline.py).
* traces (`run_traces`, lock `<store>.trace.lock`): the paths the cycle's plan
  asks for (wanmon.trace.plan: each site down on its own whose incident has no
  path yet, then a few good paths to refresh), all within `[trace] budget_s`;
  the outage paths are kept with their incidents and the page is written again.

`now` (wall clock) and the peers (`Peers`: ICMP, SNMP, InfluxDB, SMTP) are
parameters, so cycle, alert and scheduling logic is tested without sleeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from wanmon import account, outputs
from wanmon.account import held_s
from wanmon.alerts.engine import evaluate
from wanmon.alerts.mail import compose
from wanmon.alerts.maintenance import sites_in_maintenance
from wanmon.config import Config, InfluxSpec, Site
from wanmon.dated import instant
from wanmon.devices import derive
from wanmon.errors import StoreBusyError, WanmonError
from wanmon.inventory import Inventory
from wanmon.lineproto import agent_point, cycle_points, site_tags, snmp_points
from wanmon.model import AlertUpdate, DeviceState, Observation, OutagePath, SnmpOutcome, Trace, TraceJob
from wanmon.probes import icmp, snmp
from wanmon.status import DOWN, REACHABLE, icmp_status, with_parents
from wanmon.store import CycleLock, PublishLock, SnmpLock, Store, TraceLock
from wanmon.trace import Names, Pacer, plan, stops_of, trace

logger = logging.getLogger(__name__)

Now = Callable[[], float]


def _drain(store, spec, budget_s):
    from wanmon.sink import drain

    return drain(store, spec, budget_s)


def _deliver(store, spec, budget_s):
    from wanmon.mailer import deliver

    return deliver(store, spec, budget_s)


@dataclass(frozen=True, slots=True)
class Peers:
    """The network behind small interfaces (tests pass fakes; the defaults are the real ones).

    icmp(addresses, spec, progress, dns_cache) -> [IcmpResult]      async
    snmp(targets, max_concurrency, budget_s) -> [SnmpResult | None]   async
    trace(address, trace_spec, mode, dns_timeout_s, budget_s) -> Trace  async
    drain(store, influx_spec, budget_s) -> report             blocking, deadline-bound
    deliver(store, smtp_spec, budget_s) -> report             blocking, deadline-bound
    """

    icmp: Callable = icmp.probe
    snmp: Callable = snmp.probe
    drain: Callable = _drain
    deliver: Callable = _deliver
    trace: Callable = trace


REAL = Peers()
MAIL_BUDGET_S = 30.0  # one delivery run at most


@dataclass(frozen=True, slots=True)
class SnmpView:
    """A site's SNMP figures as `check --json` shows them."""

    status: str  # ok | timeout | auth_error | error (polled now) | not_due | not_polled | disabled
    reason: str | None = None
    device: DeviceState | None = None  # this poll's outcome, or the last one


@dataclass(frozen=True, slots=True)
class CycleResult:
    cycle_id: int
    started_at: float
    finished_at: float
    observations: tuple[Observation, ...]
    ip_by_site: dict[str, str | None]
    snmp: dict[str, SnmpView] = field(default_factory=dict)
    mails: tuple = ()  # alert mails composed this cycle (alerts.mail.Mail)
    alerts_ms: float = 0.0  # time spent evaluating alerts and composing mail
    page_ts: float | None = None  # when the page was written (wall clock)
    failed: dict[str, str] = field(default_factory=dict)  # outputs that failed in this cycle: {name: why}
    to_trace: tuple[TraceJob, ...] = ()  # the traces this cycle asks for (run_traces), after its page

    def __repr__(self) -> str:
        # Short: asyncio.run's SIGINT bookkeeping reprs the main task, result included
        # (signal.getsignal -> Handlers(partial) -> "%r is not a valid"), and the full
        # dataclass repr of 10,000 observations cost 0.3 s at the end of every check.
        return (
            f"CycleResult(cycle_id={self.cycle_id}, sites={len(self.observations)}, "
            f"mails={len(self.mails)}, page_ts={self.page_ts})"
        )


# -- pure parts ---------------------------------------------------------------


def observe(cfg: Config, inv: Inventory, results: list[icmp.IcmpResult], ts: float) -> list[Observation]:
    """Results -> per-site observations with their status (pure)."""
    own = {s.id: icmp_status(r, cfg.thresholds) for s, r in zip(cfg.sites, results)}
    final = with_parents(own, inv.by_id)
    out = []
    for s, r in zip(cfg.sites, results):
        reason = r.reason
        if final[s.id] == "unreachable":
            reason = f"parent '{s.parent}' is down" + (f"; {reason}" if reason else "")
        out.append(
            Observation(
                site_id=s.id,
                name=s.name,
                level=s.level,
                district=s.district,
                address=s.address,
                ts=ts,
                status=final[s.id],
                reason=reason,
                sent=r.sent,
                received=r.received,
                loss_pct=r.loss_pct,
                rtt_min_ms=r.rtt_min_ms,
                rtt_avg_ms=r.rtt_avg_ms,
                rtt_max_ms=r.rtt_max_ms,
                jitter_ms=r.jitter_ms,
            )
        )
    return out


def backoff_s(dev: DeviceState | None, interval_s: float, max_backoff_s: float) -> float:
    """How long after its last poll an agent is due again (pure).

    The interval, until an agent keeps timing out: from the second timeout in a
    row the wait doubles (2x, 4x ... the interval, at least 60 s) up to
    max_backoff_s (an hour). A timeout is what costs the poll time; an auth error
    or a refusal answers at once and keeps the interval."""
    if dev is None or dev.status != "timeout" or dev.fail_streak < 2:
        return interval_s
    base = max(interval_s, 60.0)
    return max(interval_s, min(base * 2 ** (dev.fail_streak - 1), max_backoff_s))


def snmp_due(
    cfg: Config, devices: dict[str, DeviceState], now: float, reachable: set[str] | None = None, force: bool = False
) -> list[Site]:
    """Sites to poll now, the longest-waiting first (pure).

    Due = never polled, or backoff_s() has passed since the last poll. A little
    slack (5% of the interval, at most 15 s) keeps a cron job that runs every
    minute with interval_s = 300 on every fifth run despite start jitter.
    When the wall clock went back past a last poll (a clock step), that agent is
    due now rather than frozen until the clock catches up.
    reachable: only these sites (they answered ICMP); force: every enabled site,
    backed off or not (`inventory --refresh`)."""
    due: list[tuple[float, Site]] = []
    for s in cfg.sites:
        spec = cfg.snmp_specs.get(s.id)
        if spec is None or (reachable is not None and s.id not in reachable):
            continue
        last = devices.get(s.id)
        if force or last is None:
            due.append((float("-inf") if last is None else last.last_poll_ts, s))
            continue
        wait = backoff_s(last, spec.interval_s, cfg.snmp.max_backoff_s)
        slack = min(15.0, 0.05 * spec.interval_s)
        clock_went_back = last.last_poll_ts > now + slack
        if clock_went_back or now - last.last_poll_ts >= wait - slack:
            due.append((last.last_poll_ts, s))
    due.sort(key=lambda t: t[0])
    return [s for _, s in due]


def snmp_outcomes(
    cfg: Config,
    devices: dict[str, DeviceState],
    prev_ifs: dict,
    polled: list[Site],
    results: list[snmp.SnmpResult | None],
) -> tuple[list[SnmpOutcome], dict[str, SnmpView]]:
    """Poll results -> what the store records and what the CLI shows (rates, reboots, events).
    A None result (not reached within the budget) records nothing."""
    outcomes, views = [], {}
    for site, res in zip(polled, results):
        if res is None:
            views[site.id] = SnmpView("not_polled", "the poll's budget ran out first", devices.get(site.id))
            continue
        spec = cfg.snmp_specs[site.id]
        dev, ifs, events = derive(site.id, devices.get(site.id), prev_ifs.get(site.id, {}), res, spec.uplink)
        outcomes.append(SnmpOutcome(dev, ifs, events))
        views[site.id] = SnmpView(res.status, res.reason, dev)
        if not res.ok:  # -vv: the poll's summary line (run_snmp) counts them at -v
            logger.debug("snmp site=%s status=%s reason=%s streak=%d", site.id, res.status, res.reason, dev.fail_streak)
        for e in events:
            logger.info("event site=%s kind=%s detail=%s", e.site_id, e.kind, e.detail)
    return outcomes, views


def last_views(cfg: Config, devices: dict[str, DeviceState]) -> dict[str, SnmpView]:
    """Each site's SNMP as last recorded (not polled by this run)."""
    out = {}
    for s in cfg.sites:
        dev = devices.get(s.id)
        if s.id not in cfg.snmp_specs:
            out[s.id] = SnmpView("disabled")
        elif dev is not None and dev.status == "timeout" and dev.fail_since is not None:
            out[s.id] = SnmpView(
                "not_due",
                f"no SNMP answer since {time.strftime('%Y-%m-%d %H:%M', time.localtime(dev.fail_since))}"
                f" ({dev.fail_streak} poll{'' if dev.fail_streak == 1 else 's'} in a row); polled again later",
                dev,
            )
        else:
            out[s.id] = SnmpView("not_due", None, dev)
    return out


# -- threads that never hold the process --------------------------------------


async def in_thread(fn: Callable, *args):
    """Run blocking fn(*args) in a daemon thread and await it.

    Unlike asyncio.to_thread (the default executor, joined at exit), a daemon
    thread never keeps `wanmon run` from exiting at grace_s on SIGTERM."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def settle(result, exc) -> None:
        if not fut.done():
            fut.set_exception(exc) if exc is not None else fut.set_result(result)

    def work() -> None:
        try:
            result, exc = fn(*args), None
        except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
            result, exc = None, e
        try:
            loop.call_soon_threadsafe(settle, result, exc)
        except RuntimeError:
            pass  # the loop is gone (the daemon stopped): nobody waits for this any more

    threading.Thread(target=work, name=getattr(fn, "__name__", "work"), daemon=True).start()
    return await fut


class _Held:
    """A step's lock and open store, which its last blocking part takes over.

    A task awaiting a thread can be cancelled (a stuck cycle, SIGTERM at grace_s)
    while the thread goes on writing: closing the store then would pull SQLite
    from under it. So the last part runs in a thread that closes the store and
    releases the lock itself when it is done; before that, the task closes them."""

    def __init__(self, lock: CycleLock):
        self.lock = lock
        self.store: Store | None = None
        self.handed = False

    async def open(self, path) -> Store:
        self.store = await in_thread(Store.open, path, True)
        return self.store

    async def finish_in_thread(self, fn: Callable, *args):
        self.handed = True

        def last_part():
            try:
                return fn(*args)
            finally:
                self._close()

        return await in_thread(last_part)

    def _close(self) -> None:
        if self.store is not None:
            self.store.close()
        self.lock.__exit__(None, None, None)

    def close_unless_handed(self) -> None:
        if not self.handed:
            self._close()


# -- the critical path --------------------------------------------------------


def run_check(
    cfg: Config,
    progress: icmp.Progress | None = None,
    dry_run: bool = False,
    *,
    now: Now = time.time,
    peers: Peers = REAL,
    snmp_tail: bool = True,
    publish_tail: bool = True,
) -> CycleResult:
    """`wanmon check`: the critical path, then the SNMP tail, then publishing (outside the cycle lock).
    Raises WanmonError subclasses for the operator."""

    async def main() -> CycleResult:
        res = await run_cycle(cfg, progress, dry_run, now=now, peers=peers)
        # The tails run side by side (SNMP in the loop, publishing in a thread): a check
        # lasts about the longest budget, not their sum. Points the SNMP tail spools go
        # with the next drain.
        sending = asyncio.ensure_future(in_thread(publish, cfg, peers, dry_run)) if publish_tail else None
        beating = (
            asyncio.ensure_future(in_thread(send_heartbeat, cfg, res, now))
            if cfg.agent.heartbeat_url and not dry_run
            else None
        )
        # the traces run on this loop beside the SNMP poll (both mostly wait on the network)
        tracing = (
            asyncio.ensure_future(run_traces(cfg, res.to_trace, now=now, peers=peers, page="page" not in res.failed))
            if res.to_trace
            else None
        )
        try:
            if snmp_tail and not dry_run:
                views = await run_snmp(cfg, now=now, peers=peers, ips=res.ip_by_site, ips_at=res.started_at)
                if views is not None:
                    res = _with_snmp(res, views)
        finally:
            for fut in (tracing, sending, beating):
                if fut is not None:
                    await fut
        return res

    return asyncio.run(main())


def _with_snmp(res: CycleResult, views: dict[str, SnmpView]) -> CycleResult:
    return dataclasses.replace(res, snmp={**res.snmp, **views})


async def run_cycle(
    cfg: Config,
    progress: icmp.Progress | None = None,
    dry_run: bool = False,
    *,
    now: Now = time.time,
    peers: Peers = REAL,
) -> CycleResult:
    """The critical path, inside a running event loop: sweep, record, alerts, page; then the
    cycle lock is released. No peer is waited on here (see the module docstring)."""
    if peers.icmp is icmp.probe:  # fail on a missing ICMP permission before anything is written
        icmp.open_sockets(cfg.icmp.mode, {socket.AF_INET}).popitem()[1].close()
    held = _Held(CycleLock(cfg.store_path).__enter__())
    try:
        store = await held.open(cfg.store_path)
        started = now()
        # the sites in service at the cycle's instant, with their keys then (a dated inventory):
        # sweep, parents, alert routing, tags and the page all follow them
        cfg = cfg.as_of(started)
        inv = Inventory.from_config(cfg)
        results = await _sweep(cfg, store, progress, peers)
        finished = now()
        result = await held.finish_in_thread(_record, cfg, inv, store, started, finished, results, dry_run, now)
    finally:
        held.close_unless_handed()
    logger.info(
        "cycle id=%d sites=%d duration_ms=%.0f page_after_ms=%.0f",
        result.cycle_id,
        len(result.observations),
        (finished - started) * 1000,
        ((result.page_ts or finished) - started) * 1000,
    )
    return result


async def _sweep(cfg: Config, store: Store, progress, peers: Peers) -> list[icmp.IcmpResult]:
    """The sweep; host names resolve alongside it, a silent DNS falls back to the last good address."""
    return await peers.icmp([s.address for s in cfg.sites], cfg.icmp, progress, dns_cache=store.dns_cache())


def _record(
    cfg: Config, inv: Inventory, store: Store, started: float, finished: float, icmp_results, dry_run: bool, now: Now
) -> CycleResult:
    obs = observe(cfg, inv, icmp_results, started)
    ips = {s.id: r.ip for s, r in zip(cfg.sites, icmp_results)}
    if dry_run:  # what this cycle would record and send; the store stays as it was
        update = _alerts(cfg, store, obs, finished, dry_run)
        return CycleResult(
            0,
            started,
            finished,
            tuple(obs),
            ips,
            last_views(cfg, store.devices()),
            tuple(update.mails) if update else (),
        )
    # once, after an upgrade from a store without status runs: its history rebuilt from the raw samples
    # (a window given by district covers the sites of that district at each sample's time)
    store.rebuild_runs(
        cfg.run_cap_s, started, (lambda ts: sites_in_maintenance(cfg.as_of(ts), ts)) if cfg.maintenance else None
    )
    points: Sequence[str] = ()
    limits: tuple[int, float] | None = None
    starts = store.recent_starts(account.CADENCE_CYCLES)
    cadence = account.cadence_s([*starts, started])
    cap = account.cap_s(cfg.schedule.icmp_interval_s, cadence)
    if slow := account.slow_cadence_note(cfg.schedule.icmp_interval_s, cadence, cfg.path):
        logger.warning("%s", slow)
    if cfg.influx is not None:
        prev = store.previous_cycles()
        points = cycle_points(
            obs,
            (),
            _agent_fields(cfg, store, started, finished, obs),
            socket.gethostname(),
            started,
            v1=cfg.influx.settings.api == "v1",
            prev=prev,
            cap_s=cap,
            agent_id=cfg.agent.id,
            parents={s.id: s.parent for s in cfg.sites},
            cuts=held_pieces(cfg, prev, obs, started, starts[-1] if starts else None, cap),
        )
        limits = _spool_limits(cfg.influx)
    t_alerts = time.perf_counter()
    alert_update = _alerts(cfg, store, obs, finished, dry_run)
    alerts_ms = (time.perf_counter() - t_alerts) * 1000
    cycle_id = store.record_cycle(
        started,
        finished,
        obs,
        (),
        points,
        limits,
        alert_update,
        maintenance=sites_in_maintenance(cfg, started),
        run_cap_s=cap,
        cadence_s=cadence,
    )
    _remember_addresses(cfg, store, icmp_results, finished)
    # The cycle is recorded: from here on, outputs (wanmon.outputs), each failing alone.
    page_ts: list[float] = []
    failed = {}
    if cfg.page.source == "store":  # from InfluxDB: the publishing tail writes it, after the drain
        _, err = outputs.attempt(
            store,
            cfg,
            "page",
            write_page,
            cfg,
            store,
            now=now,
            on_html=lambda: page_ts.append(now()),
            states=store.written_states,
        )
        if err is not None:
            failed["page"] = err
    # after the page: the plan of traces, deleting old samples and checkpointing the WAL are nobody's wait
    to_trace = _trace_plan(cfg, store, ips, finished)
    _warn_same_hosts(cfg, icmp_results)
    store.apply_retention(finished, cfg.store.retention_raw_days, cfg.store.retention_rollup_days)
    store.checkpoint()
    return CycleResult(
        cycle_id,
        started,
        finished,
        tuple(obs),
        ips,
        last_views(cfg, store.devices()),
        tuple(alert_update.mails) if alert_update else (),
        alerts_ms,
        page_ts[0] if page_ts else None,
        failed,
        to_trace,
    )


def held_pieces(
    cfg: Config,
    prev: dict[str, tuple[str, float, int]],
    obs: Sequence[Observation],
    started: float,
    prev_start: float | None,
    cap: float,
) -> dict[str, list[tuple[dict[str, str | None], float, float]]]:
    """The previous holds that a dated inventory cuts (pure): {site_id: [(tags, from, to)]} for
    each site whose tags changed, or whose service ended, between its last cycle and this one.

    A point's prev_*_s fields tell how long the site's previous cycle held, but the point carries
    the tags of its own instant: across a change the time before it would be counted under the
    new tags. lineproto.cycle_points writes each piece under the tags valid then, so InfluxQL
    grouped by "district" gives the report's `--grouping then`, also for a period that ends at the
    change. A retired site's last hold is written once, by the first cycle after it left service
    (up to then; no point after it). Nothing to do (one lookup) for an undated inventory or when
    no instant lies between two cycles; a site absent from the cycle before (left out of the
    config for a while) keeps its hold under its tags now."""
    tl = cfg.timeline
    if not tl.dated or prev_start is None:
        return {}
    changed = tl.changed(prev_start - cap, started)
    if not changed:
        return {}
    agent = cfg.agent.id
    now = cfg.at(started)
    seen = {o.site_id for o in obs}
    out = {}
    for sid, instants in changed.items():
        p = prev.get(sid)
        if p is None:
            continue
        last = p[1]
        end = last + held_s(last, started, cap)
        if sid in seen:
            if not any(last < t < end for t in instants):
                continue  # its hold lies wholly on one side of its instants
            keep = now.by_id[sid]
            tags = site_tags(sid, keep, agent, keep.parent)
        else:
            retired = tl.base_by_id[sid].retired_at
            if retired is None or not prev_start < instant(retired) <= started:
                continue  # out of service before the cycle before: closed then
            tags = None
        cut = [(site_tags(sid, s, agent, s.parent), a, b) for a, b, s in tl.pieces(sid, last, end)]
        if tags is None or any(t != tags for t, _, _ in cut):
            out[sid] = cut
    return out


def _warn_same_hosts(cfg: Config, icmp_results) -> None:
    """Two sites that resolved to one host (e.g. 'localhost' and '127.0.0.1') are one router
    counted twice. Literal duplicates are config errors; names are only known here."""
    by_ip: dict[str, list[str]] = {}
    for s, r in zip(cfg.sites, icmp_results):
        if r.ip:
            by_ip.setdefault(r.ip, []).append(s.id)
    for ip, ids in by_ip.items():
        if len(ids) > 1:
            logger.warning(
                "sites %s are the same host (%s): one router counted %d times; check their addresses in %s",
                ", ".join(f"'{i}'" for i in ids),
                ip,
                len(ids),
                cfg.path,
            )


def _remember_addresses(cfg: Config, store: Store, results, now: float) -> None:
    """Host names that resolved this cycle: their last good address (used when DNS is silent)."""
    store.dns_cache_update(icmp.dns_updates(results), now)


def _spool_limits(spec: InfluxSpec) -> tuple[int, float]:
    st = spec.settings
    return st.spool_max_points, st.spool_max_age_h * 3600


_PAGE_LOCK = threading.Lock()


def write_page(cfg: Config, store: Store, on_html: Callable[[], None] | None = None, states=None) -> None:
    """Render the status page from what is recorded; the cycle stays recorded if this fails.

    One render at a time in a process (the daemon's cycle and SNMP job both write it):
    two at once would double the peak memory (~50 MB each at 10,000 sites) for nothing,
    since the later one reads everything the earlier one would show."""
    from wanmon.page import write_page as _write

    try:
        with _PAGE_LOCK:
            _write(cfg, store, on_html=on_html, states=states)
    except OSError as exc:
        from wanmon.errors import os_cause

        raise PageError(f"the status page could not be written: {os_cause(exc)} ([page] out_dir)") from None


class PageError(WanmonError):
    pass


def _agent_fields(cfg: Config, store: Store, started: float, finished: float, obs) -> dict[str, object]:
    """The agent's own metrics for this cycle (wanmon_agent): its heartbeat. role and interval_s let
    a reader tell a primary from a standby and a fresh heartbeat from a stale one."""
    counts = Counter(o.status for o in obs)
    spool = store.spool_stats()
    return {
        "cycle_ms": (finished - started) * 1000.0,
        "sites": len(obs),
        **{k: counts.get(k, 0) for k in ("up", "degraded", "down", "unreachable", "unknown")},
        "spool_points": int(spool["points"]),
        "spool_dropped": int(spool["dropped"]),
        "role": cfg.agent.role,
        "interval_s": float(cfg.schedule.icmp_interval_s),
        **(_mail_fields(store) if cfg.smtp is not None else {}),
    }


def _mail_fields(store: Store) -> dict[str, object]:
    """The heartbeat's proof that this agent's mail gets out (read by a standby, wanmon.agents):
    its last delivery run that worked, since when it fails (0: it works), runs failed in a row,
    mail waiting in the outbox. As of the last publishing run (the one before this cycle)."""
    h = outputs.health(store).get("mail") or outputs.Health()
    out: dict[str, object] = {
        "mail_failing_since": float(h.failing_since or 0.0),
        "mail_failures": int(h.failures),
        "mail_queued": int(store.outbox_summary(0.0)["queued"]),
    }
    if h.ok_ts is not None:
        out["mail_ok_ts"] = float(h.ok_ts)
    return out


def _alerts(cfg: Config, store: Store, obs, now: float, dry_run: bool) -> AlertUpdate | None:
    """Evaluate the alert state machines for this cycle; compose the mails (queued with the cycle).
    Reboots are the SNMP events recorded since the last evaluation (by the SNMP job or tail)."""
    if not cfg.alerts.enabled:
        return None
    states, guard = store.alert_states()
    reboots, events_seen = store.reboots_after()
    new_states, notes, guard = evaluate(
        states,
        {o.site_id: o.status for o in obs},
        now,
        cfg.alerts,
        {s.id: s.parent for s in cfg.sites},
        sites_in_maintenance(cfg, now),
        reboots,
        guard,
    )
    mails = compose(
        cfg,
        notes,
        now,
        {o.site_id: (o.rtt_avg_ms, o.loss_pct) for o in obs} if notes else None,
        _told_paths(cfg, store, notes) if notes else None,
    )
    for n in notes:
        logger.info("alert kind=%s site=%s", n.kind, n.site_id)
    status = "dry-run" if dry_run else ("queued" if cfg.smtp is not None else "unsent")
    if mails and cfg.smtp is None and not dry_run:
        logger.warning(
            "%d alert mail(s) not sent: no [smtp] table in %s (they are listed by `wanmon alerts`)",
            len(mails),
            cfg.path,
        )
    # Only the states this cycle changed are written: a site up for a while keeps the same state
    # (10,000 JSON rows rewritten every cycle cost 0.1 s of the page's path at 10,000 sites).
    changed = {sid: st for sid, st in new_states.items() if states.get(sid) != st}
    return AlertUpdate(changed, guard, mails, status, events_seen)


def _told_paths(cfg: Config, store: Store, notes) -> dict[str, tuple[float, str]]:
    """{site: (when it was traced, where its path stops)} for the DOWN notices (and reminders) of
    sites whose incident has an outage path already (run_traces, after its first down cycle);
    none for the others: a mail never waits for a trace."""
    ids = {n.site_id for n in notes if n.kind in ("down", "reminder") and n.status == DOWN and n.site_id}
    paths = store.current_outage_paths(ids) if ids else {}
    if not paths:
        return {}
    names = Names.of(cfg, store.dns_cache())
    out = {}
    for sid, o in paths.items():
        text = stops_of(cfg.page.language, o.trace, o.good_hops, names)
        if text is not None:
            out[sid] = (o.trace.ts, text)
    return out


# -- traces, off the critical path --------------------------------------------


def _trace_plan(cfg: Config, store: Store, ips: dict[str, str | None], now: float) -> tuple[TraceJob, ...]:
    """The traces this cycle asks for (wanmon.trace.plan), from the states it just wrote: two
    small reads (the good paths' times; the outage paths of the sites down), nothing more."""
    spec = cfg.trace
    states = store.written_states or []
    down = [st.site_id for st in states if st.status == DOWN] if spec.on_outage else []
    if not down and spec.refresh_h == 0:
        return ()
    traced = store.outage_traced(down) if down else set()
    good = store.good_path_ts() if spec.refresh_h > 0 else {}
    return tuple(plan(spec, states, ips, good, traced, now, cfg.schedule.icmp_interval_s))


async def run_traces(
    cfg: Config, jobs: Sequence[TraceJob], *, now: Now = time.time, peers: Peers = REAL, page: bool = True
) -> list[Trace | None] | None:
    """Trace what a cycle's plan asks for, all within [trace] budget_s: the traces run at once,
    their probes paced together at the sweep's [icmp] rate_pps (each trace's own gap_ms apart),
    every one ends by the budget's end. The
    outage paths are kept with their incidents (with the length of the site's good path then),
    the paths that reach as good paths, and the page is written again when an outage path was
    kept (page: unless the cycle's own page failed: it would fail again, counted twice). None
    when another process is tracing on this store (these are asked again next cycle)."""
    if not jobs:
        return []
    if peers.trace is REAL.trace and peers.icmp is not REAL.icmp:
        # Real traces only to what a real sweep probed: beside a fake sweep (the tests' seams)
        # the addresses are names for a network that does not exist, never to be sent to.
        logger.debug("traces skipped: the sweep is not the real one")
        return []
    cfg = cfg.as_of(now())
    try:
        held = _Held(TraceLock(cfg.store_path).__enter__())
    except StoreBusyError as exc:
        logger.info("traces skipped: %s", exc)
        return None
    try:
        spec = cfg.trace
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pacer = Pacer(cfg.icmp.rate_pps)

        async def one(job: TraceJob) -> Trace | None:
            try:
                return await peers.trace(
                    job.address, spec, cfg.icmp.mode, cfg.icmp.dns_timeout_ms / 1000.0, spec.budget_s, pacer=pacer
                )
            except WanmonError as exc:  # a missing permission (the sweep had it: a changed setup)
                logger.warning("trace site=%s not traced: %s", job.site_id, exc)
                return None

        traces = await asyncio.gather(*(one(j) for j in jobs))
        store = await held.open(cfg.store_path)
        kept = await held.finish_in_thread(_record_traces, cfg, store, jobs, traces, page)
        logger.info(
            "traces outage=%d refresh=%d reached=%d kept_outage=%d took=%.2fs",
            sum(j.why == "outage" for j in jobs),
            sum(j.why == "refresh" for j in jobs),
            sum(t is not None and t.reached for t in traces),
            kept,
            loop.time() - t0,
        )
        return traces
    finally:
        held.close_unless_handed()


def _record_traces(
    cfg: Config, store: Store, jobs: Sequence[TraceJob], traces: Sequence[Trace | None], page: bool
) -> int:
    """Keep the traces (Store.record_traces); the page again when an outage path was kept."""
    goods = store.good_paths([j.site_id for j in jobs if j.why == "outage"])
    outages, good = [], {}
    for job, t in zip(jobs, traces):
        if t is None:
            continue
        if t.reached:
            good[job.site_id] = t
        if job.why == "outage" and job.start_ts is not None:
            g = goods.get(job.site_id)
            outages.append(OutagePath(job.site_id, job.start_ts, t, len(g.hops) if g else None, g.ts if g else None))
    store.record_traces(outages, good)
    if outages:
        names = Names.of(cfg, store.dns_cache())
        for o in outages:
            logger.info(
                "outage path site=%s hops=%d: %s",
                o.site_id,
                len(o.trace.hops),
                stops_of("en", o.trace, o.good_hops, names) or "the path reached it",
            )
        if page and cfg.page.source == "store":
            outputs.attempt(store, cfg, "page", write_page, cfg, store)
    return len(outages)


# -- SNMP, off the critical path ----------------------------------------------


def _targets(sites: list[Site], cfg: Config, ips: dict[str, str | None] | None) -> list[snmp.SnmpTarget]:
    """Poll the address ICMP resolved this cycle when there is one (no second DNS lookup)."""
    ips = ips or {}
    return [snmp.SnmpTarget(ips.get(s.id) or s.address.strip("[]"), cfg.snmp_specs[s.id]) for s in sites]


async def run_snmp(
    cfg: Config,
    *,
    now: Now = time.time,
    peers: Peers = REAL,
    force: bool = False,
    ips: dict[str, str | None] | None = None,
    page: bool = True,
    ips_at: float | None = None,
) -> dict[str, SnmpView] | None:
    """Poll the due SNMP agents of the sites that answered ICMP in the last cycle (all enabled
    sites with force), within [snmp] budget_s; record outcomes and their points, write the page.
    ips: the addresses the cycle that started at ips_at resolved. None when another SNMP poll
    holds the lock (this one is skipped)."""
    view = cfg.as_of(now())  # the sites in service now, with their SNMP settings then
    if ips and ips_at is not None and cfg.as_of(ips_at) is not view:
        ips = None  # resolved under the keys before a change (an address may differ now): resolve again
    cfg = view
    if not cfg.snmp_specs:
        return {}
    try:
        held = _Held(SnmpLock(cfg.store_path).__enter__())
    except StoreBusyError as exc:
        logger.info("snmp skipped: %s", exc)
        return None
    try:
        store = await held.open(cfg.store_path)
        devices = store.devices()
        reachable = None if force else {st.site_id for st in store.states() if st.status in REACHABLE}
        t = now()
        polled = snmp_due(cfg, devices, t, reachable, force)
        views = last_views(cfg, devices)
        for sid in set(cfg.snmp_specs) - (reachable if reachable is not None else set(cfg.snmp_specs)):
            views[sid] = SnmpView("not_polled", "no ICMP reply: SNMP is not polled this cycle", devices.get(sid))
        if not polled:
            logger.debug("snmp: no agent due")
            return views
        t0 = time.monotonic()
        results = await peers.snmp(_targets(polled, cfg, ips), cfg.snmp.max_concurrency, cfg.snmp.budget_s)
        poll_s = time.monotonic() - t0
        # Rates, reboots and events (CPU: ~2 s for 10,000 agents) are worked out in the thread,
        # never on the event loop, where the next cycle's sweep may be sending.
        outcomes, polled_views = await held.finish_in_thread(
            _outcomes_and_record, cfg, store, devices, polled, results, now, poll_s, page
        )
        views.update(polled_views)
        failed = Counter(o.device.status for o in outcomes if o.device.status != "ok")
        logger.info(
            "snmp polled=%d answered=%d failed=%d not_reached=%d poll=%.2fs took=%.2fs%s",
            len(polled),
            sum(o.device.status == "ok" for o in outcomes),
            sum(failed.values()),
            sum(r is None for r in results),
            poll_s,
            time.monotonic() - t0,
            "".join(f" {k}={n}" for k, n in sorted(failed.items())),  # one line per poll, not one per timeout
        )
        return views
    finally:
        held.close_unless_handed()


def _outcomes_and_record(
    cfg: Config, store: Store, devices, polled, results, now: Now, poll_s: float, page: bool
) -> tuple[list[SnmpOutcome], dict[str, SnmpView]]:
    outcomes, views = snmp_outcomes(cfg, devices, store.interfaces(), polled, results)
    _record_snmp(cfg, store, outcomes, now(), poll_s, page)
    return outcomes, views


def _record_snmp(cfg: Config, store: Store, outcomes: list[SnmpOutcome], ts: float, took_s: float, page: bool) -> None:
    points: Sequence[str] = ()
    limits: tuple[int, float] | None = None
    if cfg.influx is not None and outcomes:
        v1 = cfg.influx.settings.api == "v1"
        tags = {s.id: site_tags(s.id, s, cfg.agent.id, s.parent) for s in cfg.sites}
        points = snmp_points(outcomes, tags, v1)
        agent = agent_point(
            socket.gethostname(),
            {
                "snmp_polled": len(outcomes),
                "snmp_failed": sum(o.device.status != "ok" for o in outcomes),
                "snmp_ms": took_s * 1000.0,
            },
            ts,
            v1,
            cfg.agent.id,
        )
        points = [*points, agent] if agent else points
        limits = _spool_limits(cfg.influx)
    store.record_snmp(outcomes, points, ts, limits)
    if page and outcomes and cfg.page.source == "store":
        outputs.attempt(store, cfg, "page", write_page, cfg, store)


def refresh_snmp(cfg: Config, now: Now = time.time, peers: Peers = REAL) -> dict[str, SnmpView]:
    """`wanmon inventory --refresh`: poll every enabled site now, backed off or not, and record it
    through the same path as the SNMP job (events reach the next cycle's alerts, points the spool)."""
    views = asyncio.run(run_snmp(cfg, now=now, peers=peers, force=True, page=False))
    if views is None:
        raise StoreBusyError("another wanmon SNMP poll is running on this store: try again in a moment")
    return views


# -- publishing, off the critical path ----------------------------------------


@dataclass
class PublishReport:
    drained: object = None  # sink.DrainReport
    delivered: object = None  # mailer.DeliveryReport
    skipped: str | None = None  # why nothing was published


DAMAGE_MAIL_BUDGET_S = 20.0  # the NOC's notice of a damaged store: the whole SMTP session


def tell_noc_of_damage(cfg: Config, now: Now = time.time) -> str | None:
    """When the store is marked damaged, mail the NOC ([alerts] noc) once, directly: the
    outbox is in the damaged store. A failed attempt is retried by a later call after the
    outbox's back-off (1, 2, 4... min); the marker keeps when the NOC was told. Returns what
    was done, for the log (None: nothing to do). Runs off the cycle's path (a check that
    found the damage ends after it; the daemon runs it in a thread)."""
    from wanmon.alerts.mail import damage_mails
    from wanmon.mailer import MailError, retry_delay_s, send_now
    from wanmon.store import damaged, note_damaged

    marker = damaged(cfg.store_path)
    if marker is None or marker.get("noc_told_ts") or cfg.smtp is None or not cfg.alerts.noc:
        return None
    t, tries = now(), int(marker.get("noc_tries", 0))
    if tries and t - float(marker.get("noc_last_try_ts", 0)) < retry_delay_s(tries):
        return None
    mails = damage_mails(cfg, cfg.store_path, marker, t)
    rows = [
        {
            "recipient": m.recipient,
            "subject": m.subject,
            "created_ts": m.created_ts,
            "message_id": m.message_id,
            "body_text": m.text,
            "body_html": m.html,
        }
        for m in mails
    ]
    try:
        send_now(cfg.smtp, rows, DAMAGE_MAIL_BUDGET_S, "the NOC's damaged-store notice")
    except MailError as exc:
        note_damaged(cfg.store_path, noc_tries=tries + 1, noc_last_try_ts=t, noc_error=str(exc))
        logger.error("the NOC was not told that the store is damaged (tried %d time(s)): %s", tries + 1, exc)
        return f"not sent: {exc}"
    note_damaged(cfg.store_path, noc_told_ts=t, noc_tries=tries + 1)
    logger.warning("the NOC was told that the store is damaged (%s)", ", ".join(cfg.alerts.noc))
    return "sent to " + ", ".join(cfg.alerts.noc)


def publish(cfg: Config, peers: Peers = REAL, dry_run: bool = False, now: Now = time.time) -> PublishReport:
    """The outputs that talk to peers, one after the other, each alone (wanmon.outputs): the
    InfluxDB drain within drain_budget_s, mail delivery within its budget, then the page from
    InfluxDB when [page] source = "influxdb"; every network operation has a deadline. Never two
    publishers at once: one already running (another `check`, the daemon) sends what this one
    would have; this one returns at once."""
    rep = PublishReport()
    wants_mail = cfg.smtp is not None and not dry_run
    if dry_run or (cfg.influx is None and not wants_mail):
        return rep
    try:
        lock = PublishLock(cfg.store_path).__enter__()
    except StoreBusyError as exc:
        logger.info("publish skipped: %s", exc)
        rep.skipped = str(exc)
        return rep
    try:
        store = Store.open(cfg.store_path, any_thread=True)
        try:
            if cfg.influx is not None:
                rep.drained, _ = outputs.attempt(
                    store, cfg, "influxdb", peers.drain, store, cfg.influx, cfg.influx.settings.drain_budget_s, now=now
                )
            if wants_mail:
                rep.delivered, _ = outputs.attempt(store, cfg, "mail", _mail, cfg, store, peers, now=now)
            if cfg.influx is not None and cfg.page.source == "influxdb":
                from wanmon import fromflux

                _, err = outputs.attempt(store, cfg, "page", fromflux.render, cfg, now=now)
                if err is not None:
                    logger.error("the page from InfluxDB was not written, the last one stays in place")
        finally:
            store.close()
    finally:
        lock.__exit__(None, None, None)
    return rep


def send_heartbeat(cfg: Config, res: CycleResult, now: Now = time.time) -> None:
    """[agent] heartbeat_url after a recorded cycle (wanmon.heartbeat), an output of its own: off
    the critical path, never under the publish lock (a publisher busy with a slow relay must
    not silence the beat), bounded by heartbeat_budget_s."""
    from wanmon.heartbeat import beat

    url = cfg.agent.heartbeat_url
    if not url:  # nothing to send to (the callers check it first)
        return

    def one() -> object:
        from collections import Counter

        counts = Counter(o.status for o in res.observations)
        bad = counts["down"] + counts["unreachable"]
        r = beat(
            url,
            cfg.agent.heartbeat_budget_s,
            fields={
                "status": "up",
                "ping": round((res.finished_at - res.started_at) * 1000),
                "msg": f"cycle {res.cycle_id}: {len(res.observations)} sites, {bad} down or unreachable",
            },
        )
        if not r.ok:
            raise WanmonError(f"the heartbeat was not taken: {r.reason}")
        return r

    store = Store.open(cfg.store_path, any_thread=True)
    try:
        outputs.attempt(store, cfg, "heartbeat", one, now=now)
    finally:
        store.close()


def _mail(cfg: Config, store: Store, peers: Peers):
    """Deliver the outbox; several agents: the standby's rule and news already sent by another first."""
    from wanmon import agents

    t_mail = time.time()
    agents.gate(cfg, store)
    report = peers.deliver(store, cfg.smtp, MAIL_BUDGET_S)
    if report is not None and report.error is None and not report.sent and (report.failed or report.deferred):
        # a relay that refuses every message (5xx, 4xx) is a mail output that fails, as a refused login is
        report.error = (
            f"the SMTP server refused every message of this run ({report.failed + report.deferred}): "
            f"{report.refused or '?'}"
        )
    # what went out, for the other agents to see (record_notices spools nothing without [influxdb])
    if cfg.influx is not None and agents.record_notices(cfg, store, t_mail):
        peers.drain(store, cfg.influx, min(5.0, cfg.influx.settings.drain_budget_s))
    return report
