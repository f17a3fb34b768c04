"""SaslClient: configuration from main.cf and smtp_sasl_helo_login() over a
scripted server."""

from __future__ import annotations

import base64

import pytest

from postfix_smtp.config.params import ConfigError, Params
from postfix_smtp.sasl import SaslClient, run_exchange
from postfix_smtp.sasl.cache import AuthCache, MemoryTable
from postfix_smtp.sasl.client import TLS_UNVERIFIED, TLS_VERIFIED
from postfix_smtp.smtp.reply import ReplyParser

NAMADDR = "relay.example[192.0.2.1]"


class Log:
    def __init__(self):
        self.lines = []
        self.verbose = 0

    def warning(self, t):
        self.lines.append("warning: " + t)

    def info(self, t):
        self.lines.append(t)

    def error(self, t):
        self.lines.append("error: " + t)

    def debug(self, t):
        self.lines.append("debug: " + t)


class ScriptIO:
    """A server: replies in order; records what the client wrote."""

    def __init__(self, *replies):
        self.replies = list(replies)
        self.sent = []

    def write(self, data):
        self.sent.append(data)

    def read_reply(self):
        p = ReplyParser()
        p.feed(self.replies.pop(0).encode() + b"\r\n")
        return p.pop()


def client(tmp_path, log=None, **cf):
    pw = tmp_path / "sasl_passwd"
    pw.write_text("[relay.example]:587 alice:s3cret\nrelay.example bob:pw\n")
    main = {"smtp_sasl_auth_enable": "yes", "smtp_sasl_password_maps": "texthash:%s" % pw}
    main.update(cf)
    return SaslClient.from_params(Params(main), "smtp", log=log or Log())


def helo(c, *mechs, discard=frozenset()):
    lines = ["250-relay.example", "250-PIPELINING"] + ["250-AUTH " + m for m in mechs] + \
        ["250 8BITMIME"]
    return c.helo_auth(lines, NAMADDR + ":587", discard)


KW = dict(queue_id="4ABC", host="relay.example", dest="[relay.example]:587", namaddr=NAMADDR)


def test_disabled_by_default():
    c = SaslClient.from_params(Params({}), "smtp")
    assert not c.enabled


def test_fatal_configurations(tmp_path):
    with pytest.raises(ConfigError) as e:
        SaslClient.from_params(Params({"smtp_sasl_auth_enable": "yes"}))
    assert str(e.value) == ("specify a password table via the `smtp_sasl_password_maps' "
                            "configuration parameter")
    with pytest.raises(ConfigError) as e:
        SaslClient.from_params(Params({"lmtp_sasl_auth_enable": "yes"}, prefix="lmtp"), "lmtp")
    assert "lmtp_sasl_password_maps" in str(e.value)
    with pytest.raises(ConfigError) as e:
        client(tmp_path, smtp_sasl_type="dovecot")
    assert "unsupported SASL client implementation: dovecot" in str(e.value)
    with pytest.raises(ConfigError) as e:
        client(tmp_path, smtp_sasl_security_options="noplaintext, bogus")
    assert 'unknown SASL security options value "bogus"' in str(e.value)
    with pytest.raises(ConfigError) as e:
        client(tmp_path, smtp_sasl_auth_cache_name="btree:/tmp/x")
    assert 'must start with "proxy:' in str(e.value)


def test_login_host_credentials_default_options(tmp_path):
    c = client(tmp_path)
    h = helo(c, "PLAIN LOGIN CRAM-MD5")
    io = ScriptIO("334 " + base64.b64encode(b"<1.2@relay>").decode(), "235 2.7.0 ok")
    r = c.login(io, h, **KW)
    assert r.state == "ok" and r.mechanism == "CRAM-MD5" and r.username == "bob"
    assert io.sent[0] == b"AUTH CRAM-MD5\r\n"


def test_no_credentials_talks_as_strangers(tmp_path):
    c = client(tmp_path)
    r = c.login(ScriptIO(), helo(c, "PLAIN"), **dict(KW, host="other.example", dest="other"))
    assert r.state == "skipped"


def test_no_mechanism_list(tmp_path):
    log = Log()
    c = client(tmp_path, log, smtp_sasl_mechanism_filter="scram-sha-256")
    h = helo(c, "PLAIN LOGIN")
    assert log.lines == ["warning: %s:587 offered no supported AUTH mechanisms: 'PLAIN LOGIN'"
                         % NAMADDR]
    r = c.login(ScriptIO(), h, **KW)
    assert r.state == "failed"
    assert r.outcome.status == "4.7.0"
    assert r.outcome.reason == ("SASL authentication failed: server %s offered no compatible "
                                "authentication mechanisms for this type of connection "
                                "security" % NAMADDR)


def test_plaintext_forbidden(tmp_path):
    log = Log()
    c = client(tmp_path, log)
    io = ScriptIO()
    r = c.login(io, helo(c, "PLAIN LOGIN"), **KW)
    assert r.state == "failed" and io.sent == []
    assert r.outcome.reason == ("SASL authentication failed; cannot authenticate to server %s: "
                                "no mechanism available" % NAMADDR)
    assert r.outcome.diag_type == "SASL" and r.outcome.diag_text == "no mechanism available"
    assert log.lines == ["warning: SASL authentication failure: No worthy mechs found"]


def test_tls_option_levels(tmp_path):
    c = client(tmp_path, smtp_sasl_tls_security_options="noanonymous")
    h = helo(c, "PLAIN LOGIN")
    assert c.login(ScriptIO(), h, **KW).state == "failed"           # plaintext session
    io = ScriptIO("235 2.7.0 ok")
    r = c.login(io, h, tls=TLS_UNVERIFIED, **KW)
    assert r.state == "ok" and r.mechanism == "PLAIN"
    assert io.sent == [b"AUTH PLAIN " + base64.b64encode(b"\0bob\0pw") + b"\r\n"]
    # verified inherits the TLS options by default ...
    assert c.login(ScriptIO("235 ok"), h, tls=TLS_VERIFIED, **KW).state == "ok"
    # ... unless set
    c = client(tmp_path, smtp_sasl_tls_security_options="noanonymous",
               smtp_sasl_tls_verified_security_options="noplaintext")
    assert c.login(ScriptIO(), helo(c, "PLAIN"), tls=TLS_VERIFIED, **KW).state == "failed"


def test_bad_password_and_cache(tmp_path):
    c = client(tmp_path)
    c.cache = AuthCache(MemoryTable(), 3600)
    h = helo(c, "CRAM-MD5")
    io = ScriptIO("334 PDEuMkByZWxheT4=", "535 5.7.8 Error: authentication failed")
    r = c.login(io, h, **KW)
    assert r.state == "failed" and r.outcome.status == "4.7.8"
    assert r.outcome.reason == ("SASL authentication failed; server %s said: 535 5.7.8 Error: "
                                "authentication failed" % NAMADDR)
    assert list(c.cache.table.data) == ["relay.example;bob"]
    # next time: no AUTH at all
    io = ScriptIO()
    r = c.login(io, h, **KW)
    assert io.sent == [] and r.state == "failed" and r.outcome.status == "4.7.8"
    assert r.outcome.reason == ("SASL [CACHED] authentication failed; server relay.example "
                                "said: 535 5.7.8 Error: authentication failed")
    c.soft_bounce = False
    assert c.login(ScriptIO(), h, **KW).outcome.status == "5.7.8"


def test_sender_dependent(tmp_path):
    pw = tmp_path / "p"
    pw.write_text("carol@src.example carol:c\nrelay.example bob:pw\n")
    c = SaslClient.from_params(Params({
        "smtp_sasl_auth_enable": "yes", "smtp_sasl_password_maps": "texthash:%s" % pw,
        "smtp_sender_dependent_authentication": "yes",
        "smtp_sasl_security_options": ""}), "smtp")
    h = helo(c, "PLAIN")
    assert c.login(ScriptIO("235 ok"), h, sender="carol@src.example", **KW).username == "carol"
    assert c.login(ScriptIO("235 ok"), h, sender="dave@src.example", **KW).username == "bob"
    assert c.login(ScriptIO("235 ok"), h, sender="", **KW).username == "bob"


def test_table_error(tmp_path):
    c = SaslClient.from_params(Params({
        "smtp_sasl_auth_enable": "yes",
        "smtp_sasl_password_maps": "hash:%s/missing" % tmp_path}), "smtp", log=Log())
    r = c.login(ScriptIO(), helo(c, "PLAIN"), **KW)
    assert r.state == "table_error"
    assert r.warning == "4ABC: smtp_sasl_password_maps lookup error"


def test_run_exchange_and_nothing_secret_in_results(tmp_path):
    c = client(tmp_path, smtp_sasl_security_options="")
    h = helo(c, "LOGIN")
    io = ScriptIO("334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "535 5.7.8 nope")
    r = c.login(io, h, **KW)
    assert io.sent == [b"AUTH LOGIN\r\n", base64.b64encode(b"bob") + b"\r\n",
                       base64.b64encode(b"pw") + b"\r\n"]
    text = repr(r)
    assert "'pw'" not in text and base64.b64encode(b"pw").decode() not in text
    ex = c.prepare(h, **KW)
    out = run_exchange(ScriptIO("334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "235 ok"), ex)
    assert out.ok


def test_dummy_mail_auth_and_filter_from_params(tmp_path):
    c = client(tmp_path, smtp_send_dummy_mail_auth="yes",
               smtp_sasl_mechanism_filter="!cram-md5, static:all")
    assert c.dummy_mail_auth
    h = helo(c, "CRAM-MD5 SCRAM-SHA-1")
    assert h.mechanism_list == "SCRAM-SHA-1"


def test_deferred_log_replays_and_forwards(tmp_path):
    c = SaslClient.from_params(Params({
        "smtp_sasl_auth_enable": "yes", "smtp_sasl_password_maps": "texthash:%s/p" % tmp_path,
        "smtp_sasl_mechanism_filter": "plain # comment"}), "smtp")
    log = Log()
    c.attach_log(log)
    assert log.lines[0].startswith("error: open database ")       # from postfix_smtp.maps
    assert log.lines[1] == ("warning: smtp_sasl_mechanism_filter: comment at end of line is "
                            "not supported: # comment")
    c.helo_auth(["250-x", "250 AUTH"], "h:25")
    assert log.lines[-1] == "warning: h:25 offered null AUTH mechanism list"


def test_changed_table(tmp_path):
    import os
    import subprocess
    import time
    pw = tmp_path / "sasl_passwd"
    pw.write_text("relay.example bob:pw\n")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text("")
    try:
        subprocess.run(["/usr/sbin/postmap", "-c", str(etc), "hash:%s" % pw], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("postmap not usable here")
    c = SaslClient.from_params(Params({"smtp_sasl_auth_enable": "yes",
                                       "smtp_sasl_password_maps": "hash:%s" % pw}), "smtp")
    assert c.changed_table() is None
    time.sleep(1.1)
    os.utime(str(pw) + ".db")
    assert c.changed_table() == "hash:%s" % pw


def test_cache_label_conditions(tmp_path):
    c = SaslClient.from_params(Params({}), "smtp")
    assert (c.label_passwd, c.label_sender) == (False, False)
    c = SaslClient.from_params(Params({"smtp_sasl_password_maps": "texthash:/nonexistent",
                                       "smtp_sender_dependent_authentication": "yes"}), "smtp")
    assert not c.enabled and (c.label_passwd, c.label_sender) == (True, True)
    c = client(tmp_path)
    assert (c.label_passwd, c.label_sender) == (True, False)
