"""cdb: (pure-Python reader) and lmdb: (through the ``lmdb`` package) tables.

Both behave like dict_cdb.c/dict_lmdb.c in query mode: FOLD_FIX lowercases
the key, the key is tried with a trailing NUL and then without (the first
form that hits is kept), values lose a trailing NUL.  cdb files are
constant (postmap writes a new file and renames it), so no lock is taken;
lmdb lookups take a shared fcntl(2) lock when DICT_FLAG_LOCK is set, as
Postfix opens LMDB with MDB_NOLOCK and relies on that lock.
"""

from __future__ import annotations

import fcntl
import os
import struct
from typing import Any, Optional

from .base import (DICT_FLAG_FIXED, DICT_FLAG_FOLD_FIX, DICT_FLAG_LOCK,
                   DICT_FLAG_MULTI_WRITER, DICT_FLAG_TRY0NULL, DICT_FLAG_TRY1NULL,
                   DICT_ERR_RETRY, MapError, OpenError, Table)
from .bdb import _warn_if_older

_U32X2 = struct.Struct("<II")


def cdb_hash(key: bytes) -> int:
    h = 5381
    for b in key:
        h = (((h << 5) + h) & 0xFFFFFFFF) ^ b
    return h


def cdb_find(fd: int, key: bytes) -> Optional[bytes]:
    """Look *key* up in the cdb file open on *fd* (D. J. Bernstein's format)."""
    h = cdb_hash(key)
    head = os.pread(fd, 8, (h & 0xFF) * 8)
    if len(head) != 8:
        raise OSError(0, "truncated cdb file")
    tpos, slots = _U32X2.unpack(head)
    if slots == 0:
        return None
    if tpos + slots * 8 > os.fstat(fd).st_size:
        raise OSError(0, "corrupt cdb file")
    start = (h >> 8) % slots
    table = os.pread(fd, slots * 8, tpos)
    if len(table) != slots * 8:
        raise OSError(0, "truncated cdb file")
    klen = len(key)
    for k in range(slots):
        s = (start + k) % slots
        sh, rpos = _U32X2.unpack_from(table, s * 8)
        if rpos == 0:
            return None
        if sh != h:
            continue
        rec = os.pread(fd, 8 + klen, rpos)
        if len(rec) != 8 + klen:
            raise OSError(0, "truncated cdb file")
        rk, rd = _U32X2.unpack_from(rec, 0)
        if rk == klen and rec[8:] == key:
            if rpos + 8 + klen + rd > os.fstat(fd).st_size:
                raise OSError(0, "corrupt cdb file")
            data = os.pread(fd, rd, rpos + 8 + klen)
            if len(data) != rd:
                raise OSError(0, "truncated cdb file")
            return data
    return None


class _TryNull:
    """The TRY1NULL/TRY0NULL dance of dict_db.c, dict_cdb.c and dict_lmdb.c."""

    def _try_both(self, get: Any, raw: bytes) -> Optional[bytes]:
        flags = self.flags  # type: ignore[attr-defined]
        value = None
        if flags & DICT_FLAG_TRY1NULL:
            value = get(raw + b"\0")
            if value is not None:
                self.flags &= ~DICT_FLAG_TRY0NULL  # type: ignore[attr-defined]
        if value is None and self.flags & DICT_FLAG_TRY0NULL:  # type: ignore[attr-defined]
            value = get(raw)
            if value is not None:
                self.flags &= ~DICT_FLAG_TRY1NULL  # type: ignore[attr-defined]
        return value


def _text(value: bytes) -> str:
    nul = value.find(b"\0")
    if nul >= 0:
        value = value[:nul]
    return value.decode("utf-8", "surrogateescape")


class CdbTable(_TryNull, Table):
    type = "cdb"
    fold_flag = DICT_FLAG_FOLD_FIX
    impl_flags = DICT_FLAG_FIXED

    def __init__(self, name: str, flags: int, log: Any = None, utf8: bool = False) -> None:
        super().__init__(name, flags, log, utf8)
        self.path = name + ".cdb"
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise OpenError("open database %s: %s" % (self.path, exc.strerror or exc)) from None
        self._watch(fd)
        if not self.flags & (DICT_FLAG_TRY0NULL | DICT_FLAG_TRY1NULL):
            self.flags |= DICT_FLAG_TRY0NULL | DICT_FLAG_TRY1NULL
        _warn_if_older(self, name, self.path)

    def _get(self, key: str) -> Optional[str]:
        fd = self._stat_fd
        try:
            value = self._try_both(lambda k: cdb_find(fd, k),
                                   key.encode("utf-8", "surrogateescape"))
        except OSError as exc:
            text = "error reading %s: %s" % (self.path, exc.strerror or exc)
            self.log.warning(text)
            raise MapError(text, DICT_ERR_RETRY, self.title) from None
        return None if value is None else _text(value)


class LmdbTable(_TryNull, Table):
    type = "lmdb"
    fold_flag = DICT_FLAG_FOLD_FIX
    impl_flags = DICT_FLAG_FIXED | DICT_FLAG_MULTI_WRITER

    def __init__(self, name: str, flags: int, log: Any = None, utf8: bool = False) -> None:
        super().__init__(name, flags, log, utf8)
        self.path = name + ".lmdb"
        try:
            import lmdb  # lazy: only configurations with lmdb tables pay for it
        except ImportError:
            raise OpenError("open database %s: the Python lmdb module is not installed"
                            % self.path) from None
        self._lmdb = lmdb
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise OpenError("open database %s: %s" % (self.path, exc.strerror or exc)) from None
        self._watch(fd)
        try:
            self.env = self._open_env()
        except lmdb.Error as exc:
            self.close()
            raise OpenError("open database %s: %s" % (self.path, exc)) from None
        if not self.flags & (DICT_FLAG_TRY0NULL | DICT_FLAG_TRY1NULL):
            self.flags |= DICT_FLAG_TRY0NULL | DICT_FLAG_TRY1NULL
        _warn_if_older(self, name, self.path)

    def _open_env(self) -> Any:
        size = max(os.fstat(self._stat_fd).st_size, 1 << 20)
        return self._lmdb.open(self.path, subdir=False, readonly=True, lock=False,
                               create=False, readahead=False, map_size=size, max_dbs=0)

    def _get(self, key: str) -> Optional[str]:
        lmdb = self._lmdb
        fd = self._stat_fd
        lock = self.flags & DICT_FLAG_LOCK
        raw = key.encode("utf-8", "surrogateescape")
        try:
            if lock:
                fcntl.lockf(fd, fcntl.LOCK_SH)
            try:
                for attempt in (0, 1):
                    try:
                        with self.env.begin(buffers=False) as txn:
                            value = self._try_both(txn.get, raw)
                        break
                    except lmdb.MapResizedError:
                        if attempt:
                            raise
                        self.env.close()
                        self.env = self._open_env()
            finally:
                if lock:
                    fcntl.lockf(fd, fcntl.LOCK_UN)
        except (OSError, lmdb.Error) as exc:
            text = "error reading %s: %s" % (self.path, getattr(exc, "strerror", None) or exc)
            self.log.warning(text)
            raise MapError(text, DICT_ERR_RETRY, self.title) from None
        return None if value is None else _text(value)

    def close(self) -> None:
        env = getattr(self, "env", None)
        if env is not None:
            env.close()
            self.env = None
        super().close()
