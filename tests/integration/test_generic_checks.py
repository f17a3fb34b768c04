"""smtp_generic_maps and smtp_*_checks on output, differential against stock smtp(8).

One instance with this agent and one with the stock smtp(8), the same
tables (hash, lmdb, regexp, pcre built with ``postmap -c``) and the same
messages; the SMTP peer's bytes (per message), the per-recipient log lines
and the content-inspection log lines must agree.
"""

from __future__ import annotations

import os
import re
import subprocess
import time


from postfix_smtp.testing.instance import PostfixInstance, tool
from postfix_smtp.testing.peer import PeerScript, SmtpPeer
from test_delivery import _agent_lines, normalise_line, normalise_wire


GENERIC_HASH = """\
alice@src.test.invalid          Alice.Public@public.example
bob@dest.test.invalid           robert@remote.example
carol@src.test.invalid          carol
multi@src.test.invalid          first@public.example, second@public.example
"""

GENERIC_LMDB = """\
@internal.test.invalid          @public.example
dave+special@src.test.invalid   special-dave@public.example
"""

LONG_CC = ", ".join("user%02d@internal.test.invalid" % i for i in range(12))

GENERIC_MESSAGES = {
    # name -> (sender, recipients, message)
    "headers": (
        "alice+list@src.test.invalid",
        ["bob@dest.test.invalid", "joe+tag@internal.test.invalid", "other@else.test.invalid"],
        ('From: "Alice Q. Public" <alice@src.test.invalid>\n'
         "To: Bob <bob@dest.test.invalid>, joe+tag@internal.test.invalid (Joe),\n"
         "  other@else.test.invalid\n"
         "Cc: " + LONG_CC + "\n"
         "Reply-To: multi@src.test.invalid\n"
         "Sender: carol@src.test.invalid\n"
         "Errors-To: Some  Name  <nobody@else.test.invalid>,\n\t  (comment)   x@else.test.invalid\n"
         "X-Not-An-Address-Header: alice@src.test.invalid\n"
         "Subject: generic headers\n"
         "Message-Id: <generic-1@src.test.invalid>\n"
         "\n"
         "From: alice@src.test.invalid in the body is not rewritten\n").encode()),
    "groups": (
        "dave+special@src.test.invalid",
        ["dave+other@internal.test.invalid"],
        ('From: "Doe, Dave" <dave+special@src.test.invalid>\n'
         "To: team: a@internal.test.invalid, \"b c\"@internal.test.invalid;,"
         " x@else.test.invalid\n"
         "Cc: undisclosed-recipients:;\n"
         "Subject: groups and quoted local parts\n"
         "Message-Id: <generic-2@src.test.invalid>\n"
         "\n"
         "body\n").encode()),
}

HEADER_CHECKS = r"""
/^Subject: replace me/          REPLACE Subject: replaced subject
/^X-Prepend-Here:/              PREPEND X-Added: by header checks
/^X-Drop:/                      IGNORE
/^X-Warn:/                      WARN watch this header
/^X-Info:/                      INFO informational
/^X-Strip:/                     STRIP stripped it
/^X-Reject:/                    REJECT not allowed on output
/^X-Bad-Replace:/               REPLACE no colon here
/^From: .*replace-from/         REPLACE From: Replaced <alice@src.test.invalid>
"""

MIME_HEADER_CHECKS = r"""
/^Content-Type: text\/html/     WARN html part
/^Content-Description: drop/    IGNORE
"""

BODY_CHECKS = r"""
/^secret/                       REPLACE [redacted]
/^drop this line/               IGNORE
/^warn body/                    WARN body warning
/^prepend before/               PREPEND inserted body line
"""

CHECKS_MESSAGE = (
    b"From: replace-from <alice@src.test.invalid>\n"
    b"To: bob@dest.test.invalid\n"
    b"Subject: replace me please\n"
    b"X-Prepend-Here: 1\n"
    b"X-Drop: gone\n"
    b"X-Warn: looked at\n"
    b"X-Info: looked at too\n"
    b"X-Strip: gone too\n"
    b"X-Reject: passes\n"
    b"X-Bad-Replace: passes\n"
    b"Message-Id: <checks-1@src.test.invalid>\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: multipart/alternative; boundary=\"BOUNDARY\"\n"
    b"\n"
    b"preamble\n"
    b"--BOUNDARY\n"
    b"Content-Type: text/plain\n"
    b"Content-Description: drop me\n"
    b"\n"
    b"secret stuff\n"
    b"drop this line\n"
    b"warn body line\n"
    b"prepend before this\n"
    b"ordinary line\n"
    b"--BOUNDARY\n"
    b"Content-Type: text/html\n"
    b"\n"
    b"<p>html</p>\n"
    b"--BOUNDARY--\n"
)

CHECKS_LOG = re.compile(r"postfix/smtp\[\d+\]: (?:warning: )?(?:[0-9A-F]+: )?"
                        r"((?:warning|info|replace|prepend|strip): .*|unsupported command.*"
                        r"|bad REPLACE.*|multi-valued.*)$")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _run(base: str, agent, main_cf: dict, tables: dict, messages: dict,
         smtp_args=(), expect_sent: bool = True) -> dict:
    """Deliver *messages* (name -> (sender, rcpts, bytes)) through one instance.
    *tables*: file name -> (type, text); ``{NAME}`` in main_cf values is the
    file's path.  Returns {"wire": {name: bytes}, "lines": [...], "checks": [...]}."""
    os.makedirs(base, mode=0o755, exist_ok=True)
    tdir = os.path.join(base, "tables")
    os.makedirs(tdir, mode=0o755, exist_ok=True)
    paths = {}
    for name, (_type, text) in tables.items():
        paths[name] = os.path.join(tdir, name)
        _write(paths[name], text)
    cf = {"minimal_backoff_time": "300s", "maximal_backoff_time": "300s"}
    for k, v in main_cf.items():
        for name, p in paths.items():
            v = v.replace("{%s}" % name, p)
        cf[k] = v
    peer = SmtpPeer(PeerScript(), max_lifetime=120)
    peer.start()
    inst = PostfixInstance(base, relayhost="[127.0.0.1]:%d" % peer.port, agent=agent,
                           main_cf=cf, smtp_args=list(smtp_args), max_lifetime=300)
    try:
        inst.start()
        for name, (type_, _text) in tables.items():
            if type_ in ("hash", "lmdb", "btree", "cdb"):
                subprocess.run([tool("postmap"), "-c", inst.config_dir,
                                "%s:%s" % (type_, paths[name])], check=True, timeout=30)
        total = 0
        for sender, rcpts, msg in messages.values():
            inst.sendmail(msg, sender, rcpts)
            total += len(rcpts)
            inst.wait_log(r"postfix/smtp\[\d+\]: \w+: to=<", timeout=30, count=total)
        assert inst.wait_queue_empty(timeout=30, allow_deferred=not expect_sent)
        time.sleep(0.3)
        wire = {}
        for sess in peer.sessions:
            data = sess.client_bytes
            for name, (_s, _r, msg) in messages.items():
                mid = re.search(rb"Message-Id: <([^>]+)>", msg).group(1)
                if mid in data:
                    wire[name] = normalise_wire(data)
        log = inst.log_lines()
        checks = [m.group(1) for m in (CHECKS_LOG.search(ln) for ln in log) if m]
        return {"wire": wire, "lines": sorted(_agent_lines(inst)), "checks": checks,
                "log": log, "queue": inst.queue_ids()}
    finally:
        inst.stop()
        peer.stop()


def _both(tmp_base, agent_wrapper, main_cf, tables, messages):
    ours = _run(os.path.join(tmp_base, "agent"), agent_wrapper, main_cf, tables, messages)
    stock = _run(os.path.join(tmp_base, "stock"), None, main_cf, tables, messages)
    return ours, stock


def _same(ours, stock) -> None:
    assert set(ours["wire"]) == set(stock["wire"])
    for name in stock["wire"]:
        assert ours["wire"][name] == stock["wire"][name], name
    norm = lambda lines: sorted(str(sorted(normalise_line(x).items())) for x in lines)
    assert norm(ours["lines"]) == norm(stock["lines"])
    assert ours["checks"] == stock["checks"]
    assert ours["queue"] == stock["queue"]


def test_generic_maps_hash_and_lmdb_same_as_stock(tmp_base, agent_wrapper):
    main_cf = {
        "smtp_generic_maps": "lmdb:{generic_lmdb}, hash:{generic_hash}",
        "recipient_delimiter": "+",
        "propagate_unmatched_extensions": "canonical, virtual, generic",
    }
    tables = {"generic_hash": ("hash", GENERIC_HASH), "generic_lmdb": ("lmdb", GENERIC_LMDB)}
    ours, stock = _both(tmp_base, agent_wrapper, main_cf, tables, GENERIC_MESSAGES)
    _same(ours, stock)
    wire = ours["wire"]["headers"]
    # what an administrator expects to see
    assert b"MAIL FROM:<Alice.Public+list@public.example>" in wire
    assert b"RCPT TO:<robert@remote.example>" in wire
    assert b"RCPT TO:<joe+tag@public.example>" in wire
    assert b"RCPT TO:<other@else.test.invalid>" in wire
    assert b'From: "Alice Q. Public" <Alice.Public@public.example>\r\n' in wire
    assert b"Reply-To: first@public.example\r\n" in wire
    assert b"Sender: carol@mx.test.invalid\r\n" in wire
    assert (b"Errors-To: Some  Name  <nobody@else.test.invalid>,\r\n"
            b"\t  (comment)   x@else.test.invalid\r\n") in wire
    assert b"X-Not-An-Address-Header: alice@src.test.invalid\r\n" in wire
    assert b"\r\nFrom: alice@src.test.invalid in the body" in wire
    cc = re.search(rb"\r\nCc: (.*?)\r\n(?!\t)", wire, re.S).group(0)
    assert cc.count(b"\r\n\t") >= 3 and b"internal.test.invalid" not in cc
    assert any("multi-valued" in c for c in ours["checks"])
    wire2 = ours["wire"]["groups"]
    assert b"MAIL FROM:<special-dave@public.example>" in wire2
    assert b"RCPT TO:<dave+other@public.example>" in wire2


def test_header_and_body_checks_same_as_stock(tmp_base, agent_wrapper):
    main_cf = {
        "smtp_header_checks": "regexp:{header_checks}",
        "smtp_mime_header_checks": "pcre:{mime_header_checks}",
        "smtp_body_checks": "pcre:{body_checks}",
        "smtp_generic_maps": "hash:{generic_hash}",
    }
    tables = {"header_checks": ("regexp", HEADER_CHECKS),
              "mime_header_checks": ("pcre", MIME_HEADER_CHECKS),
              "body_checks": ("pcre", BODY_CHECKS),
              "generic_hash": ("hash", GENERIC_HASH)}
    messages = {"checks": ("alice@src.test.invalid", ["bob@dest.test.invalid"],
                           CHECKS_MESSAGE)}
    ours, stock = _both(tmp_base, agent_wrapper, main_cf, tables, messages)
    _same(ours, stock)
    wire = ours["wire"]["checks"]
    assert b"Subject: replaced subject\r\n" in wire
    assert b"X-Added: by header checks\r\nX-Prepend-Here: 1\r\n" in wire
    assert b"X-Drop" not in wire and b"X-Strip" not in wire
    assert b"From: Replaced <Alice.Public@public.example>\r\n" in wire
    assert b"[redacted]\r\n" in wire and b"drop this line" not in wire
    assert b"inserted body line\r\nprepend before this\r\n" in wire
    assert b"Content-Description" not in wire
    checks = ours["checks"]
    assert any(c.startswith("warning: header X-Warn: looked at: watch this header")
               for c in checks)
    assert any(c.startswith("unsupported command in smtp_header_checks map: REJECT")
               for c in checks)
    assert any(c.startswith("warning: header Content-Type: text/html") for c in checks)
    assert any(c.startswith("warning: body warn body line: body warning") for c in checks)


def test_prepended_headers_flags_dro_same_as_stock(tmp_base, agent_wrapper):
    """flags=DRO: Return-Path, X-Original-To and Delivered-To carry mapped
    addresses (Return-Path goes through the header rewriting again)."""
    main_cf = {"smtp_generic_maps": "hash:{generic_hash}",
               "smtp_destination_recipient_limit": "1"}
    tables = {"generic_hash": ("hash", GENERIC_HASH)}
    messages = {"dro": ("alice@src.test.invalid", ["bob@dest.test.invalid"],
                        b"From: alice@src.test.invalid\nSubject: dro\n"
                        b"Message-Id: <dro-1@src.test.invalid>\n\nbody\n")}
    ours, stock = _both_args(tmp_base, agent_wrapper, main_cf, tables, messages, ["flags=DRO"])
    _same(ours, stock)
    wire = ours["wire"]["dro"]
    assert b"DATA\r\nReturn-Path: <Alice.Public@public.example>\r\n" in wire
    assert b"X-Original-To: robert@remote.example\r\n" in wire
    assert b"Delivered-To: robert@remote.example\r\n" in wire


def _both_args(tmp_base, agent_wrapper, main_cf, tables, messages, smtp_args, **kw):
    ours = _run(os.path.join(tmp_base, "agent"), agent_wrapper, main_cf, tables, messages,
                smtp_args, **kw)
    stock = _run(os.path.join(tmp_base, "stock"), None, main_cf, tables, messages,
                 smtp_args, **kw)
    return ours, stock


def test_header_checks_lookup_error_defers_like_stock(tmp_base, agent_wrapper):
    """A failing check table: warning, 4.3.0 local data error, no final dot."""
    main_cf = {"smtp_header_checks": "fail:hc"}
    messages = {"fail": ("alice@src.test.invalid", ["bob@dest.test.invalid"],
                         b"Subject: x\nMessage-Id: <fail-1@src.test.invalid>\n\nbody\n")}
    ours, stock = _both_args(tmp_base, agent_wrapper, main_cf, {}, messages, (),
                             expect_sent=False)
    norm = lambda lines: sorted(str(sorted(normalise_line(x).items())) for x in lines)
    assert norm(ours["lines"]) == norm(stock["lines"])
    d = normalise_line(ours["lines"][0])
    assert d["status"] == "deferred" and d["dsn"] == "4.3.0"
    assert d["reason"] == "local data error while talking to 127.0.0.1[127.0.0.1]"
    assert ({k: len(v) for k, v in ours["queue"].items()}
            == {k: len(v) for k, v in stock["queue"].items()})
    assert any("smtp header checks lookup error" in ln for ln in ours["log"])
    for res in (ours, stock):
        assert not any(b"\r\n.\r\n" in w for w in res["wire"].values())


def test_generic_map_lookup_error_defers(tmp_base, agent_wrapper):
    """Stock exits fatally ("map lookup problem"); the agent defers the mail
    with 4.3.0 and keeps running."""
    main_cf = {"smtp_generic_maps": "fail:gm"}
    messages = {"fail": ("alice@src.test.invalid", ["bob@dest.test.invalid"],
                         b"Subject: x\nMessage-Id: <gfail-1@src.test.invalid>\n\nbody\n")}
    ours = _run(os.path.join(tmp_base, "agent"), agent_wrapper, main_cf, {}, messages,
                expect_sent=False)
    d = normalise_line(ours["lines"][0])
    assert d["status"] == "deferred" and d["dsn"] == "4.3.0"
    assert d["reason"] == "local data error while talking to 127.0.0.1[127.0.0.1]"
    assert any("warning: smtp_generic_maps map lookup problem for alice@src.test.invalid" in ln
               for ln in ours["log"])
    assert ours["queue"]["deferred"]
    assert not any(b"MAIL FROM" in w for w in ours["wire"].values())


def test_delivered_to_loop_flags_d_same_as_stock(tmp_base, agent_wrapper):
    """flags=D: a recipient already named in a Delivered-To: header (after
    smtp_generic_maps, in any case) bounces with 5.4.6 before any connection;
    the header in the body or on a continuation line does not count."""
    main_cf = {"smtp_generic_maps": "hash:{generic_hash}",
               "smtp_destination_recipient_limit": "1"}
    tables = {"generic_hash": ("hash", GENERIC_HASH)}

    def msg(name, headers, body=b"body\n"):
        return ("alice@src.test.invalid", ["bob@dest.test.invalid"],
                b"Subject: %s\nMessage-Id: <%s@src.test.invalid>\n%s\n%s"
                % (name.encode(), name.encode(), headers, body))
    messages = {
        "loop": msg("loop", b"Delivered-To: other@else.test.invalid\n"
                            b"Delivered-To:   ROBERT@Remote.Example\n"),
        "other": msg("other", b"Delivered-To: someone@else.test.invalid\n"),
        "inbody": msg("inbody", b"X-A: 1\n", b"Delivered-To: robert@remote.example\n"),
        "folded": msg("folded", b"X-Folded: a\n Delivered-To: robert@remote.example\n"),
        "unmapped": msg("unmapped", b"Delivered-To: bob@dest.test.invalid\n"),
    }
    ours, stock = _both_args(tmp_base, agent_wrapper, main_cf, tables, messages, ["flags=D"])
    norm = lambda res: sorted(str(sorted(normalise_line(x).items())) for x in res["lines"]
                              if "to=<bob@" in x)
    assert norm(ours) == norm(stock)
    # ("loop" reaches the peer only inside the bounce notice to alice)
    assert set(ours["wire"]) == set(stock["wire"]) == {"loop", "other", "inbody", "folded",
                                                       "unmapped"}
    for name in ("other", "inbody", "folded", "unmapped"):
        assert ours["wire"][name] == stock["wire"][name], name
    for res in (ours, stock):
        assert b"MAIL FROM:<> " in res["wire"]["loop"]      # the notice
        assert b"RCPT TO:<robert@" not in res["wire"]["loop"]
    bob = [normalise_line(x) for x in ours["lines"] if "to=<bob@" in x]
    loops = [d for d in bob if d["status"] == "bounced"]
    assert len(loops) == 1, bob
    assert (loops[0]["dsn"], loops[0]["reason"]) == (
        "5.4.6", "mail forwarding loop for bob@dest.test.invalid")
    assert sum(d["status"] == "sent" for d in bob) == 4
