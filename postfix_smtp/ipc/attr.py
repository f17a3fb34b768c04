"""Postfix attribute streams, null-terminated form (attr_print0/attr_scan0).

A message is a list of ``name NUL value NUL`` pairs closed by one extra NUL
(an empty name).  Integers travel as unsigned decimal text (-1 is
``4294967295``), binary values as base64.  This module is a pure codec:
:func:`encode` turns pairs into bytes, :class:`Decoder` turns bytes into
lists of pairs, with hard limits so a hostile or broken peer cannot make the
agent buffer without bound.  :func:`expect` checks a list against the exact
names and order a Postfix reader would insist on (``ATTR_FLAG_STRICT``).
"""

from __future__ import annotations

import base64
import binascii
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: keep typing off the start-up path
    from typing import Iterable, Sequence, Union
    Value = Union[str, int, bytes]

#: Longest name or value we accept from a peer (a recipient address, a DSN
#: text, a base64 MSG_STATS are all far below this).
MAX_TOKEN = 1 << 17
#: Most attributes in one list (Postfix caps hash reads at 1024).
MAX_ATTRS = 1024

UINT_MASK = 0xFFFFFFFF
ULONG_MASK = 0xFFFFFFFFFFFFFFFF


class AttrError(Exception):
    """The peer sent something a Postfix reader would reject."""


def _text(value: Value) -> bytes:
    if isinstance(value, bool):  # bool is an int; Postfix has no bool on these wires
        value = int(value)
    if isinstance(value, int):
        return str(value & (ULONG_MASK if value > UINT_MASK else UINT_MASK)).encode()
    if isinstance(value, bytes):
        return base64.b64encode(value)
    return value.encode("utf-8", "surrogateescape")


def encode(pairs: Iterable[tuple[str, Value]]) -> bytes:
    """One attribute list, terminator included.

    ``int`` values are printed unsigned like ``%u`` (``-1`` -> ``4294967295``),
    ``bytes`` values are base64 (the "data" type), ``str`` values go raw.
    """
    out = bytearray()
    for name, value in pairs:
        data = _text(value)
        if b"\0" in data or "\0" in name:
            raise AttrError("NUL byte in attribute %s" % name)
        out += name.encode()
        out += b"\0"
        out += data
        out += b"\0"
    out += b"\0"
    return bytes(out)


class Decoder:
    """Incremental decoder: feed bytes, take complete attribute lists.

    Values are returned as ``str`` decoded with ``surrogateescape`` so that
    arbitrary bytes (8-bit addresses) survive a round trip.
    """

    def __init__(self, max_token: int = MAX_TOKEN, max_attrs: int = MAX_ATTRS) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._current: list[tuple[str, str]] = []
        self._name: str | None = None
        self._lists: list[list[tuple[str, str]]] = []
        self.max_token = max_token
        self.max_attrs = max_attrs

    def feed(self, data: bytes) -> None:
        self._buf += data
        self._parse()

    def _parse(self) -> None:
        buf = self._buf
        while True:
            end = buf.find(b"\0", self._pos)
            if end < 0:
                if len(buf) - self._pos > self.max_token:
                    raise AttrError("attribute %s longer than %d bytes"
                                    % ("value" if self._name is not None else "name",
                                       self.max_token))
                break
            if end - self._pos > self.max_token:  # same limit when the NUL came in the same read
                raise AttrError("attribute %s longer than %d bytes"
                                % ("value" if self._name is not None else "name", self.max_token))
            token = bytes(buf[self._pos:end]).decode("utf-8", "surrogateescape")
            self._pos = end + 1
            if self._name is None:
                if token == "":
                    self._lists.append(self._current)
                    self._current = []
                else:
                    if len(self._current) >= self.max_attrs:
                        raise AttrError("more than %d attributes in one list" % self.max_attrs)
                    self._name = token
            else:
                self._current.append((self._name, token))
                self._name = None
        if self._pos > 65536 or self._pos == len(buf):
            del buf[:self._pos]
            self._pos = 0

    def next_list(self) -> list[tuple[str, str]] | None:
        """The oldest complete list, or None if none is complete yet."""
        if self._lists:
            return self._lists.pop(0)
        return None

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished list are buffered."""
        return bool(self._current) or self._name is not None or self._pos < len(self._buf)


# --- typed access -------------------------------------------------------

def parse_int(name: str, text: str, bits: int = 32) -> int:
    """Postfix's ``%u`` reader: all digits, within range; returns signed C value."""
    if not text.isdigit() or not text.isascii():
        raise AttrError("malformed numerical data for attribute %s: %r" % (name, text[:40]))
    value = int(text)
    limit = 1 << bits
    if value >= limit:
        raise AttrError("number out of range for attribute %s: %s" % (name, text[:40]))
    if value >= limit >> 1:  # the C side stores it in a signed int/long
        value -= limit
    return value


def parse_data(name: str, text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise AttrError("malformed base64 data for attribute %s" % name) from None


def expect(pairs: Sequence[tuple[str, str]], names: Sequence[str], what: str) -> list[str]:
    """Check a list against the exact names, in order, nothing missing or extra.

    ``names`` entries may be alternatives separated by ``|`` (for an attribute
    that was renamed between Postfix versions).  Returns the values.
    """
    values = []
    for i, want in enumerate(names):
        if i >= len(pairs):
            raise AttrError("missing attribute %s in %s" % (want.split("|")[0], what))
        got = pairs[i][0]
        if got not in want.split("|"):
            raise AttrError("unexpected attribute %s in %s (expecting: %s)"
                            % (got[:60], what, want.split("|")[0]))
        values.append(pairs[i][1])
    if len(pairs) > len(names):
        raise AttrError("unexpected attribute %s in %s" % (pairs[len(names)][0][:60], what))
    return values
