"""One DNS query, sent the way glibc's ``res_nsearch()`` sends it.

No dnspython here: the query is a dozen bytes and the reply header and
question are checked by hand (as glibc's ``res_queriesmatch()`` does), so an
agent that never looks anything up in DNS never pays for importing a DNS
library.  The reply's records are parsed by :mod:`.lookup`.

Timing (glibc ``__res_context_send``/``send_dg``): for each attempt, each
nameserver in turn, wait ``timeout << attempt`` seconds (divided by the
number of servers after the first round, at least 1 s).  SERVFAIL, NOTIMP
and REFUSED move on to the next server; a truncated UDP reply is retried over
TCP with the same server; replies with the wrong id or question are ignored.
When every server and attempt is used up the result is ``TRY_AGAIN``.

``h_errno`` mapping (glibc ``res_nquery``): NXDOMAIN -> HOST_NOT_FOUND,
NOERROR without answers -> NO_DATA, SERVFAIL or no usable reply ->
TRY_AGAIN, any other rcode -> NO_RECOVERY.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
import time
from ..valueclass import dataclass
from typing import Optional, Tuple

from .resolvconf import ResolvConf, per_try_timeout

# h_errno values (netdb.h)
NETDB_SUCCESS = 0
HOST_NOT_FOUND = 1
TRY_AGAIN = 2
NO_RECOVERY = 3
NO_DATA = 4

# rcodes
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5

EDNS_PAYLOAD = 1200       # glibc RESOLV_EDNS_BUFFER_SIZE
CLASS_IN = 1
T_OPT = 41

_rotate = itertools.count()


class QueryError(Exception):
    """The name cannot be put into a query (glibc res_mkquery fails)."""


@dataclass
class Reply:
    """What the resolver hands back for one name and type."""
    h_errno: int
    wire: Optional[bytes] = None
    rcode: int = -1
    ancount: int = 0
    ad: bool = False
    tc: bool = False
    name: str = ""           # the name actually queried (after search-list expansion)


def encode_name(name: str) -> bytes:
    """Wire form of a dotted ASCII name (no escapes: names were validated)."""
    if name in ("", "."):
        return b"\x00"
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii", "surrogateescape") if label.isascii() else None
        if not raw or len(raw) > 63:
            raise QueryError("bad label in %r" % name)
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > 255:
        raise QueryError("name too long: %r" % name)
    return bytes(out)


def make_query(name: str, qtype: int, qid: int, edns: bool = False, do: bool = False,
               ad: bool = False) -> bytes:
    flags = 0x0100                  # RD
    if ad:
        flags |= 0x0020             # AD in a query: "I understand the AD bit" (trust-ad)
    arcount = 1 if edns else 0
    msg = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, arcount)
    msg += encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)
    if edns:
        ttl = 0x8000 if do else 0   # DO bit in the extended flags
        msg += b"\x00" + struct.pack("!HHIH", T_OPT, EDNS_PAYLOAD, ttl, 0)
    return msg


def _read_name(wire: bytes, pos: int) -> Tuple[bytes, int]:
    """Lower-cased wire name at pos (compression followed), and the end of it."""
    labels = []
    end = -1
    hops = 0
    while True:
        if pos >= len(wire):
            raise ValueError("name past end")
        n = wire[pos]
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(wire):
                raise ValueError("pointer past end")
            if end < 0:
                end = pos + 2
            pos = ((n & 0x3F) << 8) | wire[pos + 1]
            hops += 1
            if hops > 64:
                raise ValueError("pointer loop")
            continue
        if n & 0xC0:
            raise ValueError("bad label type")
        pos += 1
        if n == 0:
            break
        labels.append(wire[pos:pos + n].lower())
        pos += n
    return b".".join(labels), (end if end >= 0 else pos)


def question_matches(reply: bytes, query: bytes) -> bool:
    """glibc res_queriesmatch(): same question count, names (case-insensitive),
    types and classes."""
    try:
        if len(reply) < 12:
            return False
        qd_r = struct.unpack("!H", reply[4:6])[0]
        qd_q = struct.unpack("!H", query[4:6])[0]
        if qd_r != qd_q:
            return False
        pr = pq = 12
        for _ in range(qd_q):
            nr, pr = _read_name(reply, pr)
            nq, pq = _read_name(query, pq)
            if pr + 4 > len(reply) or nr != nq or reply[pr:pr + 4] != query[pq:pq + 4]:
                return False
            pr += 4
            pq += 4
        return True
    except (ValueError, struct.error):
        return False


def _header(wire: bytes) -> Tuple[int, int, int, bool, bool]:
    qid, flags, _qd, an, _ns, _ar = struct.unpack("!HHHHHH", wire[:12])
    return qid, flags & 0x000F, an, bool(flags & 0x0020), bool(flags & 0x0200)


class _Next(Exception):
    """Try the next server (timeout, error, SERVFAIL/NOTIMP/REFUSED)."""

    def __init__(self, reached: bool) -> None:
        super().__init__()
        self.reached = reached      # the server answered (glibc "gotsomewhere")


def _udp(sock: socket.socket, query: bytes, timeout: float) -> bytes:
    """Send on the server's (connected) socket and wait for a matching reply.
    The socket stays open across attempts, as glibc keeps it: a late reply to
    an earlier try (same id) is still accepted."""
    try:
        deadline = time.monotonic() + timeout
        sock.settimeout(timeout)
        sock.send(query)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Next(False)
            sock.settimeout(left)
            try:
                data = sock.recv(65535)
            except socket.timeout:
                raise _Next(False) from None
            if len(data) < 12 or data[:2] != query[:2] or not data[2] & 0x80:
                continue            # runt, wrong id, or not a response: keep waiting
            if not question_matches(data, query):
                continue
            return data
    except _Next:
        raise
    except OSError:
        raise _Next(False) from None


def _udp_socket(ns: Tuple[str, int]) -> socket.socket:
    fam = socket.AF_INET6 if ":" in ns[0] else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        sock.connect(ns)
    except OSError:
        sock.close()
        raise
    return sock


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError(errno.ECONNRESET, "EOF")
        buf += chunk
    return buf


def _tcp(ns: Tuple[str, int], query: bytes, timeout: float) -> bytes:
    fam = socket.AF_INET6 if ":" in ns[0] else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    try:
        sock.settimeout(timeout)
        sock.connect(ns)
        sock.sendall(struct.pack("!H", len(query)) + query)
        while True:
            size = struct.unpack("!H", _recv_exact(sock, 2, deadline))[0]
            data = _recv_exact(sock, size, deadline)
            if len(data) < 12 or data[:2] != query[:2] or not question_matches(data, query):
                continue
            return data
    except (OSError, struct.error):
        raise _Next(False) from None
    finally:
        sock.close()


def res_send(query: bytes, conf: ResolvConf, deadline: Optional[float] = None) -> Optional[bytes]:
    """The first acceptable reply, or None when every server and attempt failed.

    ``deadline`` (time.monotonic()) caps the whole exchange on top of the
    glibc schedule.
    """
    servers = list(conf.nameservers)
    if conf.rotate and len(servers) > 1:
        k = next(_rotate) % len(servers)
        servers = servers[k:] + servers[:k]
    n = len(servers)
    socks: dict = {}
    try:
        for attempt in range(conf.attempts):
            for ns in servers:
                timeout = float(per_try_timeout(conf.timeout, attempt, n))
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    timeout = min(timeout, left)
                try:
                    if conf.use_vc:
                        data = _tcp(ns, query, timeout)
                    else:
                        sock = socks.get(ns)
                        if sock is None:
                            try:
                                sock = socks[ns] = _udp_socket(ns)
                            except OSError:
                                continue
                        data = _udp(sock, query, timeout)
                        if data[2] & 0x02:            # TC: the same server over TCP
                            data = _tcp(ns, query, timeout)
                except _Next:
                    continue
                rcode = data[3] & 0x0F
                if rcode in (SERVFAIL, NOTIMP, REFUSED):
                    continue
                return data
        return None
    finally:
        for sock in socks.values():
            sock.close()


def res_query(name: str, qtype: int, conf: ResolvConf, dnssec: bool = False,
              deadline: Optional[float] = None) -> Reply:
    """glibc res_nquery(): one name, one type."""
    edns = dnssec or conf.edns0
    try:
        qid = struct.unpack("!H", os.urandom(2))[0]
        query = make_query(name, qtype, qid, edns=edns, do=dnssec, ad=dnssec or conf.trust_ad)
    except QueryError:
        return Reply(NO_RECOVERY, name=name)
    data = res_send(query, conf, deadline)
    if data is not None and edns and data[3] & 0x0F == FORMERR:
        # glibc: a server that does not understand EDNS gets the query without it
        query = make_query(name, qtype, qid, ad=conf.trust_ad)
        data = res_send(query, conf, deadline)
    if data is None:
        return Reply(TRY_AGAIN, name=name)
    _qid, rcode, ancount, ad, tc = _header(data)
    if rcode != NOERROR or ancount == 0:
        herr = {NXDOMAIN: HOST_NOT_FOUND, SERVFAIL: TRY_AGAIN,
                NOERROR: NO_DATA}.get(rcode, NO_RECOVERY)
        return Reply(herr, data, rcode, ancount, ad, tc, name)
    return Reply(NETDB_SUCCESS, data, rcode, ancount, ad, tc, name)


def res_search(name: str, qtype: int, conf: ResolvConf, dnssec: bool = False,
               defnames: bool = False, dnsrch: bool = False,
               deadline: Optional[float] = None) -> Reply:
    """glibc res_nsearch() with the caller's RES_DEFNAMES/RES_DNSRCH options.

    Postfix clears both unless ``smtp_dns_resolver_options`` sets them, so
    normally this is exactly one res_query() of the name as given.
    """
    dots = name.count(".")
    trailing = name.endswith(".")
    saved = None
    tried_as_is = False
    if dots >= conf.ndots or trailing:
        r = res_query(name, qtype, conf, dnssec, deadline)
        if r.h_errno == NETDB_SUCCESS:
            return r
        saved = r
        tried_as_is = True
    got_nodata = got_servfail = None
    if (not dots and defnames) or (dots and not trailing and dnsrch):
        for domain in conf.search:
            r = res_query("%s.%s" % (name, domain.rstrip(".")), qtype, conf, dnssec, deadline)
            if r.h_errno == NETDB_SUCCESS:
                return r
            if r.h_errno == TRY_AGAIN and r.wire is None:
                return r            # no usable server: stop searching
            if r.h_errno == NO_DATA:
                got_nodata = r
            elif r.h_errno == HOST_NOT_FOUND:
                pass
            elif r.h_errno == TRY_AGAIN and r.rcode == SERVFAIL:
                got_servfail = r
            else:
                break
            if not dnsrch:
                break
    last = None
    if not tried_as_is:
        last = res_query(name, qtype, conf, dnssec, deadline)
        if last.h_errno == NETDB_SUCCESS:
            return last
    if saved is not None:
        return saved
    return got_nodata or got_servfail or last or Reply(HOST_NOT_FOUND, name=name)
