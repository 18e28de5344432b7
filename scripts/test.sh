#!/usr/bin/env bash
# Quick start, command 2: install what the tests need (Debian packages, pip
# packages) and run the whole test suite. Tests start and stop their own peers
# (network namespaces, responders...). Extra arguments go to pytest.
#
# Both ends of the declared dependency ranges: .venv gets the newest release that
# pyproject.toml allows and runs everything; then (on a run without arguments) a second
# venv, .venv-oldest, gets every runtime dependency at the oldest release its range allows
# (tools/oldest_constraints.py) and runs the tests that exercise those libraries.
# `bash scripts/test.sh --oldest-only [pytest args]` runs that second part alone.
set -euo pipefail
OLDEST_ONLY=0
if [ "${1:-}" = --oldest-only ]; then OLDEST_ONLY=1; shift; fi
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" iproute2 iputils-ping util-linux fping snmp snmpd lldpd influxdb victoria-metrics chromium faketime systemd \
    libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core poppler-utils
cd "$ROOT"

# The tests that use the runtime libraries without servers that are slow to start, and
# what each library is exercised by there: icmplib (real pings: test_check_loopback),
# apscheduler (the daemon's schedule: test_daemon), jinja2 (page, mail, report templates:
# test_page, test_report, test_cycle, test_alerts_seams, test_daemon_seams), pydantic (the
# config: test_config and most others), click and rich (the CLI's commands and tables:
# test_alerts_seams, test_report, test_check_loopback...), cryptography (SNMPv3 privacy:
# test_usm, test_snmpwire, test_heartbeat), weasyprint (`report --format pdf`: test_report),
# xlsxwriter (`report --format xlsx`: test_report),
# aiosmtplib (mail to the NOC: test_store, test_daemon_seams, test_mail_headers), tzdata
# (Asia/Ho_Chi_Minh: test_page, test_report, test_alert_engine; PYTHONTZPATH is emptied so
# zoneinfo reads the pinned tzdata rather than the OS's files), PyICU (Vietnamese order of the
# names in mails: test_alert_mail).
OLDEST_TESTS=(tests/test_config.py tests/test_page.py tests/test_report.py tests/test_store.py
    tests/test_cycle.py tests/test_alert_engine.py tests/test_alerts_seams.py tests/test_daemon_seams.py
    tests/test_snmpwire.py tests/test_usm.py tests/test_sink_logic.py tests/test_rates.py tests/test_stats.py
    tests/test_mail_headers.py tests/test_smtp_server.py tests/test_heartbeat.py
    tests/test_check_loopback.py tests/test_daemon.py tests/test_alert_mail.py)

test_oldest() {
    echo "test.sh: the oldest declared dependencies"
    local oldest="${WANMON_OLDEST_VENV:-$ROOT/.venv-oldest}" want
    "$VENV/bin/python" -c 'import packaging' 2>/dev/null || "$VENV/bin/python" -m pip install -q packaging
    # The venv is reused while what it was built from is unchanged; otherwise built anew.
    want="$(printf '# python %s, wanmon at %s\n' "$("$PY" -c 'import sys; print(sys.version.split()[0])')" "$ROOT"
        "$VENV/bin/python" tools/oldest_constraints.py
        echo "# test tools (newest in their ranges):"
        "$VENV/bin/python" tools/oldest_constraints.py --test-requirements)"
    if [ ! -x "$oldest/bin/python" ] || [ "$(cat "$oldest/wanmon-oldest.txt" 2>/dev/null)" != "$want" ]; then
        rm -rf "$oldest"
        "$PY" -m venv "$oldest"
        "$VENV/bin/python" tools/oldest_constraints.py >"$oldest/constraints.txt"
        "$VENV/bin/python" tools/oldest_constraints.py --test-requirements >"$oldest/test-requirements.txt"
        "$oldest/bin/python" -m pip install -q -c "$oldest/constraints.txt" -e "$ROOT" -r "$oldest/test-requirements.txt"
        printf '%s\n' "$want" >"$oldest/wanmon-oldest.txt"
    else
        echo "test.sh: reusing $oldest (built from the same constraints)"
    fi
    # What is installed, not only what was asked: a pin that did not hold fails here.
    "$oldest/bin/python" - "$oldest/constraints.txt" <<'PY'
import sys
from importlib.metadata import version
from packaging.requirements import Requirement
from packaging.version import Version
bad = 0
for line in open(sys.argv[1]).read().split("\n"):
    if not line.strip():
        continue
    req = Requirement(line)
    have = version(req.name)
    want = next(iter(req.specifier)).version
    print(f"  {req.name}=={have}")
    if Version(have) != Version(want):
        print(f"test.sh: {req.name} is {have}, not the oldest allowed {want}", file=sys.stderr)
        bad = 1
sys.exit(bad)
PY
    local rc=0
    if [ $# -eq 0 ]; then set -- "${OLDEST_TESTS[@]}"; fi
    PYTHONTZPATH= "$oldest/bin/python" -m pytest -p no:cacheprovider -n "${WANMON_TEST_WORKERS:-2}" --dist loadfile "$@" || rc=$?
    if [ "$rc" = 5 ]; then echo "test.sh: pytest collected no tests (oldest dependencies)" >&2; return 1; fi
    return "$rc"
}

# Independent decoders for the mail tests (npm: tests/node/package-lock.json).
node_tools() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        echo "setup: installing Debian packages: nodejs npm" >&2
        if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
    fi
    (cd "$ROOT/tests/node" && npm ci --no-audit --no-fund --silent)
}

if [ "$OLDEST_ONLY" = 1 ]; then
    mkdir -p test-artifacts
    node_tools
    test_oldest "$@"
    exit 0
fi

"$VENV/bin/python" -m pip install -q -e "$ROOT[test]"
# The tests start `python -m wanmon` some hundreds of times. An editable install leaves
# wanmon/ without bytecode, and with PYTHONDONTWRITEBYTECODE set (as in CI containers)
# every start compiled it again (~0.1 s each); compileall writes it once.
"$VENV/bin/python" -m compileall -q "$ROOT/wanmon" >/dev/null
# The linters first ([tool.ruff] and [tool.mypy] in pyproject.toml): any finding fails the run.
echo "test.sh: ruff check wanmon"
"$VENV/bin/ruff" check wanmon
echo "test.sh: ruff format --check wanmon"
"$VENV/bin/ruff" format --check wanmon
echo "test.sh: mypy (wanmon/)"
"$VENV/bin/mypy"
mkdir -p test-artifacts
node_tools
set +e
# Two workers, each taking whole test files (module fixtures and the servers they start stay
# with their file): most tests wait on real servers and subprocesses, so the suite takes
# ~55 % of its serial time on 2 cores. WANMON_TEST_WORKERS=0 runs it serially.
"$VENV/bin/python" -m pytest -p no:cacheprovider -n "${WANMON_TEST_WORKERS:-2}" --dist loadfile "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "test.sh: pytest collected no tests" >&2; exit 1; fi
if [ "$rc" != 0 ]; then exit "$rc"; fi
# The oldest end after a whole run (not after one narrowed by arguments); a failure fails the run.
if [ $# -eq 0 ]; then test_oldest; fi
