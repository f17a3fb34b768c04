"""A private, loopback-only Postfix instance for tests, and Postfix's smtp-sink.

:class:`PostfixInstance` builds a complete Postfix instance under one
directory ``base`` (it must be reachable by user ``postfix``, i.e. every
parent directory o+x: use ``/tmp/...`` or ``/dev/shm/...``)::

    base/etc/       config_directory (main.cf, master.cf)
    base/spool/     queue_directory
    base/data/      data_directory (owned by postfix)
    base/log/maillog  maillog_file, written by postlogd (no syslog needed)
    base/libexec/   only with an agent: daemon_directory = symlinks to every
                    stock daemon + the agent wrapper

All mail is relayed to ``relayhost``; nothing is delivered locally.  With
``agent`` set, master(8) runs it for the ``smtp`` and ``relay`` services in
place of the stock smtp(8).

Facts this relies on (Postfix 3.7, checked by experiment):

- master(8) runs ``daemon_directory + "/" + command`` (no PATH search, an
  absolute command is not special), hence the per-instance daemon_directory.
- master(8) gives its children a scrubbed environment (no PATH, no HOME):
  the agent wrapper must exec an absolute interpreter.
- ``maillog_file`` needs the ``postlog unix-dgram`` service and a path under
  ``maillog_file_prefixes``; ``data_directory`` must be owned by postfix.
- ``postfix stop`` does not wait for the children; they are found afterwards
  by their environment (``MAIL_CONFIG=base/etc``), never by name.
- The relay target must greet with a name other than ``myhostname``, or
  smtp(8) reports a mail loop.

Must run as root.  Standard library only.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence

LOOPBACK = "127.0.0.1"
STOCK_DAEMON_DIR_FALLBACK = "/usr/lib/postfix/sbin"
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")
MARKER = ".postfix_smtp-instance"
SBIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")

# (name, mode, group postdrop?) from postfix-files; owner mail_owner except pid (root)
QUEUE_DIR_LAYOUT = (
    ("active", 0o700, False), ("bounce", 0o700, False), ("corrupt", 0o700, False),
    ("defer", 0o700, False), ("deferred", 0o700, False), ("flush", 0o700, False),
    ("hold", 0o700, False), ("incoming", 0o700, False), ("private", 0o700, False),
    ("maildrop", 0o730, True), ("public", 0o710, True), ("pid", 0o755, False),
    ("saved", 0o700, False), ("trace", 0o700, False),
)

DEFAULT_SENDER = "sender@src.test.invalid"
DEFAULT_RECIPIENT = "rcpt@dest.test.invalid"


class HarnessError(RuntimeError):
    """A harness operation failed (the message includes the relevant output)."""


# ---------------------------------------------------------------------------
# small process / filesystem helpers


def tool(name: str) -> str:
    """Absolute path of a Postfix tool (/usr/sbin is not always on PATH)."""
    for d in SBIN_DIRS:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    p = shutil.which(name)
    if p:
        return p
    raise HarnessError("%s not found (is Postfix installed?)" % name)


def postfix_available() -> bool:
    return all(os.access(os.path.join("/usr/sbin", t), os.X_OK)
               for t in ("postfix", "postconf", "sendmail"))


_stock_daemon_dir: Optional[str] = None


def stock_daemon_dir() -> str:
    """The installed daemon_directory (``postconf -d -h daemon_directory``)."""
    global _stock_daemon_dir
    if _stock_daemon_dir is None:
        try:
            r = subprocess.run([tool("postconf"), "-d", "-h", "daemon_directory"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, universal_newlines=True, timeout=30)
            d = r.stdout.strip()
        except (OSError, subprocess.SubprocessError, HarnessError):
            d = ""
        _stock_daemon_dir = d if d and os.path.isdir(d) else STOCK_DAEMON_DIR_FALLBACK
    return _stock_daemon_dir


def _run(cmd: Sequence[str], timeout: float = 60, check: bool = True,
         input: Optional[bytes] = None) -> subprocess.CompletedProcess:
    # Output goes to a temporary file, not a pipe: ``postfix start`` leaves
    # daemons behind that would hold a pipe open (EOF only ~2 s later).
    with tempfile.TemporaryFile() as out:
        if input is None:
            p = subprocess.run(list(cmd), stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, timeout=timeout)
        else:
            p = subprocess.run(list(cmd), input=input, stdout=out,
                               stderr=subprocess.STDOUT, timeout=timeout)
        out.seek(0)
        r = subprocess.CompletedProcess(p.args, p.returncode, out.read())
    if check and r.returncode != 0:
        raise HarnessError("command failed (rc=%d): %s\n%s" % (
            r.returncode, " ".join(cmd), r.stdout.decode("utf-8", "replace")))
    return r


def pid_alive(pid: Optional[int]) -> bool:
    """True if pid exists and is not a zombie (pid 1 may reap orphans late)."""
    if not pid:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except (OSError, ValueError):
        return False
    try:
        state = data.rsplit(")", 1)[1].split()[0]
    except IndexError:
        return False
    return state not in ("Z", "X", "x")


def _proc_ppid(pid: int) -> Optional[int]:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def proc_cmdline(pid: int) -> List[str]:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [a.decode("utf-8", "replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _proc_environ(pid: int) -> List[bytes]:
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def children_of(pid: int) -> List[int]:
    """Live child pids of pid."""
    kids: List[int] = []
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        for name in os.listdir("/proc"):
            if name.isdigit() and _proc_ppid(int(name)) == pid:
                kids.append(int(name))
    return [k for k in kids if pid_alive(k)]


def wait_gone(pid: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def kill_pid(pid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds. Only this pid."""
    if not pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if wait_gone(pid, grace):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_gone(pid, 2.0)


def free_port(host: str = LOOPBACK, exclude: Iterable[int] = ()) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    exclude = set(exclude)
    for _ in range(50):
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.bind((host, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in exclude:
            return port
    raise HarnessError("could not find a free port on %s" % host)


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _write_file(path: str, text: str, mode: int = 0o644) -> None:
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _tail(path: str, n: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no %s)\n" % path


def unreachable_ancestor(path: str) -> Optional[str]:
    """The first ancestor directory of ``path`` that other users cannot search, or None."""
    d = os.path.dirname(os.path.abspath(path))
    while True:
        if os.path.isdir(d) and not os.stat(d).st_mode & 0o001:
            return d
        if d in ("/", ""):
            return None
        d = os.path.dirname(d)


def readable_by_others(path: str) -> bool:
    """True if a user with no special rights (e.g. postfix) can reach and read
    ``path`` and, for a directory, everything below it (skipping __pycache__)."""
    path = os.path.abspath(path)
    if unreachable_ancestor(path):
        return False
    if not os.path.exists(path):
        return False
    if os.path.isfile(path):
        return bool(os.stat(path).st_mode & 0o004)
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if os.stat(root).st_mode & 0o005 != 0o005:
            return False
        for f in files:
            try:
                if not os.stat(os.path.join(root, f)).st_mode & 0o004:
                    return False
            except OSError:
                return False
    return True


def copy_package_for_postfix(package_dir: str, dest_parent: Optional[str] = None) -> str:
    """Copy a package directory (e.g. .../postfix_smtp) into a new directory that
    user postfix can read; returns that directory (to use as PYTHONPATH).
    The caller removes it when done."""
    top = tempfile.mkdtemp(prefix="postfix_smtp-src-", dir=dest_parent or "/tmp")
    os.chmod(top, 0o755)
    dst = os.path.join(top, os.path.basename(os.path.normpath(package_dir)))
    shutil.copytree(package_dir, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for root, dirs, files in os.walk(top):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    return top


def postfix_readable_source_root(package_dir: Optional[str] = None):
    """(pythonpath, cleanup_dir) such that ``pythonpath`` contains the
    ``postfix_smtp`` package and user postfix can read it.

    ``package_dir`` defaults to this checkout's ``postfix_smtp`` directory.  When
    its parent is readable by others, that parent is returned and cleanup_dir is
    None; otherwise (e.g. a checkout under /root) the package is copied into a
    fresh directory under /tmp, returned as both values (remove it when done).
    """
    if package_dir is None:
        package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    package_dir = os.path.abspath(package_dir)
    root = os.path.dirname(package_dir)
    if readable_by_others(package_dir):
        return root, None
    top = copy_package_for_postfix(package_dir)
    return top, top


def _master_cf_args(args: Sequence[str]) -> str:
    out = []
    for a in args:
        if not a or any(c.isspace() for c in a):
            out.append("{ %s }" % a)   # Postfix >= 3.0 master.cf grouping
        else:
            out.append(a)
    return "".join(" " + a for a in out)


MASTER_CF = """\
# postfix_smtp test instance: every service chroot=n, loopback only
{smtpd_host}:{smtpd_port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
tlsproxy  unix  -       -       n       -       0       tlsproxy
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       {maxproc} {smtp_cmd}{smtp_args}
relay     unix  -       -       n       -       {maxproc} {smtp_cmd}
  -o syslog_name=postfix/$service_name{smtp_args}
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
# postfix_smtp test instance (private; nothing here touches a system instance)
compatibility_level = 3.6
queue_directory = {spool}
data_directory = {data}
daemon_directory = {daemon_dir}
mail_owner = postfix
setgid_group = postdrop
myhostname = {myhostname}
mydomain = test.invalid
myorigin = $myhostname
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 local delivery is disabled in this test instance
alias_maps =
alias_database =
inet_interfaces = {lo}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_banner = $myhostname ESMTP postfix_smtp-test
relayhost = {relayhost}
default_transport = smtp
relay_transport = relay
maillog_file = {maillog}
maillog_file_prefixes = {base}
biff = no
append_dot_mydomain = no
smtp_tls_security_level = none
smtpd_tls_security_level = none
"""

# Stops the instance if the test process went away without doing so.
# argv: config_dir master_pid_file master_pid seconds postfix_binary
_WATCHDOG = r"""
import os, signal, subprocess, sys, time
etc, pidfile, mpid, secs, postfix = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X", "x")
    except Exception:
        return False
end = time.monotonic() + secs
while time.monotonic() < end:
    if not alive(mpid):
        sys.exit(0)
    time.sleep(1.0)
try:
    with open(pidfile) as f:
        same = int(f.read().split()[0]) == mpid
except Exception:
    same = False
if same and alive(mpid):
    subprocess.run([postfix, "-c", etc, "stop"], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    for _ in range(150):
        if not alive(mpid):
            break
        time.sleep(0.1)
    else:
        try:
            os.kill(mpid, signal.SIGKILL)
        except OSError:
            pass
"""


# ---------------------------------------------------------------------------


@dataclass
class PostfixInstance:
    """A private Postfix instance under ``base`` (see the module docstring).

    ``agent`` is a :class:`postfix_smtp.install.Wrapper` (or any object with a
    ``write(path)`` method that writes an executable there); None runs the
    stock smtp(8).  ``smtpd_port`` 0 picks a free 127.0.0.1 port at start().
    The instance stops itself ``max_lifetime`` seconds after start() (a
    detached watchdog), in case the test process dies first.

    ``quick_start`` creates the queue directories itself (modes and owners as
    in postfix-files) and starts with ``$queue_directory/quick-start`` present,
    which makes ``postfix start`` skip its integrity checks (``post-install
    create-missing``, ``postsuper``, permission checks): start() takes ~0.1 s
    instead of ~0.35 s.
    """

    base: str
    relayhost: str = ""
    agent: Any = None
    agent_name: str = "smtp"
    smtp_args: List[str] = field(default_factory=list)
    smtp_maxproc: str = "-"
    main_cf: Dict[str, str] = field(default_factory=dict)
    myhostname: str = "mx.test.invalid"
    smtpd_port: int = 0
    max_lifetime: float = 900.0
    quick_start: bool = False

    def __post_init__(self) -> None:
        self.base = os.path.abspath(self.base)
        self.config_dir = os.path.join(self.base, "etc")
        self.queue_dir = os.path.join(self.base, "spool")
        self.data_dir = os.path.join(self.base, "data")
        self.log_dir = os.path.join(self.base, "log")
        self.log_path = os.path.join(self.log_dir, "maillog")
        self.libexec_dir = os.path.join(self.base, "libexec")
        self.daemon_dir = self.libexec_dir if self.agent is not None else stock_daemon_dir()
        self._watchdog: Optional[subprocess.Popen] = None

    # -- paths and state ---------------------------------------------------

    @property
    def master_pid_file(self) -> str:
        return os.path.join(self.queue_dir, "pid", "master.pid")

    @property
    def master_pid(self) -> Optional[int]:
        try:
            with open(self.master_pid_file) as f:
                pid = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    @property
    def smtp_command(self) -> str:
        """The master.cf command of the smtp and relay services."""
        return self.agent_name if self.agent is not None else "smtp"

    @property
    def smtpd_address(self) -> str:
        return "[%s]:%d" % (LOOPBACK, self.smtpd_port)

    def processes(self) -> List[int]:
        """pids of live processes of this instance (environment MAIL_CONFIG=config_dir)."""
        key = ("MAIL_CONFIG=" + self.config_dir).encode()
        me = os.getpid()
        out = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            pid = int(name)
            if pid != me and key in _proc_environ(pid) and pid_alive(pid):
                out.append(pid)
        return out

    # -- building ----------------------------------------------------------

    def _prepare_dirs(self, keep_queue: bool) -> None:
        if os.geteuid() != 0:
            raise HarnessError("PostfixInstance must run as root")
        bad = unreachable_ancestor(os.path.join(self.base, "x"))
        if bad:
            raise HarnessError(
                "%s is not searchable by other users, so user postfix cannot reach %s; "
                "use a directory under /tmp or /dev/shm" % (bad, self.base))
        if self.base == "/":
            raise HarnessError("refusing to build an instance in /")
        marker = os.path.join(self.base, MARKER)
        if os.path.exists(self.config_dir) and not os.path.exists(marker):
            raise HarnessError("%s already has an etc/ and is not a postfix_smtp test "
                               "instance; refusing to wipe it" % self.base)
        os.makedirs(self.base, exist_ok=True)
        os.chmod(self.base, 0o755)
        with open(marker, "w") as f:
            f.write("postfix_smtp test instance\n")
        wipe = ["etc", "data", "libexec"]
        if not keep_queue:
            wipe += ["spool", "log"]
        for sub in wipe:
            p = os.path.join(self.base, sub)
            if os.path.islink(p) or os.path.isfile(p):
                os.unlink(p)
            elif os.path.isdir(p):
                shutil.rmtree(p)
        pf = pwd.getpwnam("postfix")
        for p in (self.config_dir, self.queue_dir, self.log_dir):
            os.makedirs(p, exist_ok=True)
            os.chmod(p, 0o755)
        os.makedirs(self.data_dir, exist_ok=True)
        os.chown(self.data_dir, pf.pw_uid, pf.pw_gid)
        os.chmod(self.data_dir, 0o700)
        open(self.log_path, "a").close()
        os.chmod(self.log_path, 0o644)
        if self.quick_start:
            self._create_queue_dirs(pf.pw_uid)

    def _create_queue_dirs(self, postfix_uid: int) -> None:
        """What ``post-install create-missing`` does for the queue (postfix-files)."""
        postdrop_gid = grp.getgrnam("postdrop").gr_gid
        for name, mode, gid in QUEUE_DIR_LAYOUT:
            p = os.path.join(self.queue_dir, name)
            os.makedirs(p, exist_ok=True)
            os.chown(p, 0 if name == "pid" else postfix_uid, postdrop_gid if gid else -1)
            os.chmod(p, mode)
        open(os.path.join(self.queue_dir, "quick-start"), "w").close()

    def _make_daemon_dir(self) -> None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", self.agent_name):
            raise HarnessError("agent_name must be a plain file name: %r" % self.agent_name)
        os.makedirs(self.libexec_dir)
        os.chmod(self.libexec_dir, 0o755)
        stock = stock_daemon_dir()
        for name in sorted(os.listdir(stock)):
            os.symlink(os.path.join(stock, name), os.path.join(self.libexec_dir, name))
        target = os.path.join(self.libexec_dir, self.agent_name)
        if os.path.lexists(target):
            os.unlink(target)
        self.agent.write(target)
        os.chmod(target, 0o755)

    def _write_config(self) -> None:
        _write_file(os.path.join(self.config_dir, "main.cf"), MAIN_CF.format(
            spool=self.queue_dir, data=self.data_dir, daemon_dir=self.daemon_dir,
            myhostname=self.myhostname, lo=LOOPBACK, relayhost=self.relayhost,
            maillog=self.log_path, base=self.base))
        _write_file(os.path.join(self.config_dir, "master.cf"), MASTER_CF.format(
            smtpd_host=LOOPBACK, smtpd_port=self.smtpd_port, maxproc=self.smtp_maxproc,
            smtp_cmd=self.smtp_command, smtp_args=_master_cf_args(self.smtp_args)))
        if self.main_cf:
            self.postconf(*("%s=%s" % kv for kv in self.main_cf.items()))
        self._age_config()

    def _age_config(self) -> None:
        """Backdate main.cf/master.cf.  Postfix programs reading a file modified
        within the last second or so pause 0.3 s at a time "to let it cool down"
        (dict_load_file_xt): ~2.4 s for every postfix/postconf/sendmail call
        right after a change.  Nothing watches these mtimes, so this is safe."""
        t = time.time() - 60
        for name in ("main.cf", "master.cf"):
            p = os.path.join(self.config_dir, name)
            if os.path.exists(p):
                os.utime(p, (t, t))

    # -- lifecycle ---------------------------------------------------------

    def start(self, keep_queue: bool = False) -> None:
        """Build the instance and start Postfix; returns when master, qmgr and
        smtpd are up.  ``keep_queue`` keeps spool/ and log/ from a previous run."""
        if self.master_pid:
            raise HarnessError("%s is already running (master pid %d)" % (self.base, self.master_pid))
        self._prepare_dirs(keep_queue)
        if self.agent is not None:
            self._make_daemon_dir()
        attempts = 3 if not self.smtpd_port else 1
        fixed_port = bool(self.smtpd_port)
        for attempt in range(attempts):
            if not fixed_port:
                self.smtpd_port = free_port()
            self._write_config()
            try:
                self._start_postfix()
                break
            except HarnessError:
                log = _tail(self.log_path, 50)
                self.stop()
                if attempt + 1 < attempts and "Address already in use" in log:
                    continue
                raise
        self._start_watchdog()

    def _start_postfix(self) -> None:
        postfix = tool("postfix")
        r = _run([postfix, "-c", self.config_dir, "start"], timeout=60, check=False)
        if r.returncode != 0:
            raise HarnessError("postfix start failed (rc=%d):\n%s\n--- maillog ---\n%s" % (
                r.returncode, r.stdout.decode("utf-8", "replace"), _tail(self.log_path)))
        end = time.monotonic() + 15
        mpid = None
        have_qmgr = smtpd_up = False
        while time.monotonic() < end:
            mpid = mpid or self.master_pid
            if mpid and not have_qmgr:
                have_qmgr = any(os.path.basename((proc_cmdline(k) or [""])[0]) == "qmgr"
                                for k in children_of(mpid))
            if mpid and not smtpd_up:
                smtpd_up = port_open(self.smtpd_port)
            if mpid and have_qmgr and smtpd_up:
                return
            time.sleep(0.05)
        raise HarnessError("postfix did not come up within 15 s (master=%s qmgr=%s smtpd=%s)"
                           "\n--- maillog ---\n%s" % (mpid, have_qmgr, smtpd_up, _tail(self.log_path)))

    def _start_watchdog(self) -> None:
        mpid = self.master_pid
        if not mpid or self.max_lifetime <= 0:
            return
        python = sys.executable or "/usr/bin/python3"
        self._watchdog = subprocess.Popen(
            [python, "-c", _WATCHDOG, self.config_dir, self.master_pid_file, str(mpid),
             str(self.max_lifetime), tool("postfix")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True)

    def _stop_watchdog(self) -> None:
        w, self._watchdog = self._watchdog, None
        if w is None:
            return
        if w.poll() is None:
            w.terminate()
            try:
                w.wait(5)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait(5)

    def stop(self) -> None:
        """``postfix stop``, then kill what is left of this instance by pid.
        Idempotent."""
        self._stop_watchdog()
        mpid = self.master_pid
        if mpid:
            try:
                _run([tool("postfix"), "-c", self.config_dir, "stop"], timeout=60, check=False)
            except (HarnessError, subprocess.TimeoutExpired):
                pass
            if not wait_gone(mpid, 15):
                kill_pid(mpid)
        # leftovers (e.g. an agent that ignored master's SIGTERM): only this
        # instance's processes, found by environment, never by name
        left: List[int] = []
        end = time.monotonic() + 3
        while time.monotonic() < end:
            left = self.processes()
            if not left:
                break
            time.sleep(0.1)
        for pid in left:
            kill_pid(pid, grace=1)

    def __enter__(self) -> "PostfixInstance":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- control -----------------------------------------------------------

    def postconf(self, *settings: str) -> None:
        """``postconf -c etc -e NAME=VALUE ...`` (takes effect after reload())."""
        if settings:
            _run([tool("postconf"), "-c", self.config_dir, "-e"] + list(settings))
            self._age_config()

    def postconf_get(self, name: str) -> str:
        """The value of a parameter as this instance sees it (``postconf -h``)."""
        r = _run([tool("postconf"), "-c", self.config_dir, "-h", name])
        return r.stdout.decode("utf-8", "replace").strip()

    def reload(self) -> None:
        _run([tool("postfix"), "-c", self.config_dir, "reload"])

    def flush(self) -> None:
        """``postqueue -f``: attempt delivery of all queued mail now."""
        _run([tool("postqueue"), "-c", self.config_dir, "-f"])

    # -- injection ---------------------------------------------------------

    def sendmail(self, message: bytes, sender: str, recipients: Sequence[str],
                 extra_args: Sequence[str] = ()) -> None:
        """Submit with ``sendmail -C etc -i -f sender [extra_args] -- recipients``.

        ``-i`` is always given, so a line with a single "." is content, not
        the end of the message.
        """
        if isinstance(message, str):
            message = message.encode("utf-8")
        cmd = [tool("sendmail"), "-C", self.config_dir, "-i", "-f", sender]
        cmd += list(extra_args) + ["--"] + list(recipients)
        _run(cmd, timeout=60, input=message)

    def smtp_submit(self, message: bytes, sender: str, recipients: Sequence[str],
                    mail_params: str = "", rcpt_params: Optional[Dict[str, str]] = None,
                    timeout: float = 30) -> str:
        """Submit over SMTP to this instance's smtpd; returns the queue id.

        ``message`` is sent with bare LF turned into CRLF and dot-stuffed.
        ``mail_params`` is appended to MAIL FROM, ``rcpt_params[rcpt]`` to
        that recipient's RCPT TO.  Any unexpected reply raises HarnessError.
        """
        if isinstance(message, str):
            message = message.encode("utf-8")
        rcpt_params = rcpt_params or {}
        with _SmtpClient(LOOPBACK, self.smtpd_port, timeout) as c:
            c.expect(None, "2", "greeting")
            c.expect("EHLO client.test.invalid", "2")
            c.expect("MAIL FROM:<%s>%s" % (sender, " " + mail_params if mail_params else ""), "2")
            for r in recipients:
                p = rcpt_params.get(r, "")
                c.expect("RCPT TO:<%s>%s" % (r, " " + p if p else ""), "2")
            c.expect("DATA", "3")
            reply = c.expect_data(_dot_stuff(message), "2")
            try:
                c.command("QUIT")
            except OSError:
                pass
        m = re.search(r"queued as ([0-9A-Za-z]+)", reply)
        if not m:
            raise HarnessError("no queue id in the reply to end of data: %r" % reply)
        return m.group(1)

    def inject_many(self, count: int, size: int = 2000, recipients: int = 1,
                    sessions: int = 8, sender: str = DEFAULT_SENDER,
                    recipient: str = DEFAULT_RECIPIENT, unique: bool = False,
                    timeout: float = 300) -> None:
        """``smtp-source`` to this instance's smtpd: ``count`` messages of
        ``size`` body bytes, ``recipients`` recipients each, ``sessions``
        parallel sessions (``unique`` adds -N: distinct recipients)."""
        cmd = [tool("smtp-source"), "-s", str(sessions), "-m", str(count), "-l", str(size),
               "-r", str(recipients), "-f", sender, "-t", recipient, "-M", "client.test.invalid"]
        if unique:
            cmd.append("-N")
        cmd.append("%s:%d" % (LOOPBACK, self.smtpd_port))
        _run(cmd, timeout=timeout)

    # -- queue and log -----------------------------------------------------

    def queue_ids(self, queues: Iterable[str] = QUEUES) -> Dict[str, List[str]]:
        """Queue file names (= queue ids) per queue (hashed subdirectories included)."""
        out: Dict[str, List[str]] = {}
        for q in queues:
            ids: List[str] = []
            for _root, _dirs, files in os.walk(os.path.join(self.queue_dir, q)):
                ids.extend(f for f in files if not f.startswith("."))
            out[q] = sorted(ids)
        return out

    def queue_file(self, queue_id: str) -> Optional[str]:
        """Path of the queue file ``queue_id`` in any queue, or None."""
        for q in QUEUES + ("corrupt",):
            for root, _dirs, files in os.walk(os.path.join(self.queue_dir, q)):
                if queue_id in files:
                    return os.path.join(root, queue_id)
        return None

    def _queue_empty(self, allow_deferred: bool) -> bool:
        for q in QUEUES:
            if allow_deferred and q == "deferred":
                continue
            for _root, _dirs, files in os.walk(os.path.join(self.queue_dir, q)):
                if files:
                    return False
        return True

    def wait_queue_empty(self, timeout: float = 60, allow_deferred: bool = False) -> bool:
        """Poll until maildrop, incoming, active, hold (and deferred unless
        ``allow_deferred``) are empty; False on timeout."""
        end = time.monotonic() + timeout
        while True:
            if self._queue_empty(allow_deferred):
                return True
            if time.monotonic() > end:
                return False
            time.sleep(0.05)

    def postcat(self, queue_id: str) -> str:
        """``postcat -c etc -q ID``: envelope, header and body of a queued message."""
        r = _run([tool("postcat"), "-c", self.config_dir, "-q", queue_id], timeout=30,
                 check=False)
        out = r.stdout.decode("utf-8", "replace")
        if r.returncode != 0:
            raise HarnessError("postcat -q %s failed (rc=%d): %s" % (queue_id, r.returncode, out))
        return out

    def log_lines(self) -> List[str]:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def wait_log(self, pattern: str, timeout: float = 30, count: int = 1) -> List[str]:
        """Poll the mail log until ``count`` lines match the regex ``pattern``
        (re.search); returns the matching lines, fewer than ``count`` on timeout."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            hits = [line for line in self.log_lines() if rx.search(line)]
            if len(hits) >= count or time.monotonic() > end:
                return hits
            time.sleep(0.05)

    def expect_log(self, pattern: str, timeout: float = 30, count: int = 1) -> List[str]:
        """Like wait_log(), but raises AssertionError (with the log tail) on timeout."""
        hits = self.wait_log(pattern, timeout, count)
        if len(hits) < count:
            raise AssertionError("%d of %d log lines matching %r within %ss; log tail:\n%s" % (
                len(hits), count, pattern, timeout, "\n".join(self.log_lines()[-40:])))
        return hits

    def log_status_counts(self) -> Dict[str, int]:
        c = {"sent": 0, "deferred": 0, "bounced": 0, "expired": 0}
        for line in self.log_lines():
            m = re.search(r" status=(sent|deferred|bounced|expired)\b", line)
            if m:
                c[m.group(1)] += 1
        return c


# ---------------------------------------------------------------------------
# a minimal SMTP client for smtp_submit (stdlib smtplib rewrites addresses)


def _dot_stuff(message: bytes) -> bytes:
    lines = message.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.startswith(b"."):
            line = b"." + line
        out.append(line + b"\r\n")
    return b"".join(out)


class _SmtpClient:
    def __init__(self, host: str, port: int, timeout: float):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def __enter__(self) -> "_SmtpClient":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise HarnessError("server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def reply(self) -> str:
        lines = []
        while True:
            line = self._line().decode("utf-8", "replace")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def command(self, cmd: Optional[str]) -> str:
        if cmd is not None:
            self.sock.sendall(cmd.encode("utf-8") + b"\r\n")
        return self.reply()

    def expect(self, cmd: Optional[str], code: str, what: str = "") -> str:
        r = self.command(cmd)
        if not r.startswith(code):
            raise HarnessError("unexpected reply to %s: %r" % (what or cmd, r))
        return r

    def expect_data(self, stuffed: bytes, code: str) -> str:
        self.sock.sendall(stuffed + b".\r\n")
        r = self.reply()
        if not r.startswith(code):
            raise HarnessError("unexpected reply to end of data: %r" % r)
        return r


# ---------------------------------------------------------------------------


class SmtpSink:
    """Postfix's smtp-sink(1) on 127.0.0.1, dumping each message to a file.

    Runs ``smtp-sink -u postfix -4 -h HOSTNAME -d DIR/msgs/%Y%m%d%H%M%S. [args]
    127.0.0.1:PORT BACKLOG`` under timeout(1), so it stops by itself after
    ``max_lifetime`` seconds.  ``args`` are extra smtp-sink options, e.g.
    ``["-r", "RCPT"]`` (450 to RCPT) or ``["-W", ".:1"]`` (1 s before the
    reply to end-of-data).  The hostname must differ from the instance's
    myhostname (smtp(8) loop detection).
    """

    def __init__(self, directory: str, port: int = 0, args: Sequence[str] = (),
                 hostname: str = "sink.test.invalid", dump: bool = True,
                 max_lifetime: float = 900.0, backlog: int = 1024):
        self.directory = os.path.abspath(directory)
        self.msgs_dir = os.path.join(self.directory, "msgs")
        self.log_file = os.path.join(self.directory, "sink.log")
        self.port = port
        self.args = list(args)
        self.hostname = hostname
        self.dump = dump
        self.max_lifetime = max_lifetime
        self.backlog = backlog
        self._proc: Optional[subprocess.Popen] = None

    @property
    def address(self) -> str:
        """Nexthop form for relayhost: ``[127.0.0.1]:PORT``."""
        return "[%s]:%d" % (LOOPBACK, self.port)

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> None:
        if os.geteuid() != 0:
            raise HarnessError("SmtpSink must run as root (it drops to -u postfix)")
        if self.pid:
            raise HarnessError("smtp-sink already running")
        pf = pwd.getpwnam("postfix")
        os.makedirs(self.directory, exist_ok=True)
        os.chmod(self.directory, 0o755)
        os.makedirs(self.msgs_dir, exist_ok=True)
        os.chown(self.msgs_dir, pf.pw_uid, pf.pw_gid)   # written after -u postfix
        os.chmod(self.msgs_dir, 0o755)
        fixed = bool(self.port)
        last = ""
        for _ in range(1 if fixed else 3):
            if not fixed:
                self.port = free_port()
            cmd = [tool("timeout"), "-k", "5", "%d" % max(1, int(self.max_lifetime)),
                   tool("smtp-sink"), "-u", "postfix", "-4", "-h", self.hostname]
            if self.dump:
                cmd += ["-d", os.path.join(self.msgs_dir, "%Y%m%d%H%M%S.")]
            cmd += self.args + ["%s:%d" % (LOOPBACK, self.port), str(self.backlog)]
            with open(self.log_file, "ab") as log:
                self._proc = subprocess.Popen(cmd, cwd=self.directory, stdin=subprocess.DEVNULL,
                                              stdout=log, stderr=log, start_new_session=True,
                                              close_fds=True)
            end = time.monotonic() + 5
            while time.monotonic() < end:
                if self._proc.poll() is not None:
                    break
                if port_open(self.port):
                    return
                time.sleep(0.05)
            self.stop()
            last = _tail(self.log_file, 10)
        raise HarnessError("smtp-sink did not start listening:\n%s" % last)

    def stop(self) -> None:
        p, self._proc = self._proc, None
        if p is None:
            return
        if p.poll() is None:
            p.terminate()     # timeout(1) passes SIGTERM on to smtp-sink
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    p.kill()
                p.wait(5)

    def __enter__(self) -> "SmtpSink":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def messages(self) -> List[str]:
        """Paths of the dumped message files, oldest first."""
        try:
            names = sorted(os.listdir(self.msgs_dir))
        except FileNotFoundError:
            return []
        return [os.path.join(self.msgs_dir, n) for n in names]

    @property
    def count(self) -> int:
        return len(self.messages())

    def wait_count(self, n: int, timeout: float = 30) -> bool:
        end = time.monotonic() + timeout
        while True:
            if self.count >= n:
                return True
            if time.monotonic() > end:
                return False
            time.sleep(0.05)
