#!/usr/bin/env bash
# Fresh-machine test run: set up, then run the whole test suite (unit and
# integration; the integration tests need root and start private Postfix
# instances on loopback).  Extra arguments go to pytest.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${POSTFIX_SMTP_VENV:-/opt/postfix_smtp/venv}
"$here/scripts/setup.sh" "$venv"
cd "$here"
export POSTFIX_SMTP_PYTHON="$venv/bin/python"
exec "$venv/bin/python" -m pytest "$@"
