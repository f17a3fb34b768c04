"""Message content on the wire: CR LF line ends, dot-stuffing, line folding.

:class:`TextEncoder` reproduces smtp(8)'s smtp_text_out(): a record is
written with CR LF (``N``) or without (``L``, the line continues); a piece of
text that starts an output line with ``.`` gets one more ``.``; with
``smtp_line_length_limit`` > 0 a longer line is broken with CR LF SPACE.
A stray CR or LF inside a record (possible in queue files written before
Postfix 3.7.10) is replaced by a space so that no bare CR or LF ever
reaches the server (SMTP smuggling).
"""

from __future__ import annotations

_STRAY = bytes.maketrans(b"\r\n", b"  ")


class TextEncoder:
    def __init__(self, line_limit: int) -> None:
        self.limit = line_limit
        self.space_left = line_limit
        self.out = bytearray()
        self.folded = False      # True once a line was broken (stock logs this once)
        self.prev_complete = True

    def record(self, text: bytes, complete: bool) -> None:
        if b"\r" in text or b"\n" in text:
            text = text.translate(_STRAY)
        out = self.out
        limit = self.limit
        start = 0
        left = len(text)
        while True:
            if self.space_left == limit and left > 0 and text[start] == 0x2E:  # '.'
                out += b"."
            if limit > 0 and left >= self.space_left:
                n = self.space_left
                out += text[start:start + n]
                out += b"\r\n"
                start += n
                left -= n
                self.space_left = limit
                if left > 0 or not complete:
                    out += b" "
                    self.space_left -= 1
                    self.folded = True      # only a real break (stock logs it here)
            else:
                out += text[start:start + left]
                if complete:
                    out += b"\r\n"
                    self.space_left = limit
                else:
                    self.space_left -= left
                break
            if left <= 0:
                break
        self.prev_complete = complete

    def finish(self) -> None:
        """End of content: terminate an unfinished last line (the ``.`` follows)."""
        if not self.prev_complete:
            self.out += b"\r\n"
            self.prev_complete = True

    def take(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data
