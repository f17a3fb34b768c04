"""``postfix-smtp``: install the agent for master(8), show master.cf lines, run the demo.

    postfix-smtp install [--name pysmtp] [-c CONFIG_DIR] [--apply] [--personality smtp|lmtp]
    postfix-smtp master-cf [--name pysmtp]
    postfix-smtp demo [--messages 500] [--dir /tmp/postfix-smtp-demo] [--keep]

``install`` writes a wrapper into ``daemon_directory`` (``postconf -h
daemon_directory`` of the chosen instance) that execs this interpreter with
``-m postfix_smtp``; with ``--apply`` it also points the ``smtp`` and
``relay`` services of master.cf at it (``postconf -M``), runs ``postfix
check`` and tells you to ``postfix reload``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from .install import Wrapper, default_personality, master_cf_lines

SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for d in SBIN:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    raise SystemExit("postfix-smtp: %s not found (is Postfix installed?)" % name)


def _postconf(config_dir: str | None, *args: str) -> str:
    cmd = [_tool("postconf")]
    if config_dir:
        cmd += ["-c", config_dir]
    out = subprocess.run(cmd + list(args), check=True, capture_output=True, text=True)
    return out.stdout.strip()


def _readable_by(path: str, user: str) -> str | None:
    """The first directory on ``path`` that ``user`` cannot traverse, if any."""
    import pwd
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    p = os.path.realpath(path)
    parts = p.split(os.sep)
    for i in range(2, len(parts) + 1):
        d = os.sep.join(parts[:i]) or "/"
        try:
            st = os.stat(d)
        except OSError:
            return d
        if st.st_uid == pw.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid == pw.pw_gid:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return d
    return None


def cmd_install(a: argparse.Namespace) -> int:
    personality = a.personality or default_personality(a.name)
    daemon_dir = a.daemon_directory or _postconf(a.config_dir, "-h", "daemon_directory")
    mail_owner = _postconf(a.config_dir, "-h", "mail_owner")
    python = os.path.abspath(a.python or sys.executable)
    pkg_dir = os.path.dirname(os.path.abspath(__file__))
    for what in (python, pkg_dir):
        bad = _readable_by(what, mail_owner)
        if bad:
            print("postfix-smtp: warning: %s is not accessible to %s (mail_owner): the agent "
                  "drops privileges and will fail; install into a venv outside /root "
                  "(e.g. /opt/postfix_smtp/venv)" % (bad, mail_owner), file=sys.stderr)
    target = os.path.join(daemon_dir, a.name)
    Wrapper(python=python, personality=personality, pythonpath=a.pythonpath).write(target)
    print("installed %s (exec %s -m postfix_smtp, personality %s)" % (target, python, personality))
    services = ("lmtp",) if personality == "lmtp" else ("smtp", "relay")
    if a.apply:
        for svc in services:
            _postconf(a.config_dir, "-M", "%s/unix=%s unix - - n - - %s" % (svc, svc, a.name))
        if "relay" in services:
            _postconf(a.config_dir, "-P", "relay/unix/syslog_name=postfix/$service_name")
        cmd = [_tool("postfix")] + (["-c", a.config_dir] if a.config_dir else []) + ["check"]
        subprocess.run(cmd, check=True)
        print("master.cf updated; run 'postfix%s reload' to use it"
              % (" -c " + a.config_dir if a.config_dir else ""))
    else:
        print("master.cf lines (apply with --apply, or edit master.cf and 'postfix reload'):")
        for line in master_cf_lines(a.name, services):
            print(line)
    return 0


def cmd_master_cf(a: argparse.Namespace) -> int:
    services = ("lmtp",) if default_personality(a.name) == "lmtp" else ("smtp", "relay")
    for line in master_cf_lines(a.name, services):
        print(line)
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .testing.demo import run_demo
    return run_demo(a.dir, a.messages, keep=a.keep, compare_stock=a.compare_stock)


def main(argv: list | None = None) -> int:
    ap = argparse.ArgumentParser(prog="postfix-smtp", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("install", help="put the agent wrapper into daemon_directory")
    p.add_argument("--name", default="pysmtp", help="command name in master.cf (default pysmtp)")
    p.add_argument("-c", "--config-dir", dest="config_dir", help="Postfix config directory")
    p.add_argument("--daemon-directory", help="override postconf's daemon_directory")
    p.add_argument("--python", help="interpreter to exec (default: this one)")
    p.add_argument("--personality", choices=("smtp", "lmtp"))
    p.add_argument("--pythonpath", help="run from a source tree (development only)")
    p.add_argument("--apply", action="store_true", help="also update master.cf and postfix check")
    p.set_defaults(func=cmd_install)
    p = sub.add_parser("master-cf", help="print master.cf lines for the agent")
    p.add_argument("--name", default="pysmtp")
    p.set_defaults(func=cmd_master_cf)
    p = sub.add_parser("demo", help="deliver mail through a private Postfix on loopback")
    p.add_argument("--messages", type=int, default=500)
    p.add_argument("--dir", default="/tmp/postfix-smtp-demo")
    p.add_argument("--keep", action="store_true", help="leave the instance running")
    p.add_argument("--compare-stock", action="store_true",
                   help="also run the same load through the stock smtp(8)")
    p.set_defaults(func=cmd_demo)
    a = ap.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
