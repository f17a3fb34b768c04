"""STARTTLS against Postfix's own smtpd (TLS on loopback), stock smtp(8) vs this agent.

A receiving Postfix instance runs one smtpd service per test certificate
(good, expired, not yet valid, wrong name, self-signed, untrusted issuer,
weak key, ECDSA), all with ``smtpd_tls_security_level = may``.  Each scenario
(certificate x client level x policy) is delivered once by the stock smtp(8)
and once by this agent from a fresh sending instance; outcomes, DSN codes,
reason texts and the TLS log lines must be the same.  A scriptable peer
covers broken handshakes, refused STARTTLS, SNI and wrapper mode.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time

import pytest

from postfix_smtp.testing.instance import LOOPBACK, PostfixInstance, free_port
from postfix_smtp.testing.peer import PeerScript, SmtpPeer
from postfix_smtp.testing.tlscerts import SERVER_NAME, fingerprint

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SENDER = "alice@src.test.invalid"
RCPT = "bob@dest.test.invalid"
MESSAGE = b"Subject: tls test\n\nhello over TLS\n"
CERTS = ("good", "expired", "notyet", "wrongname", "selfsigned", "untrusted", "weak", "ec")

AGENT_LINE = re.compile(r"postfix/(?:relay/)?smtp\[\d+\]: (.*)$")
TLS_LINE = re.compile(r"TLS connection|verification failed|SSL_connect error|TLS is required|"
                      r"Server certificate|Cannot start TLS|TLS policy|requires \"|"
                      r"offered STARTTLS|fingerprint|Invalid TLS|trust anchor")


@pytest.fixture(scope="module")
def receiver(pki):
    """A Postfix smtpd per certificate: {name: port}."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    base = tempfile.mkdtemp(prefix="pfsmtp-rcv-", dir="/tmp")
    os.chmod(base, 0o755)
    inst = PostfixInstance(base, relayhost="[127.0.0.1]:9", myhostname=SERVER_NAME,
                           main_cf={"smtpd_tls_security_level": "may",
                                    "smtpd_tls_cert_file": pki.cert("good"),
                                    "smtpd_tls_key_file": pki.key("good"),
                                    "smtpd_tls_loglevel": "1",
                                    "defer_transports": "smtp relay"},
                           max_lifetime=1200, quick_start=True)
    inst.start()
    ports = {}
    used = {inst.smtpd_port}
    lines = []
    for name in CERTS:
        port = free_port(exclude=used)
        used.add(port)
        ports[name] = port
        lines.append("%s:%d inet n - n - - smtpd -o smtpd_tls_cert_file=%s "
                     "-o smtpd_tls_key_file=%s\n" % (LOOPBACK, port, pki.cert(name),
                                                     pki.key(name)))
    with open(os.path.join(inst.config_dir, "master.cf"), "a") as f:
        f.writelines(lines)
    inst.reload()
    end = time.monotonic() + 15
    from postfix_smtp.testing.instance import port_open
    while time.monotonic() < end and not all(port_open(p) for p in ports.values()):
        time.sleep(0.1)
    yield ports
    inst.stop()
    if not os.environ.get("POSTFIX_SMTP_KEEP_TMP"):
        shutil.rmtree(base, ignore_errors=True)


def deliver(base: str, agent, relayhost: str, main_cf: dict, expect_line: bool = True,
            wait_lines: int = 1):
    """One message through a fresh sending instance; (agent log lines, queue)."""
    os.makedirs(base, mode=0o755, exist_ok=True)
    cf = {"minimal_backoff_time": "300s", "maximal_backoff_time": "300s",
          "smtp_tls_loglevel": "1"}
    cf.update(main_cf)
    inst = PostfixInstance(base, relayhost=relayhost, agent=agent, main_cf=cf,
                           myhostname="sender.test.invalid", max_lifetime=300,
                           quick_start=True)
    try:
        inst.start()
        inst.sendmail(MESSAGE, SENDER, [RCPT])
        inst.wait_log(r"postfix/(relay/)?smtp\[\d+\]: \w+: to=<", timeout=40, count=wait_lines)
        inst.wait_queue_empty(timeout=10, allow_deferred=True)
        time.sleep(0.3)
        lines = []
        for ln in inst.log_lines():
            m = AGENT_LINE.search(ln)
            if m:
                lines.append(m.group(1))
        return lines, inst.queue_ids()
    finally:
        inst.stop()


def normalise(lines: list) -> list:
    out = []
    for ln in lines:
        ln = re.sub(r"^[0-9A-F]{6,}: ", "QID: ", ln)
        ln = re.sub(r"\]:\d+", "]:PORT", ln)
        ln = re.sub(r"delay=[\d.]+, delays=[\d./]+", "delay=D", ln)
        ln = re.sub(r"queued as [0-9A-Za-z]+", "queued as QID", ln)
        ln = re.sub(r"TLS library problem: .*", "TLS library problem: ...", ln)
        ln = re.sub(r"(SSL_connect error to [^:]+:PORT): -?\d+$", r"\1: N", ln)
        out.append(ln)
    return out


def interesting(lines: list) -> list:
    return [ln for ln in normalise(lines)
            if " to=<" in ln or TLS_LINE.search(ln)
            and "TLS library problem" not in ln]


def compare(tmp_base, tls_agent, relayhost, main_cf, **kw):
    ours, oq = deliver(os.path.join(tmp_base, "agent"), tls_agent, relayhost, main_cf, **kw)
    stock, sq = deliver(os.path.join(tmp_base, "stock"), None, relayhost, main_cf, **kw)
    assert interesting(ours) == interesting(stock), "\nours:  %s\nstock: %s" % (
        "\n       ".join(ours), "\n       ".join(stock))
    assert {k: len(v) for k, v in oq.items()} == {k: len(v) for k, v in sq.items()}
    return interesting(ours)


# ---------------------------------------------------------------------------
# the certificate x level matrix against Postfix's smtpd

MATRIX = [
    ("good", "may", {}),
    ("good", "encrypt", {}),
    ("good", "verify", {"smtp_tls_verify_cert_match": SERVER_NAME}),
    ("good", "verify", {}),                               # hostname 127.0.0.1: mismatch
    ("good", "secure", {"smtp_tls_secure_cert_match": "." + SERVER_NAME.split(".", 1)[1]}),
    ("expired", "may", {}),
    ("expired", "verify", {"smtp_tls_verify_cert_match": SERVER_NAME}),
    ("notyet", "secure", {"smtp_tls_secure_cert_match": SERVER_NAME}),
    ("wrongname", "verify", {"smtp_tls_verify_cert_match": SERVER_NAME}),
    ("selfsigned", "encrypt", {}),
    ("selfsigned", "verify", {"smtp_tls_verify_cert_match": SERVER_NAME}),
    ("untrusted", "may", {}),
    ("untrusted", "verify", {"smtp_tls_verify_cert_match": SERVER_NAME}),
    ("weak", "verify", {"smtp_tls_verify_cert_match": SERVER_NAME}),
    ("ec", "secure", {"smtp_tls_secure_cert_match": SERVER_NAME}),
]


@pytest.mark.parametrize("cert,level,extra", MATRIX,
                         ids=["%s-%s-%d" % (c, l, i) for i, (c, l, _e) in enumerate(MATRIX)])
def test_matrix_against_postfix_smtpd(tmp_base, tls_agent, pki, receiver, cert, level, extra):
    cf = {"smtp_tls_security_level": level, "smtp_tls_CAfile": pki.ca}
    cf.update(extra)
    lines = compare(tmp_base, tls_agent, "[127.0.0.1]:%d" % receiver[cert], cf)
    assert any("TLS connection established" in ln for ln in lines), lines


def test_fingerprint_levels(tmp_base, tls_agent, pki, receiver):
    good = fingerprint(pki.cert("good"))
    lines = compare(tmp_base, tls_agent, "[127.0.0.1]:%d" % receiver["selfsigned"], {
        "smtp_tls_security_level": "fingerprint",
        "smtp_tls_fingerprint_cert_match": fingerprint(pki.cert("selfsigned"), pkey=True)})
    assert any(ln.startswith("Verified TLS") for ln in lines), lines
    lines = compare(tmp_base, tls_agent, "[127.0.0.1]:%d" % receiver["selfsigned"], {
        "smtp_tls_security_level": "fingerprint", "smtp_tls_fingerprint_cert_match": good})
    assert any("status=deferred" in ln for ln in lines), lines


def test_obsolete_enforce_tls_is_verify(tmp_base, tls_agent, pki, receiver):
    lines = compare(tmp_base, tls_agent, "[127.0.0.1]:%d" % receiver["good"], {
        "smtp_tls_security_level": "", "smtp_enforce_tls": "yes", "smtp_tls_CAfile": pki.ca})
    assert any("Server certificate not verified" in ln for ln in lines), lines


def test_policy_table_overrides(tmp_base, tls_agent, pki, receiver):
    dest = "[127.0.0.1]:%d" % receiver["good"]
    compare(tmp_base, tls_agent, dest, {
        "smtp_tls_security_level": "may", "smtp_tls_CAfile": pki.ca,
        "smtp_tls_policy_maps": "inline:{ {%s = secure match=%s protocols=>=TLSv1.2} }"
                                % (dest, SERVER_NAME)})


# ---------------------------------------------------------------------------
# the scriptable peer: refused / broken STARTTLS, not offered, SNI, wrapper mode

def _peer_compare(tmp_base, tls_agent, pki, script_kw, main_cf, **kw):
    def run(sub, agent):
        peer = SmtpPeer(PeerScript(**script_kw), max_lifetime=200)
        peer.start()
        try:
            lines, q = deliver(os.path.join(tmp_base, sub), agent, peer.address, main_cf, **kw)
            return lines, q, peer.sessions
        finally:
            peer.stop()
    ours = run("agent", tls_agent)
    stock = run("stock", None)
    assert interesting(ours[0]) == interesting(stock[0]), "\nours:  %s\nstock: %s" % (
        "\n       ".join(ours[0]), "\n       ".join(stock[0]))
    return ours, stock


def test_may_refused_starttls_continues_in_plaintext(tmp_base, tls_agent, pki):
    ours, stock = _peer_compare(tmp_base, tls_agent, pki, dict(
        tls_cert=pki.cert("good"), tls_key=pki.key("good"),
        starttls_reply="454 4.7.0 TLS not available due to local problem"),
        {"smtp_tls_security_level": "may"})
    assert ours[2][0].messages and stock[2][0].messages


def test_encrypt_refused_and_not_offered(tmp_base, tls_agent, pki):
    _peer_compare(tmp_base, tls_agent, pki, dict(
        tls_cert=pki.cert("good"), tls_key=pki.key("good"),
        starttls_reply="454 4.7.0 TLS not available due to local problem"),
        {"smtp_tls_security_level": "encrypt"})
    _peer_compare(tmp_base, tls_agent, pki, dict(), {"smtp_tls_security_level": "encrypt"})


@pytest.mark.parametrize("how", ["drop", "garbage"])
def test_broken_handshake(tmp_base, tls_agent, pki, how):
    ours, stock = _peer_compare(tmp_base, tls_agent, pki, dict(
        tls_cert=pki.cert("good"), tls_key=pki.key("good"), tls_after_starttls=how),
        {"smtp_tls_security_level": "may"})
    assert [s.commands for s in ours[2]] == [s.commands for s in stock[2]]


def test_sni_and_wrapper_mode(tmp_base, tls_agent, pki):
    ours, stock = _peer_compare(tmp_base, tls_agent, pki, dict(
        tls_cert=pki.cert("good"), tls_key=pki.key("good")),
        {"smtp_tls_security_level": "may", "smtp_tls_servername": "sni.test.invalid"})
    assert ours[2][0].tls["sni"] == stock[2][0].tls["sni"] == "sni.test.invalid"
    ours, stock = _peer_compare(tmp_base, tls_agent, pki, dict(
        tls_cert=pki.cert("good"), tls_key=pki.key("good"), tls_wrapper=True),
        {"smtp_tls_security_level": "encrypt", "smtp_tls_wrappermode": "yes"})
    assert ours[2][0].tls and stock[2][0].tls
    assert ours[2][0].messages and stock[2][0].messages


def test_stage_timeouts_apply_inside_tls_like_stock(tmp_base, tls_agent, pki):
    """After STARTTLS the MAIL FROM timeout still applies when it equals the
    STARTTLS and EHLO ones: the peer holds its MAIL reply 20 s, both agents give up
    after 2 s (the agent once left the TLS stream without any timeout)."""
    from test_delivery import normalise_line, run_scenario
    script = dict(tls_cert=pki.cert("good"), tls_key=pki.key("good"), delay={"mail": 20})
    # STARTTLS, EHLO and MAIL FROM with one value (as with the 300 s defaults)
    cf = {"smtp_tls_security_level": "may", "smtp_mail_timeout": "2s",
          "smtp_starttls_timeout": "2s", "smtp_helo_timeout": "2s"}
    runs = {}
    for tag, agent in (("agent", tls_agent), ("stock", None)):
        t0 = time.monotonic()
        out = run_scenario(os.path.join(tmp_base, tag), agent, PeerScript(**script),
                           main_cf=cf, expect_empty=False)
        runs[tag] = (out, time.monotonic() - t0)
    lines = {tag: [normalise_line(x) for x in out.lines] for tag, (out, _t) in runs.items()}
    assert lines["agent"] == lines["stock"]
    assert [(d["status"], d["dsn"], d["reason"]) for d in lines["agent"]] == [
        ("deferred", "4.4.2", "conversation with 127.0.0.1[127.0.0.1] timed out while "
                              "sending MAIL FROM")]
    for tag, (out, _t) in runs.items():
        assert out.sessions[0].tls is not None, tag           # it was inside TLS
    assert runs["agent"][1] < 15, runs["agent"][1]              # 2 s, not the peer's 20 s
