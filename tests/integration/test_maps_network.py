"""socketmap:, tcp: and proxy: tables against live servers.

socketmap and tcp servers run in a thread of the test on loopback (every
server stops by itself, all waits are bounded); the same tables are also
asked through ``postmap -q`` to check that both clients see the same
answers.  proxy: goes through the proxymap(8) of a private Postfix instance.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from postfix_smtp.config.params import Params
from postfix_smtp.maps import (DEFAULT_FLAGS, MapError, OpenContext, RecordingLog,
                               open_maps)
from postfix_smtp.maps.text import hex_quote, hex_unquote, netstring, parse_netstring
from postfix_smtp.testing.instance import PostfixInstance

POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"
ANSWERS = {
    b"known": b"OK value one",
    b"Upper": b"OK upper value",
    b"missing": b"NOTFOUND ",
    b"temp": b"TEMP try later",
    b"perm": b"PERM broken",
    b"timeout": b"TIMEOUT slow",
    b"weird": b"HUH what",
    "ütf".encode(): "OK ünicode".encode(),
}


class _Server:
    """A loopback TCP server running *handle(conn)* per connection in threads."""

    def __init__(self, handle, lifetime: float = 60.0) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.handle = handle
        self.connections = 0
        self.requests = []
        self._stop = threading.Event()
        self._end = time.monotonic() + lifetime
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._end:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            self.connections += 1
            conn.settimeout(10)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()
        self.sock.close()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handle(self, conn)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)


def socketmap_handler(server: _Server, conn: socket.socket) -> None:
    buf = b""
    while True:
        payload, used = parse_netstring(buf, 100000)
        if payload is None:
            data = conn.recv(4096)
            if not data:
                return
            buf += data
            continue
        buf = buf[used:]
        name, _, key = payload.partition(b" ")
        server.requests.append((name, key))
        if key == b"close":
            return                  # drop the connection without a reply
        if key == b"garbage":
            conn.sendall(b"xx:yy")
            return
        conn.sendall(netstring(ANSWERS.get(key, b"NOTFOUND ")))


def tcp_handler(server: _Server, conn: socket.socket) -> None:
    f = conn.makefile("rb")
    while True:
        line = f.readline()
        if not line:
            return
        assert line.startswith(b"get ") and line.endswith(b"\n")
        key = hex_unquote(line[4:-1])
        server.requests.append(key)
        if key == b"soft":
            conn.sendall(b"400 later\n")
        elif key == b"bad":
            conn.sendall(b"600 what\n")
        elif key == b"close":
            return
        elif key.startswith(b"known"):
            conn.sendall(b"200 " + hex_quote(b"value for " + key) + b"\n")
        else:
            conn.sendall(b"500 not%20found\n")


@pytest.fixture
def confdir():
    d = tempfile.mkdtemp(prefix="pfsmtp-maps-net-")
    with open(os.path.join(d, "main.cf"), "w") as f:
        f.write("compatibility_level = 3.6\n")
    t = time.time() - 3600
    os.utime(os.path.join(d, "main.cf"), (t, t))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def postmap_q(confdir: str, key: str, spec: str):
    r = subprocess.run([POSTMAP, "-c", confdir, "-q", key, spec], capture_output=True,
                       timeout=30)
    if b"fatal" in r.stderr or b"warning" in r.stderr and r.returncode:
        return "ERROR"
    return r.stdout.decode().rstrip("\n") if r.returncode == 0 else None


def ours_q(maps, key: str):
    try:
        return maps.lookup(key)
    except MapError:
        return "ERROR"


def test_socketmap_client(confdir):
    server = _Server(socketmap_handler)
    try:
        spec = "socketmap:inet:127.0.0.1:%d:mymap" % server.port
        log = RecordingLog()
        maps = open_maps(spec, None, DEFAULT_FLAGS, log=log)
        for key in ("known", "Upper", "missing", "temp", "perm", "timeout", "weird", "ütf",
                    "unlisted"):
            assert ours_q(maps, key) == postmap_q(confdir, key, spec), key
        server.connections = 0
        assert maps.lookup("known") == "value one"
        assert ("mymap".encode(), b"Upper") in server.requests     # no folding (FOLD_FIX only)
        with pytest.raises(MapError) as exc:
            maps.lookup("perm")
        assert exc.value.error == -2
        assert any("socketmap server permanent error: broken" in t for t in log.texts())
        # The connection opened during the comparisons is still in use.
        assert server.connections == 0
        # A server that closes the connection: one silent reconnect, then an error.
        with pytest.raises(MapError):
            maps.lookup("close")
        assert any("lookup error: unexpected end-of-input" in t for t in log.texts())
        assert maps.lookup("known") == "value one"            # reconnects
        with pytest.raises(MapError):
            maps.lookup("garbage")
        assert maps.lookup("known") == "value one"
        maps.close()
    finally:
        server.stop()


def test_socketmap_server_down():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                       # nothing listens there now
    log = RecordingLog()
    maps = open_maps("socketmap:inet:127.0.0.1:%d:x" % port, None, log=log)
    t0 = time.monotonic()
    with pytest.raises(MapError):
        maps.lookup("key")
    assert time.monotonic() - t0 < 5
    assert any("lookup error: Connection refused" in t for t in log.texts())


def test_socketmap_unix_endpoint(tmp_path):
    path = str(tmp_path / "sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(10)
    result = {}

    def run():
        conn, _ = srv.accept()
        conn.settimeout(10)
        data = conn.recv(100)
        result["req"] = data
        conn.sendall(netstring(b"OK unix-value"))
        conn.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    maps = open_maps("socketmap:unix:%s:name" % path, None)
    assert maps.lookup("k") == "unix-value"
    t.join(5)
    srv.close()
    assert result["req"] == netstring(b"name k")


def test_tcp_client(confdir):
    server = _Server(tcp_handler)
    try:
        spec = "tcp:127.0.0.1:%d" % server.port
        log = RecordingLog()
        ctx = OpenContext(None, log, tcp_max_try=2, retry_sleep=0.05)
        maps = open_maps(spec, None, ctx=ctx)
        for key in ("known", "known with space%", "other", "soft", "bad"):
            assert ours_q(maps, key) == postmap_q(confdir, key, spec), key
        assert maps.lookup("known with space%") == "value for known with space%"
        assert b"known with space%" in server.requests
        with pytest.raises(MapError):
            maps.lookup("close")           # EOF, reconnect, EOF again, give up
        assert maps.lookup("known") == "value for known"
        ctx.close()
    finally:
        server.stop()


def test_tcp_server_down():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    log = RecordingLog()
    ctx = OpenContext(None, log, tcp_max_try=3, retry_sleep=0.01)
    maps = open_maps("tcp:127.0.0.1:%d" % port, None, ctx=ctx)
    with pytest.raises(MapError):
        maps.lookup("key")
    assert len([t for t in log.texts() if "connect to TCP map" in t]) == 3


# ---------------------------------------------------------------------------------------
# proxymap

def test_proxymap(tmp_base):
    tables = os.path.join(tmp_base, "tables")
    os.makedirs(tables)
    os.chmod(tables, 0o755)
    with open(os.path.join(tables, "sasl"), "w") as f:
        f.write("[mail.example.com]:587 user:secret\nExample.ORG  other:pw\nstraße s\n")
    with open(os.path.join(tables, "re"), "w") as f:
        f.write("/^(.*)@proxied\\.example$/ re-$1\n")
    with open(os.path.join(tables, "denied"), "w") as f:
        f.write("a b\n")
    conf = tempfile.mkdtemp(prefix="pfsmtp-maps-pm-", dir=tmp_base)
    with open(os.path.join(conf, "main.cf"), "w") as f:
        f.write("compatibility_level = 3.6\n")
    for name in ("sasl", "denied"):
        subprocess.run([POSTMAP, "-c", conf, "hash:" + os.path.join(tables, name)],
                       check=True, timeout=30)
    sasl = "proxy:hash:" + os.path.join(tables, "sasl")
    regexp = "proxy:regexp:" + os.path.join(tables, "re")
    inst = PostfixInstance(os.path.join(tmp_base, "pf"), max_lifetime=120, quick_start=True,
                           main_cf={"proxy_read_maps": "%s %s" % (sasl, regexp)})
    inst.start()
    try:
        params = Params.load(inst.config_dir)
        log = RecordingLog()
        maps = open_maps("%s, %s" % (sasl, regexp), params, DEFAULT_FLAGS,
                         title="smtp_sasl_password_maps", log=log)
        assert maps.lookup("[mail.example.com]:587") == "user:secret"
        assert maps.lookup("EXAMPLE.org") == "other:pw"
        assert maps.lookup("STRASSE") == "s"              # casefolded on our side
        assert maps.lookup("nobody") is None
        assert maps.lookup("joe@proxied.example") == "re-joe"
        # The proxied table reports its kind (fixed vs pattern) through the open reply.
        assert [t.fixed for t in maps.tables] == [True, False]
        assert maps.lookup_address("joe@proxied.example") == "re-joe"
        # A table that is not in proxy_read_maps: stock exits; we defer.
        denied = open_maps("proxy:hash:" + os.path.join(tables, "denied"), params, log=log)
        assert any("is not configured for table" in t for t in log.texts("error"))
        with pytest.raises(MapError):
            denied.lookup("a")
        # proxymap restarted (e.g. postfix reload): the client reconnects.
        inst.reload()
        time.sleep(0.5)
        assert maps.lookup("[mail.example.com]:587") == "user:secret"
        maps.close()
    finally:
        inst.stop()


def test_proxymap_down(tmp_path):
    class P:
        def get(self, name):
            return {"queue_directory": str(tmp_path), "proxymap_service_name": "proxymap",
                    "smtputf8_enable": "yes"}.get(name, "")

        def get_time(self, name):
            return 5.0

        def get_bool(self, name):
            return True

    log = RecordingLog()
    ctx = OpenContext(P(), log, proxy_tries=2, retry_sleep=0.01)
    maps = open_maps("proxy:hash:/etc/nothing", P(), ctx=ctx)
    with pytest.raises(MapError):
        maps.lookup("key")
    assert any("proxymap" in t for t in log.texts("error"))
