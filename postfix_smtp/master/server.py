"""The master(8) child: start-up, privilege drop, and the single-server loop.

master(8) hands us fd 5 (status socket), fd 6 (the non-blocking listen
socket ``private/<service>``) and ``GENERATION`` (octal).  We tell master
"taken" after each accept() and "available" once the connection is done
(12 bytes: pid, generation, status), serve one delivery request per
connection, and exit after ``max_use`` connections, ``max_idle`` seconds
without one, or when master closes the status socket.
"""

from __future__ import annotations

import os
import pwd
import select
import signal
import socket
import struct
import sys
import time

from . import options as opts_mod

STATUS_FD = 5
LISTEN_FD = 6
STAT_TAKEN = 0
STAT_AVAIL = 1


#: Set by the wrapper that ``postfix-smtp install`` writes (see install.py).
PERSONALITY_ENV = "POSTFIX_SMTP_PERSONALITY"


def _status(pid: int, generation: int, avail: int) -> bytes:
    return struct.pack("=iIi", pid, generation & 0xFFFFFFFF, avail)


def _personality(argv0: str) -> str:
    env = os.environ.get(PERSONALITY_ENV)
    if env in ("smtp", "lmtp"):
        return env
    base = os.path.basename(argv0)
    return "lmtp" if base == "lmtp" else "smtp"


def main(argv: list | None = None) -> int:
    argv = sys.argv if argv is None else argv
    personality = _personality(argv[0] if argv else "smtp")
    from ..log import Logger
    # bootstrap logging (before main.cf): postlogd if master says so, else syslog
    tag = os.environ.get("MAIL_LOGTAG") or "postfix"
    log = Logger("%s/%s" % (tag, personality), postlog_path=os.environ.get("POSTLOG_SERVICE"),
                 hostname=os.environ.get("POSTLOG_HOSTNAME", ""),
                 also_stderr="-V" in argv[1:])
    try:
        return _run(argv, personality, log)
    except SystemExit:
        raise
    except BaseException as exc:  # log clearly, then exit like msg_fatal()
        log.fatal("%s: %s" % (type(exc).__name__, exc))
        return 1


def _run(argv: list, personality: str, log) -> int:
    try:
        o = opts_mod.parse(argv[1:])
    except opts_mod.UsageError as exc:
        log.fatal(str(exc))
        return 1
    if o.stderr_log:
        log.also_stderr = True
    from ..config.params import ConfigError, Params
    from ..settings import Settings
    service = o.service_name or personality
    try:
        params = Params.load(os.environ.get("MAIL_CONFIG"), o.overrides,
                             process_name=personality, service_name=service, prefix=personality)
        settings = Settings.from_params(params, personality)
    except ConfigError as exc:
        log.fatal(str(exc))
        return 1
    log.verbose = o.verbose + (1 if "MAIL_VERBOSE" in os.environ else 0)
    syslog_name = params.get("syslog_name") or "postfix"
    postlog = None
    if params.get("maillog_file"):
        postlog = os.environ.get("POSTLOG_SERVICE") or os.path.join(
            settings.queue_directory, "public", params.get("postlog_service_name") or "postlog")
    facility = params.get("syslog_facility")
    from ..log import FACILITIES
    if facility not in FACILITIES:          # stock: exact names, else fatal
        log.fatal("file %s/main.cf: parameter syslog_facility: unrecognized value: %s"
                  % (params.get("config_directory"), facility))
        return 1
    log.reopen(ident="%s/%s" % (syslog_name, personality), postlog_path=postlog,
               facility=facility)
    for w in settings.warnings:
        log.warning(w)
    if o.max_use is not None:
        settings.max_use = int(o.max_use)
    if o.max_idle is not None:
        settings.max_idle = float(o.max_idle)

    flags = o.flags
    if (personality == "lmtp" and "X" not in flags
            and params.get_bool("lmtp_assume_final")):      # obsolete: flags=X
        flags += "X"
        log.warning('%s is obsolete; instead, specify "%sX" in %s'
                    % ("lmtp_assume_final", o.flags_word, "master.cf"))
    from ..agent import Agent
    agent = Agent(settings, log, flags)

    if o.stdio:       # -S: one request on stdin/stdout (for testing by hand)
        os.chdir(settings.queue_directory)
        sock = socket.socket(fileno=os.dup(0))
        agent.serve(sock)
        return 0

    if not o.debug_tty and os.isatty(0):
        log.fatal("do not run this command by hand")
        return 1
    gen_text = os.environ.get("GENERATION", "0")
    try:
        generation = int(gen_text, 8)
    except ValueError:
        log.fatal("bad generation: %s" % gen_text)
        return 1
    try:
        os.chdir(settings.queue_directory)
    except OSError as exc:
        log.fatal("chdir(\"%s\"): %s" % (settings.queue_directory, exc.strerror))
        return 1
    for fd in (STATUS_FD, LISTEN_FD):
        try:
            os.set_inheritable(fd, False)
        except OSError:
            log.fatal("file descriptor %d not open: this program must be run by master(8)" % fd)
            return 1
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    agent.open_tables()                   # as root: tables may be root-only
    if os.geteuid() == 0 and (o.unprivileged or o.chroot):
        _drop_privileges(settings, o, log)
    return _loop(agent, settings, generation, log)


#: Modules the delivery path may import lazily.  Inside a chroot jail Python's
#: library is out of reach, so they are all loaded before chroot().
JAIL_PRELOAD = (
    "encodings.idna",              # socket host name encoding
    "random",
    "postfix_smtp.delivery",
    "postfix_smtp.destinations",
    "postfix_smtp.smtp.mime",
    "postfix_smtp.smtp.reuse",
    "postfix_smtp.scache",
    "postfix_smtp.smtp.rewrite",
    "postfix_smtp.smtp.checks",
    "postfix_smtp.tls.config",
    "postfix_smtp.tls.dane",
    "postfix_smtp.dns",
    "postfix_smtp.dns.lookup",
    "postfix_smtp.dns.rrfilter",
    "postfix_smtp.dns.client",
    "postfix_smtp.maps",
    "postfix_smtp.tls",
    "postfix_smtp.tls.policy",
    "postfix_smtp.sasl",
)


def _preload_for_jail(settings) -> None:
    import importlib
    names = list(JAIL_PRELOAD)
    tls = getattr(settings, "tls", None)
    if tls is not None and (tls.level > 0 or tls.policy_maps or tls.per_site):
        names.append("postfix_smtp.tls.client")       # OpenSSL: only when TLS may be used
        names.append("postfix_smtp.tls.proxy")        # TLS connection reuse (tlsproxy)
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _drop_privileges(settings, o, log) -> None:
    if o.chroot:
        _preload_for_jail(settings)
        # dnspython's record classes, resolv.conf parsing, and the local
        # addresses (read from /proc) for the "mail loops back to myself" check
        from ..destinations import prepare_for_chroot
        prepare_for_chroot(settings.lookup)
    try:
        pw = pwd.getpwnam(settings.mail_owner)
    except KeyError:
        raise RuntimeError("unknown mail_owner: %s" % settings.mail_owner) from None
    if o.unprivileged:
        os.setgid(pw.pw_gid)
        os.initgroups(settings.mail_owner, pw.pw_gid)
    if o.chroot:
        os.chroot(settings.queue_directory)
        os.chdir("/")
    if o.unprivileged:
        os.setuid(pw.pw_uid)


def _arm_watchdog(log) -> None:
    """SIGALRM (daemon_timeout) ends the process as stock's watchdog does: a
    "fatal: watchdog timeout" record and exit status 1 (msg_fatal() also
    pauses a second first).  Should the exit itself hang, the re-armed
    alarm with the default action kills the process 5 s later."""
    def fire(signum, frame):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(5)
        try:
            log.fatal("watchdog timeout")
            time.sleep(1)
        finally:
            os._exit(1)
    signal.signal(signal.SIGALRM, fire)


def _loop(agent, settings, generation: int, log) -> int:
    listen = socket.socket(fileno=LISTEN_FD)
    listen.setblocking(False)
    max_use = settings.max_use
    max_idle = settings.max_idle
    daemon_timeout = int(settings.daemon_timeout) or 0
    if daemon_timeout > 0:
        _arm_watchdog(log)
    use_count = 0
    idle_deadline = time.monotonic() + max_idle if max_idle > 0 else None
    poller = select.poll()
    poller.register(LISTEN_FD, select.POLLIN)
    poller.register(STATUS_FD, select.POLLIN)
    pid = os.getpid()
    taken = _status(pid, generation, STAT_TAKEN)
    avail = _status(pid, generation, STAT_AVAIL)
    while max_use <= 0 or use_count < max_use:
        if idle_deadline is not None:
            left = idle_deadline - time.monotonic()
            if left <= 0:
                return 0
            timeout_ms = int(left * 1000) + 1
        else:
            timeout_ms = None
        try:
            events = poller.poll(timeout_ms)
        except InterruptedError:
            continue
        if not events:
            continue
        if any(fd == STATUS_FD for fd, _ in events):
            return 0                      # master closed the status channel
        try:
            conn, _ = listen.accept()
        except (BlockingIOError, InterruptedError):
            continue                      # another process won the race
        except OSError as exc:
            log.warning("accept connection: %s" % exc.strerror)
            continue
        try:
            os.write(STATUS_FD, taken)
        except OSError:
            pass
        conn.setblocking(True)
        if daemon_timeout > 0:
            signal.alarm(daemon_timeout)      # watchdog: see _arm_watchdog()
        try:
            agent.serve(conn)
        finally:
            conn.close()
            if daemon_timeout > 0:
                signal.alarm(0)
        try:
            os.write(STATUS_FD, avail)
        except OSError:
            return 0
        use_count += 1
        changed = agent.changed_table()
        if changed:
            log.info("table %s has changed -- restarting" % changed)
            return 0
        if max_idle > 0:
            idle_deadline = time.monotonic() + max_idle
    return 0
