"""The texts of stock's TLS debug logging (``smtp_tls_loglevel`` 2 to 4).

Pure formatting, no OpenSSL here; client.py feeds it.

- Level 2 ("ssl-debug") adds OpenSSL's handshake progress, as stock's info
  callback logs it: ``SSL_connect:SSLv3/TLS write client hello``,
  ``SSL3 alert write:fatal:handshake failure``, ``SSL_connect:error in ...``
  (:func:`info_text`).
- Level 3 ("ssl-handshake-packet-dump") logs every transfer between OpenSSL
  and the socket while the handshake runs: one line per read or write
  (:func:`io_line`), ``read from 55D0C45ABC30 [55D0C45B2413] (5 bytes => 5
  (0x5))`` or, when nothing moved, ``(5 bytes => -1)``, followed by the bytes
  (:func:`hex_lines`), 16 per line, hex and printable ASCII, each half split
  after the 8th byte, a trailing run of spaces and NULs cut short to one
  ``0199 - <SPACES/NULLS>`` line.
- Level 4 ("ssl-session-packet-dump") keeps dumping after the handshake and
  logs the plaintext that crosses the TLS layer: ``Write 26 chars: EHLO
  sender.example`` / ``Read 152 chars: 250-mx.example...`` (first 40 bytes,
  :func:`chars_line`).

The two addresses in an I/O line are the BIO and the buffer position; they
are process-specific in stock, and ours are our own buffers' addresses.
"""

from __future__ import annotations

WIDTH = 16            # bytes per dump line
SPLIT = 7             # the column after which both halves are split
PREVIEW = 40          # plaintext bytes shown in "Read/Write N chars"

# OpenSSL's long alert names (SSL_alert_desc_string_long(); codes missing here
# are "unknown" there too, TLS 1.3's newer alerts among them).
_ALERT_DESC = {
    0: "close notify", 10: "unexpected message", 20: "bad record mac",
    21: "decryption failed", 22: "record overflow", 30: "decompression failure",
    40: "handshake failure", 41: "no certificate", 42: "bad certificate",
    43: "unsupported certificate", 44: "certificate revoked", 45: "certificate expired",
    46: "certificate unknown", 47: "illegal parameter", 48: "unknown CA",
    49: "access denied", 50: "decode error", 51: "decrypt error",
    60: "export restriction", 70: "protocol version", 71: "insufficient security",
    80: "internal error", 90: "user canceled", 100: "no renegotiation",
    110: "unsupported extension", 111: "certificate unobtainable",
    112: "unrecognized name", 113: "bad certificate status response",
    114: "bad certificate hash value", 115: "unknown PSK identity",
    120: "no application protocol",
}
_ALERT_LEVEL = {1: "warning", 2: "fatal"}

# SSL_CB_* / SSL_ST_* bits (ssl.h; stable)
CB_LOOP = 0x01
CB_EXIT = 0x02
CB_READ = 0x04
CB_ALERT = 0x4000
ST_CONNECT = 0x1000
ST_ACCEPT = 0x2000
ST_MASK = 0x0FFF


def _is_print(b: int) -> bool:
    return 0x20 <= b < 0x7F


def hex_lines(data: bytes) -> list:
    """The dump lines of one transfer (stock's layout, see the module doc)."""
    end = len(data)
    while end > 0 and data[end - 1] in (0x00, 0x20):
        end -= 1
    out = []
    for row in range(0, end, WIDTH):
        chunk = data[row:min(row + WIDTH, end)]
        hexes = []
        chars = []
        for col, b in enumerate(chunk):
            hexes.append("%02x%s" % (b, "|" if col == SPLIT else " "))
            chars.append(chr(b) if _is_print(b) else ".")
            if col == SPLIT:
                chars.append(" ")
        hexes.append("   " * (WIDTH - len(chunk)))
        out.append("%04x %s %s" % (row, "".join(hexes), "".join(chars)))
    if end < len(data):
        out.append("%04x - <SPACES/NULLS>" % end)
    return out


def io_line(write: bool, bio: int, buf: int, asked: int, ret: int) -> str:
    """One BIO transfer: ``asked`` bytes requested, ``ret`` moved (<= 0: none)."""
    head = "%s %08X [%08X] (%d bytes => %d" % ("write to" if write else "read from",
                                               bio, buf, asked, ret)
    return head + (" (0x%X))" % ret if ret > 0 else ")")


def chars_line(write: bool, data: bytes, count: int | None = None) -> str:
    """``Write N chars: TEXT`` / ``Read N chars: TEXT``: the first 40 bytes,
    up to a NUL, as a C string would print."""
    n = len(data) if count is None else count
    text = bytes(data[:PREVIEW]).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    return "%s %d chars: %s" % ("Write" if write else "Read", n, text)


def alert_texts(value: int) -> tuple:
    """(level, description) of an alert as the info callback gets it
    (level << 8 | code)."""
    return (_ALERT_LEVEL.get(value >> 8, "unknown"),
            _ALERT_DESC.get(value & 0xFF, "unknown"))


def info_text(where: int, ret: int, state: str, error=None) -> str | None:
    """The line stock's info callback logs for one OpenSSL event, or None.

    ``state``: SSL_state_string_long(); ``error``: a callable giving
    SSL_get_error() for ``ret`` (asked only for a failed exit)."""
    w = where & ~ST_MASK
    side = "SSL_connect" if w & ST_CONNECT else "SSL_accept" if w & ST_ACCEPT else "unknown"
    if where & CB_LOOP:
        return "%s:%s" % (side, state)
    if where & CB_ALERT:
        if ret & 0xFF == 0:                     # close notify: not logged
            return None
        level, desc = alert_texts(ret)
        return "SSL3 alert %s:%s:%s" % ("read" if where & CB_READ else "write", level, desc)
    if where & CB_EXIT:
        if ret == 0:
            return "%s:failed in %s" % (side, state)
        if ret < 0:
            # SSL_ERROR_WANT_READ (2) and SSL_ERROR_WANT_WRITE (3) are not errors
            if error is not None and error() in (2, 3):
                return None
            return "%s:error in %s" % (side, state)
    return None
