"""The table object every lookup-table type derives from.

This is the part of Postfix's dict(3) layer that decides what a lookup key
looks like by the time a table type sees it:

- dict flags (``DICT_FLAG_*``, same bit values as Postfix's ``dict.h``), of
  which the agent passes ``LOCK``, ``FOLD_FIX`` and ``UTF8_REQUEST`` (as
  smtp(8) does for its password, TLS policy and generic tables);
- the UTF-8 layer (dict_utf8.c), active when ``smtputf8_enable = yes`` and
  the opener asked for it: a key that is not valid UTF-8 is "not found" with
  a warning, a case-folding table gets the key Unicode-casefolded (all-ASCII
  keys are lowercased byte-wise), and a result that is not valid UTF-8 is a
  configuration error;
- without the UTF-8 layer each type folds the key itself, ASCII-only, when
  its own flag is set: ``FOLD_FIX`` for fixed-key tables (hash, btree, lmdb,
  cdb, texthash, inline), ``FOLD_MUL`` for pattern tables (regexp, pcre,
  socketmap, tcp);
- a key is a C string: anything after a NUL byte is never seen.

Keys and values are ``str``; bytes that are not UTF-8 travel as
``surrogateescape`` code points, as everywhere else in this package.
"""

from __future__ import annotations

import os
from typing import Any, List, Optional, Tuple

__all__ = [
    "MapError", "Table", "Surrogate", "RecordingLog", "NullLog",
    "DICT_FLAG_NONE", "DICT_FLAG_DUP_WARN", "DICT_FLAG_DUP_IGNORE",
    "DICT_FLAG_TRY0NULL", "DICT_FLAG_TRY1NULL", "DICT_FLAG_FIXED",
    "DICT_FLAG_PATTERN", "DICT_FLAG_LOCK", "DICT_FLAG_DUP_REPLACE",
    "DICT_FLAG_NO_REGSUB", "DICT_FLAG_NO_PROXY", "DICT_FLAG_NO_UNAUTH",
    "DICT_FLAG_FOLD_FIX", "DICT_FLAG_FOLD_MUL", "DICT_FLAG_FOLD_ANY",
    "DICT_FLAG_MULTI_WRITER", "DICT_FLAG_UTF8_REQUEST", "DICT_FLAG_UTF8_ACTIVE",
    "DICT_FLAG_IMPL_MASK", "DICT_FLAG_RQST_MASK", "DICT_FLAG_INST_MASK",
    "DICT_ERR_NONE", "DICT_ERR_RETRY", "DICT_ERR_CONFIG",
    "ascii_lower", "casefold", "valid_utf8",
]

# Bit values as in Postfix 3.7 src/util/dict.h (they travel to proxymap).
DICT_FLAG_NONE = 0
DICT_FLAG_DUP_WARN = 1 << 0
DICT_FLAG_DUP_IGNORE = 1 << 1
DICT_FLAG_TRY0NULL = 1 << 2
DICT_FLAG_TRY1NULL = 1 << 3
DICT_FLAG_FIXED = 1 << 4
DICT_FLAG_PATTERN = 1 << 5
DICT_FLAG_LOCK = 1 << 6
DICT_FLAG_DUP_REPLACE = 1 << 7
DICT_FLAG_SYNC_UPDATE = 1 << 8
DICT_FLAG_DEBUG = 1 << 9
DICT_FLAG_NO_REGSUB = 1 << 11
DICT_FLAG_NO_PROXY = 1 << 12
DICT_FLAG_NO_UNAUTH = 1 << 13
DICT_FLAG_FOLD_FIX = 1 << 14
DICT_FLAG_FOLD_MUL = 1 << 15
DICT_FLAG_FOLD_ANY = DICT_FLAG_FOLD_FIX | DICT_FLAG_FOLD_MUL
DICT_FLAG_OPEN_LOCK = 1 << 16
DICT_FLAG_BULK_UPDATE = 1 << 17
DICT_FLAG_MULTI_WRITER = 1 << 18
DICT_FLAG_UTF8_REQUEST = 1 << 19
DICT_FLAG_UTF8_ACTIVE = 1 << 20
DICT_FLAG_SRC_RHS_IS_FILE = 1 << 21

DICT_FLAG_PARANOID = DICT_FLAG_NO_REGSUB | DICT_FLAG_NO_PROXY | DICT_FLAG_NO_UNAUTH
DICT_FLAG_IMPL_MASK = DICT_FLAG_FIXED | DICT_FLAG_PATTERN | DICT_FLAG_MULTI_WRITER
DICT_FLAG_RQST_MASK = (DICT_FLAG_FOLD_ANY | DICT_FLAG_LOCK | DICT_FLAG_DUP_REPLACE
                       | DICT_FLAG_DUP_WARN | DICT_FLAG_DUP_IGNORE | DICT_FLAG_SYNC_UPDATE
                       | DICT_FLAG_PARANOID | DICT_FLAG_UTF8_REQUEST)
DICT_FLAG_INST_MASK = ~(DICT_FLAG_IMPL_MASK | DICT_FLAG_RQST_MASK) & 0xFFFFFFFF

DICT_ERR_NONE = 0
DICT_ERR_RETRY = -1
DICT_ERR_CONFIG = -2


class MapError(Exception):
    """A table lookup failed (not "not found"): the caller must defer.

    ``error`` is DICT_ERR_RETRY (table unavailable, server down, I/O error)
    or DICT_ERR_CONFIG (bad table content, server says permanent error).
    ``table`` is "type:name" when known.
    """

    def __init__(self, message: str, error: int = DICT_ERR_RETRY, table: str = "") -> None:
        super().__init__(message)
        self.error = error
        self.table = table


class NullLog:
    """Logger stand-in that drops everything."""

    def info(self, text: str) -> None:
        pass

    def warning(self, text: str) -> None:
        pass

    def error(self, text: str) -> None:
        pass


class RecordingLog(NullLog):
    """Keeps (level, text) pairs: for tests and for callers without a logger."""

    def __init__(self) -> None:
        self.records: List[Tuple[str, str]] = []

    def info(self, text: str) -> None:
        self.records.append(("info", text))

    def warning(self, text: str) -> None:
        self.records.append(("warning", text))

    def error(self, text: str) -> None:
        self.records.append(("error", text))

    def texts(self, level: Optional[str] = None) -> List[str]:
        return [t for lv, t in self.records if level is None or lv == level]


_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASCII_LOWER = str.maketrans(_UPPER, _UPPER.lower())


def ascii_lower(s: str) -> str:
    """Postfix lowercase(): A-Z only (the C locale)."""
    return s.lower() if s.isascii() else s.translate(_ASCII_LOWER)


def casefold(s: str) -> str:
    """Postfix casefold() in UTF-8 mode: ASCII lowercase, else full Unicode folding."""
    return s.lower() if s.isascii() else s.casefold()


def valid_utf8(s: str) -> bool:
    """True when *s* encodes to well-formed UTF-8 (no escaped raw bytes, no surrogates)."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Table:
    """One open table: the dict(3) object.  Subclasses implement :meth:`_get`.

    ``flags`` holds the opener's dict flags plus the type's own
    ``FIXED``/``PATTERN``/``MULTI_WRITER`` bits.  ``fold_flag`` is the flag
    under which the type folds keys itself when the UTF-8 layer is off.
    """

    type = "?"
    fold_flag = 0
    impl_flags = DICT_FLAG_FIXED

    def __init__(self, name: str, flags: int, log: Any = None, utf8: bool = False) -> None:
        self.name = name
        self.flags = flags | self.impl_flags
        self.log = log if log is not None else NullLog()
        # dict_open3(): the UTF-8 proxy layer is inserted when the system has
        # SMTPUTF8 enabled and the opener requested it.
        self.utf8 = bool(utf8 and (flags & DICT_FLAG_UTF8_REQUEST))
        self._stat_fd = -1
        self._mtime = 0

    @property
    def title(self) -> str:
        return "%s:%s" % (self.type, self.name)

    @property
    def fixed(self) -> bool:
        return bool(self.flags & DICT_FLAG_FIXED)

    # -- lookups ---------------------------------------------------------

    def lookup(self, key: str) -> Optional[str]:
        """The table's answer for *key*, None if not found; MapError on failure."""
        nul = key.find("\0")
        if nul >= 0:
            key = key[:nul]
        if self.utf8:
            if not valid_utf8(key):
                self.log.warning('%s:%s: non-UTF-8 key "%s": malformed UTF-8 or invalid '
                                 'codepoint' % (self.type, self.name, key))
                return None
            fold = self.flags & DICT_FLAG_FOLD_ANY
            if fold and fold & (DICT_FLAG_FOLD_FIX if self.flags & DICT_FLAG_FIXED
                                else DICT_FLAG_FOLD_MUL):
                key = casefold(key)
            value = self._get(key)
            if value is not None and not valid_utf8(value):
                self.log.warning('%s:%s: key "%s": non-UTF-8 value "%s": malformed UTF-8 '
                                 'or invalid codepoint' % (self.type, self.name, key, value))
                raise MapError("%s:%s: non-UTF-8 value" % (self.type, self.name),
                               DICT_ERR_CONFIG, self.title)
            return value
        if self.flags & self.fold_flag:
            key = ascii_lower(key)
        return self._get(key)

    def _get(self, key: str) -> Optional[str]:
        raise NotImplementedError

    # -- freshness and cleanup ---------------------------------------------

    def _watch(self, fd: int) -> None:
        """Remember *fd* for change detection (dict->stat_fd, dict->mtime)."""
        self._stat_fd = fd
        self._mtime = int(os.fstat(fd).st_mtime)

    def changed(self) -> bool:
        """dict_changed_name(): the file was modified (unless the type is
        multi-writer safe) or removed/replaced since it was opened."""
        if self._stat_fd < 0:
            return False
        try:
            st = os.fstat(self._stat_fd)
        except OSError:
            return True
        if not (self.flags & DICT_FLAG_MULTI_WRITER) and int(st.st_mtime) != self._mtime:
            return True
        return st.st_nlink == 0

    def subtables(self) -> List["Table"]:
        return []

    def close(self) -> None:
        if self._stat_fd >= 0:
            try:
                os.close(self._stat_fd)
            except OSError:
                pass
            self._stat_fd = -1

    def __repr__(self) -> str:
        return "<%s %s>" % (type(self).__name__, self.title)


class Surrogate(Table):
    """dict_surrogate(): what an open failure leaves behind in a daemon.

    The problem was logged (as an error) when the table was opened; every
    lookup logs "type:name is unavailable. reason" and fails, so the
    delivery is deferred instead of the process dying.
    """

    impl_flags = DICT_FLAG_PATTERN

    def __init__(self, type_: str, name: str, flags: int, reason: str,
                 log: Any = None) -> None:
        super().__init__(name, flags, log, utf8=False)
        self.type = type_
        self.reason = reason

    def lookup(self, key: str) -> Optional[str]:
        return self._get(key)

    def _get(self, key: str) -> Optional[str]:
        text = "%s:%s is unavailable. %s" % (self.type, self.name, self.reason)
        self.log.warning(text)
        raise MapError(text, DICT_ERR_RETRY, self.title)


class OpenError(Exception):
    """Raised by a type's constructor: becomes a Surrogate with this reason."""
