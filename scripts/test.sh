#!/usr/bin/env bash
# Quick start, command 2: install what the tests need (Debian packages, pip
# packages) and run the whole test suite. Tests start and stop their own peers
# (network namespaces, responders...). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" iproute2 iputils-ping util-linux fping snmp snmpd influxdb victoria-metrics chromium faketime \
    libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core poppler-utils
cd "$ROOT"
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
# Independent decoders for the mail tests (npm: tests/node/package-lock.json).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "setup: installing Debian packages: nodejs npm" >&2
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
(cd "$ROOT/tests/node" && npm ci --no-audit --no-fund --silent)
mkdir -p test-artifacts
set +e
# Two workers, each taking whole test files (module fixtures and the servers they start stay
# with their file): most tests wait on real servers and subprocesses, so the suite takes
# ~55 % of its serial time on 2 cores. WANMON_TEST_WORKERS=0 runs it serially.
"$VENV/bin/python" -m pytest -p no:cacheprovider -n "${WANMON_TEST_WORKERS:-2}" --dist loadfile "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "test.sh: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
