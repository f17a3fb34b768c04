"""Unit tests for the pure-Python hash/btree (Berkeley DB 5.3) and cdb readers.

The fixtures are files that Debian 12's postmap built (zlib + base64 below)
from this source::

    key00@example.com value00      ... key39@example.com value39
    BigValue <3000 x "v">          (value on overflow pages)
    <1500 x "k"> longkey           (key on overflow pages)
    Straße sharp                   (stored casefolded: "strasse")

so these tests run without Postfix.  The integration tests compare the
same readers with postmap -q on freshly built tables.
"""

from __future__ import annotations

import base64
import os
import zlib

import pytest

from postfix_smtp.maps import DEFAULT_FLAGS, MapError, OpenContext, RecordingLog
from postfix_smtp.maps.bdb import DBFile, DBFormatError

HASH_DB = (
    "eNrt20+IjHEYB/DfmGUX/Z7HJrlSUta/35/9Ww6bouTgpBw09a7edjWzf9pZ21KUFCflIEVpD3vbHJai1ioH"
    "Dg7arGKTxMFBQlE4KHlnn0Yz6ylxIb6fmmZ6v9N7+PbW9H1nxhhjckYka5aZ5ZUXq7JHkxxrMD+aHV9vzFdj"
    "miduTc2ncixXc56Kzdk55s72FRYfBwAAAAAAAIA/Y/FGbzEz1ti3/JLn+B5f5yt8kc/xcR7hhA/wLt7Bm3gd"
    "W27g9/SKHtF9mqYpukzn6SSNUUoHaQ9101baQM3URB/tG/vEPrB3bXZWAAAAAAAA+I3ZVhoc6C2mR01+v3xP"
    "+2xpdnA0KR1JY5fJZUns6k7Hkv6hUrrt0GB/NeuQrEPL2iRr07IoWdQyL5lXstC5kIVOLWuXrF3LWiVr1bIg"
    "WdAyJ5lTMi+9eK0XL714rRcvvXitFy+9eK0XL714rRcnvTitFye9OK0XJ704rRcnvTitFye9uPpeqvt/Sc2F"
    "tcVMZvv/E7/meZ7lGb7G43yBT/Ex7uUC7+WdvJ038mpewZ/pHT2lh3SbbtAEXaIzdIKK1EP7aDdFaqG1RPTF"
    "frDP7WN7x960V+0k7gEAAAAAAAD8bO6X+5LhoexpZDgpl9Pq8pYVGbUVGWVFRm1FRlmRUVuRUVZk1FZklBUZ"
    "tXUdZF0HbV0HWddBW9dB1nXQ1nWQdR20dR1kXQdtXXvpxWu9eOnFa7146cVrvXjpxWu9eOnFa7046cVpvTjp"
    "xWm9OOnFab046cVpvTjpxdX3ki+cfpHPrqPpldm11HO4d+Gt3/d/vvZKq7yncRQAAAAAAP56WMoA8At3lkz9"
    "//xzlV+SNBYBAOCfg888AAAAgP/VN21eics=")

BTREE_DB = (
    "eNrt2S9M1GEcx/Hnx3kCz9+bI1zQDTeDbs49z3MHHBuBYDAYDMwRCBz6GzgOYRwy3AgEgsFgMBjcJBAIBoNB"
    "ncFAIFwwGNyUzWAg4EYwGBzzfhx+Fdk3OAvDz3u78XD73C+82I7d/YQQIhGtxkJedGaHQvPR2XouJw7XeHJW"
    "iF0hXl3YLX9Ifz3ftv+z+7drIoQQQgghhBBC6GiU/PF5/booyiQ/JK/ILffRrbsXbsU9dItuxg27q67szruC"
    "O+G27Se7YV/bVfvILtk5O2Kv2Yq9aLtsh90xn03DvDFr5rFZNgtm1AyZAeNN0WjzVW/pt3pdP9Ur+p5e1Df1"
    "sB7UZX1aF/Q3ta3eqQ31TK2q+2pJTagRdVlVVLfqUt/ljnwvG/K5XJMP5LKsyVE5IL08J4sSf0OEEEIIoX/t"
    "pEjqE9XZmezc0TzPzVbr9XTvXJu+PT6Z3hXizJdcMbs/tJlvnbP7Py9VdusoGbs1Pl+t3Umz/d6h1C/EKZE0"
    "X1fqH0wXqlMztfTSjemp/eu3NhXaVNhNH2362E0vbXrZTQ9tethNmTZldlOiTYndRNpEdhNoE9iNp43nNpGc"
    "I+scyTmyzpGcI+scyTmyzpGcI+scyTmyzpGcI+scyTmyzpGcI+scyTmyzoGcA+scyDmwzoGcA+scyDmwzoGc"
    "A+scyDmwzoGcA+scyDmwzoGcA+scyDmwzp6cPevsydmzzp6cPevsydmzzp6cPevsydmzzp6cPevsydmzzp6c"
    "Pevsydkfcv75+b/twPcBzXfx9nmEEEIIIYTQkQ/fXSGE/u7+f+7A75t50T6JEELo2IX/eQghhBBC/2s/AJfx"
    "hZY=")

CDB = (
    "eNrtlk9IVFEUxi9SaU2BZVBROdMmkcDm3uvM6EKYFmlLJatFlDPVNP0xFcc0g2Js0d9Ff0glIpioEIOiMNCg"
    "aIJKF60qiihiqoVBBBWlRIS9dzvlB2cSjKhB3gfDxznfu+++9+Pcx/TnC6P+/+hZlj+hGt3uD5IPUx/d7me7"
    "f9RjuX3dHKrR7X4B1Zng9vMEyCuoj27315BHqf8v3d63heq/6fZ9D5B3Uh99kuW9lPdT/0/czBnVmexm7smH"
    "qY9u5t5Dc+2heR6Hm7mnOpPczD95BfXRzfyTR6k/EdycK6rRzbkg76Q+ut3vonost6/rpRrdnCeqM8nNOSUf"
    "pD66ORfk2YvoOz8ON+eG6nRuzgfV/8LN3JNXUB/dzD15lPp/4mbOqP7pM20m1m97pNXrDUZ2hXc01EaKNtbv"
    "aA7X7ox4vZhLnkvMFc8V5prnGvNinhdj7uO5D3M/z/2YB3gewLyE5yWYl/K8FHLJ+UnkJzk/ifwk5yeRn+T8"
    "JPKTnJ9EfpLzk8hPcn4S+UnOTyI/yflJ5Cc5P4n8FOenkJ/i/BTyU5yfQn6K81PIT3F+Cvkpzk8hP8X5KeSn"
    "OD+F/BTnp5Cf4vwU8tOcn0Z+mvPTyE9zfhr5ac5PIz/N+Wnkpzk/jfw056eRn+b8NPLTnJ9Gfprz06U5Vtbn"
    "EmLD1qjpNDty5MiRI0eOHDly5Cjj9Xwy/c935MiRI0cTTrX1ddHtkVb7M2997UWsqTEci0ViW8KNDYKUe3q4"
    "KZEjfilvz9GvwjVaz15bP8sD+Zyy7FPxaaP1goUn3nqmjtbukcLGuLVeXhw5lJgumFRNrk9Y633bWgo8aXK/"
    "++CDONxv+bOiOwNzhagsH6kJwXNVNXS54jnit6qe0vItZe1T/Xp+U0++EKu87m4B16/7uGyfgH0aL2cFgvA8"
    "MX95pQfes7lu96Mk7N8ydPNdAtbv9Z65lEzzPsfbbm8KWutOdNx1pdI8b/uy0qyktU/H6rLuUJr8Ss1gXtLa"
    "p+fe+iWhNPe/5q65GrTy3v2PB1Iunt942XY4aN3/1oovZ1Ow/sHm60c8cP3DY+FAEvZ/vFgWJuD9n1Q+fRSE"
    "/MWblVkJWP/q/LyYmMH3f3/8XHvc2veDf+HS1FSef6qar4WVfx46eT8E+be+3gsh2P8781dJlA==")


def _write(tmp_path, name: str, blob: str) -> str:
    path = os.path.join(str(tmp_path), name)
    with open(path, "wb") as f:
        f.write(zlib.decompress(base64.b64decode(blob)))
    return path


@pytest.mark.parametrize("type_,suffix,blob", [
    ("hash", ".db", HASH_DB), ("btree", ".db", BTREE_DB), ("cdb", ".cdb", CDB)])
def test_reader(tmp_path, type_, suffix, blob):
    base = os.path.join(str(tmp_path), "t")
    _write(tmp_path, "t" + suffix, blob)
    ctx = OpenContext(None, RecordingLog(), utf8=True)
    t = ctx.open_table("%s:%s" % (type_, base), DEFAULT_FLAGS)
    for i in range(40):
        assert t.lookup("KEY%02d@Example.COM" % i) == "value%02d" % i
    assert t.lookup("bigvalue") == "v" * 3000
    assert t.lookup("K" * 1500) == "longkey"
    assert t.lookup("k" * 1499) is None
    assert t.lookup("STRASSE") == "sharp"
    assert t.lookup("key40@example.com") is None
    assert not t.changed()
    ctx.close()


def test_wrong_method_and_garbage(tmp_path):
    base = os.path.join(str(tmp_path), "t")
    _write(tmp_path, "t.db", BTREE_DB)
    log = RecordingLog()
    t = OpenContext(None, log).open_table("hash:" + base, DEFAULT_FLAGS)
    with pytest.raises(MapError):                       # a btree file opened as hash
        t.lookup("x")
    assert "Invalid argument" in log.texts("error")[0]
    with open(base + ".db", "wb") as f:
        f.write(b"\0" * 4096)
    fd = os.open(base + ".db", os.O_RDONLY)
    try:
        with pytest.raises(DBFormatError):
            DBFile(fd, base + ".db")
    finally:
        os.close(fd)


def test_truncated_file_is_a_lookup_error(tmp_path):
    base = os.path.join(str(tmp_path), "t")
    path = _write(tmp_path, "t.db", HASH_DB)
    os.utime(path, (1e9, 1e9))         # changed() compares whole seconds, as stock
    log = RecordingLog()
    ctx = OpenContext(None, log)
    t = ctx.open_table("hash:" + base, DEFAULT_FLAGS)
    os.truncate(path, 4096)            # as if rewritten under our feet without locking
    with pytest.raises(MapError):
        for i in range(40):
            t.lookup("key%02d@example.com" % i)
    assert any("error reading" in m for m in log.texts("warning"))
    assert t.changed()
    ctx.close()


@pytest.mark.parametrize("type_,suffix,blob", [
    ("hash", ".db", HASH_DB), ("btree", ".db", BTREE_DB), ("cdb", ".cdb", CDB)])
def test_corrupt_files_never_crash(tmp_path, type_, suffix, blob):
    """Random damage: every lookup returns a value, None, or raises MapError."""
    import random
    import time
    rnd = random.Random(1234)
    good = zlib.decompress(base64.b64decode(blob))
    base = os.path.join(str(tmp_path), "t")
    deadline = time.monotonic() + 20
    for _ in range(150):
        data = bytearray(good)
        for _ in range(rnd.randint(1, 40)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        with open(base + suffix, "wb") as f:
            f.write(data)
        ctx = OpenContext(None, RecordingLog())
        t = ctx.open_table("%s:%s" % (type_, base), DEFAULT_FLAGS)
        for key in ("key07@example.com", "bigvalue", "k" * 1500, "nokey"):
            try:
                value = t.lookup(key)
            except MapError:
                continue
            assert value is None or isinstance(value, str)
        ctx.close()
        assert time.monotonic() < deadline
