"""The client side of a TLS session with pyOpenSSL, as tls_client.c does it.

``start(sock, policy, config, ...)`` runs the handshake on a connected
socket (after the server's 220 to STARTTLS, or right after connect in
wrapper mode) and returns a :class:`TlsStream`: a socket look-alike
(``sendall``/``recv``/``settimeout``/``close``) that raises
``socket.timeout``/``OSError`` as a socket does.  Certificate checks and
the log lines are stock's:

- ``SSL_connect error to HOST[ADDR]:PORT: ...`` and ``warning: TLS library
  problem: ...`` when the handshake fails -> :class:`TlsError` (no TLS session;
  the connection must not be used again, stock's "Cannot start TLS:
  handshake failure");
- the certificate verification failure line (``certificate verification
  failed for ...: untrusted issuer /CN=...``, ``server certificate
  verification failed for ...: certificate has expired``, ``... num=62:
  hostname mismatch``, ...) at levels that require a match;
- at ``smtp_tls_loglevel`` >= 1 the summary ``Verified|Trusted|Untrusted|
  Anonymous TLS connection established to HOST[ADDR]:PORT: TLSv1.3 with
  cipher ... (256/256 bits) key-exchange X25519 server-signature RSA-PSS
  (2048 bits) server-digest SHA256``;
- at level >= 2 OpenSSL's handshake progress (``SSL_connect:...``) and at
  levels 3 and 4 the packet dumps (see dump.py): then OpenSSL talks to memory
  BIOs and :class:`_Wire` moves the bytes between them and the socket the way
  OpenSSL's socket BIO would (a record header, then its body), logging each
  transfer; level 3 goes back to the plain socket BIO once the handshake is
  done, level 4 keeps the wire (and logs the plaintext too).

Whether the server was authenticated as the policy requires is
``stream.matched``; the caller turns a mismatch into stock's ``4.7.5 Server
certificate not verified``.  OpenSSL is imported by this module, so import
it only when a delivery uses TLS.
"""

from __future__ import annotations

import errno
import hashlib
import os
import select
import socket
import time

from OpenSSL import SSL, crypto
from OpenSSL._util import ffi as _ffi, lib as _lib

from . import dump as _dump
from . import names as _names
from .config import (LEV_DANE, LEV_DANE_ONLY, LEV_ENCRYPT, LEV_FPRINT, LEV_HALF_DANE,
                     LEV_MAY, LEV_SECURE, LEV_VERIFY, LOG_ALLPKTS, LOG_CACHE, LOG_CERTMATCH,
                     LOG_DEBUG, LOG_PEERCERT, LOG_SUMMARY, LOG_TLSPKTS, LOG_UNTRUSTED,
                     LOG_VERBOSE, TlsConfig, dane_based, must_match)
from .policy import Policy, cipher_list, proto_mask_lims, to_ascii_domain

# X509_V_ERR_* numbers (stable across OpenSSL versions).
V_OK = 0
V_UNSPECIFIED = 1
V_UNABLE_TO_GET_ISSUER_CERT = 2
V_CERT_SIGNATURE_FAILURE = 7
V_CERT_NOT_YET_VALID = 9
V_CERT_HAS_EXPIRED = 10
V_ERROR_IN_CERT_NOT_BEFORE_FIELD = 13
V_ERROR_IN_CERT_NOT_AFTER_FIELD = 14
V_DEPTH_ZERO_SELF_SIGNED_CERT = 18
V_SELF_SIGNED_CERT_IN_CHAIN = 19
V_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
V_UNABLE_TO_VERIFY_LEAF_SIGNATURE = 21
V_CERT_CHAIN_TOO_LONG = 22
V_INVALID_CA = 24
V_PATH_LENGTH_EXCEEDED = 25
V_INVALID_PURPOSE = 26
V_CERT_UNTRUSTED = 27
V_CERT_REJECTED = 28
V_HOSTNAME_MISMATCH = 62
V_IP_ADDRESS_MISMATCH = 64
V_DANE_NO_MATCH = 65
V_EE_KEY_TOO_SMALL = 66
V_CA_KEY_TOO_SMALL = 67
V_CA_MD_TOO_WEAK = 68

# verify_chain() phases: chain building, extensions, security level, then
# check_id() (name checks), then signatures/validity and the rest.
_PHASE = {
    V_UNABLE_TO_GET_ISSUER_CERT: 0, V_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 0,
    V_DEPTH_ZERO_SELF_SIGNED_CERT: 0, V_SELF_SIGNED_CERT_IN_CHAIN: 0,
    V_UNABLE_TO_VERIFY_LEAF_SIGNATURE: 0, V_CERT_CHAIN_TOO_LONG: 0,
    V_CERT_UNTRUSTED: 0, V_CERT_REJECTED: 0,
    V_INVALID_CA: 1, V_PATH_LENGTH_EXCEEDED: 1, V_INVALID_PURPOSE: 1, 34: 1, 40: 1, 41: 1,
    V_EE_KEY_TOO_SMALL: 2, V_CA_KEY_TOO_SMALL: 2, V_CA_MD_TOO_WEAK: 2,
}
_PHASE_NAMES = 3


_SIG_DIGEST = {
    0x0201: "SHA1", 0x0203: "SHA1", 0x0401: "SHA256", 0x0501: "SHA384", 0x0601: "SHA512",
    0x0403: "SHA256", 0x0503: "SHA384", 0x0603: "SHA512",
    0x0804: "SHA256", 0x0805: "SHA384", 0x0806: "SHA512",
    0x0809: "SHA256", 0x080A: "SHA384", 0x080B: "SHA512",
    0x0420: "SHA256", 0x0520: "SHA384", 0x0620: "SHA512",
    0x081A: "SHA256", 0x081B: "SHA384", 0x081C: "SHA512",
}
_CURVE_SN = {"secp256r1": "prime256v1", "secp384r1": "secp384r1", "secp521r1": "secp521r1",
             "secp192r1": "prime192v1", "secp224r1": "secp224r1"}


class TlsError(Exception):
    """The handshake failed: no TLS session (the connection is unusable)."""

    def __init__(self, reason: str = "Cannot start TLS: handshake failure") -> None:
        super().__init__(reason)
        self.reason = reason


class TlsEngineError(Exception):
    """The client TLS engine could not be initialised (stock: "disabling TLS
    support"; levels that require TLS then fail with "our TLS engine is
    unavailable")."""


class _NullLog:
    def info(self, text): pass
    def warning(self, text): pass


# ---------------------------------------------------------------------------
# the engine: SSL contexts, one per (protocols, ciphers, trust) combination

class Engine:
    """stock's smtp_tls_ctx: created once per process, on first use."""

    def __init__(self, config: TlsConfig, log=None) -> None:
        self.c = config
        self.log = log or _NullLog()
        if config.log_mask & LOG_VERBOSE:
            self.log.info("initializing the client-side TLS engine")
        self._contexts: dict = {}
        self._base_checked = False
        # per-connection callbacks (a Context cannot be changed once used)
        self.verify_hook = None
        self.msg_hook = None
        self._msg_cb = _ffi.callback("void(int, int, int, void *, size_t, SSL *, void *)",
                                     self._on_msg)
        self._verify_cb = _ffi.callback("int (*)(int, X509_STORE_CTX *)", self._on_verify)
        self.scache = None
        self._make_context(None, None, [])        # fail now, as tls_client_init() does
        if config.session_cache_database.strip():
            from .scache import SessionCache
            self.scache = SessionCache(config, self.log)

    def _on_verify(self, ok, store_ctx):
        """OpenSSL's verify callback, as stock's: accept (the policy decides
        after the handshake) but leave the error in the store context.
        pyOpenSSL's set_verify() wrapper resets it to X509_V_OK, and with it
        SSL_get_verify_result(), which is all a resumed session (the cached
        copy included) has to say about its certificate."""
        hook = self.verify_hook
        if hook is not None:
            try:
                cert = None
                x509 = _lib.X509_STORE_CTX_get_current_cert(store_ctx)
                if x509 != _ffi.NULL:
                    _lib.X509_up_ref(x509)
                    cert = crypto.X509._from_raw_x509_ptr(x509)
                hook(None, cert, _lib.X509_STORE_CTX_get_error(store_ctx),
                     _lib.X509_STORE_CTX_get_error_depth(store_ctx), ok)
            except Exception:
                pass
        return 1

    @staticmethod
    def _on_info(conn, where, ret):
        """OpenSSL's info callback: the connection's own handler (start())."""
        hook = conn.__dict__.get("_pfs_info")
        if hook is not None:
            try:
                hook(where, ret)
            except Exception:
                pass

    def _on_msg(self, write_p, version, content_type, buf, length, ssl, arg):
        hook = self.msg_hook
        if hook is not None:
            try:
                hook(write_p, version, content_type, buf, length, ssl, arg)
            except Exception:
                pass

    # context creation (tls_client_init + the per-session settings we cannot
    # set on an SSL object through pyOpenSSL: cipher list, protocol range)
    def _make_context(self, cipher_string, proto, tafiles):
        c = self.c
        key = (cipher_string, proto, tuple(tafiles))
        ctx = self._contexts.get(key)
        if ctx is not None:
            return ctx
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        opts = (_lib.SSL_OP_ALL | _lib.SSL_OP_SINGLE_ECDH_USE | _lib.SSL_OP_SINGLE_DH_USE
                | getattr(_lib, "SSL_OP_IGNORE_UNEXPECTED_EOF", 0))
        if proto is not None:
            mask, floor, ceiling = proto
            for bit, op in ((1 << 0, "SSL_OP_NO_SSLv2"), (1 << 1, "SSL_OP_NO_SSLv3"),
                            (1 << 2, "SSL_OP_NO_TLSv1"), (1 << 3, "SSL_OP_NO_TLSv1_1"),
                            (1 << 4, "SSL_OP_NO_TLSv1_2"), (1 << 5, "SSL_OP_NO_TLSv1_3")):
                if mask & bit:
                    opts |= getattr(_lib, op, 0)
            if floor:
                ctx.set_min_proto_version(floor)
            if ceiling:
                ctx.set_max_proto_version(ceiling)
        ctx.set_options(opts)
        ctx.set_verify_depth(c.verify_depth + 1)
        if tafiles:
            store = ctx.get_cert_store()
            for path in tafiles:
                for cert in _pem_certs(path):
                    store.add_cert(cert)
            store.set_flags(crypto.X509StoreFlags.PARTIAL_CHAIN)
        elif c.CAfile or c.CApath:
            try:
                ctx.load_verify_locations(c.CAfile or None, c.CApath or None)
            except SSL.Error as exc:
                def arg(name, val, more):
                    return ('%s="%s"%s' % (name, val, ", " if more else "")) if val else ""
                self.log.info("cannot load Certification Authority data, %s%s: disabling TLS "
                              "support" % (arg("CAfile", c.CAfile, bool(c.CApath)),
                                           arg("CApath", c.CApath, False)))
                _log_ssl_error(self.log, exc)
                raise TlsEngineError("CA") from None
            if c.append_default_CA:
                ctx.set_default_verify_paths()
        self._load_keys(ctx)
        if c.eecdh_curves.strip():
            curves = ":".join(_split(c.eecdh_curves))
            if _lib.SSL_CTX_set1_curves_list(ctx._context, curves.encode()) != 1:
                # tls_auto_eecdh_curves(): drop the ones this OpenSSL lacks
                _lib.ERR_clear_error()
                good = [x for x in _split(c.eecdh_curves)
                        if _lib.SSL_CTX_set1_curves_list(ctx._context, x.encode()) == 1]
                _lib.ERR_clear_error()
                if good:
                    _lib.SSL_CTX_set1_curves_list(ctx._context, ":".join(good).encode())
        if cipher_string is not None:
            try:
                ctx.set_cipher_list(cipher_string.encode())
            except SSL.Error:
                return None
        _lib.SSL_CTX_set_verify(ctx._context, _lib.SSL_VERIFY_NONE, self._verify_cb)
        _lib.SSL_CTX_set_msg_callback(ctx._context, self._msg_cb)
        if c.log_mask & (LOG_DEBUG | LOG_TLSPKTS):
            ctx.set_info_callback(self._on_info)
        self._contexts[key] = ctx
        return ctx

    def _key_material(self, path: str, what: str):
        """The PEM file's bytes, read once per process.

        Stock loads keys and certificates before dropping privileges; contexts
        made later (other protocol/cipher combinations) reuse these bytes, so a
        key file readable only by root keeps working after the drop."""
        cache = self.__dict__.setdefault("_pem", {})
        if path not in cache:
            with open(path, "rb") as f:
                cache[path] = f.read()
        return cache[path]

    def _use_chain(self, ctx, path: str) -> None:
        certs = _pem_blocks(self._key_material(path, "certificate"), b"CERTIFICATE")
        if not certs:
            raise SSL.Error([("PEM routines", "", "no start line")])
        ctx.use_certificate(crypto.load_certificate(crypto.FILETYPE_PEM, certs[0]))
        for pem in certs[1:]:
            ctx.add_extra_chain_cert(crypto.load_certificate(crypto.FILETYPE_PEM, pem))

    def _use_key(self, ctx, path: str) -> None:
        ctx.use_privatekey(crypto.load_privatekey(crypto.FILETYPE_PEM,
                                                  self._key_material(path, "key")))

    def _load_keys(self, ctx) -> None:
        c = self.c
        if c.chain_files.strip():
            for path in _split(c.chain_files):
                try:
                    self._use_key(ctx, path)
                    self._use_chain(ctx, path)
                except (SSL.Error, crypto.Error, OSError) as exc:
                    self.log.warning("error loading private keys and certificates from: %s: %s"
                                     % (path, "disabling TLS support"))
                    _log_ssl_error(self.log, exc)
                    raise TlsEngineError("keys") from None
            return
        for kind, cert, key in (("RSA", c.cert_file, c.key_file),
                                ("DSA", c.dcert_file, c.dkey_file),
                                ("ECDSA", c.eccert_file, c.eckey_file)):
            if not cert:
                continue
            try:
                self._use_chain(ctx, cert)
            except (SSL.Error, crypto.Error, OSError) as exc:
                self.log.warning('cannot get %s certificate from file "%s": disabling TLS '
                                 'support' % (kind, cert))
                _log_ssl_error(self.log, exc)
                raise TlsEngineError("cert") from None
            try:
                self._use_key(ctx, key or cert)
            except (SSL.Error, crypto.Error, OSError) as exc:
                self.log.warning('cannot get %s private key from file "%s": disabling TLS '
                                 'support' % (kind, key or cert))
                _log_ssl_error(self.log, exc)
                raise TlsEngineError("key") from None
            try:
                ctx.check_privatekey()
            except SSL.Error:
                # stock logs no OpenSSL errors here (tls_certkey.c)
                _lib.ERR_clear_error()
                self.log.warning("%s private key in %s does not match public key in %s: "
                                 "disabling TLS support" % (kind, key or cert, cert))
                raise TlsEngineError("keypair") from None


def _pem_blocks(data: bytes, label: bytes) -> list:
    """The PEM blocks of one kind (e.g. CERTIFICATE) in file order."""
    begin = b"-----BEGIN " + label + b"-----"
    end = b"-----END " + label + b"-----"
    out = []
    for part in data.split(begin)[1:]:
        stop = part.find(end)
        if stop >= 0:
            out.append(begin + part[:stop] + end + b"\n")
    return out


def engine(config: TlsConfig, log=None) -> Engine:
    """The process's TLS engine (created on first use, kept on the config);
    TlsEngineError when stock would have disabled TLS support at start-up.
    A failure is kept too: stock runs tls_client_init() once per process, so
    its warnings are logged once, not again at every STARTTLS."""
    e = config.__dict__.get("_engine")
    if e is None:
        failed = config.__dict__.get("_engine_failed")
        if failed is not None:
            raise TlsEngineError(failed)
        try:
            e = Engine(config, log)
        except TlsEngineError as exc:
            config.__dict__["_engine_failed"] = str(exc)
            raise
        config.__dict__["_engine"] = e
    return e


def engine_available(config: TlsConfig, log=None) -> bool:
    try:
        engine(config, log)
        return True
    except TlsEngineError:
        return False


# ---------------------------------------------------------------------------


def _split(text: str) -> list:
    for ch in ",\t\r\n:":
        text = text.replace(ch, " ")
    return [t for t in text.split(" ") if t]


def _pem_certs(path: str) -> list:
    try:
        data = open(path, "rb").read()
    except OSError:
        return []
    out = []
    marker = b"-----BEGIN CERTIFICATE-----"
    for part in data.split(marker)[1:]:
        end = part.find(b"-----END CERTIFICATE-----")
        if end < 0:
            continue
        pem = marker + part[:end] + b"-----END CERTIFICATE-----\n"
        try:
            out.append(crypto.load_certificate(crypto.FILETYPE_PEM, pem))
        except crypto.Error:
            continue
    return out


def _err_lines() -> list:
    """Drain OpenSSL's error queue as stock's "TLS library problem" texts."""
    out = []
    while True:
        code = _lib.ERR_get_error()
        if not code:
            return out
        libname = _lib.ERR_lib_error_string(code)
        reason = _lib.ERR_reason_error_string(code)
        libname = _ffi.string(libname).decode("ascii", "replace") if libname else \
            "lib(%d)" % (code >> 23 & 0xFF)
        reason = _ffi.string(reason).decode("ascii", "replace") if reason else \
            "reason(%d)" % (code & 0x7FFFFF)
        out.append("error:%08X:%s::%s:" % (code, libname, reason))


def _log_ssl_error(log, exc) -> None:
    for line in _err_lines():
        log.warning("TLS library problem: %s" % line)
    if isinstance(exc, SSL.Error) and exc.args and isinstance(exc.args[0], list):
        for item in exc.args[0]:
            if isinstance(item, tuple) and len(item) == 3:
                log.warning("TLS library problem: error:%s::%s:" % (item[0], item[2]))


def _wait(sock_fd: int, write: bool, timeout) -> bool:
    """True when ready; False on timeout."""
    try:
        if write:
            _r, w, _x = select.select([], [sock_fd], [], timeout)
            return bool(w)
        r, _w, _x = select.select([sock_fd], [], [], timeout)
        return bool(r)
    except InterruptedError:
        return True


def _x509_name_oneline(name) -> str:
    """X509_NAME_oneline(): "/C=XX/O=Org/CN=name"."""
    parts = []
    for k, v in name.get_components():
        parts.append("/%s=%s" % (k.decode("ascii", "replace"), v.decode("utf-8", "replace")))
    text = "".join(parts)
    return "".join(c if (c.isprintable() or not c.isascii()) else "?" for c in text)


def _cert_names(x509) -> tuple:
    """(DNS subjectAltNames, subject CNs) of a certificate."""
    from cryptography import x509 as cx
    from cryptography.x509.oid import NameOID
    c = x509.to_cryptography()
    sans = []
    try:
        ext = c.extensions.get_extension_for_class(cx.SubjectAlternativeName)
        sans = ext.value.get_values_for_type(cx.DNSName)
    except cx.ExtensionNotFound:
        pass
    except Exception:
        sans = []
    cns = []
    try:
        cns = [a.value for a in c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
               if isinstance(a.value, str)]
    except Exception:
        pass
    return sans, cns


def _cert_ips(x509) -> list:
    from cryptography import x509 as cx
    try:
        ext = x509.to_cryptography().extensions.get_extension_for_class(
            cx.SubjectAlternativeName)
        return list(ext.value.get_values_for_type(cx.IPAddress))
    except Exception:
        return []


def _name_attr(x509, which: str, nids) -> str:
    from cryptography.x509.oid import NameOID
    c = x509.to_cryptography()
    name = c.subject if which == "subject" else c.issuer
    for oid in nids:
        attrs = name.get_attributes_for_oid(getattr(NameOID, oid))
        if attrs and isinstance(attrs[0].value, str):
            v = attrs[0].value
            if "\0" in v or any(ord(ch) < 32 or ord(ch) == 127 for ch in v):
                return ""
            return v
    return ""


def _digest(name: str):
    try:
        return hashlib.new(name.lower())
    except (ValueError, TypeError):
        return None


def fingerprints(x509, mdalg: str) -> tuple:
    """(certificate fingerprint, public-key fingerprint) as stock logs them:
    upper-case hex pairs separated by ':'."""
    from cryptography.hazmat.primitives import serialization
    der = crypto.dump_certificate(crypto.FILETYPE_ASN1, x509)
    spki = x509.to_cryptography().public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def fmt(data):
        h = _digest(mdalg)
        if h is None:
            return ""
        h.update(data)
        return ":".join("%02X" % b for b in h.digest())
    return fmt(der), fmt(spki), der, spki


def _raw_digest(mdalg: str, data: bytes) -> bytes:
    h = _digest(mdalg)
    if h is None:
        return b""
    h.update(data)
    return h.digest()


# ---------------------------------------------------------------------------
# smtp_tls_loglevel 3 and 4: stock installs a dump callback on the socket BIO
# under OpenSSL.  pyOpenSSL cannot hook that BIO, so OpenSSL gets memory BIOs
# instead and _Wire does the socket I/O that its socket BIO would have done,
# with the same granularity: OpenSSL (no read-ahead) asks the socket for a
# 5-byte record header, then for exactly the rest of that record, and writes
# whatever it flushed in one go; a non-blocking read or write that finds the
# socket not ready is logged as "=> -1" before waiting, as stock's is.

_RECORD_HEADER = 5
_WRITE_CHUNK = 65536


class _Wire:
    """Moves TLS records between the socket and a memory-BIO connection,
    logging each transfer (``dumping``) as stock's BIO dump callback does.

    A failed socket operation sets ``error`` (an errno; ETIMEDOUT for a
    timeout) and ends the wire: OpenSSL then sees end of input.  The
    caller checks ``error`` after every OpenSSL call, because the writes
    also happen inside OpenSSL callbacks where nothing can be raised."""

    def __init__(self, conn, sock: socket.socket, log, timeout) -> None:
        self.conn = conn
        self.sock = sock
        self.fd = sock.fileno()
        self.log = log
        self.timeout = timeout
        self.dumping = True
        self.error = 0
        self.eof = False
        self._in = conn._into_ssl
        self._out = conn._from_ssl
        self._rbuf = _ffi.new("unsigned char[]", _RECORD_HEADER + 0x10000)
        self._rview = memoryview(_ffi.buffer(self._rbuf))
        self._wbuf = _ffi.new("unsigned char[]", _WRITE_CHUNK)
        self._wview = memoryview(_ffi.buffer(self._wbuf))
        self._bio = int(_ffi.cast("uintptr_t", self._in))
        self._raddr = int(_ffi.cast("uintptr_t", self._rbuf))
        self._waddr = int(_ffi.cast("uintptr_t", self._wbuf))
        self._need = _RECORD_HEADER     # bytes of the current header or body
        self._have = 0                  # of which already read
        self._body = False

    def _log_io(self, write: bool, addr: int, asked: int, ret: int, data=None) -> None:
        if not self.dumping:
            return
        self.log.info(_dump.io_line(write, self._bio, addr, asked, ret))
        if ret > 0:
            for line in _dump.hex_lines(bytes(data)):
                self.log.info(line)

    def _fail(self, err: int) -> None:
        if not self.error:
            self.error = err or errno.EIO
        _lib.BIO_set_mem_eof_return(self._in, 0)

    def _ready(self, write: bool) -> bool:
        t = self.timeout
        if not _wait(self.fd, write, t if t is not None and t > 0 else None):
            self._fail(errno.ETIMEDOUT)
            return False
        return True

    def fill(self) -> None:
        """OpenSSL ran out of input: one socket read of what it asks for next."""
        if self.error or self.eof:
            _lib.BIO_set_mem_eof_return(self._in, 0)
            return
        pos = (_RECORD_HEADER if self._body else 0) + self._have
        want = self._need - self._have
        while True:
            try:
                n = self.sock.recv_into(self._rview[pos:pos + want])
            except BlockingIOError:
                self._log_io(False, self._raddr + pos, want, -1)
                if not self._ready(False):
                    return
                continue
            except OSError as exc:
                self._log_io(False, self._raddr + pos, want, -1)
                self._fail(exc.errno)
                return
            break
        self._log_io(False, self._raddr + pos, want, n, self._rview[pos:pos + n])
        if n == 0:
            self.eof = True
            _lib.BIO_set_mem_eof_return(self._in, 0)
            return
        _lib.BIO_write(self._in, self._rbuf + pos, n)
        self._have += n
        if self._have < self._need:
            return
        self._have = 0
        length = self._rbuf[3] << 8 | self._rbuf[4]
        if self._body or length == 0:
            self._body, self._need = False, _RECORD_HEADER
        else:
            self._body, self._need = True, length

    def flush(self) -> None:
        """Send what OpenSSL has written since the last flush."""
        while not self.error:
            n = _lib.BIO_read(self._out, self._wbuf, _WRITE_CHUNK)
            if n <= 0:
                return
            off = 0
            while off < n:
                try:
                    sent = self.sock.send(self._wview[off:n])
                except BlockingIOError:
                    self._log_io(True, self._waddr + off, n - off, -1)
                    if not self._ready(True):
                        return
                    continue
                except OSError as exc:
                    self._log_io(True, self._waddr + off, n - off, -1)
                    self._fail(exc.errno)
                    return
                self._log_io(True, self._waddr + off, n - off, sent,
                             self._wview[off:off + sent])
                off += sent

    def check(self) -> None:
        """Raise what a socket would have raised for the failed operation."""
        if self.error == errno.ETIMEDOUT:
            raise socket.timeout("timed out")
        if self.error:
            raise _oserror_errno(self.error)

    def to_socket(self) -> None:
        """Stop here: give OpenSSL a socket BIO on the same descriptor (all
        input it was given has been consumed, all output sent)."""
        self.dumping = False
        conn = self.conn
        if _lib.SSL_set_fd(conn._ssl, self.fd) != 1:
            raise TlsError()
        conn._into_ssl = conn._from_ssl = None       # freed by OpenSSL
        conn._socket = self.sock
        self._in = self._out = None


def _oserror_errno(code: int) -> OSError:
    return OSError(code, os.strerror(code))       # ECONNRESET: ConnectionResetError


# ---------------------------------------------------------------------------


class TlsStream:
    """The TLS connection, used like the plain socket it replaces."""

    def __init__(self, conn, sock: socket.socket, info: dict, wire: _Wire | None = None) -> None:
        self._conn = conn
        self._sock = sock
        self._fd = sock.fileno()
        self._timeout = None
        self.info = info
        self.closed = False
        self._scache_save = None
        self._wire = wire             # smtp_tls_loglevel 4: dump all traffic

    # --- what the caller reads
    @property
    def matched(self) -> bool:
        return self.info["matched"]

    @property
    def summary(self) -> str:
        return self.info["summary"]

    @property
    def level(self) -> int:
        return self.info["level"]

    @property
    def protocol(self) -> str:
        return self.info["protocol"]

    @property
    def cipher(self) -> str:
        return self.info["cipher"]

    # --- socket interface
    def settimeout(self, t) -> None:
        self._timeout = t

    def gettimeout(self):
        return self._timeout

    def fileno(self) -> int:
        return self._fd

    def setsockopt(self, *args) -> None:
        self._sock.setsockopt(*args)

    def getsockopt(self, *args):
        return self._sock.getsockopt(*args)

    def sendall(self, data) -> None:
        if self._wire is not None:
            return self._wire_sendall(data)
        view = memoryview(bytes(data))
        while view:
            try:
                n = self._conn.send(view[:16384].tobytes())
            except SSL.WantWriteError:
                if not _wait(self._fd, True, self._timeout):
                    raise socket.timeout("timed out") from None
                continue
            except SSL.WantReadError:
                if not _wait(self._fd, False, self._timeout):
                    raise socket.timeout("timed out") from None
                continue
            except SSL.SysCallError as exc:
                raise _oserror(exc) from None
            except SSL.ZeroReturnError:
                raise ConnectionResetError(errno.EPIPE, "Broken pipe") from None
            except SSL.Error as exc:
                raise OSError(errno.EPROTO, "TLS error: %s" % exc) from None
            view = view[n:]

    def recv(self, n: int) -> bytes:
        if self._wire is not None:
            return self._wire_recv(n)
        while True:
            try:
                return self._conn.recv(n)
            except SSL.WantReadError:
                if not _wait(self._fd, False, self._timeout):
                    raise socket.timeout("timed out") from None
            except SSL.WantWriteError:
                if not _wait(self._fd, True, self._timeout):
                    raise socket.timeout("timed out") from None
            except SSL.ZeroReturnError:
                return b""
            except SSL.SysCallError as exc:
                if exc.args and exc.args[0] in (-1, 0):
                    return b""              # EOF without close_notify
                raise _oserror(exc) from None
            except SSL.Error as exc:
                raise OSError(errno.EPROTO, "TLS error: %s" % exc) from None

    def close(self) -> None:
        """tls_client_stop(): save the session, send close_notify (fast
        shutdown), close the socket."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._scache_save is not None:
                self._scache_save()
        except Exception:
            pass
        try:
            self._conn.shutdown()
        except Exception:
            pass
        if self._wire is not None:
            self._wire.timeout = self._timeout
            self._wire.flush()
        self._release()
        try:
            self._sock.close()
        except OSError:
            pass

    def detach_dead(self) -> None:
        """Close without TLS shutdown (after an I/O error)."""
        self.closed = True
        self._release()
        try:
            self._sock.close()
        except OSError:
            pass

    def _release(self) -> None:
        self._conn.__dict__.pop("_pfs_info", None)
        self._wire = None

    # --- smtp_tls_loglevel 4: through the wire, plaintext logged too
    def _wire_sendall(self, data) -> None:
        w = self._wire
        w.timeout = self._timeout
        data = bytes(data)
        w.log.info(_dump.chars_line(True, data))
        view = memoryview(data)
        while view:
            w.check()
            try:
                n = self._conn.send(view[:16384].tobytes())   # one record per flush
            except (SSL.WantReadError, SSL.WantWriteError):
                w.flush()
                w.fill()
                continue
            except SSL.ZeroReturnError:
                raise ConnectionResetError(errno.EPIPE, "Broken pipe") from None
            except SSL.SysCallError as exc:
                w.check()
                raise _oserror(exc) from None
            except SSL.Error as exc:
                w.flush()
                w.check()
                raise OSError(errno.EPROTO, "TLS error: %s" % exc) from None
            w.flush()
            view = view[n:]
        w.check()

    def _wire_recv(self, n: int) -> bytes:
        w = self._wire
        w.timeout = self._timeout
        while True:
            try:
                data = self._conn.recv(n)
            except (SSL.WantReadError, SSL.WantWriteError):
                w.flush()
                w.check()
                w.fill()
                w.check()
                continue
            except SSL.ZeroReturnError:
                data = b""
            except SSL.SysCallError as exc:
                w.flush()
                w.check()
                if exc.args and exc.args[0] in (-1, 0):
                    data = b""              # EOF without close_notify
                else:
                    raise _oserror(exc) from None
            except SSL.Error as exc:
                w.flush()
                w.check()
                raise OSError(errno.EPROTO, "TLS error: %s" % exc) from None
            w.flush()
            if data:
                w.log.info(_dump.chars_line(False, data))
            return data


def _oserror(exc) -> OSError:
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else errno.EIO
    if code <= 0:
        return ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
    return OSError(code, os.strerror(code))


# ---------------------------------------------------------------------------


def start(sock: socket.socket, policy: Policy, config: TlsConfig, *, nexthop: str, host: str,
          namaddrport: str, timeout: float | None = None, log=None, service: str = "",
          dest: str = "", addr: str = "", helo: str = "") -> TlsStream:
    """Run the client handshake on ``sock`` and check the server certificate.

    ``nexthop``: the destination's domain (no brackets/port) for the
    nexthop/dot-nexthop names and SNI ``nexthop``; ``host``: the server's
    host name (MX name); ``namaddrport``: ``host[addr]:port`` for the log.
    Raises :class:`TlsError` when no TLS session results (logged as stock
    does), :class:`TlsEngineError` when the engine cannot be set up.
    """
    log = log or _NullLog()
    c = config
    eng = engine(c, log)
    timeout = c.starttls_timeout if timeout is None else timeout
    level = policy.level
    auth_level = level           # the level tls_auth_enable() saw (SNI, name checks)
    dane_fail = False
    if dane_based(level) and policy.tlsa:
        # tls_dane_enable(): the records OpenSSL accepts (SSL_dane_tlsa_add)
        from .dane import tlsa_text, tlsa_usable
        usable = []
        for rec in policy.tlsa:
            if tlsa_usable(*rec):
                usable.append(rec)
            else:
                log.warning("%s: unusable TLSA RR: %s" % (namaddrport, tlsa_text(*rec)))
        if not usable:
            if level in (LEV_HALF_DANE, LEV_DANE):
                log.warning("%s: all TLSA records unusable, fallback to unauthenticated TLS"
                            % namaddrport)
                level = LEV_ENCRYPT
            else:
                log.warning("%s: all TLSA records unusable" % namaddrport)
                dane_fail = True
        policy = policy.copy(tlsa=usable, level=level)
    mask = c.log_mask
    if must_match(level):
        mask |= LOG_UNTRUSTED

    prot = proto_mask_lims(policy.protocols or "")
    if prot is None:
        log.warning('%s: Invalid TLS protocol list "%s": aborting TLS session'
                    % (namaddrport, policy.protocols))
        raise TlsError()
    if dane_based(level):
        prot = (prot[0] | 0x3, prot[1], prot[2])
    ciphers, err = cipher_list(c, policy.grade, policy.exclusions)
    if ciphers is None:
        log.warning(err % namaddrport)
        raise TlsError()
    seclevel = "@SECLEVEL=1" if must_match(level) else "@SECLEVEL=0"
    ctx = eng._make_context(ciphers + ":" + seclevel, prot,
                            policy.tafiles if level in (LEV_VERIFY, LEV_SECURE) else [])
    if ctx is None:
        log.warning('%s: error setting cipher grade: "%s"' % (namaddrport, policy.grade))
        for line in _err_lines():
            log.warning("TLS library problem: %s" % line)
        raise TlsError()
    if mask & LOG_VERBOSE:
        log.info("setting up TLS connection to %s" % namaddrport)
        log.info('%s: TLS cipher list "%s"' % (namaddrport, ciphers))

    errors: list = []            # (depth, err, X509) in the order OpenSSL found them

    def verify_cb(_conn, cert, errnum, depth, ok):
        if not ok:
            errors.append((depth, errnum, cert))
        if mask & LOG_VERBOSE:
            log.info("%s: depth=%d verify=%d subject=%s"
                     % (namaddrport, depth, 1 if ok else 0,
                        _x509_name_oneline(cert.get_subject()) if cert else "<unknown>"))
        return True

    eng.verify_hook = verify_cb

    # TLS 1.3 signature schemes, seen in the (decrypted) CertificateVerify
    sigs = {}

    def msg_cb(write_p, version, content_type, buf, length, _ssl, _arg):
        try:
            if content_type == 22 and length >= 6:
                data = _ffi.buffer(buf, length)
                if data[0] == b"\x0f":      # CertificateVerify: scheme in bytes 4-5
                    sigs["client" if write_p else "server"] = (
                        data[4][0] << 8 | data[5][0])
                elif data[0] == b"\x0c" and not write_p:    # TLS 1.2 ServerKeyExchange
                    sigs["ske"] = bytes(data[:])
        except Exception:
            pass

    eng.msg_hook = msg_cb
    wire = None
    if mask & LOG_TLSPKTS:
        conn = SSL.Connection(ctx, None)   # memory BIOs, see _Wire
        wire = _Wire(conn, sock, log, timeout)
    else:
        conn = SSL.Connection(ctx, sock)   # copies the callbacks
    ssl = conn._ssl

    if mask & (LOG_DEBUG | LOG_TLSPKTS):
        def info_cb(where, ret):
            # output OpenSSL flushed before this event went out before it
            if wire is not None and wire.dumping:
                wire.flush()
            if mask & LOG_DEBUG:
                state = _lib.SSL_state_string_long(ssl)
                text = _dump.info_text(
                    where, ret, _ffi.string(state).decode("ascii", "replace") if state else "",
                    lambda: _lib.SSL_get_error(ssl, ret))
                if text is not None:
                    log.info(text)

        conn.__dict__["_pfs_info"] = info_cb

    # name checks, SNI
    refs: list = []
    sni = None
    if policy.sni:
        sni = host if policy.sni == "hostname" else nexthop if policy.sni == "nexthop" \
            else policy.sni
        a = to_ascii_domain(sni)
        if a is not None and not sni.isascii():
            sni = a
    if auth_level in (LEV_HALF_DANE, LEV_DANE, LEV_DANE_ONLY):
        sni = policy.dane_base_domain or sni
    must_fail = False
    ip_ref = None
    if auth_level in (LEV_VERIFY, LEV_SECURE, LEV_HALF_DANE, LEV_DANE, LEV_DANE_ONLY):
        # SSL_add1_host(): a name that parses as an IP address is the (one) IP check
        hosts = []
        for r in _names.reference_names(policy.matchargv, nexthop, host, log.warning,
                                        namaddrport):
            ip = _names.parse_ip(r)
            if ip is None:
                hosts.append(r)
            elif ip_ref is None:
                ip_ref = ip
            else:
                log.warning('%s: error loading match name: "%s"' % (namaddrport, r))
        refs = hosts
        if not refs and ip_ref is None:
            log.warning("%s: could not configure peer name checks" % namaddrport)
            must_fail = True
    if sni:
        if len(sni) > 255:
            log.warning("%s: ignoring too long SNI hostname: %.100s" % (namaddrport, sni))
            raise TlsError()
        conn.set_tlsext_host_name(sni.encode("ascii", "replace"))
        if mask & LOG_DEBUG:
            log.info("%s: SNI hostname: %s" % (namaddrport, sni))

    # session resumption
    serverid = None
    if eng.scache is not None:
        serverid = _serverid(c, policy, service, dest, host, addr, ciphers, helo, sni)
        eng.scache.load(conn, serverid, mask)

    conn.set_connect_state()
    sock.settimeout(0)
    _lib.ERR_clear_error()
    fd = sock.fileno()

    def failed(en=0, lines=()):
        if lines:
            log.info("SSL_connect error to %s: %d" % (namaddrport, ret))
            for line in lines:
                log.warning("TLS library problem: %s" % line)
        elif en:
            log.info("SSL_connect error to %s: %s" % (namaddrport, os.strerror(en)))
        else:
            log.info("SSL_connect error to %s: lost connection" % namaddrport)
        _lib.ERR_clear_error()
        conn.__dict__.pop("_pfs_info", None)
        if serverid:
            eng.scache.delete(serverid, mask)
        raise TlsError()

    while True:
        ret = _lib.SSL_do_handshake(ssl)
        e = _lib.SSL_get_error(ssl, ret) if ret != 1 else _lib.SSL_ERROR_NONE
        if wire is not None:
            wire.flush()
            if wire.error and e != _lib.SSL_ERROR_SSL:
                failed(wire.error)          # the socket failed, not OpenSSL
        if ret == 1:
            break
        if e in (_lib.SSL_ERROR_WANT_READ, _lib.SSL_ERROR_WANT_WRITE):
            if wire is not None:
                wire.fill()
                if wire.error:
                    failed(wire.error)
                continue
            wait = timeout if timeout and timeout > 0 else None
            if not _wait(fd, e == _lib.SSL_ERROR_WANT_WRITE, wait):
                failed(errno.ETIMEDOUT)
            continue
        lines = _err_lines()
        if wire is not None:
            failed(0 if lines else wire.error, lines)
        failed(_ffi.errno if e == _lib.SSL_ERROR_SYSCALL and ret < 0 else 0, lines)

    if wire is not None and not mask & LOG_ALLPKTS:
        wire.to_socket()                  # level 3: the handshake only
        wire = None

    reused = bool(_lib.SSL_session_reused(ssl))
    if (mask & LOG_CACHE) and reused:
        log.info("%s: Reusing old session" % namaddrport)

    # --- tls_client_post_connect / verify_extract_name
    peer = conn.get_peer_certificate()
    status = {"present": peer is not None, "trusted": False, "matched": False,
              "secured": False}
    verr = None
    peername = None
    if peer is not None:
        cert_fp, pkey_fp, der, spki = fingerprints(peer, c.fingerprint_digest)
        dane_auth = None
        if dane_fail:
            final = [(0, V_UNSPECIFIED, peer)]
        elif level == LEV_FPRINT or (dane_based(level) and policy.tlsa):
            dane_auth = _dane_match(policy, c, peer, der, spki, conn, errors)
            final = [] if dane_auth else [(0, V_DANE_NO_MATCH, peer)]
            # RFC 7672 3.1.1: no name checks for DANE-EE(3); DANE-TA(2) checks names
            if dane_auth and refs and dane_based(level) and dane_auth[0] > 0:
                sans, cns = _cert_names(peer)
                peername = _names.host_matches(sans, cns, refs)
                if peername is None:
                    final = [(0, V_HOSTNAME_MISMATCH, peer)]
        else:
            if reused:          # no chain checks on resumption: the session's result
                vr = int(_lib.SSL_get_verify_result(ssl))
                errors = [] if vr == V_OK else [(0, vr, peer)]
            final = [e for e in errors if _PHASE.get(e[1], 9) < _PHASE_NAMES]
            if refs or ip_ref is not None or must_fail:
                sans, cns = _cert_names(peer)
                if must_fail:
                    final.append((0, V_UNSPECIFIED, peer))
                if refs:
                    peername = _names.host_matches(sans, cns, refs)
                    if peername is None:
                        final.append((0, V_HOSTNAME_MISMATCH, peer))
                if ip_ref is not None and ip_ref not in _cert_ips(peer):
                    final.append((0, V_IP_ADDRESS_MISMATCH, peer))
            final += [e for e in errors if _PHASE.get(e[1], 9) >= _PHASE_NAMES]
            if not final and _lib.SSL_get_verify_result(ssl) != V_OK:
                final = [(0, int(_lib.SSL_get_verify_result(ssl)), peer)]
        for d, e, x in final:                     # update_error_state()
            if verr is None or d < verr[0]:
                verr = (d, e, x)
        if verr is None:
            status["trusted"] = True
            if must_match(level):
                if level != LEV_HALF_DANE:
                    status["secured"] = True
                status["matched"] = True
                if mask & (LOG_CERTMATCH | LOG_VERBOSE | LOG_PEERCERT):
                    if peername:
                        log.info("%s: matched peername: %s" % (namaddrport, peername))
                    if dane_auth:                       # tls_dane_log()
                        _dane_log(log, namaddrport, level, dane_auth)
        if not status["matched"] and (mask & LOG_UNTRUSTED):
            if not reused:
                _log_verify_error(log, namaddrport, verr)
            else:
                log.info("%s: re-using session with untrusted certificate, look for details "
                         "earlier in the log" % namaddrport)
        if mask & (LOG_CERTMATCH | LOG_VERBOSE | LOG_PEERCERT):
            log.info("%s: subject_CN=%s, issuer_CN=%s, fingerprint=%s, pkey_fingerprint=%s"
                     % (namaddrport, _name_attr(peer, "subject", ("COMMON_NAME",)),
                        _name_attr(peer, "issuer", ("COMMON_NAME", "ORGANIZATION_NAME")),
                        cert_fp, pkey_fp))

    protocol = conn.get_protocol_version_name()
    cipher = conn.get_cipher_name() or ""
    algbits = _ffi.new("int *")
    cptr = _lib.SSL_get_current_cipher(ssl)
    usebits = _lib.SSL_CIPHER_get_bits(cptr, algbits) if cptr != _ffi.NULL else 0
    line = "%s TLS connection %s to %s: %s with cipher %s (%d/%d bits)" % (
        "Anonymous" if not status["present"] else "Verified" if status["secured"]
        else "Trusted" if status["trusted"] else "Untrusted",
        "established", namaddrport, protocol, cipher, usebits, algbits[0])
    if _lib.SSL_version(ssl) >= 0x304:
        line += _tls13_details(conn, ssl, peer, sigs, ctx)
    if mask & LOG_SUMMARY:
        log.info(line)
    info = {"level": level, "matched": status["matched"], "trusted": status["trusted"],
            "secured": status["secured"], "present": status["present"], "summary": line,
            "protocol": protocol, "cipher": cipher, "reused": reused,
            "peer_CN": _name_attr(peer, "subject", ("COMMON_NAME",)) if peer else "",
            "issuer_CN": _name_attr(peer, "issuer", ("COMMON_NAME", "ORGANIZATION_NAME"))
            if peer else ""}
    stream = TlsStream(conn, sock, info, wire)
    if serverid:
        stream._scache_save = lambda: eng.scache.save(conn, serverid, mask)
    return stream


def _dane_log(log, namaddrport: str, level: int, auth) -> None:
    """tls_dane_log(): which record authenticated the peer."""
    from .dane import hex_dump
    depth, (u, s, m, data) = auth
    if level == LEV_FPRINT:
        log.info("%s: Matched fingerprint: %s" % (namaddrport, hex_dump(data)))
        return
    log.info("%s: Matched DANE %s at depth %d: %u %u %u %s"
             % (namaddrport, "TA certificate" if depth else "EE certificate", depth,
                u, s, m, hex_dump(data)))


def _dane_match(policy, c, peer, der, spki, conn, errors):
    """Fingerprint level (synthetic DANE-EE with the configured digest) and
    DNS DANE: DANE-EE(3) against the leaf, DANE-TA(2) against the chain.
    Returns None, or (depth, (usage, selector, mtype, data)) of the match
    (OpenSSL SSL_get0_dane_authority()/SSL_get0_dane_tlsa())."""
    if policy.level == LEV_FPRINT:
        for sel, raw in ((0, der), (1, spki)):
            d = _raw_digest(c.fingerprint_digest, raw)
            if d in set(policy.fingerprints):
                return 0, (3, sel, 255, d)
        return None
    from cryptography.hazmat.primitives import serialization
    chain = conn.get_peer_cert_chain() or []

    def data_for(x509, selector):
        if selector == 0:
            return crypto.dump_certificate(crypto.FILETYPE_ASN1, x509)
        return x509.to_cryptography().public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def matches(x509, sel, mtype, data):
        raw = data_for(x509, sel)
        if mtype == 0:
            return raw == data
        return hashlib.new("sha256" if mtype == 1 else "sha512", raw).digest() == data

    for rec in policy.tlsa:
        usage, sel, mtype, data = rec
        if usage == 3 and matches(peer, sel, mtype, data):
            return 0, rec
    for rec in policy.tlsa:
        usage, sel, mtype, data = rec
        if usage != 2:
            continue
        for depth, x in enumerate(chain[1:], 1):
            if matches(x, sel, mtype, data):
                # the chain below the TA must verify (no issuer/signature errors)
                bad = [e for e in errors if e[1] not in (V_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
                                                         V_SELF_SIGNED_CERT_IN_CHAIN,
                                                         V_UNABLE_TO_GET_ISSUER_CERT,
                                                         V_CERT_UNTRUSTED,
                                                         V_DEPTH_ZERO_SELF_SIGNED_CERT)
                       and e[0] < depth]
                return (depth, rec) if not bad else None
    return None


def _log_verify_error(log, namaddr: str, verr) -> None:
    """tls_log_verify_error()."""
    if verr is None:
        return
    depth, err, cert = verr
    purpose = "CA" if depth > 0 else "server"
    if err == V_CERT_UNTRUSTED:
        log.info("certificate verification failed for %s: not trusted by local or TLSA policy"
                 % namaddr)
    elif err == V_DEPTH_ZERO_SELF_SIGNED_CERT:
        log.info("certificate verification failed for %s: self-signed certificate" % namaddr)
    elif err in (V_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, V_SELF_SIGNED_CERT_IN_CHAIN):
        issuer = _x509_name_oneline(cert.get_issuer()) if cert is not None else "<unknown>"
        log.info("certificate verification failed for %s: untrusted issuer %s"
                 % (namaddr, issuer))
    elif err in (V_CERT_NOT_YET_VALID, V_ERROR_IN_CERT_NOT_BEFORE_FIELD):
        log.info("%s certificate verification failed for %s: certificate not yet valid"
                 % (purpose, namaddr))
    elif err in (V_CERT_HAS_EXPIRED, V_ERROR_IN_CERT_NOT_AFTER_FIELD):
        log.info("%s certificate verification failed for %s: certificate has expired"
                 % (purpose, namaddr))
    elif err == V_INVALID_PURPOSE:
        log.info("certificate verification failed for %s: not designated for use as a %s "
                 "certificate" % (namaddr, purpose))
    elif err == V_CERT_CHAIN_TOO_LONG:
        log.info("certificate verification failed for %s: certificate chain longer than "
                 "limit(%d)" % (namaddr, depth - 1))
    else:
        text = _lib.X509_verify_cert_error_string(err)
        text = _ffi.string(text).decode("ascii", "replace") if text else "unknown"
        log.info("%s certificate verification failed for %s: num=%d:%s"
                 % (purpose, namaddr, err, text))


def _key_desc(x509):
    """(signature name, curve, bits) from a certificate's public key, as
    tls_get_signature_params() names them."""
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
    try:
        k = x509.to_cryptography().public_key()
    except Exception:
        return None, None, 0
    if isinstance(k, rsa.RSAPublicKey):
        return "RSA-PSS", None, k.key_size
    if isinstance(k, ec.EllipticCurvePublicKey):
        return "ECDSA", _CURVE_SN.get(k.curve.name, k.curve.name), 0
    if isinstance(k, ed25519.Ed25519PublicKey):
        return "ED25519", None, 0
    if isinstance(k, ed448.Ed448PublicKey):
        return "ED448", None, 0
    if isinstance(k, dsa.DSAPublicKey):
        return "DSA", None, 0
    return None, None, 0


def _tls13_details(conn, ssl, peer, sigs, ctx) -> str:
    out = ""
    g = _lib.SSL_get0_group_name(ssl) if hasattr(_lib, "SSL_get0_group_name") else _ffi.NULL
    group = _ffi.string(g).decode("ascii", "replace") if g != _ffi.NULL else ""
    gl = group.lower()
    if gl in ("x25519", "x448"):
        out += " key-exchange %s" % gl.upper()
    elif gl.startswith("ffdhe"):
        out += " key-exchange DHE (%s bits)" % gl[5:]
    elif gl in _CURVE_SN or gl.startswith(("secp", "brainpool", "prime")):
        out += " key-exchange ECDHE (%s)" % _CURVE_SN.get(gl, gl)
    elif group:
        out += " key-exchange %s" % group
    if peer is not None:
        name, curve, bits = _key_desc(peer)
        if name:
            out += " server-signature %s" % name
            if curve:
                out += " (%s)" % curve
            elif bits > 0:
                out += " (%d bits)" % bits
            dg = _SIG_DIGEST.get(sigs.get("server", -1))
            if dg:
                out += " server-digest %s" % dg
    if "client" in sigs:
        local = _lib.SSL_get_certificate(ssl)
        if local != _ffi.NULL:
            x = crypto.X509.__new__(crypto.X509)
            _lib.X509_up_ref(local)
            x._x509 = _ffi.gc(local, _lib.X509_free)
            name, curve, bits = _key_desc(x)
            if name:
                out += " client-signature %s" % name
                if curve:
                    out += " (%s)" % curve
                elif bits > 0:
                    out += " (%d bits)" % bits
                dg = _SIG_DIGEST.get(sigs["client"])
                if dg:
                    out += " client-digest %s" % dg
    return out


def _serverid(c: TlsConfig, policy: Policy, service: str, dest: str, host: str, addr: str,
              ciphers: str, helo: str, sni) -> str:
    """The session cache key: stock's prefix (service&nexthop&host&addr&) and
    a digest of everything that decides whether a cached session is
    acceptable (our own salt; stock's is OpenSSL-specific)."""
    prefix = "%s&%s&%s&%s&" % (service or c.service, dest, host, addr)
    h = hashlib.sha256()
    for part in (policy.protocols, ciphers, c.fingerprint_digest, str(policy.level),
                 sni or "", helo, "|".join(policy.matchargv),
                 "|".join(x.hex() for x in policy.fingerprints), "|".join(policy.tafiles),
                 "|".join("%d %d %d %s" % (u, s, m, d.hex()) for u, s, m, d in policy.tlsa),
                 c.CAfile, c.CApath, "postfix_smtp-1"):
        h.update(part.encode("utf-8", "surrogateescape") + b"\0")
    return prefix + "&" + h.hexdigest().upper()
