"""The SMTP conversation as stock smtp(8) keeps it: debug transcript,
session history, and the postmaster notice built from it.

Three uses of one record of what was said in a session:

- **debug_peer_list / debug_peer_level** (and ``-v``): while the verbose
  level is above zero, every command is logged as
  ``> host[addr]:port: COMMAND`` when it is queued for sending, and every
  reply line as ``< host[addr]:port: LINE`` (at most 100 bytes of it) when
  it is read.  A match of the request's nexthop (against "noaddr") raises
  the level for the whole request; otherwise a match of a server's name or
  address raises it from the start of that session to its end.  Message
  content is never logged or recorded.
- **history**: ``Out: COMMAND`` and ``In:  LINE`` entries, kept only when
  a notice may be sent (``notify_classes`` has ``protocol`` or ``data``).
- **postmaster notice**: a session that saw a protocol error (a malformed
  reply, a reply code of 500-509, 555 or outside 400-599 where a failure
  was reported, a failure reply that is not 4xx/5xx) or a local data error
  (a table lookup failed while talking to the server), with the matching
  class in ``notify_classes``, ends with a notice to
  ``error_notice_recipient``: sender ``double_bounce_sender@myhostname``,
  subject "Postfix SMTP client: errors from host[addr]:port", the history
  wrapped at 78 columns, posted through cleanup(8)
  (:mod:`postfix_smtp.ipc.postmail`).  No notice is sent about a message
  whose sender is empty or the double-bounce address (no notices about
  notices).

:class:`ChatConfig` is per process (from main.cf); :class:`Chat` is per
session and is attached to the Connection only when it has a use, so a
configuration without debug peers and without those notify classes pays
nothing.
"""

from __future__ import annotations

from .reply import printable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional

# notify_classes bits (mail_error.h)
MAIL_ERROR_POLICY = 1 << 0
MAIL_ERROR_PROTOCOL = 1 << 1
MAIL_ERROR_BOUNCE = 1 << 2
MAIL_ERROR_SOFTWARE = 1 << 3
MAIL_ERROR_RESOURCE = 1 << 4
MAIL_ERROR_2BOUNCE = 1 << 5
MAIL_ERROR_DELAY = 1 << 6
MAIL_ERROR_DATA = 1 << 7

ERROR_CLASSES = {
    "bounce": MAIL_ERROR_BOUNCE, "2bounce": MAIL_ERROR_2BOUNCE, "data": MAIL_ERROR_DATA,
    "delay": MAIL_ERROR_DELAY, "policy": MAIL_ERROR_POLICY, "protocol": MAIL_ERROR_PROTOCOL,
    "resource": MAIL_ERROR_RESOURCE, "software": MAIL_ERROR_SOFTWARE,
}
#: the classes smtp(8) itself can raise
SESSION_CLASSES = MAIL_ERROR_PROTOCOL | MAIL_ERROR_DATA

#: the notice's transcript: 78 columns, continuation lines indented by 4
WRAP_LENGTH = 78
WRAP_INDENT = 4
#: reply lines in the debug log are cut at this many bytes
LOG_REPLY_BYTES = 100


def error_mask(spec: str, warn=None) -> int:
    """notify_classes as bits; unknown names are reported through ``warn``
    and ignored (stock stops with a fatal error the first time it needs them)."""
    mask = 0
    for word in spec.replace(",", " ").split():
        bit = ERROR_CLASSES.get(word.lower())
        if bit is None:
            if warn is not None:
                warn('unknown notify_classes value "%s" in "%s"' % (word, spec))
            continue
        mask |= bit
    return mask


def is_protocol_error(code: int, status: str) -> bool:
    """Does a failure reply count as a protocol error?  Codes outside 400-599,
    555 and 500-509 (smtp_check_code) or an enhanced status that is not
    4.x.x/5.x.x (a "Protocol error:" failure)."""
    return (code < 400 or code > 599 or code == 555 or 500 <= code <= 509
            or status[:1] not in ("4", "5"))


def _isspace(ch: str) -> bool:
    return ch in " \t\n\v\f\r"


def wrap(text: str, length: int = WRAP_LENGTH, indent: int = WRAP_INDENT) -> "List[str]":
    """Break ``text`` at blanks into lines of at most ``length`` columns
    where possible (a longer word stays whole); lines after the first are
    indented by ``indent`` and so get ``indent`` columns less.  Trailing
    blanks are dropped, and the blanks where a line was broken.  Returns
    the lines with their indentation (Postfix line_wrap())."""
    out: List[str] = []
    if indent < 0:
        cur_indent, cur_len = -indent, length + indent
    else:
        cur_indent, cur_len = 0, length
    n = len(text)
    start = 0            # where the pending output line starts
    word = 0             # the word being looked at
    first = True
    while True:
        space = word
        while space < n and text[space] not in " \t":
            space += 1
        if word > start and space - start > cur_len:
            end = word
            while end > start and _isspace(text[end - 1]):
                end -= 1
            out.append(" " * cur_indent + text[start:end])
            while word < n and _isspace(text[word]):
                word += 1
            if first:
                cur_indent += indent
                cur_len -= indent
                first = False
            start = word
        if space >= n:
            break
        word = space + 1
    end = n
    while end > start and _isspace(text[end - 1]):
        end -= 1
    out.append(" " * cur_indent + text[start:end])
    return out


class NoticeSettings:
    """What composing and posting a notice needs from main.cf."""

    __slots__ = ("recipient", "myhostname", "mail_name", "double_bounce", "hfrom_standard",
                 "lmtp", "cleanup_service", "ipc_timeout", "utf8", "internal_filter_classes",
                 "smtputf8_autodetect_classes")

    def __init__(self, recipient: str = "postmaster", myhostname: str = "localhost",
                 mail_name: str = "Postfix", double_bounce_sender: str = "double-bounce",
                 hfrom_standard: bool = True, lmtp: bool = False,
                 cleanup_service: str = "cleanup", ipc_timeout: float = 3600.0,
                 utf8: bool = True, internal_filter_classes: str = "",
                 smtputf8_autodetect_classes: str = "sendmail, verify") -> None:
        self.recipient = recipient
        self.myhostname = myhostname
        self.mail_name = mail_name
        self.double_bounce = "%s@%s" % (double_bounce_sender, myhostname)
        self.hfrom_standard = hfrom_standard
        self.lmtp = lmtp
        self.cleanup_service = cleanup_service
        self.ipc_timeout = ipc_timeout
        self.utf8 = utf8
        self.internal_filter_classes = internal_filter_classes
        self.smtputf8_autodetect_classes = smtputf8_autodetect_classes

    @property
    def mail_daemon(self) -> str:
        return "MAILER-DAEMON@%s" % self.myhostname


def compose_notice(history: "List[str]", namaddrport: str, ns: NoticeSettings) -> "List[str]":
    """The notice's header and body lines (without the Received:/Date: lines
    the submission adds)."""
    if ns.hfrom_standard:
        lines = ["From: Mail Delivery System <%s>" % ns.mail_daemon,
                 "To: Postmaster <%s>" % ns.recipient]
    else:
        lines = ["From: %s (Mail Delivery System)" % ns.mail_daemon,
                 "To: %s (Postmaster)" % ns.recipient]
    lines += [
        "Subject: %s %s client: errors from %s" % (ns.mail_name, "LMTP" if ns.lmtp else "SMTP",
                                                   namaddrport),
        "",
        "Unexpected response from %s." % namaddrport,
        "",
        "Transcript of session follows.",
        "",
    ]
    # one leading space on every transcript line: it is text from the network
    for entry in history:
        lines += [" " + w for w in wrap(printable(entry, ns.utf8))]
    lines += ["", "For other details, see the local mail logfile"]
    return lines


class ChatConfig:
    """Per-process settings and state: the debug peer list and the level it
    adds, the notify classes, what a notice needs."""

    def __init__(self, debug_peers: "Any" = None, debug_level: int = 2, notify_mask: int = 0,
                 notice: "Optional[NoticeSettings]" = None, debug_spec: str = "") -> None:
        self.debug_peers = debug_peers          # maps.matchlist.MatchList or None
        self.debug_spec = debug_spec            # debug_peer_list as configured (to open later)
        self.debug_level = debug_level
        self.notify_mask = notify_mask & SESSION_CLASSES
        self.notice = notice or NoticeSettings()
        self._saved: "Optional[int]" = None     # the verbose level before a debug peer raised it
        self._params = None

    @classmethod
    def from_params(cls, p: "Any", personality: str = "smtp", warn=None) -> "Optional[ChatConfig]":
        """From main.cf; None when neither feature is configured.  The debug
        peer list's tables are opened later, by :meth:`open` (before
        privileges are dropped).  ValueError: debug_peer_level is not
        positive (stock: fatal)."""
        debug_spec = p.get("debug_peer_list").strip()
        level_text = p.get("debug_peer_level").strip()
        try:
            level = int(level_text)
        except ValueError:
            raise ValueError('bad numerical configuration: debug_peer_level = %s'
                             % level_text) from None
        if level <= 0:
            raise ValueError("debug_peer_init: debug_peer_level <= 0")
        mask = error_mask(p.get("notify_classes"), warn) & SESSION_CLASSES
        if not debug_spec and not mask:
            return None
        notice = NoticeSettings(
            recipient=p.get("error_notice_recipient"), myhostname=p.get("myhostname"),
            mail_name=p.get("mail_name"), double_bounce_sender=p.get("double_bounce_sender"),
            hfrom_standard=p.get("header_from_format").strip().lower() != "obsolete",
            lmtp=personality == "lmtp",
            cleanup_service=p.get("cleanup_service_name") or "cleanup",
            ipc_timeout=p.get_time("ipc_timeout"), utf8=p.get_bool("smtputf8_enable"),
            internal_filter_classes=p.get("internal_mail_filter_classes"),
            smtputf8_autodetect_classes=p.get("smtputf8_autodetect_classes"))
        cfg = cls(None, level, mask, notice, debug_spec)
        cfg._params = p
        return cfg

    def open(self, log: "Any" = None, params: "Any" = None) -> None:
        """Parse debug_peer_list and open its tables (as root, before
        privileges are dropped; also imports what notices need, before any
        chroot).  MatchListError: a lone "!" (stock: fatal)."""
        if self.notify_mask:
            import importlib            # loaded now: a chroot jail has no library path
            importlib.import_module("postfix_smtp.ipc.postmail")
        if self.debug_peers is not None or not self.debug_spec:
            return
        from ..maps.matchlist import namadr_list
        self.debug_peers = namadr_list("debug_peer_list", self.debug_spec,
                                       params if params is not None else self._params, log)

    def changed_table(self) -> "Optional[str]":
        return self.debug_peers.changed_table() if self.debug_peers is not None else None

    # -- debug_peer_check / debug_peer_restore ------------------------------------

    def peer_check(self, log: "Any", name: str, addr: str) -> bool:
        """Raise the verbose level when (name, addr) is a debug peer and the
        level is not raised already; True when this call raised it."""
        if self._saved is not None:
            return False
        peers = self.debug_peers
        if peers is None:
            if not self.debug_spec:
                return False
            self.open(log)               # not opened at start-up (e.g. a -S test run)
            peers = self.debug_peers
        if not peers.match(name, addr):
            return False
        self._saved = log.verbose
        log.verbose += self.debug_level
        return True

    def restore(self, log: "Any") -> None:
        if self._saved is not None:
            log.verbose = self._saved
            self._saved = None

    # -- sessions ------------------------------------------------------------------

    def session(self, log: "Any", host: str, addr: str, namaddrport: str) -> "Optional[Chat]":
        """Start of a session (after connect, or when a cached one is taken):
        a Chat when the session will be logged or may need a notice."""
        raised = self.peer_check(log, host, addr)
        record = bool(self.notify_mask)
        if not (record or log.verbose):
            return None
        return Chat(log, namaddrport, self, raised, record)


def session_chat(cfg: "Optional[ChatConfig]", log: "Any", host: str, addr: str,
                 namaddrport: str) -> "Optional[Chat]":
    """:meth:`ChatConfig.session`, or a log-only Chat under ``-v`` when nothing
    is configured."""
    if cfg is not None:
        return cfg.session(log, host, addr, namaddrport)
    if log.verbose:
        return Chat(log, namaddrport)
    return None


class Chat:
    """One session's conversation: logged while the level is verbose,
    recorded when a notice may be sent."""

    __slots__ = ("log", "where", "cfg", "raised", "record", "history", "error_mask")

    def __init__(self, log: "Any", namaddrport: str, cfg: "Optional[ChatConfig]" = None,
                 raised: bool = False, record: "Optional[bool]" = None) -> None:
        self.log = log
        self.where = namaddrport
        self.cfg = cfg
        self.raised = raised           # this session raised the verbose level
        # keep the history (for a notice)?  Default: when there is a configuration
        self.record = cfg is not None if record is None else record
        self.history: "List[str]" = []
        self.error_mask = 0

    # -- the conversation --------------------------------------------------------

    def sent(self, data: bytes) -> None:
        """A command queued for sending (with or without its CR LF)."""
        if not data:
            return
        text = data.decode("utf-8", "surrogateescape")
        if text.endswith("\r\n"):
            text = text[:-2]
        for line in text.split("\r\n"):
            if self.record:
                self.history.append("Out: " + line)
            if self.log.verbose:
                self.log.info("> %s: %s" % (self.where, line))

    def received(self, reply: "Any", replaced: "Optional[list]" = None) -> None:
        """A complete reply (postfix_smtp.smtp.reply.Reply).  ``replaced``:
        (server line, replacement) pairs from smtp_reply_filter, oldest first;
        those of this reply's lines are taken off the list.  The server's line
        is what is logged and recorded, followed in the history by
        "Replaced-by:" and the replacement."""
        lines = reply.lines
        shown = lines
        if self.log.verbose:
            last = reply.last_line
            if last is not None and (not lines or lines[-1] != last):
                shown = list(lines) + [last]
        for i, line in enumerate(shown):
            orig = None
            if replaced and replaced[0][1] == line:
                orig = replaced.pop(0)[0]
            if self.record and i < len(lines):
                if orig is None:
                    self.history.append("In:  " + line)
                else:
                    self.history += ["In:  " + orig, "Replaced-by: ", "     " + line]
            if self.log.verbose:
                text = line if orig is None else orig
                raw = text.encode("utf-8", "surrogateescape")
                if len(raw) > LOG_REPLY_BYTES:
                    text = raw[:LOG_REPLY_BYTES].decode("utf-8", "surrogateescape")
                self.log.info("< %s: %s" % (self.where, text))
        if reply.garbled:
            self.error_mask |= MAIL_ERROR_PROTOCOL

    # -- what went wrong ---------------------------------------------------------

    def check_code(self, code: int, status: str) -> None:
        """A failure caused by this server reply is being reported."""
        if is_protocol_error(code, status):
            self.error_mask |= MAIL_ERROR_PROTOCOL

    def protocol_error(self) -> None:
        self.error_mask |= MAIL_ERROR_PROTOCOL

    def data_error(self) -> None:
        """A local table lookup failed during the session (SMTP_ERR_DATA)."""
        self.error_mask |= MAIL_ERROR_DATA

    # -- the end of the session --------------------------------------------------

    def notice_due(self, sender: str) -> bool:
        cfg = self.cfg
        return bool(cfg is not None and self.record and self.history
                    and self.error_mask & cfg.notify_mask
                    and sender and sender != cfg.notice.double_bounce)

    def session_end(self, sender: str) -> bool:
        """smtp_cleanup_session(): post the notice when it is due; True when
        one was handed to cleanup."""
        if not self.notice_due(sender):
            return False
        try:
            return notify_postmaster(self.history, self.where, self.cfg.notice, self.log)
        except Exception as exc:       # a notice is never worth a delivery
            self.log.warning("postmaster notify: %s" % exc)
            return False

    def release(self) -> None:
        """smtp_session_free(): undo this session's debug level."""
        if self.raised:
            self.raised = False
            if self.cfg is not None:
                self.cfg.restore(self.log)


def notify_postmaster(history: "List[str]", namaddrport: str, ns: NoticeSettings,
                      log: "Any", path: "Optional[str]" = None) -> bool:
    """Compose the notice and post it through cleanup (best effort: a failure
    is logged as a warning, the delivery goes on)."""
    from ..ipc.postmail import PostMail, PostMailError, SRC_NOTIFY, cleanup_flags
    from ..ipc.stream import IpcError
    if log.verbose:
        log.info("smtp_chat_notify: notify postmaster")
    lines = compose_notice(history, namaddrport, ns)
    flags = cleanup_flags(SRC_NOTIFY, ns.internal_filter_classes, ns.smtputf8_autodetect_classes)
    try:
        pm = PostMail.open(ns.double_bounce, ns.recipient, myhostname=ns.myhostname,
                           mail_name=ns.mail_name, service=ns.cleanup_service,
                           timeout=ns.ipc_timeout, flags=flags, path=path)
    except IpcError as exc:
        log.warning("%s" % exc)
        log.warning("postmaster notify: %s" % _reason(exc))
        return False
    except PostMailError as exc:
        log.warning("postmaster notify: %s" % exc)
        return False
    try:
        for line in lines:
            pm.line(line)
    except IpcError as exc:
        pm.abort()
        log.warning("postmaster notify: %s" % _reason(exc))
        return False
    # like stock, cleanup's verdict is not reported: the notice is junk mail
    return pm.close() == 0


def _reason(exc: Exception) -> str:
    text = str(exc)
    return text.rsplit(": ", 1)[-1] if ": " in text else text


__all__ = ["ChatConfig", "Chat", "NoticeSettings", "session_chat", "compose_notice", "wrap",
           "error_mask", "is_protocol_error", "notify_postmaster", "MAIL_ERROR_PROTOCOL",
           "MAIL_ERROR_DATA", "SESSION_CLASSES"]
