"""The SMTP client protocol as pure state: EHLO features and the mail transaction.

No sockets here.  :class:`Transaction` is the sender/receiver pair of
smtp(8)'s smtp_loop(): it hands out the commands to write (batched up to
4096 bytes with PIPELINING, one at a time without), is told each reply in
order, applies the same course corrections as stock (RSET instead of RCPT
after a rejected MAIL, instead of DATA when no recipient was accepted, a
lone ``.`` after a 354 with nothing accepted), and records every reply for
the outcome classification in :mod:`postfix_smtp.smtp.trouble`.
"""

from __future__ import annotations

from collections import deque
from ..valueclass import dataclass, field

from .reply import Reply

PIPELINE_LIMIT = 4096


class Stage:
    """Protocol stages (plain string constants: cheaper to import than an Enum)."""

    GREETING = "greeting"
    EHLO = "ehlo"
    HELO = "helo"
    LHLO = "lhlo"
    XFORWARD1 = "xforward1"
    XFORWARD2 = "xforward2"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    BODY = "body"
    DOT = "dot"
    ABORT = "abort"
    QUIT = "quit"
    STARTTLS = "starttls"


#: stage -> (timeout parameter, "while ..." text for timeouts and lost connections)
STAGE_INFO = {
    Stage.GREETING: ("smtp_helo_timeout", "receiving the initial server greeting"),
    Stage.EHLO: ("smtp_helo_timeout", "performing the EHLO handshake"),
    Stage.HELO: ("smtp_helo_timeout", "performing the HELO handshake"),
    Stage.LHLO: ("smtp_helo_timeout", "performing the LHLO handshake"),
    Stage.XFORWARD1: ("smtp_xforward_timeout", "sending XFORWARD name/address"),
    Stage.XFORWARD2: ("smtp_xforward_timeout", "sending XFORWARD protocol/helo_name"),
    Stage.MAIL: ("smtp_mail_timeout", "sending MAIL FROM"),
    Stage.RCPT: ("smtp_rcpt_timeout", "sending RCPT TO"),
    Stage.DATA: ("smtp_data_init_timeout", "sending DATA command"),
    Stage.BODY: ("smtp_data_xfer_timeout", "sending message body"),
    Stage.DOT: ("smtp_data_done_timeout", "sending end of data -- message may be sent more than once"),
    Stage.ABORT: ("smtp_rset_timeout", "sending final RSET"),
    Stage.QUIT: ("smtp_quit_timeout", "sending QUIT"),
    Stage.STARTTLS: ("smtp_starttls_timeout", "receiving the STARTTLS response"),
}

IN_REPLY_TO = {
    Stage.XFORWARD1: "XFORWARD name/address command",
    Stage.XFORWARD2: "XFORWARD helo/protocol command",
    Stage.MAIL: "MAIL FROM command",
    Stage.RCPT: "RCPT TO command",
    Stage.DATA: "DATA command",
    Stage.DOT: "end of DATA command",
    Stage.ABORT: "final RSET command",
    Stage.QUIT: "QUIT command",
}


# --- EHLO -----------------------------------------------------------------

@dataclass
class Features:
    esmtp: bool = False
    server_name: str = ""
    pipelining: bool = False
    size: bool = False
    size_limit: int = 0
    eightbitmime: bool = False
    dsn: bool = False
    smtputf8: bool = False
    starttls: bool = False
    auth: list = field(default_factory=list)
    xforward: set = field(default_factory=set)
    enhancedstatuscodes: bool = False
    pix_delay_dotcrlf: bool = False
    warnings: list = field(default_factory=list)


#: EHLO keywords smtp_discard_ehlo_keywords knows, in Postfix's logging order.
EHLO_MASK_NAMES = ("8BITMIME", "AUTH", "ETRN", "PIPELINING", "SIZE", "VERP", "VRFY", "XCLIENT",
                   "XFORWARD", "STARTTLS", "ENHANCEDSTATUSCODES", "DSN", "SMTPUTF8", "CHUNKING",
                   "SILENT-DISCARD")


def parse_ehlo(reply: Reply, discard: frozenset = frozenset()) -> Features:
    """Features from a 2xx EHLO/LHLO reply (keywords in ``discard`` ignored)."""
    f = Features(esmtp=True)
    for n, line in enumerate(reply.lines):
        text = line[4:] if len(line) > 3 else ""
        if n == 0:
            f.server_name = text.split(" ", 1)[0].split("\t", 1)[0]
            continue
        words = text.replace("=", " ", 1).split() if text else []
        if not words:
            continue
        kw = words[0].upper()
        if kw in discard:
            continue
        if kw == "PIPELINING":
            f.pipelining = True
        elif kw == "SIZE":
            f.size = True
            if len(words) > 1:
                if words[1].isdigit() and words[1].isascii():
                    f.size_limit = int(words[1])
                else:
                    f.warnings.append('bad EHLO SIZE limit "%s"' % words[1])
        elif kw == "8BITMIME":
            f.eightbitmime = True
        elif kw == "DSN":
            f.dsn = True
        elif kw == "SMTPUTF8":
            f.smtputf8 = True
        elif kw == "STARTTLS":
            f.starttls = True
        elif kw == "AUTH":
            f.auth.extend(w.upper() for w in words[1:])
        elif kw == "XFORWARD":
            f.xforward.update(w.upper() for w in words[1:])
        elif kw == "ENHANCEDSTATUSCODES":
            f.enhancedstatuscodes = True
    return f


def greeting_says_esmtp(reply: Reply) -> bool:
    """Stock: any word after the host name in the greeting equals ESMTP.

    Only the first line starts with the host name; on continuation lines
    every word counts (smtp_proto.c tokenizes the whole reply text)."""
    for n, line in enumerate(reply.lines):
        words = line[4:].split()
        if any(w.upper() == "ESMTP" for w in (words[1:] if n == 0 else words)):
            return True
    return False


# --- the mail transaction -------------------------------------------------

@dataclass
class Command:
    stage: Stage
    data: bytes
    index: int = -1      # recipient index for RCPT


class Transaction:
    """One MAIL..DOT exchange, driven by a blocking shell.

    The shell loop::

        while not tx.done:
            cmds = tx.commands()          # write these (may be empty)
            if tx.wants_content:          # stream the message, then
                tx.content_sent()
            elif tx.awaiting:             # flush and read one reply
                tx.on_reply(read_reply(tx.awaiting[0].stage))
    """

    def __init__(self, mail: bytes, rcpts: list[bytes], pipelining: bool,
                 send_data: bool = True, send_quit: bool = True,
                 await_quit: bool = False, xforward: tuple = (), lmtp: bool = False) -> None:
        self.pipelining = pipelining
        self.lmtp = lmtp
        self.send_quit = send_quit
        self.await_quit = await_quit
        self.send_data = send_data
        self._todo: deque = deque()
        for stage, data in xforward:
            self._todo.append(Command(stage, data))
        self._todo.append(Command(Stage.MAIL, mail))
        for i, r in enumerate(rcpts):
            self._todo.append(Command(Stage.RCPT, r, i))
        self._todo.append(Command(Stage.DATA, b"DATA\r\n") if send_data
                          else Command(Stage.ABORT, b"RSET\r\n"))
        self.awaiting: deque = deque()
        self.xforward_replies: list = []
        self.mail_reply: Reply | None = None
        self.rcpt_replies: dict = {}
        self.data_reply: Reply | None = None
        self.dot_reply: Reply | None = None
        self.dot_replies: dict = {}       # LMTP: recipient index -> its end-of-data reply
        self.accepted: list = []
        self.phase = "envelope"   # envelope -> [content] -> closing
        self.aborted = False
        self.sent_quit = False
        self._quit_pending = False

    # sender side
    def commands(self) -> list:
        if self.phase == "closing":
            if self._quit_pending and not self.awaiting:   # lock-step: QUIT after the last reply
                self._quit_pending = False
                return self._quit()
            return []
        if self.awaiting or self.phase != "envelope":
            return []
        if not self._todo:
            return self._end_of_envelope()
        nxt = self._todo[0]
        if self.mail_reply is not None and self.mail_reply.klass != 2 and nxt.stage in (
                Stage.RCPT, Stage.DATA):
            return self._abort()
        if nxt.stage == Stage.DATA and not self.accepted and self.rcpt_replies:
            return self._abort()
        batch = [self._todo.popleft()]
        if self.pipelining:
            size = len(batch[0].data)
            # stock: strlen(cmd) + 2 (CRLF) + pending > 4096 -> flush; data already has CRLF
            while self._todo and size + len(self._todo[0].data) <= PIPELINE_LIMIT:
                size += len(self._todo[0].data)
                batch.append(self._todo.popleft())
        self.awaiting.extend(batch)
        return batch

    def _end_of_envelope(self) -> list:
        if not self.send_data:                       # probe: RSET was the last command
            return self._close([])
        if self.data_reply is not None and self.data_reply.klass == 3:
            if self.accepted:
                self.phase = "content"
                return []
            dot = Command(Stage.DOT, b".\r\n")       # RFC 2920: nothing accepted
            self.awaiting.append(dot)
            return self._close([dot])
        return self._abort()

    def _abort(self) -> list:
        self.aborted = True
        self._todo.clear()
        rset = Command(Stage.ABORT, b"RSET\r\n")
        self.awaiting.append(rset)
        return self._close([rset])

    def _close(self, cmds: list) -> list:
        """Enter the closing phase; with PIPELINING the QUIT rides along with ``cmds``."""
        self.phase = "closing"
        if self.send_quit:
            if self.pipelining or not self.awaiting:
                cmds.extend(self._quit())
            else:
                self._quit_pending = True
        return cmds

    def _quit(self) -> list:
        quit_cmd = Command(Stage.QUIT, b"QUIT\r\n")
        self.sent_quit = True
        if self.await_quit:
            self.awaiting.append(quit_cmd)
        return [quit_cmd]

    @property
    def wants_content(self) -> bool:
        return self.phase == "content"

    def content_sent(self) -> list:
        """The message body went out; returns ``.`` (and QUIT with PIPELINING).

        LMTP servers answer ``.`` once per accepted recipient, in RCPT order."""
        dot = Command(Stage.DOT, b".\r\n")
        if self.lmtp:
            self.awaiting.extend(Command(Stage.DOT, b"", i) for i in self.accepted)
        else:
            self.awaiting.append(dot)
        return self._close([dot])

    @property
    def done(self) -> bool:
        return self.phase == "closing" and not self.awaiting and not self._quit_pending

    # receiver side
    def on_reply(self, reply: Reply) -> None:
        cmd = self.awaiting.popleft()
        st = cmd.stage
        if st in (Stage.XFORWARD1, Stage.XFORWARD2):
            self.xforward_replies.append((st, reply))
        elif st == Stage.MAIL:
            self.mail_reply = reply
        elif st == Stage.RCPT:
            self.rcpt_replies[cmd.index] = reply
            if reply.klass == 2 and self.mail_reply is not None and self.mail_reply.klass == 2:
                self.accepted.append(cmd.index)
        elif st == Stage.DATA:
            self.data_reply = reply
        elif st == Stage.DOT:
            self.dot_reply = reply
            if cmd.index >= 0:
                self.dot_replies[cmd.index] = reply
        # ABORT and QUIT replies are read and ignored
