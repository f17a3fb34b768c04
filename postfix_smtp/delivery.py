"""One delivery request, end to end: destinations, sessions, outcomes.

This is smtp(8)'s smtp_connect()/smtp_xfer()/smtp_trouble() in one place.
Recipients start "unfinished"; after each session every recipient is either
finished (delivered, bounced, or deferred *and reported*) or kept for the
next server.  Finishing always means: report first, then mark ``D`` in the
queue file only when the report was recorded (and, for a delivery, only
after the server's 2xx to end-of-data).  Anything unexpected ends in a
deferral of the recipients still unfinished, never in a lost recipient.
"""

from __future__ import annotations

import time
from .valueclass import dataclass

from . import destinations
from .ipc.delivery import (FLAG_CONN_LOAD, FLAG_CONN_STORE, FLAG_SUCCESS, NOTIFY_DELAY, NOTIFY_FAILURE, NOTIFY_NEVER,
                           NOTIFY_SUCCESS, SMTPUTF8_REQUESTED, DeliveryRequest, Dsn, Recipient)
from .ipc.reports import Reporter
from .log import Logger
from .queue.file import CorruptContent, QueueFile
from .settings import Settings
from .smtp.address import quote_821, quote_822, xtext
from .smtp.content import TextEncoder
from .smtp.protocol import (EHLO_MASK_NAMES, IN_REPLY_TO, STAGE_INFO, Features, Stage, Transaction,
                            greeting_says_esmtp, parse_ehlo)
from .smtp.reply import Reply
from .smtp.session import BindError, Connection, ConnectError, Endpoint, SessionError, connect

CONTENT_CHUNK = 65536

# SASL security-option sets by TLS state (postfix_smtp.sasl.client's names)
TLS_NONE, TLS_UNVERIFIED, TLS_VERIFIED = "none", "unverified", "verified"


def _generic_map_error():
    """The exception class of smtp_generic_maps failures (imported on demand:
    ``except`` evaluates this only when something was raised)."""
    from .smtp.rewrite import GenericMapError
    return GenericMapError


def _content_errors():
    from .smtp.checks import ChecksLookupError
    return (ChecksLookupError, _generic_map_error())


@dataclass
class Failure:
    """The running error of the request (stock: the ``why`` DSN buffer)."""
    status: str
    reason: str
    mta: str = ""
    diag: str = ""


class _SessionDone(Exception):
    """Leave the current session (it failed or is finished)."""


class _MimeFailure(Exception):
    """The 8-bit to 7-bit conversion hit a MIME error (args[0]: (status, reason))."""


class Delivery:
    def __init__(self, req: DeliveryRequest, qf: QueueFile | None, settings: Settings,
                 log: Logger, reporter: Reporter, flags_letters: str = "",
                 resolver: "destinations.AddressResolver | None" = None,
                 generic=None, checks=None, tls_resolver=None) -> None:
        self.req = req
        self.generic = generic        # smtp.rewrite.GenericMapper or None
        self.checks = checks          # smtp.checks.HeaderBodyChecks or None
        self.qf = qf
        self.s = settings
        self.log = log
        self.rep = reporter
        self.flags_letters = flags_letters
        self.todo: list[Recipient] = list(req.recipients)
        self.status = 0
        self.why: Failure | None = None
        self.hop: Dsn | None = None
        self.had_transaction = False
        self.folded_logged = False
        self._handled: set = set()     # ids of recipients finished or kept in this session
        self._sessions = 0
        self._last_was_fallback = False
        self._final = False
        self._retry_plain = False      # stock: session->tls_retry_plain
        self._plain_next = False       # the retry of the same address runs without TLS
        # the TLS policy resolver caches per process, like stock's policy cache;
        # the Agent keeps it between requests (None until TLS is first needed)
        self.tls_resolver = tls_resolver
        self._site = ""            # the current nexthop element as written (stock iter->dest)
        self._helo_auth = None     # SASL: AUTH in the last EHLO reply (sasl.policy.HeloAuth)
        if settings.sasl is not None:
            settings.sasl.attach_log(log)
        # connection reuse (smtp_reuse.c): decided once, for the first destination
        self._cache_decided = False
        self._cache_load = self._cache_store = False
        self._dest_label: str | None = None   # the first destination's scache label
        self._dest_text = ""
        self._dest_tried = False
        self._dest_saved = False               # a good session is stored under the dest label
        self._cached_addrs: set = set()        # addresses already used from the cache
        self._chat = None          # the current session's smtp.chat.Chat (None: not needed)
        # one resolver per process (it caches resolver settings and local addresses)
        self.resolver = resolver or destinations.AddressResolver(
            settings.lookup, warn=log.warning, info=log.info)

    # --- finishing recipients --------------------------------------------------
    def _finish(self, rcpt: Recipient, relay: str, dsn: Dsn, soft: bool) -> int:
        result = (self.rep.defer if soft else self.rep.bounce)(rcpt, relay, dsn)
        if result == 0 and self.qf is not None:
            self.qf.mark_done(rcpt.offset)
        self.status |= result
        return result

    def _set_times_for_bulk(self) -> None:
        st = self.req.stats
        now = time.time()
        if not st.conn_setup_done:
            st.conn_setup_done = now
        st.deliver_done = now

    def _bulk_fail(self, dsn: Dsn, relay: str, final: bool, throttle: bool,
                   rcpts: list[Recipient] | None = None) -> None:
        """Message- or site-level failure for every unfinished recipient."""
        soft = dsn.status.startswith("4")
        soft_bounce_error = dsn.status.startswith("5") and self.s.soft_bounce
        pool = self.todo if rcpts is None else rcpts
        targets = [r for r in pool if id(r) not in self._handled and r in self.todo]
        for r in targets:
            self._handled.add(id(r))
        self.why = Failure(dsn.status, dsn.reason, dsn.mta_mname, dsn.diag_text)
        if (soft or soft_bounce_error) and not final:
            self.log.info("%s: %s" % (self.req.queue_id, dsn.reason))
            return
        self._set_times_for_bulk()
        aggregate = 0
        for rcpt in targets:
            aggregate |= self._finish(rcpt, relay, dsn, soft)
            self.todo.remove(rcpt)
        if throttle and aggregate and self.hop is None and not self.had_transaction:
            self.hop = dsn

    def _rcpt_fail(self, rcpt: Recipient, dsn: Dsn, relay: str, final: bool) -> None:
        soft = dsn.status.startswith("4")
        soft_bounce_error = dsn.status.startswith("5") and self.s.soft_bounce
        self._handled.add(id(rcpt))
        if (soft or soft_bounce_error) and not final:
            self.log.info("%s: %s" % (self.req.queue_id, dsn.reason))
            self.why = Failure(dsn.status, dsn.reason)
            return
        self._finish(rcpt, relay, dsn, soft)
        self.todo.remove(rcpt)

    def fail_all(self, dsn: Dsn, relay: str) -> None:
        """Finish every recipient with ``dsn`` (request-level rejections)."""
        self._bulk_fail(dsn, relay, final=True, throttle=False)

    # --- the request ---------------------------------------------------------------
    def run(self) -> int:
        chat = self.s.chat
        # stock debug_peer_check(nexthop, "noaddr"): verbose for the whole request
        nexthop_debug = chat is not None and chat.peer_check(self.log, self.req.nexthop, "noaddr")
        try:
            return self._run()
        finally:
            if nexthop_debug:
                chat.restore(self.log)

    def _run(self) -> int:
        nexthop = self.req.nexthop
        if self.s.personality == "lmtp":
            # stock smtp_connect(): "unix:PATH" or "inet:" before the whole list
            if nexthop.startswith("unix:"):
                self._try_unix(nexthop[5:])
                if self.todo:
                    self._final_failure([])
                return self.status
            if nexthop.startswith("inet:"):
                nexthop = nexthop[5:]
        try:
            sites = destinations.split_list(nexthop)
            nsites = len(sites)
            sites += self.s.fallback_relay        # smtp_ or lmtp_fallback_relay
            for si, site in enumerate(sites):
                if not self.todo:
                    break
                # stock SMTP_MISC_FLAG_FINAL_NEXTHOP: the last destination, or
                # one that ends the list (we are its MX host, or mail loops)
                if self._try_site(site, final_nexthop=(si == len(sites) - 1),
                                  is_fallback=si >= nsites):
                    break
            if self.todo:
                self._final_failure(sites)
        except destinations.DestinationSyntaxError as exc:
            self.log.warning(str(exc))
            self.fail_all(Dsn(status="4.3.5", reason="mail system configuration error"),
                          self.s.service_name)
        return self.status

    def _final_failure(self, sites: list) -> None:
        why = self.why or Failure("4.3.0", "server unavailable or unable to receive mail")
        status = why.status
        if status.startswith("5"):
            nexthop_sites = destinations.split_list(self.req.nexthop)
            if self._last_was_fallback:
                self.log.warning("%s_fallback_relay configuration problem" % self.s.personality)
                status = "4.3.5"
            elif (self.s.personality == "smtp" and nexthop_sites
                  and nexthop_sites[0] == self.s.relayhost):
                self.log.warning("relayhost configuration problem")
                status = "4.3.5"
            elif (self.s.personality == "smtp" and status[1:] == ".4.6"
                  and self.s.best_mx_transport):
                self._pass_to_best_mx(self.s.best_mx_transport)
                return
        dsn = Dsn(status=status, reason=why.reason, action="")
        self._bulk_fail(dsn, "none", final=True, throttle=True)

    def _try_site(self, site: str, final_nexthop: bool, is_fallback: bool) -> bool:
        """One destination: look up its addresses and try them in order.
        Returns True when no further destination may be tried."""
        self._last_was_fallback = is_fallback
        self._site = site
        dest = destinations.parse_destination(site, self.s.tcp_port, self.s.known_tcp_ports)
        tls = self.s.tls
        if (self.s.helpful_warnings and tls is not None and not tls.wrappermode
                and dest.port == 465):
            self.log.info('SMTPS wrappermode (TCP port 465) requires setting "%s = yes", and '
                          '"%s = encrypt" (or stronger)' % (tls.name("smtp_tls_wrappermode"),
                                                           tls.name("smtp_tls_security_level")))
        found = self.resolver.resolve(dest)
        # the lookup starts a fresh error (stock: dsb_reset() in smtp_*_addr())
        self.why = Failure(*found.error) if found.error else None
        if found.final:
            final_nexthop = True
        endpoints = found.endpoints()
        if not self._cache_decided and endpoints:
            self._decide_caching(dest)
        if self._cache_load and self._dest_label is not None and not self._dest_tried:
            self._dest_tried = True
            self._try_cached_destination(endpoints, dest)
        endpoints = [ep for ep in endpoints if (ep.addr, ep.port) not in self._cached_addrs]
        addr_limit = self.s.mx_address_limit
        sess_limit = self.s.mx_session_limit
        addr_count = sess_count = 0
        for i, ep in enumerate(endpoints):
            if not self.todo:
                break
            addr_count += 1
            last_addr = (i == len(endpoints) - 1 or (addr_limit and addr_count >= addr_limit))
            final = bool(final_nexthop and last_addr)
            sessions_before = self._sessions
            self._try_server(ep, final, final_nexthop, sess_limit, sess_count, dest)
            if self._retry_plain and self.todo:
                # stock RETRY_AS_PLAINTEXT: the same address again, TLS off, not counted
                self._retry_plain = False
                self._plain_next = True
                self._sessions = sessions_before
                self._try_server(ep, final, final_nexthop, sess_limit, sess_count, dest)
            self._retry_plain = self._plain_next = False
            if self._sessions > sessions_before:
                sess_count += 1
            if (addr_limit and addr_count >= addr_limit) or (sess_limit and sess_count >= sess_limit):
                break
        return final_nexthop

    def _try_unix(self, path: str) -> None:
        """LMTP to a UNIX-domain socket (stock smtp_connect_local()): one
        server named myhostname[PATH], every error final, no fallback relay,
        sessions cached under the path.  The path is relative to the queue
        directory (the working directory, in or out of a chroot jail)."""
        s = self.s
        if s.fallback_relay and s.params is not None:
            self.log.warning('ignoring "%s = %s" setting for non-TCP connections'
                             % (s.params.p("smtp_fallback_relay"),
                                s.params.sget("smtp_fallback_relay")))
        self._site = path
        # dest.host: the TLS nexthop (stock: myhostname); the port 0 marks the path
        dest = destinations.Destination(path, s.myhostname, 0, True)
        ep = Endpoint(s.myhostname, path, 0, 1, best_mx=False)      # 1: AF_UNIX
        self._decide_caching(dest, match=path, nexthop=path)
        if self._cache_load and self._dest_label is not None:
            self._try_cached_destination([ep], dest, final=True)
            if (path, 0) in self._cached_addrs:     # delivered over a cached session
                return
        if len(path.encode("utf-8", "surrogateescape")) >= 108:    # sizeof(sun_path)
            self.log.warning("unix-domain name too long: %s" % path)
            self.why = Failure("4.3.5", "Server configuration error")
            return
        self._try_server(ep, True, True, 0, 0, dest)

    # --- connection reuse (smtp_reuse.c, smtp_session.c passivate/activate) -----------
    def _decide_caching(self, dest, match: str | None = None,
                        nexthop: str | None = None) -> None:
        """Stock: smtp_connection_cache_destinations (load and store), else on demand
        per qmgr's CONN_LOAD/CONN_STORE flags; the first destination only.
        ``match``/``nexthop``: the name matched and the label's nexthop (LMTP
        over a UNIX-domain socket: the path), by default the host and the
        request nexthop."""
        self._cache_decided = True
        s = self.s
        if s.cache_time_limit <= 0:
            return
        if (dest.host if match is None else match).lower() in s.cache_destinations:
            self._cache_load = self._cache_store = True
        elif s.cache_on_demand:
            self._cache_load = bool(self.req.flags & FLAG_CONN_LOAD)
            self._cache_store = bool(self.req.flags & FLAG_CONN_STORE)
        if self._cache_load or self._cache_store:
            from .smtp import reuse
            self._dest_label = reuse.dest_label(s.service_name, nexthop or self.req.nexthop,
                                                self._label_sender())
            self._dest_text = dest.text

    def _scache(self):
        from . import scache
        c = scache.client(path=self.s.scache_path, timeout=self.s.scache_timeout,
                          idle=self.s.ipc_idle, ttl=self.s.ipc_ttl, log=self.log)
        return None if c.disabled else c

    def _endp_label(self, ep: Endpoint, policy) -> str:
        from .smtp import reuse
        level = policy.level if policy else 0
        sasl = self.s.sasl
        return reuse.endp_label(self.s.service_name, ep.addr, ep.port, level, self._dest_text,
                                sender=self._label_sender(),
                                sasl=sasl is not None and sasl.label_passwd, hostname=ep.host)

    def _label_sender(self):
        """The sender in scache labels (stock COND_SASL_SMTP_KEY_FLAG_SENDER)."""
        sasl = self.s.sasl
        return self.req.sender if sasl is not None and sasl.label_sender else None

    def _activate(self, sock, ep: Endpoint, endp_prop: str, dest_prop=None):
        """A cached socket as a Connection after a good RSET probe, else None."""
        from .smtp import reuse
        try:
            state = reuse.activate(endp_prop, dest_prop)
        except ValueError as exc:
            self.log.warning("%s: bad cached session properties: %s" % (ep.namaddrport, exc))
            sock.close()
            return None
        tls_ctx = None
        if state.tls_level > 0 or "\n\n" in endp_prop.rstrip("\n"):
            # smtp_session_activate(): a session through tlsproxy(8) carries the
            # TLS summary after its properties (required above level "may")
            from .tls import proxy
            try:
                tls_ctx = proxy.cached_context(state.tls_level,
                                               proxy.split_endpoint_props(endp_prop)[1])
            except proxy.ProxyError:
                self.log.warning("smtp_session_activate: bad cached endp properties")
                sock.close()
                return None
        if tls_ctx is not None:
            self.log.info(tls_ctx.summary_line(reused=True))
        if ep is None:
            fam = 10 if ":" in state.addr else 2
            from .smtp.session import Endpoint as _Ep
            ep = _Ep(state.host or state.addr, state.addr, 0, fam)
        conn = Connection(sock, ep, self.s.timeouts, utf8=self.s.smtputf8_enable,
                          line_limit=self.s.reply_line_limit,
                          deadline=self.s.per_request_deadline,
                          min_data_rate=self.s.min_data_rate, log=self.log,
                          line_filter=self._reply_filter())
        self._chat_attach(conn, ep)
        try:
            conn.write(b"RSET\r\n", Stage.ABORT)           # the RSET probe (smtp_rset_timeout)
            reply = conn.read_reply(Stage.ABORT)
        except SessionError:
            conn.close()
            self._chat_release(conn)
            return None
        if reply.klass != 2:
            conn.close()
            self._chat_release(conn)
            return None
        conn.reuse_count = state.reuse_count
        conn.expire_time = state.expire_time
        conn.cached_features = state.features
        conn.cached_state = state
        conn.cached_tls = tls_ctx
        return conn

    def _try_cached_destination(self, endpoints: list, dest, final: bool = False) -> None:
        """Look up the request nexthop's label; deliver over that session first."""
        c = self._scache()
        if c is None or not endpoints:
            return
        got = c.find_dest(self._dest_label)
        if got is None:
            return
        sock, dprop, eprop = got
        from .smtp import reuse
        try:
            d = reuse.activate(eprop, dprop)
        except ValueError:
            sock.close()
            return
        port, family = endpoints[0].port, 10 if ":" in d.addr else 2
        for e in endpoints:
            if e.addr == d.addr:
                port, family = e.port, e.family
        ep = Endpoint(d.host or d.addr, d.addr, port, family)
        ep.best_mx = d.best_mx
        conn = self._activate(sock, ep, eprop, dprop)
        if conn is None:
            return
        policy = self._tls_policy(dest, ep) if dest is not None else None
        if policy is False or (policy is not None and _requires_tls(policy.level) and not (
                conn.cached_tls is not None and conn.cached_state.tls_level == policy.level)):
            # The destination label carries no TLS level: never let a plaintext
            # session, or one of another TLS level, carry mail that policy says
            # must be encrypted (e.g. saved before a reload).  A session through
            # tlsproxy(8) at the very level the policy asks for is fine.
            self._quit(conn)
            conn.close()
            self._chat_release(conn)
            return
        self._cached_addrs.add((ep.addr, ep.port))
        self._try_server(ep, final, final, 0, 0, dest, cached=(conn, policy))

    def _may_keep(self, conn: Connection) -> bool:
        """May this session stay open for scache at the end of the transaction?"""
        from .smtp import reuse
        if not self._cache_store or self.s.cache_time_limit <= 0:
            return False
        tls = getattr(conn, "tls", None)
        if tls is not None and not getattr(tls, "proxied", False):
            return False                # in-process TLS state cannot move to another process
        if conn.ep.family not in (1, 2, 10) or conn.garbage_seen:
            return False
        return not reuse.expired(getattr(conn, "reuse_count", 0), conn.expire_time,
                                 time.time(), self.s.reuse_count_limit)

    def _save_session(self, conn: Connection, ep: Endpoint) -> bool:
        """Passivate a good session into scache (the socket is closed here either way)."""
        from .smtp import reuse
        c = self._scache()
        if c is None or reuse.expired(conn.reuse_count, conn.expire_time, time.time(),
                                      self.s.reuse_count_limit):
            return False
        policy = getattr(conn, "tls_policy", None)
        level = policy.level if policy else 0
        label = self._endp_label(ep, policy)
        prop = reuse.endp_props(conn.features, conn.reuse_count, conn.expire_time, level)
        tls = getattr(conn, "tls", None)
        if tls is not None:
            prop += tls.to_plain()       # a tlsproxy(8) session (see _may_keep)
        ttl = self.s.cache_time_limit
        if self._dest_label is not None and not self._dest_saved:
            self._dest_saved = True
            c.save_dest(ttl, self._dest_label, reuse.dest_props(
                self._dest_text, ep.host, ep.addr, ep.best_mx), label)
        sock = conn.sock
        conn.dead = True
        c.save_endp(ttl, label, prop, sock)
        return True

    def _pass_to_best_mx(self, service: str) -> None:
        """best_mx_transport: hand every remaining recipient to that transport
        (stock deliver_pass_all(); its status becomes the request status)."""
        from .ipc.stream import AttrStream, IpcError
        transport, _, nexthop = service.partition(":")
        nexthop = nexthop or self.req.nexthop
        req = self.req
        path = "private/%s" % transport          # relative: valid inside a chroot jail too
        for rcpt in list(self.todo):
            self.log.info("%s: passing <%s> to transport=%s" % (req.queue_id, rcpt.address,
                                                                transport))
            failure = None
            stream = None
            try:
                stream = AttrStream.connect_unix(path, self.s.ipc_timeout)
                stream.expect_protocol("delivery_request_protocol")
                stream.send(_pass_request_attrs(req, nexthop))
                stream.send(rcpt.attrs())
                reply = stream.receive()
                values = [v for _n, v in reply]
                if len(reply) != 8 or reply[-1][0] != "status":
                    failure = "unknown mail transport error"
                elif values[-1] not in ("0", ""):
                    self.status |= -1
            except IpcError as exc:
                self.log.warning("%s" % exc)
                failure = "mail transport unavailable"
            finally:
                if stream is not None:
                    stream.close()
            if failure is not None:
                self.status |= self.rep.defer(rcpt, "none", Dsn(status="4.3.0", reason=failure))
            self.todo.remove(rcpt)

    def _source_address(self, ep: Endpoint):
        """(address to bind, enforce) for a connection to ``ep``: the
        smtp_bind_address(6) of that family (enforced with
        smtp_bind_address_enforce), else, as stock's "virtual host" binding,
        the only inet_interfaces address of that family unless it is a
        loopback address; (None, False) lets the kernel choose."""
        s = self.s
        if ep.family == 2:
            configured = s.bind_address
        elif ep.family == 10:
            configured = s.bind_address6
        else:
            return None, False
        if configured:
            return configured, s.bind_address_enforce
        # "all" lists the loopback address (and, with IPv6, a link-local one)
        # besides any other: never exactly one usable address of a family
        if any(x.lower() in ("all", "loopback-only") for x in s.lookup.inet_interfaces):
            return None, False
        v6 = ep.family == 10
        own = [a for a in destinations.own_addresses(s.lookup)[0] if (":" in a) == v6]
        if len(own) == 1 and not (own[0] == "::1" if v6 else own[0].startswith("127.")):
            return own[0], False
        return None, False

    # --- one server -----------------------------------------------------------------
    def _try_server(self, ep: Endpoint, final: bool, last_site: bool,
                    sess_limit: int, sess_count: int, dest=None, cached=None) -> None:
        s = self.s
        conn = None
        if cached is not None:
            conn, policy = cached
        else:
            policy = self._tls_policy(dest, ep) if dest is not None else None
            if policy is False:
                return                    # address skipped (invalid TLS policy, wrapper mode)
            if (self._cache_load and ep.family in (2, 10)
                    and (ep.addr, ep.port) not in self._cached_addrs):
                c = self._scache()
                got = c.find_endp(self._endp_label(ep, policy)) if c is not None else None
                if got is not None:
                    conn = self._activate(got[0], ep, got[1])
                    if conn is not None:
                        self._cached_addrs.add((ep.addr, ep.port))
        if conn is None:
            bind, enforce = self._source_address(ep)
            try:
                sock = connect(ep, s.connect_timeout, bind, enforce, self.log.warning,
                               s.tcp_windowsize)
            except BindError:
                # stock: the next address is tried; no "connect to" line
                self.why = Failure("4.4.0", "server configuration error")
                return
            except ConnectError as exc:
                text = "connect to %s: %s" % (ep.namaddrport, exc.text)
                if ep.family != 1:       # stock logs no line for a UNIX-domain socket
                    self.log.info(text)
                self.why = Failure("4.4.1", text)
                return
            conn = Connection(sock, ep, s.timeouts, utf8=s.smtputf8_enable,
                              line_limit=s.reply_line_limit, deadline=s.per_request_deadline,
                              min_data_rate=s.min_data_rate, log=self.log,
                              line_filter=self._reply_filter())
            self._chat_attach(conn, ep)
            conn.reuse_count = 0
            conn.expire_time = time.time() + s.reuse_time_limit
            conn.cached_features = None
        conn.keep = conn.good = conn.quit_later = False
        if ep.family == 1 and policy is not None:
            from .tls.config import LEV_MAY, LEV_NONE
            if policy.level == LEV_MAY:      # stock smtp_connect_local(): pointless here
                self.log.warning("smtp_connect_local: opportunistic TLS encryption is not "
                                 "appropriate for unix-domain destinations.")
                policy.level = LEV_NONE
        conn.tls_policy = policy
        conn.tls_dest = dest
        conn.tls = getattr(conn, "cached_tls", None)     # a reused tlsproxy(8) session
        self._final = final
        self._handled = set()
        self._chat = conn.chat
        conn.on_garbage = lambda reply: self._warn_garbage(conn, reply)
        try:
            try:
                if conn.cached_features is not None:     # reused: no greeting, EHLO, STARTTLS
                    features = conn.cached_features
                    self.req.stats.reuse_count = conn.reuse_count
                else:
                    features = self._handshake(conn, ep)
                conn.features = features
                self._sessions += 1
                # the session limit may make this the last attempt of the last site
                if last_site and sess_limit and sess_count + 1 >= sess_limit:
                    self._final = True
                self._transaction(conn, ep, features)
            except SessionError as exc:
                self._session_error(conn, exc)
            except _SessionDone:
                pass
        finally:
            chat, self._chat = self._chat, None
            if chat is not None:
                chat.session_end(self.req.sender)     # the postmaster notice, if one is due
            saved = False
            if conn.good and not conn.dead and not conn.garbage_seen:
                try:
                    saved = self._save_session(conn, ep)
                except Exception as exc:     # never lose the request over the cache
                    self.log.warning("connection cache: %s" % exc)
            # a session kept for the cache but spoilt by a protocol error is
            # closed without QUIT (stock: no longer cached, not expired either)
            spoilt = conn.good and conn.keep and conn.garbage_seen
            if not saved and (conn.good or conn.quit_later) and not spoilt:
                self._quit(conn)             # not cached after all: QUIT at clean-up
            conn.close()
            self._chat_release(conn)
            self._handled = set()
            st = self.req.stats
            st.conn_setup_done = 0.0
            st.deliver_done = 0.0
            st.reuse_count = 0

    def _reply_filter(self):
        """smtp_reply_filter as a ReplyParser line filter, or None."""
        table = self.s.reply_filter
        if table is None:
            return None
        queue_id = self.req.queue_id
        log = self.log

        def line_filter(line: str):
            from .smtp.reply import ReplyFilterError
            try:
                value = table.lookup(line)
            except Exception as exc:            # MapError, or a broken table
                log.warning("%s: table %s:%s lookup error for %s"
                            % (queue_id, table.type, table.name, line))
                raise ReplyFilterError(str(exc)) from None
            return value
        return line_filter

    def _relay(self, ep: Endpoint) -> str:
        return ep.namaddrport

    def _warn_garbage(self, conn: Connection, reply: Reply) -> None:
        """smtp_chat_resp(): with PIPELINING on, each non-reply line is a
        warning (mail may be lost when replies get out of step)."""
        features = getattr(conn, "features", None)
        if features is None or not features.pipelining:
            return
        from .smtp.reply import garbage_lines
        lmtp = self.s.personality == "lmtp"
        for line in garbage_lines(reply):
            self.log.warning("%s: non-%s response from %s: %.100s" % (
                self.req.queue_id, "LMTP" if lmtp else "ESMTP", conn.ep.namaddrport, line))
            if self.s.helpful_warnings:
                self.log.warning(
                    "to prevent loss of mail, turn off command pipelining for %s with the "
                    "%s parameter" % (conn.ep.addr, "lmtp_discard_lhlo_keyword_address_maps"
                                      if lmtp else "smtp_discard_ehlo_keyword_address_maps"))

    def _chat_attach(self, conn: Connection, ep: Endpoint) -> None:
        """A new or reactivated session (stock smtp_session_alloc()): raise the
        log level for a debug_peer_list server; keep the conversation only when
        it will be logged or may go into a postmaster notice."""
        if self.s.chat is not None or self.log.verbose:
            from .smtp.chat import session_chat
            conn.chat = session_chat(self.s.chat, self.log, ep.host, ep.addr, ep.namaddrport)

    def _chat_release(self, conn: Connection) -> None:
        """The session is gone (stock smtp_session_free()): undo its debug level."""
        chat = conn.chat
        if chat is not None:
            conn.chat = None
            chat.release()

    def _server_dsn(self, ep: Endpoint, reply: Reply, reason: str, status: str | None = None) -> Dsn:
        """A failure caused by a server reply.  A reply that is not 4xx/5xx where a
        failure is reported (say, 250 to DATA) is a protocol error: 5.5.0."""
        status = status or reply.dsn
        if self._chat is not None:
            self._chat.check_code(reply.code, status)   # postmaster notice class "protocol"
        if status[:1] not in ("4", "5"):
            status, reason = "5.5.0", "Protocol error: " + reason
        return Dsn(status=status, diag_type="smtp", diag_text=reply.flat,
                   mta_type="dns", mta_mname=ep.host, reason=reason)

    def _session_error(self, conn: Connection, exc: SessionError) -> None:
        if exc.stage in (Stage.ABORT, Stage.QUIT):
            return
        ep = conn.ep
        final = self._final
        if exc.kind == "data":               # smtp_reply_filter lookup error (no fallback)
            if self._chat is not None:
                self._chat.data_error()          # postmaster notice class "data"
            self._bulk_fail(Dsn(status="4.3.0", reason="local data error while talking to %s"
                                % ep.namaddr), self._relay(ep), final, throttle=True)
            # stock: QUIT after a failed handshake on a healthy stream; in the
            # middle of a transaction the session is just closed
            if exc.stage in _HANDSHAKE_STAGES:
                conn.quit_later = True
            else:
                conn.dead = True
            return
        if (getattr(conn, "tls", None) is not None
                and any(id(r) not in self._handled for r in self.todo)
                and self._plaintext_fallback_ok(conn.tls_policy, ep)):
            self._retry_plain = True       # PLAINTEXT_FALLBACK_OK_AFTER_TLS_SESSION_FAILURE
            final = False
        if exc.kind == "timeout":
            reason = "conversation with %s timed out while %s" % (ep.namaddr, _where(exc.stage))
        else:
            reason = "lost connection with %s while %s" % (ep.namaddr, _where(exc.stage))
        self._bulk_fail(Dsn(status="4.4.2", reason=reason), self._relay(ep), final,
                        throttle=True)

    def _quit(self, conn: Connection) -> None:
        if conn.dead:
            return
        try:
            conn.write(b"QUIT\r\n", Stage.QUIT)
            if not self.s.skip_quit_response:
                conn.read_reply(Stage.QUIT)
        except SessionError:
            pass

    def _handshake(self, conn: Connection, ep: Endpoint):
        policy = conn.tls_policy
        wrapper = policy is not None and self.s.tls.wrappermode
        if wrapper:                      # smtp_tls_wrappermode: TLS before the greeting
            self._start_tls(conn, ep)
        greeting = conn.read_reply(Stage.GREETING)
        features = self._hello(conn, ep, greeting)
        if policy is not None and not wrapper:
            features = self._starttls(conn, ep, features, policy)
        tsock = getattr(conn, "tls", None)
        self._sasl_login(conn, ep, features, TLS_NONE if tsock is None
                         else TLS_VERIFIED if tsock.matched else TLS_UNVERIFIED)
        return features

    # --- SASL (smtp_sasl_proto.c smtp_sasl_helo_login()) ------------------------------
    def _sasl_login(self, conn: Connection, ep: Endpoint, features: Features,
                    tls: str = TLS_NONE) -> None:
        """AUTH after the final EHLO (inside TLS when there was STARTTLS);
        ``tls`` picks smtp_sasl_security_options, _tls_ or _tls_verified_.
        No credentials for this server: go on without AUTH ("as strangers").
        A failure is a site failure (soft by default: the next server, or a
        deferral; the session is not counted), then QUIT.  I/O errors surface
        as SessionError of the EHLO (LHLO) stage, as in stock."""
        sasl, helo = self.s.sasl, self._helo_auth
        if sasl is None or not sasl.enabled or helo is None or not helo.offered:
            return
        from .sasl.client import ConnectionIO
        stage = Stage.LHLO if self.s.personality == "lmtp" else Stage.EHLO   # where-text
        result = sasl.login(ConnectionIO(conn, stage), helo, queue_id=self.req.queue_id,
                            host=ep.host, dest=self._site, namaddr=ep.namaddr,
                            namaddrport=ep.namaddrport, sender=self.req.sender, tls=tls)
        if result.state == "ok":
            return
        if result.state == "skipped":
            helo.offered = False                  # stock: features &= ~SMTP_FEATURE_AUTH
            features.auth = []
            return
        if result.state == "table_error":
            self.log.warning(result.warning)
            if self._chat is not None:
                self._chat.data_error()
            dsn = Dsn(status="4.3.0", reason="local data error while talking to %s" % ep.namaddr)
        else:
            o = result.outcome
            dsn = Dsn(status=o.status, reason=o.reason, diag_type=o.diag_type,
                      diag_text=o.diag_text, mta_type="dns" if o.mta else "", mta_mname=o.mta)
        self._bulk_fail(dsn, self._relay(ep), self._final, throttle=True)
        self._quit(conn)
        raise _SessionDone

    def _have_sasl_credentials(self, ep: Endpoint) -> bool:
        """Stock HAVE_SASL_CREDENTIALS: SASL on and a password-table entry for
        this server (a table error counts as yes: no plaintext retry)."""
        sasl = self.s.sasl
        if sasl is None or not sasl.enabled:
            return False
        try:
            return sasl.lookup(host=ep.host, dest=self._site, sender=self.req.sender) is not None
        except Exception:
            return True

    # --- TLS (smtp_proto.c smtp_helo()/smtp_start_tls(), smtp_connect.c) -------------
    def _tls_policy(self, dest, ep: Endpoint):
        """The TLS policy for this address; False when the address is skipped."""
        cfg = self.s.tls
        if cfg is None:
            return None
        from .tls.config import LEV_ENCRYPT, LEV_NONE
        if self.tls_resolver is None:
            from .tls.policy import PolicyResolver
            cfg.ensure_tables(self.log)
            # DANE's TLSA lookups share the resolver (and smtp_dns_reply_filter)
            self.tls_resolver = PolicyResolver(cfg, self.log,
                                               dns=getattr(self.resolver, "dns", None))
        # DANE: the MX record and this address record (stock iter->mx, iter->rr)
        policy = self.tls_resolver.resolve(dest.text, ep.host, ep.port,
                                            getattr(ep, "mx", None), getattr(ep, "rr", None))
        if policy.invalid:
            if ep.family == 1:               # stock smtp_connect_local()'s wording
                self.log.warning("TLS policy lookup error for %s/%s: %s"
                                 % (ep.host, ep.addr, policy.reason))
            else:
                self.log.warning("TLS policy lookup for %s/%s: %s" % (dest.text, ep.host,
                                                                      policy.reason))
            self.why = Failure(policy.status, policy.reason)
            return False
        if cfg.wrappermode and policy.level < LEV_ENCRYPT:
            self.log.warning('%s requires "%s = encrypt" (or stronger)' % (
                cfg.name("smtp_tls_wrappermode"), cfg.name("smtp_tls_security_level")))
            return False
        if self._plain_next:              # retry after an opportunistic TLS failure
            self._plain_next = False
            policy.level = LEV_NONE
        return policy

    def _plaintext_fallback_ok(self, policy, ep: Endpoint) -> bool:
        """Stock's PLAINTEXT_FALLBACK_OK_* conditions: never when we would
        authenticate to this server (SASL credentials)."""
        from .tls.config import LEV_MAY
        if policy is None or policy.level != LEV_MAY:
            return False
        st = self.req.stats
        preactive = int(st.active_arrival) - int(st.incoming_arrival)
        return bool((self.req.trace_only or preactive >= self.s.tls.min_backoff_time)
                    and not self._have_sasl_credentials(ep))

    def _tls_fail(self, ep: Endpoint, status: str, reason: str, quit: bool,
                  conn: Connection) -> None:
        self._bulk_fail(Dsn(status=status, reason=reason), self._relay(ep), self._final,
                        throttle=True)
        if quit:
            self._quit(conn)
        raise _SessionDone

    def _starttls(self, conn: Connection, ep: Endpoint, features: Features, policy) -> Features:
        from .tls.config import LEV_MAY, LEV_NONE, tls_required
        cfg = self.s.tls
        level = policy.level
        if features.starttls and level <= LEV_NONE and cfg.note_starttls_offer:
            self.log.info("Host offered STARTTLS: [%s]" % ep.host)
        engine_ok = False
        if features.starttls and level >= LEV_MAY:
            if policy.conn_reuse:
                engine_ok = True             # tlsproxy(8) runs the TLS engine
            else:
                from .tls.client import engine_available     # imports OpenSSL
                engine_ok = engine_available(cfg, self.log)
            if engine_ok:
                conn.write(b"STARTTLS\r\n", Stage.STARTTLS)
                reply = conn.read_reply(Stage.STARTTLS)
                if reply.klass == 2:
                    conn.server_helo = features.server_name     # stock session->helo
                    self._start_tls(conn, ep)
                    return self._hello(conn, ep, None)
                features.starttls = False
                if tls_required(level):
                    self._bulk_fail(self._server_dsn(
                        ep, reply, "TLS is required, but host %s refused to start TLS: %s"
                        % (ep.namaddr, reply.flat)), self._relay(ep), self._final, throttle=True)
                    self._quit(conn)
                    raise _SessionDone
        if tls_required(level):
            if not features.starttls:
                self._tls_fail(ep, "4.7.4", "TLS is required, but was not offered by host %s"
                               % ep.namaddr, True, conn)
            elif not engine_ok:
                self._tls_fail(ep, "4.7.5", "TLS is required, but our TLS engine is unavailable",
                               True, conn)
            self.log.warning("smtp_helo: TLS is required but unavailable, don't know why")
            self._tls_fail(ep, "4.7.0", "TLS is required, but unavailable", True, conn)
        return features

    def _start_tls(self, conn: Connection, ep: Endpoint) -> None:
        """The handshake and the certificate checks (smtp_start_tls)."""
        cfg, policy, dest = self.s.tls, conn.tls_policy, conn.tls_dest
        if policy.conn_reuse:
            self._start_tls_proxy(conn, ep)
            return
        from .tls import client as tlsclient
        conn.flush(Stage.STARTTLS)
        try:
            tsock = tlsclient.start(conn.sock, policy, cfg, nexthop=dest.host, host=ep.host,
                                    namaddrport=ep.namaddrport, log=self.log,
                                    service=self.s.service_name, dest=dest.text, addr=ep.addr,
                                    helo=self.s.helo_name)
        except (tlsclient.TlsError, tlsclient.TlsEngineError):
            self._tls_handshake_failed(conn, ep)
        self._tls_established(conn, ep, tsock, tsock)

    def _tls_handshake_failed(self, conn: Connection, ep: Endpoint) -> None:
        """No TLS session (in-process or through tlsproxy): "Cannot start TLS",
        the same address again in plaintext where stock allows it."""
        from .tls.config import LEV_MAY
        policy = conn.tls_policy
        conn.dead = True             # the peer is in an undefined state: no QUIT
        final = self._final
        if self._plaintext_fallback_ok(policy, ep):
            self._retry_plain = True          # RETRY_AS_PLAINTEXT
            final = False
        self._bulk_fail(Dsn(status="4.7.5", reason="Cannot start TLS: handshake failure"),
                        self._relay(ep), final, throttle=policy.level != LEV_MAY)
        raise _SessionDone

    def _tls_established(self, conn: Connection, ep: Endpoint, sock, tls,
                         rest: bytes = b"") -> None:
        """Go on over the TLS stream ``sock`` (``rest``: server bytes already
        read); a certificate the policy requires but did not get ends the session."""
        from .tls.config import must_match
        conn.restart(sock)
        conn.tls = tls
        if rest:                         # the server spoke right after the handshake
            from .smtp.reply import ReplyFilterError
            try:
                conn.parser.feed(rest)
            except ReplyFilterError:
                conn.dead = True
                raise SessionError("data", Stage.GREETING) from None
        if must_match(tls.level) and not tls.matched:
            self._tls_fail(ep, "4.7.5", "Server certificate not verified", True, conn)

    def _start_tls_proxy(self, conn: Connection, ep: Endpoint) -> None:
        """smtp_start_tls() with connection reuse: tlsproxy(8) does the TLS;
        the agent talks SMTP over its plaintext stream to the proxy, which
        scache(8) can keep (no fallback to the in-process engine, as stock)."""
        from .tls import proxy
        cfg, policy, dest = self.s.tls, conn.tls_policy, conn.tls_dest
        conn.flush(Stage.STARTTLS)
        p = cfg.params
        got = proxy.start(conn.sock, policy, cfg, p, service=self.s.service_name, dest=dest.text,
                          nexthop=dest.host, host=ep.host, addr=ep.addr, port=ep.port,
                          namaddrport=ep.namaddrport, helo=getattr(conn, "server_helo", ""),
                          session_timeout=self.s.timeouts.get(Stage.DOT, 600.0),
                          service_name=(p.get("tlsproxy_service_name") if p is not None
                                        else "") or "tlsproxy", log=self.log)
        if got is None:
            self._tls_handshake_failed(conn, ep)
        psock, ctx, rest = got
        try:
            conn.sock.close()            # tlsproxy has its own copy of the TCP socket
        except OSError:
            pass
        self._tls_established(conn, ep, psock, ctx, rest)

    def _refused(self, conn: Connection, ep: Endpoint, reply: Reply, status: str | None = None):
        """Site failure "host X refused to talk to me", QUIT, leave the session."""
        self._bulk_fail(self._server_dsn(ep, reply, "host %s refused to talk to me: %s"
                                         % (ep.namaddr, reply.flat), status),
                        self._relay(ep), self._final, throttle=True)
        self._quit(conn)
        raise _SessionDone

    def _hello(self, conn: Connection, ep: Endpoint, greeting) -> Features:
        """The greeting and EHLO/HELO; ``greeting`` None: the EHLO after STARTTLS."""
        s = self.s
        loop_detect = s.personality == "smtp" and ep.port == 25
        if greeting is None:
            pix = conn.pix
        else:
            if greeting.klass != 2:
                dsn_status = greeting.dsn
                if greeting.klass == 5 and s.skip_5xx_greeting:
                    dsn_status = "4" + dsn_status[1:]
                self._refused(conn, ep, greeting, dsn_status)
            pix = conn.pix = self._pix_workarounds(ep, greeting)
            words = greeting.text.replace("-", " ", 1).split()[1:]
            if words and words[0].lower() == s.myhostname.lower() and loop_detect:
                self.log.warning("host %s greeted me with my own hostname %s"
                                 % (ep.namaddrport, s.myhostname))
        if s.personality == "lmtp" or greeting is None:
            esmtp = True
        else:
            esmtp = greeting_says_esmtp(greeting)
            if s.always_send_ehlo and "disable_esmtp" not in pix:
                esmtp = True
            if s.never_send_ehlo or "disable_esmtp" in pix:
                esmtp = False
        hello = s.helo_name.encode("utf-8", "surrogateescape")
        features = None
        self._helo_auth = None       # a new EHLO (after STARTTLS too) starts a new AUTH list
        if esmtp:
            stage = Stage.LHLO if s.personality == "lmtp" else Stage.EHLO
            verb = b"LHLO " if s.personality == "lmtp" else b"EHLO "
            conn.write(verb + hello + b"\r\n", stage)
            reply = conn.read_reply(stage)
            if reply.klass == 2:
                discard = self._per_server_words(conn, ep, s.discard_ehlo_maps,
                                                 s.discard_ehlo_keywords, upper=True)
                if discard - {"SILENT-DISCARD"} and "SILENT-DISCARD" not in discard:
                    self.log.info("discarding EHLO keywords: %s" % " ".join(
                        k for k in EHLO_MASK_NAMES if k in discard))
                features = parse_ehlo(reply, discard)
                # stock SMTP_FEATURE_AUTH: AUTH offered and SASL on (cached with the session)
                if s.sasl is not None and s.sasl.enabled:
                    self._helo_auth = s.sasl.helo_auth(reply.lines, ep.namaddrport, discard)
                    features.auth = ["AUTH"] if self._helo_auth.offered else []
                else:
                    features.auth = []
                if greeting is None:
                    features.starttls = False     # ignored in the EHLO after STARTTLS
            elif reply.code == 421 or s.personality == "lmtp":
                self._refused(conn, ep, reply)
        if features is None:
            conn.write(b"HELO " + hello + b"\r\n", Stage.HELO)
            reply = conn.read_reply(Stage.HELO)
            if reply.klass != 2:
                self._refused(conn, ep, reply)
            features = Features(esmtp=False)
            features.server_name = (reply.lines[0][4:].split() or [""])[0]
        features.pix_delay_dotcrlf = "delay_dotcrlf" in pix
        for w in features.warnings:
            self.log.warning("%s from %s" % (w, ep.namaddrport))
        if (features.server_name and features.server_name.lower() == s.myhostname.lower()
                and loop_detect and features.esmtp):
            self.log.warning("host %s replied to HELO/EHLO with my own hostname %s"
                             % (ep.namaddrport, s.myhostname))
            self._bulk_fail(Dsn(status="5.4.6" if ep.best_mx else "4.4.6",
                                reason="mail for %s loops back to myself" % self.req.nexthop),
                            self._relay(ep), self._final, throttle=True)
            self._quit(conn)
            raise _SessionDone
        if features.smtputf8 and not features.eightbitmime:
            self.log.info("host %s offers SMTPUTF8 support, but not 8BITMIME" % ep.namaddr)
            features.eightbitmime = True
        return features

    def _pix_workarounds(self, ep: Endpoint, greeting: Reply) -> set:
        """PIX "smtp fixup" detection: a greeting of only '2', '0', ' ', '*', TAB."""
        if greeting.text.strip("20 *\t\n"):
            return set()
        try:
            words = self._per_server_words(None, ep, self.s.pix_maps, self.s.pix_workarounds)
        except _SessionDone:                      # best effort only, as stock
            words = set(w.lower() for w in self.s.pix_workarounds)
        names = set(words) & {"disable_esmtp", "delay_dotcrlf"}
        if not words:
            return set()
        if ("delay_dotcrlf" in names and self.req.stats.incoming_arrival
                > time.time() - self.s.pix_threshold_time):
            names.discard("delay_dotcrlf")
        self.log.info("%s: enabling PIX workarounds: %s for %s" % (
            self.req.queue_id, " ".join(n for n in ("disable_esmtp", "delay_dotcrlf")
                                        if n in names), ep.namaddrport))
        return names

    # --- the transaction ---------------------------------------------------------------
    def _mail_command(self, f: Features) -> bytes:
        req, s = self.req, self.s
        sender = self._generic(req.sender)
        sender = quote_821(sender) if s.quote_rfc821_envelope else sender
        cmd = "MAIL FROM:<%s>" % sender
        downgrade_possible = (not f.eightbitmime and not s.disable_mime_output_conversion
                              and req.encoding != "7bit")
        if f.size and not downgrade_possible:
            cmd += " SIZE=%d" % req.data_size
        if f.eightbitmime:
            if req.encoding == "8bit":
                cmd += " BODY=8BITMIME"
            elif req.encoding == "7bit":
                cmd += " BODY=7BIT"
            elif req.encoding:
                self.log.warning("%s: unknown content encoding: %s" % (req.queue_id, req.encoding))
        if f.dsn:
            if req.envelope_id:
                cmd += " ENVID=" + xtext(req.envelope_id, b"=")
            if req.ret_flags == 1:
                cmd += " RET=FULL"
            elif req.ret_flags == 2:
                cmd += " RET=HDRS"
        if f.smtputf8 and req.smtputf8 & SMTPUTF8_REQUESTED:
            cmd += " SMTPUTF8"
        sasl = s.sasl
        if sasl is not None and sasl.enabled and sasl.dummy_mail_auth and f.auth:
            cmd += " AUTH=<>"            # smtp_send_dummy_mail_auth
        return cmd.encode("utf-8", "surrogateescape") + b"\r\n"

    def _rcpt_command(self, f: Features, rcpt: Recipient) -> bytes:
        s = self.s
        addr = self._generic(rcpt.address)
        addr = quote_821(addr) if s.quote_rfc821_envelope else addr
        cmd = "RCPT TO:<%s>" % addr
        if f.dsn:
            if rcpt.dsn_orig_rcpt:
                cmd += " ORCPT=" + xtext(rcpt.dsn_orig_rcpt, b"=")
            elif rcpt.original:
                cmd += " ORCPT=" + xtext("rfc822;" + quote_822(rcpt.original), b"=")
            if rcpt.notify_flags:
                names = [n for bit, n in ((NOTIFY_NEVER, "NEVER"), (NOTIFY_SUCCESS, "SUCCESS"),
                                          (NOTIFY_FAILURE, "FAILURE"), (NOTIFY_DELAY, "DELAY"))
                         if rcpt.notify_flags & bit]
                cmd += " NOTIFY=" + ",".join(names)
        return cmd.encode("utf-8", "surrogateescape") + b"\r\n"

    def _transaction(self, conn: Connection, ep: Endpoint, f: Features) -> None:
        req, s = self.req, self.s
        relay = self._relay(ep)
        if (req.smtputf8 & SMTPUTF8_REQUESTED) and (req.smtputf8 & 14) and not f.smtputf8:
            self._bulk_fail(Dsn(status="5.6.7", reason="SMTPUTF8 is required, but was not "
                                "offered by host %s" % ep.namaddr), relay, self._final, throttle=False)
            self._quit(conn)
            return
        if f.size and f.size_limit and req.data_size > f.size_limit:
            self._bulk_fail(Dsn(status="5.3.4", reason="message size %d exceeds size limit %d of "
                                "server %s" % (req.data_size, f.size_limit, ep.namaddr)),
                            relay, self._final, throttle=False)
            self._quit(conn)
            return
        rcpts = [r for r in self.todo if id(r) not in self._handled]
        probe = req.trace_only
        send_data = not (probe and s.address_verify_target != "data")
        keep = conn.keep = self._may_keep(conn)
        rset_rejected = False
        try:
            mail_cmd = self._mail_command(f)
            rcpt_cmds = [self._rcpt_command(f, r) for r in rcpts]
        except _generic_map_error() as exc:       # stock: fatal
            self._local_data_error(conn, ep, str(exc))
            self._quit(conn)
            return
        tx = Transaction(mail_cmd, rcpt_cmds,
                         pipelining=f.pipelining, send_data=send_data, send_quit=not keep,
                         await_quit=not s.skip_quit_response, lmtp=s.personality == "lmtp",
                         xforward=self._xforward_commands(f))
        req.stats.conn_setup_done = time.time()
        while True:
            for c in tx.commands():
                conn.queue(c.data)
            if tx.wants_content:
                if not self._send_content(conn, ep, tx, rcpts, f):
                    return
                for c in tx.content_sent():
                    conn.queue(c.data)
                continue
            if not tx.awaiting:
                break
            stage = tx.awaiting[0].stage
            try:
                reply = conn.read_reply(stage)
            except SessionError as exc:
                if exc.stage in (Stage.ABORT, Stage.QUIT):
                    return
                raise
            if stage == Stage.DOT:
                req.stats.deliver_done = time.time()
            index = tx.awaiting[0].index
            if stage == Stage.ABORT and reply.klass != 2:
                rset_rejected = True
            tx.on_reply(reply)
            self._on_reply(tx, stage, index, reply, rcpts, ep, f)
            if stage == Stage.DATA and probe and reply.klass == 3 and tx.accepted:
                return      # probe target "data": success at 354, drop the session
        self.had_transaction = True
        try:
            conn.flush(Stage.QUIT)
        except SessionError:
            pass
        if keep and not conn.dead:
            if rset_rejected or _protocol_error(tx):
                conn.quit_later = True       # never cache a session with protocol errors
            else:
                conn.good = True

    def _xforward_commands(self, f: Features) -> tuple:
        """XFORWARD name/address and protocol/helo commands (smtp_send_xforward_command)."""
        if not self.s.send_xforward or not f.xforward:
            return ()
        req = self.req

        def known(v: str) -> bool:
            return bool(v) and v.lower() != "unknown"

        first = [(n, v) for n, v, ok in (("NAME", req.client_name, known(req.client_name)),
                                         ("ADDR", req.client_addr, known(req.client_addr)),
                                         ("PORT", req.client_port, known(req.client_port)))
                 if ok and n in f.xforward]
        source = ("LOCAL" if req.rewrite_context == "local" else "REMOTE") \
            if req.rewrite_context else ""
        second = [(n, v) for n, v, ok in (("PROTO", req.client_proto, known(req.client_proto)),
                                          ("HELO", req.client_helo, bool(req.client_helo)),
                                          ("IDENT", req.log_ident, bool(req.log_ident)),
                                          ("SOURCE", source, bool(source)))
                  if ok and n in f.xforward]
        out = []
        for stage, attrs in ((Stage.XFORWARD1, first), (Stage.XFORWARD2, second)):
            if attrs:
                cmd = "XFORWARD" + "".join(" %s=%s" % (n, xtext(v)) for n, v in attrs)
                out.append((stage, cmd.encode("utf-8", "surrogateescape") + b"\r\n"))
        return tuple(out)

    def _on_reply(self, tx: Transaction, stage: Stage, index: int, reply: Reply,
                  rcpts: list, ep: Endpoint, f: Features) -> None:
        """The receiver: classify each reply as it arrives (smtp_loop's recv side)."""
        relay = self._relay(ep)
        final = self._final
        mail_ok = tx.mail_reply is not None and tx.mail_reply.klass == 2
        if stage in (Stage.XFORWARD1, Stage.XFORWARD2):
            if reply.klass != 2:
                self.log.warning("host %s said: %s (in reply to %s)" % (
                    ep.namaddrport, reply.flat, IN_REPLY_TO[stage]))
        elif stage == Stage.MAIL and not mail_ok:
            self._bulk_fail(self._server_dsn(ep, reply, "host %s said: %s (in reply to MAIL FROM "
                                             "command)" % (ep.namaddr, reply.flat)),
                            relay, final, throttle=False, rcpts=rcpts)
        elif stage == Stage.RCPT and mail_ok:
            rcpt = rcpts[index]
            if reply.klass != 2:
                self._rcpt_fail(rcpt, self._server_dsn(
                    ep, reply, "host %s said: %s (in reply to RCPT TO command)"
                    % (ep.namaddr, reply.flat)), relay, final)
            elif self.req.trace_only and not tx.send_data:
                self._success(rcpt, ep, reply, f, action="deliverable")
        elif stage == Stage.DATA and tx.accepted and mail_ok:
            accepted = self._unhandled(rcpts, tx.accepted)
            if reply.klass != 3:
                self._bulk_fail(self._server_dsn(ep, reply, "host %s said: %s (in reply to DATA "
                                                 "command)" % (ep.namaddr, reply.flat)),
                                relay, final, throttle=False, rcpts=accepted)
            elif self.req.trace_only:
                for rcpt in accepted:
                    self._success(rcpt, ep, reply, f, action="deliverable", status="2.0.0")
        elif stage == Stage.DOT and index >= 0:           # LMTP: this recipient's reply
            rcpt = rcpts[index]
            if id(rcpt) in self._handled:
                return
            if reply.klass == 2:
                self._success(rcpt, ep, reply, f)
            else:
                self._rcpt_fail(rcpt, self._server_dsn(
                    ep, reply, "host %s said: %s (in reply to end of DATA command)"
                    % (ep.namaddr, reply.flat)), relay, final)
        elif stage == Stage.DOT and tx.accepted and mail_ok:
            accepted = self._unhandled(rcpts, tx.accepted)
            if reply.klass == 2:
                for rcpt in accepted:
                    self._success(rcpt, ep, reply, f)
            else:
                reason = "host %s said: %s (in reply to end of DATA command)" % (ep.namaddr,
                                                                                reply.flat)
                self._bulk_fail(self._server_dsn(ep, reply, reason), relay, final,
                                throttle=False, rcpts=accepted)

    def _unhandled(self, rcpts: list, indexes: list) -> list:
        return [rcpts[i] for i in indexes if id(rcpts[i]) not in self._handled]

    def _success(self, rcpt: Recipient, ep: Endpoint, reply: Reply, f: Features,
                 action: str = "relayed", status: str | None = None) -> None:
        if action == "relayed" and "X" in self.flags_letters and not f.dsn:
            action = "delivered"          # final delivery (flags=X) to a server without DSN
        dsn = Dsn(status=status or reply.dsn, diag_type="smtp", diag_text=reply.flat,
                  mta_type="dns", mta_mname=ep.host, action=action, reason=reply.flat)
        if f.dsn:
            rcpt.notify_flags &= ~NOTIFY_SUCCESS     # the server now owns success notices
        result = self.rep.sent(rcpt, self._relay(ep), dsn)
        if result == 0 and self.qf is not None and (
                self.req.flags & FLAG_SUCCESS or self.req.trace_only):
            self.qf.mark_done(rcpt.offset)
        self.status |= result
        self._handled.add(id(rcpt))
        self.todo.remove(rcpt)

    # --- content -------------------------------------------------------------------
    def _send_content(self, conn: Connection, ep: Endpoint, tx: Transaction,
                      rcpts: list, f: Features) -> bool:
        """Stream the message after the 354; False when the session ended here."""
        enc = TextEncoder(self.s.line_length_limit)
        req = self.req
        s = self.s
        mime = None
        downgrade = (not f.eightbitmime and not s.disable_mime_output_conversion
                     and req.encoding != "7bit")
        any_checks = self.checks is not None
        if downgrade or any_checks or self.generic is not None:
            # smtp_proto.c: downgrade -> full MIME + nesting errors; checks -> full MIME;
            # generic maps only -> primary headers only (MIME_OPT_DISABLE_MIME)
            from .smtp.checks import OutputFilter
            from .smtp.mime import MimeDowngrade
            kw = {}
            if self.generic is not None or (any_checks and self.checks.has_header_checks):
                flt = OutputFilter(req.queue_id, self.checks, self.generic, self.log)
                kw["header_callback"] = flt.header_callback
                if any_checks and self.checks.has_body_checks:
                    kw["body_callback"] = flt.body_callback
            elif any_checks:
                flt = OutputFilter(req.queue_id, self.checks, None, self.log)
                kw["body_callback"] = flt.body_callback
            mime = MimeDowngrade(downgrade=downgrade, nesting_limit=s.mime_nesting_limit,
                                 boundary_limit=s.mime_boundary_length_limit,
                                 header_size_limit=s.header_size_limit,
                                 disable_mime=not downgrade and not any_checks, **kw)

        def put(text: bytes, complete: bool) -> None:
            if mime is None:
                enc.record(text, complete)
                return
            for t, c in mime.record(text, complete):
                enc.record(t, c)
            if mime.errors:
                raise _MimeFailure(mime.error)
        try:
            for text in self._prepended_headers():
                put(text, True)
            for line in self.qf.content(req.data_offset):
                put(line.text, line.complete)
                if len(enc.out) >= CONTENT_CHUNK:
                    conn.write(enc.take(), Stage.BODY)
            if mime is not None:
                for t, c in mime.finish():
                    enc.record(t, c)
            enc.finish()
            conn.queue_content(enc.take())
            if f.pix_delay_dotcrlf:           # never let CR LF . CR LF share a packet
                conn.flush(Stage.BODY)
                time.sleep(self.s.pix_delay_time)
        except CorruptContent as exc:
            if exc.detail:
                self.log.warning(exc.detail)
            self.log.warning("%s: bad record type: %d in message content"
                             % (req.queue_id, exc.record_type))
            clean = self.status == 0
            self._bulk_fail(Dsn(status="5.3.0", reason="unreadable mail queue entry"),
                            self._relay(ep), True, throttle=False)
            if clean and self.status == 0:
                self.log.warning("corrupted queue file: %s" % self.qf.path)
                try:
                    self.qf.mark_corrupt()
                except OSError as e:
                    self.log.warning("mark queue file %s corrupt: %s" % (self.qf.path, e))
            conn.close()            # no '.', no QUIT: the server must discard the message
            return False
        except _content_errors() as exc:
            # smtp_proto.c: SMTP_ERR_DATA (a generic map error is fatal in stock)
            if isinstance(exc, _generic_map_error()):
                self.log.warning(str(exc))
            self._local_data_error(conn, ep, None)
            conn.close()            # no '.': the server discards the partial message
            return False
        except _MimeFailure as exc:
            try:
                conn.write(enc.take(), Stage.BODY)
            except SessionError:
                pass
            status, reason = exc.args[0]
            self._bulk_fail(Dsn(status=status, reason=reason), self._relay(ep), self._final,
                            throttle=False)
            conn.close()            # no '.': the server discards the partial message
            return False
        except SessionError as exc:
            if exc.kind != "lost":
                raise                # a timeout: stock reads no reply after it
            # The server may have replied (5xx) and closed: use that reply if there is one.
            conn.out.clear()
            try:
                reply = conn.read_reply(Stage.DOT)
            except SessionError:
                raise exc from None
            req.stats.deliver_done = time.time()
            tx.awaiting.clear()
            tx.dot_reply = reply
            self._on_reply(tx, Stage.DOT, -1, reply, rcpts, ep, f)
            return False
        if enc.folded and not self.folded_logged:
            self.folded_logged = True
            self.log.info("%s: breaking line > %d bytes with <CR><LF>SPACE"
                          % (req.queue_id, self.s.line_length_limit))
        return True

    def _generic(self, addr: str) -> str:
        """smtp_rewrite_generic_internal(): non-empty addresses through
        smtp_generic_maps; GenericMapError on a table error."""
        if self.generic is None or not addr:
            return addr
        return self.generic.map_envelope(addr)

    def _per_server_words(self, conn, ep: Endpoint, maps, default, upper: bool = False) -> set:
        """A keyword list looked up by the server's IP address in ``maps``
        (smtp_discard_ehlo_keyword_address_maps, smtp_pix_workaround_maps),
        else ``default``.  A lookup error is a local data error (4.3.0)."""
        words = default
        if maps is not None:
            from .maps import MapError
            try:
                found = maps.lookup(ep.addr)
            except MapError:
                if conn is None:
                    raise _SessionDone from None
                self._local_data_error(conn, ep, "%s: %s map lookup error for %s"
                                       % (self.req.queue_id, maps.title, ep.addr))
                self._quit(conn)
                raise _SessionDone from None
            if found is not None:
                words = [w for w in found.replace(",", " ").split() if w]
        return {w.upper() if upper else w.lower() for w in words}

    def _local_data_error(self, conn: Connection, ep: Endpoint, warning: str | None) -> None:
        """A table lookup failed while building the transaction or the content:
        stock's SMTP_ERR_DATA outcome (4.3.0, throttled).  Stock exits fatally
        on smtp_generic_maps errors instead; deferring keeps the agent alive."""
        if warning:
            self.log.warning(warning)
        if self._chat is not None:
            self._chat.data_error()                       # postmaster notice class "data"
        self._bulk_fail(Dsn(status="4.3.0", reason="local data error while talking to %s"
                            % ep.namaddr), self._relay(ep), self._final, throttle=True)

    def delivered_to_loop(self) -> bool:
        """flags=D: does a Delivered-To: header of the message already name the
        (generic-mapped) recipient?  Like delivered_hdr.c: primary headers
        only, the first line of each header, at most 1,000 distinct values,
        compared case-insensitively in quoted (external) form."""
        from .maps.base import casefold
        from .smtp.address import quote_822
        from .smtp.mime import is_header_buf

        def fold(text: str) -> str:
            return text.lower() if text.isascii() else casefold(text)

        seen = set()
        continued = False            # the previous record was a partial line
        for line in self.qf.content(self.req.data_offset):
            first, continued = not continued, not line.complete
            if not first:
                continue
            text = line.text
            n = is_header_buf(text)
            if n:
                if text[:n].lower() == b"delivered-to":
                    value = text[text.index(b":", n) + 1:].lstrip(b" \t\r\n\v\f")
                    seen.add(fold(value.decode("utf-8", "surrogateescape")))
                    if len(seen) >= 1000:
                        break
            elif text[:1] not in (b" ", b"\t", b"\r", b"\n", b"\v", b"\f") or not text:
                break
        if not seen:
            return False
        rcpt = self.req.recipients[0].address
        return fold(quote_822(self._generic(rcpt))) in seen

    def _prepended_headers(self) -> list:
        out = []
        req = self.req
        letters = self.flags_letters
        if "R" in letters:
            out.append("Return-Path: <%s>" % quote_822(self._generic(req.sender)))
        if "O" in letters and self.todo:
            r = self.todo[0]
            out.append("X-Original-To: %s" % quote_822(self._generic(r.original or r.address)))
        if "D" in letters and self.todo:
            out.append("Delivered-To: %s" % quote_822(self._generic(self.todo[0].address)))
        return [h.encode("utf-8", "surrogateescape") for h in out]


def _pass_request_attrs(req, nexthop: str) -> list:
    """The 23 attributes of a delivery request, for deliver_pass (one recipient)."""
    return [
        ("flags", req.flags), ("queue_name", req.queue_name), ("queue_id", req.queue_id),
        ("offset", req.data_offset), ("size", req.data_size), ("nexthop", nexthop),
        ("encoding", req.encoding), (req.sendopts_name, req.smtputf8), ("sender", req.sender),
        ("envelope_id", req.envelope_id), ("ret_flags", req.ret_flags),
        ("time", req.stats.pack()), ("log_client_name", req.client_name),
        ("log_client_address", req.client_addr), ("log_client_port", req.client_port),
        ("log_protocol_name", req.client_proto), ("log_helo_name", req.client_helo),
        ("sasl_method", req.sasl_method), ("sasl_username", req.sasl_username),
        ("sasl_sender", req.sasl_sender), ("log_ident", req.log_ident),
        ("rewrite_context", req.rewrite_context), ("recipient_count", 1),
    ]


_HANDSHAKE_STAGES = frozenset((Stage.GREETING, Stage.EHLO, Stage.HELO, Stage.LHLO,
                               Stage.STARTTLS))


def _requires_tls(level: int) -> bool:
    from .tls.config import tls_required
    return tls_required(level)


def _protocol_error(tx: Transaction) -> bool:
    """Did a reported failure carry a code stock counts as a protocol error
    (500-509, 555, or not 2xx-5xx; smtp_trouble.c smtp_check_code)?  Replies
    the receiver ignores (RCPT and DATA after a rejected MAIL FROM, DATA with
    nothing accepted, XFORWARD) do not count."""
    failed = []
    mail = tx.mail_reply
    if mail is not None and mail.klass != 2:
        failed.append(mail)
    else:
        failed += [r for r in tx.rcpt_replies.values() if r.klass != 2]
        if tx.accepted:
            if tx.data_reply is not None and tx.data_reply.klass != 3:
                failed.append(tx.data_reply)
            failed += [r for r in [tx.dot_reply] + list(tx.dot_replies.values())
                       if r is not None and r.klass != 2]
    return any(500 <= r.code <= 509 or r.code == 555 or not 200 <= r.code <= 599
               for r in failed)


def _where(stage: Stage) -> str:
    return STAGE_INFO[stage][1]
