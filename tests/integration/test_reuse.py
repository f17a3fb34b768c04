"""Connection reuse through scache(8): a real private Postfix (its scache in
master.cf), this agent, and a scripted peer that counts TCP sessions."""

from __future__ import annotations

import os
import re
import socket
import time


from postfix_smtp.testing.instance import PostfixInstance
from postfix_smtp.testing.peer import PeerScript, SmtpPeer
from test_delivery import MESSAGE, RCPT, SENDER

# until /tmp/reuse-delivery.patch (delivery.py, settings.py) is merged

SENT = re.compile(r"postfix/smtp\[\d+\]: \w+: to=<[^>]*>, .*status=sent")
CACHE_CF = {"smtp_connection_cache_destinations": "127.0.0.1",
            "smtp_connection_cache_time_limit": "20s", "connection_cache_ttl_limit": "30s",
            "minimal_backoff_time": "300s", "maximal_backoff_time": "300s"}


class Run:
    def __init__(self, base, agent, script=None, main_cf=None):
        os.makedirs(base, mode=0o755, exist_ok=True)
        self.peer = SmtpPeer(script or PeerScript(), max_lifetime=120)
        self.peer.start()
        cf = dict(CACHE_CF)
        cf.update(main_cf or {})
        self.inst = PostfixInstance(base, relayhost="[127.0.0.1]:%d" % self.peer.port,
                                    agent=agent, main_cf=cf, max_lifetime=300)
        self.inst.start()
        self.sent = 0

    def send_one(self, wait=True):
        self.inst.sendmail(MESSAGE, SENDER, [RCPT])
        self.sent += 1
        if wait:
            self.inst.wait_log(SENT.pattern, timeout=30, count=self.sent)

    def sent_lines(self):
        return [ln for ln in self.inst.log_lines() if SENT.search(ln)]

    def close(self):
        self.inst.stop()
        self.peer.stop()


def _uses(lines):
    return [int(m.group(1)) if m else 1
            for m in (re.search(r"conn_use=(\d+)", ln) for ln in lines)]


def _sequential(base, agent, n, main_cf=None, script=None):
    r = Run(base, agent, script, main_cf)
    try:
        for _ in range(n):
            r.send_one()
        assert r.inst.wait_queue_empty(timeout=30)
        return r.peer.sessions, r.sent_lines(), r.inst.log_lines()
    finally:
        r.close()


def test_second_message_reuses_the_cached_connection(tmp_base, agent_wrapper):
    sessions, lines, _log = _sequential(os.path.join(tmp_base, "a"), agent_wrapper, 2)
    assert sum(len(s.messages) for s in sessions) == 2
    assert len(sessions) == 1                     # one TCP connection at the peer for both
    assert _uses(lines) == [1, 2]
    assert "conn_use=2" in lines[1] and "conn_use" not in lines[0]
    cmds = sessions[0].commands
    assert cmds.count("RSET") == 1                # the probe before the reuse
    assert "QUIT" not in cmds[:cmds.index("RSET")]


def test_many_messages_fewer_connections_like_stock(tmp_base, agent_wrapper):
    def run(sub, agent):
        r = Run(os.path.join(tmp_base, sub), agent)
        try:
            for _ in range(12):
                r.send_one(wait=False)
            r.inst.wait_log(SENT.pattern, timeout=60, count=12)
            assert r.inst.wait_queue_empty(timeout=30)
            return r.peer.sessions, r.sent_lines()
        finally:
            r.close()
    ours, ours_lines = run("agent", agent_wrapper)
    stock, stock_lines = run("stock", None)
    assert sum(len(s.messages) for s in ours) == 12
    assert len(ours) < 12 and len(stock) < 12
    assert any("conn_use=" in ln for ln in ours_lines)
    assert any("conn_use=" in ln for ln in stock_lines)


def test_connection_closed_by_peer_while_cached_costs_no_mail(tmp_base, agent_wrapper):
    r = Run(os.path.join(tmp_base, "a"), agent_wrapper)
    try:
        r.send_one()
        first = r.peer.sessions[0]
        time.sleep(0.3)
        with r.peer._lock:
            socks = list(r.peer._socks)
        for s in socks:                            # the server hangs up on the idle session
            s.shutdown(socket.SHUT_RDWR)
        assert first.closed.wait(5)
        r.send_one()
        assert r.inst.wait_queue_empty(timeout=30)
        sessions, lines = r.peer.sessions, r.sent_lines()
    finally:
        r.close()
    assert len(sessions) == 2
    assert [len(s.messages) for s in sessions] == [1, 1]
    assert "QUIT" not in sessions[0].commands     # it had been cached
    assert _uses(lines) == [1, 1]                  # the second went over a fresh connection
    assert not any("status=deferred" in ln for ln in r.inst.log_lines())


def test_failed_rset_probe_discards_the_session(tmp_base, agent_wrapper):
    def before(session, stage, line, reply):
        if stage == "rset":
            return "421 4.3.2 going away"
        return None
    sessions, lines, log = _sequential(os.path.join(tmp_base, "a"), agent_wrapper, 2,
                                       script=PeerScript(before_reply=before))
    assert len(sessions) == 2 and [len(s.messages) for s in sessions] == [1, 1]
    assert _uses(lines) == [1, 1]
    assert not any("status=deferred" in ln for ln in log)


def test_reuse_count_limit(tmp_base, agent_wrapper):
    sessions, lines, _log = _sequential(os.path.join(tmp_base, "a"), agent_wrapper, 4,
                                        main_cf={"smtp_connection_reuse_count_limit": "1"})
    assert [len(s.messages) for s in sessions] == [2, 2]
    assert _uses(lines) == [1, 2, 1, 2]
    for s in sessions:
        assert s.commands[-1] == "QUIT"           # expired: QUIT instead of caching


def test_destination_not_listed_and_on_demand_off_means_no_caching(tmp_base, agent_wrapper):
    sessions, lines, _log = _sequential(
        os.path.join(tmp_base, "a"), agent_wrapper, 3,
        main_cf={"smtp_connection_cache_destinations": "other.test.invalid",
                 "smtp_connection_cache_on_demand": "no"})
    assert [len(s.messages) for s in sessions] == [1, 1, 1]
    assert all(s.commands[-1] == "QUIT" for s in sessions)
    assert _uses(lines) == [1, 1, 1]


def test_protocol_error_session_is_not_cached(tmp_base, agent_wrapper):
    n = {"rcpt": 0}

    def before(session, stage, line, reply):
        if stage == "rcpt":
            n["rcpt"] += 1
            if n["rcpt"] == 1:
                return "501 5.5.4 Syntax error"
        return None
    r = Run(os.path.join(tmp_base, "a"), agent_wrapper, PeerScript(before_reply=before))
    try:
        r.inst.sendmail(MESSAGE, SENDER, [RCPT])
        r.inst.wait_log(r"postfix/smtp\[\d+\]: \w+: to=<", timeout=30)
        r.send_one()
        assert r.inst.wait_queue_empty(timeout=30)
        r.peer.wait_messages(2, timeout=10)
        sessions = r.peer.sessions
    finally:
        r.close()
    # the session with the 501 (a protocol error) ends in QUIT and is not reused;
    # the later deliveries (the bounce notice, the second message) use new
    # connections, which may or may not share one another (cache timing)
    assert sessions[0].commands[-1] == "QUIT"
    assert 2 <= len(sessions) <= 3
    assert sum(len(s.messages) for s in sessions[1:]) == 2
