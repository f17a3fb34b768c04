"""debug_peer_list transcripts and notify_classes postmaster notices,
differential against the stock smtp(8).

Each scenario runs through this agent and through stock on fresh private
instances with the same scriptable peer.  Compared, after masking queue
ids, dates and the peer's port:

- the "> host[addr]:port: COMMAND" / "< host[addr]:port: REPLY" lines the
  agent logs for a debug peer (stock logs much more under -v; only these
  lines are compared);
- the postmaster notice as queued (``postcat -q``: envelope records,
  headers, body).  Notices are addressed to a domain whose transport is in
  defer_transports, so they stay in the deferred queue to be inspected.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from postfix_smtp.settings import Settings
from postfix_smtp.testing.instance import PostfixInstance
from postfix_smtp.testing.peer import PeerScript, SmtpPeer

# The delivery wiring (Settings.chat, the session hooks) lands separately from
# these modules; until it has, there is nothing to compare.
pytestmark = pytest.mark.skipif(not hasattr(Settings, "chat"),
                                reason="session chat not wired into the delivery yet")

SENDER = "alice@src.test.invalid"
RCPT = "bob@dest.test.invalid"
NOTICE_RCPT = "notices@hold.test.invalid"

MESSAGE = (b"From: Alice <alice@src.test.invalid>\n"
           b"To: Bob <bob@dest.test.invalid>\n"
           b"Subject: notices test\n"
           b"Message-Id: <notices@src.test.invalid>\n"
           b"\n"
           b"Hello Bob.\n")

HOLD_CF = {
    "error_notice_recipient": NOTICE_RCPT,
    "transport_maps": "inline:{ hold.test.invalid=hold: }",
    "defer_transports": "hold",
}

CHAT_RE = re.compile(r"postfix/smtp\[(\d+)\]: ([<>] \S+: .*|smtp_chat_notify: notify postmaster)$")
QID_RE = re.compile(r"postfix/qmgr\[\d+\]: ([0-9A-F]+): from=<double-bounce@")


def run(base: str, agent, script: PeerScript, main_cf: dict, notice: bool,
        settle: str = r"postfix/smtp\[\d+\]: \w+: to=<bob@") -> dict:
    """One delivery of MESSAGE to RCPT; returns the chat lines per agent pid
    (in log order), the queued notice (postcat text) and the log."""
    os.makedirs(base, mode=0o755, exist_ok=True)
    peer = SmtpPeer(script, max_lifetime=120)
    peer.start()
    cf = {"minimal_backoff_time": "300s", "maximal_backoff_time": "300s"}
    cf.update(HOLD_CF)
    cf.update({k: v.replace("PEERPORT", str(peer.port)) for k, v in main_cf.items()})
    inst = PostfixInstance(base, relayhost="[127.0.0.1]:%d" % peer.port, agent=agent,
                           main_cf=cf, max_lifetime=300)
    try:
        inst.start()
        inst.sendmail(MESSAGE, SENDER, [RCPT])
        inst.expect_log(settle, timeout=30)
        text = None
        if notice:
            qid = QID_RE.search(inst.expect_log(QID_RE.pattern, timeout=30)[0]).group(1)
            inst.expect_log(r"%s: to=<%s>.*status=deferred" % (qid, re.escape(NOTICE_RCPT)),
                            timeout=30)
            text = inst.postcat(qid)
        else:
            time.sleep(1.0)          # a notice, if any, would be queued by now
        assert inst.wait_queue_empty(timeout=30, allow_deferred=True)
        time.sleep(0.3)
        log = inst.log_lines()
        chats: dict = {}
        for line in log:
            m = CHAT_RE.search(line)
            if m:
                chats.setdefault(m.group(1), []).append(
                    re.sub(r"\]:\d+:", "]:PORT:", m.group(2)))
        return {"chats": list(chats.values()), "notice": text, "log": log,
                "sessions": peer.sessions}
    finally:
        inst.stop()
        peer.stop()


def both(tmp_base, agent_wrapper, script_factory, main_cf, notice):
    ours = run(os.path.join(tmp_base, "agent"), agent_wrapper, script_factory(), main_cf, notice)
    stock = run(os.path.join(tmp_base, "stock"), None, script_factory(), main_cf, notice)
    return ours, stock


def normalise_notice(text: str) -> str:
    text = re.sub(r"\b[0-9A-F]{8,12}\b", "QUEUEID", text)
    text = re.sub(r"deferred/[0-9A-F]/", "deferred/", text)        # hashed queue directory
    text = re.sub(r"\w{3}, [ \d]\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4} \(\w+\)", "DATE", text)
    text = re.sub(r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}", "CTIME", text)   # postcat times
    text = re.sub(r"<\d{14}\.QUEUEID@", "<MSGID@", text)
    text = re.sub(r"\]:\d+", "]:PORT", text)
    text = re.sub(r"(message_size|message_arrival_time|create_time): .*", r"\1: X", text)
    return text


def first_session(chats: list) -> list:
    """The chat lines of the agent that delivered the test message, up to
    the end of its first session (the notice, or its last line)."""
    assert chats, "no debug chat lines logged"
    lines = chats[0]
    if "smtp_chat_notify: notify postmaster" in lines:
        lines = lines[:lines.index("smtp_chat_notify: notify postmaster") + 1]
    return lines


def _rcpt_500(line: str) -> str:
    return "500 5.5.1 Syntax error in parameters" if "bob@" in line else "250 2.1.5 Ok"


# --- notices --------------------------------------------------------------------------

def test_protocol_error_notice_and_transcript_as_stock(tmp_base, agent_wrapper):
    cf = {"notify_classes": "resource, software, protocol", "debug_peer_list": "127.0.0.1"}
    ours, stock = both(tmp_base, agent_wrapper, lambda: PeerScript(rcpt_reply=_rcpt_500),
                       cf, notice=True)
    assert normalise_notice(ours["notice"]) == normalise_notice(stock["notice"])
    notice = normalise_notice(ours["notice"])
    assert "Subject: Postfix SMTP client: errors from 127.0.0.1[127.0.0.1]:PORT" in notice
    assert " In:  500 5.5.1 Syntax error in parameters" in notice
    assert "double-bounce@mx.test.invalid" in notice
    assert first_session(ours["chats"]) == first_session(stock["chats"])
    assert first_session(ours["chats"])[-1] == "smtp_chat_notify: notify postmaster"


def test_garbled_reply_is_a_protocol_error_as_stock(tmp_base, agent_wrapper):
    def script():
        return PeerScript(rcpt_reply=lambda line: b"garbage line\r\n250 2.1.5 Ok\r\n")
    ours, stock = both(tmp_base, agent_wrapper, script, {"notify_classes": "protocol"},
                       notice=True)
    assert normalise_notice(ours["notice"]) == normalise_notice(stock["notice"])
    assert " In:  garbage line" in ours["notice"]


def test_local_data_error_notice_as_stock(tmp_base, agent_wrapper):
    cf = {"notify_classes": "data", "debug_peer_list": "127.0.0.0/8",
          "smtp_discard_ehlo_keyword_address_maps": "hash:/nonexistent/discard"}
    ours, stock = both(tmp_base, agent_wrapper, PeerScript, cf, notice=True)
    assert normalise_notice(ours["notice"]) == normalise_notice(stock["notice"])
    assert first_session(ours["chats"]) == first_session(stock["chats"])


def test_no_notice_for_classes_not_listed(tmp_base, agent_wrapper):
    # a protocol error with only "data" enabled: neither agent queues a notice
    for name, agent in (("agent", agent_wrapper), ("stock", None)):
        out = run(os.path.join(tmp_base, name), agent, PeerScript(rcpt_reply=_rcpt_500),
                  {"notify_classes": "data"}, notice=False)
        assert not [ln for ln in out["log"] if "from=<double-bounce@" in ln], name


# --- debug_peer_list ---------------------------------------------------------------------

@pytest.mark.parametrize("peers", ["127.0.0.1", "[127.0.0.1]:PEERPORT", "inline:{127.0.0.1=x}"])
def test_debug_peer_transcript_as_stock(tmp_base, agent_wrapper, peers):
    ours, stock = both(tmp_base, agent_wrapper, PeerScript, {"debug_peer_list": peers},
                       notice=False)
    assert first_session(ours["chats"]) == first_session(stock["chats"])
    lines = first_session(ours["chats"])
    assert lines[0] == "< 127.0.0.1[127.0.0.1]:PORT: 220 peer.test.invalid ESMTP"
    assert "> 127.0.0.1[127.0.0.1]:PORT: ." in lines
    assert not any("Hello Bob" in ln for ln in lines)          # content is never logged


def test_debug_peer_not_listed_logs_no_transcript(tmp_base, agent_wrapper):
    for name, agent in (("agent", agent_wrapper), ("stock", None)):
        out = run(os.path.join(tmp_base, name), agent, PeerScript(),
                  {"debug_peer_list": "!127.0.0.1, 0.0.0.0/0"}, notice=False)
        assert [ln for ln in out["log"] if "to=<bob@" in ln and "status=sent" in ln], name
        assert out["chats"] == [], name


def test_reply_filter_replacement_in_notice_as_stock(tmp_base, agent_wrapper):
    rules = os.path.join(tmp_base, "reply_filter")
    with open(rules, "w") as f:
        f.write("/^250 2\\.1\\.5 Ok$/ 500 5.5.1 filtered\n")
    os.chmod(rules, 0o644)
    cf = {"notify_classes": "protocol", "debug_peer_list": "127.0.0.1",
          "smtp_reply_filter": "regexp:" + rules}
    ours, stock = both(tmp_base, agent_wrapper, PeerScript, cf, notice=True)
    assert normalise_notice(ours["notice"]) == normalise_notice(stock["notice"])
    assert " In:  250 2.1.5 Ok\n Replaced-by:\n      500 5.5.1 filtered\n" in ours["notice"]
    assert first_session(ours["chats"]) == first_session(stock["chats"])
