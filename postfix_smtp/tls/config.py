"""The TLS parameters of one smtp(8)/lmtp(8) process, read once at start-up.

``TlsConfig.from_params(params)`` reads every ``smtp_tls_*`` parameter under
the personality's name (``lmtp_tls_*`` for lmtp) and the global ``tls_*``
ones.  An invalid global security level is a fatal configuration error, as
in stock (``invalid tls security level: "X"``).  Pure: no OpenSSL here.
"""

from __future__ import annotations

from ..valueclass import dataclass, field

from ..config.params import ConfigError

# Security levels (src/tls/tls.h).  The integers order them as stock does.
LEV_INVALID = -2
LEV_NOTFOUND = -1
LEV_NONE = 0
LEV_MAY = 1
LEV_ENCRYPT = 2
LEV_FPRINT = 3
LEV_HALF_DANE = 4
LEV_DANE = 5
LEV_DANE_ONLY = 6
LEV_VERIFY = 7
LEV_SECURE = 8

LEVEL_NAMES = {
    LEV_NONE: "none", LEV_MAY: "may", LEV_ENCRYPT: "encrypt", LEV_FPRINT: "fingerprint",
    LEV_HALF_DANE: "halfdane", LEV_DANE: "dane", LEV_DANE_ONLY: "dane-only",
    LEV_VERIFY: "verify", LEV_SECURE: "secure", LEV_INVALID: "invalid",
}
_LEVEL_CODES = {v: k for k, v in LEVEL_NAMES.items() if k >= LEV_NONE and k != LEV_HALF_DANE}


def level_lookup(name: str) -> int:
    """tls_level_lookup(): case-insensitive; "halfdane" is output only."""
    return _LEVEL_CODES.get(name.lower() if name.isascii() else name, LEV_INVALID)


def level_name(level: int) -> str:
    return LEVEL_NAMES.get(level, "unknown")


def tls_required(level: int) -> bool:
    return level > LEV_MAY


def must_match(level: int) -> bool:
    return level > LEV_ENCRYPT


def must_pkix(level: int) -> bool:
    return level >= LEV_VERIFY


def dane_based(level: int) -> bool:
    return LEV_HALF_DANE <= level <= LEV_DANE_ONLY


# tls_log_mask(): smtp_tls_loglevel words and numbers.
LOG_NONE = 0
LOG_SUMMARY = 1 << 0
LOG_UNTRUSTED = 1 << 1
LOG_PEERCERT = 1 << 2
LOG_CERTMATCH = 1 << 3
LOG_VERBOSE = 1 << 4
LOG_CACHE = 1 << 5
LOG_DEBUG = 1 << 6
LOG_TLSPKTS = 1 << 7
LOG_ALLPKTS = 1 << 8
LOG_SESSTKT = 1 << 9
LOG_DANE = 1 << 10
_LOG_2 = LOG_SUMMARY | LOG_VERBOSE | LOG_CACHE | LOG_DEBUG
_LOG_3 = _LOG_2 | LOG_TLSPKTS
_LOG_4 = _LOG_3 | LOG_ALLPKTS
_LOG_TABLE = {
    "0": LOG_NONE, "none": LOG_NONE, "1": LOG_SUMMARY, "routine": LOG_SUMMARY,
    "2": _LOG_2, "debug": _LOG_2, "3": _LOG_3, "ssl-expert": _LOG_3,
    "4": _LOG_4, "ssl-developer": _LOG_4, "5": _LOG_4, "6": _LOG_4, "7": _LOG_4,
    "8": _LOG_4, "9": _LOG_4, "summary": LOG_SUMMARY, "untrusted": LOG_UNTRUSTED,
    "peercert": LOG_PEERCERT, "certmatch": LOG_CERTMATCH, "verbose": LOG_VERBOSE,
    "cache": LOG_CACHE, "dane": LOG_DANE, "ssl-debug": LOG_DEBUG,
    "ssl-handshake-packet-dump": LOG_TLSPKTS,
    "ssl-session-packet-dump": LOG_TLSPKTS | LOG_ALLPKTS,
}


def log_mask(value: str, param: str = "smtp_tls_loglevel", warn=None) -> int:
    """name_mask_opt(..., NAME_MASK_ANY_CASE | NAME_MASK_RETURN)."""
    mask = 0
    for word in value.replace(",", " ").replace("\t", " ").replace("|", " ").split():
        bits = _LOG_TABLE.get(word.lower())
        if bits is None:
            if warn is not None:
                warn("unknown %s value \"%s\" in \"%s\"" % (param, word, value))
            continue
        mask |= bits
    return mask


def _compat_below_3_6(p) -> bool:
    from ..config.params import _compat_level   # the same parser Params uses
    try:
        return _compat_level(p.get("compatibility_level")) < _compat_level("3.6")
    except ConfigError:
        return False


@dataclass
class TlsConfig:
    prefix: str = "smtp"                       # "smtp" or "lmtp": parameter names in messages
    service: str = "smtp"                      # master.cf service name (session cache key)
    level: int = LEV_NONE                      # the global level
    policy_maps: str = ""
    per_site: str = ""
    protocols: str = ">=TLSv1"
    mandatory_protocols: str = ">=TLSv1"
    ciphers: str = "medium"
    mandatory_ciphers: str = "medium"
    exclude_ciphers: str = ""
    mandatory_exclude_ciphers: str = ""
    servername: str = ""
    verify_cert_match: str = "hostname"
    secure_cert_match: str = "nexthop, dot-nexthop"
    fingerprint_cert_match: str = ""
    fingerprint_digest: str = "sha256"
    fingerprint_compat_note: bool = False      # "using backwards-compatible default setting ..."
    trust_anchor_file: str = ""
    connection_reuse: bool = False
    wrappermode: bool = False
    starttls_timeout: float = 300.0
    loglevel: str = "0"
    log_mask: int = 0
    note_starttls_offer: bool = False
    block_early_mail_reply: bool = False
    CAfile: str = ""
    CApath: str = ""
    cert_file: str = ""
    key_file: str = ""
    dcert_file: str = ""
    dkey_file: str = ""
    eccert_file: str = ""
    eckey_file: str = ""
    chain_files: str = ""
    verify_depth: int = 9
    session_cache_database: str = ""
    session_cache_timeout: float = 3600.0
    tlsmgr_service: str = "tlsmgr"
    queue_directory: str = ""
    cipherlists: dict = field(default_factory=lambda: {
        "high": "aNULL:-aNULL:HIGH:@STRENGTH",
        "medium": "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH",
        "low": "aNULL:-aNULL:HIGH:MEDIUM:LOW:+RC4:@STRENGTH",
        "export": "aNULL:-aNULL:HIGH:MEDIUM:LOW:EXPORT:+RC4:@STRENGTH",
        "null": "eNULL:!aNULL",
    })
    append_default_CA: bool = False
    eecdh_curves: str = "X25519 X448 prime256v1 secp521r1 secp384r1"
    fast_shutdown: bool = True
    legacy_pkey_fingerprints: bool = False
    dns_support_level: str = ""
    ignore_mx_lookup_error: bool = False
    dane_insecure_mx_policy: str = "may"
    force_insecure_host_tlsa_lookup: bool = False
    insecure_mx_level: int = LEV_MAY           # smtp_tls_insecure_mx_policy (LEV_NONE for lmtp)
    host_lookup_dns: bool = True               # "dns" in smtp_host_lookup
    res_defnames: bool = False                 # smtp_dns_resolver_options
    res_dnsrch: bool = False
    smtputf8_enable: bool = True
    myhostname: str = ""
    min_backoff_time: float = 300.0
    params: object = None                      # the Params these came from (for tables)
    # set by the caller: maps objects (anything with .lookup(key) -> str | None,
    # raising on a table error) for smtp_tls_policy_maps / smtp_tls_per_site
    policy_table: object = None
    per_site_table: object = None

    def name(self, param: str) -> str:
        """A parameter's name under this personality (smtp_x -> lmtp_x)."""
        if self.prefix != "smtp" and param.startswith("smtp_"):
            return self.prefix + param[4:]
        return param

    @property
    def in_use(self) -> bool:
        """Whether stock would initialise its TLS engine (smtp_tls_ctx != 0)."""
        return bool(self.level > LEV_NONE or self.policy_maps.strip() or self.per_site.strip())

    @classmethod
    def from_params(cls, p, personality: str = "smtp", service: str = "") -> "TlsConfig":
        s = p.sget
        prefix = "lmtp" if personality == "lmtp" else "smtp"
        raw_level = s("smtp_tls_security_level").strip()
        if raw_level:
            level = level_lookup(raw_level)
            if level == LEV_INVALID:
                raise ConfigError('invalid tls security level: "%s"' % raw_level)
        elif p.sbool("smtp_enforce_tls"):
            level = LEV_VERIFY if p.sbool("smtp_tls_enforce_peername") else LEV_ENCRYPT
        else:
            level = LEV_MAY if p.sbool("smtp_use_tls") else LEV_NONE
        digest_param = p.p("smtp_tls_fingerprint_digest")
        # mail_conf_lookup() == 0: not set in main.cf nor with -o
        compat_note = _compat_below_3_6(p) and getattr(p, "_raw", {}).get(digest_param) is None
        loglevel = s("smtp_tls_loglevel")
        insecure_mx_level = LEV_NONE
        if prefix == "smtp":
            raw_mx = p.get("smtp_tls_dane_insecure_mx_policy")
            insecure_mx_level = level_lookup(raw_mx.strip())
            if insecure_mx_level not in (LEV_MAY, LEV_ENCRYPT, LEV_DANE):
                raise ConfigError('invalid %s: "%s"' % ("smtp_tls_dane_insecure_mx_policy",
                                                        raw_mx))
        host_lookup = [w.lower() for w in p.slist("smtp_host_lookup")]
        res_opts = [w.lower() for w in p.slist("smtp_dns_resolver_options")]
        dns_support = s("smtp_dns_support_level").strip().lower()
        if not dns_support and p.get_bool("disable_dns_lookups"):
            dns_support = "disabled"
        return cls(
            prefix=prefix,
            service=service or p.get("service_name") or prefix,
            level=level,
            policy_maps=s("smtp_tls_policy_maps"),
            per_site=s("smtp_tls_per_site"),
            protocols=s("smtp_tls_protocols"),
            mandatory_protocols=s("smtp_tls_mandatory_protocols"),
            ciphers=s("smtp_tls_ciphers"),
            mandatory_ciphers=s("smtp_tls_mandatory_ciphers"),
            exclude_ciphers=s("smtp_tls_exclude_ciphers"),
            mandatory_exclude_ciphers=s("smtp_tls_mandatory_exclude_ciphers"),
            servername=s("smtp_tls_servername"),
            verify_cert_match=s("smtp_tls_verify_cert_match"),
            secure_cert_match=s("smtp_tls_secure_cert_match"),
            fingerprint_cert_match=s("smtp_tls_fingerprint_cert_match"),
            fingerprint_digest=s("smtp_tls_fingerprint_digest"),
            fingerprint_compat_note=compat_note,
            trust_anchor_file=s("smtp_tls_trust_anchor_file"),
            connection_reuse=p.sbool("smtp_tls_connection_reuse"),
            wrappermode=p.sbool("smtp_tls_wrappermode"),
            starttls_timeout=p.stime("smtp_starttls_timeout"),
            loglevel=loglevel,
            log_mask=log_mask(loglevel, p.p("smtp_tls_loglevel")),
            note_starttls_offer=p.sbool("smtp_tls_note_starttls_offer"),
            block_early_mail_reply=p.sbool("smtp_tls_block_early_mail_reply"),
            CAfile=s("smtp_tls_CAfile"),
            CApath=s("smtp_tls_CApath"),
            cert_file=s("smtp_tls_cert_file"),
            key_file=s("smtp_tls_key_file"),
            dcert_file=s("smtp_tls_dcert_file"),
            dkey_file=s("smtp_tls_dkey_file"),
            eccert_file=s("smtp_tls_eccert_file"),
            eckey_file=s("smtp_tls_eckey_file"),
            chain_files=s("smtp_tls_chain_files"),
            verify_depth=p.sint("smtp_tls_scert_verifydepth"),
            session_cache_database=s("smtp_tls_session_cache_database"),
            session_cache_timeout=p.stime("smtp_tls_session_cache_timeout"),
            tlsmgr_service=p.get("tlsmgr_service_name") or "tlsmgr",
            queue_directory=p.get("queue_directory"),
            cipherlists={g: p.get("tls_%s_cipherlist" % g)
                         for g in ("high", "medium", "low", "export", "null")},
            append_default_CA=p.get_bool("tls_append_default_CA"),
            eecdh_curves=p.get("tls_eecdh_auto_curves"),
            fast_shutdown=p.get_bool("tls_fast_shutdown_enable"),
            legacy_pkey_fingerprints=p.get_bool("tls_legacy_public_key_fingerprints"),
            dns_support_level=s("smtp_dns_support_level"),
            ignore_mx_lookup_error=p.get_bool("ignore_mx_lookup_error"),
            dane_insecure_mx_policy=s("smtp_tls_dane_insecure_mx_policy"),
            force_insecure_host_tlsa_lookup=p.sbool("smtp_tls_force_insecure_host_tlsa_lookup"),
            insecure_mx_level=insecure_mx_level,
            host_lookup_dns=dns_support != "disabled" and "dns" in host_lookup,
            res_defnames="res_defnames" in res_opts,
            res_dnsrch="res_dnsrch" in res_opts,
            smtputf8_enable=p.get_bool("smtputf8_enable"),
            myhostname=p.get("myhostname"),
            min_backoff_time=p.get_time("minimal_backoff_time"),
            params=p,
        )

    def ensure_tables(self, log=None) -> None:
        """Open the policy / per-site tables once (on first use)."""
        if getattr(self, "_tables_open", False):
            return
        self._tables_open = True
        if self.params is not None and self.policy_table is None and self.per_site_table is None:
            self.open_tables(self.params, log)

    def open_tables(self, params, log=None, ctx=None) -> None:
        """Open smtp_tls_policy_maps / smtp_tls_per_site with postfix_smtp.maps.

        As smtp_tls_list_init(): the per-site table is ignored (with a
        warning) when policy maps are set.
        """
        if self.policy_maps.strip():
            self.policy_table = _open(self.policy_maps, params, self.name("smtp_tls_policy_maps"),
                                      log, ctx)
            if self.per_site.strip() and log is not None:
                log.warning("%s ignored when %s is not empty." % (
                    self.name("smtp_tls_per_site"), self.name("smtp_tls_policy_maps")))
        elif self.per_site.strip():
            self.per_site_table = _open(self.per_site, params, self.name("smtp_tls_per_site"), log,
                                        ctx)


class _Titled:
    """A table list with stock's title (the parameter name) for messages."""

    def __init__(self, maps, title: str) -> None:
        self.maps = maps
        self.title = title

    def lookup(self, key: str):
        return self.maps.lookup(key)


def _open(spec: str, params, title: str, log, ctx=None):
    from ..maps import open_maps          # lazily: only when a table is configured
    return _Titled(open_maps(spec, params, log=log, title=title, ctx=ctx), title)
