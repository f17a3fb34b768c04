"""main.cf parameter store with Postfix-compatible ``$name`` expansion.

Layers, lowest to highest precedence (as in a Postfix 3.7 daemon):

1. compiled defaults (:data:`postfix_smtp.config.defaults.DEFAULTS`) and the
   run-time host defaults ``myhostname``, ``mydomain``, ``mynetworks``;
2. ``process_name`` and ``config_directory`` (the daemon sets these before it
   reads main.cf, so main.cf and ``-o`` can still replace them);
3. main.cf (last assignment wins);
4. master.cf ``-o name=value`` pairs, in order;
5. ``service_name`` and ``process_id`` (set after option parsing, so they
   cannot be overridden).

Values are stored raw and expanded on lookup.  Expansion follows the
semantics of Postfix's mac_parse()/mac_expand() with the recursive flag used
for main.cf values, including the 3.0 ``{text}`` operands, the ternary
``?:`` operator, relational operators and the ``...level`` compatibility
level operators.  Anything Postfix treats as a fatal configuration error
raises :class:`ConfigError`.

The implementation is written from the documented behaviour of Postfix;
where a choice had to be made, ``postconf -x`` (which knows every default)
is the reference.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only; keep typing out of the import path
    from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .defaults import DEFAULTS, RAW_PARAMS

__all__ = ["ConfigError", "Params", "expand"]


class ConfigError(Exception):
    """A main.cf syntax error, an expansion error or a bad typed value.

    Stock Postfix treats all of these as fatal errors.
    """


# ---------------------------------------------------------------------------
# Character classes (Postfix uses the C locale, ASCII only).

_C_SPACE = " \t\n\v\f\r"            # isspace(): main.cf line handling, strtol()
_WS = " \t\r\n"                      # CHARS_SPACE: whitespace inside ${...}
_LIST_SEP = ", \t\r\n"               # CHARS_COMMA_SP: list separators
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz"
                   "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_DIGITS = frozenset("0123456789")
_OP_CHARS = frozenset("<>!=?+-*/~&|%")  # scanned as one operator token
_OPERATORS = ("==", "!=", "<", "<=", ">=", ">")

_LONG_MAX = (1 << 63) - 1
_LONG_MIN = -(1 << 63)
_INT_MAX = (1 << 31) - 1
_INT_MIN = -(1 << 31)

# mac_expand() gives up on nesting deeper than this many callbacks.
_MAX_LEVEL = 100
# Independent guard against runaway recursion through relational operands,
# which Postfix evaluates with a fresh nesting counter (and would overflow
# its stack on a loop).
_MAX_TOTAL_DEPTH = 400

# Relational results (mac_expand fakes a parameter value: non-empty = true).
_TRUE = "true"
_FALSE = ""

# Parameters whose Postfix type is "long" rather than "int".
_LONG_PARAMS = frozenset({
    "lmdb_map_size", "mailbox_size_limit", "message_size_limit",
    "queue_minfree", "virtual_mailbox_limit",
})

# lmtp(8) parameter names that are not simply "lmtp_" + the smtp(8) suffix.
_LMTP_IRREGULAR = {
    "smtp_helo_name": "lmtp_lhlo_name",
    "smtp_helo_timeout": "lmtp_lhlo_timeout",
    "smtp_discard_ehlo_keywords": "lmtp_discard_lhlo_keywords",
    "smtp_discard_ehlo_keyword_address_maps": "lmtp_discard_lhlo_keyword_address_maps",
}

DEF_CONFIG_DIR = "/etc/postfix"
DEF_MYDOMAIN = "localdomain"


# ---------------------------------------------------------------------------
# Small C-library look-alikes.

def _strtol(s: str, start: int = 0) -> Tuple[int, int, bool]:
    """Mimic strtol(s + start, &end, 10).

    Returns (value, end index, out_of_range).  Like C, when no digits are
    found the end index is the starting position and the value is 0.
    """
    n = len(s)
    i = start
    while i < n and s[i] in _C_SPACE:
        i += 1
    neg = False
    if i < n and s[i] in "+-":
        neg = s[i] == "-"
        i += 1
    j = i
    while j < n and s[j] in _DIGITS:
        j += 1
    if j == i:
        return 0, start, False
    value = int(s[i:j])
    if neg:
        value = -value
    if value > _LONG_MAX:
        return _LONG_MAX, j, True
    if value < _LONG_MIN:
        return _LONG_MIN, j, True
    return value, j, False


def _alldig(s: str) -> bool:
    return bool(s) and all(c in _DIGITS for c in s)


def _compat_level(s: str) -> int:
    """Convert "major[.minor[.patch]]" to a comparable number (compat_level.c).

    Raises ConfigError on malformed input.
    """
    res = 0
    fields = ((20, (1 << 43) - 1), (10, 0x3FF), (0, 0x3FF))  # shift, max value
    pos = 0
    for idx, (shift, vmax) in enumerate(fields):
        value, end, erange = _strtol(s, pos)
        last = idx == len(fields) - 1
        ok_term = end == len(s) or (not last and s[end] == ".")
        if end <= pos or not ok_term or erange or not 0 <= value <= vmax:
            break
        res |= value << shift
        if end == len(s):
            return res
        pos = end + 1
    raise ConfigError('malformed compatibility level syntax: "%s"' % s)


def _cmp_plain(left: str, right: str) -> int:
    if _alldig(left) and _alldig(right):
        lv, _, lerr = _strtol(left)
        rv, _, rerr = _strtol(right)
        if lerr or rerr:
            raise ConfigError("mac_exp_eval: bad conversion: %s"
                              % (left if lerr else right))
        return (lv > rv) - (lv < rv)
    return (left > right) - (left < right)


def _cmp_level(left: str, right: str) -> int:
    lv = _compat_level(left)
    rv = _compat_level(right)
    return (lv > rv) - (lv < rv)


_RELOP_EXTENSIONS: Dict[str, Callable[[str, str], int]] = {
    op + "level": _cmp_level for op in _OPERATORS
}


def _relop_true(op: str, delta: int) -> bool:
    if op == "==":
        return delta == 0
    if op == "!=":
        return delta != 0
    if op == "<":
        return delta < 0
    if op == "<=":
        return delta <= 0
    if op == ">=":
        return delta >= 0
    return delta > 0  # ">"


# ---------------------------------------------------------------------------
# The expander (mac_parse + mac_expand with MAC_EXP_FLAG_RECURSE).

class _Expander:
    """One top-level expansion: a result buffer and a nesting counter.

    ``lookup(name)`` returns the raw value of a parameter or None when it is
    undefined.  ``depth`` is a one-element list shared by every expansion
    started for the same top-level request, guarding against unbounded
    recursion through relational operands.
    """

    __slots__ = ("out", "level", "lookup", "depth")

    def __init__(self, lookup: Callable[[str], Optional[str]], depth: List[int]):
        self.out: List[str] = []
        self.level = 0
        self.lookup = lookup
        self.depth = depth

    # mac_parse(): split text into literals and $name / ${...} / $(...).
    def parse(self, text: str) -> None:
        depth = self.depth
        depth[0] += 1
        if depth[0] > _MAX_TOTAL_DEPTH:
            raise ConfigError('unreasonable macro call nesting: "%s"' % text)
        n = len(text)
        lit: List[str] = []
        i = 0
        while i < n:
            j = text.find("$", i)
            if j < 0:
                lit.append(text[i:])
                break
            if j > i:
                lit.append(text[i:j])
            if j + 1 < n and text[j + 1] == "$":      # "$$" is a literal "$"
                lit.append("$")
                i = j + 2
                continue
            if lit:
                self.literal("".join(lit))
                lit = []
            k = j + 1
            if k < n and text[k] in "({":
                opening = text[k]
                closing = ")" if opening == "(" else "}"
                nest = 1
                e = k + 1
                while True:
                    if e >= n:
                        raise ConfigError('truncated macro reference: "%s"' % text)
                    c = text[e]
                    if c == opening:
                        nest += 1
                    elif c == closing:
                        nest -= 1
                        if nest == 0:
                            break
                    e += 1
                body = text[k + 1:e]
                i = e + 1
            else:
                e = k
                while e < n and text[e] in _NAME_CHARS:
                    e += 1
                body = text[k:e]
                i = e
            if not body:
                raise ConfigError('empty macro name: "%s"' % text)
            self.expr(body)
        if lit:
            self.literal("".join(lit))
        depth[0] -= 1

    def _enter(self, what: str) -> None:
        if self.level > _MAX_LEVEL:
            raise ConfigError('unreasonable macro call nesting: "%s"' % what)
        self.level += 1

    def literal(self, text: str) -> None:
        self._enter(text)
        self.out.append(text)
        self.level -= 1

    # Helpers for {text} operands.
    @staticmethod
    def _find_curly(s: str, pos: int) -> int:
        """Index of '{' after optional whitespace at pos, or -1."""
        n = len(s)
        p = pos
        while p < n and s[p] in _WS:
            p += 1
        return p if p < n and s[p] == "{" else -1

    @staticmethod
    def _curly_payload(s: str, pos: int) -> Tuple[str, int]:
        """Balance {} starting at s[pos] == '{'; return (payload, next pos).

        Whitespace after the closing '}' is skipped.
        """
        n = len(s)
        nest = 1
        p = pos + 1
        while True:
            if p >= n:
                raise ConfigError('unbalanced {} in attribute expression: "%s"'
                                  % s[pos:])
            c = s[p]
            if c == "{":
                nest += 1
            elif c == "}":
                nest -= 1
                if nest <= 0:
                    break
            p += 1
        payload = s[pos + 1:p]
        p += 1
        while p < n and s[p] in _WS:
            p += 1
        return payload, p

    def _relational(self, s: str, pos: int) -> Tuple[str, int]:
        """Parse and evaluate "{a} OP {b}" at s[pos] == '{'."""
        left, p = self._curly_payload(s, pos)
        n = len(s)
        q = p
        while q < n and s[q] in _OP_CHARS:
            q += 1
        op = s[p:q]
        if op not in _OPERATORS:
            raise ConfigError('"==" or "!=" or "<" or "<=" or ">=" or ">" '
                              'expected at: "...%s}>>>%.20s"' % (left, s[p:]))
        compare = _cmp_plain
        if q < n and s[q] in _ALNUM:
            r = q
            while r < n and s[r] in _ALNUM:
                r += 1
            ext = _RELOP_EXTENSIONS.get(s[p:r])
            if ext is None:
                raise ConfigError('bad operator suffix at: "...%s>>>%s"'
                                  % (op, s[q:r]))
            compare = ext
            q = r
        c = self._find_curly(s, q)
        if c < 0:
            raise ConfigError('"{expression}" expected at: "...{%s} %s>>>%.20s"'
                              % (left, op, s[q:]))
        right, p = self._curly_payload(s, c)
        # Operands are expanded as separate, complete expansions.
        lval = _expand_text(left, self.lookup, self.depth)
        rval = _expand_text(right, self.lookup, self.depth)
        return (_TRUE if _relop_true(op, compare(lval, rval)) else _FALSE), p

    # mac_expand_callback() for a ${...} / $name body.
    def expr(self, body: str) -> None:
        self._enter(body)
        n = len(body)
        ws = _WS
        p = 0
        while p < n and body[p] in ws:
            p += 1
        if p < n and body[p] == "{":
            # Relational expression, optionally followed by ? or :.
            value, p = self._relational(body, p)
            ch = ""
            if p < n:
                ch = body[p]
                if ch not in "?:":
                    raise ConfigError('"?" or ":" expected at: "...}>>>%.20s"'
                                      % body[p:])
                p += 1
        else:
            # Named parameter, optionally followed by ? or :.
            start = p
            ch = ""
            while True:
                t = p
                while t < n and body[t] in ws:
                    t += 1
                if t >= n:
                    name = body[start:p]
                    p = n
                    break
                c = body[t]
                if c == "?" or c == ":":
                    name = body[start:p]
                    ch = c
                    p = t + 1
                    break
                if body[p] not in _NAME_CHARS:
                    raise ConfigError('attribute name syntax error at: '
                                      '"...%s>>>%.20s"' % (body[:p], body[p:]))
                p += 1
            value = self.lookup(name)

        if ch == "?":
            c = self._find_curly(body, p)
            if c >= 0:
                if_true, p = self._curly_payload(body, c)
            else:
                if_true, p = body[p:], n
            if value:
                self.parse(if_true)
            if p < n:
                if body[p] != ":":
                    raise ConfigError('":" expected at: "...%s}>>>%.20s"'
                                      % (if_true, body[p:]))
                p += 1
                self._if_false(body, p, value)
        elif ch == ":":
            self._if_false(body, p, value)
        elif value:
            # Unconditional: expand the value recursively.
            self.parse(value)
        self.level -= 1

    def _if_false(self, body: str, p: int, value: Optional[str]) -> None:
        n = len(body)
        c = self._find_curly(body, p)
        if c >= 0:
            if_false, p = self._curly_payload(body, c)
        else:
            if_false, p = body[p:], n
        if not value:
            self.parse(if_false)
        if p < n:
            raise ConfigError('unexpected input at: "...%s}>>>%.20s"'
                              % (if_false, body[p:]))


def _expand_text(text: str, lookup: Callable[[str], Optional[str]],
                 depth: Optional[List[int]] = None) -> str:
    if "$" not in text:
        return text
    exp = _Expander(lookup, depth if depth is not None else [0])
    try:
        exp.parse(text)
    except RecursionError:
        raise ConfigError('unreasonable macro call nesting: "%s"' % text) from None
    return "".join(exp.out)


def expand(text: str, lookup: Callable[[str], Optional[str]]) -> str:
    """Expand ``$name`` references in *text* (recursively), Postfix style.

    *lookup* maps a name to its raw value, or None when undefined.
    """
    return _expand_text(text, lookup)


# ---------------------------------------------------------------------------
# main.cf reading (readllines() + split_nameval()).

def _parse_main_cf(data: str, path: str) -> Dict[str, str]:
    result: Dict[str, str] = {}
    logical: Optional[List[str]] = None   # pieces of the current logical line
    first_lineno = 0
    orphan = False

    def finish() -> None:
        if logical is None or orphan:
            return
        line = "".join(logical)
        name, value, err = _split_nameval(line)
        if err:
            raise ConfigError('%s, line %d: %s: "%s"' % (path, first_lineno, err, line))
        result[name] = value

    for lineno, line in enumerate(data.split("\n"), 1):
        stripped = line.lstrip(_C_SPACE)
        if not stripped or stripped[0] == "#":
            continue                      # blank or comment: dropped, no line break
        if line[0] in _C_SPACE:
            if logical is None:
                # Continuation text with nothing to continue: Postfix warns
                # and skips it (together with its own continuations).
                logical, orphan, first_lineno = [], True, lineno
            logical.append(line)
            continue
        finish()
        logical, orphan, first_lineno = [line], False, lineno
    finish()
    return result


def _split_nameval(line: str) -> Tuple[str, str, Optional[str]]:
    n = len(line)
    p = 0
    while p < n and line[p] in _C_SPACE:
        p += 1
    if p >= n or line[p] == "=":
        return "", "", "missing attribute name"
    e = p
    while e < n and line[e] not in _C_SPACE and line[e] != "=":
        e += 1
    c = e
    while c < n and line[c] in _C_SPACE:
        c += 1
    if c >= n or line[c] != "=":
        return "", "", "missing '=' after attribute name"
    return line[p:e], line[c + 1:].strip(_C_SPACE), None


# ---------------------------------------------------------------------------

class Params:
    """Parameter store for one agent process.  Build it with :meth:`load`."""

    def __init__(self, main_cf: Dict[str, str], overrides: Sequence[Tuple[str, str]] = (),
                 config_dir: str = DEF_CONFIG_DIR, process_name: str = "smtp",
                 service_name: str = "smtp", prefix: str = "smtp",
                 process_id: Optional[int] = None) -> None:
        if prefix not in ("smtp", "lmtp"):
            raise ValueError("prefix must be 'smtp' or 'lmtp', not %r" % (prefix,))
        self.prefix = prefix
        self.config_dir = config_dir
        # Default-level pseudo parameters (replaceable by main.cf and -o).
        self._soft: Dict[str, str] = {
            "process_name": process_name,
            "config_directory": config_dir,
        }
        raw = dict(main_cf)
        for name, value in overrides:
            raw[name] = value
        # Set by the daemon after option parsing.
        raw["service_name"] = service_name
        raw["process_id"] = str(os.getpid() if process_id is None else process_id)
        self._raw = raw
        self._main_cf = main_cf
        self._cache: Dict[str, str] = {}
        self._host_cache: Dict[str, str] = {}
        self._host_busy: set = set()

    @classmethod
    def load(cls, config_dir: Optional[str] = None, overrides: Sequence[Tuple[str, str]] = (),
             process_name: str = "smtp", service_name: str = "smtp",
             prefix: str = "smtp") -> "Params":
        """Read ``config_dir/main.cf`` (default ``$MAIL_CONFIG`` or /etc/postfix)."""
        if config_dir is None:
            config_dir = os.environ.get("MAIL_CONFIG") or DEF_CONFIG_DIR
        path = os.path.join(config_dir, "main.cf")
        try:
            with open(path, "rb") as fp:
                data = fp.read()
        except OSError as exc:
            raise ConfigError("open %s: %s" % (path, exc.strerror or exc)) from None
        main_cf = _parse_main_cf(data.decode("utf-8", "surrogateescape"), path)
        return cls(main_cf, overrides, config_dir=config_dir, process_name=process_name,
                   service_name=service_name, prefix=prefix)

    # -- raw values ---------------------------------------------------------

    def raw(self, name: str) -> Optional[str]:
        """Unexpanded value (override > main.cf > default), None if unknown."""
        value = self._raw.get(name)
        if value is not None:
            return value
        value = self._soft.get(name)
        if value is not None:
            return value
        value = DEFAULTS.get(name)
        if value is not None:
            return value
        if name in ("myhostname", "mydomain", "mynetworks"):
            return self._host_default(name)
        return None

    def main_cf(self) -> Dict[str, str]:
        """The name=value pairs read from main.cf (raw, a copy)."""
        return dict(self._main_cf)

    def names(self) -> set:
        """Every parameter name with a value (defaults, main.cf, -o, pseudo)."""
        out = set(DEFAULTS)
        out.update(self._raw, self._soft, ("myhostname", "mydomain", "mynetworks"))
        return out

    def _host_default(self, name: str) -> str:
        cached = self._host_cache.get(name)
        if cached is not None:
            return cached
        if name in self._host_busy:
            # e.g. myhostname = $mydomain with no mydomain setting: the
            # daemon sees the not-yet-initialised parameter as undefined.
            return ""
        self._host_busy.add(name)
        try:
            if name == "myhostname":
                import socket
                value = socket.gethostname()
                if "." not in value:
                    dom = self._raw.get("mydomain")
                    dom = DEF_MYDOMAIN if dom is None else self.expand(dom)
                    value = value + "." + dom
            elif name == "mydomain":
                host = self.get("myhostname")
                dot = host.find(".")
                value = host[dot + 1:] if dot >= 0 else DEF_MYDOMAIN
            else:
                # Postfix derives this from the interface addresses and
                # $mynetworks_style; the delivery agents never use it.
                value = "127.0.0.0/8 [::1]/128"
        finally:
            self._host_busy.discard(name)
        self._host_cache[name] = value
        return value

    # -- expanded values ----------------------------------------------------

    def expand(self, text: str) -> str:
        """Expand ``$name`` references in arbitrary text against this store."""
        return _expand_text(text, self.raw)

    def get(self, name: str) -> str:
        """Fully expanded value; "" for unknown names.

        The few "raw" parameters (RAW_PARAMS, e.g. forward_path) are returned
        unexpanded, as their owning daemons and ``postconf -x`` do; a $name
        reference *to* one of them is still expanded recursively.
        """
        value = self._cache.get(name)
        if value is None:
            raw = self.raw(name)
            if raw is None:
                value = ""
            elif name in RAW_PARAMS:
                value = raw
            else:
                value = _expand_text(raw, self.raw)
            self._cache[name] = value
        return value

    def get_bool(self, name: str) -> bool:
        """Postfix booleans: "yes" or "no", case-insensitively; else ConfigError."""
        value = self.get(name)
        low = value.lower() if value.isascii() else value
        if low == "yes":
            return True
        if low == "no":
            return False
        raise ConfigError("bad boolean configuration: %s = %s" % (name, value))

    def get_int(self, name: str) -> int:
        """A decimal integer (C ``int``; ``long`` for the few long parameters)."""
        value = self.get(name)
        num, end, erange = _strtol(value)
        lo, hi = (_LONG_MIN, _LONG_MAX) if name in _LONG_PARAMS else (_INT_MIN, _INT_MAX)
        if not value or end != len(value) or erange or not lo <= num <= hi:
            raise ConfigError("bad numerical configuration: %s = %s" % (name, value))
        return num

    def get_time(self, name: str, default_unit: Optional[str] = None) -> float:
        """A time value in seconds: "30s", "5m", "1h", "1d", "1w".

        A bare number takes *default_unit*; when that is None the unit is
        taken from the parameter's compiled default (as Postfix does, e.g.
        "d" for maximal_queue_lifetime), falling back to "s".
        """
        if default_unit is None:
            default_unit = self._default_time_unit(name)
        value = self.get(name)
        secs = _conv_time(value, default_unit)
        if secs is None:
            raise ConfigError("parameter %s: bad time value or unit: %s" % (name, value))
        return float(secs)

    def _default_time_unit(self, name: str) -> str:
        base = DEFAULTS.get(name)
        if base:
            for c in self.expand(base):
                if c.isalpha() and c.isascii():
                    return c
        return "s"

    def get_list(self, name: str) -> List[str]:
        """Split on commas and whitespace; empty items dropped."""
        return _split_list(self.get(name))

    # -- personality ----------------------------------------------------------

    def p(self, name: str) -> str:
        """The name this personality reads: smtp_* -> lmtp_* twin for lmtp.

        smtp(8)-only parameters without an lmtp twin (for example
        smtp_always_send_ehlo) and unprefixed names are returned unchanged.
        """
        if self.prefix == "smtp" or not name.startswith("smtp_"):
            return name
        twin = _LMTP_IRREGULAR.get(name)
        if twin is not None:
            return twin
        twin = "lmtp_" + name[5:]
        return twin if twin in DEFAULTS else name

    def sget(self, name: str) -> str:
        return self.get(self.p(name))

    def sraw(self, name: str) -> Optional[str]:
        return self.raw(self.p(name))

    def sbool(self, name: str) -> bool:
        return self.get_bool(self.p(name))

    def sint(self, name: str) -> int:
        return self.get_int(self.p(name))

    def stime(self, name: str, default_unit: Optional[str] = None) -> float:
        return self.get_time(self.p(name), default_unit)

    def slist(self, name: str) -> List[str]:
        return self.get_list(self.p(name))


def _split_list(value: str) -> List[str]:
    for sep in ",\t\r\n":
        if sep in value:
            value = value.replace(sep, " ")
    return [item for item in value.split(" ") if item]


_TIME_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def _conv_time(value: str, default_unit: str) -> Optional[int]:
    """Port of conv_time(): None when Postfix would reject the value."""
    num, end, erange = _strtol(value)
    if not value or erange or not 0 <= num <= _INT_MAX:
        return None
    unit = value[end] if end < len(value) else default_unit
    mult = _TIME_UNITS.get(unit)
    if mult is None:
        return None
    if mult != 1 and not num < _INT_MAX // mult:
        return None
    return num * mult
