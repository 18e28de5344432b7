#!/usr/bin/env bash
# Quick start, command 1: install wanmon (pip install ., not editable) into .venv,
# validate the shipped sites.toml, run one cycle over its 177 sites on the
# embedded store (var/wanmon.db) and write the status page (public/index.html).
# No InfluxDB, no SMTP needed.
set -euo pipefail
# libpango + fonts-dejavu-core: `wanmon report --format pdf` (WeasyPrint; DejaVu has the Vietnamese letters)
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" iproute2 libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core
cd "$ROOT"
"$VENV/bin/python" -m pip install -q "$ROOT"
"$VENV/bin/wanmon" --config sites.toml validate
"$VENV/bin/wanmon" --config sites.toml check
echo "Done. Status page: $ROOT/public/index.html; current state: $VENV/bin/wanmon status (store: var/wanmon.db)"
