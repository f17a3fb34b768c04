"""smtp_dns_reply_filter: drop DNS records before they are used (dns_rr_filter.c).

Each record of a successful lookup is printed in the text form Postfix's
dns_strrecord() uses (``name. TTL IN TYPE DATA``) and looked up in the
filter tables; the only action is ``IGNORE`` (drop the record, logged as
"ignoring DNS RR: ..."). Anything else, or a table error, fails the whole
lookup; a filter that drops every record makes it a policy failure.
"""

from __future__ import annotations

import struct
from typing import Callable, List, Optional

from .lookup import (T_A, T_AAAA, T_CNAME, T_MX, T_NS, T_PTR, T_SOA, T_TLSA, T_TXT, RR,
                     strtype)


def strrecord(rr: RR) -> str:
    """dns_strrecord(): the text a filter pattern is matched against."""
    head = "%s. %d IN %s " % (rr.rname, rr.ttl, strtype(rr.type))
    if rr.type in (T_A, T_AAAA, T_TXT):
        return head + rr.data
    if rr.type in (T_CNAME, T_NS, T_PTR):
        return head + rr.data + "."
    if rr.type == T_MX:
        return "%s%d %s." % (head, rr.pref, rr.data)
    if rr.type == T_TLSA:
        raw = rr.raw
        if len(raw) < 3:
            return head + "[truncated record]"
        text = head + "%d %d %d " % (raw[0], raw[1], raw[2]) + raw[3:].hex()
        # stock 3.7 falls through into the SOA case here and appends five
        # numbers read from the start of the record data (x86 byte order)
        soa = struct.unpack("<5I", raw[:20].ljust(20, b"\0"))
        return text + "- - %d %d %d %d %d" % soa
    if rr.type == T_SOA:
        return head + "- - " + rr.data
    return head + rr.data


class FilterError(Exception):
    pass


class RrFilter:
    """The compiled filter: ``apply(rrs)`` returns the records to keep, or
    raises FilterError (an unknown action or a table error)."""

    def __init__(self, maps, info: Callable[[str], None], warn: Callable[[str], None]) -> None:
        self.maps = maps            # postfix_smtp.maps.Maps (DICT_FLAG_LOCK | FOLD_FIX)
        self.info = info
        self.warn = warn

    def apply(self, rrs: List[RR]) -> List[RR]:
        from ..maps.base import MapError
        keep = []
        for rr in rrs:
            text = strrecord(rr)
            try:
                action = self.maps.lookup(text)
            except MapError:
                raise FilterError(text) from None
            if action is None:
                keep.append(rr)
                continue
            word = action.split(None, 1)[0] if action.split() else ""
            if word.upper() == "IGNORE":
                self.info("ignoring DNS RR: %s" % text)
                continue
            self.warn('%s: unknown DNS filter action: "%s"' % (self.maps.title, action))
            raise FilterError(text)
        return keep


def open_filter(spec: str, params, title: str, log, ctx=None) -> Optional[RrFilter]:
    """dns_rr_filter_compile(): open the tables now (before privileges are
    dropped); *log* has info() and warning()."""
    if not spec.strip():
        return None
    from ..maps import DICT_FLAG_FOLD_FIX, DICT_FLAG_LOCK, open_maps
    maps = open_maps(spec, params, DICT_FLAG_LOCK | DICT_FLAG_FOLD_FIX, title=title,
                     log=log, ctx=ctx)
    return RrFilter(maps, log.info, log.warning)
