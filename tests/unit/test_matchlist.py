"""Host name / address match lists (debug_peer_list): postfix_smtp.maps.matchlist."""

from __future__ import annotations

import pytest

from postfix_smtp.config.params import Params
from postfix_smtp.maps import RecordingLog
from postfix_smtp.maps.matchlist import (MatchListError, addr_list, host_list, namadr_list,
                                         parent_style, string_list)


def nl(spec, parent=True, log=None, **kw):
    return namadr_list("debug_peer_list", spec, log=log or RecordingLog(), parent=parent,
                       utf8=True, **kw)


class VerboseLog(RecordingLog):
    verbose = 1


# --- names ----------------------------------------------------------------------

def test_exact_name_case_insensitive():
    m = nl("Mail.Example.COM")
    assert m.match("mail.example.com", "192.0.2.1")
    assert m.match("MAIL.example.com", "noaddr")
    assert not m.match("other.example.com", "192.0.2.1")


def test_parent_style_matches_subdomains():
    m = nl("example.com", parent=True)
    assert m.match("example.com", "noaddr")
    assert m.match("a.b.example.com", "noaddr")
    assert not m.match("badexample.com", "noaddr")


def test_without_parent_style_only_dot_patterns_match_subdomains():
    plain = nl("example.com", parent=False)
    assert plain.match("example.com", "noaddr")
    assert not plain.match("a.example.com", "noaddr")
    dot = nl(".example.com", parent=False)
    assert dot.match("a.example.com", "noaddr")
    assert not dot.match("example.com", "noaddr")


def test_dot_pattern_with_parent_style_is_literal():
    # stock: with parent-style matching, ".example.com" is compared as a
    # parent domain of the name ("x..example.com"), which real names never are
    m = nl(".example.com", parent=True)
    assert not m.match("a.example.com", "noaddr")


def test_nexthop_with_brackets_and_port_matches_itself_only():
    m = nl("[127.0.0.1]:2525")
    assert m.match("[127.0.0.1]:2525", "noaddr")
    assert not m.match("[127.0.0.1]", "noaddr")


# --- addresses ------------------------------------------------------------------

def test_address_forms():
    m = nl("192.0.2.7, [192.0.2.8], 198.51.100.0/24, [2001:db8::]/32, [::1]")
    assert m.match("h", "192.0.2.7")
    assert m.match("h", "192.0.2.8")
    assert m.match("h", "198.51.100.200")
    assert m.match("h", "2001:db8:0:0::5")
    assert m.match("h", "0:0:0:0:0:0:0:1")
    assert not m.match("h", "192.0.2.9")
    assert not m.match("h", "2001:db9::1")


def test_noaddr_never_matches_a_network():
    m = nl("0.0.0.0/0")
    assert not m.match("example.com", "noaddr")
    assert m.match("example.com", "10.1.2.3")


def test_names_in_the_list_do_not_upset_address_matching():
    log = RecordingLog()
    m = nl("example.com, 10.0.0.0/8", log=log)
    assert m.match("x.invalid", "10.9.9.9")
    assert log.texts() == []


def test_bad_network_pattern_warns_and_stops():
    log = RecordingLog()
    m = nl("10.0.0.1/8, 10.0.0.0/8", log=log)
    assert not m.match("h", "10.1.1.1")
    assert m.error
    warnings = log.texts("warning")
    assert len(warnings) == 1
    assert warnings[0].startswith("debug_peer_list: non-null host address bits in")


def test_address_matched_against_name_only_list():
    assert host_list("x", "example.com", log=RecordingLog()).match("example.com")
    assert addr_list("x", "192.0.2.0/24", log=RecordingLog()).match("192.0.2.1")


# --- negation, files, tables ------------------------------------------------------

def test_negation_first_hit_decides():
    m = nl("!127.0.0.2, 127.0.0.0/8")
    assert m.match("localhost", "127.0.0.1")
    assert not m.match("localhost", "127.0.0.2")
    assert nl("!!127.0.0.2").match("h", "127.0.0.2")


def test_lone_bang_is_fatal():
    with pytest.raises(MatchListError, match="no pattern after '!'"):
        nl("a.example, !")


def test_comment_at_end_warns_and_ends_the_list():
    log = RecordingLog()
    m = nl("a.example # b.example", log=log)
    assert m.match("a.example", "noaddr")
    assert not m.match("b.example", "noaddr")
    assert log.texts("warning") == [
        "debug_peer_list: comment at end of line is not supported: # b.example"]


def test_file_items_and_negation(tmp_path):
    f = tmp_path / "peers"
    f.write_text("# comment\n!bad.example.com\nexample.com 192.0.2.0/24\n")
    m = nl(str(f))
    assert m.match("good.example.com", "noaddr")
    assert not m.match("bad.example.com", "noaddr")
    assert m.match("h", "192.0.2.77")
    neg = nl("!%s, 0.0.0.0/0" % f)
    assert not neg.match("x.example.com", "198.51.100.1")     # !example.com from the file
    assert neg.match("bad.example.com", "198.51.100.1")        # !!bad.example.com


def test_missing_file_fails_every_lookup(tmp_path):
    log = RecordingLog()
    path = str(tmp_path / "missing")
    m = nl("%s, 0.0.0.0/0" % path, log=log)
    assert not m.match("h", "192.0.2.1")
    assert m.error
    w = log.texts("warning")
    assert w[0].startswith("nofile:%s is unavailable. open file %s:" % (path, path))
    assert w[1] == "debug_peer_list: nofile:%s: table lookup problem" % path


def test_fixed_table_parent_lookups():
    parent = nl("inline:{example.com=x}", parent=True)
    assert parent.match("a.b.example.com", "noaddr")
    dot = nl("inline:{.example.com=x}", parent=False)
    assert dot.match("a.example.com", "noaddr")
    assert not nl("inline:{example.com=x}", parent=False).match("a.example.com", "noaddr")


def test_table_looked_up_by_address():
    m = nl("inline:{192.0.2.5=x}")
    assert m.match("unknown", "192.0.2.5")
    assert not m.match("192.0.2.5.example", "noaddr")


def test_pattern_table_gets_only_the_full_name(tmp_path):
    f = tmp_path / "re"
    f.write_text("/^mail\\./ yes\n")
    m = nl("regexp:%s" % f)
    assert m.match("mail.example.com", "noaddr")
    assert not m.match("x.mail.example.com", "noaddr")


def test_table_lookup_failure_warns_and_answers_no():
    log = RecordingLog()
    m = nl("fail:broken, 0.0.0.0/0", log=log)
    assert not m.match("h", "192.0.2.1")
    assert m.error
    assert log.texts("warning") == ["debug_peer_list: fail:broken: table lookup problem"]


def test_verbose_logging_of_comparisons():
    log = VerboseLog()
    m = nl("192.0.2.1", log=log)
    assert not m.match("h.example", "192.0.2.2")
    assert log.texts("info") == [
        "match_hostname: debug_peer_list: h.example ~? 192.0.2.1",
        "match_hostaddr: debug_peer_list: 192.0.2.2 ~? 192.0.2.1",
        "match_list_match: h.example: no match",
        "match_list_match: 192.0.2.2: no match",
    ]


# --- parent_domain_matches_subdomains and string lists ---------------------------

def test_parent_style_from_params():
    p = Params({})
    assert parent_style("debug_peer_list", p)            # in the 3.7 default
    assert not parent_style("smtp_tls_policy_maps", p)
    p2 = Params({"parent_domain_matches_subdomains": "relay_domains"})
    assert not parent_style("debug_peer_list", p2)
    assert not namadr_list("debug_peer_list", "example.com", p2).match("a.example.com", "x")
    assert namadr_list("debug_peer_list", "example.com", Params({})).match("a.example.com", "x")


def test_string_list():
    s = string_list("x", "Foo, !bar, inline:{baz=1}", log=RecordingLog())
    assert s.match("foo")
    assert not s.match("bar")
    assert s.match("BAZ")
    assert not s.match("qux")
