"""static:, fail:, inline:{...} and texthash: tables (in memory, no I/O but a read).

inline and texthash are Postfix's "internal" hash table (dict_ht.c) filled
from the table name or a postmap-format text file; they fold keys like a
hash table does (FOLD_FIX), and keep keys in their quoted source form.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional

from .base import (DICT_FLAG_DUP_IGNORE, DICT_FLAG_DUP_REPLACE, DICT_FLAG_DUP_WARN,
                   DICT_FLAG_FIXED, DICT_FLAG_FOLD_FIX, DICT_FLAG_PATTERN,
                   DICT_ERR_RETRY, MapError, OpenError, Table, ascii_lower, casefold,
                   valid_utf8)
from .text import decode, extpar, mystrtokq, readllines, split_qnameval, split_thash_line


class StaticTable(Table):
    """static:value, static:{ value with spaces } - every key finds the value."""

    type = "static"
    impl_flags = DICT_FLAG_FIXED

    def __init__(self, name: str, flags: int, log: Any = None, utf8: bool = False) -> None:
        super().__init__(name, flags, log, utf8)
        value = name
        if name.startswith("{"):
            value, err = extpar(name)
            if err:
                raise OpenError("bad static:name syntax: %s" % err)
        self.value = value

    def _get(self, key: str) -> Optional[str]:
        return self.value


class FailTable(Table):
    """fail:name - every lookup fails (DICT_ERR_RETRY), silently."""

    type = "fail"
    impl_flags = DICT_FLAG_PATTERN

    def _get(self, key: str) -> Optional[str]:
        raise MapError("%s:%s lookup failed" % (self.type, self.name), DICT_ERR_RETRY,
                       self.title)


class HtTable(Table):
    """Postfix's in-memory hash ("internal") table."""

    type = "internal"
    fold_flag = DICT_FLAG_FOLD_FIX
    impl_flags = DICT_FLAG_FIXED

    def __init__(self, name: str, flags: int, log: Any = None, utf8: bool = False) -> None:
        super().__init__(name, flags, log, utf8)
        self.data: Dict[str, str] = {}

    def _store_key(self, key: str) -> Optional[str]:
        """The key as dict_ht_update() stores it (through the UTF-8 layer if active)."""
        if self.utf8:
            if not valid_utf8(key):
                self.log.warning('%s:%s: non-UTF-8 key "%s": malformed UTF-8 or invalid '
                                 'codepoint' % (self.type, self.name, key))
                return None
            return casefold(key) if self.flags & DICT_FLAG_FOLD_FIX else key
        return ascii_lower(key) if self.flags & DICT_FLAG_FOLD_FIX else key

    def _get(self, key: str) -> Optional[str]:
        return self.data.get(key)


class InlineTable(HtTable):
    """inline:{ key=value, { key = text with spaces }, ... }"""

    type = "inline"

    def __init__(self, name: str, flags: int, log: Any = None, utf8: bool = False) -> None:
        super().__init__(name, flags, log, utf8)
        if self.utf8 and not valid_utf8(name):
            raise OpenError('bad UTF-8 syntax: "inline:%s"; need "inline:{name=value...}"'
                            % name)
        n = len(name)
        from .text import balpar
        if balpar(name) != n or n == 0 or not name[1:n - 1]:
            raise OpenError('bad syntax: "inline:%s"; need "inline:{name=value...}"' % name)
        err = None
        count = 0
        for item in mystrtokq(name[1:n - 1]):
            if item.startswith("{"):
                item, err = extpar(item)
                if err:
                    break
            key, value, err = split_qnameval(item)
            if err:
                break
            skey = self._store_key(key)
            if skey is not None:
                if self.utf8 and not valid_utf8(value):
                    self.log.warning('%s:%s: key "%s": non-UTF-8 value "%s": malformed '
                                     'UTF-8 or invalid codepoint'
                                     % (self.type, self.name, key, value))
                else:
                    self.data[skey] = value        # no duplicate check: last wins
            count += 1
        if err is not None or count == 0:
            raise OpenError('%s: "inline:%s"; need "inline:{name=value...}"'
                            % (err if err is not None else "empty table", name))


class TextHashTable(HtTable):
    """texthash:/path - a postmap source file read into memory at open."""

    type = "texthash"

    def __init__(self, name: str, flags: int, log: Any = None, utf8: bool = False) -> None:
        super().__init__(name, flags, log, utf8)
        try:
            with open(name, "rb") as fp:
                text = decode(fp.read())
        except OSError as exc:
            raise OpenError("open database %s: %s" % (name, exc.strerror or exc)) from None
        warn = self.log.warning
        for lineno, line, problem in readllines(text):
            if problem:
                warn("%s: %s" % (name, problem))
                continue
            if self.utf8 and not valid_utf8(line):
                warn('%s, line %d: non-UTF-8 input "%s" -- ignoring this line'
                     % (name, lineno, line))
                continue
            key, value, err = split_thash_line(line)
            if err:
                warn("%s, line %d: %s -- ignoring this line" % (name, lineno, err))
                continue
            if not key or not value:
                warn("%s, line %d: expected format: key whitespace value -- ignoring "
                     "this line" % (name, lineno))
                continue
            if key.endswith(":"):
                warn('%s, line %d: record is in "key: value" format; is this an alias file?'
                     % (name, lineno))
            skey = self._store_key(key)
            if skey is None:
                continue
            if skey in self.data:
                if flags & DICT_FLAG_DUP_IGNORE:
                    pass
                elif flags & DICT_FLAG_DUP_REPLACE:
                    self.data[skey] = value
                elif flags & DICT_FLAG_DUP_WARN:
                    warn('%s, line %d: duplicate entry: "%s"' % (name, lineno, key))
                else:
                    raise OpenError('%s, line %d: duplicate entry: "%s"' % (name, lineno, key))
            else:
                self.data[skey] = value
        try:
            self.owner_uid = os.stat(name).st_uid
        except OSError:
            self.owner_uid = -1
