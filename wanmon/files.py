"""Files written whole or not at all, in folders that others can read."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


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
    never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **open_kw) as f:
            yield f
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_whole(path: Path, data: bytes, mode: int = 0o644) -> None:
    """`data` into `path` atomically, creating its folder (0755)."""
    path = Path(path)
    make_folder(path.parent)
    with replacing(path, binary=True, mode=mode) as f:
        f.write(data)
