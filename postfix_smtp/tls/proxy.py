"""TLS through tlsproxy(8), for connections that are to be reused (tls_proxy_clnt.c).

With ``smtp_tls_connection_reuse = yes`` (or ``connection_reuse=yes`` in a
policy table entry) the agent does no TLS itself: after the server's 220 to
STARTTLS (or right after connect in wrapper mode) it hands the TCP socket to
tlsproxy(8), which runs the handshake and from then on relays plaintext.  The
agent speaks SMTP over its stream to tlsproxy; that stream, unlike OpenSSL
state, can be saved in scache(8) and picked up by another agent process.

The conversation on ``private/$tlsproxy_service_name`` (null-terminated
attribute lists, every name and its position checked by the server):

1. server: ``protocol=tlsproxy_protocol``
2. client: ``remote_endpoint=[ADDR]:PORT``, ``flags`` (client role, send
   context), ``timeout`` (handshake), ``timeout`` (session), ``serverid``
   (the service name)
3. client, one more list: TLS_CLIENT_PARAMS (20 global ``tls_*`` settings,
   named by their parameters), TLS_CLIENT_INIT_PROPS (14), then
   TLS_CLIENT_START_PROPS (timeout ... mdalg, the match names as
   ``argv_size`` + ``argv_value``, then ``dane`` and, when set, ``domain``,
   ``count`` and the TLSA records)
4. server: ``status`` (1: the client engine is ready)
5. client: the TCP descriptor (SCM_RIGHTS, one data byte)
6. server, after the handshake: the TLS session summary, 22 attributes (the
   TLS_SESS_STATE serialization); plaintext SMTP follows on the same stream.
   A failed handshake ends the stream instead.

The same 22 attributes, as ``name=value`` lines, follow the endpoint
properties of a session saved in scache(8) (smtp_session.c); a process that
reuses the session logs "... TLS connection reused to ..." from them.

The request building and parsing here is pure; :func:`open_proxy` and
:func:`receive_context` are the blocking shell (nothing here imports OpenSSL).
"""

from __future__ import annotations

import base64
import binascii
import re
import socket

from ..config.params import ConfigError
from ..ipc.attr import AttrError, encode, parse_data, parse_int

PROTOCOL = "tlsproxy_protocol"

FLAG_ROLE_CLIENT = 1 << 1
FLAG_SEND_CONTEXT = 1 << 2

#: tls_proxy_clnt.c: the connect timeout to the tlsproxy service
CONNECT_TIMEOUT = 10.0

# peer_status bits (tls.h TLS_CERT_FLAG_*)
CERT_PRESENT = 1 << 0
CERT_ALTNAME = 1 << 1
CERT_TRUSTED = 1 << 2
CERT_MATCHED = 1 << 3
CERT_SECURED = 1 << 4

# TLS_CLIENT_PARAMS: (attribute name, parameter, kind); the attributes are named
# after their parameters, except the first two
CLIENT_PARAMS = (
    ("config_file", "tls_config_file", "str"), ("config_name", "tls_config_name", "str"),
) + tuple((n, n, k) for n, k in (
    ("tls_high_cipherlist", "str"), ("tls_medium_cipherlist", "str"),
    ("tls_low_cipherlist", "str"), ("tls_export_cipherlist", "str"),
    ("tls_null_cipherlist", "str"), ("tls_eecdh_auto_curves", "str"),
    ("tls_eecdh_strong_curve", "str"), ("tls_eecdh_ultra_curve", "str"),
    ("tls_disable_workarounds", "str"), ("tls_ssl_options", "str"),
    ("tls_dane_digests", "str"), ("tlsmgr_service_name", "str"),
    ("tls_session_ticket_cipher", "str"), ("tls_daemon_random_bytes", "int"),
    ("tls_append_default_CA", "bool"), ("tls_legacy_public_key_fingerprints", "bool"),
    ("tls_preempt_cipherlist", "bool"), ("tls_wildcard_matches_multiple_labels", "bool"),
))

INIT_NAMES = ("log_param", "log_level", "verifydepth", "cache_type", "chain_files",
              "cert_file", "key_file", "dcert_file", "dkey_file", "eccert_file",
              "eckey_file", "CAfile", "CApath", "mdalg")

START_NAMES = ("timeout", "tls_level", "nexthop", "host", "namaddr", "sni", "serverid",
               "helo", "protocols", "cipher_grade", "cipher_exclusions")

# TLS_SESS_STATE as tls_proxy_context_print() sends it: (name, is_int)
CONTEXT_FIELDS = (
    ("peer_CN", False), ("issuer_CN", False), ("peer_fingerprint", False),
    ("peer_pubkey_fingerprint", False), ("level", True), ("peer_status", True),
    ("cipher_protocol", False), ("cipher_name", False), ("cipher_usebits", True),
    ("cipher_algbits", True), ("key_exchange", False), ("key_exchange_curve", False),
    ("key_exchange_bits", True), ("clnt_signature", False), ("clnt_signature_curve", False),
    ("clnt_signature_bits", True), ("clnt_signature_digest", False),
    ("srvr_signature", False), ("srvr_signature_curve", False),
    ("srvr_signature_bits", True), ("srvr_signature_digest", False), ("namaddr", False),
)
_CONTEXT_NAMES = tuple(n for n, _i in CONTEXT_FIELDS)
_CONTEXT_INTS = frozenset(n for n, i in CONTEXT_FIELDS if i)

# TLS levels used here (tls/config.py has them all)
_LEV_FPRINT = 3
_LEV_VERIFY = 7
_LEV_SECURE = 8


class ProxyError(Exception):
    """Malformed data from tlsproxy(8) or in a cached property string."""


# --- the TLS session summary ---------------------------------------------------------

class TlsContext:
    """What the agent knows of a TLS session that tlsproxy(8) runs.

    Plays the part the in-process ``TlsStream`` plays for the delivery code:
    ``level``, ``matched``, ``trusted``, ``secured``, ``present``,
    ``summary``; ``proxied`` tells the two apart."""

    __slots__ = _CONTEXT_NAMES
    proxied = True

    def __init__(self, **values) -> None:
        for name, is_int in CONTEXT_FIELDS:
            setattr(self, name, values.pop(name, 0 if is_int else ""))
        if values:
            raise TypeError("unknown TLS context field %s" % sorted(values)[0])

    def __eq__(self, other) -> bool:
        return isinstance(other, TlsContext) and self.pairs() == other.pairs()

    def __repr__(self) -> str:
        return "TlsContext(%s)" % ", ".join("%s=%r" % kv for kv in self.pairs())

    # TLS_CERT_IS_*
    @property
    def present(self) -> bool:
        return bool(self.peer_status & CERT_PRESENT)

    @property
    def trusted(self) -> bool:
        return bool(self.peer_status & CERT_TRUSTED)

    @property
    def matched(self) -> bool:
        return bool(self.peer_status & CERT_MATCHED)

    @property
    def secured(self) -> bool:
        return bool(self.peer_status & CERT_SECURED)

    @property
    def protocol(self) -> str:
        return self.cipher_protocol

    @property
    def cipher(self) -> str:
        return self.cipher_name

    def summary_line(self, reused: bool = False) -> str:
        """tls_log_summary() for the client role."""
        out = "%s TLS connection %s to %s: %s with cipher %s (%d/%d bits)" % (
            "Anonymous" if not self.present else "Verified" if self.secured
            else "Trusted" if self.trusted else "Untrusted",
            "reused" if reused else "established", self.namaddr, self.cipher_protocol,
            self.cipher_name, self.cipher_usebits, self.cipher_algbits)
        if self.key_exchange:
            out += " key-exchange %s" % self.key_exchange
            if self.key_exchange_curve:
                out += " (%s)" % self.key_exchange_curve
            elif self.key_exchange_bits > 0:
                out += " (%d bits)" % self.key_exchange_bits
        for who, name, curve, bits, dgst in (
                ("server", self.srvr_signature, self.srvr_signature_curve,
                 self.srvr_signature_bits, self.srvr_signature_digest),
                ("client", self.clnt_signature, self.clnt_signature_curve,
                 self.clnt_signature_bits, self.clnt_signature_digest)):
            if name:
                out += " %s-signature %s" % (who, name)
                if curve:
                    out += " (%s)" % curve
                elif bits > 0:
                    out += " (%d bits)" % bits
                if dgst:
                    out += " %s-digest %s" % (who, dgst)
        return out

    @property
    def summary(self) -> str:
        return self.summary_line()

    # -- serialization ------------------------------------------------------------
    def pairs(self) -> list:
        return [(name, getattr(self, name)) for name in _CONTEXT_NAMES]

    @classmethod
    def from_pairs(cls, pairs) -> "TlsContext":
        """The 22 attributes, exactly these names in this order (the strict
        reader of tls_proxy_context_receive())."""
        if len(pairs) != len(_CONTEXT_NAMES):
            raise ProxyError("TLS context: %d attributes, expected %d"
                             % (len(pairs), len(_CONTEXT_NAMES)))
        values = {}
        for (name, value), want in zip(pairs, _CONTEXT_NAMES):
            if name != want:
                raise ProxyError("TLS context: unexpected attribute %s (expecting: %s)"
                                 % (name[:60], want))
            if want in _CONTEXT_INTS and not isinstance(value, int):
                try:
                    value = parse_int(name, value)      # the C int (%u on the wire)
                except AttrError as exc:
                    raise ProxyError("TLS context: %s" % exc) from None
            values[want] = value
        return cls(**values)

    def to_plain(self) -> str:
        """attr_print_plain() of the context: ``name=value`` lines and the
        closing empty line, to follow the endpoint properties in scache."""
        out = []
        for name, value in self.pairs():
            text = str(value & 0xFFFFFFFF) if isinstance(value, int) else value
            if "\n" in text:
                raise ProxyError("newline in TLS context attribute %s" % name)
            out.append("%s=%s\n" % (name, text))
        return "".join(out) + "\n"

    @classmethod
    def from_plain(cls, text: str) -> "TlsContext":
        pairs = []
        lines = text.split("\n")
        for i, line in enumerate(lines):
            if not line:
                if i + 1 < len(lines) and any(lines[i + 1:]):
                    raise ProxyError("TLS context: data after the attribute list")
                break
            name, sep, value = line.partition("=")
            if not sep:
                raise ProxyError("TLS context: malformed line %r" % line[:60])
            pairs.append((name, value))
        else:
            raise ProxyError("TLS context: unterminated attribute list")
        return cls.from_pairs(pairs)


def split_endpoint_props(prop: str) -> tuple:
    """Endpoint properties as stock's smtp_session_passivate() writes them:
    (the session attributes with their closing empty line, the TLS context
    text or "" when the session had none)."""
    if prop.startswith("\n"):
        return "\n", prop[1:]
    head, sep, tail = prop.partition("\n\n")
    if not sep:
        return prop, ""
    return head + "\n\n", tail


def cached_context(tls_level: int, tail: str):
    """The TLS context of a cached session (smtp_session_activate()): required
    above level "may", optional at "may" (present when that session used TLS),
    never read below.  ProxyError when it is required or present but bad."""
    if tls_level > 1 or (tls_level == 1 and tail):
        return TlsContext.from_plain(tail)
    return None


# --- the request ------------------------------------------------------------------

def _key_field(value: str, delim: str = "&") -> str:
    """smtp_key_append_str() with "&" as the delimiter and no place holder."""
    if not value:
        return delim
    if delim in value:
        return base64.b64encode(value.encode("utf-8", "surrogateescape")).decode() + delim
    return value + delim


def serverid(service: str, dest: str, host: str, addr: str) -> str:
    """The TLS session cache key prefix: service, current nexthop (as written,
    with the port), host name, address (smtp_proto.c smtp_start_tls)."""
    return _key_field(service) + _key_field(dest) + _key_field(host) + _key_field(addr)


def client_params(params) -> list:
    """TLS_CLIENT_PARAMS (tls_proxy_client_param_from_config()) from the
    global ``tls_*`` parameters; ``params`` is a config.params.Params (None:
    the compiled-in defaults)."""
    if params is None:
        from ..config.params import Params
        params = Params({})
    out = []
    for attr, name, kind in CLIENT_PARAMS:
        if kind == "str":
            out.append((attr, params.get(name)))
        elif kind == "int":
            out.append((attr, params.get_int(name)))
        else:
            out.append((attr, 1 if params.get_bool(name) else 0))
    return out


def init_props(cfg) -> list:
    """TLS_CLIENT_INIT_PROPS as smtp(8) fills them (a tls.config.TlsConfig)."""
    return [
        ("log_param", cfg.name("smtp_tls_loglevel")),
        ("log_level", cfg.loglevel),
        ("verifydepth", int(cfg.verify_depth)),
        ("cache_type", "lmtp" if cfg.prefix == "lmtp" else "smtp"),
        ("chain_files", cfg.chain_files),
        ("cert_file", cfg.cert_file),
        ("key_file", cfg.key_file),
        ("dcert_file", cfg.dcert_file),
        ("dkey_file", cfg.dkey_file),
        ("eccert_file", cfg.eccert_file),
        ("eckey_file", cfg.eckey_file),
        ("CAfile", cfg.CAfile),
        ("CApath", cfg.CApath),
        ("mdalg", cfg.fingerprint_digest),
    ]


_PEM = re.compile(rb"-----BEGIN ([^-\r\n]+)-----\r?\n(.*?)-----END \1-----", re.S)


def trust_anchor_records(paths) -> list:
    """tls_dane_load_trustfile() for every file: each certificate (public key)
    becomes a DANE-TA and a DANE-EE record, selector 0 (1), no hashing, the
    DER data; prepended, so the list runs last-first.  ProxyError when a
    file cannot be read or holds no usable PEM block."""
    head: list = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ProxyError("error opening trust anchor file: %s: %s"
                             % (path, exc.strerror or exc)) from None
        count = 0
        for m in _PEM.finditer(data):
            label = m.group(1).strip()
            body = m.group(2)
            if b":" in body.split(b"\n\n", 1)[0] and b"\n\n" in body:
                body = body.split(b"\n\n", 1)[1]      # RFC 1421 encapsulated headers
            try:
                der = base64.b64decode(b"".join(body.split()), validate=True)
            except (binascii.Error, ValueError):
                raise ProxyError("error reading: %s: malformed PEM data" % path) from None
            count += 1
            if label in (b"CERTIFICATE", b"X509 CERTIFICATE"):
                selector = 0
            elif label == b"PUBLIC KEY":
                selector = 1
            else:
                continue
            head.insert(0, (2, selector, 0, der))
            head.insert(0, (3, selector, 0, der))
        if count == 0:
            raise ProxyError("error reading: %s: no trust anchors found" % path)
    return head


def fingerprint_records(digests) -> list:
    """tls_dane_add_fpt_digests(): each digest as a certificate and a public key
    record of the private matching type 255 (prepended)."""
    head: list = []
    for raw in digests:
        head.insert(0, (3, 0, 255, raw))
        head.insert(0, (3, 1, 255, raw))
    return head


def dane_of(policy) -> tuple:
    """(present, base domain, records) of stock's ``tls->dane`` for a policy:
    the DANE records, the fingerprints at level "fingerprint", the trust
    anchors at "verify"/"secure" with ``tafile``/``smtp_tls_trust_anchor_file``."""
    level = policy.level
    if 4 <= level <= 6:              # halfdane, dane, dane-only
        if policy.tlsa:
            return True, policy.dane_base_domain, list(policy.tlsa)
        return False, "", []
    if level == _LEV_FPRINT:
        return True, "", fingerprint_records(policy.fingerprints)
    if level in (_LEV_VERIFY, _LEV_SECURE) and policy.tafiles:
        return True, "", trust_anchor_records(policy.tafiles)
    return False, "", []


def start_props(policy, cfg, *, nexthop: str, host: str, namaddrport: str,
                server_id: str, helo: str) -> list:
    """TLS_CLIENT_START_PROPS (tls_proxy_client_start_print())."""
    out = [
        ("timeout", int(cfg.starttls_timeout)),
        ("tls_level", int(policy.level)),
        ("nexthop", nexthop),
        ("host", host),
        ("namaddr", namaddrport),
        ("sni", policy.sni or ""),
        ("serverid", server_id),
        ("helo", helo or ""),
        ("protocols", policy.protocols or ""),
        ("cipher_grade", policy.grade or ""),
        ("cipher_exclusions", policy.exclusions or ""),
        ("argv_size", len(policy.matchargv)),
    ]
    out += [("argv_value", v) for v in policy.matchargv]
    out.append(("mdalg", cfg.fingerprint_digest))
    have, domain, records = dane_of(policy)
    out.append(("dane", 1 if have else 0))
    if have:
        out.append(("domain", domain or ""))
        out.append(("count", len(records)))
        for usage, selector, mtype, data in records:
            out += [("usage", usage), ("selector", selector), ("mtype", mtype),
                    ("data", bytes(data))]
    return out


def build_request(policy, cfg, params, *, service: str, dest: str, nexthop: str, host: str,
                  addr: str, port: int, namaddrport: str, helo: str,
                  session_timeout: float) -> tuple:
    """The two request lists (steps 2 and 3) as encoded bytes."""
    first = [
        ("remote_endpoint", "[%s]:%d" % (addr, port)),
        ("flags", FLAG_ROLE_CLIENT | FLAG_SEND_CONTEXT),
        ("timeout", int(cfg.starttls_timeout)),
        ("timeout", int(session_timeout)),
        ("serverid", service),
    ]
    second = (client_params(params) + init_props(cfg)
              + start_props(policy, cfg, nexthop=nexthop, host=host, namaddrport=namaddrport,
                            server_id=serverid(service, dest, host, addr), helo=helo))
    return encode(first), encode(second)


# --- parsing what tlsproxy sends ------------------------------------------------------

def list_end(buf, start: int = 0):
    """Index just past the first complete attribute list in ``buf[start:]``
    (its closing empty name), or None while it is incomplete."""
    pos = start
    want_name = True
    while True:
        end = buf.find(b"\0", pos)
        if end < 0:
            return None
        if want_name and end == pos:
            return end + 1
        want_name = not want_name
        pos = end + 1


def split_pairs(data: bytes) -> list:
    """One complete list (terminator included) as (name, value) strings."""
    tokens = data.split(b"\0")
    # name, value, name, value, ..., "" (terminator), "" (after the last NUL)
    if len(tokens) < 2 or tokens[-1] != b"" or tokens[-2] != b"" or len(tokens) % 2:
        raise ProxyError("malformed attribute list")
    out = []
    for i in range(0, len(tokens) - 2, 2):
        out.append((tokens[i].decode("utf-8", "surrogateescape"),
                    tokens[i + 1].decode("utf-8", "surrogateescape")))
    return out


def parse_status(pairs) -> int:
    if len(pairs) != 1 or pairs[0][0] != "status":
        raise ProxyError("unexpected reply %r" % [n for n, _v in pairs][:3])
    try:
        return parse_int("status", pairs[0][1])
    except AttrError as exc:
        raise ProxyError(str(exc)) from None


def decode_request(first: bytes, second: bytes) -> dict:
    """Parse our own request back (tests, and a check that it is well formed):
    the five request attributes, and the TLS settings split into params,
    init props, start props, match names and DANE records."""
    p1 = split_pairs(first)
    names1 = [n for n, _v in p1]
    if names1 != ["remote_endpoint", "flags", "timeout", "timeout", "serverid"]:
        raise ProxyError("bad request attributes %r" % names1)
    p2 = split_pairs(second)
    i = 0

    def take(name):
        nonlocal i
        if i >= len(p2) or p2[i][0] != name:
            raise ProxyError("expected %s at %d, got %r" % (name, i, p2[i][0] if i < len(p2)
                                                              else None))
        i += 1
        return p2[i - 1][1]
    params = {n: take(n) for n, _p, _k in CLIENT_PARAMS}
    init = {n: take(n) for n in INIT_NAMES}
    start = {n: take(n) for n in START_NAMES}
    match = [take("argv_value") for _ in range(int(take("argv_size")))]
    start["mdalg"] = take("mdalg")
    dane = None
    if take("dane") != "0":
        domain = take("domain")
        recs = []
        for _ in range(int(take("count"))):
            recs.append((int(take("usage")), int(take("selector")), int(take("mtype")),
                         parse_data("data", take("data"))))
        dane = (domain, recs)
    if i != len(p2):
        raise ProxyError("extra attributes from %s" % p2[i][0])
    return {"request": p1, "params": params, "init": init, "start": start,
            "match": match, "dane": dane}


# --- the blocking shell -----------------------------------------------------------------

class _Reader:
    """Bounded reads of whole attribute lists from one stream socket, keeping
    whatever follows the last list (SMTP data that tlsproxy relays)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def read_list(self, limit: int = 1 << 17) -> list:
        while True:
            end = list_end(self.buf)
            if end is not None:
                data, self.buf = self.buf[:end], self.buf[end:]
                return split_pairs(data)
            if len(self.buf) > limit:
                raise ProxyError("attribute list longer than %d bytes" % limit)
            chunk = self.sock.recv(16384)
            if not chunk:
                raise ProxyError("premature end-of-input")
            self.buf += chunk


def open_proxy(tcp_sock: socket.socket, first: bytes, second: bytes, *,
               service_name: str = "tlsproxy", timeout: float = 300.0, log=None,
               path: str | None = None):
    """tls_proxy_open(): connect to ``private/<service_name>``, send the
    request, wait for "ready", pass ``tcp_sock``'s descriptor.  Returns the
    stream socket to tlsproxy, or None after logging stock's warning.
    ``tcp_sock`` itself is left open (the caller closes it)."""
    from ..scache import send_fd
    where = path or "private/%s" % service_name
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(where)
    except OSError as exc:
        sock.close()
        _warn(log, "connect to %s service: %s" % (where, _strerror(exc)))
        return None
    sock.settimeout(timeout if timeout > 0 else None)
    reader = _Reader(sock)
    try:
        try:
            if reader.read_list() != [("protocol", PROTOCOL)]:
                raise ProxyError("bad protocol")
        except (OSError, ProxyError):
            _warn(log, "error receiving %s service initial response" % where)
            sock.close()
            return None
        try:
            sock.sendall(first + second)
        except OSError as exc:
            _warn(log, "error sending request to %s service: %s" % (where, _strerror(exc)))
            sock.close()
            return None
        try:
            ready = parse_status(reader.read_list())
        except (OSError, ProxyError):
            ready = 0
        if ready == 0 or reader.buf:
            _warn(log, '%s service role "client" is not available' % where)
            sock.close()
            return None
        try:
            send_fd(sock, tcp_sock.fileno())
        except OSError as exc:
            _warn(log, "sending file handle to %s service: %s" % (where, _strerror(exc)))
            sock.close()
            return None
    except BaseException:
        sock.close()
        raise
    return sock


def receive_context(sock: socket.socket, timeout: float):
    """tls_proxy_context_receive(): (TlsContext, bytes read past it), or
    (None, b"") when the handshake failed (tlsproxy closed the stream) or
    the summary is malformed or late."""
    sock.settimeout(timeout if timeout > 0 else None)
    reader = _Reader(sock)
    try:
        ctx = TlsContext.from_pairs(reader.read_list())
    except (OSError, ProxyError):
        return None, b""
    return ctx, reader.buf


def start(tcp_sock: socket.socket, policy, cfg, params, *, service: str, dest: str,
          nexthop: str, host: str, addr: str, port: int, namaddrport: str, helo: str,
          session_timeout: float, service_name: str = "tlsproxy", log=None,
          path: str | None = None):
    """The whole tlsproxy branch of smtp_start_tls(): returns (stream socket,
    TlsContext, bytes already read after the context) with the summary
    logged, or None when no TLS session resulted (the caller treats it as a
    handshake failure; the TCP socket is then unusable)."""
    try:
        first, second = build_request(policy, cfg, params, service=service, dest=dest,
                                      nexthop=nexthop, host=host, addr=addr, port=port,
                                      namaddrport=namaddrport, helo=helo,
                                      session_timeout=session_timeout)
    except ProxyError as exc:            # an unreadable trust anchor file
        _warn(log, str(exc))
        return None
    except (AttrError, ValueError, ConfigError) as exc:   # a value the stream cannot
        _warn(log, "tlsproxy request: %s" % exc)          # carry, a bad main.cf number
        return None
    psock = open_proxy(tcp_sock, first, second, service_name=service_name,
                       timeout=cfg.starttls_timeout, log=log, path=path)
    if psock is None:
        return None
    ctx, rest = receive_context(psock, cfg.starttls_timeout)
    if ctx is None:
        psock.close()
        return None
    if log is not None:
        log.info(ctx.summary_line())
    return psock, ctx, rest


def _warn(log, text: str) -> None:
    if log is not None:
        log.warning(text)


def _strerror(exc: OSError) -> str:
    if isinstance(exc, socket.timeout):
        return "Connection timed out"
    return exc.strerror or str(exc)
