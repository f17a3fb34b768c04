"""A scriptable SMTP/LMTP server for tests.

:class:`SmtpPeer` listens on 127.0.0.1 (or ::1) port 0, one thread per
connection, and answers according to a :class:`PeerScript`: every reply,
a delay before any reply, and where to drop the connection.  It records each
session: the raw transcript, every byte the client sent, envelopes and the
DATA content exactly as received on the wire.

Reply values (``mail_reply``, ``rcpt_reply``, ...) are either a string or a
callable that gets the command line (str, without CRLF) and returns the reply.
A reply string may hold several lines separated by "\\n"; each is sent as
given plus CRLF (write the "250-" continuation markers yourself).  A
``bytes`` reply is sent verbatim (for malformed replies).  An empty string
sends nothing.

Stages (keys of ``delay``, values of ``drop_after``, the ``stage`` argument
of ``before_reply``): ``greeting``, ``ehlo`` (also LHLO), ``helo``, ``mail``,
``rcpt``, ``data``, ``body`` (drop only: after the first content bytes),
``dot`` (end of data; also BDAT LAST), ``bdat``, ``rset``, ``noop``,
``quit``, ``other``.

STARTTLS (standard library ``ssl``): with ``tls_cert``/``tls_key`` set the
EHLO reply offers STARTTLS (``offer_starttls``), ``starttls_reply`` answers it
and a 2xx reply is followed by the server handshake; after it the dialog
starts over (a new EHLO is expected) and the EHLO reply no longer offers
STARTTLS.  ``tls_wrapper`` does implicit TLS (port-465 style) right after
accept.  ``tls_after_starttls`` breaks the handshake on purpose: ``"drop"``
closes the connection after the 220, ``"garbage"`` sends non-TLS bytes,
``"hang"`` says nothing.  ``tls_context`` may be given instead of the file
names (an ``ssl.SSLContext`` for the server side).  Each session records
``tls`` (``{"version", "cipher", "sni"}``) or ``tls_error``.

Everything stops by itself: per-connection socket timeout (30 s) and the
server's ``max_lifetime``.  Standard library only.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Union

Reply = Union[str, bytes]
ReplySpec = Union[str, bytes, Callable[[str], Reply]]

CONNECTION_TIMEOUT = 30.0
MAX_LINE = 1 << 20


def _default_ehlo_lines() -> List[str]:
    return ["peer.test.invalid", "PIPELINING", "SIZE 10240000", "8BITMIME",
            "ENHANCEDSTATUSCODES", "DSN", "SMTPUTF8"]


@dataclass
class PeerScript:
    greeting: ReplySpec = "220 peer.test.invalid ESMTP"
    ehlo_lines: List[str] = field(default_factory=_default_ehlo_lines)
    ehlo_reply: Optional[ReplySpec] = None     # replaces the 250 built from ehlo_lines
    helo_reply: ReplySpec = "250 peer.test.invalid"
    mail_reply: ReplySpec = "250 2.1.0 Ok"
    rcpt_reply: ReplySpec = "250 2.1.5 Ok"
    data_reply: ReplySpec = "354 End data with <CR><LF>.<CR><LF>"
    # SMTP: called with the MAIL FROM line; LMTP: once per accepted recipient,
    # called with that RCPT TO line.
    dot_reply: ReplySpec = "250 2.0.0 Ok: queued as PEER"
    lmtp: bool = False
    drop_after: Optional[str] = None
    delay: Dict[str, float] = field(default_factory=dict)
    # before_reply(session, stage, line, reply) -> reply to send instead, or None
    before_reply: Optional[Callable[["Session", str, str, Reply], Optional[Reply]]] = None
    rset_reply: ReplySpec = "250 2.0.0 Ok"
    noop_reply: ReplySpec = "250 2.0.0 Ok"
    quit_reply: ReplySpec = "221 2.0.0 Bye"
    # STARTTLS / implicit TLS
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    tls_context: Optional[ssl.SSLContext] = None
    offer_starttls: Optional[bool] = None      # default: True when TLS is configured
    starttls_reply: Optional[ReplySpec] = None  # default: 220, or 454 without TLS
    tls_after_starttls: str = "handshake"       # "handshake", "drop", "garbage", "hang"
    tls_wrapper: bool = False
    ehlo_lines_tls: Optional[List[str]] = None  # EHLO reply lines inside TLS
    # after the 354 reply: stop reading for this many seconds, then drop
    # (a server that stalls in the middle of the message body)
    stall_body: float = 0.0
    # SO_RCVBUF of accepted connections (0: the kernel's default); small
    # values make a stalled peer's window fill up quickly
    rcvbuf: int = 0
    # stage -> seconds between the bytes of that reply (a server that trickles)
    trickle: Dict[str, float] = field(default_factory=dict)
    # (bytes, seconds): read the message body at most this many bytes at a
    # time, pausing between reads (a slow server)
    body_read_rate: Optional[Tuple[int, float]] = None
    # (stage, chunk[, pause]): at that stage send ``chunk`` over and over
    # instead of a reply, ``pause`` seconds apart, until the client goes away
    # (a flooding server)
    flood: Optional[tuple] = None

    def server_context(self) -> Optional[ssl.SSLContext]:
        if self.tls_context is not None:
            return self.tls_context
        if not self.tls_cert:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.tls_cert, self.tls_key or self.tls_cert)
        self.tls_context = ctx
        return ctx


class Envelope(NamedTuple):
    """One MAIL transaction: the MAIL FROM line and every RCPT TO line (str,
    without CRLF); ``accepted`` are the RCPT lines that got a 2xx reply."""
    mail_from: str
    rcpts: List[str]
    accepted: List[str]


class _Dropped(Exception):
    pass


class Session:
    """One client connection."""

    def __init__(self, peer_addr: Tuple) -> None:
        self.peer_addr = peer_addr
        self.transcript: List[Tuple[str, bytes]] = []   # ("C"|"S", bytes) in order
        self._client = bytearray()
        self.commands: List[str] = []
        self.messages: List[bytes] = []
        self.envelopes: List[Envelope] = []
        self.helo: Optional[str] = None
        self.partial: Optional[bytes] = None   # content received before a drop
        self.dropped_at: Optional[str] = None
        self.error: Optional[str] = None
        self.started = time.monotonic()
        self.closed = threading.Event()
        self.tls: Optional[dict] = None
        self.tls_error: Optional[str] = None

    @property
    def client_bytes(self) -> bytes:
        return bytes(self._client)

    @property
    def server_bytes(self) -> bytes:
        return b"".join(b for d, b in self.transcript if d == "S")

    def _in(self, data: bytes) -> None:
        self.transcript.append(("C", data))
        self._client += data

    def _out(self, data: bytes) -> None:
        self.transcript.append(("S", data))

    def __repr__(self) -> str:
        return "<Session %s commands=%d messages=%d closed=%s>" % (
            self.peer_addr, len(self.commands), len(self.messages), self.closed.is_set())


def _final_line(reply: str) -> str:
    """The line of a (multi-line) reply that carries its code: the last one."""
    lines = reply.rstrip("\r\n").split("\r\n")
    return lines[-1] if lines else ""


def unstuff(content: bytes) -> bytes:
    """Undo SMTP dot-stuffing of DATA content as recorded in Session.messages."""
    return re.sub(rb"(?m)^\.", b"", content) if content else content


class _Conn:
    """Buffered line/byte reader over one socket, recording into a Session."""

    def __init__(self, sock: socket.socket, session: Session, deadline: float) -> None:
        self.sock = sock
        self.session = session
        self.deadline = deadline
        self.buf = bytearray()
        self.throttle: Optional[Tuple[int, float]] = None

    def _fill(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _Dropped("server lifetime over")
        size = 65536
        if self.throttle is not None:
            size, pause = self.throttle
            time.sleep(min(pause, left))
        self.sock.settimeout(min(CONNECTION_TIMEOUT, left))
        chunk = self.sock.recv(size)
        if not chunk:
            raise _Dropped("client closed the connection")
        self.session._in(chunk)
        self.buf += chunk

    def readline(self) -> bytes:
        """One line including its terminator (LF or CRLF)."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > MAX_LINE:
                raise _Dropped("line too long")
            self._fill()

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_some(self) -> bytes:
        if not self.buf:
            self._fill()
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def read_data(self) -> bytes:
        """DATA content up to CRLF.CRLF, returned without the final ".CRLF"."""
        start = 0
        while True:
            # self.buf starts at the first content byte; an empty message is ".CRLF"
            if self.buf.startswith(b".\r\n"):
                del self.buf[:3]
                return b""
            i = self.buf.find(b"\r\n.\r\n", start)
            if i >= 0:
                content = bytes(self.buf[:i + 2])
                del self.buf[:i + 5]
                return content
            start = max(0, len(self.buf) - 4)
            if len(self.buf) > 1 << 30:
                raise _Dropped("message too large")
            self._fill()

    def send(self, data: bytes) -> None:
        self.session._out(data)
        self.sock.sendall(data)


class SmtpPeer:
    """The scriptable server. ``address`` is the nexthop form for relayhost."""

    def __init__(self, script: Optional[PeerScript] = None, host: str = "127.0.0.1",
                 max_lifetime: float = 120) -> None:
        self.script = script or PeerScript()
        self.host = host
        self.max_lifetime = max_lifetime
        self.port = 0
        self._lock = threading.Lock()
        self._sessions: List[Session] = []
        self._socks: List[socket.socket] = []
        self._threads: List[threading.Thread] = []
        self._stop = threading.Event()
        self._listener: Optional[socket.socket] = None
        self._accept_thread: Optional[threading.Thread] = None
        self._deadline = 0.0
        self._changed = threading.Condition(self._lock)

    # -- public ------------------------------------------------------------

    @property
    def address(self) -> str:
        if ":" in self.host:
            return "[ipv6:%s]:%d" % (self.host, self.port)
        return "[%s]:%d" % (self.host, self.port)

    @property
    def sessions(self) -> List[Session]:
        with self._lock:
            return list(self._sessions)

    @property
    def messages(self) -> List[bytes]:
        """All messages of all sessions, in session order."""
        return [m for s in self.sessions for m in s.messages]

    def start(self) -> None:
        if self._listener is not None:
            raise RuntimeError("SmtpPeer already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        ls = socket.socket(family, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.script.rcvbuf:
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.script.rcvbuf)
        ls.bind((self.host, 0))
        ls.listen(128)
        ls.settimeout(0.2)
        self.port = ls.getsockname()[1]
        self._listener = ls
        self._deadline = time.monotonic() + self.max_lifetime
        self._stop.clear()
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name="SmtpPeer-accept-%d" % self.port)
        self._accept_thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        t = self._accept_thread
        if t is not None:
            t.join(timeout)
        with self._lock:
            socks = list(self._socks)
            threads = list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        end = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))

    def __enter__(self) -> "SmtpPeer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_sessions(self, n: int, timeout: float = 30, closed: bool = True) -> bool:
        """Wait until ``n`` sessions exist (and, with ``closed``, have ended)."""
        return self._wait(lambda: sum(1 for s in self._sessions
                                      if not closed or s.closed.is_set()) >= n, timeout)

    def wait_messages(self, n: int, timeout: float = 30) -> bool:
        """Wait until ``n`` messages (end of data received) in all sessions."""
        return self._wait(lambda: sum(len(s.messages) for s in self._sessions) >= n, timeout)

    # -- internals ---------------------------------------------------------

    def _wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        with self._changed:
            while not pred():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))
            return True

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _accept_loop(self) -> None:
        ls = self._listener
        try:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                try:
                    conn, addr = ls.accept()
                except socket.timeout:
                    continue
                except OSError:
                    break
                session = Session(addr)
                t = threading.Thread(target=self._serve, args=(conn, session), daemon=True,
                                     name="SmtpPeer-%d-%d" % (self.port, len(self._sessions)))
                with self._lock:
                    self._sessions.append(session)
                    self._socks.append(conn)
                    self._threads.append(t)
                t.start()
        finally:
            try:
                ls.close()
            except OSError:
                pass
            if not self._stop.is_set():
                # lifetime over: close connections still open
                with self._lock:
                    socks = list(self._socks)
                for s in socks:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def _serve(self, sock: socket.socket, session: Session) -> None:
        c = _Conn(sock, session, self._deadline)
        try:
            if self.script.tls_wrapper:
                self._start_tls(c, session)
                sock = c.sock
            self._dialog(c, session)
        except _Dropped as e:
            if session.error is None:
                session.error = str(e)
        except (OSError, socket.timeout) as e:
            session.error = "%s: %s" % (type(e).__name__, e)
        finally:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                sock.close()
            except OSError:
                pass
            with self._lock:
                if sock in self._socks:
                    self._socks.remove(sock)
            session.closed.set()
            self._notify()

    def _reply(self, c: _Conn, session: Session, stage: str, line: str, spec: ReplySpec) -> str:
        """Compute, delay and send a reply; returns it as text ("" if nothing sent)."""
        s = self.script
        if s.flood is not None and s.flood[0] == stage:
            pause = s.flood[2] if len(s.flood) > 2 else 0.0
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                c.sock.settimeout(5)
                c.sock.sendall(s.flood[1])      # not recorded: it would grow without end
                if pause:
                    time.sleep(pause)
            raise _Dropped("flood over")
        reply: Reply = spec(line) if callable(spec) else spec
        if s.before_reply is not None:
            alt = s.before_reply(session, stage, line, reply)
            if alt is not None:
                reply = alt
        d = s.delay.get(stage, 0.0)
        if d > 0:
            self._sleep(d)
        if isinstance(reply, bytes):
            data = reply
        elif reply == "":
            data = b""
        else:
            data = b"".join(l.encode("utf-8") + b"\r\n" for l in reply.split("\n"))
        pause = s.trickle.get(stage)
        if data and pause:
            for i in range(len(data)):
                c.send(data[i:i + 1])
                self._sleep(pause)
        elif data:
            c.send(data)
        return data.decode("utf-8", "replace")

    def _sleep(self, seconds: float) -> None:
        end = min(time.monotonic() + seconds, self._deadline)
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))
        raise _Dropped("server stopped")

    def _drop(self, session: Session, stage: str) -> bool:
        if self.script.drop_after == stage:
            session.dropped_at = stage
            raise _Dropped("dropped after %s (script)" % stage)
        return False

    def _ehlo_reply(self, tls_active: bool = False) -> str:
        s = self.script
        lines = list(s.ehlo_lines or ["peer.test.invalid"])
        if tls_active:
            if s.ehlo_lines_tls is not None:
                lines = list(s.ehlo_lines_tls)
        else:
            offer = s.offer_starttls
            if offer is None:
                offer = s.tls_cert is not None or s.tls_context is not None
            if offer and not any(l.upper() == "STARTTLS" for l in lines):
                lines.append("STARTTLS")
        out = ["250-%s" % l for l in lines[:-1]] + ["250 %s" % lines[-1]]
        return "\n".join(out)

    def _start_tls(self, c: "_Conn", session: Session) -> None:
        """Server side of the TLS handshake; replaces c.sock."""
        ctx = self.script.server_context()
        seen = {}

        def sni_cb(sslobj, name, _ctx):
            seen["sni"] = name
            return None
        ctx.sni_callback = sni_cb
        c.buf.clear()
        left = max(0.1, min(CONNECTION_TIMEOUT, self._deadline - time.monotonic()))
        c.sock.settimeout(left)
        try:
            tsock = ctx.wrap_socket(c.sock, server_side=True, do_handshake_on_connect=False)
            tsock.do_handshake()
        except (ssl.SSLError, OSError) as e:
            session.tls_error = "%s: %s" % (type(e).__name__, e)
            raise _Dropped("TLS handshake failed: %s" % e)
        c.sock = tsock
        session.tls = {"version": tsock.version(), "cipher": (tsock.cipher() or ("",))[0],
                       "sni": seen.get("sni")}
        self._notify()

    def _dialog(self, c: _Conn, session: Session) -> None:
        s = self.script
        self._drop(session, "greeting")
        self._reply(c, session, "greeting", "", s.greeting)
        mail_from: Optional[str] = None
        rcpts: List[str] = []
        accepted: List[str] = []
        bdat_buf: Optional[bytearray] = None

        def reset() -> None:
            nonlocal mail_from, rcpts, accepted, bdat_buf
            mail_from, rcpts, accepted, bdat_buf = None, [], [], None

        def finish(content: bytes, line: str) -> None:
            session.messages.append(content)
            self._notify()
            self._drop(session, "dot")
            if s.lmtp:
                for r in list(accepted):
                    self._reply(c, session, "dot", r, s.dot_reply)
            else:
                self._reply(c, session, "dot", mail_from or line, s.dot_reply)
            reset()

        while not self._stop.is_set():
            raw = c.readline()
            line = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            session.commands.append(line)
            verb = line.split(" ", 1)[0].upper()
            arg = line[len(verb):].lstrip() if verb else ""
            if verb in ("EHLO", "LHLO"):
                session.helo = arg
                self._drop(session, "ehlo")
                reset()
                spec = s.ehlo_reply if s.ehlo_reply is not None else \
                    self._ehlo_reply(session.tls is not None)
                self._reply(c, session, "ehlo", line, spec)
            elif verb == "HELO":
                session.helo = arg
                self._drop(session, "helo")
                reset()
                self._reply(c, session, "helo", line, s.helo_reply)
            elif verb == "MAIL":
                self._drop(session, "mail")
                if mail_from is not None:
                    self._reply(c, session, "mail", line, "503 5.5.1 Error: nested MAIL command")
                    continue
                r = self._reply(c, session, "mail", line, s.mail_reply)
                if _final_line(r).startswith("2"):
                    mail_from, rcpts, accepted = line, [], []
                    session.envelopes.append(Envelope(line, rcpts, accepted))
                    self._notify()
            elif verb == "RCPT":
                self._drop(session, "rcpt")
                if mail_from is None:
                    self._reply(c, session, "rcpt", line, "503 5.5.1 Error: need MAIL command")
                    continue
                rcpts.append(line)
                r = self._reply(c, session, "rcpt", line, s.rcpt_reply)
                if _final_line(r).startswith("2"):
                    accepted.append(line)
            elif verb == "DATA":
                self._drop(session, "data")
                if mail_from is None:
                    self._reply(c, session, "data", line, "503 5.5.1 Error: need MAIL command")
                    continue
                if not accepted:
                    self._reply(c, session, "data", line, "554 5.5.1 Error: no valid recipients")
                    continue
                r = self._reply(c, session, "data", line, s.data_reply)
                if not _final_line(r).startswith("3"):
                    continue
                if s.stall_body > 0:
                    session.dropped_at = "body"
                    self._sleep(s.stall_body)
                    raise _Dropped("stalled in the message body (script)")
                if s.drop_after == "body":
                    session.partial = c.read_some()
                    self._drop(session, "body")
                c.throttle = s.body_read_rate
                try:
                    content = c.read_data()
                finally:
                    c.throttle = None
                finish(content, line)
            elif verb == "BDAT":
                m = re.match(r"(?i)^BDAT\s+(\d+)(\s+LAST)?\s*$", line)
                if not m:
                    self._reply(c, session, "bdat", line, "501 5.5.4 Syntax: BDAT count [LAST]")
                    continue
                chunk = c.read_exact(int(m.group(1)))
                if mail_from is None or not accepted:
                    self._reply(c, session, "bdat", line, "503 5.5.1 Error: no valid transaction")
                    continue
                if bdat_buf is None:
                    bdat_buf = bytearray()
                bdat_buf += chunk
                if m.group(2):
                    finish(bytes(bdat_buf), line)
                else:
                    self._reply(c, session, "bdat", line,
                                "250 2.0.0 %d octets received" % len(chunk))
            elif verb == "RSET":
                reset()
                self._reply(c, session, "rset", line, s.rset_reply)
            elif verb == "NOOP":
                self._reply(c, session, "noop", line, s.noop_reply)
            elif verb == "QUIT":
                self._reply(c, session, "quit", line, s.quit_reply)
                return
            elif verb == "VRFY":
                self._reply(c, session, "other", line, "252 2.0.0 Send mail to find out")
            elif verb == "STARTTLS":
                ctx = s.server_context() if session.tls is None else None
                spec = s.starttls_reply
                if spec is None:
                    spec = "220 2.0.0 Ready to start TLS" if ctx is not None else \
                        "454 4.7.0 TLS not available"
                r = self._reply(c, session, "starttls", line, spec)
                if not r.startswith("2") or ctx is None:
                    continue
                how = s.tls_after_starttls
                if how == "drop":
                    raise _Dropped("dropped after STARTTLS (script)")
                if how == "garbage":
                    c.read_some()                  # the ClientHello, then nonsense
                    c.send(b"this is not TLS\r\n" * 4)
                    raise _Dropped("garbage after STARTTLS (script)")
                if how == "hang":
                    self._sleep(self._deadline - time.monotonic())
                    raise _Dropped("hang after STARTTLS (script)")
                self._start_tls(c, session)
                reset()
            else:
                self._reply(c, session, "other", line,
                            "502 5.5.2 Error: command not recognized")


class UnixSmtpPeer(SmtpPeer):
    """The scripted server on a UNIX-domain socket at ``path`` (LMTP's
    ``unix:`` next-hops).  ``owner`` (a user name) gets the socket, mode
    0600, so that an unprivileged delivery agent running as that user may
    connect; None leaves it to the creating user."""

    def __init__(self, script: Optional[PeerScript], path: str, owner: Optional[str] = None,
                 max_lifetime: float = 120) -> None:
        super().__init__(script, max_lifetime=max_lifetime)
        self.path = path
        self.owner = owner

    @property
    def address(self) -> str:
        return "unix:" + self.path

    def start(self) -> None:
        import os
        if self._listener is not None:
            raise RuntimeError("UnixSmtpPeer already started")
        if os.path.lexists(self.path):
            os.unlink(self.path)
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ls.bind(self.path)
        if self.owner is not None:
            import pwd
            pw = pwd.getpwnam(self.owner)
            os.chown(self.path, pw.pw_uid, pw.pw_gid)
            os.chmod(self.path, 0o600)
        ls.listen(16)
        ls.settimeout(0.2)
        self._listener = ls
        self._deadline = time.monotonic() + self.max_lifetime
        self._stop.clear()
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name="UnixSmtpPeer-accept")
        self._accept_thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        import os
        super().stop(timeout)
        try:
            os.unlink(self.path)
        except OSError:
            pass
