"""Postfix match lists: host names, host addresses and plain strings.

A match list is what a parameter such as ``debug_peer_list`` or
``parent_domain_matches_subdomains`` holds: items separated by commas or
white space, tried left to right, the first hit decides.  This is the
behaviour of Postfix 3.7's match_list(3) with the match functions of
match_ops.c, as used by namadr_list(3) (host name *and* address) and
string_list(3):

- ``name`` / ``.name``: a host name, or a domain and its subdomains.  With
  the list's parameter in ``parent_domain_matches_subdomains`` a plain
  ``example.com`` also matches ``a.example.com``; otherwise only a leading
  dot does that (``.example.com`` matches subdomains, not the domain).
- an address (``192.0.2.1``, ``[192.0.2.1]``, ``[2001:db8::1]``) or a
  network (``192.0.2.0/24``, ``[2001:db8::]/32``) matches the address.
- ``/file/name``: the file's items, in place (lines starting with ``#``
  are skipped; a file that cannot be read becomes a table whose every
  lookup fails).
- ``type:table``: a lookup of the name (and, for fixed-key tables such as
  hash, of its parent domains), or of the address; any value is a hit.
- ``!item``: a hit on *item* means "no"; ``!`` applies to each item of a
  ``/file/name`` too.

Every name, address and pattern is case-folded.  A table lookup failure or
an unusable network pattern stops the search: the list answers "no" and
:attr:`MatchList.error` is set, with a warning "PARAM: ..." (stock's
MATCH_FLAG_RETURN behaviour, which every list the agent uses asks for).
"""

from __future__ import annotations

import socket
from typing import Any, Callable, List, Optional, Tuple

from .base import (DICT_ERR_RETRY, DICT_FLAG_LOCK, DICT_FLAG_UTF8_REQUEST, MapError, NullLog,
                   Surrogate, Table, ascii_lower, casefold)
from .cidr import CidrRuleError, parse_cidr   # imported now: matching may run in a chroot jail
from .text import CHARS_COMMA_SP, mystrtokq

__all__ = ["MatchList", "MatchListError", "namadr_list", "string_list", "host_list",
           "addr_list", "parent_style", "LIST_TABLE_FLAGS"]

#: How match_list(3) opens its tables: no case folding by the table, because
#: the search key is folded already (and so are file-based table keys).
LIST_TABLE_FLAGS = DICT_FLAG_LOCK | DICT_FLAG_UTF8_REQUEST

_V4_CHARS = frozenset("01234567890.")
_V6_CHARS = _V4_CHARS | frozenset("abcdefABCDEF:")
_CIDR_CHARS = _V6_CHARS | frozenset("[]/")


class MatchListError(ValueError):
    """A list that stock Postfix refuses with a fatal error (``!`` alone)."""


def _is_table(item: str) -> bool:
    """A ``type:name`` item (an address in brackets may contain colons too)."""
    return not item.startswith("[") and ":" in item


class _Item:
    """One parsed list element: a folded pattern or an open table."""
    __slots__ = ("positive", "pattern", "table")

    def __init__(self, positive: bool, pattern: str, table: Optional[Table]) -> None:
        self.positive = positive
        self.pattern = pattern
        self.table = table


class MatchList:
    """An ordered list of patterns with one or more match functions.

    ``kinds`` names the match functions, each applied to the argument in the
    same position of :meth:`match`: ``"host"`` (match_hostname),
    ``"addr"`` (match_hostaddr) or ``"string"`` (match_string).
    """

    def __init__(self, pname: str, patterns: str, kinds: Tuple[str, ...],
                 parent: bool = False, params: Any = None, log: Any = None,
                 ctx: Any = None, utf8: bool = True) -> None:
        self.pname = pname
        self.kinds = tuple(kinds)
        self.parent = parent
        self.log = log if log is not None else NullLog()
        self.utf8 = utf8
        self.error = 0
        self._ctx = ctx
        self._own_ctx = False
        self._params = params
        self._funcs: List[Callable[[str, _Item], bool]] = []
        for kind in self.kinds:
            func = {"host": self._match_host, "addr": self._match_addr,
                    "string": self._match_string}.get(kind)
            if func is None:
                raise ValueError("unknown match kind: %r" % kind)
            self._funcs.append(func)
        self.items: List[_Item] = []
        self._parse(patterns, True)

    # -- construction ----------------------------------------------------------

    def _fold(self, text: str) -> str:
        return casefold(text) if self.utf8 else ascii_lower(text)

    def _context(self) -> Any:
        if self._ctx is None:
            from .api import OpenContext
            self._ctx = OpenContext(self._params, self.log, utf8=self.utf8)
            self._own_ctx = True
        return self._ctx

    def _parse(self, text: str, positive: bool) -> None:
        tokens = mystrtokq(text, CHARS_COMMA_SP)
        for pos, token in enumerate(tokens):
            if token.startswith("#"):
                self.log.warning("%s: comment at end of line is not supported: %s"
                                 % (self.pname, " ".join(tokens[pos:])))
                return
            item = token.lstrip("!")
            polarity = positive if (len(token) - len(item)) % 2 == 0 else not positive
            if not item:
                raise MatchListError("%s: no pattern after '!'" % self.pname)
            if item.startswith("/"):
                self._parse_file(item, polarity)
            elif _is_table(item):
                table = self._context().open_table(item, LIST_TABLE_FLAGS)
                self.items.append(_Item(polarity, item, table))
            else:
                self.items.append(_Item(polarity, self._fold(item), None))

    def _parse_file(self, path: str, positive: bool) -> None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            # a table that fails every lookup, so the list cannot silently match less
            reason = "open file %s: %s" % (path, exc.strerror or exc)
            self.items.append(_Item(positive, "nofile:" + path,
                                    Surrogate("nofile", path, LIST_TABLE_FLAGS, reason, self.log)))
            return
        for raw in data.split(b"\n"):
            line = raw.decode("utf-8", "surrogateescape")
            if line.startswith("#"):
                continue
            self._parse(line, positive)

    # -- matching ------------------------------------------------------------------

    def match(self, *args: str) -> bool:
        """True when the first item that hits one of ``args`` is not negated."""
        if len(args) != len(self._funcs):
            raise TypeError("%s: expected %d arguments" % (self.pname, len(self._funcs)))
        self.error = 0
        folded = [self._fold(a) for a in args]
        for item in self.items:
            for func, arg in zip(self._funcs, folded):
                if func(arg, item):
                    return item.positive
                if self.error:
                    return False
        if getattr(self.log, "verbose", 0):
            for a in args:
                self.log.info("match_list_match: %s: no match" % a)
        return False

    def _verbose(self, func: str, arg: str, item: _Item) -> None:
        if getattr(self.log, "verbose", 0):
            self.log.info("%s: %s: %s ~? %s" % (func, self.pname, arg, item.pattern))

    def _failed(self, table: Table) -> bool:
        self.error = DICT_ERR_RETRY
        self.log.warning("%s: %s: table lookup problem" % (self.pname, table.title))
        return False

    def _lookup(self, table: Table, key: str) -> Optional[bool]:
        """True/False: found or not; None: the lookup failed (already reported)."""
        try:
            return table.lookup(key) is not None
        except MapError:
            self._failed(table)
            return None

    def _match_string(self, string: str, item: _Item) -> bool:
        self._verbose("match_string", string, item)
        if item.table is not None:
            return bool(self._lookup(item.table, string))
        return string == item.pattern

    def _match_host(self, name: str, item: _Item) -> bool:
        self._verbose("match_hostname", name, item)
        table = item.table
        if table is not None:
            # the name itself, then (fixed-key tables only) each parent domain:
            # "b.c" / "c" with parent-style matching, ".b.c" / ".c" without
            entry = name
            first = True
            while entry:
                if first or table.fixed:
                    found = self._lookup(table, entry)
                    if getattr(self.log, "verbose", 0) > 1:
                        self.log.info("match_hostname: %s: lookup %s %s: %s" % (
                            self.pname, table.title, entry, "found" if found else "notfound"))
                    if found:
                        return True
                    if found is None:
                        return False
                first = False
                dot = entry.find(".", 1)
                if dot < 0:
                    break
                entry = entry[dot + 1:] if self.parent else entry[dot:]
            return False
        pattern = item.pattern
        if name == pattern:
            return True
        if len(name) > len(pattern) and name.endswith(pattern):
            if self.parent:
                return name[-len(pattern) - 1] == "."
            return pattern.startswith(".")
        return False

    def _match_addr(self, addr: str, item: _Item) -> bool:
        self._verbose("match_hostaddr", addr, item)
        if any(c not in _V6_CHARS for c in addr):
            return False            # not an address (a name, or "noaddr")
        if item.table is not None:
            return bool(self._lookup(item.table, addr))
        pattern = item.pattern
        if not pattern.startswith("["):
            if addr == pattern:
                return True
        elif pattern == "[" + addr + "]":
            return True
        # cheap rejections before parsing: families differ, not a net/mask or
        # IPv6 form, a plain IPv4 address (already compared), or a domain name
        if ((":" in addr) != (":" in pattern)
                or not any(c in ":/" for c in pattern)
                or all(c in _V4_CHARS for c in pattern)
                or any(c not in _CIDR_CHARS for c in pattern)):
            return False
        try:
            family, net, mask, _bits = parse_cidr(pattern)
        except CidrRuleError as exc:
            self.error = DICT_ERR_RETRY
            self.log.warning("%s: %s" % (self.pname, exc))
            return False
        addr_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        if addr_family != family:
            return False
        try:
            packed = socket.inet_pton(family, addr)
        except (OSError, ValueError):
            return False
        return all((a & m) == n for a, m, n in zip(packed, mask, net))

    # -- upkeep ----------------------------------------------------------------

    def tables(self) -> List[Table]:
        return [i.table for i in self.items if i.table is not None]

    def changed_table(self) -> Optional[str]:
        """"type:name" of a table file rebuilt since it was opened, else None."""
        for table in self.tables():
            if table.changed():
                return table.title
        return None

    def close(self) -> None:
        if self._own_ctx and self._ctx is not None:
            self._ctx.close()
        self._ctx = None

    def __repr__(self) -> str:
        return "<MatchList %s: %s>" % (self.pname, ", ".join(
            ("" if i.positive else "!") + i.pattern for i in self.items))


def string_list(pname: str, patterns: str, params: Any = None, log: Any = None,
                ctx: Any = None, utf8: bool = True) -> MatchList:
    """string_list_init(): exact (case-folded) strings and tables."""
    return MatchList(pname, patterns, ("string",), params=params, log=log, ctx=ctx, utf8=utf8)


def parent_style(pname: str, params: Any = None, log: Any = None, utf8: bool = True) -> bool:
    """match_parent_style(): is ``pname`` listed in parent_domain_matches_subdomains?"""
    from .api import _param
    spec = _param(params, "parent_domain_matches_subdomains", "")
    if not spec.strip():
        return False
    lst = string_list("parent_domain_matches_subdomains", spec, params, log, utf8=utf8)
    try:
        return lst.match(pname)
    finally:
        lst.close()


def namadr_list(pname: str, patterns: str, params: Any = None, log: Any = None,
                ctx: Any = None, utf8: Optional[bool] = None,
                parent: Optional[bool] = None) -> MatchList:
    """namadr_list_init(): match by host name and by address, ``match(name, addr)``.

    ``parent`` defaults to whether ``pname`` is in parent_domain_matches_subdomains;
    ``utf8`` to ``smtputf8_enable`` (the case folding stock uses)."""
    if utf8 is None:
        from .api import _param_bool
        utf8 = _param_bool(params, "smtputf8_enable", True)
    if parent is None:
        parent = parent_style(pname, params, log, utf8)
    return MatchList(pname, patterns, ("host", "addr"), parent=parent, params=params,
                     log=log, ctx=ctx, utf8=utf8)


def host_list(pname: str, patterns: str, parent: bool = False, **kw: Any) -> MatchList:
    """A list matched by host name only (match_hostname)."""
    return MatchList(pname, patterns, ("host",), parent=parent, **kw)


def addr_list(pname: str, patterns: str, **kw: Any) -> MatchList:
    """A list matched by address only (match_hostaddr, as addr_match_list)."""
    return MatchList(pname, patterns, ("addr",), **kw)
