"""TLS session resumption across deliveries and processes, through tlsmgr(8).

Stock smtp(8) keeps client TLS sessions in ``smtp_tls_session_cache_database``
through the tlsmgr(8) service (``private/tlsmgr``): ``request=policy`` once,
then ``request=lookup`` before and ``request=update`` after a handshake, with
the session as OpenSSL's DER (``i2d_SSL_SESSION``).  This does the same, so
the cache is the one stock uses, tlsmgr expires the entries
(``smtp_tls_session_cache_timeout``), and it survives process exit.  Our
keys carry stock's prefix (``service&nexthop&host&addr&``) with our own
digest suffix, so our entries never collide with stock's.

Every failure is silent (caching is an optimisation), except what stock
logs at ``smtp_tls_loglevel`` >= 2.
"""

from __future__ import annotations

import os

from .config import LOG_CACHE, TlsConfig

STAT_OK = 0


def _int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        return -2
    return v - (1 << 32) if v >= 1 << 31 else v


class SessionCache:
    def __init__(self, config: TlsConfig, log) -> None:
        self.c = config
        self.log = log
        self.cache_type = config.prefix           # "smtp" or "lmtp"
        self.enabled = None                        # decided by request=policy
        self._stream = None

    # -- the tlsmgr connection (attr_clnt: reconnect once on failure)
    def _connect(self):
        from ..ipc.stream import AttrStream
        name = "private/" + (self.c.tlsmgr_service or "tlsmgr")
        paths = [name]
        if self.c.queue_directory:
            paths.append(os.path.join(self.c.queue_directory, name))
        last = None
        for p in paths:
            try:
                s = AttrStream.connect_unix(p, 10.0)
                s.expect_protocol("tlsmgr_protocol")
                return s
            except Exception as exc:             # noqa: BLE001 - caching is optional
                last = exc
        raise last if last else OSError("no tlsmgr")

    def _request(self, pairs):
        for attempt in (0, 1):
            try:
                if self._stream is None:
                    self._stream = self._connect()
                self._stream.send(pairs)
                return dict(self._stream.receive())
            except Exception:
                if self._stream is not None:
                    self._stream.close()
                self._stream = None
                if attempt:
                    return None
        return None

    def _policy(self) -> bool:
        if self.enabled is None:
            r = self._request([("request", "policy"), ("cache_type", self.cache_type)])
            ok = (r is not None and _int(r.get("status", "-2")) == STAT_OK
                  and _int(r.get("cachable", "0")) != 0 and _int(r.get("timeout", "0")) > 0)
            self.enabled = ok
        return self.enabled

    # -- the operations
    def load(self, conn, serverid: str, mask: int) -> None:
        if not self._policy():
            return
        from OpenSSL._util import ffi, lib
        if mask & LOG_CACHE:
            self.log.info("looking for session %s in %s cache" % (serverid, self.cache_type))
        r = self._request([("request", "lookup"), ("cache_type", self.cache_type),
                           ("cache_id", serverid)])
        if r is None or _int(r.get("status", "-2")) != STAT_OK or not r.get("session"):
            return
        import base64
        try:
            data = base64.b64decode(r["session"])
        except Exception:
            return
        buf = ffi.new("unsigned char[]", data)
        pp = ffi.new("unsigned char **", buf)
        sess = lib.d2i_SSL_SESSION(ffi.NULL, pp, len(data))
        if sess == ffi.NULL:
            lib.ERR_clear_error()
            return
        try:
            lib.SSL_set_session(conn._ssl, sess)
        finally:
            lib.SSL_SESSION_free(sess)
        if mask & LOG_CACHE:
            self.log.info("reloaded session %s from %s cache" % (serverid, self.cache_type))

    def save(self, conn, serverid: str, mask: int) -> None:
        if not self._policy():
            return
        from OpenSSL._util import ffi, lib
        if lib.SSL_session_reused(conn._ssl) and conn.get_protocol_version_name() != "TLSv1.3":
            return
        sess = lib.SSL_get1_session(conn._ssl)
        if sess == ffi.NULL:
            return
        try:
            n = lib.i2d_SSL_SESSION(sess, ffi.NULL)
            if n <= 0:
                return
            buf = ffi.new("unsigned char[]", n)
            pp = ffi.new("unsigned char **", buf)
            if lib.i2d_SSL_SESSION(sess, pp) != n:
                return
            data = bytes(ffi.buffer(buf, n))
        finally:
            lib.SSL_SESSION_free(sess)
        if mask & LOG_CACHE:
            self.log.info("save session %s to %s cache" % (serverid, self.cache_type))
        self._request([("request", "update"), ("cache_type", self.cache_type),
                       ("cache_id", serverid), ("session", data)])

    def delete(self, serverid: str, mask: int) -> None:
        if not self._policy():
            return
        if mask & LOG_CACHE:
            self.log.info("remove session %s from client cache" % serverid)
        self._request([("request", "delete"), ("cache_type", self.cache_type),
                       ("cache_id", serverid)])
