"""SASL mechanisms: RFC test vectors and Cyrus-compatible behaviour."""

from __future__ import annotations

import base64
import json

import pytest

from postfix_smtp.sasl.codec import (SASL_BADAUTH, SASL_BADPROT, SASL_CONTINUE, SASL_FAIL,
                                     MechanismError, decode64)
from postfix_smtp.sasl.mechanisms import (MECHANISMS, Anonymous, Context, CramMD5, Credentials,
                                          Login, Plain, ScramSha1, ScramSha256, XOAuth2)


def creds(user="user", pw="pencil"):
    return Credentials(user, pw)


# --- RFC 5802 section 5: SCRAM-SHA-1 -------------------------------------------

def test_scram_sha1_rfc5802_vector():
    m = ScramSha1(creds(), Context(nonce="fyko+d2lbbFgONRv9qkxdawL"))
    assert m.start() == b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
    final = m.step(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
    assert final == (b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
                     b"p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
    assert not m.done
    assert m.step(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=") == b""
    assert m.done


# --- RFC 7677 section 3: SCRAM-SHA-256 -----------------------------------------

RFC7677_SERVER_FIRST = (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                        b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")


def test_scram_sha256_rfc7677_vector():
    m = ScramSha256(creds(), Context(nonce="rOprNGfwEbeRWgbNEkqO"))
    assert m.start() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = m.step(RFC7677_SERVER_FIRST)
    assert final == (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert m.step(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=") == b""
    assert m.done


def test_scram_bad_server_signature_is_authentication_failure():
    m = ScramSha256(creds(), Context(nonce="rOprNGfwEbeRWgbNEkqO"))
    m.start()
    m.step(RFC7677_SERVER_FIRST)
    with pytest.raises(MechanismError) as e:
        m.step(b"v=" + base64.b64encode(b"x" * 32))
    assert e.value.code == SASL_BADAUTH
    assert e.value.text == "authentication failure"


@pytest.mark.parametrize("server_first", [
    b"",                                             # input expected
    b"x",                                            # too short
    b"m=ext,r=abc",                                  # mandatory extension
    b"s=abc,r=abc",                                  # nonce first
    b"r=rOprNGfwEbeRWgbNEkqO",                       # nonce not extended, no salt
    b"r=OTHERnonceXXXXXXXXXXXXXXX,s=QSXCR+Q6sek8bf92,i=4096",   # not our nonce
    b"r=rOprNGfwEbeRWgbNEkqOxyz,s=,i=4096",          # empty salt
    b"r=rOprNGfwEbeRWgbNEkqOxyz,s=QSXCR,i=4096",     # salt length not a multiple of 4
    b"r=rOprNGfwEbeRWgbNEkqOxyz,s=QSXCR+Q6sek8bf92,i=x",     # bad count
    b"r=rOprNGfwEbeRWgbNEkqOxyz,s=QSXCR+Q6sek8bf92,i=65537",  # Cyrus refuses > 0x10000
    b"r=rOprNGfwEbeRWgbNEkqOxyz,s=QSXCR+Q6sek8bf92,i=4096\0",
])
def test_scram_rejects_bad_server_first(server_first):
    m = ScramSha256(creds(), Context(nonce="rOprNGfwEbeRWgbNEkqO"))
    m.start()
    with pytest.raises(MechanismError) as e:
        m.step(server_first)
    assert e.value.code == SASL_BADPROT
    assert e.value.text == "bad protocol / cancel"


def test_scram_server_final_error_and_step_after_done():
    m = ScramSha1(creds(), Context(nonce="fyko+d2lbbFgONRv9qkxdawL"))
    m.start()
    m.step(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
    with pytest.raises(MechanismError) as e:
        m.step(b"e=invalid-proof")
    assert e.value.code == SASL_BADPROT
    m2 = ScramSha1(creds(), Context(nonce="fyko+d2lbbFgONRv9qkxdawL"))
    m2.start()
    m2.step(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
    m2.step(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")
    with pytest.raises(MechanismError) as e:
        m2.step(b"")
    assert e.value.code == SASL_FAIL and e.value.text == "generic failure"


def test_scram_escapes_username_and_sends_authzid():
    m = ScramSha256(Credentials("a=b,c", "pw"), Context(nonce="N" * 32))
    assert m.start() == b"n,,n=a=3Db=2Cc,r=" + b"N" * 32
    m = ScramSha256(Credentials("joe", "pw"), Context(nonce="N" * 32, authzid=True))
    assert m.start() == b"n,a=joe,n=joe,r=" + b"N" * 32
    # the channel-binding attribute carries the GS2 header
    out = m.step(b"r=" + b"N" * 40 + b",s=QSXCR+Q6sek8bf92,i=4096")
    assert out.startswith(b"c=" + base64.b64encode(b"n,a=joe,") + b",r=")


def test_scram_random_nonce_is_32_base64_chars():
    m = ScramSha256(creds())
    first = m.start()
    nonce = first.split(b",r=")[1]
    assert len(nonce) == 32
    assert ScramSha256(creds()).start() != first


# --- RFC 2195: CRAM-MD5 ---------------------------------------------------------

def test_cram_md5_rfc2195_vector():
    m = CramMD5(Credentials("tim", "tanstaaftanstaaf"))
    assert m.start() is None
    assert m.step(b"<1896.697170952@postoffice.reston.mci.net>") == \
        b"tim b913a602c7eda7a495b4e6e7334d3890"
    assert m.done


def test_cram_md5_long_challenge_rejected_like_cyrus():
    m = CramMD5(Credentials("tim", "x"))
    m.start()
    with pytest.raises(MechanismError) as e:
        m.step(b"x" * 1025)
    assert e.value.code == SASL_BADPROT


# --- PLAIN, LOGIN, ANONYMOUS, XOAUTH2 ----------------------------------------------

def test_plain():
    assert Plain(Credentials("alice", "s3cret")).start() == b"\0alice\0s3cret"
    assert Plain(Credentials("alice", "s3cret"), Context(authzid=True)).start() == \
        b"alice\0alice\0s3cret"
    assert Plain(Credentials("", "")).start() == b"\0\0"
    m = Plain(Credentials("alice", "x"))
    m.start()
    with pytest.raises(MechanismError) as e:        # Cyrus: step after doneflag
        m.step(b"")
    assert e.value.text == "generic failure"


def test_login():
    m = Login(Credentials("alice", "s3cret"))
    assert m.start() is None
    assert m.step(b"Username:") == b"alice"
    assert m.step(b"Password:") == b"s3cret"
    assert m.done
    with pytest.raises(MechanismError):
        m.step(b"")


def test_anonymous():
    m = Anonymous(Credentials("alice", "x"), Context(hostname="client.example"))
    assert m.start() == b"anonymous@client.example"
    m = Anonymous(Credentials("alice", "x"), Context(hostname="h", authzid=True))
    assert m.start() == b"alice@h"


def test_xoauth2_token_from_password():
    m = XOAuth2(Credentials("user@example.com", "ya29.TOKEN"))
    assert m.start() == b"user=user@example.com\x01auth=Bearer ya29.TOKEN\x01\x01"
    # an error challenge is answered with an empty response, once
    assert m.step(b'{"status":"400"}') == b""
    with pytest.raises(MechanismError):
        m.step(b"")


def test_xoauth2_token_files(tmp_path):
    plain = tmp_path / "tok"
    plain.write_text("ya29.FROMFILE\n")
    m = XOAuth2(Credentials("u@example.com", str(plain)))
    assert m.start() == b"user=u@example.com\x01auth=Bearer ya29.FROMFILE\x01\x01"
    js = tmp_path / "tok.json"
    js.write_text(json.dumps({"access_token": "ya29.JSON", "refresh_token": "r",
                              "expiry": "1700000000"}))
    assert XOAuth2(Credentials("u", str(js))).start() == \
        b"user=u\x01auth=Bearer ya29.JSON\x01\x01"
    with pytest.raises(MechanismError) as e:
        XOAuth2(Credentials("u", str(tmp_path / "missing"))).start()
    assert "cannot read XOAUTH2 token file" in e.value.text
    assert "ya29" not in e.value.text
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(MechanismError) as e:
        XOAuth2(Credentials("u", str(bad))).start()
    assert "no access_token" in e.value.text


def test_credentials_repr_hides_password():
    c = Credentials("alice", "TopSecret")
    assert "TopSecret" not in repr(c) and "TopSecret" not in str(c)
    assert "alice" in repr(c)


def test_registry_names():
    assert set(MECHANISMS) == {"SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "XOAUTH2", "PLAIN",
                               "LOGIN", "ANONYMOUS"}


# --- Cyrus base64 decoding of challenges ----------------------------------------------

def test_decode64_cyrus_quirks():
    assert decode64("") == b""
    assert decode64("dGVzdA==") == b"test"
    with pytest.raises(MechanismError) as e:
        decode64("dGVzdA")            # left-over characters: SASL_CONTINUE
    assert e.value.code == SASL_CONTINUE
    assert e.value.text == "another step is needed in authentication"
    with pytest.raises(MechanismError) as e:
        decode64("dGVzdA==AAAA")      # data after '='
    assert e.value.code == SASL_BADPROT
    with pytest.raises(MechanismError) as e:
        decode64("dG!z")
    assert e.value.code == SASL_BADPROT
    with pytest.raises(MechanismError) as e:
        decode64("\rAAA")
    assert e.value.code == SASL_FAIL
