"""Reports through bounce(8)/trace(8): DSN SUCCESS notices, `sendmail -v`,
`sendmail -bv` — the notices that come back to the sender must be the ones
the stock smtp(8) produces."""

from __future__ import annotations

import os
import re

from postfix_smtp.testing.peer import PeerScript
from test_delivery import MESSAGE, RCPT, SENDER, normalise_line, run_scenario

NO_DSN = ["peer.test.invalid", "PIPELINING", "SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES"]


def _notices(outcome) -> list:
    """Messages the peer got with the null sender (the reports back to the sender)."""
    out = []
    for s in outcome.sessions:
        for env, msg in zip([e for e in s.envelopes if e.accepted], s.messages):
            if env.mail_from.startswith("MAIL FROM:<>"):
                out.append(msg.decode("utf-8", "replace"))
    return out


def _both(tmp_base, agent_wrapper, script, **kw):
    ours = run_scenario(os.path.join(tmp_base, "agent"), agent_wrapper, script(), **kw)
    stock = run_scenario(os.path.join(tmp_base, "stock"), None, script(), **kw)
    return ours, stock


def _fields(notice: str) -> dict:
    keys = ("Action", "Status", "Remote-MTA", "Diagnostic-Code", "Final-Recipient")
    return {k: m.group(1).strip() for k in keys
            for m in [re.search(r"^%s: (.*)$" % k, notice, re.M)] if m}


def test_dsn_success_notice_relayed_like_stock(tmp_base, agent_wrapper):
    def script():
        return PeerScript(ehlo_lines=NO_DSN)
    kw = dict(wait_lines=2)
    ours = run_scenario(os.path.join(tmp_base, "a"), agent_wrapper, script(),
                        sendmail_args=["-N", "success"], **kw)
    stock = run_scenario(os.path.join(tmp_base, "s"), None, script(),
                         sendmail_args=["-N", "success"], **kw)
    for o in (ours, stock):
        notes = _notices(o)
        assert len(notes) == 1, [s.envelopes for s in o.sessions]
        assert "Successful Mail Delivery Report" in notes[0]
    assert _fields(_notices(ours)[0]) == _fields(_notices(stock)[0])
    f = _fields(_notices(ours)[0])
    assert f["Action"] == "relayed" and f["Status"] == "2.0.0"
    assert f["Diagnostic-Code"] == "smtp; 250 2.0.0 Ok: queued as PEER"


def test_dsn_success_passed_on_when_server_has_dsn(tmp_base, agent_wrapper):
    o = run_scenario(tmp_base, agent_wrapper, PeerScript(), sendmail_args=["-N", "success"])
    assert b"NOTIFY=SUCCESS" in o.sessions[0].client_bytes
    assert not _notices(o)          # the remote side now owns the success notice


def test_sendmail_v_record_report(tmp_base, agent_wrapper):
    ours, stock = _both(tmp_base, agent_wrapper, PeerScript, sendmail_args=["-v"], wait_lines=2)
    for o in (ours, stock):
        notes = _notices(o)
        assert len(notes) == 1
        assert "Mail Delivery Status Report" in notes[0]
        assert "delivery via 127.0.0.1[127.0.0.1]:" in notes[0]
    assert _fields(_notices(ours)[0]) == _fields(_notices(stock)[0])


def test_sendmail_bv_sends_no_data_and_reports(tmp_base, agent_wrapper):
    ours, stock = _both(tmp_base, agent_wrapper, PeerScript, sendmail_args=["-bv"])
    for o in (ours, stock):
        probe = o.sessions[0].client_bytes
        assert b"RCPT TO:<bob@dest.test.invalid>" in probe
        assert b"DATA\r\n" not in probe and b"RSET\r\n" in probe
        notes = _notices(o)
        assert len(notes) == 1 and "Mail Delivery Status Report" in notes[0]
    assert _fields(_notices(ours)[0]) == _fields(_notices(stock)[0])
    assert _fields(_notices(ours)[0])["Action"] == "deliverable"
    line = [ln for ln in ours.lines if "bob@" in ln][0]
    assert normalise_line(line)["status"] == "deliverable"


def test_tls_required_defers_never_plaintext(tmp_base, agent_wrapper):
    """A peer without STARTTLS and smtp_tls_security_level = encrypt: no mail
    in plaintext, the stock reason text."""
    ours, stock = _both(tmp_base, agent_wrapper, PeerScript,
                        main_cf={"smtp_tls_security_level": "encrypt"}, expect_empty=False)
    for o in (ours, stock):
        assert not any(s.envelopes for s in o.sessions)
    assert normalise_line(ours.lines[0]) == normalise_line(stock.lines[0])
    d = normalise_line(ours.lines[0])
    assert d["status"] == "deferred" and d["dsn"] == "4.7.4"
    assert d["reason"] == "TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]"
