"""Shared helpers: run the real CLI as a user (or cron) would."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def wanmon(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120,
           prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m wanmon ARGS` in a subprocess; returns the CompletedProcess (text)."""
    full_env = {k: v for k, v in os.environ.items() if k != "WANMON_CONFIG"}  # only what the test sets
    full_env.update(env or {})
    cmd = [*(prefix or []), sys.executable, "-m", "wanmon", *args]
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


MINIMAL = textwrap.dedent(
    """\
    [store]
    path = "var/wanmon.db"

    [icmp]
    count = 3
    interval_ms = 50
    timeout_ms = 500

    [[sites]]
    id = "dc-core"
    name = "Trung tâm dữ liệu"
    level = "province"
    address = "127.0.0.1"
    admins = ["noc@ttdl.example"]

    [[sites]]
    id = "tien-du"
    name = "UBND huyện Tiên Du"
    level = "district"
    district = "Tiên Du"
    parent = "dc-core"
    address = "127.10.2.1"
    admins = ["quantri@tiendu.example"]

    [[sites]]
    id = "tien-du-phat-tich"
    name = "UBND xã Phật Tích"
    level = "commune"
    district = "Tiên Du"
    parent = "tien-du"
    address = "::1"
    admins = ["quantri@phattich.tiendu.example"]

    [snmp]
    enabled = false
    """
)


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a config text into tmp_path/sites.toml and return its path."""

    def _write(text: str = MINIMAL, name: str = "sites.toml") -> Path:
        p = tmp_path / name
        p.write_text(text, encoding="utf-8")
        return p

    return _write


def damage_store(db: Path) -> None:
    """Overwrite the store's fourth page with garbage and drop its WAL: quick_check finds it."""
    raw = bytearray(db.read_bytes())
    raw[3 * 4096: 4 * 4096] = bytes([0x5A]) * 4096
    db.write_bytes(bytes(raw))
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
