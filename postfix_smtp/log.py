"""Postfix-style logging: syslog or postlogd(8), and the per-recipient line.

The ident is ``syslog_name/process_name`` (``postfix/smtp``).  With
``maillog_file`` set, records go as datagrams to postlogd's ``postlog``
socket in the format postlogd writes verbatim; otherwise to syslog over
``/dev/log``.  Sockets are opened before any chroot and kept.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from .valueclass import dataclass

from .smtp.address import quote_822
from .smtp.reply import printable

MAX_TEXT = 2000

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20,
    "local5": 21, "local6": 22, "local7": 23,
}
LOG_CRIT, LOG_ERR, LOG_WARNING, LOG_INFO = 2, 3, 4, 6


class Logger:
    def __init__(self, ident: str, facility: str = "mail", postlog_path: str | None = None,
                 hostname: str = "", also_stderr: bool = False, utf8: bool = True,
                 syslog_path: str = "/dev/log") -> None:
        self.ident = ident
        self.facility = FACILITIES.get(facility.lower(), 2)
        self.hostname = (hostname or socket.gethostname()).split(".", 1)[0]
        self.also_stderr = also_stderr
        self.utf8 = utf8
        self.verbose = 0
        self.pid = os.getpid()
        self._postlog = postlog_path
        self._syslog_path = syslog_path
        self._sock: socket.socket | None = None
        self._target: str | None = None
        self._open()

    def _open(self) -> None:
        target = self._postlog or self._syslog_path
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.connect(target)
            self._sock = s
            self._target = target
        except OSError:
            self._sock = None

    def reopen(self, ident: str | None = None, postlog_path: str | None = None,
               facility: str | None = None) -> None:
        if ident:
            self.ident = ident
        if facility:
            self.facility = FACILITIES.get(facility.lower(), self.facility)
        if postlog_path != self._postlog or self._sock is None:
            if self._sock is not None:
                self._sock.close()
            self._postlog = postlog_path
            self._open()

    def _emit(self, level: int, prefix: str, text: str) -> None:
        text = printable(prefix + text, self.utf8)
        raw = text.encode("utf-8", "surrogateescape")[:MAX_TEXT]
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime())
        head = "%s[%d]: " % (self.ident, self.pid)
        if self._postlog:
            data = ("%s %s %s" % (stamp, self.hostname, head)).encode() + raw
        else:
            pri = self.facility * 8 + level
            data = ("<%d>%s %s" % (pri, stamp, head)).encode() + raw
        if self._sock is not None:
            try:
                self._sock.send(data)
            except OSError:
                # syslogd/postlogd restarted: reconnect once, then give up quietly
                self._open()
                if self._sock is not None:
                    try:
                        self._sock.send(data)
                    except OSError:
                        pass
        if self.also_stderr:
            try:
                sys.stderr.write("%s%s\n" % (head, raw.decode("utf-8", "replace")))
                sys.stderr.flush()
            except OSError:
                pass

    def info(self, text: str) -> None:
        self._emit(LOG_INFO, "", text)

    def warning(self, text: str) -> None:
        self._emit(LOG_WARNING, "warning: ", text)

    def error(self, text: str) -> None:
        self._emit(LOG_ERR, "error: ", text)

    def fatal(self, text: str) -> None:
        self._emit(LOG_CRIT, "fatal: ", text)

    def debug(self, text: str) -> None:
        if self.verbose:
            self._emit(LOG_INFO, "", text)


# --- the per-recipient line (log_adhoc) -----------------------------------

def format_tv(seconds: float, max_dig: int = 2, sig_dig: int = 2) -> str:
    """Postfix's format_tv(): two significant digits, at most ``max_dig`` decimals."""
    if seconds < 0:
        seconds = 0.0
    sec = int(seconds)
    usec = int(round((seconds - sec) * 1e6))
    if usec >= 1000000:
        sec, usec = sec + 1, usec - 1000000
    million = 1000000
    max_dig = min(max(max_dig, 0), 6)
    ures = million // 10 ** max_dig
    wid = 10 ** sig_dig
    if ures < million:
        if sec > 0:
            n = 1
            while sec >= n and n <= wid // 10:
                n *= 10
            ures = (million // wid) * n
        else:
            while usec >= wid * ures:
                ures *= 10
    if ures > 1:
        usec += ures // 2
        if usec >= million:
            sec += 1
            usec -= million
    out = str(sec)
    if usec >= ures:
        out += "."
        rem, n = usec, million // 10
        while rem >= ures and n > 0:
            out += "0123456789"[rem // n]
            rem %= n
            n //= 10
    return out


@dataclass
class DelayFields:
    delay: str
    delays: str


def delays(stats, now: float | None = None, resolution: int = 2) -> DelayFields:
    """``delay=`` and ``delays=a/b/c/d`` from MSG_STATS (see postfix-ipc §6.2)."""
    if now is None:
        now = stats.deliver_done or time.time()
    incoming = stats.incoming_arrival
    active = stats.active_arrival
    handoff = stats.agent_handoff
    setup = stats.conn_setup_done

    def d(a: float, b: float) -> float:
        return max(a - b, 0.0)

    total = d(now, incoming)
    if active:
        a = d(active, incoming)
        if handoff:
            b = d(handoff, active)
            if setup:
                c = d(setup, handoff)
                dd = d(now, setup)
            else:
                c = 0.0
                dd = d(now, handoff)
        else:
            b = d(now, active)
            c = dd = 0.0
    else:
        a = d(now, incoming)
        b = c = dd = 0.0
    f = lambda x: format_tv(x, resolution)  # noqa: E731
    return DelayFields(f(total), "%s/%s/%s/%s" % (f(a), f(b), f(c), f(dd)))


def recipient_line(queue_id: str, recipient: str, original: str, relay: str, stats,
                   dsn_status: str, status_word: str, reason: str, resolution: int = 2,
                   external: bool = True, now: float | None = None) -> str:
    fmt = quote_822 if external else (lambda a: a)
    parts = ["%s: to=<%s>" % (queue_id, fmt(recipient))]
    if original and original.casefold() != recipient.casefold():
        parts.append("orig_to=<%s>" % fmt(original))
    parts.append("relay=%s" % relay)
    if stats.reuse_count > 0:
        parts.append("conn_use=%d" % (stats.reuse_count + 1))
    dl = delays(stats, now, resolution)
    parts.append("delay=%s" % dl.delay)
    parts.append("delays=%s" % dl.delays)
    parts.append("dsn=%s" % dsn_status)
    return ", ".join(parts) + ", status=%s (%s)" % (status_word, reason)
