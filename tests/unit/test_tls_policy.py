"""TLS policy resolution, protocol lists, cipher grades and name matching (pure code)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from postfix_smtp.config.params import ConfigError, Params  # noqa: E402
from postfix_smtp.tls import config as C  # noqa: E402
from postfix_smtp.tls import names as N  # noqa: E402
from postfix_smtp.tls import policy as P  # noqa: E402


class Log:
    def __init__(self):
        self.lines = []

    def info(self, t):
        self.lines.append("info: " + t)

    def warning(self, t):
        self.lines.append("warning: " + t)


class Table:
    def __init__(self, data, title="smtp_tls_policy_maps", fail=False):
        self.data = data
        self.title = title
        self.fail = fail
        self.keys = []

    def lookup(self, key):
        self.keys.append(key)
        if self.fail:
            raise RuntimeError("table down")
        return self.data.get(key.lower())


def resolver(level="may", policy=None, per_site=None, **kw):
    cfg = C.TlsConfig(level=C.level_lookup(level), **kw)
    cfg.policy_table = policy
    cfg.per_site_table = per_site
    log = Log()
    return P.PolicyResolver(cfg, log), log


def params(**main):
    return Params(dict(main), [], config_dir="/nonexistent", process_name="smtp",
                  service_name="smtp")


# --- the global level ------------------------------------------------------------

@pytest.mark.parametrize("main,level", [
    ({}, "none"),
    ({"smtp_tls_security_level": "may"}, "may"),
    ({"smtp_tls_security_level": "Secure"}, "secure"),
    ({"smtp_use_tls": "yes"}, "may"),
    ({"smtp_enforce_tls": "yes"}, "verify"),
    ({"smtp_enforce_tls": "yes", "smtp_tls_enforce_peername": "no"}, "encrypt"),
    ({"smtp_enforce_tls": "yes", "smtp_tls_security_level": "none"}, "none"),
])
def test_global_level_and_obsolete_controls(main, level):
    assert C.level_name(C.TlsConfig.from_params(params(**main)).level) == level


def test_invalid_global_level_is_fatal():
    with pytest.raises(ConfigError, match='invalid tls security level: "halfdane"'):
        C.TlsConfig.from_params(params(smtp_tls_security_level="halfdane"))


def test_lmtp_names():
    cfg = C.TlsConfig.from_params(Params({"lmtp_tls_security_level": "encrypt"}, [],
                                         config_dir="/x", process_name="lmtp",
                                         service_name="lmtp", prefix="lmtp"), "lmtp")
    assert cfg.level == C.LEV_ENCRYPT and cfg.name("smtp_tls_wrappermode") == \
        "lmtp_tls_wrappermode"


def test_loglevel_words():
    assert C.log_mask("1") == C.LOG_SUMMARY
    assert C.log_mask("2") & C.LOG_CACHE
    assert C.log_mask("routine, untrusted") == C.LOG_SUMMARY | C.LOG_UNTRUSTED


# --- per-level defaults ------------------------------------------------------------

def test_may_defaults():
    r, _ = resolver("may", protocols="!SSLv2", ciphers="high", exclude_ciphers="RC4")
    p = r.resolve("example.com", "mx.example.com", 25)
    assert (p.level, p.protocols, p.grade, p.exclusions) == (C.LEV_MAY, "!SSLv2", "high", "RC4")


def test_mandatory_levels_exclusions():
    r, _ = resolver("encrypt", mandatory_protocols=">=TLSv1.2", mandatory_ciphers="high",
                    exclude_ciphers="RC4", mandatory_exclude_ciphers="3DES")
    p = r.resolve("example.com", "mx", 25)
    assert (p.protocols, p.grade, p.exclusions) == (">=TLSv1.2", "high", "RC4 3DES eNULL")
    r, _ = resolver("verify")
    p = r.resolve("example.com", "mx", 25)
    assert p.exclusions == "aNULL" and p.matchargv == ["hostname"]
    r, _ = resolver("secure")
    assert r.resolve("example.com", "mx", 25).matchargv == ["nexthop", "dot-nexthop"]


def test_fingerprint_needs_fingerprints():
    r, log = resolver("fingerprint")
    p = r.resolve("example.com", "mx", 25)
    assert p.invalid and (p.status, p.reason) == ("4.7.5", "client TLS configuration problem")
    assert log.lines == ["warning: nexthop domain example.com: configured at fingerprint "
                         "security level, but with no fingerprints to match."]
    r, log = resolver("fingerprint", fingerprint_cert_match="AB:CD:EF, 0123 zz")
    p = r.resolve("example.com", "mx", 25)
    assert p.fingerprints == [b"\xab\xcd\xef", b"\x01\x23"]
    assert log.lines == ["warning: malformed fingerprint value: zz"]


def test_invalid_servername():
    r, log = resolver("may", servername="bad..name")
    assert r.resolve("d", "h", 25).invalid
    assert log.lines == ['warning: "smtp_tls_servername = bad..name" specifies an invalid '
                         'hostname']


# --- smtp_tls_policy_maps ------------------------------------------------------------

def test_policy_parent_domain_lookup():
    t = Table({".example.com": "encrypt protocols=>=TLSv1.2 ciphers=high exclude=3DES"})
    r, _ = resolver("may", policy=t)
    p = r.resolve("a.b.example.com", "mx", 25)
    assert t.keys == ["a.b.example.com", ".b.example.com", ".example.com"]
    assert (p.level, p.protocols, p.grade, p.exclusions) == (
        C.LEV_ENCRYPT, ">=TLSv1.2", "high", "3DES eNULL")


def test_policy_bracketed_destination_single_lookup():
    t = Table({})
    r, _ = resolver("may", policy=t)
    assert r.resolve("[mx.example.com]:587", "mx.example.com", 587).level == C.LEV_MAY
    assert t.keys == ["[mx.example.com]:587"]


def test_policy_match_and_tafile_and_reuse(tmp_path):
    ta = tmp_path / "ta.pem"
    ta.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    t = Table({"example.com": "secure match=nexthop:.example.net, match=mx.example.org "
                              "tafile=%s connection_reuse=yes servername=sni.example" % ta})
    r, _ = resolver("may", policy=t)
    p = r.resolve("example.com", "mx", 25)
    assert p.level == C.LEV_SECURE
    assert p.matchargv == ["nexthop", ".example.net", "mx.example.org"]
    assert p.tafiles == [str(ta)] and p.conn_reuse and p.sni == "sni.example"
    t = Table({"example.com": "fingerprint match=AA:BB|CC:DD"})
    r, _ = resolver("may", policy=t)
    assert r.resolve("example.com", "mx", 25).fingerprints == [b"\xaa\xbb", b"\xcc\xdd"]


@pytest.mark.parametrize("value,warning", [
    ("", 'invalid empty policy'),
    ("bogus", 'invalid security level "bogus"'),
    ("may ciphers=high ciphers=low", 'attribute "ciphers" is specified multiple times'),
    ("may ciphers=", 'attribute "ciphers" has empty value'),
    ("may protocols=x protocols=y", 'attribute "protocols" is specified multiple times'),
    ("may match=x", 'attribute "match" invalid at security level "may"'),
    ("encrypt tafile=/x", 'attribute "tafile" invalid at security level "encrypt"'),
    ("may servername=-bad", '"servername=-bad" specifies an invalid hostname'),
    ("may connection_reuse=maybe", 'attribute "connection_reuse" has bad value: "maybe"'),
    ("may foo=bar", 'invalid attribute name: "foo"'),
    ("may foo", 'malformed attribute/value pair "foo": missing \'=\' after attribute name'),
])
def test_policy_errors(value, warning):
    r, log = resolver("may", policy=Table({"example.com": value}))
    p = r.resolve("example.com", "mx", 25)
    assert p.invalid and p.reason == "client TLS configuration problem"
    assert log.lines == ['warning: smtp_tls_policy_maps, next-hop destination "example.com": '
                         + warning]


def test_policy_none_ignores_attributes():
    r, log = resolver("encrypt", policy=Table({"example.com": "none ciphers=high"}))
    assert r.resolve("example.com", "mx", 25).level == C.LEV_NONE
    assert log.lines == ['warning: smtp_tls_policy_maps, next-hop destination "example.com": '
                         'ignoring attribute "ciphers=high" with TLS disabled']


def test_policy_table_error():
    r, log = resolver("may", policy=Table({}, fail=True))
    p = r.resolve("example.com", "mx", 25)
    assert p.invalid and p.status == "4.7.5"
    assert log.lines == ['warning: smtp_tls_policy_maps, next-hop destination "example.com": '
                         'policy table lookup error']


# --- smtp_tls_per_site --------------------------------------------------------------

@pytest.mark.parametrize("glob,dest,host,level", [
    ("none", "MUST", None, "verify"),
    ("none", "MUST_NOPEERMATCH", None, "encrypt"),
    ("verify", "MAY", None, "verify"),          # global overrides a per-site MAY
    ("verify", "NONE", None, "none"),           # a specific NONE wins
    ("may", "NONE", "MAY", "none"),             # NONE + MAY -> NONE
    ("none", "MAY", "MUST", "verify"),
    ("encrypt", None, None, "encrypt"),
])
def test_per_site(glob, dest, host, level):
    data = {}
    if dest:
        data["example.com"] = dest
    if host:
        data["mx.example.com"] = host
    r, _ = resolver(glob, per_site=Table(data, "smtp_tls_per_site"))
    assert C.level_name(r.resolve("example.com", "mx.example.com", 25).level) == level


def test_per_site_errors():
    r, log = resolver("may", per_site=Table({"example.com": "SOMETIMES"}, "smtp_tls_per_site"))
    p = r.resolve("example.com", "mx", 25)
    assert p.invalid and p.status == "4.7.5"
    assert log.lines == ["warning: smtp_tls_per_site: unknown TLS policy 'SOMETIMES' for "
                         "next-hop destination example.com"]
    r, log = resolver("may", per_site=Table({}, "smtp_tls_per_site", fail=True))
    p = r.resolve("example.com", "mx", 25)
    assert (p.status, p.reason) == ("4.3.0", "Temporary lookup error")


# --- DANE without DNSSEC ----------------------------------------------------------

def test_dane_without_dnssec():
    r, log = resolver("dane")
    assert r.resolve("example.com", "mx", 25).level == C.LEV_MAY
    assert log.lines == ["warning: example.com: dane configured with dnssec lookups disabled"]
    r, log = resolver("dane-only")
    p = r.resolve("example.com", "mx", 25)
    assert p.invalid and p.reason == "client TLS configuration problem"


# --- protocols, ciphers -------------------------------------------------------------

def test_protocol_lists():
    assert P.proto_mask_lims(">=TLSv1.2") == (0, 0x303, 0)
    assert P.proto_mask_lims("!SSLv2, !SSLv3") == (P.PROTO_SSLv2 | P.PROTO_SSLv3, 0, 0)
    assert P.proto_mask_lims("TLSv1.2:TLSv1.3")[0] == 0x3F & ~(P.PROTO_TLSv1_2 | P.PROTO_TLSv1_3)
    assert P.proto_mask_lims("<=tlsv1.2") == (0, 0, 0x303)
    assert P.proto_mask_lims("TLSv9") is None and P.proto_mask_lims(">=bogus") is None


def test_cipher_lists():
    c = C.TlsConfig()
    assert P.cipher_list(c, "HIGH", "aNULL, 3DES") == (
        "aNULL:-aNULL:HIGH:@STRENGTH:!aNULL:!3DES", None)
    assert P.cipher_list(c, "strong", "")[0] is None
    assert P.cipher_list(c, "medium", "!RC4")[1] % "h[a]:25" == \
        "h[a]:25: invalid unary '!+-@' in cipher exclusion: !RC4"


def test_valid_hostname():
    assert P.valid_hostname("mx.example.com") and P.valid_hostname("a_b.example")
    for bad in ("", "1.2.3.4", "-a.example", "a-.example", "a..b", "a.", "a b"):
        assert not P.valid_hostname(bad), bad


# --- certificate names ------------------------------------------------------------

@pytest.mark.parametrize("presented,ref,ok", [
    ("mx.example.com", "mx.example.com", True),
    ("MX.Example.COM", "mx.example.com", True),
    ("*.example.com", "mx.example.com", True),
    ("*.example.com", "a.mx.example.com", False),
    ("*.example.com", "example.com", False),
    ("*.com", "example.com", False),
    ("m*.example.com", "mx.example.com", False),     # no partial wildcards
    ("mx.example.com", ".example.com", True),
    ("a.b.example.com", ".example.com", True),
    ("example.com", ".example.com", False),
    ("*.example.com", ".example.com", True),
    ("xexample.com", ".example.com", False),
])
def test_name_matching(presented, ref, ok):
    assert N.name_matches(presented, ref) is ok


def test_reference_names_and_cn_fallback():
    refs = N.reference_names(["nexthop", "dot-nexthop", "hostname", ".x.example", ".", "b\u00fccher.example"],
                             "example.com", "mx.example.net")
    assert refs == ["example.com", ".example.com", "mx.example.net", ".x.example",
                    "xn--bcher-kva.example"]
    assert N.host_matches([], ["mx.example.net"], ["mx.example.net"])
    assert not N.host_matches(["other.example"], ["mx.example.net"], ["mx.example.net"])
