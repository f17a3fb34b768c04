"""smtp_per_request_deadline and smtp_min_data_rate in smtp.session.Connection.

A fake socket advances a fake clock: each recv/send "takes" a fixed time,
so the budget arithmetic is checked exactly, without sleeping.
"""

from __future__ import annotations

import socket

import pytest

from postfix_smtp.smtp import session as session_mod
from postfix_smtp.smtp.protocol import Stage
from postfix_smtp.smtp.session import Connection, Endpoint, SessionError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class FakeSock:
    """recv() hands out ``chunks`` one per call, send() accepts ``per_send``
    bytes per call; each call costs ``cost`` seconds of the fake clock and
    fails with socket.timeout when the timeout set is shorter than that."""

    def __init__(self, clock: Clock, cost: float, chunks=(), per_send: int = 1 << 20) -> None:
        self.clock = clock
        self.cost = cost
        self.chunks = list(chunks)
        self.per_send = per_send
        self.timeout = None
        self.timeouts = []
        self.sent = bytearray()

    def settimeout(self, t) -> None:
        self.timeout = t
        self.timeouts.append(t)

    def _spend(self) -> None:
        if self.timeout is not None and self.timeout < self.cost:
            self.clock.now += self.timeout
            raise socket.timeout("timed out")
        self.clock.now += self.cost

    def recv(self, n: int) -> bytes:
        self._spend()
        return self.chunks.pop(0) if self.chunks else b""

    def send(self, data) -> int:
        self._spend()
        n = min(len(data), self.per_send)
        self.sent += bytes(data[:n])
        return n

    def sendall(self, data) -> None:
        self._spend()
        self.sent += bytes(data)

    def close(self) -> None:
        pass


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(session_mod.time, "monotonic", c.monotonic)
    return c


EP = Endpoint("mx.example", "192.0.2.1", 25)
TIMEOUTS = {st: 10.0 for st in (Stage.GREETING, Stage.EHLO, Stage.MAIL, Stage.RCPT,
                               Stage.DATA, Stage.BODY, Stage.DOT, Stage.QUIT)}

# a reply that trickles in one byte per read
TRICKLE = [bytes([b]) for b in b"250 2.1.0 Ok\r\n"]          # 14 reads


def test_without_deadline_each_read_has_the_full_timeout(clock):
    sock = FakeSock(clock, cost=3.0, chunks=TRICKLE)
    conn = Connection(sock, EP, TIMEOUTS)
    reply = conn.read_reply(Stage.MAIL)           # 14 reads x 3 s: 42 s, each under 10 s
    assert reply.code == 250
    assert clock.now - 1000.0 == pytest.approx(42.0)


def test_with_deadline_the_whole_response_must_arrive_within_the_timeout(clock):
    sock = FakeSock(clock, cost=3.0, chunks=TRICKLE)
    conn = Connection(sock, EP, TIMEOUTS, deadline=True)
    with pytest.raises(SessionError) as ei:
        conn.read_reply(Stage.MAIL)
    assert ei.value.kind == "timeout" and ei.value.stage == Stage.MAIL
    assert str(ei.value) == "timeout while sending MAIL FROM"
    assert clock.now - 1000.0 == pytest.approx(10.0)  # 3 + 3 + 3 + the last 1 s
    assert sock.timeouts == [10.0, 7.0, 4.0, 1.0]


def test_each_response_gets_a_new_budget(clock):
    sock = FakeSock(clock, cost=4.0, chunks=[b"250 ok\r\n", b"250 ok\r\n", b"250 ok\r\n"])
    conn = Connection(sock, EP, TIMEOUTS, deadline=True)
    for _ in range(3):                            # 4 s each: would be 12 s in one budget
        assert conn.read_reply(Stage.RCPT).code == 250


def test_greeting_and_ehlo_share_one_budget(clock):
    sock = FakeSock(clock, cost=4.0, chunks=[b"220 hi\r\n", b"250-x\r\n", b"250 y\r\n"])
    conn = Connection(sock, EP, TIMEOUTS, deadline=True)
    assert conn.read_reply(Stage.GREETING).code == 220      # 4 s spent
    conn.queue(b"EHLO me\r\n")
    with pytest.raises(SessionError) as ei:                  # send 4 s, read 2 s left
        conn.read_reply(Stage.EHLO)
    assert ei.value.stage == Stage.EHLO


def test_body_earns_time_at_the_minimum_data_rate(clock):
    # 100 bytes per write, 1.5 s per write, 100 bytes/s earn 1 s back:
    # the budget shrinks by 0.5 s per write: after 18 writes 1 s is left, less
    # than the next write needs (without the bonus: 6 writes)
    sock = FakeSock(clock, cost=1.5, per_send=100)
    conn = Connection(sock, EP, TIMEOUTS, deadline=True, min_data_rate=100)
    with pytest.raises(SessionError) as ei:
        conn.write(b"x" * 100_000, Stage.BODY)
    assert ei.value.stage == Stage.BODY
    assert len(sock.sent) == 18 * 100


def test_body_bonus_never_exceeds_the_timeout(clock):
    # fast writes earn more than they cost; the budget stays capped at 10 s,
    # so one slow write of 11 s still fails
    sock = FakeSock(clock, cost=0.01, per_send=1000)
    conn = Connection(sock, EP, TIMEOUTS, deadline=True, min_data_rate=10)
    conn.write(b"x" * 50_000, Stage.BODY)
    assert conn._budget == pytest.approx(10.0)
    sock.cost = 11.0
    with pytest.raises(SessionError):
        conn.write(b"y" * 10, Stage.BODY)


def test_min_data_rate_applies_to_the_body_only(clock):
    sock = FakeSock(clock, cost=1.5, per_send=100)
    conn = Connection(sock, EP, TIMEOUTS, deadline=True, min_data_rate=100)
    with pytest.raises(SessionError) as ei:      # no bonus: 10 s / 1.5 s -> 6 writes
        conn.write(b"RCPT TO:<x>\r\n" * 100, Stage.RCPT)
    assert ei.value.stage == Stage.RCPT
    assert len(sock.sent) == 6 * 100


def test_lost_connection_is_not_a_timeout(clock):
    sock = FakeSock(clock, cost=0.1, chunks=[])
    conn = Connection(sock, EP, TIMEOUTS, deadline=True)
    with pytest.raises(SessionError) as ei:
        conn.read_reply(Stage.DOT)
    assert ei.value.kind == "lost"


def test_settings_read_the_parameters(tmp_path):
    from postfix_smtp.config.params import ConfigError, Params
    from postfix_smtp.settings import Settings
    (tmp_path / "main.cf").write_text("")
    s = Settings.from_params(Params.load(str(tmp_path)), "smtp")
    assert (s.per_request_deadline, s.min_data_rate) == (False, 500)
    # 3.7's default is ${smtp_per_record_deadline?...}: the development name still works
    s = Settings.from_params(Params.load(str(tmp_path), overrides=[
        ("smtp_per_record_deadline", "yes")]), "smtp")
    assert s.per_request_deadline
    s = Settings.from_params(Params.load(str(tmp_path), overrides=[
        ("smtp_per_request_deadline", "yes"), ("smtp_min_data_rate", "20")]), "smtp")
    assert (s.per_request_deadline, s.min_data_rate) == (True, 20)
    s = Settings.from_params(Params.load(str(tmp_path), overrides=[
        ("tcp_windowsize", "65536"), ("helpful_warnings", "no")]), "smtp")
    assert (s.tcp_windowsize, s.helpful_warnings) == (65536, False)
    with pytest.raises(ConfigError, match="invalid smtp_min_data_rate parameter value 0 < 1"):
        Settings.from_params(Params.load(str(tmp_path), overrides=[
            ("smtp_min_data_rate", "0")]), "smtp")


def test_tcp_windowsize_sets_both_buffers():
    from postfix_smtp.smtp.session import connect
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    try:
        ep = Endpoint("x", "127.0.0.1", ls.getsockname()[1])
        default = connect(ep, 5)
        small = connect(ep, 5, windowsize=8192)
        try:
            # Linux doubles the value it is given
            assert small.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 16384
            assert small.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 16384
            assert default.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) != 16384
        finally:
            default.close()
            small.close()
    finally:
        ls.close()


def test_restart_applies_the_stage_timeout_to_the_new_stream(clock):
    """After STARTTLS the connection continues on a new stream: its first
    read gets the stage timeout even when that equals the last one set on
    the old stream (a stream without one would wait forever)."""
    plain = FakeSock(clock, cost=0.1, chunks=[b"220 go ahead\r\n"])
    conn = Connection(plain, EP, TIMEOUTS)
    assert conn.read_reply(Stage.MAIL).code == 220
    assert plain.timeouts == [10.0]
    tls = FakeSock(clock, cost=0.1, chunks=[b"250 ok\r\n"])
    conn.queue(b"pending\r\n")
    conn.restart(tls)
    assert conn.read_reply(Stage.RCPT).code == 250     # RCPT's timeout is also 10 s
    assert tls.timeouts == [10.0]
    assert tls.sent == b""                              # nothing carried over


def test_unix_connect_failure_texts(tmp_path):
    from postfix_smtp.smtp.session import ConnectError, connect
    ep = Endpoint("mx", str(tmp_path / "missing"), 0, socket.AF_UNIX)
    with pytest.raises(ConnectError) as ei:
        connect(ep, 5)
    assert ei.value.text == "No such file or directory"
