#!/usr/bin/env bash
# Quick start, command 2: install what the tests need (Debian packages, pip
# packages) and run the whole test suite. Tests start and stop their own peers
# (network namespaces, responders...). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" iproute2 iputils-ping util-linux fping snmp snmpd influxdb victoria-metrics chromium
cd "$ROOT"
"$VENV/bin/python" -m pip install -q -e "$ROOT[test]"
mkdir -p test-artifacts
set +e
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then echo "test.sh: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
