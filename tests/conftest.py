"""Shared helpers: run the real CLI as a user (or cron) would."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import prereq

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _private_cache_home(tmp_path_factory):
    """The user's cache folder (XDG_CACHE_HOME: wanmon's parsed-TOML cache, ~/.cache/wanmon) in the
    session's temporary folder, for the tests and every process they start: hundreds of test
    configs in temporary folders are not left in the user's cache (they were: 287 files, 369 MB
    here), and no test reads what another run left there. Tests of the cache set their own."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache-home"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


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


# The Vietnamese alphabet (with the Latin letters it borrows in their Latin places): the tests'
# own statement of the order that mails, pages and reports must follow, independent of ICU.
VI_ALPHABET = "a ă â b c d đ e ê f g h i j k l m n o ô ơ p q r s t u ư v w x y z".split()
_TONES = {"\u0300", "\u0301", "\u0303", "\u0309", "\u0323"}  # huyền, sắc, ngã, hỏi, nặng


def vi_letters(text: str) -> tuple[int, ...]:
    """text's letters as places in VI_ALPHABET, tones dropped (the primary order); a space or
    any other sign before every letter. Names in Vietnamese order have non-decreasing keys."""
    import unicodedata

    bare = unicodedata.normalize("NFC", "".join(c for c in unicodedata.normalize("NFD", text.lower())
                                                if c not in _TONES))
    return tuple(VI_ALPHABET.index(c) if c in VI_ALPHABET else -1 for c in bare)


def damage_store(db: Path) -> None:
    """Overwrite the store's fourth page with garbage and drop its WAL: quick_check finds it."""
    raw = bytearray(db.read_bytes())
    raw[3 * 4096: 4 * 4096] = bytes([0x5A]) * 4096
    db.write_bytes(bytes(raw))
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)


# -- prerequisites (tests/prereq.py): a skip under CI is a failure; one list at the end --------

def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _skip_text(rep) -> str:
    lr = rep.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:  # a skip: (path, line, "Skipped: reason")
        return str(lr[2])
    return str(lr)


def _prerequisite(rep) -> None:
    """A skip for a missing prerequisite becomes a failure under CI (the report says why)."""
    if not rep.skipped or not _under_ci():
        return
    found = prereq.parse(_skip_text(rep))
    if found is None:
        return
    what, why, install = found
    rep.outcome = "failed"
    rep.longrepr = (f"CI=true and a prerequisite is missing (outside CI this is a skip).\n"
                    f"{prereq.reason(what, install, why)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _prerequisite(outcome.get_result())


def pytest_sessionfinish(session, exitstatus):
    """A whole file skipped at collection (prereq.need(..., module=True)) stays a skip, so that
    one missing tool does not stop the session under CI; the session fails instead."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not _under_ci() or reporter is None or session.exitstatus != 0:
        return
    if any(prereq.parse(_skip_text(rep)) for rep in reporter.stats.get("skipped", [])):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One list of what is missing and how to install it, whether the tests skipped or failed."""
    missing: dict[tuple[str, str], list] = {}
    for key in ("skipped", "failed", "error"):
        for rep in terminalreporter.stats.get(key, []):
            found = prereq.parse(_skip_text(rep)) if getattr(rep, "longrepr", None) is not None else None
            if found is not None:
                what, why, install = found
                missing.setdefault((what, install), []).append((why, rep.nodeid))
    if not missing:
        return
    n = sum(len(v) for v in missing.values())
    verdict = "failed: CI is set" if _under_ci() else "skipped"
    terminalreporter.section(f"missing prerequisites: {n} tests or files {verdict}", yellow=True)
    for (what, install), hits in sorted(missing.items()):
        files = sorted({nodeid.split("::")[0] for _, nodeid in hits})
        terminalreporter.write_line(f"- {what} ({hits[0][0]}): {len(hits)} in {', '.join(files)}")
        terminalreporter.write_line(f"    install: {install}")
    terminalreporter.write_line("scripts/test.sh installs all of these (Debian packages, test extras, tests/node).")
