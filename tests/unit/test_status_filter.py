"""smtp_delivery_status_filter in ipc.reports.Reporter (dsn_filter.c and the
bounce/defer/sent entry points): which service records the outcome after the
filter, with what status, reason and action."""

from __future__ import annotations

import pytest

from postfix_smtp.ipc.delivery import Dsn, Recipient
from postfix_smtp.ipc.reports import Reporter, ReportSettings
from postfix_smtp.maps.base import MapError


class Log:
    def __init__(self):
        self.lines = []

    def info(self, text):
        self.lines.append(("info", text))

    def warning(self, text):
        self.lines.append(("warning", text))


class Table:
    title = "smtp_delivery_status_filter"

    def __init__(self, entries=None, fail=False):
        self.entries = entries or {}
        self.fail = fail
        self.keys = []

    def lookup(self, key):
        self.keys.append(key)
        if self.fail:
            raise MapError("down")
        return self.entries.get(key)


class Req:
    queue_id = "ABC123"
    flags = 0
    trace_flags = 0


class Recording(Reporter):
    """Records which service each outcome went to instead of connecting."""

    def __init__(self, table):
        super().__init__(Req(), Log(), ReportSettings(status_filter=table))
        self.appended = []

    def _append(self, service, rcpt, dsn):
        self.appended.append((service, dsn.status, dsn.action, dsn.reason))
        return 0

    def _logline(self, rcpt, relay, dsn, word):
        self.appended.append(("log", word, dsn.status, dsn.reason))


RCPT = Recipient(address="bob@example.com", original="bob@example.com", offset=0,
                 dsn_orig_rcpt="", notify_flags=0)


def test_bounce_to_defer():
    t = Table({"5.1.1 no such user": "4.1.1 try again: no such user"})
    r = Recording(t)
    assert r.bounce(RCPT, "relay", Dsn(status="5.1.1", reason="no such user")) == -1
    assert t.keys == ["5.1.1 no such user"]             # looked up once
    assert r.appended == [("defer", "4.1.1", "delayed", "try again: no such user"),
                          ("log", "deferred", "4.1.1", "try again: no such user")]


def test_defer_to_bounce():
    t = Table({"4.2.2 full": "5.2.2   full for good"})
    r = Recording(t)
    assert r.defer(RCPT, "relay", Dsn(status="4.2.2", reason="full")) == 0
    assert r.appended == [("bounce", "5.2.2", "failed", "full for good"),
                          ("log", "bounced", "5.2.2", "full for good")]


def test_success_keeps_its_action():
    r = Recording(Table({"2.0.0 ok": "2.1.5 fine"}))
    assert r.sent(RCPT, "relay", Dsn(status="2.0.0", action="relayed", reason="ok")) == 0
    assert r.appended == [("log", "sent", "2.1.5", "fine")]


@pytest.mark.parametrize("status,reason,result", [
    ("2.0.0", "ok", "4.0.0 no"),         # success -> failure: refused
    ("4.0.0", "later", "2.0.0 yes"),     # failure -> success: refused
    ("4.0.0", "later", "bogus text"),    # not a status
    ("4.0.0", "later", "4.0 short"),
])
def test_class_changes_across_success_are_refused(status, reason, result):
    r = Recording(Table({"%s %s" % (status, reason): result}))
    if status[0] == "2":
        r.sent(RCPT, "relay", Dsn(status=status, reason=reason))
    else:
        r.defer(RCPT, "relay", Dsn(status=status, reason=reason))
    assert ("warning", "smtp_delivery_status_filter: bad status code: %s" % result) \
        in r.log.lines
    assert r.appended[-1] == ("log", "sent" if status[0] == "2" else "deferred", status, reason)


def test_lookup_error_leaves_the_status_alone():
    r = Recording(Table(fail=True))
    r.bounce(RCPT, "relay", Dsn(status="5.1.1", reason="no"))
    assert r.appended[-1] == ("log", "bounced", "5.1.1", "no")


def test_no_filter_no_lookup():
    r = Recording(None)
    r.bounce(RCPT, "relay", Dsn(status="5.1.1", reason="no"))
    assert r.appended == [("bounce", "5.1.1", "failed", "no"), ("log", "bounced", "5.1.1", "no")]


class FailingBounce(Recording):
    def _append(self, service, rcpt, dsn):
        self.appended.append((service, dsn.status, dsn.action, dsn.reason))
        return -1 if service == "bounce" else 0


def test_service_failure_fallback_is_not_filtered_again():
    """A bounce whose bounce(8) append fails becomes a 4.3.0 deferral that is
    not run through the filter again (stock defer_append_intern): a filter
    mapping that deferral to a bounce must not loop back into bounce(8)."""
    t = Table({"4.3.0 bounce or trace service failure": "5.3.0 give up"})
    r = FailingBounce(t)
    assert r.bounce(RCPT, "relay", Dsn(status="5.1.1", reason="no")) == -1
    assert t.keys == ["5.1.1 no"]
    assert r.appended == [("bounce", "5.1.1", "failed", "no"),
                          ("defer", "4.3.0", "delayed", "bounce or trace service failure"),
                          ("log", "deferred", "4.3.0", "bounce or trace service failure")]
