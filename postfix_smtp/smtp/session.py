"""Blocking SMTP connection: connect, write, read replies, each under a timeout.

The per-stage timeouts apply to every read and write system call, as in
stock smtp(8) with ``smtp_per_request_deadline = no``.  With ``yes`` the
stage timeout is a budget for a whole request or response (vstream's
deadline): every read and write spends from it, and it is recharged when a
new response is awaited or the stage changes.  While the message body is
sent, each byte written earns ``1 / smtp_min_data_rate`` seconds back, never
more than ``smtp_data_xfer_timeout`` in all.  Failures surface as
:class:`SessionError` carrying the stage, so the caller can produce stock's
"conversation with X timed out while ..." and "lost connection with X
while ..." texts.
"""

from __future__ import annotations

import socket
import time
from ..valueclass import dataclass

from .protocol import STAGE_INFO, Stage
from .reply import Reply, ReplyFilterError, ReplyParser


class SessionError(Exception):
    def __init__(self, kind: str, stage: Stage, detail: str = "") -> None:
        super().__init__("%s while %s" % (kind, STAGE_INFO[stage][1]))
        self.kind = kind          # "timeout", "lost" or "data" (a local table error)
        self.stage = stage
        self.detail = detail


class ConnectError(Exception):
    """connect() failed; ``text`` is the errno text stock logs."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass
class Endpoint:
    host: str      # name as logged (MX name, [host] name, or the address)
    addr: str      # numeric address
    port: int
    family: int = socket.AF_INET
    preference: int = 0
    best_mx: bool = True     # has the best preference of its destination (loop status 5.4.6)

    @property
    def namaddr(self) -> str:
        return "%s[%s]" % (self.host, self.addr)

    @property
    def namaddrport(self) -> str:
        if not self.port:            # a UNIX-domain socket (LMTP): no port, as stock
            return self.namaddr
        return "%s[%s]:%d" % (self.host, self.addr, self.port)


class BindError(ConnectError):
    """bind() to the source address failed and the binding is enforced
    (smtp_bind_address_enforce): no connection is attempted."""


def connect(ep: Endpoint, timeout: float, bind_addr: str | None = None,
            enforce: bool = False, warn=None, windowsize: int = 0) -> socket.socket:
    """A connected socket.  A failed bind() to ``bind_addr`` is reported
    through ``warn`` (stock's smtp_connect_addr warning); with ``enforce`` it
    raises BindError, otherwise the kernel picks the source address.
    ``windowsize`` > 0 (tcp_windowsize) sets both socket buffer sizes."""
    if ep.family == socket.AF_UNIX:
        return _connect_unix(ep.addr, timeout)
    sock = socket.socket(ep.family, socket.SOCK_STREAM)
    try:
        if windowsize > 0:
            for opt, name in ((socket.SO_SNDBUF, "SO_SNDBUF"), (socket.SO_RCVBUF, "SO_RCVBUF")):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, windowsize)
                except OSError as exc:
                    if warn is not None:
                        warn("setsockopt %s %d: %s" % (name, windowsize, exc.strerror or exc))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if bind_addr:
            try:
                sock.bind((bind_addr, 0))
            except OSError as exc:
                text = exc.strerror or str(exc)
                if warn is not None:
                    warn("smtp_connect_addr: bind %s: %s" % (bind_addr, text))
                if enforce:
                    sock.close()
                    raise BindError(text) from None
        sock.settimeout(timeout if timeout > 0 else None)
        sock.connect((ep.addr, ep.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        raise _connect_failed(sock, exc) from None
    return sock


def _connect_unix(path: str, timeout: float) -> socket.socket:
    """A stream connected to the UNIX-domain socket ``path`` (relative paths
    are relative to the queue directory, the agent's working directory)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout if timeout > 0 else None)
        sock.connect(path)
    except OSError as exc:
        raise _connect_failed(sock, exc) from None
    return sock


def _connect_failed(sock: socket.socket, exc: OSError) -> ConnectError:
    """Close ``sock``; the ConnectError with stock's text for ``exc``."""
    sock.close()
    if isinstance(exc, socket.timeout):
        return ConnectError("Connection timed out")
    return ConnectError(exc.strerror or str(exc))


# The greeting and the EHLO/HELO/LHLO exchange share one budget (stock sets
# its stream up once for smtp_helo_timeout before the greeting).
_HELO_STAGES = frozenset((Stage.GREETING, Stage.EHLO, Stage.HELO, Stage.LHLO))


class Connection:
    garbage_seen = False      # a reply had non-reply lines (never cache this session)
    on_garbage = None         # callable(reply) for the caller's warnings
    #: postfix_smtp.smtp.chat.Chat: the session's debug transcript and history
    #: (set by the delivery only when it has a use; message content never goes there)
    chat = None

    def __init__(self, sock: socket.socket, ep: Endpoint, timeouts: dict,
                 utf8: bool = True, line_limit: int = 2048, deadline: bool = False,
                 min_data_rate: int = 0, log=None, line_filter=None) -> None:
        self.sock = sock
        self.ep = ep
        self.timeouts = timeouts              # stage -> seconds
        self.log = log                        # for the parser's warnings and notes
        self.replaced: list = []              # (line, replacement) pairs for the chat history
        if line_filter is not None:
            line_filter = self._recorded_filter(line_filter)
        self.parser = ReplyParser(utf8=utf8, line_limit=line_limit, line_filter=line_filter)
        self.out = bytearray()
        self.dead = False
        self._timeout: object = -1
        self.deadline = deadline              # smtp_per_request_deadline
        self.min_data_rate = min_data_rate    # smtp_min_data_rate (bytes/s, body only)
        self._budget = 0.0
        self._budget_stage: object = None
        self._budget_cap = 0.0

    def restart(self, sock) -> None:
        """Continue on a new stream (after a TLS handshake): nothing pending,
        a fresh reply parser with the same settings, and the stage timeout
        set again on the new stream's first use."""
        self.sock = sock
        self._timeout = -1
        self.out.clear()
        p = self.parser
        self.parser = ReplyParser(utf8=p.utf8, line_limit=p.line_limit, line_filter=p.line_filter)

    def _recorded_filter(self, line_filter):
        """smtp_reply_filter, noting each replacement while a chat is kept
        (stock's history shows the server's line and what replaced it)."""
        def filtered(line: str):
            new = line_filter(line)
            if new is not None and self.chat is not None:
                self.replaced.append((line, new))
            return new
        return filtered

    def _settimeout(self, stage: Stage) -> None:
        t = self.timeouts.get(stage, 300.0)
        t = t if t > 0 else None
        if t != self._timeout:            # each settimeout() is a system call
            self.sock.settimeout(t)
            self._timeout = t

    # -- smtp_per_request_deadline --------------------------------------------

    def recharge(self, stage: Stage) -> None:
        """Start a new deadline budget for ``stage`` (stock's smtp_stream_setup)."""
        t = self.timeouts.get(stage, 300.0)
        self._budget = self._budget_cap = t if t > 0 else 300.0
        self._budget_stage = stage

    def _same_budget(self, stage: Stage) -> bool:
        cur = self._budget_stage
        if cur is None:
            return False
        if cur == stage:
            return True
        return cur in _HELO_STAGES and stage in _HELO_STAGES

    def _deadline_io(self, stage: Stage, op, arg, rate: int):
        """One read or write under the budget; returns what ``op`` returns."""
        if self._budget <= 0:
            self.dead = True
            raise SessionError("timeout", stage)
        self.sock.settimeout(self._budget)
        self._timeout = -1
        t0 = time.monotonic()
        result = self._io(stage, op, arg)
        self._budget -= time.monotonic() - t0
        if rate > 0:
            n = result if isinstance(result, int) else len(result)
            self._budget = min(self._budget + n / rate, self._budget_cap)
        return result

    def _deadline_sendall(self, stage: Stage, data: bytes) -> None:
        if not self._same_budget(stage):
            self.recharge(stage)
        rate = self.min_data_rate if stage == Stage.BODY else 0
        send = getattr(self.sock, "send", None)
        if send is None:                  # a TLS stream: whole writes
            self._deadline_io(stage, self.sock.sendall, data, 0)
            if rate > 0:
                self._budget = min(self._budget + len(data) / rate, self._budget_cap)
            return
        view = memoryview(data)
        while view:
            n = self._deadline_io(stage, send, view, rate)
            view = view[n:]

    # -------------------------------------------------------------------------

    def queue(self, data: bytes) -> None:
        """Queue one command (sent with the next flush)."""
        if self.chat is not None:
            self.chat.sent(data)
        self.out += data

    def queue_content(self, data: bytes) -> None:
        """Queue message content (never logged or recorded)."""
        self.out += data

    def flush(self, stage: Stage) -> None:
        if not self.out:
            return
        data = bytes(self.out)
        self.out.clear()
        if self.deadline:
            self._deadline_sendall(stage, data)
            return
        self._settimeout(stage)
        self._io(stage, self.sock.sendall, data)

    def _io(self, stage: Stage, op, arg):
        """One socket operation; timeouts and errors become SessionError."""
        try:
            return op(arg)
        except socket.timeout:
            self.dead = True
            raise SessionError("timeout", stage) from None
        except OSError as exc:
            self.dead = True
            raise SessionError("lost", stage, exc.strerror or "") from None

    def write(self, data: bytes, stage: Stage) -> None:
        if self.chat is not None and stage is not Stage.BODY:
            self.chat.sent(data)
        self.out += data
        self.flush(stage)

    def read_reply(self, stage: Stage) -> Reply:
        """Flush pending output, then read one complete reply."""
        if self.deadline:
            # a new budget for each response (the helo exchange shares one)
            if not (stage in _HELO_STAGES and self._same_budget(stage)):
                self.recharge(stage)
        self.flush(stage)
        while True:
            r = self.parser.pop()
            if r is not None:
                if self.chat is not None:
                    self.chat.received(r, self.replaced)
                if r.garbled:
                    # a protocol error: the session is not cached (stock
                    # DONT_CACHE_THIS_SESSION); the caller may warn
                    self.garbage_seen = True
                    if self.on_garbage is not None:
                        self.on_garbage(r)
                return r
            if self.deadline:
                data = self._deadline_io(stage, self.sock.recv, 65536, 0)
            else:
                self._settimeout(stage)
                data = self._io(stage, self.sock.recv, 65536)
            if not data:
                self.dead = True
                raise SessionError("lost", stage)
            parser = self.parser
            try:
                parser.feed(data)
            except ReplyFilterError:
                # the connection itself is fine: the caller decides on QUIT
                raise SessionError("data", stage) from None
            finally:
                if (parser.warnings or parser.notes) and self.log is not None:
                    self._report(parser)

    def _report(self, parser: ReplyParser) -> None:
        where = self.ep.namaddrport
        for text in parser.warnings:
            self.log.warning("%s: %s" % (where, text))
        for text in parser.notes:
            self.log.info("%s: %s" % (where, text))
        parser.warnings.clear()
        parser.notes.clear()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        self.dead = True
