"""smtp_tls_loglevel 3 and 4 (TLS packet dumps), stock smtp(8) vs this agent.

The same delivery to Postfix's own smtpd (STARTTLS on loopback) runs once
through stock smtp(8) and once through the agent; the agent's log must have
the same lines in the same order: OpenSSL's handshake states
(``SSL_connect:...``), one ``read from``/``write to`` line per transfer with
the same byte counts, each followed by a well-formed hex/ASCII dump of
exactly that many bytes, and at level 4 the ``Read/Write N chars`` lines.
Level 3 dumps the handshake only; level 4 also the session after it, up to
the final close_notify.

What is normalised away: pointers (process-specific), the ``=> -1`` lines of
a non-blocking read or write that found the socket not ready (timing), the
dumped bytes themselves (random values, and the ClientHello's extensions
differ between OpenSSL builds; each dump is checked for consistency with
its byte count instead), the size of session-ticket records, and byte
counts after the handshake, which depend on queue IDs and dates in the
message (there the TLS overhead per written record must match instead).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time

import pytest

from postfix_smtp.testing.instance import PostfixInstance, port_open
from postfix_smtp.testing.peer import PeerScript, SmtpPeer
from postfix_smtp.testing.tlscerts import SERVER_NAME, make_pki
from test_tls import deliver

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IO = re.compile(r"^(read from|write to) ([0-9A-F]{8,}) \[([0-9A-F]{8,})\] "
                r"\((\d+) bytes => (-?\d+)(?: \(0x([0-9A-F]+)\))?\)$")
HEXROW = re.compile(r"^([0-9a-f]{4}) ((?:[0-9a-f]{2}[ |]|   ){16}) (.*)$")
SPACES = re.compile(r"^([0-9a-f]{4}) - <SPACES/NULLS>$")
CHARS = re.compile(r"^(Read|Write) (\d+) chars: (.*)$")
ESTABLISHED = "TLS connection established to "
TICKET_STATE = "SSL_connect:SSLv3/TLS read server session ticket"


@pytest.fixture(scope="module")
def receiver(pki):
    """Postfix smtpd with STARTTLS (the good certificate): its port."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    base = tempfile.mkdtemp(prefix="pfsmtp-rcv-", dir="/tmp")
    os.chmod(base, 0o755)
    inst = PostfixInstance(base, relayhost="[127.0.0.1]:9", myhostname=SERVER_NAME,
                           main_cf={"smtpd_tls_security_level": "may",
                                    "smtpd_tls_cert_file": pki.cert("good"),
                                    "smtpd_tls_key_file": pki.key("good"),
                                    "defer_transports": "smtp relay"},
                           max_lifetime=600, quick_start=True)
    inst.start()
    end = time.monotonic() + 15
    while time.monotonic() < end and not port_open(inst.smtpd_port):
        time.sleep(0.1)
    yield inst.smtpd_port
    inst.stop()
    if not os.environ.get("POSTFIX_SMTP_KEEP_TMP"):
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------
# reading a log: a list of events, every dump checked on the way


def _dump_bytes(rows: list, count: int, where: str) -> bytes:
    """The bytes a dump shows, after checking its layout against ``count``."""
    data = bytearray()
    cut = None
    for i, row in enumerate(rows):
        m = SPACES.match(row)
        if m:
            assert i == len(rows) - 1, "SPACES/NULLS line not last: %s" % where
            cut = int(m.group(1), 16)
            break
        m = HEXROW.match(row)
        assert m, "bad dump line %r (%s)" % (row, where)
        assert int(m.group(1), 16) == 16 * i, "dump offsets out of order: %s" % where
        cells = [m.group(2)[k:k + 3] for k in range(0, 48, 3)]
        got = bytes(int(c[:2], 16) for c in cells if c != "   ")
        n = len(got)
        assert n and all(c == "   " for c in cells[n:]), "ragged dump line %r" % row
        for k, c in enumerate(cells[:n]):
            assert c[2] == ("|" if k == 7 else " "), "bad separator in %r" % row
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in got)
        text = text[:8] + " " + text[8:] if n >= 8 else text
        assert m.group(3) == text, "ASCII column %r != %r" % (m.group(3), text)
        assert n == 16 or i == len(rows) - 1 or SPACES.match(rows[i + 1]), \
            "short dump line inside a dump: %s" % where
        data += got
    if cut is None:
        assert len(data) == count, "dump of %d bytes for %d (%s)" % (len(data), count, where)
        assert not data or data[-1] not in (0, 0x20), "unreported trailing NUL/space"
    else:
        assert cut == len(data) < count, "SPACES/NULLS at %d of %d (%s)" % (cut, count, where)
    return bytes(data)


def events(lines: list) -> list:
    """[("io", "read"/"write", asked, moved, bytes) | ("line", text)].

    Pointers, "=> -1" transfers and the rest of a read that came in
    pieces are folded away; queue IDs and ports in other lines too."""
    out = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        i += 1
        m = IO.match(ln)
        if not m:
            assert not HEXROW.match(ln) and not SPACES.match(ln), "stray dump line %r" % ln
            ln = re.sub(r"^[0-9A-F]{6,}: ", "QID: ", ln)
            ln = re.sub(r"\]:\d+", "]:PORT", ln)
            ln = re.sub(r"delay=[\d.]+, delays=[\d./]+", "delay=D", ln)
            ln = re.sub(r"queued as [0-9A-Za-z]+", "queued as QID", ln)
            ln = re.sub(r"fingerprint=[0-9A-F:]+", "fingerprint=FP", ln)
            out.append(("line", ln))
            continue
        kind = "read" if m.group(1) == "read from" else "write"
        asked, moved = int(m.group(4)), int(m.group(5))
        rows = []
        while i < len(lines) and (HEXROW.match(lines[i]) or SPACES.match(lines[i])):
            rows.append(lines[i])
            i += 1
        if moved <= 0:
            assert moved in (-1, 0) and m.group(6) is None and not rows, ln
            if moved < 0:
                continue                    # not ready: timing, not protocol
            out.append(("io", kind, asked, moved, b""))
            continue
        assert m.group(6) == "%X" % moved and moved <= asked, ln
        data = _dump_bytes(rows, moved, ln)
        prev = out[-1] if out else None
        if (prev and prev[0] == "io" and prev[1] == kind and prev[3] < prev[2]
                and asked == prev[2] - prev[3]):
            out[-1] = ("io", kind, prev[2], prev[3] + moved, prev[4] + data)   # the rest
        else:
            out.append(("io", kind, asked, moved, data))
    return out


def split_at_handshake(ev: list) -> tuple:
    for k, e in enumerate(ev):
        if e[0] == "line" and ESTABLISHED in e[1]:
            return ev[:k], ev[k:]
    raise AssertionError("no TLS connection established")


def shape(ev: list) -> list:
    """What must be the same in stock's log and ours."""
    hs, rest = split_at_handshake(ev)
    out = []
    for e in hs:
        if e[0] == "line" and e[1] == TICKET_STATE:
            # TLS 1.2 ticket inside the handshake: its size varies
            reads = [k for k, x in enumerate(out) if x[0] == "read"][-2:]
            for k in reads:
                out[k] = ("read", "N", "N")
        out.append(e[1:4] if e[0] == "io" else e)
    for e in rest:
        if e[0] == "io":
            out.append((e[1], "N", "N"))
        else:
            m = CHARS.match(e[1])
            out.append(("line", "%s N chars" % m.group(1)) if m else e)
    return out


def overheads(ev: list) -> list:
    """Record size minus plaintext size of every "Write N chars" that went
    out as one record."""
    out = []
    for k, e in enumerate(ev):
        m = CHARS.match(e[1]) if e[0] == "line" else None
        if m and m.group(1) == "Write" and k + 1 < len(ev) and ev[k + 1][0] == "io":
            out.append(ev[k + 1][3] - int(m.group(2)))
    return out


def both(tmp_base, agent, relayhost: str, main_cf: dict) -> tuple:
    ours, _ = deliver(os.path.join(tmp_base, "agent"), agent, relayhost, main_cf)
    stock, _ = deliver(os.path.join(tmp_base, "stock"), None, relayhost, main_cf)
    o, s = events(ours), events(stock)
    assert shape(o) == shape(s), "\nours:  %s\nstock: %s" % (
        "\n       ".join(map(str, shape(o))), "\n       ".join(map(str, shape(s))))
    return o, s


def ios(ev: list) -> list:
    return [e for e in ev if e[0] == "io"]


def _client_hello(e) -> bool:
    return e[1] == "write" and e[4][:1] == b"\x16" and e[4][5:6] == b"\x01"


# ---------------------------------------------------------------------------


def test_level3_dumps_the_handshake_only(tmp_base, tls_agent, receiver):
    o, s = both(tmp_base, tls_agent, "[127.0.0.1]:%d" % receiver,
                {"smtp_tls_security_level": "may", "smtp_tls_loglevel": "3"})
    for ev in (o, s):
        hs, rest = split_at_handshake(ev)
        assert _client_hello(ios(hs)[0])
        assert any(e[1] == "read" and e[2] == 5 and e[4][:1] == b"\x16" for e in ios(hs))
        assert any(e[0] == "line" and e[1].startswith("SSL_connect:") for e in hs)
        assert not ios(rest), "level 3 dumped after the handshake"
        assert not any(e[0] == "line" and CHARS.match(e[1]) for e in ev)
        assert any(e[0] == "line" and "status=sent" in e[1] for e in rest)


def test_level4_dumps_the_session(tmp_base, tls_agent, receiver):
    o, s = both(tmp_base, tls_agent, "[127.0.0.1]:%d" % receiver,
                {"smtp_tls_security_level": "may", "smtp_tls_loglevel": "4"})
    assert overheads(o) == overheads(s) and overheads(o)
    for ev in (o, s):
        hs, rest = split_at_handshake(ev)
        assert _client_hello(ios(hs)[0])
        assert ("line", "Write 26 chars: EHLO sender.test.invalid??") in rest
        assert any(e[0] == "line" and e[1].startswith("Read ") and " chars: 250-" in e[1]
                   for e in rest)
        # application data records, the last one the close_notify after the delivery
        assert all(e[4][:1] == b"\x17" for e in ios(rest) if e[2] == 5)
        sent = [k for k, e in enumerate(rest) if e[0] == "line" and "status=sent" in e[1]][0]
        assert ios(rest[sent:]) and ios(rest[sent:])[-1][1] == "write"


def test_tls12_dump_word_without_debug_lines(tmp_base, tls_agent, receiver):
    """"ssl-session-packet-dump" without "ssl-debug": dumps, no SSL_connect
    lines; TLS 1.2 (the client's last flight is one write)."""
    o, s = both(tmp_base, tls_agent, "[127.0.0.1]:%d" % receiver,
                {"smtp_tls_security_level": "may", "smtp_tls_protocols": "!TLSv1.3",
                 "smtp_tls_loglevel": "routine, ssl-session-packet-dump"})
    assert overheads(o) == overheads(s) and overheads(o)
    for ev in (o, s):
        hs, rest = split_at_handshake(ev)
        assert not any(e[0] == "line" and e[1].startswith("SSL_connect:") for e in ev)
        assert " TLSv1.2 with cipher " in rest[0][1]
        writes = [e for e in ios(hs) if e[1] == "write"]
        assert len(writes) == 2 and _client_hello(writes[0])
        assert ios(rest)


def test_level3_failed_handshake(tmp_base, tls_agent):
    """A server that answers the ClientHello with plain text: the 5 bytes
    OpenSSL read as a record header are dumped, then the failure."""
    pki_dir = tempfile.mkdtemp(prefix="pfsmtp-pki-", dir="/tmp")
    os.chmod(pki_dir, 0o755)
    pki = make_pki(pki_dir)
    try:
        def run(sub, agent):
            peer = SmtpPeer(PeerScript(tls_cert=pki.cert("good"), tls_key=pki.key("good"),
                                       tls_after_starttls="garbage"), max_lifetime=200)
            peer.start()
            try:
                lines, _ = deliver(os.path.join(tmp_base, sub), agent, peer.address,
                                   {"smtp_tls_security_level": "may",
                                    "smtp_tls_loglevel": "3"})
                return events(lines)
            finally:
                peer.stop()
        o, s = run("agent", tls_agent), run("stock", None)
        strip = [("line", "TLS library problem")]

        def comparable(ev):
            return [e[1:4] if e[0] == "io" else
                    strip[0] if "TLS library problem" in e[1] else e for e in ev]
        assert comparable(o) == comparable(s), "\nours:  %s\nstock: %s" % (o, s)
        for ev in (o, s):
            assert ("io", "read", 5, 5, b"this") in ev
            assert ("line", "SSL_connect:error in error") in ev
            assert any(e[0] == "line" and "Cannot start TLS: handshake failure" in e[1]
                       for e in ev)
    finally:
        shutil.rmtree(pki_dir, ignore_errors=True)
