"""hash: and btree: tables - a read-only reader of Berkeley DB files.

Postfix's postmap(1) builds ``file.db`` with Berkeley DB (Debian 12: 5.3).
This module reads those files itself, in pure Python, instead of linking
libdb: the Python bindings (``berkeleydb``) have no wheels and need a
compiler and libdb headers on every mail server, while a lookup needs only
a few page reads.  The layouts used here are Berkeley DB's on-disk format
(``dbinc/db_page.h``, stable since 2.x/3.x):

- page 0 is the meta page; its magic tells the access method and the byte
  order (files are written in the writer's native order);
- hash (``__ham_func5``: FNV-1 with a zero basis, verified against the
  meta page's ``h_charkey``): key -> bucket via ``high_mask``/``low_mask``/
  ``max_bucket``, bucket -> page via ``spares[log2(bucket + 1)]``; a bucket
  is a chain of pages holding key/data item pairs, big items live on
  overflow pages;
- btree: from the root page down internal pages (binary search, the first
  key of an internal page counts as minus infinity) to a leaf page of
  key/data pairs, keys compared bytewise (the default comparator, which
  Postfix does not replace).

Encrypted or checksummed databases, duplicate keys and sub-databases are
never made by postmap and are refused.

Like dict_db.c: the key is lowercased with ``FOLD_FIX`` (unless the UTF-8
layer already casefolded it), tried with a trailing NUL first and then
without (``TRY1NULL``/``TRY0NULL``; the first that hits wins for the life of
the table), and with ``DICT_FLAG_LOCK`` each lookup holds a shared flock(2)
on the file, which postmap locks exclusively while it rebuilds the file in
place.  The meta page is reread on every lookup, so a rebuilt file is read
correctly even before the agent restarts for it.
"""

from __future__ import annotations

import fcntl
import os
import struct
from typing import Any, Optional, Tuple

from .base import (DICT_FLAG_FIXED, DICT_FLAG_FOLD_FIX, DICT_FLAG_LOCK,
                   DICT_FLAG_TRY0NULL, DICT_FLAG_TRY1NULL, DICT_ERR_RETRY,
                   MapError, OpenError, Table)

HASH_MAGIC = 0x061561
BTREE_MAGIC = 0x053162

# Page types (db_page.h).
P_HASH_UNSORTED = 2
P_IBTREE = 3
P_LBTREE = 5
P_OVERFLOW = 7
P_HASHMETA = 8
P_BTREEMETA = 9
P_HASH = 13

# Hash item types.
H_KEYDATA = 1
H_DUPLICATE = 2
H_OFFPAGE = 3
H_OFFDUP = 4

# Btree item types (low 7 bits); 0x80 is the deleted flag.
B_KEYDATA = 1
B_DUPLICATE = 2
B_OVERFLOW = 3
B_DELETE = 0x80

SIZEOF_PAGE = 26
CHARKEY = b"%$sniglet^&\0"        # sizeof(CHARKEY): the NUL counts


class DBFormatError(Exception):
    """The file is not a Berkeley DB file this reader understands, or is corrupt."""


def ham_func5(key: bytes) -> int:
    """Berkeley DB's default hash function (FNV-1 with a zero offset basis)."""
    h = 0
    for b in key:
        h = ((h * 16777619) & 0xFFFFFFFF) ^ b
    return h


def _log2(num: int) -> int:
    """__db_log2(): smallest i with 2**i >= num."""
    i = 0
    limit = 1
    while limit < num:
        limit <<= 1
        i += 1
    return i


_CHARKEY_HASH = ham_func5(CHARKEY)


class DBFile:
    """A Berkeley DB hash or btree file, read with pread(2)."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        head = os.pread(fd, 512, 0)
        if len(head) < 96:
            raise DBFormatError("%s: not a Berkeley DB file (too short)" % path)
        for order in ("<", ">"):
            magic = struct.unpack_from(order + "I", head, 12)[0]
            if magic in (HASH_MAGIC, BTREE_MAGIC):
                break
        else:
            raise DBFormatError("%s: not a Berkeley DB hash or btree file" % path)
        self.order = order
        self.method = "hash" if magic == HASH_MAGIC else "btree"
        self._u16 = struct.Struct(order + "H").unpack_from
        self._u32 = struct.Struct(order + "I").unpack_from
        self._hdr = struct.Struct(order + "8xIIIHHBB")     # pgno prev next entries hf level type
        self.pagesize = self._u32(head, 20)[0]
        if self.pagesize < 512 or self.pagesize > 65536 or self.pagesize & (self.pagesize - 1):
            raise DBFormatError("%s: bad page size %d" % (path, self.pagesize))
        if head[24] != 0:
            raise DBFormatError("%s: encrypted databases are not supported" % path)
        if head[26] & 0x01:
            raise DBFormatError("%s: checksummed databases are not supported" % path)
        self.meta_type = head[25]

    # -- pages -------------------------------------------------------------

    def page(self, pgno: int) -> bytes:
        data = os.pread(self.fd, self.pagesize, pgno * self.pagesize)
        if len(data) != self.pagesize:
            raise DBFormatError("%s: short read of page %d" % (self.path, pgno))
        return data

    def max_pages(self) -> int:
        """Bound for page chains: a longer chain means a loop in a corrupt file."""
        return os.fstat(self.fd).st_size // self.pagesize + 1

    def header(self, page: bytes) -> Tuple[int, int, int, int, int, int, int]:
        return self._hdr.unpack_from(page, 0)

    def overflow(self, pgno: int, tlen: int) -> bytes:
        """An item stored on a chain of overflow pages."""
        out = bytearray()
        n = 0
        limit = self.max_pages()
        while pgno and len(out) < tlen:
            page = self.page(pgno)
            _, _, nxt, _, hf, _, ptype = self.header(page)
            if ptype != P_OVERFLOW:
                raise DBFormatError("%s: page %d: expected an overflow page" % (self.path, pgno))
            out += page[SIZEOF_PAGE:SIZEOF_PAGE + hf]
            pgno = nxt
            n += 1
            if n > limit:
                raise DBFormatError("%s: overflow chain loop" % self.path)
        if len(out) != tlen:
            raise DBFormatError("%s: overflow item length mismatch" % self.path)
        return bytes(out)

    # -- hash ----------------------------------------------------------------

    def _hash_get(self, key: bytes) -> Optional[bytes]:
        meta = os.pread(self.fd, 224, 0)
        u32 = self._u32
        max_bucket, high_mask, low_mask = u32(meta, 72)[0], u32(meta, 76)[0], u32(meta, 80)[0]
        if u32(meta, 92)[0] != _CHARKEY_HASH:
            raise DBFormatError("%s: unsupported hash function" % self.path)
        bucket = ham_func5(key) & high_mask
        if bucket > max_bucket:
            bucket &= low_mask
        spare = u32(meta, 96 + 4 * _log2(bucket + 1))[0]
        pgno = bucket + spare
        u16 = self._u16
        ps = self.pagesize
        klen = len(key)
        hops = 0
        limit = self.max_pages()
        while pgno:
            page = self.page(pgno)
            _, _, nxt, entries, _, _, ptype = self.header(page)
            if ptype not in (P_HASH, P_HASH_UNSORTED):
                raise DBFormatError("%s: page %d is not a hash page" % (self.path, pgno))
            prev_off = ps
            for i in range(0, entries - 1, 2):
                koff = u16(page, SIZEOF_PAGE + 2 * i)[0]
                doff = u16(page, SIZEOF_PAGE + 2 * i + 2)[0]
                kend = prev_off
                prev_off = doff
                ktype = page[koff]
                if ktype == H_KEYDATA:
                    if kend - koff - 1 != klen or page[koff + 1:kend] != key:
                        continue
                elif ktype == H_OFFPAGE:
                    tlen = u32(page, koff + 8)[0]
                    if tlen != klen or self.overflow(u32(page, koff + 4)[0], tlen) != key:
                        continue
                else:
                    raise DBFormatError("%s: unsupported hash key item type %d"
                                        % (self.path, ktype))
                dtype = page[doff]
                if dtype == H_KEYDATA:
                    return page[doff + 1:koff]
                if dtype == H_OFFPAGE:
                    return self.overflow(u32(page, doff + 4)[0], u32(page, doff + 8)[0])
                raise DBFormatError("%s: duplicate keys are not supported" % self.path)
            pgno = nxt
            hops += 1
            if hops > limit:
                raise DBFormatError("%s: hash bucket chain loop" % self.path)
        return None

    # -- btree ---------------------------------------------------------------

    def _bitem(self, page: bytes, off: int, internal: bool) -> bytes:
        """Key bytes of a btree item at *off* (internal or leaf layout)."""
        u16, u32 = self._u16, self._u32
        if internal:
            length, itype = u16(page, off)[0], page[off + 2] & 0x7F
            if itype == B_KEYDATA:
                return page[off + 12:off + 12 + length]
            if itype == B_OVERFLOW:
                return self.overflow(u32(page, off + 16)[0], u32(page, off + 20)[0])
        else:
            itype = page[off + 2] & 0x7F
            if itype == B_KEYDATA:
                return page[off + 3:off + 3 + u16(page, off)[0]]
            if itype == B_OVERFLOW:
                return self.overflow(u32(page, off + 4)[0], u32(page, off + 8)[0])
        raise DBFormatError("%s: unsupported btree item type %d" % (self.path, itype))

    def _btree_get(self, key: bytes) -> Optional[bytes]:
        meta = os.pread(self.fd, 92, 0)
        u16, u32 = self._u16, self._u32
        pgno = u32(meta, 88)[0]
        depth = 0
        while True:
            page = self.page(pgno)
            _, _, _, entries, _, _, ptype = self.header(page)
            if ptype == P_IBTREE:
                # Largest index whose key <= search key; index 0 is -infinity.
                lo, hi = 1, entries - 1
                found = 0
                while lo <= hi:
                    mid = (lo + hi) // 2
                    off = u16(page, SIZEOF_PAGE + 2 * mid)[0]
                    if self._bitem(page, off, True) <= key:
                        found = mid
                        lo = mid + 1
                    else:
                        hi = mid - 1
                off = u16(page, SIZEOF_PAGE + 2 * found)[0]
                pgno = u32(page, off + 4)[0]
                depth += 1
                if depth > 64:
                    raise DBFormatError("%s: btree too deep" % self.path)
                continue
            if ptype != P_LBTREE:
                raise DBFormatError("%s: page %d: unexpected btree page type %d"
                                    % (self.path, pgno, ptype))
            lo, hi = 0, entries // 2 - 1
            while lo <= hi:
                mid = (lo + hi) // 2
                koff = u16(page, SIZEOF_PAGE + 4 * mid)[0]
                k = self._bitem(page, koff, False)
                if k == key:
                    if page[koff + 2] & B_DELETE:
                        return None
                    doff = u16(page, SIZEOF_PAGE + 4 * mid + 2)[0]
                    dtype = page[doff + 2]
                    if dtype & B_DELETE:
                        return None
                    if dtype & 0x7F == B_DUPLICATE:
                        raise DBFormatError("%s: duplicate keys are not supported" % self.path)
                    return self._bitem(page, doff, False)
                if k < key:
                    lo = mid + 1
                else:
                    hi = mid - 1
            return None

    def get(self, key: bytes) -> Optional[bytes]:
        if self.method == "hash":
            return self._hash_get(key)
        return self._btree_get(key)


class DBTable(Table):
    """hash:/path and btree:/path (the file is /path.db)."""

    fold_flag = DICT_FLAG_FOLD_FIX
    impl_flags = DICT_FLAG_FIXED
    method = "hash"

    def __init__(self, name: str, flags: int, log: Any = None, utf8: bool = False) -> None:
        super().__init__(name, flags, log, utf8)
        path = name + ".db"
        self.path = path
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise OpenError("open database %s: %s" % (path, exc.strerror or exc)) from None
        try:
            if self.flags & DICT_FLAG_LOCK:
                fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                self.db = DBFile(fd, path)
            finally:
                if self.flags & DICT_FLAG_LOCK:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        except DBFormatError as exc:
            os.close(fd)
            raise OpenError("open database %s: %s" % (path, exc)) from None
        except OSError as exc:
            os.close(fd)
            raise OpenError("open database %s: %s" % (path, exc.strerror or exc)) from None
        if self.db.method != self.method:
            os.close(fd)
            raise OpenError("open database %s: Invalid argument" % path)
        self._watch(fd)
        if not self.flags & (DICT_FLAG_TRY0NULL | DICT_FLAG_TRY1NULL):
            self.flags |= DICT_FLAG_TRY0NULL | DICT_FLAG_TRY1NULL
        _warn_if_older(self, name, path)

    def _get(self, key: str) -> Optional[str]:
        raw = key.encode("utf-8", "surrogateescape")
        fd = self._stat_fd
        lock = self.flags & DICT_FLAG_LOCK
        try:
            if lock:
                fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                value = None
                if self.flags & DICT_FLAG_TRY1NULL:
                    value = self.db.get(raw + b"\0")
                    if value is not None:
                        self.flags &= ~DICT_FLAG_TRY0NULL
                if value is None and self.flags & DICT_FLAG_TRY0NULL:
                    value = self.db.get(raw)
                    if value is not None:
                        self.flags &= ~DICT_FLAG_TRY1NULL
            finally:
                if lock:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        except (OSError, DBFormatError, struct.error, IndexError, ValueError) as exc:
            text = "error reading %s: %s" % (self.path, getattr(exc, "strerror", None) or exc)
            self.log.warning(text)
            raise MapError(text, DICT_ERR_RETRY, self.title) from None
        if value is None:
            return None
        nul = value.find(b"\0")
        if nul >= 0:
            value = value[:nul]
        return value.decode("utf-8", "surrogateescape")


class HashTable(DBTable):
    type = "hash"
    method = "hash"


class BtreeTable(DBTable):
    type = "btree"
    method = "btree"


def _warn_if_older(table: Table, source: str, indexed: str) -> None:
    """The "database X is older than source file Y" warning (dict_db.c)."""
    if not table.flags & DICT_FLAG_LOCK:
        return
    try:
        src = os.stat(source).st_mtime
    except OSError:
        return
    import time
    if int(src) > table._mtime and src < time.time() - 100:
        table.log.warning("database %s is older than source file %s" % (indexed, source))
