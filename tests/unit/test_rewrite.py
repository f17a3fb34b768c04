"""smtp_generic_maps: tok822 port, mail_addr_map semantics, header rebuilding."""

from __future__ import annotations

import pytest

from postfix_smtp.maps import open_maps
from postfix_smtp.maps.base import RecordingLog
from postfix_smtp.smtp.rewrite import (ADDR, QSTRING, STR_DEFL, STR_HEAD, GenericMapError,
                                       GenericMapper, ext_prop_generic, fold_address_header,
                                       tok822_externalize, tok822_grep, tok822_internalize,
                                       tok822_parse)


class Params(dict):
    def get(self, key, default=None):
        return dict.get(self, key, "" if default is None else default)


PARAMS = Params(myorigin="example.com", mydomain="example.com", mydestination="example.com",
                recipient_delimiter="+")

TABLE = """\
alice@example.com       alice@public.org
bob@example.com         Bob.Smith@public.org
@internal.lan           @public.org
local                   carol
multi@example.com       a@x.org, b@x.org
noaddr@example.com      <>
"""


def mapper(tmp_path, propagate=True, table=TABLE, spec=None):
    path = tmp_path / "generic"
    path.write_text(table)
    log = RecordingLog()
    maps = open_maps(spec or "texthash:%s" % path, PARAMS, title="smtp_generic_maps", log=log)
    return GenericMapper(maps, propagate=propagate, params=PARAMS, log=log), log


@pytest.mark.parametrize("text,expected", [
    ("John <j@x>", "John <j@x>"),
    ('"Doe, John" <j@x>, b@y (Bee)', '"Doe, John" <j@x>,\nb@y (Bee)'),
    ("grp: a@b, c@d;, e@f", "grp: a@b,\nc@d;,\ne@f"),
    ("Johnny B. Goode <j@x>", "Johnny B.Goode <j@x>"),      # stock's known phrase quirk
    ('"a b"@x', '"a b"@x'),
    ("a@[1.2.3.4]", "a@[1.2.3.4]"),
    ("x <@r:a@b>", "x <@r:a@b>"),
    ("a@b,,c@d", "a@b,\n,\nc@d"),
    ('"quo\\"ted" <q@x>', '"quo\\"ted" <q@x>'),
    ("a@b (nested (comment))", "a@b (nested (comment))"),
])
def test_externalize_head_form(text, expected):
    assert tok822_externalize(tok822_parse(text), STR_HEAD) == expected


def test_parse_finds_addresses_in_groups_and_routes():
    tree = tok822_parse('team: "b c"@x, d@y;, Name <e@z> (c)')
    addrs = [tok822_internalize(t.head, STR_DEFL) for t in tok822_grep(tree, ADDR)]
    assert addrs == ["b c@x", "d@y", "e@z"]
    assert tok822_parse("") is None
    assert tok822_parse("  \t ") is None


def test_atoms_with_specials_become_quoted_strings():
    tree = tok822_parse("<a\\ b@x>")
    addr = tok822_grep(tree, ADDR)[0]
    assert addr.head.type == QSTRING


def test_fold_greedy_under_70_bytes():
    text = ("Cc: " + ",\n".join("user%02d@public.example" % i for i in range(6))).encode()
    lines = fold_address_header(text)
    assert all(len(x) < 70 for x in lines)
    assert lines[0].startswith(b"Cc: user00@public.example, user01@public.example,")
    assert all(x.startswith(b"\t") for x in lines[1:])
    assert b" ".join(x.strip() for x in lines) == text.replace(b"\n", b" ")


def test_fold_keeps_lines_that_start_with_white_space():
    assert fold_address_header(b"To: a@b (x\n  y)") == [b"To: a@b (x   y)"]
    long = b"To: " + b"x" * 70 + b" (c\n  d)"
    assert fold_address_header(long) == [b"To: " + b"x" * 70 + b" (c", b"  d)"]


def test_map_full_extension_domain_and_local(tmp_path):
    g, log = mapper(tmp_path)
    assert g.map_internal("alice@example.com") == (True, "alice@public.org")
    assert g.map_internal("alice+ext@example.com") == (True, "alice+ext@public.org")
    assert g.map_internal("joe+x@internal.lan") == (True, "joe+x@public.org")
    assert g.map_internal("joe@internal.lan") == (True, "joe@public.org")
    assert g.map_internal("local@example.com") == (True, "carol@example.com")   # @myorigin
    assert g.map_internal("nobody@else.org") == (False, "nobody@else.org")
    assert g.map_internal("a b@internal.lan") == (True, "a b@public.org")       # internal form
    assert log.texts() == []


def test_no_propagation_unless_generic_listed(tmp_path):
    g, _ = mapper(tmp_path, propagate=False)
    assert g.map_internal("alice+ext@example.com") == (True, "alice@public.org")
    # @domain keeps the local part, without the unmatched extension
    assert g.map_internal("joe+x@internal.lan") == (True, "joe+x@public.org")
    assert ext_prop_generic("canonical, virtual, generic")
    assert not ext_prop_generic("canonical, virtual")


def test_multi_valued_and_non_address_results(tmp_path):
    g, log = mapper(tmp_path)
    assert g.map_internal("multi@example.com") == (True, "a@x.org")
    assert log.texts() == ["multi-valued smtp_generic_maps result for multi@example.com"]
    # "<>" crunches to the null address, like stock
    assert g.map_internal("noaddr@example.com") == (True, "")


def test_lookup_error_is_generic_map_error(tmp_path):
    g, _ = mapper(tmp_path, spec="fail:gm")
    with pytest.raises(GenericMapError) as exc:
        g.map_internal("alice@example.com")
    assert str(exc.value) == "smtp_generic_maps map lookup problem for alice@example.com"
    assert g.map_envelope("") == ""            # the null sender is never looked up


def test_rewrite_header_rebuilds_only_when_something_matched(tmp_path):
    g, _ = mapper(tmp_path)
    h = b"To: nobody@else.org,\n\t  other@else.org (odd   spacing)"
    assert g.rewrite_header(h, 2) is None
    h = b'From: "Alice A." <alice@example.com>'
    assert g.rewrite_header(h, 4) == [b'From: "Alice A." <alice@public.org>']
    h = b"TO: Bob <bob@example.com>, x@internal.lan (X),\n other@else.org"
    assert g.rewrite_header(h, 2) == [
        b"TO: Bob <Bob.Smith@public.org>, x@public.org (X), other@else.org"]
    h = b'Cc: team: "a b"@internal.lan, c@else.org;'
    assert g.rewrite_header(h, 2) == [b'Cc: team: "a b"@public.org, c@else.org;']


def test_rewrite_header_long_list_refolded(tmp_path):
    g, _ = mapper(tmp_path)
    h = ("Cc: " + ", ".join("user%02d@internal.lan" % i for i in range(10))).encode()
    lines = g.rewrite_header(h, 2)
    assert len(lines) > 2 and all(len(x) < 70 for x in lines)
    assert b" ".join(x.strip() for x in lines) == h.replace(b"internal.lan", b"public.org")


def test_too_much_non_address_text_is_stripped(tmp_path):
    g, log = mapper(tmp_path)
    h = ("To: (%s) alice@example.com" % ("c" * 300)).encode()
    assert g.rewrite_header(h, 2) == [b"To: <alice@public.org>"]
    assert log.texts()[0].startswith("stripping too many comments from address: ")


@pytest.mark.parametrize("result,expected", [
    ("carol", "carol@example.com"),
    ("host!user", "user@host"),
    ("user%dom.org", "user@dom.org"),
    ("@dom.org", "x@dom.org"),            # "@domain" keeps the local part
    ('"a b"', "a b@example.com"),
    ("user@dom.org", "user@dom.org"),
    ("@", "x@"),
])
def test_result_canonicalised_like_trivial_rewrite(tmp_path, result, expected):
    g, _ = mapper(tmp_path, table="x@example.com %s\n" % result)
    assert g.map_internal("x@example.com") == (True, expected)


def test_append_dot_mydomain(tmp_path):
    path = tmp_path / "generic"
    path.write_text("x@example.com user@host\ny@example.com user@[1.2.3.4]\n")
    params = Params(PARAMS, append_dot_mydomain="yes", mydomain="my.dom")
    maps = open_maps("texthash:%s" % path, params, title="smtp_generic_maps")
    g = GenericMapper(maps, params=params)
    assert g.map_internal("x@example.com") == (True, "user@host.my.dom")
    assert g.map_internal("y@example.com") == (True, "user@[1.2.3.4]")
