"""The store's locks: flocks on files beside the database, one holder at a time.

Light to import (no SQLite, no models): `wanmon check` takes the cycle lock
before it starts its sweep, ahead of loading the rest of wanmon."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from wanmon.errors import StoreBusyError


def _prepare_folder(folder: Path) -> None:
    """Create the store's folder 0700, its missing parents 0755 (two processes may race)."""
    if folder.is_dir():
        return
    from wanmon.files import make_folder  # here: tempfile's imports are not light, and this runs once

    make_folder(folder.parent)
    make_folder(folder, 0o700)


class CycleLock:
    """Exclusive, non-blocking flock on `<db><suffix>`: one holder at a time.

    `<db>.lock` guards the critical path (one cycle at a time); the SNMP poll
    (`.snmp.lock`) and publishing (`.publish.lock`: InfluxDB drain, mail) have
    their own, so a slow peer never holds the next cycle back."""

    suffix = ".lock"
    busy_message = (
        "another wanmon cycle is running on {folder} ({holder}); this run exits without doing "
        "anything. If this happens every time, the cycle takes longer than the cron interval: "
        "space the runs out or lower [icmp] timeout_ms."
    )

    def __init__(self, db_path: Path):
        self.path = db_path.with_name(db_path.name + self.suffix)
        self.fd: int | None = None

    def __enter__(self) -> CycleLock:
        _prepare_folder(self.path.parent)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 64).decode(errors="replace").strip()
            finally:
                os.close(fd)
            raise StoreBusyError(
                self.busy_message.format(folder=self.path.parent.resolve(), holder=holder or "pid unknown")
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None


class SnmpLock(CycleLock):
    suffix = ".snmp.lock"
    busy_message = "another wanmon SNMP poll is running on {folder} ({holder}): this one is skipped"


class PublishLock(CycleLock):
    suffix = ".publish.lock"
    busy_message = "another wanmon is publishing (InfluxDB, mail) from {folder} ({holder}): it will send these too"


class TraceLock(CycleLock):
    suffix = ".trace.lock"
    busy_message = (
        "another wanmon is tracing paths on {folder} ({holder}): this cycle's traces are asked again next cycle"
    )
