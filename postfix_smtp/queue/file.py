"""The queue file as a delivery agent uses it: open, lock, read content, mark done.

Paths are relative to the current directory, which master(8) sets to
``queue_directory`` (or the chroot jail).  The file is opened ``O_RDWR`` and
share-locked with ``flock(LOCK_SH|LOCK_NB)`` like the stock agent, so that a
restarted qmgr(8) (which takes an exclusive lock) does not hand out a message
that is still being delivered.  A recipient is marked finished by
overwriting the type byte of its ``R`` record with ``D``.
"""

from __future__ import annotations

import fcntl
import os
import stat
from ..valueclass import dataclass
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: keep typing off the start-up path
    from typing import Iterator

from .records import (REC_CONT, REC_DONE, REC_NORM, REC_XTRA, RecordError,
                      RecordReader)

SAFE_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"


class QueueFileMissing(Exception):
    """ENOENT: stock logs a warning and defers the request."""


class QueueFileFatal(Exception):
    """Any other open/lock/update failure: stock exits (msg_fatal)."""


class QueueNameError(Exception):
    """A syntactically bad queue name or id in the request."""


class CorruptContent(Exception):
    """The content segment did not end in an X record."""

    def __init__(self, record_type: int, detail: str = "") -> None:
        super().__init__(detail or "bad record type: %d" % record_type)
        self.record_type = record_type
        self.detail = detail


def queue_name_ok(name: str) -> bool:
    return 0 < len(name) <= 100 and name.isascii() and name.isalnum()


def queue_id_ok(queue_id: str) -> bool:
    return (0 < len(queue_id) <= 255 and queue_id.isascii()
            and all(c.isalnum() or c == "_" for c in queue_id))


def hash_source(queue_id: str) -> str:
    """What Postfix hashes into queue subdirectories (short or long ids)."""
    z = queue_id.rfind("z")
    if z >= 10:
        value = 0
        try:
            for c in queue_id[z - 4:z]:
                value = value * 52 + SAFE_ALPHABET.index(c)
        except ValueError:
            value = 0
        return "%05X" % value
    return queue_id


def queue_path(queue_name: str, queue_id: str, hash_queue_names: list[str],
               hash_queue_depth: int) -> str:
    if not queue_name_ok(queue_name):
        raise QueueNameError("bad mail queue name: %s" % queue_name)
    if not queue_id_ok(queue_id):
        raise QueueNameError("bad mail queue ID: %s" % queue_id)
    dirs = ""
    if queue_name.lower() in (n.lower() for n in hash_queue_names):
        src = hash_source(queue_id)
        for i in range(max(hash_queue_depth, 0)):
            dirs += (src[i] if i < len(src) else "_") + "/"
    return "%s/%s%s" % (queue_name, dirs, queue_id)


@dataclass
class Line:
    """One content record: text without line ending; ``complete`` is False for
    an ``L`` fragment (the line continues in the next record)."""

    text: bytes
    complete: bool


class QueueFile:
    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self._f = os.fdopen(os.dup(fd), "rb", buffering=65536)

    @classmethod
    def open(cls, path: str) -> "QueueFile":
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise QueueFileMissing("No such file or directory") from None
        except OSError as exc:
            raise QueueFileFatal("%s: %s" % (path, exc.strerror)) from None
        if not stat.S_ISREG(st.st_mode):
            raise QueueFileFatal("%s: uid %d: not a regular file" % (path, st.st_uid))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise QueueFileMissing("No such file or directory") from None
        except OSError as exc:
            raise QueueFileFatal(exc.strerror or str(exc)) from None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except InterruptedError:
                continue
            except OSError as exc:
                os.close(fd)
                raise QueueFileFatal("shared lock %s: %s" % (path, exc.strerror)) from None
        return cls(fd, path)

    def content(self, offset: int) -> Iterator[Line]:
        """The message content from ``offset`` to the X record.

        Raises :class:`CorruptContent` when the segment ends in anything else.
        """
        reader = RecordReader(self._f, self.path, offset)
        while True:
            try:
                rtype, payload = reader.read()
            except RecordError as exc:
                raise CorruptContent(-2, str(exc)) from None
            if rtype == REC_NORM:
                yield Line(payload, True)
            elif rtype == REC_CONT:
                yield Line(payload, False)
            elif rtype == REC_XTRA:
                return
            else:
                raise CorruptContent(rtype)

    def mark_done(self, offset: int) -> None:
        """Overwrite the recipient's type byte with ``D`` (no fsync, like stock)."""
        if offset == -1:
            return
        if offset <= 0:
            raise QueueFileFatal("bad recipient offset %d" % offset)
        try:
            n = os.pwrite(self.fd, bytes([REC_DONE]), offset)
        except OSError as exc:
            raise QueueFileFatal("update queue file %s: %s" % (self.path, exc.strerror)) from None
        if n != 1:
            raise QueueFileFatal("update queue file %s: short write" % self.path)

    def mark_corrupt(self) -> None:
        """Make the file owner-read-only, the way Postfix flags a corrupt file."""
        os.fchmod(self.fd, 0o400)

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            os.close(self.fd)
