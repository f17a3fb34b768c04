"""PCRE2 patterns (as dict_pcre.c compiles them) -> Python ``re`` bytes patterns.

Postfix compiles pcre: table patterns with PCRE2 in 8-bit, non-UTF mode:
bytewise matching, ASCII-only case folding, PCRE2_CASELESS|PCRE2_DOTALL by
default and the per-pattern options i m s x A E U (X is obsolete and
ignored).  Python's ``re`` in bytes mode has the same character model and
most of the syntax; this module rewrites what differs:

- ``\\z`` -> ``\\Z``; PCRE's ``\\Z`` (end or before a final newline);
  ``$`` with ``E`` (DOLLAR_ENDONLY) -> ``\\Z``;
- ``\\Q...\\E``, ``\\x{hh}``, ``\\xh``, ``\\o{...}``, ``\\e``, ``\\cX``,
  ``\\h \\H \\v \\V \\R \\N``, octal escapes;
- named groups ``(?<n>...)``/``(?'n'...)``, references ``\\k<n>``
  ``\\k'n'`` ``\\k{n}`` ``\\g{n}`` ``\\gN`` ``\\g{-N}``, conditions on names;
- option settings in the middle of a pattern (``a(?i)b|c``), which Python
  only allows at the very start, become scoped groups per alternative;
- POSIX classes inside brackets (``[[:alpha:]]``, ``[[:^digit:]]`` alone);
- ``{,n}`` is a literal in PCRE2 10.42; the ``U`` (ungreedy) option swaps
  greedy and lazy quantifiers; ``A`` anchors the match at the start.

Not supported (the rule is skipped with a warning, as Postfix skips a
pattern PCRE rejects): recursion and subroutine calls (``(?R)``, ``(?1)``,
``(?&n)``, ``\\g<n>``), branch reset ``(?|``, backtracking verbs and
start-of-pattern options ``(*...)``, ``\\G``, ``\\X``, script properties
(general categories ``\\p{L}``, ``\\p{Lu}``... are supported, over
Latin-1 as in PCRE's non-UTF mode), callouts, the
``(?U)``/``(?J)``/``(?n)`` inline options, and - on Python < 3.11 - atomic
groups and possessive quantifiers.
"""

from __future__ import annotations

import re
from typing import List, Tuple

from .posix_re import RegexError

__all__ = ["translate_pcre", "compile_pcre", "RegexError"]

_POSIX = {
    b"alpha": b"A-Za-z", b"digit": b"0-9", b"alnum": b"0-9A-Za-z",
    b"upper": b"A-Z", b"lower": b"a-z", b"space": b"\\t\\n\\x0b\\x0c\\r ",
    b"blank": b"\\t ", b"punct": b"!-/:-@\\[-`{-~", b"print": b" -~",
    b"graph": b"!-~", b"cntrl": b"\\x00-\\x1f\\x7f", b"xdigit": b"0-9A-Fa-f",
    b"word": b"0-9A-Za-z_", b"ascii": b"\\x00-\\x7f",
}
_HSPACE = b"\\t \\xa0"
_VSPACE = b"\\n\\x0b\\x0c\\r\\x85"
_HEX = b"0123456789abcdefABCDEF"
_OCT = b"01234567"
_NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")


def _hx(b: int) -> bytes:
    return b"\\x%02x" % b


def _lit(b: int) -> bytes:
    if (0x30 <= b <= 0x39) or (0x41 <= b <= 0x5A) or (0x61 <= b <= 0x7A):
        return bytes([b])
    return _hx(b)


class _Scanner:
    def __init__(self, pat: bytes, extended: bool, ungreedy: bool, dollar_endonly: bool,
                 multiline: bool) -> None:
        self.p = pat
        self.i = 0
        self.n = len(pat)
        self.x = extended
        self.ungreedy = ungreedy
        self.dollar_endonly = dollar_endonly and not multiline
        self.out: List[bytes] = []
        self.ngroups = 0
        # One entry per open group: list of inline-option openers active in it.
        self.levels: List[List[bytes]] = [[]]

    def error(self, text: str) -> RegexError:
        return RegexError("%s at offset %d" % (text, self.i))

    # -- escapes shared by classes and the main pattern -----------------------

    def _code_escape(self, in_class: bool) -> bytes:
        """Escape after the backslash for a single character, or raise."""
        p, i = self.p, self.i
        d = p[i]
        self.i += 1
        if d == 0x78:  # \x
            if self.i < self.n and p[self.i] == 0x7B:
                end = p.find(b"}", self.i)
                digits = p[self.i + 1:end] if end >= 0 else b""
                if end < 0 or not digits or any(c not in _HEX for c in digits):
                    raise self.error("malformed \\x{...}")
                v = int(digits, 16)
                self.i = end + 1
            else:
                j = self.i
                while j < self.n and j < self.i + 2 and p[j] in _HEX:
                    j += 1
                v = int(p[self.i:j], 16) if j > self.i else 0
                self.i = j
            if v > 0xFF:
                raise self.error("character code point value in \\x{} is too large")
            return _hx(v)
        if d == 0x6F:  # \o{...}
            if self.i >= self.n or p[self.i] != 0x7B:
                raise self.error("missing opening brace after \\o")
            end = p.find(b"}", self.i)
            digits = p[self.i + 1:end] if end >= 0 else b""
            if end < 0 or not digits or any(c not in _OCT for c in digits):
                raise self.error("malformed \\o{...}")
            v = int(digits, 8)
            self.i = end + 1
            if v > 0xFF:
                raise self.error("octal value is too large")
            return _hx(v)
        if d == 0x30:  # \0 + up to two octal digits
            j = self.i
            while j < self.n and j < self.i + 2 and p[j] in _OCT:
                j += 1
            v = int(b"0" + p[self.i:j], 8)
            self.i = j
            return _hx(v)
        if d == 0x65:  # \e
            return _hx(0x1B)
        if d == 0x61:  # \a
            return _hx(0x07)
        if d == 0x63:  # \cX
            if self.i >= self.n:
                raise self.error("\\c at end of pattern")
            c = p[self.i]
            self.i += 1
            if c > 0x7F:
                raise self.error("\\c must be followed by a printable ASCII character")
            if 0x61 <= c <= 0x7A:
                c -= 0x20
            return _hx(c ^ 0x40)
        if d in b"fnrt":
            return b"\\" + bytes([d])
        if d in b"dDwWsS":
            return b"\\" + bytes([d])
        if d == 0x68:  # \h
            return (b"" if in_class else b"[") + _HSPACE + (b"" if in_class else b"]")
        if d == 0x76:  # \v
            return (b"" if in_class else b"[") + _VSPACE + (b"" if in_class else b"]")
        if in_class:
            if d == 0x62:  # \b is backspace in a class
                return _hx(0x08)
            if 0x31 <= d <= 0x37:  # octal in a class
                j = self.i
                while j < self.n and j < self.i + 2 and p[j] in _OCT:
                    j += 1
                v = int(p[self.i - 1:j], 8)
                self.i = j
                return _hx(v & 0xFF)
            if d in (0x38, 0x39):
                return bytes([d])
            if d in (0x48, 0x56):
                raise self.error("\\H or \\V in a character class is not supported")
        if (0x41 <= d <= 0x5A) or (0x61 <= d <= 0x7A) or (0x30 <= d <= 0x39):
            raise self.error("unrecognized escape \\%s" % chr(d))
        return _hx(d)

    # -- character classes -----------------------------------------------------

    def _class(self) -> bytes:
        p = self.p
        items: List[bytes] = []
        negate = False
        if self.i < self.n and p[self.i] == 0x5E:
            negate = True
            self.i += 1
        first = True
        while True:
            if self.i >= self.n:
                raise self.error("missing terminating ] for character class")
            c = p[self.i]
            if c == 0x5D and not first:
                self.i += 1
                break
            first = False
            if c == 0x5B and p[self.i + 1:self.i + 2] == b":":
                end = p.find(b":]", self.i + 2)
                if end >= 0:
                    name = p[self.i + 2:end]
                    neg = name.startswith(b"^")
                    body = _POSIX.get(name[1:] if neg else name)
                    if body is None:
                        raise self.error("unknown POSIX class name")
                    self.i = end + 2
                    if neg:
                        if items or negate or p[self.i:self.i + 1] != b"]":
                            raise self.error("negated POSIX class mixed with other items")
                        self.i += 1
                        return b"[^" + body + b"]"
                    items.append(body)
                    continue
            if c == 0x5C:
                self.i += 1
                if self.i >= self.n:
                    raise self.error("\\ at end of pattern")
                d = p[self.i]
                if d == 0x51:  # \Q...\E inside a class
                    end = p.find(b"\\E", self.i + 1)
                    text = p[self.i + 1:] if end < 0 else p[self.i + 1:end]
                    self.i = self.n if end < 0 else end + 2
                    items.extend(_lit(b) for b in text)
                    continue
                if d == 0x45:
                    self.i += 1
                    continue
                if d in b"pP":
                    items.append(self._property(True))
                    continue
                items.append(self._code_escape(True))
                continue
            self.i += 1
            if c in b"[&~|" or (c == 0x2D and self.i < self.n and p[self.i] == 0x2D):
                items.append(_hx(c))
            elif c == 0x2D:
                items.append(b"-")
            else:
                items.append(_lit(c))
        return (b"[^" if negate else b"[") + b"".join(items) + b"]"

    def _property(self, in_class: bool) -> bytes:
        """\\p{..}/\\P{..}: in non-UTF mode a byte is the Latin-1 code point."""
        p = self.p
        negate = p[self.i] == 0x50
        self.i += 1
        if self.i < self.n and p[self.i] == 0x7B:
            end = p.find(b"}", self.i)
            if end < 0:
                raise self.error("malformed \\p{...}")
            name = p[self.i + 1:end].decode("ascii", "replace")
            self.i = end + 1
        elif self.i < self.n:
            name = chr(p[self.i])
            self.i += 1
        else:
            raise self.error("malformed \\p")
        if name.startswith("^"):
            negate = not negate
            name = name[1:]
        name = name.replace(" ", "").replace("_", "")
        import unicodedata
        if name == "Any":
            members = list(range(256))
        elif name == "L&":
            members = [b for b in range(256) if unicodedata.category(chr(b)) in ("Lu", "Ll", "Lt")]
        elif len(name) in (1, 2) and name[:1] in "CLMNPSZ":
            members = [b for b in range(256)
                       if unicodedata.category(chr(b))[:len(name)] == name]
        else:
            raise self.error("unsupported property \\p{%s}" % name)
        body = b"".join(_hx(b) for b in members)
        if in_class:
            if negate:
                raise self.error("negated property inside a character class")
            return body
        if not body:
            return b"(?!)" if not negate else b"(?s:.)"
        return (b"[^" if negate else b"[") + body + b"]"

    # -- quantifiers -----------------------------------------------------------

    def _quantifier_suffix(self) -> bytes:
        """Lazy/possessive suffix, adjusted for the U option."""
        p = self.p
        nxt = p[self.i:self.i + 1]
        if nxt == b"+":
            self.i += 1
            return b"+"
        if nxt == b"?":
            self.i += 1
            return b"" if self.ungreedy else b"?"
        return b"?" if self.ungreedy else b""

    # -- groups ----------------------------------------------------------------

    def _open_group(self) -> None:
        p = self.p
        rest = p[self.i:]
        if not rest.startswith(b"?"):
            if rest.startswith(b"*"):
                raise self.error("backtracking control verbs are not supported")
            self.ngroups += 1
            self._push(b"(")
            return
        if rest.startswith(b"?#"):
            end = p.find(b")", self.i)
            if end < 0:
                raise self.error("missing ) after (?# comment")
            self.i = end + 1
            return
        for head, repl in ((b"?:", b"(?:"), (b"?=", b"(?="), (b"?!", b"(?!"),
                           (b"?<=", b"(?<="), (b"?<!", b"(?<!"), (b"?>", b"(?>")):
            if rest.startswith(head):
                self.i += len(head)
                self._push(repl)
                return
        m = re.match(rb"\?(?:P?<|')([A-Za-z_][A-Za-z0-9_]*)[>']", rest)
        if m:
            self.i += m.end()
            self.ngroups += 1
            self._push(b"(?P<" + m.group(1) + b">")
            return
        m = re.match(rb"\?P=([A-Za-z_][A-Za-z0-9_]*)\)", rest)
        if m:
            self.i += m.end()
            self.out.append(b"(?P=" + m.group(1) + b")")
            return
        if rest.startswith(b"?("):
            m = re.match(rb"\?\((?:(\d+)|<([A-Za-z_]\w*)>|'([A-Za-z_]\w*)'|([A-Za-z_]\w*))\)",
                         rest)
            if not m or (m.group(4) and m.group(4) in (b"R", b"DEFINE")):
                raise self.error("unsupported conditional group")
            self.i += m.end()
            ref = m.group(1) or m.group(2) or m.group(3) or m.group(4)
            self._push(b"(?(" + ref + b")")
            return
        m = re.match(rb"\?([imsx]*)(?:-([imsx]*))?([:)])", rest)
        if m:
            self.i += m.end()
            on, off, end = m.group(1), m.group(2) or b"", m.group(3)
            spec = on + (b"-" + off if off else b"")
            if end == b":":
                if not spec:
                    self._push(b"(?:")
                else:
                    self._push(b"(?" + spec + b":")
                return
            if not spec:
                return
            if not self.out and not off and len(self.levels) == 1:
                self.out.append(b"(?" + on + b")")     # global flags at the start
                return
            opener = b"(?" + spec + b":"
            self.out.append(opener)
            self.levels[-1].append(opener)
            return
        raise self.error("unsupported group construct")

    def _push(self, text: bytes) -> None:
        self.out.append(text)
        self.levels.append([])

    def _close_group(self) -> None:
        if len(self.levels) == 1:
            raise self.error("unmatched closing parenthesis")
        scoped = self.levels.pop()
        self.out.append(b")" * len(scoped) + b")")

    def _alternation(self) -> None:
        scoped = self.levels[-1]
        self.out.append(b")" * len(scoped) + b"|" + b"".join(scoped))

    # -- main loop ---------------------------------------------------------------

    def run(self) -> bytes:
        p, out = self.p, self.out
        while self.i < self.n:
            c = p[self.i]
            self.i += 1
            if self.x and c == 0x23:  # comment to end of line
                end = p.find(b"\n", self.i)
                self.i = self.n if end < 0 else end + 1
                continue
            if self.x and c in b" \t\n\r\x0b\x0c":
                continue
            if c == 0x5C:
                if self.i >= self.n:
                    raise self.error("\\ at end of pattern")
                d = p[self.i]
                if d == 0x51:  # \Q
                    end = p.find(b"\\E", self.i + 1)
                    text = p[self.i + 1:] if end < 0 else p[self.i + 1:end]
                    self.i = self.n if end < 0 else end + 2
                    out.append(b"".join(_lit(b) for b in text))
                    continue
                if d == 0x45:  # stray \E
                    self.i += 1
                    continue
                if d in b"AbB":
                    self.i += 1
                    out.append(b"\\" + bytes([d]))
                    continue
                if d == 0x7A:  # \z
                    self.i += 1
                    out.append(b"\\Z")
                    continue
                if d == 0x5A:  # \Z
                    self.i += 1
                    out.append(b"(?=\\n?\\Z)")
                    continue
                if d == 0x48:  # \H
                    self.i += 1
                    out.append(b"[^" + _HSPACE + b"]")
                    continue
                if d == 0x56:  # \V
                    self.i += 1
                    out.append(b"[^" + _VSPACE + b"]")
                    continue
                if d == 0x52:  # \R
                    self.i += 1
                    out.append(b"(?:\\r\\n|[" + _VSPACE + b"])")
                    continue
                if d == 0x4E:  # \N
                    self.i += 1
                    out.append(b"[^\\n]")
                    continue
                if d == 0x43:  # \C: one code unit
                    self.i += 1
                    out.append(b"(?s:.)")
                    continue
                if 0x31 <= d <= 0x39:
                    j = self.i
                    while j < self.n and 0x30 <= p[j] <= 0x39:
                        j += 1
                    num = int(p[self.i:j])
                    if num < 10 or num <= self.ngroups:
                        self.i = j
                        out.append(b"(?:\\%d)" % num)
                        continue
                    # otherwise octal (up to three digits)
                    j = self.i
                    while j < self.n and j < self.i + 3 and p[j] in _OCT:
                        j += 1
                    if j == self.i:
                        raise self.error("invalid escape")
                    out.append(_hx(int(p[self.i:j], 8) & 0xFF))
                    self.i = j
                    continue
                if d == 0x67:  # \g
                    m = re.match(rb"g(?:\{(-?\d+)\}|(-?\d+)|\{([A-Za-z_]\w*)\})", p[self.i:])
                    if not m:
                        raise self.error("subroutine calls (\\g<...>) are not supported")
                    self.i += m.end()
                    if m.group(3):
                        out.append(b"(?P=" + m.group(3) + b")")
                        continue
                    num = int(m.group(1) or m.group(2))
                    if num < 0:
                        num = self.ngroups + 1 + num
                    if num <= 0:
                        raise self.error("invalid group reference")
                    out.append(b"(?:\\%d)" % num)
                    continue
                if d == 0x6B:  # \k
                    m = re.match(rb"k(?:<([A-Za-z_]\w*)>|'([A-Za-z_]\w*)'|\{([A-Za-z_]\w*)\})",
                                 p[self.i:])
                    if not m:
                        raise self.error("malformed \\k reference")
                    self.i += m.end()
                    out.append(b"(?P=" + (m.group(1) or m.group(2) or m.group(3)) + b")")
                    continue
                if d == 0x4B:  # \K resets $0 only, which tables cannot use
                    self.i += 1
                    continue
                if d in b"pP":
                    out.append(self._property(False))
                    continue
                if d in b"GX":
                    raise self.error("\\%s is not supported" % chr(d))
                out.append(self._code_escape(False))
                continue
            if c == 0x5B:  # [
                out.append(self._class())
                continue
            if c == 0x28:  # (
                self._open_group()
                continue
            if c == 0x29:  # )
                self._close_group()
                continue
            if c == 0x7C:  # |
                self._alternation()
                continue
            if c in (0x2A, 0x2B, 0x3F):  # * + ?
                out.append(bytes([c]) + self._quantifier_suffix())
                continue
            if c == 0x7B:  # {
                m = re.match(rb"(\d+)(,(\d*))?\}", p[self.i:])
                if m:
                    self.i += m.end()
                    out.append(b"{" + m.group(0) + self._quantifier_suffix())
                else:
                    out.append(b"\\{")
                continue
            if c == 0x24:  # $
                out.append(b"\\Z" if self.dollar_endonly else b"$")
                continue
            if c in b".^":
                out.append(bytes([c]))
                continue
            out.append(_lit(c))
        if len(self.levels) > 1:
            raise self.error("missing closing parenthesis")
        out.append(b")" * len(self.levels[0]))
        return b"".join(out)


def translate_pcre(pat: bytes, extended: bool = False, ungreedy: bool = False,
                   dollar_endonly: bool = False, multiline: bool = False) -> bytes:
    return _Scanner(pat, extended, ungreedy, dollar_endonly, multiline).run()


def compile_pcre(pattern: str, caseless: bool = True, multiline: bool = False,
                 dotall: bool = True, extended: bool = False, anchored: bool = False,
                 dollar_endonly: bool = False, ungreedy: bool = False) -> "re.Pattern[bytes]":
    """Compile as pcre2_compile() with those options would; RegexError if it cannot."""
    raw = pattern.encode("utf-8", "surrogateescape")
    py = translate_pcre(raw, extended, ungreedy, dollar_endonly, multiline)
    flags = 0
    if caseless:
        flags |= re.IGNORECASE
    if multiline:
        flags |= re.MULTILINE
    if dotall:
        flags |= re.DOTALL
    del anchored  # applied by the caller (match() instead of search())
    try:
        return re.compile(py, flags)
    except re.error as exc:
        raise RegexError(str(exc)) from None
    except (OverflowError, RecursionError):
        raise RegexError("regular expression is too large") from None
