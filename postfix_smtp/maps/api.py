"""Opening tables and searching lists of them (dict_open.c, maps.c, match_ops.c)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from .base import (DICT_FLAG_FIXED, DICT_FLAG_FOLD_FIX, DICT_FLAG_LOCK,
                   DICT_FLAG_UTF8_REQUEST, DICT_ERR_CONFIG, MapError, NullLog,
                   OpenError, Surrogate, Table)
from .text import CHARS_COMMA_SP, mystrtokq

#: type name -> (module, class).  Modules are imported on first use.
REGISTRY: Dict[str, Tuple[str, str]] = {
    "hash": ("bdb", "HashTable"),
    "btree": ("bdb", "BtreeTable"),
    "lmdb": ("filedb", "LmdbTable"),
    "cdb": ("filedb", "CdbTable"),
    "texthash": ("simple", "TextHashTable"),
    "inline": ("simple", "InlineTable"),
    "static": ("simple", "StaticTable"),
    "fail": ("simple", "FailTable"),
    "regexp": ("pattern", "RegexpTable"),
    "pcre": ("pattern", "PcreTable"),
    "cidr": ("cidr", "CidrTable"),
    "unionmap": ("compose", "UnionTable"),
    "pipemap": ("compose", "PipeTable"),
    "proxy": ("proxy", "ProxyTable"),
    "socketmap": ("net", "SocketmapTable"),
    "tcp": ("net", "TcpTable"),
}

#: The flags smtp(8) opens its password, TLS policy and generic tables with.
DEFAULT_FLAGS = DICT_FLAG_LOCK | DICT_FLAG_FOLD_FIX | DICT_FLAG_UTF8_REQUEST


def _param(params: Any, name: str, default: str) -> str:
    if params is None:
        return default
    try:
        value = params.get(name)
    except Exception:
        return default
    return default if value is None else value


def _param_time(params: Any, name: str, default: float) -> float:
    if params is None:
        return default
    try:
        return float(params.get_time(name))
    except Exception:
        return default


def _param_bool(params: Any, name: str, default: bool) -> bool:
    if params is None:
        return default
    try:
        return bool(params.get_bool(name))
    except Exception:
        return default


class OpenContext:
    """What opening tables needs besides a name: configuration, a logger, and
    the connections and tables shared by every table the process opens.

    ``cache`` maps (spec, flags) to an open table, so a table named by two
    parameters is opened once (maps_create() does the same with
    dict_handle()).
    """

    def __init__(self, params: Any = None, log: Any = None, utf8: Optional[bool] = None,
                 proxy_tries: int = 3, retry_sleep: float = 1.0,
                 tcp_max_try: int = 10, tcp_timeout: float = 100.0) -> None:
        self.params = params
        self.log = log if log is not None else NullLog()
        self.utf8 = (_param_bool(params, "smtputf8_enable", True) if utf8 is None else utf8)
        self.proxy_tries = proxy_tries
        self.retry_sleep = retry_sleep
        self.tcp_max_try = tcp_max_try
        self.tcp_timeout = tcp_timeout
        self.cache: Dict[Tuple[str, int], Table] = {}
        self._sockets: Dict[str, Any] = {}
        self._proxy: Any = None

    def open_table(self, spec: str, flags: int) -> Table:
        """dict_open(): one "type:name"; never raises - failures become surrogates."""
        key = (spec, flags)
        table = self.cache.get(key)
        if table is not None:
            return table
        type_, sep, name = spec.partition(":")
        if not sep or not type_ or not name:
            reason = ('open dictionary: expecting "type:name" form instead of "%s"' % spec)
            self.log.error(reason)
            table = Surrogate(type_ or spec, name, flags, reason, self.log)
        else:
            table = self._open(type_, name, flags)
        self.cache[key] = table
        return table

    def _open(self, type_: str, name: str, flags: int) -> Table:
        entry = REGISTRY.get(type_)
        if entry is None:
            reason = "unsupported dictionary type: %s" % type_
            self.log.error(reason)
            return Surrogate(type_, name, flags, reason, self.log)
        import importlib
        module = importlib.import_module("." + entry[0], __package__)
        cls = getattr(module, entry[1])
        try:
            if getattr(cls, "needs_context", False):
                return cls(name, flags, self.log, self.utf8, ctx=self)
            return cls(name, flags, self.log, self.utf8)
        except OpenError as exc:
            reason = str(exc)
        except Exception as exc:    # never let a bad table take the process down
            reason = "cannot open %s:%s: %s" % (type_, name, exc)
        self.log.error(reason)
        return Surrogate(type_, name, flags, reason, self.log)

    # -- shared clients --------------------------------------------------------

    def socket_client(self, endpoint: str) -> Any:
        from .net import SocketClient
        client = self._sockets.get(endpoint)
        if client is None:
            client = self._sockets[endpoint] = SocketClient(endpoint)
        return client

    def proxy_client(self) -> Any:
        if self._proxy is None:
            from .proxy import ProxyClient, proxy_socket_path
            service = _param(self.params, "proxymap_service_name", "proxymap")
            queue_dir = _param(self.params, "queue_directory", "/var/spool/postfix")
            self._proxy = ProxyClient(
                proxy_socket_path(queue_dir, service), service,
                timeout=_param_time(self.params, "ipc_timeout", 3600.0),
                max_idle=_param_time(self.params, "ipc_idle", 5.0),
                max_ttl=_param_time(self.params, "ipc_ttl", 1000.0))
        return self._proxy

    def close(self) -> None:
        for table in list(self.cache.values()):
            table.close()
        self.cache.clear()
        for client in self._sockets.values():
            client.close()
        self._sockets.clear()
        if self._proxy is not None:
            self._proxy.recover()
            self._proxy = None


def valid_hostname(name: str, utf8: bool = True) -> bool:
    """valid_hostname() / valid_utf8_hostname() without complaints."""
    if not name or len(name.encode("utf-8", "surrogateescape")) > 255:
        return False
    non_numeric = False
    for label in name.split("."):
        if not label or len(label) > 63:
            return False
        if label[0] == "-" or label[-1] == "-":
            return False
        for ch in label:
            if ch.isascii():
                if not (ch.isalnum() or ch in "-_"):
                    return False
                if not ch.isdigit():
                    non_numeric = True
            elif not utf8:
                return False
            else:
                non_numeric = True
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return non_numeric


class Maps:
    """A list of tables searched in order (maps(3)); see :func:`open_maps`."""

    def __init__(self, title: str, tables: List[Table], ctx: OpenContext,
                 own_ctx: bool = False) -> None:
        self.title = title
        self.tables = tables
        self.ctx = ctx
        self._own_ctx = own_ctx
        self.log = ctx.log

    def __bool__(self) -> bool:
        return bool(self.tables)

    def __repr__(self) -> str:
        return "<Maps %s: %s>" % (self.title, ", ".join(t.title for t in self.tables))

    # -- maps_find() ---------------------------------------------------------------

    def lookup(self, key: str, partial: bool = False) -> Optional[str]:
        """First table that has *key* wins; None when none has it.

        *partial* (a derived key such as ``user@`` or ``@domain``) skips
        pattern tables, as maps_find(..., DICT_FLAG_FIXED) does.  A failed
        lookup logs stock's warning and raises MapError; so does an empty
        result ("should return NO RESULT in case of NOT FOUND").
        """
        if not key:
            return None
        for table in self.tables:
            if partial and not table.flags & DICT_FLAG_FIXED:
                continue
            try:
                value = table.lookup(key)
            except MapError as exc:
                self.log.warning('%s:%s lookup error for "%s"' % (table.type, table.name, key))
                if not exc.table:
                    exc.table = table.title
                raise
            except Exception as exc:     # a corrupt file or a bug: defer, do not crash
                self.log.warning('%s:%s lookup error for "%s": %s'
                                 % (table.type, table.name, key, exc))
                raise MapError("%s:%s lookup error: %s" % (table.type, table.name, exc),
                               table=table.title) from exc
            if value is not None:
                if value == "":
                    self.log.warning("%s lookup of %s returns an empty string result"
                                     % (self.title, key))
                    self.log.warning("%s should return NO RESULT in case of NOT FOUND"
                                     % self.title)
                    raise MapError("%s lookup of %s returns an empty string result"
                                   % (self.title, key), DICT_ERR_CONFIG, table.title)
                return value
        return None

    # -- mail_addr_find() ------------------------------------------------------------

    def find_address(self, addr: str, strategy: Optional[int] = None,
                     query_form: Optional[int] = None, in_form: Optional[int] = None,
                     out_form: Optional[int] = None,
                     is_local: Optional[Callable[[str], bool]] = None
                     ) -> Tuple[Optional[str], Optional[str]]:
        """mail_addr_find_opt(): (value, unmatched extension); see maps.address."""
        from . import address as A
        opts = A.AddressOptions(
            recipient_delimiter=_param(self.ctx.params, "recipient_delimiter", ""),
            myorigin=_param(self.ctx.params, "myorigin", ""),
            double_bounce_sender=_param(self.ctx.params, "double_bounce_sender",
                                        "double-bounce"),
            owner_request_special=_param_bool(self.ctx.params, "owner_request_special", True))
        if is_local is None:
            is_local = LocalDomains(self.ctx).is_local
        return A.mail_addr_find(
            lambda key, partial: self.lookup(key, partial), addr, opts, is_local,
            strategy=A.MA_FIND_DEFAULT if strategy is None else strategy,
            in_form=A.MA_FORM_INTERNAL if in_form is None else in_form,
            query_form=A.MA_FORM_EXTERNAL_FIRST if query_form is None else query_form,
            out_form=A.MA_FORM_EXTERNAL if out_form is None else out_form)

    def lookup_address(self, addr: str, strategy: Optional[int] = None,
                       query_form: Optional[int] = None,
                       is_local: Optional[Callable[[str], bool]] = None) -> Optional[str]:
        """mail_addr_find() (internal-form input, external-first queries):
        ``user+ext@domain``, ``user@domain``, ``user+ext`` and ``user`` when
        the domain is local, ``@domain``."""
        return self.find_address(addr, strategy=strategy, query_form=query_form,
                                 is_local=is_local)[0]

    # -- domain searches ---------------------------------------------------------------

    def lookup_domain(self, host: str, parents: str = "auto") -> Optional[str]:
        """*host*, then its parent domains.

        ``parents``:

        - ``"auto"``: as the table's parameter is listed in
          ``parent_domain_matches_subdomains`` (match_parent_style()):
          ``"bare"`` if it is, ``"dot"`` if not;
        - ``"bare"``: ``a.b.example.com``, ``b.example.com``, ``example.com``, ``com``;
        - ``"dot"``: ``a.b.example.com``, ``.b.example.com``, ``.example.com``, ``.com``;
          with "bare" and "dot" the parent keys go to fixed-key tables only
          (match_hostname());
        - ``"tls_policy"``: smtp_tls_policy_maps: the ``.parent`` forms, in every
          table, and only for a syntactically valid host name (an explicit
          ``[host]:port`` nexthop is looked up as is);
        - ``"none"``: *host* only.
        """
        if parents == "auto":
            parents = "bare" if self.title in self._parent_style_names() else "dot"
        if parents == "none":
            return self.lookup(host)
        if parents == "tls_policy":
            value = self.lookup(host)
            if value is not None or not valid_hostname(host, self.ctx.utf8):
                return value
            name = host
            while True:
                dot = name.find(".", 1)
                if dot < 0:
                    return None
                name = name[dot:]
                value = self.lookup(name)
                if value is not None:
                    return value
        value = self.lookup(host)
        name = host
        while value is None:
            dot = name.find(".", 1)
            if dot < 0:
                return None
            name = name[dot + 1:] if parents == "bare" else name[dot:]
            if not name:
                return None
            value = self.lookup(name, partial=True)
        return value

    def _parent_style_names(self) -> List[str]:
        return mystrtokq(_param(self.ctx.params, "parent_domain_matches_subdomains", ""),
                         CHARS_COMMA_SP)

    # -- freshness and cleanup -------------------------------------------------------

    def changed_name(self) -> Optional[str]:
        """"type:name" of a file-based table that changed since it was opened."""
        for table in self.tables:
            if table.changed():
                return table.title
        return None

    def changed(self) -> bool:
        """dict_changed(): stock smtp(8) exits after the current request."""
        return self.changed_name() is not None

    def close(self) -> None:
        """Close the tables (and connections) when this list owns its context;
        tables of a shared context stay open for the other lists."""
        if self._own_ctx:
            self.ctx.close()
        self.tables = []


class LocalDomains:
    """resolve_local() for MA_FIND_LOCALPART_IF_LOCAL (a subset; see is_local)."""

    def __init__(self, ctx: OpenContext) -> None:
        self.ctx = ctx

    def is_local(self, domain: str) -> bool:
        """``$mydestination`` names (literal names, ``.domain`` patterns, parent
        domains when mydestination is in parent_domain_matches_subdomains,
        type:table entries), and ``[address]`` literals of ``$inet_interfaces``
        or ``$proxy_interfaces`` (``all``/``loopback-only``: loopback addresses)."""
        params = self.ctx.params
        name = domain[:-1] if domain.endswith(".") and not domain.endswith("..") else domain
        if not name or name.endswith("."):
            return False
        low = name.lower() if name.isascii() else name.casefold()
        parent = "mydestination" in mystrtokq(
            _param(params, "parent_domain_matches_subdomains", ""), CHARS_COMMA_SP)
        for item in mystrtokq(_param(params, "mydestination", ""), CHARS_COMMA_SP):
            negate = item.startswith("!")
            if negate:
                item = item[1:]
            if ":" in item and not item.startswith("["):
                tmaps = open_maps(item, params, DICT_FLAG_LOCK | DICT_FLAG_FOLD_FIX,
                                  title="mydestination", ctx=self.ctx)
                hit = tmaps.lookup_domain(low, "bare" if parent else "dot") is not None
            else:
                pat = item.lower()
                hit = low == pat or (parent and low.endswith("." + pat)) or (
                    not parent and pat.startswith(".") and low.endswith(pat))
            if hit:
                return not negate
        if low.startswith("[") and low.endswith("]"):
            addr = low[1:-1]
            if addr.startswith("ipv6:"):
                addr = addr[5:]
            for param in ("inet_interfaces", "proxy_interfaces"):
                for item in mystrtokq(_param(params, param, ""), CHARS_COMMA_SP):
                    item = item.lower()
                    if item in ("all", "loopback-only"):
                        if addr.startswith("127.") or addr == "::1":
                            return True
                    elif item.strip("[]") == addr:
                        return True
        return False


def open_maps(spec: str, params: Any = None, flags: int = DEFAULT_FLAGS,
              title: Optional[str] = None, log: Any = None,
              ctx: Optional[OpenContext] = None) -> Maps:
    """maps_create(): open each "type:name" of a comma/space separated list.

    ``$name`` references in *spec* are expanded with *params* (a
    postfix_smtp.config.params.Params).  Tables that cannot be opened are
    logged (as errors, like stock) and answer every lookup with MapError.
    Open before dropping privileges: file tables keep their descriptors.
    Pass one *ctx* to share tables and connections between parameters.
    """
    if params is not None and "$" in spec:
        spec = params.expand(spec)
    own = ctx is None
    if ctx is None:
        ctx = OpenContext(params, log)
    tables = [ctx.open_table(item, flags) for item in mystrtokq(spec, CHARS_COMMA_SP)]
    return Maps(title or spec, tables, ctx, own_ctx=own)


__all__ = ["REGISTRY", "DEFAULT_FLAGS", "OpenContext", "Maps", "LocalDomains", "open_maps",
           "valid_hostname"]
