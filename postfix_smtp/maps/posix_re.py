"""POSIX regular expressions (glibc regcomp(3) in the C locale) -> Python ``re``.

Postfix regexp: tables are compiled with regcomp(): extended syntax by
default (the ``x`` option switches to basic syntax), REG_ICASE by default
(``i`` toggles), REG_NEWLINE with ``m``.  Postfix runs in the C locale, so
matching is bytewise and case-insensitivity is ASCII-only; this module
therefore produces *bytes* patterns for Python's ``re`` (whose bytes mode is
ASCII-only too).

What is translated:

- ERE operators ``| * + ? {m,n} ( )``, stacked repetitions (``a+*``, which
  Python would read as lazy or reject) by grouping;
- BRE ``\\( \\) \\{m,n\\} \\| \\+ \\?``, a literal ``*`` at the start of an
  expression, ``^``/``$`` anchors only where BRE makes them anchors;
- anchors: ``$`` is the end of the string (``\\Z``) unless REG_NEWLINE;
- bracket expressions: ``]`` first is literal, backslash is literal,
  ``[:class:]`` (C-locale classes), ``[=c=]``, ``[.c.]``, ranges; with
  REG_NEWLINE a non-matching list never matches a newline;
- GNU escapes ``\\w \\W \\s \\S \\b \\B \\< \\> \\` \\'`` and back-references
  ``\\1``..``\\9``; any other escaped character is literal (``\\n`` is "n"),
  except that with REG_ICASE glibc makes an escaped lowercase letter match
  nothing (``\\n``, ``\\t``, ``\\d`` never match), which is reproduced.

Matching semantics: POSIX (and glibc) report the leftmost-*longest* match,
Python the leftmost match its backtracking finds first.  Whether a pattern
matches is the same; for ``$1``..``$9`` the regexp table extends Python's
match to the longest one at the same start (see pattern._posix_longest),
which reproduces glibc on every case the tests compare.  Multi-character
collating elements and equivalence classes are rejected.
"""

from __future__ import annotations

import re
from typing import List, Tuple

__all__ = ["RegexError", "translate", "compile_posix"]


class RegexError(Exception):
    """Pattern rejected, with a regerror()-like text."""


_CLASSES = {
    b"alpha": b"A-Za-z", b"digit": b"0-9", b"alnum": b"0-9A-Za-z",
    b"upper": b"A-Z", b"lower": b"a-z", b"space": b" \\t\\n\\r\\f\\v",
    b"blank": b" \\t", b"punct": b"!-/:-@\\[-`{-~", b"print": b" -~",
    b"graph": b"!-~", b"cntrl": b"\\x00-\\x1f\\x7f", b"xdigit": b"0-9A-Fa-f",
}


def _lit(b: int) -> bytes:
    """A Python-regex escape for one byte, usable inside and outside classes."""
    if (0x30 <= b <= 0x39) or (0x41 <= b <= 0x5A) or (0x61 <= b <= 0x7A):
        return bytes([b])
    return b"\\x%02x" % b


def _bracket(pat: bytes, i: int, newline: bool) -> Tuple[bytes, int]:
    """Translate the bracket expression starting after '[' at index i."""
    n = len(pat)
    negate = False
    if i < n and pat[i] == 0x5E:  # ^
        negate = True
        i += 1
    items: List[bytes] = []
    first = True
    prev_char = -1          # last single char, for a following range
    while True:
        if i >= n:
            raise RegexError("Unmatched [, [^, [:, [., or [=")
        c = pat[i]
        if c == 0x5D and not first:  # ]
            i += 1
            break
        first = False
        if c == 0x5B and i + 1 < n and pat[i + 1] in b":.=":
            kind = pat[i + 1]
            end = pat.find(bytes([kind, 0x5D]), i + 2)
            if end < 0:
                raise RegexError("Unmatched [, [^, [:, [., or [=")
            body = pat[i + 2:end]
            i = end + 2
            if kind == 0x3A:  # [:class:]
                cls = _CLASSES.get(body)
                if cls is None:
                    raise RegexError("Invalid character class name")
                items.append(cls)
                prev_char = -1
                continue
            if len(body) != 1:
                raise RegexError("Invalid collation character")
            c = body[0]
        else:
            i += 1
        # c is a single character; is it the start of a range?
        if (i + 1 < n and pat[i] == 0x2D and pat[i + 1] != 0x5D):  # c-x
            j = i + 1
            if pat[j] == 0x5B and j + 1 < n and pat[j + 1] in b".=":
                kind = pat[j + 1]
                end = pat.find(bytes([kind, 0x5D]), j + 2)
                if end < 0 or end - (j + 2) != 1:
                    raise RegexError("Invalid range end")
                hi = pat[j + 2]
                i = end + 2
            else:
                hi = pat[j]
                i = j + 1
            if hi < c:
                raise RegexError("Invalid range end")
            items.append(_lit(c) + b"-" + _lit(hi))
            prev_char = -1
            continue
        items.append(_lit(c))
        prev_char = c
    del prev_char
    body = b"".join(items)
    if negate:
        if newline:
            body += b"\\n"
        return b"[^" + body + b"]", i
    return b"[" + body + b"]", i


def translate(pat: bytes, extended: bool = True, newline: bool = False,
              icase: bool = False) -> Tuple[bytes, int]:
    """(Python pattern, number of subexpressions) for a POSIX ERE or BRE."""
    out: List[bytes] = []
    # Stack of (output index where the group starts, capturing?) per open group.
    groups: List[int] = []
    nsub = 0
    atom_start = -1         # output index of the last atom, -1 if none (can't repeat)
    n = len(pat)
    i = 0
    dollar = b"$" if newline else b"\\Z"

    def at_expr_start() -> bool:
        # Start of the whole pattern, or just after an open group or '|'.
        return atom_start == -1 and (not out or out[-1] in (b"(", b"|", b"^"))

    def repeat(q: bytes) -> None:
        nonlocal atom_start
        if atom_start < 0:
            raise RegexError("Invalid preceding regular expression")
        # Stacked repetition: group what we have so far.
        if out and out[-1][:1] in (b"*", b"+", b"?", b"{"):
            out[atom_start:] = [b"(?:" + b"".join(out[atom_start:]) + b")"]
            atom_start = len(out) - 1
        out.append(q)

    while i < n:
        c = pat[i]
        i += 1
        if extended:
            if c == 0x28:  # (
                nsub += 1
                groups.append(len(out))
                out.append(b"(")
                atom_start = -1
                continue
            if c == 0x29:  # )
                if not groups:
                    # RE_UNMATCHED_RIGHT_PAREN_ORD: a lone ')' is literal
                    atom_start = len(out)
                    out.append(b"\\)")
                    continue
                start = groups.pop()
                out.append(b")")
                atom_start = start
                continue
            if c == 0x7C:  # |
                out.append(b"|")
                atom_start = -1
                continue
            if c in (0x2A, 0x2B, 0x3F):  # * + ?
                repeat(bytes([c]))
                continue
            if c == 0x7B:  # {
                end = pat.find(b"}", i)
                body = pat[i:end] if end >= 0 else b""
                if end < 0 or not re.fullmatch(rb"\d*(,\d*)?", body) or body in (b"", b","):
                    raise RegexError("Invalid content of \\{\\}")
                lo_hi = body.split(b",")
                if len(lo_hi) == 2 and lo_hi[0] and lo_hi[1] and int(lo_hi[0]) > int(lo_hi[1]):
                    raise RegexError("Invalid content of \\{\\}")
                if len(lo_hi) == 2 and not lo_hi[0]:
                    body = b"0" + body
                repeat(b"{" + body + b"}")
                i = end + 1
                continue
            if c == 0x5E:  # ^ : an anchor anywhere in ERE
                out.append(b"^")
                atom_start = -1
                continue
            if c == 0x24:  # $
                out.append(dollar)
                atom_start = -1
                continue
        else:
            if c == 0x2A:  # * : literal at the start of an expression
                if at_expr_start():
                    atom_start = len(out)
                    out.append(b"\\*")
                else:
                    repeat(b"*")
                continue
            if c == 0x5E and at_expr_start() and (not out or out[-1] != b"^"):  # ^ anchor
                out.append(b"^")
                atom_start = -1
                continue
            if c == 0x24:  # $ anchor only at the end of an expression
                if i >= n or pat[i:i + 2] in (b"\\)", b"\\|"):
                    out.append(dollar)
                    atom_start = -1
                else:
                    atom_start = len(out)
                    out.append(b"\\$")
                continue
            if c == 0x5C and i < n:  # BRE operators are escaped
                d = pat[i]
                if d == 0x28:
                    i += 1
                    nsub += 1
                    groups.append(len(out))
                    out.append(b"(")
                    atom_start = -1
                    continue
                if d == 0x29:
                    i += 1
                    if not groups:
                        raise RegexError("Unmatched ) or \\)")
                    start = groups.pop()
                    out.append(b")")
                    atom_start = start
                    continue
                if d == 0x7C:
                    i += 1
                    out.append(b"|")
                    atom_start = -1
                    continue
                if d in (0x2B, 0x3F):
                    i += 1
                    repeat(bytes([d]))
                    continue
                if d == 0x7B:
                    end = pat.find(b"\\}", i + 1)
                    body = pat[i + 1:end] if end >= 0 else b""
                    if end < 0 or not re.fullmatch(rb"\d*(,\d*)?", body) or body in (b"", b","):
                        raise RegexError("Invalid content of \\{\\}")
                    if body.startswith(b","):
                        body = b"0" + body
                    repeat(b"{" + body + b"}")
                    i = end + 2
                    continue
        if c == 0x2E:  # .
            atom_start = len(out)
            out.append(b".")
            continue
        if c == 0x5B:  # [
            cls, i = _bracket(pat, i, newline)
            atom_start = len(out)
            out.append(cls)
            continue
        if c == 0x5C:  # backslash
            if i >= n:
                raise RegexError("Trailing backslash")
            d = pat[i]
            i += 1
            if 0x31 <= d <= 0x39:  # back-reference
                if d - 0x30 > nsub:
                    raise RegexError("Invalid back reference")
                atom_start = len(out)
                out.append(b"(?:\\" + bytes([d]) + b")")
                continue
            if d in b"wWsS":
                atom_start = len(out)
                out.append(b"\\" + bytes([d]))
                continue
            if d in b"bB":
                out.append(b"\\" + bytes([d]))
                atom_start = -1
                continue
            if d == 0x3C:  # \<
                out.append(b"\\b(?=\\w)")
                atom_start = -1
                continue
            if d == 0x3E:  # \>
                out.append(b"\\b(?<=\\w)")
                atom_start = -1
                continue
            if d == 0x60:  # \`
                out.append(b"\\A")
                atom_start = -1
                continue
            if d == 0x27:  # \'
                out.append(b"\\Z")
                atom_start = -1
                continue
            atom_start = len(out)
            if icase and 0x61 <= d <= 0x7A:
                # glibc quirk: with REG_ICASE an escaped lowercase letter
                # (other than the GNU operators above) matches nothing.
                out.append(b"(?!)")
            else:
                out.append(_lit(d))
            continue
        atom_start = len(out)
        out.append(_lit(c))
    if groups:
        raise RegexError("Unmatched ( or \\(")
    return b"".join(out), nsub


def compile_posix(pattern: str, extended: bool = True, icase: bool = True,
                  newline: bool = False) -> Tuple["re.Pattern[bytes]", int]:
    """Compile a POSIX regex (as regcomp() with the given cflags would)."""
    raw = pattern.encode("utf-8", "surrogateescape")
    py, nsub = translate(raw, extended, newline, icase)
    flags = 0
    if icase:
        flags |= re.IGNORECASE
    if newline:
        flags |= re.MULTILINE
    else:
        flags |= re.DOTALL
    try:
        return re.compile(py, flags), nsub
    except re.error as exc:
        raise RegexError(str(exc)) from None
    except (OverflowError, RecursionError):
        raise RegexError("Regular expression too big") from None
