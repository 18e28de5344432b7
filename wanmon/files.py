"""Files written whole or not at all, in folders that others can read."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

# A temporary nobody has written to for this long, whose writer's process is gone, was left
# by a writer killed mid-write (kill -9 skips the cleanup in `replacing`).
STALE_S = 60.0


def make_folder(path: Path, mode: int = 0o755) -> None:
    """Create the folder `path` and its missing parents, each with `mode` whatever the umask:
    mkdir's mode is filtered by it, so under `umask 000` the page folder was world-writable
    (and under 077 a web server could not read it). Folders that exist are left as they are."""
    missing = []
    p = Path(path)
    while not p.is_dir() and p.parent != p:
        missing.append(p)
        p = p.parent
    for p in reversed(missing):
        try:
            os.mkdir(p, mode)
        except FileExistsError:
            continue  # another process made it first: its mode is its creator's
        os.chmod(p, mode)


@contextlib.contextmanager
def replacing(path: Path, *, binary: bool = False, mode: int = 0o644, **open_kw: Any) -> Iterator[IO]:
    """Write `path` atomically: a temp file in its folder, given `mode` and renamed over `path`
    when the block ends, removed if it raises. A reader sees the old file or the new one,
    never half of one. The temp's name holds the writer's pid, so the next write can tell
    the leftovers of a killed writer from the temp of one still writing (_remove_stale)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **open_kw) as f:
            yield f
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _remove_stale(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _remove_stale(path: Path) -> None:
    """Remove the temporaries of `path` left by writers that were killed: named for a pid that
    is gone (or for none: the 8 random characters of an older wanmon's names) and not written
    to for STALE_S. A live writer's temp is never touched: its pid is alive (the age also
    spares, while it writes, a writer whose pid this machine cannot see: another pid namespace
    or host sharing the folder). Costs one listing of the folder per write."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)\.[^.]+|[a-z0-9_]{{8}})")
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for e in entries:
            m = pattern.fullmatch(e.name)
            if m is None or (m.group(1) is not None and _alive(int(m.group(1)))):
                continue
            with contextlib.suppress(OSError):
                if now - e.stat(follow_symlinks=False).st_mtime > STALE_S and e.is_file(follow_symlinks=False):
                    os.unlink(e.path)


def write_whole(path: Path, data: bytes, mode: int = 0o644) -> None:
    """`data` into `path` atomically, creating its folder (0755)."""
    path = Path(path)
    make_folder(path.parent)
    with replacing(path, binary=True, mode=mode) as f:
        f.write(data)
