"""SASL for one agent process: configuration, and login on a session.

:class:`SaslClient` is built once per process from the parameters, before
privileges are dropped (it opens the password table and the mechanism
filter's tables then, as stock smtp_sasl_initialize() does).  Per session:

1. :meth:`SaslClient.helo_auth` reads the AUTH keyword(s) of the final EHLO
   reply (logs stock's "offered no supported AUTH mechanisms" warnings);
2. :meth:`SaslClient.login` is smtp_sasl_helo_login(): credentials lookup,
   the checks before AUTH, mechanism choice, the auth failure cache, and the
   exchange itself through :func:`run_exchange` (blocking, any object with
   ``write(bytes)`` and ``read_reply() -> Reply``).

The outcome is a :class:`LoginResult`; the caller turns a failure into
stock's site failure (every recipient deferred, or bounced for a hard
status, or kept for the next server; the session is not reused).

Credentials are never logged: not the password, not a response, not a
base64 line; verbose logging names the mechanism list and the username
only.
"""

from __future__ import annotations

from ..valueclass import dataclass

from .cache import AuthCache, open_auth_cache
from .codec import SASL_NOMECH, MechanismError
from .credentials import AddressSearch, TableError, find_credentials
from .exchange import AuthExchange, Outcome, local_failure
from .mechanisms import MECHANISMS, Context, Credentials
from .policy import (HeloAuth, MechanismFilter, SaslConfigError, choose, parse_ehlo_auth,
                     parse_security_options)
from .tables import open_filter_table, open_password_maps

TLS_NONE = "none"               # plaintext session
TLS_UNVERIFIED = "unverified"   # TLS, certificate not matched
TLS_VERIFIED = "verified"       # TLS, certificate matched


@dataclass
class LoginResult:
    """``state``: "skipped" (no credentials for this server: continue
    without AUTH, as strangers), "ok" (authenticated with ``mechanism``),
    "failed" (site failure: ``outcome`` has status/reason/DSN extras),
    "table_error" (``warning`` to log, then stock's 4.3.0 local data error)."""
    state: str
    mechanism: str = ""
    outcome: Outcome | None = None
    warning: str = ""
    username: str = ""


class DeferredLog:
    """A logger for a SaslClient built before the process has its Logger
    (Settings are made first): records warnings and errors, replays them to
    the real logger once :meth:`attach` is called, then forwards."""

    def __init__(self) -> None:
        self.target = None
        self.records: list = []
        self.verbose = 0

    def attach(self, log) -> None:
        if self.target is log:
            return
        self.target = log
        self.verbose = getattr(log, "verbose", 0)
        records, self.records = self.records, []
        for level, text in records:
            getattr(log, level)(text)

    def _emit(self, level: str, text: str) -> None:
        if self.target is None:
            self.records.append((level, text))
        else:
            getattr(self.target, level)(text)

    def info(self, text: str) -> None:
        self._emit("info", text)

    def warning(self, text: str) -> None:
        self._emit("warning", text)

    def error(self, text: str) -> None:
        self._emit("error", text)

    def debug(self, text: str) -> None:
        if self.target is not None and getattr(self.target, "verbose", 0):
            self.target.debug(text)


def _config_fatal(exc: SaslConfigError):
    from ..config.params import ConfigError
    text = "; ".join(exc.warnings + (exc.text,)) if exc.warnings else exc.text
    return ConfigError(text)


class SaslClient:
    def __init__(self, *, enabled: bool, password_table=None,
                 title: str = "smtp_sasl_password_maps",
                 options: str = "noplaintext, noanonymous", tls_options: str | None = None,
                 tls_verified_options: str | None = None,
                 mechanism_filter: MechanismFilter | None = None,
                 soft_bounce: bool = True, authzid: bool = False, sender_dependent: bool = False,
                 personality: str = "smtp", search: AddressSearch | None = None,
                 cache: AuthCache | None = None, line_limit: int = 2048,
                 dummy_mail_auth: bool = False, log=None,
                 label_passwd: bool = False, label_sender: bool = False) -> None:
        self.enabled = enabled
        # connection-cache labels (smtp.h COND_SASL_SMTP_KEY_FLAG_*): with a
        # password table configured (enabled or not, as stock tests only
        # *var_smtp_sasl_passwd), sessions are keyed by nexthop and host name
        # too, and with sender-dependent authentication by sender as well
        self.label_passwd = label_passwd
        self.label_sender = label_sender
        self.table = password_table
        self.title = title
        if tls_options is None:
            tls_options = options
        if tls_verified_options is None:
            tls_verified_options = tls_options
        self.options = {TLS_NONE: options, TLS_UNVERIFIED: tls_options,
                        TLS_VERIFIED: tls_verified_options}
        self.filter = mechanism_filter
        self.soft_bounce = soft_bounce
        self.authzid = authzid
        self.sender_dependent = sender_dependent
        self.personality = personality
        self.search = search or AddressSearch()
        self.cache = cache
        self.line_limit = line_limit
        self.dummy_mail_auth = dummy_mail_auth
        self.log = log

    # --- configuration ------------------------------------------------------------
    @classmethod
    def from_params(cls, p, personality: str = "smtp", log=None) -> "SaslClient":
        """Read the SASL parameters; raises ConfigError where stock's
        smtp_sasl_initialize() is fatal.  Opens the tables (call before
        dropping privileges).  Without ``log``, messages wait in a
        DeferredLog until :meth:`attach_log`."""
        if log is None:
            log = DeferredLog()
        enabled = p.sbool("smtp_sasl_auth_enable")
        passwd_set = bool(p.sget("smtp_sasl_password_maps"))
        labels = dict(label_passwd=passwd_set,
                      label_sender=passwd_set and p.sbool("smtp_sender_dependent_authentication"))
        if not enabled:
            return cls(enabled=False, personality=personality, log=log, **labels)
        from ..config.params import ConfigError
        maps_param = p.p("smtp_sasl_password_maps")
        maps_spec = p.sget("smtp_sasl_password_maps")
        if not maps_spec.strip():
            raise ConfigError("specify a password table via the `%s' configuration parameter"
                              % maps_param)
        sasl_type = p.sget("smtp_sasl_type")
        if sasl_type != "cyrus":
            raise ConfigError("unsupported SASL client implementation: %s; "
                              "SASL library initialization" % sasl_type)
        table = open_password_maps(maps_spec, p, maps_param, log)
        filter_spec = p.sget("smtp_sasl_mechanism_filter")
        try:
            flt = MechanismFilter(filter_spec, lambda spec: open_filter_table(spec, p, log),
                                  p.p("smtp_sasl_mechanism_filter")) \
                if filter_spec.strip() else None
        except SaslConfigError as exc:
            raise _config_fatal(exc) from None
        if flt is not None and log is not None:
            for w in flt.warnings:
                log.warning(w)
        cache = None
        cache_name = p.sget("smtp_sasl_auth_cache_name")
        if cache_name:
            try:
                cache = open_auth_cache(
                    cache_name, p.stime("smtp_sasl_auth_cache_time"),
                    queue_directory=p.get("queue_directory"),
                    warn=(log.warning if log is not None else None),
                    service=p.get("proxywrite_service_name") or "proxywrite",
                    timeout=p.get_time("ipc_timeout"),
                    param=p.p("smtp_sasl_auth_cache_name"))
            except SaslConfigError as exc:
                raise _config_fatal(exc) from None
        for name in ("smtp_sasl_security_options", "smtp_sasl_tls_security_options",
                     "smtp_sasl_tls_verified_security_options"):
            try:
                parse_security_options(p.sget(name))
            except SaslConfigError as exc:
                raise _config_fatal(exc) from None
        dest = p.get("mydestination")
        local = tuple(d.lower() for d in p.get_list("mydestination") if ":" not in d
                      and not d.startswith("/")) if dest else ()
        search = AddressSearch(recipient_delimiter=p.get("recipient_delimiter"),
                               myorigin=p.get("myorigin"), local_domains=local)
        return cls(
            enabled=True, password_table=table, title=maps_param,
            options=p.sget("smtp_sasl_security_options"),
            tls_options=p.sget("smtp_sasl_tls_security_options"),
            tls_verified_options=p.sget("smtp_sasl_tls_verified_security_options"),
            mechanism_filter=flt,
            soft_bounce=p.sbool("smtp_sasl_auth_soft_bounce"),
            authzid=p.get_bool("send_cyrus_sasl_authzid"),
            sender_dependent=(personality == "smtp"
                              and p.sbool("smtp_sender_dependent_authentication")),
            personality=personality, search=search, cache=cache,
            line_limit=p.get_int("line_length_limit"),
            dummy_mail_auth=p.sbool("smtp_send_dummy_mail_auth"), log=log, **labels)

    def changed_table(self) -> str | None:
        """"type:name" of a file table (password table, filter table) rebuilt
        since it was opened, else None (stock: the process then exits after
        the request, and master(8) starts a fresh one)."""
        tables = [self.table] + [p for _m, kind, p in (self.filter.patterns if self.filter
                                                         else ()) if kind == "table"]
        for t in tables:
            fn = getattr(t, "changed_name", None)
            name = fn() if fn is not None else None
            if name:
                return name
        return None

    def attach_log(self, log) -> None:
        """Give a client built without a logger the process's Logger."""
        if isinstance(self.log, DeferredLog):
            self.log.attach(log)
        elif self.log is None:
            self.log = log

    # --- per session ----------------------------------------------------------------
    def helo_auth(self, ehlo_lines: list, namaddrport: str,
                  discard: frozenset = frozenset()) -> HeloAuth:
        """The AUTH state of the final EHLO reply; logs stock's warnings."""
        h = parse_ehlo_auth(ehlo_lines, self.filter, namaddrport, discard, self.line_limit)
        if self.log is not None:
            for w in h.warnings:
                self.log.warning(w)
        return h

    def lookup(self, *, host: str, dest: str, sender: str = "") -> Credentials | None:
        """Raises TableError."""
        return find_credentials(self.table, self.title, host=host, dest=dest, sender=sender,
                                sender_dependent=self.sender_dependent, search=self.search)

    def security_flags(self, tls: str = TLS_NONE) -> int:
        """Raises SaslConfigError (stock: warnings, then a fatal error);
        from_params() already refused such values at start-up."""
        return parse_security_options(self.options.get(tls, self.options[TLS_NONE]))

    def prepare(self, helo: HeloAuth, *, queue_id: str, host: str, dest: str, namaddr: str,
                namaddrport: str = "", sender: str = "", tls: str = TLS_NONE,
                nonce: str | None = None):
        """Everything before the first AUTH byte.  Returns a LoginResult
        (skipped, failed, table_error) or a ready AuthExchange (with
        ``.credentials`` set)."""
        try:
            creds = self.lookup(host=host, dest=dest, sender=sender)
        except TableError as exc:
            return LoginResult("table_error", warning="%s: %s" % (queue_id, exc))
        if creds is None:
            if self.log is not None and self.log.verbose:
                self.log.debug("smtp_sasl_passwd_lookup: no auth info found (sender=`%s', "
                               "host=`%s')" % (sender, host))
            return LoginResult("skipped")
        if helo.mechanism_list is None:
            return LoginResult("failed", outcome=Outcome(
                False, "4.7.0", "SASL authentication failed: server %s offered no compatible "
                "authentication mechanisms for this type of connection security" % namaddr),
                username=creds.username)
        flags = self.security_flags(tls)
        if self.log is not None and self.log.verbose:
            self.log.debug("smtp_sasl_authenticate: %s: SASL mechanisms %s"
                           % (namaddrport or namaddr, helo.mechanism_list))
        if self.cache is not None:
            hit = self.cache.find(host, creds.username, creds.password)
            if hit is not None:
                dsn, text = hit
                if self.soft_bounce and dsn.startswith("5"):
                    dsn = "4" + dsn[1:]
                return LoginResult("failed", outcome=Outcome(
                    False, dsn, "SASL [CACHED] authentication failed; server %s said: %s"
                    % (host, text), mta=host, diag_type=self.personality, diag_text=text),
                    username=creds.username)
        name = choose(helo.mechanism_list, flags, self.filter)
        if name is None:
            outcome = local_failure(namaddr, MechanismError(SASL_NOMECH, "No worthy mechs found"))
            self._log_warnings(outcome)
            return LoginResult("failed", outcome=outcome, username=creds.username)
        ctx = Context(authzid=self.authzid, service=self.personality, server_name=host,
                      nonce=nonce)
        mech = MECHANISMS[name](creds, ctx)
        ex = AuthExchange(mech, namaddr, host, soft_bounce=self.soft_bounce,
                          diag_type=self.personality)
        ex.credentials = creds
        return ex

    def _log_warnings(self, outcome: Outcome) -> None:
        if self.log is not None:
            for w in outcome.warnings:
                self.log.warning(w)

    def finish(self, ex: AuthExchange, outcome: Outcome) -> LoginResult:
        self._log_warnings(outcome)
        creds = ex.credentials
        if outcome.ok:
            return LoginResult("ok", mechanism=ex.mechanism, outcome=outcome,
                               username=creds.username)
        if self.cache is not None and outcome.cache_dsn:
            self.cache.store(ex.host, creds.username, creds.password, outcome.cache_dsn,
                             outcome.cache_text)
        return LoginResult("failed", mechanism=ex.mechanism, outcome=outcome,
                           username=creds.username)

    def login(self, io, helo: HeloAuth, **kw) -> LoginResult:
        """smtp_sasl_helo_login() over ``io`` (see :func:`run_exchange`).
        I/O errors from ``io`` propagate."""
        prep = self.prepare(helo, **kw)
        if isinstance(prep, LoginResult):
            return prep
        return self.finish(prep, run_exchange(io, prep))


def run_exchange(io, ex: AuthExchange) -> Outcome:
    """Drive an AuthExchange over a blocking ``io``: ``io.write(line)``
    sends one line, ``io.read_reply()`` returns the next Reply."""
    action = ex.start()
    while isinstance(action, bytes):
        io.write(action)
        action = ex.receive(io.read_reply())
    return action


class ConnectionIO:
    """run_exchange() over a postfix_smtp.smtp.session.Connection, every read
    and write under ``stage`` (stock: the EHLO handshake's timeout and
    where-text)."""

    def __init__(self, conn, stage) -> None:
        self.conn = conn
        self.stage = stage

    def write(self, data: bytes) -> None:
        self.conn.write(data, self.stage)

    def read_reply(self):
        return self.conn.read_reply(self.stage)

