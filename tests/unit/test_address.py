"""postfix_smtp.smtp.address: RFC 821 envelope quoting (smtp-client.md §5.7.2),
RFC 822 log quoting and xtext (§5.7.1)."""

from __future__ import annotations

import pytest

from postfix_smtp.smtp.address import quote_821, quote_822, xtext


@pytest.mark.parametrize("addr, quoted", [
    ("", ""),                                           # null sender stays empty
    ("user@example.org", "user@example.org"),
    ("first.last@example.org", "first.last@example.org"),
    ("a+tag=x/y!#$%&'*-?^_`{|}~@example.org", "a+tag=x/y!#$%&'*-?^_`{|}~@example.org"),
    ("postmaster", "postmaster"),                       # no @: the whole thing is local
    ("odd user@example.net", '"odd user"@example.net'),
    (".lead@example.org", '".lead"@example.org'),
    ("trail.@example.org", '"trail."@example.org'),
    ("dou..ble@example.org", '"dou..ble"@example.org'),
    ("@example.org", '""@example.org'),                 # empty local part
    ("a(b)@x", '"a(b)"@x'),
    ("a<b>@x", '"a<b>"@x'),
    ("a[b]@x", '"a[b]"@x'),
    ("a,b@x", '"a,b"@x'),
    ("a;b@x", '"a;b"@x'),
    ("a:b@x", '"a:b"@x'),
    ("a\tb@x", '"a\tb"@x'),
    ("a\x7fb@x", '"a\x7fb"@x'),
    ('say"hi"@x', '"say\\"hi\\""@x'),                    # quote escaped
    ("back\\slash@x", '"back\\\\slash"@x'),              # backslash escaped
    ("cr\rlf\n@x", '"cr\\\rlf\\\n"@x'),                  # CR and LF escaped
    ("user@host@example.org", '"user@host"@example.org'),   # last @ rule
    ("a b@c d", '"a b"@c d'),                           # domain is left alone
    ("r\u00e9cipient@dest.lab.invalid", "r\u00e9cipient@dest.lab.invalid"),  # 8-bit clean
    ("caf\u00e9 x@y", '"caf\u00e9 x"@y'),
    ("just a local part", '"just a local part"'),
])
def test_quote_821(addr, quoted):
    assert quote_821(addr) == quoted


def test_quote_821_surrogate_bytes_survive():
    raw = b"\xff\xfeuser@x".decode("utf-8", "surrogateescape")
    assert quote_821(raw) == raw
    raw = b"\xff user@x".decode("utf-8", "surrogateescape")
    assert quote_821(raw).encode("utf-8", "surrogateescape") == b'"\xff user"@x'


@pytest.mark.parametrize("addr, quoted", [
    ("", ""),
    ("c@example.org", "c@example.org"),
    ("odd user@example.net", '"odd user"@example.net'),
    ('a"b@x', '"a\\"b"@x'),
    ("user@host@example.org", '"user@host"@example.org'),
])
def test_quote_822(addr, quoted):
    assert quote_822(addr) == quoted


# --- xtext --------------------------------------------------------------------------

@pytest.mark.parametrize("value, extra, out", [
    ("env+id=1", b"=", "env+2Bid+3D1"),                                  # ENVID (observed)
    ('rfc822;"odd user"@example.net', b"=", 'rfc822;"odd+20user"@example.net'),  # ORCPT (observed)
    ("rfc822;b@y.example", b"=", "rfc822;b@y.example"),
    ("rfc822;rcpt@dest.lab.invalid", b"=", "rfc822;rcpt@dest.lab.invalid"),
    ("rfc822;j\u00fcrgen@x", b"=", "rfc822;j+C3+BCrgen@x"),               # UTF-8 bytes
    ("a=b", b"", "a=b"),                                                  # XFORWARD: no '='
    ("a+b", b"", "a+2Bb"),
    ("a b\tc\x00d\x7f~!", b"", "a+20b+09c+00d+7F~!"),
    ("", b"=", ""),
    ("envid-123", b"=", "envid-123"),
])
def test_xtext(value, extra, out):
    assert xtext(value, extra) == out


def test_xtext_uppercase_hex_and_every_byte():
    for c in range(256):
        raw = bytes([c]).decode("latin-1")
        if c < 128:
            got = xtext(raw, b"=")
            if c == 0x2B or c <= 32 or c == 127 or c == 0x3D:
                assert got == "+%02X" % c
            else:
                assert got == raw
    raw = b"\x80\xff".decode("utf-8", "surrogateescape")
    assert xtext(raw) == "+80+FF"
