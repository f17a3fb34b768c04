"""TLS connection reuse through tlsproxy(8), stock smtp(8) vs this agent.

With ``smtp_tls_connection_reuse = yes`` (or ``connection_reuse=yes`` in
``smtp_tls_policy_maps``) the TLS handshake runs in tlsproxy(8); the delivery
agent talks SMTP over its plaintext stream to tlsproxy, and that stream, with
the TLS summary in its properties, goes to scache(8) like a plaintext
session.  A later delivery, in the same or another agent process, takes it
from the cache, logs "... TLS connection reused to ..." and ``conn_use=N``.

The private test instance has no tlsproxy service in its master.cf, so the
instances here add one (:class:`TlsproxyInstance`).  A scripted TLS peer
counts TCP connections and records every command; each scenario runs once
with the stock smtp(8) and once with this agent, and the agent's log lines,
the sessions at the peer and the queue must be the same.
"""

from __future__ import annotations

import os
import re

import pytest

from postfix_smtp.testing.instance import PostfixInstance
from postfix_smtp.testing.peer import PeerScript, SmtpPeer
from postfix_smtp.testing.tlscerts import SERVER_NAME, fingerprint

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SENDER = "alice@src.test.invalid"
MESSAGE = b"Subject: tls reuse\n\nhello over a reused TLS connection\n"
TLSPROXY_LINE = "tlsproxy  unix  -       -       n       -       0       tlsproxy\n"
AGENT_LINE = re.compile(r"postfix/smtp\[(\d+)\]: (.*)$")
PROXY_CONNECT = re.compile(r"postfix/tlsproxy\[\d+\]: CONNECT to ")
CACHE_CF = {"smtp_connection_cache_destinations": "127.0.0.1",
            "smtp_connection_cache_time_limit": "20s", "connection_cache_ttl_limit": "30s",
            "minimal_backoff_time": "300s", "maximal_backoff_time": "300s"}



class NoTlsproxyInstance(PostfixInstance):
    """A test instance without the tlsproxy(8) service."""

    def _write_config(self) -> None:
        super()._write_config()
        path = os.path.join(self.config_dir, "master.cf")
        with open(path) as f:
            text = f.read()
        with open(path, "w") as f:
            f.write(re.sub(r"^tlsproxy\s+unix\s.*\n", "", text, flags=re.M))
        self._age_config()


class TlsproxyInstance(PostfixInstance):
    """A test instance with the tlsproxy(8) service in master.cf."""

    def _write_config(self) -> None:
        super()._write_config()
        path = os.path.join(self.config_dir, "master.cf")
        with open(path) as f:
            text = f.read()
        if not re.search(r"^tlsproxy\s+unix\s", text, re.M):
            with open(path, "a") as f:
                f.write(TLSPROXY_LINE)
        self._age_config()


@pytest.fixture(scope="module")
def agent(tls_agent):
    """This checkout's agent (with pyOpenSSL for the in-process TLS of the
    sessions that are not reused)."""
    return tls_agent


class Result:
    def __init__(self, peers, lines, proxy_connects, queue):
        self.peers = peers                  # {name: [Session]}
        self.lines = lines                  # [(pid, text)] of postfix/smtp
        self.proxy_connects = proxy_connects
        self.queue = queue

    @property
    def texts(self):
        return [t for _p, t in self.lines]

    def delivered(self):
        return [(p, t) for p, t in self.lines if " to=<" in t]


def run(base, agent, pki, main_cf, rcpts, peer_names=("a",), transport=None, smtp_args=(),
        tlsproxy=True):
    """Start one TLS peer per name and a sending instance; send one message
    to each recipient in turn, each after the previous one was logged."""
    os.makedirs(base, mode=0o755, exist_ok=True)
    peers = {}
    try:
        for name in peer_names:
            peers[name] = SmtpPeer(PeerScript(tls_cert=pki.cert("good"),
                                              tls_key=pki.key("good")), max_lifetime=120)
            peers[name].start()
        cf = dict(CACHE_CF)
        cf["smtp_tls_CAfile"] = pki.ca
        cf.update(main_cf)
        relay = "[127.0.0.1]:%d" % peers[peer_names[0]].port
        if transport is not None:
            # domain -> "peer" or "peer@host" (the nexthop host, default 127.0.0.1)
            entries = []
            for dom, spec in transport.items():
                name, _, host = spec.partition("@")
                entries.append("{%s = smtp:[%s]:%d}" % (dom, host or "127.0.0.1",
                                                        peers[name].port))
            cf["transport_maps"] = "inline:{ %s }" % ", ".join(entries)
            for name in peers:
                cf["smtp_tls_policy_maps"] = cf.get("smtp_tls_policy_maps", "").replace(
                    "PORT_%s" % name, str(peers[name].port))
        cls = TlsproxyInstance if tlsproxy else NoTlsproxyInstance
        inst = cls(base, relayhost=relay, agent=agent, main_cf=cf,
                                myhostname="sender.test.invalid", smtp_args=list(smtp_args),
                                max_lifetime=300, quick_start=True)
        try:
            inst.start()
            for i, rcpt in enumerate(rcpts):
                inst.sendmail(MESSAGE, SENDER, [rcpt])
                inst.wait_log(r"postfix/smtp\[\d+\]: \w+: to=<", timeout=40, count=i + 1)
            inst.wait_queue_empty(timeout=20, allow_deferred=True)
            log = inst.log_lines()
            queue = {k: len(v) for k, v in inst.queue_ids().items()}
        finally:
            inst.stop()
        lines = [(m.group(1), m.group(2)) for m in map(AGENT_LINE.search, log) if m]
        return Result({n: p.sessions for n, p in peers.items()}, lines,
                      sum(1 for ln in log if PROXY_CONNECT.search(ln)), queue)
    finally:
        for p in peers.values():
            p.stop()


def normalise(texts):
    out = []
    for ln in texts:
        ln = re.sub(r"^[0-9A-F]{6,}: ", "QID: ", ln)
        ln = re.sub(r"\]:\d+", "]:PORT", ln)
        ln = re.sub(r"delay=[\d.]+, delays=[\d./]+", "delay=D", ln)
        ln = re.sub(r"queued as [0-9A-Za-z]+", "queued as QID", ln)
        out.append(ln)
    return out


def both(tmp_base, agent, pki, **kw):
    ours = run(os.path.join(tmp_base, "agent"), agent, pki, **kw)
    stock = run(os.path.join(tmp_base, "stock"), None, pki, **kw)
    assert normalise(ours.texts) == normalise(stock.texts), "\nours:  %s\nstock: %s" % (
        "\n       ".join(ours.texts), "\n       ".join(stock.texts))
    assert ours.queue == stock.queue
    for name in ours.peers:
        assert ([s.commands for s in ours.peers[name]]
                == [s.commands for s in stock.peers[name]]), name
    assert ours.proxy_connects == stock.proxy_connects
    return ours, stock


def _uses(delivered):
    return [int(m.group(1)) if m else 1
            for m in (re.search(r"conn_use=(\d+)", t) for _p, t in delivered)]


# ---------------------------------------------------------------------------

@pytest.mark.parametrize("max_use", ["100", "1"], ids=["same-process", "next-process"])
def test_two_messages_one_tls_connection(tmp_base, agent, pki, max_use):
    """smtp_tls_connection_reuse = yes: both messages over one TCP connection
    and one TLS handshake (made by tlsproxy); the second delivery, with
    max_use = 1 in another agent process, logs the "reused" summary and
    conn_use=2.  Without the parameter (test_reuse_off_is_unchanged) the
    same scenario takes two connections."""
    ours, stock = both(tmp_base, agent, pki, rcpts=["bob@dest.test.invalid"] * 2,
                       main_cf={"smtp_tls_security_level": "verify",
                                "smtp_tls_verify_cert_match": SERVER_NAME,
                                "smtp_tls_connection_reuse": "yes",
                                "smtp_tls_loglevel": "0"},
                       smtp_args=["-o", "max_use=" + max_use])
    for r in (ours, stock):
        (sessions,) = [r.peers["a"]]
        assert len(sessions) == 1                         # one TCP connection for both
        assert len(sessions[0].messages) == 2
        cmds = sessions[0].commands
        assert cmds.count("STARTTLS") == 1 and cmds.count("RSET") == 1
        assert "QUIT" not in cmds                          # still cached at the end
        assert r.proxy_connects == 1                       # one handshake, by tlsproxy
        assert _uses(r.delivered()) == [1, 2]
        pids = [p for p, _t in r.delivered()]
        assert (pids[0] != pids[1]) == (max_use == "1")
    # smtp(8) itself logs the summary from tlsproxy's report, at any smtp_tls_loglevel
    n = normalise(ours.texts)
    assert n[0].startswith("Verified TLS connection established to 127.0.0.1[127.0.0.1]:PORT: ")
    assert n[2].startswith("Verified TLS connection reused to 127.0.0.1[127.0.0.1]:PORT: ")
    assert n[2].split(": ", 1)[1] == n[0].split(": ", 1)[1]
    assert "conn_use=2" in n[3] and "conn_use" not in n[1]
    assert len(n) == 4


def test_policy_map_connection_reuse_for_one_destination(tmp_base, agent, pki):
    """connection_reuse=yes in smtp_tls_policy_maps for destination A only
    (smtp_tls_connection_reuse = no): A's two messages share one connection
    through tlsproxy; B's TLS runs in the agent, is not cached, and each of
    its messages takes its own connection, ending with QUIT."""
    ours, stock = both(
        tmp_base, agent, pki,
        rcpts=["x@a.test.invalid", "y@b.test.invalid", "x@a.test.invalid",
               "y@b.test.invalid"],
        peer_names=("a", "b"), transport={"a.test.invalid": "a", "b.test.invalid": "b"},
        main_cf={"smtp_tls_security_level": "may", "smtp_tls_loglevel": "1",
                 "smtp_tls_policy_maps": "inline:{ {[127.0.0.1]:PORT_a = encrypt "
                                         "connection_reuse=yes} }"})
    for r in (ours, stock):
        a, b = r.peers["a"], r.peers["b"]
        assert [len(s.messages) for s in a] == [2]
        assert [len(s.messages) for s in b] == [1, 1]
        assert all(s.commands[-1] == "QUIT" for s in b)
        assert r.proxy_connects == 1
        assert _uses(r.delivered()) == [1, 1, 2, 1]
    n = normalise(ours.texts)
    assert sum("TLS connection established" in t for t in n) == 3      # A once, B twice
    assert sum("TLS connection reused" in t for t in n) == 1


def test_session_found_by_address_under_another_nexthop(tmp_base, agent, pki):
    """The second message goes to nexthop [localhost]:PORT, the first went to
    [127.0.0.1]:PORT: the lookup by destination misses, the lookup by
    address, port and TLS level finds the tlsproxy session; the "reused"
    line names the host the session was made for (its TLS summary)."""
    ours, stock = both(
        tmp_base, agent, pki, rcpts=["x@a.test.invalid", "y@b.test.invalid"],
        transport={"a.test.invalid": "a", "b.test.invalid": "a@localhost"},
        main_cf={"smtp_tls_security_level": "may", "smtp_tls_connection_reuse": "yes",
                 "smtp_host_lookup": "native",
                 "smtp_connection_cache_destinations": "127.0.0.1, localhost"})
    for r in (ours, stock):
        assert [len(s.messages) for s in r.peers["a"]] == [2]
        assert _uses(r.delivered()) == [1, 2]
    n = normalise(ours.texts)
    assert n[2].startswith("Trusted TLS connection reused to 127.0.0.1[127.0.0.1]:PORT: ")
    assert "to=<y@b.test.invalid>, relay=localhost[127.0.0.1]:PORT, conn_use=2" in n[3]


def _level_case(case, pki):
    if case == "fingerprint-cert":
        return {"smtp_tls_security_level": "fingerprint",
                "smtp_tls_fingerprint_cert_match": fingerprint(pki.cert("good"))}
    if case == "fingerprint-pkey":
        return {"smtp_tls_security_level": "fingerprint",
                "smtp_tls_fingerprint_cert_match": fingerprint(pki.cert("good"), pkey=True)}
    if case == "trust-anchor-file":
        return {"smtp_tls_security_level": "verify", "smtp_tls_verify_cert_match": SERVER_NAME,
                "smtp_tls_CAfile": "", "smtp_tls_trust_anchor_file": pki.ca}
    assert case == "name-mismatch"
    return {"smtp_tls_security_level": "verify", "smtp_tls_verify_cert_match": "other.invalid"}


@pytest.mark.parametrize("case", ["fingerprint-cert", "fingerprint-pkey", "trust-anchor-file",
                                  "name-mismatch"])
def test_certificate_checks_through_tlsproxy(tmp_base, agent, pki, case):
    """What tlsproxy needs to authenticate the server travels in the request
    (fingerprints and trust anchors as TLSA-style records, match names), and
    the agent enforces the result: "Verified" where the fingerprint or the
    trust anchor (the only trust source here) matches, "Server certificate
    not verified" (4.7.5, QUIT through the proxy) where the name does not."""
    cf = {"smtp_tls_connection_reuse": "yes", "smtp_tls_loglevel": "0"}
    cf.update(_level_case(case, pki))
    ok = case != "name-mismatch"
    ours, stock = both(tmp_base, agent, pki, rcpts=["bob@dest.test.invalid"] * (2 if ok else 1),
                       main_cf=cf)
    n = normalise(ours.texts)
    if ok:
        assert n[0].startswith("Verified TLS connection established")
        assert n[2].startswith("Verified TLS connection reused") and "conn_use=2" in n[3]
        assert [len(s.messages) for s in ours.peers["a"]] == [2]
    else:
        assert n[0].startswith("Untrusted TLS connection established")
        assert "status=deferred (Server certificate not verified)" in n[1]
        assert ours.peers["a"][0].commands[-1] == "QUIT"
        assert ours.queue.get("deferred") == 1


def test_no_tlsproxy_service(tmp_base, agent, pki):
    """Reuse on, but no tlsproxy in master.cf: stock's warning, and the
    delivery defers with "Cannot start TLS: handshake failure" (no fallback
    to in-process TLS); the connection is dropped without QUIT."""
    ours, stock = both(tmp_base, agent, pki, rcpts=["bob@dest.test.invalid"], tlsproxy=False,
                       main_cf={"smtp_tls_security_level": "may",
                                "smtp_tls_connection_reuse": "yes"})
    assert normalise(ours.texts) == [
        "warning: connect to private/tlsproxy service: No such file or directory",
        "QID: to=<bob@dest.test.invalid>, relay=127.0.0.1[127.0.0.1]:PORT, delay=D, "
        "dsn=4.7.5, status=deferred (Cannot start TLS: handshake failure)"]
    assert [s.commands for s in ours.peers["a"]] == [["EHLO sender.test.invalid", "STARTTLS"]]


def test_reuse_off_is_unchanged(tmp_base, agent, pki):
    """smtp_tls_connection_reuse = no (the default) with connection caching
    on: in-process TLS, no tlsproxy, no reuse; every message takes its own
    connection and the session ends with QUIT, as with stock."""
    ours, stock = both(tmp_base, agent, pki, rcpts=["bob@dest.test.invalid"] * 2,
                       main_cf={"smtp_tls_security_level": "verify",
                                "smtp_tls_verify_cert_match": SERVER_NAME,
                                "smtp_tls_loglevel": "1"})
    for r in (ours, stock):
        sessions = r.peers["a"]
        assert [len(s.messages) for s in sessions] == [1, 1]
        assert all(s.commands[-1] == "QUIT" for s in sessions)
        assert r.proxy_connects == 0
        assert _uses(r.delivered()) == [1, 1]
    n = normalise(ours.texts)
    assert sum("Verified TLS connection established" in t for t in n) == 2
    assert not any("reused" in t for t in n)
