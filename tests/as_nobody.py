"""Running wanmon as another user (uid 65534, nobody) from a checkout that user cannot read.

A clone often sits in a 0700 folder (root's home, CI's workspace): uid 65534 can
neither import wanmon from it nor, when the venv lives in the clone, start its
interpreter. Only what that subprocess needs is made readable, never the checkout:

* `readable_copy(dest)`: wanmon/ and templates/ copied under dest/src (a+rX), the
  PYTHONPATH that user imports wanmon from;
* `venv_view(dest)`: the interpreter seen through dest/venv, a bind mount of
  sys.prefix made in a private mount namespace (`unshare -m`, root), so the venv and
  its packages are reachable without opening the folders above them.

`command(dest, argv)` puts both together: an argv to run as root that runs
`python -m wanmon ARGS` (or any python argv) as uid 65534 in that view.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def readable_copy(dest: Path) -> Path:
    """dest/src with wanmon/ and templates/ (no bytecode): a PYTHONPATH uid 65534 can import from."""
    src = dest / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "wanmon", src / "wanmon", ignore=ignore)
    shutil.copytree(REPO / "templates", src / "templates", ignore=ignore)
    for folder in (src, *[p for p in src.rglob("*") if p.is_dir()]):  # dest's mode is the caller's
        os.chmod(folder, 0o755)
    for f in src.rglob("*"):
        if f.is_file():
            os.chmod(f, 0o644)
    return src


def venv_view(dest: Path) -> tuple[str, str]:
    """(a shell line to run as root inside `unshare -m`, the interpreter's path in the view)."""
    exe = Path(sys.executable)
    prefix = Path(sys.prefix)
    if exe.parent.parent != prefix:  # not a venv's bin/python: use it where it is
        return ":", str(exe)
    view = dest / "venv"
    view.mkdir(mode=0o755, exist_ok=True)
    return f"mount --bind {shlex.quote(str(prefix))} {shlex.quote(str(view))}", str(view / "bin" / exe.name)


def command(dest: Path, argv: list[str], setpriv_opts: list[str] | None = None) -> list[str]:
    """argv (python's arguments, e.g. ["-m", "wanmon", "status"]) run as uid 65534 with wanmon
    from readable_copy(dest) and the interpreter through venv_view(dest), in a private mount
    namespace (setpriv_opts: more of setpriv's options, e.g. capabilities). The copy must exist
    (readable_copy)."""
    mount, python = venv_view(dest)
    # setpriv execs the interpreter itself (not through env): wherever the interpreter lies
    inner = [*AS_NOBODY, *(setpriv_opts or []), python, *argv]
    script = f"{mount} && PYTHONPATH={shlex.quote(str(dest / 'src'))} exec {shlex.join(inner)}"
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
