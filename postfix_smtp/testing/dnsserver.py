"""A small DNS server for tests, and a private /etc/resolv.conf for Postfix.

:class:`DnsTestServer` answers on UDP and TCP (one address, one port; for a
resolver reached through ``/etc/resolv.conf`` that is ``127.0.0.x:53``) from
records the test adds, like a recursive resolver would: CNAMEs are chased
within its data (or not, ``chase_cnames=False``), names without data of the
asked type get NODATA, unknown names NXDOMAIN.  Per name (and optionally
type) a test can make it misbehave::

    srv.add("example.test", "MX", "10 mx1.example.test.", "20 mx2.example.test.")
    srv.add("mx1.example.test", "A", "127.0.0.2")
    srv.zone_text("other.test.", ZONE)            # master-file text
    srv.fail("broken.test", "SERVFAIL")           # or REFUSED, FORMERR, NXDOMAIN, NOTIMP
    srv.delay("slow.test", 3.0)                   # answer after 3 s
    srv.drop("dead.test")                         # never answer
    srv.truncate("big.test")                      # TC over UDP; full answer over TCP
    srv.malformed("bad.test", "garbage")          # or "bad-a-length"
    srv.secure("signed.test")                     # AD bit when the query has AD or DO
    srv.add_tlsa("mx.signed.test", 25, "3 1 1 " + sha256_hex)   # secure by default

Every query is recorded (:attr:`queries`).  Replies are built and parsed with
dnspython.  The server stops by itself after ``max_lifetime`` seconds.

:class:`ResolverPostfixInstance` is a :class:`PostfixInstance` whose master(8)
and every child run in their own mount namespace (``unshare --mount``) with a
private ``/etc/resolv.conf`` bind-mounted over the real one, so the stock
smtp(8) (glibc resolver) and postfix_smtp both reach this server exactly as a
resolver on a real host is reached.  Nothing outside the namespace sees it.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.zone

from . import instance as _instance
from .instance import PostfixInstance, tool

RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}


@dataclass
class QueryRecord:
    proto: str          # "udp" or "tcp"
    name: str           # lower case, no final dot
    type: str           # "MX", "A", ...
    flags: int
    dnssec_ok: bool
    time: float


def _key(name: str) -> str:
    return name.lower().rstrip(".")


def _type(t) -> int:
    return dns.rdatatype.from_text(t) if isinstance(t, str) else int(t)


class DnsTestServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_lifetime: float = 300.0,
                 chase_cnames: bool = True, ttl: int = 300, shuffle: bool = False) -> None:
        self.host = host
        self.port = port
        self.max_lifetime = max_lifetime
        self.chase_cnames = chase_cnames
        self.shuffle = shuffle        # records in the order added, unless True
        self.ttl = ttl
        self.records: Dict[Tuple[str, int], List[str]] = {}
        self.behaviour: Dict[Tuple[str, Optional[int]], Tuple[str, object]] = {}
        self.secure_names: set = set()
        self.secure_all = False
        self.queries: List[QueryRecord] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._udp: Optional[socket.socket] = None
        self._tcp: Optional[socket.socket] = None
        self._deadline = 0.0

    # -- data -------------------------------------------------------------------
    def add(self, name: str, rdtype, *rdatas: str) -> "DnsTestServer":
        """Add records, e.g. ``add("x.test", "MX", "10 mx.x.test.")``; names are
        absolute (a final dot is optional)."""
        with self._lock:
            self.records.setdefault((_key(name), _type(rdtype)), []).extend(rdatas)
        return self

    def remove(self, name: str, rdtype=None) -> None:
        with self._lock:
            for k in list(self.records):
                if k[0] == _key(name) and (rdtype is None or k[1] == _type(rdtype)):
                    del self.records[k]

    def zone_text(self, origin: str, text: str) -> "DnsTestServer":
        """Load master-file text (``$TTL``, relative names, ...) for ``origin``."""
        z = dns.zone.from_text(text, origin=origin, relativize=False, check_origin=False)
        for name, node in z.nodes.items():
            for rds in node.rdatasets:
                self.add(name.to_text(), rds.rdtype, *[rd.to_text() for rd in rds])
        return self

    def _set(self, name: str, rdtype, kind: str, arg: object = None) -> "DnsTestServer":
        with self._lock:
            self.behaviour[(_key(name), None if rdtype is None else _type(rdtype))] = (kind, arg)
        return self

    def fail(self, name: str, rcode: str = "SERVFAIL", rdtype=None) -> "DnsTestServer":
        return self._set(name, rdtype, "rcode", RCODES[rcode.upper()])

    def delay(self, name: str, seconds: float, rdtype=None) -> "DnsTestServer":
        return self._set(name, rdtype, "delay", float(seconds))

    def drop(self, name: str, rdtype=None) -> "DnsTestServer":
        return self._set(name, rdtype, "drop")

    def truncate(self, name: str, rdtype=None) -> "DnsTestServer":
        return self._set(name, rdtype, "truncate")

    def malformed(self, name: str, kind: str = "garbage", rdtype=None) -> "DnsTestServer":
        return self._set(name, rdtype, "malformed", kind)

    def secure(self, name: str) -> "DnsTestServer":
        with self._lock:
            self.secure_names.add(_key(name))
        return self

    def add_tlsa(self, host: str, port: int, *rdatas: str, secure: bool = True,
                 proto: str = "tcp") -> "DnsTestServer":
        """TLSA records at ``_PORT._PROTO.HOST`` (``"3 1 1 HEX"``, see
        :func:`tlsa_rdata`); with ``secure`` the name's answers carry the AD
        bit (when the query has AD or DO), as a validating resolver sets it."""
        name = "_%d._%s.%s" % (port, proto, _key(host))
        self.add(name, "TLSA", *rdatas)
        if secure:
            self.secure(name)
        return self

    def clear_behaviour(self) -> None:
        with self._lock:
            self.behaviour.clear()

    def queries_for(self, name: str, rdtype=None) -> List[QueryRecord]:
        t = None if rdtype is None else dns.rdatatype.to_text(_type(rdtype))
        with self._lock:
            return [q for q in self.queries if q.name == _key(name) and (t is None or q.type == t)]

    # -- answering (pure: query wire in, reply wire or None out) -----------------------
    def _behaviour(self, name: str, rdtype: int):
        with self._lock:
            return self.behaviour.get((name, rdtype)) or self.behaviour.get((name, None))

    def _lookup(self, name: str, rdtype: int) -> List[str]:
        with self._lock:
            return list(self.records.get((name, rdtype), []))

    def _exists(self, name: str) -> bool:
        with self._lock:
            return any(k[0] == name for k in self.records)

    def _rrset(self, name: str, rdtype: int, rdatas: List[str]) -> dns.rrset.RRset:
        return dns.rrset.from_text_list(dns.name.from_text(name or "."), self.ttl,
                                        dns.rdataclass.IN, rdtype, rdatas)

    def answer(self, wire: bytes, proto: str) -> Tuple[Optional[bytes], float]:
        """(reply wire or None for no reply, seconds to wait before sending)."""
        try:
            q = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None, 0.0
        if not q.question:
            return None, 0.0
        qrr = q.question[0]
        qname = _key(qrr.name.to_text())
        rdtype = qrr.rdtype
        dnssec_ok = bool(q.ednsflags & dns.flags.DO) if q.edns >= 0 else False
        with self._lock:
            self.queries.append(QueryRecord(proto, qname, dns.rdatatype.to_text(rdtype),
                                            q.flags, dnssec_ok, time.time()))
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA | dns.flags.RA
        wait = 0.0
        beh = self._behaviour(qname, rdtype)
        if beh is not None:
            kind, arg = beh
            if kind == "drop":
                return None, 0.0
            if kind == "rcode":
                r.set_rcode(int(arg))
                return r.to_wire(), 0.0
            if kind == "delay":
                wait = float(arg)
            if kind == "malformed":
                return self._malformed(q, str(arg)), 0.0
            if kind == "truncate" and proto == "udp":
                r.flags |= dns.flags.TC
                return r.to_wire(), 0.0
        name = qname
        chain = [qname]
        for _hop in range(32):
            data = self._lookup(name, rdtype)
            if data:
                r.answer.append(self._rrset(name, rdtype, data))
                break
            cname = self._lookup(name, dns.rdatatype.CNAME) if rdtype != dns.rdatatype.CNAME \
                else []
            if cname:
                r.answer.append(self._rrset(name, dns.rdatatype.CNAME, cname[:1]))
                if not self.chase_cnames:
                    break
                name = _key(cname[0])
                chain.append(name)
                continue
            if not self._exists(name):
                r.set_rcode(dns.rcode.NXDOMAIN)
            break
        with self._lock:
            secure = self.secure_all or all(n in self.secure_names for n in chain)
        if secure and (q.flags & dns.flags.AD or dnssec_ok):
            r.flags |= dns.flags.AD
        limit = 65535 if proto == "tcp" else max(512, q.payload if q.edns >= 0 else 512)
        try:
            return r.to_wire(max_size=limit, want_shuffle=self.shuffle), wait
        except dns.exception.TooBig:
            r.answer = []
            r.flags |= dns.flags.TC
            return r.to_wire(), wait

    def _malformed(self, q: dns.message.Message, kind: str) -> bytes:
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA | dns.flags.RA
        head = bytearray(r.to_wire())
        if kind == "bad-a-length":
            # one A record with a 5-byte address
            rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 5) + b"\x7f\x00\x00\x02\x00"
        else:
            rr = b"\xc0\x0c\x00"          # an answer cut off in its fixed part
        head[6:8] = struct.pack("!H", 1)  # ancount = 1
        return bytes(head) + rr

    # -- serving ----------------------------------------------------------------------
    @property
    def address(self) -> Tuple[str, int]:
        return self.host, self.port

    def start(self) -> "DnsTestServer":
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        fixed = self.port
        for attempt in range(1 if fixed else 20):
            udp = socket.socket(fam, socket.SOCK_DGRAM)
            udp.bind((self.host, fixed))
            port = udp.getsockname()[1]
            tcp = socket.socket(fam, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
                break
            except OSError:          # an ephemeral UDP port whose TCP twin is taken
                udp.close()
                tcp.close()
                if fixed or attempt == 19:
                    raise
        self.port = port
        tcp.listen(16)
        udp.settimeout(0.2)
        tcp.settimeout(0.2)
        self._udp, self._tcp = udp, tcp
        self._deadline = time.monotonic() + self.max_lifetime
        self._stop.clear()
        for target in (self._serve_udp, self._serve_tcp):
            t = threading.Thread(target=target, daemon=True, name="DnsTestServer")
            t.start()
            self._threads.append(t)
        return self

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _serve_udp(self) -> None:
        sock = self._udp
        while self._running():
            try:
                data, peer = sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                break
            reply, wait = self.answer(data, "udp")
            if reply is None:
                continue
            if wait > 0:
                threading.Timer(wait, self._sendto, (sock, reply, peer)).start()
            else:
                self._sendto(sock, reply, peer)
        sock.close()

    def _sendto(self, sock: socket.socket, data: bytes, peer) -> None:
        if not self._running():
            return
        try:
            sock.sendto(data, peer)
        except OSError:
            pass

    def _serve_tcp(self) -> None:
        ls = self._tcp
        while self._running():
            try:
                conn, _peer = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            t = threading.Thread(target=self._tcp_conn, args=(conn,), daemon=True)
            t.start()
        ls.close()

    def _tcp_conn(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            while self._running():
                head = self._recv(conn, 2)
                if head is None:
                    return
                data = self._recv(conn, struct.unpack("!H", head)[0])
                if data is None:
                    return
                reply, wait = self.answer(data, "tcp")
                if reply is None:
                    continue
                if wait > 0:
                    self._stop.wait(wait)
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass
        finally:
            conn.close()

    @staticmethod
    def _recv(conn: socket.socket, n: int) -> Optional[bytes]:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self._threads = []

    def __enter__(self) -> "DnsTestServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def tlsa_rdata(cert_pem: str, usage: int = 3, selector: int = 1, mtype: int = 1,
               index: int = 0) -> str:
    """TLSA record text for the ``index``-th certificate of a PEM file (0: the
    leaf; 1: its issuer in a chain file): selector 0 = the certificate, 1 =
    its SubjectPublicKeyInfo; matching type 0 = full, 1 = SHA-256, 2 = SHA-512."""
    import hashlib
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    with open(cert_pem, "rb") as f:
        certs = x509.load_pem_x509_certificates(f.read())
    c = certs[index]
    if selector == 0:
        data = c.public_bytes(serialization.Encoding.DER)
    else:
        data = c.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    if mtype == 1:
        data = hashlib.sha256(data).digest()
    elif mtype == 2:
        data = hashlib.sha512(data).digest()
    return "%d %d %d %s" % (usage, selector, mtype, data.hex())


# ---------------------------------------------------------------------------
# loopback addresses


def free_loopback_address(port: int = 53, tries: int = 200,
                          prefix: Tuple[int, int] = (127, 53)) -> str:
    """A 127.a.b.c address where UDP and TCP ``port`` are both free."""
    import random
    rng = random.Random()
    for _ in range(tries):
        addr = "%d.%d.%d.%d" % (prefix[0], prefix[1], rng.randrange(1, 255), rng.randrange(2, 255))
        ok = True
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(socket.AF_INET, kind)
            try:
                s.bind((addr, port))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return addr
    raise RuntimeError("no free loopback address for port %d" % port)


def port_free_on(addresses, port: int) -> bool:
    for a in addresses:
        fam = socket.AF_INET6 if ":" in a else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.bind((a, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def common_free_port(addresses, tries: int = 100) -> int:
    """A TCP port that is free on every one of ``addresses``."""
    for _ in range(tries):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port_free_on(addresses, port):
            return port
    raise RuntimeError("no common free port on %s" % (addresses,))


def resolv_conf_text(nameservers, timeout: int = 1, attempts: int = 2,
                     options: Tuple[str, ...] = ()) -> str:
    lines = ["# private resolv.conf of a postfix_smtp test instance"]
    lines += ["nameserver %s" % ns for ns in nameservers]
    opts = ["timeout:%d" % timeout, "attempts:%d" % attempts] + list(options)
    lines.append("options " + " ".join(opts))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# a whole Postfix instance with its own /etc/resolv.conf


@dataclass
class ResolverPostfixInstance(PostfixInstance):
    """A PostfixInstance started inside ``unshare --mount --propagation
    private`` with ``resolv_conf`` (the file's text) bind-mounted on
    /etc/resolv.conf.  master(8) and all its children (smtp(8) or the agent)
    inherit the mount namespace; it disappears with the last of them.
    ``postfix stop``/``reload``, ``sendmail`` and ``postqueue`` run from
    outside work as usual (they do not resolve names)."""

    resolv_conf: str = ""

    @property
    def resolv_conf_path(self) -> str:
        return os.path.join(self.base, "resolv.conf")

    def _start_postfix(self) -> None:
        path = self.resolv_conf_path
        with open(path, "w") as f:
            f.write(self.resolv_conf)
        os.chmod(path, 0o644)
        script = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'
        prefix = [tool("unshare"), "--mount", "--propagation", "private", "--",
                  "/bin/sh", "-c", script, "sh", path]
        real_run = _instance._run

        def run(cmd, *args, **kwargs):
            if list(cmd[-1:]) == ["start"]:
                cmd = prefix + list(cmd)
            return real_run(cmd, *args, **kwargs)

        # PostfixInstance._start_postfix runs "postfix -c DIR start" through the
        # module's _run(); prefix exactly that command.
        _instance._run = run
        try:
            super()._start_postfix()
        finally:
            _instance._run = real_run

    def namespace_resolv_conf(self) -> str:
        """/etc/resolv.conf as master(8) sees it (to check the namespace)."""
        pid = self.master_pid
        if not pid:
            raise RuntimeError("master is not running")
        with open("/proc/%d/root/etc/resolv.conf" % pid) as f:
            return f.read()
