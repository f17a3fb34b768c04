"""Tests of the test harness itself, with the stock smtp(8) as delivery agent."""

from __future__ import annotations

import os
import socket
import subprocess
import time

from postfix_smtp.testing.instance import PostfixInstance, SmtpSink, stock_daemon_dir
from postfix_smtp.testing.peer import PeerScript, SmtpPeer, unstuff

SENDER = "sender@src.test.invalid"
RCPT = "rcpt@dest.test.invalid"

MESSAGE = (b"From: <sender@src.test.invalid>\n"
           b"To: <rcpt@dest.test.invalid>\n"
           b"Subject: harness test\n"
           b"\n"
           b"first line\n"
           b".a line that starts with a dot\n"
           b".\n"
           b"last line\n")


class ExecWrapper:
    """Duck-typed stand-in for postfix_smtp.install.Wrapper: a sh script that
    execs the stock smtp(8), to exercise the per-instance daemon_directory."""

    def __init__(self, program: str):
        self.program = program

    def write(self, path: str) -> None:
        with open(path, "w") as f:
            f.write('#!/bin/sh\nexec %s "$@"\n' % self.program)
        os.chmod(path, 0o755)


def test_sendmail_to_peer_is_delivered(tmp_base):
    with SmtpPeer() as peer, PostfixInstance(tmp_base, relayhost=peer.address) as pf:
        pf.sendmail(MESSAGE, SENDER, [RCPT])
        assert pf.wait_queue_empty(timeout=20), pf.queue_ids()
        sent = pf.expect_log(r"status=sent", timeout=10)
        assert "relay=127.0.0.1[127.0.0.1]:%d" % peer.port in sent[0]
        assert peer.wait_messages(1, timeout=5)
        session = peer.sessions[0]
        assert session.helo == "mx.test.invalid"
        env = session.envelopes[0]
        assert env.mail_from.startswith("MAIL FROM:<%s>" % SENDER)
        assert [r.split()[1] for r in env.rcpts] == ["TO:<%s>" % RCPT]
        assert env.accepted == env.rcpts
        wire = session.messages[0]
        assert b"Subject: harness test\r\n" in wire
        # dot-stuffing as seen on the wire, and undone by unstuff()
        assert b"\r\n..a line that starts with a dot\r\n..\r\nlast line\r\n" in wire
        assert wire.endswith(b"last line\r\n")
        assert b"\r\n.a line that starts with a dot\r\n.\r\nlast line\r\n" in unstuff(wire)
        assert b"\r\n.\r\n" in session.client_bytes   # end of data
        assert any(d == "S" and b"354 " in b for d, b in session.transcript)


def test_smtp_submit_and_daemon_dir_agent(tmp_base):
    """smtp_submit returns the queue id; an agent in the per-instance
    daemon_directory (here a wrapper around the stock smtp) delivers."""
    agent = ExecWrapper(os.path.join(stock_daemon_dir(), "smtp"))
    with SmtpPeer() as peer, PostfixInstance(tmp_base, relayhost=peer.address,
                                             agent=agent) as pf:
        assert pf.daemon_dir == os.path.join(tmp_base, "libexec")
        assert os.path.islink(os.path.join(pf.daemon_dir, "qmgr"))
        qid = pf.smtp_submit(MESSAGE, SENDER, [RCPT, "second@dest.test.invalid"],
                             mail_params="BODY=8BITMIME",
                             rcpt_params={RCPT: "NOTIFY=SUCCESS,FAILURE"})
        assert qid
        assert pf.wait_queue_empty(timeout=20), pf.queue_ids()
        sent = pf.expect_log(r"%s: to=<.*status=sent" % qid, timeout=10, count=2)
        assert len(sent) == 2
        assert peer.wait_messages(1, timeout=5)
        env = peer.sessions[0].envelopes[0]
        assert "BODY=8BITMIME" in env.mail_from
        notify = [r for r in env.rcpts if RCPT in r][0]
        assert "NOTIFY=SUCCESS,FAILURE" in notify
        assert len(env.rcpts) == 2
        assert b"\r\n..a line that starts with a dot\r\n" in peer.messages[0]


def test_sink_inject_many(tmp_base):
    with SmtpSink(os.path.join(tmp_base, "sink")) as sink, \
            PostfixInstance(tmp_base, relayhost=sink.address) as pf:
        pf.inject_many(50, size=500, sessions=4)
        assert pf.wait_queue_empty(timeout=30), pf.queue_ids()
        assert len(pf.expect_log(r"status=sent", timeout=10, count=50)) == 50
        assert sink.wait_count(50, timeout=10), sink.count
        with open(sink.messages()[0], "rb") as f:
            assert b"From:" in f.read()
        assert pf.log_status_counts()["sent"] == 50


def test_rcpt_450_leaves_message_deferred(tmp_base):
    script = PeerScript(rcpt_reply="450 4.2.0 <rcpt>: try again later")
    with SmtpPeer(script) as peer, PostfixInstance(tmp_base, relayhost=peer.address) as pf:
        qid = pf.smtp_submit(MESSAGE, SENDER, [RCPT])
        assert pf.wait_queue_empty(timeout=20, allow_deferred=True)
        assert pf.queue_ids()["deferred"] == [qid]
        line = pf.expect_log(r"%s: .*status=deferred" % qid, timeout=10)[0]
        assert "try again later" in line
        assert not pf.wait_queue_empty(timeout=0)
        text = pf.postcat(qid)
        assert SENDER in text and RCPT in text and "Subject: harness test" in text
        assert peer.wait_sessions(1, timeout=10)
        assert peer.sessions[0].messages == []


def test_stop_is_idempotent_and_leaves_nothing(tmp_base):
    pf = PostfixInstance(tmp_base, relayhost="[127.0.0.1]:9")
    pf.start()
    try:
        mpid = pf.master_pid
        assert mpid and pf.processes()
    finally:
        pf.stop()
    pf.stop()
    assert pf.master_pid is None
    assert pf.processes() == []


# --- the peer alone -------------------------------------------------------


def _recv_until(sock, marker, timeout=5):
    sock.settimeout(timeout)
    data = b""
    while marker not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_peer_pipelined_lmtp():
    script = PeerScript(lmtp=True, rcpt_reply=lambda line: "550 5.1.1 no" if "bad" in line
                        else "250 2.1.5 Ok")
    with SmtpPeer(script, max_lifetime=20) as peer:
        s = socket.create_connection(("127.0.0.1", peer.port), timeout=5)
        try:
            assert _recv_until(s, b"\r\n").startswith(b"220 ")
            s.sendall(b"LHLO c\r\nmail FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<bad@y>\r\n"
                      b"RCPT TO:<c@y>\r\nDATA\r\n")
            got = _recv_until(s, b"354 ")
            assert got.count(b"250 2.1.5") == 2 and b"550 5.1.1" in got
            s.sendall(b"Subject: x\r\n\r\n..dot\r\n.\r\nNOOP\r\nQUIT\r\n")
            got = _recv_until(s, b"221 ")
            # one reply per accepted recipient, then NOOP and QUIT
            assert got.count(b"250 2.0.0 Ok: queued as PEER") == 2
            assert got.index(b"221") > got.index(b"250 2.0.0 Ok\r\n")
        finally:
            s.close()
        assert peer.wait_sessions(1, timeout=5)
        sess = peer.sessions[0]
        assert sess.messages == [b"Subject: x\r\n\r\n..dot\r\n"]
        env = sess.envelopes[0]
        assert env.mail_from == "mail FROM:<a@x>"
        assert len(env.rcpts) == 3 and len(env.accepted) == 2


def test_peer_drop_and_delay():
    script = PeerScript(drop_after="rcpt", delay={"mail": 0.3})
    with SmtpPeer(script, max_lifetime=20) as peer:
        s = socket.create_connection(("127.0.0.1", peer.port), timeout=5)
        try:
            _recv_until(s, b"\r\n")
            t0 = time.monotonic()
            s.sendall(b"EHLO c\r\nMAIL FROM:<a@x>\r\n")
            got = _recv_until(s, b"250 2.1.0")
            assert time.monotonic() - t0 >= 0.25
            assert b"250-PIPELINING" in got and b"250 SMTPUTF8" in got
            s.sendall(b"RCPT TO:<b@y>\r\n")
            assert _recv_until(s, b"never") == b""     # closed without a reply
        finally:
            s.close()
        assert peer.wait_sessions(1, timeout=5)
        assert peer.sessions[0].dropped_at == "rcpt"


def test_agent_wrapper_importable_by_postfix(agent_wrapper):
    """The interpreter and source path the agent wrapper uses work for user postfix."""
    import pwd
    pf = pwd.getpwnam("postfix")
    env = {"LANG": "C"}
    if agent_wrapper.pythonpath:
        env["PYTHONPATH"] = agent_wrapper.pythonpath

    def drop():
        os.setgid(pf.pw_gid)
        os.setgroups([pf.pw_gid])
        os.setuid(pf.pw_uid)

    r = subprocess.run([agent_wrapper.python, "-c", "import postfix_smtp.install"],
                       env=env, cwd="/", preexec_fn=drop, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    assert r.returncode == 0, r.stdout
    assert "exec " in agent_wrapper.render()
