"""postfix_smtp.queue.records and postfix_smtp.queue.file (queue-file.md §1-§9)."""

from __future__ import annotations

import fcntl
import io
import os

import pytest

from postfix_smtp.queue.file import (CorruptContent, Line, QueueFile, QueueFileFatal,
                                     QueueFileMissing, QueueNameError, hash_source,
                                     queue_id_ok, queue_name_ok, queue_path)
from postfix_smtp.queue.records import (MAX_LENGTH_BYTES, REC_END, REC_EOF, REC_PTR,
                                        REC_XTRA, RecordError, RecordReader, encode_length,
                                        encode_record)

# queue-file.md §9: deferred/7/70A24212897, a real Postfix 3.7.11 queue file (504 bytes).
WORKED_EXAMPLE_HEX = """
00000000: 435f 2020 2020 2020 2020 2020 2020 3235
00000010: 3620 2020 2020 2020 2020 2020 2020 3234
00000020: 3420 2020 2020 2020 2020 2020 2020 2020
00000030: 3120 2020 2020 2020 2020 2020 2020 2020
00000040: 3020 2020 2020 2020 2020 2020 2020 3235
00000050: 3620 2020 2020 2020 2020 2020 2020 2020
00000060: 3054 1131 3739 3535 3534 3635 3420 3435
00000070: 3639 3836 4116 6372 6561 7465 5f74 696d
00000080: 653d 3137 3935 3535 3436 3534 4115 7265
00000090: 7772 6974 655f 636f 6e74 6578 743d 6c6f
000000a0: 6361 6c46 0472 6f6f 7453 0b61 4078 2e65
000000b0: 7861 6d70 6c65 4120 6473 6e5f 6f72 6967
000000c0: 5f72 6370 743d 7266 6338 3232 3b62 4079
000000d0: 2e65 7861 6d70 6c65 4f0b 6240 792e 6578
000000e0: 616d 706c 6552 0b62 4079 2e65 7861 6d70
000000f0: 6c65 4d00 4e34 5265 6365 6976 6564 3a20
00000100: 6279 206d 782e 6c61 622e 696e 7661 6c69
00000110: 6420 2850 6f73 7466 6978 2c20 6672 6f6d
00000120: 2075 7365 7269 6420 3029 4e36 0969 6420
00000130: 3730 4132 3432 3132 3839 373b 2054 7565
00000140: 2c20 3234 204e 6f76 2032 3032 3620 3231
00000150: 3a31 303a 3534 202b 3030 3030 2028 5554
00000160: 4329 4e0a 5375 626a 6563 743a 2074 4e37
00000170: 4d65 7373 6167 652d 4964 3a20 3c32 3032
00000180: 3631 3132 3432 3131 3035 342e 3730 4132
00000190: 3432 3132 3839 3740 6d78 2e6c 6162 2e69
000001a0: 6e76 616c 6964 3e4e 2b44 6174 653a 2054
000001b0: 7565 2c20 3234 204e 6f76 2032 3032 3620
000001c0: 3231 3a31 303a 3534 202b 3030 3030 2028
000001d0: 5554 4329 4e18 4672 6f6d 3a20 726f 6f74
000001e0: 203c 6140 782e 6578 616d 706c 653e 4e00
000001f0: 4e02 6869 5800 4500
"""


def _unhex(dump: str) -> bytes:
    out = bytearray()
    for line in dump.strip().splitlines():
        addr, _, hexpart = line.partition(":")
        assert int(addr, 16) == len(out)
        out += bytes.fromhex(hexpart.replace(" ", ""))
    return bytes(out)


WORKED = _unhex(WORKED_EXAMPLE_HEX)

# The decoded table of §9: (offset, type, payload)
WORKED_RECORDS = [
    (0, "C", b"            256             244               1               0"
             b"             256               0"),
    (97, "T", b"1795554654 456986"),
    (116, "A", b"create_time=1795554654"),
    (140, "A", b"rewrite_context=local"),
    (163, "F", b"root"),
    (169, "S", b"a@x.example"),
    (182, "A", b"dsn_orig_rcpt=rfc822;b@y.example"),
    (216, "O", b"b@y.example"),
    (229, "R", b"b@y.example"),
    (242, "M", b""),
    (244, "N", b"Received: by mx.lab.invalid (Postfix, from userid 0)"),
    (298, "N", b"\tid 70A24212897; Tue, 24 Nov 2026 21:10:54 +0000 (UTC)"),
    (354, "N", b"Subject: t"),
    (366, "N", b"Message-Id: <20261124211054.70A24212897@mx.lab.invalid>"),
    (423, "N", b"Date: Tue, 24 Nov 2026 21:10:54 +0000 (UTC)"),
    (468, "N", b"From: root <a@x.example>"),
    (494, "N", b""),
    (496, "N", b"hi"),
    (500, "X", b""),
    (502, "E", b""),
]
WORKED_LINES = [p for off, t, p in WORKED_RECORDS if t == "N"]


def reader(data: bytes, offset: int | None = None, transparent: bool = True) -> RecordReader:
    return RecordReader(io.BytesIO(data), "active/TEST", offset, transparent)


def read_all(r: RecordReader) -> list:
    return [(chr(t) if t >= 0 else t, p) for t, p in r]


# --- length encoding ------------------------------------------------------

@pytest.mark.parametrize("n, hexbytes", [
    (0, "00"), (11, "0b"), (95, "5f"), (127, "7f"), (128, "8001"), (2048, "8010"),
    (16383, "ff7f"), (16384, "808001"), (2 ** 28 - 1, "ffffff7f"), (2 ** 28, "8080808001"),
])
def test_encode_length_table(n, hexbytes):
    assert encode_length(n) == bytes.fromhex(hexbytes)


def test_encode_length_negative():
    with pytest.raises(ValueError):
        encode_length(-1)


def test_encode_record():
    assert encode_record("N", b"hi") == b"N\x02hi"
    assert encode_record(ord("X")) == b"X\x00"
    assert encode_record("L", b"x" * 2048)[:3] == b"\x4c\x80\x10"   # §9: L, length 2048


@pytest.mark.parametrize("n", [0, 1, 127, 128, 2047, 2048, 16383, 16384, 70000])
def test_length_round_trip(n):
    data = encode_record("N", b"z" * n) + b"X\x00"
    assert read_all(reader(data)) == [("N", b"z" * n), ("X", b""), (REC_EOF, b"")]


# --- the worked example, byte for byte -----------------------------------------

def test_worked_example_bytes():
    assert len(WORKED) == 504
    assert WORKED[:2] == b"C\x5f"
    assert WORKED[229] == ord("R")
    assert WORKED.endswith(b"N\x02hiX\x00E\x00")


def test_worked_example_rebuilt_from_table():
    assert b"".join(encode_record(t, p) for _, t, p in WORKED_RECORDS) == WORKED


def test_worked_example_raw_records_and_offsets():
    f = io.BytesIO(WORKED)
    r = RecordReader(f, "deferred/7/70A24212897", 0, transparent=False)
    got = []
    while True:
        off = f.tell()
        t, p = r.read()
        if t == REC_EOF:
            break
        got.append((off, chr(t), p))
    assert got == WORKED_RECORDS


def test_worked_example_size_record_consistency():
    fields = [int(x) for x in WORKED_RECORDS[0][2].split()]
    assert len(WORKED_RECORDS[0][2]) == 95
    assert fields == [256, 244, 1, 0, 256, 0]
    assert fields[1] == 242 + 2                      # data_offset = offset of M + 2
    assert fields[0] == fields[4] == 500 - 244       # up to the X record


def test_worked_example_transparent_from_data_offset():
    assert read_all(reader(WORKED, 244)) == (
        [("N", p) for p in WORKED_LINES] + [("X", b""), ("E", b""), (REC_EOF, b"")])


def test_worked_example_wire_form():
    wire = b"".join(p + b"\r\n" for p in WORKED_LINES) + b".\r\n"
    assert wire == (b"Received: by mx.lab.invalid (Postfix, from userid 0)\r\n"
                    b"\tid 70A24212897; Tue, 24 Nov 2026 21:10:54 +0000 (UTC)\r\n"
                    b"Subject: t\r\n"
                    b"Message-Id: <20261124211054.70A24212897@mx.lab.invalid>\r\n"
                    b"Date: Tue, 24 Nov 2026 21:10:54 +0000 (UTC)\r\n"
                    b"From: root <a@x.example>\r\n\r\nhi\r\n.\r\n")


# --- transparent reading: p, w, E -------------------------------------------------

def build_edited_file() -> tuple[bytes, int]:
    """N a / p->heap / w / N c / X / E / heap: N b, p->back.  Returns (data, data_offset)."""
    pad = b"%15d" % 0
    head = encode_record("M")
    data_offset = len(head)
    body = bytearray(head)
    body += encode_record("N", b"a")
    ptr_at = len(body)
    body += encode_record("p", pad)                  # overwritten below
    resume = len(body)
    body += encode_record("w", b"              0")   # padding, skipped
    body += encode_record("N", b"c")
    body += encode_record("p", pad)                  # dummy pointer (0): ignored
    body += encode_record("X")
    body += encode_record("E")
    heap = len(body)
    body += encode_record("N", b"b")
    body += encode_record("p", b"%15d" % resume)
    body[ptr_at:ptr_at + 17] = encode_record("p", b"%15d" % heap)
    return bytes(body), data_offset


def test_transparent_follows_pointers_skips_padding():
    data, off = build_edited_file()
    assert read_all(reader(data, off)) == [("N", b"a"), ("N", b"b"), ("N", b"c"), ("X", b""),
                                          ("E", b""), (REC_EOF, b"")]


def test_non_transparent_shows_everything():
    data, off = build_edited_file()
    types = [t for t, _ in read_all(reader(data, off, transparent=False))]
    assert types == ["N", "p", "w", "N", "p", "X", "E", "N", "p", REC_EOF]


def test_end_record_seeks_to_eof():
    data = encode_record("N", b"a") + encode_record("E") + encode_record("N", b"heap")
    r = reader(data, 0)
    assert r.read() == (ord("N"), b"a")
    assert r.read() == (REC_END, b"")
    assert r.read() == (REC_EOF, b"")


def test_pointer_leading_blanks_and_plain_digits():
    data = encode_record("p", b"  12") + encode_record("N", b"skip") + encode_record("N", b"ok")
    assert data[12:14] == b"N\x02"
    assert read_all(reader(data, 0)) == [("N", b"ok"), (REC_EOF, b"")]


@pytest.mark.parametrize("value", [b"12x", b"-5", b"0x10", b"1 2", b"\xff"])
def test_malformed_pointer(value):
    data = encode_record("p", value) + encode_record("X")
    with pytest.raises(RecordError, match="active/TEST: malformed pointer record value"):
        reader(data, 0).read()


def test_reverse_jump_loop():
    data = encode_record("N", b"x") + encode_record("p", b"%15d" % 3)   # jumps to itself
    assert data[3:4] == b"p"
    r = reader(data, 0)
    assert r.read() == (ord("N"), b"x")
    with pytest.raises(RecordError, match="active/TEST: too many reverse jumps"):
        r.read()


def test_many_forward_jumps_are_fine():
    # a chain of forward jumps never trips the reverse-jump guard
    data = bytearray()
    for i in range(12000):
        nxt = len(data) + 17
        data += encode_record("p", b"%15d" % nxt)
    data += encode_record("N", b"end")
    assert reader(bytes(data), 0).read() == (ord("N"), b"end")


# --- malformed records --------------------------------------------------------------

def test_max_length_bytes():
    assert MAX_LENGTH_BYTES == 4


def test_too_many_length_bits():
    with pytest.raises(RecordError, match="active/TEST: too many length bits, record type 78"):
        reader(b"N\x80\x80\x80\x80\x01" + b"x" * 10, 0).read()


def test_four_length_bytes_accepted():
    # 2^28-1 is accepted as a length; the data is then missing
    with pytest.raises(RecordError,
                       match="unexpected EOF in data, record type 78 length 268435455"):
        reader(b"N\xff\xff\xff\x7f" + b"x" * 10, 0).read()


@pytest.mark.parametrize("data", [b"N", b"N\x80", b"N\x80\x80"])
def test_eof_in_length(data):
    with pytest.raises(RecordError, match="unexpected EOF reading length, record type 78"):
        reader(data, 0).read()


def test_eof_in_data():
    with pytest.raises(RecordError, match="unexpected EOF in data, record type 78 length 5"):
        reader(b"N\x05abc", 0).read()


def test_eof_before_type_is_not_an_error():
    assert reader(b"", 0).read() == (REC_EOF, b"")
    assert reader(b"X\x00", 2).read() == (REC_EOF, b"")


# --- QueueFile ------------------------------------------------------------------------

@pytest.fixture
def worked_file(tmp_path):
    path = tmp_path / "70A24212897"
    path.write_bytes(WORKED)
    os.chmod(path, 0o700)
    return path


def test_content_yields_the_eight_lines(worked_file):
    qf = QueueFile.open(str(worked_file))
    try:
        lines = list(qf.content(244))
    finally:
        qf.close()
    assert lines == [Line(p, True) for p in WORKED_LINES]
    assert len(lines) == 8


def test_content_stops_at_x(tmp_path):
    # records after X (extracted segment, heap) are never looked at
    path = tmp_path / "Q"
    path.write_bytes(encode_record("M") + encode_record("N", b"one") + encode_record("X")
                     + b"\xffgarbage")
    qf = QueueFile.open(str(path))
    try:
        assert list(qf.content(2)) == [Line(b"one", True)]
    finally:
        qf.close()


def test_content_l_records(tmp_path):
    path = tmp_path / "Q"
    path.write_bytes(encode_record("L", b"x" * 2048) + encode_record("N", b"y" * 52)
                     + encode_record("L", b"tail") + encode_record("X") + encode_record("E"))
    qf = QueueFile.open(str(path))
    try:
        assert list(qf.content(0)) == [Line(b"x" * 2048, False), Line(b"y" * 52, True),
                                       Line(b"tail", False)]
    finally:
        qf.close()


def test_content_through_pointers(tmp_path):
    data, off = build_edited_file()
    path = tmp_path / "Q"
    path.write_bytes(data)
    qf = QueueFile.open(str(path))
    try:
        assert [ln.text for ln in qf.content(off)] == [b"a", b"b", b"c"]
    finally:
        qf.close()


@pytest.mark.parametrize("tail, rtype", [
    (encode_record("E"), 69),                   # E before X
    (b"", -1),                                  # EOF
    (b"N\x05ab", -2),                            # bad record
    (encode_record("R", b"x@y"), ord("R")),     # unexpected type
    (encode_record("p", b"zz"), -2),             # malformed pointer
])
def test_corrupt_content(tmp_path, tail, rtype):
    path = tmp_path / "Q"
    path.write_bytes(encode_record("N", b"ok") + tail)
    qf = QueueFile.open(str(path))
    try:
        got = []
        with pytest.raises(CorruptContent) as info:
            for line in qf.content(0):
                got.append(line)
    finally:
        qf.close()
    assert got == [Line(b"ok", True)]
    assert info.value.record_type == rtype
    if rtype >= -1:
        assert str(info.value) == "bad record type: %d" % rtype
    else:
        assert str(path) in info.value.detail


def test_mark_done_changes_exactly_one_byte(worked_file):
    qf = QueueFile.open(str(worked_file))
    try:
        assert [ln.text for ln in qf.content(244)] == WORKED_LINES   # read first, then mark
        qf.mark_done(229)
    finally:
        qf.close()
    after = worked_file.read_bytes()
    expected = bytearray(WORKED)
    expected[229] = ord("D")
    assert after == bytes(expected)
    assert len(after) == 504
    assert [i for i in range(504) if after[i] != WORKED[i]] == [229]


def test_mark_done_minus_one_is_noop(worked_file):
    qf = QueueFile.open(str(worked_file))
    try:
        qf.mark_done(-1)
    finally:
        qf.close()
    assert worked_file.read_bytes() == WORKED


@pytest.mark.parametrize("offset", [0, -2])
def test_mark_done_bad_offset(worked_file, offset):
    qf = QueueFile.open(str(worked_file))
    try:
        with pytest.raises(QueueFileFatal):
            qf.mark_done(offset)
    finally:
        qf.close()
    assert worked_file.read_bytes() == WORKED


def test_shared_lock_taken(worked_file):
    qf = QueueFile.open(str(worked_file))
    other = os.open(str(worked_file), os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)      # what a new qmgr tries
        fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)          # parallel agents: fine
        fcntl.flock(other, fcntl.LOCK_UN)
        qf.close()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)          # released on close
    finally:
        os.close(other)


def test_open_fails_when_exclusively_locked(worked_file):
    other = os.open(str(worked_file), os.O_RDONLY)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(QueueFileFatal, match="shared lock"):
            QueueFile.open(str(worked_file))
    finally:
        os.close(other)


def test_open_missing(tmp_path):
    with pytest.raises(QueueFileMissing):
        QueueFile.open(str(tmp_path / "NOPE"))


def test_open_not_regular(tmp_path):
    with pytest.raises(QueueFileFatal, match="not a regular file"):
        QueueFile.open(str(tmp_path))
    link = tmp_path / "link"
    target = tmp_path / "target"
    target.write_bytes(WORKED)
    link.symlink_to(target)
    with pytest.raises(QueueFileFatal, match="not a regular file"):
        QueueFile.open(str(link))


def test_mark_corrupt(worked_file):
    qf = QueueFile.open(str(worked_file))
    try:
        qf.mark_corrupt()
    finally:
        qf.close()
    assert os.stat(worked_file).st_mode & 0o777 == 0o400


# --- names and hashing (§1.1, §1.2) -------------------------------------------------------

DEFAULT_HASH = ["deferred", "defer"]


@pytest.mark.parametrize("name, qid, names, depth, path", [
    ("active", "70A24212897", DEFAULT_HASH, 1, "active/70A24212897"),
    ("deferred", "70A24212897", DEFAULT_HASH, 1, "deferred/7/70A24212897"),
    ("deferred", "70A24212897", DEFAULT_HASH, 2, "deferred/7/0/70A24212897"),
    ("defer", "70A24212897", DEFAULT_HASH, 1, "defer/7/70A24212897"),
    ("deferred", "4jYwTS3XXfzJLcd", DEFAULT_HASH, 1, "deferred/7/4jYwTS3XXfzJLcd"),
    ("deferred", "4jYwTS3XXfzJLcd", DEFAULT_HASH, 2, "deferred/7/9/4jYwTS3XXfzJLcd"),
    ("active", "4jYwTS3XXfzJLcd", DEFAULT_HASH, 1, "active/4jYwTS3XXfzJLcd"),
    ("active", "70A24212897", ["deferred", "defer", "active"], 1, "active/7/70A24212897"),
    ("active", "70A24212897", ["DEFERRED", "Active"], 1, "active/7/70A24212897"),
    ("Deferred", "70A24212897", DEFAULT_HASH, 1, "Deferred/7/70A24212897"),
    ("deferred", "AB", DEFAULT_HASH, 3, "deferred/A/B/_/AB"),
    ("deferred", "70A24212897", DEFAULT_HASH, 0, "deferred/70A24212897"),
    ("deferred", "4jYwTS3XXfzJLcd", DEFAULT_HASH, 6, "deferred/7/9/D/5/2/_/4jYwTS3XXfzJLcd"),
])
def test_queue_path(name, qid, names, depth, path):
    assert queue_path(name, qid, names, depth) == path


def test_hash_source():
    assert hash_source("70A24212897") == "70A24212897"
    assert hash_source("4jYwTS3XXfzJLcd") == "79D52"          # 3XXf = 499026 = 0x79D52
    assert int("79D52", 16) == 499026
    # the last z counts, and only at index >= 10
    assert hash_source("0000000000z") == "00000"
    assert hash_source("000000001z") == "000000001z"
    assert hash_source("zjYwTS3XXfzJLcd") == "79D52"
    # a vowel is not in the safe alphabet: decode error -> 0
    assert hash_source("4jYwTS3aXfzJLcd") == "00000"


@pytest.mark.parametrize("name", ["", "act/ive", "a" * 101, "act ive", "\u00e4ctive", "."])
def test_bad_queue_name(name):
    assert not queue_name_ok(name)
    with pytest.raises(QueueNameError, match="bad mail queue name"):
        queue_path(name, "70A24212897", DEFAULT_HASH, 1)


@pytest.mark.parametrize("qid", ["", "../etc", "a" * 256, "70A 24", "70A-24", "7\u00e9"])
def test_bad_queue_id(qid):
    assert not queue_id_ok(qid)
    with pytest.raises(QueueNameError, match="bad mail queue ID"):
        queue_path("active", qid, DEFAULT_HASH, 1)


def test_good_names():
    assert queue_name_ok("a" * 100)
    assert queue_id_ok("a" * 255)
    assert queue_id_ok("flush_log_name_1")


def test_reader_constants():
    assert (REC_PTR, REC_XTRA, REC_END) == (ord("p"), ord("X"), ord("E"))
