"""From the request's nexthop to an ordered list of server addresses.

This is stock smtp(8)'s smtp_parse_destination() (util/host_port.c) and
smtp_addr.c (``smtp_domain_addr``, ``smtp_host_addr``), 3.7.11:

- :func:`split_list` / :func:`parse_destination`: the nexthop list and each
  ``domain``, ``domain:port``, ``[host]``, ``[host]:port``, ``[ipv6:addr]``
  element, with stock's error texts;
- :class:`LookupConfig`: the parameters that steer the lookup;
- :class:`AddressResolver`: MX lookup (preference order, null MX, no MX ->
  A/AAAA, ``ignore_mx_lookup_error``, ``smtp_defer_if_no_mx_address_found``),
  host lookup (DNS and/or the native resolver), "myself" detection and the
  address list ordering;
- the ordering itself is pure and separately testable: :func:`shuffle`,
  :func:`sort_addresses`, :func:`balance_inet_protocols`,
  :func:`find_self`, :func:`truncate_self`, :func:`order_addresses`.

The DNS client (:mod:`postfix_smtp.dns`) is imported only when a DNS lookup
is actually made; dnspython only when the first reply is parsed.
"""

from __future__ import annotations

import socket
from .dns.names import is_hostaddr, is_hostname, to_ascii, valid_ipv6_hostaddr
from .smtp.session import Endpoint

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: keep typing off the start-up path
    import random
    from typing import Iterable, List, Optional, Sequence, Tuple

AF_INET = socket.AF_INET
AF_INET6 = socket.AF_INET6
T_A, T_MX, T_AAAA = 1, 15, 28
IMPOSSIBLE_PREFERENCE = 1 << 32
SMTP_PORT = 25


class DestinationSyntaxError(Exception):
    """Stock smtp(8) exits with a fatal error for these; we defer with 4.3.5."""


class LookupError_(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status      # DSN code
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class _Plain:
    """A small record class (plain __slots__ classes import faster than dataclasses)."""
    __slots__ = ()

    def __init__(self, *args, **kwargs) -> None:
        names = self.__slots__
        for name, value in zip(names, args):
            setattr(self, name, value)
        for name in names[len(args):]:
            if name in kwargs:
                setattr(self, name, kwargs.pop(name))
            elif not hasattr(self, name):
                setattr(self, name, self._defaults()[name])
        if kwargs:
            raise TypeError("unexpected arguments: %s" % ", ".join(kwargs))

    @classmethod
    def _defaults(cls) -> dict:
        return cls.DEFAULTS              # type: ignore[attr-defined]

    def _astuple(self) -> tuple:
        return tuple(getattr(self, n) for n in self.__slots__)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other._astuple() == self._astuple()

    def __hash__(self) -> int:
        return hash(self._astuple())

    def __repr__(self) -> str:
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (n, getattr(self, n)) for n in self.__slots__))


class Destination(_Plain):
    """One nexthop element: text as written, host, port, and [bracketed]."""
    __slots__ = ("text", "host", "port", "bracketed")


# ---------------------------------------------------------------------------
# nexthop syntax (pure)

def split_list(text: str) -> List[str]:
    """Stock argv_split(nexthop, ", \\t\\r\\n")."""
    for ch in ",\t\r\n":
        text = text.replace(ch, " ")
    return [x for x in text.split(" ") if x]


def parse_port(service: str, known: dict, dest: str) -> int:
    service = str(known.get(service, service))        # filter_known_tcp_port()
    if service.isascii() and service.isdigit():
        port = int(service)
        if port >= 65536 or port == 0:
            raise DestinationSyntaxError("bad network port: %s for destination: %s"
                                         % (service, dest))
        return port
    try:
        return socket.getservbyname(service, "tcp")
    except OSError:
        raise DestinationSyntaxError("unknown service: %s/tcp" % service) from None


def host_port(text: str, default_service: str) -> Tuple[str, str, bool]:
    """util/host_port.c: (host, service, bracketed); raises the error text."""
    bracketed = text.startswith("[")
    if bracketed:
        cp = text[1:]
        ipv6 = cp[:5].lower() == "ipv6:"
        if ipv6:
            cp = cp[5:]
        end = cp.find("]")
        if end < 0:
            raise ValueError('missing "]"')
        host, rest = cp[:end], cp[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError('garbage after "]"')
        rest = rest[1:]
        if ipv6 and not valid_ipv6_hostaddr(host)[0]:
            raise ValueError("malformed IPv6 address")
        service = rest or default_service
    else:
        colon = text.rfind(":")
        if colon >= 0:
            host = text[:colon] or None
            service = text[colon + 1:] or default_service
        else:
            host = text or None
            service = default_service
    if host is None:
        raise ValueError("missing host information")
    if not service:
        raise ValueError("missing service information")
    if not _valid_utf8_hostname(host) and not is_hostaddr(host):
        raise ValueError("valid hostname or network address required")
    if service != default_service and service[:1].isdigit() and not service.isdigit():
        raise ValueError("garbage after numerical service")
    return host, service, bracketed


def _valid_utf8_hostname(host: str) -> bool:
    if host.isascii():
        return is_hostname(host)
    ascii_name = to_ascii(host)
    return ascii_name != host and is_hostname(ascii_name)


def parse_destination(text: str, default_port: str, known: dict) -> Destination:
    """One nexthop element; errors carry stock's fatal text."""
    try:
        host, service, bracketed = host_port(text, default_port)
    except ValueError as exc:
        raise DestinationSyntaxError("%s in server description: %s" % (exc, text)) from None
    return Destination(text, host, parse_port(service, known, text), bracketed)


# ---------------------------------------------------------------------------
# addresses and their ordering (pure)

class Address(_Plain):
    """One candidate server address (stock: a DNS_RR of type A or AAAA):
    qname (name looked up: MX host, or the domain/host itself), rname (owner
    name of the address record, after CNAMEs), addr (numeric, normalised),
    family, pref, dnssec_valid."""
    __slots__ = ("qname", "rname", "addr", "family", "pref", "dnssec_valid")
    DEFAULTS = {"pref": 0, "dnssec_valid": False}

    @property
    def is_v6(self) -> bool:
        return self.family == AF_INET6

    def hname(self, cname_overrides: bool = False) -> str:
        return self.rname if cname_overrides else self.qname


def shuffle(addrs: List[Address], rng: random.Random) -> List[Address]:
    """dns_rr_shuffle(): every permutation equally likely (Victor & Son)."""
    out = list(addrs)
    n = len(out)
    for i in range(n - 1):
        r = i + rng.randrange(n - i)
        out[i], out[r] = out[r], out[i]
    return out


def sort_addresses(addrs: List[Address], prefer: str = "any") -> List[Address]:
    """dns_rr_sort() with dns_rr_compare_pref_{any,ipv4,ipv6}; stable like
    glibc's qsort (a merge sort), so equal keys keep their order."""
    if prefer == "ipv6":
        return sorted(addrs, key=lambda a: (a.pref, 0 if a.is_v6 else 1))
    if prefer == "ipv4":
        return sorted(addrs, key=lambda a: (a.pref, 1 if a.is_v6 else 0))
    return sorted(addrs, key=lambda a: a.pref)


def balance_inet_protocols(addrs: List[Address], limit: int) -> List[Address]:
    """smtp_balance_inet_proto(): with both families present and more than
    ``limit`` addresses, keep (in order) at most v4_target IPv4 and v6_target
    IPv6 addresses so that neither family crowds out the other."""
    limit = min(limit, 100)          # 3.7.10+: never above the DNS list limit
    v4 = sum(1 for a in addrs if not a.is_v6)
    v6 = len(addrs) - v4
    if not (v4 > 0 and v6 > 0 and v4 + v6 > limit):
        return list(addrs)
    if v6 <= limit // 2:
        v6_target = v6
        v4_target = limit - v6_target
    elif v4 <= limit // 2:
        v4_target = v4
        v6_target = limit - v4_target
    else:
        v4_target = (limit + (0 if addrs[0].is_v6 else 1)) // 2
        v6_target = limit - v4_target
    out = []
    for a in addrs:
        if a.is_v6:
            if v6_target > 0:
                out.append(a)
                v6_target -= 1
        elif v4_target > 0:
            out.append(a)
            v4_target -= 1
    return out


def find_self(addrs: Sequence[Address], own: Iterable[str], proxy: Iterable[str] = ()
              ) -> Optional[Address]:
    """smtp_find_self(): the first address that is one of ours."""
    own = {_norm(a) for a in own}
    proxy = {_norm(a) for a in proxy}
    for a in addrs:
        if a.addr in own or a.addr in proxy:
            return a
    return None


def truncate_self(addrs: List[Address], pref: int) -> List[Address]:
    """smtp_truncate_self(): drop everything from the first address with
    preference ``pref`` on."""
    for i, a in enumerate(addrs):
        if a.pref == pref:
            return addrs[:i]
    return list(addrs)


def order_addresses(addrs: List[Address], randomize: bool, prefer: str, limit: int,
                    balance: bool, rng: random.Random, sort: bool = True) -> List[Address]:
    """Shuffle (smtp_randomize_addresses), stable-sort by preference (and
    family with smtp_address_preference), then balance the families within
    smtp_mx_address_limit (smtp_balance_inet_protocols)."""
    if len(addrs) < 2:
        return list(addrs)
    out = shuffle(addrs, rng) if randomize else list(addrs)
    if sort:
        out = sort_addresses(out, prefer)
    if limit > 0 and balance:
        out = balance_inet_protocols(out, limit)
    return out


def _norm(addr: str) -> str:
    num = numeric_address(addr.split("%", 1)[0])
    return num[0] if num is not None else addr


def numeric_address(host: str) -> Optional[Tuple[str, int]]:
    """(normalised address, family) when ``host`` is an IPv4/IPv6 literal."""
    for fam in (AF_INET, AF_INET6):
        try:
            return socket.inet_ntop(fam, socket.inet_pton(fam, host)), fam
        except (OSError, ValueError):
            continue
    return None


# ---------------------------------------------------------------------------
# configuration

class LookupConfig(_Plain):
    """The parameters of the address lookup (keyword arguments; defaults as stock)."""
    __slots__ = ("smtp_mode", "dns_support", "host_lookup", "res_defnames", "res_dnsrch",
                 "families", "address_preference", "balance_inet_protocols",
                 "mx_address_limit", "randomize_addresses", "defer_if_no_mx_address_found",
                 "ignore_mx_lookup_error", "cname_overrides_servername", "inet_interfaces",
                 "proxy_interfaces", "dns_reply_filter", "warnings", "insecure_mx_dnssec")
    DEFAULTS = {
        "smtp_mode": True,
        "dns_support": "enabled",            # disabled | enabled | dnssec
        "host_lookup": frozenset({"dns"}),
        "res_defnames": False,
        "res_dnsrch": False,
        "families": (AF_INET, AF_INET6),     # inet_protocols, A before AAAA
        "address_preference": "any",
        "balance_inet_protocols": True,
        "mx_address_limit": 5,
        "randomize_addresses": True,
        "defer_if_no_mx_address_found": False,
        "ignore_mx_lookup_error": False,
        "cname_overrides_servername": False,
        "inet_interfaces": ("all",),
        "proxy_interfaces": (),
        "dns_reply_filter": "",
        "warnings": (),
        # smtp_tls_dane_insecure_mx_policy above "may": MX host addresses are
        # looked up with DNSSEC even when the MX RRset did not validate
        "insecure_mx_dnssec": False,
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.warnings = list(self.warnings)

    @property
    def dns_enabled(self) -> bool:
        return self.dns_support != "disabled"

    @classmethod
    def from_params(cls, p, personality: str) -> "LookupConfig":
        """From a :class:`postfix_smtp.config.params.Params` (smtp_* names
        read as lmtp_* for the lmtp personality).  Invalid values raise
        ConfigError, as stock exits with a fatal error."""
        from .config.params import ConfigError
        warnings: List[str] = []
        support = p.sget("smtp_dns_support_level").strip().lower()
        if not support:
            support = "disabled" if p.get_bool("disable_dns_lookups") else "enabled"
        elif support not in ("disabled", "enabled", "dnssec"):
            raise ConfigError('invalid %s: "%s"' % (p.p("smtp_dns_support_level"), support))
        if support == "disabled":
            lookup = frozenset({"native"})
        else:
            lookup = set()
            for w in p.slist("smtp_host_lookup"):
                w = w.lower()
                if w not in ("dns", "native"):
                    raise ConfigError("invalid %s value: %s" % (p.p("smtp_host_lookup"), w))
                lookup.add(w)
            lookup = frozenset(lookup)
        resopt = set()
        for w in p.slist("smtp_dns_resolver_options"):
            w = w.lower()
            if w not in ("res_defnames", "res_dnsrch"):
                raise ConfigError("invalid %s value: %s" % (p.p("smtp_dns_resolver_options"), w))
            resopt.add(w)
        prefer = p.sget("smtp_address_preference").strip().lower()
        if prefer not in ("any", "ipv4", "ipv6"):
            raise ConfigError('bad %s value: "%s"' % (p.p("smtp_address_preference"), prefer))
        protos = [x.lower() for x in p.get_list("inet_protocols")]
        want4 = want6 = False
        for x in protos:
            if x == "all":
                want4 = want6 = True
            elif x == "ipv4":
                want4 = True
            elif x == "ipv6":
                want6 = True
            else:
                raise ConfigError("bad inet_protocols value: %s" % x)
        if want6 and not _ipv6_available():
            warnings.append("inet_protocols: disabling IPv6 name/address support: "
                            "Address family not supported by protocol")
            want6 = False
        families = tuple(f for f, on in ((AF_INET, want4), (AF_INET6, want6)) if on)
        insecure_mx_dnssec = False
        if personality == "smtp":
            mxpol = p.get("smtp_tls_dane_insecure_mx_policy").strip().lower()
            insecure_mx_dnssec = mxpol in ("encrypt", "dane")
        dns_filter = p.sget("smtp_dns_reply_filter").strip()
        return cls(
            smtp_mode=personality == "smtp",
            dns_support=support,
            host_lookup=lookup,
            res_defnames="res_defnames" in resopt,
            res_dnsrch="res_dnsrch" in resopt,
            families=families,
            address_preference=prefer,
            balance_inet_protocols=p.sbool("smtp_balance_inet_protocols"),
            mx_address_limit=p.sint("smtp_mx_address_limit"),
            randomize_addresses=p.sbool("smtp_randomize_addresses"),
            defer_if_no_mx_address_found=p.sbool("smtp_defer_if_no_mx_address_found"),
            ignore_mx_lookup_error=p.get_bool("ignore_mx_lookup_error"),
            cname_overrides_servername=p.sbool("smtp_cname_overrides_servername"),
            inet_interfaces=tuple(p.get_list("inet_interfaces")),
            proxy_interfaces=tuple(p.get_list("proxy_interfaces")),
            dns_reply_filter=dns_filter,
            warnings=warnings,
            insecure_mx_dnssec=insecure_mx_dnssec,
        )


def _ipv6_available() -> bool:
    try:
        socket.socket(AF_INET6, socket.SOCK_STREAM).close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# "myself": inet_interfaces and proxy_interfaces (own_inet_addr.c)

def _interface_addresses(families: Sequence[int]) -> List[str]:
    """Every address of every local interface (inet_interfaces = all)."""
    out: List[str] = []
    try:
        import psutil
        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family in families:
                    out.append(_norm(a.address))
    except Exception:       # no psutil: /proc, then the loopback addresses
        if AF_INET in families:
            try:
                with open("/proc/net/fib_trie") as f:
                    lines = f.read().splitlines()
                for prev, line in zip(lines, lines[1:]):
                    if "/32 host LOCAL" in line:
                        out.append(prev.split()[-1])
            except OSError:
                out.append("127.0.0.1")
        if AF_INET6 in families:
            try:
                with open("/proc/net/if_inet6") as f:
                    for line in f:
                        h = line.split()[0]
                        out.append(_norm(":".join(h[i:i + 4] for i in range(0, 32, 4))))
            except OSError:
                out.append("::1")
    return sorted(set(out))


def _resolve_interface_list(items: Sequence[str], families: Sequence[int],
                            allow_all: bool) -> List[str]:
    out: List[str] = []
    for item in items:
        low = item.lower()
        if allow_all and low == "all":
            out.extend(_interface_addresses(families))
            continue
        if allow_all and low == "loopback-only":
            if AF_INET in families:
                out.append("127.0.0.1")
            if AF_INET6 in families:
                out.append("::1")
            continue
        host = item[1:-1] if item.startswith("[") and item.endswith("]") else item
        num = numeric_address(host)
        if num is not None:
            if num[1] in families:
                out.append(num[0])
            continue
        try:
            infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
        except OSError:
            continue
        out.extend(_norm(sa[0]) for fam, _t, _p, _c, sa in infos if fam in families)
    return out


_own_cache: dict = {}


def own_addresses(cfg: LookupConfig) -> Tuple[List[str], List[str]]:
    """(inet_interfaces addresses, proxy_interfaces addresses), once per process."""
    key = (cfg.inet_interfaces, cfg.proxy_interfaces, cfg.families)
    hit = _own_cache.get(key)
    if hit is None:
        hit = (_resolve_interface_list(cfg.inet_interfaces, cfg.families, True),
               _resolve_interface_list(cfg.proxy_interfaces, cfg.families, False))
        _own_cache[key] = hit
    return hit


# ---------------------------------------------------------------------------
# the lookup (smtp_addr.c)

class Why:
    """The running error (stock DSN_BUF): DSN status and reason text."""
    __slots__ = ("status", "reason")

    def __init__(self) -> None:
        self.status = ""
        self.reason = ""

    def reset(self) -> None:
        self.status = self.reason = ""

    @property
    def soft(self) -> bool:
        return self.status.startswith("4")

    @property
    def hard(self) -> bool:
        return self.status.startswith("5")

    @property
    def loop(self) -> bool:
        return bool(self.status) and self.status[1:] == ".4.6"

    def simple(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason

    def as_tuple(self) -> Optional[Tuple[str, str]]:
        return (self.status, self.reason) if self.status else None


class SiteAddresses(_Plain):
    """What the lookup of one destination produced: dest, addresses (in the
    order to try them), error ((DSN status, reason) left by the lookup, or
    None), i_am_mx (we are an MX host: no further destinations),
    loop_detect, cname_overrides, mx (stock iter->mx: the best MX record,
    with qname = the domain, rname = its owner after CNAMEs and
    dnssec_valid = the MX RRset validated; None without an MX lookup result)."""
    __slots__ = ("dest", "addresses", "error", "i_am_mx", "loop_detect", "cname_overrides",
                 "mx")
    DEFAULTS = {"i_am_mx": False, "loop_detect": False, "cname_overrides": False, "mx": None}

    @property
    def final(self) -> bool:
        """Stock SMTP_MISC_FLAG_FINAL_NEXTHOP: stop after this destination
        (we are one of its MX hosts, or mail for it loops back to us)."""
        if self.i_am_mx:
            return True
        return not self.addresses and self.error is not None and self.error[0][1:] == ".4.6"

    @property
    def best_pref(self) -> int:
        return self.addresses[0].pref if self.addresses else IMPOSSIBLE_PREFERENCE

    def endpoints(self) -> List[Endpoint]:
        best = self.best_pref
        out = []
        for a in self.addresses:
            ep = Endpoint(a.hname(self.cname_overrides), a.addr, self.dest.port, a.family)
            # Endpoint grows preference/best_mx in the session module; set them when present
            if hasattr(ep, "preference"):
                ep.preference = a.pref
            if hasattr(ep, "best_mx"):
                ep.best_mx = a.pref == best
            # for DANE (stock iter->mx, iter->rr): the MX record and this
            # address record (qname, rname, dnssec_valid)
            ep.mx = self.mx
            ep.rr = a
            out.append(ep)
        return out


Log = "Callable[[str], None]"


class AddressResolver:
    """smtp_domain_addr()/smtp_host_addr() with stock's statuses and texts.

    ``dns`` is a :class:`postfix_smtp.dns.lookup.Resolver` (created on first
    use), ``native(host, family)`` a getaddrinfo() stand-in, ``own`` the
    (inet_interfaces, proxy_interfaces) address lists: all injectable for tests.
    """

    def __init__(self, cfg: LookupConfig, warn: Optional[Log] = None,
                 info: Optional[Log] = None, rng: Optional[random.Random] = None,
                 dns=None, native=None, own: Optional[Tuple[List[str], List[str]]] = None
                 ) -> None:
        self.cfg = cfg
        self.warn = warn or (lambda t: None)
        self.info = info or (lambda t: None)
        if rng is None:
            import random
            rng = random.Random()
        self.rng = rng
        self._dns = dns
        self._native = native or _getaddrinfo
        self._own = own
        self._mx = None
        self.rr_filter = None         # dns.rrfilter.RrFilter, opened by the Agent

    # -- collaborators --------------------------------------------------------
    @property
    def dns(self):
        if self._dns is None:
            from .dns.lookup import Resolver
            self._dns = Resolver(warn=self.warn, defnames=self.cfg.res_defnames,
                                 dnsrch=self.cfg.res_dnsrch, rr_filter=self.rr_filter)
        return self._dns

    def own(self) -> Tuple[List[str], List[str]]:
        if self._own is None:
            self._own = own_addresses(self.cfg)
        return self._own

    def _find_self(self, addrs: List[Address]) -> Optional[Address]:
        if not addrs:
            return None
        own, proxy = self.own()
        return find_self(addrs, own, proxy)

    # -- one destination --------------------------------------------------------
    def resolve(self, dest: Destination) -> SiteAddresses:
        """Stock smtp_connect_inet(): the lookup part for one destination."""
        cfg = self.cfg
        why = Why()
        if not cfg.families:
            why.simple("4.4.4", "all network protocols are disabled")
            return SiteAddresses(dest, [], why.as_tuple())
        loop_detect = cfg.smtp_mode and dest.port == SMTP_PORT
        lookup_mx = cfg.smtp_mode and cfg.dns_enabled and not dest.bracketed
        i_am_mx = False
        self._mx = None
        if not lookup_mx:
            addrs = self.host_addr(dest.host, loop_detect, why)
        else:
            addrs, i_am_mx = self.domain_addr(dest.host, loop_detect, why)
        return SiteAddresses(dest, addrs, why.as_tuple(), i_am_mx, loop_detect,
                             cfg.cname_overrides_servername, self._mx)

    # -- smtp_addr_one ------------------------------------------------------------
    def _addr_one(self, out: List[Address], host: str, dnssec: bool, pref: int,
                  why: Why) -> List[Address]:
        cfg = self.cfg
        num = numeric_address(host)
        if num is not None and num[1] in cfg.families:
            out.append(Address(host, host, num[0], num[1], pref))
            return out
        if "dns" in cfg.host_lookup and cfg.dns_enabled:
            from .dns import lookup as dl
            types = [T_A if f == AF_INET else T_AAAA for f in cfg.families]
            r = self.dns.lookup_v(host, types, dnssec=dnssec, search=True)
            if r.status == dl.DNS_OK:
                for rr in r.rrs:
                    out.append(Address(host, rr.rname, _norm(rr.data),
                                       AF_INET if rr.type == T_A else AF_INET6, pref,
                                       rr.dnssec_valid))
                return out
            why.reason = r.why
            if r.status == dl.DNS_FAIL:
                why.status = "4.4.3" if why.soft else "5.4.3"
                return out
            if r.status == dl.DNS_INVAL:
                why.status = "4.4.4" if why.soft else "5.4.4"
                return out
            if r.status == dl.DNS_POLICY:
                why.status = "4.7.0"
                return out
            if r.status == dl.DNS_NOTFOUND:
                why.status = "4.4.4" if why.soft else "5.4.4"
                # maybe the native naming service will succeed
            else:
                why.status = "4.4.3"
                return out
        if "native" in cfg.host_lookup or not cfg.dns_enabled:
            try:
                infos = self._native(host, cfg.families)
            except socket.gaierror as exc:
                code = exc.errno
                retry = code in _RETRY_AI_ERRORS
                nohost = code in _NOHOST_AI_ERRORS
                if why.soft or retry:
                    status = "4.4.4" if nohost else "4.3.0"
                else:
                    status = "5.4.4" if nohost else "5.3.0"
                why.simple(status, "unable to look up host %s: %s"
                           % (host, exc.strerror or str(exc)))
                return out
            found = 0
            for fam, addr in infos:
                if fam not in cfg.families:
                    self.info("skipping address family %d for host %s" % (fam, host))
                    continue
                found += 1
                out.append(Address(host, host, _norm(addr), fam, pref))
                if len(out) > 100:
                    del out[100:]
                    break
            if not found:
                why.simple("4.4.4" if why.soft else "5.4.4", "%s: host not found" % host)
        return out

    # -- smtp_host_addr -----------------------------------------------------------------
    def host_addr(self, host: str, loop_detect: bool, why: Why) -> List[Address]:
        cfg = self.cfg
        why.reset()
        ahost = to_ascii(host)
        addrs = self._addr_one([], ahost, cfg.dns_support == "dnssec", 0, why)
        if addrs and loop_detect and self._find_self(addrs) is not None:
            why.simple("5.4.6", "mail for %s loops back to myself" % host)
            return []
        return order_addresses(addrs, cfg.randomize_addresses, cfg.address_preference,
                               cfg.mx_address_limit, cfg.balance_inet_protocols, self.rng,
                               sort=len(cfg.families) > 1)

    # -- smtp_domain_addr ---------------------------------------------------------------
    def domain_addr(self, name: str, loop_detect: bool, why: Why) -> Tuple[List[Address], bool]:
        from .dns import lookup as dl
        cfg = self.cfg
        why.reset()
        dnssec = cfg.dns_support == "dnssec"
        aname = to_ascii(name)
        r = self.dns.lookup(aname, T_MX, dnssec=dnssec)
        if r.status == dl.DNS_NOTFOUND:
            return self.host_addr(aname, loop_detect, why), False
        if r.status == dl.DNS_NULLMX:
            why.simple("5.1.0", r.why)
            return [], False
        if r.status == dl.DNS_POLICY:
            why.simple("4.7.0", r.why)
            return [], False
        if r.status != dl.DNS_OK:
            status = {dl.DNS_INVAL: "5.4.4", dl.DNS_FAIL: "5.4.3"}.get(r.status, "4.4.3")
            why.simple(status, r.why)
            if cfg.ignore_mx_lookup_error:
                return self.host_addr(aname, loop_detect, why), False
            return [], False
        mx = sorted(r.rrs, key=lambda rr: rr.pref)        # stable, like glibc qsort
        best_pref = mx[0].pref if mx else IMPOSSIBLE_PREFERENCE
        addrs: List[Address] = []
        # MX host addresses are looked up with DNSSEC when the MX RRset
        # validated (stock smtp_addr_list() looks at the first record), or
        # when smtp_tls_dane_insecure_mx_policy is above "may"
        mx_dnssec = bool(mx and mx[0].dnssec_valid) or cfg.insecure_mx_dnssec
        if mx:
            self._mx = mx[0]              # stock: *mxrr = dns_rr_copy(mx_names)
        for rr in mx:
            self._addr_one(addrs, rr.data, mx_dnssec, rr.pref, why)
            if len(addrs) >= 100:
                del addrs[100:]
                break
        if not addrs:
            if cfg.defer_if_no_mx_address_found and why.hard:
                why.status = "4" + why.status[1:]
            if not why.status:       # stock panics; keep the mail
                why.simple("4.4.4", "no MX host for %s has a valid address record" % name)
            self.warn("no MX host for %s has a valid address record" % name)
            return [], False
        best_found = addrs[0].pref
        i_am_mx = False
        if loop_detect:
            me = self._find_self(addrs)
            if me is not None:
                i_am_mx = True
                addrs = truncate_self(addrs, me.pref)
                if not addrs:
                    if best_pref != best_found:
                        why.simple("4.4.4", "unable to find primary relay for %s" % name)
                    else:
                        why.simple("5.4.6", "mail for %s loops back to myself" % name)
        addrs = order_addresses(addrs, cfg.randomize_addresses, cfg.address_preference,
                                cfg.mx_address_limit, cfg.balance_inet_protocols, self.rng)
        return addrs, i_am_mx


_RETRY_AI_ERRORS = {getattr(socket, n) for n in ("EAI_AGAIN", "EAI_MEMORY", "EAI_SYSTEM")
                    if hasattr(socket, n)}
_NOHOST_AI_ERRORS = {getattr(socket, n) for n in ("EAI_AGAIN", "EAI_NODATA", "EAI_NONAME")
                     if hasattr(socket, n)}


def _getaddrinfo(host: str, families: Sequence[int]) -> List[Tuple[int, str]]:
    """hostname_to_sockaddr(): getaddrinfo() with the inet_protocols family."""
    fam = families[0] if len(families) == 1 else socket.AF_UNSPEC
    infos = socket.getaddrinfo(host, None, fam, socket.SOCK_STREAM)
    return [(f, sa[0]) for f, _t, _p, _c, sa in infos]


# ---------------------------------------------------------------------------
# the pre-MX interface, kept for callers that only need host addresses

def resolve(dest: Destination, inet_protocols: list) -> List[Endpoint]:
    """Addresses for one destination with the native resolver only (no MX);
    raises LookupError_.  Prefer :class:`AddressResolver`."""
    want4 = want6 = False
    for x in inet_protocols or ["all"]:
        want4 |= x in ("all", "ipv4")
        want6 |= x in ("all", "ipv6")
    families = tuple(f for f, on in ((AF_INET, want4), (AF_INET6, want6)) if on)
    cfg = LookupConfig(dns_support="disabled", host_lookup=frozenset({"native"}),
                       families=families, randomize_addresses=False)
    res = AddressResolver(cfg).resolve(Destination(dest.text, dest.host, dest.port, True))
    if not res.addresses:
        status, reason = res.error or ("5.4.4", "%s: host not found" % dest.host)
        raise LookupError_(status, reason)
    return res.endpoints()


def prepare_for_chroot(cfg: LookupConfig) -> None:
    """Import now what a lookup imports lazily, and learn the local addresses,
    before the agent chroots into the queue directory (where neither the
    Python library nor /proc is visible).  /etc/resolv.conf is then read
    inside the chroot, as stock smtp(8) reads it."""
    import random  # noqa: F401
    import encodings.idna  # noqa: F401
    from .dns import client, lookup, resolvconf  # noqa: F401
    if cfg.dns_enabled:
        try:
            lookup._dnspython()
        except ImportError:
            pass            # reported with each lookup (lookup.DnsUnavailable)
    own_addresses(cfg)
