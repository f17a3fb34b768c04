#!/usr/bin/env bash
# Fresh-machine demo: set up, then deliver N messages (default 500) through
# postfix_smtp in a private Postfix on loopback to a local sink, and show
# the log lines and counts.  Usage: sudo scripts/demo.sh [N]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${POSTFIX_SMTP_VENV:-/opt/postfix_smtp/venv}
"$here/scripts/setup.sh" "$venv"
exec "$venv/bin/postfix-smtp" demo --messages "${1:-500}"
