"""One poll cycle: the single code path behind `wanmon check` (and, later, the daemon)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass

from wanmon.config import Config
from wanmon.inventory import Inventory
from wanmon.probes import icmp
from wanmon.status import icmp_status, with_parents
from wanmon.store import CycleLock, Observation, Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CycleResult:
    cycle_id: int
    started_at: float
    finished_at: float
    observations: tuple[Observation, ...]
    ip_by_site: dict[str, str | None]


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


def run_check(cfg: Config, progress: icmp.Progress | None = None) -> CycleResult:
    """Run one cycle and record it. Raises WanmonError subclasses for the operator."""
    # Fail on a missing ICMP permission before anything is written.
    icmp.open_sockets(cfg.icmp.mode, {socket.AF_INET}).popitem()[1].close()
    inv = Inventory.from_config(cfg)
    with CycleLock(cfg.store_path):
        store = Store.open(cfg.store_path)
        try:
            started = time.time()
            results = asyncio.run(icmp.probe([s.address for s in cfg.sites], cfg.icmp, progress))
            finished = time.time()
            obs = observe(cfg, inv, results, started)
            cycle_id = store.record_cycle(started, finished, obs)
            store.apply_retention(finished, cfg.store.retention_raw_days, cfg.store.retention_rollup_days)
        finally:
            store.close()
    logger.info("cycle id=%d sites=%d duration_ms=%.0f", cycle_id, len(obs), (finished - started) * 1000)
    return CycleResult(cycle_id, started, finished, tuple(obs), {s.id: r.ip for s, r in zip(cfg.sites, results)})
