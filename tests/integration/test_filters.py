"""smtp_reply_filter and smtp_delivery_status_filter, differential against the
stock smtp(8): the same tables, the same peer; outcome, DSN, reason text,
queue state and the "replacing server reply" log line must agree."""

from __future__ import annotations

import os
import re

from postfix_smtp.testing.peer import PeerScript
from test_delivery import normalise_line, normalise_wire, run_scenario


def _tables(base: str, **tables) -> dict:
    """Write ``name=text`` tables under *base*; returns name -> path."""
    os.makedirs(base, mode=0o755, exist_ok=True)
    paths = {}
    for name, text in tables.items():
        path = os.path.join(base, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o644)
        paths[name] = path
    return paths


def _both(tmp_base, agent_wrapper, script, main_cf, **kw):
    ours = run_scenario(os.path.join(tmp_base, "agent"), agent_wrapper, PeerScript(**script),
                        main_cf=main_cf, **kw)
    stock = run_scenario(os.path.join(tmp_base, "stock"), None, PeerScript(**script),
                         main_cf=main_cf, **kw)
    return ours, stock


def _same(ours, stock):
    la = sorted((normalise_line(x) for x in ours.lines), key=repr)
    lb = sorted((normalise_line(x) for x in stock.lines), key=repr)
    assert la == lb
    wa = normalise_wire(b"".join(s.client_bytes for s in ours.sessions))
    wb = normalise_wire(b"".join(s.client_bytes for s in stock.sessions))
    assert wa == wb
    assert ({q: len(v) for q, v in ours.queue.items()}
            == {q: len(v) for q, v in stock.queue.items()})
    return la


def _agent_log(outcome, pattern):
    """Agent log lines (after "postfix/smtp[pid]: ") matching *pattern*, with
    ports masked."""
    out = []
    for ln in outcome.all_log:
        m = re.search(r"postfix/smtp\[\d+\]: (.*)$", ln)
        if m and re.search(pattern, m.group(1)):
            text = re.sub(r"\]:\d+", "]:PORT", m.group(1))
            out.append(re.sub(r"\b[0-9A-F]{10,12}\b", "QUEUEID", text))
    return out


REPLY_FILTER = r"""/^550 5\.1\.1 (.*)$/   450 4.1.1 filtered: $1
/^250-SIZE/                250-X-IGNORED-SIZE
"""


def test_reply_filter_rewrites_server_replies_like_stock(tmp_base, agent_wrapper):
    """A permanent RCPT reject rewritten to a temporary one: deferred, not
    bounced; an EHLO line replaced (SIZE no longer announced: no SIZE=)."""
    t = _tables(os.path.join(tmp_base, "tables"), reply_filter=REPLY_FILTER)
    cf = {"smtp_reply_filter": "pcre:" + t["reply_filter"]}
    script = dict(rcpt_reply="550 5.1.1 <bob@dest.test.invalid>: no such user")
    ours, stock = _both(tmp_base, agent_wrapper, script, cf, expect_empty=False)
    lines = _same(ours, stock)
    assert [(d["status"], d["dsn"]) for d in lines] == [("deferred", "4.1.1")]
    assert lines[0]["reason"] == ("host 127.0.0.1[127.0.0.1] said: 450 4.1.1 filtered: "
                                  "<bob@dest.test.invalid>: no such user "
                                  "(in reply to RCPT TO command)")
    wire = b"".join(s.client_bytes for s in ours.sessions)
    assert b"MAIL FROM:<alice@src.test.invalid>\r\n" in wire      # no SIZE=
    note = ('127.0.0.1[127.0.0.1]:PORT: replacing server reply "550 5.1.1 '
            '<bob@dest.test.invalid>: no such user" with "450 4.1.1 filtered: '
            '<bob@dest.test.invalid>: no such user"')
    assert _agent_log(ours, "replacing server reply") == _agent_log(
        stock, "replacing server reply")
    assert note in _agent_log(ours, "replacing server reply")


def test_reply_filter_lookup_error_is_a_local_data_error(tmp_base, agent_wrapper):
    cf = {"smtp_reply_filter": "fail:replies"}
    ours, stock = _both(tmp_base, agent_wrapper, {}, cf, expect_empty=False)
    lines = _same(ours, stock)
    assert [(d["status"], d["dsn"], d["reason"]) for d in lines] == [
        ("deferred", "4.3.0", "local data error while talking to 127.0.0.1[127.0.0.1]")]
    warn = _agent_log(ours, "^warning:")
    assert warn == _agent_log(stock, "^warning:")
    assert warn == ["warning: QUEUEID: table fail:replies lookup error for "
                    "220 peer.test.invalid ESMTP"]


STATUS_FILTER = r"""/^5\.1\.1 (.*)$/     4.1.1 status filter: $1
/^2\.0\.0 (.*)$/     2.1.0 delivered, filtered: $1
/^4\.2\.2 (.*)$/     5.2.2 no point in waiting: $1
/^4\.3\.9 (.*)$/     2.0.0 a failure cannot become a success
"""


def _status_filter_case(tmp_base, agent_wrapper, name, script, expect_empty):
    t = _tables(os.path.join(tmp_base, "tables-" + name), status_filter=STATUS_FILTER)
    cf = {"smtp_delivery_status_filter": "pcre:" + t["status_filter"]}
    base = os.path.join(tmp_base, name)
    ours, stock = _both(base, agent_wrapper, script, cf, expect_empty=expect_empty)
    return ours, stock, _same(ours, stock)


def test_delivery_status_filter_like_stock(tmp_base, agent_wrapper):
    # a bounce becomes a deferral
    ours, stock, lines = _status_filter_case(
        tmp_base, agent_wrapper, "bounce", dict(rcpt_reply="550 5.1.1 no such user"), False)
    assert [(d["status"], d["dsn"]) for d in lines] == [("deferred", "4.1.1")]
    assert lines[0]["reason"].startswith("status filter: host 127.0.0.1[127.0.0.1] said: 550")
    # a success keeps being a success, with the new text
    ours, stock, lines = _status_filter_case(tmp_base, agent_wrapper, "sent", {}, True)
    assert [(d["status"], d["dsn"]) for d in lines] == [("sent", "2.1.0")]
    assert lines[0]["reason"] == "delivered, filtered: 250 2.0.0 Ok: queued as PEER"
    # a deferral becomes a bounce
    ours, stock, lines = _status_filter_case(
        tmp_base, agent_wrapper, "defer", dict(rcpt_reply="452 4.2.2 mailbox full"), True)
    bob = [d for d in lines if d["to"] == "bob@dest.test.invalid"]
    assert [(d["status"], d["dsn"]) for d in bob] == [("bounced", "5.2.2")]
    # a failure mapped to a success: ignored, with stock's warning
    ours, stock, lines = _status_filter_case(
        tmp_base, agent_wrapper, "bad", dict(rcpt_reply="451 4.3.9 try later"), False)
    assert [(d["status"], d["dsn"]) for d in lines] == [("deferred", "4.3.9")]
    warn = _agent_log(ours, "bad status code")
    assert warn == ["warning: smtp_delivery_status_filter: bad status code: "
                    "2.0.0 a failure cannot become a success"]
    assert warn == _agent_log(stock, "bad status code")
