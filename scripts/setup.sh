#!/usr/bin/env bash
# Shared set-up: Debian packages (only those missing) and the project's venv.
# Usage: source scripts/setup.sh [apt packages...]; then use "$VENV/bin/...".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WANMON_VENV:-$ROOT/.venv}"
export ROOT VENV

need_apt=()
# Always: what pip needs to build PyICU (Vietnamese alphabetical order, wanmon/collate.py), which PyPI
# ships as source only: ICU's headers, pkg-config to find them, a C++ compiler, Python's headers.
for pkg in "$@" libicu-dev pkg-config g++ python3-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null 2>&1; then need_apt+=(python3 python3-venv python3-pip); PY=python3; fi
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
    echo "setup: installing Debian packages: ${need_apt[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "wanmon needs Python >= 3.11, found " + sys.version.split()[0])'
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV" >&2
    if ! "$PY" -m venv "$VENV" 2>/dev/null; then
        ${SUDO:-} apt-get install -y -qq python3-venv >/dev/null
        "$PY" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
