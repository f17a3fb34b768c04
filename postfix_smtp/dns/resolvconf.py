"""``/etc/resolv.conf`` as glibc's ``res_init()`` reads it (pure).

Only what a stub resolver needs: up to three nameservers, the search list,
and the options that change timing or the query (``timeout``, ``attempts``,
``ndots``, ``rotate``, ``use-vc``, ``edns0``, ``trust-ad``).  Values are
clamped to glibc's limits, so a configuration can never make one query wait
longer than glibc would (at most 3 servers x 5 attempts, 30 s per try).
"""

from __future__ import annotations

import os
import socket
from ..valueclass import dataclass, field
from typing import List, Optional, Tuple

PATH = "/etc/resolv.conf"
MAXNS = 3                 # glibc MAXNS
RES_TIMEOUT = 5           # glibc default per-try timeout (seconds)
RES_DFLRETRY = 2          # glibc default attempts
RES_MAXRETRANS = 30       # glibc upper bound for "timeout:"
RES_MAXRETRY = 5          # glibc upper bound for "attempts:"
RES_MAXNDOTS = 15
MAXDNSRCH = 6             # search domains Postfix-era glibc honours (extra ignored)
DNS_PORT = 53


@dataclass
class ResolvConf:
    nameservers: List[Tuple[str, int]] = field(default_factory=list)   # (address, port)
    search: List[str] = field(default_factory=list)
    timeout: int = RES_TIMEOUT
    attempts: int = RES_DFLRETRY
    ndots: int = 1
    rotate: bool = False
    use_vc: bool = False
    edns0: bool = False
    trust_ad: bool = False

    def max_query_time(self) -> float:
        """Upper bound of one query's wall time under the glibc schedule."""
        n = max(1, len(self.nameservers))
        total = 0.0
        for attempt in range(self.attempts):
            total += n * per_try_timeout(self.timeout, attempt, n)
        return total


def per_try_timeout(retrans: int, attempt: int, nscount: int) -> int:
    """glibc send_dg(): ``retrans << try``, divided by the server count after
    the first round, at least 1 second."""
    seconds = retrans << attempt
    if attempt > 0:
        seconds //= max(1, nscount)
    return max(1, seconds)


def _nameserver(text: str) -> Optional[Tuple[str, int]]:
    addr = text.split("%", 1)[0]
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, addr)
        except OSError:
            continue
        return addr, DNS_PORT
    return None


def _option(conf: ResolvConf, word: str) -> None:
    name, _, value = word.partition(":")
    def num(limit: int) -> Optional[int]:
        try:
            v = int(value)
        except ValueError:
            return None
        return max(0, min(v, limit))
    if name == "ndots":
        v = num(RES_MAXNDOTS)
        if v is not None:
            conf.ndots = v
    elif name == "timeout":
        v = num(RES_MAXRETRANS)
        if v is not None:
            conf.timeout = max(1, v)
    elif name == "attempts":
        v = num(RES_MAXRETRY)
        if v is not None:
            conf.attempts = max(1, v)
    elif name == "rotate":
        conf.rotate = True
    elif name == "use-vc":
        conf.use_vc = True
    elif name == "edns0":
        conf.edns0 = True
    elif name == "trust-ad":
        conf.trust_ad = True


def parse(text: str, hostname: Optional[str] = None) -> ResolvConf:
    conf = ResolvConf()
    have_search = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        words = line.split()
        key, args = words[0], words[1:]
        if key == "nameserver" and args:
            if len(conf.nameservers) < MAXNS:
                ns = _nameserver(args[0])
                if ns is not None:
                    conf.nameservers.append(ns)
        elif key == "domain" and args:
            conf.search = [args[0].rstrip(".") or args[0]]
            have_search = True
        elif key == "search" and args:
            conf.search = [a for a in args][:MAXDNSRCH]
            have_search = True
        elif key == "options":
            for w in args:
                _option(conf, w)
    if not conf.nameservers:
        conf.nameservers.append(("127.0.0.1", DNS_PORT))   # glibc: the local host
    if not have_search:
        host = hostname if hostname is not None else socket.gethostname()
        if "." in host:
            conf.search = [host.split(".", 1)[1]]
    return conf


_cache: dict = {}


def load(path: str = PATH) -> ResolvConf:
    """Parse ``path``, re-reading it only when its size or mtime changed."""
    try:
        st = os.stat(path)
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        key = None
    hit = _cache.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    conf = parse(text)
    _cache[path] = (key, conf)
    return conf
