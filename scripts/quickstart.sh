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
cat <<EOF

What you see the first time:
- All 177 sites up: the shipped sites.toml holds placeholder addresses on this machine's
  loopback (127.10.x.y), which the machine answers itself. Put your routers' addresses in.
- "SNMP: 177 timeout": no SNMP agent listens on those placeholders. With real routers and
  their community (environment variable WANMON_SNMP_COMMUNITY) it shows their uptime and
  traffic; ping results do not depend on it.
- No mail was sent: sites.toml has no [smtp] yet (wanmon alerts lists what would go).

Done. Status page: $ROOT/public/index.html; current state: $VENV/bin/wanmon status (store: var/wanmon.db)
To run it as a service: README.md, "Deployment (systemd)".
EOF
