"""SMTP server replies: an incremental parser and the DSN status derivation.

Follows smtp_chat.c: lines end in LF (a CR before it is dropped); a line
whose first three bytes are digits followed by ``-`` continues the reply,
anything else with three digits ends it; a garbled line is kept as text and
flagged.  Reply lines are bounded (``line_length_limit``), the kept text too.
"""

from __future__ import annotations

import re
from ..valueclass import dataclass, field

_DSN_RE = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=$|[ \t])")
_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_PRINTABLE_UTF8 = re.compile(r"[\x00-\x1f\x7f\udc80-\udcff]")

LINE_LIMIT = 2048
TEXT_LIMIT = 2048


class ReplyFilterError(Exception):
    """smtp_reply_filter could not be searched (stock: a local data error)."""


def printable(text: str, utf8: bool = True) -> str:
    """Postfix's printable(): control/non-ASCII bytes become '?', valid UTF-8
    is kept when SMTPUTF8 is enabled."""
    return (_PRINTABLE_UTF8 if utf8 else _PRINTABLE).sub("?", text)


@dataclass
class Reply:
    code: int
    lines: list[str]
    garbled: bool = False
    #: the final line as read; ``lines`` may stop short of it (TEXT_LIMIT)
    last_line: str | None = field(default=None, compare=False, repr=False)

    @property
    def text(self) -> str:
        """All lines joined with newlines (what Postfix keeps as the reply)."""
        return "\n".join(self.lines)

    @property
    def flat(self) -> str:
        """The reply on one line, as it appears in DSN reasons and logs."""
        return " ".join(self.lines)

    @property
    def klass(self) -> int:
        return self.code // 100

    @property
    def dsn(self) -> str:
        """Enhanced status: from the last line when its class matches, else X.0.0;
        5.5.0 for codes that are not 2xx/4xx/5xx."""
        first = str(self.code)[:1]
        if first not in ("2", "4", "5") or not (200 <= self.code <= 599):
            return "5.5.0"
        last = self.last_line if self.last_line is not None else (
            self.lines[-1] if self.lines else "")
        rest = last[4:].lstrip(" ") if len(last) > 3 else ""
        m = _DSN_RE.match(rest)
        if m and m.group(1) == first:
            return m.group(0)
        return first + ".0.0"


def garbage_lines(reply: "Reply") -> list:
    """The lines of a garbled reply that are not reply lines ("DDD", "DDD "
    or "DDD-" at the start), as smtp_chat_resp() flags them."""
    out = []
    for ln in reply.lines:
        head = ln[:3]
        if len(head) == 3 and head.isdigit() and head.isascii() and ln[3:4] in ("", " ", "-"):
            continue
        out.append(ln)
    return out


@dataclass
class ReplyParser:
    """Feed raw bytes; collect complete :class:`Reply` objects.

    ``warnings`` collects the texts of Postfix's "response longer than" warnings.
    """

    utf8: bool = True
    line_limit: int = LINE_LIMIT
    _buf: bytearray = field(default_factory=bytearray)
    _lines: list = field(default_factory=list)
    _text_len: int = 0
    _garbled: bool = False
    _skipping: bool = False
    replies: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    #: smtp_reply_filter: line -> replacement line or None (may raise
    #: ReplyFilterError); each replacement is noted in ``notes``
    line_filter: object = None
    notes: list = field(default_factory=list)

    def feed(self, data: bytes) -> None:
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                # a CR at the end may be the first half of CR LF: not text yet
                pending = len(self._buf) - (1 if self._buf.endswith(b"\r") else 0)
                if pending > self.line_limit:
                    if not self._skipping:
                        head = bytes(self._buf[:self.line_limit])
                        self._skipping = True
                        self._line(head, overlong=True)
                    del self._buf[:]
                return
            raw = bytes(self._buf[:nl])
            del self._buf[:nl + 1]
            if self._skipping:
                self._skipping = False
                continue
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > self.line_limit:
                self._line(raw[:self.line_limit], overlong=True)
            else:
                self._line(raw)

    def _line(self, raw: bytes, overlong: bool = False) -> None:
        # without SMTPUTF8 each non-ASCII byte becomes one '?', as stock's
        # printable() does byte by byte
        line = printable(raw.decode("utf-8", "surrogateescape") if self.utf8
                         else raw.decode("latin-1"), self.utf8)
        if overlong:
            self.warnings.append("response longer than %d: %.30s..." % (self.line_limit, line))
        if self.line_filter is not None:
            new = self.line_filter(line)
            if new is not None:
                self.notes.append('replacing server reply "%s" with "%s"' % (line, new))
                line = new
        if self._text_len < TEXT_LIMIT:
            self._lines.append(line)
            self._text_len += len(line) + 1
        elif len(self._lines) and self._text_len >= TEXT_LIMIT and not overlong:
            if not any(w.startswith("multi-line") for w in self.warnings):
                self.warnings.append("multi-line response longer than %d %.30s..."
                                     % (TEXT_LIMIT, self._lines[0]))
        head = line[:3]
        if len(line) >= 3 and head.isdigit() and head.isascii():
            if len(line) > 3 and line[3] == "-":
                return
            if len(line) == 3 or line[3] in " \t" or overlong:
                self.replies.append(Reply(int(head), self._lines, self._garbled, line))
                self._lines = []
                self._text_len = 0
                self._garbled = False
                return
        self._garbled = True

    def pop(self) -> Reply | None:
        return self.replies.pop(0) if self.replies else None

    @property
    def partial(self) -> bool:
        return bool(self._buf) or bool(self._lines)
