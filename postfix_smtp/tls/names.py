"""Certificate name matching as Postfix configures OpenSSL (pure code).

Postfix passes its match names to OpenSSL (``SSL_add1_host``) with
``X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS``; a name with a leading dot
matches any subdomain.  This module reproduces X509_check_host() for that
configuration: DNS subjectAltNames when the certificate has any, else every
subject CN; case-insensitive; a wildcard only as the whole left-most label of
a name with at least two more labels, matching exactly one non-empty label
(letters, digits, hyphen); A-labels for non-ASCII reference names.
"""

from __future__ import annotations

from .policy import to_ascii_domain

_IDEOGRAPHIC_DOTS = ("\u3002", "\uff0e", "\uff61")
_LDH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def reference_names(matchargv, nexthop: str, host: str, warn=None, namaddr: str = "") -> list:
    """add_namechecks(): the reference identifiers, each "name" or ".name"."""
    out = []
    for name in matchargv:
        sub = False
        low = name.lower()
        if low == "nexthop":
            name = nexthop
        elif low == "dot-nexthop":
            name, sub = nexthop, True
        elif low == "hostname":
            name = host
        else:
            if name.startswith("."):
                name = name[1:]
                if not name:
                    if warn:
                        warn('%s: ignoring invalid match name: "."' % namaddr)
                    continue
                sub = True
            elif name[:1] in _IDEOGRAPHIC_DOTS and len(name) > 1:
                name, sub = name[1:], True
        if not name.isascii():
            a = to_ascii_domain(name)
            if a is not None:
                name = a
        out.append(("." + name) if sub else name)
    return out


def parse_ip(name: str):
    """a2i_IPADDRESS(): an ipaddress object when ``name`` is an IP literal."""
    import ipaddress
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def _valid_star(pattern: str):
    """valid_star() with NO_PARTIAL_WILDCARDS: index of a usable '*' or -1."""
    star = -1
    dots = 0
    state_start = True
    i = 0
    n = len(pattern)
    label_start = True
    while i < n:
        ch = pattern[i]
        if ch == "*":
            at_end = i == n - 1 or pattern[i + 1] == "."
            # only in the first label, only a complete label, only once
            if star >= 0 or dots > 0 or not label_start or not at_end:
                return -1
            star = i
            label_start = False
        elif ch == ".":
            if label_start and i > 0 and pattern[i - 1] == ".":
                return -1
            dots += 1
            label_start = True
        elif ch in _LDH:
            label_start = False
        else:
            return -1
        i += 1
    del state_start
    if star < 0 or dots < 2:
        return -1
    return star


def _equal_nocase(pattern: str, subject: str, dot_sub: bool) -> bool:
    if dot_sub and len(pattern) > len(subject):
        # compare an equal-length suffix starting at the subject's leading '.'
        pattern = pattern[len(pattern) - len(subject):]
    return len(pattern) == len(subject) and pattern.lower() == subject.lower()


def _wildcard_match(pattern: str, star: int, subject: str) -> bool:
    prefix = pattern[:star]
    suffix = pattern[star + 1:]
    if len(subject) < len(prefix) + len(suffix):
        return False
    if subject[:len(prefix)].lower() != prefix.lower():
        return False
    if suffix and subject[len(subject) - len(suffix):].lower() != suffix.lower():
        return False
    wild = subject[len(prefix):len(subject) - len(suffix)]
    if not wild:
        return False
    return all(c in _LDH for c in wild)


def name_matches(presented: str, reference: str) -> bool:
    """One certificate name (SAN dNSName or CN) against one reference id."""
    if not presented or "\0" in presented:
        return False
    dot_sub = len(reference) > 1 and reference.startswith(".")
    star = -1 if dot_sub else _valid_star(presented)
    if star < 0:
        return _equal_nocase(presented, reference, dot_sub)
    return _wildcard_match(presented, star, reference)


def host_matches(dns_sans: list, common_names: list, references: list):
    """X509_check_host() over all reference ids: the matched reference
    (peername) or None."""
    names = dns_sans if dns_sans else common_names
    for ref in references:
        for n in names:
            if name_matches(n, ref):
                return n if not ref.startswith(".") else n
    return None
