"""Blocking shell around the attribute codec: one socket, one timeout.

Every read and write is bounded by ``timeout`` (``ipc_timeout`` for qmgr and
the bounce/defer/trace services), as Postfix's timed IPC streams are.
"""

from __future__ import annotations

import socket
from .attr import AttrError, Decoder, encode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable

    from .attr import Value


class IpcError(Exception):
    """I/O failure, timeout, premature EOF or a malformed message on an IPC stream."""


class AttrStream:
    def __init__(self, sock: socket.socket, timeout: float, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.decoder = Decoder()
        sock.settimeout(timeout if timeout > 0 else None)

    @classmethod
    def connect_unix(cls, path: str, timeout: float) -> "AttrStream":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout if timeout > 0 else None)
        try:
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise IpcError("connect to %s: %s" % (path, exc.strerror or exc)) from None
        return cls(sock, timeout, path)

    def send(self, pairs: Iterable[tuple[str, Value]]) -> None:
        self.send_raw(encode(pairs))

    def send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise IpcError("timeout sending to %s" % self.peer) from None
        except OSError as exc:
            raise IpcError("write to %s: %s" % (self.peer, exc.strerror or exc)) from None

    def receive(self) -> list[tuple[str, str]]:
        """The next complete attribute list; IpcError on EOF, timeout or garbage."""
        lst = self.receive_or_eof()
        if lst is None:
            raise IpcError("premature end-of-input on %s" % self.peer)
        return lst

    def receive_or_eof(self) -> list[tuple[str, str]] | None:
        """Like receive(), but a clean EOF before any byte of a list gives None."""
        while True:
            try:
                lst = self.decoder.next_list()
                if lst is not None:
                    return lst
                data = self._read()
                if not data:
                    if self.decoder.pending:
                        raise IpcError("premature end-of-input on %s" % self.peer)
                    return None
                self.decoder.feed(data)
            except AttrError as exc:
                raise IpcError("%s: %s" % (self.peer, exc)) from None

    def _read(self) -> bytes:
        try:
            return self.sock.recv(65536)
        except socket.timeout:
            raise IpcError("timeout reading from %s" % self.peer) from None
        except OSError as exc:
            raise IpcError("read from %s: %s" % (self.peer, exc.strerror or exc)) from None

    def expect_protocol(self, name: str) -> None:
        """Check the server's ``protocol`` announcement (Postfix >= 3.6)."""
        lst = self.receive()
        if lst != [("protocol", name)]:
            raise IpcError("%s: unexpected protocol announcement %r (expecting %s)"
                           % (self.peer, lst[:2], name))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
