"""postfix_smtp.smtp.protocol: EHLO parsing (smtp-client.md §5.3) and the
MAIL..QUIT transaction engine (§5.9)."""

from __future__ import annotations

import pytest

from postfix_smtp.smtp.protocol import (IN_REPLY_TO, PIPELINE_LIMIT, STAGE_INFO, Stage,
                                        Transaction, greeting_says_esmtp, parse_ehlo)
from postfix_smtp.smtp.reply import Reply, ReplyParser


def R(*lines: str) -> Reply:
    """A reply built through the real parser."""
    p = ReplyParser()
    p.feed("".join(line + "\r\n" for line in lines).encode())
    assert len(p.replies) == 1
    return p.pop()


# --- EHLO ------------------------------------------------------------------------

CAPTURED_EHLO = R("250-sink.lab.invalid", "250-PIPELINING", "250-8BITMIME",
                  "250-AUTH PLAIN LOGIN", "250-XCLIENT NAME HELO",
                  "250-XFORWARD NAME ADDR PROTO HELO", "250-ENHANCEDSTATUSCODES", "250-DSN",
                  "250 ")


def test_parse_ehlo_captured():
    f = parse_ehlo(CAPTURED_EHLO)
    assert f.esmtp is True
    assert f.server_name == "sink.lab.invalid"
    assert f.pipelining and f.eightbitmime and f.dsn and f.enhancedstatuscodes
    assert f.auth == ["PLAIN", "LOGIN"]
    assert f.xforward == {"NAME", "ADDR", "PROTO", "HELO"}
    assert not f.size and f.size_limit == 0
    assert not f.starttls and not f.smtputf8
    assert f.warnings == []


def test_parse_ehlo_case_insensitive():
    f = parse_ehlo(R("250-mx.example.org Hello", "250-pipelining", "250-Size 1000",
                     "250-8bitmime", "250-dsn", "250-SmtpUtf8", "250-starttls",
                     "250 xforward name addr"))
    assert f.server_name == "mx.example.org"
    assert (f.pipelining, f.size, f.size_limit, f.eightbitmime, f.dsn, f.smtputf8,
            f.starttls) == (True, True, 1000, True, True, True, True)
    assert f.xforward == {"NAME", "ADDR"}


def test_parse_ehlo_first_line_is_never_a_keyword():
    f = parse_ehlo(R("250-PIPELINING", "250 SIZE"))
    assert f.server_name == "PIPELINING"
    assert f.pipelining is False
    assert f.size is True


def test_parse_ehlo_single_line():
    f = parse_ehlo(R("250 mx.example.org"))
    assert f.esmtp and f.server_name == "mx.example.org"
    assert not f.pipelining


def test_parse_ehlo_auth_old_form_and_repeated_lines():
    f = parse_ehlo(R("250-mx", "250-AUTH=LOGIN PLAIN", "250-AUTH CRAM-MD5", "250 OK"))
    assert f.auth == ["LOGIN", "PLAIN", "CRAM-MD5"]
    f = parse_ehlo(R("250-mx", "250 auth=login"))
    assert f.auth == ["LOGIN"]


@pytest.mark.parametrize("line, size, limit, warnings", [
    ("250 SIZE", True, 0, []),
    ("250 SIZE 10240000", True, 10240000, []),
    ("250 SIZE 0", True, 0, []),
    ("250 SIZE=52428800", True, 52428800, []),
    ("250 SIZE 10M", True, 0, ['bad EHLO SIZE limit "10M"']),
    ("250 SIZE -1", True, 0, ['bad EHLO SIZE limit "-1"']),
    ("250 SIZE \u0661\u0662", True, 0, ['bad EHLO SIZE limit "\u0661\u0662"']),
])
def test_parse_ehlo_size(line, size, limit, warnings):
    f = parse_ehlo(R("250-mx", line))
    assert (f.size, f.size_limit, f.warnings) == (size, limit, warnings)


def test_parse_ehlo_discard():
    discard = frozenset({"PIPELINING", "SIZE", "AUTH", "DSN", "XFORWARD", "STARTTLS"})
    f = parse_ehlo(R("250-mx", "250-PIPELINING", "250-size 100", "250-AUTH PLAIN",
                     "250-DSN", "250-XFORWARD NAME", "250-STARTTLS", "250-8BITMIME",
                     "250 SMTPUTF8"), discard)
    assert not (f.pipelining or f.size or f.dsn or f.starttls)
    assert f.size_limit == 0 and f.auth == [] and f.xforward == set()
    assert f.eightbitmime and f.smtputf8


def test_parse_ehlo_unknown_and_empty_lines_ignored():
    f = parse_ehlo(R("250-mx", "250-", "250-CHUNKING", "250-VRFY", "250 ETRN"))
    assert not f.pipelining and f.auth == [] and f.server_name == "mx"


@pytest.mark.parametrize("lines, esmtp", [
    (["220 sink.lab.invalid ESMTP"], True),
    (["220 mx.example.org ESMTP Postfix (Debian/GNU)"], True),
    (["220 mx.example.org esmtp"], True),
    (["220 mx.example.org Microsoft ESMTP MAIL Service ready"], True),
    (["220 mx.example.org SMTP ready"], False),
    (["220 mx.example.org ESMTPS"], False),
    (["220 mx.example.org"], False),
    (["220"], False),
    (["220-mx.example.org ESMTP", "220 welcome"], True),
    (["220-mx.example.org", "220-hello", "220 Service ready ESMTP"], True),
    # a later line's first word is not a host name: it counts
    (["220-mx.example.org", "220 ESMTP ready"], True),
])
def test_greeting_says_esmtp(lines, esmtp):
    assert greeting_says_esmtp(R(*lines)) is esmtp


# --- transaction helpers -------------------------------------------------------------

OK = R("250 2.0.0 Ok")
MAIL_OK = R("250 2.1.0 Ok")
RCPT_OK = R("250 2.1.5 Ok")
GO = R("354 End data with <CR><LF>.<CR><LF>")
QUEUED = R("250 2.0.0 Ok: queued as 4Xyz")

MAIL = b"MAIL FROM:<sender@lab.invalid>\r\n"


def rcpt(i: int) -> bytes:
    return b"RCPT TO:<r%d@dest.lab.invalid>\r\n" % i


def wire(cmds) -> bytes:
    return b"".join(c.data for c in cmds)


def stages(cmds) -> list:
    return [c.stage for c in cmds]


# --- pipelined ------------------------------------------------------------------------------

def test_pipelined_success():
    tx = Transaction(MAIL, [rcpt(0), rcpt(1)], pipelining=True)
    batch = tx.commands()
    assert wire(batch) == MAIL + rcpt(0) + rcpt(1) + b"DATA\r\n"
    assert stages(batch) == [Stage.MAIL, Stage.RCPT, Stage.RCPT, Stage.DATA]
    assert [c.index for c in batch] == [-1, 0, 1, -1]
    assert tx.commands() == []                   # nothing more until replies are read
    assert [c.stage for c in tx.awaiting] == stages(batch)
    for reply in (MAIL_OK, RCPT_OK, RCPT_OK, GO):
        assert not tx.wants_content
        tx.on_reply(reply)
    assert tx.commands() == []
    assert tx.wants_content
    assert not tx.done
    tail = tx.content_sent()
    assert wire(tail) == b".\r\nQUIT\r\n"           # one write: '.' and QUIT
    assert stages(tail) == [Stage.DOT, Stage.QUIT]
    assert tx.sent_quit
    assert [c.stage for c in tx.awaiting] == [Stage.DOT]   # QUIT reply is not read
    assert not tx.done
    tx.on_reply(QUEUED)
    assert tx.commands() == []
    assert tx.done
    assert tx.accepted == [0, 1]
    assert tx.mail_reply is MAIL_OK
    assert tx.rcpt_replies == {0: RCPT_OK, 1: RCPT_OK}
    assert tx.data_reply is GO
    assert tx.dot_reply is QUEUED
    assert not tx.aborted


def test_pipelined_captured_wire_bytes():
    # stock-smtp-3.7-sent.strace.txt: one write for the envelope
    m = b"MAIL FROM:<sender@lab.invalid>\r\n"
    r = b"RCPT TO:<rcpt@dest.lab.invalid> ORCPT=rfc822;rcpt@dest.lab.invalid\r\n"
    tx = Transaction(m, [r], pipelining=True)
    out = wire(tx.commands())
    assert out == (b"MAIL FROM:<sender@lab.invalid>\r\nRCPT TO:<rcpt@dest.lab.invalid> "
                   b"ORCPT=rfc822;rcpt@dest.lab.invalid\r\nDATA\r\n")
    assert len(out) == 106


def test_pipelined_partial_acceptance():
    tx = Transaction(MAIL, [rcpt(0), rcpt(1), rcpt(2)], pipelining=True)
    tx.commands()
    for reply in (MAIL_OK, R("550 5.1.1 no"), RCPT_OK, R("450 4.2.0 later"), GO):
        tx.on_reply(reply)
    assert tx.accepted == [1]
    assert tx.commands() == [] and tx.wants_content


def test_pipelined_all_rcpt_4xx_data_554():
    tx = Transaction(MAIL, [rcpt(0), rcpt(1)], pipelining=True)
    tx.commands()
    for reply in (MAIL_OK, R("450 4.1.1 a"), R("450 4.1.1 b"), R("554 5.5.1 no valid recipients")):
        tx.on_reply(reply)
    cmds = tx.commands()
    assert wire(cmds) == b"RSET\r\nQUIT\r\n"        # one write
    assert stages(cmds) == [Stage.ABORT, Stage.QUIT]
    assert tx.aborted and tx.sent_quit
    assert [c.stage for c in tx.awaiting] == [Stage.ABORT]   # the RSET reply is read
    assert not tx.done
    tx.on_reply(OK)
    assert tx.commands() == []
    assert tx.done
    assert tx.accepted == []


def test_pipelined_354_with_nothing_accepted_sends_lone_dot():
    tx = Transaction(MAIL, [rcpt(0)], pipelining=True)
    tx.commands()
    for reply in (MAIL_OK, R("550 5.1.1 unknown"), GO):
        tx.on_reply(reply)
    cmds = tx.commands()
    assert wire(cmds) == b".\r\nQUIT\r\n"
    assert stages(cmds) == [Stage.DOT, Stage.QUIT]
    assert not tx.wants_content
    tx.on_reply(R("554 5.5.1 no valid recipients"))
    assert tx.done
    assert tx.accepted == []


def test_pipelined_mail_rejected():
    tx = Transaction(MAIL, [rcpt(0), rcpt(1)], pipelining=True)
    assert stages(tx.commands()) == [Stage.MAIL, Stage.RCPT, Stage.RCPT, Stage.DATA]
    for reply in (R("550 5.7.1 sender rejected"), R("503 5.5.1 need MAIL"), RCPT_OK,
                  R("503 5.5.1 need RCPT")):
        tx.on_reply(reply)
    assert tx.accepted == []                    # RCPT replies after a rejected MAIL don't count
    cmds = tx.commands()
    assert wire(cmds) == b"RSET\r\nQUIT\r\n"
    tx.on_reply(OK)
    assert tx.done and tx.aborted


def test_pipelined_dot_rejected():
    tx = Transaction(MAIL, [rcpt(0)], pipelining=True)
    tx.commands()
    for reply in (MAIL_OK, RCPT_OK, GO):
        tx.on_reply(reply)
    assert tx.commands() == []
    assert wire(tx.content_sent()) == b".\r\nQUIT\r\n"
    tx.on_reply(R("554 5.7.1 spam"))
    assert tx.done and tx.dot_reply.code == 554


# --- lock-step ------------------------------------------------------------------------------

def test_lockstep_sequence():
    tx = Transaction(MAIL, [rcpt(0), rcpt(1)], pipelining=False)
    seq = []
    for reply in (MAIL_OK, RCPT_OK, RCPT_OK, GO):
        cmds = tx.commands()
        assert len(cmds) == 1
        seq.append(cmds[0].data)
        assert tx.commands() == []              # strictly one outstanding command
        tx.on_reply(reply)
    assert seq == [MAIL, rcpt(0), rcpt(1), b"DATA\r\n"]
    assert tx.commands() == []
    assert tx.wants_content
    cmds = tx.content_sent()
    assert wire(cmds) == b".\r\n"               # QUIT only after the '.' reply
    assert tx.commands() == []
    assert not tx.done
    tx.on_reply(QUEUED)
    cmds = tx.commands()
    assert wire(cmds) == b"QUIT\r\n"
    assert tx.sent_quit
    assert tx.done
    assert tx.commands() == []


def test_lockstep_mail_rejected():
    tx = Transaction(MAIL, [rcpt(0), rcpt(1)], pipelining=False)
    assert wire(tx.commands()) == MAIL
    tx.on_reply(R("550 5.7.1 no"))
    cmds = tx.commands()
    assert wire(cmds) == b"RSET\r\n"            # instead of RCPT
    assert stages(cmds) == [Stage.ABORT]
    assert tx.aborted
    tx.on_reply(OK)
    assert wire(tx.commands()) == b"QUIT\r\n"
    assert tx.done
    assert tx.rcpt_replies == {}


def test_lockstep_no_rcpt_accepted_rset_instead_of_data():
    tx = Transaction(MAIL, [rcpt(0), rcpt(1)], pipelining=False)
    tx.commands()
    tx.on_reply(MAIL_OK)
    tx.commands()
    tx.on_reply(R("550 5.1.1 a"))
    tx.commands()
    tx.on_reply(R("450 4.1.1 b"))
    cmds = tx.commands()
    assert wire(cmds) == b"RSET\r\n"
    assert tx.aborted and tx.data_reply is None
    tx.on_reply(OK)
    assert wire(tx.commands()) == b"QUIT\r\n"
    assert tx.done


def test_lockstep_data_rejected():
    tx = Transaction(MAIL, [rcpt(0)], pipelining=False)
    for reply in (MAIL_OK, RCPT_OK):
        tx.commands()
        tx.on_reply(reply)
    assert wire(tx.commands()) == b"DATA\r\n"
    tx.on_reply(R("554 5.5.1 no"))
    assert wire(tx.commands()) == b"RSET\r\n"
    tx.on_reply(OK)
    assert wire(tx.commands()) == b"QUIT\r\n"
    assert tx.done and not tx.wants_content


# --- probes, QUIT handling -----------------------------------------------------------------

def test_probe_pipelined_ends_with_rset():
    tx = Transaction(MAIL, [rcpt(0)], pipelining=True, send_data=False)
    batch = tx.commands()
    assert wire(batch) == MAIL + rcpt(0) + b"RSET\r\n"
    assert stages(batch) == [Stage.MAIL, Stage.RCPT, Stage.ABORT]
    for reply in (MAIL_OK, RCPT_OK, OK):
        tx.on_reply(reply)
    cmds = tx.commands()
    assert wire(cmds) == b"QUIT\r\n"
    assert tx.done
    assert tx.accepted == [0]
    assert tx.data_reply is None and not tx.wants_content


def test_probe_lockstep_ends_with_rset():
    tx = Transaction(MAIL, [rcpt(0)], pipelining=False, send_data=False)
    sent = []
    for reply in (MAIL_OK, R("550 5.1.1 unknown"), OK):
        cmds = tx.commands()
        sent += cmds
        tx.on_reply(reply)
    assert wire(sent) == MAIL + rcpt(0) + b"RSET\r\n"
    assert wire(tx.commands()) == b"QUIT\r\n"
    assert tx.done


def test_no_quit_when_session_is_cached():
    tx = Transaction(MAIL, [rcpt(0)], pipelining=True, send_quit=False)
    tx.commands()
    for reply in (MAIL_OK, RCPT_OK, GO):
        tx.on_reply(reply)
    tx.commands()
    assert wire(tx.content_sent()) == b".\r\n"
    tx.on_reply(QUEUED)
    assert tx.commands() == []
    assert tx.done and not tx.sent_quit


def test_await_quit_pipelined():
    tx = Transaction(MAIL, [rcpt(0)], pipelining=True, await_quit=True)
    tx.commands()
    for reply in (MAIL_OK, RCPT_OK, GO):
        tx.on_reply(reply)
    tx.commands()
    assert wire(tx.content_sent()) == b".\r\nQUIT\r\n"
    assert [c.stage for c in tx.awaiting] == [Stage.DOT, Stage.QUIT]
    tx.on_reply(QUEUED)
    assert not tx.done                          # the QUIT reply is awaited
    tx.on_reply(R("221 2.0.0 Bye"))
    assert tx.done
    assert tx.dot_reply is QUEUED


def test_await_quit_lockstep():
    tx = Transaction(MAIL, [rcpt(0)], pipelining=False, await_quit=True)
    for reply in (MAIL_OK, RCPT_OK, GO):
        tx.commands()
        tx.on_reply(reply)
    tx.commands()
    tx.content_sent()
    tx.on_reply(QUEUED)
    assert wire(tx.commands()) == b"QUIT\r\n"
    assert not tx.done
    assert [c.stage for c in tx.awaiting] == [Stage.QUIT]
    tx.on_reply(R("221 Bye"))
    assert tx.done


def test_await_quit_after_abort():
    tx = Transaction(MAIL, [rcpt(0)], pipelining=True, await_quit=True)
    tx.commands()
    for reply in (R("451 4.3.0 try later"), R("503 no"), R("503 no")):
        tx.on_reply(reply)
    assert wire(tx.commands()) == b"RSET\r\nQUIT\r\n"
    assert [c.stage for c in tx.awaiting] == [Stage.ABORT, Stage.QUIT]
    tx.on_reply(OK)
    assert not tx.done
    tx.on_reply(R("221 Bye"))
    assert tx.done


# --- XFORWARD ---------------------------------------------------------------------------

def test_xforward_commands_precede_mail():
    x1 = b"XFORWARD NAME=localhost ADDR=127.0.0.1\r\n"
    x2 = b"XFORWARD PROTO=SMTP HELO=client SOURCE=LOCAL\r\n"
    tx = Transaction(MAIL, [rcpt(0)], pipelining=True,
                     xforward=((Stage.XFORWARD1, x1), (Stage.XFORWARD2, x2)))
    batch = tx.commands()
    assert wire(batch) == x1 + x2 + MAIL + rcpt(0) + b"DATA\r\n"
    r1, r2 = OK, R("550 5.5.1 no xforward")
    for reply in (r1, r2, MAIL_OK, RCPT_OK, GO):
        tx.on_reply(reply)
    assert tx.xforward_replies == [(Stage.XFORWARD1, r1), (Stage.XFORWARD2, r2)]
    assert tx.commands() == []
    assert tx.accepted == [0] and tx.wants_content


# --- the 4096-byte pipelining limit --------------------------------------------------------------

def _rcpt_of_len(i: int, n: int) -> bytes:
    head = b"RCPT TO:<%04d@" % i
    tail = b">\r\n"
    return head + b"x" * (n - len(head) - len(tail)) + tail


def test_pipeline_limit_value():
    assert PIPELINE_LIMIT == 4096


@pytest.mark.parametrize("extra", [0, 1])
def test_batch_splitting_at_4096_bytes(extra):
    # MAIL + 40 RCPTs of 100 bytes + DATA (6): pad MAIL so that the whole envelope is
    # exactly 4096 bytes (one write, as stock) or 4097 (DATA waits for the replies).
    rcpts = [_rcpt_of_len(i, 100) for i in range(40)]
    mail = b"MAIL FROM:<sender@lab.invalid>\r\n"
    mail = mail[:-2] + b" " * (4096 - len(mail) - 4000 - 6 + extra) + b"\r\n"
    assert len(mail) + 4000 + 6 == 4096 + extra
    tx = Transaction(mail, rcpts, pipelining=True)
    batch = tx.commands()
    if extra == 0:
        assert wire(batch) == mail + b"".join(rcpts) + b"DATA\r\n"
        assert len(wire(batch)) == 4096
        assert stages(batch)[-1] == Stage.DATA
    else:
        assert wire(batch) == mail + b"".join(rcpts)
        assert len(wire(batch)) == 4091
        assert tx.commands() == []
        tx.on_reply(MAIL_OK)
        for _ in rcpts:
            assert tx.commands() == []          # all outstanding replies are read first
            tx.on_reply(RCPT_OK)
        assert wire(tx.commands()) == b"DATA\r\n"


def test_batch_splitting_many_recipients():
    rcpts = [_rcpt_of_len(i, 100) for i in range(100)]
    tx = Transaction(MAIL, rcpts, pipelining=True)
    sizes = []
    sent = []
    while True:
        batch = tx.commands()
        if not batch:
            break
        sizes.append(len(wire(batch)))
        sent += batch
        for c in batch:
            tx.on_reply(MAIL_OK if c.stage == Stage.MAIL else
                        RCPT_OK if c.stage == Stage.RCPT else GO)
    assert wire(sent) == MAIL + b"".join(rcpts) + b"DATA\r\n"
    assert all(s <= 4096 for s in sizes)
    # greedy: MAIL(32) + 40*100 = 4032 (a 41st RCPT would make 4132)
    assert sizes == [4032, 4000, 2006]
    assert tx.wants_content


def test_mail_rejected_in_first_split_batch_aborts_the_rest():
    rcpts = [_rcpt_of_len(i, 100) for i in range(50)]
    tx = Transaction(MAIL, rcpts, pipelining=True)
    first = tx.commands()
    assert len(first) == 41
    tx.on_reply(R("550 5.7.1 no"))
    for _ in first[1:]:
        tx.on_reply(R("503 5.5.1 need MAIL"))
    assert wire(tx.commands()) == b"RSET\r\nQUIT\r\n"


def test_oversized_single_command_still_sent():
    big = b"MAIL FROM:<" + b"y" * 5000 + b">\r\n"
    tx = Transaction(big, [rcpt(0)], pipelining=True)
    assert wire(tx.commands()) == big              # alone: nothing fits behind it
    tx.on_reply(MAIL_OK)
    assert wire(tx.commands()) == rcpt(0) + b"DATA\r\n"


# --- tables ------------------------------------------------------------------------------------

def test_stage_tables():
    assert STAGE_INFO[Stage.GREETING] == ("smtp_helo_timeout", "receiving the initial server greeting")
    assert STAGE_INFO[Stage.RCPT] == ("smtp_rcpt_timeout", "sending RCPT TO")
    assert STAGE_INFO[Stage.DOT][1] == ("sending end of data -- message may be sent more than once")
    assert IN_REPLY_TO[Stage.MAIL] == "MAIL FROM command"
    assert IN_REPLY_TO[Stage.RCPT] == "RCPT TO command"
    assert IN_REPLY_TO[Stage.DATA] == "DATA command"
    assert IN_REPLY_TO[Stage.DOT] == "end of DATA command"
