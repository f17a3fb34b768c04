"""Postfix's ``dns_lookup()`` (dns/dns_lookup.c, 3.7.11) on top of :mod:`.client`.

Statuses, from best to worst (the order ``dns_lookup_v()`` uses to keep the
"best" result of several types)::

    DNS_OK > DNS_POLICY > DNS_RETRY > DNS_INVAL > DNS_FAIL > DNS_NULLMX > DNS_NOTFOUND

and the texts smtp(8) puts into its delivery status:

- resolver errors: ``Host or domain name not found. Name service error for
  name=NAME type=TYPE: Host not found`` (NXDOMAIN and NODATA), ``...: Host
  not found, try again`` (SERVFAIL, timeouts), ``...: Non-recoverable
  error`` (FORMERR and other rcodes);
- ``Name service error for name=NAME type=TYPE: Malformed or unexpected name
  server reply`` (unparsable reply: DNS_RETRY; bad names in it: DNS_INVAL);
- ``Domain NAME does not accept mail (nullMX)``;
- ``Name service error for NAME: invalid host or domain name``;
- ``Name server loop for NAME`` (more than 10 CNAME hops).

Replies are parsed with dnspython (``dns.message``, imported on first use;
about 50 ms, once per process).  Records of the requested type are taken
from the answer section in wire order (``one_rr_per_rrset``), whatever their
owner name, as Postfix does; a CNAME-only answer is chased with a new query.
"""

from __future__ import annotations

from ..valueclass import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

from . import client
from .names import valid_hostaddr, valid_hostname
from .resolvconf import ResolvConf

DNS_RECURSE = -7
DNS_NOTFOUND = -6
DNS_NULLMX = -5
DNS_FAIL = -4
DNS_INVAL = -3
DNS_RETRY = -2
DNS_POLICY = -1
DNS_OK = 0

T_A, T_NS, T_CNAME, T_SOA, T_PTR, T_MX, T_TXT, T_AAAA = 1, 2, 5, 6, 12, 15, 16, 28
T_TLSA = 52
TYPE_NAMES = {T_A: "A", T_NS: "NS", T_CNAME: "CNAME", T_SOA: "SOA", T_PTR: "PTR",
              T_MX: "MX", T_TXT: "TXT", T_AAAA: "AAAA", T_TLSA: "TLSA"}
CLASS_IN = 1
MAX_CNAME_HOPS = 10
RR_LIST_LIMIT = 100        # 3.7.10+: var_dns_rr_list_limit

H_ERRNO_TEXT = {
    client.HOST_NOT_FOUND: "Host not found",
    client.TRY_AGAIN: "Host not found, try again",
    client.NO_RECOVERY: "Non-recoverable error",
    client.NO_DATA: "Host found but no data record of requested type",
}


def strtype(t: int) -> str:
    return TYPE_NAMES.get(t, "Unknown type %d" % t)


def strerror(h_errno: int) -> str:
    return H_ERRNO_TEXT.get(h_errno, "Unknown error %d" % h_errno)


@dataclass
class RR:
    qname: str           # the name that was looked up (before CNAMEs)
    rname: str           # the owner name of the record
    type: int
    ttl: int
    pref: int = 0        # MX preference
    data: str = ""       # MX exchange, or the address in text form
    dnssec_valid: bool = False
    raw: bytes = b""     # TLSA: the record data as on the wire (usage, selector, mtype, data)


class DnsResult:
    __slots__ = ("status", "rrs", "why")

    def __init__(self, status: int, rrs: Optional[List[RR]] = None, why: str = "") -> None:
        self.status = status
        self.rrs = rrs or []
        self.why = why

    def __repr__(self) -> str:
        return "DnsResult(%d, %r, %r)" % (self.status, self.rrs, self.why)


_dns = None


def _dnspython():
    global _dns
    if _dns is None:
        import dns.exception
        import dns.message
        import dns.rdataclass
        import dns.rdatatype  # noqa: F401
        # dnspython imports record classes on first use; load the ones this
        # module reads now (also: nothing can be imported after a chroot)
        import dns.rdtypes.ANY.CNAME  # noqa: F401
        import dns.rdtypes.ANY.MX  # noqa: F401
        import dns.rdtypes.ANY.NS  # noqa: F401
        import dns.rdtypes.ANY.PTR  # noqa: F401
        import dns.rdtypes.ANY.SOA  # noqa: F401
        import dns.rdtypes.IN.A  # noqa: F401
        import dns.rdtypes.IN.AAAA  # noqa: F401
        import dns.rdtypes.ANY.TLSA  # noqa: F401
        _dns = dns
    return _dns


def _name_text(name) -> str:
    """dn_expand() text of a dnspython Name: no final dot, same escapes."""
    if len(name.labels) == 0 or name.labels == (b"",):
        return ""
    return name.to_text(omit_final_dot=True)


Query = Callable[[str, int, bool], client.Reply]
Warn = Callable[[str], None]


class Resolver:
    """``dns_lookup()``/``dns_lookup_v()`` against the resolv.conf nameservers.

    ``query(name, type, dnssec)`` defaults to glibc-like res_nsearch() with
    the configuration from ``conf()``; tests pass their own.
    """

    def __init__(self, conf: Optional[Callable[[], ResolvConf]] = None,
                 query: Optional[Query] = None, warn: Optional[Warn] = None,
                 defnames: bool = False, dnsrch: bool = False, rr_filter=None) -> None:
        self.rr_filter = rr_filter      # dns.rrfilter.RrFilter (smtp_dns_reply_filter)
        if conf is None:
            from .resolvconf import load as conf
        self._conf = conf
        self._query = query
        self.warn = warn or (lambda text: None)
        self.defnames = defnames
        self.dnsrch = dnsrch

    def query(self, name: str, qtype: int, dnssec: bool, search: bool) -> client.Reply:
        if self._query is not None:
            return self._query(name, qtype, dnssec)
        return client.res_search(name, qtype, self._conf(), dnssec,
                                 defnames=search and self.defnames,
                                 dnsrch=search and self.dnsrch)

    # -- dns_lookup_x ---------------------------------------------------------
    def lookup(self, name: str, qtype: int, dnssec: bool = False,
               search: bool = False) -> DnsResult:
        ok, _ = valid_hostaddr(name)
        if ok or (name != "." and not valid_hostname(name, wildcard=True)[0]):
            return DnsResult(DNS_NOTFOUND, why="Name service error for %s: invalid host or "
                                               "domain name" % name)
        orig = name
        for _ in range(MAX_CNAME_HOPS):
            reply = self.query(name, qtype, dnssec, search)
            if reply.h_errno != client.NETDB_SUCCESS:
                why = ("Host or domain name not found. Name service error for name=%s type=%s: "
                       "%s" % (name, strtype(qtype), strerror(reply.h_errno)))
                if reply.h_errno == client.NO_RECOVERY:
                    return DnsResult(DNS_FAIL, why=why)
                if reply.h_errno in (client.HOST_NOT_FOUND, client.NO_DATA):
                    return DnsResult(DNS_NOTFOUND, why=why)
                return DnsResult(DNS_RETRY, why=why)
            status, rrs, cname = self._get_answer(orig, reply, qtype, name)
            if status == DNS_OK:
                if self.rr_filter is not None:
                    return self._filtered(rrs, name, qtype)
                return DnsResult(DNS_OK, rrs)
            if status == DNS_NULLMX:
                return DnsResult(DNS_NULLMX, why="Domain %s does not accept mail (nullMX)" % name)
            if status == DNS_RECURSE:
                if not reply.ad:
                    dnssec = False      # an insecure link taints the rest of the chain
                name = cname
                continue
            return DnsResult(status, why="Name service error for name=%s type=%s: Malformed or "
                                         "unexpected name server reply" % (name, strtype(qtype)))
        self.warn("dns_lookup: Name server loop for %s" % name)
        return DnsResult(DNS_NOTFOUND, why="Name server loop for %s" % name)

    def _filtered(self, rrs: List[RR], name: str, qtype: int) -> DnsResult:
        from .rrfilter import FilterError
        try:
            rrs = self.rr_filter.apply(rrs)
        except FilterError:
            return DnsResult(DNS_RETRY, why="Error looking up name=%s type=%s: Invalid DNS "
                                            "reply filter syntax" % (name, strtype(qtype)))
        if not rrs:
            return DnsResult(DNS_POLICY, why="Error looking up name=%s type=%s: DNS reply "
                                             "filter drops all results" % (name, strtype(qtype)))
        return DnsResult(DNS_OK, rrs)

    def _valid_rr_name(self, text: str, location: str, rtype: int, qname: str) -> bool:
        if valid_hostaddr(text)[0]:
            self.warn("numeric domain name in %s of %s record for %s: %.100s"
                      % (location, strtype(rtype), qname, text))
            return True
        ok, gripe = valid_hostname(text, wildcard=True)
        if not ok:
            if gripe:
                self.warn(gripe)
            self.warn("malformed domain name in %s of %s record for %s: %.100s"
                      % (location, strtype(rtype), qname, text))
            return False
        return True

    def _get_answer(self, orig: str, reply: client.Reply, qtype: int,
                    qname: str) -> Tuple[int, List[RR], str]:
        try:
            dns = _dnspython()
        except ImportError as exc:
            self.warn("cannot parse DNS replies: %s (install dnspython)" % exc)
            return DNS_RETRY, [], ""
        try:
            msg = dns.message.from_wire(reply.wire, one_rr_per_rrset=True,
                                        ignore_trailing=True)
        except Exception:          # any parse failure: "malformed" (Postfix: DNS_RETRY)
            return DNS_RETRY, [], ""
        rrs: List[RR] = []
        cname = ""
        cname_found = False
        maybe_secure = True
        not_found = DNS_NOTFOUND
        for rrset in msg.answer:
            owner = _name_text(rrset.name)
            if rrset.rdclass != CLASS_IN:
                self.warn("dns_get_fixed: bad class: %d" % rrset.rdclass)
                return DNS_RETRY, [], ""
            if not (orig == "." and owner == "") and not self._valid_rr_name(
                    owner, "resource name", rrset.rdtype, qname):
                return DNS_INVAL, [], ""
            for rd in rrset:
                if rrset.rdtype == qtype:
                    if qtype == T_MX:
                        exch = _name_text(rd.exchange)
                        if exch == "":
                            return DNS_NULLMX, [], ""
                        if not self._valid_rr_name(exch, "resource data", T_MX, qname):
                            if not_found != DNS_RETRY:
                                not_found = DNS_INVAL
                            continue
                        rrs.append(RR(orig, owner, T_MX, rrset.ttl, rd.preference, exch,
                                      maybe_secure and reply.ad))
                    elif qtype in (T_A, T_AAAA):
                        rrs.append(RR(orig, owner, qtype, rrset.ttl, 0, rd.address,
                                      maybe_secure and reply.ad))
                    elif qtype in (T_CNAME, T_NS, T_PTR):
                        target = _name_text(rd.target)
                        if not self._valid_rr_name(target, "resource data", qtype, qname):
                            if not_found != DNS_RETRY:
                                not_found = DNS_INVAL
                            continue
                        rrs.append(RR(orig, owner, qtype, rrset.ttl, 0, target,
                                      maybe_secure and reply.ad))
                    elif qtype == T_TLSA:
                        # stock copies the raw RDATA (dns_lookup.c extract_answer T_TLSA)
                        raw = bytes((rd.usage, rd.selector, rd.mtype)) + bytes(rd.cert)
                        rrs.append(RR(orig, owner, qtype, rrset.ttl, 0, rd.to_text(),
                                      maybe_secure and reply.ad, raw))
                    else:
                        rrs.append(RR(orig, owner, qtype, rrset.ttl, 0, rd.to_text(),
                                      maybe_secure and reply.ad))
                    if len(rrs) > RR_LIST_LIMIT:
                        self.warn("DNS record count limit (%d) exceeded -- dropping excess "
                                  "record(s) after qname=%s qtype=%s"
                                  % (RR_LIST_LIMIT, orig, strtype(qtype)))
                        del rrs[RR_LIST_LIMIT:]
                        return DNS_OK, rrs, ""
                elif rrset.rdtype == T_CNAME:
                    cname_found = True
                    target = _name_text(rd.target)
                    if not self._valid_rr_name(target, "resource data", T_CNAME, qname):
                        return DNS_INVAL, [], ""
                    cname = target
                    if not reply.ad:
                        maybe_secure = False
        if rrs:
            return DNS_OK, rrs, ""
        if cname_found:
            return DNS_RECURSE, [], cname
        return not_found, [], ""

    # -- dns_lookup_v ---------------------------------------------------------
    def lookup_v(self, name: str, types: Sequence[int], dnssec: bool = False,
                 search: bool = False) -> DnsResult:
        """Every type in turn; all records found are kept, and the status (and
        text) is the best one seen (the last one among equals)."""
        rrs: List[RR] = []
        best: Optional[DnsResult] = None
        last: Optional[DnsResult] = None
        for i, t in enumerate(types):
            last = self.lookup(name, t, dnssec, search)
            rrs.extend(last.rrs)
            if len(rrs) > RR_LIST_LIMIT:
                self.warn("DNS record count limit (%d) exceeded -- dropping excess record(s) "
                          "after qname=%s qtype=%s" % (RR_LIST_LIMIT, name, strtype(t)))
                del rrs[RR_LIST_LIMIT:]
                break
            if i == len(types) - 1:
                break
            if best is None or last.status >= best.status:
                best = last
        if last is None:
            return DnsResult(DNS_NOTFOUND, [], "")
        result = last
        if best is not None and last.status < best.status:
            result = best
        return DnsResult(result.status, rrs, result.why)
