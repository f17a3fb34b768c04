"""Per-destination TLS policy, as smtp_tls_policy.c computes it (pure code).

``PolicyResolver(config, log).resolve(dest, host, port)`` returns the
:class:`Policy` for one (destination, server host name, port): the security
level from the global setting (or the obsolete ``smtp_use_tls`` /
``smtp_enforce_tls`` / ``smtp_tls_enforce_peername``), overridden by
``smtp_tls_policy_maps`` (with its attributes) or, when no policy maps are
set, by the obsolete ``smtp_tls_per_site``; then the protocols, SNI, cipher
grade and exclusions, match names, fingerprints and trust anchor files filled
in from main.cf.  Warnings are logged with stock's texts.  A policy that
cannot be used has ``level == LEV_INVALID`` and ``status``/``reason`` (stock:
the address is skipped with ``warning: TLS policy lookup for DEST/HOST:
REASON`` and the mail is deferred with that status).

Results are cached per (destination, host, port), like stock's policy cache.
"""

from __future__ import annotations

from ..valueclass import dataclass, field, replace

from .config import (LEV_DANE, LEV_DANE_ONLY, LEV_ENCRYPT, LEV_FPRINT, LEV_HALF_DANE,
                     LEV_INVALID, LEV_MAY, LEV_NONE, LEV_NOTFOUND, LEV_SECURE, LEV_VERIFY,
                     TlsConfig, dane_based, level_lookup, level_name, must_pkix)

CHARS_COMMA_SP = ", \t\r\n"
CACHE_SIZE = 20


class _NullLog:
    def info(self, text): pass
    def warning(self, text): pass


@dataclass
class Policy:
    level: int
    protocols: str = ""
    grade: str = ""
    exclusions: str = ""
    sni: str = ""
    matchargv: list = field(default_factory=list)
    fingerprints: list = field(default_factory=list)    # raw digests (bytes)
    tafiles: list = field(default_factory=list)
    tlsa: list = field(default_factory=list)            # DANE: (usage, selector, mtype, data)
    dane_base_domain: str = ""
    conn_reuse: bool = False
    status: str = ""           # for LEV_INVALID
    reason: str = ""

    @property
    def level_name(self) -> str:
        return level_name(self.level)

    @property
    def invalid(self) -> bool:
        return self.level == LEV_INVALID

    @property
    def required(self) -> bool:
        return self.level > LEV_MAY

    def copy(self, **changes) -> "Policy":
        return replace(self, **changes)


# --------------------------------------------------------------------------
# small pieces of libutil


def valid_hostname(name: str) -> bool:
    """valid_hostname(name, DONT_GRIPE)."""
    if not name or len(name) > 255:
        return False
    label_len = 0
    non_numeric = False
    n = len(name)
    for i, ch in enumerate(name):
        if (ch.isascii() and ch.isalnum()) or ch == "_":
            label_len += 1
            if label_len > 63:
                return False
            if not ch.isdigit():
                non_numeric = True
        elif ch == ".":
            if label_len == 0 or i + 1 == n:
                return False
            label_len = 0
        elif ch == "-":
            non_numeric = True
            label_len += 1
            if label_len == 1 or i + 1 == n or name[i + 1] == ".":
                return False
        else:
            return False
    return non_numeric


def to_ascii_domain(name: str) -> str | None:
    """midna_domain_to_ascii(): U-labels to A-labels (None when impossible)."""
    if name.isascii():
        return name.lower()
    try:
        return name.encode("idna").decode("ascii")
    except (UnicodeError, ValueError):
        return None


def valid_utf8_hostname(enable: bool, name: str) -> bool:
    if not name:
        return False
    if name.isascii():
        return valid_hostname(name)
    if not enable:
        return False
    a = to_ascii_domain(name)
    return a is not None and valid_hostname(a)


def mystrtok_all(text: str, seps: str = CHARS_COMMA_SP) -> list:
    for c in seps[1:]:
        text = text.replace(c, seps[0])
    return [t for t in text.split(seps[0]) if t]


def split_nameval(tok: str):
    """split_nameval(): (name, value) or raises ValueError(stock's error text)."""
    s = tok.lstrip(" \t\r\n")
    if not s:
        raise ValueError("missing attribute name")
    i = 0
    while i < len(s) and s[i] not in " \t\r\n=":
        i += 1
    name = s[:i]
    j = i
    while j < len(s) and s[j] in " \t\r\n":
        j += 1
    if j >= len(s) or s[j] != "=":
        raise ValueError("missing '=' after attribute name")
    return name, s[j + 1:].strip(" \t\r\n")


def hex_decode_colon(text: str) -> bytes | None:
    """hex_decode_opt(..., HEX_DECODE_FLAG_ALLOW_COLON)."""
    out = bytearray()
    i = 0
    n = len(text)
    if n == 0:
        return None
    while i < n:
        if i + 2 > n:
            return None
        pair = text[i:i + 2]
        try:
            out.append(int(pair, 16))
        except ValueError:
            return None
        if not all(c in "0123456789abcdefABCDEF" for c in pair):
            return None
        i += 2
        if i < n:
            if text[i] == ":":
                i += 1
                if i >= n:
                    return None
    return bytes(out)


def fingerprint_digests(value: str, delims: str, log) -> list:
    """tls_dane_add_fpt_digests(): the valid raw digests, warnings for the rest."""
    out = []
    for v in mystrtok_all(value, delims) if delims != "|" else [x for x in value.split("|") if x]:
        if len(v) > 3 * 64:
            log.warning("malformed fingerprint value: %.100s..." % v)
            continue
        raw = hex_decode_colon(v)
        if raw is None:
            log.warning("malformed fingerprint value: %.384s" % v)
            continue
        out.append(raw)
    return out


# --------------------------------------------------------------------------
# protocols and ciphers (tls_misc.c)

PROTO_SSLv2, PROTO_SSLv3, PROTO_TLSv1, PROTO_TLSv1_1, PROTO_TLSv1_2, PROTO_TLSv1_3 = (
    1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5)
KNOWN_PROTOCOLS = 0x3F
_PROTOCOL_TABLE = {"sslv2": PROTO_SSLv2, "sslv3": PROTO_SSLv3, "tlsv1": PROTO_TLSv1,
                   "tlsv1.1": PROTO_TLSv1_1, "tlsv1.2": PROTO_TLSv1_2, "tlsv1.3": PROTO_TLSv1_3}
_VERSION_TABLE = {"none": 0, "sslv3": 0x300, "tlsv1": 0x301, "tlsv1.1": 0x302,
                  "tlsv1.2": 0x303, "tlsv1.3": 0x304}


def _parse_version(tok: str):
    code = _VERSION_TABLE.get(tok.lower())
    if code is not None:
        return code
    try:
        v = int(tok, 16)
    except ValueError:
        return None
    if v < 0 or v > 0x7FFFFFFF:
        return None
    return v


def proto_mask_lims(plist: str):
    """tls_proto_mask_lims(): (exclude mask, floor, ceiling), None when invalid."""
    floor = ceiling = 0
    exclude = include = 0
    for tok in mystrtok_all(plist, CHARS_COMMA_SP + ":"):
        if tok.startswith(">="):
            v = _parse_version(tok[2:])
            if v is None:
                return None
            floor = v
        elif tok.startswith("<="):
            v = _parse_version(tok[2:])
            if v is None:
                return None
            ceiling = v
        elif tok.startswith("!"):
            code = _PROTOCOL_TABLE.get(tok[1:].lower())
            if code is None:
                return None
            exclude |= code
        else:
            code = _PROTOCOL_TABLE.get(tok.lower())
            if code is None:
                return None
            include |= code
    mask = (exclude | (KNOWN_PROTOCOLS & ~include)) if include else exclude
    return mask, floor, ceiling


GRADES = ("high", "medium", "low", "export", "null")


def cipher_list(config: TlsConfig, grade: str, exclusions: str):
    """tls_set_ciphers() text: (cipher string, None) or (None, warning text
    with ``%s`` for the server's namaddrport)."""
    g = grade.lower() if grade.isascii() else grade
    if g not in GRADES:
        return None, '%%s: invalid cipher grade: "%s"' % grade.replace("%", "%%")
    base = config.cipherlists.get(g) or ""
    parts = [base]
    for tok in mystrtok_all(exclusions or "", CHARS_COMMA_SP + ":"):
        if tok[0] in "!+-@":
            return None, ("%%s: invalid unary '!+-@' in cipher exclusion: %s"
                          % tok.replace("%", "%%"))
        parts.append("!" + tok)
    return ":".join(parts), None


# --------------------------------------------------------------------------


class PolicyResolver:
    """smtp_tls_policy_cache_query() for one process."""

    def __init__(self, config: TlsConfig, log=None, tlsa_lookup=None, dns=None) -> None:
        """``tlsa_lookup(host_rr, port, force)``: a DANE result (see
        :mod:`.dane`) or None for a lookup error; by default a
        :class:`.dane.TlsaResolver` (on ``dns``, a dns.lookup.Resolver,
        created on first use) when ``smtp_dns_support_level = dnssec``."""
        self.c = config
        self.log = log or _NullLog()
        self._tlsa_lookup = tlsa_lookup
        self._dns = dns
        self._cache: dict = {}

    @property
    def tlsa_lookup(self):
        if self._tlsa_lookup is None and self.c.dns_support_level.strip().lower() == "dnssec":
            from .config import LOG_DANE, LOG_VERBOSE
            from .dane import TlsaResolver
            self._tlsa_lookup = TlsaResolver(
                self._dns, self.log, log_dane=bool(self.c.log_mask & (LOG_DANE | LOG_VERBOSE)))
        return self._tlsa_lookup

    # -- the obsolete per-site table -------------------------------------
    def _site_lookup(self, tls: Policy, level: int, name: str, what: str) -> int:
        table = self.c.per_site_table
        title = getattr(table, "title", self.c.name("smtp_tls_per_site"))
        try:
            value = table.lookup(name)
        except Exception:
            self.log.warning('%s: %s "%s": per-site table lookup error' % (title, what, name))
            tls.status, tls.reason = "4.3.0", "Temporary lookup error"
            return LEV_INVALID
        if value is None:
            return level
        v = value.lower()
        if v == "none":
            if level <= LEV_MAY:
                level = LEV_NONE
        elif v == "may":
            if level < LEV_NONE:
                level = LEV_MAY
        elif v == "must_nopeermatch":
            if level < LEV_ENCRYPT:
                level = LEV_ENCRYPT
        elif v == "must":
            if level < LEV_VERIFY:
                level = LEV_VERIFY
        else:
            self.log.warning("%s: unknown TLS policy '%s' for %s %s" % (title, value, what, name))
            tls.status, tls.reason = "4.7.5", "client TLS configuration problem"
            return LEV_INVALID
        return level

    # -- smtp_tls_policy_maps ---------------------------------------------
    def _policy_lookup_one(self, tls: Policy, level: int, name: str, what: str) -> int:
        table = self.c.policy_table
        title = getattr(table, "title", self.c.name("smtp_tls_policy_maps"))
        where = '%s, %s "%s"' % (title, what, name)

        def invalid() -> int:
            tls.status, tls.reason = "4.7.5", "client TLS configuration problem"
            return LEV_INVALID

        try:
            value = table.lookup(name)
        except Exception:
            self.log.warning("%s: policy table lookup error" % where)
            return invalid()
        if value is None:
            return level
        toks = mystrtok_all(value)
        if not toks:
            self.log.warning("%s: invalid empty policy" % where)
            return invalid()
        level = level_lookup(toks[0])
        if level == LEV_INVALID:
            self.log.warning('%s: invalid security level "%s"' % (where, toks[0]))
            return invalid()
        if level < LEV_MAY:
            for tok in toks[1:]:
                self.log.warning('%s: ignoring attribute "%s" with TLS disabled' % (where, tok))
            return level
        for tok in toks[1:]:
            try:
                name_, val = split_nameval(tok)
            except ValueError as exc:
                self.log.warning('%s: malformed attribute/value pair "%s": %s' % (where, tok, exc))
                return invalid()
            key = name_.lower()
            if key == "ciphers":
                if not val:
                    self.log.warning('%s: attribute "%s" has empty value' % (where, name_))
                    return invalid()
                if tls.grade:
                    self.log.warning('%s: attribute "%s" is specified multiple times'
                                     % (where, name_))
                    return invalid()
                tls.grade = val
            elif key == "protocols":
                if getattr(tls, "_protocols_set", False):
                    self.log.warning('%s: attribute "%s" is specified multiple times'
                                     % (where, name_))
                    return invalid()
                tls.protocols = val
                object.__setattr__(tls, "_protocols_set", True)
            elif key == "servername":
                if getattr(tls, "_sni_set", False):
                    self.log.warning('%s: attribute "%s" is specified multiple times'
                                     % (where, name_))
                    return invalid()
                if valid_hostname(val):
                    tls.sni = val
                    object.__setattr__(tls, "_sni_set", True)
                else:
                    self.log.warning('%s: "%s=%s" specifies an invalid hostname'
                                     % (where, name_, val))
                    return invalid()
            elif key == "match":
                if not val:
                    self.log.warning('%s: attribute "%s" has empty value' % (where, name_))
                    return invalid()
                if level == LEV_FPRINT:
                    tls.fingerprints.extend(fingerprint_digests(val, "|", self.log))
                    object.__setattr__(tls, "_fpt_set", True)
                elif level in (LEV_VERIFY, LEV_SECURE):
                    tls.matchargv.extend(x for x in val.split(":") if x)
                    object.__setattr__(tls, "_match_set", True)
                else:
                    self.log.warning('%s: attribute "%s" invalid at security level "%s"'
                                     % (where, name_, level_name(level)))
                    return invalid()
            elif key == "exclude":
                if getattr(tls, "_excl_set", False):
                    self.log.warning('%s: attribute "%s" is specified multiple times'
                                     % (where, name_))
                    return invalid()
                tls.exclusions = val
                object.__setattr__(tls, "_excl_set", True)
            elif key == "tafile":
                if not must_pkix(level):
                    self.log.warning('%s: attribute "%s" invalid at security level "%s"'
                                     % (where, name_, level_name(level)))
                    return invalid()
                if not val:
                    self.log.warning('%s: attribute "%s" has empty value' % (where, name_))
                    return invalid()
                if not _check_tafile(val, self.log):
                    return invalid()
                tls.tafiles.append(val)
            elif key == "connection_reuse":
                if val.lower() == "yes":
                    tls.conn_reuse = True
                elif val.lower() == "no":
                    tls.conn_reuse = False
                else:
                    self.log.warning('%s: attribute "%s" has bad value: "%s"'
                                     % (where, name_, val))
                    return invalid()
            else:
                self.log.warning('%s: invalid attribute name: "%s"' % (where, name_))
                return invalid()
        return level

    def _policy_lookup(self, tls: Policy, level: int, name: str, what: str) -> int:
        if not valid_utf8_hostname(self.c.smtputf8_enable, name):
            return self._policy_lookup_one(tls, level, name, what)
        while True:
            level = self._policy_lookup_one(tls, level, name, what)
            if level != LEV_NOTFOUND:
                return level
            dot = name.find(".", 1)
            if dot < 0:
                return level
            name = name[dot:]

    # -- the public entry ----------------------------------------------------
    def resolve(self, dest: str, host: str, port: int, mx=None, host_rr=None) -> Policy:
        """The policy for destination ``dest`` (as written in the nexthop:
        ``example.com``, ``[mx.example.com]:587``), server ``host`` (MX or
        host name), TCP ``port`` (0: a UNIX-domain LMTP socket).

        ``mx``/``host_rr``: for DANE, objects with ``qname``, ``rname`` and
        ``dnssec_valid`` describing the MX record (None when no MX lookup
        was made) and the host address lookup."""
        key = (dest, host, port)
        pol = self._cache.get(key)
        if pol is None:
            pol = self._create(dest, host, port, mx, host_rr)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = pol
        return pol.copy()

    def _create(self, dest: str, host: str, port: int, mx, host_rr) -> Policy:
        c = self.c
        tls = Policy(level=c.level, conn_reuse=c.connection_reuse, protocols="")
        site_level = LEV_NOTFOUND
        if c.policy_table is not None:
            site_level = self._policy_lookup(tls, site_level, dest, "next-hop destination")
        elif c.per_site_table is not None:
            site_level = self._site_lookup(tls, site_level, dest, "next-hop destination")
            if site_level != LEV_INVALID and dest.lower() != host.lower():
                site_level = self._site_lookup(tls, site_level, host, "server hostname")
            if site_level == LEV_MAY and tls.level > LEV_MAY:
                site_level = tls.level
        if site_level == LEV_INVALID:
            tls.level = LEV_INVALID
            return tls
        if site_level != LEV_NOTFOUND:
            tls.level = site_level

        if dane_based(tls.level):
            self._dane_init(tls, dest, host, port, mx, host_rr)
        if tls.level == LEV_INVALID:
            return tls

        if tls.level > LEV_NONE and not getattr(tls, "_protocols_set", False):
            tls.protocols = c.protocols if tls.level == LEV_MAY else c.mandatory_protocols
        if tls.level > LEV_NONE and not getattr(tls, "_sni_set", False):
            if not c.servername or valid_hostname(c.servername):
                tls.sni = c.servername
            else:
                self.log.warning('"%s = %s" specifies an invalid hostname'
                                 % (c.name("smtp_tls_servername"), c.servername))
                return _mark_invalid(tls)
        self._set_cipher_grade(tls)

        if tls.level == LEV_FPRINT:
            if not getattr(tls, "_fpt_set", False) or not tls.fingerprints:
                if not tls.fingerprints:
                    if c.fingerprint_compat_note:
                        self.log.info("using backwards-compatible default setting "
                                      "%s=md5 to compute certificate fingerprints"
                                      % c.name("smtp_tls_fingerprint_digest"))
                    tls.fingerprints = fingerprint_digests(c.fingerprint_cert_match,
                                                           CHARS_COMMA_SP, self.log)
                if not tls.fingerprints:
                    self.log.warning("nexthop domain %s: configured at fingerprint security "
                                     "level, but with no fingerprints to match." % dest)
                    return _mark_invalid(tls)
        elif tls.level in (LEV_VERIFY, LEV_SECURE):
            if not getattr(tls, "_match_set", False):
                tls.matchargv = mystrtok_all(
                    c.verify_cert_match if tls.level == LEV_VERIFY else c.secure_cert_match,
                    CHARS_COMMA_SP + ":")
            if c.trust_anchor_file and not tls.tafiles:
                files = mystrtok_all(c.trust_anchor_file)
                for f in files:
                    if not _check_tafile(f, self.log):
                        return _mark_invalid(tls)
                tls.tafiles = files
        return tls

    def _set_cipher_grade(self, tls: Policy) -> None:
        c = self.c
        mand_exclude = also_exclude = ""
        if tls.level in (LEV_INVALID, LEV_NONE):
            return
        if tls.level == LEV_MAY:
            tls.grade = tls.grade or c.ciphers
        elif tls.level == LEV_ENCRYPT:
            tls.grade = tls.grade or c.mandatory_ciphers
            mand_exclude, also_exclude = c.mandatory_exclude_ciphers, "eNULL"
        else:
            tls.grade = tls.grade or c.mandatory_ciphers
            mand_exclude, also_exclude = c.mandatory_exclude_ciphers, "aNULL"

        def add(buf: str, s: str) -> str:
            if s:
                return buf + (" " if buf else "") + s
            return buf

        if not getattr(tls, "_excl_set", False):
            tls.exclusions = add(add("", c.exclude_ciphers), mand_exclude)
        tls.exclusions = add(tls.exclusions, also_exclude)

    # -- DANE (smtp_tls_policy.c dane_init) ------------------------------------
    def _dane_incompat(self, tls: Policy, errtype: str, text: str) -> None:
        if tls.level == LEV_DANE:
            tls.level = LEV_ENCRYPT if errtype == "cantauth" else LEV_MAY
            if errtype == "config":
                self.log.warning(text)
        else:
            if errtype == "config":
                self.log.warning(text)
                _mark_invalid(tls)
            else:
                tls.level = LEV_INVALID
                tls.status, tls.reason = "4.7.5", text

    def _dane_init(self, tls: Policy, dest: str, host: str, port: int, mx, host_rr) -> None:
        c = self.c
        lname = level_name(tls.level)
        if not port:
            self.log.warning('%s: the "dane" security level is invalid for delivery via '
                             'unix-domain sockets' % dest)
            _mark_invalid(tls)
            return
        if (not c.host_lookup_dns or c.dns_support_level.strip().lower() != "dnssec"
                or self.tlsa_lookup is None):
            self._dane_incompat(tls, "config", "%s: %s configured with dnssec lookups disabled"
                                % (dest, lname))
            return
        if c.prefix == "smtp" and c.ignore_mx_lookup_error:
            self._dane_incompat(tls, "config", "%s: %s configured with MX lookup errors ignored"
                                % (dest, lname))
            return
        if c.res_defnames or c.res_dnsrch:
            self._dane_incompat(tls, "config", "%s: dns resolver options incompatible with %s TLS"
                                % (dest, lname))
            return
        insecure_level = c.insecure_mx_level
        if mx is not None and not mx.dnssec_valid and (
                tls.level == LEV_DANE_ONLY or insecure_level <= LEV_MAY):
            self._dane_incompat(tls, "dest", "non DNSSEC destination")
            return
        if host_rr is None:
            from .dane import HostRR
            host_rr = HostRR(host, host, False)
        try:
            result = self.tlsa_lookup(host_rr, port, c.force_insecure_host_tlsa_lookup)
        except Exception as exc:           # stock: a lookup error (defer)
            self.log.warning("DANE TLSA lookup problem: %s" % exc)
            result = None
        if result is None:
            tls.level = LEV_INVALID
            tls.status, tls.reason = "4.7.5", "TLSA lookup error for %s:%u" % (host, port)
            return
        if result.notfound:
            self._dane_incompat(tls, "dest", "no TLSA records found")
            return
        if result.unusable or not result.usable:
            self._dane_incompat(tls, "cantauth", "TLSA records unusable")
            return
        if mx is not None and not mx.dnssec_valid:
            if insecure_level == LEV_ENCRYPT:
                self._dane_incompat(tls, "cantauth",
                                    "Verification not possible, MX RRset is insecure")
                return
            tls.level = LEV_HALF_DANE
        tls.tlsa = list(result.usable)
        tls.dane_base_domain = result.base_domain
        tls.matchargv = [result.base_domain]
        if mx is not None:
            if mx.qname.lower() == mx.rname.lower():
                tls.matchargv.append(mx.qname)
            else:
                tls.matchargv += [mx.rname, mx.qname]


def _mark_invalid(tls: Policy) -> Policy:
    tls.level = LEV_INVALID
    tls.status, tls.reason = "4.7.5", "client TLS configuration problem"
    return tls


def _check_tafile(path: str, log) -> bool:
    """tls_dane_load_trustfile(): the file must be readable and hold at least
    one certificate or public key (PEM)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        log.warning("error opening trust anchor file: %s: %s" % (path, exc.strerror or exc))
        return False
    if b"-----BEGIN CERTIFICATE-----" not in data and b"-----BEGIN PUBLIC KEY-----" not in data:
        log.warning("error reading: %s: no trust anchors found" % path)
        return False
    return True
