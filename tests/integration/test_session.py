"""SMTP session fidelity with the stock smtp(8): the same commands on the wire and
the same outcome for PIX banners, XFORWARD, discarded EHLO keywords, odd replies."""

from __future__ import annotations

import os

from postfix_smtp.testing.peer import PeerScript
from test_delivery import normalise_line, normalise_wire, run_scenario


def _both(tmp_base, agent_wrapper, script, **kw):
    ours = run_scenario(os.path.join(tmp_base, "agent"), agent_wrapper, script(), **kw)
    stock = run_scenario(os.path.join(tmp_base, "stock"), None, script(), **kw)
    return ours, stock


def _same_wire(ours, stock):
    a = normalise_wire(ours.sessions[0].client_bytes)
    assert a == normalise_wire(stock.sessions[0].client_bytes)
    return a


def _info(outcome, needle):
    return [ln.split("]: ", 1)[1] for ln in outcome.all_log
            if "/smtp[" in ln and needle in ln]


def test_pix_banner_disables_esmtp(tmp_base, agent_wrapper):
    ours, stock = _both(tmp_base, agent_wrapper,
                        lambda: PeerScript(greeting="220 ******************************"))
    wire = _same_wire(ours, stock)
    assert wire.startswith(b"HELO mx.test.invalid\r\nMAIL FROM:<alice@src.test.invalid>\r\n")
    # delay_dotcrlf is dropped: the mail is younger than smtp_pix_workaround_threshold_time
    a = [ln.split(": ", 1)[1].rsplit(":", 1)[0] for ln in _info(ours, "enabling PIX workarounds")]
    b = [ln.split(": ", 1)[1].rsplit(":", 1)[0] for ln in _info(stock, "enabling PIX workarounds")]
    assert a == b and a[0].startswith("enabling PIX workarounds: disable_esmtp for 127.0.0.1[")


def test_xforward_sent_like_stock(tmp_base, agent_wrapper):
    ehlo = ["peer.test.invalid", "PIPELINING", "8BITMIME",
            "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE"]
    ours, stock = _both(tmp_base, agent_wrapper, lambda: PeerScript(ehlo_lines=ehlo),
                        main_cf={"smtp_send_xforward_command": "yes"}, via_smtp=True)
    a = ours.sessions[0].client_bytes
    b = stock.sessions[0].client_bytes
    pick = lambda w: [ln for ln in w.split(b"\r\n") if ln.startswith(b"XFORWARD")]  # noqa: E731
    xa, xb = pick(a), pick(b)
    assert len(xa) == 2
    norm = lambda lines: [b" ".join(p for p in ln.split() if not p.startswith((b"PORT=", b"IDENT=")))  # noqa: E731
                          for ln in lines]
    assert norm(xa) == norm(xb)
    assert xa[0].startswith(b"XFORWARD NAME=localhost ADDR=127.0.0.1 PORT=")
    assert b"PROTO=ESMTP HELO=client.test.invalid IDENT=" in xa[1] and xa[1].endswith(b" SOURCE=LOCAL")   # local rewrite context: client in mynetworks


def test_discarded_ehlo_keywords(tmp_base, agent_wrapper):
    ours, stock = _both(tmp_base, agent_wrapper, PeerScript,
                        main_cf={"smtp_discard_ehlo_keywords": "pipelining, dsn, silly"})
    wire = _same_wire(ours, stock)
    assert b"NOTIFY" not in wire and b"ORCPT" not in wire
    assert [t for d, t in ours.sessions[0].transcript][:6] == [
        t for d, t in stock.sessions[0].transcript][:6]           # lock-step, not pipelined
    assert _info(ours, "discarding EHLO keywords") == _info(stock, "discarding EHLO keywords")
    assert _info(ours, "discarding EHLO keywords") == ["discarding EHLO keywords: PIPELINING DSN"]


def test_250_to_data_is_a_protocol_error(tmp_base, agent_wrapper):
    ours, stock = _both(tmp_base, agent_wrapper, lambda: PeerScript(data_reply="250 2.0.0 what"),
                        expect_empty=True, wait_lines=2)
    first = lambda o: [normalise_line(ln) for ln in o.lines if "bob@" in ln][0]  # noqa: E731
    assert first(ours) == first(stock)
    assert first(ours)["dsn"] == "5.5.0" and first(ours)["reason"].startswith("Protocol error: host")


def test_multiline_greeting_and_ehlo_reply(tmp_base, agent_wrapper):
    def script():
        return PeerScript(greeting="220-peer.test.invalid hello\n220-more text\n220 ESMTP ready",
                          ehlo_reply="250-peer.test.invalid\n250-SIZE\n250-AUTH=LOGIN PLAIN\n"
                                     "250-8bitmime\n250 pipelining")
    ours, stock = _both(tmp_base, agent_wrapper, script)
    wire = _same_wire(ours, stock)
    assert b"MAIL FROM:<alice@src.test.invalid> SIZE=" in wire


def test_server_size_limit_bounces_like_stock(tmp_base, agent_wrapper):
    def script():
        return PeerScript(ehlo_lines=["peer.test.invalid", "PIPELINING", "SIZE 100", "8BITMIME"])
    ours, stock = _both(tmp_base, agent_wrapper, script, wait_lines=2)
    first = lambda o: [normalise_line(ln) for ln in o.lines if "bob@" in ln][0]  # noqa: E731
    assert first(ours) == first(stock)
    assert first(ours)["dsn"] == "5.3.4" and "exceeds size limit 100 of server" in first(ours)["reason"]
