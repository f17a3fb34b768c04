"""Postfix's host name and address syntax checks (util/valid_hostname.c), pure.

Each check returns ``(ok, gripe)``: ``gripe`` is the warning Postfix logs
when asked to complain (``valid_hostname: misplaced delimiter: a..b``), or
"" when the name is fine.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from typing import Tuple

VALID_LABEL_LEN = 63
VALID_HOSTNAME_LEN = 255
_HEX = "0123456789abcdefABCDEF"


def _isalnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def valid_hostname(name: str, wildcard: bool = False) -> Tuple[bool, str]:
    me = "valid_hostname"
    if not name:
        return False, "%s: empty hostname" % me
    label_length = label_count = 0
    non_numeric = False
    n = len(name)
    for i, ch in enumerate(name):
        nxt = name[i + 1] if i + 1 < n else ""
        if _isalnum(ch) or ch == "_":
            if label_length == 0:
                label_count += 1
            label_length += 1
            if label_length > VALID_LABEL_LEN:
                return False, "%s: hostname label too long: %.100s" % (me, name)
            if not ch.isdigit():
                non_numeric = True
        elif wildcard and ch == "*":
            if label_length or label_count or (nxt and nxt != "."):
                return False, "%s: '*' can be the first label only: %.100s" % (me, name)
            label_count += 1
            label_length += 1
            non_numeric = True
        elif ch == ".":
            if label_length == 0 or nxt == "":
                return False, "%s: misplaced delimiter: %.100s" % (me, name)
            label_length = 0
        elif ch == "-":
            non_numeric = True
            label_length += 1
            if label_length == 1 or nxt == "" or nxt == ".":
                return False, "%s: misplaced hyphen: %.100s" % (me, name)
        else:
            code = ord(ch) if len(ch.encode("utf-8", "surrogateescape")) == 1 else \
                ch.encode("utf-8", "surrogateescape")[0]
            return False, "%s: invalid character %d(decimal): %.100s" % (me, code, name)
    if not non_numeric:
        return False, "%s: numeric hostname: %.100s" % (me, name)
    if len(name) > VALID_HOSTNAME_LEN:
        return False, "%s: bad length %d for %.100s..." % (me, len(name), name)
    return True, ""


def valid_ipv4_hostaddr(addr: str) -> Tuple[bool, str]:
    me = "valid_ipv4_hostaddr"
    in_byte = False
    byte_count = byte_val = 0
    n = len(addr)
    for i, ch in enumerate(addr):
        if ch.isascii() and ch.isdigit():
            if not in_byte:
                in_byte = True
                byte_val = 0
                byte_count += 1
            byte_val = byte_val * 10 + ord(ch) - 48
            if byte_val > 255:
                return False, "%s: invalid octet value: %.100s" % (me, addr)
        elif ch == ".":
            if not in_byte or i + 1 == n:
                return False, "%s: misplaced dot: %.100s" % (me, addr)
            if byte_count == 1 and byte_val == 0 and addr.strip("0."):
                return False, "%s: bad initial octet value: %.100s" % (me, addr)
            in_byte = False
        else:
            return False, "%s: invalid character %d(decimal): %.100s" % (me, ord(ch), addr)
    if byte_count != 4:
        return False, "%s: invalid octet count: %.100s" % (me, addr)
    return True, ""


def valid_ipv6_hostaddr(addr: str) -> Tuple[bool, str]:
    me = "valid_ipv6_hostaddr"
    null_field = field = 0
    length = 0
    i = 0
    n = len(addr)
    while True:
        ch = addr[i] if i < n else ""
        if ch == "":
            if field < 2:
                return False, "%s: too few `:' in IPv6 address: %.100s" % (me, addr)
            if length == 0 and null_field != field - 1:
                return False, "%s: bad null last field in IPv6 address: %.100s" % (me, addr)
            return True, ""
        if ch == ".":
            if field < 2 or field > 6:
                return False, "%s: malformed IPv4-in-IPv6 address: %.100s" % (me, addr)
            return valid_ipv4_hostaddr(addr[i - length:])
        if ch == ":":
            nxt = addr[i + 1] if i + 1 < n else ""
            if field == 0 and length == 0 and _isalnum(nxt):
                return False, "%s: bad null first field in IPv6 address: %.100s" % (me, addr)
            field += 1
            if field > 7:
                return False, "%s: too many `:' in IPv6 address: %.100s" % (me, addr)
            i += 1
            length = 0
            if i < n and addr[i] == ":":
                if null_field > 0:
                    return False, "%s: too many `::' in IPv6 address: %.100s" % (me, addr)
                null_field = field
            continue
        length = 0
        while i + length < n and addr[i + length] in _HEX:
            length += 1
        if length > 4:
            return False, "%s: malformed IPv6 address: %.100s" % (me, addr)
        if length <= 0:
            return False, ("%s: invalid character %d(decimal) in IPv6 address: %.100s"
                           % (me, ord(ch), addr))
        i += length


def valid_hostaddr(addr: str) -> Tuple[bool, str]:
    if not addr:
        return False, "valid_hostaddr: empty address"
    if ":" in addr:
        return valid_ipv6_hostaddr(addr)
    return valid_ipv4_hostaddr(addr)


def is_hostname(name: str, wildcard: bool = False) -> bool:
    return valid_hostname(name, wildcard)[0]


def is_hostaddr(addr: str) -> bool:
    return valid_hostaddr(addr)[0]


def to_ascii(name: str) -> str:
    """A-label form of a non-ASCII domain (Postfix midna_domain_to_ascii);
    the name unchanged when it is ASCII or cannot be converted."""
    if name.isascii():
        return name
    try:
        import encodings.idna  # noqa: F401  (stdlib IDNA 2003; no third-party import)
        return name.encode("idna").decode("ascii").lower()
    except (UnicodeError, ValueError):
        return name
