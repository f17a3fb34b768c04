"""The dataclasses stand-in behaves like dataclasses for what the package uses,
and the agent's start-up path does not import dataclasses/inspect at all."""

import subprocess
import sys

import pytest

from postfix_smtp.valueclass import FrozenInstanceError, dataclass, field, replace


@dataclass
class Point:
    x: int
    y: int = 0
    tags: list = field(default_factory=list)
    note: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class Code:
    status: str = ""
    reason: str = ""


def test_init_defaults_factories_repr_eq():
    a, b = Point(1), Point(1)
    assert (a.x, a.y, a.tags, a.note) == (1, 0, [], "")
    assert a.tags is not b.tags
    assert a == b and a != Point(2)
    assert Point(1, note="x") == Point(1, note="y")          # compare=False
    assert repr(Point(1, 2, ["t"])) == "Point(x=1, y=2, tags=['t'])"
    with pytest.raises(TypeError):
        Point()
    with pytest.raises(TypeError):
        hash(a)


def test_frozen_and_replace():
    c = Code("4.0.0", "x")
    with pytest.raises(FrozenInstanceError):
        c.status = "5.0.0"
    d = replace(c, reason="y")
    assert d == Code("4.0.0", "y") and c.reason == "x"
    assert hash(d) == hash(Code("4.0.0", "y"))


def test_start_up_path_does_not_import_dataclasses():
    code = ("import sys, postfix_smtp.master.server, postfix_smtp.agent, postfix_smtp.settings;"
            "print(' '.join(m for m in ('dataclasses', 'inspect', 'OpenSSL', 'dns', 'typing')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == []
