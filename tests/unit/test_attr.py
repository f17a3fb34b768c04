"""postfix_smtp.ipc.attr: the attr_print0/attr_scan0 codec (postfix-ipc.md §2)."""

from __future__ import annotations

import pytest

from postfix_smtp.ipc.attr import (MAX_ATTRS, MAX_TOKEN, AttrError, Decoder, encode, expect,
                                   parse_data, parse_int)

# The announcement every delivery agent sends first (postfix-ipc.md §2.5, §8 step 2).
ANNOUNCE = b"protocol\0delivery_request_protocol\0\0"


# --- encode ---------------------------------------------------------------

def test_encode_announcement_exact_bytes():
    assert encode([("protocol", "delivery_request_protocol")]) == ANNOUNCE
    assert len(ANNOUNCE) == 36


def test_encode_empty_list_is_lone_terminator():
    assert encode([]) == b"\0"


def test_encode_empty_string_value():
    assert encode([("a", ""), ("b", "x")]) == b"a\0\0b\0x\0\0"


@pytest.mark.parametrize("value, text", [
    (0, b"0"),
    (3, b"3"),
    (-1, b"4294967295"),            # %u of the C int -1
    (-2, b"4294967294"),
    (4294967295, b"4294967295"),
    (4294967296, b"4294967296"),    # a long (64-bit) stays as it is
    (True, b"1"),
    (False, b"0"),
])
def test_encode_int_is_unsigned_decimal(value, text):
    assert encode([("n", value)]) == b"n\0" + text + b"\0\0"


def test_encode_bytes_is_base64():
    assert encode([("time", b"\x00\x01\x02\xff")]) == b"time\0AAEC/w==\0\0"


def test_encode_str_raw_including_newline_and_8bit():
    assert encode([("r", "a\nb")]) == b"r\0a\nb\0\0"
    assert encode([("s", "s\u00e9nder")]) == b"s\0s\xc3\xa9nder\0\0"
    # surrogateescape round trip of undecodable bytes
    assert encode([("s", b"\xff\xfe".decode("utf-8", "surrogateescape"))]) == b"s\0\xff\xfe\0\0"


def test_encode_rejects_nul():
    with pytest.raises(AttrError):
        encode([("a", "x\0y")])
    with pytest.raises(AttrError):
        encode([("a\0b", "x")])


def test_encode_status_reply():
    assert encode([("status", 0)]) == b"status\x000\x00\x00"
    assert encode([("status", -1)]) == b"status\x004294967295\x00\x00"


# --- Decoder ------------------------------------------------------------

TWO_LISTS = (b"flags\x003\x00queue_name\x00active\x00\x00"
             b"original_recipient\x00\x00recipient\x00c@example.org\x00\x00")
TWO_LISTS_DECODED = [
    [("flags", "3"), ("queue_name", "active")],
    [("original_recipient", ""), ("recipient", "c@example.org")],
]


def _drain(d: Decoder) -> list:
    out = []
    while True:
        lst = d.next_list()
        if lst is None:
            return out
        out.append(lst)


def test_decoder_whole_buffer():
    d = Decoder()
    d.feed(TWO_LISTS)
    assert _drain(d) == TWO_LISTS_DECODED
    assert not d.pending


def test_decoder_byte_by_byte():
    d = Decoder()
    got = []
    for i in range(len(TWO_LISTS)):
        d.feed(TWO_LISTS[i:i + 1])
        got += _drain(d)
        if i == TWO_LISTS.index(b"\x00\x00original") + 1:
            # the first list is complete exactly when its terminator arrived
            assert got == TWO_LISTS_DECODED[:1]
    assert got == TWO_LISTS_DECODED
    assert not d.pending


@pytest.mark.parametrize("cut", [1, 5, 6, 7, 13, 20, 32, 33, 34, 50])
def test_decoder_any_split_point(cut):
    d = Decoder()
    d.feed(TWO_LISTS[:cut])
    first = _drain(d)
    d.feed(TWO_LISTS[cut:])
    assert first + _drain(d) == TWO_LISTS_DECODED


def test_decoder_empty_list():
    d = Decoder()
    d.feed(b"\0")
    assert d.next_list() == []
    assert d.next_list() is None


def test_decoder_next_list_none_until_complete():
    d = Decoder()
    d.feed(b"status\x000\x00")
    assert d.next_list() is None
    assert d.pending
    d.feed(b"\x00")
    assert d.next_list() == [("status", "0")]
    assert not d.pending


def test_decoder_pending_states():
    d = Decoder()
    assert not d.pending
    d.feed(b"na")                # part of a name
    assert d.pending
    d.feed(b"me\x00")             # a name without value
    assert d.pending
    d.feed(b"v\x00")              # a pair, list not ended
    assert d.pending
    d.feed(b"\x00")
    assert not d.pending
    assert d.next_list() == [("name", "v")]


def test_decoder_values_with_newline_and_8bit_survive():
    d = Decoder()
    raw = b"sender\x00s\xc3\xa9nder@x\x00bad\x00\xff\xfe\x00text\x00a\nb\x00\x00"
    d.feed(raw)
    lst = d.next_list()
    assert lst == [("sender", "s\u00e9nder@x"),
                   ("bad", b"\xff\xfe".decode("utf-8", "surrogateescape")),
                   ("text", "a\nb")]
    assert encode(lst) == raw


def test_decoder_round_trip_of_captured_request():
    from pathlib import Path
    raw = (Path(__file__).resolve().parent.parent / "data" / "delivery-request-3.7.bin").read_bytes()
    d = Decoder()
    d.feed(raw)
    lists = _drain(d)
    assert len(lists) == 2 and not d.pending
    assert b"".join(encode(lst) for lst in lists) == raw


def test_decoder_token_limit_while_buffering():
    d = Decoder(max_token=16)
    d.feed(b"a" * 16)                     # exactly at the limit: still fine
    with pytest.raises(AttrError, match="longer than 16"):
        d.feed(b"a")


def test_decoder_token_limit_value_named_in_message():
    d = Decoder(max_token=16)
    d.feed(b"name\x00")
    with pytest.raises(AttrError, match="value longer than 16"):
        d.feed(b"v" * 17)


def test_decoder_token_at_limit_accepted():
    d = Decoder(max_token=16)
    d.feed(b"n" * 16 + b"\x00" + b"v" * 16 + b"\x00\x00")
    assert d.next_list() == [("n" * 16, "v" * 16)]


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_decoder_token_limit_independent_of_chunking(chunk):
    # A token over the limit is refused whether or not its NUL arrives in the
    # same read as the token itself.
    data = b"n" * 17 + b"\x00v\x00\x00"
    d = Decoder(max_token=16)
    with pytest.raises(AttrError):
        for i in range(0, len(data), chunk):
            d.feed(data[i:i + chunk])


def test_decoder_default_limits():
    assert MAX_TOKEN == 1 << 17
    assert MAX_ATTRS == 1024


def test_decoder_attribute_count_limit():
    d = Decoder(max_attrs=3)
    d.feed(b"a\x001\x00b\x002\x00c\x003\x00\x00")       # exactly 3: fine
    assert len(d.next_list()) == 3
    with pytest.raises(AttrError, match="more than 3"):
        d.feed(b"a\x001\x00b\x002\x00c\x003\x00d\x00")


def test_decoder_large_stream_compacts_buffer():
    d = Decoder()
    one = encode([("recipient", "x" * 100), ("offset", 42)])
    for _ in range(2000):
        d.feed(one)
    lists = _drain(d)
    assert len(lists) == 2000
    assert lists[-1] == [("recipient", "x" * 100), ("offset", "42")]
    assert not d.pending


# --- parse_int / parse_data ---------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("0", 0), ("3", 3), ("2147483647", 2147483647),
    ("2147483648", -2147483648), ("4294967295", -1), ("4294967294", -2),
])
def test_parse_int_32(text, value):
    assert parse_int("n", text) == value


@pytest.mark.parametrize("text, value", [
    ("4294967295", 4294967295), ("18446744073709551615", -1), ("694", 694),
])
def test_parse_int_64(text, value):
    assert parse_int("offset", text, 64) == value


@pytest.mark.parametrize("text", ["", "-1", "+1", " 1", "1 ", "1x", "0x10", "1.0",
                                  "\u0661", "\u00b2"])
def test_parse_int_malformed(text):
    with pytest.raises(AttrError, match="malformed numerical data for attribute n"):
        parse_int("n", text)


def test_parse_int_out_of_range():
    with pytest.raises(AttrError, match="out of range"):
        parse_int("n", "4294967296")
    with pytest.raises(AttrError, match="out of range"):
        parse_int("n", "18446744073709551616", 64)


def test_parse_data():
    assert parse_data("time", "AAEC/w==") == b"\x00\x01\x02\xff"
    assert parse_data("time", "") == b""
    for bad in ("AAE", "AA=C", "AA\nEC", "\u00e9\u00e9\u00e9\u00e9", "AA-_"):
        with pytest.raises(AttrError, match="malformed base64 data for attribute time"):
            parse_data("time", bad)


# --- expect -----------------------------------------------------------------

def test_expect_returns_values_in_order():
    pairs = [("a", "1"), ("b", "2"), ("c", "")]
    assert expect(pairs, ("a", "b", "c"), "test") == ["1", "2", ""]


def test_expect_missing():
    with pytest.raises(AttrError, match="missing attribute c in test"):
        expect([("a", "1"), ("b", "2")], ("a", "b", "c"), "test")


def test_expect_extra():
    with pytest.raises(AttrError, match="unexpected attribute d in test"):
        expect([("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")], ("a", "b", "c"), "test")


def test_expect_wrong_order():
    with pytest.raises(AttrError, match=r"unexpected attribute b in test \(expecting: a\)"):
        expect([("b", "2"), ("a", "1")], ("a", "b"), "test")


def test_expect_alternatives():
    names = ("flags", "smtputf8|sendopts", "sender")
    assert expect([("flags", "3"), ("smtputf8", "0"), ("sender", "s")], names, "r") == ["3", "0", "s"]
    assert expect([("flags", "3"), ("sendopts", "8"), ("sender", "s")], names, "r") == ["3", "8", "s"]
    with pytest.raises(AttrError, match=r"unexpected attribute utf8 in r \(expecting: smtputf8\)"):
        expect([("flags", "3"), ("utf8", "0"), ("sender", "s")], names, "r")
    with pytest.raises(AttrError, match="missing attribute smtputf8"):
        expect([("flags", "3")], names, "r")
    # an alternative is not a prefix/substring match
    with pytest.raises(AttrError):
        expect([("flags", "3"), ("smtputf8|sendopts", "0"), ("sender", "s")], names, "r")
