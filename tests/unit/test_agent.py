"""Component tests for postfix_smtp.agent.Agent: one qmgr connection, end to end.

Each test runs in a short temporary directory laid out like queue_directory
(``active/``, ``private/``), with fake bounce/defer/trace/verify services, a
scriptable SMTP peer on 127.0.0.1 and a fake qmgr driving ``Agent.serve`` over
a socketpair.  The assertions are what an operator would check: the reply
bytes qmgr reads, the ``D`` marks in the queue file, the requests bounce(8)
et al. received, the log lines, and what the SMTP server saw on the wire.

Specs: /work/shared/spec/postfix-ipc.md §3, §4, §6.2, §8;
queue-file.md §2.4, §6-7, §9; smtp-client.md §5.10.
"""

from __future__ import annotations

import re
import shutil
import socket
import tempfile
import time

import pytest

from postfix_smtp.ipc.attr import encode
from postfix_smtp.testing.fakes import (DEFER_REPLY, DELIVERY_ANNOUNCEMENT, SUCCESS_REPLY,
                                        FakeQmgr, FakeQueue, QmgrRecipient, ReportServices,
                                        make_agent)
from postfix_smtp.testing.peer import PeerScript, SmtpPeer

QID = "4384B210A35"
SENDER = "sender@example.com"
RCPT = "c@example.org"
BODY = [b"Subject: test", b"From: <sender@example.com>", b"", b"hello",
        b".leading dot", b"."]
#: BODY as the server must receive it: CRLF line ends, dot-stuffed.
WIRE_BODY = (b"Subject: test\r\nFrom: <sender@example.com>\r\n\r\nhello\r\n"
             b"..leading dot\r\n..\r\n")
DELAYS = r"delay=\d+(\.\d+)?, delays=\d+(\.\d+)?/\d+(\.\d+)?/\d+(\.\d+)?/\d+(\.\d+)?"


# ---------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture
def qdir(monkeypatch):
    """A short temporary queue_directory (AF_UNIX paths must stay < 108 bytes),
    made the current directory like master(8) does."""
    d = tempfile.mkdtemp(prefix="pfq-", dir="/tmp")
    monkeypatch.chdir(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def queue(qdir):
    return FakeQueue(qdir)


@pytest.fixture
def services(qdir):
    s = ReportServices(qdir, timeout=5.0).start()
    yield s
    s.stop()


@pytest.fixture
def peers():
    started = []

    def start(script: PeerScript | None = None) -> SmtpPeer:
        p = SmtpPeer(script or PeerScript(), max_lifetime=30)
        p.start()
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop(timeout=2)


def relay(peer: SmtpPeer) -> str:
    return "127.0.0.1[127.0.0.1]:%d" % peer.port


def run(agent, queue, nexthop, recipients=(RCPT,), flags=3, body=BODY, notify=None,
        qid=QID, **common):
    """Write the queue file, send the request, return (message, result, file before)."""
    notify = notify or {}
    msg = queue.write_message(qid, SENDER, list(recipients), body, notify=notify)
    before = queue.read(qid)
    rcpts = [QmgrRecipient(r, msg.rcpt_offsets[i], notify_flags=notify.get(r, 0))
             for i, r in enumerate(recipients)]
    nh = nexthop.address if isinstance(nexthop, SmtpPeer) else nexthop
    res = FakeQmgr().deliver(agent, queue_id=qid, message=msg, nexthop=nh,
                             recipients=rcpts, flags=flags, sender=SENDER, **common)
    assert res.agent_error is None, res.agent_error
    assert res.announcement == DELIVERY_ANNOUNCEMENT
    return msg, res, before


def only_marked(before: bytes, after: bytes, offsets) -> bool:
    """True when ``after`` is ``before`` with exactly the R bytes at ``offsets`` set to D."""
    expect = bytearray(before)
    for off in offsets:
        assert before[off:off + 1] == b"R"
        expect[off] = ord("D")
    return bytes(expect) == after


def append_request(rcpt, offset, dsn, flags=0, notify=0, original=None):
    """The exact APPEND list of postfix-ipc.md §4.1 as a list of pairs."""
    return ([("nrequest", "0"), ("flags", str(flags)), ("queue_id", QID),
             ("original_recipient", rcpt if original is None else original),
             ("recipient", rcpt), ("offset", str(offset)),
             ("dsn_orig_rcpt", "rfc822;" + rcpt), ("notify_flags", str(notify))]
            + [(k, dsn.get(k, "")) for k in ("status", "diag_type", "diag_text", "mta_type",
                                             "mta_mname", "action", "reason")])


def reply_bytes(status: int, **hop) -> bytes:
    pairs = [(k, hop.get(k, "")) for k in ("status", "diag_type", "diag_text", "mta_type",
                                           "mta_mname", "action", "reason")]
    return encode(pairs + [("status", status)])


def recipient_line(log, rcpt, rel, dsn, word, reason):
    rx = r"^%s: to=<%s>, relay=%s, %s, dsn=%s, status=%s \(%s\)$" % (
        QID, re.escape(rcpt), re.escape(rel), DELAYS, re.escape(dsn), word, re.escape(reason))
    return log.find(rx)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------
# the fake queue file itself (so the rest of the file can trust it)

SPEC_EXAMPLE_HEX = """
435f 2020 2020 2020 2020 2020 2020 3235 3620 2020 2020 2020 2020 2020 2020 3234
3420 2020 2020 2020 2020 2020 2020 2020 3120 2020 2020 2020 2020 2020 2020 2020
3020 2020 2020 2020 2020 2020 2020 3235 3620 2020 2020 2020 2020 2020 2020 2020
3054 1131 3739 3535 3534 3635 3420 3435 3639 3836 4116 6372 6561 7465 5f74 696d
653d 3137 3935 3535 3436 3534 4115 7265 7772 6974 655f 636f 6e74 6578 743d 6c6f
6361 6c46 0472 6f6f 7453 0b61 4078 2e65 7861 6d70 6c65 4120 6473 6e5f 6f72 6967
5f72 6370 743d 7266 6338 3232 3b62 4079 2e65 7861 6d70 6c65 4f0b 6240 792e 6578
616d 706c 6552 0b62 4079 2e65 7861 6d70 6c65 4d00 4e34 5265 6365 6976 6564 3a20
6279 206d 782e 6c61 622e 696e 7661 6c69 6420 2850 6f73 7466 6978 2c20 6672 6f6d
2075 7365 7269 6420 3029 4e36 0969 6420 3730 4132 3432 3132 3839 373b 2054 7565
2c20 3234 204e 6f76 2032 3032 3620 3231 3a31 303a 3534 202b 3030 3030 2028 5554
4329 4e0a 5375 626a 6563 743a 2074 4e37 4d65 7373 6167 652d 4964 3a20 3c32 3032
3631 3132 3432 3131 3035 342e 3730 4132 3432 3132 3839 3740 6d78 2e6c 6162 2e69
6e76 616c 6964 3e4e 2b44 6174 653a 2054 7565 2c20 3234 204e 6f76 2032 3032 3620
3231 3a31 303a 3534 202b 3030 3030 2028 5554 4329 4e18 4672 6f6d 3a20 726f 6f74
203c 6140 782e 6578 616d 706c 653e 4e00 4e02 6869 5800 4500
"""


def test_fake_queue_reproduces_spec_example_byte_for_byte(queue):
    """queue-file.md §9: the real 3.7.11 file, 504 bytes."""
    msg = queue.write_message(
        "70A24212897", "a@x.example", ["b@y.example"],
        [b"Received: by mx.lab.invalid (Postfix, from userid 0)",
         b"\tid 70A24212897; Tue, 24 Nov 2026 21:10:54 +0000 (UTC)",
         b"Subject: t",
         b"Message-Id: <20261124211054.70A24212897@mx.lab.invalid>",
         b"Date: Tue, 24 Nov 2026 21:10:54 +0000 (UTC)",
         b"From: root <a@x.example>", b"", b"hi"],
        arrival=1795554654.456986, fullname="root")
    assert queue.read("70A24212897") == bytes.fromhex("".join(SPEC_EXAMPLE_HEX.split()))
    assert tuple(msg) == (244, 256, [229])
    assert queue.todo_recipients("70A24212897") == ["b@y.example"]
    assert queue.done_recipients("70A24212897") == []


# ---------------------------------------------------------------------------
# 1-2: success


def test_success_reply_mark_log_and_wire_content(queue, services, peers):
    peer = peers()
    agent, log = make_agent()
    msg, res, before = run(agent, queue, peer)

    assert res.reply_bytes == SUCCESS_REPLY
    assert res.status == 0
    # exactly one byte changed: the R of the recipient became D
    assert queue.byte_at(QID, msg.rcpt_offsets[0]) == b"D"
    assert only_marked(before, queue.read(QID), msg.rcpt_offsets)
    assert queue.done_recipients(QID) == [RCPT]
    assert len(recipient_line(log, RCPT, relay(peer), "2.0.0", "sent",
                              "250 2.0.0 Ok: queued as PEER")) == 1, log.lines
    assert log.warnings == []
    # the server got the content with CRLF and dot-stuffing, then QUIT
    assert peer.wait_sessions(1, timeout=5)
    session = peer.sessions[0]
    assert session.messages == [WIRE_BODY]
    env = session.envelopes[0]
    assert env.mail_from.startswith("MAIL FROM:<%s>" % SENDER)
    assert env.rcpts == ["RCPT TO:<%s> ORCPT=rfc822;%s" % (RCPT, RCPT)]
    assert session.commands[-1] == "QUIT"
    # a plain success reports to nobody
    assert [s.requests for s in services.all()] == [[], [], [], []]


def test_flags_without_success_bit_delivers_but_does_not_mark(queue, services, peers):
    """flags = 2 (delivery to a content filter): delivered, not marked, reply 0."""
    peer = peers()
    agent, log = make_agent()
    msg, res, before = run(agent, queue, peer, flags=2)
    assert res.reply_bytes == SUCCESS_REPLY
    assert queue.read(QID) == before
    assert queue.todo_recipients(QID) == [RCPT]
    assert peer.wait_messages(1, timeout=5)
    assert peer.messages == [WIRE_BODY]
    assert recipient_line(log, RCPT, relay(peer), "2.0.0", "sent",
                          "250 2.0.0 Ok: queued as PEER")


# ---------------------------------------------------------------------------
# 3-5: per-recipient failures


def test_450_to_rcpt_is_deferred_with_exact_append(queue, services, peers):
    text = "450 4.2.0 <c@example.org>: Recipient address rejected: Greylisted"
    peer = peers(PeerScript(rcpt_reply=text))
    agent, log = make_agent()
    msg, res, before = run(agent, queue, peer)

    reason = "host 127.0.0.1[127.0.0.1] said: %s (in reply to RCPT TO command)" % text
    assert services.defer.requests == [append_request(RCPT, msg.rcpt_offsets[0], {
        "status": "4.2.0", "diag_type": "smtp", "diag_text": text, "mta_type": "dns",
        "mta_mname": "127.0.0.1", "action": "delayed", "reason": reason})]
    assert services.bounce.requests == [] and services.trace.requests == []
    assert queue.read(QID) == before
    assert res.reply_bytes == DEFER_REPLY
    assert res.reply[-1] == ("status", "4294967295")
    assert recipient_line(log, RCPT, relay(peer), "4.2.0", "deferred", reason)
    # no recipient accepted: the (pipelined) DATA is answered 554, no content follows
    assert peer.wait_sessions(1, timeout=5)
    assert peer.sessions[0].commands[-2:] == ["RSET", "QUIT"]
    assert peer.messages == []


def test_550_to_rcpt_is_bounced_and_marked(queue, services, peers):
    text = "550 5.1.1 <c@example.org>: Recipient address rejected: User unknown"
    peer = peers(PeerScript(rcpt_reply=text))
    agent, log = make_agent()
    msg, res, before = run(agent, queue, peer)

    reason = "host 127.0.0.1[127.0.0.1] said: %s (in reply to RCPT TO command)" % text
    assert services.bounce.requests == [append_request(RCPT, msg.rcpt_offsets[0], {
        "status": "5.1.1", "diag_type": "smtp", "diag_text": text, "mta_type": "dns",
        "mta_mname": "127.0.0.1", "action": "failed", "reason": reason})]
    assert services.defer.requests == []
    assert only_marked(before, queue.read(QID), msg.rcpt_offsets)
    assert res.reply_bytes == SUCCESS_REPLY
    assert recipient_line(log, RCPT, relay(peer), "5.1.1", "bounced", reason)


@pytest.mark.parametrize("failure", ["status 1", "close without reply", "not listening"])
def test_550_with_failing_bounce_service_defers_instead(queue, services, peers, failure):
    text = "550 5.1.1 <c@example.org>: Recipient address rejected: User unknown"
    peer = peers(PeerScript(rcpt_reply=text))
    if failure == "status 1":
        services.bounce.reply_status = 1
    elif failure == "close without reply":
        services.bounce.close_without_reply = True
    else:
        services.bounce.stop()
    agent, log = make_agent()
    msg, res, before = run(agent, queue, peer)

    assert queue.read(QID) == before                   # not marked
    assert services.defer.requests == [append_request(RCPT, msg.rcpt_offsets[0], {
        "status": "4.3.0", "action": "delayed", "reason": "bounce or trace service failure"})]
    assert res.reply_bytes == DEFER_REPLY
    assert recipient_line(log, RCPT, relay(peer), "4.3.0", "deferred",
                          "bounce or trace service failure")
    assert not log.find("status=bounced")
    if failure == "not listening":
        assert log.find(r"^warning: connect to private/bounce: ")


def test_550_with_soft_bounce_goes_to_defer(queue, services, peers):
    text = "550 5.1.1 <c@example.org>: Recipient address rejected: User unknown"
    peer = peers(PeerScript(rcpt_reply=text))
    agent, log = make_agent(soft_bounce="yes")
    msg, res, before = run(agent, queue, peer)

    reason = "host 127.0.0.1[127.0.0.1] said: %s (in reply to RCPT TO command)" % text
    assert services.bounce.requests == []
    assert services.defer.requests == [append_request(RCPT, msg.rcpt_offsets[0], {
        "status": "4.1.1", "diag_type": "smtp", "diag_text": text, "mta_type": "dns",
        "mta_mname": "127.0.0.1", "action": "delayed", "reason": reason})]
    assert queue.read(QID) == before
    assert res.reply_bytes == DEFER_REPLY
    assert recipient_line(log, RCPT, relay(peer), "4.1.1", "SOFTBOUNCE", reason)


def test_mixed_recipients_250_450_550(queue, services, peers):
    replies = {"ok@example.org": "250 2.1.5 Ok",
               "later@example.org": "450 4.2.0 <later@example.org>: try again",
               "bad@example.org": "550 5.1.1 <bad@example.org>: no such user"}

    def rcpt_reply(line: str) -> str:
        return replies[line.split("<", 1)[1].split(">", 1)[0]]

    peer = peers(PeerScript(rcpt_reply=rcpt_reply))
    agent, log = make_agent()
    rcpts = ["ok@example.org", "later@example.org", "bad@example.org"]
    msg, res, before = run(agent, queue, peer, recipients=rcpts)

    assert res.reply_bytes == DEFER_REPLY
    after = queue.read(QID)
    assert only_marked(before, after, [msg.rcpt_offsets[0], msg.rcpt_offsets[2]])
    assert queue.done_recipients(QID) == ["ok@example.org", "bad@example.org"]
    assert queue.todo_recipients(QID) == ["later@example.org"]
    assert [r[4][1] for r in services.bounce.requests] == ["bad@example.org"]
    assert [r[4][1] for r in services.defer.requests] == ["later@example.org"]
    assert services.bounce.request_dicts()[0]["action"] == "failed"
    assert services.defer.request_dicts()[0]["action"] == "delayed"
    rel = relay(peer)
    assert recipient_line(log, "ok@example.org", rel, "2.0.0", "sent",
                          "250 2.0.0 Ok: queued as PEER")
    assert log.find(r"to=<later@example\.org>, .* dsn=4\.2\.0, status=deferred ")
    assert log.find(r"to=<bad@example\.org>, .* dsn=5\.1\.1, status=bounced ")
    # only the accepted recipient was in the transaction that carried the message
    assert peer.wait_messages(1, timeout=5)
    assert peer.sessions[0].envelopes[0].accepted == [
        "RCPT TO:<ok@example.org> ORCPT=rfc822;ok@example.org"]


# ---------------------------------------------------------------------------
# 6-8: bad requests and bad queue files


def _common(**kw):
    base = dict(queue_id=QID, offset=244, size=256, nexthop="[127.0.0.1]:9", sender=SENDER)
    base.update(kw)
    return FakeQmgr.common_attrs(**base)


def _rcpt_lists(offset, n=1):
    return b"".join(encode(QmgrRecipient(RCPT, offset).attrs()) for _ in range(n))


def _malformed(case: str, offset: int) -> bytes:
    attrs = _common()
    if case == "wrong first attribute name":
        attrs[0] = ("flag", 3)
    elif case == "missing attribute":
        attrs = [a for a in attrs if a[0] != "envelope_id"]
    elif case == "extra attribute":
        attrs.insert(5, ("bogus", "x"))
    elif case == "non-numeric flags":
        attrs[0] = ("flags", "3x")
    elif case == "bad base64 time":
        attrs[11] = ("time", "not*base64!")
    elif case == "wrong MSG_STATS size":
        attrs[11] = ("time", b"\0" * 40)
    elif case == "recipient_count 0":
        return encode(_common(recipient_count=0))
    elif case == "recipient list missing notify_flags":
        return encode(attrs) + encode(QmgrRecipient(RCPT, offset).attrs()[:4])
    elif case == "recipient offset not a number":
        r = QmgrRecipient(RCPT, offset).attrs()
        r[2] = ("offset", "-5")
        return encode(attrs) + encode(r)
    else:
        raise AssertionError(case)
    return encode(attrs) + _rcpt_lists(offset)


MALFORMED = ["wrong first attribute name", "missing attribute", "extra attribute",
             "non-numeric flags", "bad base64 time", "wrong MSG_STATS size",
             "recipient_count 0", "recipient list missing notify_flags",
             "recipient offset not a number"]


@pytest.mark.parametrize("case", MALFORMED + ["garbage then EOF"])
def test_malformed_request_is_deferred_with_warning(queue, services, peers, case):
    peer = peers()
    agent, log = make_agent()
    msg = queue.write_message(QID, SENDER, [RCPT], BODY)
    before = queue.read(QID)
    if case == "garbage then EOF":
        res = FakeQmgr().run(agent, b"this is no attribute stream at all", half_close=True)
    else:
        data = _malformed(case, msg.rcpt_offsets[0]).replace(
            b"[127.0.0.1]:9", peer.address.encode())
        res = FakeQmgr().run(agent, data)

    assert res.agent_error is None
    assert res.reply_bytes == DEFER_REPLY
    assert res.status == -1
    assert [w for w in log.warnings if "malformed delivery request" in w], log.lines
    assert queue.read(QID) == before
    assert peer.sessions == []
    assert [s.requests for s in services.all()] == [[], [], [], []]


def test_request_from_postfix_3_10_with_sendopts_is_delivered(queue, services, peers):
    peer = peers()
    agent, log = make_agent()
    msg, res, before = run(agent, queue, peer, sendopts_name="sendopts")
    assert res.reply_bytes == SUCCESS_REPLY
    assert only_marked(before, queue.read(QID), msg.rcpt_offsets)
    assert log.warnings == []


def test_qmgr_changes_its_mind(queue, services):
    """qmgr connects and closes without a request: no reply, no log."""
    agent, log = make_agent()
    res = FakeQmgr().run(agent, b"", half_close=True)
    assert res.agent_error is None
    assert res.reply is None and res.reply_bytes == b""
    assert log.lines == []


def test_missing_queue_file_defers_without_contacting_the_server(queue, services, peers):
    peer = peers()
    agent, log = make_agent()
    req = FakeQmgr.request([QmgrRecipient(RCPT, 229)], queue_id=QID, offset=244, size=256,
                           nexthop=peer.address)
    res = FakeQmgr().run(agent, req)
    assert res.agent_error is None
    assert res.reply_bytes == DEFER_REPLY
    assert log.warnings == ["warning: open active %s: No such file or directory" % QID]
    assert peer.sessions == []
    assert [s.requests for s in services.all()] == [[], [], [], []]


@pytest.mark.parametrize("queue_id", ["../active/X", "ABC DEF", ""])
def test_bad_queue_id_is_deferred_not_opened(queue, services, peers, queue_id):
    peer = peers()
    agent, log = make_agent()
    req = FakeQmgr.request([QmgrRecipient(RCPT, 229)], queue_id=queue_id, offset=244,
                           size=256, nexthop=peer.address)
    res = FakeQmgr().run(agent, req)
    assert res.agent_error is None
    assert res.reply_bytes == DEFER_REPLY
    assert log.find(r"^warning: bad mail queue ID: ")
    assert peer.sessions == []


@pytest.mark.parametrize("ending,rtype", [("E", 69), ("truncated", -2)])
def test_corrupt_queue_file_bounces_and_drops_the_connection(queue, services, peers,
                                                              ending, rtype):
    peer = peers()
    agent, log = make_agent()
    rcpts = ["a@example.org", "b@example.org"]
    msg = queue.write_message(QID, SENDER, rcpts, BODY, ending=ending)
    before = queue.read(QID)
    res = FakeQmgr().deliver(agent, queue_id=QID, message=msg, nexthop=peer.address,
                             recipients=rcpts)
    assert res.agent_error is None

    assert log.find(r"^warning: %s: bad record type: %d in message content$" % (QID, rtype))
    assert "warning: corrupted queue file: active/%s" % QID in log.lines
    assert [(d["recipient"], d["status"], d["action"], d["reason"])
            for d in services.bounce.request_dicts()] == [
        (r, "5.3.0", "failed", "unreadable mail queue entry") for r in rcpts]
    assert services.defer.requests == []
    for r in rcpts:
        assert recipient_line(log, r, relay(peer), "5.3.0", "bounced",
                              "unreadable mail queue entry")
    # both bounced and marked; the file is flagged corrupt (0400)
    assert only_marked(before, queue.read(QID), msg.rcpt_offsets)
    assert queue.done_recipients(QID) == rcpts
    assert queue.mode(QID) == 0o400
    assert res.reply_bytes == SUCCESS_REPLY
    # the server saw DATA, then the connection dropped: no final "." and no QUIT
    assert peer.wait_sessions(1, timeout=5)
    session = peer.sessions[0]
    assert "DATA" in session.commands
    assert "QUIT" not in session.commands
    assert session.messages == []
    after_data = session.client_bytes.split(b"DATA\r\n", 1)[1]
    assert b".\r\n" not in after_data


def test_corrupt_queue_file_with_failing_bounce_is_deferred_and_not_flagged(
        queue, services, peers):
    """mark_corrupt only when every report succeeded (queue-file.md §2.4 step 4)."""
    peer = peers()
    services.bounce.reply_status = 1
    agent, log = make_agent()
    msg = queue.write_message(QID, SENDER, [RCPT], BODY, ending="E")
    before = queue.read(QID)
    res = FakeQmgr().deliver(agent, queue_id=QID, message=msg, nexthop=peer.address,
                             recipients=[RCPT])
    assert res.agent_error is None
    assert log.find(r"^warning: %s: bad record type: 69 in message content$" % QID)
    assert [(d["status"], d["reason"]) for d in services.defer.request_dicts()] == [
        ("4.3.0", "bounce or trace service failure")]
    assert not log.find("corrupted queue file")
    assert queue.read(QID) == before
    assert queue.mode(QID) == 0o700
    assert res.reply_bytes == DEFER_REPLY


# ---------------------------------------------------------------------------
# 9-11: site and session failures


def test_peer_drops_after_354_small_message(queue, services, peers):
    """The whole small message and '.' fit in the socket buffers, so the loss is
    noticed while reading the reply to '.' (smtp-client.md §5.10: WHERE is the
    stage whose reply was being read)."""
    peer = peers(PeerScript(drop_after="body"))
    agent, log = make_agent()
    msg, res, before = run(agent, queue, peer)
    reason = ("lost connection with 127.0.0.1[127.0.0.1] while sending end of data -- "
              "message may be sent more than once")
    assert [(d["status"], d["action"], d["reason"])
            for d in services.defer.request_dicts()] == [("4.4.2", "delayed", reason)]
    assert queue.read(QID) == before
    # a lost connection before the session completed is a site failure: the reply
    # carries it as hop status so that qmgr throttles the destination (stock:
    # smtp_bulk_fail without SMTP_MISC_FLAG_COMPLETE_SESSION)
    assert res.status == -1
    assert res.hop["status"] == "4.4.2" and res.hop["reason"] == reason
    assert recipient_line(log, RCPT, relay(peer), "4.4.2", "deferred", reason)


def test_peer_drops_while_message_body_is_written(queue, services, peers):
    """A message far larger than the socket buffers: the write fails mid-body."""
    peer = peers(PeerScript(drop_after="body",                    # no SIZE limit
                            ehlo_lines=["peer.test.invalid", "PIPELINING", "8BITMIME"]))
    agent, log = make_agent()
    body = [b"Subject: big", b""] + [b"x" * 990] * 8000           # ~8 MB
    msg, res, before = run(agent, queue, peer, body=body)
    reason = "lost connection with 127.0.0.1[127.0.0.1] while sending message body"
    assert [(d["status"], d["reason"]) for d in services.defer.request_dicts()] == [
        ("4.4.2", reason)]
    assert queue.read(QID) == before
    assert res.status == -1 and res.hop["status"] == "4.4.2"


def test_connection_refused(queue, services):
    port = free_port()
    agent, log = make_agent()
    msg, res, before = run(agent, queue, "[127.0.0.1]:%d" % port)
    reason = "connect to 127.0.0.1[127.0.0.1]:%d: Connection refused" % port

    assert res.status == -1
    assert res.hop["status"] == "4.4.1"
    assert res.hop["reason"] == reason
    assert res.reply_bytes.startswith(b"status\x004.4.1\0")
    assert res.reply_bytes.endswith(b"reason\0" + reason.encode() + b"\0status\x004294967295\0\0")
    assert services.defer.requests == [append_request(RCPT, msg.rcpt_offsets[0], {
        "status": "4.4.1", "action": "delayed", "reason": reason})]
    assert queue.read(QID) == before
    assert reason in log.lines                      # the info line before the report
    assert recipient_line(log, RCPT, "none", "4.4.1", "deferred", reason)


def test_greeting_timeout(queue, services, peers):
    peer = peers(PeerScript(delay={"greeting": 5.0}))
    agent, log = make_agent(smtp_helo_timeout="1s")
    t0 = time.monotonic()
    msg, res, before = run(agent, queue, peer)
    elapsed = time.monotonic() - t0
    reason = ("conversation with 127.0.0.1[127.0.0.1] timed out while receiving the "
              "initial server greeting")
    assert 0.9 <= elapsed < 2.5, elapsed
    assert [(d["status"], d["action"], d["reason"])
            for d in services.defer.request_dicts()] == [("4.4.2", "delayed", reason)]
    assert queue.read(QID) == before
    assert res.status == -1
    assert res.hop["status"] == "4.4.2" and res.hop["reason"] == reason   # site failure
    assert recipient_line(log, RCPT, relay(peer), "4.4.2", "deferred", reason)


# ---------------------------------------------------------------------------
# 12: trace(8) records


def test_record_flag_sends_success_to_trace(queue, services, peers):
    peer = peers()
    agent, log = make_agent()
    msg, res, before = run(agent, queue, peer, flags=1024 | 3)
    text = "250 2.0.0 Ok: queued as PEER"
    assert services.trace.requests == [append_request(RCPT, msg.rcpt_offsets[0], {
        "status": "2.0.0", "diag_type": "smtp", "diag_text": text, "mta_type": "dns",
        "mta_mname": "127.0.0.1", "action": "relayed",
        "reason": "delivery via %s: %s" % (relay(peer), text)}, flags=1024)]
    assert only_marked(before, queue.read(QID), msg.rcpt_offsets)
    assert res.reply_bytes == SUCCESS_REPLY
    assert recipient_line(log, RCPT, relay(peer), "2.0.0", "sent", text)


def test_record_flag_with_failing_trace_defers(queue, services, peers):
    peer = peers()
    services.trace.reply_status = 1
    agent, log = make_agent()
    msg, res, before = run(agent, queue, peer, flags=1024 | 3)
    assert [(d["status"], d["reason"]) for d in services.defer.request_dicts()] == [
        ("4.3.0", "%s: trace service failed" % QID)]
    assert queue.read(QID) == before
    assert res.reply_bytes == DEFER_REPLY


def test_notify_success_without_server_dsn_is_traced(queue, services, peers):
    peer = peers(PeerScript(ehlo_lines=["peer.test.invalid", "PIPELINING", "8BITMIME"]))
    agent, log = make_agent()
    msg, res, before = run(agent, queue, peer, notify={RCPT: 2})
    text = "250 2.0.0 Ok: queued as PEER"
    assert services.trace.requests == [append_request(RCPT, msg.rcpt_offsets[0], {
        "status": "2.0.0", "diag_type": "smtp", "diag_text": text, "mta_type": "dns",
        "mta_mname": "127.0.0.1", "action": "relayed",
        "reason": "delivery via %s: %s" % (relay(peer), text)}, notify=2)]
    assert peer.wait_sessions(1, timeout=5)
    assert peer.sessions[0].envelopes[0].rcpts == ["RCPT TO:<%s>" % RCPT]
    assert only_marked(before, queue.read(QID), msg.rcpt_offsets)
    assert res.reply_bytes == SUCCESS_REPLY


def test_notify_success_with_server_dsn_is_passed_on(queue, services, peers):
    peer = peers()                                       # offers DSN
    agent, log = make_agent()
    msg, res, before = run(agent, queue, peer, notify={RCPT: 2})
    assert services.trace.requests == []
    assert peer.wait_sessions(1, timeout=5)
    assert peer.sessions[0].envelopes[0].rcpts == [
        "RCPT TO:<%s> ORCPT=rfc822;%s NOTIFY=SUCCESS" % (RCPT, RCPT)]
    assert only_marked(before, queue.read(QID), msg.rcpt_offsets)
    assert res.reply_bytes == SUCCESS_REPLY


# ---------------------------------------------------------------------------
# 13: address verification probes


def test_verify_probe_success(queue, services, peers):
    peer = peers()
    agent, log = make_agent()
    msg, res, before = run(agent, queue, peer, flags=0x100 | 3)
    assert services.verify.requests == [[("request", "update"), ("address", RCPT),
                                         ("recipient_status", "0"),
                                         ("reason", "250 2.1.5 Ok")]]
    assert peer.wait_sessions(1, timeout=5)
    cmds = [c.split(" ", 1)[0] for c in peer.sessions[0].commands]
    assert cmds == ["EHLO", "MAIL", "RCPT", "RSET", "QUIT"]
    assert peer.messages == []
    assert only_marked(before, queue.read(QID), msg.rcpt_offsets)
    assert res.reply_bytes == SUCCESS_REPLY
    assert recipient_line(log, RCPT, relay(peer), "2.1.5", "deliverable", "250 2.1.5 Ok")
    assert [s.requests for s in (services.bounce, services.defer, services.trace)] == [[], [], []]


def test_verify_probe_rejected_recipient(queue, services, peers):
    text = "550 5.1.1 <c@example.org>: User unknown"
    peer = peers(PeerScript(rcpt_reply=text))
    agent, log = make_agent()
    msg, res, before = run(agent, queue, peer, flags=0x100 | 3)
    reason = "host 127.0.0.1[127.0.0.1] said: %s (in reply to RCPT TO command)" % text
    assert services.verify.requests == [[("request", "update"), ("address", RCPT),
                                         ("recipient_status", "2"), ("reason", reason)]]
    assert services.bounce.requests == []
    assert only_marked(before, queue.read(QID), msg.rcpt_offsets)
    assert res.reply_bytes == SUCCESS_REPLY
    assert recipient_line(log, RCPT, relay(peer), "5.1.1", "undeliverable", reason)


def test_verify_probe_updates_original_and_recipient(queue, services, peers):
    """postfix-ipc.md §4.5: original_recipient first, then recipient when it differs."""
    peer = peers()
    agent, log = make_agent()
    msg = queue.write_message(QID, SENDER, [RCPT], BODY, originals={RCPT: "alias@example.org"})
    res = FakeQmgr().deliver(agent, queue_id=QID, message=msg, nexthop=peer.address,
                             recipients=[QmgrRecipient(RCPT, msg.rcpt_offsets[0],
                                                       original="alias@example.org")],
                             flags=0x100 | 3)
    assert res.agent_error is None
    assert [dict(r)["address"] for r in services.verify.requests] == ["alias@example.org", RCPT]
    assert queue.done_recipients(QID) == [RCPT]
    assert res.reply_bytes == SUCCESS_REPLY
    assert log.find(r"to=<c@example\.org>, orig_to=<alias@example\.org>, .*status=deliverable")


def test_tls_policy_resolver_lives_for_the_process(queue, services, peers):
    """Stock caches TLS policies per process (smtp_tls_policy_cache_query); the
    agent keeps one PolicyResolver across requests instead of one per request."""
    peer = peers()
    agent, log = make_agent()
    assert agent.tls_resolver is None
    run(agent, queue, peer)
    first = agent.tls_resolver
    assert first is not None
    run(agent, queue, peer, qid="B2C3D4E5F6")
    assert agent.tls_resolver is first
    assert len(first._cache) == 1          # the second request was a cache hit


LOOP_BODY = [b"Delivered-To: %s" % RCPT.upper().encode(), b"Subject: looped", b"", b"hi"]


@pytest.mark.parametrize("flags", ["", "D"])
def test_delivered_to_loop_check_only_with_flag_d(queue, services, peers, flags):
    """A Delivered-To: header naming the recipient bounces (5.4.6) only under
    flags=D; without it the message is delivered as it is."""
    peer = peers()
    agent, log = make_agent(flags=flags)
    msg, res, before = run(agent, queue, peer, body=LOOP_BODY)
    assert res.status == 0
    assert queue.done_recipients(QID) == [RCPT]
    if flags:
        assert len(recipient_line(log, RCPT, "smtp", "5.4.6", "bounced",
                                  "mail forwarding loop for %s" % RCPT)) == 1, log.lines
        assert not peer.sessions                       # refused before any connection
    else:
        assert len(recipient_line(log, RCPT, relay(peer), "2.0.0", "sent",
                                  "250 2.0.0 Ok: queued as PEER")) == 1, log.lines
        assert peer.wait_messages(1, timeout=5)
