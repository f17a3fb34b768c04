"""Session chat: debug transcript, history, postmaster notices, and the
submission to cleanup (postfix_smtp.smtp.chat, postfix_smtp.ipc.postmail)."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from postfix_smtp.config.params import Params
from postfix_smtp.ipc import postmail
from postfix_smtp.ipc.attr import encode
from postfix_smtp.maps import RecordingLog
from postfix_smtp.maps.matchlist import namadr_list
from postfix_smtp.queue.records import RecordReader
from postfix_smtp.smtp import chat as chatmod
from postfix_smtp.smtp.chat import (MAIL_ERROR_DATA, MAIL_ERROR_PROTOCOL, Chat, ChatConfig,
                                    NoticeSettings, compose_notice, error_mask,
                                    is_protocol_error, session_chat, wrap)
from postfix_smtp.smtp.reply import ReplyParser

WHERE = "mx.example[192.0.2.1]:25"


class Log(RecordingLog):
    def __init__(self, verbose=0):
        super().__init__()
        self.verbose = verbose


def replies(data: bytes):
    p = ReplyParser()
    p.feed(data)
    out = []
    while True:
        r = p.pop()
        if r is None:
            return out
        out.append(r)


# --- line wrapping ------------------------------------------------------------------

def test_wrap_short_line_untouched():
    assert wrap("In:  250 2.0.0 Ok") == ["In:  250 2.0.0 Ok"]


def test_wrap_breaks_at_blanks_and_indents():
    text = "Out: RCPT TO:<" + "a" * 60 + "@example.com> ORCPT=rfc822;x NOTIFY=FAILURE,DELAY"
    # the address does not fit after "Out: RCPT": it gets a line of its own
    assert wrap(text, 78, 4) == ["Out: RCPT", "    TO:<" + "a" * 60 + "@example.com>",
                                 "    ORCPT=rfc822;x NOTIFY=FAILURE,DELAY"]
    text = "Out: RCPT TO:<" + "a" * 40 + "@example.com> ORCPT=rfc822;x NOTIFY=FAILURE,DELAY"
    assert wrap(text, 78, 4) == ["Out: RCPT TO:<" + "a" * 40 + "@example.com>",
                                 "    ORCPT=rfc822;x NOTIFY=FAILURE,DELAY"]


def test_wrap_long_word_stays_whole_and_later_lines_are_shorter():
    long = "x" * 100
    assert wrap("In:  " + long) == ["In:", "    " + long]
    words = " ".join(["abcdefghi"] * 20)               # 199 columns
    lines = wrap(words, 78, 4)
    assert len(lines[0]) <= 78
    assert all(len(x) <= 78 for x in lines[1:]) and all(x.startswith("    ") for x in lines[1:])
    assert " ".join(x.strip() for x in lines) == words


def test_wrap_drops_trailing_blanks_and_break_blanks():
    assert wrap("a  ", 78, 4) == ["a"]
    assert wrap("aaaa   bbbb", 6, 2) == ["aaaa", "  bbbb"]


def test_wrap_negative_indent_indents_the_first_line():
    assert wrap("aaa bbb", 78, -2) == ["  aaa bbb"]


# --- classes and codes --------------------------------------------------------------

def test_error_mask_names():
    warned = []
    assert error_mask("resource, software, protocol", warned.append) == (
        chatmod.MAIL_ERROR_RESOURCE | chatmod.MAIL_ERROR_SOFTWARE | MAIL_ERROR_PROTOCOL)
    assert error_mask("DATA bogus", warned.append) == MAIL_ERROR_DATA
    assert warned == ['unknown notify_classes value "bogus" in "DATA bogus"']


@pytest.mark.parametrize("code,status,bad", [
    (450, "4.2.0", False), (550, "5.1.1", False), (421, "4.4.2", False),
    (500, "5.5.1", True), (509, "5.5.0", True), (510, "5.1.0", False), (555, "5.5.4", True),
    (250, "2.0.0", True), (354, "5.5.0", True), (600, "5.5.0", True), (0, "5.5.0", True),
])
def test_protocol_error_codes(code, status, bad):
    assert is_protocol_error(code, status) is bad


# --- the conversation -----------------------------------------------------------------

def _cfg(mask=MAIL_ERROR_PROTOCOL | MAIL_ERROR_DATA, peers=None, level=2):
    return ChatConfig(peers, level, mask, NoticeSettings(myhostname="mx.test.invalid"))


def test_commands_and_replies_logged_when_verbose():
    log = Log(verbose=2)
    c = Chat(log, WHERE)
    c.sent(b"EHLO me.example\r\n")
    for r in replies(b"250-mx.example\r\n250 PIPELINING\r\n"):
        c.received(r)
    assert log.texts("info") == [
        "> %s: EHLO me.example" % WHERE,
        "< %s: 250-mx.example" % WHERE,
        "< %s: 250 PIPELINING" % WHERE,
    ]
    assert c.history == []                     # log only: nothing recorded


def test_reply_lines_logged_up_to_100_bytes():
    log = Log(verbose=1)
    c = Chat(log, WHERE)
    c.received(replies(b"250 " + b"y" * 200 + b"\r\n")[0])
    assert log.texts("info") == ["< %s: 250 %s" % (WHERE, "y" * 96)]


def test_history_recorded_without_logging():
    log = Log(verbose=0)
    c = Chat(log, WHERE, _cfg())
    c.sent(b"MAIL FROM:<a@b>\r\n")
    c.sent(b"")                                   # LMTP placeholders: nothing
    c.received(replies(b"250 2.1.0 Ok\r\n")[0])
    assert c.history == ["Out: MAIL FROM:<a@b>", "In:  250 2.1.0 Ok"]
    assert log.texts() == []
    assert c.error_mask == 0


def test_garbled_reply_is_a_protocol_error():
    c = Chat(Log(), WHERE, _cfg())
    c.received(replies(b"hello there\r\n250 ok\r\n")[0])
    assert c.history == ["In:  hello there", "In:  250 ok"]
    assert c.error_mask == MAIL_ERROR_PROTOCOL


def test_notice_due_rules():
    c = Chat(Log(), WHERE, _cfg(mask=MAIL_ERROR_PROTOCOL))
    assert not c.notice_due("a@b")                # no history, no error
    c.sent(b"RSET\r\n")
    assert not c.notice_due("a@b")
    c.data_error()
    assert not c.notice_due("a@b")                # class "data" not enabled
    c.check_code(500, "5.5.1")
    assert c.notice_due("a@b")
    assert not c.notice_due("")                   # bounces
    assert not c.notice_due("double-bounce@mx.test.invalid")
    assert c.notice_due("Double-Bounce@mx.test.invalid")   # compared exactly, as stock


# --- debug_peer_check ---------------------------------------------------------------

def test_debug_peer_raises_for_the_session_only():
    log = Log(verbose=0)
    cfg = _cfg(mask=0, peers=namadr_list("debug_peer_list", "192.0.2.0/24", log=log,
                                         parent=True), level=3)
    assert cfg.session(log, "other.example", "198.51.100.1", "x") is None
    c = cfg.session(log, "mx.example", "192.0.2.1", WHERE)
    assert c is not None and not c.record and log.verbose == 3
    c.sent(b"QUIT\r\n")
    c.release()
    assert log.verbose == 0
    assert log.texts("info")[-1] == "> %s: QUIT" % WHERE


def test_debug_peer_nexthop_raise_covers_the_request():
    log = Log(verbose=1)
    cfg = _cfg(mask=MAIL_ERROR_PROTOCOL,
               peers=namadr_list("debug_peer_list", "example.com", log=log, parent=True))
    assert cfg.peer_check(log, "example.com", "noaddr")
    assert log.verbose == 3
    c = cfg.session(log, "mx.example.com", "192.0.2.1", WHERE)   # already raised: not again
    assert not c.raised
    c.release()
    assert log.verbose == 3
    cfg.restore(log)
    assert log.verbose == 1


def test_session_chat_without_config():
    assert session_chat(None, Log(0), "h", "a", "x") is None
    c = session_chat(None, Log(1), "h", "a", "x")
    assert c is not None and c.cfg is None and not c.record


def test_config_from_params():
    assert ChatConfig.from_params(Params({})) is None
    p = Params({"notify_classes": "protocol, data, bogus", "error_notice_recipient": "pm@x",
                "myhostname": "mx.test.invalid", "header_from_format": "obsolete"})
    warned = []
    cfg = ChatConfig.from_params(p, "lmtp", warn=warned.append)
    assert cfg.notify_mask == MAIL_ERROR_PROTOCOL | MAIL_ERROR_DATA
    assert cfg.notice.recipient == "pm@x" and cfg.notice.lmtp and not cfg.notice.hfrom_standard
    assert cfg.notice.double_bounce == "double-bounce@mx.test.invalid"
    assert warned == ['unknown notify_classes value "bogus" in "protocol, data, bogus"']
    cfg = ChatConfig.from_params(Params({"debug_peer_list": "10.0.0.0/8",
                                         "debug_peer_level": "4"}))
    assert cfg.notify_mask == 0 and cfg.debug_level == 4 and cfg.debug_peers is None
    cfg.open(RecordingLog())
    assert cfg.debug_peers.match("x", "10.1.2.3")
    with pytest.raises(ValueError):
        ChatConfig.from_params(Params({"debug_peer_list": "x", "debug_peer_level": "0"}))


# --- the notice -------------------------------------------------------------------------

HISTORY = ["In:  220 mx ESMTP", "Out: EHLO me", "In:  500 5.5.1 what?\x07"]


def test_compose_notice_standard_header_format():
    ns = NoticeSettings(recipient="postmaster", myhostname="me.test.invalid")
    assert compose_notice(HISTORY, WHERE, ns) == [
        "From: Mail Delivery System <MAILER-DAEMON@me.test.invalid>",
        "To: Postmaster <postmaster>",
        "Subject: Postfix SMTP client: errors from %s" % WHERE,
        "",
        "Unexpected response from %s." % WHERE,
        "",
        "Transcript of session follows.",
        "",
        " In:  220 mx ESMTP",
        " Out: EHLO me",
        " In:  500 5.5.1 what??",
        "",
        "For other details, see the local mail logfile",
    ]


def test_compose_notice_obsolete_header_format_and_lmtp():
    ns = NoticeSettings(recipient="pm@x", myhostname="h", hfrom_standard=False, lmtp=True,
                        mail_name="MyMail")
    lines = compose_notice(["Out: " + "w" * 90 + " tail"], WHERE, ns)
    assert lines[:3] == ["From: MAILER-DAEMON@h (Mail Delivery System)", "To: pm@x (Postmaster)",
                         "Subject: MyMail LMTP client: errors from %s" % WHERE]
    assert lines[8:11] == [" Out:", "     " + "w" * 90, "     tail"]


# --- submission to cleanup ------------------------------------------------------------------

class FakeCleanup:
    """A cleanup(8) stand-in on a Unix socket: greets, reads flags and the
    record stream up to E, answers status."""

    def __init__(self, path: str, status: int = 0, greeting=None) -> None:
        self.path = path
        self.status = status
        self.greeting = greeting or [("protocol", "cleanup_protocol"), ("queue_id", "ABC123")]
        self.flags = None
        self.records = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import io
        conn, _ = self.sock.accept()
        conn.settimeout(10)
        with conn:
            conn.sendall(encode(self.greeting))
            buf = bytearray()
            while True:
                # the flags list: "flags" NUL value NUL, then the list's NUL
                i = buf.find(b"\0")
                j = buf.find(b"\0", i + 1) if i >= 0 else -1
                if j >= 0 and len(buf) > j + 1:
                    self.flags = [(buf[:i].decode(), buf[i + 1:j].decode())]
                    rest = bytes(buf[j + 2:])
                    if _has_end(rest):
                        break
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            reader = RecordReader(io.BytesIO(rest), "fake", 0, transparent=False)
            while True:
                rtype, payload = reader.read()
                if rtype < 0:
                    break
                self.records.append((chr(rtype), payload))
                if rtype == ord("E"):
                    break
            conn.sendall(encode([("status", self.status), ("reason", "")]))

    def join(self):
        self.thread.join(10)
        self.sock.close()


def _has_end(buf: bytes) -> bool:
    import io
    reader = RecordReader(io.BytesIO(bytes(buf)), "fake", 0, transparent=False)
    try:
        while True:
            rtype, _ = reader.read()
            if rtype < 0:
                return False
            if rtype == ord("E"):
                return True
    except Exception:
        return False


def test_post_mail_exchange(tmp_path):
    path = str(tmp_path / "cleanup")
    srv = FakeCleanup(path)
    status, qid = postmail.post_mail("double-bounce@mx", "postmaster", ["Subject: x", "", "body"],
                                     myhostname="mx.test.invalid", path=path, now=1795652940.25)
    srv.join()
    assert (status, qid) == (0, "ABC123")
    assert srv.flags == [("flags", str(postmail.CLEANUP_FLAG_MAP_OK))]
    recs = srv.records
    assert recs[0] == ("T", b"1795652940 250000")
    assert recs[1:6] == [("A", b"log_message_origin=local"), ("A", b"trace_flags=0"),
                         ("S", b"double-bounce@mx"), ("R", b"postmaster"), ("M", b"")]
    date = postmail.mail_date(1795652940).encode()
    assert recs[6:12] == [("N", b"Received: by mx.test.invalid (Postfix)"),
                          ("N", b"\tid ABC123; " + date), ("N", b"Date: " + date),
                          ("N", b"Subject: x"), ("N", b""), ("N", b"body")]
    assert recs[12:] == [("X", b""), ("E", b"")]


def test_post_mail_status_and_bad_greeting(tmp_path):
    path = str(tmp_path / "c1")
    srv = FakeCleanup(path, status=postmail.CLEANUP_STAT_WRITE)
    assert postmail.post_mail("a", "b", [], myhostname="h", path=path)[0] == 2
    srv.join()
    path2 = str(tmp_path / "c2")
    srv2 = FakeCleanup(path2, greeting=[("protocol", "other")])
    with pytest.raises(postmail.PostMailError, match="unable to contact the cleanup service"):
        postmail.post_mail("a", "b", [], myhostname="h", path=path2, timeout=2)
    srv2.sock.close()


def test_cleanup_flags():
    f = postmail.cleanup_flags
    n = postmail.SRC_NOTIFY
    assert f(n) == postmail.CLEANUP_FLAG_MAP_OK
    assert f(n, "notify") == postmail.CLEANUP_FLAG_MAP_OK | postmail.CLEANUP_FLAG_FILTER \
        | postmail.CLEANUP_FLAG_MILTER
    assert f(n, "bounce") == postmail.CLEANUP_FLAG_MAP_OK
    assert f(n, "", "all") == postmail.CLEANUP_FLAG_MAP_OK | postmail.CLEANUP_FLAG_AUTOUTF8


def test_mail_date_format():
    old = os.environ.get("TZ")
    try:
        os.environ["TZ"] = "Asia/Kolkata"
        time.tzset()
        assert postmail.mail_date(1795652940) == "Thu, 26 Nov 2026 05:59:00 +0530 (IST)"
        os.environ["TZ"] = "UTC"
        time.tzset()
        assert postmail.mail_date(1796000000) == "Mon, 30 Nov 2026 00:53:20 +0000 (UTC)"
        assert postmail.mail_date(1794000000) == "Fri,  6 Nov 2026 21:20:00 +0000 (UTC)"
        os.environ["TZ"] = "America/St_Johns"
        time.tzset()
        assert postmail.mail_date(1795652940) == "Wed, 25 Nov 2026 20:59:00 -0330 (NST)"
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_notify_postmaster_posts_the_notice(tmp_path):
    path = str(tmp_path / "cleanup")
    srv = FakeCleanup(path)
    log = Log(verbose=1)
    ns = NoticeSettings(myhostname="mx.test.invalid")
    assert chatmod.notify_postmaster(HISTORY, WHERE, ns, log, path=path)
    srv.join()
    body = [p.decode() for t, p in srv.records if t == "N"]
    assert body[3:] == compose_notice(HISTORY, WHERE, ns)
    assert ("S", b"double-bounce@mx.test.invalid") in srv.records
    assert ("R", b"postmaster") in srv.records
    assert log.texts("info") == ["smtp_chat_notify: notify postmaster"]


def test_notify_postmaster_without_cleanup_warns(tmp_path):
    log = Log()
    ns = NoticeSettings(myhostname="h")
    path = str(tmp_path / "nothing")
    assert not chatmod.notify_postmaster(HISTORY, WHERE, ns, log, path=path)
    assert log.texts("warning") == [
        "connect to %s: No such file or directory" % path,
        "postmaster notify: No such file or directory"]


def test_session_end_posts_only_when_due(tmp_path, monkeypatch):
    sent = []
    monkeypatch.setattr(chatmod, "notify_postmaster",
                        lambda h, w, ns, log, path=None: sent.append((list(h), w)) or True)
    c = Chat(Log(), WHERE, _cfg(mask=MAIL_ERROR_DATA))
    c.sent(b"EHLO me\r\n")
    assert not c.session_end("a@b")
    c.data_error()
    assert c.session_end("a@b")
    assert sent == [(["Out: EHLO me"], WHERE)]


def test_reply_filter_replacements_in_history_and_log():
    log = Log(verbose=1)
    c = Chat(log, WHERE, _cfg())
    replaced = [("250-mx says hi", "250-mx")]
    c.received(replies(b"250-mx\r\n250 SIZE\r\n")[0], replaced)
    assert replaced == []
    assert c.history == ["In:  250-mx says hi", "Replaced-by: ", "     250-mx", "In:  250 SIZE"]
    assert log.texts("info") == ["< %s: 250-mx says hi" % WHERE, "< %s: 250 SIZE" % WHERE]
    ns = NoticeSettings(myhostname="h")
    assert compose_notice(c.history, WHERE, ns)[8:12] == [
        " In:  250-mx says hi", " Replaced-by:", "      250-mx", " In:  250 SIZE"]
