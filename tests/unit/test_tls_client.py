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
    cfg.setdefault("log_mask", C.LOG_SUMMARY)
    c = C.TlsConfig(level=C.level_lookup(level), **cfg)
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
            "postfix_smtp.tls.config, postfix_smtp.tls.names, postfix_smtp.tls.dump; "
            "print('OpenSSL' in sys.modules)" % REPO)
    out = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, check=True)
    assert out.stdout.strip() == b"False"


# ---------------------------------------------------------------------------
# smtp_tls_loglevel 2-4: OpenSSL's states, packet dumps, plaintext


def test_dump_lines_in_stock_layout():
    from postfix_smtp.tls.dump import hex_lines
    # lines as stock smtp(8) 3.7 logged these bytes
    assert hex_lines(bytes.fromhex("160303007a")) == [
        "0000 16 03 03 00 7a                                   ....z"]
    assert hex_lines(bytes.fromhex("17030300136ca94864b859adb2a1e446b22ed5e98494" "2be4")) == [
        "0000 17 03 03 00 13 6c a9 48|64 b8 59 ad b2 a1 e4 46  .....l.H d.Y....F",
        "0010 b2 2e d5 e9 84 94 2b e4|                         ......+. "]
    assert hex_lines(b"this ") == [
        "0000 74 68 69 73                                      this",
        "0004 - <SPACES/NULLS>"]
    assert hex_lines(b"QUIT\r\n250 ok hello world") == [
        "0000 51 55 49 54 0d 0a 32 35|30 20 6f 6b 20 68 65 6c  QUIT..25 0 ok hel",
        "0010 6c 6f 20 77 6f 72 6c 64|                         lo world "]
    assert hex_lines(b"\0\0 \0") == ["0000 - <SPACES/NULLS>"]
    assert hex_lines(b"") == []
    assert hex_lines(bytes(range(0x7d, 0x82))) == [
        "0000 7d 7e 7f 80 81                                   }~..."]


def test_transfer_and_plaintext_lines():
    from postfix_smtp.tls.dump import chars_line, io_line
    assert io_line(False, 0x55D0C45ABC30, 0x55D0C45B2413, 5, 5) == \
        "read from 55D0C45ABC30 [55D0C45B2413] (5 bytes => 5 (0x5))"
    assert io_line(False, 0x55D0C45ABC30, 0x55D0C45B2418, 1673, 1673) == \
        "read from 55D0C45ABC30 [55D0C45B2418] (1673 bytes => 1673 (0x689))"
    assert io_line(False, 0x1234, 0xABCD, 5, -1) == "read from 00001234 [0000ABCD] (5 bytes => -1)"
    assert io_line(True, 0x1234, 0xABCD, 24, 0) == "write to 00001234 [0000ABCD] (24 bytes => 0)"
    assert chars_line(True, b"EHLO sender.test.invalid\r\n") == \
        "Write 26 chars: EHLO sender.test.invalid\r\n"
    long = b"250-mx.test.invalid\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
    assert chars_line(False, long) == "Read %d chars: %s" % (len(long), long[:40].decode())
    assert chars_line(False, b"ab\0cd") == "Read 5 chars: ab"


def test_info_callback_texts():
    from postfix_smtp.tls.dump import info_text
    connect_loop, connect_exit = 0x1001, 0x1002
    assert info_text(connect_loop, 1, "SSLv3/TLS write client hello") == \
        "SSL_connect:SSLv3/TLS write client hello"
    assert info_text(0x4008, 2 << 8 | 40, "x") == "SSL3 alert write:fatal:handshake failure"
    assert info_text(0x4004, 1 << 8 | 112, "x") == "SSL3 alert read:warning:unrecognized name"
    assert info_text(0x4004, 2 << 8 | 116, "x") == "SSL3 alert read:fatal:unknown"
    assert info_text(0x4008, 1 << 8 | 0, "x") is None            # close notify
    assert info_text(connect_exit, 0, "error") == "SSL_connect:failed in error"
    assert info_text(connect_exit, -1, "error", lambda: 1) == "SSL_connect:error in error"
    assert info_text(connect_exit, -1, "TLSv1.3 read encrypted extensions", lambda: 2) is None
    assert info_text(connect_exit, 1, "SSL negotiation finished successfully") is None


def _dumped(lines: list) -> list:
    """[(read|write, asked, moved, bytes)] from "info: " log lines, every
    dump checked against the byte count on its I/O line."""
    import re
    io = re.compile(r"^info: (read from|write to) [0-9A-F]{8,} \[[0-9A-F]{8,}\] "
                    r"\((\d+) bytes => (-?\d+)(?: \(0x[0-9A-F]+\))?\)$")
    out = []
    for k, ln in enumerate(lines):
        m = io.match(ln)
        if not m:
            continue
        moved = int(m.group(3))
        data = b""
        j = k + 1
        while j < len(lines) and re.match(r"info: [0-9a-f]{4} ", lines[j]):
            row = lines[j][6:]
            if row.endswith("<SPACES/NULLS>"):
                assert int(row[:4], 16) == len(data) < moved
                data += b"\0" * (moved - len(data))
            else:
                assert int(row[:4], 16) == len(data)
                data += bytes.fromhex(row[5:53].replace("|", " "))
            j += 1
        assert len(data) == max(moved, 0), ln
        out.append(("read" if m.group(1) == "read from" else "write", int(m.group(2)), moved,
                    data))
    return out


def _split(lines: list) -> tuple:
    k = [i for i, ln in enumerate(lines) if "TLS connection established" in ln][0]
    return lines[:k], lines[k:]


def test_loglevel_below_3_keeps_the_socket_bio(pki):
    for level in ("1", "2"):
        t, log, _ = starttls(pki, "good", "may", log_mask=C.log_mask(level))
        assert t._wire is None and t._conn._into_ssl is None
        assert not _dumped(log.lines)
        states = [ln for ln in log.lines if ln.startswith("info: SSL_connect:")]
        assert bool(states) == (level == "2")
        assert (log.lines[0] == "info: initializing the client-side TLS engine") == \
            (level == "2")
    assert states[:2] == ["info: SSL_connect:before SSL initialization",
                          "info: SSL_connect:SSLv3/TLS write client hello"]


def test_loglevel_3_dumps_the_handshake_only(pki):
    t, log, _ = starttls(pki, "good", "may", log_mask=C.log_mask("3"))
    assert t._wire is None and t._conn._socket is not None       # back on the socket BIO
    hs, rest = _split(log.lines)
    io = _dumped(hs)
    assert io[0][0] == "write" and io[0][3][:1] == b"\x16" and io[0][3][5:6] == b"\x01"
    reads = [x for x in io if x[0] == "read" and x[2] > 0]     # not the "=> -1" ones
    assert [x[1] for x in reads[:2]] == [5, reads[0][3][3] << 8 | reads[0][3][4]]
    assert io[-1][0] == "write"                                  # the client's Finished
    # what OpenSSL flushed is logged before the state it then enters, as in stock
    first_write = [i for i, ln in enumerate(hs) if ln.startswith("info: write to")][0]
    assert first_write < hs.index("info: SSL_connect:SSLv3/TLS write client hello")
    assert hs.index("info: SSL_connect:before SSL initialization") < first_write
    assert not _dumped(rest) and not any(" chars: " in ln for ln in log.lines)
    assert "info: SSL_connect:SSL negotiation finished successfully" in rest


def test_loglevel_4_dumps_everything(pki):
    t, log, _ = starttls(pki, "good", "may", log_mask=C.log_mask("ssl-developer"))
    hs, rest = _split(log.lines)
    assert _dumped(hs)
    assert rest[1] == "info: Write 6 chars: QUIT\r\n"
    io = _dumped(rest)
    assert io[0][0] == "write" and io[0][2] == 6 + 22          # one TLS 1.3 record
    assert [ln for ln in rest if " chars: " in ln][-1] == "info: Read 15 chars: 221 2.0.0 Bye\r\n"
    assert io[-1][0] == "write" and io[-1][2] == 24            # close_notify at close()
    assert all(x[3][:1] == b"\x17" for x in io if x[0] == "read" and x[1] == 5 and x[2] > 0)


def test_loglevel_3_failed_handshakes(pki):
    from postfix_smtp.tls import client
    mask = C.log_mask("3")
    exc, log, _ = starttls(pki, "good", "may", log_mask=mask, script=PeerScript(
        tls_cert=pki.cert("good"), tls_key=pki.key("good"), tls_after_starttls="garbage"))
    assert isinstance(exc, client.TlsError)
    last = _dumped(log.lines)[-1]
    assert last[:3] == ("read", 5, 5) and last[3][:4] == b"this"
    assert log.lines[-3:-1] == ["info: SSL_connect:error in error",
                                "info: SSL_connect error to mx.test.invalid[127.0.0.1]:25: -1"]
    exc, log, _ = starttls(pki, "good", "may", log_mask=mask, script=PeerScript(
        tls_cert=pki.cert("good"), tls_key=pki.key("good"), tls_after_starttls="drop"))
    assert isinstance(exc, client.TlsError)
    last = _dumped(log.lines)[-1]
    assert last[2] in (0, -1)                   # EOF, or a reset when the write came late
    assert log.lines[-1].startswith("info: SSL_connect error to mx.test.invalid[127.0.0.1]:25: ")
    t0 = time.monotonic()
    exc, log, _ = starttls(pki, "good", "may", log_mask=mask, starttls_timeout=1,
                           script=PeerScript(tls_cert=pki.cert("good"), tls_key=pki.key("good"),
                                             tls_after_starttls="hang"))
    assert time.monotonic() - t0 < 10
    assert _dumped(log.lines)[-1][:3] == ("read", 5, -1)
    assert log.lines[-1] == ("info: SSL_connect error to mx.test.invalid[127.0.0.1]:25: "
                             "Connection timed out")


def test_wire_reads_headers_then_bodies_and_logs_pieces():
    """The wire asks the socket for what OpenSSL's record layer would: 5
    header bytes, then the record's body; a piece is logged as it comes."""
    from OpenSSL import SSL
    from OpenSSL._util import ffi, lib
    from postfix_smtp.tls import client
    a, b = socket.socketpair()
    conn = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    log = Log()
    w = client._Wire(conn, a, log, 0.2)
    a.settimeout(0)
    try:
        b.sendall(b"\x16\x03")
        w.fill()
        b.sendall(b"\x03\x00\x04" + b"ab")
        w.fill()
        w.fill()
        b.sendall(b"cd")
        w.fill()
        lines = [ln for ln in log.lines if " bytes => " in ln]
        assert [ln.split("] ", 1)[1] for ln in lines] == [
            "(5 bytes => 2 (0x2))", "(3 bytes => 3 (0x3))", "(4 bytes => 2 (0x2))",
            "(2 bytes => 2 (0x2))"]
        addrs = [int(ln.split("[")[1].split("]")[0], 16) for ln in lines]
        assert addrs[1] - addrs[0] == 2 and addrs[2] - addrs[0] == 5 and addrs[3] - addrs[0] == 7
        buf = ffi.new("unsigned char[]", 64)
        n = lib.BIO_read(conn._into_ssl, buf, 64)
        assert ffi.buffer(buf, n)[:] == b"\x16\x03\x03\x00\x04abcd"
        log.lines.clear()
        w.fill()                                 # nothing there: "-1", wait, time out
        assert log.lines == [log.lines[0]] and log.lines[0].endswith("(5 bytes => -1)")
        assert w.error == client.errno.ETIMEDOUT
        with pytest.raises(socket.timeout):
            w.check()
        # what OpenSSL writes goes out in one piece per flush
        w2 = client._Wire(conn, a, log, 1)
        log.lines.clear()
        lib.BIO_write(conn._from_ssl, b"\x15\x03\x03\x00\x02\x01\x00", 7)
        w2.flush()
        assert b.recv(100) == b"\x15\x03\x03\x00\x02\x01\x00"
        assert log.lines[0].endswith("(7 bytes => 7 (0x7))")
        assert log.lines[1:] == ["info: 0000 15 03 03 00 02 01" + " " * 32 + "......",
                                 "info: 0006 - <SPACES/NULLS>"]
    finally:
        a.close()
        b.close()
