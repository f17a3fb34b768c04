"""smtp_dns_reply_filter (dns/rrfilter.py) with the stub resolver against the
test DNS server: the record text stock's filters see, IGNORE, unknown actions,
table errors, and a filter that drops everything."""

from __future__ import annotations

import pytest

pytest.importorskip("dns.message")

from postfix_smtp.dns import lookup, resolvconf  # noqa: E402
from postfix_smtp.dns.rrfilter import RrFilter, strrecord  # noqa: E402
from postfix_smtp.maps import open_maps  # noqa: E402
from postfix_smtp.maps.base import RecordingLog  # noqa: E402
from postfix_smtp.testing.dnsserver import DnsTestServer  # noqa: E402

RR = lookup.RR


def test_record_text_as_dns_strrecord():
    assert strrecord(RR("x", "mx.example", lookup.T_A, 300, 0, "192.0.2.1")) == \
        "mx.example. 300 IN A 192.0.2.1"
    assert strrecord(RR("x", "mx.example", lookup.T_AAAA, 60, 0, "2001:db8::1")) == \
        "mx.example. 60 IN AAAA 2001:db8::1"
    assert strrecord(RR("x", "example", lookup.T_MX, 3600, 10, "mx.example")) == \
        "example. 3600 IN MX 10 mx.example."
    assert strrecord(RR("x", "a.example", lookup.T_CNAME, 5, 0, "b.example")) == \
        "a.example. 5 IN CNAME b.example."
    raw = bytes([3, 1, 1]) + bytes(range(32))
    text = strrecord(RR("x", "_25._tcp.mx.example", lookup.T_TLSA, 30, 0, "", False, raw))
    assert text.startswith("_25._tcp.mx.example. 30 IN TLSA 3 1 1 000102")
    # stock's fall-through into the SOA case: five 32-bit numbers from the data
    assert text.endswith(bytes(range(32)).hex() + "- - 65795 67305985 134678021 "
                         "202050057 269422093")


class Log(RecordingLog):
    pass


def _filter(tmp_path, rules: str):
    path = tmp_path / "dns_filter"
    path.write_text(rules)
    log = Log()
    maps = open_maps("regexp:%s" % path, title="smtp_dns_reply_filter", log=log)
    infos, warns = [], []
    return RrFilter(maps, infos.append, warns.append), infos, warns


@pytest.fixture
def srv():
    s = DnsTestServer(max_lifetime=60).start()
    s.add("example.test", "MX", "10 mx1.example.test.", "20 mx2.example.test.")
    s.add("mx1.example.test", "A", "192.0.2.1")
    yield s
    s.stop()


def _resolver(srv, flt):
    c = resolvconf.parse("options timeout:1 attempts:1\n")
    c.nameservers = [srv.address]
    return lookup.Resolver(conf=lambda: c, rr_filter=flt)


def test_ignore_drops_one_record(srv, tmp_path):
    flt, infos, warns = _filter(tmp_path, "/ IN MX 10 mx1\\.example\\.test\\.$/ IGNORE\n")
    r = _resolver(srv, flt).lookup("example.test", lookup.T_MX)
    assert r.status == lookup.DNS_OK
    assert [(x.pref, x.data) for x in r.rrs] == [(20, "mx2.example.test")]
    assert len(infos) == 1 and infos[0].startswith("ignoring DNS RR: example.test. ")
    assert infos[0].endswith(" IN MX 10 mx1.example.test.") and not warns


def test_dropping_everything_is_a_policy_failure(srv, tmp_path):
    flt, infos, warns = _filter(tmp_path, "/ IN MX / ignore\n")
    r = _resolver(srv, flt).lookup("example.test", lookup.T_MX)
    assert r.status == lookup.DNS_POLICY
    assert r.why == ("Error looking up name=example.test type=MX: "
                     "DNS reply filter drops all results")
    assert len(infos) == 2


def test_unknown_action_fails_the_lookup(srv, tmp_path):
    flt, infos, warns = _filter(tmp_path, "/ IN A / DUNNO\n")
    r = _resolver(srv, flt).lookup("mx1.example.test", lookup.T_A)
    assert r.status == lookup.DNS_RETRY
    assert r.why == ("Error looking up name=mx1.example.test type=A: "
                     "Invalid DNS reply filter syntax")
    assert warns == ['smtp_dns_reply_filter: unknown DNS filter action: "DUNNO"']


def test_table_error_fails_the_lookup(srv):
    log = Log()
    maps = open_maps("fail:dnsfilter", title="smtp_dns_reply_filter", log=log)
    r = _resolver(srv, RrFilter(maps, log.info, log.warning)).lookup(
        "mx1.example.test", lookup.T_A)
    assert r.status == lookup.DNS_RETRY


def test_no_match_keeps_everything(srv, tmp_path):
    flt, infos, warns = _filter(tmp_path, "/^nothing/ IGNORE\n")
    r = _resolver(srv, flt).lookup("example.test", lookup.T_MX)
    assert [x.pref for x in r.rrs] == [10, 20] and not infos and not warns
