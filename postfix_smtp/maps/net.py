"""socketmap: and tcp: clients (dict_sockmap.c, dict_tcp.c).

socketmap:inet:host:port:name / socketmap:unix:/path:name - the Sendmail
socketmap protocol: request netstring "name key", reply netstring "OK
value", "NOTFOUND ", "TEMP reason", "TIMEOUT reason" or "PERM reason".  One
connection per endpoint is shared by the socketmaps of a process; it is
closed after 10 s idle or 100 s in use, and a connection that the server
closed is reopened once per lookup.  Every step has a 100 s time limit.

tcp:host:port - the tcp_table(5) protocol: "get %XX-quoted-key\\n", reply
"200 value" / "500 reason" / "400 reason" (%XX-quoted).  Like Postfix the
client tries up to 10 connections, one second apart, before it reports a
lookup error; a 4xx reply or garbage closes the connection.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Optional, Tuple

from .base import (DICT_FLAG_FOLD_MUL, DICT_FLAG_NO_UNAUTH, DICT_FLAG_PATTERN,
                   DICT_ERR_CONFIG, DICT_ERR_RETRY, MapError, OpenError, Table)
from .text import NetstringError, hex_quote, hex_unquote, netstring, parse_netstring

SOCKMAP_TIMEOUT = 100
SOCKMAP_MAX_REPLY = 100000
SOCKMAP_MAX_IDLE = 10
SOCKMAP_MAX_TTL = 100
TCP_MAXTRY = 10
TCP_TIMEOUT = 100
TCP_MAXLEN = 4096


def split_host_port(text: str) -> Tuple[str, str]:
    """host:port or [host]:port (host_port())."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or text[close + 1:close + 2] != ":":
            raise ValueError("bad host:port syntax: %s" % text)
        return text[1:close], text[close + 2:]
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ValueError("missing port in %s" % text)
    return host, port


def connect_endpoint(endpoint: str, timeout: float) -> socket.socket:
    """Connect to "inet:host:port", "unix:/path" or "local:/path"."""
    transport, _, where = endpoint.partition(":")
    if transport in ("unix", "local"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(where)
        except OSError:
            sock.close()
            raise
        return sock
    if transport == "inet":
        host, port = split_host_port(where)
        return socket.create_connection((host or "localhost", int(port) if port.isdigit()
                                         else socket.getservbyname(port, "tcp")), timeout)
    raise OSError(0, "invalid transport name: %s in service: %s" % (transport, endpoint))


class SocketClient:
    """auto_clnt: one lazily (re)opened stream with idle and time-to-live limits."""

    def __init__(self, endpoint: str, timeout: float = SOCKMAP_TIMEOUT,
                 max_idle: float = SOCKMAP_MAX_IDLE, max_ttl: float = SOCKMAP_MAX_TTL) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.max_idle = max_idle
        self.max_ttl = max_ttl
        self.sock: Optional[socket.socket] = None
        self.buf = b""
        self._opened = 0.0
        self._used = 0.0

    def access(self) -> socket.socket:
        now = time.monotonic()
        if self.sock is not None and (now - self._used > self.max_idle
                                      or now - self._opened > self.max_ttl):
            self.close()
        if self.sock is None:
            self.sock = connect_endpoint(self.endpoint, self.timeout)
            self.sock.settimeout(self.timeout)
            self.buf = b""
            self._opened = now
        self._used = now
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buf = b""


class _Eof(Exception):
    pass


class SocketmapTable(Table):
    type = "socketmap"
    impl_flags = DICT_FLAG_PATTERN
    fold_flag = DICT_FLAG_FOLD_MUL
    needs_context = True

    def __init__(self, name: str, flags: int, log: Any = None, utf8: bool = False,
                 ctx: Any = None) -> None:
        super().__init__(name, flags, log, utf8)
        if flags & DICT_FLAG_NO_UNAUTH:
            raise OpenError("%s:%s map is not allowed for security-sensitive data"
                            % (self.type, name))
        endpoint, sep, mapname = name.rpartition(":")
        if not sep or not endpoint:
            raise OpenError("%s requires server:socketmap argument" % self.type)
        self.mapname = mapname
        self.client = ctx.socket_client(endpoint)
        self.timeout = self.client.timeout

    def _exchange(self, request: bytes) -> bytes:
        sock = self.client.access()
        sock.sendall(netstring(request))
        deadline = time.monotonic() + self.timeout
        while True:
            payload, used = parse_netstring(self.client.buf, SOCKMAP_MAX_REPLY)
            if payload is not None:
                self.client.buf = self.client.buf[used:]
                return payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                raise _Eof()
            self.client.buf += data

    def _get(self, key: str) -> Optional[str]:
        request = ("%s %s" % (self.mapname, key)).encode("utf-8", "surrogateescape")
        for attempt in (0, 1):
            try:
                reply = self._exchange(request)
                break
            except (_Eof, BrokenPipeError, ConnectionResetError) as exc:
                self.client.close()
                if attempt == 0:
                    continue
                why = "unexpected end-of-input" if isinstance(exc, _Eof) else str(exc)
            except socket.timeout:
                self.client.close()
                why = "time limit exceeded"
            except NetstringError as exc:
                self.client.close()
                why = "input format error" if "format" in str(exc) else "input size error"
            except OSError as exc:
                self.client.close()
                why = exc.strerror or str(exc)
            text = "table %s:%s lookup error: %s" % (self.type, self.name, why)
            self.log.warning(text)
            raise MapError(text, DICT_ERR_RETRY, self.title)
        status, _, payload = reply.decode("utf-8", "surrogateescape").partition(" ")
        if status == "OK":
            return payload
        if status == "NOTFOUND":
            return None
        error = DICT_ERR_RETRY
        if status == "TEMP":
            klass = "temporary"
        elif status == "TIMEOUT":
            klass = "timeout"
        elif status == "PERM":
            klass = "permanent"
            error = DICT_ERR_CONFIG
        else:
            klass = "unknown"
        payload = payload.lstrip(" \t\n\v\f\r")
        text = "%s:%s socketmap server %s error%s%.200s" % (
            self.type, self.name, klass, ": " if payload else "", payload)
        self.log.warning(text)
        raise MapError(text, error, self.title)


class TcpTable(Table):
    type = "tcp"
    impl_flags = DICT_FLAG_PATTERN
    fold_flag = DICT_FLAG_FOLD_MUL
    needs_context = True

    def __init__(self, name: str, flags: int, log: Any = None, utf8: bool = False,
                 ctx: Any = None) -> None:
        super().__init__(name, flags, log, utf8)
        if flags & DICT_FLAG_NO_UNAUTH:
            raise OpenError("%s:%s map is not allowed for security sensitive data"
                            % (self.type, name))
        self.timeout = getattr(ctx, "tcp_timeout", TCP_TIMEOUT)
        self.max_try = getattr(ctx, "tcp_max_try", TCP_MAXTRY)
        self.retry_sleep = getattr(ctx, "retry_sleep", 1.0)
        self.sock: Optional[socket.socket] = None
        self.buf = b""

    def _connect(self) -> bool:
        try:
            self.sock = connect_endpoint("inet:" + self.name, self.timeout)
            self.sock.settimeout(self.timeout)
            self.buf = b""
            return True
        except (OSError, ValueError) as exc:
            self.log.warning("connect to TCP map %s: %s"
                             % (self.name, getattr(exc, "strerror", None) or exc))
            self.sock = None
            return False

    def _disconnect(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buf = b""

    def _readline(self) -> Optional[bytes]:
        """One reply line (without newline); None on EOF/error, b"" marker for too long."""
        assert self.sock is not None
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line, self.buf = self.buf[:nl], self.buf[nl + 1:]
                if len(line) > TCP_MAXLEN:
                    raise ValueError("long")
                return line
            if len(self.buf) > TCP_MAXLEN:
                raise ValueError("long")
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data

    def _get(self, key: str) -> Optional[str]:
        raw = key.encode("utf-8", "surrogateescape")
        tries = 0
        while True:
            if self.sock is not None or self._connect():
                try:
                    assert self.sock is not None
                    self.sock.sendall(b"get " + hex_quote(raw) + b"\n")
                    line = self._readline()
                    if line is not None:
                        break
                    self.log.warning("read TCP map reply from %s: unexpected EOF (%s)"
                                     % (self.name, "Success"))
                except ValueError:
                    self.log.warning("read TCP map reply from %s: text longer than %d"
                                     % (self.name, TCP_MAXLEN))
                except OSError as exc:
                    self.log.warning("read TCP map reply from %s: unexpected EOF (%s)"
                                     % (self.name, exc.strerror or exc))
                self._disconnect()
            tries += 1
            if tries >= self.max_try:
                raise MapError("table %s:%s lookup error" % (self.type, self.name),
                               DICT_ERR_RETRY, self.title)
            time.sleep(self.retry_sleep)
        printable = line.decode("utf-8", "surrogateescape")
        if (len(line) < 4 or not line[:3].isdigit() or line[3:4] not in b" \t\n\v\f\r"):
            value = None
        else:
            value = hex_unquote(line[4:])
        if value is None:
            self.log.warning("read TCP map reply from %s: malformed reply: %.100s"
                             % (self.name, printable))
            self._disconnect()
            raise MapError("table %s:%s: malformed reply" % (self.type, self.name),
                           DICT_ERR_RETRY, self.title)
        code = line[:1]
        if code == b"2":
            return value.decode("utf-8", "surrogateescape")
        if code == b"5":
            return None
        if code == b"4":
            self._disconnect()
            raise MapError("table %s:%s: soft error: %s" % (self.type, self.name, printable),
                           DICT_ERR_RETRY, self.title)
        self.log.warning("read TCP map reply from %s: bad status code: %.100s"
                         % (self.name, printable))
        self._disconnect()
        raise MapError("table %s:%s: bad status code" % (self.type, self.name),
                       DICT_ERR_RETRY, self.title)

    def close(self) -> None:
        self._disconnect()
        super().close()
