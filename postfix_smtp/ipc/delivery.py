"""The delivery request protocol between qmgr(8) and a delivery agent.

After accepting qmgr's connection the agent announces
``delivery_request_protocol``; qmgr sends one list of 23 attributes and then
``recipient_count`` recipient lists; the agent answers with a "hop status"
DSN and a numeric status (0: every recipient finished; -1: retry the file).
Pure code: parsing and rendering only.
"""

from __future__ import annotations

import struct
from ..valueclass import dataclass, field

from .attr import AttrError, expect, parse_data, parse_int

PROTOCOL = "delivery_request_protocol"

# Request flags (deliver_request.h)
FLAG_SUCCESS = 0x0001
FLAG_BOUNCE = 0x0002
FLAG_MTA_VRFY = 0x0100
FLAG_USR_VRFY = 0x0200
FLAG_RECORD = 0x0400
FLAG_CONN_LOAD = 0x0800
FLAG_CONN_STORE = 0x1000
FLAG_REC_DLY_SENT = 0x2000
TRACE_FLAGS = FLAG_MTA_VRFY | FLAG_USR_VRFY | FLAG_RECORD | FLAG_REC_DLY_SENT
TRACE_ONLY = FLAG_MTA_VRFY | FLAG_USR_VRFY

# DSN NOTIFY bits (dsn_mask.h)
NOTIFY_NEVER = 1
NOTIFY_SUCCESS = 2
NOTIFY_FAILURE = 4
NOTIFY_DELAY = 8

# SMTPUTF8 / sendopts bits
SMTPUTF8_REQUESTED = 1
SMTPUTF8_HEADER = 2
SMTPUTF8_SENDER = 4
SMTPUTF8_RCPT = 8

STATUS_OK = 0
STATUS_DEFER = -1

COMMON_NAMES = (
    "flags", "queue_name", "queue_id", "offset", "size", "nexthop", "encoding",
    "smtputf8|sendopts", "sender", "envelope_id", "ret_flags", "time",
    "log_client_name", "log_client_address", "log_client_port", "log_protocol_name",
    "log_helo_name", "sasl_method", "sasl_username", "sasl_sender", "log_ident",
    "rewrite_context", "recipient_count",
)
RECIPIENT_NAMES = ("original_recipient", "recipient", "offset", "dsn_orig_rcpt", "notify_flags")

#: Most recipients in one request we accept (qmgr's own limits are far lower).
MAX_RECIPIENTS = 100000


#: struct MSG_STATS in the native ABI: five struct timeval (time_t, suseconds_t:
#: C longs on Linux) and an int reuse_count, padded to the struct's alignment
#: (88 bytes on LP64, 44 on 32-bit).  The trailing "0l" adds that padding.
_MSG_STATS = struct.Struct("@10li0l")
MSG_STATS_SIZE = _MSG_STATS.size


@dataclass
class MsgStats:
    """Delivery timestamps (seconds as floats; 0 = unknown) and reuse count."""

    incoming_arrival: float = 0.0
    active_arrival: float = 0.0
    agent_handoff: float = 0.0
    conn_setup_done: float = 0.0
    deliver_done: float = 0.0
    reuse_count: int = 0

    @classmethod
    def unpack(cls, raw: bytes) -> "MsgStats":
        if len(raw) != MSG_STATS_SIZE:
            raise AttrError("msg_stats size mis-match: %d != %d" % (len(raw), MSG_STATS_SIZE))
        v = _MSG_STATS.unpack(raw)
        t = [v[i] + v[i + 1] / 1e6 for i in range(0, 10, 2)]
        return cls(t[0], t[1], t[2], t[3], t[4], v[10])

    def pack(self) -> bytes:
        fields = []
        for x in (self.incoming_arrival, self.active_arrival, self.agent_handoff,
                  self.conn_setup_done, self.deliver_done):
            sec = int(x)
            usec = int(round((x - sec) * 1e6))
            if usec >= 1000000:
                sec, usec = sec + 1, usec - 1000000
            fields += [sec, usec]
        return _MSG_STATS.pack(*fields, self.reuse_count)


@dataclass
class Recipient:
    original: str
    address: str
    offset: int
    dsn_orig_rcpt: str
    notify_flags: int

    def attrs(self) -> list[tuple[str, object]]:
        # offset is a C long: -1 travels as 18446744073709551615, not as 32-bit
        return [("original_recipient", self.original), ("recipient", self.address),
                ("offset", str(self.offset & 0xFFFFFFFFFFFFFFFF)),
                ("dsn_orig_rcpt", self.dsn_orig_rcpt),
                ("notify_flags", self.notify_flags)]


@dataclass
class DeliveryRequest:
    flags: int
    queue_name: str
    queue_id: str
    data_offset: int
    data_size: int
    nexthop: str
    encoding: str
    smtputf8: int
    sender: str
    envelope_id: str
    ret_flags: int
    stats: MsgStats
    client_name: str
    client_addr: str
    client_port: str
    client_proto: str
    client_helo: str
    sasl_method: str
    sasl_username: str
    sasl_sender: str
    log_ident: str
    rewrite_context: str
    recipients: list[Recipient] = field(default_factory=list)
    sendopts_name: str = "smtputf8"

    @property
    def trace_flags(self) -> int:
        return self.flags & TRACE_FLAGS

    @property
    def trace_only(self) -> bool:
        return bool(self.flags & TRACE_ONLY)


def parse_common(pairs: list[tuple[str, str]]) -> tuple[DeliveryRequest, int]:
    """Parse qmgr's first list; returns the request and the recipient count."""
    v = expect(pairs, COMMON_NAMES, "delivery request")
    rcpt_count = parse_int("recipient_count", v[22])
    if rcpt_count <= 0 or rcpt_count > MAX_RECIPIENTS:
        raise AttrError("bad recipient count: %s" % v[22])
    req = DeliveryRequest(
        flags=parse_int("flags", v[0]),
        queue_name=v[1], queue_id=v[2],
        data_offset=parse_int("offset", v[3], 64),
        data_size=parse_int("size", v[4], 64),
        nexthop=v[5], encoding=v[6],
        smtputf8=parse_int(pairs[7][0], v[7]),
        sender=v[8], envelope_id=v[9],
        ret_flags=parse_int("ret_flags", v[10]),
        stats=MsgStats.unpack(parse_data("time", v[11])),
        client_name=v[12], client_addr=v[13], client_port=v[14], client_proto=v[15],
        client_helo=v[16], sasl_method=v[17], sasl_username=v[18], sasl_sender=v[19],
        log_ident=v[20], rewrite_context=v[21], sendopts_name=pairs[7][0],
    )
    return req, rcpt_count


def parse_recipient(pairs: list[tuple[str, str]]) -> Recipient:
    v = expect(pairs, RECIPIENT_NAMES, "recipient list")
    return Recipient(original=v[0], address=v[1], offset=parse_int("offset", v[2], 64),
                     dsn_orig_rcpt=v[3], notify_flags=parse_int("notify_flags", v[4]))


@dataclass(frozen=True)
class Dsn:
    """The seven DSN attributes Postfix passes around (dsn_print.c order)."""

    status: str = ""
    diag_type: str = ""
    diag_text: str = ""
    mta_type: str = ""
    mta_mname: str = ""
    action: str = ""
    reason: str = ""

    def attrs(self) -> list[tuple[str, object]]:
        return [("status", self.status), ("diag_type", self.diag_type),
                ("diag_text", self.diag_text), ("mta_type", self.mta_type),
                ("mta_mname", self.mta_mname), ("action", self.action),
                ("reason", self.reason)]


def reply_attrs(status: int, hop: Dsn | None = None) -> list[tuple[str, object]]:
    """The agent's final reply: hop status DSN then the numeric status."""
    return (hop or Dsn()).attrs() + [("status", status)]

