"""Unit tests for postfix_smtp.maps: parsers, search orders, key handling (no Postfix)."""

from __future__ import annotations

import os

import pytest

from postfix_smtp.maps import (DEFAULT_FLAGS, DICT_FLAG_FOLD_FIX, DICT_FLAG_LOCK,
                               DICT_FLAG_UTF8_REQUEST, MapError, Maps, OpenContext,
                               RecordingLog, open_maps)
from postfix_smtp.maps import address as A
from postfix_smtp.maps import text as T
from postfix_smtp.maps.base import casefold, valid_utf8, ascii_lower
from postfix_smtp.maps.bdb import CHARKEY, ham_func5
from postfix_smtp.maps.filedb import cdb_hash
from postfix_smtp.maps.pcre_re import compile_pcre, translate_pcre
from postfix_smtp.maps.posix_re import RegexError, compile_posix, translate


# -- text helpers ------------------------------------------------------------------

def test_readllines_comments_continuations_and_orphans():
    text = ("# c\n\nfirst a\n  b\n# inside\n\tc\n  \nsecond x\n"
            "  orphan-after-blank-is-continuation\n")
    got = list(T.readllines(text))
    assert got[0] == (3, "first a  b\tc", None)
    assert got[1] == (8, "second x  orphan-after-blank-is-continuation", None)
    lead = list(T.readllines("  leading\n   more\nnext 1\n"))
    assert lead[0][1] == "" and "must not start with whitespace" in lead[0][2]
    assert lead[1] == (3, "next 1", None)


def test_mystrtokq_extpar_balpar():
    assert T.mystrtokq("a, {b c}, d{e f} ,g") == ["a", "{b c}", "d{e f}", "g"]
    assert T.mystrtokq("  ") == []
    assert T.extpar("{ x y }") == ("x y", None)
    assert T.extpar("{x}y")[1] == "syntax error after '}' in \"{x}y\""
    assert T.extpar("{x")[1] == "missing '}' in \"{x\""
    assert T.balpar("{a{b}c}d") == 7
    assert T.balpar("{a") == 0


def test_split_qnameval_and_thash_line():
    assert T.split_qnameval(" key = value  ") == ("key", "value", None)
    assert T.split_qnameval('"a b" = c') == ('"a b"', "c", None)
    assert T.split_qnameval("a b = c")[2] == "missing '=' after attribute name"
    assert T.split_qnameval('"a = b')[2] == "unbalanced '\"'"
    assert T.split_thash_line('"a b"@x   value here  ') == ('"a b"@x', "value here", None)
    assert T.split_thash_line("a\\ b c") == ("a\\ b", "c", None)
    assert T.split_thash_line("onlykey") == ("onlykey", "", None)
    assert T.split_thash_line('"open')[2].startswith("unbalanced")


def test_mac_parse():
    assert T.mac_parse("a${1}b$2-$(3)$$d") == ([
        (T.LITERAL, "a"), (T.VARNAME, "1"), (T.LITERAL, "b"), (T.VARNAME, "2"),
        (T.LITERAL, "-"), (T.VARNAME, "3"), (T.LITERAL, "$d")], None)
    assert T.mac_parse("x$")[1] == 'empty macro name: "x$"'
    assert T.mac_parse("${1")[1] == 'truncated macro reference: "${1"'
    assert T.mac_parse("$name_x")[0] == [(T.VARNAME, "name_x")]
    assert T.mac_parse("$1b")[0] == [(T.VARNAME, "1b")]      # so "$1b" is not "$1" + "b"


def test_hex_quote_and_netstrings():
    assert T.hex_quote(b"a b%\xff\n~") == b"a%20b%25%FF%0A~"
    assert T.hex_unquote(b"a%20b%2") is None
    assert T.hex_unquote(b"a%20b%7e") == b"a b~"
    assert T.netstring(b"abc") == b"3:abc,"
    assert T.parse_netstring(b"3:abc,rest", 100) == (b"abc", 6)
    assert T.parse_netstring(b"3:ab", 100) == (None, 0)
    with pytest.raises(T.NetstringError):
        T.parse_netstring(b"3:abcX", 100)
    with pytest.raises(T.NetstringError):
        T.parse_netstring(b"999:", 100)


# -- key handling ----------------------------------------------------------------------

def test_folding_helpers():
    assert ascii_lower("ÄbC") == "Äbc"
    assert casefold("ÄbC") == "äbc"
    assert casefold("Straße") == "strasse"
    assert valid_utf8("ok é") and not valid_utf8(b"\xff".decode("utf-8", "surrogateescape"))


def test_hash_functions():
    assert ham_func5(CHARKEY) == 1583910353       # h_charkey of every DB 5.3 hash file
    assert cdb_hash(b"") == 5381


def _ctx(utf8=True):
    return OpenContext(None, RecordingLog(), utf8=utf8)


def test_inline_table_folding_and_utf8_layer():
    ctx = _ctx()
    t = ctx.open_table("inline:{Foo=bar, ÄÖ=umlaut, \"Q\"=q}", DEFAULT_FLAGS)
    assert t.lookup("FOO") == "bar"
    assert t.lookup("äö") == "umlaut"
    assert t.lookup("foo\0ignored") == "bar"            # a C string ends at NUL
    bad = b"f\xffo".decode("utf-8", "surrogateescape")
    assert t.lookup(bad) is None
    assert any("non-UTF-8 key" in m for m in ctx.log.texts("warning"))
    legacy = _ctx(utf8=False).open_table("inline:{ÄÖ=umlaut, Foo=bar}", DEFAULT_FLAGS)
    assert legacy.lookup("äö") is None                 # ASCII-only folding
    assert legacy.lookup("ÄÖ") == "umlaut" and legacy.lookup("FOO") == "bar"
    exact = _ctx().open_table("inline:{Foo=bar}", DICT_FLAG_LOCK | DICT_FLAG_UTF8_REQUEST)
    assert exact.lookup("foo") is None and exact.lookup("Foo") == "bar"


def test_static_fail_and_surrogates():
    ctx = _ctx()
    assert ctx.open_table("static:{ a b }", DEFAULT_FLAGS).lookup("x") == "a b"
    with pytest.raises(MapError):
        ctx.open_table("fail:x", DEFAULT_FLAGS).lookup("k")
    for spec, reason in (("nosuchtype:x", "unsupported dictionary type: nosuchtype"),
                         ("noname", 'expecting "type:name" form'),
                         ("inline:{}", "need \"inline:{name=value...}\""),
                         ("unionmap:{nocolon}", "need \"unionmap:{type:name...}\"")):
        log = RecordingLog()
        t = OpenContext(None, log).open_table(spec, DEFAULT_FLAGS)
        assert any(reason in m for m in log.texts("error")), (spec, log.records)
        with pytest.raises(MapError) as exc:
            t.lookup("k")
        assert "is unavailable" in str(exc.value)


def test_texthash_duplicates(tmp_path):
    p = tmp_path / "t"
    p.write_bytes(b"a 1\nA 2\nb 3\n")
    log = RecordingLog()
    t = OpenContext(None, log).open_table("texthash:%s" % p, DEFAULT_FLAGS)
    # smtp(8) opens without DUP_* flags: a duplicate makes the table unusable
    with pytest.raises(MapError):
        t.lookup("b")
    assert any('duplicate entry: "A"' in m for m in log.texts("error"))
    from postfix_smtp.maps import DICT_FLAG_DUP_WARN
    t2 = OpenContext(None, RecordingLog()).open_table("texthash:%s" % p,
                                                      DEFAULT_FLAGS | DICT_FLAG_DUP_WARN)
    assert t2.lookup("a") == "1"


# -- maps_find ------------------------------------------------------------------------------

def _maps(spec, params=None, title="smtp_test_maps", log=None):
    return open_maps(spec, params, DEFAULT_FLAGS, title=title, log=log or RecordingLog())


def test_maps_first_match_partial_and_empty_result():
    m = _maps("inline:{a=first}, regexp:{{/^(.*)$/ re-$1}}, inline:{a=third, b=b3}")
    assert m.lookup("a") == "first"
    assert m.lookup("b") == "re-b"
    assert m.lookup("b", partial=True) == "b3"          # pattern tables skip partial keys
    assert m.lookup("") is None
    log = RecordingLog()
    e = _maps("inline:{a=x}, static:{}", log=log)
    with pytest.raises(MapError):
        e.lookup("zzz")
    assert "returns an empty string result" in log.texts("warning")[0]


def test_maps_error_stops_search():
    log = RecordingLog()
    m = _maps("fail:down, static:never", log=log)
    with pytest.raises(MapError) as exc:
        m.lookup("key")
    assert exc.value.table == "fail:down"
    assert 'fail:down lookup error for "key"' in log.texts("warning")


def test_lookup_domain_styles():
    m = _maps("inline:{example.com=bare, .example.com=dot, .sub.example.com=subdot, "
              "[a.example.com]:25=explicit}, regexp:{{/^foo\\./ re}}")
    assert m.lookup_domain("a.b.example.com", "bare") == "bare"
    assert m.lookup_domain("a.b.example.com", "dot") == "dot"
    assert m.lookup_domain("x.sub.example.com", "dot") == "subdot"
    assert m.lookup_domain("x.sub.example.com", "none") is None
    assert m.lookup_domain("x.sub.example.com", "tls_policy") == "subdot"
    assert m.lookup_domain("[a.example.com]:25", "tls_policy") == "explicit"
    assert m.lookup_domain("[b.example.com]:25", "tls_policy") is None
    # parent keys go to fixed tables only, except for the TLS policy search
    r = _maps("regexp:{{/^\\.example\\.com$/ pattern-parent}}")
    assert r.lookup_domain("x.example.com", "dot") is None
    assert r.lookup_domain("x.example.com", "tls_policy") == "pattern-parent"


def test_lookup_domain_auto_uses_parent_domain_matches_subdomains():
    class P:
        def __init__(self, values):
            self.values = values

        def get(self, name):
            return self.values.get(name, "")

        def expand(self, text):
            return text

    m = open_maps("inline:{example.com=bare, .example.com=dot}",
                  P({"parent_domain_matches_subdomains": "relay_domains, smtp_x_maps"}),
                  title="smtp_x_maps")
    assert m.lookup_domain("a.example.com") == "bare"
    m2 = open_maps("inline:{example.com=bare, .example.com=dot}",
                   P({"parent_domain_matches_subdomains": "relay_domains"}), title="smtp_x_maps")
    assert m2.lookup_domain("a.example.com") == "dot"


# -- mail_addr_find ---------------------------------------------------------------------------

def _finder(table):
    calls = []

    def find(key, partial):
        calls.append((key, partial))
        return table.get(key)
    return find, calls


OPTS = A.AddressOptions(recipient_delimiter="+", myorigin="origin.example")


def test_mail_addr_find_order():
    find, calls = _finder({})
    assert A.mail_addr_find(find, "user+ext@origin.example", OPTS) == (None, None)
    assert calls == [("user+ext@origin.example", False), ("user@origin.example", True),
                     ("user+ext", True), ("user", True), ("@origin.example", True)]
    find, calls = _finder({})
    A.mail_addr_find(find, "user+ext@remote.example", OPTS)
    assert [k for k, _ in calls] == ["user+ext@remote.example", "user@remote.example",
                                     "@remote.example"]


def test_mail_addr_find_extension_and_quoting():
    find, calls = _finder({"user@d.example": "hit"})
    assert A.mail_addr_find(find, "user+ext@d.example", OPTS) == ("hit", "+ext")
    find, calls = _finder({})
    A.mail_addr_find(find, "a b@d.example", OPTS)
    assert calls[:2] == [('"a b"@d.example', False), ("a b@d.example", False)]
    dash = A.AddressOptions(recipient_delimiter="-")
    find, calls = _finder({})
    A.mail_addr_find(find, "MAILER-DAEMON@d.example", dash)    # never split
    assert [k for k, _ in calls] == ["MAILER-DAEMON@d.example", "@d.example"]
    find, calls = _finder({})
    A.mail_addr_find(find, "owner-list@d.example", dash)
    assert [k for k, _ in calls] == ["owner-list@d.example", "@d.example"]


def test_mail_addr_find_local_and_domain_strategies():
    find, calls = _finder({"user": "local-hit"})
    assert A.mail_addr_find(find, "user@mine.example", OPTS,
                            is_local=lambda d: d == "mine.example")[0] == "local-hit"
    find, calls = _finder({})
    A.mail_addr_find(find, "u@a.b.example", OPTS,
                     strategy=A.MA_FIND_DOMAIN | A.MA_FIND_PDMS)
    assert [k for k, _ in calls] == ["a.b.example", "b.example", "example"]
    find, calls = _finder({})
    A.mail_addr_find(find, "u@a.b.example", OPTS,
                     strategy=A.MA_FIND_DOMAIN | A.MA_FIND_PDDMDS)
    assert [k for k, _ in calls] == ["a.b.example", ".b.example", ".example"]


def test_quote_unquote_822_local():
    assert A.quote_822_local("a b@x") == '"a b"@x'
    assert A.quote_822_local('a"b@x') == '"a\\"b"@x'
    assert A.quote_822_local("ok.local@x") == "ok.local@x"
    assert A.quote_822_local("a..b@x") == '"a..b"@x'
    assert A.quote_822_local("user@", bare_localpart=False) == "user@"
    assert A.unquote_822_local('"a b"@x') == "a b@x"
    assert A.unquote_822_local('"a\\"b"@x') == 'a"b@x'


def test_maps_lookup_address_uses_all_tables():
    m = _maps("regexp:{{/^full@x$/ re-full}}, inline:{@x=at-domain}")
    assert m.lookup_address("full@x") == "re-full"
    assert m.lookup_address("other+e@x") == "at-domain"


# -- regular expression translation ---------------------------------------------------------

@pytest.mark.parametrize("pattern,extended,subject,hit", [
    ("a+*", True, "aaa", True),
    ("^a{,2}$", True, "aa", True),
    ("[]x]", True, "]", True),
    ("[\\]", True, "\\", True),
    ("a$", True, "a\n", False),
    ("^(a)\\1$", True, "aa", True),
    ("\\(a\\)\\1", False, "aa", True),
    ("a\\{2\\}", False, "aa", True),
    ("a+", False, "a+", True),
    ("*a", False, "*a", True),
    ("x\\|y", False, "y", True),
    ("\\<is\\>", True, "this is", True),
    ("\\<is\\>", True, "this", False),
    ("[[:digit:]]+", True, "x12", True),
])
def test_posix_translation(pattern, extended, subject, hit):
    rx, _ = compile_posix(pattern, extended=extended, icase=False)
    assert (rx.search(subject.encode()) is not None) == hit


def test_posix_errors_and_icase_quirk():
    for bad in ("(", "*a", "a{x}", "[[:nope:]]", "[z-a]", "\\2(a)"):
        with pytest.raises(RegexError):
            compile_posix(bad)
    rx, _ = compile_posix("a\\qb", icase=True)
    assert rx.search(b"aqb") is None                   # glibc REG_ICASE quirk
    rx, _ = compile_posix("a\\qb", icase=False)
    assert rx.search(b"aqb") is not None
    assert translate(b"(a)(b)")[1] == 2


def test_pcre_translation():
    assert translate_pcre(b"a(?i)b|c") == b"a(?i:b)|(?i:c)"
    assert translate_pcre(b"(?i)ab") == b"(?i)ab"
    assert translate_pcre(b"\\Qa.b\\E") == b"a\\x2eb"
    assert compile_pcre("^x{,3}$").search(b"x{,3}") is not None     # a literal in 10.42
    assert translate_pcre(b"a*?b+", ungreedy=True) == b"a*b+?"
    rx = compile_pcre("^(?<u>[a-z]+)\\+(?<e>.*)@")
    m = rx.search(b"joe+ext@x")
    assert m.group(1) == b"joe" and m.group(2) == b"ext"
    assert compile_pcre("line$", dollar_endonly=True).search(b"line\n") is None
    assert compile_pcre("line$").search(b"line\n") is not None
    assert compile_pcre("[[:^digit:]]").search(b"1") is None
    for bad in ("(?R)", "(*UTF)a", "\\X", "(?|a)", "\\p{Greek}"):
        with pytest.raises(RegexError):
            compile_pcre(bad)


def test_pattern_table_rules():
    log = RecordingLog()
    ctx = OpenContext(None, log)
    t = ctx.open_table("regexp:{{/^(a)(b)?$/ x=$1,[$2]}, {!/@/ no-at}, {/x/q bad}, "
                       "{/(y)/ $2}, {!/(z)/ $1}, {if /^in/}, {/^in-(.)/ in=$1}, {endif}, "
                       "{/^in/ after}}", DEFAULT_FLAGS)
    assert t.lookup("a") == "x=a,[]"
    assert t.lookup("ab") == "x=a,[b]"
    assert t.lookup("in-q@") == "in=q"
    assert t.lookup("inx@") == "after"
    texts = " ".join(log.texts("warning"))
    assert 'unknown regexp option "q"' in texts
    assert 'out of range replacement index "2"' in texts
    assert "$number found in negative match" in texts


def test_cidr_parse_errors():
    from postfix_smtp.maps.cidr import CidrRuleError, parse_cidr
    with pytest.raises(CidrRuleError, match="non-null host address bits"):
        parse_cidr("10.0.0.1/8")
    with pytest.raises(CidrRuleError, match="bad mask length"):
        parse_cidr("10.0.0.0/33")
    fam, net, mask, bits = parse_cidr("[2001:db8::]/32")
    assert bits == 32 and mask[:4] == b"\xff" * 4


def test_registry_modules_import_lazily():
    import subprocess
    import sys
    code = ("import sys, postfix_smtp.maps as m; "
            "m.open_maps('inline:{a=b}').lookup('a'); "
            "print(sorted(k for k in sys.modules if k.startswith('postfix_smtp.maps.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    loaded = out.stdout.strip()
    for heavy in ("bdb", "pattern", "posix_re", "pcre_re", "proxy", "net", "filedb"):
        assert "postfix_smtp.maps.%s'" % heavy not in loaded, loaded


def test_maps_changed_and_close(tmp_path):
    m = Maps("t", [], OpenContext(None))
    assert not m.changed() and m.changed_name() is None
    m.close()
