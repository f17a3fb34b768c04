"""Serving one qmgr(8) connection: request in, delivery, reply out."""

from __future__ import annotations

import socket
import time

from .delivery import Delivery
from .ipc import delivery as dr
from .ipc.attr import AttrError
from .ipc.reports import Reporter, ReportSettings
from .ipc.stream import AttrStream, IpcError
from .log import Logger
from .queue.file import (QueueFile, QueueFileFatal, QueueFileMissing, QueueNameError,
                         queue_path)
from .settings import Settings

#: parameters whose tables the content output (generic maps, checks) uses
CONTENT_TABLE_PARAMS = ("smtp_generic_maps", "smtp_header_checks", "smtp_mime_header_checks",
                        "smtp_nested_header_checks", "smtp_body_checks")


#: reply and status rewriting (smtp_chat.c, dsn_filter.c)
FILTER_PARAMS = ("smtp_reply_filter", "smtp_delivery_status_filter")


#: per-server keyword tables (looked up by IP address) -> Settings attribute
SESSION_TABLE_PARAMS = {"smtp_discard_ehlo_keyword_address_maps": "discard_ehlo_maps",
                        "smtp_pix_workaround_maps": "pix_maps"}


class Agent:
    def __init__(self, settings: Settings, log: Logger, flags: str = "") -> None:
        self.s = settings
        self.log = log
        self.flags = flags
        self.tables = None            # postfix_smtp.maps.OpenContext once tables are open
        self.generic = None           # smtp.rewrite.GenericMapper (smtp_generic_maps)
        self.checks = None            # smtp.checks.HeaderBodyChecks (smtp_*_checks)
        from .destinations import AddressResolver
        self.resolver = AddressResolver(settings.lookup, warn=log.warning, info=log.info)
        self.tls_resolver = None      # tls.policy.PolicyResolver, made on first TLS use
        self.report_settings = ReportSettings(
            bounce_service=settings.service_names.get("bounce") or "bounce",
            defer_service=settings.service_names.get("defer") or "defer",
            trace_service=settings.service_names.get("trace") or "trace",
            verify_service=settings.service_names.get("verify") or "verify",
            ipc_timeout=settings.ipc_timeout,
            soft_bounce=settings.soft_bounce,
            delay_resolution=settings.delay_resolution,
            external_log_format=settings.info_log_external,
            verify_negative_cache=settings.verify_negative_cache,
        )

    def open_tables(self) -> None:
        """Open every lookup table the configuration names, before privileges
        are dropped (so a root-only sasl_passwd.db works), sharing one context.
        A client certificate's key is read now too, as stock does."""
        chat = self.s.chat
        if chat is not None or self.log.verbose:
            import importlib                   # session transcripts (-v too): before any chroot
            importlib.import_module(".smtp.chat", __package__)
        if chat is not None:
            from .maps.matchlist import MatchListError
            try:
                chat.open(self.log)            # debug_peer_list and its tables
            except MatchListError as exc:      # stock: fatal
                self.log.fatal(str(exc))
                raise SystemExit(1) from None
        tls = self.s.tls
        if tls is not None and (tls.cert_file or tls.chain_files or tls.eccert_file
                                or tls.dcert_file):
            from .tls.client import engine_available      # imports OpenSSL
            engine_available(tls, self.log)
        p = self.s.params
        need_tls = tls is not None and bool(tls.policy_maps.strip() or tls.per_site.strip())
        need_content = p is not None and any(
            p.sget(name).strip() for name in CONTENT_TABLE_PARAMS)
        session_maps = [name for name in SESSION_TABLE_PARAMS
                        if p is not None and p.sget(name).strip()]
        filters = [name for name in FILTER_PARAMS if p is not None and p.sget(name).strip()]
        dns_filter = self.s.lookup.dns_reply_filter
        if not (need_tls or need_content or session_maps or filters or dns_filter):
            return
        from .maps import OpenContext, open_maps
        self.tables = OpenContext(tls.params if tls is not None else p, self.log)
        if filters:
            self._open_filters(p, filters)
        if dns_filter:
            from .dns.rrfilter import open_filter
            self.resolver.rr_filter = open_filter(dns_filter, p, p.p("smtp_dns_reply_filter"),
                                                  self.log, ctx=self.tables)
        for name in session_maps:
            maps = open_maps(p.sget(name), p, title=p.p(name), log=self.log, ctx=self.tables)
            setattr(self.s, SESSION_TABLE_PARAMS[name], maps)
        if need_tls:
            tls.open_tables(tls.params, self.log, self.tables)
            tls._tables_open = True
        if need_content:
            from .smtp.checks import HeaderBodyChecks
            from .smtp.rewrite import GenericMapper
            self.generic = GenericMapper.from_params(p, p.p("smtp_generic_maps"),
                                                     self.tables, self.log)
            self.checks = HeaderBodyChecks.from_params(p, self.tables, self.log, pname=p.p)

    def _open_filters(self, p, names) -> None:
        """smtp_reply_filter: one table (dict_open, DICT_FLAG_LOCK |
        DICT_FLAG_FOLD_FIX); smtp_delivery_status_filter: a table list
        (maps_create, DICT_FLAG_LOCK)."""
        from .maps import DICT_FLAG_LOCK, open_maps
        from .maps.base import DICT_FLAG_FOLD_FIX
        for name in names:
            spec = p.sget(name)
            if name == "smtp_reply_filter":
                maps = open_maps(spec, p, DICT_FLAG_LOCK | DICT_FLAG_FOLD_FIX,
                                 title=p.p(name), log=self.log, ctx=self.tables)
                self.s.reply_filter = maps.tables[0] if maps.tables else None
            else:
                maps = open_maps(spec, p, DICT_FLAG_LOCK, title=p.p(name), log=self.log,
                                 ctx=self.tables)
                self.report_settings.status_filter = maps

    def changed_table(self) -> str | None:
        """"type:name" of a file table rebuilt since it was opened (stock: the
        process exits so that master(8) starts a fresh one), else None."""
        sasl = self.s.sasl
        if sasl is not None and sasl.enabled:
            name = sasl.changed_table()        # smtp_sasl_password_maps and filter tables
            if name:
                return name
        if self.s.chat is not None:
            name = self.s.chat.changed_table()
            if name:
                return name
        if self.tables is None:
            return None
        for table in self.tables.cache.values():
            if table.changed():
                return table.title
        return None

    def serve(self, sock: socket.socket) -> None:
        """The whole exchange on one accepted connection."""
        stream = AttrStream(sock, self.s.ipc_timeout, "private/" + self.s.service_name)
        try:
            stream.send([("protocol", dr.PROTOCOL)])
            try:
                first = stream.receive_or_eof()
            except IpcError as exc:          # garbage, EOF inside a list: still answer (stock)
                self.log.warning("%s: malformed delivery request: %s -- deferring"
                                 % (stream.peer, exc))
                stream.send(dr.reply_attrs(dr.STATUS_DEFER, None))
                return
            if first is None:
                return                       # qmgr changed its mind: close quietly
            status, hop = self._handle(stream, first)
            stream.send(dr.reply_attrs(status, hop))
            # wait for qmgr to close, bounded by ipc_timeout
            try:
                stream.receive_or_eof()
            except IpcError:
                pass
        except IpcError as exc:
            self.log.warning("%s" % exc)
        finally:
            stream.close()

    def _handle(self, stream: AttrStream, first: list):
        try:
            req, count = dr.parse_common(first)
            for _ in range(count):
                req.recipients.append(dr.parse_recipient(stream.receive()))
        except (AttrError, IpcError) as exc:
            self.log.warning("%s: malformed delivery request: %s -- deferring"
                             % (stream.peer, exc))
            return dr.STATUS_DEFER, None
        if not req.stats.agent_handoff:
            req.stats.agent_handoff = time.time()
        if not req.nexthop:
            self.log.warning("%s: empty nexthop hostname -- deferring" % req.queue_id)
            return dr.STATUS_DEFER, None
        try:
            path = queue_path(req.queue_name, req.queue_id, self.s.hash_queue_names,
                              self.s.hash_queue_depth)
        except QueueNameError as exc:
            self.log.warning("%s -- deferring" % exc)
            return dr.STATUS_DEFER, None
        try:
            qf = QueueFile.open(path)
        except QueueFileMissing as exc:
            self.log.warning("open %s %s: %s" % (req.queue_name, req.queue_id, exc))
            return dr.STATUS_DEFER, None
        except QueueFileFatal as exc:
            self.log.warning("open %s %s: %s -- deferring" % (req.queue_name, req.queue_id, exc))
            return dr.STATUS_DEFER, None
        try:
            reporter = Reporter(req, self.log, self.report_settings)
            delivery = Delivery(req, qf, self.s, self.log, reporter, self.flags, self.resolver,
                                generic=self.generic, checks=self.checks,
                                tls_resolver=self.tls_resolver)
            if self._flag_checks(req, delivery):
                status = delivery.status
            else:
                status = delivery.run()
            self.tls_resolver = delivery.tls_resolver      # keep its cache for the next request
            return (dr.STATUS_OK if status == 0 else dr.STATUS_DEFER), delivery.hop
        except QueueFileFatal as exc:
            self.log.warning("%s: %s -- deferring the rest of the request" % (req.queue_id, exc))
            return dr.STATUS_DEFER, None
        except Exception as exc:   # a bug must not lose mail: unmarked recipients stay queued
            self.log.warning("%s: unexpected error: %s: %s -- deferring"
                             % (req.queue_id, type(exc).__name__, exc))
            return dr.STATUS_DEFER, None
        finally:
            qf.close()

    def _flag_checks(self, req: dr.DeliveryRequest, delivery: Delivery) -> bool:
        """flags=D/O need one recipient per request, and flags=D refuses a
        recipient already named in a Delivered-To: header (stock:
        reject_deliver_request, before any connection)."""
        for letter in ("D", "O"):
            if letter in self.flags and len(req.recipients) > 1:
                self.log.warning("flag `%s' requires %s_destination_recipient_limit = 1"
                                 % (letter, self.s.service_name))
                delivery.fail_all(dr.Dsn(status="4.3.5",
                                         reason="mail system configuration error"),
                                  relay=self.s.service_name)
                return True
        if "D" in self.flags and req.recipients and delivery.delivered_to_loop():
            delivery.fail_all(dr.Dsn(status="5.4.6", reason="mail forwarding loop for %s"
                                     % req.recipients[0].address),
                              relay=self.s.service_name)
            return True
        return False
