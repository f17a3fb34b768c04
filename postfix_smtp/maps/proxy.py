"""proxy:type:name - a client of proxymap(8) (dict_proxy.c, Postfix >= 3.6 protocol).

The stream goes to ``private/$proxymap_service_name`` (relative to the queue
directory, or under ``$queue_directory`` when the process is elsewhere).
After each connect the server announces ``protocol=proxymap_protocol``.
Requests are attribute lists::

    open:   request=open   table=<type:name> flags=<instance flags>
            -> status, flags (the table's FIXED/PATTERN/MULTI_WRITER bits)
    lookup: request=lookup table=<type:name> flags=<instance|request flags> key=<key>
            -> status, value

Status 0 found, 1 not found, 2 retry, 3 bad request, 4 table not listed in
``proxy_read_maps``, 5 configuration error.  Streams are shared by all
proxied tables of a process, closed after ``ipc_idle`` seconds idle or
``ipc_ttl`` seconds in use, and bounded by ``ipc_timeout``.

Deliberate difference: stock retries a broken stream forever (one second
apart) and exits on "bad request" or "not configured"; here a lookup gives
up after ``proxy_tries`` attempts and every failure is a MapError, so the
delivery is deferred and the process lives on.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

from .base import (DICT_FLAG_FOLD_ANY, DICT_FLAG_IMPL_MASK, DICT_FLAG_INST_MASK,
                   DICT_FLAG_RQST_MASK, DICT_ERR_CONFIG, DICT_ERR_RETRY, MapError,
                   OpenError, Table)

PROXY_STAT_OK = 0
PROXY_STAT_NOKEY = 1
PROXY_STAT_RETRY = 2
PROXY_STAT_BAD = 3
PROXY_STAT_DENY = 4
PROXY_STAT_CONFIG = 5


class ProxyClient:
    """clnt_stream: one shared, lazily reconnected stream to a proxymap service."""

    def __init__(self, path: str, service: str, timeout: float, max_idle: float,
                 max_ttl: float) -> None:
        self.path = path
        self.relative = os.path.join("private", service)
        self.service = service
        self.timeout = timeout
        self.max_idle = max_idle
        self.max_ttl = max_ttl
        self.stream: Any = None
        self._opened = 0.0
        self._used = 0.0

    def access(self) -> Any:
        from ..ipc.stream import AttrStream
        now = time.monotonic()
        if self.stream is not None and (now - self._used > self.max_idle
                                        or now - self._opened > self.max_ttl):
            self.recover()
        if self.stream is None:
            # Inside a chroot (or after chdir to the queue directory) the
            # relative name is the one that works, as in stock.
            path = self.relative if os.path.exists(self.relative) else self.path
            stream = AttrStream.connect_unix(path, self.timeout)
            try:
                stream.expect_protocol("proxymap_protocol")
            except Exception:
                stream.close()
                raise
            self.stream = stream
            self._opened = now
        self._used = now
        return self.stream

    def call(self, pairs: list, names: list) -> list:
        from ..ipc.attr import AttrError, expect
        from ..ipc.stream import IpcError
        stream = self.access()
        try:
            stream.send(pairs)
            reply = stream.receive()
            return expect(reply, names, "%s reply" % self.service)
        except (IpcError, AttrError):
            self.recover()
            raise

    def recover(self) -> None:
        if self.stream is not None:
            self.stream.close()
        self.stream = None


class ProxyTable(Table):
    type = "proxy"
    impl_flags = 0
    needs_context = True

    def __init__(self, name: str, flags: int, log: Any = None, utf8: bool = False,
                 ctx: Any = None) -> None:
        super().__init__(name, flags, log, utf8)
        if ":" not in name:
            raise OpenError('open dictionary: expecting "type:name" form instead of "%s"'
                            % name)
        self.client: ProxyClient = ctx.proxy_client()
        self.tries = max(1, int(getattr(ctx, "proxy_tries", 3)))
        self.retry_sleep = getattr(ctx, "retry_sleep", 1.0)
        self.inst_flags = flags & DICT_FLAG_INST_MASK
        status, server_flags = self._request(
            [("request", "open"), ("table", name), ("flags", self.inst_flags)],
            ["status", "flags"], "open", opening=True)
        if status == PROXY_STAT_OK:
            self.flags = (flags & ~DICT_FLAG_IMPL_MASK) | (server_flags & DICT_FLAG_IMPL_MASK)
            return
        if status == PROXY_STAT_DENY:
            raise OpenError('%s service is not configured for table "%s"'
                            % (self.client.service, name))
        if status == PROXY_STAT_BAD:
            raise OpenError('%s open failed for table "%s": invalid request'
                            % (self.client.service, name))
        raise OpenError('%s open failed for table "%s": unexpected status %d'
                        % (self.client.service, name, status))

    def _request(self, pairs: list, names: list, what: str, opening: bool = False) -> tuple:
        from ..ipc.attr import AttrError, parse_int
        from ..ipc.stream import IpcError
        last = ""
        for attempt in range(self.tries):
            if attempt:
                time.sleep(self.retry_sleep)
            try:
                values = self.client.call(pairs, names)
                status = parse_int("status", values[0])
                if len(values) > 1 and names[1] == "flags":
                    return status, parse_int("flags", values[1])
                return status, values[1] if len(values) > 1 else ""
            except (IpcError, AttrError, OSError) as exc:
                last = str(exc)
                if attempt or opening:
                    self.log.warning("dict_proxy_%s: service %s: %s"
                                     % (what, self.client.service, last))
        text = "dict_proxy_%s: service %s: %s" % (what, self.client.service, last)
        if opening:
            raise OpenError(text)
        raise MapError(text, DICT_ERR_RETRY, self.title)

    def _get(self, key: str) -> Optional[str]:
        flags = self.flags
        if self.utf8:
            flags &= ~DICT_FLAG_FOLD_ANY      # dict_utf8 folded the key already
        request_flags = self.inst_flags | (flags & DICT_FLAG_RQST_MASK)
        status, value = self._request(
            [("request", "lookup"), ("table", self.name), ("flags", request_flags),
             ("key", key)], ["status", "value"], "lookup")
        if status == PROXY_STAT_OK:
            return value
        if status == PROXY_STAT_NOKEY:
            return None
        if status == PROXY_STAT_RETRY:
            raise MapError("%s:%s lookup failed (retry)" % (self.type, self.name),
                           DICT_ERR_RETRY, self.title)
        if status == PROXY_STAT_CONFIG:
            raise MapError("%s:%s lookup failed (configuration error)" % (self.type, self.name),
                           DICT_ERR_CONFIG, self.title)
        if status == PROXY_STAT_DENY:
            text = '%s service is not configured for table "%s"' % (self.client.service,
                                                                    self.name)
        elif status == PROXY_STAT_BAD:
            text = '%s lookup failed for table "%s" key "%s": invalid request' % (
                self.client.service, self.name, key)
        else:
            text = '%s lookup failed for table "%s" key "%s": unexpected reply status %d' % (
                self.client.service, self.name, key, status)
        self.log.error(text)
        raise MapError(text, DICT_ERR_RETRY, self.title)


def proxy_socket_path(queue_directory: str, service: str) -> str:
    """$queue_directory/private/<service> (the relative name is tried first on connect)."""
    return os.path.join(queue_directory, "private", service)
