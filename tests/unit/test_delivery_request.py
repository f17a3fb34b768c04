"""postfix_smtp.ipc.delivery: qmgr's delivery request and the agent's reply
(postfix-ipc.md §3), checked against requests captured from Postfix 3.7.11."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import pytest

from postfix_smtp.ipc.attr import AttrError, Decoder, encode
from postfix_smtp.ipc.delivery import (COMMON_NAMES, MAX_RECIPIENTS, MSG_STATS_SIZE,
                                       PROTOCOL, RECIPIENT_NAMES, DeliveryRequest, Dsn,
                                       MsgStats, Recipient, parse_common, parse_recipient,
                                       reply_attrs)

DATA = Path(__file__).resolve().parent.parent / "data"


def load(name: str) -> tuple[bytes, list]:
    raw = (DATA / name).read_bytes()
    d = Decoder()
    d.feed(raw)
    lists = []
    while True:
        lst = d.next_list()
        if lst is None:
            break
        lists.append(lst)
    assert not d.pending
    return raw, lists


def parse_all(lists: list) -> DeliveryRequest:
    req, count = parse_common(lists[0])
    assert count == len(lists) - 1
    req.recipients = [parse_recipient(lst) for lst in lists[1:]]
    return req


# --- the captures ----------------------------------------------------------

def test_capture_sizes():
    assert len((DATA / "delivery-request-3.7.bin").read_bytes()) == 672
    assert len((DATA / "delivery-request-3.7-dsn-3rcpt.bin").read_bytes()) == 902
    assert len((DATA / "delivery-request-3.7-smtputf8.bin").read_bytes()) == 696


def test_capture_plain_request_every_field():
    raw, lists = load("delivery-request-3.7.bin")
    assert len(lists) == 2
    assert [n for n, _ in lists[0]] == [n.split("|")[0] for n in COMMON_NAMES]
    assert [n for n, _ in lists[1]] == list(RECIPIENT_NAMES)
    req, count = parse_common(lists[0])
    assert count == 1
    assert req.flags == 3
    assert req.queue_name == "active"
    assert req.queue_id == "E21E1210151"
    assert req.data_offset == 694
    assert req.data_size == 2342
    assert req.nexthop == "[127.0.0.1]:47925"
    assert req.encoding == ""
    assert req.smtputf8 == 0
    assert req.sendopts_name == "smtputf8"
    assert req.sender == "sender@lab.invalid"
    assert req.envelope_id == ""
    assert req.ret_flags == 0
    assert req.stats == MsgStats(incoming_arrival=1795548755.921017,
                                 active_arrival=1795548755.927769)
    assert req.client_name == "localhost"
    assert req.client_addr == "127.0.0.1"
    assert req.client_port == "48882"
    assert req.client_proto == "SMTP"
    assert req.client_helo == "client.lab.invalid"
    assert req.sasl_method == "" and req.sasl_username == "" and req.sasl_sender == ""
    assert req.log_ident == "E21E1210151"
    assert req.rewrite_context == "local"
    assert req.recipients == []            # parse_common does not read recipients
    assert req.trace_flags == 0
    assert req.trace_only is False

    rcpt = parse_recipient(lists[1])
    assert rcpt == Recipient(original="rcpt@dest.lab.invalid", address="rcpt@dest.lab.invalid",
                             offset=669, dsn_orig_rcpt="rfc822;rcpt@dest.lab.invalid",
                             notify_flags=0)
    # the recipient list re-encodes to exactly the captured bytes
    assert raw.endswith(encode(rcpt.attrs()))
    assert raw == encode(lists[0]) + encode(rcpt.attrs())


def test_capture_dsn_three_recipients():
    _, lists = load("delivery-request-3.7-dsn-3rcpt.bin")
    req = parse_all(lists)
    assert req.queue_id == "8C7B4210054"
    assert (req.data_offset, req.data_size) == (537, 260)
    assert req.sender == "dsn-sender@lab.invalid"
    assert req.envelope_id == "envid-123"
    assert req.ret_flags == 2
    assert req.encoding == "" and req.smtputf8 == 0
    assert req.client_name == "" and req.client_addr == "" and req.client_port == ""
    assert req.client_proto == "" and req.client_helo == "" and req.log_ident == ""
    assert req.rewrite_context == "local"
    assert req.stats.incoming_arrival == 1795548770.574147
    assert req.stats.active_arrival == 1795548770.576988
    assert [(r.original, r.address, r.offset, r.dsn_orig_rcpt, r.notify_flags)
            for r in req.recipients] == [
        ("a1@dest.lab.invalid", "a1@dest.lab.invalid", 309, "rfc822;a1@dest.lab.invalid", 14),
        ("a2@dest.lab.invalid", "a2@dest.lab.invalid", 410, "rfc822;a2@dest.lab.invalid", 14),
        ("a3@other.lab.invalid", "a3@other.lab.invalid", 513, "rfc822;a3@other.lab.invalid", 14),
    ]


def test_capture_smtputf8():
    _, lists = load("delivery-request-3.7-smtputf8.bin")
    req = parse_all(lists)
    assert req.queue_id == "D7C12210234"
    assert (req.data_offset, req.data_size) == (746, 425)
    assert req.encoding == "8bit"
    assert req.smtputf8 == 15
    assert req.sender == "s\u00e9nder@lab.invalid"
    assert req.client_port == "50752" and req.client_proto == "ESMTP"
    assert req.log_ident == "D7C12210234"
    assert req.stats.incoming_arrival == 1795548781.883337
    assert req.stats.active_arrival == 1795548781.885120
    (r,) = req.recipients
    assert r.original == r.address == "r\u00e9cipient@dest.lab.invalid"
    assert r.offset == 715
    assert r.dsn_orig_rcpt == "rfc822;r\u00e9cipient@dest.lab.invalid"
    assert r.notify_flags == 1


# --- MSG_STATS ---------------------------------------------------------------

def test_msg_stats_layout_lp64():
    assert MSG_STATS_SIZE == 88
    _, lists = load("delivery-request-3.7.bin")
    raw = base64.b64decode(dict(lists[0])["time"])
    assert len(raw) == 88
    fields = struct.unpack("=10qi4x", raw)
    assert fields == (1795548755, 921017, 1795548755, 927769, 0, 0, 0, 0, 0, 0, 0)


@pytest.mark.parametrize("name", ["delivery-request-3.7.bin", "delivery-request-3.7-dsn-3rcpt.bin",
                                  "delivery-request-3.7-smtputf8.bin"])
def test_msg_stats_unpack_pack_round_trip_captured(name):
    _, lists = load(name)
    raw = base64.b64decode(dict(lists[0])["time"])
    assert MsgStats.unpack(raw).pack() == raw


def test_msg_stats_pack_exact():
    s = MsgStats(incoming_arrival=1795548762.272084, active_arrival=1795548762.277739,
                 agent_handoff=1795548763.5, conn_setup_done=0.0, deliver_done=7.000001,
                 reuse_count=3)
    raw = s.pack()
    assert struct.unpack("=10qi4x", raw) == (1795548762, 272084, 1795548762, 277739,
                                             1795548763, 500000, 0, 0, 7, 1, 3)
    assert MsgStats.unpack(raw) == s


def test_msg_stats_spec_example():
    # postfix-ipc.md §8: the time attribute of request 4384B210A35
    b64 = ("WuYFawAAAADUJgQAAAAAAFrmBWsAAAAA6zwEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
           "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==")
    assert len(b64) == 120
    s = MsgStats.unpack(base64.b64decode(b64))
    assert s == MsgStats(1795548762.272084, 1795548762.277739, 0.0, 0.0, 0.0, 0)


@pytest.mark.parametrize("size", [0, 44, 87, 89, 96])
def test_msg_stats_wrong_size(size):
    with pytest.raises(AttrError, match="msg_stats size mis-match: %d != 88" % size):
        MsgStats.unpack(b"\0" * size)


# --- 3.10+ request (sendopts) ------------------------------------------------

def test_sendopts_request_accepted():
    _, lists = load("delivery-request-3.7-smtputf8.bin")
    common = list(lists[0])
    assert common[7] == ("smtputf8", "15")
    common[7] = ("sendopts", str(0x10 | 0x20 | 15))   # new 3.10/3.11 bits are kept
    raw = encode(common) + encode(lists[1])
    d = Decoder()
    d.feed(raw)
    req, count = parse_common(d.next_list())
    assert count == 1
    assert req.sendopts_name == "sendopts"
    assert req.smtputf8 == 0x3F
    assert req.sender == "s\u00e9nder@lab.invalid"
    assert parse_recipient(d.next_list()).offset == 715


# --- malformed requests --------------------------------------------------------

def _common():
    _, lists = load("delivery-request-3.7.bin")
    return list(lists[0]), list(lists[1])


def test_missing_attribute():
    common, _ = _common()
    with pytest.raises(AttrError, match="missing attribute recipient_count"):
        parse_common(common[:-1])
    del common[5]                                     # nexthop gone: encoding is #6 now
    with pytest.raises(AttrError, match=r"unexpected attribute encoding .*expecting: nexthop"):
        parse_common(common)


def test_extra_attribute():
    common, _ = _common()
    with pytest.raises(AttrError, match="unexpected attribute junk"):
        parse_common(common + [("junk", "1")])


def test_reordered_attributes():
    common, _ = _common()
    common[8], common[9] = common[9], common[8]       # envelope_id before sender
    with pytest.raises(AttrError, match=r"unexpected attribute envelope_id .*expecting: sender"):
        parse_common(common)


def test_renamed_attribute():
    common, _ = _common()
    common[7] = ("utf8", "0")
    with pytest.raises(AttrError, match="expecting: smtputf8"):
        parse_common(common)


@pytest.mark.parametrize("index, value", [
    (0, "3x"), (0, "-1"), (3, ""), (4, "1e3"), (7, "4294967296"), (10, "two"),
    (22, "+1"), (11, "not base64!"),
])
def test_malformed_values(index, value):
    common, _ = _common()
    common[index] = (common[index][0], value)
    with pytest.raises(AttrError):
        parse_common(common)


def test_wrong_msg_stats_size():
    common, _ = _common()
    common[11] = ("time", base64.b64encode(b"\0" * 44).decode())
    with pytest.raises(AttrError, match="size mis-match"):
        parse_common(common)


@pytest.mark.parametrize("count", ["0", "4294967295", str(MAX_RECIPIENTS + 1)])
def test_bad_recipient_count(count):
    common, _ = _common()
    common[22] = ("recipient_count", count)
    with pytest.raises(AttrError, match="bad recipient count"):
        parse_common(common)


def test_long_offsets():
    common, rcpt = _common()
    common[3] = ("offset", "4294967296")
    req, _ = parse_common(common)
    assert req.data_offset == 4294967296
    rcpt[2] = ("offset", "18446744073709551615")      # %lu of -1: "no queue record"
    assert parse_recipient(rcpt).offset == -1


def test_recipient_errors():
    _, rcpt = _common()
    with pytest.raises(AttrError, match="missing attribute notify_flags in recipient list"):
        parse_recipient(rcpt[:-1])
    with pytest.raises(AttrError, match="unexpected attribute extra in recipient list"):
        parse_recipient(rcpt + [("extra", "")])
    swapped = [rcpt[1], rcpt[0]] + rcpt[2:]
    with pytest.raises(AttrError, match="expecting: original_recipient"):
        parse_recipient(swapped)
    bad = list(rcpt)
    bad[4] = ("notify_flags", "x")
    with pytest.raises(AttrError, match="notify_flags"):
        parse_recipient(bad)


# --- flags ------------------------------------------------------------------------

@pytest.mark.parametrize("flags, trace, only", [
    (3, 0, False), (6147, 0, False), (259, 0x100, True), (515, 0x200, True),
    (1027, 0x400, False), (0x2003, 0x2000, False),
])
def test_trace_flags(flags, trace, only):
    common, _ = _common()
    common[0] = ("flags", str(flags))
    req, _ = parse_common(common)
    assert req.flags == flags
    assert req.trace_flags == trace
    assert req.trace_only is only


# --- the reply ----------------------------------------------------------------------

def test_protocol_name():
    assert PROTOCOL == "delivery_request_protocol"


def test_reply_success_exact_bytes():
    assert encode(reply_attrs(0)) == (
        b"status\0\0diag_type\0\0diag_text\0\0mta_type\0\0mta_mname\0\0action\0\0reason\0\0"
        b"status\x000\0\0")
    assert len(encode(reply_attrs(0))) == 77          # what stock writes (strace)


def test_reply_defer_exact_bytes():
    assert encode(reply_attrs(-1)) == (
        b"status\0\0diag_type\0\0diag_text\0\0mta_type\0\0mta_mname\0\0action\0\0reason\0\0"
        b"status\x004294967295\0\0")
    assert encode(reply_attrs(-1, Dsn())) == encode(reply_attrs(-1))


def test_reply_with_hop_status():
    hop = Dsn(status="4.4.1", action="delayed",
              reason="connect to mx.example.org[192.0.2.25]:25: Connection refused")
    assert encode(reply_attrs(-1, hop)) == (
        b"status\x004.4.1\0diag_type\0\0diag_text\0\0mta_type\0\0mta_mname\0\0"
        b"action\x00delayed\0"
        b"reason\x00connect to mx.example.org[192.0.2.25]:25: Connection refused\0"
        b"status\x004294967295\0\0")


def test_reply_decodes_with_duplicate_status_name():
    d = Decoder()
    d.feed(encode(reply_attrs(0)))
    lst = d.next_list()
    assert [n for n, _ in lst] == ["status", "diag_type", "diag_text", "mta_type", "mta_mname",
                                   "action", "reason", "status"]
    assert lst[-1] == ("status", "0")


def test_dsn_attrs_order():
    dsn = Dsn("5.1.1", "smtp", "550 5.1.1 no", "dns", "mx.example.org", "failed", "r")
    assert dsn.attrs() == [("status", "5.1.1"), ("diag_type", "smtp"),
                           ("diag_text", "550 5.1.1 no"), ("mta_type", "dns"),
                           ("mta_mname", "mx.example.org"), ("action", "failed"),
                           ("reason", "r")]
