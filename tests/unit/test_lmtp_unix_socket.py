"""LMTP over UNIX-domain sockets (``lmtp:unix:PATH``), as stock lmtp(8) 3.7.

Stock smtp_connect() (smtp_connect.c) strips "unix:" or "inet:" from the
front of an LMTP nexthop.  smtp_connect_local() then names the one server
``myhostname[PATH]`` (no port: relay=, "host ... said:" and the connect
error all read that way), makes every error final (no backup server),
ignores lmtp_fallback_relay with a warning, downgrades TLS "may" to "none"
with a warning, and caches sessions under the path.  The path is relative
to the queue directory, the agent's working directory.

The agent runs here against fake qmgr/bounce services in a temporary queue
directory (the current directory) and a scripted LMTP peer listening on a
UNIX-domain socket in its ``private/`` directory.  The differential
comparison with stock lmtp(8) is in tests/integration/test_lmtp_unix.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

import pytest

from postfix_smtp.testing.fakes import (FakeQmgr, FakeQueue, QmgrRecipient, ReportServices,
                                        make_agent)
from postfix_smtp.testing.peer import PeerScript, SmtpPeer, UnixSmtpPeer

QID = "4384B210A35"
SENDER = "sender@example.com"
BODY = [b"Subject: test", b"", b"hello"]
MYHOST = "mx.test.invalid"          # fakes.TEST_MAIN_CF myhostname
SOCK = "private/lmtp"



class UnixLmtpPeer(UnixSmtpPeer):
    """The scripted LMTP server on a UNIX-domain socket at ``path``."""

    def __init__(self, script: PeerScript, path: str, max_lifetime: float = 30) -> None:
        super().__init__(script, path, max_lifetime=max_lifetime)


def _rcpt(line: str) -> str:
    return "550 5.1.1 no such user" if "<bad@" in line else "250 2.1.5 Ok"


def _dot(line: str) -> str:
    return "452 4.2.2 mailbox full" if "<later@" in line else "250 2.0.0 delivered"


LMTP_SCRIPT = dict(lmtp=True, greeting="220 peer.test.invalid LMTP", rcpt_reply=_rcpt,
                   dot_reply=_dot)


@pytest.fixture
def qdir(monkeypatch):
    """A short temporary queue_directory, the current directory (as master(8) sets it)."""
    d = tempfile.mkdtemp(prefix="pflq-", dir="/tmp")
    os.mkdir(os.path.join(d, "private"))
    monkeypatch.chdir(d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def queue(qdir):
    return FakeQueue(qdir)


@pytest.fixture
def services(qdir):
    s = ReportServices(qdir, timeout=5.0).start()
    yield s
    s.stop()


@pytest.fixture
def unix_peer(qdir):
    started = []

    def start(path: str = SOCK, **script) -> UnixLmtpPeer:
        kw = dict(LMTP_SCRIPT)
        kw.update(script)
        p = UnixLmtpPeer(PeerScript(**kw), path)
        p.start()
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop(timeout=2)


def deliver(agent, queue, nexthop, recipients):
    msg = queue.write_message(QID, SENDER, list(recipients), BODY)
    rcpts = [QmgrRecipient(r, msg.rcpt_offsets[i]) for i, r in enumerate(recipients)]
    res = FakeQmgr().deliver(agent, queue_id=QID, message=msg, nexthop=nexthop,
                             recipients=rcpts, flags=3, sender=SENDER)
    assert res.agent_error is None, res.agent_error
    return res


def to_lines(log) -> dict:
    """recipient -> the text of its log line after "to=<...>, " (delays cut out)."""
    out = {}
    for line in log.lines:
        if line.startswith(QID + ": to=<"):
            rcpt = line[len(QID) + 6:line.index(">")]
            rest = line[line.index(">, ") + 3:]
            head, _, tail = rest.partition(", delay=")
            out[rcpt] = head + ", " + tail[tail.index("dsn="):]
    return out


# ---------------------------------------------------------------------------
# the building blocks

def test_endpoint_without_port_names_itself_without_port():
    """smtp_session_alloc(): namaddrport is namaddr when the port is 0 (a path)."""
    from postfix_smtp.smtp.session import Endpoint
    ep = Endpoint(MYHOST, SOCK, 0, socket.AF_UNIX)
    assert ep.namaddr == ep.namaddrport == "mx.test.invalid[private/lmtp]"
    # a TCP endpoint keeps its port
    assert Endpoint("h", "192.0.2.1", 24).namaddrport == "h[192.0.2.1]:24"


def test_connect_to_a_relative_unix_path(qdir):
    """connect() for an AF_UNIX endpoint: the path relative to the working
    directory; a missing path and a path nobody listens on fail with the
    errno text stock's "connect to ...: %m" shows."""
    from postfix_smtp.smtp.session import ConnectError, Endpoint, connect
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(SOCK)
    ls.listen(1)
    try:
        sock = connect(Endpoint(MYHOST, SOCK, 0, socket.AF_UNIX), 5.0)
        assert sock.family == socket.AF_UNIX
        sock.close()
    finally:
        ls.close()
    # the socket file is left, nobody listens any more
    with pytest.raises(ConnectError) as exc:
        connect(Endpoint(MYHOST, SOCK, 0, socket.AF_UNIX), 5.0)
    assert exc.value.text == "Connection refused"
    with pytest.raises(ConnectError) as exc:
        connect(Endpoint(MYHOST, "private/nothing", 0, socket.AF_UNIX), 5.0)
    assert exc.value.text == "No such file or directory"


# ---------------------------------------------------------------------------
# whole deliveries

def test_per_recipient_replies_over_a_unix_socket(queue, services, unix_peer):
    """One 250, one 550 to RCPT, one 452 after DATA: relay=myhostname[path],
    every failure final (deferred/bounced now, not kept for another server)."""
    peer = unix_peer()
    agent, log = make_agent(personality="lmtp")
    rcpts = ["bad@example.org", "later@example.org", "ok@example.org"]
    res = deliver(agent, queue, "unix:" + SOCK, rcpts)
    relay = "relay=mx.test.invalid[private/lmtp]"
    assert to_lines(log) == {
        "bad@example.org": relay + ", dsn=5.1.1, status=bounced (host mx.test.invalid"
        "[private/lmtp] said: 550 5.1.1 no such user (in reply to RCPT TO command))",
        "later@example.org": relay + ", dsn=4.2.2, status=deferred (host mx.test.invalid"
        "[private/lmtp] said: 452 4.2.2 mailbox full (in reply to end of DATA command))",
        "ok@example.org": relay + ", dsn=2.0.0, status=sent (250 2.0.0 delivered)",
    }, log.lines
    assert log.warnings == []
    assert queue.done_recipients(QID) == ["bad@example.org", "ok@example.org"]
    assert queue.todo_recipients(QID) == ["later@example.org"]
    assert [r["recipient"] for r in services.defer.request_dicts()] == ["later@example.org"]
    assert services.defer.request_dicts()[0]["status"] == "4.2.2"
    assert res.status != 0
    assert peer.wait_sessions(1, timeout=5)
    s = peer.sessions[0]
    assert s.commands[0] == "LHLO mx.test.invalid"
    assert s.commands[-1] == "QUIT"
    assert len(s.messages) == 1


def test_missing_socket_defers_with_stock_text_and_ignores_fallback_relay(
        queue, services):
    """No socket: 4.4.1 "connect to myhostname[path]: No such file or
    directory", relay=none, no separate info line; lmtp_fallback_relay is
    not tried, only warned about."""
    agent, log = make_agent(personality="lmtp",
                            lmtp_fallback_relay="[127.0.0.1]:9, backup.example:24")
    deliver(agent, queue, "unix:private/nothing", ["a@example.org"])
    assert log.warnings == ['warning: ignoring "lmtp_fallback_relay = [127.0.0.1]:9, '
                            'backup.example:24" setting for non-TCP connections']
    assert to_lines(log) == {"a@example.org": "relay=none, dsn=4.4.1, status=deferred "
                             "(connect to mx.test.invalid[private/nothing]: "
                             "No such file or directory)"}
    # the only other line would be the per-attempt "connect to ..." info
    # line of TCP destinations: stock logs none for a UNIX-domain socket
    assert [l for l in log.lines if "connect to" in l and " to=<" not in l] == []
    assert queue.todo_recipients(QID) == ["a@example.org"]


def test_path_too_long_is_a_server_configuration_error(queue, services):
    """sizeof(sun_path) is 108: a path of 108 bytes or more is never
    tried (warning, 4.3.5 "Server configuration error"); 107 bytes are."""
    long_path = "private/" + "x" * 100                  # 108 bytes
    agent, log = make_agent(personality="lmtp")
    deliver(agent, queue, "unix:" + long_path, ["a@example.org"])
    assert log.warnings == ["warning: unix-domain name too long: " + long_path]
    assert to_lines(log) == {"a@example.org": "relay=none, dsn=4.3.5, status=deferred "
                             "(Server configuration error)"}


def test_path_of_107_bytes_is_tried(queue, services):
    path = "private/" + "x" * 99                        # 107 bytes: connect is tried
    agent, log = make_agent(personality="lmtp")
    deliver(agent, queue, "unix:" + path, ["a@example.org"])
    assert log.warnings == []
    assert to_lines(log) == {"a@example.org": "relay=none, dsn=4.4.1, status=deferred "
                             "(connect to mx.test.invalid[%s]: No such file or directory)"
                             % path}


def test_opportunistic_tls_is_turned_off_for_a_unix_socket(queue, services, unix_peer):
    """TLS "may" becomes "none" with stock's warning: no STARTTLS although
    the server offers it."""
    peer = unix_peer(offer_starttls=True)
    agent, log = make_agent(personality="lmtp", lmtp_tls_security_level="may")
    deliver(agent, queue, "unix:" + SOCK, ["ok@example.org"])
    assert log.warnings == ["warning: smtp_connect_local: opportunistic TLS encryption is "
                            "not appropriate for unix-domain destinations."]
    assert to_lines(log)["ok@example.org"].endswith("status=sent (250 2.0.0 delivered)")
    assert peer.wait_sessions(1, timeout=5)
    assert "STARTTLS" not in peer.sessions[0].commands
    assert "STARTTLS" in peer.sessions[0].server_bytes.decode()   # it was offered


def test_inet_prefix_is_stripped(queue, services):
    """lmtp:inet:host:port: "inet:" comes off the whole nexthop (stock smtp_connect())."""
    peer = SmtpPeer(PeerScript(**LMTP_SCRIPT), max_lifetime=30)
    peer.start()
    try:
        agent, log = make_agent(personality="lmtp")
        deliver(agent, queue, "inet:127.0.0.1:%d" % peer.port, ["ok@example.org"])
    finally:
        peer.stop(timeout=2)
    assert to_lines(log) == {"ok@example.org": "relay=127.0.0.1[127.0.0.1]:%d, dsn=2.0.0, "
                             "status=sent (250 2.0.0 delivered)" % peer.port}, log.lines


def test_unix_prefix_means_nothing_to_smtp(queue, services, unix_peer):
    """SMTP has no "unix:" prefix (stock: host "unix", service "private/lmtp",
    an unknown TCP service): no connection to the socket."""
    peer = unix_peer()
    agent, log = make_agent()
    deliver(agent, queue, "unix:" + SOCK, ["a@example.org"])
    assert peer.sessions == []
    assert queue.todo_recipients(QID) == ["a@example.org"]
    assert "unknown service: private/lmtp/tcp" in "\n".join(log.warnings)


def test_lmtp_fallback_relay_is_used_for_tcp_destinations(queue, services):
    """lmtp_fallback_relay applies to TCP nexthops as smtp_fallback_relay does
    (stock smtp_connect_inet() appends it for both personalities)."""
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()                          # nobody listens there
    peer = SmtpPeer(PeerScript(**LMTP_SCRIPT), max_lifetime=30)
    peer.start()
    try:
        agent, log = make_agent(personality="lmtp",
                                lmtp_fallback_relay="[127.0.0.1]:%d" % peer.port)
        deliver(agent, queue, "inet:127.0.0.1:%d" % port, ["ok@example.org"])
    finally:
        peer.stop(timeout=2)
    assert to_lines(log) == {"ok@example.org": "relay=127.0.0.1[127.0.0.1]:%d, dsn=2.0.0, "
                             "status=sent (250 2.0.0 delivered)" % peer.port}, log.lines
