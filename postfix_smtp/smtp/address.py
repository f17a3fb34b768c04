"""Envelope address forms: RFC 821 quoting, RFC 822 (log) quoting and xtext."""

from __future__ import annotations

_SPECIALS_821 = set(b'<>()[]\\,;:@"')
_SPECIALS_822 = set(b'<>()[]\\,;:@"')


def _dot_string_ok(local: bytes, specials: set) -> bool:
    if not local or local.startswith(b".") or local.endswith(b".") or b".." in local:
        return False
    for c in local:
        if c <= 32 or c == 127 or c in specials:
            return False
    return True


def _quote(addr: str, specials: set) -> str:
    raw = addr.encode("utf-8", "surrogateescape")
    at = raw.rfind(b"@")
    local, domain = (raw[:at], raw[at:]) if at >= 0 else (raw, b"")
    if not raw or _dot_string_ok(local, specials):
        return addr
    quoted = bytearray(b'"')
    for c in local:
        if c in (0x22, 0x5C, 0x0D, 0x0A):  # " \ CR LF
            quoted.append(0x5C)
        quoted.append(c)
    quoted += b'"'
    return (bytes(quoted) + domain).decode("utf-8", "surrogateescape")


def quote_821(addr: str) -> str:
    """The envelope form (smtp_quote_rfc821_envelope = yes)."""
    return _quote(addr, _SPECIALS_821)


def quote_822(addr: str) -> str:
    """The external form used in log lines (info_log_address_format = external)."""
    return _quote(addr, _SPECIALS_822)


def xtext(value: str, extra: bytes = b"") -> str:
    """RFC 3461 xtext: '+', controls, space, 8-bit and ``extra`` bytes as +XX."""
    out = []
    for c in value.encode("utf-8", "surrogateescape"):
        if c == 0x2B or c <= 32 or c >= 127 or c in extra:
            out.append("+%02X" % c)
        else:
            out.append(chr(c))
    return "".join(out)
