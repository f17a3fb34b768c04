"""Passivating and activating SMTP sessions for scache(8) (smtp_session.c, smtp_key.c).

Pure: strings in, strings out.  Labels are what a session is cached under,
properties what comes back with it (postfix-ipc.md §5.3, §5.4):

- destination label: service, request nexthop (3.7.11 layout, ``smtp\\nexample.org\\n``)
- endpoint label: service, [nexthop for verify-type TLS levels], address, port,
  TLS level number (``smtp\\n192.0.2.25\\n25\\n0\\n``)
- destination properties: ``destination=..\\nhost_name=..\\nhost_addr=..\\n``
  ``destination_features=<BEST_MX bit>\\n\\n``
- endpoint properties: ``tls_level=..\\nreuse_count=..\\nendpoint_features=..\\n``
  ``expire_time=..\\n`` + ``server_name=..\\n`` (ours) + ``\\n``; a session
  through tlsproxy(8) has its TLS summary after that, as a second list
  (tls/proxy.py; delivery.py appends and reads it)

Feature bits are stock's SMTP_FEATURE_* so a property string reads the
same as one written by smtp(8); bits stock does not have (ENHANCEDSTATUSCODES)
sit above stock's highest bit.  The SIZE limit is not restored (stock neither).
"""

from __future__ import annotations

import base64
from ..valueclass import dataclass

from .protocol import Features

F_ESMTP = 1 << 0
F_8BITMIME = 1 << 1
F_PIPELINING = 1 << 2
F_SIZE = 1 << 3
F_STARTTLS = 1 << 4
F_AUTH = 1 << 5
F_XFORWARD_NAME = 1 << 7
F_XFORWARD_ADDR = 1 << 8
F_XFORWARD_PROTO = 1 << 9
F_XFORWARD_HELO = 1 << 10
F_XFORWARD_DOMAIN = 1 << 11          # the XFORWARD SOURCE attribute
F_BEST_MX = 1 << 12
F_RSET_REJECTED = 1 << 13
F_FROM_CACHE = 1 << 14
F_DSN = 1 << 15
F_PIX_NO_ESMTP = 1 << 16
F_PIX_DELAY_DOTCRLF = 1 << 17
F_XFORWARD_PORT = 1 << 18
F_EARLY_TLS_MAIL_REPLY = 1 << 19
F_XFORWARD_IDENT = 1 << 20
F_SMTPUTF8 = 1 << 21
F_FROM_PROXY = 1 << 22
F_ENHANCEDSTATUSCODES = 1 << 28      # postfix_smtp only

ENDPOINT_MASK = ~(F_BEST_MX | F_RSET_REJECTED | F_FROM_CACHE)
DESTINATION_MASK = F_BEST_MX

_XFORWARD_BITS = (("NAME", F_XFORWARD_NAME), ("ADDR", F_XFORWARD_ADDR),
                  ("PROTO", F_XFORWARD_PROTO), ("HELO", F_XFORWARD_HELO),
                  ("SOURCE", F_XFORWARD_DOMAIN), ("PORT", F_XFORWARD_PORT),
                  ("IDENT", F_XFORWARD_IDENT))
_BOOL_BITS = (("esmtp", F_ESMTP), ("eightbitmime", F_8BITMIME), ("pipelining", F_PIPELINING),
              ("size", F_SIZE), ("starttls", F_STARTTLS), ("dsn", F_DSN),
              ("smtputf8", F_SMTPUTF8), ("enhancedstatuscodes", F_ENHANCEDSTATUSCODES),
              ("pix_delay_dotcrlf", F_PIX_DELAY_DOTCRLF))

#: TLS levels above "encrypt" bind the session to the nexthop (certificate match)
TLS_LEVEL_ENCRYPT = 2


# --- labels -----------------------------------------------------------------------
def _field(value) -> str:
    """smtp_key_append_str(): ``value\\n``, ``*\\n`` when empty, base64 when it
    contains the delimiter or the "not available" mark."""
    text = str(value)
    if not text:
        return "*\n"
    if "\n" in text or "*" in text:
        return base64.b64encode(text.encode("utf-8", "surrogateescape")).decode() + "\n"
    return text + "\n"


def dest_label(service: str, nexthop: str, sender: str | None = None) -> str:
    """SERVICE [SENDER] REQ_NEXTHOP; the sender with sender-dependent SASL."""
    return _field(service) + ("" if sender is None else _field(sender)) + _field(nexthop)


def endp_label(service: str, addr: str, port: int, tls_level: int = 0,
               nexthop: str = "", sender: str | None = None, sasl: bool = False,
               hostname: str = "") -> str:
    """SERVICE [SENDER] [CUR_NEXTHOP] [HOSTNAME] ADDR PORT TLS_LEVEL (smtp_key.c
    order): the nexthop with a SASL password table or a TLS level that must
    match the certificate, the host name with a SASL password table."""
    out = _field(service)
    if sender is not None:
        out += _field(sender)
    if sasl or tls_level > TLS_LEVEL_ENCRYPT:
        out += _field(nexthop)
    if sasl:
        out += _field(hostname)
    return out + _field(addr) + _field(int(port)) + _field(int(tls_level))


# --- features -------------------------------------------------------------------
def features_to_bits(f: Features, best_mx: bool = False) -> int:
    bits = 0
    for name, bit in _BOOL_BITS:
        if getattr(f, name, False):
            bits |= bit
    if f.auth:
        bits |= F_AUTH
    for kw, bit in _XFORWARD_BITS:
        if kw in f.xforward:
            bits |= bit
    if best_mx:
        bits |= F_BEST_MX
    return bits


def bits_to_features(bits: int, server_name: str = "") -> Features:
    f = Features(esmtp=bool(bits & F_ESMTP))
    for name, bit in _BOOL_BITS:
        setattr(f, name, bool(bits & bit))
    f.xforward = {kw for kw, bit in _XFORWARD_BITS if bits & bit}
    f.auth = ["AUTH"] if bits & F_AUTH else []    # SMTP_FEATURE_AUTH (dummy AUTH=<>)
    f.server_name = server_name
    f.starttls = False          # a cached plaintext session never starts TLS again
    return f


# --- properties (attr_print_plain: name=value\n ... \n) ---------------------------
def _plain(pairs) -> str:
    out = []
    for name, value in pairs:
        text = str(value)
        if "\n" in text:
            raise ValueError("newline in property %s" % name)
        out.append("%s=%s\n" % (name, text))
    return "".join(out) + "\n"


def _parse_plain(text: str) -> dict:
    out = {}
    for line in text.split("\n"):
        if not line:
            break                 # the list terminator
        name, sep, value = line.partition("=")
        if not sep:
            raise ValueError("malformed property line %r" % line[:60])
        out[name] = value
    return out


@dataclass
class CachedSession:
    """What an activated session knows about itself."""
    features: Features
    tls_level: int = 0
    reuse_count: int = 0
    expire_time: int = 0
    dest: str = ""               # from destination properties (find_dest only)
    host: str = ""
    addr: str = ""
    best_mx: bool = True


def dest_props(dest: str, host: str, addr: str, best_mx: bool) -> str:
    return _plain((("destination", dest), ("host_name", host), ("host_addr", addr),
                   ("destination_features", F_BEST_MX if best_mx else 0)))


def endp_props(f: Features, reuse_count: int, expire_time: float, tls_level: int = 0) -> str:
    return _plain((("tls_level", int(tls_level)), ("reuse_count", int(reuse_count)),
                   ("endpoint_features", features_to_bits(f) & ENDPOINT_MASK),
                   ("expire_time", int(expire_time)), ("server_name", f.server_name or "")))


def _int(d: dict, name: str) -> int:
    v = d.get(name)
    if v is None or not v.lstrip("-").isdigit():
        raise ValueError("missing or bad property %s" % name)
    return int(v)


def activate(endp_prop: str, dest_prop: str | None = None) -> CachedSession:
    """The session state from its properties; ``reuse_count`` already counts this
    reuse (stock: ``session->reuse_count = ++reuse_count``).  ValueError when
    the strings are malformed (the caller drops the session)."""
    e = _parse_plain(endp_prop)
    bits = _int(e, "endpoint_features")
    s = CachedSession(features=bits_to_features(bits, e.get("server_name", "")),
                      tls_level=_int(e, "tls_level") if "tls_level" in e else 0,
                      reuse_count=_int(e, "reuse_count") + 1,
                      expire_time=_int(e, "expire_time"))
    if dest_prop is not None:
        d = _parse_plain(dest_prop)
        s.dest = d.get("destination", "")
        s.host = d.get("host_name", "")
        s.addr = d.get("host_addr", "")
        s.best_mx = bool(_int(d, "destination_features") & F_BEST_MX)
    return s


def expired(reuse_count: int, expire_time: float, now: float, count_limit: int) -> bool:
    """THIS_SESSION_IS_EXPIRED."""
    return expire_time < now or (count_limit > 0 and reuse_count >= count_limit)
