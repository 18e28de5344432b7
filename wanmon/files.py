"""Files written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


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
    """`data` into `path` atomically, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, binary=True, mode=mode) as f:
        f.write(data)
