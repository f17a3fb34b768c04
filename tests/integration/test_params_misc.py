"""Differential tests for parameters that change where a connection comes
from or what happens around a delivery: smtp_bind_address(6),
smtp_bind_address_enforce, the virtual-host binding of inet_interfaces,
smtp_address_verify_target, daemon_timeout, ipc_timeout.

Each scenario runs through postfix_smtp and through the stock smtp(8) on
private Postfix instances (relayhost = one SmtpPeer); the peer's view (the
client's source address, the commands) and the log lines must agree.  Each
test also states why it would fail if the parameter were ignored.
"""

from __future__ import annotations

import os
import re
import socket
import time

import pytest

from postfix_smtp.testing.instance import PostfixInstance, postfix_available
from postfix_smtp.testing.peer import PeerScript, SmtpPeer
from test_delivery import MESSAGE, RCPT, SENDER, normalise_line, normalise_wire, run_scenario
from test_dns import local_ipv4_addresses, local_ipv6_addresses



def _both(tmp_base, agent_wrapper, script, **kw):
    ours = run_scenario(os.path.join(tmp_base, "agent"), agent_wrapper, script(), **kw)
    stock = run_scenario(os.path.join(tmp_base, "stock"), None, script(), **kw)
    return ours, stock


def _warnings(outcome, pattern):
    return [re.sub(r"^.*?postfix/smtp\[\d+\]: ", "", ln) for ln in outcome.all_log
            if re.search(r"postfix/smtp\[\d+\]: warning: " + pattern, ln)]


def _unbindable(family, candidates):
    """The first documentation address that is not local (bind() fails)."""
    for a in candidates:
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.bind((a, 0))
        except OSError:
            return a
        finally:
            s.close()
    return None


def _ipv6_loopback_ok() -> bool:
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        s.close()
        return True
    except OSError:
        return False


class _Run:
    def __init__(self, peer, lines):
        self.peer = peer
        self.sessions = peer.sessions
        self.all_log = lines

    def agent_lines(self, what=r"smtp"):
        return [ln.split("]: ", 1)[1] for ln in self.all_log
                if re.search(r"postfix/%s\[\d+\]: " % what, ln)]


def run_peer(base, agent, script, peer_host="127.0.0.1", main_cf=None, smtp_args=(),
             wait=r"postfix/smtp\[\d+\]: \w+: to=<", timeout=30):
    """Like test_delivery.run_scenario, with the peer on ``peer_host`` and a
    free choice of the log line that ends the run."""
    os.makedirs(base, mode=0o755, exist_ok=True)
    peer = SmtpPeer(script, host=peer_host, max_lifetime=120)
    peer.start()
    cf = {"minimal_backoff_time": "300s", "maximal_backoff_time": "300s"}
    cf.update(main_cf or {})
    inst = PostfixInstance(base, relayhost=peer.address, agent=agent, main_cf=cf,
                           smtp_args=list(smtp_args), max_lifetime=300)
    try:
        inst.start()
        inst.sendmail(MESSAGE, SENDER, [RCPT])
        inst.expect_log(wait, timeout=timeout)
        time.sleep(0.5)
        return _Run(peer, inst.log_lines())
    finally:
        inst.stop()
        peer.stop()


def _module_runs(agent_source, run_one):
    """run_one(base, agent) for stock and for the agent in a fresh directory;
    a generator for module-scoped fixtures: yields {"stock": ..., "agent": ...}."""
    import shutil
    import tempfile
    from postfix_smtp.install import Wrapper
    if os.geteuid() != 0 or not postfix_available():
        pytest.skip("needs root and Postfix")
    python, path = agent_source
    base = tempfile.mkdtemp(prefix="pfsmtp-test-", dir="/tmp")
    os.chmod(base, 0o755)
    try:
        yield {tag: run_one(os.path.join(base, tag), agent)
               for tag, agent in (("stock", None),
                                  ("agent", Wrapper(python=python, pythonpath=path)))}
    finally:
        if not os.environ.get("POSTFIX_SMTP_KEEP_TMP"):
            shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------
# smtp_bind_address, smtp_bind_address6, the inet_interfaces binding


def test_bind_address_is_the_source_address(tmp_base, agent_wrapper):
    """Default: the kernel picks 127.0.0.1 for a peer on 127.0.0.1."""
    ours, stock = _both(tmp_base, agent_wrapper, PeerScript,
                        main_cf={"smtp_bind_address": "127.0.0.2"})
    for o in (ours, stock):
        assert [s.peer_addr[0] for s in o.sessions] == ["127.0.0.2"]
    assert normalise_line(ours.lines[0]) == normalise_line(stock.lines[0])
    assert normalise_line(ours.lines[0])["status"] == "sent"


def test_bind_address6_is_the_source_address(tmp_base, agent_wrapper):
    """A peer on ::1 sees the global IPv6 address given as smtp_bind_address6
    (the default source towards ::1 is ::1)."""
    if not _ipv6_loopback_ok():
        pytest.skip("no IPv6 loopback")
    mine = local_ipv6_addresses()
    if not mine:
        pytest.skip("no global IPv6 address on this host")
    cf = {"inet_protocols": "all", "smtp_bind_address6": "[%s]" % mine[0],
          "smtp_bind_address": "127.0.0.2"}     # IPv4 binding must not leak into IPv6
    runs = {tag: run_peer(os.path.join(tmp_base, tag), agent, PeerScript(), "::1", cf)
            for tag, agent in (("agent", agent_wrapper), ("stock", None))}
    for tag, r in runs.items():
        assert [s.peer_addr[0] for s in r.sessions] == [mine[0]], tag
        assert any("status=sent" in ln for ln in r.agent_lines()), tag


def test_bind_address6_failure_warns_and_delivers_like_stock(tmp_base, agent_wrapper):
    """smtp_bind_address6 = an address that is not local: stock warns and
    connects from the default address (smtp_bind_address_enforce = no)."""
    if not _ipv6_loopback_ok():
        pytest.skip("no IPv6 loopback")
    bad = _unbindable(socket.AF_INET6, ["2001:db8::77", "2001:db8:1::77"])
    if bad is None:
        pytest.skip("every candidate IPv6 address is local")
    cf = {"inet_protocols": "all", "smtp_bind_address6": bad}
    runs = {tag: run_peer(os.path.join(tmp_base, tag), agent, PeerScript(), "::1", cf)
            for tag, agent in (("agent", agent_wrapper), ("stock", None))}
    want = "warning: smtp_connect_addr: bind %s: Cannot assign requested address" % bad
    for tag, r in runs.items():
        assert [ln for ln in r.agent_lines() if "warning:" in ln] == [want], tag
        assert [s.peer_addr[0] for s in r.sessions] == ["::1"], tag
        assert any("status=sent" in ln for ln in r.agent_lines()), tag


_V4_BAD = ["198.51.100.77", "203.0.113.77", "192.0.2.254"]


def test_bind_failure_warns_and_delivers_like_stock(tmp_base, agent_wrapper):
    """smtp_bind_address_enforce = no (default): a bind() failure is a
    warning, the connection is made from the kernel's choice."""
    bad = _unbindable(socket.AF_INET, _V4_BAD)
    if bad is None:
        pytest.skip("every candidate IPv4 address is local")
    ours, stock = _both(tmp_base, agent_wrapper, PeerScript,
                        main_cf={"smtp_bind_address": bad})
    want = ["warning: smtp_connect_addr: bind %s: Cannot assign requested address" % bad]
    assert _warnings(stock, "") == want
    assert _warnings(ours, "") == want
    for o in (ours, stock):
        assert [s.peer_addr[0] for s in o.sessions] == ["127.0.0.1"]
    assert normalise_line(ours.lines[0]) == normalise_line(stock.lines[0])


def test_bind_failure_enforced_defers_like_stock(tmp_base, agent_wrapper):
    """smtp_bind_address_enforce = yes: no connection at all, the mail is
    deferred with stock's text (with "no" it is delivered, test above)."""
    bad = _unbindable(socket.AF_INET, _V4_BAD)
    if bad is None:
        pytest.skip("every candidate IPv4 address is local")
    ours, stock = _both(tmp_base, agent_wrapper, PeerScript, expect_empty=False,
                        main_cf={"smtp_bind_address": bad, "smtp_bind_address_enforce": "yes"})
    want = ["warning: smtp_connect_addr: bind %s: Cannot assign requested address" % bad]
    assert _warnings(stock, "") == want
    assert _warnings(ours, "") == want
    for o in (ours, stock):
        assert o.sessions == []
        assert len(o.queue["deferred"]) == 1
    assert normalise_line(ours.lines[0]) == normalise_line(stock.lines[0])
    d = normalise_line(ours.lines[0])
    assert (d["relay"], d["dsn"], d["status"]) == ("none", "4.4.0", "deferred")


def test_single_inet_interface_is_the_source_address(tmp_base, agent_wrapper):
    """inet_interfaces = one non-loopback IPv4 address and no
    smtp_bind_address: stock binds to it ("virtual host"), so the peer on
    127.0.0.1 sees that address; by default the source is 127.0.0.1."""
    mine = local_ipv4_addresses()
    if not mine:
        pytest.skip("no non-loopback IPv4 address on this host")
    ours, stock = _both(tmp_base, agent_wrapper, PeerScript,
                        main_cf={"inet_interfaces": mine[0]})
    for o in (stock, ours):
        assert [s.peer_addr[0] for s in o.sessions] == [mine[0]]
    assert normalise_line(ours.lines[0]) == normalise_line(stock.lines[0])


# ---------------------------------------------------------------------------
# smtp_address_verify_target


def test_address_verify_target_data_like_stock(tmp_base, agent_wrapper):
    """sendmail -bv with smtp_address_verify_target = data: the probe goes on
    to DATA and the session is dropped at the 354 (no message, no QUIT); with
    the default (rcpt) it ends with RSET and never sends DATA
    (test_reports.test_sendmail_bv_sends_no_data_and_reports)."""
    ours, stock = _both(tmp_base, agent_wrapper, PeerScript, sendmail_args=["-bv"],
                        main_cf={"smtp_address_verify_target": "data"})
    for o in (ours, stock):
        probe = o.sessions[0]
        wire = probe.client_bytes
        assert b"RCPT TO:<bob@dest.test.invalid>" in wire
        assert wire.endswith(b"DATA\r\n"), wire
        assert b"RSET" not in wire and b"QUIT" not in wire
        assert probe.messages == []
    assert normalise_wire(ours.sessions[0].client_bytes) == normalise_wire(
        stock.sessions[0].client_bytes)
    mine = [ln for ln in ours.lines if "bob@" in ln]
    assert [normalise_line(ln) for ln in mine] == [
        normalise_line(ln) for ln in stock.lines if "bob@" in ln]
    d = normalise_line(mine[0])
    assert d["status"] == "deliverable" and d["dsn"] == "2.0.0"
    assert d["reason"].startswith("354 ")


# ---------------------------------------------------------------------------
# daemon_timeout


_MASTER_EXIT = r"postfix/master\[\d+\]: warning: process \S+/smtp pid \d+ "


def _run_stuck_greeting(base, agent):
    r = run_peer(base, agent, PeerScript(delay={"greeting": 60}),
                 main_cf={"smtp_helo_timeout": "300s"},
                 smtp_args=["-o", "daemon_timeout=3s"], wait=_MASTER_EXIT)
    done = time.monotonic()
    # what the agent, qmgr and master said about it (pids and paths masked)
    said = [re.sub(r"\[\d+\]", "[PID]",
                   re.sub(r"/\S+/smtp pid \d+", "SMTP pid N", ln.split(" mx ", 1)[1]))
            for ln in r.all_log
            if re.search(r"postfix/smtp\[\d+\]: fatal: |postfix/qmgr\[\d+\]: warning: "
                         r"|postfix/master\[\d+\]: warning: process ", ln)]
    return {"sessions": len(r.sessions),
            "elapsed": done - r.sessions[0].started if r.sessions else None,
            "said": said}


@pytest.fixture(scope="module")
def stuck_greeting_runs(_agent_source):
    yield from _module_runs(_agent_source, _run_stuck_greeting)


def test_daemon_timeout_ends_a_stuck_delivery(stuck_greeting_runs):
    """A peer that holds back its greeting for a minute, smtp_helo_timeout =
    300s, "-o daemon_timeout=3s": the process is ended after a few seconds.
    With the default daemon_timeout (18000s) nothing would happen for 300 s
    and the 30 s wait for master's warning would fail."""
    for tag, r in stuck_greeting_runs.items():
        assert r["sessions"] == 1, tag
        # stock's watchdog trips after 2-3 s, and msg_fatal() pauses 1 s
        assert 1.5 < r["elapsed"] < 25, (tag, r["elapsed"])
        assert "postfix/qmgr[PID]: warning: private/smtp socket: malformed response" \
            in r["said"], tag


def test_daemon_timeout_logs_like_stock(stuck_greeting_runs):
    stock, ours = stuck_greeting_runs["stock"]["said"], stuck_greeting_runs["agent"]["said"]
    assert stock[:1] == ["postfix/smtp[PID]: fatal: watchdog timeout"]
    assert "postfix/master[PID]: warning: process SMTP pid N exit status 1" in stock
    assert ours == stock


# ---------------------------------------------------------------------------
# ipc_timeout


class StallService:
    """A UNIX-domain server that accepts connections and never says a word
    (a stuck Postfix internal service); records how long each client stayed."""

    def __init__(self, path: str, lifetime: float = 60.0) -> None:
        import threading
        self.path = path
        self.held = []                 # seconds from accept to the client's close
        self._stop = threading.Event()
        self._ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._ls.bind(path)
        os.chmod(path, 0o666)
        self._ls.listen(16)
        self._ls.settimeout(0.2)
        self._deadline = time.monotonic() + lifetime
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import threading
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                conn, _ = self._ls.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()
        self._ls.close()

    def _hold(self, conn) -> None:
        t0 = time.monotonic()
        conn.settimeout(0.2)
        try:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                try:
                    if not conn.recv(4096):
                        self.held.append(time.monotonic() - t0)
                        return
                except socket.timeout:
                    continue
        except OSError:
            self.held.append(time.monotonic() - t0)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _run_with_stalled_defer_service(base, agent):
    peer = SmtpPeer(PeerScript(rcpt_reply="450 4.2.0 <bob@dest.test.invalid>: mailbox busy"),
                    max_lifetime=120)
    peer.start()
    os.makedirs(base, mode=0o755, exist_ok=True)
    inst = PostfixInstance(base, relayhost=peer.address, agent=agent,
                           main_cf={"minimal_backoff_time": "300s",
                                    "maximal_backoff_time": "300s",
                                    "defer_service_name": "stalldefer"},
                           smtp_args=["-o", "ipc_timeout=3s"], max_lifetime=300)
    stall = None
    try:
        inst.start()
        stall = StallService(os.path.join(inst.queue_dir, "private", "stalldefer"))
        inst.sendmail(MESSAGE, SENDER, [RCPT])
        inst.expect_log(r"postfix/smtp\[\d+\]: \w+: to=<bob@dest\.test\.invalid>.*"
                        r"status=deferred", timeout=30)
        end = time.monotonic() + 10
        while not stall.held and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(0.3)
        return list(stall.held), inst.log_lines()
    finally:
        inst.stop()
        if stall is not None:
            stall.stop()
        peer.stop()


def _run_stalled_defer(base, agent):
    held, lines = _run_with_stalled_defer_service(base, agent)
    return {
        "held": held,
        "lines": [normalise_line(ln.split("]: ", 1)[1]) for ln in lines
                  if re.search(r"postfix/smtp\[\d+\]: \w+: to=<", ln)],
        "warnings": [re.sub(r"^[0-9A-F]{6,}: ", "QID: ", ln.split(": warning: ", 1)[1])
                     for ln in lines if re.search(r"postfix/smtp\[\d+\]: warning: ", ln)],
    }


@pytest.fixture(scope="module")
def stalled_defer_runs(_agent_source):
    """Both agents against a stuck defer service (one run each, shared by
    the two tests below)."""
    yield from _module_runs(_agent_source, _run_stalled_defer)


def test_ipc_timeout_bounds_a_stuck_internal_service_like_stock(stalled_defer_runs):
    """A recipient deferred by the server, and the defer service (here a
    socket that never answers) stuck: with "-o ipc_timeout=3s" the agent
    gives up on it after ~3 s, logs the deferral and carries on.  With the
    default (3600s) the deferral line would not come within the 30 s wait."""
    runs = stalled_defer_runs
    for tag in ("stock", "agent"):
        held = runs[tag]["held"]
        assert len(held) == 1 and 2.0 < held[0] < 25, (tag, held)
    assert runs["agent"]["lines"] == runs["stock"]["lines"]
    d = runs["agent"]["lines"][0]
    assert d["status"] == "deferred" and d["dsn"] == "4.2.0"


def test_stuck_defer_service_warnings_like_stock(stalled_defer_runs):
    runs = stalled_defer_runs
    assert runs["stock"]["warnings"] == ["write private/stalldefer socket: Connection timed out",
                                         "QID: stalldefer service failure"]
    assert runs["agent"]["warnings"] == runs["stock"]["warnings"]
