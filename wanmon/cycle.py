"""One poll cycle: the single code path behind `wanmon check` (and, later, the daemon)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass, field

from wanmon.config import Config, Site
from wanmon.devices import DeviceState, derive
from wanmon.errors import WanmonError
from wanmon.inventory import Inventory
from wanmon.lineproto import cycle_points
from wanmon.sink import drain
from wanmon.probes import icmp, snmp
from wanmon.status import icmp_status, with_parents
from wanmon.alerts.engine import evaluate
from wanmon.alerts.mail import compose
from wanmon.alerts.maintenance import sites_in_maintenance
from wanmon.mailer import deliver
from wanmon.store import AlertUpdate, CycleLock, Observation, SnmpOutcome, Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SnmpView:
    """A site's SNMP figures as `check --json` shows them."""

    status: str  # ok | timeout | auth_error | error (polled now) | not_due | disabled
    reason: str | None = None
    device: DeviceState | None = None  # this poll's outcome, or the last one for not_due


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
                site_id=s.id, name=s.name, level=s.level, district=s.district, address=s.address, ts=ts,
                status=final[s.id], reason=reason, sent=r.sent, received=r.received, loss_pct=r.loss_pct,
                rtt_min_ms=r.rtt_min_ms, rtt_avg_ms=r.rtt_avg_ms, rtt_max_ms=r.rtt_max_ms, jitter_ms=r.jitter_ms,
            )
        )
    return out


def snmp_due(cfg: Config, devices: dict[str, DeviceState], now: float) -> list[Site]:
    """Sites whose SNMP poll is due: never polled, or last polled >= interval_s ago.

    A little slack (5% of the interval, at most 15 s) keeps a cron job that runs
    every minute with interval_s = 300 on every fifth run despite start jitter.
    """
    due = []
    for s in cfg.sites:
        spec = cfg.snmp_specs.get(s.id)
        if spec is None:
            continue
        last = devices.get(s.id)
        slack = min(15.0, 0.05 * spec.interval_s)
        if last is None or now - last.last_poll_ts >= spec.interval_s - slack:
            due.append(s)
    return due


def snmp_outcomes(cfg: Config, devices: dict[str, DeviceState], prev_ifs: dict, polled: list[Site],
                  results: list[snmp.SnmpResult]) -> tuple[list[SnmpOutcome], dict[str, SnmpView]]:
    """Poll results -> what the store records and what the CLI shows (rates, reboots, events)."""
    outcomes, views = [], {}
    for site, res in zip(polled, results):
        spec = cfg.snmp_specs[site.id]
        dev, ifs, events = derive(site.id, devices.get(site.id), prev_ifs.get(site.id, {}), res, spec.uplink)
        outcomes.append(SnmpOutcome(dev, ifs, events))
        views[site.id] = SnmpView(res.status, res.reason, dev)
        if not res.ok:
            logger.info("snmp site=%s status=%s reason=%s", site.id, res.status, res.reason)
        for e in events:
            logger.info("event site=%s kind=%s detail=%s", e.site_id, e.kind, e.detail)
    return outcomes, views


def _targets(cfg: Config, sites: list[Site]) -> list[snmp.SnmpTarget]:
    return [snmp.SnmpTarget(s.address.strip("[]"), cfg.snmp_specs[s.id]) for s in sites]


def refresh_snmp(cfg: Config) -> dict[str, SnmpView]:
    """Poll SNMP at every enabled site now, whatever interval_s says, and record it
    (`wanmon inventory --refresh`: discover the equipment right after editing sites.toml)."""
    sites = [s for s in cfg.sites if s.id in cfg.snmp_specs]
    with CycleLock(cfg.store_path):
        store = Store.open(cfg.store_path)
        try:
            devices = store.devices()
            prev_ifs = store.interfaces()
            results = asyncio.run(snmp.probe(_targets(cfg, sites), cfg.snmp.max_concurrency))
            outcomes, views = snmp_outcomes(cfg, devices, prev_ifs, sites, results)
            store.record_snmp(outcomes)
        finally:
            store.close()
    return views


async def _probe_all(cfg: Config, polled: list[Site], progress):
    return await asyncio.gather(
        icmp.probe([s.address for s in cfg.sites], cfg.icmp, progress),
        snmp.probe(_targets(cfg, polled), cfg.snmp.max_concurrency),
    )


def _write_page(cfg: Config, store: Store) -> None:
    """Render the status page from what was just recorded; the cycle stays recorded if this fails."""
    from wanmon.page import write_page

    try:
        write_page(cfg, store)
    except OSError as exc:
        raise PageError(f"the cycle was recorded, but the status page could not be written: {exc} "
                        "(check [page] out_dir and its permissions)") from None


class PageError(WanmonError):
    pass


def _agent_fields(store: Store, started: float, finished: float, obs, outcomes) -> dict[str, object]:
    """The agent's own metrics for this cycle (wanmon_agent)."""
    from collections import Counter

    counts = Counter(o.status for o in obs)
    spool = store.spool_stats()
    return {
        "cycle_ms": (finished - started) * 1000.0, "sites": len(obs),
        **{k: counts.get(k, 0) for k in ("up", "degraded", "down", "unreachable", "unknown")},
        "snmp_polled": len(outcomes), "snmp_failed": sum(o.device.status != "ok" for o in outcomes),
        "spool_points": int(spool["points"]), "spool_dropped": int(spool["dropped"]),
    }


def run_check(cfg: Config, progress: icmp.Progress | None = None, dry_run: bool = False) -> CycleResult:
    """Run one cycle and record it (`wanmon check`). Raises WanmonError subclasses for the operator."""
    return asyncio.run(run_cycle(cfg, progress, dry_run))


async def run_cycle(cfg: Config, progress: icmp.Progress | None = None, dry_run: bool = False) -> CycleResult:
    """One cycle inside a running event loop (the daemon calls this directly).

    Probing is async; the store, the sink, the mailer and the page are blocking
    I/O and run in a worker thread so the loop (signals, the scheduler) stays live.
    """
    # Fail on a missing ICMP permission before anything is written.
    icmp.open_sockets(cfg.icmp.mode, {socket.AF_INET}).popitem()[1].close()
    inv = Inventory.from_config(cfg)
    with CycleLock(cfg.store_path):
        store = await asyncio.to_thread(Store.open, cfg.store_path, True)
        try:
            started = time.time()
            devices = store.devices()
            polled = snmp_due(cfg, devices, started)
            prev_ifs = store.interfaces() if polled else {}
            icmp_results, snmp_results = await _probe_all(cfg, polled, progress)
            finished = time.time()
            result = await asyncio.to_thread(_record_and_publish, cfg, inv, store, started, finished, devices, prev_ifs,
                                             polled, icmp_results, snmp_results, dry_run)
        finally:
            store.close()
    logger.info("cycle id=%d sites=%d snmp_polled=%d duration_ms=%.0f", result.cycle_id, len(result.observations),
                len(polled), (finished - started) * 1000)
    return result


def _record_and_publish(cfg: Config, inv: Inventory, store: Store, started: float, finished: float, devices, prev_ifs,
                        polled, icmp_results, snmp_results, dry_run: bool) -> CycleResult:
    obs = observe(cfg, inv, icmp_results, started)
    outcomes, views = snmp_outcomes(cfg, devices, prev_ifs, polled, snmp_results)
    for s in cfg.sites:
        if s.id not in views:
            views[s.id] = SnmpView("not_due", None, devices.get(s.id)) if s.id in cfg.snmp_specs \
                else SnmpView("disabled")
    points, limits = (), None
    if cfg.influx is not None:
        points = cycle_points(obs, outcomes, _agent_fields(store, started, finished, obs, outcomes),
                              socket.gethostname(), started, v1=cfg.influx.settings.api == "v1")
        st = cfg.influx.settings
        limits = (st.spool_max_points, st.spool_max_age_h * 3600)
    t_alerts = time.perf_counter()
    alert_update = _alerts(cfg, store, obs, outcomes, finished, dry_run)
    alerts_ms = (time.perf_counter() - t_alerts) * 1000
    cycle_id = store.record_cycle(started, finished, obs, outcomes, points, limits, alert_update)
    store.apply_retention(finished, cfg.store.retention_raw_days, cfg.store.retention_rollup_days)
    if cfg.influx is not None:
        drain(store, cfg.influx, cfg.influx.settings.drain_budget_s)
    if cfg.smtp is not None and not dry_run:
        deliver(store, cfg.smtp)
    _write_page(cfg, store)
    return CycleResult(cycle_id, started, finished, tuple(obs), {s.id: r.ip for s, r in zip(cfg.sites, icmp_results)},
                       views, tuple(alert_update.mails) if alert_update else (), alerts_ms)


def _alerts(cfg: Config, store: Store, obs, outcomes, now: float, dry_run: bool) -> AlertUpdate | None:
    """Evaluate the alert state machines for this cycle; compose the mails (queued with the cycle)."""
    if not cfg.alerts.enabled:
        return None
    states, guard = store.alert_states()
    reboots = [(e.site_id, e.detail) for o in outcomes for e in o.events if e.kind == "reboot"]
    new_states, notes, guard = evaluate(
        states, {o.site_id: o.status for o in obs}, now, cfg.alerts, {s.id: s.parent for s in cfg.sites},
        sites_in_maintenance(cfg, now), reboots, guard)
    mails = compose(cfg, notes, now)
    for n in notes:
        logger.info("alert kind=%s site=%s", n.kind, n.site_id)
    status = "dry-run" if dry_run else ("queued" if cfg.smtp is not None else "unsent")
    if mails and cfg.smtp is None and not dry_run:
        logger.warning("%d alert mail(s) not sent: no [smtp] table in %s (they are listed by `wanmon alerts`)",
                       len(mails), cfg.path)
    return AlertUpdate(new_states, guard, mails, status)
