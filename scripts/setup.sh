#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine (as root) for postfix_smtp:
#   - Debian's Postfix 3.7 package, installed without configuring or starting
#     a system instance (debconf "No configuration", policy-rc.d during install);
#   - a virtual environment readable by mail_owner (the agent drops privileges
#     to it), by default /opt/postfix_smtp/venv, with this package and pytest.
# Idempotent; prints what it did. Usage: scripts/setup.sh [VENV_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-${POSTFIX_SMTP_VENV:-/opt/postfix_smtp/venv}}
[ "$(id -u)" = 0 ] || { echo "setup.sh: run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive

need=()
for pkg in postfix python3-venv ca-certificates postfix-lmdb postfix-pcre postfix-cdb \
           libsasl2-modules dovecot-core; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  trap '[ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -q
  apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${need[@]}"
fi
/usr/sbin/postconf -d -h mail_version | sed 's/^/postfix /'

py=/usr/bin/python3
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$venv/bin/python" -m pip install -q "$here[test]"
# mail_owner must read the venv (the agent imports after dropping privileges)
chmod -R a+rX "$venv"
d=$(dirname "$venv"); while [ "$d" != / ]; do chmod a+x "$d"; d=$(dirname "$d"); done
echo "venv: $venv ($("$venv/bin/python" -c 'import postfix_smtp, sys; print("postfix_smtp", postfix_smtp.__version__, "python", sys.version.split()[0])'))"
