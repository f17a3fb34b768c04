"""The 535 authentication failure cache (stock smtp_sasl_auth_cache.c rules)."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from postfix_smtp.ipc.attr import Decoder, encode
from postfix_smtp.sasl.cache import (REQUEST_FLAGS, AuthCache, CacheError, MemoryTable,
                                     ProxyTable, check_cache_name, password_hash)
from postfix_smtp.sasl.policy import SaslConfigError


class Clock:
    t = 1_000_000

    def __call__(self):
        return self.t


def test_store_find_expire_and_password_change():
    clock, warns = Clock(), []
    c = AuthCache(MemoryTable(), ttl=90 * 86400, now=clock, warn=warns.append)
    assert c.find("relay.example", "alice", "pw") is None
    c.store("relay.example", "alice", "pw", "5.7.8", "535 5.7.8 Error: authentication failed")
    assert c.table.data == {"relay.example;alice": "1000000;%s;5.7.8;535 5.7.8 Error: "
                            "authentication failed" % password_hash("pw")}
    assert c.find("relay.example", "alice", "pw") == ("5.7.8",
                                                      "535 5.7.8 Error: authentication failed")
    assert c.find("relay.example", "alice", "newpw") is None      # changed: entry removed
    assert c.table.data == {}
    c.store("relay.example", "alice", "pw", "5.7.8", "535 no")
    clock.t += 90 * 86400 + 1
    assert c.find("relay.example", "alice", "pw") is None          # expired
    c.table.data["h;u"] = "garbage"
    assert c.find("h", "u", "pw") is None
    assert warns == ["bad smtp_sasl_auth_cache entry: garbage"]


def test_password_hash_is_sha1_base64():
    assert password_hash("pw") == "GpHWL3ymc5liWkNopqtdSjuqYHM="     # printf pw|sha1|base64


def test_cache_name_checks():
    assert check_cache_name("proxy:btree:/var/lib/postfix/sasl_auth_cache") == \
        "btree:/var/lib/postfix/sasl_auth_cache"
    with pytest.raises(SaslConfigError) as e:
        check_cache_name("btree:/x")
    assert e.value.text == 'SASL authentication cache name "btree:/x" must start with "proxy:'
    with pytest.raises(SaslConfigError):
        check_cache_name("proxy:btree:/x, proxy:btree:/y")


class FakeProxymap(threading.Thread):
    """Speaks the proxymap protocol on a UNIX socket, remembering requests."""

    def __init__(self, path, deny=False):
        super().__init__(daemon=True)
        self.path, self.deny = path, deny
        self.data, self.requests = {}, []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(5)

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.sendall(encode([("protocol", "proxymap_protocol")]))
            dec = Decoder()
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                dec.feed(data)
                while True:
                    lst = dec.next_list()
                    if lst is None:
                        break
                    req = dict(lst)
                    self.requests.append(req)
                    conn.sendall(encode(self.answer(req)))
            conn.close()

    def answer(self, req):
        r = req["request"]
        if self.deny:
            return [("status", 4), ("flags", 0)] if r == "open" else [("status", 4)]
        if r == "open":
            return [("status", 0), ("flags", 16)]
        if r == "lookup":
            v = self.data.get(req["key"])
            return [("status", 0 if v is not None else 1), ("value", v or "")]
        if r == "update":
            self.data[req["key"]] = req["value"]
            return [("status", 0)]
        if r == "delete":
            return [("status", 0 if self.data.pop(req["key"], None) is not None else 1)]
        return [("status", 3)]


def test_proxy_table_protocol(tmp_path):
    path = str(tmp_path / "proxywrite")
    srv = FakeProxymap(path)
    srv.start()
    t = ProxyTable("btree:/data/sasl_auth_cache", "/nonexistent", 5, fallback_path=path)
    assert t.lookup("h;u") is None
    t.update("h;u", "1;x;5.7.8;535 no")
    assert t.lookup("h;u") == "1;x;5.7.8;535 no"
    assert t.delete("h;u") is True
    assert t.delete("h;u") is False
    t.close()
    assert srv.requests[0] == {"request": "open", "table": "btree:/data/sasl_auth_cache",
                               "flags": "0"}
    assert srv.requests[1] == {"request": "lookup", "table": "btree:/data/sasl_auth_cache",
                               "flags": str(REQUEST_FLAGS), "key": "h;u"}
    assert REQUEST_FLAGS == 0x80 | 0x100 | 0x80000
    srv.sock.close()


def test_proxy_table_denied_and_unreachable(tmp_path):
    path = str(tmp_path / "pw")
    srv = FakeProxymap(path, deny=True)
    srv.start()
    with pytest.raises(CacheError) as e:
        ProxyTable("btree:/x", path, 5).lookup("k")
    assert 'not configured for table "btree:/x"' in str(e.value)
    srv.sock.close()
    warns = []
    c = AuthCache(ProxyTable("btree:/x", str(tmp_path / "none"), 1), 100, warn=warns.append)
    assert c.find("h", "u", "p") is None
    c.store("h", "u", "p", "5.7.8", "535 x")
    assert len(warns) == 2 and all("SASL auth failure map btree:/x" in w for w in warns)
    assert not os.path.exists(str(tmp_path / "none"))
