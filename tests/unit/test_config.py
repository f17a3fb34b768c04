"""Unit tests for postfix_smtp.config.params (main.cf reading and $name expansion)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest

from postfix_smtp.config.defaults import DEFAULTS, RAW_PARAMS
from postfix_smtp.config.params import ConfigError, Params, expand


def make(tmp_path, text, **kw):
    (tmp_path / "main.cf").write_text(text)
    return Params.load(str(tmp_path), **kw)


# ---------------------------------------------------------------------------
# main.cf parsing


def test_basic_parsing(tmp_path):
    p = make(tmp_path, "# comment\n\nfoo = bar\n  # indented comment\nbaz=qux\nempty =\n")
    assert p.raw("foo") == "bar"
    assert p.raw("baz") == "qux"
    assert p.raw("empty") == ""
    assert p.get("empty") == ""


def test_value_trimmed_and_inner_text_kept(tmp_path):
    p = make(tmp_path, "foo   =    a  b # not a comment   \t\n")
    assert p.raw("foo") == "a  b # not a comment"


def test_crlf_line_endings(tmp_path):
    p = make(tmp_path, "foo = bar\r\nbaz = 1\r\n")
    assert p.raw("foo") == "bar"
    assert p.get_int("baz") == 1


def test_last_assignment_wins(tmp_path):
    p = make(tmp_path, "foo = one\nfoo = two\n")
    assert p.get("foo") == "two"


def test_continuation_lines(tmp_path):
    p = make(tmp_path, "foo = a,\n    b,\n\tc\nbar = x\n")
    assert p.raw("foo") == "a,    b,\tc"
    assert p.get_list("foo") == ["a", "b", "c"]
    assert p.raw("bar") == "x"


def test_blank_and_comment_lines_do_not_end_a_logical_line(tmp_path):
    # readllines(): comment and blank lines are dropped, and a following
    # indented line still continues the previous logical line.
    p = make(tmp_path, "foo = a\n\n   b\n# comment\n  c\nbar = d\n")
    assert p.raw("foo") == "a   b  c"
    assert p.raw("bar") == "d"


def test_leading_continuation_without_text_is_skipped(tmp_path):
    p = make(tmp_path, "   stray = 1\n  more\nfoo = bar\n")
    assert p.raw("stray") is None
    assert p.raw("foo") == "bar"


def test_name_without_equals_is_error(tmp_path):
    with pytest.raises(ConfigError, match="missing '='"):
        make(tmp_path, "foo = 1\nbogus line\n")


def test_missing_name_is_error(tmp_path):
    with pytest.raises(ConfigError, match="missing attribute name"):
        make(tmp_path, "= value\n")


def test_missing_main_cf(tmp_path):
    with pytest.raises(ConfigError, match="main.cf"):
        Params.load(str(tmp_path / "nonexistent"))


def test_mail_config_environment(tmp_path, monkeypatch):
    (tmp_path / "main.cf").write_text("foo = from_env\n")
    monkeypatch.setenv("MAIL_CONFIG", str(tmp_path))
    p = Params.load()
    assert p.get("foo") == "from_env"
    assert p.get("config_directory") == str(tmp_path)


# ---------------------------------------------------------------------------
# Precedence and pseudo parameters


def test_override_precedence(tmp_path):
    p = make(tmp_path, "foo = main\nbar = main\n",
             overrides=[("foo", "o1"), ("foo", "o2"), ("new", "n")])
    assert p.get("foo") == "o2"
    assert p.get("bar") == "main"
    assert p.get("new") == "n"
    assert p.raw("smtp_helo_timeout") == DEFAULTS["smtp_helo_timeout"]


def test_defaults_and_unknown(tmp_path):
    p = make(tmp_path, "")
    assert p.raw("smtp_tcp_port") == "smtp"
    assert p.raw("no_such_parameter") is None
    assert p.get("no_such_parameter") == ""


def test_pseudo_parameters(tmp_path):
    p = make(tmp_path, "service_name = x\nprocess_id = 1\n",
             overrides=[("service_name", "y")], process_name="lmtp",
             service_name="relay")
    assert p.get("service_name") == "relay"          # cannot be overridden
    assert p.get("process_id") == str(os.getpid())  # cannot be overridden
    assert p.get("process_name") == "lmtp"
    assert p.get("config_directory") == str(tmp_path)


def test_process_name_and_config_directory_are_overridable(tmp_path):
    p = make(tmp_path, "config_directory = /elsewhere\n",
             overrides=[("process_name", "custom")])
    assert p.get("process_name") == "custom"
    assert p.get("config_directory") == "/elsewhere"


def test_host_defaults(tmp_path):
    p = make(tmp_path, "")
    host = socket.gethostname()
    expected = host if "." in host else host + ".localdomain"
    assert p.get("myhostname") == expected
    assert p.get("mydomain") == expected.split(".", 1)[1]
    assert p.get("smtp_helo_name") == expected


def test_host_defaults_follow_main_cf(tmp_path):
    p = make(tmp_path, "myhostname = mx1.example.org\n")
    assert p.get("mydomain") == "example.org"
    assert p.get("mydestination") == "mx1.example.org, localhost.example.org, localhost"
    p = make(tmp_path, "myhostname = single\n")
    assert p.get("mydomain") == "localdomain"


def test_unqualified_host_gets_mydomain(tmp_path, monkeypatch):
    monkeypatch.setattr(socket, "gethostname", lambda: "box")
    p = make(tmp_path, "mydomain = example.net\n")
    assert p.get("myhostname") == "box.example.net"
    p = make(tmp_path, "")
    assert p.get("myhostname") == "box.localdomain"
    assert p.get("mydomain") == "localdomain"


# ---------------------------------------------------------------------------
# Expansion


EXPANSIONS = [
    # text, expected   (with a = "A", e = "", n undefined, r = "$a$a")
    ("$a", "A"),
    ("${a}", "A"),
    ("$(a)", "A"),
    ("x$a.y", "xA.y"),
    ("$a_b", ""),                   # name is a_b
    ("${a}_b", "A_b"),
    ("$n", ""),
    ("$e", ""),
    ("$r", "AA"),                   # recursive
    ("$$a", "$a"),                  # $$ is a literal $
    ("$$$a", "$A"),
    ("${ a }", "A"),
    ("${a?yes}", "yes"),
    ("${e?yes}", ""),
    ("${n?yes}", ""),
    ("${a?{yes}}", "yes"),
    ("${a? yes }", " yes "),        # plain text keeps its blanks
    ("${a ? {yes} }", "yes"),       # {text} drops surrounding blanks
    ("${a:no}", ""),
    ("${e:no}", "no"),
    ("${n:no}", "no"),
    ("${n:{no}}", "no"),
    ("${a?{t}:{f}}", "t"),
    ("${e?{t}:{f}}", "f"),
    ("${n?{t}:{f}}", "f"),
    ("${n?{t}:f}", "f"),
    ("${a?{$a$a}:{$n}}", "AA"),
    ("${a?a:b}", "a:b"),            # 2.11 compatibility: text after ? is literal
    ("${a??foo:{b}ar}", "?foo:{b}ar"),
    ("${a?{x{y}z}}", "x{y}z"),      # nested braces in payload
    ("${a?$r}", "AA"),
    ("${r?{${a:x}}:{y}}", ""),      # ${a:x} is empty since a is non-empty
    ("$(a?{t}:{f})", "t"),
]


@pytest.mark.parametrize("text,expected", EXPANSIONS)
def test_expansion_forms(text, expected):
    table = {"a": "A", "e": "", "r": "$a$a"}
    assert expand(text, table.get) == expected


RELATIONAL = [
    ("${{1} == {1}}", "true"),
    ("${{1} == {2}}", ""),
    ("${{01} == {1}}", "true"),        # numeric: both all digits
    ("${{10} > {9}}", "true"),
    ("${{10} > {9x}}", ""),            # string compare
    ("${{abc} < {abd}}", "true"),
    ("${{b} <= {b}}", "true"),
    ("${{b} >= {c}}", ""),
    ("${{b} != {c}}", "true"),
    ("${{} == {}}", "true"),
    ("${{$a} == {A} ? {yes} : {no}}", "yes"),
    ("${{$a} != {A} ? {yes} : {no}}", "no"),
    ("${{$a}=={A}?{yes}:{no}}", "yes"),
    ("${{$a} == {A} ? yes}", " yes"),   # plain text keeps its blanks
    ("${{$a} == {B} : {no}}", "no"),
    ("${ {$n} == {} }", "true"),
]


@pytest.mark.parametrize("text,expected", RELATIONAL)
def test_relational(text, expected):
    table = {"a": "A"}
    assert expand(text, table.get) == expected


LEVELS = [
    ("0", "<level", "1", True),
    ("1", "<level", "1", False),
    ("2", "<level", "3.6", True),
    ("3.6", "<level", "3.6", False),
    ("3.6", "<=level", "3.6", True),
    ("3.10", ">level", "3.6", True),    # per component, not decimal
    ("3.6.1", ">level", "3.6", True),
    ("3.6", "==level", "3.6.0", True),
    ("3.7", "!=level", "3.6", True),
    ("3.7", ">=level", "4", False),
    ("10", ">level", "9.9.9", True),
]


@pytest.mark.parametrize("left,op,right,truth", LEVELS)
def test_level_operators(left, op, right, truth):
    text = "${{%s} %s {%s} ? {T} : {F}}" % (left, op, right)
    assert expand(text, {}.get) == ("T" if truth else "F")


@pytest.mark.parametrize("level,expected", [
    ("0", ("yes", "subnet", "md5", "no")),
    ("2", ("no", "host", "md5", "no")),
    ("3.6", ("no", "host", "sha256", "yes")),
    ("3.7", ("no", "host", "sha256", "yes")),
])
def test_compatibility_level_defaults(tmp_path, level, expected):
    p = make(tmp_path, "compatibility_level = %s\n" % level)
    got = (p.get("append_dot_mydomain"), p.get("mynetworks_style"),
           p.get("smtp_tls_fingerprint_digest"), p.get("smtpd_relay_before_recipient_restrictions"))
    assert got == expected


BAD_EXPANSIONS = [
    "$",                         # empty macro name
    "abc$",
    "$ foo",
    "${foo",                     # truncated
    "$(foo",
    "${}",                       # empty name
    "${foo-bar}",                # name syntax
    "${foo bar}",
    "${{a}}",                    # operator expected
    "${{a} =~ {b}}",
    "${{a} === {b}}",
    "${{a} == b}",               # {expression} expected
    "${{a} <lvl {b}}",           # bad operator suffix
    "${{a} ==level {3}}",        # malformed compatibility level
    "${{3.} <level {3}}",
    "${{-1} <level {3}}",
    "${{a} == {b}x}",            # ? or : expected
    "${{a} == {b",
    "${a?{x}y}",                 # : expected
    "${a?{x}:{y}z}",             # unexpected input
    "${n:{x}y}",
    "${a?{x}",
    "${{99999999999999999999} == {1}}",  # numeric overflow
]


@pytest.mark.parametrize("text", BAD_EXPANSIONS)
def test_expansion_errors(text):
    with pytest.raises(ConfigError):
        expand(text, {"a": "A"}.get)


def test_errors_in_untaken_branch_are_ignored():
    # Like Postfix: only the selected ?: operand is parsed.
    assert expand("${a?{ok}:{$}}", {"a": "A"}.get) == "ok"
    assert expand("${n?{$}:{ok}}", {}.get) == "ok"


def test_recursion_loop_is_error(tmp_path):
    p = make(tmp_path, "a = $b\nb = x$a\nself = $self\nrel = ${{$rel} == {x}}\nok = $a_ok\n")
    for name in ("a", "b", "self", "rel"):
        with pytest.raises(ConfigError):
            p.get(name)
    assert p.get("ok") == ""


def test_long_chain_is_fine(tmp_path):
    lines = ["p%d = $p%d" % (i, i + 1) for i in range(60)] + ["p60 = end"]
    p = make(tmp_path, "\n".join(lines) + "\n")
    assert p.get("p0") == "end"


def test_unreasonable_nesting(tmp_path):
    lines = ["p%d = $p%d" % (i, i + 1) for i in range(150)] + ["p150 = end"]
    p = make(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="nesting"):
        p.get("p0")


def test_get_is_cached_and_expands_main_cf(tmp_path):
    p = make(tmp_path, "myhostname = mx.example.com\nsmtp_helo_name = helo.$mydomain\n")
    assert p.get("smtp_helo_name") == "helo.example.com"
    assert p.get("smtp_helo_name") is p.get("smtp_helo_name")


def test_raw_parameters_are_not_expanded(tmp_path):
    assert "forward_path" in RAW_PARAMS
    p = make(tmp_path, "x = [$forward_path]\n")
    assert p.get("forward_path") == DEFAULTS["forward_path"]
    assert "$home" not in p.get("x")


def test_expand_method(tmp_path):
    p = make(tmp_path, "myhostname = h.example\n")
    assert p.expand("$myhostname:$$") == "h.example:$"


# ---------------------------------------------------------------------------
# Typed getters


def test_get_bool(tmp_path):
    p = make(tmp_path, "a = yes\nb = NO\nc = Yes\nd = true\ne = 1\nf =\n")
    assert p.get_bool("a") is True
    assert p.get_bool("b") is False
    assert p.get_bool("c") is True
    for name in ("d", "e", "f"):  # Postfix accepts only yes/no
        with pytest.raises(ConfigError, match="bad boolean"):
            p.get_bool(name)
    assert p.get_bool("smtp_skip_5xx_greeting") is True


def test_get_int(tmp_path):
    p = make(tmp_path, "a = 42\nb = -3\nc = 4x\nd =\ne = 99999999999\n"
                       "message_size_limit = 99999999999\nf = +7\n")
    assert p.get_int("a") == 42
    assert p.get_int("b") == -3
    assert p.get_int("f") == 7
    for name in ("c", "d", "e"):
        with pytest.raises(ConfigError, match="bad numerical"):
            p.get_int(name)
    assert p.get_int("message_size_limit") == 99999999999  # a long parameter
    assert p.get_int("smtp_mx_address_limit") == 5


@pytest.mark.parametrize("value,unit,seconds", [
    ("30s", "s", 30), ("5m", "s", 300), ("1h", "s", 3600), ("1d", "s", 86400),
    ("1w", "s", 604800), ("45", "s", 45), ("2", "m", 120), ("3", "d", 259200),
    ("0", "h", 0), ("10sxyz", "s", 10),   # conv_time() only looks at one unit char
    ("m", "s", 0),                        # strtol() finds no digits: 0 minutes
])
def test_get_time(tmp_path, value, unit, seconds):
    p = make(tmp_path, "t = %s\n" % value)
    assert p.get_time("t", unit) == seconds


@pytest.mark.parametrize("value", ["", "5x", "-1s", "5 s", "1S", "99999999999s", "400000w"])
def test_get_time_errors(tmp_path, value):
    p = make(tmp_path, "t = %s\n" % value)
    with pytest.raises(ConfigError, match="bad time"):
        p.get_time("t")


def test_get_time_unit_from_default(tmp_path):
    p = make(tmp_path, "maximal_queue_lifetime = 3\nsmtp_helo_timeout = 60\n")
    assert p.get_time("maximal_queue_lifetime") == 3 * 86400
    assert p.get_time("smtp_helo_timeout") == 60
    assert p.get_time("smtp_connect_timeout") == 30
    assert p.get_time("maximal_queue_lifetime", "s") == 3


def test_get_list(tmp_path):
    p = make(tmp_path, "a = one, two,,three\tfour\n   five\nb =\nc = ${{x}=={x}?{p,q}}\n")
    assert p.get_list("a") == ["one", "two", "three", "four", "five"]
    assert p.get_list("b") == []
    assert p.get_list("c") == ["p", "q"]


# ---------------------------------------------------------------------------
# smtp/lmtp personality


def test_personality_names(tmp_path):
    (tmp_path / "main.cf").write_text("")
    s = Params.load(str(tmp_path))
    l = Params.load(str(tmp_path), process_name="lmtp", service_name="lmtp", prefix="lmtp")
    assert s.p("smtp_helo_timeout") == "smtp_helo_timeout"
    assert l.p("smtp_helo_timeout") == "lmtp_lhlo_timeout"
    assert l.p("smtp_helo_name") == "lmtp_lhlo_name"
    assert l.p("smtp_discard_ehlo_keywords") == "lmtp_discard_lhlo_keywords"
    assert l.p("smtp_discard_ehlo_keyword_address_maps") == \
        "lmtp_discard_lhlo_keyword_address_maps"
    assert l.p("smtp_tls_security_level") == "lmtp_tls_security_level"
    assert l.p("smtp_always_send_ehlo") == "smtp_always_send_ehlo"   # smtp only
    assert l.p("notify_classes") == "notify_classes"
    assert l.p("smtpd_banner") == "smtpd_banner"
    with pytest.raises(ValueError):
        Params.load(str(tmp_path), prefix="esmtp")


def test_every_smtp_parameter_has_a_twin():
    l = Params({}, prefix="lmtp")
    smtp_only = set()
    for name in DEFAULTS:
        if name.startswith("smtp_"):
            twin = l.p(name)
            if twin == name:
                smtp_only.add(name)
            else:
                assert twin.startswith("lmtp_") and twin in DEFAULTS
    assert smtp_only == {"smtp_always_send_ehlo", "smtp_never_send_ehlo",
                         "smtp_tls_dane_insecure_mx_policy"}


def test_personality_getters(tmp_path):
    text = ("smtp_helo_timeout = 11s\nlmtp_lhlo_timeout = 22s\n"
            "lmtp_tcp_port = 2424\nlmtp_send_xforward_command = yes\n"
            "lmtp_connection_cache_destinations = a b\n")
    (tmp_path / "main.cf").write_text(text)
    s = Params.load(str(tmp_path))
    l = Params.load(str(tmp_path), prefix="lmtp")
    assert s.stime("smtp_helo_timeout") == 11
    assert l.stime("smtp_helo_timeout") == 22
    assert s.sget("smtp_tcp_port") == "smtp"
    assert l.sget("smtp_tcp_port") == "2424"
    assert l.sbool("smtp_send_xforward_command") is True
    assert s.sbool("smtp_send_xforward_command") is False
    assert l.slist("smtp_connection_cache_destinations") == ["a", "b"]
    assert l.sint("smtp_mx_address_limit") == 5
    assert l.sget("smtp_helo_name") == l.get("myhostname")


# ---------------------------------------------------------------------------
# Differential tests against the installed postconf(1)

POSTCONF = shutil.which("postconf") or next(
    (p for p in ("/usr/sbin/postconf", "/usr/local/sbin/postconf") if os.access(p, os.X_OK)),
    None)
needs_postconf = pytest.mark.skipif(POSTCONF is None, reason="postconf not installed")

# Values postconf computes for its own process.
PROCESS_DEPENDENT = {"process_id", "process_name", "service_name"}


def run_postconf(confdir, *args, check=True):
    env = dict(os.environ)
    env.pop("MAIL_CONFIG", None)
    proc = subprocess.run([POSTCONF, "-c", str(confdir)] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if check and proc.returncode != 0:
        raise AssertionError("postconf failed: %s" % proc.stderr.decode())
    return proc


def run_postconf_parallel(jobs):
    """Run postconf once per (confdir, args); return [(rc, stdout, stderr)]."""
    env = dict(os.environ)
    env.pop("MAIL_CONFIG", None)
    procs = [subprocess.Popen([POSTCONF, "-c", str(d)] + list(args), env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for d, args in jobs]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append((proc.returncode, out, err.decode(errors="replace")))
    return results


def mkdir(path):
    path.mkdir()
    return path


def parse_postconf(out):
    result = {}
    for line in out.decode("utf-8", "surrogateescape").splitlines():
        name, _, value = line.partition(" =")
        result[name] = value[1:] if value.startswith(" ") else value
    return result


def norm(value):
    # postconf normalises whitespace between words when printing.
    return " ".join(value.split())


def confdir_with(tmp_path, text):
    (tmp_path / "main.cf").write_text(text)
    (tmp_path / "master.cf").write_text("")
    return tmp_path


DIFF_MAIN_CF = """\
# differential test
compatibility_level = {level}
myhostname = mail.example.com
mynetworks = 127.0.0.0/8 [::1]/128
relay_domains = example.net,
    $mydomain
smtp_helo_name = foo.$mydomain
smtp_tls_loglevel = ${{relay_domains?{{2}}:{{0}}}}
smtp_bind_address = ${{nothing_here:{{10.0.0.1}}}}
zz_user = ${{smtp_helo_name?{{$myorigin}}:{{none}}}} $$literal
smtp_bind_address6 = $zz_user
smtp_tls_security_level = ${{{{$compatibility_level}} <level {{3.6}} ? {{may}} : {{encrypt}}}}
lmtp_tls_mandatory_ciphers = ${{{{$smtp_tcp_port}} == {{smtp}} ? {{high}} : {{medium}}}}
smtp_sasl_password_maps = hash:$config_directory/sasl_passwd

   # indented comment
lmtp_connection_cache_destinations = one

  two
smtpd_banner = $myhostname   ESMTP  $mail_name ($mail_version)
"""


@needs_postconf
@pytest.mark.parametrize("level", ["0", "2", "3.6", "3.7"])
def test_differential_all_parameters(tmp_path, level):
    confdir = confdir_with(tmp_path, DIFF_MAIN_CF.format(level=level))
    expected = parse_postconf(run_postconf(confdir, "-x").stdout)
    assert len(expected) > 800
    p = Params.load(str(confdir))
    mismatches = {}
    for name, value in expected.items():
        if name in PROCESS_DEPENDENT:
            continue
        mine = p.get(name)
        if norm(mine) != norm(value):
            mismatches[name] = (value, mine)
    assert mismatches == {}
    assert p.get("zz_user") == "mail.example.com $literal"


@needs_postconf
def test_differential_host_dependent_defaults(tmp_path):
    # Same machine, so gethostname() agrees with postconf's.
    texts = ["", "mydomain = example.org\n", "myhostname = a.b.c\n"]
    names = ["myhostname", "mydomain", "smtp_helo_name", "myorigin"]
    dirs = [confdir_with(mkdir(tmp_path / str(i)), t) for i, t in enumerate(texts)]
    results = run_postconf_parallel([(d, ["-x"] + names) for d in dirs])
    for confdir, (rc, out, err) in zip(dirs, results):
        assert rc == 0, err
        expected = parse_postconf(out)
        p = Params.load(str(confdir))
        assert {k: p.get(k) for k in names} == expected


@needs_postconf
def test_defaults_match_postconf(tmp_path):
    confdir = confdir_with(tmp_path, "")
    expected = parse_postconf(run_postconf(confdir, "-d").stdout)
    host_dependent = {"myhostname", "mydomain", "mynetworks", "config_directory"}
    missing = set(expected) - set(DEFAULTS) - PROCESS_DEPENDENT - host_dependent
    assert missing == set()
    wrong = {k: (v, expected.get(k)) for k, v in DEFAULTS.items() if expected.get(k) != v}
    assert wrong == {}


TRICKY = [
    "$$x${a}$(a)",
    "${a?{t}:{f}} ${e?{t}:{f}} ${n?{t}:{f}}",
    "${a? t1 } ${n: f1 } ${a??foo:{b}ar}",
    "${a?a:b} ${n?{t}:f}",
    "${{$a} == {A} ? {eq} : {ne}} ${{10} > {9}} ${{10} > {9x}}",
    "${{$compatibility_level} <level {3.6} ? {old} : {new}}",
    "${{3.10} >level {3.6}?{yes}:{no}} ${{3.6.1} ==level {3.6}?{yes}:{no}}",
    "${ a } ${a ? {x} } ${ {1} == {1} }",
    "${a?{x{y}z}} ${{} == {}} ${{$n} != {}}",
    "${r?{${a:x}}:{y}}[$r]",
    "${{$a$a} == {AA} ? {${{1} < {2} ? {nested}}} : {no}}",
]


@needs_postconf
def test_differential_tricky_expressions(tmp_path):
    lines = ["compatibility_level = 3.6", "a = A", "e =", "r = $a$a"]
    lines += ["t%d = %s" % (i, text) for i, text in enumerate(TRICKY)]
    lines.append("zz_refs = " + " ".join("$t%d" % i for i in range(len(TRICKY))))
    confdir = confdir_with(tmp_path, "\n".join(lines) + "\n")
    names = ["t%d" % i for i in range(len(TRICKY))]
    expected = parse_postconf(run_postconf(confdir, "-x", *names).stdout)
    p = Params.load(str(confdir))
    assert {n: norm(p.get(n)) for n in names} == {n: norm(v) for n, v in expected.items()}


@needs_postconf
def test_differential_errors(tmp_path):
    # Whatever we reject, postconf rejects too (fatal "macro processing error").
    # postconf pauses ~1 s before exiting on a fatal error: run them in parallel.
    texts = BAD_EXPANSIONS[:-1] + ["$b", "${{$c} <level {2}}"]
    dirs = [confdir_with(mkdir(tmp_path / str(i)),
                         "a = A\nb = $b\nc = bogus\nsmtp_helo_name = %s\n" % text)
            for i, text in enumerate(texts)]
    results = run_postconf_parallel([(d, ["-x", "-h", "smtp_helo_name"]) for d in dirs])
    for text, confdir, (rc, out, err) in zip(texts, dirs, results):
        assert rc != 0, (text, out)
        with pytest.raises(ConfigError):
            Params.load(str(confdir)).get("smtp_helo_name")


@needs_postconf
def test_differential_nesting_limit(tmp_path):
    # mac_expand() allows 100 nested $name references, not 101.
    dirs = []
    for n in (100, 101):
        lines = ["p%d = $p%d" % (i, i + 1) for i in range(n)] + ["p%d = end" % n, "zz = $p0"]
        dirs.append(confdir_with(mkdir(tmp_path / str(n)), "\n".join(lines) + "\n"))
    (ok_rc, ok_out, _), (bad_rc, _, _) = run_postconf_parallel(
        [(d, ["-x", "-h", "p0"]) for d in dirs])
    assert (ok_rc, ok_out.strip(), bad_rc != 0) == (0, b"end", True)
    assert Params.load(str(dirs[0])).get("p0") == "end"
    with pytest.raises(ConfigError):
        Params.load(str(dirs[1])).get("p0")
