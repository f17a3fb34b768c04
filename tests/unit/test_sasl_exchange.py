"""The AUTH exchange state machine: commands out, replies in."""

from __future__ import annotations

import base64

import pytest

from postfix_smtp.sasl.codec import MechanismError

from postfix_smtp.sasl.exchange import AuthExchange, Outcome, challenge_text
from postfix_smtp.sasl.mechanisms import (Context, CramMD5, Credentials, Login, Plain,
                                          ScramSha1, ScramSha256, XOAuth2)
from postfix_smtp.smtp.reply import ReplyParser

NAMADDR = "relay.example[192.0.2.1]"


def R(text: str):
    p = ReplyParser()
    p.feed(text.encode() + b"\r\n")
    r = p.pop()
    assert r is not None
    return r


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


def ex(mech, **kw):
    return AuthExchange(mech, NAMADDR, "relay.example", **kw)


def test_plain_initial_response_on_the_command_line():
    x = ex(Plain(Credentials("alice", "s3cret")))
    assert x.start() == b"AUTH PLAIN " + b64(b"\0alice\0s3cret").encode() + b"\r\n"
    out = x.receive(R("235 2.7.0 Authentication successful"))
    assert isinstance(out, Outcome) and out.ok


def test_initial_response_length_rule():
    # len("PLAIN") + len(base64) + 8 <= 512 goes on the line: 372 bytes make 496
    # base64 characters (509 in all), 373 bytes make 500 (513)
    for size, inline in ((372, True), (373, False)):
        pw = "x" * (size - len("\0u\0"))
        x = ex(Plain(Credentials("u", pw)))
        cmd = x.start()
        b = b64(b"\0u\0" + pw.encode())
        assert (len("PLAIN") + len(b) + 8 <= 512) == inline
        if inline:
            assert cmd == ("AUTH PLAIN %s\r\n" % b).encode()
        else:
            assert cmd == b"AUTH PLAIN\r\n"
            assert x.receive(R("334 ")) == b.encode() + b"\r\n"
            assert x.receive(R("235 2.7.0 ok")).ok


def test_deferred_initial_response_needs_empty_challenge():
    x = ex(XOAuth2(Credentials("u@example.com", "T" * 600)))
    assert x.start() == b"AUTH XOAUTH2\r\n"
    out = x.receive(R("334 c2VjcmV0"))
    assert not out.ok and out.status == "4.7.0"
    assert out.reason == ("SASL authentication failed; non-empty initial XOAUTH2 challenge "
                          "from server %s: c2VjcmV0" % NAMADDR)
    assert "T" * 20 not in out.reason          # never the credential-bearing response
    assert out.diag_type == "SASL" and out.diag_text == "protocol error"


def test_login_steps_and_empty_response_line():
    x = ex(Login(Credentials("", "pw")))
    assert x.start() == b"AUTH LOGIN\r\n"
    assert x.receive(R("334 VXNlcm5hbWU6")) == b"\r\n"          # empty username: empty line
    assert x.receive(R("334 UGFzc3dvcmQ6")) == b"cHc=\r\n"
    assert x.receive(R("235 2.7.0 ok")).ok


def test_cram_md5_exchange():
    x = ex(CramMD5(Credentials("tim", "tanstaaftanstaaf")))
    assert x.start() == b"AUTH CRAM-MD5\r\n"
    ch = b64(b"<1896.697170952@postoffice.reston.mci.net>")
    assert x.receive(R("334 " + ch)) == b64(b"tim b913a602c7eda7a495b4e6e7334d3890").encode() \
        + b"\r\n"


def test_scram_exchange_rfc7677():
    x = ex(ScramSha256(Credentials("user", "pencil"), Context(nonce="rOprNGfwEbeRWgbNEkqO")))
    assert x.start() == b"AUTH SCRAM-SHA-256 " + b64(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").encode() \
        + b"\r\n"
    sf = (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
          b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    out = x.receive(R("334 " + b64(sf)))
    assert base64.b64decode(out).endswith(b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    out = x.receive(R("334 " + b64(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")))
    assert out == b"\r\n"
    assert x.receive(R("235 2.7.0 Authentication successful")).ok


def test_535_soft_bounce_and_cache_data():
    x = ex(Plain(Credentials("alice", "bad")))
    x.start()
    out = x.receive(R("535 5.7.8 Error: authentication failed: authentication failure"))
    assert not out.ok and out.status == "4.7.8"
    assert out.reason == ("SASL authentication failed; server %s said: 535 5.7.8 Error: "
                          "authentication failed: authentication failure" % NAMADDR)
    assert out.mta == "relay.example" and out.diag_type == "smtp"
    assert out.cache_dsn == "5.7.8" and out.cache_text.startswith("535 5.7.8 Error")
    assert not out.protocol_error


def test_no_soft_bounce_and_other_codes():
    x = ex(Plain(Credentials("a", "b")), soft_bounce=False)
    x.start()
    out = x.receive(R("535 5.7.8 no"))
    assert out.status == "5.7.8"
    x = ex(Plain(Credentials("a", "b")))
    x.start()
    out = x.receive(R("454 4.7.0 Temporary authentication failure"))
    assert out.status == "4.7.0" and out.cache_dsn == ""
    x = ex(Plain(Credentials("a", "b")))
    x.start()
    out = x.receive(R("504 5.5.4 Unrecognized authentication type"))
    assert out.status == "4.5.4" and out.cache_dsn == ""
    x = ex(Plain(Credentials("a", "b")), diag_type="lmtp")
    x.start()
    assert x.receive(R("535 5.7.8 no")).diag_type == "lmtp"


def test_client_errors():
    x = ex(Plain(Credentials("a", "b")))
    x.start()
    out = x.receive(R("334 "))            # PLAIN already done: Cyrus "generic failure"
    assert out.reason == ("SASL authentication failed; cannot authenticate to server %s: "
                          "generic failure" % NAMADDR)
    assert out.status == "4.7.0" and out.protocol_error
    assert out.warnings == ("SASL authentication problem: attempting client step after "
                            "doneflag",)
    x = ex(Login(Credentials("a", "b")))
    x.start()
    out = x.receive(R("334 not*base64"))
    assert out.reason.endswith(": bad protocol / cancel")
    assert out.warnings == ()                       # Cyrus logs nothing for base64 errors


def test_protocol_loop_after_100_steps():
    class Echo(Login):
        def _step(self, challenge):
            return b"again"
    x = ex(Echo(Credentials("a", "b")))
    x.start()
    for _ in range(100):
        assert isinstance(x.receive(R("334 ")), bytes)
    out = x.receive(R("334 "))
    assert out.status == "4.3.0"
    assert out.reason == ("SASL authentication failed; authentication protocol loop with "
                          "server %s" % NAMADDR)


def test_xoauth2_error_challenge_answered_empty():
    x = ex(XOAuth2(Credentials("u@example.com", "ya29.t")))
    assert x.start().startswith(b"AUTH XOAUTH2 ")
    assert x.receive(R("334 eyJzdGF0dXMiOiI0MDAifQ==")) == b"\r\n"
    out = x.receive(R("535 5.7.8 Username and Password not accepted"))
    assert out.status == "4.7.8"


@pytest.mark.parametrize("text,expect", [
    ("334 abc", "abc"), ("334 ", ""), ("334", ""), ("334  abc", " abc"),
    ("334-abc\r\n334 def", "abc\n334 def"),
])
def test_challenge_text(text, expect):
    p = ReplyParser()
    p.feed(text.encode() + b"\r\n")
    assert challenge_text(p.pop()) == expect


def test_scram_failures_log_cyrus_messages():
    x = ex(ScramSha256(Credentials("user", "pencil"), Context(nonce="rOprNGfwEbeRWgbNEkqO")))
    x.start()
    out = x.receive(R("334 " + b64(b"r=other,s=QSXCR+Q6sek8bf92,i=4096")))
    assert out.reason.endswith(": bad protocol / cancel")
    assert out.warnings == ("SASL authentication failure: The nonce received from the server "
                            "doesn't start from the nonce sent by the client",)
    x = ex(ScramSha256(Credentials("user", "pencil"), Context(nonce="rOprNGfwEbeRWgbNEkqO")))
    x.start()
    x.receive(R("334 " + b64(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                                b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")))
    out = x.receive(R("334 " + b64(b"v=" + base64.b64encode(b"\0" * 32))))
    assert out.reason.endswith(": authentication failure")
    assert out.warnings == ("SASL authentication failure: ServerSignature mismatch",)
    m = ScramSha1(Credentials("user", "pencil"), Context(nonce="N" * 32))
    m.start()
    with pytest.raises(MechanismError) as e:       # (a 2048-byte reply line cannot carry it)
        m.step(b"x" * 2049)
    assert e.value.log == ("SASL authentication failure: SCRAM-SHA-1 input longer than "
                           "(MAX_SERVERIN_LEN) bytes")
