"""A real SASL server for the tests: a private Dovecot auth service
(package dovecot-core) behind a private Postfix smtpd, both on loopback.

:class:`DovecotAuth` runs ``dovecot -c CONF`` with only the auth service
(no mail protocols), a passwd-file of test users with plaintext passwords
(so CRAM-MD5 and SCRAM work), and an auth socket that Postfix's smtpd uses
with ``smtpd_sasl_type = dovecot``.  It is stopped by its own master pid.

:func:`receiving_instance` is a :class:`PostfixInstance` whose smtpd
offers AUTH through that socket and relays only for authenticated clients
(loopback is not in its mynetworks); everything it accepts is discarded.
Its log says which mechanism a client used (``sasl_method=...``) or failed
with (``SASL X authentication failed``).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tempfile
import time

from postfix_smtp.testing.instance import PostfixInstance, kill_pid, pid_alive

DOVECOT = "/usr/sbin/dovecot"
MECHANISMS = "plain login cram-md5 scram-sha-1 scram-sha-256 anonymous"

CONF = """\
# private Dovecot for postfix_smtp SASL tests: auth service only
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_anonymous_username = anonymous-user
auth_verbose = yes
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}
service auth {{
  unix_listener {base}/auth {{
    mode = 0666
  }}
}}
service anvil {{
  # no auth penalty: the tests fail passwords on purpose, and the penalty
  # delays (up to 15 s) would make smtpd give up on the auth server
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


def dovecot_available() -> bool:
    return os.access(DOVECOT, os.X_OK)


class DovecotAuth:
    def __init__(self, base: str, users: dict, mechanisms: str = MECHANISMS) -> None:
        self.base = os.path.abspath(base)
        self.users = dict(users)
        self.mechanisms = mechanisms
        self.conf = os.path.join(self.base, "dovecot.conf")
        self.socket = os.path.join(self.base, "auth")
        self.log_path = os.path.join(self.base, "dovecot.log")

    @property
    def master_pid(self):
        try:
            with open(os.path.join(self.base, "run", "master.pid")) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    def start(self) -> None:
        for sub in ("run", "state"):
            os.makedirs(os.path.join(self.base, sub), exist_ok=True)
        os.chmod(self.base, 0o755)
        with open(os.path.join(self.base, "passwd"), "w") as f:
            for user, pw in self.users.items():      # base64: a password may hold ':'
                f.write("%s:{PLAIN.b64}%s::::::\n"
                        % (user, base64.b64encode(pw.encode()).decode()))
        os.chmod(os.path.join(self.base, "passwd"), 0o644)
        with open(self.conf, "w") as f:
            f.write(CONF.format(base=self.base, mechanisms=self.mechanisms))
        # output to a file, not a pipe: the daemonized master would hold a pipe open
        with tempfile.TemporaryFile() as out:
            r = subprocess.run([DOVECOT, "-c", self.conf], stdin=subprocess.DEVNULL,
                               stdout=out, stderr=subprocess.STDOUT, timeout=30)
            out.seek(0)
            text = out.read().decode(errors="replace")
        if r.returncode != 0:
            raise RuntimeError("dovecot did not start: %s" % text)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if os.path.exists(self.socket):
                return
            time.sleep(0.05)
        raise RuntimeError("dovecot auth socket did not appear:\n%s" % self.log())

    def stop(self) -> None:
        pid = self.master_pid
        if pid:
            try:
                subprocess.run([DOVECOT, "-c", self.conf, "stop"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
            except subprocess.TimeoutExpired:
                pass
            end = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            kill_pid(pid)

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __enter__(self) -> "DovecotAuth":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def receiving_instance(base: str, dovecot: DovecotAuth, **main_cf) -> PostfixInstance:
    """A Postfix smtpd with Dovecot SASL that relays for authenticated
    clients only; ``main_cf`` adds or replaces parameters (for example
    ``smtpd_sasl_mechanism_filter`` to control which mechanisms it offers)."""
    cf = {
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_type": "dovecot",
        "smtpd_sasl_path": dovecot.socket,
        "mynetworks": "127.0.0.2/32",
        "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
        "smtpd_recipient_restrictions": "",
        "default_transport": "discard:",
        "relay_transport": "discard:",
        "relayhost": "",
        "smtpd_banner": "$myhostname ESMTP relay",
    }
    cf.update(main_cf)
    return PostfixInstance(base, myhostname="relay.test.invalid", main_cf=cf, max_lifetime=300,
                           quick_start=True)


AUTH_OK = re.compile(r"postfix/smtpd\[\d+\]: \w+: client=\S+, sasl_method=(\S+), "
                     r"sasl_username=(\S+)")
AUTH_FAIL = re.compile(r"postfix/smtpd\[\d+\]: warning: \S+: SASL (\S+) authentication failed")


def server_auth_events(inst: PostfixInstance) -> list:
    """What the receiving smtpd saw: ("ok", MECH, USER) or ("fail", MECH)."""
    out = []
    for line in inst.log_lines():
        m = AUTH_OK.search(line)
        if m:
            out.append(("ok", m.group(1).rstrip(","), m.group(2)))
            continue
        m = AUTH_FAIL.search(line)
        if m:
            out.append(("fail", m.group(1)))
    return out


def cleanup(path: str) -> None:
    if not os.environ.get("POSTFIX_SMTP_KEEP_TMP"):
        shutil.rmtree(path, ignore_errors=True)
