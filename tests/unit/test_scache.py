"""scache(8) client against a fake server (socketpair + SCM_RIGHTS), labels, properties."""

import os
import socket
import threading

import pytest

from postfix_smtp import scache
from postfix_smtp.ipc.attr import Decoder, encode
from postfix_smtp.smtp import reuse
from postfix_smtp.smtp.protocol import Features


class FakeServer:
    """A scripted scache(8): stores endpoints and destinations like the real one.

    ``store`` is the (endpoints, destinations) pair shared by all streams of one
    fake service, as scache(8) keeps one cache for all its clients.  The thread
    is started by ``start()``: the caller records the server first, so that a
    client that got the announcement can rely on seeing it in the list."""

    def __init__(self, sock, store=None):
        self.sock = sock
        self.dec = Decoder()
        self.endp, self.dest = store if store is not None else ({}, {})
        self.requests = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def recv(self):
        while True:
            lst = self.dec.next_list()
            if lst is not None:
                return lst
            data = self.sock.recv(4096)
            if not data:
                return None
            self.dec.feed(data)

    def send(self, pairs):
        self.sock.sendall(encode(pairs))

    def run(self):
        self.send([("protocol", "connection_cache_protocol")])
        while True:
            req = self.recv()
            if req is None:
                return
            self.requests.append(req)
            d = dict(req)
            kind = d["request"]
            if kind == "save_endp":
                self.send([("dummy", "")])
                fd = scache.recv_fd(self.sock)
                self.endp[d["label"]] = (fd, d["property"])
                self.send([("status", 0)])
            elif kind == "save_dest":
                labels = [v for n, v in req if n == "label"]
                self.dest[labels[0]] = (d["property"], labels[1])
                self.send([("status", 0)])
            elif kind in ("find_endp", "find_dest"):
                if kind == "find_dest":
                    hit = self.dest.get(d["label"])
                    ent = self.endp.pop(hit[1], None) if hit else None
                    props = [("property", hit[0] if ent else ""),
                             ("property", ent[1] if ent else "")]
                else:
                    ent = self.endp.pop(d["label"], None)
                    props = [("property", ent[1] if ent else "")]
                if ent is None:
                    self.send([("status", 2)] + props)
                    continue
                self.send([("status", 0)] + props)
                assert self.recv() == [("dummy", "")]
                scache.send_fd(self.sock, ent[0])
                os.close(ent[0])
                assert self.recv() == [("dummy", "")]
            else:
                self.send([("status", 1)])


class Log:
    def __init__(self):
        self.lines = []

    def warning(self, t):
        self.lines.append("warning: " + t)

    def info(self, t):
        self.lines.append(t)


@pytest.fixture
def pair(tmp_path):
    path = str(tmp_path / "scache")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(5)
    servers = []
    store = ({}, {})

    def accept():
        while True:
            try:
                s, _ = lsock.accept()
            except OSError:
                return
            srv = FakeServer(s, store)
            # Listed before its thread sends the announcement: the client cannot
            # finish a request on this stream before ``servers`` shows it.
            servers.append(srv)
            srv.start()
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    log = Log()
    c = scache.ScacheClient(path, timeout=2, log=log, sleep=lambda s: None)
    yield c, servers, log
    c.close()
    lsock.shutdown(socket.SHUT_RDWR)             # wakes the blocked accept()
    lsock.close()
    t.join(2)
    for srv in servers:
        try:
            srv.sock.shutdown(socket.SHUT_RDWR)  # ends the server thread's recv()
        except OSError:
            pass
        srv.thread.join(2)
        srv.sock.close()
    for fd, _prop in store[0].values():          # descriptors never taken back
        os.close(fd)


def test_save_and_find_endpoint_passes_a_working_socket(pair):
    c, servers, log = pair
    a, b = socket.socketpair()
    assert c.save_endp(2, "smtp\n127.0.0.1\n25\n0\n", "reuse_count=0\n\n", a) == 0
    assert a.fileno() == -1                      # always closed locally
    got = c.find_endp("smtp\n127.0.0.1\n25\n0\n")
    assert got is not None
    sock, prop = got
    assert prop == "reuse_count=0\n\n"
    sock.sendall(b"RSET\r\n")
    assert b.recv(100) == b"RSET\r\n"
    sock.close()
    assert c.find_endp("smtp\n127.0.0.1\n25\n0\n") is None     # taken out of the cache
    reqs = servers[0].requests
    assert reqs[0] == [("request", "save_endp"), ("ttl", "2"),
                       ("label", "smtp\n127.0.0.1\n25\n0\n"), ("property", "reuse_count=0\n\n")]
    assert len(servers) == 1                     # one persistent stream
    assert log.lines == []


def test_save_and_find_destination(pair):
    c, servers, log = pair
    a, b = socket.socketpair()
    el = reuse.endp_label("smtp", "127.0.0.1", 25)
    dl = reuse.dest_label("smtp", "example.org")
    c.save_endp(2, el, "E\n\n", a)
    assert c.save_dest(2, dl, "D\n\n", el) == 0
    sock, dprop, eprop = c.find_dest(dl)
    assert (dprop, eprop) == ("D\n\n", "E\n\n")
    sock.sendall(b"x")
    assert b.recv(1) == b"x"
    assert c.find_dest(dl) is None
    assert servers[0].requests[1] == [("request", "save_dest"), ("ttl", "2"), ("label", dl),
                                      ("property", "D\n\n"), ("label", el)]


def test_missing_service_retries_once_then_disables(tmp_path):
    log = Log()
    sleeps = []
    c = scache.ScacheClient(str(tmp_path / "nope"), timeout=1, log=log, sleep=sleeps.append)
    a, _b = socket.socketpair()
    assert c.save_endp(2, "l", "p\n\n", a) == -1
    assert a.fileno() == -1
    assert sleeps == [1]
    assert c.disabled
    assert log.lines[-1] == "warning: disabling connection caching"
    assert c.find_endp("l") is None and c.find_dest("l") is None
    assert sleeps == [1]                         # disabled: no more tries


def test_bad_announcement_is_an_error(tmp_path):
    path = str(tmp_path / "s")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(5)

    def serve():
        for _ in range(2):
            s, _ = lsock.accept()
            s.sendall(encode([("protocol", "delivery_request_protocol")]))
            s.recv(100)
            s.close()
    threading.Thread(target=serve, daemon=True).start()
    log = Log()
    c = scache.ScacheClient(path, timeout=1, log=log, sleep=lambda s: None)
    assert c.find_endp("x") is None
    assert c.disabled
    assert any("unexpected protocol announcement" in l for l in log.lines)
    lsock.close()


def test_idle_stream_is_reopened_and_server_drop_is_recovered(pair):
    c, servers, log = pair
    now = [100.0]
    c.clock = lambda: now[0]
    sleeps = []
    c.sleep = sleeps.append
    assert c.find_endp("x") is None
    assert len(servers) == 1
    now[0] += 10                                 # > ipc_idle: a new stream
    a, b = socket.socketpair()
    assert c.save_endp(2, "e", "P\n\n", a) == 0
    assert len(servers) == 2
    assert servers[0].requests == [[("request", "find_endp"), ("label", "x")]]
    servers[1].sock.shutdown(socket.SHUT_RDWR)   # the server drops the idle stream
    servers[1].thread.join(2)
    assert not servers[1].thread.is_alive()
    now[0] += 1                                  # < ipc_idle: the client still trusts it
    got = c.find_endp("e")                       # fails on the dead stream, then reopens
    assert got is not None                       # the request was really answered...
    sock, prop = got
    assert prop == "P\n\n"
    sock.sendall(b"x")
    assert b.recv(1) == b"x"                     # ...with the endpoint saved before the drop
    sock.close()
    b.close()
    assert len(servers) == 3 and not c.disabled
    assert servers[2].requests == [[("request", "find_endp"), ("label", "e")]]
    # A stale idle stream is reopened at once: no one-second pause and no
    # warning.  The generic retry path would also end in a working stream, but
    # it pauses first; ``sleeps`` tells the two apart.
    assert sleeps == []
    assert log.lines == []


def test_timeout_is_bounded(tmp_path):
    path = str(tmp_path / "s")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(5)                              # never accepts, never announces
    log = Log()
    c = scache.ScacheClient(path, timeout=0.2, log=log, sleep=lambda s: None)
    assert c.find_dest("x") is None
    assert c.disabled
    assert "disabling connection caching" in log.lines[-1]
    lsock.close()


# --- labels and properties ---------------------------------------------------------
def test_labels_match_stock_layout():
    assert reuse.dest_label("smtp", "example.org") == "smtp\nexample.org\n"
    assert reuse.dest_label("smtp", "[127.0.0.1]:2525") == "smtp\n[127.0.0.1]:2525\n"
    assert reuse.endp_label("smtp", "192.0.2.25", 25, 1) == "smtp\n192.0.2.25\n25\n1\n"
    assert reuse.endp_label("smtp", "::1", 25) == "smtp\n::1\n25\n0\n"
    assert reuse.endp_label("smtp", "192.0.2.25", 25, 7, "example.org") == \
        "smtp\nexample.org\n192.0.2.25\n25\n7\n"
    assert reuse._field("") == "*\n"
    assert reuse._field("a*b") == "YSpi\n"


def test_properties_round_trip():
    f = Features(esmtp=True, server_name="mx.example.org", pipelining=True, size=True,
                 size_limit=1000, eightbitmime=True, dsn=True, smtputf8=True,
                 xforward={"NAME", "ADDR", "PROTO", "HELO", "SOURCE", "PORT", "IDENT"},
                 enhancedstatuscodes=True, pix_delay_dotcrlf=True, auth=["PLAIN"])
    p = reuse.endp_props(f, 0, 1700000300)
    assert p.startswith("tls_level=0\nreuse_count=0\nendpoint_features=")
    assert p.endswith("expire_time=1700000300\nserver_name=mx.example.org\n\n")
    s = reuse.activate(p, reuse.dest_props("example.org", "mx.example.org", "192.0.2.1", True))
    g = s.features
    assert (g.esmtp, g.pipelining, g.size, g.eightbitmime, g.dsn, g.smtputf8) == (True,) * 6
    assert g.enhancedstatuscodes and g.pix_delay_dotcrlf and not g.starttls
    assert g.size_limit == 0                     # not restored (stock neither)
    assert g.xforward == f.xforward
    assert g.server_name == "mx.example.org"
    assert s.reuse_count == 1 and s.expire_time == 1700000300
    assert (s.dest, s.host, s.addr, s.best_mx) == ("example.org", "mx.example.org",
                                                   "192.0.2.1", True)


def test_stock_property_strings_parse():
    # as written by smtp(8) 3.7.11: ESMTP|8BITMIME|PIPELINING|SIZE|DSN|SMTPUTF8
    bits = 1 | 2 | 4 | 8 | 32768 | 2097152
    s = reuse.activate("tls_level=0\nreuse_count=3\nendpoint_features=%d\n"
                       "expire_time=1700000000\n\n" % bits)
    assert s.reuse_count == 4 and s.features.smtputf8 and not s.features.xforward
    assert reuse.dest_props("d", "h", "1.2.3.4", False) == \
        "destination=d\nhost_name=h\nhost_addr=1.2.3.4\ndestination_features=0\n\n"
    with pytest.raises(ValueError):
        reuse.activate("garbage")
    with pytest.raises(ValueError):
        reuse.activate("tls_level=0\n\n")


def test_expiry_rules():
    assert reuse.expired(0, 100, 101, 0)
    assert not reuse.expired(5, 200, 101, 0)
    assert reuse.expired(2, 200, 101, 2)
    assert not reuse.expired(1, 200, 101, 2)
