"""Posting a message of our own to the cleanup(8) service (post_mail(3)).

This is how a Postfix daemon injects mail it writes itself (a postmaster
notice from smtp(8), for instance): the message goes straight to cleanup(8)
through ``public/<cleanup_service_name>`` (relative to the queue directory,
the agent's working directory, so it works inside a chroot jail too), which
queues it like any other message.

The exchange, over one stream socket, as the 3.7 client does it:

1. cleanup speaks first: ``protocol = cleanup_protocol`` and the new
   ``queue_id``, one attribute list;
2. we send ``flags`` (cleanup request flags; see :func:`cleanup_flags`);
3. records (type byte, base-128 length, payload - see
   :mod:`postfix_smtp.queue.records`): a ``T`` arrival time "seconds
   microseconds", ``A`` ``log_message_origin=local``, ``A``
   ``trace_flags=N``, ``S`` sender, ``R`` recipient, ``M`` (start of
   content), then one ``N`` record per message line: first the
   ``Received:`` and ``Date:`` header lines this module writes, then the
   caller's lines (headers, empty line, body), then ``X`` and ``E``;
4. cleanup answers ``status`` (0: queued; else CLEANUP_STAT_* bits) and
   ``reason``.

Cleanup adds Message-Id and the size record; with the default flags it
applies canonical/virtual mapping (CLEANUP_FLAG_MAP_OK) but not header or
body checks or milters (unless ``internal_mail_filter_classes`` names the
message's source class).
"""

from __future__ import annotations

import socket
import time

from ..queue.records import (REC_ATTR, REC_END, REC_FROM, REC_MESG, REC_NORM, REC_RCPT,
                             REC_TIME, REC_XTRA, encode_record)
from .attr import AttrError, expect
from .stream import AttrStream, IpcError

# cleanup request flags (cleanup_user.h)
CLEANUP_FLAG_FILTER = 1 << 1
CLEANUP_FLAG_MAP_OK = 1 << 5
CLEANUP_FLAG_MILTER = 1 << 6
CLEANUP_FLAG_SMTPUTF8 = 1 << 8
CLEANUP_FLAG_AUTOUTF8 = 1 << 9
#: what every internally generated message gets (CLEANUP_FLAG_MASK_INTERNAL)
CLEANUP_FLAG_MASK_INTERNAL = CLEANUP_FLAG_MAP_OK

# cleanup status bits (a few, for messages)
CLEANUP_STAT_OK = 0
CLEANUP_STAT_WRITE = 1 << 1

# mail source classes (mail_proto.h), for the filter and SMTPUTF8 class lists
SOURCE_CLASSES = {
    "sendmail": 1 << 0, "smtpd": 1 << 1, "qmqpd": 1 << 2, "forward": 1 << 3,
    "bounce": 1 << 4, "notify": 1 << 5, "verify": 1 << 6,
}
SOURCE_ALL = sum(SOURCE_CLASSES.values())
SRC_NOTIFY = SOURCE_CLASSES["notify"]

#: internal_mail_filter_classes knows only these two as filterable
_FILTERABLE = SOURCE_CLASSES["notify"] | SOURCE_CLASSES["bounce"]


class PostMailError(Exception):
    """The message could not be handed to cleanup (the text says why)."""


def class_mask(spec: str, allow_all: bool) -> int:
    """Source-class names (comma/space separated, any case) as a bit mask;
    unknown names are ignored."""
    mask = 0
    for word in spec.replace(",", " ").split():
        word = word.lower()
        if word in SOURCE_CLASSES:
            mask |= SOURCE_CLASSES[word]
        elif allow_all and word == "all":
            mask |= SOURCE_ALL
    return mask


def cleanup_flags(source_class: int, internal_filter_classes: str = "",
                  smtputf8_autodetect_classes: str = "sendmail, verify",
                  smtputf8_requested: bool = False) -> int:
    """The request flags post_mail sends: content filtering only for classes
    in internal_mail_filter_classes, address mapping always, SMTPUTF8
    autodetection for classes in smtputf8_autodetect_classes."""
    flags = CLEANUP_FLAG_MASK_INTERNAL
    if internal_filter_classes.strip() and (
            class_mask(internal_filter_classes, False) & _FILTERABLE & source_class):
        flags |= CLEANUP_FLAG_FILTER | CLEANUP_FLAG_MILTER
    if class_mask(smtputf8_autodetect_classes, True) & source_class:
        flags |= CLEANUP_FLAG_AUTOUTF8
    if smtputf8_requested:
        flags |= CLEANUP_FLAG_SMTPUTF8
    return flags


def mail_date(when: float) -> str:
    """An RFC 5322 date as Postfix writes it: day of month space-padded,
    numeric zone, then the zone name in parentheses."""
    lt = time.localtime(when)
    gm = time.gmtime(when)
    # the offset from the two broken-down times, as Postfix computes it
    off = (lt.tm_hour - gm.tm_hour) * 60 + lt.tm_min - gm.tm_min
    if lt.tm_year != gm.tm_year:
        off += 1440 if lt.tm_year > gm.tm_year else -1440
    elif lt.tm_yday != gm.tm_yday:
        off += 1440 if lt.tm_yday > gm.tm_yday else -1440
    hours = int(off / 60)                 # C division: towards zero
    text = time.strftime("%a, %e %b %Y %H:%M:%S ", lt)
    text += "%+03d%02d" % (hours, abs(off) % 60)
    return text + time.strftime(" (%Z)", lt)


def _bytes(text) -> bytes:
    if isinstance(text, bytes):
        return text
    return text.encode("utf-8", "surrogateescape")


class PostMail:
    """One submission: :meth:`open` (connect, negotiate, envelope, the
    Received:/Date: headers), :meth:`line` per content line, :meth:`close`
    (end markers, cleanup's status)."""

    def __init__(self, stream: AttrStream, queue_id: str) -> None:
        self.stream = stream
        self.queue_id = queue_id
        self._out = bytearray()

    @classmethod
    def open(cls, sender: str, recipient: str, *, myhostname: str, mail_name: str = "Postfix",
             service: str = "cleanup", timeout: float = 3600.0, flags: int | None = None,
             source_class: int = SRC_NOTIFY, trace_flags: int = 0,
             path: str | None = None, now: float | None = None) -> "PostMail":
        """Connect to ``public/<service>`` (or ``path``); IpcError when that fails,
        PostMailError when cleanup does not answer as expected."""
        # a connect to a busy cleanup fails at once (EAGAIN on a UNIX-domain
        # socket with a timeout), as stock's post_mail_fopen_nowait() gives up
        stream = AttrStream.connect_unix(path or "public/" + service, timeout)
        try:
            try:
                hello = stream.receive()
                _proto, queue_id = expect(hello, ("protocol", "queue_id"), "cleanup greeting")
            except (AttrError, IpcError) as exc:
                raise PostMailError("unable to contact the %s service: %s" % (service, exc)) \
                    from None
            if _proto != "cleanup_protocol":
                raise PostMailError("unable to contact the %s service: unexpected protocol %s"
                                    % (service, _proto))
            stream.send([("flags", cleanup_flags(source_class) if flags is None else flags)])
            pm = cls(stream, queue_id)
            if now is None:
                now = time.time()
            sec = int(now)
            usec = int((now - sec) * 1e6)
            pm._record(REC_TIME, "%d %d" % (sec, usec))
            pm._record(REC_ATTR, "log_message_origin=local")
            pm._record(REC_ATTR, "trace_flags=%d" % trace_flags)
            pm._record(REC_FROM, sender)
            pm._record(REC_RCPT, recipient)
            pm._record(REC_MESG, "")
            date = mail_date(sec)
            pm.line("Received: by %s (%s)" % (myhostname, mail_name))
            pm.line("\tid %s; %s" % (queue_id, date))
            pm.line("Date: %s" % date)
            return pm
        except BaseException:
            stream.close()
            raise

    def _record(self, rtype: int, payload) -> None:
        self._out += encode_record(rtype, _bytes(payload))

    def line(self, text) -> None:
        """One line of message content (no line terminator)."""
        self._record(REC_NORM, text)
        if len(self._out) >= 8192:
            self.flush()

    def flush(self) -> None:
        if self._out:
            data = bytes(self._out)
            self._out.clear()
            self.stream.send_raw(data)

    def close(self) -> int:
        """Send the end markers and return cleanup's status (0: queued);
        CLEANUP_STAT_WRITE when the exchange broke."""
        try:
            self._record(REC_XTRA, "")
            self._record(REC_END, "")
            self.flush()
            reply = self.stream.receive()
            values = dict(reply)
            if "status" not in values:
                return CLEANUP_STAT_WRITE
            try:
                return int(values["status"])
            except ValueError:
                return CLEANUP_STAT_WRITE
        except (IpcError, OSError, socket.error):
            return CLEANUP_STAT_WRITE
        finally:
            self.stream.close()

    def abort(self) -> None:
        """Give up without the end markers: cleanup discards the message."""
        self.stream.close()


def post_mail(sender: str, recipient: str, lines, **kw) -> tuple:
    """Submit ``lines`` (header lines, an empty line, body lines; str or
    bytes, no terminators) in one go; returns (status, queue_id).  Raises
    IpcError/PostMailError when cleanup cannot be reached or refuses to talk."""
    pm = PostMail.open(sender, recipient, **kw)
    try:
        for text in lines:
            pm.line(text)
    except BaseException:
        pm.abort()
        raise
    return pm.close(), pm.queue_id


__all__ = ["PostMail", "PostMailError", "post_mail", "mail_date", "cleanup_flags",
           "class_mask", "SRC_NOTIFY", "CLEANUP_FLAG_MAP_OK", "CLEANUP_FLAG_AUTOUTF8",
           "CLEANUP_FLAG_FILTER", "CLEANUP_FLAG_MILTER", "CLEANUP_STAT_WRITE"]
