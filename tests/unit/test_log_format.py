"""postfix_smtp.log: format_tv(), delays= and the per-recipient line
(postfix-ipc.md §6.2)."""

from __future__ import annotations

import pytest

from postfix_smtp.ipc.delivery import MsgStats
from postfix_smtp.log import DelayFields, delays, format_tv, recipient_line


@pytest.mark.parametrize("seconds, text", [
    (0.004, "0"),
    (0.005, "0.01"),
    (0.123456, "0.12"),
    (0.999999, "1"),
    (1.234567, "1.2"),
    (9.96, "10"),
    (12.345678, "12"),
    (12.6, "13"),
    (304.000001, "304"),
    # more, derived from format_tv.c
    (0.0, "0"),
    (0.01, "0.01"),
    (0.015, "0.02"),
    (0.094, "0.09"),
    (0.095, "0.1"),
    (0.1, "0.1"),
    (0.25, "0.25"),
    (1.0, "1"),
    (1.04, "1"),
    (1.05, "1.1"),
    (1.95, "2"),
    (9.94, "9.9"),
    (10.0, "10"),
    (10.5, "11"),
    (99.4, "99"),
    (99.5, "100"),
    (100.0, "100"),
    (12345.678, "12346"),
    (-3.0, "0"),                       # negative differences clamp to 0
])
def test_format_tv(seconds, text):
    assert format_tv(seconds) == text


@pytest.mark.parametrize("seconds, max_dig, text", [
    (0.123456, 0, "0"),
    (0.6, 0, "1"),
    (0.123456, 3, "0.12"),
    (0.0012345, 3, "0.001"),
    (0.0012345, 6, "0.0012"),
    (0.000001, 6, "0.000001"),
    (1.234567, 6, "1.2"),
])
def test_format_tv_resolution(seconds, max_dig, text):
    assert format_tv(seconds, max_dig) == text


# --- delays() ------------------------------------------------------------------------

def test_delays_full_pipeline():
    s = MsgStats(incoming_arrival=1000.0, active_arrival=1001.5, agent_handoff=1003.0,
                 conn_setup_done=1010.0, deliver_done=1040.0)
    assert delays(s) == DelayFields("40", "1.5/1.5/7/30")


def test_delays_no_connection_setup():
    # c = 0, d = now - agent_handoff
    s = MsgStats(incoming_arrival=1000.0, active_arrival=1001.5, agent_handoff=1003.0)
    assert delays(s, now=1013.0) == DelayFields("13", "1.5/1.5/0/10")


def test_delays_no_agent_handoff():
    # b = now - active_arrival, c = d = 0
    s = MsgStats(incoming_arrival=1000.0, active_arrival=1001.5, conn_setup_done=1002.0)
    assert delays(s, now=1004.0) == DelayFields("4", "1.5/2.5/0/0")


def test_delays_no_queue_manager():
    # a = now - incoming, rest 0
    s = MsgStats(incoming_arrival=1000.0, agent_handoff=1001.0, conn_setup_done=1002.0)
    assert delays(s, now=1003.25) == DelayFields("3.3", "3.3/0/0/0")   # half rounds up


def test_delays_now_defaults_to_deliver_done():
    s = MsgStats(incoming_arrival=1000.0, active_arrival=1000.0, agent_handoff=1000.0,
                 conn_setup_done=1000.0, deliver_done=1000.5)
    assert delays(s) == DelayFields("0.5", "0/0/0/0.5")


def test_delays_now_defaults_to_wall_clock(monkeypatch):
    import postfix_smtp.log as log_mod
    monkeypatch.setattr(log_mod.time, "time", lambda: 2000.0)
    s = MsgStats(incoming_arrival=1000.0, active_arrival=1500.0)
    assert delays(s) == DelayFields("1000", "500/500/0/0")


def test_delays_negative_differences_clamp():
    s = MsgStats(incoming_arrival=1000.0, active_arrival=999.0, agent_handoff=998.0,
                 conn_setup_done=997.0, deliver_done=996.0)
    assert delays(s) == DelayFields("0", "0/0/0/0")


def test_delays_captured_shape():
    # stock line: delay=0.02, delays=0.01/0.01/0/0
    s = MsgStats(incoming_arrival=1795548755.921017, active_arrival=1795548755.927769,
                 agent_handoff=1795548755.936000, conn_setup_done=1795548755.937000,
                 deliver_done=1795548755.938000)
    assert delays(s) == DelayFields("0.02", "0.01/0.01/0/0")


def test_delays_resolution_parameter():
    s = MsgStats(incoming_arrival=1000.0, active_arrival=1000.123456, agent_handoff=1000.2,
                 conn_setup_done=1000.3, deliver_done=1000.4)
    assert delays(s, resolution=0) == DelayFields("0", "0/0/0/0")
    assert delays(s, resolution=2) == DelayFields("0.4", "0.12/0.08/0.1/0.1")


# --- the per-recipient line -------------------------------------------------------------

STATS = MsgStats(incoming_arrival=1000.0, active_arrival=1001.5, agent_handoff=1003.0,
                 conn_setup_done=1010.0, deliver_done=1040.0)


def test_recipient_line_sent():
    line = recipient_line("4384B210A35", "c@example.org", "c@example.org",
                          "127.0.0.1[127.0.0.1]:2626", STATS, "2.0.0", "sent",
                          "250 2.0.0 Ok")
    assert line == ("4384B210A35: to=<c@example.org>, relay=127.0.0.1[127.0.0.1]:2626, "
                    "delay=40, delays=1.5/1.5/7/30, dsn=2.0.0, status=sent (250 2.0.0 Ok)")


def test_recipient_line_captured_deferred_shape():
    s = MsgStats(incoming_arrival=1000.0, active_arrival=1000.0, agent_handoff=1000.0,
                 conn_setup_done=1000.0, deliver_done=1000.0)
    line = recipient_line("744E7210094", "i@example.org", "", "none", s, "4.4.1", "deferred",
                          "connect to 127.0.0.1[127.0.0.1]:2626: Connection refused")
    assert line == ("744E7210094: to=<i@example.org>, relay=none, delay=0, delays=0/0/0/0, "
                    "dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1]:2626: "
                    "Connection refused)")


def test_recipient_line_orig_to_only_when_different():
    line = recipient_line("Q", "alias-target@example.org", "alias@example.org", "none",
                          STATS, "5.1.1", "bounced", "r")
    assert line.startswith("Q: to=<alias-target@example.org>, orig_to=<alias@example.org>, "
                           "relay=none, delay=40")
    same_ci = recipient_line("Q", "c@example.org", "C@Example.ORG", "none", STATS, "2.0.0",
                             "sent", "r")
    assert "orig_to" not in same_ci
    utf8_ci = recipient_line("Q", "\u00e9t\u00e9@x", "\u00c9T\u00c9@X", "none", STATS,
                             "2.0.0", "sent", "r")
    assert "orig_to" not in utf8_ci
    empty = recipient_line("Q", "c@example.org", "", "none", STATS, "2.0.0", "sent", "r")
    assert "orig_to" not in empty


def test_recipient_line_conn_use():
    s = MsgStats(incoming_arrival=1000.0, active_arrival=1000.0, agent_handoff=1000.0,
                 conn_setup_done=1000.0, deliver_done=1000.0, reuse_count=2)
    line = recipient_line("Q", "a@b", "", "mx[192.0.2.1]:25", s, "2.0.0", "sent", "250 ok")
    assert line == ("Q: to=<a@b>, relay=mx[192.0.2.1]:25, conn_use=3, delay=0, "
                    "delays=0/0/0/0, dsn=2.0.0, status=sent (250 ok)")
    s.reuse_count = 0
    assert "conn_use" not in recipient_line("Q", "a@b", "", "r", s, "2.0.0", "sent", "x")


def test_recipient_line_external_and_internal_address_form():
    ext = recipient_line("Q", "odd user@example.net", "odd  user@example.net", "none", STATS,
                         "2.0.0", "sent", "x")
    assert ext.startswith('Q: to=<"odd user"@example.net>, orig_to=<"odd  user"@example.net>, ')
    internal = recipient_line("Q", "odd user@example.net", "", "none", STATS, "2.0.0", "sent",
                              "x", external=False)
    assert internal.startswith("Q: to=<odd user@example.net>, relay=none")


def test_recipient_line_null_address():
    line = recipient_line("Q", "", "", "none", STATS, "2.0.0", "sent", "x")
    assert line.startswith("Q: to=<>, relay=none, ")


def test_recipient_line_explicit_now_and_resolution():
    s = MsgStats(incoming_arrival=1000.0, active_arrival=1000.0)
    line = recipient_line("Q", "a@b", "", "none", s, "4.4.1", "deferred", "x", now=1000.123,
                          resolution=1)
    assert line == ("Q: to=<a@b>, relay=none, delay=0.1, delays=0/0.1/0/0, dsn=4.4.1, "
                    "status=deferred (x)")
