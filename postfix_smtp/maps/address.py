"""mail_addr_find(): the address search order (pure; the lookups are a callback).

For ``user+ext@domain`` with ``recipient_delimiter = +`` and the default
strategy (``MA_FIND_DEFAULT``) the keys are, in order, until one is found
or a lookup fails:

1. ``user+ext@domain`` (the full address; every table);
2. ``user@domain`` (extension removed; fixed-key tables only);
3. only when ``domain`` is local (equal to ``$myorigin``, or matched by the
   caller's ``is_local``, which should implement ``$mydestination``,
   ``$inet_interfaces`` and ``$proxy_interfaces`` as resolve_local() does):
   ``user+ext``, then ``user`` (fixed-key tables only);
4. ``@domain`` (fixed-key tables only).

Queries are made with the localpart in external (RFC 5322 quoted) form
first; if that differs from the internal form and finds nothing, the
internal form is tried (``MA_FORM_EXTERNAL_FIRST``, the form smtp(8) uses
for sender-dependent password lookups).  The other MA_FIND_* strategies of
Postfix 3.7 (``MA_FIND_DOMAIN`` with PDMS/PDDMDS, ``MA_FIND_LOCALPART_AT``,
``MA_FIND_LOCALPART_AT_IF_LOCAL``) are implemented too.  The unmatched
extension (with its delimiter) is reported for callers that propagate it.

The extension is split at the first character of ``recipient_delimiter``
found in the localpart, except for ``postmaster``, ``MAILER-DAEMON``,
``$double_bounce_sender`` and (with ``-`` as a delimiter and
``owner_request_special = yes``) ``owner-*``/``*-request`` localparts.
"""

from __future__ import annotations

from ..valueclass import dataclass
from typing import Callable, Optional, Tuple

MA_FIND_FULL = 1 << 0
MA_FIND_NOEXT = 1 << 1
MA_FIND_LOCALPART_IF_LOCAL = 1 << 2
MA_FIND_LOCALPART_AT_IF_LOCAL = 1 << 3
MA_FIND_AT_DOMAIN = 1 << 4
MA_FIND_DOMAIN = 1 << 5
MA_FIND_PDMS = 1 << 6
MA_FIND_PDDMDS = 1 << 7
MA_FIND_LOCALPART_AT = 1 << 8
MA_FIND_DEFAULT = MA_FIND_FULL | MA_FIND_NOEXT | MA_FIND_LOCALPART_IF_LOCAL | MA_FIND_AT_DOMAIN

MA_FORM_INTERNAL = 1
MA_FORM_EXTERNAL = 2
MA_FORM_EXTERNAL_FIRST = 3
MA_FORM_INTERNAL_FIRST = 4

_SPECIALS = set('()<>@,;:\\"[]')


@dataclass(frozen=True)
class AddressOptions:
    """The parameters mail_addr_find() reads."""

    recipient_delimiter: str = ""
    myorigin: str = ""
    double_bounce_sender: str = "double-bounce"
    owner_request_special: bool = True


def _is_dot_string(local: str) -> bool:
    """is_822_dot_string() with QUOTE_FLAG_8BITCLEAN."""
    if not local or local[0] == "." or local[-1] == ".":
        return False
    prev = ""
    for ch in local:
        if ch == "." and prev == ".":
            return False
        o = ord(ch)
        if ch == " " or o < 0x20 or o == 0x7F or ch in _SPECIALS:
            return False
        prev = ch
    return True


def quote_822_local(addr: str, bare_localpart: bool = False) -> str:
    """quote_822_local_flags(QUOTE_FLAG_DEFAULT [| BARE_LOCALPART]): the external form."""
    start = 0
    if addr.startswith("@"):
        colon = addr.find(":")
        if colon >= 0:
            start = colon + 1
    end = len(addr) if bare_localpart else addr.rfind("@", start)
    if end < 0:
        end = len(addr)
    local = addr[start:end]
    if _is_dot_string(local):
        return addr
    quoted = ['"']
    for ch in local:
        if ch in '"\\\r':
            quoted.append("\\")
        quoted.append(ch)
    quoted.append('"')
    return addr[:start] + "".join(quoted) + addr[end:]


def unquote_822_local(addr: str) -> str:
    """unquote_822_local(): the internal form."""
    start = 0
    prefix = ""
    if addr.startswith("@"):
        colon = addr.find(":")
        if colon >= 0:
            start = colon + 1
            prefix = addr[:start]
    out = []
    in_quote = False
    bare_at_dst = -1
    bare_at_src = -1
    i, n = start, len(addr)
    while i < n:
        ch = addr[i]
        if ch == '"':
            in_quote = not in_quote
            i += 1
            continue
        if ch == "@":
            if not in_quote:
                bare_at_dst = len(out)
                bare_at_src = i
        elif ch == "\\":
            if i + 1 >= n:
                i += 1
                continue
            i += 1
            ch = addr[i]
        out.append(ch)
        i += 1
    if bare_at_dst >= 0:
        return prefix + "".join(out[:bare_at_dst]) + addr[bare_at_src:]
    return prefix + "".join(out)


def may_split(local: str, delimiters: str, opts: AddressOptions) -> bool:
    """split_addr_internal()'s exceptions: localparts that are never split."""
    low = local.lower()
    if low in ("postmaster", "mailer-daemon"):
        return False
    if opts.double_bounce_sender and _strcasecmp_utf8(local, opts.double_bounce_sender):
        return False
    if "-" in delimiters and opts.owner_request_special:
        if low.startswith("owner-"):
            return False
        if len(local) - 8 > 0 and low.endswith("-request"):
            return False
    return True


def strip_addr(full: str, opts: AddressOptions) -> Tuple[Optional[str], Optional[str]]:
    """strip_addr_internal(): (address without extension, extension with delimiter)."""
    delims = opts.recipient_delimiter
    if not delims or not any(c in delims for c in full):
        return None, None
    at = full.rfind("@")
    local = full if at < 0 else full[:at]
    domain = "" if at < 0 else full[at:]
    # strcspn(localpart, delims) == 0 or at end: no split
    pos = None
    for i, ch in enumerate(local):
        if ch in delims:
            pos = i
            break
    if pos is None or pos == 0:
        return None, None
    if not may_split(local, delims, opts):
        return None, None
    return local[:pos] + domain, local[pos:]


def _strcasecmp_utf8(a: str, b: str) -> bool:
    if a.isascii() and b.isascii():
        return a.lower() == b.lower()
    return a.casefold() == b.casefold()


#: find(key, partial) -> value or None; partial keys go to fixed-key tables only.
Finder = Callable[[str, bool], Optional[str]]


def mail_addr_find(find: Finder, address: str, opts: AddressOptions,
                   is_local: Optional[Callable[[str], bool]] = None,
                   strategy: int = MA_FIND_DEFAULT, in_form: int = MA_FORM_INTERNAL,
                   query_form: int = MA_FORM_EXTERNAL_FIRST,
                   out_form: int = MA_FORM_EXTERNAL) -> Tuple[Optional[str], Optional[str]]:
    """(result, unmatched extension or None).  Lookup errors propagate from *find*."""
    int_addr = unquote_822_local(address) if in_form == MA_FORM_EXTERNAL else address

    def find_addr(addr: str, partial: bool, with_domain: bool) -> Optional[str]:
        ext = quote_822_local(addr, bare_localpart=not with_domain)
        if query_form in (MA_FORM_EXTERNAL, MA_FORM_EXTERNAL_FIRST):
            result = find(ext, partial)
            if result is not None or query_form != MA_FORM_EXTERNAL_FIRST or addr == ext:
                return result
            return find(addr, partial)
        result = find(addr, partial)
        if result is not None or query_form != MA_FORM_INTERNAL_FIRST or addr == ext:
            return result
        return find(ext, partial)

    full = int_addr
    bare, saved_ext = (None, None)
    if opts.recipient_delimiter and strategy & MA_FIND_NOEXT:
        bare, saved_ext = strip_addr(full, opts)
    ext_out: Optional[str] = None
    result: Optional[str] = None

    if strategy & MA_FIND_FULL:
        result = find_addr(full, False, True)
    if result is None and bare is not None:
        result = find_addr(bare, True, True)
        if result is not None:
            ext_out = saved_ext

    def find_local(with_at: bool) -> Optional[str]:
        nonlocal ext_out
        at = full.rfind("@")
        key = full[:at + 1] if with_at else full[:at]
        res = find_addr(key, True, with_at)
        if res is None and bare is not None:
            bat = bare.rfind("@")
            bkey = bare[:bat + 1] if with_at else bare[:bat]
            res = find_addr(bkey, True, with_at)
            if res is not None:
                ext_out = saved_ext
        return res

    at = full.rfind("@")
    if (result is None and at >= 0
            and strategy & (MA_FIND_LOCALPART_IF_LOCAL | MA_FIND_LOCALPART_AT_IF_LOCAL)):
        domain = full[at + 1:]
        if _strcasecmp_utf8(domain, opts.myorigin) or (is_local is not None
                                                        and is_local(domain)):
            if strategy & MA_FIND_LOCALPART_IF_LOCAL:
                result = find_local(False)
            if result is None and strategy & MA_FIND_LOCALPART_AT_IF_LOCAL:
                result = find_local(True)
    if result is None and at >= 0 and strategy & MA_FIND_AT_DOMAIN:
        result = find(full[at:], True)
    if result is None and at >= 0 and strategy & MA_FIND_DOMAIN:
        name = full[at + 1:]
        while name:
            result = find(name, True)
            if result is not None or not strategy & (MA_FIND_PDMS | MA_FIND_PDDMDS):
                break
            dot = name.find(".", 1)
            if dot < 0:
                break
            name = name[dot:] if strategy & MA_FIND_PDDMDS else name[dot + 1:]
    if result is None and strategy & MA_FIND_LOCALPART_AT and at >= 0:
        result = find_local(True)
    if result is not None and out_form == MA_FORM_INTERNAL:
        result = unquote_822_local(result)
    return result, (ext_out if result is not None else None)
