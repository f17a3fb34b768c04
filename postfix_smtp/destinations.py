"""From the request's nexthop to an ordered list of server addresses.

Parsing (pure): the nexthop is a list of destinations separated by commas or
whitespace, each ``[host]``, ``[host]:port``, ``host``, ``host:port`` (the
port a number or a service name).  Resolution: numeric addresses directly,
names through the system resolver (getaddrinfo).  MX lookups are the
seam for the destinations issue: :func:`resolve` is the one place to grow.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from .smtp.session import Endpoint


class DestinationSyntaxError(Exception):
    """Stock smtp(8) exits with a fatal error for these; we defer with 4.3.5."""


@dataclass
class LookupError_(Exception):
    status: str      # DSN code
    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class Destination:
    text: str        # as written in the nexthop
    host: str
    port: int
    bracketed: bool


def split_list(text: str) -> list[str]:
    return [x for x in text.replace(",", " ").split() if x]


def parse_port(service: str, known: dict, dest: str) -> int:
    if service.isdigit():
        port = int(service)
        if not 0 < port < 65536:
            raise DestinationSyntaxError("bad network port: %s for destination: %s" % (service, dest))
        return port
    if service in known:
        return known[service]
    try:
        return socket.getservbyname(service, "tcp")
    except OSError:
        raise DestinationSyntaxError("unknown service: %s/tcp" % service) from None


def parse_destination(text: str, default_port: str, known: dict) -> Destination:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise DestinationSyntaxError('ERROR in server description: %s: missing "]"' % text)
        host = text[1:end]
        rest = text[end + 1:]
        if rest and not rest.startswith(":"):
            raise DestinationSyntaxError('ERROR in server description: %s: garbage after "]"' % text)
        service = rest[1:] if rest else ""
        if host.lower().startswith("ipv6:"):
            host = host[5:]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise DestinationSyntaxError(
                    "ERROR in server description: %s: malformed IPv6 address" % text) from None
        bracketed = True
    else:
        host, sep, service = text.rpartition(":")
        if not sep:
            host, service = text, ""
        bracketed = False
    if not host:
        raise DestinationSyntaxError("ERROR in server description: %s: missing host information" % text)
    port = parse_port(service or default_port, known, text)
    return Destination(text, host, port, bracketed)


def resolve(dest: Destination, inet_protocols: list) -> list[Endpoint]:
    """Addresses for one destination, in the order to try them."""
    want = set()
    if "all" in inet_protocols or not inet_protocols:
        want = {socket.AF_INET, socket.AF_INET6}
    if "ipv4" in inet_protocols:
        want.add(socket.AF_INET)
    if "ipv6" in inet_protocols:
        want.add(socket.AF_INET6)
    try:
        ip = ipaddress.ip_address(dest.host)
    except ValueError:
        ip = None
    if ip is not None:
        fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        if fam not in want:
            raise LookupError_("5.4.4", "%s: host not found" % dest.host)
        return [Endpoint(str(ip), str(ip), dest.port, fam)]
    try:
        infos = socket.getaddrinfo(dest.host, dest.port, 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        temporary = exc.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", -11))
        raise LookupError_("4.4.4" if temporary else "5.4.4",
                           "unable to look up host %s: %s" % (dest.host, exc.strerror)) from None
    out = []
    seen = set()
    for fam, _t, _p, _c, sa in infos:
        if fam not in want or sa[0] in seen:
            continue
        seen.add(sa[0])
        out.append(Endpoint(dest.host, sa[0], dest.port, fam))
    if not out:
        raise LookupError_("5.4.4", "%s: host not found" % dest.host)
    return out
