"""Finding the credentials for a server in smtp_sasl_password_maps.

Order (smtp_sasl_passwd_lookup(), first match wins):

1. with ``smtp_sender_dependent_authentication = yes`` (smtp personality
   only) and a non-empty sender: the sender address as mail_addr_find()
   searches it: the full address (its RFC 5322-quoted form first when that
   differs), the address without its ``recipient_delimiter`` extension,
   the localpart (with and without extension) when the domain is local
   (``$myorigin`` or ``$mydestination``), then ``@domain``;
2. the server host name: the MX host name, or the name inside ``[...]``
   (for an address literal, the address), without a port;
3. the current destination exactly as written in the nexthop
   (``[smtp.example.com]:587``, ``example.com``).

The value is ``username:password``, split at the first ``:`` (no ``:``:
the whole value is the username and the password is empty).  A table error
stops the search: stock logs ``QUEUEID: TITLE lookup error`` and fails the
session with a local data error.

A table is anything with ``lookup(key) -> str | None``; a table error is an
exception from ``lookup``, or a true ``error`` attribute after it (the
Postfix MAPS convention).  Keys are passed as they are; case folding is the
table's business (Postfix opens the password table with
DICT_FLAG_FOLD_FIX).  With a :class:`postfix_smtp.maps.Maps` the sender
search is its mail_addr_find() (which also skips pattern tables for the
partial keys); for other lookup objects :func:`sender_keys` gives the
same key order.
"""

from __future__ import annotations

from ..valueclass import dataclass

from ..smtp.address import quote_822
from .mechanisms import Credentials


class TableError(Exception):
    """The password table failed (not: the key was not found)."""

    def __init__(self, title: str, detail: str = "") -> None:
        super().__init__("%s lookup error" % title)
        self.title = title
        self.detail = detail


def parse_credentials(value: str) -> Credentials:
    """``user:password`` as split_at(value, ':') splits it."""
    user, sep, password = value.partition(":")
    return Credentials(user, password if sep else "")


def _find(table, key: str, title: str) -> str | None:
    try:
        value = table.lookup(key)
    except Exception as exc:
        raise TableError(title, "%s: %s" % (type(exc).__name__, exc)) from None
    if getattr(table, "error", 0):
        raise TableError(title)
    return value


@dataclass
class AddressSearch:
    """What mail_addr_find() needs to know about the local system."""
    recipient_delimiter: str = ""
    myorigin: str = ""
    local_domains: tuple = ()          # $mydestination names (lower case)

    def is_local(self, domain: str) -> bool:
        d = domain.lower()
        return d == self.myorigin.lower() or d in self.local_domains


def _strip_extension(localpart: str, delims: str) -> str | None:
    """Postfix split_addr(): cut at the first delimiter character, unless
    that leaves an empty localpart or nothing is cut, and never for
    postmaster, MAILER-DAEMON, double-bounce or (with ``-`` a delimiter)
    owner-foo / foo-request."""
    if not delims:
        return None
    low = localpart.lower()
    if low in ("postmaster", "mailer-daemon", "double-bounce"):
        return None
    if "-" in delims and (low.startswith("owner-")
                          or (len(low) > 8 and low.endswith("-request"))):
        return None
    for i, ch in enumerate(localpart):
        if ch in delims:
            return localpart[:i] if i > 0 else None
    return None


def sender_keys(sender: str, search: AddressSearch) -> list:
    """The keys mail_addr_find() tries for an address (MA_FIND_DEFAULT:
    full, no-extension, localpart-if-local, @domain), in order."""
    keys: list = []

    def add(k: str) -> None:
        if k not in keys:
            keys.append(k)

    def with_external(addr: str) -> None:
        ext = quote_822(addr)
        if ext != addr:
            add(ext)
        add(addr)

    at = sender.rfind("@")
    local, domain = (sender[:at], sender[at + 1:]) if at >= 0 else (sender, "")
    bare_local = _strip_extension(local, search.recipient_delimiter)
    with_external(sender)
    if bare_local is not None:
        with_external(bare_local + ("@" + domain if at >= 0 else ""))
    if at >= 0 and search.is_local(domain):
        add(local)
        if bare_local is not None:
            add(bare_local)
    if at >= 0:
        add("@" + domain)
    return keys


def find_credentials(table, title: str, *, host: str, dest: str, sender: str = "",
                     sender_dependent: bool = False,
                     search: AddressSearch | None = None) -> Credentials | None:
    """The credentials for this server, None for none ("talk as strangers").
    Raises TableError."""
    value = None
    if sender_dependent and sender:
        if hasattr(table, "lookup_address"):          # postfix_smtp.maps: mail_addr_find()
            try:
                value = table.lookup_address(sender)
            except Exception as exc:
                raise TableError(title, "%s: %s" % (type(exc).__name__, exc)) from None
        else:
            for key in sender_keys(sender, search or AddressSearch()):
                value = _find(table, key, title)
                if value is not None:
                    break
    if value is None:
        value = _find(table, host, title)
    if value is None:
        value = _find(table, dest, title)
    return None if value is None else parse_credentials(value)
