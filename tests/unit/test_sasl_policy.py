"""Mechanism choice: EHLO AUTH parsing, the filter, security options, order."""

from __future__ import annotations

import pytest

from postfix_smtp.sasl.policy import (MechanismFilter, SaslConfigError, allowed, auth_words,
                                      choose, filter_mechanisms, parse_ehlo_auth,
                                      parse_security_options, server_mechanisms)

DEFAULT = "noplaintext, noanonymous"
ALL = "PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256 ANONYMOUS XOAUTH2"


def flags(v):
    return parse_security_options(v)


def test_security_options_parse():
    assert flags("") == 0
    assert flags("noplaintext, noanonymous") == 0x11
    assert flags("noplaintext noactive nodictionary noanonymous mutual_auth forward_secrecy") \
        == 0x1 | 0x2 | 0x4 | 0x10 | 0x40 | 0x8
    with pytest.raises(SaslConfigError) as e:
        flags("noplaintext, NoAnonymous")          # case-sensitive, as name_mask()
    assert e.value.warnings[0] == ('unknown SASL security options value "NoAnonymous" in '
                                   '"noplaintext, NoAnonymous"')
    assert e.value.text == "SASL per-connection initialization failed"
    with pytest.raises(SaslConfigError):
        flags(",")


@pytest.mark.parametrize("opts,expect", [
    (DEFAULT, "SCRAM-SHA-256"),
    ("noanonymous", "SCRAM-SHA-256"),
    ("noactive", "SCRAM-SHA-256"),
    ("mutual_auth", "SCRAM-SHA-256"),
    ("nodictionary", None),
    ("forward_secrecy", None),
])
def test_choice_by_options_full_list(opts, expect):
    assert choose(ALL, flags(opts)) == expect


@pytest.mark.parametrize("offered,opts,expect", [
    ("PLAIN LOGIN", DEFAULT, None),                  # plaintext forbidden
    ("PLAIN LOGIN", "noanonymous", "PLAIN"),
    ("LOGIN PLAIN", "noanonymous", "PLAIN"),          # order is ours, not the server's
    ("LOGIN", "noanonymous", "LOGIN"),
    ("PLAIN LOGIN CRAM-MD5", DEFAULT, "CRAM-MD5"),
    ("CRAM-MD5 SCRAM-SHA-1", DEFAULT, "SCRAM-SHA-1"),
    ("CRAM-MD5", "noactive", None),
    ("CRAM-MD5", "mutual_auth", None),
    ("ANONYMOUS", DEFAULT, None),
    ("ANONYMOUS", "noplaintext", "ANONYMOUS"),
    ("ANONYMOUS PLAIN", "", "PLAIN"),
    ("XOAUTH2 PLAIN", "", "PLAIN"),                   # XOAUTH2 needs an explicit filter
    ("DIGEST-MD5 GSSAPI", "", None),
    ("scram-sha-256-plus", "", None),
    ("scram-sha-1", DEFAULT, "SCRAM-SHA-1"),           # case-insensitive
])
def test_choice(offered, opts, expect):
    assert choose(offered, flags(opts)) == expect


def test_xoauth2_only_when_named():
    f = MechanismFilter("xoauth2, plain")
    assert choose("PLAIN XOAUTH2", 0, f) == "XOAUTH2"
    assert choose("PLAIN XOAUTH2", flags(DEFAULT), f) is None     # noplaintext excludes it
    f = MechanismFilter("static:all")
    assert choose("PLAIN XOAUTH2", 0, f) == "PLAIN"


def test_allowed_table():
    assert allowed("SCRAM-SHA-1", flags("noplaintext, noanonymous, noactive, mutual_auth"))
    assert not allowed("CRAM-MD5", flags("noactive"))
    assert allowed("ANONYMOUS", flags("noplaintext"))
    assert not allowed("PLAIN", flags("noplaintext"))
    assert not allowed("NTLM", 0)


def test_filter_semantics(tmp_path):
    f = MechanismFilter("!plain, login, cram-md5")
    assert filter_mechanisms(f, "PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1") == "LOGIN CRAM-MD5"
    assert filter_mechanisms(None, "PLAIN  LOGIN") == "PLAIN  LOGIN"
    assert filter_mechanisms(MechanismFilter(""), "A B") == "A B"
    p = tmp_path / "mechs"
    p.write_text("# comment\nscram-sha-256\n!login\n")
    f = MechanismFilter("%s, plain" % p)
    assert filter_mechanisms(f, "PLAIN LOGIN SCRAM-SHA-256") == "PLAIN SCRAM-SHA-256"
    f = MechanismFilter("!%s, static:all" % p)
    assert filter_mechanisms(f, "PLAIN LOGIN SCRAM-SHA-256") == "PLAIN LOGIN"


def test_filter_tables_and_errors():
    class T:
        def __init__(self, keys, fail=False):
            self.keys, self.fail = keys, fail

        def lookup(self, k):
            if self.fail:
                raise OSError("boom")
            return "ok" if k in self.keys else None

    tables = {"hash:/x": T({"plain"}), "hash:/bad": T(set(), True)}
    f = MechanismFilter("hash:/x", tables.__getitem__)
    assert filter_mechanisms(f, "PLAIN LOGIN") == "PLAIN"     # key looked up in lower case
    f = MechanismFilter("hash:/bad", tables.__getitem__)
    with pytest.raises(SaslConfigError) as e:
        filter_mechanisms(f, "PLAIN")
    assert e.value.text == "sasl_mech_filter: SASL mechanism filter failed for: 'PLAIN'"
    with pytest.raises(SaslConfigError):
        MechanismFilter("!")


def test_auth_words():
    assert auth_words("AUTH PLAIN LOGIN") == "PLAIN LOGIN"
    assert auth_words("AUTH=PLAIN LOGIN") == "PLAIN LOGIN"
    assert auth_words("auth") == ""
    assert auth_words("AUTHX PLAIN") is None
    assert auth_words("SIZE 1000") is None


def lines(*kw):
    return ["250-relay.example"] + ["250-" + k for k in kw[:-1]] + ["250 " + kw[-1]]


def test_parse_ehlo_auth_accumulates_like_stock():
    h = parse_ehlo_auth(lines("PIPELINING", "AUTH PLAIN LOGIN", "AUTH=LOGIN PLAIN", "8BITMIME"),
                        None, "h[1.2.3.4]:25")
    assert h.offered and h.mechanism_list == "PLAIN LOGIN LOGIN PLAIN"
    h = parse_ehlo_auth(lines("AUTH PLAIN LOGIN", "AUTH plain login"), None, "x")
    assert h.mechanism_list == "PLAIN LOGIN"              # same list (any case): not repeated
    h = parse_ehlo_auth(lines("AUTH GSSAPI", "AUTH PLAIN"), MechanismFilter("plain"), "h:25")
    assert h.mechanism_list == "PLAIN"
    assert h.warnings == ["h:25 offered no supported AUTH mechanisms: 'GSSAPI'"]
    h = parse_ehlo_auth(lines("AUTH"), None, "h:25")
    assert h.offered and h.mechanism_list is None
    assert h.warnings == ["h:25 offered null AUTH mechanism list"]
    h = parse_ehlo_auth(lines("AUTH PLAIN"), None, "h", discard=frozenset({"AUTH"}))
    assert not h.offered and h.mechanism_list is None
    h = parse_ehlo_auth(["250-AUTH PLAIN", "250 SIZE"], None, "h")   # first line is the name
    assert not h.offered


def test_server_mechanisms_split_like_cyrus():
    assert server_mechanisms("plain,login  CRAM-MD5\tX_Y SCRAM-SHA-1-PLUS") == \
        ["PLAIN", "LOGIN", "CRAM-MD5", "X_Y"]
