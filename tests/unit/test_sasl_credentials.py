"""Password table lookup order and user:password parsing."""

from __future__ import annotations

import pytest

from postfix_smtp.sasl.credentials import (AddressSearch, TableError, find_credentials,
                                           parse_credentials, sender_keys)
from postfix_smtp.sasl.tables import open_password_maps


class Table:
    def __init__(self, data, fail_on=()):
        self.data = data
        self.fail_on = set(fail_on)
        self.keys = []

    def lookup(self, key):
        self.keys.append(key)
        if key in self.fail_on:
            raise OSError("database is broken")
        return self.data.get(key)


def test_parse():
    c = parse_credentials("user@example.com:pass:with:colons")
    assert (c.username, c.password) == ("user@example.com", "pass:with:colons")
    c = parse_credentials("justuser")
    assert (c.username, c.password) == ("justuser", "")
    c = parse_credentials(":pw")
    assert (c.username, c.password) == ("", "pw")


def test_order_host_then_nexthop():
    t = Table({"[smtp.example.com]:587": "n:1", "smtp.example.com": "h:2"})
    c = find_credentials(t, "smtp_sasl_password_maps", host="smtp.example.com",
                         dest="[smtp.example.com]:587")
    assert c.username == "h"
    assert t.keys == ["smtp.example.com"]
    t = Table({"[smtp.example.com]:587": "n:1"})
    c = find_credentials(t, "x", host="smtp.example.com", dest="[smtp.example.com]:587")
    assert c.username == "n"
    assert t.keys == ["smtp.example.com", "[smtp.example.com]:587"]


def test_no_entry():
    t = Table({})
    assert find_credentials(t, "x", host="a", dest="b") is None
    assert t.keys == ["a", "b"]


def test_sender_dependent_first():
    t = Table({"@example.org": "dom:1", "alice@example.org": "alice:2", "mx": "host:3"})
    c = find_credentials(t, "x", host="mx", dest="[mx]", sender="alice@example.org",
                         sender_dependent=True)
    assert c.username == "alice"
    c = find_credentials(t, "x", host="mx", dest="[mx]", sender="bob@example.org",
                         sender_dependent=True)
    assert c.username == "dom"
    c = find_credentials(t, "x", host="mx", dest="[mx]", sender="", sender_dependent=True)
    assert c.username == "host"          # null sender: no sender lookup
    c = find_credentials(t, "x", host="mx", dest="[mx]", sender="alice@example.org")
    assert c.username == "host"          # feature off


def test_sender_keys_like_mail_addr_find():
    s = AddressSearch(recipient_delimiter="+", myorigin="example.org")
    assert sender_keys("alice+tag@example.org", s) == [
        "alice+tag@example.org", "alice@example.org", "alice+tag", "alice", "@example.org"]
    assert sender_keys("bob@other.test", s) == ["bob@other.test", "@other.test"]
    assert sender_keys("a b@x.test", AddressSearch()) == ['"a b"@x.test', "a b@x.test",
                                                         "@x.test"]
    assert sender_keys("owner-list@x.test", AddressSearch(recipient_delimiter="-")) == [
        "owner-list@x.test", "@x.test"]
    assert sender_keys("+x@x.test", AddressSearch(recipient_delimiter="+")) == [
        "+x@x.test", "@x.test"]


def test_table_error_stops_the_search():
    t = Table({"b": "u:p"}, fail_on={"a"})
    with pytest.raises(TableError) as e:
        find_credentials(t, "smtp_sasl_password_maps", host="a", dest="b")
    assert str(e.value) == "smtp_sasl_password_maps lookup error"

    class ErrFlag(Table):
        error = 0

        def lookup(self, key):
            self.error = 1
            return None
    with pytest.raises(TableError):
        find_credentials(ErrFlag({}), "t", host="a", dest="b")


def test_with_postfix_smtp_maps(tmp_path):
    p = tmp_path / "sasl_passwd"
    p.write_text("# comment\n[Relay.Example]:587   user@example.com:pw one\n"
                 "relay.example user2:pw2\n@example.org dom:pw3\n"
                 "alice@example.org alice:pw4\n")
    m = open_password_maps("texthash:%s" % p)
    c = find_credentials(m, "smtp_sasl_password_maps", host="other", dest="[relay.example]:587")
    assert (c.username, c.password) == ("user@example.com", "pw one")
    c = find_credentials(m, "smtp_sasl_password_maps", host="RELAY.example", dest="x")
    assert c.username == "user2"
    c = find_credentials(m, "t", host="x", dest="y", sender="bob@example.org",
                         sender_dependent=True)
    assert c.username == "dom"
    c = find_credentials(m, "t", host="x", dest="y", sender="alice@example.org",
                         sender_dependent=True)
    assert c.username == "alice"
    broken = open_password_maps("hash:%s/nonexistent" % tmp_path)
    with pytest.raises(TableError) as e:
        find_credentials(broken, "smtp_sasl_password_maps", host="x", dest="y")
    assert str(e.value) == "smtp_sasl_password_maps lookup error"
    with pytest.raises(TableError):
        find_credentials(broken, "t", host="x", dest="y", sender="a@b", sender_dependent=True)
