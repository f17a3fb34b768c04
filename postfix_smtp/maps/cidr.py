"""cidr: tables - ordered network/mask rules with IF/ENDIF (dict_cidr.c, cidr_match.c)."""

from __future__ import annotations

import socket
from typing import Any, List, Optional, Tuple

from .base import DICT_FLAG_PATTERN, Table
from .pattern import read_rules_source
from .text import C_SPACE, isalnum, readllines, trimblanks

_MATCH, _IF, _ENDIF = 1, 2, 3


class CidrRuleError(Exception):
    pass


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _pton(family: int, text: str) -> Optional[bytes]:
    try:
        return socket.inet_pton(family, text)
    except (OSError, ValueError, UnicodeEncodeError):
        return None


def parse_cidr(pattern: str) -> Tuple[int, bytes, bytes, int]:
    """cidr_match_parse(): (family, network bytes, mask bytes, mask length)."""
    if pattern.startswith("["):
        pattern = pattern[1:]
        close = pattern.find("]")
        if close < 0:
            raise CidrRuleError("missing ']' character after \"[%s\"" % pattern)
        rest = pattern[close + 1:]
        pattern = pattern[:close]
        if rest and not rest.startswith("/"):
            raise CidrRuleError('garbage after "[%s]"' % pattern)
        if rest:
            pattern = pattern + rest
    if "/" in pattern:
        addr, mask = pattern.split("/", 1)
        family = _family(addr)
        bits = 128 if family == socket.AF_INET6 else 32
        if not mask.isdigit() or not mask.isascii():
            raise CidrRuleError('bad mask value in "%s/%s"' % (addr, mask))
        shift = int(mask)
        if shift > bits:
            raise CidrRuleError('bad mask length in "%s/%s"' % (addr, mask))
        net = _pton(family, addr)
        if net is None:
            raise CidrRuleError('bad network value in "%s/%s"' % (addr, mask))
        maskint = ((1 << bits) - 1) ^ ((1 << (bits - shift)) - 1)
        netint = int.from_bytes(net, "big")
        if netint & ~maskint & ((1 << bits) - 1):
            fixed = (netint & maskint).to_bytes(bits // 8, "big")
            raise CidrRuleError('non-null host address bits in "%s/%s", perhaps you should '
                                'use "%s/%d" instead'
                                % (addr, mask, socket.inet_ntop(family, fixed), shift))
        return family, net, maskint.to_bytes(bits // 8, "big"), shift
    family = _family(pattern)
    net = _pton(family, pattern)
    if net is None:
        raise CidrRuleError('bad address pattern: "%s"' % pattern)
    return family, net, b"\xff" * len(net), len(net) * 8


class _Rule:
    __slots__ = ("op", "lineno", "family", "net", "mask", "match", "value", "end")

    def __init__(self, op: int, lineno: int) -> None:
        self.op = op
        self.lineno = lineno
        self.family = 0
        self.net = b""
        self.mask = b""
        self.match = True
        self.value = ""
        self.end = -1

    def hits(self, family: int, addr: bytes) -> bool:
        if family != self.family:
            return False
        ok = all((a & m) == n for a, m, n in zip(addr, self.mask, self.net))
        return ok == self.match


class CidrTable(Table):
    type = "cidr"
    impl_flags = DICT_FLAG_PATTERN

    def __init__(self, name: str, flags: int, log: Any = None, utf8: bool = False) -> None:
        super().__init__(name, flags, log, utf8)
        text, self.owner_uid = read_rules_source(self.type, name)
        self.rules: List[_Rule] = []
        stack: List[int] = []
        for lineno, line, problem in readllines(text):
            if problem:
                self.log.warning("%s: %s" % (name, problem))
                continue
            try:
                rule = self._parse(line, lineno, len(stack))
            except CidrRuleError as exc:
                self.log.warning("cidr map %s, line %d: %s: skipping this rule"
                                 % (name, lineno, exc))
                continue
            if rule.op == _IF:
                stack.append(len(self.rules))
            elif rule.op == _ENDIF:
                self.rules[stack.pop()].end = len(self.rules)
            self.rules.append(rule)
        while stack:
            self.log.warning("cidr map %s, line %d: IF has no matching ENDIF"
                             % (name, self.rules[stack.pop()].lineno))

    @staticmethod
    def _parse(p: str, lineno: int, nesting: int) -> _Rule:
        match = True
        if p[:2].upper() == "IF" and (len(p) == 2 or not isalnum(p[2])):
            pos = 2
            while pos < len(p) and (p[pos] == "!" or p[pos] in C_SPACE):
                if p[pos] == "!":
                    match = not match
                pos += 1
            if pos >= len(p):
                raise CidrRuleError("no address pattern")
            rule = _Rule(_IF, lineno)
            rule.family, rule.net, rule.mask, _ = parse_cidr(trimblanks(p[pos:]))
            rule.match = match
            return rule
        if p[:5].upper() == "ENDIF" and (len(p) == 5 or not isalnum(p[5])):
            if p[5:].strip(C_SPACE):
                raise CidrRuleError("garbage after ENDIF")
            if nesting == 0:
                raise CidrRuleError("ENDIF without IF")
            return _Rule(_ENDIF, lineno)
        pos = 0
        while pos < len(p) and (p[pos] == "!" or p[pos] in C_SPACE):
            if p[pos] == "!":
                match = not match
            pos += 1
        end = pos
        while end < len(p) and p[end] not in C_SPACE:
            end += 1
        pattern = p[pos:end]
        value = trimblanks(p[end:].lstrip(C_SPACE))
        if not pattern:
            raise CidrRuleError("no address pattern")
        rule = _Rule(_MATCH, lineno)
        rule.family, rule.net, rule.mask, _ = parse_cidr(pattern)
        if not value:
            raise CidrRuleError("no lookup result")
        rule.match = match
        rule.value = value
        return rule

    def _get(self, key: str) -> Optional[str]:
        family = _family(key)
        addr = _pton(family, key)
        if addr is None:
            return None
        rules = self.rules
        i, n = 0, len(rules)
        while i < n:
            rule = rules[i]
            if rule.op == _MATCH:
                if rule.hits(family, addr):
                    return rule.value
            elif rule.op == _IF:
                if not rule.hits(family, addr):
                    if rule.end < 0:
                        return None
                    i = rule.end
            i += 1
        return None
