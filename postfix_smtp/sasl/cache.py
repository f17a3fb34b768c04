"""The SASL authentication failure cache (smtp_sasl_auth_cache_name/_time).

After a server rejected a username/password with 535, stock smtp(8)
remembers that for ``smtp_sasl_auth_cache_time`` and fails further
attempts with the same credentials without talking AUTH, so that a wrong
password does not get the account locked.  Entries live in a Postfix table
that must be accessed through ``proxy:`` (proxywrite), exactly as stock
does it:

- key ``HOST;USERNAME``, value ``TIME;SHA1-BASE64(PASSWORD);DSN;REPLY``;
- an entry is used when it is younger than the cache time and its
  password hash matches; an expired, changed or malformed entry is deleted.

This implementation talks to the same proxywrite(8) service with the same
requests, so stock smtp(8) and this agent share one cache table (it must
be listed in ``proxy_write_maps``, as the default is).  Differences: when
proxywrite cannot be reached the cache is skipped with a warning (stock
retries forever, one second apart); a malformed entry is reported as
stock does.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time

from ..ipc.stream import AttrStream, IpcError
from .policy import SaslConfigError

# dict.h flags the stock client sends: DICT_FLAG_DUP_REPLACE | DICT_FLAG_SYNC_UPDATE
# | DICT_FLAG_UTF8_REQUEST; the open request carries only the "instance" flags (none).
REQUEST_FLAGS = (1 << 7) | (1 << 8) | (1 << 19)
OPEN_FLAGS = 0

from ..maps.proxy import (PROXY_STAT_BAD, PROXY_STAT_CONFIG, PROXY_STAT_DENY,  # noqa: F401
                          PROXY_STAT_NOKEY, PROXY_STAT_OK, PROXY_STAT_RETRY)

_DSN_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


class CacheError(Exception):
    """The cache table could not be used this time."""


class ProxyTable:
    """A read-write table through proxywrite(8): the requests dict_proxy.c
    sends (open, lookup, update, delete), one connection per operation
    batch, reconnecting as needed.  ``path`` is the service socket,
    ``private/proxywrite`` relative to the queue directory (the agent's
    working directory, also inside the chroot jail)."""

    def __init__(self, name: str, path: str = "private/proxywrite", timeout: float = 30.0,
                 service: str = "proxywrite", fallback_path: str = "") -> None:
        self.name = name            # the table without "proxy:", e.g. btree:/var/lib/...
        self.path = path
        self.fallback_path = fallback_path
        self.timeout = timeout
        self.service = service
        self._stream = None

    def _connect(self):
        path = self.path
        if self.fallback_path and not os.path.exists(path):
            path = self.fallback_path          # not (yet) in the queue directory
        try:
            stream = AttrStream.connect_unix(path, self.timeout)
            stream.expect_protocol("proxymap_protocol")
            stream.send([("request", "open"), ("table", self.name), ("flags", OPEN_FLAGS)])
            reply = dict(stream.receive())
        except IpcError as exc:
            raise CacheError("%s: %s" % (self.service, exc)) from None
        status = int(reply.get("status", "-1"))
        if status == PROXY_STAT_DENY:
            stream.close()
            raise CacheError("%s service is not configured for table \"%s\""
                             % (self.service, self.name))
        if status != PROXY_STAT_OK:
            stream.close()
            raise CacheError("%s open failed for table \"%s\": status %d"
                             % (self.service, self.name, status))
        return stream

    def _request(self, pairs: list, want: tuple) -> dict:
        for attempt in (1, 2):
            if self._stream is None:
                self._stream = self._connect()
            try:
                self._stream.send(pairs)
                reply = dict(self._stream.receive())
            except IpcError as exc:
                self.close()
                if attempt == 2:
                    raise CacheError("%s: %s" % (self.service, exc)) from None
                continue
            if not all(k in reply for k in want):
                self.close()
                raise CacheError("%s: malformed reply" % self.service)
            return reply
        raise CacheError("%s: unreachable" % self.service)   # pragma: no cover

    def _status(self, reply: dict, what: str, key: str) -> int:
        try:
            status = int(reply["status"])
        except ValueError:
            status = -1
        if status == PROXY_STAT_DENY:
            raise CacheError("%s update access is not configured for table \"%s\""
                             % (self.service, self.name))
        if status in (PROXY_STAT_RETRY, PROXY_STAT_CONFIG, PROXY_STAT_BAD) or status < 0:
            raise CacheError("%s %s failed for table \"%s\" key \"%s\": status %d"
                             % (self.service, what, self.name, key, status))
        return status

    def lookup(self, key: str) -> str | None:
        reply = self._request([("request", "lookup"), ("table", self.name),
                               ("flags", REQUEST_FLAGS), ("key", key)], ("status", "value"))
        status = self._status(reply, "lookup", key)
        return reply["value"] if status == PROXY_STAT_OK else None

    def update(self, key: str, value: str) -> None:
        reply = self._request([("request", "update"), ("table", self.name),
                               ("flags", REQUEST_FLAGS), ("key", key), ("value", value)],
                              ("status",))
        self._status(reply, "update", key)

    def delete(self, key: str) -> bool:
        reply = self._request([("request", "delete"), ("table", self.name),
                               ("flags", REQUEST_FLAGS), ("key", key)], ("status",))
        return self._status(reply, "delete", key) == PROXY_STAT_OK

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


class MemoryTable:
    """A dict with the table interface (tests)."""

    def __init__(self) -> None:
        self.data: dict = {}

    def lookup(self, key):
        return self.data.get(key)

    def update(self, key, value):
        self.data[key] = value

    def delete(self, key):
        return self.data.pop(key, None) is not None

    def close(self):
        pass


def password_hash(password: str) -> str:
    digest = hashlib.sha1(password.encode("utf-8", "surrogateescape")).digest()
    return base64.b64encode(digest).decode("ascii")


def check_cache_name(name: str, param: str = "smtp_sasl_auth_cache_name") -> str:
    """Stock's start-up checks; returns the table name to open through proxywrite."""
    if re.search(r"[, \t\r\n]", name):
        raise SaslConfigError('SASL authentication cache name "%s" contains multiple values'
                              % name)
    if not name.startswith("proxy:"):
        raise SaslConfigError('SASL authentication cache name "%s" must start with "proxy:'
                              % name)
    return name[len("proxy:"):]


class AuthCache:
    """smtp_sasl_auth_cache.c over a table (ProxyTable in production)."""

    def __init__(self, table, ttl: float, name: str = "", now=time.time, warn=None) -> None:
        self.table = table
        self.ttl = int(ttl)
        self.name = name or getattr(table, "name", "")
        self.now = now
        self.warn = warn or (lambda text: None)

    @staticmethod
    def key(host: str, username: str) -> str:
        return "%s;%s" % (host, username)

    def find(self, host: str, username: str, password: str):
        """(dsn, text) of a valid cached 535 for these credentials, or None."""
        key = self.key(host, username)
        try:
            entry = self.table.lookup(key)
        except CacheError as exc:
            self.warn("SASL auth failure map %s: lookup failed for %s (%s)"
                      % (self.name, key, exc))
            return None
        if entry is None:
            return None
        hit = self._valid(entry, password)
        if hit is None:
            try:
                if not self.table.delete(key):
                    self.warn("SASL auth failure map %s: entry not deleted: %s"
                              % (self.name, key))
            except CacheError:
                self.warn("SASL auth failure map %s: entry not deleted: %s" % (self.name, key))
        return hit

    def _valid(self, entry: str, password: str):
        m = re.match(r"^(\d+);([^;]+);([^;]+);([^\n]+)", entry)
        if not m or not _DSN_RE.match(m.group(3)):
            self.warn("bad smtp_sasl_auth_cache entry: %.100s" % entry)
            return None
        stamp = int(m.group(1))
        if stamp + self.ttl < int(self.now()):
            return None
        if m.group(2) != password_hash(password):
            return None
        return m.group(3), m.group(4)

    def store(self, host: str, username: str, password: str, dsn: str, text: str) -> None:
        value = "%d;%s;%s;%s" % (int(self.now()), password_hash(password), dsn, text)
        try:
            self.table.update(self.key(host, username), value)
        except CacheError as exc:
            self.warn("SASL auth failure map %s: update failed (%s)" % (self.name, exc))


def open_auth_cache(name: str, ttl: float, queue_directory: str = "", warn=None,
                    service: str = "proxywrite", timeout: float = 30.0,
                    param: str = "smtp_sasl_auth_cache_name") -> AuthCache:
    table_name = check_cache_name(name, param)
    fallback = os.path.join(queue_directory, "private", service) if queue_directory else ""
    table = ProxyTable(table_name, os.path.join("private", service), timeout, service, fallback)
    return AuthCache(table, ttl, table_name, warn=warn)
