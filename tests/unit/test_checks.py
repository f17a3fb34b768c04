"""Output header/body checks (hbc_action with smtp(8)'s call-backs) and the
combined MIME call-backs with generic rewriting."""

from __future__ import annotations

import pytest

from postfix_smtp.maps import open_maps
from postfix_smtp.maps.base import DICT_FLAG_LOCK, RecordingLog
from postfix_smtp.smtp.checks import (IGNORE, ChecksLookupError, HeaderBodyChecks,
                                      OutputFilter)
from postfix_smtp.smtp.mime import MULTIPART, NESTED, PRIMARY, MimeDowngrade, header_opts_find
from postfix_smtp.smtp.rewrite import GenericMapper

HEADER = r"""
/^Subject: replace/     REPLACE Subject: replaced
/^Subject: badrepl/     REPLACE no header here
/^Subject: empty/       REPLACE
/^X-Prepend:/           PREPEND X-New: yes
/^X-Ignore:/            ignore
/^X-Strip:/             STRIP gone
/^X-Warn:/              WARN look
/^X-Info:/              INFO fyi
/^X-Dunno:/             DUNNO
/^X-Ok:/                OK
/^X-Reject:/            REJECT no
/^X-Hold:/              HOLD
/^X-Multi:/             WARN multi line
/^Content-Type:/        WARN primary table sees content-type?
"""

MIME = r"""
/^Content-Type: text\/html/   WARN html
"""

NESTED_T = r"""
/^Subject: inner/       REPLACE Subject: inner replaced
"""

BODY = r"""
/^secret/               REPLACE [redacted]
/^drop/                 IGNORE
/^warn/                 WARN body text
/^before/               PREPEND inserted
"""


class Params(dict):
    def get(self, key, default=None):
        return dict.get(self, key, "" if default is None else default)


def make_checks(tmp_path, log, header=HEADER, mime=MIME, nested=NESTED_T, body=BODY):
    params = Params()
    for name, text in (("smtp_header_checks", header), ("smtp_mime_header_checks", mime),
                       ("smtp_nested_header_checks", nested), ("smtp_body_checks", body)):
        if text is None:
            continue
        if text.startswith("fail:"):
            params[name] = text
            continue
        path = tmp_path / name
        path.write_text(text)
        params[name] = "regexp:%s" % path
    from postfix_smtp.maps import OpenContext
    return HeaderBodyChecks.from_params(params, OpenContext(params, log), log)


@pytest.fixture
def env(tmp_path):
    log = RecordingLog()
    return make_checks(tmp_path, log), log


def hdr(checks, text, cls=PRIMARY):
    pre = []
    info = header_opts_find(text)
    out = checks.header("QID", cls, info, text, pre)
    return pre, out


def test_replace_prepend_ignore_strip(env):
    c, log = env
    assert hdr(c, b"Subject: replace me") == ([], b"Subject: replaced")
    assert log.texts() == ["QID: replace: header Subject: replace me: Subject: replaced"]
    assert hdr(c, b"X-Prepend: 1") == ([b"X-New: yes"], b"X-Prepend: 1")
    assert hdr(c, b"X-Ignore: 1") == ([], IGNORE)
    assert hdr(c, b"X-Strip: 1") == ([], IGNORE)
    assert log.texts()[-2:] == ["QID: prepend: header X-Prepend: 1: X-New: yes",
                                "QID: strip: header X-Strip: 1: gone"]


def test_warn_info_dunno_ok_pass(env):
    c, log = env
    for t in (b"X-Warn: a", b"X-Info: b", b"X-Dunno: c", b"X-Ok: d", b"X-None: e"):
        assert hdr(c, t) == ([], t)
    assert log.texts() == ["QID: warning: header X-Warn: a: look", "QID: info: header X-Info: b: fyi"]


def test_unsupported_and_bad_actions_pass_with_warning(env):
    c, log = env
    assert hdr(c, b"X-Reject: 1") == ([], b"X-Reject: 1")
    assert hdr(c, b"X-Hold: 1") == ([], b"X-Hold: 1")
    assert hdr(c, b"Subject: badrepl") == ([], b"Subject: badrepl")
    assert hdr(c, b"Subject: empty") == ([], b"Subject: empty")
    assert log.texts() == [
        "unsupported command in smtp_header_checks map: REJECT no",
        "unsupported command in smtp_header_checks map: HOLD",
        'bad REPLACE header text "no header here" in smtp_header_checks map -- '
        'need "headername: headervalue"',
        "REPLACE action without text in smtp_header_checks map",
    ]


def test_content_logged_cut_at_60_bytes(env):
    c, log = env
    text = b"X-Warn: " + b"x" * 100
    hdr(c, text)
    assert log.texts() == ["QID: warning: header %s: look" % text[:60].decode()]


def test_table_choice_by_class_and_mime_flag(env):
    c, log = env
    # MIME headers use smtp_mime_header_checks, even in the primary block
    assert hdr(c, b"Content-Type: text/html") == ([], b"Content-Type: text/html")
    assert log.texts() == ["QID: warning: header Content-Type: text/html: html"]
    assert hdr(c, b"Subject: inner", NESTED) == ([], b"Subject: inner replaced")
    assert hdr(c, b"Subject: replace", MULTIPART) == ([], b"Subject: replace")


def test_body_checks(env):
    c, log = env
    pre = []
    assert c.body("QID", b"secret stuff", pre) == b"[redacted]"
    assert c.body("QID", b"drop me", pre) is IGNORE
    assert c.body("QID", b"before this", pre) == b"before this"
    assert pre == [b"inserted"]
    assert log.texts() == ["QID: replace: body secret stuff: [redacted]",
                           "QID: prepend: body before this: inserted"]


def test_lookup_errors(tmp_path):
    log = RecordingLog()
    c = make_checks(tmp_path, log, header="fail:h", body="fail:b")
    with pytest.raises(ChecksLookupError):
        hdr(c, b"Subject: x")
    with pytest.raises(ChecksLookupError):
        c.body("QID", b"x", [])
    f = OutputFilter("QID", c, None, log)
    with pytest.raises(ChecksLookupError):
        f.header_callback(PRIMARY, None, b"Subject: x")
    assert log.texts()[-1] == "QID: smtp header checks lookup error"


def test_nothing_configured_is_none(tmp_path):
    assert make_checks(tmp_path, RecordingLog(), None, None, None, None) is None


def run_mime(flt, records, **kw):
    kwargs = dict(header_callback=flt.header_callback)
    if flt.checks is not None and flt.checks.has_body_checks:
        kwargs["body_callback"] = flt.body_callback
    kwargs.update(kw)
    m = MimeDowngrade(downgrade=False, **kwargs)
    out = []
    for r in records:
        out += m.record(r, True)
    out += m.finish()
    return [t for t, _c in out]


MESSAGE = [
    b"From: Alice <alice@example.com>",
    b"Subject: replace me",
    b"X-Prepend: 1",
    b"X-Ignore: 1",
    b"MIME-Version: 1.0",
    b'Content-Type: multipart/mixed; boundary="B"',
    b"",
    b"--B",
    b"Content-Type: message/rfc822",
    b"",
    b"From: alice@example.com",
    b"Subject: inner",
    b"",
    b"secret inner",
    b"--B--",
    b"drop this",
    b"before that",
]


def test_filter_end_to_end_with_generic(tmp_path):
    log = RecordingLog()
    c = make_checks(tmp_path, log)
    path = tmp_path / "generic"
    path.write_text("alice@example.com alice@public.org\n")
    g = GenericMapper(open_maps("texthash:%s" % path, Params(), title="smtp_generic_maps",
                                log=log), params=Params())
    out = run_mime(OutputFilter("QID", c, g, log), MESSAGE)
    assert out == [
        b"From: Alice <alice@public.org>",
        b"Subject: replaced",
        b"X-New: yes",
        b"X-Prepend: 1",
        b"MIME-Version: 1.0",
        b'Content-Type: multipart/mixed; boundary="B"',
        b"",
        b"--B",
        b"Content-Type: message/rfc822",
        b"",
        b"From: alice@example.com",           # nested headers: not rewritten
        b"Subject: inner replaced",
        b"",
        b"[redacted]",
        b"--B--",
        b"inserted",
        b"before that",
    ]


def test_generic_only_primary_headers_disable_mime(tmp_path):
    path = tmp_path / "generic"
    path.write_text("alice@example.com alice@public.org\n")
    g = GenericMapper(open_maps("texthash:%s" % path, Params(), title="smtp_generic_maps"),
                      params=Params())
    out = run_mime(OutputFilter("QID", None, g), [
        b"From: alice@example.com", b"Cc: bob@else.org,", b"\tcarol@else.org", b"",
        b"From: alice@example.com"], disable_mime=True)
    assert out == [b"From: alice@public.org", b"Cc: bob@else.org,", b"\tcarol@else.org", b"",
                   b"From: alice@example.com"]
