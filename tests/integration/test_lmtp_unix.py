"""LMTP over a UNIX-domain socket (``lmtp:unix:private/testlmtp``): stock lmtp(8) vs this agent.

The most common LMTP setup (``virtual_transport = lmtp:unix:private/dovecot-lmtp``).
Each scenario runs once with the stock lmtp(8) and once with this agent as
the ``lmtp`` service of a private Postfix instance whose default_transport
is ``lmtp:unix:private/testlmtp``; a scripted LMTP peer listens on that
socket inside the instance's queue directory (owned by postfix, as a real
LMTP server's socket would be).  The two runs must agree on the agent's log
lines (relay=, dsn=, status=, reason, warnings), the bytes the peer
received, the sessions and the queue outcome.

What stock 3.7.11 does (smtp_connect.c smtp_connect_local(),
smtp_connect_unix(), smtp_session_alloc()), checked here:

- the server is named ``myhostname[PATH]`` without a port, in relay= and
  in every text;
- every error is final: 5xx bounces, 4xx defers, at once;
- no socket: ``connect to mx.test.invalid[private/testlmtp]: No such file
  or directory`` (4.4.1, relay=none), with no separate info line;
- a path of 108 bytes or more: ``warning: unix-domain name too long: PATH``,
  4.3.5 "Server configuration error";
- lmtp_fallback_relay is ignored with a warning;
- TLS "may" is turned into "none" with a warning;
- sessions are cached under the path (lmtp_connection_cache_destinations
  matches the path): a second message goes over the same connection after
  an RSET, logged with conn_use=2.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import time

import pytest

from postfix_smtp.testing.instance import PostfixInstance
from postfix_smtp.testing.peer import PeerScript, SmtpPeer, UnixSmtpPeer
from postfix_smtp.valueclass import replace

from test_delivery import normalise_line, normalise_wire

SENDER = "alice@src.test.invalid"
SOCK = "private/testlmtp"
MESSAGE = (b"From: Alice <alice@src.test.invalid>\n"
           b"Subject: lmtp over a unix-domain socket\n"
           b"Message-Id: <fixed-id@src.test.invalid>\n"
           b"\n"
           b"Hello.\n"
           b".a line that starts with a dot\n")
RCPTS = ("ok@dest.test.invalid", "bad@dest.test.invalid", "later@dest.test.invalid")
LMTP_LINE = re.compile(r"postfix/lmtp\[\d+\]: (.*)$")
RELAY = "mx.test.invalid[private/testlmtp]"
BASE_CF = {
    "minimal_backoff_time": "300s", "maximal_backoff_time": "300s",
    "default_transport": "lmtp:unix:" + SOCK,
    # bounces to the sender go nowhere (not to the LMTP peer)
    "transport_maps": "inline:{src.test.invalid=discard:}",
}



class UnixLmtpPeer(UnixSmtpPeer):
    """The scripted LMTP server on a UNIX-domain socket at ``path``, owned by
    postfix (mode 0600) so that the unprivileged agent may connect."""

    def __init__(self, script: PeerScript, path: str, max_lifetime: float = 120) -> None:
        super().__init__(script, path, owner="postfix", max_lifetime=max_lifetime)


def _rcpt(line: str) -> str:
    return "550 5.1.1 no such user" if "<bad@" in line else "250 2.1.5 Ok"


def _dot(line: str) -> str:
    return "452 4.2.2 mailbox full" if "<later@" in line else "250 2.0.0 delivered"


def lmtp_script(**kw) -> PeerScript:
    args = dict(lmtp=True, greeting="220 peer.test.invalid LMTP", rcpt_reply=_rcpt,
                dot_reply=_dot)
    args.update(kw)
    return PeerScript(**args)


@pytest.fixture
def lmtp_agent(agent_wrapper):
    """This checkout's agent as lmtp(8)."""
    return replace(agent_wrapper, personality="lmtp")


class Outcome:
    def __init__(self, sessions, lines, queue, log):
        self.sessions = sessions
        self.lines = lines            # lmtp(8) lines, queue ids cut off
        self.queue = queue            # queue name -> number of files
        self.log = log

    def to_lines(self) -> list:
        return [normalise_line(l) for l in self.lines if " to=<" in l]

    def others(self) -> list:
        """lmtp(8) lines that are not per-recipient lines (warnings, infos)."""
        return [l for l in self.lines if " to=<" not in l]

    def wire(self) -> list:
        return [normalise_wire(s.client_bytes) for s in self.sessions]


def run(base: str, agent, script=None, main_cf=None, socket_state="listen",
        messages=(RCPTS,), path=SOCK) -> Outcome:
    """One instance (agent None: stock lmtp(8)); socket_state: "listen",
    "missing" or "refused" (a socket file nobody listens on).  Each message
    (a recipient tuple) is sent after the previous one was logged and
    left the active queue."""
    os.makedirs(base, mode=0o755, exist_ok=True)
    cf = dict(BASE_CF)
    cf.update(main_cf or {})
    inst = PostfixInstance(base, agent=agent, agent_name="lmtp" if agent else "smtp",
                           main_cf=cf, max_lifetime=300)
    peer = None
    try:
        inst.start()
        sock_path = os.path.join(inst.queue_dir, path)
        if socket_state == "listen":
            peer = UnixLmtpPeer(script or lmtp_script(), sock_path)
            peer.start()
        elif socket_state == "refused":
            dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            dead.bind(sock_path)
            dead.close()
            pf = pwd.getpwnam("postfix")
            os.chown(sock_path, pf.pw_uid, pf.pw_gid)
        expected = 0
        for rcpts in messages:
            expected += len(rcpts)
            inst.sendmail(MESSAGE, SENDER, list(rcpts))
            hits = inst.wait_log(r"postfix/lmtp\[\d+\]: \w+: to=<", timeout=30, count=expected)
            assert len(hits) >= expected, "\n".join(inst.log_lines()[-30:])
            # settled: the agent has answered qmgr, so a session it keeps
            # is already in scache(8) when the next message arrives
            ok = inst.wait_queue_empty(timeout=30, allow_deferred=True)
            assert ok, "queue not settled: %r" % inst.queue_ids()
        time.sleep(0.3)          # let the agent finish its QUIT
        inst.stop()              # also closes a session cached in scache(8)
        if peer is not None:
            n = len(peer.sessions)
            assert peer.wait_sessions(n, timeout=15), "an LMTP session did not end"
        lines = [m.group(1) for m in map(LMTP_LINE.search, inst.log_lines()) if m]
        queue = {q: len(ids) for q, ids in inst.queue_ids().items() if ids}
        return Outcome(peer.sessions if peer else [], lines, queue, inst.log_lines())
    finally:
        inst.stop()
        if peer is not None:
            peer.stop()


def both(tmp_base, agent, **kw):
    ours = run(os.path.join(tmp_base, "agent"), agent, **kw)
    stock = run(os.path.join(tmp_base, "stock"), None, **kw)
    return ours, stock


# ---------------------------------------------------------------------------

def test_per_recipient_replies_log_wire_and_queue_as_stock(tmp_base, lmtp_agent):
    """250 / 550 to RCPT / 452 after DATA over private/testlmtp: same lines
    (relay=mx.test.invalid[private/testlmtp], no port), same LHLO dialog and
    content, one deferred message holding the 4xx recipient."""
    ours, stock = both(tmp_base, lmtp_agent)
    assert ours.to_lines() == stock.to_lines(), (ours.lines, stock.lines)
    assert ours.others() == stock.others() == []
    assert ours.wire() == stock.wire()
    assert ours.queue == stock.queue == {"deferred": 1}
    # what stock does, spelled out (so that the comparison cannot pass vacuously)
    by = {d["to"]: d for d in stock.to_lines()}
    assert by["ok@dest.test.invalid"]["relay"] == RELAY
    assert by["ok@dest.test.invalid"]["status"] == "sent"
    assert by["bad@dest.test.invalid"]["dsn"] == "5.1.1"
    assert by["bad@dest.test.invalid"]["status"] == "bounced"
    assert by["bad@dest.test.invalid"]["reason"] == (
        "host %s said: 550 5.1.1 no such user (in reply to RCPT TO command)" % RELAY)
    assert by["later@dest.test.invalid"]["reason"] == (
        "host %s said: 452 4.2.2 mailbox full (in reply to end of DATA command)" % RELAY)
    assert by["later@dest.test.invalid"]["status"] == "deferred"
    assert len(stock.sessions) == 1
    assert stock.sessions[0].commands[0] == "LHLO mx.test.invalid"


def test_opportunistic_tls_downgraded_as_stock(tmp_base, lmtp_agent):
    """lmtp_tls_security_level = may over a UNIX-domain socket: stock warns
    and sends no STARTTLS although the server offers it (an agent that
    ignored the downgrade would send STARTTLS: different wire bytes)."""
    kw = dict(script=lmtp_script(offer_starttls=True), messages=(("ok@dest.test.invalid",),),
              main_cf={"lmtp_tls_security_level": "may"})
    ours, stock = both(tmp_base, lmtp_agent, **kw)
    warning = ("warning: smtp_connect_local: opportunistic TLS encryption is not "
               "appropriate for unix-domain destinations.")
    assert stock.others() == [warning]
    assert ours.others() == stock.others()
    assert ours.to_lines() == stock.to_lines()
    assert stock.to_lines()[0]["status"] == "sent"
    assert ours.wire() == stock.wire()
    assert b"STARTTLS" not in stock.wire()[0]


@pytest.mark.parametrize("state, errtext", [("missing", "No such file or directory"),
                                            ("refused", "Connection refused")])
def test_connect_failure_deferred_as_stock(tmp_base, lmtp_agent, state, errtext):
    """No socket, or nobody listening: 4.4.1 with stock's text, relay=none,
    no info line; lmtp_fallback_relay is not tried, only warned about."""
    kw = dict(socket_state=state, messages=(("ok@dest.test.invalid",),),
              main_cf={"lmtp_fallback_relay": "[127.0.0.1]:9, backup.test.invalid:24"})
    ours, stock = both(tmp_base, lmtp_agent, **kw)
    assert stock.others() == ['warning: ignoring "lmtp_fallback_relay = [127.0.0.1]:9, '
                              'backup.test.invalid:24" setting for non-TCP connections']
    assert ours.others() == stock.others()
    assert ours.to_lines() == stock.to_lines()
    line = stock.to_lines()[0]
    assert (line["relay"], line["dsn"], line["status"]) == ("none", "4.4.1", "deferred")
    assert line["reason"] == "connect to %s: %s" % (RELAY, errtext)
    assert ours.queue == stock.queue == {"deferred": 1}


def test_path_too_long_as_stock(tmp_base, lmtp_agent):
    """A path of 108 bytes (sizeof sun_path): warning, 4.3.5 "Server
    configuration error"."""
    path = "private/" + "x" * 100
    kw = dict(socket_state="missing", messages=(("ok@dest.test.invalid",),), path=path,
              main_cf={"default_transport": "lmtp:unix:" + path})
    ours, stock = both(tmp_base, lmtp_agent, **kw)
    assert stock.others() == ["warning: unix-domain name too long: " + path]
    assert ours.others() == stock.others()
    assert ours.to_lines() == stock.to_lines()
    line = stock.to_lines()[0]
    assert (line["relay"], line["dsn"], line["reason"]) == ("none", "4.3.5",
                                                            "Server configuration error")


def test_tls_policy_error_as_stock(tmp_base, lmtp_agent):
    """An invalid lmtp_tls_policy_maps entry for the path: stock's "TLS
    policy lookup error for HOST/PATH" wording, no connection, 4.7.5."""
    kw = dict(messages=(("ok@dest.test.invalid",),),
              main_cf={"lmtp_tls_policy_maps": "inline:{%s=bogus}" % SOCK})
    ours, stock = both(tmp_base, lmtp_agent, **kw)
    assert ("warning: TLS policy lookup error for mx.test.invalid/private/testlmtp: "
            "client TLS configuration problem") in stock.others()
    assert ours.others() == stock.others()
    assert ours.to_lines() == stock.to_lines()
    assert stock.to_lines()[0]["dsn"] == "4.7.5"
    assert ours.sessions == stock.sessions == []


def test_connection_reused_under_the_path_as_stock(tmp_base, lmtp_agent):
    """lmtp_connection_cache_destinations = private/testlmtp: the second
    message goes over the first connection (RSET probe, conn_use=2), as
    stock does.  Without caching there would be two sessions (each delivery
    ends with QUIT), which the session count below rules out."""
    kw = dict(messages=(("ok@dest.test.invalid",), ("ok2@dest.test.invalid",)),
              main_cf={"lmtp_connection_cache_destinations": SOCK,
                       "lmtp_connection_cache_time_limit": "20s"})
    ours, stock = both(tmp_base, lmtp_agent, **kw)
    assert len(stock.sessions) == 1
    assert len(ours.sessions) == 1
    assert ours.to_lines() == stock.to_lines()
    assert "conn_use=2" in [l for l in stock.lines if "to=<ok2@" in l][0]
    assert "conn_use=2" in [l for l in ours.lines if "to=<ok2@" in l][0]
    assert ours.wire() == stock.wire()
    assert stock.sessions[0].commands.count("RSET") == 1
    assert ours.others() == stock.others() == []


def test_inet_prefix_as_stock(tmp_base, lmtp_agent):
    """lmtp:inet:host:port (TCP): "inet:" comes off the nexthop."""
    def go(base, agent):
        peer = SmtpPeer(lmtp_script(), max_lifetime=120)
        peer.start()
        try:
            cf = {"default_transport": "lmtp:inet:127.0.0.1:%d" % peer.port}
            return run(base, agent, socket_state="none", messages=(("ok@dest.test.invalid",),),
                       main_cf=cf), peer
        finally:
            peer.stop()
    ours, opeer = go(os.path.join(tmp_base, "agent"), lmtp_agent)
    stock, speer = go(os.path.join(tmp_base, "stock"), None)
    assert ours.to_lines() == stock.to_lines()
    assert stock.to_lines()[0]["relay"] == "127.0.0.1[127.0.0.1]:PORT"
    assert stock.to_lines()[0]["status"] == "sent"
    assert [normalise_wire(s.client_bytes) for s in opeer.sessions] == \
        [normalise_wire(s.client_bytes) for s in speer.sessions]


def test_obsolete_lmtp_assume_final_like_stock(tmp_base, lmtp_agent):
    """lmtp_assume_final = yes: stock's warning (specify flags=X instead);
    the delivery itself is unchanged (without the parameter: no warning)."""
    kw = dict(script=lmtp_script(ehlo_lines=["peer.test.invalid", "PIPELINING"]),
              messages=(("ok@dest.test.invalid",),),
              main_cf={"lmtp_assume_final": "yes"})
    ours, stock = both(tmp_base, lmtp_agent, **kw)
    warning = ('warning: lmtp_assume_final is obsolete; instead, specify "flags=X" '
               'in master.cf')
    assert warning in stock.others(), stock.others()
    assert ours.others() == stock.others()
    assert ours.to_lines() == stock.to_lines()
    assert ours.wire() == stock.wire()
