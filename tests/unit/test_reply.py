"""postfix_smtp.smtp.reply: reading server replies and deriving the DSN
status (smtp-client.md §6.1, §6.2)."""

from __future__ import annotations

import pytest

from postfix_smtp.smtp.reply import LINE_LIMIT, TEXT_LIMIT, Reply, ReplyParser, printable


def parse(data: bytes, **kw) -> ReplyParser:
    p = ReplyParser(**kw)
    p.feed(data)
    return p


def one(data: bytes, **kw) -> Reply:
    p = parse(data, **kw)
    assert len(p.replies) == 1, p.replies
    assert not p.partial
    return p.pop()


# --- framing -------------------------------------------------------------------

def test_single_line_crlf():
    r = one(b"250 2.1.0 Ok\r\n")
    assert (r.code, r.lines, r.garbled) == (250, ["250 2.1.0 Ok"], False)


def test_bare_lf():
    r = one(b"250 2.1.0 Ok\n")
    assert r.lines == ["250 2.1.0 Ok"]


def test_multi_line_ehlo_capture():
    # stock-smtp-3.7-sent.strace.txt: the sink's EHLO reply
    data = (b"250-sink.lab.invalid\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n"
            b"250-XCLIENT NAME HELO\r\n250-XFORWARD NAME ADDR PROTO HELO\r\n"
            b"250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250 \r\n")
    r = one(data)
    assert r.code == 250
    assert r.lines == ["250-sink.lab.invalid", "250-PIPELINING", "250-8BITMIME",
                       "250-AUTH PLAIN LOGIN", "250-XCLIENT NAME HELO",
                       "250-XFORWARD NAME ADDR PROTO HELO", "250-ENHANCEDSTATUSCODES",
                       "250-DSN", "250 "]
    assert r.text == "\n".join(r.lines)
    assert r.flat == " ".join(r.lines)


def test_pipelined_replies_in_one_read():
    p = parse(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n")
    assert [(r.code, r.lines) for r in p.replies] == [
        (250, ["250 2.1.0 Ok"]), (250, ["250 2.1.5 Ok"]),
        (354, ["354 End data with <CR><LF>.<CR><LF>"])]
    assert p.pop().code == 250
    assert p.pop().code == 250
    assert p.pop().code == 354
    assert p.pop() is None


def test_split_across_feeds_byte_by_byte():
    data = b"550-5.1.1 first\r\n550-5.1.1 second\n550 5.1.1 third\r\n221 Bye\r\n"
    p = ReplyParser()
    for i in range(len(data)):
        p.feed(data[i:i + 1])
        if i < data.index(b"221"):
            assert p.partial or p.replies
    assert [(r.code, r.lines) for r in p.replies] == [
        (550, ["550-5.1.1 first", "550-5.1.1 second", "550 5.1.1 third"]),
        (221, ["221 Bye"])]
    assert not p.partial


def test_crlf_split_between_feeds():
    p = ReplyParser()
    p.feed(b"250 ok\r")
    assert p.replies == [] and p.partial
    p.feed(b"\n")
    assert p.pop().lines == ["250 ok"]
    assert not p.partial


def test_partial_until_final_line():
    p = ReplyParser()
    p.feed(b"250-one\r\n")
    assert p.pop() is None
    assert p.partial
    p.feed(b"250 two\r\n")
    assert p.pop().lines == ["250-one", "250 two"]


def test_code_from_last_line():
    r = one(b"250-first\r\n550 5.7.1 last\r\n")
    assert r.code == 550
    assert r.dsn == "5.7.1"


def test_three_digits_alone_end_reply():
    r = one(b"250\r\n")
    assert (r.code, r.lines) == (250, ["250"])


# --- garbled lines ---------------------------------------------------------------

@pytest.mark.parametrize("junk", [b"garbage", b"25 short", b"2500 four digits", b"250x",
                                  b"", b"ABC ok"])
def test_garbled_line_kept_and_flagged(junk):
    p = ReplyParser()
    p.feed(junk + b"\r\n")
    assert p.replies == []
    assert p.partial
    p.feed(b"250 2.0.0 Ok\r\n")
    r = p.pop()
    assert r.code == 250
    assert r.garbled is True
    assert r.lines == [junk.decode(), "250 2.0.0 Ok"]
    assert r.dsn == "2.0.0"
    # the next reply starts clean
    p.feed(b"221 Bye\r\n")
    assert p.pop().garbled is False


# --- sanitising --------------------------------------------------------------------

def test_nonprintable_replaced():
    r = one(b"250 a\tb\x01c\x7fd\r\n")
    assert r.lines == ["250 a?b?c?d"]


def test_utf8_kept_when_enabled_invalid_bytes_replaced():
    assert one(b"250 caf\xc3\xa9 \xff\r\n").lines == ["250 caf\u00e9 ?"]
    assert one(b"250 caf\xc3\xa9\r\n", utf8=False).lines[0].startswith("250 caf?")
    assert "\u00e9" not in one(b"250 caf\xc3\xa9\r\n", utf8=False).lines[0]


def test_printable_helper():
    assert printable("a\x00b\u00e9", utf8=True) == "a?b\u00e9"
    assert printable("a\x00b\u00e9", utf8=False) == "a?b?"


def test_bare_cr_inside_line():
    assert one(b"250 a\rb\r\n").lines == ["250 a?b"]


# --- length limits -------------------------------------------------------------------

def test_defaults():
    assert LINE_LIMIT == 2048 and TEXT_LIMIT == 2048


def test_overlong_line_in_one_feed():
    long = b"250-" + b"x" * 3000
    p = parse(long + b"\r\n250 ok\r\n")
    r = p.pop()
    assert r.code == 250
    # the 2048 kept bytes fill the reply text: the final line is read but not kept
    assert r.lines == [(long[:2048]).decode()]
    assert p.warnings == ["response longer than 2048: 250-xxxxxxxxxxxxxxxxxxxxxxxxxx...",
                          "multi-line response longer than 2048 250-xxxxxxxxxxxxxxxxxxxxxxxxxx..."]
    assert not p.partial


def test_overlong_line_split_over_feeds():
    p = ReplyParser(line_limit=10)
    for chunk in (b"250-0123", b"456789abcdef", b"ghijkl", b"mno\r\n", b"250 fine\r\n"):
        p.feed(chunk)
    r = p.pop()
    assert r.lines == ["250-012345", "250 fine"]
    assert p.warnings == ["response longer than 10: 250-012345..."]
    assert not p.partial


def test_overlong_final_line_ends_reply():
    p = parse(b"550 " + b"y" * 100 + b"\r\n221 Bye\r\n", line_limit=20)
    assert [r.code for r in p.replies] == [550, 221]
    assert p.replies[0].lines == ["550 " + "y" * 16]
    assert len(p.warnings) == 1


def test_line_at_limit_is_not_overlong():
    line = b"250 " + b"z" * (2048 - 4)
    p = parse(line + b"\r\n")
    assert p.pop().lines == [line.decode()]
    assert p.warnings == []


def test_multiline_text_limit():
    body = b"".join(b"250-" + b"%03d" % i + b"x" * 93 + b"\r\n" for i in range(40))
    p = parse(body + b"250 2.0.0 end\r\n")
    r = p.pop()
    assert r.code == 250
    kept = r.text
    assert len(kept) < 2048 + 100
    assert len(r.lines) < 41
    assert r.lines[0].startswith("250-000")
    assert any(w.startswith("multi-line response longer than 2048") for w in p.warnings)
    assert sum(w.startswith("multi-line") for w in p.warnings) == 1


# --- DSN derivation ---------------------------------------------------------------------

@pytest.mark.parametrize("line, dsn", [
    (b"250 2.1.0 Ok", "2.1.0"),
    (b"250 2.0.0 Ok: queued as 4Xyz", "2.0.0"),
    (b"550 5.1.1 <c@example.org>: Recipient address rejected", "5.1.1"),
    (b"450 4.2.0 try later", "4.2.0"),
    (b"550 4.1.1 x", "5.0.0"),                 # class mismatch
    (b"250 5.1.1 x", "2.0.0"),
    (b"451 2.0.0 x", "4.0.0"),
    (b"550 no such user", "5.0.0"),
    (b"250", "2.0.0"),                          # bare code
    (b"250 ", "2.0.0"),
    (b"421", "4.0.0"),
    (b"250    2.1.5   spaces", "2.1.5"),        # spaces skipped before the code
    (b"550 5.7.1", "5.7.1"),                    # code at end of line
    (b"554 5.123.456 big", "5.123.456"),
    (b"554 5.1234.1 too long", "5.0.0"),
    (b"554 5.1.1234 too long", "5.0.0"),
    (b"554 5.1.1x glued", "5.0.0"),
    (b"554 5..1 empty", "5.0.0"),
    (b"554 3.1.1 bad class", "5.0.0"),
    (b"354 End data with <CR><LF>.<CR><LF>", "5.5.0"),
    (b"334 VXNlcm5hbWU6", "5.5.0"),
    (b"354 2.0.0 go ahead", "5.5.0"),
    (b"100 continue", "5.5.0"),
    (b"199 1.1.1", "5.5.0"),
    (b"600 6.0.0 x", "5.5.0"),
    (b"000 x", "5.5.0"),
])
def test_dsn(line, dsn):
    assert one(line + b"\r\n").dsn == dsn


def test_dsn_from_last_line_only():
    assert one(b"550-5.7.1 first\r\n550 no code here\r\n").dsn == "5.0.0"
    assert one(b"550-no code\r\n550 5.7.1 here\r\n").dsn == "5.7.1"


def test_klass():
    assert one(b"354 go\r\n").klass == 3
    assert one(b"221 bye\r\n").klass == 2


# --- flat / text --------------------------------------------------------------------------

def test_flat_and_text():
    r = one(b"550-5.7.1 Message rejected\r\n550-5.7.1 see\r\n550 5.7.1 http://x/\r\n")
    assert r.text == "550-5.7.1 Message rejected\n550-5.7.1 see\n550 5.7.1 http://x/"
    assert r.flat == "550-5.7.1 Message rejected 550-5.7.1 see 550 5.7.1 http://x/"


def test_reply_constructed_directly():
    r = Reply(250, ["250 2.0.0 Ok"])
    assert (r.dsn, r.flat, r.text, r.klass, r.garbled) == ("2.0.0", "250 2.0.0 Ok",
                                                          "250 2.0.0 Ok", 2, False)
    assert Reply(250, []).dsn == "2.0.0"


def test_dsn_from_final_line_even_when_text_was_cut():
    # The kept text stops at 2048 bytes, but the status still comes from the
    # final line actually read (smtp_chat.c parses session->buffer).
    body = b"".join(b"550-" + b"%03d" % i + b"y" * 93 + b"\r\n" for i in range(30))
    r = one(body + b"550 5.7.1 blocked by policy\r\n")
    assert r.code == 550
    assert "550 5.7.1 blocked by policy" not in r.lines
    assert r.dsn == "5.7.1"


# --- smtp_reply_filter ----------------------------------------------------------

def test_line_filter_replaces_lines_before_parsing():
    table = {"550 5.1.1 no": "450 4.1.1 later", "250-SIZE 100": "250-XSIZE"}
    p = ReplyParser(line_filter=table.get)
    p.feed(b"550 5.1.1 no\r\n250-SIZE 100\r\n250 OK\r\n")
    first, second = p.pop(), p.pop()
    assert (first.code, first.lines, first.dsn) == (450, ["450 4.1.1 later"], "4.1.1")
    assert second.lines == ["250-XSIZE", "250 OK"]
    assert p.notes == ['replacing server reply "550 5.1.1 no" with "450 4.1.1 later"',
                       'replacing server reply "250-SIZE 100" with "250-XSIZE"']


def test_line_filter_sees_the_printable_line_and_may_end_a_reply():
    seen = []

    def flt(line):
        seen.append(line)
        return "250 done" if line.startswith("250-") else None
    p = ReplyParser(utf8=False, line_filter=flt)
    p.feed(b"250-caf\xc3\xa9\r\n")
    assert seen == ["250-caf??"]
    assert p.pop().lines == ["250 done"]        # the replacement ends the reply


def test_line_filter_error_propagates():
    from postfix_smtp.smtp.reply import ReplyFilterError

    def flt(line):
        raise ReplyFilterError("table down")
    p = ReplyParser(line_filter=flt)
    with pytest.raises(ReplyFilterError):
        p.feed(b"220 hello\r\n")


def test_garbage_lines_of_a_garbled_reply():
    from postfix_smtp.smtp.reply import garbage_lines
    p = ReplyParser()
    p.feed(b"hello there\r\n25x\r\n250-ok\r\n250\r\n")
    r = p.pop()
    assert r.garbled and garbage_lines(r) == ["hello there", "25x"]
    p.feed(b"250 fine\r\n")
    assert garbage_lines(p.pop()) == []
