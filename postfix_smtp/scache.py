"""Client for Postfix's connection cache, scache(8) (``private/scache``).

This is scache_clnt.c: a persistent stream to the cache service (the server
speaks first: ``protocol=connection_cache_protocol``), synchronous requests
in the null-terminated attribute form, and open SMTP sockets passed with
SCM_RIGHTS, each descriptor transfer bracketed by ``dummy`` lists exactly as
Postfix does on every platform (postfix-ipc.md §5.2):

=========  ==================================  ===========================
request    client sends                         then
=========  ==================================  ===========================
find_endp  request, label                       status, property; on 0:
                                                C dummy, S fd, C dummy
find_dest  request, label                       status, property, property;
                                                on 0 as find_endp
save_endp  request, ttl, label, property        S dummy, C fd, S status
save_dest  request, ttl, label, property, label S status
=========  ==================================  ===========================

Every request is bounded by ``connection_cache_protocol_timeout``.  An I/O
error closes the stream; after a pause of one second the request is tried
once more on a fresh stream, and a second failure logs "disabling
connection caching" and turns the client off for the rest of the process
(stock SCACHE_MAX_TRIES = 2).  The stream is closed after ``ipc_idle``
seconds without a request and after ``ipc_ttl`` seconds of age (stock
auto_clnt); a stream the server closed while we were idle is reopened
at once, without the pause and without counting as a try.

A saved descriptor is always closed locally after the save attempt.
"""

from __future__ import annotations

import array
import errno
import socket
import time

from .ipc.attr import AttrError, Decoder, encode

PROTOCOL = "connection_cache_protocol"
MAX_TRIES = 2

STATUS_OK = 0
STATUS_BAD = 1
STATUS_FAIL = 2


class ScacheError(Exception):
    """An I/O or protocol failure on the cache stream."""

    def __init__(self, text: str, errnum: int = 0, stale: bool = False) -> None:
        super().__init__(text)
        self.errnum = errnum
        self.stale = stale        # EOF/EPIPE before any reply: the server dropped an idle stream


def send_fd(sock: socket.socket, fd: int) -> None:
    """unix_send_fd(): one data byte and one SCM_RIGHTS descriptor."""
    sock.sendmsg([b"\0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])


def recv_fd(sock: socket.socket) -> int:
    """unix_recv_fd(): the descriptor of one SCM_RIGHTS message (extra ones closed)."""
    fds = array.array("i")
    data, ancdata, flags, _addr = sock.recvmsg(1, socket.CMSG_SPACE(4 * fds.itemsize))
    got = []
    for level, typ, cdata in ancdata:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            usable = len(cdata) - (len(cdata) % fds.itemsize)
            fds.frombytes(cdata[:usable])
            got.extend(fds)
    if not got:
        if not data:
            raise ScacheError("premature end-of-input", stale=False)
        raise ScacheError("no file descriptor received")
    for extra in got[1:]:
        try:
            import os
            os.close(extra)
        except OSError:
            pass
    return got[0]


class ScacheClient:
    """A persistent client for one connection cache service.

    ``path`` is relative to the queue directory (the process runs there, in
    or out of a chroot jail).  ``log`` needs ``warning()`` and ``info()``.
    """

    def __init__(self, path: str = "private/scache", timeout: float = 5.0,
                 idle: float = 5.0, ttl: float = 1000.0, log=None,
                 sleep=time.sleep, clock=time.monotonic, verbose: bool = False) -> None:
        self.path = path
        self.timeout = timeout
        self.idle = idle
        self.ttl = ttl
        self.log = log
        self.sleep = sleep
        self.clock = clock
        self.verbose = verbose
        self.disabled = False
        self.sock: socket.socket | None = None
        self._decoder = Decoder()
        self._opened = 0.0
        self._used = 0.0
        self._fresh = False        # the stream was opened for the current request

    # --- the stream --------------------------------------------------------------
    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self._decoder = Decoder()

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout if self.timeout > 0 else None)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise ScacheError("connect to %s: %s" % (self.path, exc.strerror or exc),
                              exc.errno or 0) from None
        self.sock = sock
        self._decoder = Decoder()
        now = self.clock()
        self._opened = self._used = now
        self._fresh = True
        lst = self._receive()
        if lst != [("protocol", PROTOCOL)]:
            self.close()
            raise ScacheError("%s: unexpected protocol announcement %r (expecting %s)"
                              % (self.path, lst[:2], PROTOCOL))

    def _access(self) -> None:
        now = self.clock()
        if self.sock is not None and (now - self._used >= self.idle
                                      or now - self._opened >= self.ttl):
            self.close()
        if self.sock is None:
            self._connect()
        else:
            self._fresh = False
        self._used = now

    def _send(self, pairs) -> None:
        try:
            self.sock.sendall(encode(pairs))
        except socket.timeout:
            raise ScacheError("timeout sending to %s" % self.path, errno.ETIMEDOUT) from None
        except OSError as exc:
            raise ScacheError("write to %s: %s" % (self.path, exc.strerror or exc),
                              exc.errno or 0, stale=exc.errno in (errno.EPIPE,
                                                                  errno.ECONNRESET)) from None

    def _receive(self) -> list:
        while True:
            lst = self._decoder.next_list()
            if lst is not None:
                return lst
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                raise ScacheError("timeout reading from %s" % self.path, errno.ETIMEDOUT) from None
            except OSError as exc:
                raise ScacheError("read from %s: %s" % (self.path, exc.strerror or exc),
                                  exc.errno or 0,
                                  stale=exc.errno == errno.ECONNRESET) from None
            if not data:
                raise ScacheError("premature end-of-input on %s" % self.path,
                                  stale=not self._decoder.pending)
            try:
                self._decoder.feed(data)
            except AttrError as exc:
                raise ScacheError("%s: %s" % (self.path, exc)) from None

    def _expect(self, names: tuple) -> list:
        lst = self._receive()
        if [n for n, _v in lst] != list(names):
            raise ScacheError("%s: unexpected reply %r" % (self.path, [n for n, _ in lst][:4]))
        return [v for _n, v in lst]

    def _status(self, text: str) -> int:
        if not text.isdigit():
            raise ScacheError("%s: malformed status %r" % (self.path, text[:20]))
        return int(text)

    def _recv_fd(self) -> int:
        try:
            return recv_fd(self.sock)
        except socket.timeout:
            raise ScacheError("timeout receiving descriptor from %s" % self.path,
                              errno.ETIMEDOUT) from None
        except OSError as exc:
            raise ScacheError("receive descriptor from %s: %s" % (self.path, exc.strerror or exc),
                              exc.errno or 0) from None

    def _send_fd(self, fd: int) -> None:
        try:
            send_fd(self.sock, fd)
        except socket.timeout:
            raise ScacheError("timeout sending descriptor to %s" % self.path,
                              errno.ETIMEDOUT) from None
        except OSError as exc:
            raise ScacheError("send descriptor to %s: %s" % (self.path, exc.strerror or exc),
                              exc.errno or 0) from None

    def _call(self, op):
        """Run ``op`` with stock's retry rules; its result, or None when the cache
        is (or became) unusable."""
        tries = 0
        stale_retry = True
        while not self.disabled:
            try:
                self._access()
                return op()
            except ScacheError as exc:
                fresh = self._fresh
                self.close()
                if exc.stale and not fresh and stale_retry:
                    stale_retry = False          # the server closed our idle stream
                    continue
                if self.log is not None and (
                        self.verbose or tries > 0
                        or exc.errnum not in (errno.EPIPE, errno.ENOENT)):
                    self.log.warning("problem talking to service %s: %s" % (self.path, exc))
            tries += 1
            if tries >= MAX_TRIES:
                if self.log is not None:
                    self.log.warning("disabling connection caching")
                self.disabled = True
                return None
            self.sleep(1)
        return None

    # --- requests ----------------------------------------------------------------
    def find_endp(self, label: str):
        """(socket, endpoint properties) for ``label``, or None."""
        def op():
            self._send([("request", "find_endp"), ("label", label)])
            status, prop = self._expect(("status", "property"))
            if self._status(status) != STATUS_OK:
                return False
            fd = self._take_fd()
            return fd, prop
        res = self._call(op)
        if not res:
            return None
        fd, prop = res
        return _adopt(fd), prop

    def find_dest(self, label: str):
        """(socket, destination properties, endpoint properties), or None."""
        def op():
            self._send([("request", "find_dest"), ("label", label)])
            status, dprop, eprop = self._expect(("status", "property", "property"))
            if self._status(status) != STATUS_OK:
                return False
            fd = self._take_fd()
            return fd, dprop, eprop
        res = self._call(op)
        if not res:
            return None
        fd, dprop, eprop = res
        return _adopt(fd), dprop, eprop

    def _take_fd(self) -> int:
        self._send([("dummy", "")])
        fd = self._recv_fd()
        try:
            self._send([("dummy", "")])     # MUST_READ_AFTER_SENDING_FD; errors ignored
        except ScacheError:
            pass
        return fd

    def save_endp(self, ttl: int, label: str, prop: str, sock) -> int:
        """Hand ``sock`` (a socket or a descriptor) to the cache; always closed here.
        Returns the server status, or -1 when the request failed."""
        fd = sock if isinstance(sock, int) else sock.fileno()
        if ttl <= 0:
            raise ValueError("bad endp_ttl: %d" % ttl)

        def op():
            self._send([("request", "save_endp"), ("ttl", int(ttl)), ("label", label),
                        ("property", prop)])
            self._expect(("dummy",))
            self._send_fd(fd)
            (status,) = self._expect(("status",))
            return self._status(status)
        try:
            res = self._call(op)
        finally:
            if isinstance(sock, int):
                import os
                try:
                    os.close(sock)
                except OSError:
                    pass
            else:
                try:
                    sock.close()
                except OSError:
                    pass
        return -1 if res is None else res

    def save_dest(self, ttl: int, dest_label: str, dest_prop: str, endp_label: str) -> int:
        if ttl <= 0:
            raise ValueError("bad dest_ttl: %d" % ttl)

        def op():
            self._send([("request", "save_dest"), ("ttl", int(ttl)), ("label", dest_label),
                        ("property", dest_prop), ("label", endp_label)])
            (status,) = self._expect(("status",))
            return self._status(status)
        res = self._call(op)
        return -1 if res is None else res


def _adopt(fd: int) -> socket.socket:
    """A Python socket object owning a received descriptor."""
    return socket.socket(fileno=fd)


_client: ScacheClient | None = None


def client(path: str = "private/scache", timeout: float = 5.0, idle: float = 5.0,
           ttl: float = 1000.0, log=None) -> ScacheClient:
    """The process-wide cache client (one stream per process, as stock)."""
    global _client
    if _client is None:
        _client = ScacheClient(path, timeout=timeout, idle=idle, ttl=ttl, log=log)
    return _client
