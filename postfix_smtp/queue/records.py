"""Queue file records: type byte, base-128 length (low group first), payload.

Pure code over a seekable binary file object: no locking, no sockets.
The reader is "transparent" like Postfix's rec_get(): it follows ``p``
pointer records, skips ``w`` padding and treats ``E`` as end of file.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: keep typing off the start-up path
    from typing import BinaryIO, Iterator

REC_SIZE = ord("C")
REC_TIME = ord("T")
REC_ATTR = ord("A")
REC_FROM = ord("S")
REC_RCPT = ord("R")
REC_DONE = ord("D")
REC_DRCP = ord("/")
REC_ORCP = ord("O")
REC_MESG = ord("M")
REC_NORM = ord("N")
REC_CONT = ord("L")
REC_DTXT = ord("w")
REC_PTR = ord("p")
REC_XTRA = ord("X")
REC_END = ord("E")

REC_EOF = -1
REC_ERROR = -2

#: Length bytes accepted (Postfix 3.7.22 and later reject a fifth).
MAX_LENGTH_BYTES = 4
MAX_REVERSE_JUMPS = 10000


class RecordError(Exception):
    """A malformed record; the message names the file and what was wrong."""


def encode_length(n: int) -> bytes:
    if n < 0:
        raise ValueError("negative record length")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_record(rtype: int | str, payload: bytes = b"") -> bytes:
    if isinstance(rtype, str):
        rtype = ord(rtype)
    return bytes([rtype]) + encode_length(len(payload)) + payload


class RecordReader:
    """Reads records from ``f`` starting at ``offset``.

    ``read()`` returns ``(type, payload)``; type is REC_EOF at end of file.
    Malformed input raises :class:`RecordError`.
    """

    def __init__(self, f: BinaryIO, path: str, offset: int | None = None,
                 transparent: bool = True) -> None:
        self.f = f
        self.path = path
        self.transparent = transparent
        self._reverse_jumps = 0
        self._last_jump = 0
        if offset is not None:
            f.seek(offset)

    def _raw(self) -> tuple[int, bytes]:
        f = self.f
        t = f.read(1)
        if not t:
            return REC_EOF, b""
        rtype = t[0]
        length = 0
        shift = 0
        for i in range(MAX_LENGTH_BYTES + 1):
            if i == MAX_LENGTH_BYTES:
                raise RecordError("%s: too many length bits, record type %d" % (self.path, rtype))
            b = f.read(1)
            if not b:
                raise RecordError("%s: unexpected EOF reading length, record type %d"
                                  % (self.path, rtype))
            length |= (b[0] & 0x7F) << shift
            if not b[0] & 0x80:
                break
            shift += 7
        payload = f.read(length)
        if len(payload) != length:
            raise RecordError("%s: unexpected EOF in data, record type %d length %d"
                              % (self.path, rtype, length))
        return rtype, payload

    def read(self) -> tuple[int, bytes]:
        while True:
            rtype, payload = self._raw()
            if not self.transparent:
                return rtype, payload
            if rtype == REC_PTR:
                text = payload.strip(b" ")
                if not text.isdigit():
                    raise RecordError("%s: malformed pointer record value: %s"
                                      % (self.path, payload.decode("ascii", "replace")))
                target = int(text)
                if target == 0:
                    continue
                if target <= self._last_jump:
                    self._reverse_jumps += 1
                    if self._reverse_jumps > MAX_REVERSE_JUMPS:
                        raise RecordError("%s: too many reverse jumps" % self.path)
                self._last_jump = target
                self.f.seek(target)
                continue
            if rtype == REC_DTXT:
                continue
            if rtype == REC_END:
                self.f.seek(0, 2)
            return rtype, payload

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        while True:
            rec = self.read()
            yield rec
            if rec[0] == REC_EOF:
                return
