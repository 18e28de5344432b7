"""What a test needs from the machine (root, network namespaces, a server, a tool), said once.

A test that cannot run without a prerequisite skips with `needs(...)` (a mark) or
`need(...)` (in a fixture or a test): its skip reason then says what is missing and
how to install it, in one form that conftest.py recognises. Under CI (the CI
environment variable set: `.ci/run` runs with CI=true) such a skip is a failure, so a
CI machine that lost a package fails instead of passing on fewer tests; anywhere else
it stays a skip. Either way the session ends with one list of what is missing and
how to install it (scripts/test.sh installs all of it).

Skips that are not about the machine stay plain `pytest.skip` (an old commit a
shallow clone lacks; the team's ../shared/data, that data/ is checked against).
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
from typing import NoReturn

import pytest

_FORM = "prerequisite missing: {what} [{why}] -- install: {install}"
_RX = re.compile(r"prerequisite missing: (?P<what>.*?) \[(?P<why>.*)\] -- install: (?P<install>.*)$", re.S)

# What scripts/test.sh installs, by the name a test says it needs.
ROOT = "run the tests as root (CI and scripts/test.sh do)"
NETNS = "root, and Debian packages iproute2 util-linux (ip netns, unshare)"
INFLUXDB = "Debian package influxdb (influxd 1.x)"
VICTORIA = "Debian package victoria-metrics"
NETSNMP = "Debian packages snmp snmpd"
FAKETIME = "Debian package faketime"
CHROMIUM = "Debian package chromium"
NODE = "Debian packages nodejs npm, then: cd tests/node && npm ci"
TEST_EXTRAS = "pip install -e '.[test]'"


def reason(what: str, install: str, why: str = "") -> str:
    """The skip reason of a missing prerequisite (parse() reads it back)."""
    return _FORM.format(what=what, why=why or "unavailable here", install=install)


def parse(text: str) -> tuple[str, str, str] | None:
    """(what, why, install) from a skip reason made by reason(), else None."""
    m = _RX.search(text)
    return (m["what"], m["why"], m["install"]) if m else None


def needs(ok: bool, what: str, install: str, why: str = "") -> pytest.MarkDecorator:
    """A mark: skip (a failure under CI) unless ok."""
    return pytest.mark.skipif(not ok, reason=reason(what, install, why))


def need(what: str, install: str, why: str = "", *, module: bool = False) -> NoReturn:
    """Skip now (a failure under CI); module=True at a module's top level."""
    __tracebackhide__ = True  # the skip is reported at the caller's line
    pytest.skip(reason(what, install, why), allow_module_level=module)


def need_module(name: str, install: str = TEST_EXTRAS, what: str | None = None):
    """pytest.importorskip, as a prerequisite: the module, or a skip that says how to install it."""
    __tracebackhide__ = True
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        need(what or f"python module {name}", install, str(exc), module=True)


def is_root() -> bool:
    return os.geteuid() == 0


def have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


def faketime(spec: str) -> list[str]:
    """The command prefix that runs a program on libfaketime's clock `spec` ("@2026-12-09 17:00:02":
    from that instant on; "+120": two minutes ahead), the library preloaded through env(1). Not
    the faketime(1) wrapper: it makes a named semaphore per run (/dev/shm/sem.faketime_sem_PID)
    that a killed run leaves behind, and a later run given the same PID then fails with
    "sem_open: File exists" (CI, Dec 2026). [] when the library is missing (tests skip then)."""
    import glob

    lib = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)
    return ["env", f"LD_PRELOAD={lib}", f"FAKETIME={spec}"] if lib else []
