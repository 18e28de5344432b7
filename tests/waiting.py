"""Waiting for what a real wanmon process does, without sleeping.

End-to-end tests start real processes (`wanmon run`, `wanmon check`) and must
act at the right moment: after the daemon's third cycle, while a cycle holds
the store lock, once the log says why a reload was refused. Instead of
sleeping a guessed time or polling in a loop, these helpers block until the
thing happened, bounded by a deadline:

* `Output`: the lines a process writes to a pipe, read by a thread as they
  come (and copied to a log file); `wait_for(regex)` returns the moment a
  matching line arrives, fails at once if the process ends first.
* `FileWrites`: inotify on a folder; `wait(name, OPEN | MODIFY)` returns when
  a process opens or writes that file. wanmon writes its pid into
  `<store>.lock` right after taking the lock, so a MODIFY there means "a cycle
  has just started"; an OPEN of the store file means it is being read/written.
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import struct
import threading
import time
from pathlib import Path

MODIFY = 0x00000002  # IN_MODIFY
OPEN = 0x00000020  # IN_OPEN


class Output:
    """Lines of a process's output pipe (binary), as they come."""

    def __init__(self, stream, log: Path | None = None):
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._log = open(log, "a", encoding="utf-8") if log is not None else None
        self._thread = threading.Thread(target=self._read, args=(stream,), name="output", daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace")
                with self._cond:
                    self._lines.append(line)
                    if self._log is not None:
                        self._log.write(line)
                        self._log.flush()
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def mark(self) -> int:
        """A position: wait_for(..., start=mark) looks only at lines after it."""
        with self._cond:
            return len(self._lines)

    def text(self, start: int = 0) -> str:
        with self._cond:
            return "".join(self._lines[start:])

    def count(self, pattern: str, start: int = 0) -> int:
        rx = re.compile(pattern)
        with self._cond:
            return sum(1 for line in self._lines[start:] if rx.search(line))

    def wait_for(self, pattern: str, timeout: float = 30, start: int = 0, n: int = 1) -> re.Match:
        """The n-th line after `start` that matches `pattern` (waiting for it)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        i = start
        with self._cond:
            while True:
                while i < len(self._lines):
                    m = rx.search(self._lines[i])
                    i += 1
                    if m:
                        seen += 1
                        if seen == n:
                            return m
                tail = "".join(self._lines[-60:])
                if self._eof:
                    raise AssertionError(f"the process ended before {pattern!r} (x{n}):\n{tail}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {pattern!r} (x{n}) within {timeout} s:\n{tail}")
                self._cond.wait(left)

    def close(self, timeout: float = 10) -> None:
        """After the process ended: the rest of its output, then the log is closed."""
        self._thread.join(timeout)
        if self._log is not None:
            self._log.close()


_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


class FileWrites:
    """inotify on one folder (it must exist): which of its files are opened or written."""

    def __init__(self, folder: Path):
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(self.fd, os.fsencode(folder), MODIFY | OPEN) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, f"inotify_add_watch {folder}")
        self.folder = folder
        self._pending: list[tuple[int, str]] = []  # events read, not yet waited for

    def wait(self, name: str, mask: int, timeout: float = 30) -> None:
        """Until `name` (in the folder) is opened/written (as `mask` says) after the watch began or
        after the previous wait returned."""
        deadline = time.monotonic() + timeout
        while True:
            while self._pending:
                ev_mask, ev_name = self._pending.pop(0)
                if ev_name == name and ev_mask & mask:
                    return
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError(f"{self.folder / name}: not {_what(mask)} within {timeout} s")
            data = os.read(self.fd, 65536)
            pos = 0
            while pos < len(data):
                _, ev_mask, _, n = _EVENT.unpack_from(data, pos)
                ev_name = data[pos + _EVENT.size:pos + _EVENT.size + n].rstrip(b"\0").decode()
                pos += _EVENT.size + n
                self._pending.append((ev_mask, ev_name))

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> FileWrites:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _what(mask: int) -> str:
    return " or ".join(w for bit, w in ((OPEN, "opened"), (MODIFY, "written")) if mask & bit)
