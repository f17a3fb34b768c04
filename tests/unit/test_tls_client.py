"""The pyOpenSSL client against the scriptable peer's STARTTLS (no Postfix needed)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

pytest.importorskip("OpenSSL")

from postfix_smtp.testing.peer import PeerScript, SmtpPeer  # noqa: E402
from postfix_smtp.testing.tlscerts import SERVER_NAME, fingerprint, make_pki  # noqa: E402
from postfix_smtp.tls import config as C  # noqa: E402
from postfix_smtp.tls import policy as P  # noqa: E402


class Log:
    def __init__(self):
        self.lines = []

    def info(self, t):
        self.lines.append("info: " + t)

    def warning(self, t):
        self.lines.append("warning: " + t)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def starttls(pki, cert, level, script=None, log=None, match=None, **cfg):
    """EHLO, STARTTLS, handshake; returns (stream or exception, log, peer session)."""
    from postfix_smtp.tls import client
    script = script or PeerScript(tls_cert=pki.cert(cert), tls_key=pki.key(cert))
    log = log or Log()
    cfg.setdefault("CAfile", pki.ca)
    c = C.TlsConfig(level=C.level_lookup(level), log_mask=C.LOG_SUMMARY, **cfg)
    pol = P.PolicyResolver(c, log).resolve("example.test", SERVER_NAME, 25)
    if match is not None:
        pol.matchargv = match
    with SmtpPeer(script) as peer:
        s = socket.create_connection(("127.0.0.1", peer.port), timeout=10)
        f = s.makefile("rb")
        if not script.tls_wrapper:
            f.readline()
            s.sendall(b"EHLO client\r\n")
            while f.readline()[3:4] != b" ":
                pass
            s.sendall(b"STARTTLS\r\n")
            assert f.readline().startswith(b"220")
        try:
            t = client.start(s, pol, c, nexthop="example.test", host=SERVER_NAME,
                             namaddrport="%s[127.0.0.1]:25" % SERVER_NAME, log=log)
        except (client.TlsError, client.TlsEngineError) as exc:
            s.close()
            return exc, log, None
        t.settimeout(10)
        if script.tls_wrapper:
            assert t.recv(100).startswith(b"220")
        t.sendall(b"QUIT\r\n")
        reply = t.recv(100)
        assert reply.startswith(b"221")
        t.close()
        peer.wait_sessions(1, timeout=10)
        return t, log, peer.sessions[0]


def test_may_trusted_summary_line(pki):
    t, log, sess = starttls(pki, "good", "may")
    assert not t.matched and sess.tls["version"] == t.protocol
    line = log.lines[-1]
    assert line.startswith("info: Trusted TLS connection established to "
                           "mx.test.invalid[127.0.0.1]:25: TLSv1.3 with cipher ")
    assert "key-exchange X25519 server-signature RSA-PSS (2048 bits) server-digest SHA256" in line


def test_verify_match_and_failures(pki):
    t, log, _ = starttls(pki, "good", "verify")
    assert t.matched and log.lines[-1].startswith("info: Verified TLS connection")
    t, log, _ = starttls(pki, "wrongname", "verify")
    assert not t.matched
    assert log.lines[0] == ("info: server certificate verification failed for "
                            "mx.test.invalid[127.0.0.1]:25: num=62:hostname mismatch")
    assert log.lines[1].startswith("info: Untrusted TLS connection established")
    t, log, _ = starttls(pki, "expired", "verify")
    assert log.lines[0] == ("info: server certificate verification failed for "
                            "mx.test.invalid[127.0.0.1]:25: certificate has expired")
    t, log, _ = starttls(pki, "notyet", "verify")
    assert log.lines[0].endswith(": certificate not yet valid")
    t, log, _ = starttls(pki, "selfsigned", "secure", match=[SERVER_NAME])
    assert log.lines[0].endswith(": self-signed certificate")
    t, log, _ = starttls(pki, "untrusted", "verify")
    assert log.lines[0].endswith(": untrusted issuer /CN=Other Root CA")
    t, log, _ = starttls(pki, "good", "verify", CAfile="")
    assert log.lines[0].endswith(": untrusted issuer /O=postfix_smtp tests/CN=Test Root CA")


def test_encrypt_untrusted_no_verification_lines(pki):
    t, log, _ = starttls(pki, "selfsigned", "encrypt")
    assert [ln.split(" TLS")[0] for ln in log.lines] == ["info: Untrusted"]


def test_secure_dot_nexthop_and_wildcard(pki):
    t, _, _ = starttls(pki, "good", "secure", match=[".test.invalid"])
    assert t.matched
    t, _, _ = starttls(pki, "good", "secure", match=["x.wild.test.invalid"])
    assert t.matched
    t, _, _ = starttls(pki, "cnonly", "secure", match=[SERVER_NAME])
    assert t.matched


def test_fingerprint(pki):
    fp = fingerprint(pki.cert("selfsigned"))
    t, log, _ = starttls(pki, "selfsigned", "fingerprint", fingerprint_cert_match=fp)
    assert t.matched and log.lines[-1].startswith("info: Verified TLS")
    fp = fingerprint(pki.cert("selfsigned"), pkey=True).replace(":", "").lower()
    t, _, _ = starttls(pki, "selfsigned", "fingerprint", fingerprint_cert_match=fp)
    assert t.matched
    t, log, _ = starttls(pki, "selfsigned", "fingerprint",
                         fingerprint_cert_match=fingerprint(pki.cert("good")))
    assert not t.matched
    assert log.lines[0] == ("info: server certificate verification failed for "
                            "mx.test.invalid[127.0.0.1]:25: num=65:no matching DANE TLSA records")


def test_sni_and_wrapper(pki):
    t, _, sess = starttls(pki, "good", "may", servername="hostname")
    assert sess.tls["sni"] == SERVER_NAME
    t, _, sess = starttls(pki, "good", "encrypt", script=PeerScript(
        tls_cert=pki.cert("good"), tls_key=pki.key("good"), tls_wrapper=True))
    assert sess.tls is not None


def test_broken_handshakes(pki):
    from postfix_smtp.tls import client
    exc, log, _ = starttls(pki, "good", "may", script=PeerScript(
        tls_cert=pki.cert("good"), tls_key=pki.key("good"), tls_after_starttls="drop"))
    assert isinstance(exc, client.TlsError)
    assert log.lines == ["info: SSL_connect error to mx.test.invalid[127.0.0.1]:25: "
                         "lost connection"]
    exc, log, _ = starttls(pki, "good", "may", script=PeerScript(
        tls_cert=pki.cert("good"), tls_key=pki.key("good"), tls_after_starttls="garbage"))
    assert log.lines[0] == "info: SSL_connect error to mx.test.invalid[127.0.0.1]:25: -1"
    assert log.lines[1].startswith("warning: TLS library problem: error:0A00010B:SSL routines::"
                                   "wrong version number")
    t0 = time.monotonic()
    exc, log, _ = starttls(pki, "good", "may", starttls_timeout=1, script=PeerScript(
        tls_cert=pki.cert("good"), tls_key=pki.key("good"), tls_after_starttls="hang"))
    assert time.monotonic() - t0 < 10
    assert log.lines == ["info: SSL_connect error to mx.test.invalid[127.0.0.1]:25: "
                         "Connection timed out"]


def test_invalid_protocols_and_grade(pki):
    from postfix_smtp.tls import client
    exc, log, _ = starttls(pki, "good", "may", protocols="TLSv9")
    assert isinstance(exc, client.TlsError)
    assert log.lines == ['warning: mx.test.invalid[127.0.0.1]:25: Invalid TLS protocol list '
                         '"TLSv9": aborting TLS session']
    exc, log, _ = starttls(pki, "good", "may", ciphers="strong")
    assert log.lines == ['warning: mx.test.invalid[127.0.0.1]:25: invalid cipher grade: '
                         '"strong"']


def test_client_certificate_and_bad_key(pki):
    from postfix_smtp.tls import client
    t, _, _ = starttls(pki, "good", "may", chain_files=pki.chain_file("client"))
    assert t.protocol
    exc, log, _ = starttls(pki, "good", "may", cert_file=pki.cert("client"),
                           key_file=pki.key("good"))
    assert isinstance(exc, client.TlsEngineError)
    assert log.lines[0].startswith("warning: cannot get RSA private key from file") or \
        "does not match public key" in log.lines[0], log.lines


def test_openssl_is_not_imported_by_the_pure_modules():
    code = ("import sys; sys.path.insert(0, %r); import postfix_smtp.tls.policy, "
            "postfix_smtp.tls.config, postfix_smtp.tls.names; "
            "print('OpenSSL' in sys.modules)" % REPO)
    out = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, check=True)
    assert out.stdout.strip() == b"False"
