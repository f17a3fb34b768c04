"""Which mechanism: the EHLO AUTH list, smtp_sasl_mechanism_filter, the
security options, and the preference order.

How each security option maps to each mechanism (Cyrus semantics: a
mechanism is allowed when it declares every flag the options ask for; the
flags are in :mod:`postfix_smtp.sasl.mechanisms`).  "ok": allowed.

===============  ======  ====  =====  =====  =========  =======
option           SCRAM*  CRAM  PLAIN  LOGIN  ANONYMOUS  XOAUTH2
===============  ======  ====  =====  =====  =========  =======
noplaintext      ok      ok    --     --     ok         --
noanonymous      ok      ok    ok     ok     --         ok
noactive         ok      --    --     --     --         --
nodictionary     --      --    --     --     --         --
mutual_auth      ok      --    --     --     --         --
forward_secrecy  --      --    --     --     --         --
===============  ======  ====  =====  =====  =========  =======

``noplaintext`` excludes the mechanisms that send the password itself;
``noanonymous`` excludes ANONYMOUS; ``noactive`` keeps only mechanisms
safe against active attacks and ``mutual_auth`` only those that
authenticate the server (SCRAM); no mechanism here (nor any of Debian's
Cyrus plug-ins) declares ``nodictionary`` or ``forward_secrecy``, so
those leave nothing.

As with Cyrus in stock smtp(8), ``noplaintext`` applies on TLS sessions
too: set ``smtp_sasl_tls_security_options = noanonymous`` to allow PLAIN
and LOGIN over TLS.
"""

from __future__ import annotations

import re

from .mechanisms import (FORWARD_SECRECY, MECHANISMS, MUTUAL_AUTH, NOACTIVE, NOANONYMOUS,
                         NODICTIONARY, NOPLAINTEXT, PREFERENCE)

SECURITY_OPTIONS = {
    "noplaintext": NOPLAINTEXT,
    "noactive": NOACTIVE,
    "nodictionary": NODICTIONARY,
    "forward_secrecy": FORWARD_SECRECY,
    "noanonymous": NOANONYMOUS,
    "mutual_auth": MUTUAL_AUTH,
}

_LIST_SPLIT = re.compile(r"[, \t\r\n]+")


class SaslConfigError(Exception):
    """A configuration problem that stock smtp(8) treats as fatal.

    ``warnings`` are the warning lines stock logs before its fatal error."""

    def __init__(self, text: str, warnings: tuple = ()) -> None:
        super().__init__(text)
        self.text = text
        self.warnings = tuple(warnings)


def parse_security_options(value: str) -> int:
    """``smtp_sasl_security_options`` and friends -> SASL_SEC_* flags.

    Names are case-sensitive, as in Postfix's name_mask().  An unknown name
    makes the whole value unusable: stock warns, then fails the session with
    a fatal error."""
    if value == "":
        return 0
    flags = 0
    for name in _LIST_SPLIT.split(value):
        if not name:
            continue
        if name not in SECURITY_OPTIONS:
            raise SaslConfigError(
                "SASL per-connection initialization failed",
                ('unknown SASL security options value "%s" in "%s"' % (name, value),
                 "bad per-session SASL security properties"))
        flags |= SECURITY_OPTIONS[name]
    if flags == 0:
        raise SaslConfigError("SASL per-connection initialization failed",
                              ("bad per-session SASL security properties",))
    return flags


def allowed(name: str, flags: int) -> bool:
    """Cyrus: ``((wanted ^ mech_flags) & wanted) == 0``."""
    mech = MECHANISMS.get(name)
    return mech is not None and (flags ^ mech.security_flags) & flags == 0


# --- smtp_sasl_mechanism_filter ------------------------------------------------------

class MechanismFilter:
    """Postfix string_list semantics: comma/space separated patterns, first
    match wins; ``!pattern`` negates; ``/file/name`` is replaced by the
    file's patterns; ``type:table`` matches when the lookup of the (lower
    case) name succeeds.  Plain names match case-insensitively.

    ``open_table(spec)`` returns an object with ``lookup(key)``; table
    errors (an exception, or a true ``error`` attribute after the lookup)
    make the filter fail as stock's does (a fatal error in stock)."""

    def __init__(self, value: str, open_table=None, param: str = "smtp_sasl_mechanism_filter"):
        if open_table is None:
            from .tables import open_filter_table as open_table
        self.value = value
        self.param = param
        self.patterns: list = []          # (match, kind, payload)
        self.warnings: list = []
        self._parse(value, True, open_table)

    def __bool__(self) -> bool:
        return bool(self.value.strip())

    def _parse(self, text: str, match: bool, open_table) -> None:
        for tok in re.finditer(r"[^, \t\r\n]+", text):
            item = tok.group(0)
            if item.startswith("#"):
                rest = text[tok.end():].lstrip(", \t\r\n")
                self.warnings.append("%s: comment at end of line is not supported: %s %s"
                                     % (self.param, item, rest))
                break
            m = match
            while item.startswith("!"):
                m = not m
                item = item[1:]
            if not item:
                raise SaslConfigError("%s: no pattern after '!'" % self.param)
            if item.startswith("/"):
                try:
                    with open(item, encoding="utf-8", errors="surrogateescape") as f:
                        lines = f.read().splitlines()
                except OSError as exc:
                    self.patterns.append((m, "error", "open file %s: %s"
                                          % (item, exc.strerror or exc)))
                    continue
                for line in lines:
                    if not line.startswith("#"):
                        self._parse(line, m, open_table)
            elif not item.startswith("[") and ":" in item:
                try:
                    self.patterns.append((m, "table", open_table(item)))
                except Exception as exc:      # an unusable table fails its lookups
                    self.patterns.append((m, "error", "%s: %s" % (item, exc)))
            else:
                self.patterns.append((m, "name", item.lower()))

    def match(self, mech: str) -> bool:
        """True if ``mech`` is kept.  Raises SaslConfigError on a table error
        (stock: fatal "SASL mechanism filter failed for: 'MECH'")."""
        key = mech.lower()
        for m, kind, payload in self.patterns:
            if kind == "name":
                if payload == key:
                    return m
            elif kind == "table":
                try:
                    found = payload.lookup(key)
                    failed = bool(getattr(payload, "error", 0))
                except Exception:
                    found, failed = None, True
                if failed:
                    raise SaslConfigError("sasl_mech_filter: SASL mechanism filter failed "
                                          "for: '%s'" % mech)
                if found is not None:
                    return m
            else:
                raise SaslConfigError("sasl_mech_filter: SASL mechanism filter failed for: "
                                      "'%s'" % mech, (payload,))
        return False

    def names_explicitly(self, mech: str) -> bool:
        """The filter admits ``mech`` by name (not through a table or a
        catch-all): the condition for offering XOAUTH2."""
        key = mech.lower()
        for m, kind, payload in self.patterns:
            if kind == "name" and payload == key:
                return m
        return False


def filter_mechanisms(flt: MechanismFilter | None, words: str) -> str:
    """sasl_mech_filter(): the server's words (original case, space
    separated) that the filter keeps; all of them without a filter."""
    if not flt or not words:
        return words
    return " ".join(w for w in words.split() if flt.match(w))


class HeloAuth:
    """Accumulates the AUTH keyword(s) of one EHLO reply as
    smtp_sasl_helo_auth() does: the filtered list of the first AUTH line
    that leaves anything; a later line with a different, non-empty list is
    appended (while the list is shorter than ``line_limit``); an empty
    filtered list logs a warning.  ``offered`` is set by any AUTH line
    (stock's SMTP_FEATURE_AUTH)."""

    def __init__(self, flt: MechanismFilter | None, namaddrport: str, line_limit: int = 2048):
        self.flt = flt
        self.namaddrport = namaddrport
        self.line_limit = line_limit
        self.mechanism_list: str | None = None
        self.offered = False
        self.warnings: list = []

    def add(self, words: str) -> None:
        mech_list = filter_mechanisms(self.flt, words)
        self.offered = True
        if self.mechanism_list is not None:
            if (self.mechanism_list.lower() != mech_list.lower() and mech_list
                    and len(self.mechanism_list) < self.line_limit):
                self.mechanism_list = self.mechanism_list + " " + mech_list
            return
        if mech_list:
            self.mechanism_list = mech_list
        elif words:
            self.warnings.append("%s offered no supported AUTH mechanisms: '%s'"
                                 % (self.namaddrport, words))
        else:
            self.warnings.append("%s offered null AUTH mechanism list" % self.namaddrport)


def auth_words(line_text: str) -> str | None:
    """The AUTH parameters of one EHLO reply line without its code
    (``AUTH PLAIN LOGIN`` and the old ``AUTH=PLAIN LOGIN``), as
    smtp_proto.c cuts them: the keyword ends at the first space, TAB or
    ``=``; None if the line is not an AUTH line."""
    text = line_text.lstrip(" \t=")
    m = re.match(r"[^ \t=]+", text)
    if not m or m.group(0).upper() != "AUTH":
        return None
    rest = text[m.end():]
    return rest[1:] if rest else ""


def parse_ehlo_auth(lines: list, flt: MechanismFilter | None, namaddrport: str,
                    discard: frozenset = frozenset(), line_limit: int = 2048) -> HeloAuth:
    """The AUTH state of an EHLO reply (``lines`` as in Reply.lines, with
    their codes); nothing when AUTH is in ``discard``."""
    h = HeloAuth(flt, namaddrport, line_limit)
    if "AUTH" in discard:
        return h
    for n, line in enumerate(lines):
        if n == 0:
            continue
        words = auth_words(line[4:] if len(line) > 3 else "")
        if words is not None:
            h.add(words)
    return h


def server_mechanisms(mech_list: str) -> list:
    """Names in a mechanism list as Cyrus splits it (any character other
    than letters, digits, ``-`` and ``_`` separates), upper case, without
    the ``-PLUS`` channel-binding variants (no channel binding here)."""
    out = []
    for name in re.split(r"[^A-Za-z0-9_-]+", mech_list):
        if name and not (len(name) > 5 and name.upper().endswith("-PLUS")):
            out.append(name.upper())
    return out


def choose(mech_list: str, flags: int, flt: MechanismFilter | None = None) -> str | None:
    """The mechanism to use: the first of PREFERENCE that the server offered
    (in the filtered ``mech_list``) and that the security ``flags`` allow.
    XOAUTH2 only when the filter names it explicitly."""
    offered = set(server_mechanisms(mech_list))
    for name in PREFERENCE:
        if name not in offered or not allowed(name, flags):
            continue
        if name == "XOAUTH2" and not (flt and flt.names_explicitly(name)):
            continue
        return name
    return None
