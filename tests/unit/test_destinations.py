"""Destinations without a network: nexthop syntax, address ordering and limits,
"myself" truncation, and the MX/host lookup logic against a scripted DNS."""

from __future__ import annotations

import random
import socket

import pytest

from postfix_smtp import destinations as d
from postfix_smtp.dns import client
from postfix_smtp.dns import lookup as dl
from postfix_smtp.dns.names import valid_hostaddr, valid_hostname

A, AAAA, MX = dl.T_A, dl.T_AAAA, dl.T_MX
KNOWN = {"smtp": 25, "lmtp": 24, "smtps": 465, "submissions": 465, "submission": 587}


# ---------------------------------------------------------------------------
# nexthop syntax

@pytest.mark.parametrize("text,host,port,bracketed", [
    ("example.com", "example.com", 25, False),
    ("example.com:2525", "example.com", 2525, False),
    ("example.com:", "example.com", 25, False),
    ("[mail.example.com]", "mail.example.com", 25, True),
    ("[mail.example.com]:587", "mail.example.com", 587, True),
    ("[mail.example.com]:", "mail.example.com", 25, True),
    ("[192.0.2.1]:26", "192.0.2.1", 26, True),
    ("192.0.2.1", "192.0.2.1", 25, False),
    ("[ipv6:2001:db8::1]", "2001:db8::1", 25, True),
    ("[IPv6:2001:db8::1]:2525", "2001:db8::1", 2525, True),
    ("[2001:db8::1]", "2001:db8::1", 25, True),
    ("relay.example:submission", "relay.example", 587, False),
    ("relay.example:smtps", "relay.example", 465, False),
    ("relay.example:lmtp", "relay.example", 24, False),
    ("_srv.example.com", "_srv.example.com", 25, False),
])
def test_parse_destination(text, host, port, bracketed):
    assert d.parse_destination(text, "smtp", KNOWN) == d.Destination(text, host, port, bracketed)


def test_parse_destination_service_name_from_services():
    assert d.parse_destination("x.example:pop3", "smtp", {}).port == socket.getservbyname("pop3")


@pytest.mark.parametrize("text,error", [
    ("[foo.example", 'missing "]" in server description: [foo.example'),
    ("[foo.example]x", 'garbage after "]" in server description: [foo.example]x'),
    ("[ipv6:1.2.3.4]", "malformed IPv6 address in server description: [ipv6:1.2.3.4]"),
    (":25", "missing host information in server description: :25"),
    ("[]", "valid hostname or network address required in server description: []"),
    ("foo..example", "valid hostname or network address required in server description: "
                     "foo..example"),
    ("exa_mple!", "valid hostname or network address required in server description: exa_mple!"),
    ("example.com.", "valid hostname or network address required in server description: "
                     "example.com."),
    ("foo.example:25x", "garbage after numerical service in server description: "
                        "foo.example:25x"),
    ("foo.example:0", "bad network port: 0 for destination: foo.example:0"),
    ("foo.example:65536", "bad network port: 65536 for destination: foo.example:65536"),
    ("foo.example:nosuchservice", "unknown service: nosuchservice/tcp"),
])
def test_parse_destination_errors(text, error):
    with pytest.raises(d.DestinationSyntaxError) as e:
        d.parse_destination(text, "smtp", KNOWN)
    assert str(e.value) == error


def test_default_port_lmtp_and_known_ports():
    assert d.parse_destination("[h.example]", "24", KNOWN).port == 24
    assert d.parse_destination("[h.example]", "smtp", {"smtp": 2525}).port == 2525


def test_split_list():
    assert d.split_list("a.example, [b.example]:26\tc.example\r\n d.example,,") == \
        ["a.example", "[b.example]:26", "c.example", "d.example"]
    assert d.split_list(" , ") == []


@pytest.mark.parametrize("name,ok", [
    ("example.com", True), ("a-b.example", True), ("_dmarc.example", True),
    ("-a.example", False), ("a-.example", False), ("a..b", False), ("a.", False),
    ("1.2.3.4", False), ("123", False), ("a" * 64 + ".example", False),
    ("*.example", False), ("a b", False), ("", False), ("ex\u00e4mple.com", False),
])
def test_valid_hostname(name, ok):
    assert valid_hostname(name)[0] is ok


def test_valid_hostname_wildcard_and_gripes():
    assert valid_hostname("*.example", wildcard=True)[0]
    assert not valid_hostname("a.*.example", wildcard=True)[0]
    assert valid_hostname("bad!name")[1] == \
        "valid_hostname: invalid character 33(decimal): bad!name"


@pytest.mark.parametrize("addr,ok", [
    ("192.0.2.1", True), ("0.0.0.0", True), ("0.1.2.3", False), ("256.1.1.1", False),
    ("1.2.3", False), ("1.2.3.4.", False), ("::1", True), ("2001:db8::1", True),
    ("::ffff:192.0.2.1", True), ("1:2:3:4:5:6:7:8", True), ("1:2:3:4:5:6:7:8:9", False),
    ("2001:db8::1::2", False), ("12345::1", False), (":1", False), ("g::1", False),
])
def test_valid_hostaddr(addr, ok):
    assert valid_hostaddr(addr)[0] is ok


# ---------------------------------------------------------------------------
# ordering (pure)

def addr(a, pref=0, name=None):
    fam = socket.AF_INET6 if ":" in a else socket.AF_INET
    return d.Address(name or "mx%d.example" % pref, name or "mx%d.example" % pref, a, fam, pref)


def addrs_of(lst):
    return [a.addr for a in lst]


def test_sort_is_stable_and_by_preference():
    lst = [addr("192.0.2.3", 20), addr("192.0.2.1", 10), addr("2001:db8::1", 10),
           addr("192.0.2.2", 10), addr("2001:db8::2", 20)]
    assert addrs_of(d.sort_addresses(lst)) == [
        "192.0.2.1", "2001:db8::1", "192.0.2.2", "192.0.2.3", "2001:db8::2"]
    assert addrs_of(d.sort_addresses(lst, "ipv6")) == [
        "2001:db8::1", "192.0.2.1", "192.0.2.2", "2001:db8::2", "192.0.2.3"]
    assert addrs_of(d.sort_addresses(lst, "ipv4")) == [
        "192.0.2.1", "192.0.2.2", "2001:db8::1", "192.0.2.3", "2001:db8::2"]


def test_shuffle_is_a_uniform_permutation():
    rng = random.Random(1)
    lst = [addr("192.0.2.%d" % i) for i in range(1, 4)]
    seen = {}
    for _ in range(6000):
        key = tuple(addrs_of(d.shuffle(lst, rng)))
        seen[key] = seen.get(key, 0) + 1
    assert len(seen) == 6
    assert min(seen.values()) > 800      # 1000 expected each


def test_randomize_shuffles_only_within_equal_preference():
    rng = random.Random(7)
    lst = [addr("192.0.2.%d" % i, 10) for i in range(1, 5)] + \
          [addr("192.0.2.%d" % i, 20) for i in range(5, 9)]
    firsts = set()
    for _ in range(200):
        out = d.order_addresses(lst, True, "any", 0, True, rng)
        assert {a.pref for a in out[:4]} == {10}
        assert {a.pref for a in out[4:]} == {20}
        firsts.add(out[0].addr)
    assert len(firsts) == 4


def test_no_randomize_keeps_dns_order():
    lst = [addr("192.0.2.2", 10), addr("192.0.2.1", 10), addr("192.0.2.9", 5)]
    out = d.order_addresses(lst, False, "any", 5, True, random.Random(0))
    assert addrs_of(out) == ["192.0.2.9", "192.0.2.2", "192.0.2.1"]


@pytest.mark.parametrize("v4,v6,limit,first,expect", [
    (3, 3, 5, "v4", (3, 2)),        # region R2: v4 first -> (5+1)/2 = 3 IPv4
    (3, 3, 5, "v6", (2, 3)),        # R2, IPv6 first -> 5/2 = 2 IPv4
    (6, 1, 5, "v4", (4, 1)),        # R1: few IPv6
    (1, 6, 5, "v6", (1, 4)),        # R3: few IPv4
    (2, 2, 5, "v4", (2, 2)),        # under the limit: unchanged
    (4, 0, 2, "v4", (4, 0)),        # one family only: unchanged
    (2, 2, 1, "v6", (0, 1)),        # limit 1: R2 with IPv6 first
])
def test_balance_inet_protocols(v4, v6, limit, first, expect):
    four = [addr("192.0.2.%d" % i, 10) for i in range(1, v4 + 1)]
    six = [addr("2001:db8::%d" % i, 10) for i in range(1, v6 + 1)]
    lst = four + six if first == "v4" else six + four
    out = d.balance_inet_protocols(lst, limit)
    assert (sum(not a.is_v6 for a in out), sum(a.is_v6 for a in out)) == expect
    # relative order is unchanged
    assert [a for a in lst if a in out] == out


def test_find_and_truncate_self():
    lst = [addr("192.0.2.1", 10), addr("192.0.2.2", 20), addr("192.0.2.3", 20),
           addr("192.0.2.4", 30)]
    me = d.find_self(lst, ["192.0.2.3"])
    assert me.addr == "192.0.2.3"
    assert addrs_of(d.truncate_self(lst, me.pref)) == ["192.0.2.1"]
    assert d.find_self(lst, [], ["192.0.2.4"]).pref == 30          # proxy_interfaces
    assert d.find_self(lst, ["2001:db8::1"]) is None
    assert d.find_self([addr("2001:db8::1")], ["2001:DB8:0::1"]) is not None


# ---------------------------------------------------------------------------
# lookups against a scripted resolver (no sockets)

class FakeDns:
    """query(name, type, dnssec) -> client.Reply from a table of answers."""

    def __init__(self, table):
        self.table = table
        self.calls = []

    def __call__(self, name, qtype, dnssec):
        self.calls.append((name, qtype))
        v = self.table.get((name.lower(), qtype))
        if v is None:
            v = self.table.get(name.lower(), "NXDOMAIN")
            if not isinstance(v, str):
                v = "NODATA"
        if v == "NXDOMAIN":
            return client.Reply(client.HOST_NOT_FOUND, b"", 3, 0, name=name)
        if v == "NODATA":
            return client.Reply(client.NO_DATA, b"", 0, 0, name=name)
        if v == "SERVFAIL":
            return client.Reply(client.TRY_AGAIN, None, -1, 0, name=name)
        if v == "FORMERR":
            return client.Reply(client.NO_RECOVERY, b"", 1, 0, name=name)
        return client.Reply(0, _wire(name, qtype, v), 0, len(v), name=name)


def _wire(name, qtype, records):
    import dns.message
    import dns.rrset
    q = dns.message.make_query(name, qtype)
    r = dns.message.make_response(q)
    for rname, rtype, data in records:
        r.answer.append(dns.rrset.from_text(rname, 300, "IN", rtype, data))
    return r.to_wire()


def resolver(table, own=(["127.0.0.1"], []), warn=None, native=None, **cfg):
    cfg.setdefault("families", (socket.AF_INET,))
    cfg.setdefault("randomize_addresses", False)
    conf = d.LookupConfig(**cfg)
    fake = FakeDns(table)
    dns = dl.Resolver(query=fake, warn=warn or (lambda t: None))
    r = d.AddressResolver(conf, warn=warn, rng=random.Random(3), dns=dns, own=own,
                          native=native or _no_native)
    r.fake = fake
    return r


def _no_native(host, families):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def dest(text, port=None):
    dd = d.parse_destination(text, "smtp", KNOWN)
    return dd if port is None else d.Destination(dd.text, dd.host, port, dd.bracketed)


MXS = {
    ("example.test", MX): [("example.test.", "MX", "20 mx2.example.test."),
                           ("example.test.", "MX", "10 mx1.example.test."),
                           ("example.test.", "MX", "20 mx3.example.test.")],
    ("mx1.example.test", A): [("mx1.example.test.", "A", "192.0.2.1")],
    ("mx2.example.test", A): [("mx2.example.test.", "A", "192.0.2.2")],
    ("mx3.example.test", A): [("mx3.example.test.", "A", "192.0.2.3"),
                              ("mx3.example.test.", "A", "192.0.2.33")],
}


def test_mx_order_and_names():
    r = resolver(MXS)
    res = r.resolve(dest("example.test"))
    assert res.error is None and not res.final
    assert [(a.qname, a.addr, a.pref) for a in res.addresses] == [
        ("mx1.example.test", "192.0.2.1", 10), ("mx2.example.test", "192.0.2.2", 20),
        ("mx3.example.test", "192.0.2.3", 20), ("mx3.example.test", "192.0.2.33", 20)]
    eps = res.endpoints()
    assert [e.namaddrport for e in eps][:2] == ["mx1.example.test[192.0.2.1]:25",
                                                "mx2.example.test[192.0.2.2]:25"]
    # MX first, then addresses, in MX preference order (stable for equal ones)
    assert r.fake.calls == [("example.test", MX), ("mx1.example.test", A),
                            ("mx2.example.test", A), ("mx3.example.test", A)]


def test_bracketed_and_dns_disabled_skip_mx():
    r = resolver(MXS)
    res = r.resolve(dest("[mx1.example.test]"))
    assert addrs_of(res.addresses) == ["192.0.2.1"]
    assert r.fake.calls == [("mx1.example.test", A)]
    native = lambda host, fams: [(socket.AF_INET, "192.0.2.99")]  # noqa: E731
    r = resolver(MXS, dns_support="disabled", host_lookup=frozenset({"native"}),
                 native=native)
    res = r.resolve(dest("example.test"))
    assert addrs_of(res.addresses) == ["192.0.2.99"] and r.fake.calls == []


def test_lmtp_never_looks_up_mx():
    r = resolver(MXS, smtp_mode=False)
    r.resolve(dest("mx2.example.test:24"))
    assert r.fake.calls == [("mx2.example.test", A)]


def test_no_mx_uses_the_domain_address():
    r = resolver({("plain.test", A): [("plain.test.", "A", "192.0.2.7")],
                  "plain.test": {}})
    res = r.resolve(dest("plain.test"))
    assert [(a.qname, a.addr, a.pref) for a in res.addresses] == [("plain.test", "192.0.2.7", 0)]


def test_nxdomain_bounces_with_stock_text():
    r = resolver({})
    res = r.resolve(dest("nowhere.test"))
    assert res.addresses == []
    assert res.error == ("5.4.4", "Host or domain name not found. Name service error for "
                                  "name=nowhere.test type=A: Host not found")


def test_nxdomain_text_names_aaaa_with_both_families():
    r = resolver({}, families=(socket.AF_INET, socket.AF_INET6))
    res = r.resolve(dest("nowhere.test"))
    assert res.error[1].endswith("name=nowhere.test type=AAAA: Host not found")


def test_servfail_on_mx_defers():
    r = resolver({("broken.test", MX): "SERVFAIL",
                  ("broken.test", A): [("broken.test.", "A", "192.0.2.5")]})
    res = r.resolve(dest("broken.test"))
    assert res.addresses == []
    assert res.error == ("4.4.3", "Host or domain name not found. Name service error for "
                                  "name=broken.test type=MX: Host not found, try again")
    # ignore_mx_lookup_error: the domain's own address instead
    r = resolver({("broken.test", MX): "SERVFAIL",
                  ("broken.test", A): [("broken.test.", "A", "192.0.2.5")]},
                 ignore_mx_lookup_error=True)
    res = r.resolve(dest("broken.test"))
    assert addrs_of(res.addresses) == ["192.0.2.5"] and res.error is None


def test_formerr_is_non_recoverable():
    r = resolver({("odd.test", MX): "FORMERR"})
    assert r.resolve(dest("odd.test")).error == (
        "5.4.3", "Host or domain name not found. Name service error for name=odd.test type=MX: "
                 "Non-recoverable error")


def test_null_mx():
    r = resolver({("null.test", MX): [("null.test.", "MX", "0 .")]})
    res = r.resolve(dest("null.test"))
    assert res.error == ("5.1.0", "Domain null.test does not accept mail (nullMX)")
    assert r.fake.calls == [("null.test", MX)]


def test_mx_without_addresses():
    warnings = []
    table = {("dead.test", MX): [("dead.test.", "MX", "10 gone.dead.test.")]}
    r = resolver(table, warn=warnings.append)
    res = r.resolve(dest("dead.test"))
    assert res.error == ("5.4.4", "Host or domain name not found. Name service error for "
                                  "name=gone.dead.test type=A: Host not found")
    assert warnings == ["no MX host for dead.test has a valid address record"]
    r = resolver(table, defer_if_no_mx_address_found=True)
    assert r.resolve(dest("dead.test")).error[0] == "4.4.4"


def test_soft_mx_host_error_dominates_later_hard_one():
    table = {("mixed.test", MX): [("mixed.test.", "MX", "10 a.mixed.test."),
                                  ("mixed.test.", "MX", "20 b.mixed.test.")],
             ("a.mixed.test", A): "SERVFAIL"}
    res = resolver(table).resolve(dest("mixed.test"))
    assert res.error == ("4.4.4", "Host or domain name not found. Name service error for "
                                  "name=b.mixed.test type=A: Host not found")


def test_cname_chain_names():
    table = {("c.test", MX): [("c.test.", "MX", "10 alias.c.test.")],
             ("alias.c.test", A): [("alias.c.test.", "CNAME", "real.c.test."),
                                   ("real.c.test.", "A", "192.0.2.8")]}
    res = resolver(table).resolve(dest("c.test"))
    assert [(a.qname, a.rname) for a in res.addresses] == [("alias.c.test", "real.c.test")]
    assert res.endpoints()[0].host == "alias.c.test"
    res = resolver(table, cname_overrides_servername=True).resolve(dest("c.test"))
    assert res.endpoints()[0].host == "real.c.test"


def test_cname_only_answer_is_chased():
    table = {("alias.test", A): [("alias.test.", "CNAME", "real.test.")],
             ("real.test", A): [("real.test.", "A", "192.0.2.9")]}
    r = resolver(table)
    res = r.resolve(dest("[alias.test]"))
    assert addrs_of(res.addresses) == ["192.0.2.9"]
    assert r.fake.calls == [("alias.test", A), ("real.test", A)]


def test_cname_loop():
    warnings = []
    table = {("l1.test", A): [("l1.test.", "CNAME", "l2.test.")],
             ("l2.test", A): [("l2.test.", "CNAME", "l1.test.")]}
    res = resolver(table, warn=warnings.append).resolve(dest("[l1.test]"))
    assert res.error[1] in ("Host or domain name not found. Name service error for "
                            "name=l1.test type=A: Host not found",) or \
        res.error[1].startswith("Name server loop for ")
    assert any(w.startswith("dns_lookup: Name server loop for") for w in warnings)


def test_invalid_names_in_mx_data():
    warnings = []
    table = {("bad.test", MX): [("bad.test.", "MX", "10 bad!host.bad.test."),
                                ("bad.test.", "MX", "20 good.bad.test.")],
             ("good.bad.test", A): [("good.bad.test.", "A", "192.0.2.10")]}
    res = resolver(table, warn=warnings.append).resolve(dest("bad.test"))
    assert addrs_of(res.addresses) == ["192.0.2.10"]
    assert "malformed domain name in resource data of MX record for bad.test: " \
           "bad!host.bad.test" in warnings
    table = {("bad.test", MX): [("bad.test.", "MX", "10 bad!host.bad.test.")]}
    res = resolver(table).resolve(dest("bad.test"))
    assert res.error == ("5.4.4", "Name service error for name=bad.test type=MX: Malformed "
                                  "or unexpected name server reply")


def test_numeric_mx_host_and_numeric_nexthop():
    table = {("num.test", MX): [("num.test.", "MX", "10 192.0.2.44.")]}
    res = resolver(table).resolve(dest("num.test"))
    assert [(a.qname, a.addr) for a in res.addresses] == [("192.0.2.44", "192.0.2.44")]
    r = resolver({})
    res = r.resolve(dest("[192.0.2.45]:2525"))
    assert addrs_of(res.addresses) == ["192.0.2.45"] and r.fake.calls == []


def test_disabled_family_literal():
    r = resolver({})
    res = r.resolve(dest("[ipv6:2001:db8::1]"))
    assert res.error == ("5.4.4", "Name service error for 2001:db8::1: invalid host or "
                                  "domain name")


def test_inet_protocols_select_record_types():
    table = {("h.test", A): [("h.test.", "A", "192.0.2.1")],
             ("h.test", AAAA): [("h.test.", "AAAA", "2001:db8::1")]}
    r = resolver(table, families=(socket.AF_INET, socket.AF_INET6))
    res = r.resolve(dest("[h.test]"))
    assert sorted(addrs_of(res.addresses)) == ["192.0.2.1", "2001:db8::1"]
    assert r.fake.calls == [("h.test", A), ("h.test", AAAA)]
    r = resolver(table, families=(socket.AF_INET6,))
    assert addrs_of(r.resolve(dest("[h.test]")).addresses) == ["2001:db8::1"]
    assert r.fake.calls == [("h.test", AAAA)]
    r = resolver(table, families=())
    assert r.resolve(dest("[h.test]")).error == ("4.4.4", "all network protocols are disabled")


def test_aaaa_failure_does_not_hide_a_records():
    table = {("h.test", A): [("h.test.", "A", "192.0.2.1")], ("h.test", AAAA): "SERVFAIL"}
    r = resolver(table, families=(socket.AF_INET, socket.AF_INET6))
    res = r.resolve(dest("[h.test]"))
    assert addrs_of(res.addresses) == ["192.0.2.1"] and res.error is None


def test_native_fallback_after_dns_not_found():
    native = lambda host, fams: [(socket.AF_INET, "192.0.2.77")]  # noqa: E731
    r = resolver({}, host_lookup=frozenset({"dns", "native"}), native=native)
    res = r.resolve(dest("[hosts-only.test]"))
    assert addrs_of(res.addresses) == ["192.0.2.77"]


def test_native_errors():
    def again(host, fams):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    r = resolver({}, dns_support="disabled", host_lookup=frozenset({"native"}), native=again)
    assert r.resolve(dest("[x.test]")).error == (
        "4.4.4", "unable to look up host x.test: Temporary failure in name resolution")
    r = resolver({}, dns_support="disabled", host_lookup=frozenset({"native"}))
    assert r.resolve(dest("[x.test]")).error == (
        "5.4.4", "unable to look up host x.test: Name or service not known")


# -- "myself" ----------------------------------------------------------------

LOOP = {("loop.test", MX): [("loop.test.", "MX", "10 mx1.loop.test."),
                            ("loop.test.", "MX", "20 me.loop.test."),
                            ("loop.test.", "MX", "30 mx3.loop.test.")],
        ("mx1.loop.test", A): [("mx1.loop.test.", "A", "192.0.2.1")],
        ("me.loop.test", A): [("me.loop.test.", "A", "127.0.0.1")],
        ("mx3.loop.test", A): [("mx3.loop.test.", "A", "192.0.2.3")]}


def test_backup_mx_truncates_at_myself():
    res = resolver(LOOP).resolve(dest("loop.test"))
    assert addrs_of(res.addresses) == ["192.0.2.1"]
    assert res.i_am_mx and res.final and res.error is None


def test_loop_detection_only_on_port_25():
    res = resolver(LOOP).resolve(dest("loop.test:2525"))
    assert addrs_of(res.addresses) == ["192.0.2.1", "127.0.0.1", "192.0.2.3"]
    assert not res.i_am_mx


def test_primary_mx_is_myself():
    table = dict(LOOP)
    table[("mx1.loop.test", A)] = [("mx1.loop.test.", "A", "127.0.0.1")]
    res = resolver(table).resolve(dest("loop.test"))
    assert res.addresses == [] and res.final
    assert res.error == ("5.4.6", "mail for loop.test loops back to myself")


def test_better_mx_unresolvable_and_myself_next():
    table = dict(LOOP)
    del table[("mx1.loop.test", A)]
    res = resolver(table).resolve(dest("loop.test"))
    assert res.error == ("4.4.4", "unable to find primary relay for loop.test")
    assert res.final


def test_proxy_interfaces_count_as_myself():
    res = resolver(LOOP, own=([], ["192.0.2.1"])).resolve(dest("loop.test"))
    assert res.error == ("5.4.6", "mail for loop.test loops back to myself")


def test_host_lookup_loop_any_address():
    table = {("h.test", A): [("h.test.", "A", "192.0.2.1"), ("h.test.", "A", "127.0.0.1")]}
    res = resolver(table).resolve(dest("[h.test]"))
    assert res.error == ("5.4.6", "mail for h.test loops back to myself") and res.final


def test_best_mx_flag_on_endpoints():
    res = resolver(MXS).resolve(dest("example.test"))
    eps = res.endpoints()
    if hasattr(eps[0], "best_mx"):
        assert [e.best_mx for e in eps] == [True, False, False, False]


def test_mx_address_limit_balancing_in_lookup():
    table = {("b.test", MX): [("b.test.", "MX", "10 m.b.test.")],
             ("m.b.test", A): [("m.b.test.", "A", "192.0.2.%d" % i) for i in range(1, 7)],
             ("m.b.test", AAAA): [("m.b.test.", "AAAA", "2001:db8::%d" % i) for i in range(1, 7)]}
    res = resolver(table, families=(socket.AF_INET, socket.AF_INET6), mx_address_limit=4,
                   address_preference="ipv6").resolve(dest("b.test"))
    assert [a.is_v6 for a in res.addresses] == [True, True, False, False]
    res = resolver(table, families=(socket.AF_INET, socket.AF_INET6), mx_address_limit=4,
                   balance_inet_protocols=False).resolve(dest("b.test"))
    assert len(res.addresses) == 12


def test_record_count_limit():
    warnings = []
    table = {("many.test", A): [("many.test.", "A", "10.0.%d.%d" % (i // 250, i % 250 + 1))
                                for i in range(150)]}
    res = resolver(table, warn=warnings.append, mx_address_limit=0).resolve(dest("[many.test]"))
    assert len(res.addresses) == 100
    assert any("DNS record count limit (100) exceeded" in w for w in warnings)


# ---------------------------------------------------------------------------
# configuration

def params(prefix="smtp", **main):
    from postfix_smtp.config.params import Params
    return Params(dict(main), prefix=prefix)


def test_config_defaults():
    c = d.LookupConfig.from_params(params(), "smtp")
    assert c.dns_support == "enabled" and c.host_lookup == frozenset({"dns"})
    assert c.mx_address_limit == 5 and c.randomize_addresses and c.balance_inet_protocols
    assert c.inet_interfaces == ("all",) and c.smtp_mode


def test_config_dns_disabled_forces_native():
    c = d.LookupConfig.from_params(params(disable_dns_lookups="yes"), "smtp")
    assert c.dns_support == "disabled" and c.host_lookup == frozenset({"native"})
    c = d.LookupConfig.from_params(params(disable_dns_lookups="yes",
                                          smtp_dns_support_level="dnssec"), "smtp")
    assert c.dns_support == "dnssec"
    c = d.LookupConfig.from_params(params(smtp_host_lookup="native, dns",
                                          smtp_dns_resolver_options="res_defnames",
                                          inet_protocols="ipv4"), "smtp")
    assert c.host_lookup == frozenset({"dns", "native"}) and c.res_defnames
    assert c.families == (socket.AF_INET,)


def test_config_lmtp_names():
    c = d.LookupConfig.from_params(params("lmtp", lmtp_mx_address_limit="2",
                                          smtp_mx_address_limit="9"), "lmtp")
    assert c.mx_address_limit == 2 and not c.smtp_mode


@pytest.mark.parametrize("name,value", [
    ("smtp_dns_support_level", "sometimes"), ("smtp_host_lookup", "nis"),
    ("smtp_address_preference", "ipv5"), ("inet_protocols", "ipx"),
    ("smtp_dns_resolver_options", "res_recurse"),
])
def test_config_invalid_values(name, value):
    from postfix_smtp.config.params import ConfigError
    with pytest.raises(ConfigError):
        d.LookupConfig.from_params(params(**{name: value}), "smtp")


def test_legacy_resolve_api():
    eps = d.resolve(d.parse_destination("[127.0.0.1]:2525", "smtp", KNOWN), ["ipv4"])
    assert [(e.addr, e.port) for e in eps] == [("127.0.0.1", 2525)]
    with pytest.raises(d.LookupError_):
        d.resolve(d.parse_destination("[::1]", "smtp", KNOWN), ["ipv4"])
