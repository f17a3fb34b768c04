"""MIME-aware content output: the 8BITMIME -> 7BIT downgrade of smtp(8).

:class:`MimeDowngrade` is a sans-I/O reimplementation of what Postfix 3.7's
smtp(8) does with the message content when it runs it through its MIME
parser (mime_state) instead of copying the queue file records verbatim:
queue-file text records go in, output records come out, and the caller
passes those to :class:`postfix_smtp.smtp.content.TextEncoder` (dot-stuffing
and ``smtp_line_length_limit`` folding apply to the *output*).

What the parser does (every effect also happens when nothing is converted):

- header lines are reassembled: an ``L`` piece is joined with the next
  record, a continuation line (starting with SP or TAB) is appended after an
  internal newline; a header is cut (silently) once it has reached
  ``header_size_limit`` bytes -- the piece that crosses the limit is still
  appended, later pieces are dropped;
- the obsolete ``Name :`` form is normalised to ``Name:``;
- a header is written again line by line (one complete record per line);
- if the *primary* header block ends with a non-empty line that is not a
  header, an empty line is inserted before it;
- with ``downgrade``: Content-Type / Content-Transfer-Encoding are tracked
  per header block (default text/plain, 7bit), multipart boundaries
  (truncated to ``boundary_limit`` bytes for matching) and message/rfc822
  recursion are followed; a part whose Content-Transfer-Encoding is ``8bit``
  or ``binary`` loses that header, gets ``Content-Transfer-Encoding:
  quoted-printable`` (leaf) or ``7bit`` (multipart/*, message/* except
  message/global) as the last header of its block, and a leaf body is
  quoted-printable encoded.  Everything else passes unchanged, 8-bit bytes
  included.  A multipart boundary that would be the ``nesting_limit + 3``-th
  open one (stock counts from -1 and refuses when the level is already above
  the limit: limit 2 allows 4 nested multiparts) sets ``errors =
  {"nesting"}``; this is noticed when the Content-Type header is complete,
  i.e. while processing the record after it.  The caller must then stop
  feeding records, fail the message with ``5.6.0 MIME nesting exceeds
  safety limit`` (:attr:`MimeDowngrade.error`) and drop the connection
  without the final ``.``.  Stock still writes the output of that last
  record (everything returned by that ``record()`` call) before it closes.

When to use it (smtp(8), per session, evaluated at DATA time)::

    downgrade = downgrade_wanted(server_8bitmime=..., disable_mime_output_conversion=...,
                                 encoding=request.encoding)

``server_8bitmime`` is the feature *after* the SMTPUTF8 rule (a server that
offers SMTPUTF8 but not 8BITMIME counts as offering 8BITMIME).  The same
condition suppresses ``SIZE=`` in MAIL FROM (the 5.3.4 size-limit check is
not affected).  Without a downgrade the parser is still needed for
``smtp_generic_maps`` (``disable_mime=True``: primary headers only) and for
header/body checks (full MIME, no conversion); otherwise records go straight
to the TextEncoder.

The prepended headers (Return-Path, X-Original-To, Delivered-To) are fed as
complete records before the queue file content, exactly like the content.

Header and body hooks (for generic maps and header/body checks later):

- ``header_callback(header_class, info, text) -> iterable of lines``:
  ``header_class`` is :data:`PRIMARY`, :data:`MULTIPART` or :data:`NESTED`;
  ``info`` is a :class:`HeaderInfo` for a known header name (None for other
  names and for the generated Content-Transfer-Encoding header); ``text`` is
  the reassembled header (``Name: value``, continuation lines joined with
  ``\\n``).  The returned byte strings are written as complete lines, in
  order (return ``[]`` to drop the header).  Default: ``text.split(b"\\n")``.
- ``body_callback(text, complete) -> iterable of (text, complete)``: every
  body output record (after quoted-printable conversion, as stock applies
  smtp_body_checks), including the inserted empty line.  Default: itself.
"""

from __future__ import annotations

from ..valueclass import dataclass
from typing import Callable, Iterable, List, Optional, Tuple

__all__ = [
    "MimeDowngrade", "HeaderInfo", "header_opts_find", "downgrade_wanted",
    "is_header_buf", "header_token", "MIME_ERRORS", "PRIMARY", "MULTIPART", "NESTED",
]

Record = Tuple[bytes, bool]

# header classes (mime_state.h MIME_HDR_*) -- also the header parser states
PRIMARY = 1
MULTIPART = 2
NESTED = 3
_BODY = 4

# content types / subtypes
_CT_OTHER, _CT_TEXT, _CT_MESSAGE, _CT_MULTIPART = 0, 1, 2, 3
_ST_OTHER, _ST_PLAIN, _ST_RFC822, _ST_PARTIAL, _ST_EXTERN_BODY, _ST_GLOBAL = 0, 1, 2, 3, 4, 5

# encodings and domains (same codes, so "domain only" is encoding == domain)
ENC_QP = 1
ENC_BASE64 = 2
ENC_7BIT = 7
ENC_8BIT = 8
ENC_BINARY = 9

_ENCODING_MAP = (           # RFC 2045: name, encoding, domain
    (b"7bit", ENC_7BIT, ENC_7BIT),
    (b"8bit", ENC_8BIT, ENC_8BIT),
    (b"binary", ENC_BINARY, ENC_BINARY),
    (b"base64", ENC_BASE64, ENC_7BIT),
    (b"quoted-printable", ENC_QP, ENC_7BIT),
)

# record types as mime_state sees them
_NORM = 1
_CONT = 2
_OTHER = 3          # any non-text record: end of content

#: error name -> (enhanced status, text) as stock reports it
MIME_ERRORS = {
    "nesting": ("5.6.0", "MIME nesting exceeds safety limit"),
}

# --------------------------------------------------------------------------
# header_opts: known header names

HDR_OTHER = 0
HDR_APPARENTLY_TO = 1
HDR_BCC = 2
HDR_CC = 3
HDR_CONTENT_LENGTH = 4
HDR_CONTENT_TRANSFER_ENCODING = 5
HDR_CONTENT_TYPE = 6
HDR_DATE = 7
HDR_DELIVERED_TO = 8
HDR_ERRORS_TO = 9
HDR_FROM = 10
HDR_MESSAGE_ID = 11
HDR_RECEIVED = 12
HDR_REPLY_TO = 13
HDR_RESENT_BCC = 14
HDR_RESENT_CC = 15
HDR_RESENT_DATE = 16
HDR_RESENT_FROM = 17
HDR_RESENT_MESSAGE_ID = 18
HDR_RESENT_REPLY_TO = 19
HDR_RESENT_SENDER = 20
HDR_RESENT_TO = 21
HDR_RETURN_PATH = 22
HDR_RETURN_RECEIPT_TO = 23
HDR_SENDER = 24
HDR_TO = 25
HDR_MAIL_FOLLOWUP_TO = 26
HDR_CONTENT_DESCRIPTION = 27
HDR_CONTENT_DISPOSITION = 28
HDR_CONTENT_ID = 29
HDR_MIME_VERSION = 30
HDR_DISP_NOTIFICATION = 31

HDR_OPT_DROP = 1 << 0
HDR_OPT_SENDER = 1 << 1
HDR_OPT_RECIP = 1 << 2
HDR_OPT_RR = 1 << 3
HDR_OPT_EXTRACT = 1 << 4
HDR_OPT_MIME = 1 << 5
HDR_OPT_XRECIP = HDR_OPT_RECIP | HDR_OPT_EXTRACT


@dataclass(frozen=True)
class HeaderInfo:
    """A known header name (header_opts): canonical spelling, type, flags.
    ``flags & (HDR_OPT_SENDER | HDR_OPT_RECIP)`` selects the address headers
    that smtp_generic_maps rewrites in the primary header block."""

    name: str
    type: int
    flags: int


_HEADER_TABLE = (
    ("Apparently-To", HDR_APPARENTLY_TO, HDR_OPT_RECIP),
    ("Bcc", HDR_BCC, HDR_OPT_XRECIP),
    ("Cc", HDR_CC, HDR_OPT_XRECIP),
    ("Content-Description", HDR_CONTENT_DESCRIPTION, HDR_OPT_MIME),
    ("Content-Disposition", HDR_CONTENT_DISPOSITION, HDR_OPT_MIME),
    ("Content-ID", HDR_CONTENT_ID, HDR_OPT_MIME),
    ("Content-Length", HDR_CONTENT_LENGTH, 0),
    ("Content-Transfer-Encoding", HDR_CONTENT_TRANSFER_ENCODING, HDR_OPT_MIME),
    ("Content-Type", HDR_CONTENT_TYPE, HDR_OPT_MIME),
    ("Delivered-To", HDR_DELIVERED_TO, 0),
    ("Disposition-Notification-To", HDR_DISP_NOTIFICATION, HDR_OPT_SENDER),
    ("Date", HDR_DATE, 0),
    ("Errors-To", HDR_ERRORS_TO, HDR_OPT_SENDER),
    ("From", HDR_FROM, HDR_OPT_SENDER),
    ("Mail-Followup-To", HDR_MAIL_FOLLOWUP_TO, HDR_OPT_SENDER),
    ("Message-Id", HDR_MESSAGE_ID, 0),
    ("MIME-Version", HDR_MIME_VERSION, HDR_OPT_MIME),
    ("Received", HDR_RECEIVED, 0),
    ("Reply-To", HDR_REPLY_TO, HDR_OPT_SENDER),
    ("Resent-Bcc", HDR_RESENT_BCC, HDR_OPT_XRECIP | HDR_OPT_RR),
    ("Resent-Cc", HDR_RESENT_CC, HDR_OPT_XRECIP | HDR_OPT_RR),
    ("Resent-Date", HDR_RESENT_DATE, HDR_OPT_RR),
    ("Resent-From", HDR_RESENT_FROM, HDR_OPT_SENDER | HDR_OPT_RR),
    ("Resent-Message-Id", HDR_RESENT_MESSAGE_ID, HDR_OPT_RR),
    ("Resent-Reply-To", HDR_RESENT_REPLY_TO, HDR_OPT_RECIP | HDR_OPT_RR),
    ("Resent-Sender", HDR_RESENT_SENDER, HDR_OPT_SENDER | HDR_OPT_RR),
    ("Resent-To", HDR_RESENT_TO, HDR_OPT_XRECIP | HDR_OPT_RR),
    ("Return-Path", HDR_RETURN_PATH, HDR_OPT_SENDER),
    ("Return-Receipt-To", HDR_RETURN_RECEIPT_TO, HDR_OPT_SENDER),
    ("Sender", HDR_SENDER, HDR_OPT_SENDER),
    ("To", HDR_TO, HDR_OPT_XRECIP),
)

_DEFAULT_DROP_HEADERS = ("bcc", "content-length", "resent-bcc", "return-path")


def _build_header_opts(drop_headers: Iterable[str] = _DEFAULT_DROP_HEADERS) -> dict:
    table = {}
    for name, htype, flags in _HEADER_TABLE:
        table[name.lower().encode("ascii")] = HeaderInfo(name, htype, flags)
    for name in drop_headers:   # drop_headers only adds flags (used by cleanup) or names
        key = name.lower().encode("latin-1")
        info = table.get(key)
        table[key] = (HeaderInfo(info.name, info.type, info.flags | HDR_OPT_DROP) if info
                      else HeaderInfo(name.lower(), HDR_OTHER, HDR_OPT_DROP))
    return table


_HEADER_OPTS = _build_header_opts()

_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


def header_opts_find(header: bytes, table: Optional[dict] = None) -> Optional[HeaderInfo]:
    """The HeaderInfo for ``Name: value`` (name up to the first colon, ASCII
    case-insensitive, trailing blanks ignored), or None."""
    colon = header.find(b":")
    if colon < 0:
        raise ValueError("no colon in header: %r" % header[:30])
    key = header[:colon].translate(_ASCII_LOWER).rstrip(b" \t\r\n\v\f")
    return (table if table is not None else _HEADER_OPTS).get(key)


def downgrade_wanted(*, server_8bitmime: bool, disable_mime_output_conversion: bool,
                     encoding: str) -> bool:
    """stock SMTP_MIME_DOWNGRADE(): convert 8-bit content on this session?

    ``server_8bitmime`` after the SMTPUTF8 rule; ``encoding`` is the request's
    content encoding ("" counts as not 7bit).  True also means: no ``SIZE=``.
    """
    return (not disable_mime_output_conversion and not server_8bitmime
            and encoding != "7bit")


# --------------------------------------------------------------------------
# lexical helpers (is_header.c, header_token.c, lex_822.h)


def _iscntrl(c: int) -> bool:
    return c < 32 or c == 127      # ISASCII(c) && iscntrl(c): 8-bit bytes are not controls


def is_header_buf(text: bytes) -> int:
    """Length of the header name if ``text`` starts like a header (name, optional
    SP/TAB, colon), else 0.  The name is non-empty printable ASCII without
    spaces or colons."""
    n = 0
    state = 0           # 0 init, 1 in name, 2 blanks after the name
    for c in text:
        if c == 0x3A:                       # ':'
            return n if state else 0
        if c == 0x20 or c == 0x09:
            if state == 0:
                return 0
            state = 2
            continue
        if c == 0 or c > 127 or _iscntrl(c):
            return 0
        if state == 2:
            return 0
        state = 1
        n += 1
    return 0


TOK_TOKEN = 256
TOK_QSTRING = 257

LEX_822_SPECIALS = b'()<>@,;:\\".[]'
RFC2045_TSPECIALS = b'()<>@,;:\\"/[]?='
_SP_TAB_CR_LF = (0x20, 0x09, 0x0D, 0x0A)


def header_token(text: bytes, pos: int, max_tokens: int, specials: Optional[bytes] = None,
                 terminator: Optional[int] = None):
    """Port of header_token(): parse RFC 822 tokens from ``text[pos:]``.

    Returns ``(count, tokens, new_pos)`` with ``tokens`` a list of
    ``(type, value)`` (type TOK_TOKEN, TOK_QSTRING or the special's byte
    value), at most ``max_tokens`` stored; with a ``terminator`` parsing goes
    on (without storing) up to and past that byte.  ``count`` is -1 when
    nothing but the end of the text was found (``new_pos`` is then ``pos``).
    ``text`` must not contain NUL bytes (it stands for a C string).
    """
    if specials is None:
        specials = LEX_822_SPECIALS
    end = len(text)
    cp = pos
    tokens: List[Tuple[int, bytes]] = []
    count = 0
    while True:
        ch = text[cp] if cp < end else 0
        if ch == 0 or not (terminator is not None or count < max_tokens):
            break
        cp += 1
        if ch in _SP_TAB_CR_LF:
            continue
        if terminator is not None and ch == terminator:
            break
        if ch == 0x28:                      # '(' comment, may nest
            level = 1
            while cp < end:
                ch = text[cp]
                cp += 1
                if ch == 0x28:
                    level += 1
                elif ch == 0x29:
                    level -= 1
                    if level == 0:
                        break
                elif ch == 0x5C:
                    if cp >= end:
                        break
                    cp += 1
            continue
        if ch == 0x22:                      # '"' quoted string
            store = count < max_tokens
            value = bytearray()
            while cp < end:
                ch = text[cp]
                cp += 1
                if ch == 0x22:
                    break
                if ch == 0x0A:              # unfold
                    if store:
                        while value and value[-1] in _SP_TAB_CR_LF:
                            value.pop()
                    continue
                if ch == 0x5C:
                    if cp >= end:
                        break
                    ch = text[cp]
                    cp += 1
                if store:
                    value.append(ch)
            if store:
                tokens.append((TOK_QSTRING, bytes(value)))
                count += 1
            continue
        if ch in specials or _iscntrl(ch):
            if count < max_tokens:
                tokens.append((ch, bytes([ch])))
                count += 1
            continue
        start = cp - 1
        while cp < end:
            c = text[cp]
            if c in _SP_TAB_CR_LF or _iscntrl(c) or c in specials:
                break
            cp += 1
        if count < max_tokens:
            tokens.append((TOK_TOKEN, text[start:cp]))
            count += 1
    if count == 0 and ch == 0:
        return -1, [], pos
    return count, tokens, cp


def _token_is(tok: Tuple[int, bytes], word: bytes) -> bool:
    return tok[0] == TOK_TOKEN and tok[1].translate(_ASCII_LOWER) == word


def _cstr(text: bytes) -> bytes:
    """What a C string copy keeps: everything before the first NUL."""
    i = text.find(b"\0")
    return text if i < 0 else text[:i]


def _default_header_lines(header_class: int, info: Optional[HeaderInfo],
                          text: bytes) -> Iterable[bytes]:
    return text.split(b"\n")


# --------------------------------------------------------------------------


class _Boundary:
    __slots__ = ("def_ctype", "def_stype", "boundary")

    def __init__(self, def_ctype: int, def_stype: int, boundary: bytes) -> None:
        self.def_ctype = def_ctype
        self.def_stype = def_stype
        self.boundary = boundary


HeaderCallback = Callable[[int, Optional[HeaderInfo], bytes], Iterable[bytes]]
BodyCallback = Callable[[bytes, bool], Iterable[Record]]


class MimeDowngrade:
    """smtp(8)'s MIME output processing (mime_state with smtp_header_out /
    smtp_text_out as call-backs).  Sans-I/O: content records in, output
    records (``(text, complete)``, for TextEncoder.record) out.

    ``downgrade``: 8-bit -> 7-bit conversion and nesting errors (stock
    MIME_OPT_DOWNGRADE | MIME_OPT_REPORT_NESTING).  ``disable_mime``: ignore
    Content-* headers; everything after the primary headers is body (stock
    uses this for smtp_generic_maps without a downgrade).  With neither, the
    MIME structure is still followed (header/body checks).
    """

    def __init__(self, *, downgrade: bool, nesting_limit: int = 100,
                 boundary_limit: int = 2048, header_size_limit: int = 102400,
                 header_callback: Optional[HeaderCallback] = None,
                 body_callback: Optional[BodyCallback] = None,
                 disable_mime: bool = False, report_nesting: Optional[bool] = None,
                 header_opts: Optional[dict] = None) -> None:
        self.downgrade = downgrade
        self.disable_mime = disable_mime
        self.report_nesting = downgrade if report_nesting is None else report_nesting
        self.nesting_limit = nesting_limit
        self.boundary_limit = boundary_limit
        self.header_size_limit = header_size_limit
        self.header_callback = header_callback or _default_header_lines
        self.body_callback = body_callback
        self.header_opts = header_opts if header_opts is not None else _HEADER_OPTS
        self.errors: set = set()
        self.error_text: Optional[bytes] = None     # the header that caused the first error

        self._state = PRIMARY
        self._ctype = _CT_TEXT
        self._stype = _ST_PLAIN
        self._encoding = ENC_7BIT
        self._domain = ENC_7BIT
        self._buf = bytearray()         # header being assembled, or pending QP output
        self._prev = 0                  # previous record type
        self._nesting = -1              # stock starts at -1 ("BC Fix 20170512")
        self._stack: List[_Boundary] = []   # innermost last
        self._out: List[Record] = []

    # -- public ------------------------------------------------------------

    def record(self, text: bytes, complete: bool) -> List[Record]:
        """Process one content record (``L`` = not complete); returns the output
        records produced so far.  After ``errors`` becomes non-empty stock stops
        reading the message: the caller should too."""
        self._update(_NORM if complete else _CONT, bytes(text))
        return self._take()

    def finish(self) -> List[Record]:
        """End of content (the ``X`` record): flush an unfinished line or header."""
        self._update(_OTHER, b"")
        return self._take()

    @property
    def error(self) -> Optional[Tuple[str, str]]:
        """(enhanced status, text) of the most serious error, or None."""
        for name in MIME_ERRORS:
            if name in self.errors:
                return MIME_ERRORS[name]
        return None

    # -- output ------------------------------------------------------------

    def _take(self) -> List[Record]:
        out = self._out
        self._out = []
        return out

    def _head_out(self, info: Optional[HeaderInfo]) -> None:
        for line in self.header_callback(self._state, info, bytes(self._buf)):
            self._out.append((bytes(line), True))

    def _body_out(self, complete: bool, text: bytes) -> None:
        if self.body_callback is None:
            self._out.append((text, complete))
        else:
            for rec in self.body_callback(text, complete):
                self._out.append((bytes(rec[0]), bool(rec[1])))

    def _report(self, name: str) -> None:
        if name not in self.errors:
            self.errors.add(name)
            if self.error_text is None:
                self.error_text = bytes(self._buf)

    # -- state -------------------------------------------------------------

    def _set_state(self, state: int, ctype: int, stype: int, encoding: int, domain: int) -> None:
        self._state = state
        self._ctype = ctype
        self._stype = stype
        self._encoding = encoding
        self._domain = domain

    def _push(self, def_ctype: int, def_stype: int, boundary: bytes) -> None:
        self._nesting += 1
        if len(boundary) > self.boundary_limit:
            boundary = boundary[:self.boundary_limit]
        self._stack.append(_Boundary(def_ctype, def_stype, boundary))

    def _pop(self) -> None:
        self._nesting -= 1
        self._stack.pop()

    def _content_type(self, info: HeaderInfo) -> None:
        text = bytes(self._buf)
        pos = len(info.name) + 1
        count, tok, pos = header_token(text, pos, 3, RFC2045_TSPECIALS, ord(";"))
        if count <= 0:
            return
        if _token_is(tok[0], b"text"):
            self._ctype = _CT_TEXT
            if count >= 3 and tok[1][0] == ord("/") and _token_is(tok[2], b"plain"):
                self._stype = _ST_PLAIN
            else:
                self._stype = _ST_OTHER
            return
        if _token_is(tok[0], b"message"):
            self._ctype = _CT_MESSAGE
            self._stype = _ST_OTHER
            if count >= 3 and tok[1][0] == ord("/"):
                if _token_is(tok[2], b"rfc822"):
                    self._stype = _ST_RFC822
                elif _token_is(tok[2], b"partial"):
                    self._stype = _ST_PARTIAL
                elif _token_is(tok[2], b"external-body"):
                    self._stype = _ST_EXTERN_BODY
                elif _token_is(tok[2], b"global"):
                    self._stype = _ST_GLOBAL
            return
        if _token_is(tok[0], b"multipart"):
            self._ctype = _CT_MULTIPART
            if count >= 3 and tok[1][0] == ord("/") and _token_is(tok[2], b"digest"):
                def_ctype, def_stype = _CT_MESSAGE, _ST_RFC822
            else:
                def_ctype, def_stype = _CT_TEXT, _ST_PLAIN
            # every boundary= parameter counts (illegal, but so are the tricks)
            while True:
                count, tok, pos = header_token(text, pos, 3, RFC2045_TSPECIALS, ord(";"))
                if count < 0:
                    break
                if count >= 3 and _token_is(tok[0], b"boundary") and tok[1][0] == ord("="):
                    if self._nesting > self.nesting_limit:
                        if self.report_nesting:
                            self._report("nesting")
                    else:
                        self._push(def_ctype, def_stype, tok[2][1])
            return
        self._ctype = _CT_OTHER

    def _content_encoding(self, info: HeaderInfo) -> None:
        text = bytes(self._buf)
        count, tok, _ = header_token(text, len(info.name) + 1, 1, None, None)
        if count > 0 and tok[0][0] == TOK_TOKEN:
            value = tok[0][1].translate(_ASCII_LOWER)
            for name, encoding, domain in _ENCODING_MAP:
                if value == name:
                    self._encoding = encoding
                    self._domain = domain
                    break

    def _qp(self, rec_type: int, text: bytes) -> None:
        """mime_state_downgrade(): quoted-printable with soft breaks after 73+
        characters; trailing SP/TAB encoded at a hard line end."""
        buf = self._buf
        for ch in text:
            if len(buf) > 72:
                buf.append(0x3D)
                self._body_out(True, bytes(buf))
                buf.clear()
            if (ch < 32 and ch != 9) or ch == 0x3D or ch > 126:
                buf += b"=%02X" % ch
            else:
                buf.append(ch)
        if rec_type == _NORM:
            if buf and buf[-1] in (0x20, 0x09):
                ch = buf.pop()
                buf += b"=%02X" % ch
            self._body_out(True, bytes(buf))
            buf.clear()

    def _update(self, rec_type: int, text: bytes) -> None:
        is_text = rec_type != _OTHER

        # flush a partial line before any end-of-input action
        if not is_text and self._prev == _CONT:
            self._update(_NORM, b"")

        if self._state != _BODY:
            buf = self._buf
            if buf:
                if is_text:
                    if self._prev == _CONT:
                        if len(buf) < self.header_size_limit:
                            buf += _cstr(text)
                        self._prev = rec_type
                        return
                    if text[:1] in (b" ", b"\t"):
                        if len(buf) < self.header_size_limit:
                            buf += b"\n"
                            buf += _cstr(text)
                        self._prev = rec_type
                        return
                # the saved header is complete
                info = header_opts_find(bytes(buf), self.header_opts)
                if not self.disable_mime and info is not None:
                    if info.type == HDR_CONTENT_TYPE:
                        self._content_type(info)
                    if info.type == HDR_CONTENT_TRANSFER_ENCODING:
                        self._content_encoding(info)
                if (info is None or info.type != HDR_CONTENT_TRANSFER_ENCODING
                        or not self.downgrade or self._domain == ENC_7BIT):
                    self._head_out(info)
                self._prev = 0
                buf.clear()

            if is_text:
                n = is_header_buf(text)
                if n > 0:
                    i = n
                    while i < len(text) and text[i] in (0x20, 0x09):
                        i += 1
                    buf[:] = text[:n]
                    buf += _cstr(text[i:])
                    self._prev = rec_type
                    return

            # end of this header block
            if self.downgrade and self._domain != ENC_7BIT:
                if ((self._ctype == _CT_MESSAGE and self._stype != _ST_GLOBAL)
                        or self._ctype == _CT_MULTIPART):
                    cte = b"7bit"
                else:
                    cte = b"quoted-printable"
                buf[:] = b"Content-Transfer-Encoding: " + cte
                self._head_out(None)
                buf.clear()

            if is_text:
                if len(text) == 0:
                    if self._ctype == _CT_MESSAGE:
                        if self._stype == _ST_RFC822:
                            self._set_state(NESTED, _CT_TEXT, _ST_PLAIN, ENC_7BIT, ENC_7BIT)
                        elif self._stype == _ST_GLOBAL and (
                                not self.downgrade or self._domain == ENC_7BIT):
                            self._set_state(NESTED, _CT_TEXT, _ST_PLAIN, ENC_7BIT, ENC_7BIT)
                        else:
                            self._state = _BODY
                    elif self._ctype == _CT_MULTIPART:
                        self._set_state(_BODY, _CT_OTHER, _ST_OTHER, ENC_7BIT, ENC_7BIT)
                    else:
                        self._state = _BODY
                else:
                    # not a header: in the primary block insert the missing empty line
                    if self._state == PRIMARY:
                        self._body_out(True, b"")
                    self._state = _BODY
            else:
                self._state = _BODY
            # fall through to the body

        if is_text:
            if (self._stack and self._prev != _CONT and len(text) > 2
                    and text[0] == 0x2D and text[1] == 0x2D):
                for idx in range(len(self._stack) - 1, -1, -1):
                    sp = self._stack[idx]
                    blen = len(sp.boundary)
                    if len(text) >= 2 + blen and text[2:2 + blen] == sp.boundary:
                        while len(self._stack) - 1 > idx:
                            self._pop()
                        if len(text) >= 4 + blen and text[2 + blen:4 + blen] == b"--":
                            self._pop()
                            self._set_state(_BODY, _CT_OTHER, _ST_OTHER, ENC_7BIT, ENC_7BIT)
                        else:
                            self._set_state(MULTIPART, sp.def_ctype, sp.def_stype,
                                            ENC_7BIT, ENC_7BIT)
                        break
            if self.downgrade and self._domain != ENC_7BIT:
                self._qp(rec_type, text)
            else:
                self._body_out(rec_type == _NORM, text)
        self._prev = rec_type
