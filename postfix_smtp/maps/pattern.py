"""regexp: and pcre: tables - ordered pattern rules with $number substitution.

A port of dict_regexp.c and dict_pcre.c: rules are read from a file or from
an inline ``{ {rule}, {rule} }`` name (dict_stream.c), each rule is
``[!]/pattern/flags result`` (regexp also takes ``/pattern/!/pattern2/``),
``IF [!]/pattern/flags`` ... ``ENDIF`` blocks nest, the first rule that
matches wins, ``$1``..``$9`` (and ``${n}``, ``$(n)``) in the result are
replaced by the matched text, ``$$`` is a dollar.  A rule that Postfix would
skip (bad syntax, a pattern the engine rejects, ``$n`` beyond the number of
groups, ``$n`` in a negative rule) is skipped with the same warning.

The patterns are translated for Python's ``re`` (see posix_re and pcre_re
for what is and is not equivalent).  Matching is bytewise, as Postfix's is.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Tuple

from .base import (DICT_FLAG_FOLD_MUL, DICT_FLAG_NO_REGSUB, DICT_FLAG_PATTERN,
                   OpenError, Table)
from .text import (C_SPACE, LITERAL, decode, extpar, isalnum, mac_parse, mystrtokq,
                   readllines, trimblanks)
from .posix_re import RegexError, compile_posix
from .pcre_re import compile_pcre

_MATCH, _IF, _ENDIF = 1, 2, 3


class _Rule:
    __slots__ = ("op", "lineno", "rx", "match", "rx2", "match2", "tokens", "literal",
                 "max_sub", "end", "anchored", "longest")

    def __init__(self, op: int, lineno: int) -> None:
        self.op = op
        self.lineno = lineno
        self.rx: Any = None
        self.match = True
        self.rx2: Any = None
        self.match2 = True
        self.tokens: List[Tuple[int, str]] = []
        self.literal: Optional[str] = None
        self.max_sub = 0
        self.end = -1          # IF: index of the matching ENDIF, -1 if none
        self.anchored = False
        self.longest = 0       # regexp: 0 no POSIX extension, 1 to the end only, 2 any


def read_rules_source(type_: str, name: str) -> Tuple[str, int]:
    """The rule text: a file's content, or an inline ``{ {rule}, ... }`` list."""
    if name.startswith("{"):
        inner, err = extpar(name, strip=False)
        if err:
            raise OpenError("%s map: %s" % (type_, err))
        lines = []
        for item in mystrtokq(inner):
            rule, err = extpar(item)
            if err:
                raise OpenError("%s map: %s" % (type_, err))
            lines.append(rule + "\n")
        return "".join(lines), os.getuid()
    try:
        with open(name, "rb") as fp:
            data = fp.read()
            uid = os.fstat(fp.fileno()).st_uid
    except OSError as exc:
        raise OpenError("open %s: %s" % (name, exc.strerror or exc)) from None
    return decode(data), uid


class PatternTable(Table):
    """Common part of regexp: and pcre:."""

    impl_flags = DICT_FLAG_PATTERN
    fold_flag = DICT_FLAG_FOLD_MUL
    kind = "regexp"

    def __init__(self, name: str, flags: int, log: Any = None, utf8: bool = False) -> None:
        super().__init__(name, flags, log, utf8)
        text, self.owner_uid = read_rules_source(self.type, name)
        self.rules: List[_Rule] = []
        stack: List[int] = []
        for lineno, line, problem in readllines(text):
            if problem:
                self.log.warning("%s: %s" % (name, problem))
                continue
            line = trimblanks(line)
            if not line:
                continue
            rule = self._parse_line(lineno, line, len(stack))
            if rule is None:
                continue
            if rule.op == _IF:
                stack.append(len(self.rules))
            elif rule.op == _ENDIF:
                self.rules[stack.pop()].end = len(self.rules)
            self.rules.append(rule)
        while stack:
            self._warn(self.rules[stack.pop()].lineno, "IF has no matching ENDIF")

    # -- parsing ---------------------------------------------------------------

    def _warn(self, lineno: int, text: str) -> None:
        self.log.warning("%s map %s, line %d: %s" % (self.kind, self.name, lineno, text))

    def _get_pat(self, lineno: int, p: str, pos: int) -> Optional[Tuple[str, str, bool, int]]:
        """(pattern, options, positive?, next pos) - dict_*_get_pat()."""
        n = len(p)
        match = True
        while pos < n and (p[pos] == "!" or p[pos] in C_SPACE):
            if p[pos] == "!":
                match = not match
            pos += 1
        if pos >= n:
            self._warn(lineno, "no regexp: skipping this rule")
            return None
        delim = p[pos]
        pos += 1
        start = pos
        while pos < n:
            if p[pos] == "\\":
                if pos + 1 < n:
                    pos += 1
                else:
                    pos = n
                    break
            elif p[pos] == delim:
                break
            pos += 1
        if pos >= n:
            self._warn(lineno, 'no closing regexp delimiter "%s": %s this rule'
                       % (delim, "skipping" if self.kind == "regexp" else "ignoring"))
            return None
        pattern = p[start:pos]
        pos += 1
        ostart = pos
        stop = C_SPACE + ("!" if self.kind == "regexp" else "")
        while pos < n and p[pos] not in stop:
            pos += 1
        return pattern, p[ostart:pos], match, pos

    def _parse_line(self, lineno: int, p: str, nesting: int) -> Optional[_Rule]:
        if not isalnum(p[0]):
            return self._parse_match(lineno, p)
        if p[:2].upper() == "IF" and (len(p) == 2 or not isalnum(p[2])):
            pos = 2
            while pos < len(p) and p[pos] in C_SPACE:
                pos += 1
            got = self._get_pat(lineno, p, pos)
            if got is None:
                return None
            pattern, options, match, pos = got
            while pos < len(p) and p[pos] in C_SPACE:
                pos += 1
            if pos < len(p):
                self._warn(lineno, 'ignoring extra text after IF statement: "%s"' % p[pos:])
                self._warn(lineno, "do not prepend whitespace to statements between IF "
                           "and ENDIF")
            rule = _Rule(_IF, lineno)
            if not self._compile(rule, lineno, pattern, options, first=True):
                return None
            rule.match = match
            return rule
        if p[:5].upper() == "ENDIF" and (len(p) == 5 or not isalnum(p[5])):
            if nesting == 0:
                self._warn(lineno, "ignoring ENDIF without matching IF")
                return None
            if p[5:].strip(C_SPACE):
                self._warn(lineno, "ignoring extra text after ENDIF")
            return _Rule(_ENDIF, lineno)
        self._warn(lineno, "ignoring unrecognized request")
        return None

    def _parse_match(self, lineno: int, p: str) -> Optional[_Rule]:
        got = self._get_pat(lineno, p, 0)
        if got is None:
            return None
        pattern, options, match, pos = got
        second = None
        if self.kind == "regexp" and pos < len(p) and p[pos] == "!":
            second = self._get_pat(lineno, p, pos)
            if second is None:
                return None
            pos = second[3]
        while pos < len(p) and p[pos] in C_SPACE:
            pos += 1
        if pos >= len(p):
            self._warn(lineno, "no replacement text: using empty string")
        replacement = p[pos:]
        tokens, err = mac_parse(replacement)
        if err:
            self.log.warning(err)
        max_sub = 0
        for kind, text in tokens:
            if kind == LITERAL:
                continue
            if not text.isdigit() or not text.isascii():
                self._warn(lineno, 'non-numeric replacement index "%s"' % text)
                err = err or "bad"
                break
            num = int(text)
            if num < 1:
                self._warn(lineno, '%s replacement index "%s"'
                           % ("out-of-range" if self.kind == "regexp" else "out of range", text))
                err = err or "bad"
                break
            max_sub = max(max_sub, num)
        if err:
            self._warn(lineno, "bad replacement syntax: skipping this rule")
            return None
        if max_sub > 0 and not match:
            self._warn(lineno, "$number found in negative match replacement text: "
                       "skipping this rule")
            return None
        if max_sub > 0 and self.flags & DICT_FLAG_NO_REGSUB:
            self._warn(lineno, "regular expression substitution is not allowed: "
                       "skipping this rule")
            return None
        rule = _Rule(_MATCH, lineno)
        rule.match = match
        if not self._compile(rule, lineno, pattern, options, first=True):
            return None
        if max_sub > rule.rx.groups:
            self._warn(lineno, 'out of range replacement index "%d": skipping this rule'
                       % max_sub)
            return None
        if second is not None:
            holder = _Rule(_MATCH, lineno)
            if not self._compile(holder, lineno, second[0], second[1], first=False):
                return None
            rule.rx2 = holder.rx
            rule.match2 = second[2]
        rule.max_sub = max_sub
        if max_sub == 0:
            rule.literal = "".join(text for _, text in tokens)
        else:
            rule.tokens = tokens
        return rule

    def _compile(self, rule: _Rule, lineno: int, pattern: str, options: str,
                 first: bool) -> bool:
        raise NotImplementedError

    # -- lookup ---------------------------------------------------------------

    def _get(self, key: str) -> Optional[str]:
        subject = key.encode("utf-8", "surrogateescape")
        rules = self.rules
        i, n = 0, len(rules)
        while i < n:
            rule = rules[i]
            op = rule.op
            if op == _MATCH:
                m = rule.rx.match(subject) if rule.anchored else rule.rx.search(subject)
                if (m is not None) != rule.match:
                    i += 1
                    continue
                if rule.rx2 is not None and (rule.rx2.search(subject) is not None) != rule.match2:
                    i += 1
                    continue
                if rule.literal is not None:
                    return rule.literal
                if rule.longest and m.end() < len(subject):
                    m = _posix_longest(rule, subject, m)
                out = []
                for kind, text in rule.tokens:
                    if kind == LITERAL:
                        out.append(text)
                    else:
                        g = m.group(int(text))
                        if g:
                            out.append(g.decode("utf-8", "surrogateescape"))
                return "".join(out)
            if op == _IF:
                m = rule.rx.match(subject) if rule.anchored else rule.rx.search(subject)
                if (m is not None) == rule.match:
                    i += 1
                    continue
                if rule.end < 0:
                    return None
                i = rule.end + 1
                continue
            i += 1
        return None


#: Longest stretch past a match that the POSIX extension below will try.
_LONGEST_LIMIT = 2048


def _posix_longest(rule: _Rule, subject: bytes, m: Any) -> Any:
    """Leftmost-longest: POSIX (and glibc) take the longest match at the
    leftmost position, Python the first one its backtracking finds.  Whether
    a rule matches does not depend on this, the $n texts can: try longer
    matches at the same start, longest first.  Patterns that look at the end
    of the subject (``$``, ``\\b``...) are only tried against the whole rest."""
    start, n = m.start(), len(subject)
    full = rule.rx.fullmatch(subject, start)
    if full is not None:
        return full
    if rule.longest == 1 or n - m.end() > _LONGEST_LIMIT:
        return m
    for end in range(n - 1, m.end(), -1):
        full = rule.rx.fullmatch(subject, start, end)
        if full is not None:
            return full
    return m


class RegexpTable(PatternTable):
    """regexp:/file - POSIX regular expressions (regcomp semantics)."""

    type = "regexp"
    kind = "regexp"

    def _compile(self, rule: _Rule, lineno: int, pattern: str, options: str,
                 first: bool) -> bool:
        extended, icase, newline = True, True, False
        for ch in options:
            if ch == "i":
                icase = not icase
            elif ch == "m":
                newline = not newline
            elif ch == "x":
                extended = not extended
            else:
                self._warn(lineno, 'unknown regexp option "%s": skipping this rule' % ch)
                return False
        try:
            rule.rx, _ = compile_posix(pattern, extended, icase, newline)
        except RegexError as exc:
            self._warn(lineno, str(exc))
            return False
        py = rule.rx.pattern
        if any(q in py for q in (b"|", b"*", b"+", b"?", b"{")):
            end_sensitive = any(a in py for a in (b"\\Z", b"$", b"\\b", b"\\B"))
            rule.longest = 1 if end_sensitive else 2
        return True


class PcreTable(PatternTable):
    """pcre:/file - Perl-compatible regular expressions (PCRE2 semantics)."""

    type = "pcre"
    kind = "pcre"

    def _compile(self, rule: _Rule, lineno: int, pattern: str, options: str,
                 first: bool) -> bool:
        opts = {"i": True, "m": False, "s": True, "x": False, "A": False, "E": False,
                "U": False}
        for ch in options:
            if ch in opts:
                opts[ch] = not opts[ch]
            elif ch == "X":
                self._warn(lineno, 'ignoring obsolete regexp option "X"')
            else:
                self._warn(lineno, 'unknown regexp option "%s": skipping this rule' % ch)
                return False
        try:
            rule.rx = compile_pcre(pattern, caseless=opts["i"], multiline=opts["m"],
                                   dotall=opts["s"], extended=opts["x"],
                                   anchored=opts["A"], dollar_endonly=opts["E"],
                                   ungreedy=opts["U"])
        except RegexError as exc:
            self._warn(lineno, "error in regex: %s" % exc)
            return False
        rule.anchored = opts["A"]
        return True
