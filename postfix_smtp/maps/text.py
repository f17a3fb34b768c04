"""Pure text helpers shared by the table types (no I/O).

Each is a port of the Postfix utility the table code uses, with its quirks:
readllines() (logical lines, comments, continuation), mystrtokq() and
extpar()/balpar() (brace grouping), split_qnameval() (``key = value`` with
a quoted key), mac_parse() (``$name``, ``${name}``, ``$(name)``, ``$$``) as
the regexp/pcre replacement text uses it, hex_quote()/hex_unquote() (tcp
tables) and netstrings (socketmap).  Strings are ``str``; raw bytes travel
as surrogateescape code points.
"""

from __future__ import annotations

from typing import Iterator, List, Optional, Tuple

C_SPACE = " \t\n\v\f\r"        # isspace() in the C locale
CHARS_COMMA_SP = ", \t\r\n"
CHARS_SPACE = " \t\r\n"
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


def decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def isalnum(ch: str) -> bool:
    return ch in _ALNUM


def readllines(text: str) -> Iterator[Tuple[int, str, Optional[str]]]:
    """Logical lines as readllines() builds them: (first line number, text, warning).

    Comment lines (first non-blank is ``#``) and blank lines are dropped
    even between a line and its continuation; a line starting with
    whitespace continues the previous one (joined without the newline).  A
    logical line that itself starts with whitespace is skipped with a
    warning (third element; the text is then "").
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    buf: List[str] = []
    first = 0
    for lineno, line in enumerate(lines, 1):
        stripped = line.lstrip(C_SPACE)
        if not stripped or stripped[0] == "#":
            continue
        if buf and line[0] in C_SPACE:
            buf.append(line)
            continue
        if buf:
            yield _finish(first, "".join(buf))
        buf = [line]
        first = lineno
    if buf:
        yield _finish(first, "".join(buf))


def _finish(first: int, text: str) -> Tuple[int, str, Optional[str]]:
    if text[0] in C_SPACE:
        return first, "", ('logical line must not start with whitespace: "%.30s%s"'
                           % (text, "..." if len(text) > 30 else ""))
    return first, text, None


def trimblanks(text: str) -> str:
    """Strip trailing whitespace (trimblanks())."""
    return text.rstrip(C_SPACE)


def balpar(text: str, parens: str = "{}") -> int:
    """Length of the balanced group at the start of *text*, 0 if unbalanced."""
    if not text or text[0] != parens[0]:
        return 0
    level = 1
    for i in range(1, len(text)):
        ch = text[i]
        if ch == parens[1]:
            level -= 1
            if level == 0:
                return i + 1
        elif ch == parens[0]:
            level += 1
    return 0


def extpar(text: str, parens: str = "{}", strip: bool = True) -> Tuple[str, Optional[str]]:
    """extpar(): the text inside the leading group; (inner text, error or None)."""
    err = None
    if not text or text[0] != parens[0]:
        err = "no '%s' at start of text in \"%s\"" % (parens[0], text)
        inner = text
    else:
        n = balpar(text, parens)
        if n == 0:
            err = "missing '%s' in \"%s\"" % (parens[1], text)
            inner = text[1:]
        else:
            if n != len(text):
                err = "syntax error after '%s' in \"%s\"" % (parens[1], text)
            inner = text[1:n - 1]
    if strip:
        inner = inner.strip(C_SPACE)
    return inner, err


def mystrtokq(text: str, sep: str = CHARS_COMMA_SP, parens: str = "{}") -> List[str]:
    """All tokens of mystrtokq(): separators outside {} split, groups stay whole."""
    out: List[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in sep:
            i += 1
        if i >= n:
            return out
        start = i
        level = 0
        while i < n:
            ch = text[i]
            if ch == parens[0]:
                level += 1
            elif level > 0 and ch == parens[1]:
                level -= 1
            elif level == 0 and ch in sep:
                break
            i += 1
        out.append(text[start:i])
        i += 1


def split_qnameval(text: str) -> Tuple[str, str, Optional[str]]:
    """split_qnameval(): ``key = value`` with an optionally quoted key."""
    n = len(text)
    k = 0
    while k < n and text[k] in C_SPACE:
        k += 1
    if k >= n:
        return "", "", "no key found; expected format: key = value"
    e = k
    in_quotes = False
    while e < n:
        ch = text[e]
        if ch == "\\":
            e += 1
            if e >= n:
                break
        elif ch in C_SPACE or ch == "=":
            if not in_quotes:
                break
        elif ch == '"':
            in_quotes = not in_quotes
        e += 1
    if in_quotes:
        return "", "", "unbalanced '\"'"
    v = e
    while v < n and text[v] in C_SPACE:
        v += 1
    if v >= n or text[v] != "=":
        return "", "", "missing '=' after attribute name"
    v += 1
    while v < n and text[v] in C_SPACE:
        v += 1
    return text[k:e], trimblanks(text[v:]), None


def split_thash_line(line: str) -> Tuple[str, str, Optional[str]]:
    """Split a texthash/postmap source line into (key, value, error).

    The key ends at the first unquoted, unescaped whitespace; it is kept in
    its quoted form, as postmap stores it.
    """
    in_quotes = False
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if ch == "\\":
            i += 1
            if i >= n:
                break
        elif ch in C_SPACE:
            if not in_quotes:
                break
        elif ch == '"':
            in_quotes = not in_quotes
        i += 1
    if in_quotes:
        return "", "", "unbalanced '\"' in '%s'" % line
    key = line[:i]
    value = trimblanks(line[i + 1:].lstrip(C_SPACE)) if i < n else ""
    return key, value, None


# -- $number replacement text ------------------------------------------------

LITERAL = 0
VARNAME = 1


def mac_parse(text: str) -> Tuple[List[Tuple[int, str]], Optional[str]]:
    """Split *text* into (LITERAL, text) and (VARNAME, name) tokens.

    Returns (tokens, error); the error texts are mac_parse()'s warnings.
    """
    out: List[Tuple[int, str]] = []
    buf: List[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "$":
            buf.append(ch)
            i += 1
            continue
        if i + 1 < n and text[i + 1] == "$":
            buf.append("$")
            i += 2
            continue
        if buf:
            out.append((LITERAL, "".join(buf)))
            buf = []
        i += 1
        if i < n and text[i] in "({":
            open_p = text[i]
            close_p = ")" if open_p == "(" else "}"
            level = 1
            i += 1
            e = i
            while level > 0:
                if e >= n:
                    return out, 'truncated macro reference: "%s"' % text
                if text[e] == open_p:
                    level += 1
                if text[e] == close_p:
                    level -= 1
                e += 1
            name = text[i:e - 1]
            i = e
        else:
            e = i
            while e < n and (text[e] in _ALNUM or text[e] == "_"):
                e += 1
            name = text[i:e]
            i = e
        if not name:
            return out, 'empty macro name: "%s"' % text
        out.append((VARNAME, name))
    if buf:
        out.append((LITERAL, "".join(buf)))
    return out, None


# -- tcp_table(5) %XX quoting ---------------------------------------------------

def hex_quote(raw: bytes) -> bytes:
    out = bytearray()
    for b in raw:
        if b != 0x25 and 0x20 < b < 0x7F:
            out.append(b)
        else:
            out += b"%%%02X" % b
    return bytes(out)


def hex_unquote(text: bytes) -> Optional[bytes]:
    out = bytearray()
    i, n = 0, len(text)
    hexdigits = b"0123456789abcdefABCDEF"
    while i < n:
        b = text[i]
        if b == 0x25:
            h = text[i + 1:i + 3]
            if len(h) != 2 or h[0] not in hexdigits or h[1] not in hexdigits:
                return None
            out.append(int(h, 16))
            i += 3
            continue
        out.append(b)
        i += 1
    return bytes(out)


# -- netstrings (socketmap) ---------------------------------------------------------

def netstring(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


class NetstringError(Exception):
    pass


def parse_netstring(buf: bytes, max_len: int) -> Tuple[Optional[bytes], int]:
    """(payload, bytes consumed) when *buf* holds a whole netstring, (None, 0) if not yet.

    NetstringError on bad syntax or a length above *max_len*.
    """
    colon = buf.find(b":")
    if colon < 0:
        if len(buf) > 20 or (buf and not buf.isdigit()):
            raise NetstringError("netstring format error")
        return None, 0
    digits = buf[:colon]
    if not digits or not digits.isdigit() or len(digits) > 20:
        raise NetstringError("netstring format error")
    length = int(digits)
    if length > max_len:
        raise NetstringError("netstring size error")
    end = colon + 1 + length
    if len(buf) < end + 1:
        return None, 0
    if buf[end:end + 1] != b",":
        raise NetstringError("netstring format error")
    return buf[colon + 1:end], end + 1
