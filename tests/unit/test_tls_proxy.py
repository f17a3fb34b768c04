"""tlsproxy(8) client: request lists, the TLS session summary, the blocking shell
against a fake tlsproxy on a UNIX-domain socket (SCM_RIGHTS hand-over)."""

import base64
import os
import socket
import tempfile
import threading

import pytest

from postfix_smtp.config.params import Params
from postfix_smtp.ipc.attr import encode
from postfix_smtp.scache import recv_fd
from postfix_smtp.tls import proxy
from postfix_smtp.tls.config import TlsConfig
from postfix_smtp.tls.policy import Policy

# The attribute names, in order, that tlsproxy(8) 3.7.11 reads with its strict
# reader (tls_proxy_client_param_scan, _init_scan, _start_scan; tlsproxy.c).
# Written out here, not taken from the module, so that a renamed or moved
# attribute fails this test as it would fail the real server.
STOCK_PARAM_NAMES = [
    "config_file", "config_name", "tls_high_cipherlist", "tls_medium_cipherlist",
    "tls_low_cipherlist", "tls_export_cipherlist", "tls_null_cipherlist",
    "tls_eecdh_auto_curves", "tls_eecdh_strong_curve", "tls_eecdh_ultra_curve",
    "tls_disable_workarounds", "tls_ssl_options", "tls_dane_digests", "tlsmgr_service_name",
    "tls_session_ticket_cipher", "tls_daemon_random_bytes", "tls_append_default_CA",
    "tls_legacy_public_key_fingerprints", "tls_preempt_cipherlist",
    "tls_wildcard_matches_multiple_labels"]
STOCK_INIT_NAMES = [
    "log_param", "log_level", "verifydepth", "cache_type", "chain_files", "cert_file",
    "key_file", "dcert_file", "dkey_file", "eccert_file", "eckey_file", "CAfile", "CApath",
    "mdalg"]
STOCK_START_NAMES = [
    "timeout", "tls_level", "nexthop", "host", "namaddr", "sni", "serverid", "helo",
    "protocols", "cipher_grade", "cipher_exclusions", "argv_size"]
STOCK_CONTEXT_NAMES = [
    "peer_CN", "issuer_CN", "peer_fingerprint", "peer_pubkey_fingerprint", "level",
    "peer_status", "cipher_protocol", "cipher_name", "cipher_usebits", "cipher_algbits",
    "key_exchange", "key_exchange_curve", "key_exchange_bits", "clnt_signature",
    "clnt_signature_curve", "clnt_signature_bits", "clnt_signature_digest",
    "srvr_signature", "srvr_signature_curve", "srvr_signature_bits",
    "srvr_signature_digest", "namaddr"]


def _cfg(**kw):
    params = Params({"compatibility_level": "3.6", "smtp_tls_CAfile": "/etc/ca.pem",
                     "smtp_tls_loglevel": "1",
                     "tls_high_cipherlist": "HIGH:X"})
    cfg = TlsConfig.from_params(params)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg, params


def _names(data: bytes):
    return [n for n, _v in proxy.split_pairs(data)]


def _request(policy, **kw):
    cfg, params = _cfg()
    args = dict(service="smtp", dest="[mx.example]:25", nexthop="mx.example",
                host="mx.example", addr="192.0.2.1", port=25,
                namaddrport="mx.example[192.0.2.1]:25", helo="mx.example", session_timeout=600)
    args.update(kw)
    return proxy.build_request(policy, cfg, params, **args)


# --- the request -------------------------------------------------------------------

def test_first_list_is_the_five_request_attributes():
    first, _second = _request(Policy(level=1, protocols=">=TLSv1", grade="medium"))
    assert proxy.split_pairs(first) == [
        ("remote_endpoint", "[192.0.2.1]:25"), ("flags", "6"),   # client role | send context
        ("timeout", "300"), ("timeout", "600"), ("serverid", "smtp")]


def test_second_list_names_and_order_are_stocks():
    _first, second = _request(Policy(level=1, protocols=">=TLSv1", grade="medium"))
    assert _names(second) == (STOCK_PARAM_NAMES + STOCK_INIT_NAMES + STOCK_START_NAMES
                              + ["mdalg", "dane"])


def test_values_come_from_the_configuration():
    pol = Policy(level=7, protocols=">=TLSv1.2", grade="high", exclusions="aNULL",
                 sni="hostname", matchargv=["nexthop", "dot-nexthop"])
    req = proxy.decode_request(*_request(pol))
    assert req["params"]["config_file"] == "default"
    assert req["params"]["tls_high_cipherlist"] == "HIGH:X"           # main.cf, not default
    assert req["params"]["tls_daemon_random_bytes"] == "32"
    assert req["params"]["tls_append_default_CA"] == "0"
    assert req["params"]["tls_wildcard_matches_multiple_labels"] == "1"
    assert req["init"] == {
        "log_param": "smtp_tls_loglevel", "log_level": "1", "verifydepth": "9",
        "cache_type": "smtp", "chain_files": "", "cert_file": "", "key_file": "",
        "dcert_file": "", "dkey_file": "", "eccert_file": "", "eckey_file": "",
        "CAfile": "/etc/ca.pem", "CApath": "", "mdalg": "sha256"}
    assert req["start"] == {
        "timeout": "300", "tls_level": "7", "nexthop": "mx.example", "host": "mx.example",
        "namaddr": "mx.example[192.0.2.1]:25", "sni": "hostname",
        "serverid": "smtp&[mx.example]:25&mx.example&192.0.2.1&", "helo": "mx.example",
        "protocols": ">=TLSv1.2", "cipher_grade": "high", "cipher_exclusions": "aNULL",
        "mdalg": "sha256"}
    assert req["match"] == ["nexthop", "dot-nexthop"]
    assert req["dane"] is None


def test_lmtp_names_its_own_parameters():
    params = Params({"lmtp_tls_loglevel": "2"}, prefix="lmtp", service_name="lmtp")
    cfg = TlsConfig.from_params(params, personality="lmtp")
    init = dict(proxy.init_props(cfg))
    assert init["log_param"] == "lmtp_tls_loglevel" and init["log_level"] == "2"
    assert init["cache_type"] == "lmtp"


def test_serverid_base64_encodes_a_field_with_the_delimiter():
    assert proxy.serverid("smtp", "a&b", "", "192.0.2.1") == (
        "smtp&" + base64.b64encode(b"a&b").decode() + "&&192.0.2.1&")


def test_fingerprint_level_sends_private_use_records_last_first():
    a, b = b"\x01" * 32, b"\x02" * 32
    req = proxy.decode_request(*_request(Policy(level=3, fingerprints=[a, b])))
    assert req["dane"] == ("", [(3, 1, 255, b), (3, 0, 255, b), (3, 1, 255, a),
                                (3, 0, 255, a)])
    assert req["match"] == []


def test_dane_levels_send_base_domain_and_records():
    recs = [(3, 1, 1, b"\xaa" * 32), (2, 0, 1, b"\xbb" * 32)]
    req = proxy.decode_request(*_request(Policy(level=5, tlsa=recs,
                                                dane_base_domain="example.org",
                                                matchargv=["example.org", "mx.example.org"])))
    assert req["dane"] == ("example.org", recs)
    assert req["match"] == ["example.org", "mx.example.org"]


def _pem(label: str, data: bytes) -> str:
    b = base64.b64encode(data).decode()
    return "-----BEGIN %s-----\n%s\n-----END %s-----\n" % (
        label, "\n".join(b[i:i + 64] for i in range(0, len(b), 64)), label)


def test_trust_anchor_files_become_ta_and_ee_records(tmp_path):
    f1 = tmp_path / "ta1.pem"
    f1.write_text(_pem("CERTIFICATE", b"cert-one" * 20) + _pem("PRIVATE KEY", b"k")
                  + _pem("PUBLIC KEY", b"spki" * 10))
    f2 = tmp_path / "ta2.pem"
    f2.write_text(_pem("CERTIFICATE", b"cert-two"))
    req = proxy.decode_request(*_request(Policy(level=7, tafiles=[str(f1), str(f2)],
                                                matchargv=["hostname"])))
    assert req["dane"] == ("", [
        (3, 0, 0, b"cert-two"), (2, 0, 0, b"cert-two"),
        (3, 1, 0, b"spki" * 10), (2, 1, 0, b"spki" * 10),
        (3, 0, 0, b"cert-one" * 20), (2, 0, 0, b"cert-one" * 20)])
    # a trust anchor file at a level that does not use it sends nothing
    assert proxy.decode_request(*_request(Policy(level=2, tafiles=[str(f1)])))["dane"] is None


def test_unreadable_trust_anchor_file_is_an_error(tmp_path):
    with pytest.raises(proxy.ProxyError, match="error opening trust anchor file"):
        proxy.trust_anchor_records([str(tmp_path / "missing.pem")])
    (tmp_path / "empty.pem").write_text("nothing here\n")
    with pytest.raises(proxy.ProxyError, match="no trust anchors found"):
        proxy.trust_anchor_records([str(tmp_path / "empty.pem")])


# --- the TLS session summary ----------------------------------------------------------

def _ctx(**kw):
    v = dict(peer_CN="mx.test.invalid", issuer_CN="Test Intermediate CA",
             peer_fingerprint="AA:BB", peer_pubkey_fingerprint="CC:DD", level=7,
             peer_status=proxy.CERT_PRESENT | proxy.CERT_TRUSTED | proxy.CERT_MATCHED
             | proxy.CERT_SECURED,
             cipher_protocol="TLSv1.3", cipher_name="TLS_AES_256_GCM_SHA384",
             cipher_usebits=256, cipher_algbits=256, key_exchange="X25519",
             srvr_signature="RSA-PSS", srvr_signature_bits=2048, srvr_signature_digest="SHA256",
             namaddr="127.0.0.1[127.0.0.1]:2525")
    v.update(kw)
    return proxy.TlsContext(**v)


def test_summary_lines_as_stock_logs_them():
    c = _ctx()
    assert c.summary_line() == (
        "Verified TLS connection established to 127.0.0.1[127.0.0.1]:2525: TLSv1.3 with "
        "cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature "
        "RSA-PSS (2048 bits) server-digest SHA256")
    assert c.summary_line(reused=True).startswith("Verified TLS connection reused to ")
    assert _ctx(peer_status=proxy.CERT_PRESENT | proxy.CERT_TRUSTED).summary.startswith(
        "Trusted TLS")
    assert _ctx(peer_status=proxy.CERT_PRESENT).summary.startswith("Untrusted TLS")
    assert _ctx(peer_status=0).summary.startswith("Anonymous TLS")
    # TLS 1.2 with finite-field DH, a curve-based server signature, a client signature
    c = _ctx(cipher_protocol="TLSv1.2", cipher_name="DHE-RSA-AES256-GCM-SHA384",
             key_exchange="DHE", key_exchange_bits=2048, srvr_signature="ECDSA",
             srvr_signature_curve="prime256v1", srvr_signature_bits=256,
             srvr_signature_digest="", clnt_signature="RSA", clnt_signature_bits=2048,
             clnt_signature_digest="SHA256")
    assert c.summary.endswith("(256/256 bits) key-exchange DHE (2048 bits) server-signature "
                              "ECDSA (prime256v1) client-signature RSA (2048 bits) "
                              "client-digest SHA256")


def test_matched_and_level_decide_certificate_checks():
    assert _ctx().matched and _ctx().level == 7
    assert not _ctx(peer_status=proxy.CERT_PRESENT | proxy.CERT_TRUSTED).matched


def test_context_from_pairs_is_strict():
    pairs = [(n, str(v)) for n, v in _ctx().pairs()]
    assert [n for n, _v in pairs] == STOCK_CONTEXT_NAMES
    assert proxy.TlsContext.from_pairs(pairs) == _ctx()
    with pytest.raises(proxy.ProxyError):
        proxy.TlsContext.from_pairs(pairs[:-1])                      # missing
    with pytest.raises(proxy.ProxyError):
        proxy.TlsContext.from_pairs(pairs + [("extra", "1")])        # extra
    swapped = list(pairs)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    with pytest.raises(proxy.ProxyError):
        proxy.TlsContext.from_pairs(swapped)                         # order
    bad = list(pairs)
    bad[4] = ("level", "seven")
    with pytest.raises(proxy.ProxyError):
        proxy.TlsContext.from_pairs(bad)                             # not a number


def test_plain_form_round_trip_and_endpoint_properties():
    text = _ctx().to_plain()
    assert text.startswith("peer_CN=mx.test.invalid\nissuer_CN=Test Intermediate CA\n")
    assert text.endswith("namaddr=127.0.0.1[127.0.0.1]:2525\n\n")
    assert proxy.TlsContext.from_plain(text) == _ctx()
    head = "tls_level=7\nreuse_count=1\nendpoint_features=1\nexpire_time=9\n\n"
    assert proxy.split_endpoint_props(head + text) == (head, text)
    assert proxy.split_endpoint_props(head) == (head, "")
    assert proxy.cached_context(7, text) == _ctx()
    assert proxy.cached_context(1, text) == _ctx()        # "may": there when TLS was used
    assert proxy.cached_context(1, "") is None            # "may" in plaintext
    assert proxy.cached_context(0, "") is None
    with pytest.raises(proxy.ProxyError):
        proxy.cached_context(2, "")                       # "encrypt" without TLS: bad entry
    with pytest.raises(proxy.ProxyError):
        proxy.cached_context(7, text.replace("level=7", "level=x"))
    with pytest.raises(proxy.ProxyError):
        _ctx(peer_CN="a\nb").to_plain()


def test_list_end_and_split_pairs():
    data = encode([("a", "1"), ("b", "")]) + b"220 hi\r\n"
    end = proxy.list_end(data)
    assert data[end:] == b"220 hi\r\n"
    assert proxy.split_pairs(data[:end]) == [("a", "1"), ("b", "")]
    for i in range(end):
        assert proxy.list_end(data[:i]) is None
    assert proxy.list_end(b"\0") == 1                     # an empty list
    with pytest.raises(proxy.ProxyError):
        proxy.split_pairs(b"a\0")


# --- the blocking shell against a fake tlsproxy -------------------------------------------

class Log:
    def __init__(self):
        self.lines = []

    def info(self, text):
        self.lines.append(("info", text))

    def warning(self, text):
        self.lines.append(("warning", text))


class FakeProxy:
    """Speaks tlsproxy's side: announce, read two lists (checked the way the
    strict readers do), answer ``status``, receive the descriptor, then send
    ``after`` (a context list, SMTP bytes) over the same stream."""

    def __init__(self, path, ready=1, after=b"", close_before_fd=False, hangup=False):
        self.path = path
        self.hangup = hangup
        self.ready = ready
        self.after = after
        self.close_before_fd = close_before_fd
        self.request = None
        self.fd_data = None
        self.error = None
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.listener.settimeout(10)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            conn, _ = self.listener.accept()
            conn.settimeout(10)
            with conn:
                conn.sendall(encode([("protocol", "tlsproxy_protocol")]))
                buf = b""
                lists = []
                while len(lists) < 2:
                    end = proxy.list_end(buf)
                    if end is None:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                        continue
                    lists.append(buf[:end])
                    buf = buf[end:]
                self.request = proxy.decode_request(*lists)
                conn.sendall(encode([("status", self.ready)]))
                if not self.ready or self.close_before_fd:
                    return
                fd = recv_fd(conn)
                with socket.socket(fileno=fd) as tcp:
                    tcp.sendall(b"via the passed descriptor")
                    self.fd_data = True
                conn.sendall(self.after)
                if not self.hangup:
                    conn.recv(1)       # until the client closes
        except Exception as exc:       # reported by the test
            self.error = exc
        finally:
            self.listener.close()


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="tlsproxy-unit-")
    yield d
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    os.rmdir(d)


def _start(path, log, policy=None):
    cfg, params = _cfg()
    a, b = socket.socketpair()
    got = proxy.start(a, policy or Policy(level=1, protocols=">=TLSv1", grade="medium"), cfg,
                      params, service="smtp", dest="[127.0.0.1]:2525", nexthop="127.0.0.1",
                      host="127.0.0.1", addr="127.0.0.1", port=2525,
                      namaddrport="127.0.0.1[127.0.0.1]:2525", helo="peer.test.invalid",
                      session_timeout=600, log=log, path=path)
    a.close()
    return got, b


def test_handover_context_and_the_bytes_after_it(sockdir):
    path = os.path.join(sockdir, "tlsproxy")
    ctx = _ctx()
    fake = FakeProxy(path, after=encode(ctx.pairs()) + b"220 mx ESMTP\r\n")
    log = Log()
    got, server_end = _start(path, log)
    try:
        assert got is not None, log.lines
        psock, rctx, rest = got
        assert rctx == ctx
        data = rest
        psock.settimeout(5)
        while not data.endswith(b"\r\n"):
            data += psock.recv(100)
        assert data == b"220 mx ESMTP\r\n"
        server_end.settimeout(5)
        assert server_end.recv(100) == b"via the passed descriptor"   # the TCP socket itself
        assert log.lines == [("info", ctx.summary_line())]
        psock.close()
    finally:
        server_end.close()
        fake.thread.join(10)
    assert fake.error is None
    assert fake.request["request"][0] == ("remote_endpoint", "[127.0.0.1]:2525")
    assert fake.request["start"]["helo"] == "peer.test.invalid"


def test_engine_not_available(sockdir):
    path = os.path.join(sockdir, "tlsproxy")
    fake = FakeProxy(path, ready=0)
    log = Log()
    got, server_end = _start(path, log)
    server_end.close()
    fake.thread.join(10)
    assert got is None
    assert log.lines == [("warning", '%s service role "client" is not available' % path)]


def test_no_service(sockdir):
    log = Log()
    path = os.path.join(sockdir, "nothing")
    got, server_end = _start(path, log)
    server_end.close()
    assert got is None
    assert log.lines == [("warning", "connect to %s service: No such file or directory" % path)]


def test_failed_handshake_ends_the_stream(sockdir):
    path = os.path.join(sockdir, "tlsproxy")
    fake = FakeProxy(path, hangup=True)      # descriptor taken, then the stream is closed
    log = Log()
    got, server_end = _start(path, log)
    server_end.close()
    fake.thread.join(10)
    assert got is None and log.lines == []    # stock: "Cannot start TLS: handshake failure"
    assert fake.error is None and fake.fd_data


def test_malformed_context_is_a_failed_handshake(sockdir):
    path = os.path.join(sockdir, "tlsproxy")
    pairs = _ctx().pairs()
    fake = FakeProxy(path, after=encode(pairs[1:]), hangup=True)      # peer_CN missing
    log = Log()
    got, server_end = _start(path, log)
    server_end.close()
    fake.thread.join(10)
    assert got is None and log.lines == []


def test_a_request_that_cannot_be_encoded_is_no_tls_session(sockdir):
    """A server EHLO name with a NUL byte cannot travel in the attribute
    stream: no TLS session (the caller defers), not an escaping AttrError."""
    log = Log()
    cfg, params = _cfg()
    a, b = socket.socketpair()
    try:
        got = proxy.start(a, Policy(level=1, protocols=">=TLSv1", grade="medium"), cfg, params,
                          service="smtp", dest="[127.0.0.1]:2525", nexthop="127.0.0.1",
                          host="127.0.0.1", addr="127.0.0.1", port=2525,
                          namaddrport="127.0.0.1[127.0.0.1]:2525", helo="bad\0helo",
                          session_timeout=600, log=log,
                          path=os.path.join(sockdir, "tlsproxy"))
    finally:
        a.close()
        b.close()
    assert got is None
    assert len(log.lines) == 1 and log.lines[0][0] == "warning"
    assert log.lines[0][1].startswith("tlsproxy request: NUL byte")
