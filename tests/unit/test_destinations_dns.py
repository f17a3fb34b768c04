"""The stub resolver against the test DNS server on loopback (UDP and TCP on
127.0.0.1, an ephemeral port): glibc's timing and retries, truncation,
rcode mapping, DNSSEC's AD bit, and resolv.conf parsing."""

from __future__ import annotations

import socket
import time

import pytest

pytest.importorskip("dns.message")

from postfix_smtp.dns import client, lookup, resolvconf  # noqa: E402
from postfix_smtp.testing.dnsserver import DnsTestServer  # noqa: E402

A, MX = lookup.T_A, lookup.T_MX


@pytest.fixture
def srv():
    s = DnsTestServer(max_lifetime=60).start()
    s.add("ok.test", "A", "192.0.2.1")
    s.add("ok.test", "MX", "10 mx.ok.test.")
    yield s
    s.stop()


def conf_for(*servers, timeout=1, attempts=2, **kw):
    c = resolvconf.parse("options timeout:%d attempts:%d\n" % (timeout, attempts))
    c.nameservers = [s.address if hasattr(s, "address") else s for s in servers]
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_resolv_conf_parsing():
    c = resolvconf.parse("# comment\n; other\nnameserver 192.0.2.53\nnameserver ::1\n"
                         "nameserver 192.0.2.54\nnameserver 192.0.2.55\nnameserver bogus\n"
                         "search a.example b.example\ndomain c.example\n"
                         "options ndots:2 timeout:99 attempts:9 rotate edns0 trust-ad use-vc\n")
    assert c.nameservers == [("192.0.2.53", 53), ("::1", 53), ("192.0.2.54", 53)]
    assert c.search == ["c.example"]            # the last of domain/search wins
    assert (c.ndots, c.timeout, c.attempts) == (2, 30, 5)          # glibc's limits
    assert c.rotate and c.edns0 and c.trust_ad and c.use_vc
    d = resolvconf.parse("", hostname="host.example.org")
    assert d.nameservers == [("127.0.0.1", 53)] and d.search == ["example.org"]
    assert (d.timeout, d.attempts) == (5, 2)


def test_glibc_timeout_schedule():
    assert [resolvconf.per_try_timeout(5, t, 1) for t in range(3)] == [5, 10, 20]
    assert [resolvconf.per_try_timeout(5, t, 2) for t in range(3)] == [5, 5, 10]
    assert resolvconf.per_try_timeout(1, 1, 3) == 1
    assert conf_for(("127.0.0.1", 1), timeout=1, attempts=2).max_query_time() == 3


def test_answer_and_nxdomain(srv):
    c = conf_for(srv)
    r = client.res_query("ok.test", A, c)
    assert r.h_errno == 0 and r.rcode == 0 and r.ancount == 1
    assert client.res_query("nope.test", A, c).h_errno == client.HOST_NOT_FOUND
    assert client.res_query("ok.test", lookup.T_AAAA, c).h_errno == client.NO_DATA


def test_rcodes(srv):
    srv.fail("sf.test", "SERVFAIL").fail("fe.test", "FORMERR").fail("rf.test", "REFUSED")
    c = conf_for(srv)
    assert client.res_query("sf.test", A, c).h_errno == client.TRY_AGAIN
    assert client.res_query("fe.test", A, c).h_errno == client.NO_RECOVERY
    assert client.res_query("rf.test", A, c).h_errno == client.TRY_AGAIN
    # SERVFAIL is retried: once per attempt and server
    assert len(srv.queries_for("sf.test")) == 2


def test_dead_server_is_bounded_by_the_schedule(srv):
    srv.drop("dead.test")
    c = conf_for(srv, timeout=1, attempts=2)
    t0 = time.monotonic()
    r = client.res_query("dead.test", A, c)
    took = time.monotonic() - t0
    assert r.h_errno == client.TRY_AGAIN
    assert 2.8 < took < 3.6                     # 1 s, then 2 s
    assert len(srv.queries_for("dead.test")) == 2
    t0 = time.monotonic()
    r = client.res_query("dead.test", A, c, deadline=time.monotonic() + 0.5)
    assert r.h_errno == client.TRY_AGAIN and time.monotonic() - t0 < 0.9


def test_refused_port_fails_fast():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                   # nobody listens: ICMP port unreachable
    t0 = time.monotonic()
    r = client.res_query("x.test", A, conf_for(("127.0.0.1", port), timeout=5))
    assert r.h_errno == client.TRY_AGAIN and time.monotonic() - t0 < 2


def test_second_server_answers(srv):
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)     # bound, never answers
    dead.bind(("127.0.0.1", 0))
    try:
        c = conf_for(dead.getsockname(), srv, timeout=1)
        t0 = time.monotonic()
        assert client.res_query("ok.test", A, c).h_errno == 0
        assert 0.9 < time.monotonic() - t0 < 1.6
    finally:
        dead.close()


def test_late_answer_to_the_first_try_is_accepted(srv):
    srv.delay("slow.test", 1.3)
    srv.add("slow.test", "A", "192.0.2.9")
    t0 = time.monotonic()
    r = lookup.Resolver(conf=lambda: conf_for(srv)).lookup("slow.test", A)
    assert r.status == lookup.DNS_OK and 1.2 < time.monotonic() - t0 < 2.0


def test_truncated_udp_retries_over_tcp(srv):
    srv.truncate("tc.test")
    srv.add("tc.test", "A", "192.0.2.7")
    r = lookup.Resolver(conf=lambda: conf_for(srv)).lookup("tc.test", A)
    assert [rr.data for rr in r.rrs] == ["192.0.2.7"]
    assert [q.proto for q in srv.queries_for("tc.test")] == ["udp", "tcp"]


def test_large_answer_is_truncated_then_fetched_over_tcp(srv):
    srv.add("big.test", "A", *["10.1.%d.%d" % (i // 200, i % 200 + 1) for i in range(60)])
    r = lookup.Resolver(conf=lambda: conf_for(srv)).lookup("big.test", A)
    assert len(r.rrs) == 60
    assert [q.proto for q in srv.queries_for("big.test")] == ["udp", "tcp"]


def test_use_vc(srv):
    r = lookup.Resolver(conf=lambda: conf_for(srv, use_vc=True)).lookup("ok.test", A)
    assert r.status == lookup.DNS_OK and srv.queries_for("ok.test")[0].proto == "tcp"


def test_dnssec_sets_do_and_reads_ad(srv):
    srv.add("signed.test", "MX", "10 mx.signed.test.")
    srv.secure("signed.test")
    res = lookup.Resolver(conf=lambda: conf_for(srv))
    r = res.lookup("signed.test", MX, dnssec=True)
    assert r.rrs[0].dnssec_valid
    q = srv.queries_for("signed.test")[-1]
    assert q.dnssec_ok
    r = res.lookup("signed.test", MX)
    assert not r.rrs[0].dnssec_valid and not srv.queries_for("signed.test")[-1].dnssec_ok
    r = res.lookup("ok.test", MX, dnssec=True)
    assert not r.rrs[0].dnssec_valid


def test_cname_chase_and_case(srv):
    srv.chase_cnames = False
    srv.add("Alias.test", "CNAME", "Real.Test.")
    srv.add("real.test", "A", "192.0.2.3")
    r = lookup.Resolver(conf=lambda: conf_for(srv)).lookup("alias.test", A)
    # the owner name keeps the case the wire gave it (compression may borrow
    # the question's spelling)
    assert [(rr.qname, rr.rname.lower(), rr.data) for rr in r.rrs] == [
        ("alias.test", "real.test", "192.0.2.3")]
    assert [q.name for q in srv.queries] == ["alias.test", "real.test"]


def test_malformed_replies(srv):
    srv.malformed("g.test", "garbage").malformed("l.test", "bad-a-length")
    res = lookup.Resolver(conf=lambda: conf_for(srv))
    for name in ("g.test", "l.test"):
        r = res.lookup(name, A)
        assert (r.status, r.why) == (lookup.DNS_RETRY, "Name service error for name=%s type=A: "
                                     "Malformed or unexpected name server reply" % name)


def test_search_list_only_with_resolver_options(srv):
    srv.add("host.sub.test", "A", "192.0.2.4")
    c = conf_for(srv, search=["sub.test"])
    assert client.res_search("host", A, c).h_errno == client.HOST_NOT_FOUND
    r = client.res_search("host", A, c, defnames=True)
    assert r.h_errno == 0 and r.name == "host.sub.test"
    assert client.res_search("host.x", A, c, defnames=True).h_errno != 0
    assert client.res_search("host.x", A, conf_for(srv, search=["sub.test"]),
                             dnsrch=True).h_errno != 0
    srv.add("host.x.sub.test", "A", "192.0.2.5")
    assert client.res_search("host.x", A, c, dnsrch=True).h_errno == 0


def test_query_ids_and_questions_are_checked():
    """A reply with a wrong id or question is ignored (then the try times out)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    import threading

    def answer_wrong():
        try:
            data, peer = s.recvfrom(512)
            bad = bytearray(data)
            bad[0] ^= 0xFF                       # wrong id
            bad[2] |= 0x80
            s.sendto(bytes(bad), peer)
            other = bytearray(data)
            other[2] |= 0x80
            other[-5] ^= 0x01                    # wrong question name byte... or type
            s.sendto(bytes(other), peer)
        except OSError:
            pass
    t = threading.Thread(target=answer_wrong, daemon=True)
    t.start()
    try:
        r = client.res_query("x.test", A, conf_for(s.getsockname(), timeout=1, attempts=1))
        assert r.h_errno == client.TRY_AGAIN
    finally:
        s.close()
