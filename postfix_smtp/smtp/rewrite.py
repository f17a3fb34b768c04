"""smtp_generic_maps: generic(5) address rewriting on output (smtp_map11.c).

What stock smtp(8) 3.7 rewrites:

- the envelope sender (when non-empty) and each envelope recipient
  (:meth:`GenericMapper.map_internal`, internal form in and out);
- the addresses of the prepended ``Return-Path``/``X-Original-To``/
  ``Delivered-To`` headers (the caller maps the internal address, then
  quotes it as stock does);
- in the *primary* header block only, the address lists of headers flagged as
  sender or recipient headers (:meth:`GenericMapper.rewrite_header`): the
  value is parsed with a port of Postfix's RFC 822 tokenizer/parser (tok822:
  display names, comments, groups, quoted local parts, domain literals); each
  address is mapped, and if any matched, the header is rebuilt as ``Name: ``
  plus the externalized list (one address per line), then joined greedily
  (an address goes on the current line if the line stays under 70
  characters, else on a new line that starts with a TAB).  A header in which
  nothing matched is passed through byte-for-byte.

Lookup semantics: mail_addr_map() -- mail_addr_find() with the default
strategy (full address, address without extension, local part when the
domain is local, ``@domain``), queries in external (quoted) form; a result
``@domain`` keeps the original local part (without an unmatched extension);
the result is parsed as an address list and each address canonicalised as
trivial-rewrite's "canonicalize" would (``@$myorigin`` appended when there is
no domain, the percent hack, ``.$mydomain`` with ``append_dot_mydomain``);
the unmatched extension is propagated only if
``propagate_unmatched_extensions`` lists ``generic``.  Only the first address
of a multi-valued result is used (warning ``multi-valued TITLE result for
ADDR``).

Lookup errors raise :class:`GenericMapError` whose text is stock's fatal
message ``TITLE map lookup problem for ADDR``.  Stock exits (fatal); the
agent's caller defers instead (see delivery.py).

Strings are ``str``; bytes from the queue file are decoded as UTF-8 with
``surrogateescape`` so that every byte survives the round trip.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

from ..maps.address import quote_822_local, unquote_822_local
from ..maps.base import MapError

__all__ = [
    "GenericMapper", "GenericMapError", "Tok", "tok822_scan", "tok822_parse",
    "tok822_internalize", "tok822_externalize", "tok822_grep", "fold_address_header",
    "ATOM", "QSTRING", "COMMENT", "DOMLIT", "ADDR", "STARTGRP",
    "STR_DEFL", "STR_HEAD", "ext_prop_generic",
]

# token types (tok822.h); single-character operators are their own ord()
ATOM = 256
QSTRING = 257
COMMENT = 258
DOMLIT = 259
ADDR = 260
STARTGRP = 261
_MINTOK = 256

STR_NONE = 0
STR_WIPE = 1 << 0
STR_TERM = 1 << 1
STR_LINE = 1 << 2
STR_TRNC = 1 << 3
STR_DEFL = STR_WIPE | STR_TERM
STR_HEAD = STR_TERM | STR_LINE | STR_TRNC

_LEX_822_SPECIALS = '()<>@,;:\\".[]'
_OPCHARS = "|%!" + _LEX_822_SPECIALS
_SP_TAB_CR_LF = " \t\r\n"
_MAX_NONADDR_LENGTH = 250


class GenericMapError(Exception):
    """A smtp_generic_maps lookup failed (stock: fatal)."""


# --------------------------------------------------------------------------
# tok822: a doubly-linked token list with sub-lists, as in Postfix


class Tok:
    __slots__ = ("type", "text", "prev", "next", "head", "tail", "owner")

    def __init__(self, type_: int, text: str = "") -> None:
        self.type = type_
        self.text = text
        self.prev: Optional[Tok] = None
        self.next: Optional[Tok] = None
        self.head: Optional[Tok] = None
        self.tail: Optional[Tok] = None
        self.owner: Optional[Tok] = None

    def __repr__(self) -> str:
        if self.type == ADDR:
            return "ADDR(%s)" % _list_repr(self.head)
        if self.type < _MINTOK:
            return "OP(%s)" % chr(self.type)
        name = {ATOM: "ATOM", QSTRING: "QSTRING", COMMENT: "COMMENT", DOMLIT: "DOMLIT",
                STARTGRP: "STARTGRP"}.get(self.type, str(self.type))
        return "%s(%r)" % (name, self.text)


def _list_repr(tp: Optional[Tok]) -> str:
    out = []
    while tp is not None:
        out.append(repr(tp))
        tp = tp.next
    return " ".join(out)


def _append(t1: Tok, t2: Tok) -> Tok:
    nxt = t1.next
    t1.next = t2
    t2.prev = t1
    t2.owner = t1.owner
    while t2.next is not None:
        t2 = t2.next
        t2.owner = t1.owner
    t2.next = nxt
    if nxt is not None:
        nxt.prev = t2
    return t2


def _prepend(t1: Tok, t2: Tok) -> Tok:
    prev = t1.prev
    if prev is not None:
        prev.next = t2
    t2.prev = prev
    t2.owner = t1.owner
    while t2.next is not None:
        t2 = t2.next
        t2.owner = t1.owner
    t2.next = t1
    t1.prev = t2
    return t2


def _cut_before(tp: Tok) -> Optional[Tok]:
    prev = tp.prev
    if prev is not None:
        prev.next = None
        tp.prev = None
    return prev


def _unlink(tp: Tok) -> Optional[Tok]:
    prev, nxt = tp.prev, tp.next
    if prev is not None:
        prev.next = nxt
    if nxt is not None:
        nxt.prev = prev
    tp.prev = tp.next = None
    return prev


def _sub_append(t1: Tok, t2: Tok) -> Tok:
    if t1.head is not None:
        t1.tail = _append(t1.tail, t2)
        return t1.tail
    t1.head = t2
    t2.owner = t1
    while t2.next is not None:
        t2 = t2.next
        t2.owner = t1
    t1.tail = t2
    return t2


def tok822_grep(tree: Optional[Tok], type_: int) -> List[Tok]:
    """Top-level tokens of a type (0: all)."""
    out = []
    tp = tree
    while tp is not None:
        if type_ == 0 or tp.type == type_:
            out.append(tp)
        tp = tp.next
    return out


def _collect(s: str, i: int, cond: Callable[[str], bool]) -> Tuple[str, int]:
    """COLLECT(): backslash quotes the next character; white space becomes SP."""
    out = []
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 1
            if i >= n:
                break
            c = s[i]
        elif not cond(c):
            break
        out.append(" " if c in _SP_TAB_CR_LF else c)
        i += 1
    return "".join(out), i


def _iscntrl(c: str) -> bool:
    o = ord(c)
    return o < 0x20 or o == 0x7F


def _comment(s: str, i: int) -> Tuple[str, int]:
    """tok822_comment(): stored in external form, parentheses included."""
    out = ["("]
    level = 1
    n = len(s)
    while i < n:
        c = s[i]
        out.append(c)
        i += 1
        if c == "(":
            level += 1
        elif c == ")":
            level -= 1
            if level == 0:
                break
        elif c == "\\":
            if i >= n:
                break
            out.append(s[i])
            i += 1
    return "".join(out), i


def tok822_scan(s: str) -> Tuple[Optional[Tok], Optional[Tok]]:
    """Tokenize: (head, tail) of a flat token list."""
    head: Optional[Tok] = None
    tail: Optional[Tok] = None
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        i += 1
        if ch in _SP_TAB_CR_LF:
            continue
        if ch == "(":
            text, i = _comment(s, i)
            tp = Tok(COMMENT, text)
        elif ch == "[":
            text, i = _collect(s, i, lambda c: c != "]")
            if i < n:
                i += 1
            tp = Tok(DOMLIT, text)
        elif ch == '"':
            text, i = _collect(s, i, lambda c: c != '"')
            if i < n:
                i += 1
            tp = Tok(QSTRING, text)
        elif ch != "\\" and ch in _OPCHARS:
            tp = Tok(ord(ch))
        else:
            i -= 1
            text, i = _collect(s, i, lambda c: c not in _SP_TAB_CR_LF and c not in _OPCHARS)
            tp = Tok(ATOM, text)
            for c in text:                        # tok822_quote_atom()
                if c == " " or _iscntrl(c) or c in _OPCHARS:
                    tp.type = QSTRING
                    break
        if head is None:
            head = tail = tp
        else:
            tail = _append(tail, tp)
    return head, tail


def _group(left: Tok, right: Tok, sync: int) -> Tok:
    """tok822_group(): cluster the tokens between left and right into an ADDR."""
    first = left.next
    if left is not right and first is not right:
        _cut_before(right)
        _cut_before(first)
        group = Tok(ADDR)
        _sub_append(group, first)
        _append(left, group)
        _append(group, right)
        if sync:
            _append(left, Tok(sync))
    return left


_DO_WORD = 1
_DO_GROUP = 2


def tok822_parse(s: str) -> Optional[Tok]:
    """tok822_parse(): the parse tree (a top-level list; addresses are ADDR nodes)."""
    first, last = tok822_scan(s)
    if first is None:
        return None
    head = Tok(0)
    tail = Tok(0)
    head.next, first.prev = first, head
    last.next, tail.prev = tail, last

    state = _DO_WORD
    right = tail
    tp = tail.prev
    while tp.type:
        if tp.type == COMMENT:                      # move comment to the side
            prev = _unlink(tp)
            right = _prepend(right, tp)
            tp = prev
            continue
        if tp.type == ord(";"):                     # rh side of named group
            right = _group(tp, right, ord(","))
            state = _DO_GROUP | _DO_WORD
        elif tp.type == ord(":") and state & _DO_GROUP:
            tp.type = STARTGRP
            _group(tp, right, 0)
            while tp.type and tp.type != ord(","):
                tp = tp.prev
            right = tp
            continue
        elif tp.type == ord(">"):                   # rh side of <route>
            right = _group(tp, right, ord(","))
            while tp.type and tp.type != ord("<"):  # SKIP_MOVE_COMMENT
                if tp.type == COMMENT:
                    prev = _unlink(tp)
                    right = _prepend(right, tp)
                    tp = prev
                    continue
                tp = tp.prev
            _group(tp, right, 0)
            while tp.type and (tp.type > 0xFF or chr(tp.type) not in ">;,:"):
                tp = tp.prev
            right = tp
            state |= _DO_WORD
            continue
        elif tp.type in (ATOM, QSTRING, DOMLIT):
            if not state & _DO_WORD:
                right = _group(tp, right, ord(",")).next
            state &= ~_DO_WORD
        elif tp.type == ord(","):
            right = _group(tp, right, 0)
            state |= _DO_WORD
        else:
            state |= _DO_WORD
        tp = tp.prev
    _group(tp, right, 0)

    result = head.next if head.next is not tail else None
    _cut_before(head.next)
    _cut_before(tail)
    return result


def _append_space(tp: Tok) -> bool:
    nxt = tp.next
    if nxt is None or tp.owner is not None:
        return False
    if tp.type in (ord(","), STARTGRP) or nxt.type == ord("<"):
        return True
    return tp.type in _NON_OPERATOR and nxt.type in _NON_OPERATOR


_NON_OPERATOR = (ATOM, QSTRING, COMMENT, DOMLIT, ADDR)


def tok822_internalize(tree: Optional[Tok], flags: int = STR_NONE) -> str:
    out: List[str] = []
    _internalize(out, tree, flags)
    return "".join(out)


def _internalize(out: List[str], tree: Optional[Tok], flags: int) -> None:
    tp = tree
    while tp is not None:
        t = tp.type
        if t == ord(","):
            out.append(",")
            if flags & STR_LINE:
                out.append("\n")
                tp = tp.next
                continue
        elif t == ADDR:
            _internalize(out, tp.head, STR_NONE)
        elif t in (COMMENT, ATOM, QSTRING):
            out.append(tp.text)
        elif t == DOMLIT:
            out.append("[" + tp.text + "]")
        elif t == STARTGRP:
            out.append(":")
        else:
            out.append(chr(t))
        if _append_space(tp):
            out.append(" ")
        tp = tp.next


def _copy_quoted(text: str, quote_set: str) -> str:
    return "".join("\\" + c if c in quote_set else c for c in text)


def tok822_externalize(tree: Optional[Tok], flags: int = STR_DEFL,
                       warn: Optional[Callable[[str], None]] = None) -> str:
    """tok822_externalize(): the RFC 822 form.  STR_LINE puts a newline after
    each comma; STR_TRNC reduces an address expression with more than 250
    bytes of non-address text to ``<address>`` (with a warning)."""
    out: List[str] = []
    length = [0]            # running length in bytes of the output

    def add(s: str) -> None:
        out.append(s)
        length[0] += len(s.encode("utf-8", "surrogateescape"))

    start = 0
    addr: Optional[Tok] = None
    addr_len = 0

    def enforce() -> None:
        nonlocal addr
        if addr is not None and length[0] - addr_len > start + _MAX_NONADDR_LENGTH:
            _strip_address(out, length, start, addr.head, warn)

    if flags & STR_TRNC:
        start, addr, addr_len = length[0], None, 0
    tp = tree
    while tp is not None:
        t = tp.type
        if t == ord(","):
            if flags & STR_TRNC:
                enforce()
            add(",")
            add("\n" if flags & STR_LINE else " ")
            if flags & STR_TRNC:
                start, addr, addr_len = length[0], None, 0
            tp = tp.next
            continue
        if t == ADDR:
            addr = tp
            text = quote_822_local(tok822_internalize(tp.head, STR_TERM))
            add(text)
            addr_len = len(text.encode("utf-8", "surrogateescape"))
        elif t in (ATOM, COMMENT):
            add(tp.text)
        elif t == QSTRING:
            add('"' + _copy_quoted(tp.text, '"\\\r\n') + '"')
        elif t == DOMLIT:
            add("[" + _copy_quoted(tp.text, "\\\r\n") + "]")
        elif t == STARTGRP:
            add(":")
        elif t == ord("<"):
            if tp.next is not None and tp.next.type == ord(">"):
                addr = tp
                addr_len = 0
            add("<")
        else:
            add(chr(t))
        if _append_space(tp):
            add(" ")
        tp = tp.next
    if flags & STR_TRNC:
        enforce()
    return "".join(out)


def _strip_address(out: List[str], length: List[int], start: int, addr: Optional[Tok],
                   warn: Optional[Callable[[str], None]]) -> None:
    raw = "".join(out).encode("utf-8", "surrogateescape")
    if warn is not None:
        from .reply import printable
        warn("stripping too many comments from address: %s..."
             % printable(raw[start:start + 100].decode("utf-8", "surrogateescape"), False))
    kept = raw[:start].decode("utf-8", "surrogateescape")
    text = "<"
    if addr is not None:
        text += quote_822_local(tok822_internalize(addr, STR_TERM))
    text += ">"
    out[:] = [kept, text]
    length[0] = start + len(text.encode("utf-8", "surrogateescape"))


def fold_address_header(text: bytes) -> List[bytes]:
    """The greedy line joining of a rewritten address header (one address per
    line in): a line is joined to the previous one with a space while the
    joined line stays under 70 bytes; the other lines get a leading TAB unless
    they already start with white space."""
    joined: List[bytes] = []
    for line in text.split(b"\n"):
        if joined and len(joined[-1]) + 1 + len(line) < 70:
            joined[-1] = joined[-1] + b" " + line
        else:
            joined.append(line)
    out = [joined[0]]
    for line in joined[1:]:
        out.append(line if line[:1] in (b" ", b"\t") else b"\t" + line)
    return out


# --------------------------------------------------------------------------
# mail_addr_map() and canonicalisation


def ext_prop_generic(value: str) -> bool:
    """ext_prop_mask(propagate_unmatched_extensions) & EXT_PROP_GENERIC."""
    return any(w.lower() == "generic" for w in value.replace(",", " ").split())


def _param(params: Any, name: str, default: str) -> str:
    if params is None:
        return default
    try:
        v = params.get(name)
    except Exception:
        return default
    return default if v is None else v


def _param_bool(params: Any, name: str, default: bool) -> bool:
    v = _param(params, name, "").strip().lower()
    if not v:
        return default
    return v in ("yes", "true", "1", "on")


class Canonicalizer:
    """What trivial-rewrite's "canonicalize" (rewrite_tree(), local context)
    does to a lookup result, which stock smtp(8) asks it for through
    rewrite_clnt(REWRITE_CANON): the null address stays, a lone ``@`` becomes
    the null address, a source route is dropped, ``a!b`` becomes ``b@a``
    (swap_bangpath), ``user%domain`` becomes ``user@domain``
    (allow_percent_hack), ``@$myorigin`` is appended to an address without a
    domain (append_at_myorigin), ``.$mydomain`` to an unqualified domain
    (append_dot_mydomain)."""

    def __init__(self, params: Any = None) -> None:
        self.myorigin = _param(params, "myorigin", "")
        self.mydomain = _param(params, "mydomain", "")
        self.append_at_myorigin = _param_bool(params, "append_at_myorigin", True)
        self.append_dot_mydomain = _param_bool(params, "append_dot_mydomain", False)
        self.percent_hack = _param_bool(params, "allow_percent_hack", True)
        self.swap_bangpath = _param_bool(params, "swap_bangpath", True)

    def external(self, addr: str) -> str:
        """rewrite_tree() of trivial-rewrite for an external-form address."""
        if not addr:
            return addr
        toks = tok822_grep(tok822_scan(addr)[0], 0)
        if not toks or (len(toks) == 1 and toks[0].type == QSTRING and not toks[0].text):
            return addr                     # the null address ("") stays as it is
        if len(toks) == 1 and toks[0].type == ord("@"):
            return '""'
        if toks[0].type == ord("@"):        # strip a source route @a,@b:
            for i, t in enumerate(toks):
                if t.type == ord(":"):
                    if i != len(toks) - 1:
                        toks = toks[i + 1:]
                    break
        ats = [i for i, t in enumerate(toks) if t.type == ord("@")]
        if not ats:
            bang = next((i for i, t in enumerate(toks) if t.type == ord("!")), None)
            pct = [i for i, t in enumerate(toks) if t.type == ord("%")]
            if self.swap_bangpath and bang is not None:
                toks = toks[bang + 1:] + [Tok(ord("@"))] + toks[:bang]
            elif self.percent_hack and pct:
                toks[pct[-1]].type = ord("@")
            elif self.append_at_myorigin and self.myorigin:
                toks = toks + [Tok(ord("@"))] + tok822_grep(tok822_scan(self.myorigin)[0], 0)
        ats = [i for i, t in enumerate(toks) if t.type == ord("@")]
        if (self.append_dot_mydomain and self.mydomain and ats and ats[-1] != len(toks) - 1
                and not any(t.type in (ord("."), DOMLIT) for t in toks[ats[-1] + 1:])):
            toks = toks + [Tok(ord("."))] + tok822_grep(tok822_scan(self.mydomain)[0], 0)
        out = []
        for t in toks:
            if t.type == QSTRING:
                out.append('"' + _copy_quoted(t.text, '"\\\r\n') + '"')
            elif t.type == DOMLIT:
                out.append("[" + _copy_quoted(t.text, "\\\r\n") + "]")
            elif t.type in (ATOM, COMMENT):
                out.append(t.text)
            else:
                out.append(chr(t.type))
        return "".join(out)


class GenericMapper:
    """smtp_generic_maps for one process: *maps* is a postfix_smtp.maps.Maps
    (opened with the default flags, title the parameter name), *propagate*
    whether ``propagate_unmatched_extensions`` lists ``generic``."""

    def __init__(self, maps: Any, propagate: bool = False, params: Any = None,
                 log: Any = None, canon: Optional[Canonicalizer] = None,
                 is_local: Optional[Callable[[str], bool]] = None) -> None:
        self.maps = maps
        self.propagate = propagate
        self.log = log if log is not None else maps.log
        self.canon = canon or Canonicalizer(params if params is not None
                                            else getattr(maps.ctx, "params", None))
        self.is_local = is_local

    @classmethod
    def from_params(cls, params: Any, name: str, ctx: Any, log: Any = None
                    ) -> Optional["GenericMapper"]:
        """None when the parameter is empty."""
        spec = params.get(name) if params is not None else ""
        if not spec or not spec.strip():
            return None
        from ..maps import open_maps
        maps = open_maps(spec, params, title=name, ctx=ctx)
        return cls(maps, ext_prop_generic(params.get("propagate_unmatched_extensions") or ""),
                   params, log if log is not None else ctx.log)

    # -- smtp_map11_internal() -------------------------------------------------

    def map_internal(self, addr: str) -> Tuple[bool, str]:
        """(matched, address) for an internal-form address."""
        from ..maps import address as A
        maps = self.maps
        try:
            found, ext = maps.find_address(addr, query_form=A.MA_FORM_EXTERNAL,
                                           out_form=A.MA_FORM_EXTERNAL,
                                           is_local=self.is_local)
        except MapError:
            raise GenericMapError("%s map lookup problem for %s" % (maps.title, addr)) from None
        if found is None:
            return False, addr
        string = found
        if string.startswith("@"):
            at = addr.rfind("@")
            local = addr[:at] if at >= 0 else addr
            if ext:
                local = local[:len(local) - len(ext)]
            string = quote_822_local(local + string)
        results = self._crunch(string, ext if self.propagate else None)
        if not results:
            self.log.warning('%s lookup of %s returns non-address result "%s"'
                             % (maps.title, addr, string))
            raise GenericMapError("%s map lookup problem for %s" % (maps.title, addr))
        if len(results) > 1:
            self.log.warning("multi-valued %s result for %s" % (maps.title, addr))
        return True, results[0]

    def map_envelope(self, addr: str) -> str:
        """smtp_rewrite_generic_internal(): non-empty addresses only."""
        if not addr:
            return addr
        return self.map_internal(addr)[1]

    def _crunch(self, string: str, extension: Optional[str]) -> List[str]:
        """mail_addr_crunch_opt(external in, internal out)."""
        if string == "" or string == "<>":
            string = '""'
        out = []
        for tp in tok822_grep(tok822_parse(string), ADDR):
            ext_addr = tok822_externalize(tp.head, STR_DEFL)
            canon = self.canon.external(ext_addr)
            intern = unquote_822_local(canon)
            if extension:
                at = intern.rfind("@")
                intern = intern + extension if at < 0 else intern[:at] + extension + intern[at:]
            out.append(intern)
        return out

    # -- smtp_header_rewrite(), generic part ------------------------------------------

    def rewrite_header_text(self, text: str, name_len: int) -> Optional[str]:
        """The rebuilt header (``Name: a,\\nb, ...`` before folding) or None when
        no address matched.  *name_len* is the length of the header name."""
        tree = tok822_parse(text[name_len + 1:])
        did = False
        for tp in tok822_grep(tree, ADDR):
            internal = tok822_internalize(tp.head, STR_DEFL)
            matched, result = self.map_internal(internal)
            did |= matched
            tp.head, tp.tail = tok822_scan(quote_822_local(result))
            t = tp.head
            while t is not None:
                t.owner = tp
                t = t.next
        if not did:
            return None
        return text[:name_len] + ": " + tok822_externalize(tree, STR_HEAD,
                                                           warn=self.log.warning)

    def rewrite_header(self, text: bytes, name_len: int) -> Optional[List[bytes]]:
        """Output lines for a rewritten primary address header, or None when
        nothing matched (the caller then writes the header unchanged)."""
        s = text.decode("utf-8", "surrogateescape")
        new = self.rewrite_header_text(s, name_len)
        if new is None:
            return None
        return fold_address_header(new.encode("utf-8", "surrogateescape"))
