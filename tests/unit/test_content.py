"""postfix_smtp.smtp.content.TextEncoder: smtp_text_out() (smtp-client.md §7.1, §7.2)."""

from __future__ import annotations

import pytest

from postfix_smtp.smtp.content import TextEncoder


def encode(records, limit=998) -> tuple[bytes, TextEncoder]:
    enc = TextEncoder(limit)
    for text, complete in records:
        enc.record(text, complete)
    enc.finish()
    return enc.take(), enc


def N(text: bytes):
    return (text, True)


def L(text: bytes):
    return (text, False)


# --- basics ---------------------------------------------------------------------------

def test_lines_get_crlf():
    out, enc = encode([N(b"Subject: t"), N(b""), N(b"hi")])
    assert out == b"Subject: t\r\n\r\nhi\r\n"
    assert enc.folded is False


def test_worked_example_body():
    # queue-file.md §9: what stock smtp(8) sent for 70A24212897 (before the '.')
    lines = [b"Received: by mx.lab.invalid (Postfix, from userid 0)",
             b"\tid 70A24212897; Tue, 24 Nov 2026 21:10:54 +0000 (UTC)",
             b"Subject: t",
             b"Message-Id: <20261124211054.70A24212897@mx.lab.invalid>",
             b"Date: Tue, 24 Nov 2026 21:10:54 +0000 (UTC)",
             b"From: root <a@x.example>", b"", b"hi"]
    out, _ = encode([N(x) for x in lines])
    assert out + b".\r\n" == (
        b"Received: by mx.lab.invalid (Postfix, from userid 0)\r\n"
        b"\tid 70A24212897; Tue, 24 Nov 2026 21:10:54 +0000 (UTC)\r\n"
        b"Subject: t\r\nMessage-Id: <20261124211054.70A24212897@mx.lab.invalid>\r\n"
        b"Date: Tue, 24 Nov 2026 21:10:54 +0000 (UTC)\r\nFrom: root <a@x.example>\r\n"
        b"\r\nhi\r\n.\r\n")


def test_l_records_join_into_one_line():
    out, _ = encode([L(b"abc"), L(b"def"), N(b"ghi"), N(b"next")])
    assert out == b"abcdefghi\r\nnext\r\n"


def test_take_clears_buffer():
    enc = TextEncoder(998)
    enc.record(b"one", True)
    assert enc.take() == b"one\r\n"
    assert enc.take() == b""
    enc.record(b"two", True)
    assert enc.take() == b"two\r\n"


# --- dot-stuffing -----------------------------------------------------------------------

@pytest.mark.parametrize("line, wire", [
    (b".", b"..\r\n"),
    (b"..", b"...\r\n"),
    (b".hidden", b"..hidden\r\n"),
    (b"a.b", b"a.b\r\n"),
    (b" .x", b" .x\r\n"),
    (b"", b"\r\n"),
])
def test_dot_stuffing_at_line_start(line, wire):
    assert encode([N(line)])[0] == wire


def test_no_stuffing_inside_a_line_continued_by_l():
    out, _ = encode([L(b"abc"), N(b".def"), N(b".x")])
    assert out == b"abc.def\r\n..x\r\n"


def test_stuffing_after_l_record_at_line_start():
    out, _ = encode([L(b".abc"), N(b"def")])
    assert out == b"..abcdef\r\n"


def test_no_stuffing_on_fold_continuation():
    # the text after a fold starts with '.', but the output line starts with SP
    out, enc = encode([N(b"x" * 10 + b"." * 5)], limit=10)
    assert out == b"x" * 10 + b"\r\n ....." + b"\r\n"
    assert enc.folded


def test_stuffing_not_counted_against_limit():
    out, _ = encode([N(b"." + b"y" * 9)], limit=10)
    assert out == b".." + b"y" * 9 + b"\r\n"          # exactly 10 text bytes: no fold


def test_stuffed_line_folded():
    out, _ = encode([N(b"." * 12)], limit=10)
    assert out == b"." + b"." * 10 + b"\r\n .." + b"\r\n"


# --- folding ------------------------------------------------------------------------------

def test_spec_2100_byte_line():
    # L(2048) + N(52), smtp_line_length_limit 998: 998 / SP+997 / SP+105 (observed)
    text = bytes((0x41 + i % 26) for i in range(2100))
    out, enc = encode([L(text[:2048]), N(text[2048:])], limit=998)
    lines = out.split(b"\r\n")
    assert lines[-1] == b""
    lines = lines[:-1]
    assert [len(x) for x in lines] == [998, 998, 106]
    assert lines[0] == text[:998]
    assert lines[1] == b" " + text[998:1995]
    assert lines[2] == b" " + text[1995:]
    assert len(text[1995:]) == 105
    assert out == text[:998] + b"\r\n " + text[998:1995] + b"\r\n " + text[1995:] + b"\r\n"
    assert enc.folded is True


def test_exact_limit_line_not_folded():
    out, enc = encode([N(b"z" * 998)], limit=998)
    assert out == b"z" * 998 + b"\r\n"
    assert enc.folded is False


def test_limit_plus_one():
    out, enc = encode([N(b"z" * 999)], limit=998)
    assert out == b"z" * 998 + b"\r\n z\r\n"
    assert enc.folded is True


def test_exact_multiple_of_limit_in_n_record():
    out, enc = encode([N(b"a" * 10 + b"b" * 9)], limit=10)
    # 10 bytes, fold, SP + 9 bytes = exactly the limit: the line simply ends
    assert out == b"a" * 10 + b"\r\n " + b"b" * 9 + b"\r\n"
    assert enc.folded is True


def test_l_record_ending_exactly_at_limit():
    out, _ = encode([L(b"a" * 10), N(b"b")], limit=10)
    assert out == b"a" * 10 + b"\r\n b\r\n"


def test_l_record_then_exact_fill():
    out, _ = encode([L(b"a" * 4), N(b"b" * 6)], limit=10)
    assert out == b"aaaabbbbbb\r\n"


def test_folding_counts_across_l_records():
    out, _ = encode([L(b"a" * 6), L(b"b" * 6), N(b"c" * 6)], limit=10)
    assert out == b"aaaaaabbbb\r\n bbcccccc\r\n"


def test_limit_zero_disables_folding_but_keeps_stuffing():
    long = b"q" * 5000
    out, enc = encode([N(long), N(b".dot"), L(b"x"), N(b".nostuff")], limit=0)
    assert out == long + b"\r\n..dot\r\nx.nostuff\r\n"
    assert enc.folded is False


# --- end of content --------------------------------------------------------------------------

def test_unfinished_last_line_gets_crlf():
    out, _ = encode([N(b"a"), L(b"no newline")])
    assert out == b"a\r\nno newline\r\n"


def test_finish_after_complete_line_adds_nothing():
    out, _ = encode([N(b"a")])
    assert out == b"a\r\n"


def test_finish_idempotent():
    enc = TextEncoder(998)
    enc.record(b"x", False)
    enc.finish()
    enc.finish()
    assert enc.take() == b"x\r\n"


def test_empty_content():
    assert encode([])[0] == b""


# --- stray CR / LF ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, wire", [
    (b"a\rb", b"a b\r\n"),
    (b"a\nb", b"a b\r\n"),
    (b"a\r\nb", b"a  b\r\n"),
    (b"\r\n.\r\n", b"  .  \r\n"),
    (b"end\r", b"end \r\n"),
])
def test_stray_cr_lf_replaced_by_space(text, wire):
    out, _ = encode([N(text)])
    assert out == wire
    assert out.count(b"\r") == 1 and out.count(b"\n") == 1


def test_stray_in_l_record():
    out, _ = encode([L(b"a\n"), N(b"b")])
    assert out == b"a b\r\n"


def test_unfinished_l_record_exactly_at_limit():
    # the L record fills the line: the break's SP is written, then finish() ends it
    out, enc = encode([L(b"a" * 10)], limit=10)
    assert out == b"a" * 10 + b"\r\n \r\n"
    assert enc.folded is True
