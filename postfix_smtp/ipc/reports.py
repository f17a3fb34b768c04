"""Recording per-recipient outcomes: bounce(8), defer(8), trace(8), verify(8).

These are the agent-side halves of Postfix's bounce_append(),
defer_append(), sent() and verify_append(): each decides which service
records the outcome, sends the APPEND (or verify update) request, writes the
stock per-recipient log line, and returns 0 when the outcome is durably
recorded (the recipient may then be marked done) or -1 when it is not (the
recipient stays in the queue file and the request is answered "defer").
"""

from __future__ import annotations

import re
from ..valueclass import dataclass, replace

from ..log import Logger, recipient_line
from .delivery import (FLAG_MTA_VRFY, FLAG_RECORD, FLAG_REC_DLY_SENT, FLAG_USR_VRFY,
                       NOTIFY_DELAY, NOTIFY_SUCCESS, DeliveryRequest, Dsn, Recipient)
from .stream import AttrStream, IpcError

BOUNCE_PROTOCOL = "delivery_status_protocol"
VERIFY_PROTOCOL = "address_verification_prrotocol"   # sic: Postfix's spelling
APPEND = 0

_DSN_CODE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")

VRFY_DELIVERABLE, VRFY_UNDELIVERABLE_SOFT, VRFY_UNDELIVERABLE = 0, 1, 2


@dataclass
class ReportSettings:
    bounce_service: str = "bounce"
    defer_service: str = "defer"
    trace_service: str = "trace"
    verify_service: str = "verify"
    ipc_timeout: float = 3600.0
    soft_bounce: bool = False
    delay_resolution: int = 2
    external_log_format: bool = True
    verify_negative_cache: bool = True
    # smtp_delivery_status_filter: a maps.Maps, or None
    status_filter: object = None


class Reporter:
    def __init__(self, req: DeliveryRequest, log: Logger, settings: ReportSettings) -> None:
        self.req = req
        self.log = log
        self.s = settings

    # --- transport ---------------------------------------------------------
    def _append(self, service: str, rcpt: Recipient, dsn: Dsn) -> int:
        """mail_command_client(): one APPEND request, stock's warning for the
        step that failed (connect, read, write, write/read)."""
        path = "private/" + service
        try:
            stream = AttrStream.connect_unix(path, self.s.ipc_timeout)
        except IpcError as exc:
            self.log.warning(str(exc))            # "connect to private/NAME: ..."
            return -1
        where = path + " socket"
        try:
            try:
                stream.expect_protocol(BOUNCE_PROTOCOL)
            except IpcError as exc:
                if _timed_out(exc) and not stream.decoder.pending:
                    # stock's attr_scan() takes a timeout before the first byte
                    # for an empty answer; the write after it reports the error
                    self.log.warning("write %s: Connection timed out" % where)
                else:
                    self.log.warning("read %s: %s" % (where, _ipc_detail(exc)))
                return -1
            try:
                stream.send([("nrequest", APPEND), ("flags", self.req.trace_flags),
                             ("queue_id", self.req.queue_id)] + rcpt.attrs() + dsn.attrs())
            except IpcError as exc:
                self.log.warning("write %s: %s" % (where, _ipc_detail(exc)))
                return -1
            try:
                reply = stream.receive()
                if len(reply) != 1 or reply[0][0] != "status":
                    raise IpcError("malformed reply")
            except IpcError as exc:
                self.log.warning("write/read %s: %s" % (where, _ipc_detail(exc)))
                return -1
            return 0 if reply[0][1] == "0" else -1
        finally:
            stream.close()

    def _verify_update(self, address: str, status: int, reason: str) -> int:
        path = "private/" + self.s.verify_service
        try:
            stream = AttrStream.connect_unix(path, self.s.ipc_timeout)
        except IpcError as exc:
            self.log.warning(str(exc))
            return -1
        try:
            stream.expect_protocol(VERIFY_PROTOCOL)
            stream.send([("request", "update"), ("address", address),
                         ("recipient_status", status), ("reason", reason)])
            reply = stream.receive()
            return 0 if reply == [("status", "0")] else -1
        except IpcError as exc:
            self.log.warning("verify service: %s" % exc)
            return -1
        finally:
            stream.close()

    def _logline(self, rcpt: Recipient, relay: str, dsn: Dsn, word: str) -> None:
        self.log.info(recipient_line(
            self.req.queue_id, rcpt.address, rcpt.original, relay, self.req.stats,
            dsn.status, word, dsn.reason, self.s.delay_resolution, self.s.external_log_format))

    # --- verify / trace helpers ------------------------------------------------
    def _verify(self, rcpt: Recipient, relay: str, dsn: Dsn, status: int, word: str) -> int:
        if status != VRFY_DELIVERABLE and not self.s.verify_negative_cache:
            self._logline(rcpt, relay, dsn, "undeliverable-but-not-cached")
            return 0
        result = 0
        if rcpt.original:
            result = self._verify_update(rcpt.original, status, dsn.reason)
        if result == 0 and rcpt.address != rcpt.original:
            result = self._verify_update(rcpt.address, status, dsn.reason)
        if result == 0:
            self._logline(rcpt, relay, dsn, word)
        return result

    def _trace(self, rcpt: Recipient, relay: str, dsn: Dsn) -> int:
        reason = dsn.reason if relay == "none" else "delivery via %s: %s" % (relay, dsn.reason)
        if self._append(self.s.trace_service, rcpt, replace(dsn, reason=reason)) != 0:
            self._service_failure(self.s.trace_service)       # trace_append()
            return -1
        return 0

    def _service_failure(self, service: str) -> None:
        self.log.warning("%s: %s service failure" % (self.req.queue_id, service))

    def _probe(self, rcpt: Recipient, relay: str, dsn: Dsn, vrfy_status: int, word: str) -> int | None:
        """Address probes: verify(8) for MTA_VRFY, trace(8) for ``sendmail -bv``.
        None when the request is not a probe."""
        flags = self.req.flags
        d = replace(dsn, action=word)
        if flags & FLAG_MTA_VRFY:
            return self._verify(rcpt, relay, d, vrfy_status, word)
        if flags & FLAG_USR_VRFY:
            result = self._trace(rcpt, relay, d)
            if result == 0:
                self._logline(rcpt, relay, d, word)
            return result
        return None

    def _sane(self, dsn: Dsn, klass: str, who: str) -> Dsn:
        """A status of the wrong class is replaced by X.0.0, with stock's warning."""
        if not _DSN_CODE.match(dsn.status) or dsn.status[0] != klass:
            self.log.warning('%s: ignoring dsn code "%s"' % (who, dsn.status))
            dsn = replace(dsn, status=klass + ".0.0")
        return dsn

    def _filtered(self, dsn: Dsn) -> Dsn | None:
        """smtp_delivery_status_filter (dsn_filter_lookup): the replacement for
        "STATUS REASON", or None.  A success stays a success and a failure a
        failure; a 4xx/5xx swap changes the action."""
        maps = self.s.status_filter
        if maps is None:
            return None
        from ..maps.base import MapError
        try:
            result = maps.lookup("%s %s" % (dsn.status, dsn.reason))
        except MapError:
            return None                        # maps_find() has logged it
        if result is None:
            return None
        m = re.match(r"([245])\.\d{1,3}\.\d{1,3}(?![\d.])", result)
        success = dsn.status[:1] == "2"
        if m is None or (m.group(1) == "2") != success:
            self.log.warning("%s: bad status code: %s" % (maps.title, result))
            return None
        action = {"4": "delayed", "5": "failed"}.get(m.group(1), dsn.action)
        return replace(dsn, status=m.group(0), reason=result[m.end():].lstrip(" \t\r\n\v\f"),
                       action=action)

    # --- the three outcomes ----------------------------------------------------
    def sent(self, rcpt: Recipient, relay: str, dsn: Dsn) -> int:
        dsn = self._sane(dsn, "2", "sent")
        dsn = self._filtered(dsn) or dsn
        probed = self._probe(rcpt, relay, dsn, VRFY_DELIVERABLE, "deliverable")
        if probed is not None:
            return probed
        flags = self.req.flags
        if not dsn.action:
            dsn = replace(dsn, action="delivered")
        status = 0
        if (flags & FLAG_RECORD) or ((flags & FLAG_REC_DLY_SENT) and (
                rcpt.notify_flags == 0 or rcpt.notify_flags & NOTIFY_DELAY)):
            status |= self._trace(rcpt, relay, dsn)
        if rcpt.notify_flags & NOTIFY_SUCCESS:
            status |= self._trace(rcpt, relay, dsn)
        if status == 0:
            self._logline(rcpt, relay, dsn, "sent")
            return 0
        return self._defer(rcpt, relay, Dsn(status="4.3.0", action="delayed",
                                           reason="%s: %s service failed"
                                           % (self.req.queue_id, self.s.trace_service)))

    def bounce(self, rcpt: Recipient, relay: str, dsn: Dsn) -> int:
        dsn = self._sane(dsn, "5", "bounce_append")
        alt = self._filtered(dsn)
        if alt is not None:
            if alt.status[0] == "4":
                return self._defer(rcpt, relay, alt)
            dsn = alt
        return self._bounce(rcpt, relay, dsn)

    def _bounce(self, rcpt: Recipient, relay: str, dsn: Dsn) -> int:
        probed = self._probe(rcpt, relay, dsn, VRFY_UNDELIVERABLE, "undeliverable")
        if probed is not None:
            return probed
        flags = self.req.flags
        if self.s.soft_bounce:
            d = replace(dsn, status="4" + dsn.status[1:], action="delayed")
            if self._append(self.s.defer_service, rcpt, d) != 0:
                self._service_failure(self.s.defer_service)
            self._logline(rcpt, relay, d, "SOFTBOUNCE")
            return -1
        d = replace(dsn, action="failed")
        status = self._append(self.s.bounce_service, rcpt, d)
        if status == 0 and flags & FLAG_RECORD:
            status = self._trace(rcpt, relay, d)
        if status == 0:
            self._logline(rcpt, relay, d, "bounced")
            return 0
        return self._defer(rcpt, relay, Dsn(status="4.3.0", action="delayed",
                                           reason="%s or %s service failure"
                                           % (self.s.bounce_service, self.s.trace_service)))

    def defer(self, rcpt: Recipient, relay: str, dsn: Dsn) -> int:
        dsn = self._sane(dsn, "4", "defer_append")
        alt = self._filtered(dsn)
        if alt is not None:
            if alt.status[0] == "5":
                return self._bounce(rcpt, relay, alt)
            dsn = alt
        return self._defer(rcpt, relay, dsn)

    def _defer(self, rcpt: Recipient, relay: str, dsn: Dsn) -> int:
        probed = self._probe(rcpt, relay, dsn, VRFY_UNDELIVERABLE_SOFT, "undeliverable")
        if probed is not None:
            return probed
        flags = self.req.flags
        d = replace(dsn, action="delayed")
        if self._append(self.s.defer_service, rcpt, d) != 0:
            self._service_failure(self.s.defer_service)
        self._logline(rcpt, relay, d, "deferred")
        if flags & FLAG_RECORD and self._trace(rcpt, relay, d) != 0:
            self._service_failure(self.s.trace_service)      # defer_append() says it again
        return -1


def _timed_out(exc: IpcError) -> bool:
    return str(exc).startswith("timeout ")


def _ipc_detail(exc: IpcError) -> str:
    """The "%m" part of stock's warning: a timeout is ETIMEDOUT; otherwise
    the system error text of the IpcError, or its whole text."""
    if _timed_out(exc):
        return "Connection timed out"
    text = str(exc)
    for prefix in ("write to ", "read from "):
        if text.startswith(prefix) and ": " in text:
            return text.split(": ", 1)[1]
    return text
