"""The AUTH command exchange as a sans-I/O state machine.

smtp_sasl_authenticate() without the sockets: ``start()`` gives the AUTH
command, ``receive(reply)`` takes each server reply and gives the next line
to send, or the outcome.  The blocking shell is
:func:`postfix_smtp.sasl.client.run_exchange`.

Rules (Postfix 3.7 smtp_sasl_glue.c):

- A non-empty initial response goes on the AUTH command line when
  ``len(mechanism) + len(base64) + 8 <= 512`` (RFC 4954/5321 line length);
  a longer one is held back and sent after the first 334, whose text must
  then be empty.  An empty initial response is never sent as ``=``.
- Every ``334`` is one step; more than 100 steps end the exchange with
  ``4.3.0 ... authentication protocol loop with server X``.
- The challenge is the reply text after the code and one delimiter,
  base64-decoded as Cyrus decodes it; the response goes out base64-encoded
  on a line of its own (an empty response as an empty line).
- A client-side error: ``4.7.0 SASL authentication failed; cannot
  authenticate to server X: TEXT``.  A final 2xx: authenticated.  Any
  other final reply: ``SASL authentication failed; server X said: REPLY``
  with the reply's status, 5.x.x made 4.x.x with
  ``smtp_sasl_auth_soft_bounce = yes``; a 535 is also handed back for the
  auth failure cache.

Deliberate difference: when a server sends a non-empty challenge while a
deferred initial response is pending, stock's reason text quotes that
(credential-bearing) initial response; here it quotes the server's
challenge instead, so credentials never reach a log or a bounce.
"""

from __future__ import annotations

from ..valueclass import dataclass

from ..smtp.reply import Reply
from .codec import MechanismError, decode64, encode64
from .mechanisms import Mechanism

MAX_STEPS = 100
MAX_COMMAND = 512


@dataclass
class Outcome:
    """How the exchange ended.

    ``ok``: authenticated.  Otherwise ``status`` (DSN), ``reason`` (the
    status=... text), and the DSN extras: ``mta`` (the server host, for
    failures the server reported), ``diag_type``/``diag_text``.
    ``cache_dsn``/``cache_text``: a 535 to remember in the auth failure
    cache (the server's own status, before soft bounce).
    ``protocol_error``: stock's -1 (as opposed to 0) result: a client-side
    or protocol failure rather than the server's verdict.
    """
    ok: bool
    status: str = ""
    reason: str = ""
    mta: str = ""
    diag_type: str = ""
    diag_text: str = ""
    reply: Reply | None = None
    cache_dsn: str = ""
    cache_text: str = ""
    protocol_error: bool = False
    #: warning lines stock logs through its Cyrus log callback
    warnings: tuple = ()


def local_failure(namaddr: str, err: MechanismError) -> Outcome:
    """A client-side error (xsasl_client_first/next failed)."""
    return Outcome(False, "4.7.0", "SASL authentication failed; cannot authenticate to server "
                   "%s: %s" % (namaddr, err.text), diag_type="SASL", diag_text=err.text,
                   protocol_error=True, warnings=(err.log,) if err.log else ())


def challenge_text(reply: Reply) -> str:
    """The reply text after the code and one delimiter (mystrtok(&line,
    "- \\t\\n") on smtp(8)'s newline-joined reply)."""
    text = reply.text
    i = 0
    while i < len(text) and text[i] in "- \t\n":
        i += 1
    while i < len(text) and text[i] not in "- \t\n":
        i += 1
    return text[i + 1:] if i < len(text) else ""


class AuthExchange:
    """One AUTH exchange with an already chosen mechanism.

    ``namaddr`` is ``host[addr]`` for the reason texts; ``host`` the server
    name for the DSN's remote MTA; ``diag_type`` the DSN diagnostic type of
    server replies (Postfix's process name, ``smtp`` or ``lmtp``)."""

    def __init__(self, mechanism: Mechanism, namaddr: str, host: str,
                 soft_bounce: bool = True, diag_type: str = "smtp") -> None:
        self.mech = mechanism
        self.namaddr = namaddr
        self.host = host
        self.soft_bounce = soft_bounce
        self.diag_type = diag_type
        self.steps = 0
        self.pending_initial = ""      # deferred initial response (base64)
        self.outcome: Outcome | None = None

    @property
    def mechanism(self) -> str:
        return self.mech.name

    def _fail_local(self, err: MechanismError) -> Outcome:
        self.outcome = local_failure(self.namaddr, err)
        return self.outcome

    def start(self) -> bytes | Outcome:
        """The AUTH command line (with CRLF), or a failure Outcome."""
        try:
            initial = self.mech.start()
        except MechanismError as err:
            return self._fail_local(err)
        name = self.mech.name
        if initial:
            b64 = encode64(initial)
            if len(name) + len(b64) + 8 <= MAX_COMMAND:
                return ("AUTH %s %s\r\n" % (name, b64)).encode("ascii")
            self.pending_initial = b64
        return ("AUTH %s\r\n" % name).encode("ascii")

    def receive(self, reply: Reply) -> bytes | Outcome:
        """The next line to send (with CRLF), or the final Outcome."""
        if reply.klass == 3:
            self.steps += 1
            if self.steps > MAX_STEPS:
                self.outcome = Outcome(False, "4.3.0", "SASL authentication failed; "
                                       "authentication protocol loop with server %s"
                                       % self.namaddr, protocol_error=True)
                return self.outcome
            text = challenge_text(reply)
            if self.pending_initial:
                if text:
                    self.outcome = Outcome(
                        False, "4.7.0", "SASL authentication failed; non-empty initial %s "
                        "challenge from server %s: %s" % (self.mech.name, self.namaddr, text),
                        diag_type="SASL", diag_text="protocol error", protocol_error=True)
                    return self.outcome
                out, self.pending_initial = self.pending_initial, ""
                return out.encode("ascii") + b"\r\n"
            try:
                response = self.mech.step(decode64(text))
            except MechanismError as err:
                return self._fail_local(err)
            return encode64(response).encode("ascii") + b"\r\n"
        if reply.klass == 2:
            self.outcome = Outcome(True, reply.dsn, reply=reply)
            return self.outcome
        status = reply.dsn
        cache_dsn = cache_text = ""
        if reply.code == 535:
            cache_dsn, cache_text = status, reply.flat
        if self.soft_bounce and reply.klass == 5:
            status = "4" + status[1:]
        self.outcome = Outcome(False, status, "SASL authentication failed; server %s said: %s"
                               % (self.namaddr, reply.flat), mta=self.host,
                               diag_type=self.diag_type, diag_text=reply.flat, reply=reply,
                               cache_dsn=cache_dsn, cache_text=cache_text)
        return self.outcome
