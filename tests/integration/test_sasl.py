"""SASL client authentication against a real SASL server, differential
against the stock smtp(8).

The server is Postfix's own smtpd with Dovecot SASL (sasl_dovecot.py):
mechanisms PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256 (and ANONYMOUS
where a scenario allows it), relaying only for authenticated clients.  Each
scenario runs once through this agent and once through the stock smtp(8)
(PostfixInstance agent=None) with the same main.cf, and the two must agree
on the outcome (status, DSN, reason text), the warnings, and what the
server saw: which mechanism authenticated, or failed, as which user.

The password table is a hash: table built with postmap and readable by root
only, so these runs also show that the agent opens it before dropping
privileges.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import pytest

from postfix_smtp.testing.instance import PostfixInstance, tool

from sasl_dovecot import (DovecotAuth, cleanup, dovecot_available, receiving_instance,
                          server_auth_events)

# scripts/setup.sh installs dovecot-core; without it these tests cannot run
pytestmark = pytest.mark.skipif(not dovecot_available(),
                                reason="needs Dovecot (apt-get install dovecot-core)")

USERS = {"alice": "secret1", "bob@example.com": "pw:with:colons"}
SENDER = "sender@src.test.invalid"
RCPT = "rcpt@dest.test.invalid"
MESSAGE = b"From: sender@src.test.invalid\nTo: rcpt@dest.test.invalid\nSubject: sasl\n\nhello\n"

AGENT_LINE = re.compile(r"postfix/smtp\[\d+\]: (\w+): to=<")
LINE = re.compile(
    r"^\w+: to=<(?P<to>[^>]*)>, relay=(?P<relay>\S+), (?:conn_use=(?P<conn_use>\d+), )?"
    r"delay=[\d.]+, "
    r"delays=[\d./]+, dsn=(?P<dsn>[\d.]+), status=(?P<status>\w+) \((?P<reason>.*)\)$")
WARNING = re.compile(r"postfix/smtp\[\d+\]: (warning: .*)$")
INFO = re.compile(r"postfix/smtp\[\d+\]: ([0-9A-F]+: (?!to=<).*)$")


@pytest.fixture(scope="module")
def dovecot():
    base = tempfile.mkdtemp(prefix="pfsmtp-dovecot-", dir="/tmp")
    d = DovecotAuth(base, USERS)
    d.start()
    yield d
    d.stop()
    cleanup(base)


@dataclass
class Result:
    lines: list                         # normalised per-recipient lines (dicts)
    warnings: list
    infos: list
    server: list                        # server_auth_events() of the receiving smtpd
    queue: dict
    log: list = field(default_factory=list)

    @property
    def outcome(self):
        return [(d["status"], d["dsn"], d["reason"]) for d in self.lines]


def _norm(text: str, port: int) -> str:
    text = text.replace(":%d" % port, ":PORT")
    text = re.sub(r"queued as \w+", "queued as QID", text)
    return re.sub(r"\b[0-9A-F]{8,}\b", "QID", text)


def write_passwd(path: str, entries: str, config_dir: str) -> str:
    """A hash: table readable only by root; returns its type:name."""
    with open(path, "w") as f:
        f.write(entries)
    os.chmod(path, 0o600)
    subprocess.run([tool("postmap"), "-c", config_dir, "hash:" + path], check=True)
    os.chmod(path + ".db", 0o600)
    return "hash:" + path


def run(base: str, agent, dovecot: DovecotAuth, passwd: str, cf: dict | None = None,
        recv_cf: dict | None = None, messages: int = 1, relayhost: str | None = None,
        chroot: bool = False, senders: list | None = None) -> Result:
    os.makedirs(base, mode=0o755, exist_ok=True)
    os.chmod(base, 0o755)
    recv = receiving_instance(os.path.join(base, "recv"), dovecot, **(recv_cf or {}))
    recv.start()
    send = None
    try:
        port = recv.smtpd_port
        table = write_passwd(os.path.join(base, "sasl_passwd"), passwd.format(port=port),
                             recv.config_dir)
        main = {"smtp_sasl_auth_enable": "yes", "smtp_sasl_password_maps": table,
                "minimal_backoff_time": "300s", "maximal_backoff_time": "300s"}
        main.update(cf or {})
        main = {k: v.format(port=port, base=base) for k, v in main.items()}
        send = PostfixInstance(os.path.join(base, "send"),
                               relayhost=(relayhost or "[127.0.0.1]:{port}").format(port=port),
                               agent=agent, main_cf=main, max_lifetime=300, quick_start=True)
        send.start()
        if chroot:          # Debian's master.cf runs smtp chrooted in the queue directory
            subprocess.run([tool("postconf"), "-c", send.config_dir, "-F", "smtp/unix/chroot=y"],
                           check=True, timeout=30)
            send.reload()
            time.sleep(1)
        for i, sender in enumerate(senders or [SENDER] * messages):
            send.sendmail(MESSAGE, sender, [RCPT])
            send.wait_log(r"postfix/smtp\[\d+\]: \w+: to=<", timeout=30, count=i + 1)
            assert send.wait_queue_empty(timeout=30, allow_deferred=True)
        time.sleep(0.3)
        log = send.log_lines()
        lines, warnings, infos = [], [], []
        for ln in log:
            m = AGENT_LINE.search(ln)
            if m:
                d = LINE.match(ln[ln.index("]: ", m.start()) + 3:])
                assert d, ln
                lines.append({k: _norm(v or "", port) for k, v in d.groupdict().items()})
                continue
            m = WARNING.search(ln)
            if m:
                warnings.append(_norm(m.group(1), port))
                continue
            m = INFO.search(ln)
            if m:
                infos.append(_norm(m.group(1), port))
        return Result(lines, warnings, infos, server_auth_events(recv), send.queue_ids(), log)
    finally:
        if send is not None:
            send.stop()
        recv.stop()


def both(tmp_base, agent, dovecot, passwd, **kw):
    ours = run(os.path.join(tmp_base, "agent"), agent, dovecot, passwd, **kw)
    stock = run(os.path.join(tmp_base, "stock"), None, dovecot, passwd, **kw)
    return ours, stock


def assert_same(ours: Result, stock: Result) -> None:
    assert ours.outcome == stock.outcome, (ours.log, stock.log)
    assert ours.lines == stock.lines
    assert ours.warnings == stock.warnings
    assert ours.infos == stock.infos
    assert ours.server == stock.server
    assert {q: len(v) for q, v in ours.queue.items()} == \
        {q: len(v) for q, v in stock.queue.items()}


GOOD = "[127.0.0.1]:{port} alice:secret1\n"
BAD = "[127.0.0.1]:{port} alice:wrong\n"


# --- the differential scenarios -----------------------------------------------------------

def test_good_password_default_options(tmp_base, agent_wrapper, dovecot):
    ours, stock = both(tmp_base, agent_wrapper, dovecot, GOOD)
    assert_same(ours, stock)
    assert ours.outcome[0][0] == "sent"
    assert ours.server == [("ok", "SCRAM-SHA-256", "alice")]


def test_bad_password(tmp_base, agent_wrapper, dovecot):
    ours, stock = both(tmp_base, agent_wrapper, dovecot, BAD)
    assert_same(ours, stock)
    status, dsn, reason = ours.outcome[0]
    assert (status, dsn) == ("deferred", "4.7.8")
    assert reason.startswith("SASL authentication failed; server 127.0.0.1[127.0.0.1] said: "
                             "535 5.7.8 Error: authentication failed: ")
    assert ours.server == [("fail", "SCRAM-SHA-256")]
    assert "wrong" not in "\n".join(ours.log)


def test_bad_password_hard_without_soft_bounce(tmp_base, agent_wrapper, dovecot):
    ours, stock = both(tmp_base, agent_wrapper, dovecot, BAD,
                       cf={"smtp_sasl_auth_soft_bounce": "no"})
    assert_same(ours, stock)
    assert ours.outcome[0][:2] == ("bounced", "5.7.8")


def test_no_matching_entry_talks_as_strangers(tmp_base, agent_wrapper, dovecot):
    ours, stock = both(tmp_base, agent_wrapper, dovecot, "[other.example]:587 alice:secret1\n")
    assert_same(ours, stock)
    status, dsn, reason = ours.outcome[0]
    assert status == "bounced" and "said: 554 5.7.1 <rcpt@dest.test.invalid>" in reason
    assert ours.server == []


def test_mechanism_filter_excludes_every_server_mechanism(tmp_base, agent_wrapper, dovecot):
    ours, stock = both(tmp_base, agent_wrapper, dovecot, GOOD,
                       cf={"smtp_sasl_mechanism_filter": "gssapi, digest-md5"})
    assert_same(ours, stock)
    assert ours.outcome[0] == (
        "deferred", "4.7.0", "SASL authentication failed: server 127.0.0.1[127.0.0.1] offered "
        "no compatible authentication mechanisms for this type of connection security")
    assert ours.warnings == ["warning: 127.0.0.1[127.0.0.1]:PORT offered no supported AUTH "
                             "mechanisms: 'PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256'"]


def test_plaintext_forbidden_without_tls(tmp_base, agent_wrapper, dovecot):
    ours, stock = both(tmp_base, agent_wrapper, dovecot, GOOD,
                       recv_cf={"smtpd_sasl_mechanism_filter": "plain, login"})
    assert_same(ours, stock)
    assert ours.outcome[0] == (
        "deferred", "4.7.0", "SASL authentication failed; cannot authenticate to server "
        "127.0.0.1[127.0.0.1]: no mechanism available")
    assert ours.server == []


@pytest.mark.parametrize("sender_filter,options,mechanism", [
    ("plain", "noanonymous", "PLAIN"),
    ("login", "noanonymous", "LOGIN"),
    ("plain, login", "noanonymous", "PLAIN"),
    ("cram-md5", "noplaintext, noanonymous", "CRAM-MD5"),
    ("scram-sha-1", "noplaintext, noanonymous", "SCRAM-SHA-1"),
    ("cram-md5, plain, login", "noanonymous", "CRAM-MD5"),
    ("", "noactive", "SCRAM-SHA-256"),
])
def test_mechanism_choice_matches_stock(tmp_base, agent_wrapper, dovecot, sender_filter,
                                        options, mechanism):
    ours, stock = both(tmp_base, agent_wrapper, dovecot, GOOD,
                       cf={"smtp_sasl_mechanism_filter": sender_filter,
                           "smtp_sasl_security_options": options})
    assert_same(ours, stock)
    assert ours.server == [("ok", mechanism, "alice")]
    assert ours.outcome[0][0] == "sent"


ANON_RECV = {"smtpd_sasl_security_options": "", "mynetworks": "127.0.0.0/8",
             "smtpd_relay_restrictions": "permit_mynetworks, reject"}


def test_anonymous(tmp_base, agent_wrapper, dovecot):
    """ANONYMOUS (allowed by noplaintext, not by noanonymous): the trace
    data is ``anonymous@HOSTNAME`` as Cyrus sends it (Postfix's smtpd does
    not log anonymous logins, Dovecot does)."""
    before = dovecot.log().count("anonymous(anonymous@%s," % socket.gethostname())
    ours = run(os.path.join(tmp_base, "agent"), agent_wrapper, dovecot, GOOD,
               cf={"smtp_sasl_mechanism_filter": "anonymous",
                   "smtp_sasl_security_options": "noplaintext"},
               recv_cf=ANON_RECV)
    mid = dovecot.log().count("anonymous(anonymous@%s," % socket.gethostname())
    stock = run(os.path.join(tmp_base, "stock"), None, dovecot, GOOD,
                cf={"smtp_sasl_mechanism_filter": "anonymous",
                    "smtp_sasl_security_options": "noplaintext"},
                recv_cf=ANON_RECV)
    after = dovecot.log().count("anonymous(anonymous@%s," % socket.gethostname())
    assert_same(ours, stock)
    assert ours.outcome[0][0] == "sent"
    assert mid - before == after - mid == 1


def test_nodictionary_allows_nothing(tmp_base, agent_wrapper, dovecot):
    ours, stock = both(tmp_base, agent_wrapper, dovecot, GOOD,
                       cf={"smtp_sasl_security_options": "nodictionary"})
    assert_same(ours, stock)
    assert ours.outcome[0][2].endswith(": no mechanism available")


def test_username_with_domain_and_password_with_colons(tmp_base, agent_wrapper, dovecot):
    ours, stock = both(tmp_base, agent_wrapper, dovecot,
                       "127.0.0.1 bob@example.com:pw:with:colons\n",
                       cf={"smtp_sasl_mechanism_filter": "plain",
                           "smtp_sasl_security_options": ""})
    assert_same(ours, stock)
    assert ours.server == [("ok", "PLAIN", "bob@example.com")]


def test_sender_dependent_authentication(tmp_base, agent_wrapper, dovecot):
    passwd = ("%s alice:secret1\n127.0.0.1 alice:wrong\n" % SENDER)
    ours, stock = both(tmp_base, agent_wrapper, dovecot, passwd,
                       cf={"smtp_sender_dependent_authentication": "yes"})
    assert_same(ours, stock)
    assert ours.server == [("ok", "SCRAM-SHA-256", "alice")]


def test_auth_failure_cache(tmp_base, agent_wrapper, dovecot):
    cf = {"smtp_sasl_auth_cache_name": "proxy:btree:{base}/send/data/sasl_auth_cache",
          "smtp_sasl_auth_cache_time": "1h"}
    ours, stock = both(tmp_base, agent_wrapper, dovecot, BAD, cf=cf, messages=2)
    assert_same(ours, stock)
    first, second = [o[2] for o in ours.outcome]
    assert first.startswith("SASL authentication failed; server 127.0.0.1[127.0.0.1] said: "
                            "535 5.7.8 Error: authentication failed: ")
    assert second == first.replace("SASL authentication failed; server 127.0.0.1[127.0.0.1]",
                                   "SASL [CACHED] authentication failed; server 127.0.0.1")
    assert ours.server == [("fail", "SCRAM-SHA-256")]          # one AUTH only


def test_auth_cache_written_by_stock_is_honoured(tmp_base, agent_wrapper, dovecot):
    """The cache table is shared with the stock smtp(8): same proxywrite
    requests, same key and value format."""
    cache_dir = os.path.join(tmp_base, "cache")
    os.makedirs(cache_dir)
    import pwd
    pf = pwd.getpwnam("postfix")
    os.chown(cache_dir, pf.pw_uid, pf.pw_gid)
    cf = {"smtp_sasl_auth_cache_name": "proxy:btree:%s/sasl_auth_cache" % cache_dir}
    stock = run(os.path.join(tmp_base, "stock"), None, dovecot, BAD, cf=cf)
    assert stock.server == [("fail", "SCRAM-SHA-256")]
    ours = run(os.path.join(tmp_base, "agent"), agent_wrapper, dovecot, BAD, cf=cf)
    assert ours.server == []
    assert ours.outcome[0][2].startswith("SASL [CACHED] authentication failed; server "
                                         "127.0.0.1 said: 535 5.7.8")


def test_chroot_with_root_only_table_and_failure_cache(tmp_base, agent_wrapper, dovecot):
    """smtp chrooted (as in Debian's master.cf): the root-only hash table is
    opened before the jail, the failure cache is reached through
    private/proxywrite inside it."""
    cf = {"smtp_sasl_auth_cache_name": "proxy:btree:{base}/send/data/sasl_auth_cache"}
    ours, stock = both(tmp_base, agent_wrapper, dovecot, BAD, cf=cf, messages=2, chroot=True)
    assert_same(ours, stock)
    assert ours.outcome[1][2].startswith("SASL [CACHED] authentication failed")
    assert ours.server == [("fail", "SCRAM-SHA-256")]
    ours, stock = both(tmp_base + "/good", agent_wrapper, dovecot, GOOD, chroot=True)
    assert_same(ours, stock)
    assert ours.server == [("ok", "SCRAM-SHA-256", "alice")]


# --- over STARTTLS: which security options apply ---------------------------------------------

def tls_recv(pki, **extra):
    """smtpd offers STARTTLS, and AUTH (PLAIN and LOGIN only) only inside TLS."""
    cf = {"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": pki.cert("good"),
          "smtpd_tls_key_file": pki.key("good"), "smtpd_tls_auth_only": "yes",
          "smtpd_sasl_mechanism_filter": "plain, login"}
    cf.update(extra)
    return cf


@pytest.mark.parametrize("cf,expect", [
    # TLS, certificate not matched: smtp_sasl_tls_security_options
    ({"smtp_tls_security_level": "may", "smtp_sasl_tls_security_options": "noanonymous"},
     ("ok", "PLAIN")),
    ({"smtp_tls_security_level": "encrypt"}, ("fail", "no mechanism available")),
    # TLS, certificate matched: smtp_sasl_tls_verified_security_options
    ({"smtp_tls_security_level": "verify", "smtp_tls_verify_cert_match": "mx.test.invalid",
      "smtp_sasl_tls_security_options": "noplaintext",
      "smtp_sasl_tls_verified_security_options": "noanonymous"}, ("ok", "PLAIN")),
    ({"smtp_tls_security_level": "verify", "smtp_tls_verify_cert_match": "mx.test.invalid",
      "smtp_sasl_tls_security_options": "noanonymous",
      "smtp_sasl_tls_verified_security_options": "noplaintext"},
     ("fail", "no mechanism available")),
    # no TLS: the server offers no AUTH at all: no AUTH, relaying refused
    ({"smtp_tls_security_level": "none", "smtp_sasl_security_options": ""},
     ("none", "554 5.7.1")),
])
def test_sasl_over_starttls_like_stock(tmp_base, agent_wrapper, dovecot, pki, cf, expect):
    cf = dict(cf, smtp_tls_CAfile=pki.ca, smtp_tls_loglevel="1")
    ours, stock = both(tmp_base, agent_wrapper, dovecot, GOOD, cf=cf, recv_cf=tls_recv(pki))
    assert_same(ours, stock)
    status, dsn, reason = ours.outcome[0]
    if expect[0] == "ok":
        assert ours.server == [("ok", expect[1], "alice")] and status == "sent"
    elif expect[0] == "fail":
        assert ours.server == [] and reason.endswith(": " + expect[1])
    else:
        assert ours.server == [] and expect[1] in reason
    def tls_lines(log):
        return [re.sub(r":\d+:", ":PORT:", re.sub(r"^.*\]: ", "", ln))
                for ln in log if "TLS connection established" in ln]
    assert tls_lines(ours.log) == tls_lines(stock.log)
    if cf["smtp_tls_security_level"] != "none":
        assert tls_lines(ours.log)[0].startswith("Verified " if "verify" in cf.values()
                                                 else "Trusted ")



# --- connection reuse: authenticated sessions and their cache labels ----------------------

CACHE_CF = {"smtp_connection_cache_destinations": "127.0.0.1",
            "smtp_connection_cache_time_limit": "20s", "connection_cache_ttl_limit": "30s"}
TWO_SENDERS = ["one@src.test.invalid", "two@src.test.invalid"]


def test_authenticated_session_is_reused_like_stock(tmp_base, agent_wrapper, dovecot):
    ours, stock = both(tmp_base, agent_wrapper, dovecot, GOOD, cf=CACHE_CF,
                       senders=TWO_SENDERS)
    assert_same(ours, stock)
    assert [d["conn_use"] for d in ours.lines] == ["", "2"]      # one AUTH, one connection
    assert ours.server == [("ok", "SCRAM-SHA-256", "alice")] * 2


def test_sender_dependent_credentials_split_the_connection_cache(tmp_base, agent_wrapper,
                                                                 dovecot):
    passwd = ("one@src.test.invalid alice:secret1\n"
              "two@src.test.invalid bob@example.com:pw:with:colons\n")
    cf = dict(CACHE_CF, smtp_sender_dependent_authentication="yes")
    ours, stock = both(tmp_base, agent_wrapper, dovecot, passwd, cf=cf, senders=TWO_SENDERS)
    assert_same(ours, stock)
    assert [d["conn_use"] for d in ours.lines] == ["", ""]       # no sharing across senders
    assert ours.server == [("ok", "SCRAM-SHA-256", "alice"),
                           ("ok", "SCRAM-SHA-256", "bob@example.com")]
