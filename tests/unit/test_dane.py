"""DANE: TLSA lookups (AD-bit trust), dane_init() fallbacks, DNSSEC status of
MX and address records, TLSA matching in the handshake."""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
import threading

import pytest

pytest.importorskip("dns.message")

from postfix_smtp import destinations as D  # noqa: E402
from postfix_smtp.config.params import ConfigError, Params  # noqa: E402
from postfix_smtp.dns import lookup, resolvconf  # noqa: E402
from postfix_smtp.testing.dnsserver import DnsTestServer, tlsa_rdata  # noqa: E402
from postfix_smtp.tls import config as C  # noqa: E402
from postfix_smtp.tls import dane as DN  # noqa: E402
from postfix_smtp.tls import policy as P  # noqa: E402

SHA = "ab" * 32


class Log:
    def __init__(self):
        self.lines = []

    def info(self, t):
        self.lines.append("info: " + t)

    def warning(self, t):
        self.lines.append("warning: " + t)


def conf_for(srv):
    c = resolvconf.parse("options timeout:1 attempts:1\n")
    c.nameservers = [srv.address]
    return c


@pytest.fixture
def srv():
    s = DnsTestServer(max_lifetime=60).start()
    yield s
    s.stop()


def dns_resolver(srv, log=None):
    return lookup.Resolver(conf=lambda: conf_for(srv),
                           warn=(log.warning if log else None))


# --- dns_lookup of TLSA -------------------------------------------------------------

def test_tlsa_lookup_ad_bit_and_do_bit(srv):
    srv.add_tlsa("mx.sec.test", 25, "3 1 1 " + SHA)
    srv.add_tlsa("mx.insec.test", 25, "3 1 1 " + SHA, secure=False)
    r = dns_resolver(srv)
    res = r.lookup("_25._tcp.mx.sec.test", lookup.T_TLSA, dnssec=True)
    assert res.status == lookup.DNS_OK
    rr = res.rrs[0]
    assert rr.dnssec_valid and rr.raw == bytes([3, 1, 1]) + bytes.fromhex(SHA)
    q = srv.queries_for("_25._tcp.mx.sec.test", "TLSA")[-1]
    assert q.dnssec_ok and q.flags & 0x0020            # DO bit, AD in the query
    res = r.lookup("_25._tcp.mx.insec.test", lookup.T_TLSA, dnssec=True)
    assert res.status == lookup.DNS_OK and not res.rrs[0].dnssec_valid
    # without the DO bit the server does not set AD
    res = r.lookup("_25._tcp.mx.sec.test", lookup.T_TLSA, dnssec=False)
    assert not res.rrs[0].dnssec_valid


# --- tls_dane_resolve ------------------------------------------------------------------

def test_resolve_secure_host(srv):
    srv.add_tlsa("mx.sec.test", 25, "3 1 1 " + SHA, "2 0 1 " + SHA)
    log = Log()
    t = DN.TlsaResolver(dns_resolver(srv), log, log_dane=True)
    d = t.resolve(DN.HostRR("mx.sec.test", "mx.sec.test", True), 25, False)
    assert not d.notfound and not d.unusable
    assert d.base_domain == "mx.sec.test"
    assert sorted(d.usable) == sorted([(3, 1, 1, bytes.fromhex(SHA)),
                                       (2, 0, 1, bytes.fromhex(SHA))])
    assert "info: DNSSEC-signed TLSA record: _25._tcp.mx.sec.test: 3 1 1 " + SHA.upper() \
        in log.lines


def test_insecure_host_no_lookup_unless_forced(srv):
    srv.add_tlsa("mx.sec.test", 25, "3 1 1 " + SHA)
    t = DN.TlsaResolver(dns_resolver(srv), Log())
    d = t.resolve(DN.HostRR("mx.sec.test", "mx.sec.test", False), 25, False)
    assert d.notfound
    assert not srv.queries_for("_25._tcp.mx.sec.test")
    d = t.resolve(DN.HostRR("mx.sec.test", "mx.sec.test", False), 25, True)
    assert not d.notfound and d.usable


def test_unsigned_tlsa_is_not_found(srv):
    srv.add_tlsa("mx.sec.test", 25, "3 1 1 " + SHA, secure=False)
    t = DN.TlsaResolver(dns_resolver(srv), Log())
    d = t.resolve(DN.HostRR("mx.sec.test", "mx.sec.test", True), 25, False)
    assert d.notfound


def test_unusable_records(srv):
    srv.add_tlsa("mx.sec.test", 25, "1 1 1 " + SHA, "3 1 255 " + SHA)
    log = Log()
    t = DN.TlsaResolver(dns_resolver(srv), log)
    d = t.resolve(DN.HostRR("mx.sec.test", "mx.sec.test", True), 25, False)
    assert d.unusable and not d.notfound and not d.usable
    assert ("warning: _25._tcp.mx.sec.test unsupported TLSA certificate usage: 1 1 1 "
            + SHA.upper()) in log.lines
    assert ("warning: _25._tcp.mx.sec.test reserved private-use matching type: 3 1 255 "
            + SHA.upper()) in log.lines


def test_lookup_error_and_nxdomain(srv):
    srv.fail("_25._tcp.mx.bad.test", "SERVFAIL")
    log = Log()
    t = DN.TlsaResolver(dns_resolver(srv), log)
    assert t.resolve(DN.HostRR("mx.bad.test", "mx.bad.test", True), 25, False) is None
    assert log.lines[-1].startswith("warning: DANE TLSA lookup problem: Host or domain name "
                                    "not found. Name service error for "
                                    "name=_25._tcp.mx.bad.test type=TLSA: Host not found, "
                                    "try again")
    d = t.resolve(DN.HostRR("mx.none.test", "mx.none.test", True), 25, False)
    assert d.notfound


def test_cname_rname_first_then_qname(srv):
    srv.add("alias.sec.test", "CNAME", "real.sec.test.")
    srv.secure("alias.sec.test")
    srv.add_tlsa("alias.sec.test", 25, "3 1 1 " + SHA)
    t = DN.TlsaResolver(dns_resolver(srv), Log())
    d = t.resolve(DN.HostRR("alias.sec.test", "real.sec.test", True), 25, False)
    assert d.usable and d.base_domain == "alias.sec.test"
    assert srv.queries_for("_25._tcp.real.sec.test", "TLSA")
    # insecure address behind a secure CNAME: qname_secure() allows the qname lookup
    t = DN.TlsaResolver(dns_resolver(srv), Log())
    d = t.resolve(DN.HostRR("alias.sec.test", "real.sec.test", False), 25, False)
    assert d.usable and d.base_domain == "alias.sec.test"


def test_hex_dump_long():
    assert DN.hex_dump(bytes(range(70))) == (bytes(range(32)).hex().upper() + "..."
                                             + bytes(range(38, 70)).hex().upper())


# --- dane_init ---------------------------------------------------------------------------

class FakeTlsa:
    def __init__(self, result):
        self.result = result
        self.calls = []

    def __call__(self, host_rr, port, force):
        self.calls.append((host_rr.qname, host_rr.rname, host_rr.dnssec_valid, port, force))
        return self.result


def dane_resolver(level, result, **kw):
    kw.setdefault("dns_support_level", "dnssec")
    cfg = C.TlsConfig(level=C.level_lookup(level), **kw)
    log = Log()
    fake = FakeTlsa(result)
    return P.PolicyResolver(cfg, log, tlsa_lookup=fake), log, fake


MX_SEC = DN.HostRR("example.com", "example.com", True)
MX_INSEC = DN.HostRR("example.com", "example.com", False)
RR_SEC = DN.HostRR("mx.example.com", "mx.example.com", True)
GOOD = DN.DaneResult(0, "mx.example.com", [(3, 1, 1, bytes(32))])
NONE = DN.DaneResult(DN.FLAG_NORRS, "mx.example.com")
UNUSABLE = DN.DaneResult(DN.FLAG_EMPTY, "mx.example.com")


def test_dane_usable():
    r, log, fake = dane_resolver("dane", GOOD)
    p = r.resolve("example.com", "mx.example.com", 25, MX_SEC, RR_SEC)
    assert p.level == C.LEV_DANE and p.tlsa == GOOD.tlsa
    assert p.dane_base_domain == "mx.example.com"
    assert p.matchargv == ["mx.example.com", "example.com"]
    assert fake.calls == [("mx.example.com", "mx.example.com", True, 25, False)]
    assert p.protocols == C.TlsConfig().mandatory_protocols and "aNULL" in p.exclusions
    assert log.lines == []


@pytest.mark.parametrize("result,dane_level,only_reason", [
    (NONE, C.LEV_MAY, "no TLSA records found"),
    (UNUSABLE, C.LEV_ENCRYPT, "TLSA records unusable"),
    (None, C.LEV_INVALID, None),
])
def test_dane_fallbacks(result, dane_level, only_reason):
    r, log, _ = dane_resolver("dane", result)
    p = r.resolve("example.com", "mx.example.com", 25, MX_SEC, RR_SEC)
    assert p.level == dane_level
    if result is None:
        assert (p.status, p.reason) == ("4.7.5", "TLSA lookup error for mx.example.com:25")
    assert log.lines == []
    r, log, _ = dane_resolver("dane-only", result)
    p = r.resolve("example.com", "mx.example.com", 25, MX_SEC, RR_SEC)
    assert p.invalid and p.status == "4.7.5"
    if only_reason:
        assert p.reason == only_reason


def test_insecure_mx():
    # default insecure MX policy with "dane" is "dane": half-dane
    r, log, fake = dane_resolver("dane", GOOD, insecure_mx_level=C.LEV_DANE)
    p = r.resolve("example.com", "mx.example.com", 25, MX_INSEC, RR_SEC)
    assert p.level == C.LEV_HALF_DANE
    r, log, fake = dane_resolver("dane", GOOD, insecure_mx_level=C.LEV_MAY)
    assert r.resolve("example.com", "mx.example.com", 25, MX_INSEC, RR_SEC).level == C.LEV_MAY
    assert not fake.calls
    r, log, fake = dane_resolver("dane", GOOD, insecure_mx_level=C.LEV_ENCRYPT)
    p = r.resolve("example.com", "mx.example.com", 25, MX_INSEC, RR_SEC)
    assert p.level == C.LEV_ENCRYPT
    r, log, fake = dane_resolver("dane-only", GOOD, insecure_mx_level=C.LEV_DANE)
    p = r.resolve("example.com", "mx.example.com", 25, MX_INSEC, RR_SEC)
    assert p.invalid and p.reason == "non DNSSEC destination"


def test_no_mx_lookup_host_rr_only():
    r, log, fake = dane_resolver("dane", GOOD)
    p = r.resolve("[mx.example.com]", "mx.example.com", 25, None, RR_SEC)
    assert p.level == C.LEV_DANE and p.matchargv == ["mx.example.com"]


@pytest.mark.parametrize("kw,text", [
    ({"dns_support_level": "enabled"}, "example.com: dane configured with dnssec lookups "
                                       "disabled"),
    ({"host_lookup_dns": False}, "example.com: dane configured with dnssec lookups disabled"),
    ({"ignore_mx_lookup_error": True}, "example.com: dane configured with MX lookup errors "
                                       "ignored"),
    ({"res_dnsrch": True}, "example.com: dns resolver options incompatible with dane TLS"),
])
def test_dane_config_incompatible(kw, text):
    r, log, _ = dane_resolver("dane", GOOD, **kw)
    assert r.resolve("example.com", "mx.example.com", 25, MX_SEC, RR_SEC).level == C.LEV_MAY
    assert log.lines == ["warning: " + text]
    r, log, _ = dane_resolver("dane-only", GOOD, **kw)
    p = r.resolve("example.com", "mx.example.com", 25, MX_SEC, RR_SEC)
    assert p.invalid and p.reason == "client TLS configuration problem"
    assert log.lines == ["warning: " + text.replace("dane ", "dane-only ")]


def test_unix_socket_invalid():
    r, log, _ = dane_resolver("dane", GOOD)
    assert r.resolve("/tmp/sock", "/tmp/sock", 0).invalid


def test_default_lookup_built_only_with_dnssec():
    cfg = C.TlsConfig(level=C.LEV_DANE, dns_support_level="dnssec")
    assert isinstance(P.PolicyResolver(cfg).tlsa_lookup, DN.TlsaResolver)
    cfg = C.TlsConfig(level=C.LEV_DANE, dns_support_level="enabled")
    assert P.PolicyResolver(cfg).tlsa_lookup is None


def test_config_from_params():
    def cfg(**main):
        return C.TlsConfig.from_params(Params(dict(main), [], config_dir="/nonexistent",
                                              process_name="smtp", service_name="smtp"))
    assert cfg(smtp_tls_security_level="dane").insecure_mx_level == C.LEV_DANE
    assert cfg(smtp_tls_security_level="may").insecure_mx_level == C.LEV_MAY
    with pytest.raises(ConfigError):
        cfg(smtp_tls_dane_insecure_mx_policy="verify")
    c = cfg(smtp_host_lookup="native", smtp_dns_resolver_options="res_defnames")
    assert not c.host_lookup_dns and c.res_defnames


# --- DNSSEC status of MX and address records ----------------------------------------------

def addr_resolver(srv, **kw):
    cfg = D.LookupConfig(dns_support="dnssec", families=(socket.AF_INET,), **kw)
    return D.AddressResolver(cfg, dns=dns_resolver(srv), own=([], []))


def test_mx_and_address_dnssec_status(srv):
    srv.add("sec.test", "MX", "10 mx.sec.test.")
    srv.add("mx.sec.test", "A", "192.0.2.1")
    srv.secure("sec.test")
    srv.secure("mx.sec.test")
    srv.add("half.test", "MX", "10 mx.half.test.")
    srv.add("mx.half.test", "A", "192.0.2.2")
    srv.secure("mx.half.test")
    found = addr_resolver(srv).resolve(D.parse_destination("sec.test", "smtp", {"smtp": 25}))
    ep = found.endpoints()[0]
    assert (ep.mx.qname, ep.mx.rname, ep.mx.dnssec_valid) == ("sec.test", "sec.test", True)
    assert (ep.rr.qname, ep.rr.rname, ep.rr.dnssec_valid) == ("mx.sec.test", "mx.sec.test",
                                                              True)
    # insecure MX RRset: the addresses are looked up without DNSSEC ...
    found = addr_resolver(srv).resolve(D.parse_destination("half.test", "smtp", {"smtp": 25}))
    ep = found.endpoints()[0]
    assert not ep.mx.dnssec_valid and not ep.rr.dnssec_valid
    assert not srv.queries_for("mx.half.test", "A")[-1].dnssec_ok
    # ... unless smtp_tls_dane_insecure_mx_policy is above "may"
    found = addr_resolver(srv, insecure_mx_dnssec=True).resolve(
        D.parse_destination("half.test", "smtp", {"smtp": 25}))
    ep = found.endpoints()[0]
    assert not ep.mx.dnssec_valid and ep.rr.dnssec_valid
    # a bracketed destination: no MX record
    found = addr_resolver(srv).resolve(D.parse_destination("[mx.sec.test]", "smtp",
                                                           {"smtp": 25}))
    ep = found.endpoints()[0]
    assert ep.mx is None and ep.rr.dnssec_valid


# --- TLSA records in the handshake ----------------------------------------------------------

@pytest.fixture(scope="module")
def pki():
    pytest.importorskip("OpenSSL")
    from postfix_smtp.testing.tlscerts import make_pki
    d = tempfile.mkdtemp(prefix="pfsmtp-dane-")
    return make_pki(d)


def _server(pki, name="good"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.chain_file(name) if pki.chain_file(name) else pki.cert(name),
                        pki.key(name))
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)

    def run():
        c, _ = ls.accept()
        try:
            s = ctx.wrap_socket(c, server_side=True)
            s.recv(1)
            s.close()
        except Exception:
            c.close()
        ls.close()

    threading.Thread(target=run, daemon=True).start()
    return ls.getsockname()[1]


def _handshake(pki, tlsa, level="dane", name="good", loglevel="1"):
    from postfix_smtp.tls import client as TC
    cfg = C.TlsConfig(level=C.level_lookup(level), loglevel=loglevel,
                      log_mask=C.log_mask(loglevel))
    pol = P.Policy(level=C.level_lookup(level), protocols=">=TLSv1.2", grade="medium",
                   exclusions="aNULL", tlsa=tlsa, dane_base_domain="mx.test.invalid",
                   matchargv=["mx.test.invalid"])
    port = _server(pki, name)
    sock = socket.create_connection(("127.0.0.1", port))
    log = Log()
    try:
        s = TC.start(sock, pol, cfg, nexthop="test.invalid", host="mx.test.invalid",
                     namaddrport="mx.test.invalid[127.0.0.1]:%d" % port, log=log)
    except TC.TlsError:
        return None, log
    s.close()
    return s, log


def _rec(pki, *args, **kw):
    u, s, m, h = tlsa_rdata(pki.cert("good"), *args, **kw).split()
    return (int(u), int(s), int(m), bytes.fromhex(h))


def test_handshake_dane_ee_match(pki):
    s, log = _handshake(pki, [_rec(pki, 3, 1, 1)], loglevel="2")
    assert s.matched and s.level == C.LEV_DANE
    assert any(ln.startswith("info: Verified TLS connection established") for ln in log.lines)
    assert any("Matched DANE EE certificate at depth 0: 3 1 1 " in ln for ln in log.lines)


def test_handshake_dane_ee_full_cert_and_sha512(pki):
    s, log = _handshake(pki, [_rec(pki, 3, 0, 0)])
    assert s.matched
    s, log = _handshake(pki, [_rec(pki, 3, 0, 2)])
    assert s.matched


def test_handshake_dane_no_match(pki):
    s, log = _handshake(pki, [(3, 1, 1, bytes(32))])
    assert s is not None and not s.matched
    assert any("num=65:no matching dane tlsa records" in ln.lower() for ln in log.lines)
    assert any(ln.startswith("info: Untrusted TLS connection") for ln in log.lines)


def test_handshake_dane_ta_match(pki):
    if not pki.chain_file("good"):
        pytest.skip("no chain file")
    # the issuer of the leaf (index 1 of the chain file)
    u, sel, m, h = tlsa_rdata(pki.chain_file("good"), 2, 1, 1, index=1).split()
    s, log = _handshake(pki, [(2, 1, 1, bytes.fromhex(h))], loglevel="2")
    assert s.matched, log.lines
    assert any("Matched DANE TA certificate at depth 1" in ln for ln in log.lines)


def test_handshake_all_unusable(pki):
    s, log = _handshake(pki, [(3, 1, 1, b"short")])
    assert s.level == C.LEV_ENCRYPT and not s.matched
    assert any("unusable TLSA RR: 3 1 1 73686F7274" in ln for ln in log.lines), log.lines
    assert any("all TLSA records unusable, fallback to unauthenticated TLS" in ln
               for ln in log.lines)
    s, log = _handshake(pki, [(3, 1, 1, b"short")], level="dane-only")
    assert s.level == C.LEV_DANE_ONLY and not s.matched
    assert any(ln.endswith(": all TLSA records unusable") for ln in log.lines)
