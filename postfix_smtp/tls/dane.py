"""DANE TLSA lookups as tls_dane.c (3.7.11) does them: ``tls_dane_resolve()``.

``TlsaResolver(dns, log).resolve(host_rr, port, force)`` returns a
:class:`DaneResult` or None (lookup error: stock defers with "TLSA lookup
error for HOST:PORT").  ``host_rr`` describes the server's address record:
``qname`` (the MX host name looked up), ``rname`` (its owner after CNAMEs)
and ``dnssec_valid`` (the address RRset validated: AD bit on the reply to a
query with the DO bit, ``smtp_dns_support_level = dnssec``).

- No TLSA lookup for a host in an unsigned zone, unless
  ``smtp_tls_force_insecure_host_tlsa_lookup = yes``, or the host name is a
  CNAME whose own record validated (``qname_secure()``): "not found".
- The rname is tried first when the address is secure, then the qname when
  different (and nothing was found at the rname).
- TLSA records count only when the reply validated (AD bit); otherwise "not
  found".  Usages other than DANE-TA(2) and DANE-EE(3) and the private
  matching type 255 are dropped with stock's warnings; none left: "unusable".
- Results are cached per ``_PORT._tcp.HOST`` for the record TTL (stock's
  ctable of 20 entries).
"""

from __future__ import annotations

import time
from ..valueclass import dataclass, field
from typing import List, Optional, Tuple

USAGE_TA = 2            # DANE-TA
USAGE_EE = 3            # DANE-EE
CACHE_SIZE = 20
TTL_MIN = 1             # TLS_DANE_CACHE_TTL_MIN (tls.h)
TTL_MAX = 100           # TLS_DANE_CACHE_TTL_MAX
MAX_HEAD_BYTES = 32
MAX_TAIL_BYTES = 32
MAX_DUMP_BYTES = MAX_HEAD_BYTES + MAX_TAIL_BYTES

FLAG_NORRS = 1          # no (secure) records: "not found"
FLAG_EMPTY = 2          # records, none usable
FLAG_ERROR = 4          # lookup error


class _NullLog:
    def info(self, text): pass
    def warning(self, text): pass


@dataclass
class HostRR:
    """The part of a DNS_RR tls_dane_resolve() and dane_init() look at."""
    qname: str
    rname: str
    dnssec_valid: bool = False


@dataclass
class DaneResult:
    flags: int = 0
    base_domain: str = ""
    tlsa: List[Tuple[int, int, int, bytes]] = field(default_factory=list)
    expires: float = 0.0

    @property
    def notfound(self) -> bool:             # tls_dane_notfound()
        return bool(self.flags & FLAG_NORRS)

    @property
    def unusable(self) -> bool:             # tls_dane_unusable()
        return bool(self.flags & FLAG_EMPTY)

    @property
    def usable(self) -> list:
        return [] if self.flags & (FLAG_NORRS | FLAG_EMPTY) else list(self.tlsa)


def hex_dump(data: bytes) -> str:
    """tlsa_info()/tlsa_carp() data text: upper-case hex, long data elided."""
    if len(data) > MAX_DUMP_BYTES:
        return "%s...%s" % (data[:MAX_HEAD_BYTES].hex().upper(),
                            data[-MAX_TAIL_BYTES:].hex().upper())
    if data:
        return data.hex().upper()
    return "..."


def tlsa_text(u: int, s: int, m: int, data: bytes) -> str:
    return "%u %u %u %s" % (u, s, m, hex_dump(data))


class TlsaResolver:
    """tls_dane_resolve() for one process (``dns``: a dns.lookup.Resolver)."""

    def __init__(self, dns=None, log=None, log_dane: bool = False, clock=time.monotonic) -> None:
        self.log = log or _NullLog()
        self._dns = dns
        self.log_dane = log_dane             # smtp_tls_loglevel has "dane" (or verbose)
        self.clock = clock
        self._cache: dict = {}

    @property
    def dns(self):
        if self._dns is None:
            from ..dns.lookup import Resolver
            self._dns = Resolver(warn=self.log.warning)
        return self._dns

    # -- tls_dane_resolve --------------------------------------------------------
    def __call__(self, host_rr, port: int, force: bool) -> Optional[DaneResult]:
        return self.resolve(host_rr, port, force)

    def resolve(self, host_rr, port: int, force: bool,
                proto: str = "tcp") -> Optional[DaneResult]:
        qname, rname = host_rr.qname, host_rr.rname
        iscname = qname.lower() != rname.lower()
        isvalid = True
        if not force and not host_rr.dnssec_valid:
            isvalid = self._qname_secure(qname) if iscname else False
            if isvalid is None:
                return None
        if not isvalid:
            return DaneResult(FLAG_NORRS)
        dane = None
        if host_rr.dnssec_valid:
            dane = self._resolve_host(rname, proto, port)
            if dane.notfound and iscname:
                dane = None
        if dane is None:
            dane = self._resolve_host(qname, proto, port)
        if dane.flags & FLAG_ERROR:
            return None
        return dane

    def _qname_secure(self, qname: str) -> Optional[bool]:
        from ..dns import lookup as dl
        r = self.dns.lookup(qname, dl.T_CNAME, dnssec=True)
        if r.status == dl.DNS_OK:
            return bool(r.rrs[0].dnssec_valid)
        why = "no longer a CNAME" if r.status == dl.DNS_NOTFOUND else r.why
        self.log.warning("DNSSEC status lookup error for %s: %s" % (qname, why))
        return None

    def _resolve_host(self, host: str, proto: str, port: int) -> DaneResult:
        key = "_%u._%s.%s" % (port, proto, host)
        now = self.clock()
        dane = self._cache.get(key.lower())
        if dane is None or now > dane.expires:
            dane = self._lookup(key, now)
            if len(self._cache) >= CACHE_SIZE and key.lower() not in self._cache:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key.lower()] = dane
        if not dane.base_domain:
            dane.base_domain = host
        return DaneResult(dane.flags, dane.base_domain, list(dane.tlsa), dane.expires)

    # -- dane_lookup ---------------------------------------------------------------
    def _lookup(self, fqdn: str, now: float) -> DaneResult:
        from ..dns import lookup as dl
        dane = DaneResult()
        r = self.dns.lookup(fqdn, dl.T_TLSA, dnssec=True)
        if r.status == dl.DNS_OK:
            ttl = r.rrs[0].ttl
            if TTL_MIN and ttl < TTL_MIN:
                ttl = TTL_MIN
            if TTL_MAX and ttl > TTL_MAX:
                ttl = TTL_MAX
            dane.expires = 1 + now + ttl
            if r.rrs[0].dnssec_valid:
                n = 0
                for rr in r.rrs:
                    n += self._parse_tlsa_rr(dane, rr)
                if n == 0:
                    dane.flags |= FLAG_EMPTY
            else:
                dane.flags |= FLAG_NORRS
        elif r.status == dl.DNS_NOTFOUND:
            dane.flags |= FLAG_NORRS
            dane.expires = 1 + now + TTL_MIN
        else:
            self.log.warning("DANE TLSA lookup problem: %s" % r.why)
            dane.flags |= FLAG_ERROR
        return dane

    def _parse_tlsa_rr(self, dane: DaneResult, rr) -> int:
        iscname = rr.rname.lower() != rr.qname.lower()
        q = rr.qname if iscname else ""
        a = " -> " if iscname else ""
        r = rr.rname
        raw = rr.raw
        if len(raw) < 3:
            self.log.warning("%s%s%s: truncated TLSA RR length == %u" % (q, a, r, len(raw)))
            return 0
        u, s, m, data = raw[0], raw[1], raw[2], raw[3:]
        if u not in (USAGE_TA, USAGE_EE):
            self.log.warning("%s%s%s %s: %s" % (q, a, r, "unsupported TLSA certificate usage",
                                                tlsa_text(u, s, m, data)))
            return 0
        if m == 255:
            self.log.warning("%s%s%s %s: %s" % (q, a, r, "reserved private-use matching type",
                                                tlsa_text(u, s, m, data)))
            return 0
        if self.log_dane:
            self.log.info("%s: %s: %s" % ("DNSSEC-signed TLSA record", r,
                                          tlsa_text(u, s, m, data)))
        dane.tlsa.insert(0, (u, s, m, bytes(data)))         # tlsa_prepend()
        return 1


# ---------------------------------------------------------------------------
# what OpenSSL's SSL_dane_tlsa_add() accepts (tls_dane_enable)

DIGEST_LENGTHS = {1: 32, 2: 64}          # tls_dane_digests = sha512:2 sha256:1


def tlsa_usable(u: int, s: int, m: int, data: bytes) -> bool:
    """SSL_dane_tlsa_add() > 0: known usage/selector/matching type, digest
    length right, full data that parses as a certificate or public key."""
    if u > 3 or s > 1:
        return False
    if m != 0:
        n = DIGEST_LENGTHS.get(m)
        return n is not None and len(data) == n
    if not data:
        return False
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        if s == 0:
            x509.load_der_x509_certificate(data)
        else:
            serialization.load_der_public_key(data)
    except Exception:
        return False
    return True
