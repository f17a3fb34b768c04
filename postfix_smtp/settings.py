"""The typed, per-process settings the agent runs with.

Built once from :class:`postfix_smtp.config.params.Params` (main.cf, the
master.cf ``-o`` overrides and the 3.7 defaults) after option parsing, and
passed down.  ``smtp_*`` names are read as ``lmtp_*`` for the lmtp
personality.
"""

from __future__ import annotations

from .valueclass import dataclass, field

from .config.params import Params
from .destinations import LookupConfig
from .smtp.protocol import Stage

_TIMEOUT_PARAMS = {
    Stage.GREETING: "smtp_helo_timeout", Stage.EHLO: "smtp_helo_timeout",
    Stage.HELO: "smtp_helo_timeout", Stage.LHLO: "smtp_helo_timeout",
    Stage.XFORWARD1: "smtp_xforward_timeout", Stage.XFORWARD2: "smtp_xforward_timeout",
    Stage.MAIL: "smtp_mail_timeout", Stage.RCPT: "smtp_rcpt_timeout",
    Stage.DATA: "smtp_data_init_timeout", Stage.BODY: "smtp_data_xfer_timeout",
    Stage.DOT: "smtp_data_done_timeout", Stage.ABORT: "smtp_rset_timeout",
    Stage.QUIT: "smtp_quit_timeout",
    Stage.STARTTLS: "smtp_starttls_timeout",
}

#: Obsolete names from the seed manual page (Postfix 2.2) -> what 3.7 reads.
OBSOLETE = {
    "smtp_skip_4xx_greeting": None,
    "smtp_connection_cache_reuse_limit": "smtp_connection_reuse_count_limit",
    "smtp_tls_cipherlist": "smtp_tls_mandatory_ciphers",
}


@dataclass
class Settings:
    personality: str
    service_name: str
    queue_directory: str
    mail_owner: str
    myhostname: str
    helo_name: str
    timeouts: dict
    connect_timeout: float
    ipc_timeout: float
    daemon_timeout: float
    max_use: int
    max_idle: float
    line_length_limit: int
    reply_line_limit: int
    always_send_ehlo: bool
    never_send_ehlo: bool
    skip_5xx_greeting: bool
    skip_quit_response: bool
    quote_rfc821_envelope: bool
    discard_ehlo_keywords: frozenset
    mx_address_limit: int
    mx_session_limit: int
    tcp_port: str
    fallback_relay: list
    known_tcp_ports: dict
    soft_bounce: bool
    disable_mime_output_conversion: bool
    smtputf8_enable: bool
    delay_resolution: int
    info_log_external: bool
    hash_queue_names: list
    hash_queue_depth: int
    inet_protocols: list
    bind_address: str
    bind_address6: str
    address_verify_target: str
    verify_negative_cache: bool
    relayhost: str
    bind_address_enforce: bool = False   # smtp_bind_address_enforce
    tls: object = None               # postfix_smtp.tls.config.TlsConfig (None: no TLS at all)
    lookup: LookupConfig = field(default_factory=LookupConfig)
    best_mx_transport: str = ""
    pix_workarounds: list = field(default_factory=list)
    pix_delay_time: float = 10.0
    pix_threshold_time: float = 500.0
    send_xforward: bool = False
    mime_nesting_limit: int = 100
    mime_boundary_length_limit: int = 2048
    header_size_limit: int = 102400
    service_names: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    sasl: object = None          # postfix_smtp.sasl.client.SaslClient (None: SASL off)
    params: object = None            # the Params (content tables are opened from it)
    discard_ehlo_maps: object = None # smtp_discard_ehlo_keyword_address_maps (opened by Agent)
    pix_maps: object = None          # smtp_pix_workaround_maps (opened by Agent)
    reply_filter: object = None      # smtp_reply_filter: one maps Table (opened by Agent)
    # connection reuse through scache(8)
    cache_on_demand: bool = True
    cache_destinations: frozenset = frozenset()
    cache_time_limit: int = 2
    reuse_time_limit: float = 300.0
    reuse_count_limit: int = 0
    tls_connection_reuse: bool = False
    scache_path: str = "private/scache"
    scache_timeout: float = 5.0
    per_request_deadline: bool = False     # smtp_per_request_deadline
    helpful_warnings: bool = True          # helpful_warnings
    tcp_windowsize: int = 0                # tcp_windowsize
    min_data_rate: int = 500               # smtp_min_data_rate
    ipc_idle: float = 5.0
    ipc_ttl: float = 1000.0
    chat: object = None              # smtp.chat.ChatConfig: debug_peer_list, notify_classes

    @classmethod
    def from_params(cls, p: Params, personality: str) -> "Settings":
        warnings = []
        for old, new in OBSOLETE.items():
            if p.raw(old) is not None:
                warnings.append("%s: obsolete parameter%s" % (
                    old, "; use %s instead" % new if new else " (ignored since Postfix 2.1)"))
        timeouts = {st: p.stime(name) for st, name in _TIMEOUT_PARAMS.items()}
        known = {}
        raw_known = p.get("known_tcp_ports")
        for part in raw_known.replace("\n", " ").split(","):
            names = [x.strip() for x in part.split("=")]
            if len(names) >= 2 and names[-1].isdigit():
                for n in names[:-1]:
                    if n:
                        known[n] = int(names[-1])
        fallback = p.slist("smtp_fallback_relay")
        lookup = LookupConfig.from_params(p, personality)
        warnings.extend(lookup.warnings)
        from .tls.config import TlsConfig      # OpenSSL itself is imported only on use
        tls = TlsConfig.from_params(p, personality)   # ConfigError: invalid level (fatal)
        # SASL: opens the password table now, before privileges are dropped; the
        # ConfigErrors are stock's fatal start-up errors
        sasl = None
        if p.sbool("smtp_sasl_auth_enable") or p.sget("smtp_sasl_password_maps").strip():
            from .sasl.client import SaslClient    # only when SASL is configured
            sasl = SaslClient.from_params(p, personality)
        min_data_rate = p.sint("smtp_min_data_rate")
        if min_data_rate < 1:              # stock's lower bound (smtp_params.c)
            from .config.params import ConfigError
            raise ConfigError("invalid %s parameter value %d < 1"
                              % (p.p("smtp_min_data_rate"), min_data_rate))
        reuse_count_limit = p.sint("smtp_connection_reuse_count_limit")
        obsolete_reuse = p.raw("smtp_connection_cache_reuse_limit")
        if (obsolete_reuse is not None and obsolete_reuse.strip().isdigit()
                and p._raw.get(p.p("smtp_connection_reuse_count_limit")) is None):
            reuse_count_limit = int(obsolete_reuse.strip())   # the 2.2 name of the count limit
        chat = None
        if p.get("debug_peer_list").strip() or {"protocol", "data"} & set(
                p.get("notify_classes").lower().replace(",", " ").split()):
            from .smtp.chat import ChatConfig    # only when a session conversation has a use
            try:
                chat = ChatConfig.from_params(p, personality, warn=warnings.append)
            except ValueError as exc:
                from .config.params import ConfigError
                raise ConfigError(str(exc)) from None
        return cls(
            personality=personality,
            service_name=p.get("service_name"),
            queue_directory=p.get("queue_directory"),
            mail_owner=p.get("mail_owner"),
            myhostname=p.get("myhostname"),
            helo_name=p.sget("smtp_helo_name"),
            timeouts=timeouts,
            per_request_deadline=p.sbool("smtp_per_request_deadline"),
            helpful_warnings=p.get_bool("helpful_warnings"),
            tcp_windowsize=max(0, p.get_int("tcp_windowsize")),
            min_data_rate=min_data_rate,
            connect_timeout=p.stime("smtp_connect_timeout"),
            ipc_timeout=p.get_time("ipc_timeout"),
            daemon_timeout=p.get_time("daemon_timeout"),
            max_use=p.get_int("max_use"),
            max_idle=p.get_time("max_idle"),
            line_length_limit=p.sint("smtp_line_length_limit"),
            reply_line_limit=p.get_int("line_length_limit"),
            always_send_ehlo=p.sbool("smtp_always_send_ehlo") if personality == "smtp" else True,
            never_send_ehlo=p.sbool("smtp_never_send_ehlo") if personality == "smtp" else False,
            skip_5xx_greeting=p.sbool("smtp_skip_5xx_greeting"),
            skip_quit_response=p.sbool("smtp_skip_quit_response"),
            quote_rfc821_envelope=p.sbool("smtp_quote_rfc821_envelope"),
            discard_ehlo_keywords=frozenset(k.upper() for k in p.slist("smtp_discard_ehlo_keywords")),
            mx_address_limit=p.sint("smtp_mx_address_limit"),
            mx_session_limit=p.sint("smtp_mx_session_limit"),
            tcp_port=p.sget("smtp_tcp_port"),
            fallback_relay=fallback,
            known_tcp_ports=known,
            soft_bounce=p.get_bool("soft_bounce"),
            disable_mime_output_conversion=p.get_bool("disable_mime_output_conversion"),
            smtputf8_enable=p.get_bool("smtputf8_enable"),
            delay_resolution=p.get_int("delay_logging_resolution_limit"),
            info_log_external=p.get("info_log_address_format").lower() != "internal",
            hash_queue_names=p.get_list("hash_queue_names"),
            hash_queue_depth=p.get_int("hash_queue_depth"),
            inet_protocols=[x.lower() for x in p.get_list("inet_protocols")],
            bind_address=p.sget("smtp_bind_address").strip("[]"),
            bind_address6=p.sget("smtp_bind_address6").strip("[]"),
            bind_address_enforce=p.sbool("smtp_bind_address_enforce"),
            address_verify_target=p.sget("smtp_address_verify_target").lower(),
            verify_negative_cache=p.get_bool("address_verify_negative_cache"),
            relayhost=p.get("relayhost"),
            tls=tls,
            lookup=lookup,
            best_mx_transport=p.get("best_mx_transport").strip(),
            pix_workarounds=p.slist("smtp_pix_workarounds"),
            pix_delay_time=p.stime("smtp_pix_workaround_delay_time"),
            pix_threshold_time=p.stime("smtp_pix_workaround_threshold_time"),
            send_xforward=p.sbool("smtp_send_xforward_command"),
            mime_nesting_limit=p.get_int("mime_nesting_limit"),
            mime_boundary_length_limit=p.get_int("mime_boundary_length_limit"),
            header_size_limit=p.get_int("header_size_limit"),
            service_names={
                "bounce": p.get("bounce_service_name"), "defer": p.get("defer_service_name"),
                "trace": p.get("trace_service_name"),
                "verify": p.get("address_verify_service_name"),
            },
            warnings=warnings,
            sasl=sasl,
            cache_on_demand=p.sbool("smtp_connection_cache_on_demand"),
            cache_destinations=frozenset(x.lower() for x in
                                         p.slist("smtp_connection_cache_destinations")),
            cache_time_limit=int(p.stime("smtp_connection_cache_time_limit")),
            reuse_time_limit=p.stime("smtp_connection_reuse_time_limit"),
            reuse_count_limit=reuse_count_limit,
            tls_connection_reuse=p.sbool("smtp_tls_connection_reuse"),
            scache_path="private/" + (p.get("connection_cache_service_name") or "scache"),
            scache_timeout=p.get_time("connection_cache_protocol_timeout"),
            ipc_idle=p.get_time("ipc_idle"),
            ipc_ttl=p.get_time("ipc_ttl"),
            params=p,
            chat=chat,
        )
