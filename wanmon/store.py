"""The embedded store (SQLite): the single source of truth that survives a process.

* one transaction per cycle: the cycle row, every site's sample, the hourly
  rollups and each site's current state land together or not at all;
* WAL journal, so `wanmon status` (or the page) can read while a cycle writes;
* a schema version (PRAGMA user_version) with forward migrations;
* retention: raw samples for `retention_raw_days`, hourly rollups for
  `retention_rollup_days`;
* files 0600 in a 0700 folder (they hold the inventory and, later, spools);
* one cycle at a time: `CycleLock` is an flock on `<db>.lock`, released by
  the kernel when the process dies, so a crash never leaves it stale.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TypedDict

from wanmon.account import held_s, run_goes_on
from wanmon.errors import WanmonError, means_damage, os_cause, sqlite_cause
from wanmon.files import replacing
from wanmon.locks import CycleLock, PublishLock, SnmpLock, TraceLock, _prepare_folder  # noqa: F401 (re-exported)
from wanmon.model import (
    AlertUpdate,
    DeviceLine,
    DeviceState,
    Event,
    Hop,
    IfState,
    Observation,
    OutagePath,
    SiteState,
    SnmpOutcome,
    Trace,
)
from wanmon.status import FAILING, PROBLEMS, REACHABLE, Track, advance

logger = logging.getLogger(__name__)

# Each entry migrates from version i to i+1. Never edit a released entry: append.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE cycles (
        id INTEGER PRIMARY KEY,
        started_at REAL NOT NULL,          -- unix seconds
        finished_at REAL NOT NULL,
        duration_ms REAL NOT NULL,
        sites INTEGER NOT NULL,
        up INTEGER NOT NULL, degraded INTEGER NOT NULL, down INTEGER NOT NULL,
        unreachable INTEGER NOT NULL, unknown INTEGER NOT NULL
    );
    CREATE INDEX cycles_started ON cycles(started_at);
    CREATE TABLE icmp_samples (
        cycle_id INTEGER NOT NULL,
        site_id TEXT NOT NULL,
        ts REAL NOT NULL,                   -- sample time, unix seconds
        status TEXT NOT NULL,
        reason TEXT,
        sent INTEGER NOT NULL, received INTEGER NOT NULL, loss_pct REAL NOT NULL,
        rtt_min_ms REAL, rtt_avg_ms REAL, rtt_max_ms REAL, jitter_ms REAL
    );
    CREATE INDEX icmp_samples_site_ts ON icmp_samples(site_id, ts);
    CREATE INDEX icmp_samples_ts ON icmp_samples(ts);
    CREATE TABLE icmp_hourly (
        site_id TEXT NOT NULL,
        hour REAL NOT NULL,                 -- start of the hour, unix seconds
        samples INTEGER NOT NULL,
        reachable INTEGER NOT NULL,         -- samples with status up or degraded
        sent INTEGER NOT NULL, received INTEGER NOT NULL,
        rtt_sum_ms REAL NOT NULL, rtt_n INTEGER NOT NULL,
        rtt_min_ms REAL, rtt_max_ms REAL,
        PRIMARY KEY (site_id, hour)
    ) WITHOUT ROWID;
    CREATE TABLE site_state (
        site_id TEXT PRIMARY KEY,
        name TEXT NOT NULL, level TEXT NOT NULL, district TEXT, address TEXT NOT NULL,
        status TEXT NOT NULL,
        since REAL NOT NULL,                -- when the current status began
        last_ts REAL NOT NULL,              -- last observation
        last_cycle_id INTEGER NOT NULL,
        consecutive_failures INTEGER NOT NULL,  -- cycles in a row without any reply
        last_reachable_ts REAL,
        loss_pct REAL, rtt_avg_ms REAL, jitter_ms REAL, reason TEXT
    );
    """,
    # 2: SNMP: the device and interface inventory over time, history, events.
    """
    CREATE TABLE snmp_device (
        site_id TEXT PRIMARY KEY,
        status TEXT NOT NULL, reason TEXT,
        last_poll_ts REAL NOT NULL, last_ok_ts REAL, first_seen REAL, last_seen REAL,
        sys_descr TEXT, sys_object_id TEXT, sys_name TEXT, sys_contact TEXT, sys_location TEXT,
        uptime_ticks INTEGER, engine_boots INTEGER, engine_time_s INTEGER, last_reboot_ts REAL,
        uplink_if_index INTEGER, uplink_name TEXT, uplink_in_bps REAL, uplink_out_bps REAL,
        uplink_util_in_pct REAL, uplink_util_out_pct REAL
    );
    CREATE TABLE snmp_if (
        site_id TEXT NOT NULL, if_index INTEGER NOT NULL,
        name TEXT, descr TEXT, alias TEXT, type INTEGER, admin_status TEXT, oper_status TEXT,
        speed_bps INTEGER, in_octets INTEGER, out_octets INTEGER, counter_bits INTEGER NOT NULL,
        discontinuity INTEGER, sample_ts REAL NOT NULL,
        in_bps REAL, out_bps REAL, util_in_pct REAL, util_out_pct REAL,
        in_errors INTEGER, out_errors INTEGER, in_discards INTEGER, out_discards INTEGER,
        last_change_ts REAL,
        PRIMARY KEY (site_id, if_index)
    ) WITHOUT ROWID;
    CREATE TABLE snmp_samples (
        site_id TEXT NOT NULL, ts REAL NOT NULL, status TEXT NOT NULL, reason TEXT,
        uptime_s REAL, uplink_in_bps REAL, uplink_out_bps REAL,
        uplink_util_in_pct REAL, uplink_util_out_pct REAL
    );
    CREATE INDEX snmp_samples_site_ts ON snmp_samples(site_id, ts);
    CREATE INDEX snmp_samples_ts ON snmp_samples(ts);
    CREATE TABLE if_samples (
        site_id TEXT NOT NULL, if_index INTEGER NOT NULL, ts REAL NOT NULL,
        in_bps REAL, out_bps REAL, util_in_pct REAL, util_out_pct REAL, oper_status TEXT,
        in_errors INTEGER, out_errors INTEGER, in_discards INTEGER, out_discards INTEGER
    );
    CREATE INDEX if_samples_site_ts ON if_samples(site_id, ts);
    CREATE INDEX if_samples_ts ON if_samples(ts);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL, site_id TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL
    );
    CREATE INDEX events_site_ts ON events(site_id, ts);
    """,
    # 3: the InfluxDB spool: points wait here, in order, until the server acknowledges them.
    """
    CREATE TABLE spool (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, line TEXT NOT NULL);
    CREATE INDEX spool_ts ON spool(ts);
    CREATE TABLE spool_quarantine (
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, line TEXT NOT NULL,
        status INTEGER, error TEXT, quarantined_at REAL NOT NULL
    );
    """,
    # 4: alerting: each site's alert state machine, and the email outbox.
    """
    CREATE TABLE alert_state (site_id TEXT PRIMARY KEY, state TEXT NOT NULL);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_ts REAL NOT NULL, message_id TEXT NOT NULL UNIQUE, recipient TEXT NOT NULL,
        subject TEXT NOT NULL, body_text TEXT NOT NULL, body_html TEXT NOT NULL, kinds TEXT NOT NULL,
        status TEXT NOT NULL,           -- queued | sent | failed | dry-run | unsent (no [smtp])
        attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, sent_ts REAL
    );
    CREATE INDEX outbox_status ON outbox(status, id);
    """,
    # 5: peers that misbehave: SNMP back-off for agents that keep failing, mail retry
    # times, the last good address of each host name (DNS that does not answer in time).
    """
    ALTER TABLE snmp_device ADD COLUMN fail_streak INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE snmp_device ADD COLUMN fail_since REAL;
    ALTER TABLE outbox ADD COLUMN next_try_ts REAL;
    CREATE TABLE dns_cache (name TEXT PRIMARY KEY, ip TEXT NOT NULL, resolved_ts REAL NOT NULL);
    """,
    # 6: events carry their figures (JSON), so mails never parse the English detail.
    """
    ALTER TABLE events ADD COLUMN data TEXT;
    """,
    # 7: the page's incident log reads 30 days of status changes by time.
    """
    CREATE INDEX events_kind_ts ON events(kind, ts);
    """,
    # 8: daily sums of the hourly rollups, for the page's 7- and 30-day figures (no longer written: the page
    # reads the account of the status runs, wanmon/account.py).
    """
    CREATE TABLE icmp_daily (
        site_id TEXT NOT NULL,
        day REAL NOT NULL,                  -- start of the UTC day, unix seconds
        samples INTEGER NOT NULL,
        reachable INTEGER NOT NULL,
        PRIMARY KEY (site_id, day)
    ) WITHOUT ROWID;
    """,
    # 9: no query reads raw samples by site; keeping that index in step dirtied one page per
    # site in every cycle (half of a 2,000-site cycle's WAL, and of its checkpoint).
    """
    DROP INDEX IF EXISTS icmp_samples_site_ts;
    """,
    # 10: availability reports (wanmon.report): each site's history as runs of one status, kept
    # like the rollups. The open run lives in site_state (run_start, run_maint) and is closed
    # into status_runs when the status, the maintenance flag or a gap (> the cap) ends it.
    """
    ALTER TABLE site_state ADD COLUMN run_start REAL;
    ALTER TABLE site_state ADD COLUMN run_maint INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE status_runs (
        site_id TEXT NOT NULL,
        status TEXT NOT NULL,
        maint INTEGER NOT NULL,             -- 1: the site was in a maintenance window
        start_ts REAL NOT NULL,             -- the run's first cycle ts
        end_ts REAL NOT NULL                -- its last cycle ts + min(next cycle ts - it, cap)
    );
    CREATE INDEX status_runs_end ON status_runs(end_ts);
    """,
    # 11: several agents: each mail's notifications (site, kind), so an agent can hold a mail
    # another agent has already sent (wanmon.agents); 'held' is a status of its own.
    """
    ALTER TABLE outbox ADD COLUMN notes TEXT;
    """,
    # 12: the last good path to each site (wanmon.trace): a broken path is told against it, and
    # `wanmon topology` reads each site's parent from it. hops: JSON [[address or null, rtt_ms or null], ...]
    """
    CREATE TABLE good_paths (site_id TEXT PRIMARY KEY, ts REAL NOT NULL, ip TEXT NOT NULL, hops TEXT NOT NULL);
    """,
    # 13: the path traced when a site went down on its own, kept with its incident (the site's
    # down stretch that began at start_ts, its status `since`): the page, the DOWN mail and
    # `status --json` tell where it stops against the good path of then (good_hops: its length).
    # hops: JSON [[address or null, rtt_ms or null, unreachable 0/1], ...]
    """
    CREATE TABLE outage_paths (
        site_id TEXT NOT NULL,
        start_ts REAL NOT NULL,
        ts REAL NOT NULL,
        ip TEXT,
        reached INTEGER NOT NULL,
        reason TEXT,
        duration_ms REAL NOT NULL,
        hops TEXT NOT NULL,
        good_hops INTEGER,
        good_ts REAL,
        PRIMARY KEY (site_id, start_ts)
    );
    CREATE INDEX outage_paths_start ON outage_paths(start_ts);
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
RUNS_SCHEMA = 10  # the schema that added status_runs: a store upgraded past it has its runs rebuilt


class SpoolStats(TypedDict):
    """Store.spool_stats(): the InfluxDB spool as `wanmon status` and the agent's heartbeat show it."""

    points: int  # waiting
    oldest_ts: float | None  # when the oldest waiting point was spooled
    dropped: int  # dropped in all because the spool was full
    quarantined: int  # rejected by the server, set aside
    last_sent_ts: float | None
    last_error: str | None


class StoreError(WanmonError):
    pass


def _create_store(path: Path) -> None:
    """Create a new, empty wanmon store at `path` in one step: an SQLite file (0600) built
    under a temporary name in the same folder, then linked into place (never over an
    existing file). So every file at a store's path is a whole store that wanmon wrote,
    and an empty or foreign file there is somebody else's doing (see _refuse_foreign)."""
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    try:
        tmp.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID:d}")
        finally:
            conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another wanmon created it meanwhile: that one is used
    finally:
        tmp.unlink()


_WAY_OUT = (
    "If it was emptied or replaced by mistake, restore it from a backup (see the README, 'Backup and "
    "restore'); to start a new history, move it away or delete it: wanmon then creates a new store."
)


def _refuse_empty(path: Path) -> None:
    """An empty file at the store's path is not wanmon's (it creates stores whole): checked before
    SQLite opens it, which would write a header into it. (`: > wanmon.db` used to start a new
    history at cycle 1 over the old one.)"""
    if path.stat().st_size == 0:
        raise StoreError(
            f"the store {path} exists but is empty (0 bytes): it holds no history, and wanmon will "
            f"not write over it. {_WAY_OUT}"
        )


def _refuse_foreign(path: Path, conn: sqlite3.Connection) -> None:
    """Another program's SQLite database at the store's path: never written to. Closes `conn` when refusing."""
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
    if app != APPLICATION_ID and not (version > 0 and tables > 0):
        conn.close()
        raise StoreError(
            f"{path} is an SQLite database but not a wanmon store (application_id {app}, "
            f"schema {version}, {tables} tables): wanmon will not write over it. {_WAY_OUT}"
        )


APPLICATION_ID = 0x776D6F6E  # "wmon": PRAGMA application_id of every store wanmon creates
DAMAGED_SUFFIX = ".damaged"  # beside the store: SQLite found it damaged; writes stop until it passes a check


def _mark_path(path: Path) -> Path:
    return Path(f"{path}{DAMAGED_SUFFIX}")


def damaged(path: Path) -> dict | None:
    """The damage marker of the store at `path` ({"ts", "findings"}), or None."""
    import json

    try:
        return json.loads(_mark_path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, PermissionError):
        return None  # none, or this user cannot see the store's folder (opening the store will say so)
    except (OSError, ValueError):
        return {"ts": None, "findings": ["the damage marker itself cannot be read"]}


def mark_damaged(path: Path, findings: Sequence[str], ts: float | None = None) -> None:
    """Stop writes to the store (Store.open refuses) and let the page, `status` and the log say why.
    A file beside the store, not in it: the store is what is damaged."""
    import json

    if damaged(path) is not None:
        return  # the first finding stays
    _mark_path(path).write_text(
        json.dumps({"ts": time.time() if ts is None else ts, "findings": list(findings)[:20]}, ensure_ascii=False),
        encoding="utf-8",
    )
    logger.error(
        "store damaged path=%s findings=%s: writes stop until `wanmon store check` passes (README, "
        "'Backup and restore')",
        path,
        "; ".join(list(findings)[:3]),
    )


def note_damaged(path: Path, **fields: object) -> None:
    """Add fields to the damage marker (e.g. when the NOC was told), keeping its findings."""
    import json

    d = damaged(path)
    if d is not None:
        with replacing(_mark_path(path), mode=0o600, encoding="utf-8") as f:
            f.write(json.dumps({**d, **fields}, ensure_ascii=False))


def clear_damaged(path: Path) -> bool:
    try:
        _mark_path(path).unlink()
        return True
    except FileNotFoundError:
        return False


def _refuse_damaged(path: Path) -> None:
    d = damaged(path)
    if d is not None:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(d["ts"])) if d.get("ts") else "?"
        raise StoreError(
            f"the store {path} was found damaged at {when} ({'; '.join(d['findings'][:2])}): nothing "
            "is written to it until it is restored from a backup and `wanmon store check` passes "
            "(README, 'Backup and restore')"
        )


class Store:
    def __init__(self, conn: sqlite3.Connection, path: Path):
        # the observed sites' states as the last record_cycle wrote them (the page needs no second read)
        self.written_states: list[SiteState] | None = None
        self.conn = conn
        self.path = path

    # -- opening ---------------------------------------------------------

    @classmethod
    def open(cls, path: Path, any_thread: bool = False) -> Store:
        """Open for writing; create the folder (0700), file (0600) and schema if needed.

        any_thread: the connection may be used from another thread than the
        opener's (one at a time: the daemon opens it in a worker thread)."""
        path = Path(path)
        try:
            _prepare_folder(path.parent)
            if not path.exists():
                _create_store(path)
            _refuse_damaged(path)
            _refuse_empty(path)
            # SQLite gives the WAL and SHM files the database file's mode (0600, _create_store):
            # no umask change, which would be the whole process's, threads included
            conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=not any_thread)
            _refuse_foreign(path, conn)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")
        except OSError as exc:
            raise StoreError(f"cannot open the store {path}: {os_cause(exc)} ([store] path)") from None
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store: {sqlite_cause(exc, path)}") from None
        store = cls(conn, path)
        try:
            store._migrate()
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def open_readonly(cls, path: Path, any_older: bool = False) -> Store:
        """Open for reading, never migrating. any_older: a store of an older schema is read as it is
        (`store backup`, `store check`: they must work before an upgrade); else it is refused."""
        path = Path(path)
        if not path.exists():
            raise StoreError(f"no store at {path} yet: run `wanmon check` first")
        try:
            _refuse_empty(path)
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0, isolation_level=None)
            _refuse_foreign(path, conn)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the store {path}: {exc}") from None
        except PermissionError as exc:
            raise StoreError(f"cannot read the store {path}: {os_cause(exc)}") from None
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store {path} has schema {version}, newer than this wanmon ({SCHEMA_VERSION}): upgrade wanmon"
            )
        if version < SCHEMA_VERSION and not any_older:
            conn.close()
            raise StoreError(
                f"the store {path} has schema {version}, older than this wanmon ({SCHEMA_VERSION}): "
                "run `wanmon check` once to upgrade it (it first leaves a backup beside the store; "
                "`wanmon store backup` and `store check` work on it as it is)"
            )
        return cls(conn, path)

    def backup(self, dest: Path) -> int:
        """A consistent copy of the store at `dest` (SQLite's online backup: safe while cycles
        write; never over an existing file). Returns its size in bytes."""
        dest = Path(dest)
        if dest.exists():
            raise StoreError(f"{dest} already exists: choose a new file name for the backup")
        try:
            self._copy_to(dest)
        except FileExistsError:
            raise StoreError(f"{dest} already exists: choose a new file name for the backup") from None
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot write the backup {dest}: {exc}") from None
        return dest.stat().st_size

    def _copy_to(self, dest: Path) -> None:
        """SQLite's online backup into a temporary file beside dest (0600), then linked into place:
        never over an existing file (FileExistsError), never a half-written dest."""
        tmp = dest.with_name(f".{dest.name}.part-{os.getpid()}")
        try:
            tmp.unlink()  # a crashed earlier run's, with this pid
        except FileNotFoundError:
            pass
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))  # 0600 before SQLite opens it
            out = sqlite3.connect(tmp)
            try:
                self.conn.backup(out)
            finally:
                out.close()
            os.chmod(tmp, 0o600)
            os.link(tmp, dest)
        finally:
            for leftover in (tmp, Path(f"{tmp}-journal")):
                try:
                    leftover.unlink()
                except FileNotFoundError:
                    pass

    def _backup_before_upgrade(self, version: int) -> Path | None:
        """Before migrating a store of schema `version`: a backup beside it, <store>.schema-<version>.bak
        (.1.bak, .2.bak... when that name is taken: an earlier backup is never overwritten). The way
        back is to install the previous wanmon and copy this file over the store. Written or nothing
        migrates: a backup that cannot be written (disk full) is a StoreError and the store is unchanged.
        Named by the schema the copy holds (another process may have migrated meanwhile: then none)."""
        tmp = Path(f"{self.path}.upgrade-{os.getpid()}.tmp")
        try:
            tmp.unlink(missing_ok=True)
            self._copy_to(tmp)
            c = sqlite3.connect(f"file:{tmp}?mode=ro", uri=True)
            try:
                version = c.execute("PRAGMA user_version").fetchone()[0]
            finally:
                c.close()
        except (OSError, sqlite3.Error) as exc:
            tmp.unlink(missing_ok=True)
            cause = os_cause(exc) if isinstance(exc, OSError) else sqlite_cause(exc, tmp)
            if isinstance(exc, sqlite3.Error) and "is full" in cause:
                cause = "the disk is full"
            need = self.path.stat().st_size
            raise StoreError(
                f"the store {self.path} (schema {version}) was not upgraded to schema {SCHEMA_VERSION}: its backup "
                f"{self.path}.schema-{version}.bak could not be written ({cause}); nothing was changed: free at least "
                f"{need / 1e6:.1f} MB in {self.path.parent} (the store's size) and run again"
            ) from None
        try:
            if version >= SCHEMA_VERSION:
                return None  # upgraded by another process meanwhile: nothing left to keep
            for n in range(1000):
                dest = Path(f"{self.path}.schema-{version}{f'.{n}' if n else ''}.bak")
                try:
                    os.link(tmp, dest)
                except FileExistsError:
                    continue
                logger.warning(
                    "store upgrade path=%s from=%d to=%d: backup written to %s; to go back, install the "
                    "previous wanmon and copy the backup over the store while no check runs",
                    self.path,
                    version,
                    SCHEMA_VERSION,
                    dest,
                )
                return dest
            raise StoreError(
                f"the store {self.path} was not upgraded: 1,000 backups of schema {version} are beside "
                "it already; move some away"
            )
        finally:
            tmp.unlink(missing_ok=True)

    def quick_check(self) -> list[str]:
        """SQLite's PRAGMA quick_check: [] when the file is sound, else its findings."""
        try:
            rows = [r[0] for r in self.conn.execute("PRAGMA quick_check")]
        except sqlite3.DatabaseError as exc:  # "database disk image is malformed" before any row
            return [str(exc)]
        return [] if rows == ["ok"] else rows

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store {self.path} has schema {version}, newer than this wanmon ({SCHEMA_VERSION}): upgrade wanmon"
            )
        if 0 < version < SCHEMA_VERSION:  # 0: a new, empty store, nothing to keep
            self._backup_before_upgrade(version)
        for v in range(version, SCHEMA_VERSION):
            logger.info("store migrate path=%s from=%d to=%d", self.path, v, v + 1)
            with self.transaction():
                if self.conn.execute("PRAGMA user_version").fetchone()[0] > v:
                    continue  # another process (a check, the daemon's publisher) did this step meanwhile
                for stmt in _split_sql(MIGRATIONS[v]):
                    self.conn.execute(stmt)
                if v + 1 == RUNS_SCHEMA and version > 0:
                    # the status runs start empty: the next cycle rebuilds them from the raw samples
                    # (rebuild_runs; it needs the config's run cap, which opening has not)
                    self._set_meta("runs_rebuild", "pending")
                self.conn.execute(f"PRAGMA user_version={v + 1}")

    def close(self) -> None:
        self.conn.close()

    def transaction(self):
        return _Tx(self.conn)

    # -- writing ---------------------------------------------------------

    def record_cycle(
        self,
        started_at: float,
        finished_at: float,
        obs: Sequence[Observation],
        snmp: Sequence[SnmpOutcome] = (),
        points: Sequence[str] = (),
        spool_limits: tuple[int, float] | None = None,
        alerts: AlertUpdate | None = None,
        maintenance: Collection[str] = (),
        run_cap_s: float = 120.0,
        cadence_s: float | None = None,
    ) -> int:
        """Store one cycle atomically: ICMP observations, SNMP outcomes and the
        cycle's InfluxDB points (into the spool, bounded by spool_limits =
        (max points, max age in s)). maintenance: the sites in a maintenance window;
        run_cap_s: the longest one cycle's status holds (2 x [schedule] icmp_interval_s),
        for the status runs the reports read. Returns the cycle id."""
        seen = Counter(o.status for o in obs)
        counts = [seen.get(s, 0) for s in ("up", "degraded", "down", "unreachable", "unknown")]
        with self.transaction():
            cur = self.conn.execute(
                "INSERT INTO cycles (started_at, finished_at, duration_ms, sites, up, degraded, down, unreachable, unknown)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (started_at, finished_at, (finished_at - started_at) * 1000.0, len(obs), *counts),
            )
            cycle_id = cur.lastrowid
            assert cycle_id is not None, "an INSERT sets lastrowid"
            self.conn.executemany(
                "INSERT INTO icmp_samples (cycle_id, site_id, ts, status, reason, sent, received, loss_pct,"
                " rtt_min_ms, rtt_avg_ms, rtt_max_ms, jitter_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        cycle_id,
                        o.site_id,
                        o.ts,
                        o.status,
                        o.reason,
                        o.sent,
                        o.received,
                        o.loss_pct,
                        o.rtt_min_ms,
                        o.rtt_avg_ms,
                        o.rtt_max_ms,
                        o.jitter_ms,
                    )
                    for o in obs
                ],
            )
            self.conn.executemany(
                "INSERT INTO icmp_hourly (site_id, hour, samples, reachable, sent, received, rtt_sum_ms, rtt_n,"
                " rtt_min_ms, rtt_max_ms) VALUES (?,?,1,?,?,?,?,?,?,?)"
                " ON CONFLICT(site_id, hour) DO UPDATE SET samples = samples + 1,"
                " reachable = reachable + excluded.reachable, sent = sent + excluded.sent,"
                " received = received + excluded.received, rtt_sum_ms = rtt_sum_ms + excluded.rtt_sum_ms,"
                " rtt_n = rtt_n + excluded.rtt_n,"
                " rtt_min_ms = min(coalesce(rtt_min_ms, excluded.rtt_min_ms), coalesce(excluded.rtt_min_ms, rtt_min_ms)),"
                " rtt_max_ms = max(coalesce(rtt_max_ms, excluded.rtt_max_ms), coalesce(excluded.rtt_max_ms, rtt_max_ms))",
                [
                    (
                        o.site_id,
                        o.ts - o.ts % 3600,
                        int(o.status in REACHABLE),
                        o.sent,
                        o.received,
                        (o.rtt_avg_ms or 0.0) * o.received,
                        o.received,
                        o.rtt_min_ms,
                        o.rtt_max_ms,
                    )
                    for o in obs
                ],
            )
            self._update_state(cycle_id, obs, maintenance, run_cap_s)
            for key, value in (("run_cap_s", run_cap_s), ("cadence_s", cadence_s)):
                if value is not None and self.meta(key) != repr(value):
                    self._set_meta(key, repr(value))
            self._record_snmp(snmp)
            if points:
                self._spool(started_at, points)
            if spool_limits:
                self._bound_spool(finished_at, *spool_limits)
            if alerts is not None:
                self._record_alerts(alerts)
        return cycle_id

    # -- alerts and the outbox -------------------------------------------

    def _record_alerts(self, up: AlertUpdate) -> None:
        """Alert states and queued mails land with the cycle: a crash can neither lose
        a notification nor (after a restart) repeat one."""
        import json as _json

        self.conn.executemany(
            "INSERT OR REPLACE INTO alert_state (site_id, state) VALUES (?, ?)",
            [(sid, _json.dumps(astuple_dict(st))) for sid, st in up.states.items()],
        )
        self._set_meta("alert_guard", "1" if up.guard else None)
        if up.events_seen is not None:
            self._set_meta("alert_events_seen", str(up.events_seen))
        self._queue(up.mails, up.mail_status)

    def _queue(self, mails: Sequence, status: str) -> None:
        self.conn.executemany(
            "INSERT INTO outbox (created_ts, message_id, recipient, subject, body_text, body_html, kinds, status, notes)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (
                    m.created_ts,
                    m.message_id,
                    m.recipient,
                    m.subject,
                    m.text,
                    m.html,
                    ",".join(m.kinds),
                    status,
                    json.dumps(m.notes) if m.notes else None,
                )
                for m in mails
            ],
        )

    def alert_states(self) -> tuple[dict, bool]:
        """{site_id: SiteAlert}, and whether the guard is raised. Read every cycle (2,000
        states: 11 ms; a process-wide cache of them was dropped, Dec 2026, as buying nothing
        measurable beside a cycle of about 1 s)."""
        import json as _json

        from wanmon.model import SiteAlert

        states = {
            sid: SiteAlert(**_json.loads(js)) for sid, js in self.conn.execute("SELECT site_id, state FROM alert_state")
        }
        return states, self.meta("alert_guard") == "1"

    _OUTBOX_COLS = (
        "id",
        "created_ts",
        "message_id",
        "recipient",
        "subject",
        "body_text",
        "body_html",
        "kinds",
        "status",
        "attempts",
        "last_error",
        "sent_ts",
        "next_try_ts",
        "notes",
    )

    def outbox(self, statuses: Sequence[str] | None = None, limit: int = 1000) -> list[dict]:
        cols = self._OUTBOX_COLS
        where = f"WHERE status IN ({','.join('?' * len(statuses))})" if statuses else ""
        rows = self.conn.execute(
            f"SELECT {', '.join(cols)} FROM outbox {where} ORDER BY id LIMIT ?", (*(statuses or ()), limit)
        ).fetchall()
        return [dict(zip(cols, r)) for r in rows]

    def outbox_due(self, now: float, limit: int = 1000) -> list[dict]:
        """Queued mail to try now, oldest first: never tried, or its retry time has come.
        (Mail waiting for a later retry is skipped: the rest goes out.)"""
        cols = self._OUTBOX_COLS
        rows = self.conn.execute(
            f"SELECT {', '.join(cols)} FROM outbox WHERE status = 'queued'"
            " AND (next_try_ts IS NULL OR next_try_ts <= ?) ORDER BY id LIMIT ?",
            (now, limit),
        ).fetchall()
        return [dict(zip(cols, r)) for r in rows]

    def outbox_attempt(self, mail_id: int, next_try_ts: float) -> int:
        """Count one more delivery attempt and when to retry if it fails, committed before the
        message is sent: a crash or kill in mid-send still counts. Returns the attempt number."""
        with self.transaction():
            self.conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_try_ts = ? WHERE id = ?", (next_try_ts, mail_id)
            )
            return self.conn.execute("SELECT attempts FROM outbox WHERE id = ?", (mail_id,)).fetchone()[0]

    def outbox_mark(self, mail_id: int, status: str, error: str | None = None, now: float | None = None) -> None:
        """The outcome of an attempt (counted by outbox_attempt): 'sent' (at `now`), 'failed' for
        good, or 'queued' again with `error` (its next_try_ts stays)."""
        with self.transaction():
            self.conn.execute(
                "UPDATE outbox SET status = ?, last_error = ?, sent_ts = ?,"
                " next_try_ts = CASE WHEN ? = 'queued' THEN next_try_ts END WHERE id = ?",
                (status, error, now if status == "sent" else None, status, mail_id),
            )

    def outbox_hold(self, mail_ids: Sequence[int], why: str) -> None:
        """Never send these queued mails (another agent sends, or has sent, the same news): status 'held'."""
        with self.transaction():
            self.conn.executemany(
                "UPDATE outbox SET status = 'held', last_error = ? WHERE id = ? AND status = 'queued'",
                [(why, i) for i in mail_ids],
            )

    def outbox_sent_since(self, ts: float) -> list[dict]:
        cols = self._OUTBOX_COLS
        rows = self.conn.execute(
            f"SELECT {', '.join(cols)} FROM outbox WHERE status = 'sent' AND sent_ts >= ? ORDER BY id", (ts,)
        ).fetchall()
        return [dict(zip(cols, r)) for r in rows]

    def spool_points(self, ts: float, lines: Sequence[str]) -> None:
        """Queue points for InfluxDB outside a cycle (the agents' notices)."""
        if lines:
            with self.transaction():
                self._spool(ts, lines)

    def outbox_summary(self, since_ts: float) -> dict[str, int]:
        """Counts: 'failed' = mails created since since_ts that could not be sent, 'retrying' =
        queued mails with at least one failed attempt (waiting for their retry), 'queued' = all queued."""
        failed, retrying, queued = self.conn.execute(
            "SELECT coalesce(sum(status = 'failed' AND created_ts >= ?), 0),"
            " coalesce(sum(status = 'queued' AND attempts > 0), 0), coalesce(sum(status = 'queued'), 0)"
            " FROM outbox",
            (since_ts,),
        ).fetchone()
        return {"failed": int(failed), "retrying": int(retrying), "queued": int(queued)}

    # -- the InfluxDB spool ----------------------------------------------

    def _spool(self, ts: float, lines: Iterable[str]) -> None:
        """Queue points for InfluxDB (in the caller's transaction)."""
        self.conn.executemany("INSERT INTO spool (ts, line) VALUES (?, ?)", ((ts, p) for p in lines))

    def _bound_spool(self, now: float, max_points: int, max_age_s: float) -> None:
        """Drop the oldest points past the bounds, counting them (in the caller's transaction)."""
        dropped = self.conn.execute("DELETE FROM spool WHERE ts < ?", (now - max_age_s,)).rowcount
        lo, hi = self.conn.execute("SELECT min(id), max(id) FROM spool").fetchone()
        if lo is not None and hi - lo + 1 > max_points:  # ids are contiguous: only the head is ever deleted
            dropped += self.conn.execute("DELETE FROM spool WHERE id <= ?", (hi - max_points,)).rowcount
        if dropped:
            total = int(self.meta("spool_dropped") or 0) + dropped
            self._set_meta("spool_dropped", str(total))
            logger.warning(
                "spool full: dropped the %d oldest points (%d dropped in all); "
                "InfluxDB has not accepted points for a while: run `wanmon influx check`",
                dropped,
                total,
            )

    def spool_head(self, limit: int, after_id: int = 0) -> list[tuple[int, str]]:
        """The oldest `limit` points (with id > after_id), in order."""
        return self.conn.execute(
            "SELECT id, line FROM spool WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
        ).fetchall()

    def spool_ack(self, ids: Sequence[int]) -> None:
        """The server acknowledged these points: remove them. A batch is a run of
        consecutive spool rows (rows between its ids are gone already), so one
        range delete does it."""
        if not ids:
            return
        with self.transaction():
            self.conn.execute("DELETE FROM spool WHERE id >= ? AND id <= ?", (min(ids), max(ids)))

    def spool_quarantine(self, ids: Sequence[int], status: int | None, error: str, now: float) -> None:
        """Move points the server rejects for good (400/422) out of the queue, keeping them for inspection."""
        with self.transaction():
            for i in ids:
                self.conn.execute(
                    "INSERT INTO spool_quarantine (id, ts, line, status, error, quarantined_at)"
                    " SELECT id, ts, line, ?, ?, ? FROM spool WHERE id = ?",
                    (status, error[:500], now, i),
                )
                self.conn.execute("DELETE FROM spool WHERE id = ?", (i,))

    def spool_stats(self) -> SpoolStats:
        lo, hi, oldest = self.conn.execute("SELECT min(id), max(id), min(ts) FROM spool").fetchone()
        quarantined = self.conn.execute("SELECT count(*) FROM spool_quarantine").fetchone()[0]
        return {
            "points": 0 if lo is None else hi - lo + 1,
            "oldest_ts": oldest,
            "dropped": int(self.meta("spool_dropped") or 0),
            "quarantined": quarantined,
            "last_sent_ts": float(self.meta("spool_last_sent") or 0) or None,
            "last_error": self.meta("spool_last_error"),
        }

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self.conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def meta_prefixed(self, prefix: str) -> dict[str, str]:
        """Every meta entry whose key starts with prefix."""
        return dict(self.conn.execute("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)))

    def note_output(self, key: str, value: str, mails: Sequence = ()) -> None:
        """An output's health (wanmon.outputs), with the NOC's notice queued in the same transaction."""
        with self.transaction():
            self._set_meta(key, value)
            self._queue(mails, "queued")

    def set_meta(self, **values: str | None) -> None:
        with self.transaction():
            for k, v in values.items():
                self._set_meta(k, v)

    def dns_cache(self) -> dict[str, tuple[str, float]]:
        """Last good address of each host name: {name: (ip, resolved_ts)} (see wanmon.dns)."""
        rows = self.conn.execute("SELECT name, ip, resolved_ts FROM dns_cache").fetchall()
        return {name: (ip, ts) for name, ip, ts in rows}

    def dns_cache_update(self, entries: dict[str, str], now: float) -> None:
        """Record fresh DNS answers {name: ip} resolved at `now` (only fresh ones: never a cached
        address again, or its age would restart)."""
        if not entries:
            return
        with self.transaction():
            self.conn.executemany(
                "INSERT INTO dns_cache (name, ip, resolved_ts) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET ip = excluded.ip, resolved_ts = excluded.resolved_ts",
                ((name, ip, now) for name, ip in entries.items()),
            )

    def record_snmp(
        self,
        outcomes: Sequence[SnmpOutcome],
        points: Sequence[str] = (),
        ts: float | None = None,
        spool_limits: tuple[int, float] | None = None,
    ) -> None:
        """Store one SNMP poll's outcomes and its InfluxDB points (spooled at `ts`), atomically.
        Its events reach the alerts of the next cycle (`reboots_after`)."""
        if points and ts is None:
            raise ValueError("record_snmp: points need ts, the time they are spooled at")
        with self.transaction():
            self._record_snmp(outcomes)
            if points and ts is not None:
                self._spool(ts, points)
            if spool_limits and ts is not None:
                self._bound_spool(ts, *spool_limits)

    def reboots_after(self) -> tuple[list[Event], int]:
        """SNMP reboot events the alerts have not seen yet: ([Event], last event id).

        A store without the mark (new, or from before it existed) starts from its
        newest event: old reboots are history, not news."""
        last = self.conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        seen = self.meta("alert_events_seen")
        if seen is None:
            return [], last
        after = int(seen)
        if after > last:  # retention emptied the table and ids start again: all of it is new
            after = 0
        rows = self.conn.execute(
            "SELECT ts, site_id, kind, detail, data FROM events WHERE id > ? AND kind = 'reboot' ORDER BY id",
            (after,),
        ).fetchall()
        return [_event(r) for r in rows], last

    def _record_snmp(self, outcomes: Sequence[SnmpOutcome]) -> None:
        if not outcomes:
            return
        _upsert(self.conn, "snmp_device", [o.device for o in outcomes])
        self.conn.executemany(
            "INSERT INTO snmp_samples (site_id, ts, status, reason, uptime_s, uplink_in_bps, uplink_out_bps,"
            " uplink_util_in_pct, uplink_util_out_pct) VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (
                    d.site_id,
                    d.last_poll_ts,
                    d.status,
                    d.reason,
                    d.uptime_s if d.status == "ok" else None,
                    *(
                        (d.uplink_in_bps, d.uplink_out_bps, d.uplink_util_in_pct, d.uplink_util_out_pct)
                        if d.status == "ok"
                        else (None, None, None, None)
                    ),
                )
                for d in (o.device for o in outcomes)
            ],
        )
        for o in outcomes:
            if o.interfaces is None:
                continue  # failed poll: the last good interface data stays
            keep = [i.if_index for i in o.interfaces]
            self.conn.execute(
                f"DELETE FROM snmp_if WHERE site_id = ? AND if_index NOT IN ({','.join('?' * len(keep))})",
                (o.device.site_id, *keep),
            )
            _upsert(self.conn, "snmp_if", o.interfaces, site_id=o.device.site_id)
            self.conn.executemany(
                "INSERT INTO if_samples (site_id, if_index, ts, in_bps, out_bps, util_in_pct, util_out_pct,"
                " oper_status, in_errors, out_errors, in_discards, out_discards) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        o.device.site_id,
                        i.if_index,
                        i.sample_ts,
                        i.in_bps,
                        i.out_bps,
                        i.util_in_pct,
                        i.util_out_pct,
                        i.oper_status,
                        i.in_errors,
                        i.out_errors,
                        i.in_discards,
                        i.out_discards,
                    )
                    for i in o.interfaces
                ],
            )
        self.conn.executemany(
            "INSERT INTO events (ts, site_id, kind, detail, data) VALUES (?,?,?,?,?)",
            [_event_row(e) for o in outcomes for e in o.events],
        )

    def _update_state(
        self, cycle_id: int, obs: Iterable[Observation], maintenance: Collection[str] = (), run_cap_s: float = 120.0
    ) -> None:
        prev = {
            r[0]: r[1:]
            for r in self.conn.execute(
                "SELECT site_id, status, since, consecutive_failures, last_reachable_ts, last_ts,"
                " run_start, run_maint FROM site_state"
            )
        }
        rows = []
        changes = []
        closed = []
        back = 0.0
        for o in obs:
            p_status, p_since, p_fail, p_reach, p_last, p_run, p_maint = prev.get(
                o.site_id, (None, None, 0, None, None, None, 0)
            )
            if p_last is not None and o.ts < p_last:  # the clock was set back
                p_status, p_since, p_run = self._rewind(o.site_id, o.ts, p_status, p_since, p_run)
                back = max(back, p_last - o.ts)
                p_last = o.ts
            since = advance(Track(p_status, p_since, 1) if p_status is not None else None, o.status, o.ts).since
            if p_status is not None and p_status != o.status:
                changes.append(
                    _event_row(
                        Event(
                            o.ts, o.site_id, "status", f"{p_status} -> {o.status}", {"from": p_status, "to": o.status}
                        )
                    )
                )
            elif p_status is None and o.status in PROBLEMS:
                # A problem at its first observation: the incident log starts it here, marked
                # first seen (it may have begun earlier: nobody was looking).
                changes.append(
                    _event_row(
                        Event(
                            o.ts,
                            o.site_id,
                            "status",
                            f"first seen {o.status}",
                            {"from": None, "to": o.status, "first_seen": True},
                        )
                    )
                )
            failed = (o.sent > 0 and o.received == 0) or o.status in FAILING
            fails = p_fail + 1 if failed else 0
            reach = o.ts if o.status in REACHABLE else p_reach
            maint = int(o.site_id in maintenance)
            run = p_run
            if p_run is None or not run_goes_on(p_status, p_maint, p_last, o.status, maint, o.ts, run_cap_s):
                if p_run is not None:  # its last cycle holds until this one, at most the cap
                    closed.append((o.site_id, p_status, p_maint, p_run, p_last + held_s(p_last, o.ts, run_cap_s)))
                run = o.ts
            rows.append(
                (
                    o.site_id,
                    o.name,
                    o.level,
                    o.district,
                    o.address,
                    o.status,
                    since,
                    o.ts,
                    cycle_id,
                    fails,
                    reach,
                    o.loss_pct if o.sent else None,
                    o.rtt_avg_ms,
                    o.jitter_ms,
                    o.reason,
                    run,
                    maint,
                )
            )
        if back:
            logger.warning(
                "kind=clock_back the clock was set back %.0f s: the sites' history after this cycle's "
                "time is dropped (the next cycles observe that time again)",
                back,
            )
        self.written_states = [SiteState(*r[:8], *r[9:15]) for r in rows]
        self.conn.executemany(
            "INSERT OR REPLACE INTO site_state (site_id, name, level, district, address, status, since, last_ts,"
            " last_cycle_id, consecutive_failures, last_reachable_ts, loss_pct, rtt_avg_ms, jitter_ms, reason,"
            " run_start, run_maint) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        self.conn.executemany(
            "INSERT INTO status_runs (site_id, status, maint, start_ts, end_ts) VALUES (?,?,?,?,?)", closed
        )
        # Status changes are the incident log (page, alerts): kept like the other events.
        self.conn.executemany("INSERT INTO events (ts, site_id, kind, detail, data) VALUES (?,?,?,?,?)", changes)

    def _rewind(
        self, site_id: str, ts: float, status: str | None, since: float | None, run: float | None
    ) -> tuple[str | None, float | None, float | None]:
        """The clock set back: an observation at ts, before the site's last one. The clock now
        puts the site's history after ts in the future, and the next cycles observe that time
        again: it is dropped (its status runs cut at ts, its status changes after ts deleted),
        so no time is counted twice and no `since` lies ahead of an observation. Returns where
        the site stood at ts: (status, since, open run start); status None: not seen before ts."""
        after = self.conn.execute(
            "SELECT detail, data FROM events WHERE site_id = ? AND kind = 'status' AND ts > ? ORDER BY ts, id LIMIT 1",
            (site_id, ts),
        ).fetchone()
        self.conn.execute("DELETE FROM events WHERE site_id = ? AND kind = 'status' AND ts > ?", (site_id, ts))
        self.conn.execute(
            "DELETE FROM status_runs WHERE end_ts > ? AND site_id = ? AND start_ts >= ?", (ts, site_id, ts)
        )
        self.conn.execute("UPDATE status_runs SET end_ts = ? WHERE end_ts > ? AND site_id = ?", (ts, ts, site_id))
        if run is not None and run >= ts:
            run = None  # the open run began after ts: dropped
        if since is not None and since > ts:  # the status began after ts: the first change dropped says what held
            status = None if after is None else _change(*after)[0]
            last = self.status_change_before(site_id, math.nextafter(ts, math.inf))
            # since when: the change into it, if logged (an up site's first observation is not); else ts
            since = last[0] if last is not None and last[2] == status else ts
        return status, since, run

    def rebuild_runs(
        self, cap_s: float, now: float, maintenance_at: Callable[[float], Collection[str]] | None = None
    ) -> int | None:
        """Once, after an upgrade from a store without status runs (schema < RUNS_SCHEMA; meta
        runs_rebuild): each site's runs rebuilt from the raw samples the old store kept, by the
        cycle's own method (_update_state): a sample's status holds until the site's next sample,
        at most cap_s; maintenance_at(ts) gives the sites in a window then. The open run goes to
        site_state, so the next cycle continues it. Time older than the raw samples (kept only as
        hourly rollups, which cannot tell down from unreachable, nor when) is not history: meta
        history_from is where it starts, and the report says so. Returns the runs written, None
        when there is nothing to do (one meta read per cycle)."""
        if self.meta("runs_rebuild") != "pending":
            return None
        t0 = time.monotonic()
        runs: dict[str, list] = {}  # site_id: [status, maint, start, last ts] of its open run
        closed: list[tuple] = []
        first = None
        n = written = 0
        maint: Collection[str] = ()
        maint_ts = None
        with self.transaction():
            for sid, ts, status in self.conn.execute(  # in time order: memory is one run per site
                "SELECT site_id, ts, status FROM icmp_samples INDEXED BY icmp_samples_ts ORDER BY ts"
            ):
                n += 1
                first = ts if first is None else first
                if maintenance_at is not None and ts != maint_ts:
                    maint, maint_ts = maintenance_at(ts), ts
                m = int(sid in maint)
                r = runs.get(sid)
                if r is not None and run_goes_on(r[0], r[1], r[3], status, m, ts, cap_s):
                    r[3] = ts
                    continue
                if r is not None:
                    closed.append((sid, r[0], r[1], r[2], r[3] + held_s(r[3], ts, cap_s)))
                runs[sid] = [status, m, ts, ts]
            for sid, (status, m, start, last) in runs.items():
                kept = self.conn.execute(
                    "UPDATE site_state SET run_start = ?, run_maint = ? WHERE site_id = ?"
                    " AND status = ? AND last_ts = ?",
                    (start, m, sid, status, last),
                ).rowcount
                if kept:
                    written += 1  # open: the next cycle continues it
                else:  # not the site's current state (cannot happen unless edited): held at most the cap
                    closed.append((sid, status, m, start, last + cap_s))
            self.conn.executemany(
                "INSERT INTO status_runs (site_id, status, maint, start_ts, end_ts) VALUES (?,?,?,?,?)", closed
            )
            written += len(closed)
            hour = None if first is None else first - first % 3600
            older = self.conn.execute(  # rollups of samples the raw table no longer has
                "SELECT 1 FROM icmp_hourly WHERE ? IS NULL OR hour < ? OR (hour = ? AND samples >"
                " (SELECT count(*) FROM icmp_samples s WHERE s.site_id = icmp_hourly.site_id AND s.ts >= ? AND s.ts < ?))"
                " LIMIT 1",
                (hour, hour, hour, hour, None if hour is None else hour + 3600),
            ).fetchone()
            start = first if first is not None else now
            self._set_meta("history_from", repr(start) if older else None)
            self._set_meta("runs_rebuild", None)
        logger.info(
            "store upgrade path=%s: status runs rebuilt from %d raw samples (%d runs, %d sites) in %.1f s; history %s",
            self.path,
            n,
            written,
            len(runs),
            time.monotonic() - t0,
            f"before {time.strftime('%Y-%m-%d %H:%M %z', time.localtime(start))} was kept only as hourly "
            "rollups: reports start there"
            if older
            else "is whole",
        )
        return written

    def checkpoint(self) -> None:
        """Copy the WAL into the database as far as no reader holds it (PASSIVE: never waits)."""
        self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def apply_retention(self, now: float, raw_days: int, rollup_days: int) -> tuple[int, int]:
        """Delete raw samples and cycles older than raw_days, rollups older than rollup_days.
        At most once an hour (meta retention_ts): the rollups' delete reads the whole table."""
        last = self.meta("retention_ts")
        if last is not None and 0 <= now - float(last) < 3600:
            return 0, 0
        raw_cut = now - raw_days * 86400
        roll_cut = now - rollup_days * 86400
        with self.transaction():
            n_raw = self.conn.execute("DELETE FROM icmp_samples WHERE ts < ?", (raw_cut,)).rowcount
            self.conn.execute("DELETE FROM cycles WHERE started_at < ?", (raw_cut,))
            n_roll = self.conn.execute("DELETE FROM icmp_hourly WHERE hour < ?", (roll_cut,)).rowcount
            n_raw += self.conn.execute("DELETE FROM snmp_samples WHERE ts < ?", (raw_cut,)).rowcount
            n_raw += self.conn.execute("DELETE FROM if_samples WHERE ts < ?", (raw_cut,)).rowcount
            self.conn.execute("DELETE FROM events WHERE ts < ?", (roll_cut,))
            self.conn.execute("DELETE FROM status_runs WHERE end_ts < ?", (roll_cut,))
            self.conn.execute("DELETE FROM outage_paths WHERE start_ts < ?", (roll_cut,))
            self._set_meta("retention_ts", repr(now))
        if n_raw or n_roll:
            logger.info("store retention raw_deleted=%d rollups_deleted=%d", n_raw, n_roll)
        return n_raw, n_roll

    # -- reading ---------------------------------------------------------

    def states(self) -> list[SiteState]:
        rows = self.conn.execute(
            "SELECT site_id, name, level, district, address, status, since, last_ts, consecutive_failures,"
            " last_reachable_ts, loss_pct, rtt_avg_ms, jitter_ms, reason FROM site_state"
        ).fetchall()
        return [SiteState(*r) for r in rows]

    def last_cycle(self) -> dict | None:
        r = self.conn.execute(
            "SELECT id, started_at, finished_at, duration_ms, sites, up, degraded, down, unreachable, unknown"
            " FROM cycles ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if r is None:
            return None
        keys = (
            "id",
            "started_at",
            "finished_at",
            "duration_ms",
            "sites",
            "up",
            "degraded",
            "down",
            "unreachable",
            "unknown",
        )
        return dict(zip(keys, r))

    def devices(self) -> dict[str, DeviceState]:
        return {d.site_id: d for d in _select(self.conn, DeviceState, "snmp_device")}

    # -- what the status page reads (page.py holds no SQL) ----------------

    def hourly_since(self, start: float) -> Iterator[tuple[str, float, float, int, int, int]]:
        """The hourly rollups from `start` on, by site then hour:
        (site_id, hour, rtt_sum_ms, rtt_n, sent, received)."""
        return self.conn.execute(  # site by site: never a scan of the whole retention
            "SELECT h.site_id, h.hour, h.rtt_sum_ms, h.rtt_n, h.sent, h.received FROM site_state s"
            " JOIN icmp_hourly h ON h.site_id = s.site_id AND h.hour >= ? ORDER BY s.site_id, h.hour",
            (start,),
        )

    def status_runs(
        self, start: float, end: float, now: float, cap_s: float
    ) -> list[tuple[str, str, int, float, float]]:
        """Each site's runs of one status that overlap [start, end): (site_id, status, maint, from, to),
        the runs still open (site_state) held from their last cycle for min(now - it, cap_s)."""
        # The end_ts index picks the runs of a period out of a long history; where every run ends
        # after `start` (the period reaches back over the whole history: a young store, a year's
        # report) it picks them all, each at the cost of a lookup: a plain scan is then faster
        # (157,525 runs: 0.13 s against 0.20). The first end is one step down the index.
        (first_end,) = self.conn.execute("SELECT min(end_ts) FROM status_runs").fetchone()
        table = "status_runs NOT INDEXED" if first_end is not None and first_end > start else "status_runs"
        rows = self.conn.execute(
            f"SELECT site_id, status, maint, start_ts, end_ts FROM {table} WHERE end_ts > ? AND start_ts < ?",
            (start, end),
        ).fetchall()
        for sid, status, maint, run, last in self.conn.execute(
            "SELECT site_id, status, run_maint, run_start, last_ts FROM site_state WHERE run_start IS NOT NULL"
        ):
            to = last + held_s(last, now, cap_s)
            if to > start and run < end:
                rows.append((sid, status, maint, run, to))
        return rows

    def run_cap_s(self, default: float) -> float:
        """The cap the last cycle recorded its runs with (wanmon.account.cap_s): the open runs
        are held by the same one."""
        v = self.meta("run_cap_s")
        return float(v) if v is not None else default

    def cadence_s(self) -> float | None:
        """The checks' real spacing as the last cycle measured it (wanmon.account.cadence_s)."""
        v = self.meta("cadence_s")
        return float(v) if v is not None else None

    def recent_starts(self, n: int) -> list[float]:
        """The start times of the last n cycles, oldest first."""
        rows = self.conn.execute("SELECT started_at FROM cycles ORDER BY id DESC LIMIT ?", (n,)).fetchall()
        return [r[0] for r in reversed(rows)]

    def previous_cycles(self) -> dict[str, tuple[str, float, int]]:
        """{site_id: (status, ts, in maintenance)} of each site's last recorded cycle."""
        return {r[0]: r[1:] for r in self.conn.execute("SELECT site_id, status, last_ts, run_maint FROM site_state")}

    def site_labels(self) -> dict[str, tuple[str, str, str | None]]:
        """{site_id: (name, level, district)} as last recorded (sites since removed from the config too)."""
        return {r[0]: r[1:] for r in self.conn.execute("SELECT site_id, name, level, district FROM site_state")}

    def status_events_since(self, start: float) -> list[tuple[float, str, str, str]]:
        """Status changes since start, oldest first: [(ts, site_id, old status, new status)]."""
        return [
            (ts, sid, *_change(detail, data))
            for ts, sid, detail, data in self.conn.execute(
                "SELECT ts, site_id, detail, data FROM events WHERE kind = 'status' AND ts >= ? ORDER BY ts, id",
                (start,),
            )
        ]

    def status_change_before(self, site_id: str, ts: float) -> tuple[float, str, str] | None:
        """A site's last status change before ts: (ts, old status, new status), or None."""
        row = self.conn.execute(
            "SELECT ts, detail, data FROM events WHERE site_id = ? AND ts < ? AND kind = 'status'"
            " ORDER BY ts DESC, id DESC LIMIT 1",
            (site_id, ts),
        ).fetchone()
        return None if row is None else (row[0], *_change(row[1], row[2]))

    def device_lines(self) -> dict[str, DeviceLine]:
        """The columns of each device the status page shows: at 10,000 sites reading whole
        DeviceState rows cost the page 0.3 s, these a third of it."""
        cols = ", ".join(DeviceLine._fields)
        return {r[0]: DeviceLine._make(r) for r in self.conn.execute(f"SELECT {cols} FROM snmp_device")}

    def interfaces(self, site_id: str | None = None) -> dict[str, dict[int, IfState]]:
        out: dict[str, dict[int, IfState]] = {}
        where, args = ("WHERE site_id = ?", (site_id,)) if site_id else ("", ())
        cols = ", ".join(f.name for f in fields(IfState))
        for row in self.conn.execute(f"SELECT site_id, {cols} FROM snmp_if {where} ORDER BY site_id, if_index", args):
            out.setdefault(row[0], {})[row[1]] = IfState(*row[1:])
        return out

    def good_paths(self, site_ids: Collection[str] | None = None) -> dict[str, Trace]:
        """{site_id: the last path that reached it} (wanmon.trace), of every site or of site_ids."""
        out = {}
        sql = "SELECT site_id, ts, ip, hops FROM good_paths"
        for sid, ts, ip, hops in self._for_sites(sql, site_ids):
            path = tuple(Hop(d, a, r) for d, (a, r) in enumerate(json.loads(hops), start=1))
            out[sid] = Trace(ip, ip, ts, path, True)
        return out

    def good_path_ts(self) -> dict[str, float]:
        """{site_id: when its good path was traced}: what the cycle's plan of traces reads."""
        return dict(self.conn.execute("SELECT site_id, ts FROM good_paths"))

    def _for_sites(self, sql: str, site_ids: Collection[str] | None, where: str = "WHERE site_id") -> list:
        """Rows of sql, only those of site_ids when given (`where`: the clause's start, on the
        column; SQLite binds at most 32,766 values)."""
        if site_ids is None:
            return self.conn.execute(sql).fetchall()
        ids, rows = list(site_ids), []
        for k in range(0, len(ids), 30000):
            part = ids[k : k + 30000]
            rows += self.conn.execute(f"{sql} {where} IN ({','.join('?' * len(part))})", part).fetchall()
        return rows

    def record_traces(self, outages: Sequence[OutagePath], good: dict[str, Trace]) -> None:
        """Keep the outage paths (one per site and incident: a second trace of the same incident
        is ignored) and the good paths (wanmon.cycle.run_traces), in one transaction."""
        rows = [
            (
                o.site_id,
                o.start_ts,
                o.trace.ts,
                o.trace.ip,
                int(o.trace.reached),
                o.trace.reason,
                o.trace.duration_ms,
                json.dumps([[h.address, h.rtt_ms, int(h.unreachable)] for h in o.trace.hops]),
                o.good_hops,
                o.good_ts,
            )
            for o in outages
        ]
        with self.transaction():
            self.conn.executemany(
                "INSERT OR IGNORE INTO outage_paths (site_id, start_ts, ts, ip, reached, reason, duration_ms, hops,"
                " good_hops, good_ts) VALUES (?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            self._record_good_paths(good)

    def outage_paths(self, since: float) -> list[OutagePath]:
        """The outage paths of the incidents that began at or after `since`, oldest first."""
        rows = self.conn.execute(
            "SELECT site_id, start_ts, ts, ip, reached, reason, duration_ms, hops, good_hops, good_ts"
            " FROM outage_paths WHERE start_ts >= ? ORDER BY start_ts",
            (since,),
        ).fetchall()
        return [_outage_path(r) for r in rows]

    def current_outage_paths(self, site_ids: Collection[str] | None = None) -> dict[str, OutagePath]:
        """{site_id: the outage path of its incident now}: the sites whose recorded state is down,
        with a path traced since that stretch began (all such sites, or those of site_ids)."""
        sql = (
            "SELECT o.site_id, o.start_ts, o.ts, o.ip, o.reached, o.reason, o.duration_ms, o.hops, o.good_hops,"
            " o.good_ts FROM outage_paths o JOIN site_state s ON s.site_id = o.site_id AND s.since = o.start_ts"
            " WHERE s.status = 'down'"
        )
        return {r[0]: _outage_path(r) for r in self._for_sites(sql, site_ids, "AND o.site_id")}

    def outage_traced(self, site_ids: Collection[str]) -> set[tuple[str, float]]:
        """(site_id, start_ts) of the incidents of these sites that have an outage path."""
        return {(r[0], r[1]) for r in self._for_sites("SELECT site_id, start_ts FROM outage_paths", site_ids)}

    def record_good_paths(self, paths: dict[str, Trace]) -> None:
        """Keep each site's path that reached it (others are ignored), replacing the older one."""
        with self.transaction():
            self._record_good_paths(paths)

    def _record_good_paths(self, paths: dict[str, Trace]) -> None:
        rows = [
            (sid, t.ts, t.ip, json.dumps([[h.address, h.rtt_ms] for h in t.hops]))
            for sid, t in paths.items()
            if t.reached and t.ip is not None
        ]
        if rows:
            self.conn.executemany(
                "INSERT INTO good_paths (site_id, ts, ip, hops) VALUES (?, ?, ?, ?) ON CONFLICT(site_id) DO UPDATE"
                " SET ts = excluded.ts, ip = excluded.ip, hops = excluded.hops",
                rows,
            )

    def events(self, site_id: str | None = None, limit: int = 100) -> list[Event]:
        where, args = ("WHERE site_id = ?", (site_id,)) if site_id else ("", ())
        rows = self.conn.execute(
            f"SELECT ts, site_id, kind, detail, data FROM events {where} ORDER BY ts DESC, id DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [_event(r) for r in rows]


def _change(detail: str, data: str | None) -> tuple[str, str]:
    """A status event's (old, new): its data, or for events from before data was kept, the
    "old -> new" detail this module wrote."""
    if data is not None:
        d = json.loads(data)
        return d["from"], d["to"]
    old, _, new = detail.partition(" -> ")
    return old, new


def _outage_path(r: Sequence) -> OutagePath:
    sid, start, ts, ip, reached, reason, duration_ms, hops, good_hops, good_ts = r
    path = tuple(Hop(d, a, rtt, bool(u)) for d, (a, rtt, u) in enumerate(json.loads(hops), start=1))
    return OutagePath(sid, start, Trace(ip or "", ip, ts, path, bool(reached), reason, duration_ms), good_hops, good_ts)


def _event_row(e: Event) -> tuple:
    return e.ts, e.site_id, e.kind, e.detail, None if e.data is None else json.dumps(e.data)


def _event(row: Sequence) -> Event:
    """An events row (ts, site_id, kind, detail, data); data None for events from before it was kept."""
    return Event(row[0], row[1], row[2], row[3], None if row[4] is None else json.loads(row[4]))


def check_integrity(path: Path) -> list[str]:
    """PRAGMA quick_check of the store at `path` ([] when sound). Findings mark it damaged (writes
    stop); a store that passes clears an earlier mark (it was restored). About 2.6 s for an
    86 MB store (10,000 sites, 470,000 samples) here: daily in the daemon, `wanmon store check` from cron."""
    try:
        st = Store.open_readonly(path, any_older=True)  # a store not upgraded yet is checked as it is
    except StoreError as exc:
        if not means_damage(str(exc)):
            raise  # missing, unreadable, foreign: not damage
        mark_damaged(path, [str(exc)])
        return [str(exc)]
    try:
        problems = st.quick_check()
    finally:
        st.close()
    if problems:
        mark_damaged(path, problems)
    elif clear_damaged(path):
        logger.warning("store check passed path=%s: the damage mark is cleared, writes resume", path)
    return problems


class _Tx:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error (autocommit connection)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


def astuple_dict(row) -> dict:
    return {f.name: getattr(row, f.name) for f in fields(row)}


def _upsert(conn: sqlite3.Connection, table: str, rows: Sequence, **extra) -> None:
    """INSERT OR REPLACE dataclass rows whose field names are the table's columns."""
    if not rows:
        return
    names = [*extra, *(f.name for f in fields(rows[0]))]
    sql = f"INSERT OR REPLACE INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
    fixed = tuple(extra.values())
    conn.executemany(sql, [fixed + tuple(astuple_dict(r).values()) for r in rows])


def _select(conn: sqlite3.Connection, cls, table: str) -> list:
    cols = ", ".join(f.name for f in fields(cls))
    return [cls(*r) for r in conn.execute(f"SELECT {cols} FROM {table}")]


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (no semicolons inside our literals)."""
    parts = []
    for chunk in script.split(";"):
        lines = [ln.split("--", 1)[0] for ln in chunk.splitlines()]
        stmt = "\n".join(lines).strip()
        if stmt:
            parts.append(stmt)
    return parts
