"""Differential tests: postfix_smtp.maps against ``postmap -q`` (Postfix 3.7).

Each test writes a table source in a private config directory, builds it
with postmap where the type needs it, and asks both postmap and our reader
for the same keys: keys that exercise case folding, quoting, partial
matches, regexp/pcre captures and IF/ENDIF, 8-bit and UTF-8 bytes.  Both
the SMTPUTF8 mode (compatibility_level 3.6, casefolding through ICU) and
the legacy 8-bit mode (ASCII-only folding) are compared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import pytest

from postfix_smtp.maps import (DICT_FLAG_DUP_WARN, DICT_FLAG_FOLD_FIX, DICT_FLAG_LOCK,
                               DICT_FLAG_UTF8_REQUEST, MapError, OpenContext, RecordingLog)

POSTMAP = shutil.which("postmap") or "/usr/sbin/postmap"
# What postmap -q opens tables with.
ERROR = b"<lookup error>"
POSTMAP_FLAGS = DICT_FLAG_DUP_WARN | DICT_FLAG_FOLD_FIX | DICT_FLAG_UTF8_REQUEST | DICT_FLAG_LOCK


def _types() -> set:
    try:
        out = subprocess.run([POSTMAP, "-c", _Conf.shared().path, "-q", "x", "static:x"],
                             capture_output=True, timeout=30)
        del out
        r = subprocess.run(["/usr/sbin/postconf", "-c", _Conf.shared().path, "-m"],
                           capture_output=True, timeout=30)
        return set(r.stdout.decode().split())
    except (OSError, subprocess.SubprocessError):
        return set()


class _Conf:
    """A config directory with a main.cf that postmap reads."""

    _shared = None

    def __init__(self, utf8: bool) -> None:
        self.path = tempfile.mkdtemp(prefix="pfsmtp-maps-")
        os.chmod(self.path, 0o755)
        self.utf8 = utf8
        with open(os.path.join(self.path, "main.cf"), "w") as f:
            f.write("compatibility_level = 3.6\n")
            f.write("smtputf8_enable = %s\n" % ("yes" if utf8 else "no"))
        self.age("main.cf")

    @classmethod
    def shared(cls) -> "_Conf":
        if cls._shared is None:
            cls._shared = cls(True)
        return cls._shared

    def age(self, name: str) -> None:
        # Postfix re-reads a file modified in the last second ("let it cool down").
        t = time.time() - 3600
        os.utime(os.path.join(self.path, name), (t, t))

    def write(self, name: str, data: bytes) -> str:
        p = os.path.join(self.path, name)
        with open(p, "wb") as f:
            f.write(data)
        self.age(name)
        return p

    def postmap(self, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        return subprocess.run([POSTMAP, "-c", self.path] + list(args), input=stdin,
                              capture_output=True, timeout=60)

    def build(self, spec: str, *opts: str) -> None:
        r = self.postmap(*opts, spec)
        assert r.returncode == 0, r.stderr.decode("utf-8", "replace")

    def query_one(self, spec: str, key: bytes):
        """postmap -q key spec: value bytes, None (not found) or ERROR."""
        r = subprocess.run([POSTMAP, "-c", self.path, "-q", key, spec],
                           capture_output=True, timeout=60)
        if b"fatal:" in r.stderr:
            return ERROR
        if r.returncode == 0:
            return r.stdout[:-1] if r.stdout.endswith(b"\n") else r.stdout
        assert r.returncode == 1, r.stderr.decode("utf-8", "replace")
        return None

    def query(self, spec: str, keys) -> dict:
        """{key bytes: value bytes or ERROR} for the keys postmap finds (or fails on).

        Keys go through ``postmap -q -`` in one batch; keys that a batch
        cannot carry (empty, TAB, newline) or that make postmap fail are
        asked one at a time."""
        batch = [k for k in keys if k and b"\t" not in k and b"\n" not in k]
        single = [k for k in keys if k not in batch]
        r = self.postmap("-q", "-", spec, stdin=b"".join(k + b"\n" for k in batch))
        out = {}
        if b"fatal:" in r.stderr:
            single = list(keys)
        else:
            assert r.returncode in (0, 1), r.stderr.decode("utf-8", "replace")
            for line in r.stdout.split(b"\n"):
                if line:
                    k, _, v = line.partition(b"\t")
                    out[k] = v
        for k in single:
            if not k:
                continue        # postmap -q "" is not a query (maps_find skips it too)
            v = self.query_one(spec, k)
            if v is not None:
                out[k] = v
        return out

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@pytest.fixture(params=[True, False], ids=["smtputf8", "8bit"])
def conf(request):
    c = _Conf(request.param)
    yield c
    c.cleanup()


@pytest.fixture(scope="module")
def map_types():
    return _types()


def ours(conf: _Conf, spec: str, keys, flags: int = POSTMAP_FLAGS, log=None) -> dict:
    ctx = OpenContext(None, log or RecordingLog(), utf8=conf.utf8, retry_sleep=0.01)
    table = ctx.open_table(spec, flags)
    out = {}
    try:
        for k in keys:
            if not k:
                continue
            try:
                v = table.lookup(k.decode("utf-8", "surrogateescape"))
            except MapError:
                out[k] = ERROR
                continue
            if v is not None:
                out[k] = v.encode("utf-8", "surrogateescape")
    finally:
        ctx.close()
    return out


def compare(conf: _Conf, spec: str, keys, flags: int = POSTMAP_FLAGS) -> dict:
    expect = conf.query(spec, keys)
    got = ours(conf, spec, keys, flags)
    diff = {k: (expect.get(k), got.get(k)) for k in keys if expect.get(k) != got.get(k)}
    assert not diff, "%s: key: (postmap, ours): %r" % (spec, diff)
    return expect


# --------------------------------------------------------------------------------------
# Indexed tables

SOURCE = (
    "# comment line\n"
    "Foo@Example.COM      v-full\n"
    "@example.com         v-at-domain\n"
    "user@                v-user-at\n"
    "example.com          v-domain\n"
    ".sub.example.com     v-dot-domain\n"
    '"quoted key"@x       v-quoted\n'
    "MixedCase            Value With  Spaces\n"
    "continued            first\n"
    "   second line\n"
    "# a comment between\n"
    "  third\n"
    "straße               v-sharp-s\n"
    "ÄBC                  v-a-umlaut\n"
    "İstanbul             v-dotted-i\n"
    "ǅ                    v-titlecase\n"
    "caf\xc3\xa9 v-nfc\n"
    "key\tv-tab\n"
    "dup                  first\n"
    "dup                  second\n"
    "empty-value-below\n"
    "trailing-space       value   \n"
).encode("utf-8") + b"latin1-\xe9t\xe9 v-latin1\nvalue-8bit v-\xff\xfe\n"

KEYS = [
    b"foo@example.com", b"FOO@EXAMPLE.COM", b"Foo@Example.COM", b"foo@example.co",
    b"@example.com", b"@EXAMPLE.COM", b"user@", b"USER@", b"example.com", b"Example.Com",
    b".sub.example.com", b"sub.example.com", b'"quoted key"@x', b'"QUOTED KEY"@X',
    b"quoted key@x", b"mixedcase", b"MIXEDCASE", b"continued", "straße".encode(), b"STRASSE",
    b"strasse", "STRAẞE".encode(), "äbc".encode(), "ÄBC".encode(), "aBC".encode(),
    "İstanbul".encode(), "i̇stanbul".encode(), "istanbul".encode(), "ǆ".encode(),
    "Ǆ".encode(), b"caf\xc3\xa9", b"CAF\xc3\x89", b"key", b"dup", b"trailing-space",
    b"latin1-\xe9t\xe9", b"LATIN1-\xe9t\xe9", b"latin1-\xc9t\xc9", b"value-8bit",
    b"\xff\xfe", b"empty-value-below", b"", b"nope", b"FOO@example.com\xff",
]


@pytest.mark.parametrize("type_", ["hash", "btree", "lmdb", "cdb"])
def test_indexed_tables_match_postmap(conf, map_types, type_):
    if type_ not in map_types:
        pytest.skip("postmap cannot build %s tables here (install postfix-%s)" % (type_, type_))
    if type_ == "lmdb":
        pytest.importorskip("lmdb")
    src = conf.write("tbl", SOURCE)
    conf.build("%s:%s" % (type_, src))
    found = compare(conf, "%s:%s" % (type_, src), KEYS)
    assert found[b"FOO@EXAMPLE.COM"] == b"v-full"


def test_texthash_matches_postmap(conf):
    src = conf.write("tbl", SOURCE)
    found = compare(conf, "texthash:" + src, KEYS)
    assert found[b"MIXEDCASE"] == b"Value With  Spaces"


@pytest.mark.parametrize("type_", ["hash", "btree", "lmdb", "cdb"])
@pytest.mark.parametrize("nul", ["-N", "-n"])
def test_null_termination_variants(conf, map_types, type_, nul):
    if type_ not in map_types:
        pytest.skip("no %s support" % type_)
    if type_ == "lmdb":
        pytest.importorskip("lmdb")
    src = conf.write("tbl", b"a  1\nBb 2\nccc 3\n")
    conf.build("%s:%s" % (type_, src), nul)
    compare(conf, "%s:%s" % (type_, src), [b"a", b"BB", b"ccc", b"cc", b"a\xff"])


@pytest.mark.parametrize("type_", ["hash", "btree", "lmdb", "cdb"])
def test_case_preserving_table(conf, map_types, type_):
    """postmap -f keeps key case; lookups without FOLD_FIX must then match exactly."""
    if type_ not in map_types:
        pytest.skip("no %s support" % type_)
    if type_ == "lmdb":
        pytest.importorskip("lmdb")
    src = conf.write("tbl", b"MiXeD 1\nlower 2\n")
    conf.build("%s:%s" % (type_, src), "-f")
    keys = [b"MiXeD", b"mixed", b"lower", b"LOWER"]
    expect = {}
    for k in keys:
        r = conf.postmap("-f", "-q", k.decode(), "%s:%s" % (type_, src))
        if r.returncode == 0:
            expect[k] = r.stdout.rstrip(b"\n")
    got = ours(conf, "%s:%s" % (type_, src), keys,
               flags=DICT_FLAG_LOCK | DICT_FLAG_UTF8_REQUEST)
    assert got == expect


@pytest.mark.parametrize("type_", ["hash", "btree", "lmdb"])
def test_large_tables(conf, map_types, type_):
    """Many keys (several hash buckets / btree levels), big keys and values on
    overflow pages."""
    if type_ not in map_types:
        pytest.skip("no %s support" % type_)
    if type_ == "lmdb":
        pytest.importorskip("lmdb")
    lines = []
    keys = []
    for i in range(4000):
        k = "k%05d@dom%d.example" % (i, i % 7)
        if i % 211 == 0:
            # LMDB keys are limited to 511 bytes
            k = "long%d-" % i + "x" * ((500 + 7 * i % 3000) if type_ != "lmdb" else 400)
        v = "value-%d" % i
        if i % 97 == 0:
            v = "V%d-" % i + "y" * (800 + 13 * i % 9000)
        lines.append("%s %s\n" % (k, v))
        if i % 13 == 0 or i % 211 == 0 or i % 97 == 0:
            keys.append(k.upper().encode())
            keys.append((k + "-missing").encode())
    src = conf.write("big", "".join(lines).encode())
    conf.build("%s:%s" % (type_, src))
    found = compare(conf, "%s:%s" % (type_, src), keys)
    assert len(found) > 300


# --------------------------------------------------------------------------------------
# Pattern tables

REGEXP_RULES = br"""
# captures, anchors, escapes
/^(.*)@example\.com$/            local=$1
/^([^@]+)@(sub)\.(example)\.org$/   ${3}-$2-$(1) $$literal
/^postmaster@/                   PM
/^(a|ab)(c|bcd)(d*)$/            alt=$1/$2/$3
/^[[:upper:]]+[[:digit:]]{2,3}$/ upper-digits
/^x[]a-]y$/                      bracket
/^Case$/i                        case-sensitive
/^b\(r\)e$/x                     bre=$1
/^b+$/x                          bre-literal-plus
/^[.]dot\.$/                     dotclass
/\<word\>/                       word-boundary
/^if-(.*)$/                      will-not-reach
if /^in-block/
/^in-block-(.)$/                 block=$1
!/^in-block-x/                   block-negative
endif
IF !/^outer/
/^skip-me$/                      skipped-outside
ENDIF
/^outer-(.*)/!/-no$/             outer=$1
/^multi\nline$/                   never
/(([0-9]+)\.){3}([0-9]+)$/       ip-last=$3
/^\/slash\/$/                    slashes
|^pipe-delim|                    pipe-delim
/^8bit-(.)(.)$/                  8bit=$1,$2
/^empty-(x?)$/                   empty=[$1]
/^unknown-flag/q                 bad-flag
/^(unbalanced/                   bad-regex
/^toomany-(.)$/                  bad=$2
/^neg-sub$/                      ok
!/^negsub-(.)$/                  bad=$1
!/@/                             no-at-sign
"""

REGEXP_KEYS = [
    b"joe@example.com", b"JOE@EXAMPLE.COM", b"a@sub.example.org", b"postmaster@x",
    b"noatsign", b"abcd", b"ABC12", b"ABC1", b"xay", b"x]y", b"x-y", b"xby", b"Case",
    b"case", b"bre", b"b+", b"bbb", b".dot.", b"adot.", b"a word here", b"awordhere",
    b"in-block-1", b"in-block-xx", b"in-block-x", b"in-blockzz", b"skip-me",
    b"outer-yes", b"outer-no", b"multi\\nline", b"1.22.333.4444", b"/slash/",
    b"pipe-delim", "8bit-é".encode(), b"8bit-\xe9\xe9", b"empty-", b"empty-x",
    b"unknown-flag", b"(unbalanced", b"toomany-1", b"neg-sub", b"negsub-1", b"if-1",
    b"x@y", b"",
]


def test_regexp_matches_postmap(conf):
    src = conf.write("re", REGEXP_RULES)
    found = compare(conf, "regexp:" + src, REGEXP_KEYS)
    assert found[b"a@sub.example.org"] == b"example-sub-a $literal"
    assert found[b"in-block-1"] == b"block=1"


PCRE_RULES = br"""
/^(.*)@example\.com$/            local=$1
/^([^@]+)@(sub)\.(example)\.org$/   ${3}-$2-$(1) $$literal
/^(?<user>[a-z]+)\+(?<ext>.*)@/  ext=$2 user=$1
/^(a|ab)(c|bcd)(d*)$/            alt=$1/$2/$3
/^[[:upper:]]+\d{2,3}\z/         upper-digits
/^Case$/i                        case-sensitive
/^  x \s y  # comment
  $/x                            extended
/^ungreedy-(.+)(.*)$/U           ungreedy=$1|$2
/^greedy-(.+?)(.*)$/             lazy=$1|$2
/^anchored/A                     anchored
/end$/E                          dollar-endonly
/^dot.all$/                      dotall
/^dot.not$/s                     not-dotall
/^line2$/m                       multiline
/\Qa.b*c\E/                      quoted
/^hex-\x41\x{42}$/               hex
/^look(?=ahead)/                 lookahead
/^(\w+) \1$/                     repeated=$1
/^a(?i)bc|^xyz/                  inline-i
/^atomic(?>a+)b/                 atomic
/^8bit-(.)(.)$/                  8bit=$1,$2
/^empty-(x?)$/                   empty=[$1]
/^(unbalanced/                   bad-regex
/^toomany-(.)$/                  bad=$2
if /^in-block/
/^in-block-(.)$/                 block=$1
endif
/^\h+tab$/                       hspace
/^brace{,3}$/                    brace-literal
"""

PCRE_KEYS = [
    b"joe@example.com", b"a@sub.example.org", b"joe+list@x", b"abcd", b"ABC12",
    b"ABC1234", b"Case", b"case", b"xy", b"x y", b"x\ty", b"ungreedy-abc",
    b"greedy-abc", b"anchored-x", b"not-anchored", b"the end", b"the end\n",
    b"dot\nall", b"dot\nnot", b"dotxnot", b"line1\nline2", b"xa.b*cx", b"xaxbbcx",
    b"hex-AB", b"hex-ab", b"lookahead", b"lookbehind", b"abc abc", b"abc abd",
    b"aBC", b"ABC", b"XYZ", b"atomicaab", "8bit-é".encode(), b"8bit-\xe9\xe9",
    b"empty-", b"empty-x", b"(unbalanced", b"toomany-1", b"in-block-1",
    b" \ttab", b"brace{,3}", b"brac", b"",
]


def test_pcre_matches_postmap(conf, map_types):
    if "pcre" not in map_types:
        pytest.skip("postfix-pcre is not installed")
    src = conf.write("pcre", PCRE_RULES)
    found = compare(conf, "pcre:" + src, PCRE_KEYS)
    assert found[b"joe+list@x"] == b"ext=list user=joe"


def test_inline_pattern_tables(conf, map_types):
    compare(conf, "regexp:{{/^a(.)$/ A$1}, {!/x/ no-x}}", [b"ab", b"a", b"xx", b"x"])
    compare(conf, "cidr:{{10.0.0.0/8 ten}, {::1 lo6}}", [b"10.1.2.3", b"::1", b"11.0.0.1"])
    if "pcre" in map_types:
        compare(conf, "pcre:{{/^(\\d+)$/ num=$1}}", [b"123", b"x1"])


CIDR_RULES = b"""
# comment
192.168.1.0/24        lan
192.168.0.0/16        site
!10.0.0.0/8           not-ten
10.1.2.3              exact
[2001:db8::]/32       doc6
2001:db8:1::/48       never-after-doc6
::ffff:1.2.3.4        mapped
IF 172.16.0.0/12
172.16.5.0/24         block
!172.16.6.0/24        block-neg
ENDIF
IF !127.0.0.0/8
0.0.0.0/0             default4
ENDIF
::/0                  default6
1.2.3.4/33            bad-mask
1.2.3.4/24            host-bits
bogus                 bad-address
"""

CIDR_KEYS = [
    b"192.168.1.9", b"192.168.2.9", b"10.1.2.3", b"10.9.9.9", b"2001:db8::1",
    b"2001:db8:1::1", b"::ffff:1.2.3.4", b"1.2.3.4", b"172.16.5.5", b"172.16.6.6",
    b"172.16.7.7", b"127.0.0.1", b"::1", b"fe80::1", b"not-an-ip", b"1.2.3", b"",
    b"01.2.3.4",
]


def test_cidr_matches_postmap(conf):
    src = conf.write("cidr", CIDR_RULES)
    found = compare(conf, "cidr:" + src, CIDR_KEYS)
    assert found[b"192.168.1.9"] == b"lan"


# --------------------------------------------------------------------------------------
# Name-only tables and composites

@pytest.mark.parametrize("spec", [
    "inline:{Foo=bar, { \"Key With Space\" = value with space }, {\"Q K\"=q}, dup=1, dup=2}",
    "inline:{Foo=bar, { Key With Space = value with space }}",
    "inline:{ÄÖ=umlaut}",
    "static:fixed-value",
    "static:{ value with spaces }",
])
def test_name_only_tables(conf, spec):
    compare(conf, spec, [b"foo", b"FOO", b"key with space", b"Key With Space", b'"Q K"',
                         b'"q k"', b"dup", "äö".encode(), b"anything"])


def test_union_and_pipe(conf, map_types):
    src = conf.write("tbl", b"alpha one\nbeta two\none uno\n")
    conf.build("hash:" + src)
    re_src = conf.write("re", b"/^(b.*)/ re-$1\n/^al/ re-al\n")
    keys = [b"alpha", b"ALPHA", b"beta", b"gamma", b"one", b"bx"]
    compare(conf, "unionmap:{hash:%s, regexp:%s, inline:{alpha=in}}" % (src, re_src), keys)
    compare(conf, "unionmap:{regexp:%s, hash:%s}" % (re_src, src), keys)
    compare(conf, "pipemap:{hash:%s, hash:%s}" % (src, src), keys)
    compare(conf, "pipemap:{inline:{x=ALPHA}, hash:%s}" % src, [b"x", b"X", b"y"])


def test_fail_and_missing_tables_raise(conf):
    r = conf.postmap("-q", "key", "fail:whatever")
    assert r.returncode != 0
    log = RecordingLog()
    ctx = OpenContext(None, log, utf8=conf.utf8)
    with pytest.raises(MapError):
        ctx.open_table("fail:whatever", POSTMAP_FLAGS).lookup("key")
    missing = os.path.join(conf.path, "nonexistent")
    t = ctx.open_table("hash:" + missing, POSTMAP_FLAGS)
    assert any("open database %s.db" % missing in m for m in log.texts("error"))
    with pytest.raises(MapError):
        t.lookup("key")
    assert any("hash:%s is unavailable" % missing in m for m in log.texts("warning"))
    ctx.close()


@pytest.mark.parametrize("type_", ["hash", "btree", "cdb", "lmdb"])
def test_rebuild_is_noticed(map_types, type_):
    """A table rebuilt by postmap: stock notices .db/.cdb changes (mtime or a
    replaced file) but not in-place LMDB updates (multi-writer safe); lookups
    see the new content either way."""
    if type_ not in map_types:
        pytest.skip("no %s support" % type_)
    if type_ == "lmdb":
        pytest.importorskip("lmdb")
    conf = _Conf(True)
    try:
        src = conf.write("tbl", b"key old\n")
        conf.build("%s:%s" % (type_, src))
        old = time.time() - 600
        suffix = {"hash": ".db", "btree": ".db"}.get(type_, "." + type_)
        os.utime(src + suffix, (old, old))
        from postfix_smtp.maps import open_maps
        maps = open_maps("%s:%s" % (type_, src), None)
        assert maps.lookup("KEY") == "old"
        assert not maps.changed()
        conf.write("tbl", b"key new\nother 2\n")
        conf.build("%s:%s" % (type_, src))
        assert maps.changed() == (type_ != "lmdb")
        if type_ != "cdb":          # cdb: the old file stays open, as in stock
            assert maps.lookup("key") == "new"
            assert maps.lookup("other") == "2"
        maps.close()
    finally:
        conf.cleanup()


def test_root_only_table_opened_before_privilege_drop(conf, tmp_path):
    """Opened as root, a 0600 root-owned .db stays readable after setuid()."""
    import pwd
    src = conf.write("secret", b"[relay.example]:587 user:password\n")
    conf.build("hash:" + src)
    os.chmod(src + ".db", 0o600)
    nobody = pwd.getpwnam("nobody")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                    # child: open, drop, look up
        try:
            from postfix_smtp.maps import open_maps
            maps = open_maps("hash:" + src, None)
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            value = maps.lookup("[relay.example]:587") or "-"
            os.write(w, value.encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        assert f.read() == b"user:password"


# --------------------------------------------------------------------------------------
# Pattern zoo: one pattern per table, every key against every pattern.

ZOO_KEYS = [
    b"", b"a", b"A", b"ab", b"abc", b"aBc", b"abcabc", b"aaa", b"b", b"ba", b"a.b", b"a+b",
    b"a*b", b"a?b", b"a{2}", b"aa", b"x-y", b"x]y", b"x\\y", b"x^y", b"x$y", b"x|y",
    b"(a)", b"[a]", b"foo bar", b"foo\tbar", b"foo\nbar", b"line\n", b"UPPER", b"lower",
    b"MiXeD123", b"123", b"12.34.56.78", b"user@example.com", b"USER+ext@Example.COM",
    b"<user@example.com>", b"Subject: hello", b"subject:HELLO world", "é".encode(),
    "Ä".encode(), b"\xe9", b"\xff\xfe", b"a\x01b", b"word boundary", b"wordboundary",
    b"_under_score", b"tab\there",
]

REGEXP_ZOO = [
    b"/a/", b"/^a$/", b"/^a/i", b"/^A/i", b"/^a+$/", b"/^a*b$/", b"/^a?b$/", b"/^a{2}$/",
    b"/^a{2,}$/", b"/^a{,2}$/", b"/a|b/", b"/^(a|b)+$/", b"/^(ab)+$/", b"/^[a-c]+$/",
    b"/^[^a]*$/", b"/^[]]$/", b"/x[]]y/", b"/x[\\]y/", b"/x[\\^]y/", b"/x\\$y/",
    b"/x\\|y/", b"/x[|]y/", b"/\\(a\\)/", b"/\\[a\\]/", b"/^[[:alpha:]]+$/",
    b"/^[[:digit:].]+$/", b"/^[[:space:]]/", b"/[[:blank:]]/", b"/[[:upper:]]/",
    b"/[[:upper:]]/i", b"/[[:punct:]]/", b"/[[:cntrl:]]/", b"/^[[:alnum:]_]+$/",
    b"/^[[:xdigit:]]+$/", b"/[^[:print:]]/", b"/foo.bar/", b"/foo.bar/m", b"/^bar/m",
    b"/^bar/", b"/foo$/m", b"/line$/", b"/\\<word\\>/", b"/\\bboundary/",
    b"/\\Bboundary/", b"/\\w+@\\w+\\.com/", b"/\\W/", b"/\\s/", b"/\\S+/",
    b"/^.$/", b"/^..$/", b"/a.b/", b"/a\\.b/", b"/a+b/", b"/a\\+b/", b"/a*b/",
    b"/^a\\{2\\}$/x", b"/^a\\{2\\}$/", b"/^a+$/x", b"/^\\(a\\)\\1$/x", b"/^(a)\\1/",
    b"/^(a|ab)(c|bcd)$/", b"/^ *$/", b"/[.]/", b"/^\\./", b"/\\n/", b"/\\t/",
    b"/^(((a)))$/", b"/()/", b"/^a**$/", b"/^a+?$/", b"/x{/", b"/[a-]/", b"/[z-a]/",
    b"/[[:nope:]]/", b"/(/", b"/)/", b"/*a/", b"/a|*b/", b"/\\//", b"/^[\xc3\xa9]$/",
    b"/^\xc3\x84$/i", b"/\xe9/",
]

PCRE_ZOO = [
    b"/a/", b"/^a$/", b"/^a/i", b"/^a+$/", b"/^a*?b$/", b"/^a{2}$/", b"/^a{2,}+$/",
    b"/^a{,2}$/", b"/^(?:a|b)+$/", b"/^(ab)+$/", b"/^[a-c]+$/", b"/^[^a]*$/",
    b"/^[]]$/", b"/x[\\]]y/", b"/x\\\\y/", b"/^[[:alpha:]]+$/", b"/^[[:^digit:]]+$/",
    b"/[[:upper:]]/", b"/[[:punct:]]/", b"/^\\w+$/", b"/\\s/", b"/\\S\\s\\S/", b"/\\h/",
    b"/\\v/", b"/\\R/", b"/\\N{2}/", b"/foo.bar/", b"/foo.bar/s", b"/^bar/m", b"/^bar/",
    b"/foo$/m", b"/line$/", b"/line$/E", b"/line\\Z/", b"/line\\z/", b"/\\Aline/",
    b"/\\bboundary/", b"/(?i)upper/", b"/a(?i)B/", b"/a(?i:B)c/", b"/(?-i)A/",
    b"/^(?<x>a)\\k<x>/", b"/^(?'x'a)\\k{x}/", b"/^(a)\\g1/", b"/^(a)\\g{-1}/",
    b"/^(?P<n>a)(?P=n)/", b"/(?=b)/", b"/(?<!a)b/", b"/^(?>a+)b/", b"/^a++b/",
    b"/\\x41/", b"/\\x{42}/i", b"/\\101/", b"/\\Qa.b\\E/", b"/\\Q(a)/", b"/\\e/",
    b"/\\cA/", b"/^ab c$/x", b"/^a b # comment/x", b"/^[a b]+$/x", b"/^a+?/U",
    b"/^(a+)(a*)$/U", b"/^a/A", b"/b/A", b"/^(a|ab)(c|bcd)$/", b"/(?#comment)a/",
    b"/(a)?(?(1)b|c)/", b"/x{/", b"/[z-a]/", b"/(?R)/", b"/\\K/", b"/(/", b"/\\p{L}/",
    b"/[[:nope:]]/", b"/^.$/", b"/^\xc3\xa9$/", b"/\xe9/", b"/^\\d{1,3}(\\.\\d{1,3}){3}$/",
    b"/@example\\.com>?$/i", b"/^subject:\\s*hello/i", b"/[\\101]/", b"/^[\\d\\s]+$/",
]


def _zoo(conf: _Conf, type_: str, patterns) -> None:
    failures = []
    for i, pat in enumerate(patterns):
        rule = pat + b" hit-$$" + b"\n"
        src = conf.write("zoo%d" % i, rule)
        spec = "%s:%s" % (type_, src)
        expect = conf.query(spec, ZOO_KEYS)
        got = ours(conf, spec, ZOO_KEYS)
        diff = {k: (expect.get(k), got.get(k)) for k in ZOO_KEYS if expect.get(k) != got.get(k)}
        if diff:
            failures.append((pat, diff))
    assert not failures, "\n".join("%r: (postmap, ours) %r" % f for f in failures)


def test_regexp_zoo(conf):
    _zoo(conf, "regexp", REGEXP_ZOO)


def test_pcre_zoo(conf, map_types):
    if "pcre" not in map_types:
        pytest.skip("postfix-pcre is not installed")
    _zoo(conf, "pcre", PCRE_ZOO)


CAPTURE_ZOO = [
    (b"/x(a|ab)/", 1), (b"/(a|ab)(c|bcd)(d*)/", 3), (b"/(a*)(ab)?b?/", 2),
    (b"/(a|ab)(b*)/", 2), (b"/^(.*)(b+)/", 2), (b"/(\\w+)@(\\w+|\\w+\\.\\w+)/", 2),
    (b"/(a|ab|abc)(c?)/", 2), (b"/((a)|b)+/", 2), (b"/(a+|b+)*/", 1),
    (b"/([a-z]*)([a-z]*)/", 2), (b"/(.)(.)?(.)?/", 3), (b"/(foo|foobar)\\>/", 1),
    (b"/(u|us|use|user)(.*)@/", 2), (b"/^(a|ab)(c|bcd)$/", 2),
]

CAPTURE_KEYS = ZOO_KEYS + [b"xab", b"xabab", b"abcd", b"aab", b"aabb", b"abbb", b"abcc",
                           b"foobar baz", b"foobarx", b"ab.cd@ef.gh", b"user@x", b"usex"]


def test_regexp_capture_zoo(conf):
    failures = []
    for i, (pat, nsub) in enumerate(CAPTURE_ZOO):
        rule = pat + b" " + b"|".join(b"<$%d>" % (g + 1) for g in range(nsub)) + b"\n"
        src = conf.write("cz%d" % i, rule)
        spec = "regexp:" + src
        expect = conf.query(spec, CAPTURE_KEYS)
        got = ours(conf, spec, CAPTURE_KEYS)
        diff = {k: (expect.get(k), got.get(k)) for k in CAPTURE_KEYS
                if expect.get(k) != got.get(k)}
        if diff:
            failures.append((pat, diff))
    assert not failures, "\n".join("%r: (postmap, ours) %r" % f for f in failures)


PCRE_CAPTURE_ZOO = [
    (b"/x(a|ab)/", 1), (b"/(a|ab)(c|bcd)(d*)/", 3), (b"/(a*)(ab)?b?/", 2),
    (b"/^(.*?)(b+)/", 2), (b"/(\\w+)@(\\w+|\\w+\\.\\w+)/", 2), (b"/((a)|b)+/", 2),
    (b"/(.)(.)?(.)?/", 3), (b"/(?<n>u|us)(.*)@/", 2), (b"/^(a+)(a*)$/U", 2),
    (b"/(a)?(?(1)b|c)(.*)/", 2),
]


def test_pcre_capture_zoo(conf, map_types):
    if "pcre" not in map_types:
        pytest.skip("postfix-pcre is not installed")
    failures = []
    for i, (pat, nsub) in enumerate(PCRE_CAPTURE_ZOO):
        rule = pat + b" " + b"|".join(b"<$%d>" % (g + 1) for g in range(nsub)) + b"\n"
        src = conf.write("pz%d" % i, rule)
        spec = "pcre:" + src
        expect = conf.query(spec, CAPTURE_KEYS)
        got = ours(conf, spec, CAPTURE_KEYS)
        diff = {k: (expect.get(k), got.get(k)) for k in CAPTURE_KEYS
                if expect.get(k) != got.get(k)}
        if diff:
            failures.append((pat, diff))
    assert not failures, "\n".join("%r: (postmap, ours) %r" % f for f in failures)
