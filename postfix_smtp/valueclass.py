"""A small stand-in for :mod:`dataclasses` on the agent's start-up path.

``import dataclasses`` pulls in ``inspect`` (and with it ``ast``, ``dis``,
``tokenize``): about 13 ms per process, and master(8) starts many agent
processes.  The package's value classes need only a fraction of the
features, so this module offers the same spelling for that fraction:
``@dataclass`` / ``@dataclass(frozen=True)``, ``field(default=...,
default_factory=..., compare=..., repr=...)`` and ``replace()``.  Generated
methods: ``__init__`` (with defaults and factories), ``__repr__``,
``__eq__`` (and ``__hash__`` for frozen classes).  No inheritance between
value classes, no ``__post_init__``, no ``InitVar``/``ClassVar`` fields.
"""

from __future__ import annotations

MISSING = object()


class FrozenInstanceError(AttributeError):
    pass


class Field:
    __slots__ = ("name", "default", "default_factory", "compare", "repr")

    def __init__(self, default=MISSING, default_factory=MISSING, compare=True, repr=True):
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.compare = compare
        self.repr = repr


def field(*, default=MISSING, default_factory=MISSING, compare: bool = True,
          repr: bool = True):  # noqa: A002  (the dataclasses spelling)
    return Field(default, default_factory, compare, repr)


def _frozen_setattr(self, name, value):
    raise FrozenInstanceError("cannot assign to field %r" % name)


def _frozen_delattr(self, name):
    raise FrozenInstanceError("cannot delete field %r" % name)


def _process(cls, frozen: bool):
    fields = []
    for name in cls.__dict__.get("__annotations__", {}):
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        f.name = name
        fields.append(f)
        if isinstance(value, Field):
            if f.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
    ns = {"MISSING": MISSING, "_setattr": object.__setattr__}
    params, body = [], []
    for f in fields:
        if f.default is not MISSING:
            ns["_d_" + f.name] = f.default
            params.append("%s=_d_%s" % (f.name, f.name))
        elif f.default_factory is not MISSING:
            ns["_f_" + f.name] = f.default_factory
            params.append("%s=MISSING" % f.name)
            body.append("    if %s is MISSING: %s = _f_%s()" % (f.name, f.name, f.name))
        else:
            params.append(f.name)
        if frozen:
            body.append("    _setattr(self, %r, %s)" % (f.name, f.name))
        else:
            body.append("    self.%s = %s" % (f.name, f.name))
    src = "def __init__(self, %s):\n%s\n" % (", ".join(params), "\n".join(body) or "    pass")
    exec(src, ns)  # noqa: S102 - generated from the class's own field names
    cls.__init__ = ns["__init__"]
    shown = [f.name for f in fields if f.repr]
    compared = tuple(f.name for f in fields if f.compare)

    def __repr__(self):
        return "%s(%s)" % (type(self).__qualname__, ", ".join(
            "%s=%r" % (n, getattr(self, n)) for n in shown))

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in compared)

    cls.__repr__ = __repr__
    cls.__eq__ = __eq__
    if frozen:
        cls.__hash__ = lambda self: hash(tuple(getattr(self, n) for n in compared))
        cls.__setattr__ = _frozen_setattr
        cls.__delattr__ = _frozen_delattr
    else:
        cls.__hash__ = None
    cls.__dataclass_fields__ = {f.name: f for f in fields}
    return cls


def dataclass(cls=None, *, frozen: bool = False):
    if cls is None:
        return lambda c: _process(c, frozen)
    return _process(cls, frozen)


def replace(obj, **changes):
    """A copy of ``obj`` with some fields changed (dataclasses.replace)."""
    values = {name: getattr(obj, name) for name in obj.__dataclass_fields__}
    values.update(changes)
    return type(obj)(**values)
