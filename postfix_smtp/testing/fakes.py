"""Test doubles for driving :class:`postfix_smtp.agent.Agent` without Postfix.

The agent works relative to its current directory (= ``queue_directory``):
it opens ``active/QUEUEID`` and talks to ``private/bounce``,
``private/defer``, ``private/trace`` and ``private/verify``.  These doubles
build such a directory and stand in for every Postfix process the agent
talks to:

- :class:`FakeQueue` writes real Postfix 3.7 queue files (queue-file.md §5,
  §9) and reads back which recipients were marked ``D``.
- :class:`FakeBounceService` is bounce(8) in its three roles (``bounce``,
  ``defer``, ``trace``): it announces ``delivery_status_protocol``, records
  every APPEND request and answers ``status``; it can be told to fail.
  :class:`FakeVerifyService` is verify(8) for address probes.
  :class:`ReportServices` starts all four at once.
- :class:`FakeQmgr` is qmgr(8): it builds delivery requests
  (postfix-ipc.md §3) and runs ``Agent.serve`` on one end of a socketpair,
  returning the agent's reply.
- :func:`make_settings`, :class:`CapturingLogger` and :func:`make_agent`
  build an agent from a throw-away main.cf, logging into a list instead of
  syslog.

Typical use (in a temporary directory that is the current directory)::

    queue = FakeQueue(".")
    msg = queue.write_message("4384B210A35", "s@example.com", ["c@example.org"],
                              [b"Subject: t", b"", b"hi"])
    with ReportServices(".") as services, SmtpPeer() as peer:
        agent, log = make_agent(".")
        result = FakeQmgr().deliver(agent, queue_id="4384B210A35", message=msg,
                                    sender="s@example.com", nexthop=peer.address,
                                    recipients=["c@example.org"])
    assert result.status == 0
    assert queue.done_recipients("4384B210A35") == ["c@example.org"]

Everything is bounded: sockets have timeouts, threads are joined with a
timeout, and every ``stop()`` may be called more than once.  Standard
library only.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from ..config.params import Params
from ..ipc import delivery as dr
from ..ipc.attr import Decoder, encode
from ..ipc.reports import BOUNCE_PROTOCOL, VERIFY_PROTOCOL
from ..log import MAX_TEXT, Logger
from ..queue.records import RecordReader, encode_record
from ..settings import Settings
from ..smtp.reply import printable

__all__ = [
    "DEFAULT_TIMEOUT", "QueuedMessage", "QueueRecord", "FakeQueue", "FakeBounceService",
    "FakeVerifyService", "ReportServices", "QmgrRecipient", "QmgrResult", "FakeQmgr",
    "CapturingLogger", "make_settings", "make_agent", "DELIVERY_ANNOUNCEMENT",
    "DEFER_REPLY", "SUCCESS_REPLY", "TEST_MAIN_CF",
]

#: Upper bound for every socket operation and thread join in this module.
DEFAULT_TIMEOUT = 10.0

#: What the agent must send first (postfix-ipc.md §2.5).
DELIVERY_ANNOUNCEMENT = b"protocol\0delivery_request_protocol\0\0"
#: The stock "all recipients finished" reply (postfix-ipc.md §3.6, §8 step 6).
SUCCESS_REPLY = (b"status\0\0diag_type\0\0diag_text\0\0mta_type\0\0mta_mname\0\0"
                 b"action\0\0reason\0\0status\x000\0\0")
#: The stock "try again later" reply with an empty hop status.
DEFER_REPLY = (b"status\0\0diag_type\0\0diag_text\0\0mta_type\0\0mta_mname\0\0"
               b"action\0\0reason\0\0status\x004294967295\0\0")

Pairs = List[Tuple[str, str]]


# ---------------------------------------------------------------------------
# The queue directory and queue files


class QueuedMessage(NamedTuple):
    """Where qmgr would point the agent: unpacks as ``(data_offset, size, rcpt_offsets)``."""

    data_offset: int
    size: int
    rcpt_offsets: List[int]


class QueueRecord(NamedTuple):
    """One raw record of a queue file: its offset, type letter and payload."""

    offset: int
    type: str
    payload: bytes


class FakeQueue:
    """A directory laid out like ``queue_directory`` (``active/``, ``private/``).

    Queue files are written in the layout cleanup(8) of Postfix 3.7 produces
    for a message without Milters (queue-file.md §5.1, §9)::

        C size, T arrival, A create_time=, A rewrite_context=local, S sender,
        per recipient: [A notify_flags=N] A dsn_orig_rcpt=rfc822;RCPT, O ORIG, R RCPT
        M, N/L content records, X, E
    """

    def __init__(self, directory: Union[str, "os.PathLike[str]"]) -> None:
        self.dir = os.path.abspath(os.fspath(directory))
        for sub in ("active", "private"):
            os.makedirs(os.path.join(self.dir, sub), mode=0o700, exist_ok=True)

    def path(self, queue_id: str, queue_name: str = "active") -> str:
        return os.path.join(self.dir, queue_name, queue_id)

    # -- writing --------------------------------------------------------------

    def write_message(self, queue_id: str, sender: str, recipients: Sequence[str],
                      body_lines: Sequence[bytes], long_lines: int = 2048, *,
                      originals: Optional[Dict[str, str]] = None,
                      notify: Optional[Dict[str, int]] = None,
                      arrival: Optional[float] = None,
                      fullname: Optional[str] = None,
                      last_line_complete: bool = True,
                      ending: str = "X",
                      mode: int = 0o700) -> QueuedMessage:
        """Write ``active/<queue_id>``; returns ``(data_offset, size, rcpt_offsets)``.

        ``body_lines`` are the message lines (headers, empty line, body)
        without line endings, as cleanup stores them.  ``long_lines`` is
        cleanup's ``line_length_limit``: a longer line is stored as ``L``
        records of exactly that many bytes plus a final ``N`` with the rest
        (0: never split).  With ``last_line_complete=False`` the last line is
        stored as an ``L`` record (a message without a final newline).

        ``originals`` maps a recipient to its ``O`` (original recipient)
        value (default: the recipient itself); ``notify`` maps a recipient to
        DSN NOTIFY bits, written as ``A notify_flags=N``; ``fullname`` adds
        the ``F`` record (sender full name) before ``S``; ``arrival`` is the
        ``T`` time (default: now).

        ``ending`` damages the content segment on purpose: ``"X"`` (a good
        file), ``"E"`` (the content is followed by ``E`` instead of ``X``),
        ``"truncated"`` (the file ends inside the last content record).

        The returned offsets are exactly what qmgr would send: ``data_offset``
        (request ``offset``), ``size`` (request ``size``, size record field
        5) and the offset of each recipient's ``R`` byte.
        """
        if ending not in ("X", "E", "truncated"):
            raise ValueError("ending must be 'X', 'E' or 'truncated'")
        originals = originals or {}
        notify = notify or {}
        if arrival is None:
            arrival = time.time()
        sec = int(arrival)
        usec = int(round((arrival - sec) * 1e6))

        envelope = bytearray()
        rcpt_offsets_rel = []
        envelope += encode_record("T", b"%d %d" % (sec, usec))
        envelope += encode_record("A", b"create_time=%d" % sec)
        envelope += encode_record("A", b"rewrite_context=local")
        if fullname is not None:
            envelope += encode_record("F", fullname.encode("utf-8", "surrogateescape"))
        envelope += encode_record("S", sender.encode("utf-8", "surrogateescape"))
        notify_union = 0
        for rcpt in recipients:
            raw = rcpt.encode("utf-8", "surrogateescape")
            if rcpt in notify:
                notify_union |= notify[rcpt]
                envelope += encode_record("A", b"notify_flags=%d" % notify[rcpt])
            envelope += encode_record("A", b"dsn_orig_rcpt=rfc822;" + raw)
            envelope += encode_record(
                "O", originals.get(rcpt, rcpt).encode("utf-8", "surrogateescape"))
            rcpt_offsets_rel.append(len(envelope))
            envelope += encode_record("R", raw)
        envelope += encode_record("M")

        content = bytearray()
        for i, line in enumerate(body_lines):
            last = i == len(body_lines) - 1
            while long_lines > 0 and len(line) > long_lines:
                content += encode_record("L", line[:long_lines])
                line = line[long_lines:]
            content += encode_record("L" if (last and not last_line_complete) else "N", line)

        size_len = 97                       # C + 0x5f + 95 payload bytes
        data_offset = size_len + len(envelope)
        content_size = len(content)
        size_record = encode_record("C", b"%15d %15d %15d %15d %15d %15d" % (
            content_size, data_offset, len(recipients), notify_union << 1, content_size, 0))
        assert len(size_record) == size_len
        data = bytearray(size_record + envelope + content)
        if ending == "X":
            data += encode_record("X") + encode_record("E")
        elif ending == "E":
            data += encode_record("E")
        else:
            if not content or content[-1:] == b"\0":
                raise ValueError("a truncated file needs a last content record with payload")
            del data[-1]                        # cut the last record's payload short
        path = self.path(queue_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, bytes(data))
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        return QueuedMessage(data_offset, content_size, [size_len + o for o in rcpt_offsets_rel])

    # -- reading back ---------------------------------------------------------

    def read(self, queue_id: str) -> bytes:
        with open(self.path(queue_id), "rb") as f:
            return f.read()

    def mode(self, queue_id: str) -> int:
        """Permission bits of the queue file (0o700 = ready, 0o400 = marked corrupt)."""
        return stat.S_IMODE(os.stat(self.path(queue_id)).st_mode)

    def iter_records(self, queue_id: str) -> Iterator[QueueRecord]:
        """Records in file order, read raw (no pointer following), up to ``E``.

        A damaged record raises :class:`postfix_smtp.queue.records.RecordError`
        when it is reached (stop iterating earlier to avoid it)."""
        with open(self.path(queue_id), "rb") as f:
            reader = RecordReader(f, self.path(queue_id), 0, transparent=False)
            while True:
                offset = f.tell()
                rtype, payload = reader.read()
                if rtype < 0:
                    return
                yield QueueRecord(offset, chr(rtype), payload)
                if rtype == ord("E"):
                    return

    def records(self, queue_id: str) -> List[QueueRecord]:
        """All of :meth:`iter_records` as a list."""
        return list(self.iter_records(queue_id))

    def _envelope_recipients(self, queue_id: str, letter: str) -> List[str]:
        out = []
        for rec in self.iter_records(queue_id):     # stops at M: works on damaged content
            if rec.type == "M":
                break
            if rec.type == letter:
                out.append(rec.payload.decode("utf-8", "surrogateescape"))
        return out

    def done_recipients(self, queue_id: str) -> List[str]:
        """Recipients whose record is ``D`` (marked finished by an agent)."""
        return self._envelope_recipients(queue_id, "D")

    def todo_recipients(self, queue_id: str) -> List[str]:
        """Recipients whose record is still ``R``."""
        return self._envelope_recipients(queue_id, "R")

    def byte_at(self, queue_id: str, offset: int) -> bytes:
        with open(self.path(queue_id), "rb") as f:
            f.seek(offset)
            return f.read(1)


# ---------------------------------------------------------------------------
# bounce(8) / defer / trace / verify(8)


ReplySpec = Union[int, Callable[[Pairs], int]]


class _UnixService:
    """A threaded AF_UNIX stream server speaking one Postfix attribute protocol.

    Per connection: send the ``protocol`` announcement, then read requests
    (one per connection unless ``many_per_connection``) and answer each with
    ``status\\0<n>\\0\\0``.  Every request is recorded in :attr:`requests`
    as a list of ``(name, value)`` pairs, in arrival order.
    """

    def __init__(self, path: str, protocol: str, reply_status: ReplySpec = 0, *,
                 close_without_reply: bool = False, announce: bool = True,
                 many_per_connection: bool = False,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = os.path.abspath(path)
        self.protocol = protocol
        #: int, or a callable(request pairs) -> int; may be changed while running.
        self.reply_status = reply_status
        #: True: read the request, then close without answering.
        self.close_without_reply = close_without_reply
        self.announce = announce
        self.many_per_connection = many_per_connection
        self.timeout = timeout
        self.requests: List[Pairs] = []
        self.connections = 0
        self.errors: List[str] = []
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._listener: Optional[socket.socket] = None
        self._thread: Optional[threading.Thread] = None

    # -- control ----------------------------------------------------------------

    def start(self) -> "_UnixService":
        if self._listener is not None:
            raise RuntimeError("%s already started" % self.path)
        if len(self.path.encode()) > 100:
            raise ValueError("AF_UNIX path too long (use a short temporary directory): %s"
                             % self.path)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ls.bind(self.path)
        ls.listen(16)
        ls.settimeout(0.1)
        self._listener = ls
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="fake-%s" % os.path.basename(self.path))
        self._thread.start()
        return self

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Stop listening and remove the socket (the service is then "not listening")."""
        self._stop.set()
        if self._listener is not None:           # wake the accept() at once
            poke = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            poke.settimeout(1.0)
            try:
                poke.connect(self.path)
            except OSError:
                pass
            finally:
                poke.close()
        t, self._thread = self._thread, None
        if t is not None:
            t.join(timeout)
        ls, self._listener = self._listener, None
        if ls is not None:
            try:
                ls.close()
            except OSError:
                pass
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_requests(self, n: int, timeout: float = DEFAULT_TIMEOUT) -> bool:
        end = time.monotonic() + timeout
        with self._lock:
            while len(self.requests) < n:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    def request_dicts(self) -> List[Dict[str, str]]:
        """The requests as dicts (a repeated name keeps its last value)."""
        return [dict(r) for r in self.requests]

    # -- serving ----------------------------------------------------------------

    def _loop(self) -> None:
        ls = self._listener
        while not self._stop.is_set() and ls is not None:
            try:
                conn, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            if self._stop.is_set():
                conn.close()
                break
            with self._lock:
                self.connections += 1
            try:
                self._serve(conn)
            except Exception as exc:          # keep serving; the test can inspect .errors
                self.errors.append("%s: %s" % (type(exc).__name__, exc))
            finally:
                try:
                    conn.close()
                except OSError:
                    pass

    def _status_for(self, pairs: Pairs) -> int:
        spec = self.reply_status
        return spec(pairs) if callable(spec) else spec

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(self.timeout)
        if self.announce:
            conn.sendall(encode([("protocol", self.protocol)]))
        dec = Decoder()
        while not self._stop.is_set():
            lst = dec.next_list()
            if lst is None:
                data = conn.recv(65536)
                if not data:
                    return
                dec.feed(data)
                continue
            with self._lock:
                self.requests.append(lst)
                self._lock.notify_all()
            if self.close_without_reply:
                return
            conn.sendall(encode([("status", self._status_for(lst))]))
            if not self.many_per_connection:
                return


class FakeBounceService(_UnixService):
    """bounce(8) as ``private/bounce``, ``private/defer`` or ``private/trace``.

    Records each APPEND request (``nrequest``, ``flags``, ``queue_id``, the
    five recipient attributes, the seven DSN attributes) and answers
    ``status\\0<reply_status>\\0\\0``.  Failure modes: ``reply_status=1``
    (the service says no), ``close_without_reply=True`` (it reads the
    request and hangs up), or simply not started / stopped (nothing listens;
    the agent's connect fails).
    """

    def __init__(self, path: str, protocol: str = BOUNCE_PROTOCOL,
                 reply_status: ReplySpec = 0, **kw) -> None:
        super().__init__(path, protocol, reply_status, **kw)


class FakeVerifyService(_UnixService):
    """verify(8) as ``private/verify``, announcing ``address_verification_prrotocol``
    (sic).  Records ``request update address A recipient_status N reason T``
    requests; several may arrive on one connection."""

    def __init__(self, path: str, protocol: str = VERIFY_PROTOCOL,
                 reply_status: ReplySpec = 0, **kw) -> None:
        kw.setdefault("many_per_connection", True)
        super().__init__(path, protocol, reply_status, **kw)


class ReportServices:
    """bounce, defer, trace (FakeBounceService) and verify (FakeVerifyService)
    under ``<queue_dir>/private``; a context manager that starts and stops all.

    ``start(only=("bounce", "defer"))`` starts a subset: the others are then
    "not listening".
    """

    NAMES = ("bounce", "defer", "trace", "verify")

    def __init__(self, queue_dir: Union[str, "os.PathLike[str]"], **kw) -> None:
        private = os.path.join(os.path.abspath(os.fspath(queue_dir)), "private")
        os.makedirs(private, mode=0o700, exist_ok=True)
        self.bounce = FakeBounceService(os.path.join(private, "bounce"), **kw)
        self.defer = FakeBounceService(os.path.join(private, "defer"), **kw)
        self.trace = FakeBounceService(os.path.join(private, "trace"), **kw)
        self.verify = FakeVerifyService(os.path.join(private, "verify"), **kw)

    def all(self) -> List[_UnixService]:
        return [self.bounce, self.defer, self.trace, self.verify]

    def start(self, only: Sequence[str] = NAMES) -> "ReportServices":
        for name in only:
            getattr(self, name).start()
        return self

    def stop(self) -> None:
        for s in self.all():
            s.stop()

    def __enter__(self) -> "ReportServices":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# qmgr(8)


@dataclass
class QmgrRecipient:
    """One recipient list of a delivery request (postfix-ipc.md §3.5)."""

    address: str
    offset: int
    original: Optional[str] = None          # None: same as address
    dsn_orig_rcpt: Optional[str] = None     # None: "rfc822;" + address
    notify_flags: int = 0

    def attrs(self) -> List[Tuple[str, object]]:
        return [("original_recipient", self.address if self.original is None else self.original),
                ("recipient", self.address),
                ("offset", self.offset),
                ("dsn_orig_rcpt", ("rfc822;" + self.address) if self.dsn_orig_rcpt is None
                 else self.dsn_orig_rcpt),
                ("notify_flags", self.notify_flags)]


@dataclass
class QmgrResult:
    """What qmgr saw on one connection."""

    announcement: bytes                 # the first list, raw
    reply_bytes: bytes                  # everything after the announcement, raw
    reply: Optional[Pairs]              # the reply list, None if the agent sent none
    agent_error: Optional[BaseException] = None   # raised out of Agent.serve
    elapsed: float = 0.0

    @property
    def status(self) -> Optional[int]:
        """The numeric status (last ``status`` attribute), as the C int qmgr reads."""
        if not self.reply:
            return None
        value = int(self.reply[-1][1])
        return value - (1 << 32) if value >= 1 << 31 else value

    @property
    def hop(self) -> Dict[str, str]:
        """The hop status DSN group (the first seven attributes)."""
        return dict(self.reply[:7]) if self.reply else {}


class FakeQmgr:
    """Builds delivery requests and runs ``Agent.serve`` against them.

    :meth:`common_attrs` returns the 23 common attributes (postfix-ipc.md
    §3.2) as a list a test may edit (rename, drop, corrupt) before
    :func:`postfix_smtp.ipc.attr.encode`; :meth:`request` gives complete
    request bytes; :meth:`run` sends any bytes (also garbage) and returns a
    :class:`QmgrResult`.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = timeout

    @staticmethod
    def stats(incoming: Optional[float] = None, active: Optional[float] = None) -> bytes:
        """A packed MSG_STATS as qmgr sends it (incoming and active arrival only)."""
        now = time.time()
        return dr.MsgStats(incoming_arrival=now - 2.0 if incoming is None else incoming,
                           active_arrival=now - 1.0 if active is None else active).pack()

    @classmethod
    def common_attrs(cls, *, queue_id: str, offset: int, size: int, nexthop: str,
                     sender: str = "sender@example.com", flags: int = 3,
                     queue_name: str = "active", encoding: str = "",
                     sendopts: int = 0, sendopts_name: str = "smtputf8",
                     envelope_id: str = "", ret_flags: int = 0,
                     time_data: Optional[Union[bytes, str]] = None,
                     log_client_name: str = "", log_client_address: str = "",
                     log_client_port: str = "", log_protocol_name: str = "",
                     log_helo_name: str = "", sasl_method: str = "", sasl_username: str = "",
                     sasl_sender: str = "", log_ident: str = "",
                     rewrite_context: str = "local",
                     recipient_count: int = 1) -> List[Tuple[str, object]]:
        """The first list of a request, in qmgr's order.  ``time_data`` may be
        raw MSG_STATS bytes (base64-encoded on the wire) or a str sent as is."""
        return [
            ("flags", flags), ("queue_name", queue_name), ("queue_id", queue_id),
            ("offset", offset), ("size", size), ("nexthop", nexthop),
            ("encoding", encoding), (sendopts_name, sendopts), ("sender", sender),
            ("envelope_id", envelope_id), ("ret_flags", ret_flags),
            ("time", cls.stats() if time_data is None else time_data),
            ("log_client_name", log_client_name), ("log_client_address", log_client_address),
            ("log_client_port", log_client_port), ("log_protocol_name", log_protocol_name),
            ("log_helo_name", log_helo_name), ("sasl_method", sasl_method),
            ("sasl_username", sasl_username), ("sasl_sender", sasl_sender),
            ("log_ident", log_ident), ("rewrite_context", rewrite_context),
            ("recipient_count", recipient_count),
        ]

    @classmethod
    def request(cls, recipients: Sequence[QmgrRecipient], **common) -> bytes:
        """Complete request bytes: the common list plus one list per recipient."""
        common.setdefault("recipient_count", len(recipients))
        out = encode(cls.common_attrs(**common))
        for r in recipients:
            out += encode(r.attrs())
        return out

    def run(self, agent, request: bytes, *, half_close: bool = False,
            check_announcement: bool = True) -> QmgrResult:
        """Run ``agent.serve`` on a socketpair: check the announcement, send
        ``request``, read the reply, close.  ``half_close`` shuts down the
        write side after sending (qmgr "EOF" after garbage)."""
        ours, theirs = socket.socketpair()
        errors: List[BaseException] = []

        def serve() -> None:
            try:
                agent.serve(theirs)
            except BaseException as exc:   # reported to the test, never swallowed
                errors.append(exc)
            finally:
                try:
                    theirs.close()
                except OSError:
                    pass

        started = time.monotonic()
        t = threading.Thread(target=serve, daemon=True, name="fake-qmgr-agent")
        t.start()
        raw = bytearray()
        dec = Decoder()
        try:
            ours.settimeout(self.timeout)

            def read_list() -> Optional[Pairs]:
                while True:
                    lst = dec.next_list()
                    if lst is not None:
                        return lst
                    try:
                        data = ours.recv(65536)
                    except (socket.timeout, OSError):
                        return None
                    if not data:
                        return None
                    raw.extend(data)
                    dec.feed(data)

            announcement = read_list()
            ann_len = len(raw)
            if check_announcement and announcement != [("protocol", dr.PROTOCOL)]:
                raise AssertionError("bad announcement from agent: %r" % bytes(raw))
            try:
                if request:
                    ours.sendall(request)
                if half_close:
                    ours.shutdown(socket.SHUT_WR)
            except OSError:
                pass                      # the agent hung up early; its reply tells

            reply = read_list()
        finally:
            try:
                ours.close()
            except OSError:
                pass
            t.join(self.timeout)
        if t.is_alive():
            raise AssertionError("Agent.serve did not return within %ss" % self.timeout)
        raw_b = bytes(raw)
        # The agent sends nothing between its announcement and our request.
        ann_raw = raw_b[:ann_len]
        return QmgrResult(announcement=ann_raw, reply_bytes=raw_b[len(ann_raw):], reply=reply,
                          agent_error=errors[0] if errors else None,
                          elapsed=time.monotonic() - started)

    def deliver(self, agent, *, queue_id: str, message: QueuedMessage, nexthop: str,
                recipients: Sequence[Union[str, QmgrRecipient]], **common) -> QmgrResult:
        """Request delivery of a message written by :meth:`FakeQueue.write_message`.

        ``recipients`` are addresses (matched to ``message.rcpt_offsets`` in
        order) or ready-made :class:`QmgrRecipient` objects."""
        rcpts = [r if isinstance(r, QmgrRecipient) else QmgrRecipient(r, message.rcpt_offsets[i])
                 for i, r in enumerate(recipients)]
        req = self.request(rcpts, queue_id=queue_id, offset=message.data_offset,
                           size=message.size, nexthop=nexthop, **common)
        return self.run(agent, req)


# ---------------------------------------------------------------------------
# Settings and logging


class CapturingLogger(Logger):
    """A :class:`postfix_smtp.log.Logger` that keeps lines in memory (no syslog).

    Each line is stored as the text part of a syslog record (after the
    ``ident[pid]: `` head), with the stock severity prefix: ``warning: ...``,
    ``fatal: ...``, or plain text for info.
    """

    def __init__(self, ident: str = "postfix/smtp", echo: bool = False) -> None:
        self.lines: List[str] = []
        self.records: List[Tuple[int, str]] = []
        self.echo = echo
        self._cap_lock = threading.Lock()
        super().__init__(ident, hostname="mx")

    def _open(self) -> None:                 # never touch /dev/log or postlogd
        self._sock = None
        self._target = None

    def _emit(self, level: int, prefix: str, text: str) -> None:
        line = printable(prefix + text, self.utf8)
        line = line.encode("utf-8", "surrogateescape")[:MAX_TEXT].decode("utf-8", "replace")
        with self._cap_lock:
            self.lines.append(line)
            self.records.append((level, line))
        if self.echo:
            print("%s[%d]: %s" % (self.ident, self.pid, line))

    @property
    def warnings(self) -> List[str]:
        return [l for l in self.lines if l.startswith("warning: ")]

    def find(self, pattern: str) -> List[str]:
        """Lines matching the regular expression (re.search)."""
        rx = re.compile(pattern)
        return [l for l in self.lines if rx.search(l)]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


#: main.cf used by :func:`make_settings` unless overridden.
TEST_MAIN_CF: Dict[str, str] = {
    "myhostname": "mx.test.invalid",
    "smtp_connect_timeout": "5s",
    "smtp_helo_timeout": "5s",
    "smtp_xforward_timeout": "5s",
    "smtp_mail_timeout": "5s",
    "smtp_rcpt_timeout": "5s",
    "smtp_data_init_timeout": "5s",
    "smtp_data_xfer_timeout": "5s",
    "smtp_data_done_timeout": "5s",
    "smtp_rset_timeout": "5s",
    "smtp_quit_timeout": "5s",
    "ipc_timeout": "10s",
}


def make_settings(queue_directory: Optional[str] = None, *, personality: str = "smtp",
                  service_name: Optional[str] = None, **overrides: str) -> Settings:
    """Settings from a throw-away main.cf: :data:`TEST_MAIN_CF`, then
    ``queue_directory`` (default: the current directory), then ``overrides``
    (main.cf names and values, e.g. ``soft_bounce="yes"``)."""
    cf = dict(TEST_MAIN_CF)
    cf["queue_directory"] = os.path.abspath(queue_directory or os.getcwd())
    cf.update({k: str(v) for k, v in overrides.items()})
    config_dir = tempfile.mkdtemp(prefix="pfsmtp-cf-")
    try:
        with open(os.path.join(config_dir, "main.cf"), "w") as f:
            for name, value in cf.items():
                f.write("%s = %s\n" % (name, value))
        params = Params.load(config_dir, process_name=personality,
                             service_name=service_name or personality, prefix=personality)
        return Settings.from_params(params, personality)
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)


def make_agent(queue_directory: Optional[str] = None, flags: str = "", *,
               personality: str = "smtp", **overrides: str):
    """``(Agent, CapturingLogger)`` built with :func:`make_settings`."""
    from ..agent import Agent
    settings = make_settings(queue_directory, personality=personality, **overrides)
    log = CapturingLogger("postfix/%s" % personality)
    return Agent(settings, log, flags), log
