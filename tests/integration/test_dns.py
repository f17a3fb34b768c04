"""Destinations through real DNS: the stock smtp(8) and postfix_smtp, side by side.

A :class:`DnsTestServer` on 127.53.x.y:53 serves the test zones; each Postfix
instance (stock, then with the agent) runs in its own mount namespace whose
/etc/resolv.conf names only that server (``options timeout:1 attempts:2``),
so both agents reach it exactly as they reach a resolver on a real host.  MX
hosts are SMTP peers on distinct loopback addresses (127.0.0.x) sharing one
port; mail is routed by recipient domain (``smtp_tcp_port`` = that port, or
25 for the loop-detection group).

For every scenario domain the two runs must agree on: the final
per-recipient outcome (relay, DSN code, status, reason text), the
``connect to ...`` attempts in order (where stock is deterministic), and
which peers received the message; for the scripted peers (sess.test,
greet.test: smtp_mx_session_limit) also how many sessions each one saw.

inet_interfaces only accepts addresses of local interfaces, so its loop
case uses the host's own non-loopback IPv4 address (skipped without one);
proxy_interfaces takes any address (127.0.0.52).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time

import pytest

from postfix_smtp.testing.dnsserver import (DnsTestServer, ResolverPostfixInstance,
                                            free_loopback_address, port_free_on,
                                            resolv_conf_text)
from postfix_smtp.testing.peer import PeerScript, SmtpPeer

SENDER = "alice@src.test.invalid"
MESSAGE = b"Subject: dns test\n\nhello\n"


class FixedPortPeer(SmtpPeer):
    """An SmtpPeer on a given (host, port): MX hosts share the destination port."""

    def __init__(self, script=None, host="127.0.0.1", port=0, max_lifetime=240.0):
        super().__init__(script, host, max_lifetime)
        self.want_port = port

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        ls = socket.socket(family, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, self.want_port))
        ls.listen(128)
        ls.settimeout(0.2)
        self.port = ls.getsockname()[1]
        self._listener = ls
        self._deadline = time.monotonic() + self.max_lifetime
        self._stop.clear()
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()


# ---------------------------------------------------------------------------
# the scenarios: domain -> records; behaviours; peers on 127.0.0.x


def _ip(n: int) -> str:
    return "127.0.0.%d" % n


UP = {21, 22, 23, 24, 26, 27, 28, 30}       # addresses with a listening peer
DOWN = {11, 12, 13, 25, 29}                  # addresses nobody listens on
SESS = [41, 42, 43, 44, 45]    # sess.test's MX hosts: a session, then MAIL FROM gets 451
GREET = [46, 47, 48, 49]       # greet.test's MX hosts: 421 greeting
SELF_PROXY = 52                # in proxy_interfaces ("interfaces" group)


def local_ipv4_addresses():
    """The primary IPv4 address of each local interface except loopback."""
    import fcntl
    import struct
    out = []
    for _, name in socket.if_nameindex():
        s = socket.socket()
        try:
            r = fcntl.ioctl(s.fileno(), 0x8915,            # SIOCGIFADDR
                            struct.pack("256s", name.encode()[:15]))
            a = socket.inet_ntoa(r[20:24])
            if not a.startswith("127."):
                out.append(a)
        except OSError:
            pass
        finally:
            s.close()
    return out


def local_ipv6_addresses():
    """Global-scope IPv6 addresses of the local interfaces, usable as a source."""
    out = []
    try:
        with open("/proc/net/if_inet6") as f:
            rows = [ln.split() for ln in f]
    except OSError:
        return out
    for row in rows:
        if len(row) < 6 or row[3] != "00" or int(row[4], 16) & 0x48:   # tentative/dadfailed
            continue
        a = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(row[0]))
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            s.bind((a, 0))
            out.append(a)
        except OSError:
            pass
        finally:
            s.close()
    return out


_SELF_INET = []


def self_inet():
    """A local non-loopback IPv4 address, free on port 25, for inet_interfaces
    (Postfix insists on an address of a local interface there, so an extra
    127.0.0.x will not do), or None."""
    if not _SELF_INET:
        _SELF_INET.append(next((a for a in local_ipv4_addresses() if port_free_on([a], 25)),
                               None))
    return _SELF_INET[0]


def _scripted_peers():
    """Addresses whose peer (shared port only) follows its own script."""
    out = {}
    for n in SESS:
        out[n] = PeerScript(mail_reply="451 4.3.0 mailbox temporarily unavailable")
    for n in GREET:
        out[n] = PeerScript(greeting="421 4.3.2 service not available, closing channel")
    return out

ZONES = [
    # two preferences, the best one dead
    ("pref.test", "MX", ["10 mx1.pref.test.", "20 mx2.pref.test."]),
    ("mx1.pref.test", "A", [_ip(11)]),
    ("mx2.pref.test", "A", [_ip(21)]),
    # no MX: the domain's own A record
    ("plain.test", "A", [_ip(22)]),
    # CNAME chain to the MX host's address
    ("cname.test", "MX", ["5 alias.cname.test."]),
    ("alias.cname.test", "CNAME", ["alias2.cname.test."]),
    ("alias2.cname.test", "CNAME", ["real.cname.test."]),
    ("real.cname.test", "A", [_ip(23)]),
    # null MX
    ("null.test", "MX", ["0 ."]),
    # every MX dead (two addresses, then a second MX)
    ("dead.test", "MX", ["10 a.dead.test.", "20 b.dead.test."]),
    ("a.dead.test", "A", [_ip(12), _ip(13)]),
    ("b.dead.test", "A", [_ip(25)]),
    # an MX host without any address record
    ("noaddr.test", "MX", ["10 gone.noaddr.test."]),
    ("noaddrsoft.test", "MX", ["10 gone.noaddr.test."]),
    # slow answers (1.5 s with timeout:1: the glibc retry gets it)
    ("slow.test", "MX", ["10 mx.slow.test."]),
    ("mx.slow.test", "A", [_ip(24)]),
    # an unparsable answer
    ("garbage.test", "MX", []),
    # UDP truncated: TCP retry
    ("tc.test", "MX", ["10 mx.tc.test."]),
    ("mx.tc.test", "A", [_ip(26)]),
    # a bad host name in the only MX record
    ("badname.test", "MX", ["10 bad!host.badname.test."]),
    # MX lookup fails, the domain has an A record (ignore_mx_lookup_error group)
    ("mxfail.test", "A", [_ip(27)]),
    # mixed: the first MX host's lookup fails softly, the second is NXDOMAIN
    ("mixed.test", "MX", ["10 sf.mixed.test.", "20 nx.mixed.test."]),
    # the IPv6 group: AAAA ::1 where nobody listens, then the IPv4 address
    ("six.test", "MX", ["10 mx.six.test."]),
    ("mx.six.test", "A", [_ip(28)]),
    ("mx.six.test", "AAAA", ["::1"]),
    # equal preferences, shuffled (smtp_randomize_addresses = yes)
    ("rand.test", "MX", ["10 r1.rand.test.", "10 r2.rand.test.", "10 r3.rand.test.",
                         "20 ok.rand.test."]),
    ("r1.rand.test", "A", [_ip(11)]),
    ("r2.rand.test", "A", [_ip(12)]),
    ("r3.rand.test", "A", [_ip(13)]),
    ("ok.rand.test", "A", [_ip(30)]),
    # the fallback relay group: mail for a domain that does not exist
    # the loop group (port 25)
    ("loop.test", "MX", ["10 me.loop.test."]),
    ("me.loop.test", "A", ["127.0.0.1"]),
    ("backup.test", "MX", ["10 primary.backup.test.", "20 me.loop.test.",
                           "30 never.backup.test."]),
    ("primary.backup.test", "A", [_ip(29)]),
    ("never.backup.test", "A", [_ip(30)]),
    ("hostloop.test", "A", ["127.0.0.1"]),
    # smtp_mx_session_limit: five MX hosts (distinct preferences: a fixed order)
    # that complete the handshake, then refuse MAIL FROM with 451: each
    # session counts towards the limit
    ("sess.test", "MX", ["%d mx%d.sess.test." % (10 * (i + 1), i + 1) for i in range(5)]),
] + [("mx%d.sess.test" % (i + 1), "A", [_ip(n)]) for i, n in enumerate(SESS)] + [
    # four MX hosts with a 421 greeting: handshake failures do not count
    ("greet.test", "MX", ["%d mx%d.greet.test." % (10 * (i + 1), i + 1) for i in range(4)]),
] + [("mx%d.greet.test" % (i + 1), "A", [_ip(n)]) for i, n in enumerate(GREET)] + [
    # smtp_randomize_addresses = no: five dead addresses of equal preference,
    # tried in DNS order (a shuffle keeps that order with probability 1/120)
    ("order.test", "MX", ["10 o1.order.test.", "10 o2.order.test.", "10 o3.order.test.",
                          "10 o4.order.test."]),
    ("o1.order.test", "A", [_ip(11), _ip(12)]),
    ("o2.order.test", "A", [_ip(13)]),
    ("o3.order.test", "A", [_ip(25)]),
    ("o4.order.test", "A", [_ip(29)]),
    # smtp_balance_inet_protocols: two dead IPv4 addresses and ::1 (refused),
    # smtp_mx_address_limit = 2, IPv4 preferred
    ("bal.test", "MX", ["10 mx.bal.test."]),
    ("mx.bal.test", "A", [_ip(11), _ip(12)]),
    ("mx.bal.test", "AAAA", ["::1"]),
    # inet_interfaces / proxy_interfaces: an MX host on an address listed there
    # (mx.ifself.test's A record: self_inet(), added by the world fixture)
    ("ifself.test", "MX", ["10 mx.ifself.test."]),
    ("proxyself.test", "MX", ["10 mx.proxyself.test."]),
    ("mx.proxyself.test", "A", [_ip(SELF_PROXY)]),
    # smtp_dns_reply_filter: one MX record ignored; every address ignored;
    # an unknown filter action
    ("filt.test", "MX", ["10 f1.filt.test.", "20 f2.filt.test."]),
    ("f1.filt.test", "A", [_ip(21)]),
    ("f2.filt.test", "A", [_ip(22)]),
    ("filtall.test", "MX", ["10 fa.filtall.test."]),
    ("fa.filtall.test", "A", [_ip(23)]),
    ("filtbad.test", "MX", ["10 fb.filtbad.test."]),
    ("fb.filtbad.test", "A", [_ip(24)]),
]

DNS_FILTER = r"""/^filt\.test\. [0-9]+ IN MX 10 f1\.filt\.test\.$/ IGNORE
/^fa\.filtall\.test\. [0-9]+ IN A / ignore
/^fb\.filtbad\.test\. / DUNNO
"""

BEHAVIOUR = [
    ("slow.test", "delay", 1.5), ("mx.slow.test", "delay", 1.5),
    ("servfail.test", "fail", "SERVFAIL"), ("formerr.test", "fail", "FORMERR"),
    ("refused.test", "fail", "REFUSED"), ("garbage.test", "malformed", "garbage"),
    ("tc.test", "truncate", None),
    ("sf.mixed.test", "fail", "SERVFAIL"), ("deaddns.test", "drop", None),
]

GROUPS = {
    # name: (main.cf, port (None: the shared port), domains)
    "default": ({"smtp_randomize_addresses": "no"}, None,
                ["pref.test", "plain.test", "cname.test", "null.test", "nxdomain.test",
                 "servfail.test", "formerr.test", "refused.test", "dead.test", "noaddr.test",
                 "slow.test", "garbage.test", "tc.test", "badname.test", "mixed.test",
                 "deaddns.test", "mxfail.test", "sess.test", "greet.test", "order.test"]),
    "tuned": ({"smtp_randomize_addresses": "no", "smtp_mx_address_limit": "2",
               "smtp_defer_if_no_mx_address_found": "yes", "ignore_mx_lookup_error": "yes"},
              None, ["dead.test", "noaddrsoft.test", "mxfail.test"]),
    "ipv6": ({"inet_protocols": "all", "smtp_address_preference": "ipv6",
              "smtp_randomize_addresses": "no"}, None, ["six.test"]),
    "fallback": ({"smtp_fallback_relay": "[%s]:{port}" % _ip(21)}, None,
                 ["nxdomain.test", "null.test"]),
    "loop": ({"smtp_randomize_addresses": "no"}, 25,
             ["loop.test", "backup.test", "hostloop.test", "ifself.test", "proxyself.test"]),
    "interfaces": ({"smtp_randomize_addresses": "no",
                    "inet_interfaces": "127.0.0.1, {self_inet}",
                    "proxy_interfaces": _ip(SELF_PROXY)}, 25,
                   ["ifself.test", "proxyself.test", "loop.test"]),
    "sessions3": ({"smtp_mx_session_limit": "3", "smtp_randomize_addresses": "no",
                   "smtp_cname_overrides_servername": "yes"}, None,
                  ["sess.test", "greet.test", "cname.test"]),
    "balanced": ({"inet_protocols": "all", "smtp_address_preference": "ipv4",
                  "smtp_mx_address_limit": "2", "smtp_randomize_addresses": "no"}, None,
                 ["bal.test"]),
    "unbalanced": ({"inet_protocols": "all", "smtp_address_preference": "ipv4",
                    "smtp_mx_address_limit": "2", "smtp_randomize_addresses": "no",
                    "smtp_balance_inet_protocols": "no"}, None, ["bal.test"]),
    # the 2.x name: smtp_fallback_relay defaults to $fallback_relay
    "fallback_old": ({"fallback_relay": "[%s]:{port}" % _ip(21)}, None, ["nxdomain.test"]),
    "random": ({}, None, ["rand.test"]),
    "bestmx": ({"best_mx_transport": "error:5.1.2 best mx loop"}, 25, ["loop.test"]),
}


# ---------------------------------------------------------------------------
# running one agent over one group


CONNECT = re.compile(r"postfix/smtp\[\d+\]: connect to (\S+?)\[([^\]]+)\]:\d+: (.*)$")
FINAL = re.compile(r"postfix/(?:smtp|error)\[\d+\]: \w+: to=<([^>]+)>, relay=(\S+), "
                   r".*dsn=([\d.]+), "
                   r"status=(\w+) \((.*)\)$")


def _host_domain(host: str) -> str:
    parts = host.split(".")
    return ".".join(parts[-2:])


class Run:
    def __init__(self, lines, peers, queries, elapsed, sessions=None):
        self.lines = lines
        self.peers = peers
        self.queries = queries
        self.elapsed = elapsed
        self.sessions = sessions or {}     # (n, port) -> sessions that peer saw

    def session_counts(self, addrs, port):
        return [self.sessions.get((n, port), 0) for n in addrs]

    def outcome(self, domain):
        for ln in self.lines:
            m = FINAL.search(ln)
            if m and m.group(1).endswith("@" + domain):
                return m.group(2), m.group(3), m.group(4), m.group(5)
        return None

    def connects(self, domain):
        out = []
        for ln in self.lines:
            m = CONNECT.search(ln)
            if m and _host_domain(m.group(1)) == domain:
                out.append((m.group(1), m.group(2), m.group(3)))
        return out

    def warnings(self, pattern):
        return [ln for ln in self.lines if "warning:" in ln and re.search(pattern, ln)]


def run_group(tmp_base, name, agent, dns_ns, port, main_cf, domains, tag):
    cf = {"minimal_backoff_time": "300s", "maximal_backoff_time": "300s",
          "smtp_tcp_port": str(port), "smtp_connect_timeout": "5s",
          "delay_warning_time": "0"}
    cf.update({k: v.replace("{port}", str(port)).replace("{self_inet}", self_inet() or "")
               for k, v in main_cf.items()})
    base = os.path.join(tmp_base, "%s-%s" % (name, tag))
    os.makedirs(base, mode=0o755)
    inst = ResolverPostfixInstance(base, agent=agent, main_cf=cf, max_lifetime=300,
                                   resolv_conf=resolv_conf_text([dns_ns], 1, 2))
    t0 = time.monotonic()
    try:
        inst.start()
        assert "nameserver %s" % dns_ns in inst.namespace_resolv_conf()
        rcpts = ["user@%s" % d for d in domains]
        for r in rcpts:        # one message per domain: one delivery request each
            inst.sendmail(MESSAGE, SENDER, [r])
        for r in rcpts:
            inst.expect_log(r"to=<%s>, .*status=" % re.escape(r), timeout=90)
        elapsed = time.monotonic() - t0
        time.sleep(0.3)
        return inst.log_lines(), elapsed
    finally:
        inst.stop()


@pytest.fixture(scope="module")
def world():
    """The DNS server and the SMTP peers shared by all scenarios."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    ns = free_loopback_address()
    srv = DnsTestServer(host=ns, port=53, max_lifetime=900).start()
    for name, rtype, data in ZONES:
        if data:
            srv.add(name, rtype, *data)
    for name, kind, arg in BEHAVIOUR:
        getattr(srv, kind)(name, *([] if arg is None else [arg]))
    srv.fail("mxfail.test", "SERVFAIL", rdtype="MX")     # its A record still answers
    if self_inet():
        srv.add("mx.ifself.test", "A", self_inet())
    scripted = _scripted_peers()
    addrs = [_ip(n) for n in sorted(UP | DOWN | set(scripted))]
    port = None
    for _ in range(50):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        cand = s.getsockname()[1]
        s.close()
        if port_free_on(addrs + ["::1"], cand) and cand != 25:
            port = cand
            break
    assert port, "no common free port"
    if not port_free_on([_ip(n) for n in sorted(UP | DOWN | {SELF_PROXY})], 25):
        pytest.skip("port 25 is busy on 127.0.0.x")
    peers = {}
    for n in sorted(UP):
        for p in (port, 25):
            peer = FixedPortPeer(PeerScript(), host=_ip(n), port=p, max_lifetime=900)
            peer.start()
            peers[(n, p)] = peer
    for n, script in sorted(scripted.items()):
        peer = FixedPortPeer(script, host=_ip(n), port=port, max_lifetime=900)
        peer.start()
        peers[(n, port)] = peer
    yield srv, ns, port, peers
    for peer in peers.values():
        peer.stop()
    srv.stop()


def _run_both(world, tmp_base, agent_wrapper, group):
    srv, ns, port, peers = world
    main_cf, gport, domains = GROUPS[group]
    gport = gport or port
    runs = {}
    for tag, agent in (("stock", None), ("agent", agent_wrapper)):
        for p in peers.values():
            with p._lock:
                p._sessions.clear()
        nq = len(srv.queries)
        lines, elapsed = run_group(tmp_base, group, agent, ns, gport, main_cf, domains, tag)
        got = {}
        counts = {}
        for (n, p), peer in peers.items():
            counts[(n, p)] = len(peer.sessions)
            for sess in peer.sessions:
                for env in getattr(sess, "envelopes", []):
                    for rc in env.rcpts:
                        m = re.search(r"@([\w.]+)>", rc)
                        if m:
                            got.setdefault(m.group(1), []).append((_ip(n), p))
        runs[tag] = Run(lines, got, srv.queries[nq:], elapsed, counts)
    return runs


def _compare(runs, domains, unordered=()):
    stock, ours = runs["stock"], runs["agent"]
    for d in domains:
        so, ao = stock.outcome(d), ours.outcome(d)
        assert so is not None and ao is not None, (d, so, ao)
        assert ao == so, "%s: stock %r, agent %r" % (d, so, ao)
        sc, ac = stock.connects(d), ours.connects(d)
        if d in unordered:
            assert sorted(sc) == sorted(ac), (d, sc, ac)
        else:
            assert ac == sc, "%s: stock tried %r, agent %r" % (d, sc, ac)
        assert sorted(ours.peers.get(d, [])) == sorted(stock.peers.get(d, [])), d


# ---------------------------------------------------------------------------


def test_stock_resolver_is_private_to_the_instance(world, tmp_base):
    """The namespace trick itself: stock smtp(8) asks our server, the host's
    /etc/resolv.conf is untouched."""
    srv, ns, port, peers = world
    before = open("/etc/resolv.conf").read()
    lines, _ = run_group(tmp_base, "probe", None, ns, port, {}, ["plain.test"], "stock")
    assert open("/etc/resolv.conf").read() == before
    assert any(q.name == "plain.test" and q.type == "MX" for q in srv.queries)
    assert any("status=sent" in ln and "plain.test[%s]" % _ip(22) in ln for ln in lines)


def test_default_group_matches_stock(world, tmp_base, agent_wrapper):
    runs = _run_both(world, tmp_base, agent_wrapper, "default")
    domains = GROUPS["default"][2]
    _compare(runs, domains)
    ours = runs["agent"]
    # spot checks of the texts stock produced (and we matched)
    assert ours.outcome("null.test")[1:] == (
        "5.1.0", "bounced", "Domain null.test does not accept mail (nullMX)")
    assert ours.outcome("nxdomain.test")[1:] == (
        "5.4.4", "bounced", "Host or domain name not found. Name service error for "
                            "name=nxdomain.test type=A: Host not found")
    assert ours.outcome("servfail.test")[1:] == (
        "4.4.3", "deferred", "Host or domain name not found. Name service error for "
                             "name=servfail.test type=MX: Host not found, try again")
    assert ours.outcome("pref.test")[:3] == ("mx2.pref.test[%s]:%d" % (_ip(21), world[2]),
                                             "2.0.0", "sent")
    assert ours.outcome("cname.test")[0].startswith("alias.cname.test[%s]" % _ip(23))
    assert ours.warnings("no MX host for noaddr.test has a valid address record")
    assert ours.warnings("no MX host for badname.test has a valid address record") == \
        runs["stock"].warnings("no MX host for badname.test has a valid address record")
    # smtp_randomize_addresses = no: equal preferences in DNS order, also the
    # two addresses of one host (stock shuffles the whole list when "yes")
    assert [c[1] for c in ours.connects("order.test")] == [_ip(n) for n in (11, 12, 13, 25, 29)]
    # smtp_mx_session_limit (default 2): sessions that reached MAIL FROM count,
    # 421 greetings do not (stock: "Don't count handshake errors")
    port = world[2]
    for tag in ("stock", "agent"):
        assert runs[tag].session_counts(SESS, port) == [1, 1, 0, 0, 0], tag
        assert runs[tag].session_counts(GREET, port) == [1, 1, 1, 1], tag
    assert ours.outcome("sess.test")[1:] == (
        "4.3.0", "deferred", "host mx2.sess.test[%s] said: 451 4.3.0 mailbox temporarily "
                             "unavailable (in reply to MAIL FROM command)" % _ip(42))


def test_limits_and_lookup_error_options_match_stock(world, tmp_base, agent_wrapper):
    runs = _run_both(world, tmp_base, agent_wrapper, "tuned")
    _compare(runs, GROUPS["tuned"][2])
    ours = runs["agent"]
    assert len(ours.connects("dead.test")) == 2            # smtp_mx_address_limit = 2
    assert ours.outcome("noaddrsoft.test")[1] == "4.4.4"   # defer_if_no_mx_address_found
    assert ours.outcome("mxfail.test")[2] == "sent"        # ignore_mx_lookup_error


def test_ipv6_first_then_ipv4_matches_stock(world, tmp_base, agent_wrapper):
    runs = _run_both(world, tmp_base, agent_wrapper, "ipv6")
    _compare(runs, ["six.test"])
    assert runs["agent"].connects("six.test")[0][1] == "::1"


def test_fallback_relay_matches_stock(world, tmp_base, agent_wrapper):
    runs = _run_both(world, tmp_base, agent_wrapper, "fallback")
    _compare(runs, GROUPS["fallback"][2])
    assert runs["agent"].outcome("nxdomain.test")[2] == "sent"


def test_mail_loops_match_stock(world, tmp_base, agent_wrapper):
    runs = _run_both(world, tmp_base, agent_wrapper, "loop")
    _compare(runs, GROUPS["loop"][2])
    ours = runs["agent"]
    assert ours.outcome("loop.test")[1:] == ("5.4.6", "bounced",
                                             "mail for loop.test loops back to myself")
    # backup MX: only the better MX is tried, never the worse one
    assert [c[1] for c in ours.connects("backup.test")] == [_ip(29)]
    # not in inet_interfaces / proxy_interfaces here: tried like any host
    # (the "interfaces" group lists them: a loop there)
    mine = [("proxyself.test", _ip(SELF_PROXY))]
    if self_inet():
        mine.append(("ifself.test", self_inet()))
    for d, a in mine:
        assert ours.outcome(d)[1:3] == ("4.4.1", "deferred"), d
        assert [c[1] for c in ours.connects(d)] == [a], d


def test_inet_and_proxy_interfaces_are_myself_like_stock(world, tmp_base, agent_wrapper):
    runs = _run_both(world, tmp_base, agent_wrapper, "interfaces")
    _compare(runs, GROUPS["interfaces"][2])
    ours = runs["agent"]
    mine = ["proxyself.test", "loop.test"] + (["ifself.test"] if self_inet() else [])
    for d in mine:
        assert ours.outcome(d)[1:] == ("5.4.6", "bounced", "mail for %s loops back to myself" % d)
        assert not ours.connects(d), d
    if not self_inet():      # proxy_interfaces was checked; say what was not
        pytest.skip("inet_interfaces part: no local non-loopback IPv4 address free on port 25")


def test_mx_session_limit_and_cname_override_match_stock(world, tmp_base, agent_wrapper):
    """smtp_mx_session_limit = 3 (the default run is 2, see the default
    group) and smtp_cname_overrides_servername = yes (default: the MX name)."""
    runs = _run_both(world, tmp_base, agent_wrapper, "sessions3")
    _compare(runs, GROUPS["sessions3"][2])
    port = world[2]
    for tag in ("stock", "agent"):
        assert runs[tag].session_counts(SESS, port) == [1, 1, 1, 0, 0], tag
        assert runs[tag].session_counts(GREET, port) == [1, 1, 1, 1], tag
    ours = runs["agent"]
    assert ours.outcome("sess.test")[3].startswith("host mx3.sess.test[%s] said: 451" % _ip(43))
    assert ours.outcome("greet.test")[3].startswith(
        "host mx4.greet.test[%s] refused to talk to me: 421" % _ip(49))
    assert ours.outcome("cname.test")[:3] == ("real.cname.test[%s]:%d" % (_ip(23), port),
                                              "2.0.0", "sent")


def test_balance_inet_protocols_matches_stock(world, tmp_base, agent_wrapper):
    """Two IPv4 addresses before ::1, smtp_mx_address_limit = 2: balanced
    (the default) tries one of each family, unbalanced the two IPv4 ones."""
    on = _run_both(world, tmp_base, agent_wrapper, "balanced")
    off = _run_both(world, tmp_base, agent_wrapper, "unbalanced")
    _compare(on, ["bal.test"])
    _compare(off, ["bal.test"])
    assert [c[1] for c in on["agent"].connects("bal.test")] == [_ip(11), "::1"]
    assert [c[1] for c in off["agent"].connects("bal.test")] == [_ip(11), _ip(12)]


def test_fallback_relay_old_name_matches_stock(world, tmp_base, agent_wrapper):
    """fallback_relay (Postfix < 2.3), read through smtp_fallback_relay's
    default $fallback_relay; without it nxdomain.test bounces (default group)."""
    runs = _run_both(world, tmp_base, agent_wrapper, "fallback_old")
    _compare(runs, ["nxdomain.test"])
    assert runs["agent"].outcome("nxdomain.test")[:3] == (
        "%s[%s]:%d" % (_ip(21), _ip(21), world[2]), "2.0.0", "sent")


def test_best_mx_transport_matches_stock(world, tmp_base, agent_wrapper):
    runs = _run_both(world, tmp_base, agent_wrapper, "bestmx")
    _compare(runs, ["loop.test"])
    for tag in ("stock", "agent"):
        lines = runs[tag].lines
        assert any(re.search(r"postfix/smtp\[\d+\]: \w+: passing <user@loop.test> to "
                             r"transport=error$", ln) for ln in lines), tag
    assert runs["agent"].outcome("loop.test")[1:] == ("5.1.2", "bounced", "best mx loop")


def test_randomized_equal_preferences_match_stock(world, tmp_base, agent_wrapper):
    runs = _run_both(world, tmp_base, agent_wrapper, "random")
    _compare(runs, ["rand.test"], unordered=("rand.test",))
    tried = runs["agent"].connects("rand.test")
    assert sorted(c[1] for c in tried) == [_ip(11), _ip(12), _ip(13)]
    assert runs["agent"].outcome("rand.test")[2] == "sent"


def test_dns_reply_filter_matches_stock(world, tmp_base, agent_wrapper):
    path = os.path.join(tmp_base, "dns_filter")
    os.makedirs(tmp_base, exist_ok=True)
    with open(path, "w") as f:
        f.write(DNS_FILTER)
    os.chmod(path, 0o644)
    domains = ["filt.test", "filtall.test", "filtbad.test"]
    GROUPS["dnsfilter"] = ({"smtp_randomize_addresses": "no",
                            "smtp_dns_reply_filter": "regexp:" + path}, None, domains)
    try:
        runs = _run_both(world, tmp_base, agent_wrapper, "dnsfilter")
    finally:
        del GROUPS["dnsfilter"]
    _compare(runs, domains)
    ours = runs["agent"]
    assert ours.outcome("filt.test")[0].startswith("f2.filt.test[%s]" % _ip(22))
    assert ours.outcome("filt.test")[2] == "sent"
    for tag in ("stock", "agent"):
        ignored = [ln for ln in runs[tag].lines if "ignoring DNS RR: " in ln]
        assert any(re.search(r"ignoring DNS RR: filt\.test\. \d+ IN MX 10 f1\.filt\.test\.$",
                             ln) for ln in ignored), (tag, ignored)
        assert any("ignoring DNS RR: fa.filtall.test. " in ln for ln in ignored), (tag, ignored)
        assert runs[tag].warnings(r'unknown DNS filter action: "DUNNO"'), tag
    assert "drops all results" in ours.outcome("filtall.test")[3]
    assert "Invalid DNS reply filter syntax" in ours.outcome("filtbad.test")[3]
