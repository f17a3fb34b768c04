"""End-to-end delivery through a real Postfix 3.7 with postfix_smtp in master.cf.

Each scenario runs through this agent and, where marked, through the stock
smtp(8) too; the two must agree on the bytes the SMTP peer received, the
queue state, and the per-recipient log line (delays, ports and queue ids
normalised).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass

import pytest

from postfix_smtp.testing.instance import PostfixInstance, tool
from postfix_smtp.testing.peer import PeerScript, SmtpPeer

SENDER = "alice@src.test.invalid"
RCPT = "bob@dest.test.invalid"

MESSAGE = (b"From: Alice <alice@src.test.invalid>\n"
           b"To: Bob <bob@dest.test.invalid>\n"
           b"Subject: integration test\n"
           b"Message-Id: <fixed-id@src.test.invalid>\n"
           b"Date: Wed, 25 Nov 2026 12:00:00 +0000\n"
           b"\n"
           b"Hello Bob.\n"
           b".a line that starts with a dot\n"
           b".\n"
           b"..\n"
           b"last line\n")

AGENT_LOG = re.compile(r"postfix/(?:relay/)?smtp\[(\d+)\]: (\w+): to=<")
DATE_RE = re.compile(rb"\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)")
STOCK_LINE = re.compile(
    r"^(?P<qid>[0-9A-F]+): to=<(?P<to>[^>]*)>, (?:orig_to=<[^>]*>, )?relay=(?P<relay>\S+), "
    r"(?:conn_use=\d+, )?delay=(?P<delay>[\d.]+), delays=(?P<delays>[\d.]+/[\d.]+/[\d.]+/[\d.]+), "
    r"dsn=(?P<dsn>\d\.\d{1,3}\.\d{1,3}), status=(?P<status>\w+) \((?P<reason>.*)\)$")


@dataclass
class Outcome:
    sessions: list
    lines: list          # the agents' per-recipient log lines (text after "]: ")
    all_log: list
    queue: dict
    instance: PostfixInstance
    marks: dict         # recipient -> "R" (to do) or "D" (done) in the deferred queue file


def _agent_lines(inst: PostfixInstance) -> list:
    out = []
    for ln in inst.log_lines():
        m = AGENT_LOG.search(ln)
        if m:
            out.append(ln[ln.index("]: ", m.start()) + 3:])
    return out


def run_scenario(base: str, agent, script: PeerScript, recipients=(RCPT,), message=MESSAGE,
                 main_cf=None, smtp_args=(), expect_empty=True, sender=SENDER,
                 wait_lines: int = 1, peer_down: bool = False, sendmail_args=(),
                 via_smtp: bool = False, mail_params: str = "") -> Outcome:
    os.makedirs(base, mode=0o755, exist_ok=True)
    peer = SmtpPeer(script, max_lifetime=120)
    peer.start()
    port = peer.port
    if peer_down:
        peer.stop()
    cf = {"minimal_backoff_time": "300s", "maximal_backoff_time": "300s"}
    cf.update(main_cf or {})
    inst = PostfixInstance(base, relayhost="[127.0.0.1]:%d" % port, agent=agent,
                           main_cf=cf, smtp_args=list(smtp_args), max_lifetime=300)
    try:
        inst.start()
        if via_smtp:
            inst.smtp_submit(message, sender, list(recipients), mail_params=mail_params)
        else:
            inst.sendmail(message, sender, list(recipients), list(sendmail_args))
        inst.wait_log(r"postfix/(relay/)?smtp\[\d+\]: \w+: to=<", timeout=30, count=wait_lines)
        ok = inst.wait_queue_empty(timeout=30, allow_deferred=not expect_empty)
        assert ok, "queue not settled: %r\n%s" % (inst.queue_ids(), "\n".join(inst.log_lines()[-30:]))
        time.sleep(0.3)          # let the agent finish its QUIT
        queue = inst.queue_ids()
        marks = {}
        for qid in queue["deferred"]:
            marks.update(recipient_marks(inst.queue_file(qid)))
        return Outcome(peer.sessions, _agent_lines(inst), inst.log_lines(), queue, inst, marks)
    finally:
        inst.stop()
        peer.stop()


def recipient_marks(path: str) -> dict:
    """Envelope recipients of a queue file and their record type (R to do, D done)."""
    from postfix_smtp.queue.records import RecordReader, REC_MESG, REC_EOF
    marks = {}
    with open(path, "rb") as f:
        reader = RecordReader(f, path, 0, transparent=False)
        while True:
            rtype, payload = reader.read()
            if rtype in (REC_MESG, REC_EOF):
                return marks
            if rtype in (ord("R"), ord("D")):
                marks[payload.decode()] = chr(rtype)


def normalise_wire(data: bytes) -> bytes:
    """Mask what differs between two runs: dates, queue ids, Postfix's Message-Id."""
    data = DATE_RE.sub(b"DATE", data)
    data = re.sub(rb"<\d{14}\.[0-9A-F]{6,}@", b"<MSGID@", data)
    data = re.sub(rb"\b[0-9A-F]{10,12}\b", b"QUEUEID", data)          # queue ids in notices
    data = re.sub(rb"\bQUEUEID\.\d{9,11}/", b"QUEUEID.TIME/", data)   # MIME boundaries
    return re.sub(rb"\bid [0-9A-F]{6,}\b", b"id QUEUEID", data)


def normalise_line(line: str) -> dict:
    m = STOCK_LINE.match(line)
    assert m, "not a stock-format log line: %r" % line
    d = m.groupdict()
    d.pop("qid"), d.pop("delay"), d.pop("delays")
    d["relay"] = re.sub(r":\d+$", ":PORT", d["relay"])
    d["reason"] = re.sub(r":\d+:", ":PORT:", d["reason"])
    return d


def both(tmp_base, agent_wrapper, script_factory, **kw):
    ours = run_scenario(os.path.join(tmp_base, "agent"), agent_wrapper, script_factory(), **kw)
    stock = run_scenario(os.path.join(tmp_base, "stock"), None, script_factory(), **kw)
    return ours, stock


# ---------------------------------------------------------------------------

def test_sent_same_bytes_and_log_as_stock(tmp_base, agent_wrapper):
    ours, stock = both(tmp_base, agent_wrapper, PeerScript)
    assert ours.queue == stock.queue == {q: [] for q in ours.queue}
    assert len(ours.sessions) == len(stock.sessions) == 1
    wire = normalise_wire(ours.sessions[0].client_bytes)
    assert wire == normalise_wire(stock.sessions[0].client_bytes)
    # what a user would check on the wire
    assert wire.startswith(b"EHLO mx.test.invalid\r\n")
    assert b"MAIL FROM:<alice@src.test.invalid> SIZE=" in wire
    assert b"RCPT TO:<bob@dest.test.invalid> NOTIFY=" not in wire
    assert b"\r\n..a line that starts with a dot\r\n..\r\n...\r\nlast line\r\n.\r\nQUIT\r\n" in wire
    assert b"\n" not in wire.replace(b"\r\n", b"")          # no bare LF
    assert len(ours.lines) == 1
    assert normalise_line(ours.lines[0]) == normalise_line(stock.lines[0])
    d = normalise_line(ours.lines[0])
    assert d["status"] == "sent" and d["dsn"] == "2.0.0"
    assert d["relay"] == "127.0.0.1[127.0.0.1]:PORT"
    assert d["reason"] == "250 2.0.0 Ok: queued as PEER"


def test_rcpt_450_defers_and_keeps_the_mail(tmp_base, agent_wrapper):
    def script():
        return PeerScript(rcpt_reply="450 4.2.0 <bob@dest.test.invalid>: mailbox busy")
    ours, stock = both(tmp_base, agent_wrapper, script, expect_empty=False)
    for o in (ours, stock):
        assert len(o.queue["deferred"]) == 1, o.queue
        assert not o.sessions[0].messages
    assert normalise_line(ours.lines[0]) == normalise_line(stock.lines[0])
    d = normalise_line(ours.lines[0])
    assert d["status"] == "deferred" and d["dsn"] == "4.2.0"
    assert d["reason"] == ("host 127.0.0.1[127.0.0.1] said: 450 4.2.0 <bob@dest.test.invalid>: "
                           "mailbox busy (in reply to RCPT TO command)")
    assert normalise_wire(ours.sessions[0].client_bytes) == normalise_wire(
        stock.sessions[0].client_bytes)


def test_rcpt_550_bounces_to_sender(tmp_base, agent_wrapper):
    def script():
        return PeerScript(rcpt_reply=lambda line: "550 5.1.1 <bob@dest.test.invalid>: no such user"
                          if "bob@" in line else "250 2.1.5 Ok")
    ours, stock = both(tmp_base, agent_wrapper, script, wait_lines=2)
    for o in (ours, stock):
        assert o.queue == {q: [] for q in o.queue}
        bounces = [m for s in o.sessions for m in s.messages]
        assert len(bounces) == 1, o.sessions
        text = bounces[0].decode("utf-8", "replace")
        assert "Undelivered Mail Returned to Sender" in text
        assert "<bob@dest.test.invalid>: host 127.0.0.1[127.0.0.1] said: 550 5.1.1" in text
        assert "Status: 5.1.1" in text and "Action: failed" in text
        assert "Diagnostic-Code: smtp; 550 5.1.1 <bob@dest.test.invalid>: no such user" in text
        env = [e for s in o.sessions for e in s.envelopes if e.accepted]
        assert env[0].mail_from.startswith("MAIL FROM:<>")
    first = [normalise_line(ln) for ln in ours.lines if "bob@" in ln]
    assert first == [normalise_line(ln) for ln in stock.lines if "bob@" in ln]
    assert first[0]["status"] == "bounced" and first[0]["dsn"] == "5.1.1"


def test_mixed_recipients_sent_deferred_bounced(tmp_base, agent_wrapper):
    rcpts = ["ok@dest.test.invalid", "busy@dest.test.invalid", "gone@dest.test.invalid"]

    def reply(line):
        if "busy@" in line:
            return "450 4.2.1 try later"
        if "gone@" in line:
            return "550 5.1.1 unknown"
        return "250 2.1.5 Ok"

    ours, stock = both(tmp_base, agent_wrapper, lambda: PeerScript(rcpt_reply=reply),
                       recipients=rcpts, expect_empty=False, wait_lines=3)
    for o in (ours, stock):
        assert len(o.queue["deferred"]) == 1
        byrcpt = {re.search(r"to=<([^@]+)@", ln).group(1): normalise_line(ln)["status"]
                  for ln in o.lines if "src.test.invalid" not in ln.split(",")[0]}
        assert byrcpt["ok"] == "sent" and byrcpt["busy"] == "deferred" and byrcpt["gone"] == "bounced"
    # the queue file keeps exactly the deferred recipient to do
    for o in (ours, stock):
        assert o.marks == {"ok@dest.test.invalid": "D", "busy@dest.test.invalid": "R",
                           "gone@dest.test.invalid": "D"}


def test_drop_during_data_loses_nothing(tmp_base, agent_wrapper):
    ours, stock = both(tmp_base, agent_wrapper, lambda: PeerScript(drop_after="body"),
                       expect_empty=False)
    for o in (ours, stock):
        assert len(o.queue["deferred"]) == 1
        assert not o.sessions[0].messages
    assert normalise_line(ours.lines[0]) == normalise_line(stock.lines[0])
    assert normalise_line(ours.lines[0])["dsn"] == "4.4.2"


def test_connection_refused(tmp_base, agent_wrapper):
    ours, stock = both(tmp_base, agent_wrapper, PeerScript, expect_empty=False, peer_down=True)
    assert normalise_line(ours.lines[0]) == normalise_line(stock.lines[0])
    d = normalise_line(ours.lines[0])
    assert d["relay"] == "none" and d["dsn"] == "4.4.1" and d["status"] == "deferred"
    assert d["reason"] == "connect to 127.0.0.1[127.0.0.1]:PORT: Connection refused"
    assert any(re.search(r"postfix/smtp\[\d+\]: connect to 127\.0\.0\.1\[127\.0\.0\.1\]:\d+: "
                         r"Connection refused$", ln) for ln in ours.all_log)


def test_greeting_554_is_skipped_as_4xx(tmp_base, agent_wrapper):
    ours, stock = both(tmp_base, agent_wrapper,
                       lambda: PeerScript(greeting="554 5.7.1 go away"), expect_empty=False)
    assert normalise_line(ours.lines[0]) == normalise_line(stock.lines[0])
    d = normalise_line(ours.lines[0])
    assert d["dsn"] == "4.7.1" and d["reason"] == (
        "host 127.0.0.1[127.0.0.1] refused to talk to me: 554 5.7.1 go away")


def test_no_pipelining_lockstep_same_as_stock(tmp_base, agent_wrapper):
    def script():
        return PeerScript(ehlo_lines=["peer.test.invalid", "8BITMIME", "DSN"])
    ours, stock = both(tmp_base, agent_wrapper, script,
                       recipients=["a@dest.test.invalid", "b@dest.test.invalid"], wait_lines=2)
    a = [d for d, _ in ours.sessions[0].transcript]
    b = [d for d, _ in stock.sessions[0].transcript]
    assert normalise_wire(ours.sessions[0].client_bytes) == normalise_wire(
        stock.sessions[0].client_bytes)
    assert a == b        # same interleaving of client writes and server replies
    assert b"ORCPT=rfc822;a@dest.test.invalid" in ours.sessions[0].client_bytes


def test_relay_service_logs_as_postfix_relay_smtp(tmp_base, agent_wrapper):
    o = run_scenario(tmp_base, agent_wrapper, PeerScript(),
                     main_cf={"default_transport": "relay"})
    assert any(re.search(r"postfix/relay/smtp\[\d+\]: \w+: to=<bob@dest\.test\.invalid>.*"
                         r"status=sent", ln) for ln in o.all_log)


def test_long_lines_folded_like_stock(tmp_base, agent_wrapper):
    body = b"Subject: long\n\n" + b"x" * 2100 + b"\n" + b".y" * 600 + b"\n"
    ours, stock = both(tmp_base, agent_wrapper, PeerScript, message=body)
    w = normalise_wire(ours.sessions[0].client_bytes)
    assert w == normalise_wire(stock.sessions[0].client_bytes)
    assert b"\r\n" + b"x" * 998 + b"\r\n " + b"x" * 997 + b"\r\n " + b"x" * 105 + b"\r\n" in w
    assert any("breaking line > 998 bytes with <CR><LF>SPACE" in ln for ln in ours.all_log)


def _agent_pids(config_dir: str) -> list:
    from test_crash import agent_pids
    return agent_pids(config_dir)


def test_agent_drops_privileges_and_honours_max_use(tmp_base, agent_wrapper):
    import pwd
    postfix = pwd.getpwnam("postfix")
    peer = SmtpPeer(PeerScript(delay={"dot": 1.5}), max_lifetime=60)
    peer.start()
    inst = PostfixInstance(tmp_base, relayhost=peer.address, agent=agent_wrapper,
                           smtp_args=["-o", "max_use=1"], max_lifetime=120)
    try:
        inst.start()
        inst.sendmail(MESSAGE, SENDER, [RCPT])
        # look once the agent talks to the peer (privileges are dropped before
        # the first request; a process caught at exec time is still root)
        assert peer.wait_sessions(1, timeout=20, closed=False)
        end = time.monotonic() + 10
        pids = []
        while not pids and time.monotonic() < end:
            pids = _agent_pids(inst.config_dir)
            time.sleep(0.05)
        assert pids, "no agent process seen"
        with open("/proc/%d/status" % pids[0]) as f:
            ids = {ln.split(":")[0]: ln.split()[1:] for ln in f if ln.startswith(("Uid", "Gid"))}
        assert ids["Uid"] == [str(postfix.pw_uid)] * 4
        assert ids["Gid"] == [str(postfix.pw_gid)] * 4
        assert os.readlink("/proc/%d/cwd" % pids[0]) == inst.queue_dir
        inst.expect_log(r"status=sent", timeout=20)
        # max_use=1: the process exits after its one request
        end = time.monotonic() + 10
        while os.path.exists("/proc/%d" % pids[0]) and time.monotonic() < end:
            time.sleep(0.05)
        assert not os.path.exists("/proc/%d/cmdline" % pids[0]) or not open(
            "/proc/%d/cmdline" % pids[0], "rb").read()
        for i in range(2):
            inst.sendmail(MESSAGE, SENDER, ["n%d@dest.test.invalid" % i])
        lines = inst.expect_log(r"postfix/smtp\[\d+\]: \w+: to=<.*status=sent", count=3, timeout=30)
        assert len({re.search(r"smtp\[(\d+)\]", ln).group(1) for ln in lines}) == 3
        assert not any("bad command startup" in ln for ln in inst.log_lines())
    finally:
        inst.stop()
        peer.stop()


def test_bad_parameter_gets_a_clear_fatal_line(tmp_base, agent_wrapper):
    peer = SmtpPeer(PeerScript(), max_lifetime=60)
    peer.start()
    inst = PostfixInstance(tmp_base, relayhost=peer.address, agent=agent_wrapper,
                           smtp_args=["-o", "smtp_connect_timeout=bogus"], max_lifetime=120)
    try:
        inst.start()
        inst.sendmail(MESSAGE, SENDER, [RCPT])
        hits = inst.wait_log(r"postfix/smtp\[\d+\]: fatal: .*smtp_connect_timeout", timeout=20)
        assert hits, "\n".join(inst.log_lines()[-20:])
        assert inst.queue_ids()["active"] or inst.queue_ids()["incoming"] or inst.queue_ids()["deferred"]
    finally:
        inst.stop()
        peer.stop()


def test_chroot_service_delivers(tmp_base, agent_wrapper):
    # a peer without 8BITMIME: the jailed agent must also run the MIME downgrade
    peer = SmtpPeer(PeerScript(rcpt_reply=lambda line: "550 5.1.1 no" if "gone@" in line
                               else "250 2.1.5 Ok",
                               ehlo_lines=["peer.test.invalid", "PIPELINING", "SIZE 1000000"]),
                    max_lifetime=60)
    peer.start()
    inst = PostfixInstance(tmp_base, relayhost=peer.address, agent=agent_wrapper, max_lifetime=120)
    try:
        inst.start()
        subprocess.run([tool("postconf"), "-c", inst.config_dir, "-F", "smtp/unix/chroot=y"],
                       check=True, timeout=30)
        inst.reload()
        time.sleep(1)
        eight = ("Subject: jail\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
                 "Content-Transfer-Encoding: 8bit\n\ncaf\u00e9\n").encode()
        inst.sendmail(eight, SENDER, [RCPT, "gone@dest.test.invalid"], ["-B", "8BITMIME"])
        inst.expect_log(r"postfix/smtp\[\d+\]: \w+: to=<bob@dest.*status=sent", timeout=30)
        assert b"\r\ncaf=C3=A9\r\n" in peer.sessions[0].messages[0]
        inst.expect_log(r"postfix/smtp\[\d+\]: \w+: to=<gone@dest.*status=bounced", timeout=30)
        pids = _agent_pids(inst.config_dir)
        assert pids and all(os.readlink("/proc/%d/root" % p) == inst.queue_dir for p in pids)
        assert inst.wait_queue_empty(timeout=30)
    finally:
        inst.stop()
        peer.stop()


def test_agent_exits_after_max_idle_and_when_master_goes_away(tmp_base, agent_wrapper):
    peer = SmtpPeer(PeerScript(), max_lifetime=60)
    peer.start()
    inst = PostfixInstance(tmp_base, relayhost=peer.address, agent=agent_wrapper,
                           smtp_args=["-o", "max_idle=2"], max_lifetime=120)
    try:
        inst.start()
        inst.sendmail(MESSAGE, SENDER, [RCPT])
        inst.expect_log(r"status=sent", timeout=30)
        pids = _agent_pids(inst.config_dir)
        assert pids
        end = time.monotonic() + 8
        while any(_alive(p) for p in pids) and time.monotonic() < end:
            time.sleep(0.1)
        gone = time.monotonic()
        assert not any(_alive(p) for p in pids), "agent still alive after max_idle=2"
        assert end - gone > 8 - 4.5          # it went within ~max_idle, not at the deadline
        # a fresh, idle agent exits when master disappears
        inst.sendmail(MESSAGE, SENDER, [RCPT])
        inst.expect_log(r"status=sent", timeout=30, count=2)
        pids = _agent_pids(inst.config_dir)
        assert pids
        os.kill(inst.master_pid, 9)
        end = time.monotonic() + 5
        while any(_alive(p) for p in pids) and time.monotonic() < end:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids), "agent outlived master"
    finally:
        inst.stop()
        peer.stop()


def _alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_unknown_syslog_facility_is_fatal_like_stock(tmp_base, agent_wrapper):
    """syslog_facility names are matched exactly (``LOCAL3`` is not local3)."""
    lines = {}
    for tag, agent in (("agent", agent_wrapper), ("stock", None)):
        peer = SmtpPeer(PeerScript(), max_lifetime=60)
        peer.start()
        inst = PostfixInstance(os.path.join(tmp_base, tag), relayhost=peer.address, agent=agent,
                               smtp_args=["-o", "syslog_facility=LOCAL3"], max_lifetime=120)
        try:
            inst.start()
            inst.sendmail(MESSAGE, SENDER, [RCPT])
            hits = inst.wait_log(r"postfix/smtp\[\d+\]: fatal: ", timeout=20)
            assert hits, "\n".join(inst.log_lines()[-20:])
            lines[tag] = re.sub(r"^.*?postfix/smtp\[\d+\]: ", "", hits[0]).replace(
                inst.config_dir, "CONFIG")
            assert not peer.sessions
        finally:
            inst.stop()
            peer.stop()
    assert lines["agent"] == lines["stock"] == (
        "fatal: file CONFIG/main.cf: parameter syslog_facility: unrecognized value: LOCAL3")
