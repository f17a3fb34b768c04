"""Blocking SMTP connection: connect, write, read replies, each under a timeout.

The per-stage timeouts apply to every read and write system call, as in
stock smtp(8) (``smtp_per_request_deadline = no``).  Failures surface as
:class:`SessionError` carrying the stage, so the caller can produce stock's
"conversation with X timed out while ..." and "lost connection with X
while ..." texts.
"""

from __future__ import annotations

import socket
from ..valueclass import dataclass

from .protocol import STAGE_INFO, Stage
from .reply import Reply, ReplyParser


class SessionError(Exception):
    def __init__(self, kind: str, stage: Stage, detail: str = "") -> None:
        super().__init__("%s while %s" % (kind, STAGE_INFO[stage][1]))
        self.kind = kind          # "timeout" or "lost"
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
        return "%s[%s]:%d" % (self.host, self.addr, self.port)


def connect(ep: Endpoint, timeout: float, bind_addr: str | None = None) -> socket.socket:
    sock = socket.socket(ep.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if bind_addr:
            try:
                sock.bind((bind_addr, 0))
            except OSError:
                pass
        sock.settimeout(timeout if timeout > 0 else None)
        sock.connect((ep.addr, ep.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except socket.timeout:
        sock.close()
        raise ConnectError("Connection timed out") from None
    except OSError as exc:
        sock.close()
        raise ConnectError(exc.strerror or str(exc)) from None
    return sock


class Connection:
    def __init__(self, sock: socket.socket, ep: Endpoint, timeouts: dict,
                 utf8: bool = True, line_limit: int = 2048) -> None:
        self.sock = sock
        self.ep = ep
        self.timeouts = timeouts              # stage -> seconds
        self.parser = ReplyParser(utf8=utf8, line_limit=line_limit)
        self.out = bytearray()
        self.dead = False
        self._timeout: object = -1

    def _settimeout(self, stage: Stage) -> None:
        t = self.timeouts.get(stage, 300.0)
        t = t if t > 0 else None
        if t != self._timeout:            # each settimeout() is a system call
            self.sock.settimeout(t)
            self._timeout = t

    def queue(self, data: bytes) -> None:
        self.out += data

    def flush(self, stage: Stage) -> None:
        if not self.out:
            return
        self._settimeout(stage)
        data = bytes(self.out)
        self.out.clear()
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
        self.out += data
        self.flush(stage)

    def read_reply(self, stage: Stage) -> Reply:
        """Flush pending output, then read one complete reply."""
        self.flush(stage)
        while True:
            r = self.parser.pop()
            if r is not None:
                return r
            self._settimeout(stage)
            data = self._io(stage, self.sock.recv, 65536)
            if not data:
                self.dead = True
                raise SessionError("lost", stage)
            self.parser.feed(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        self.dead = True
