"""SASL against the scriptable SMTP peer: exact bytes on the wire, protocol
corner cases, the next server after an AUTH failure, and XOAUTH2.

Where the stock smtp(8) can do the same (PLAIN, LOGIN, CRAM-MD5 through
Debian's Cyrus plug-ins), each scenario runs through both and compares
what the server received, the outcome and the warnings.  XOAUTH2 has no
stock counterpart on Debian: the peer checks the exact initial response.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import re
import threading
import time
from dataclasses import dataclass

import pytest

from postfix_smtp.testing.instance import PostfixInstance, tool
from postfix_smtp.testing.peer import PeerScript, SmtpPeer


SENDER = "sender@src.test.invalid"
RCPT = "rcpt@dest.test.invalid"
MESSAGE = b"Subject: sasl peer test\n\nhello\n"

LINE = re.compile(r"postfix/smtp\[\d+\]: \w+: to=<[^>]*>, relay=(\S+), (?:conn_use=\d+, )?"
                  r"delay=[\d.]+, delays=[\d./]+, dsn=([\d.]+), status=(\w+) \((.*)\)$")
WARNING = re.compile(r"postfix/smtp\[\d+\]: (warning: .*)$")
INFO = re.compile(r"postfix/smtp\[\d+\]: ([0-9A-F]+: (?!to=<).*)$")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class AuthDialog:
    """A PeerScript.before_reply hook that plays an AUTH exchange.

    ``replies`` are the server's answers to the AUTH command and to each
    line after it, in order (a callable gets the client line); the exchange
    ends with the first reply that is not 334.  Every line the client sent
    in the exchange is kept in ``lines`` (per session)."""

    def __init__(self, *replies) -> None:
        self.replies = list(replies)
        self.lines: list = []
        self._state: dict = {}
        self._lock = threading.Lock()

    def __call__(self, session, stage, line, reply):
        if stage != "other":
            return None
        with self._lock:
            idx = self._state.get(id(session))
            if idx is None:
                if not line.upper().startswith("AUTH"):
                    return None
                idx = 0
                self.lines.append([])
            self.lines[-1].append(line)
            if idx >= len(self.replies):
                self._state.pop(id(session), None)
                return "503 5.5.1 unexpected"
            out = self.replies[idx]
            if callable(out):
                out = out(line)
            if out.startswith("334"):
                self._state[id(session)] = idx + 1
            else:
                self._state.pop(id(session), None)
        if out == "DROP":
            raise ConnectionAbortedError("dropped during AUTH (script)")
        return out


def script(auth: str, dialog: AuthDialog) -> PeerScript:
    lines = ["peer.test.invalid", "PIPELINING", "SIZE 10240000", "AUTH " + auth,
             "ENHANCEDSTATUSCODES", "8BITMIME"]
    return PeerScript(ehlo_lines=lines, before_reply=dialog)


@dataclass
class Result:
    lines: list           # (relay, dsn, status, reason), normalised
    warnings: list
    infos: list
    auth: list            # per peer: the AUTH exchanges it saw (lists of client lines)
    sessions: list        # per peer: number of sessions
    log: list


def run(base: str, agent, peers: list, passwd: str, cf: dict | None = None,
        fallback: bool = False, files: dict | None = None, map_type: str = "texthash") -> Result:
    """``peers``: (auth keyword value, AuthDialog) per server; the first is the
    relayhost, a second one the smtp_fallback_relay."""
    os.makedirs(base, mode=0o755, exist_ok=True)
    os.chmod(base, 0o755)
    servers = [SmtpPeer(script(a, d), max_lifetime=120) for a, d in peers]
    for s in servers:
        s.start()
    inst = None
    try:
        ports = [s.port for s in servers]
        pw = os.path.join(base, "sasl_passwd")
        with open(pw, "w") as f:
            f.write(passwd.format(port=ports[0], base=base))
        os.chmod(pw, 0o600)
        for name, content in (files or {}).items():
            path = os.path.join(base, name)
            with open(path, "w") as f:
                f.write(content)
            os.chmod(path, 0o644)
        main = {"smtp_sasl_auth_enable": "yes", "smtp_sasl_password_maps": map_type + ":" + pw,
                "minimal_backoff_time": "300s", "maximal_backoff_time": "300s"}
        if fallback:
            main["smtp_fallback_relay"] = "[127.0.0.1]:%d" % ports[1]
        main.update({k: v.format(base=base) for k, v in (cf or {}).items()})
        inst = PostfixInstance(os.path.join(base, "inst"), relayhost="[127.0.0.1]:%d" % ports[0],
                               agent=agent, main_cf=main, max_lifetime=300, quick_start=True)
        inst.start()
        if map_type != "texthash":           # built with postmap, readable by root only
            subprocess.run([tool("postmap"), "-c", inst.config_dir, "%s:%s" % (map_type, pw)],
                           check=True, timeout=30)
            for suffix in (".db", ".lmdb", ".cdb"):
                if os.path.exists(pw + suffix):
                    os.chmod(pw + suffix, 0o600)
        inst.sendmail(MESSAGE, SENDER, [RCPT])
        inst.wait_log(r"postfix/smtp\[\d+\]: \w+: to=<", timeout=30)
        assert inst.wait_queue_empty(timeout=30, allow_deferred=True)
        time.sleep(0.3)
        log = inst.log_lines()

        def norm(t: str) -> str:
            for i, p in enumerate(ports):
                t = t.replace(":%d" % p, ":PORT%d" % i)
            return re.sub(r"\b[0-9A-F]{8,}\b", "QID", t)

        lines, warnings, infos = [], [], []
        for ln in log:
            m = LINE.search(ln)
            if m:
                lines.append(tuple(norm(x) for x in m.groups()))
                continue
            m = WARNING.search(ln)
            if m:
                warnings.append(norm(m.group(1)))
                continue
            m = INFO.search(ln)
            if m:
                infos.append(norm(m.group(1)))
        return Result(lines[:1], warnings, infos, [d.lines for _, d in peers],
                      [len(s.sessions) for s in servers], log)
    finally:
        if inst is not None:
            inst.stop()
        for s in servers:
            s.stop()


def both(tmp_base, agent, make_peers, passwd, **kw):
    ours = run(os.path.join(tmp_base, "agent"), agent, make_peers(), passwd, **kw)
    stock = run(os.path.join(tmp_base, "stock"), None, make_peers(), passwd, **kw)
    return ours, stock


def assert_same(ours: Result, stock: Result) -> None:
    assert ours.lines == stock.lines, (ours.log, stock.log)
    assert ours.warnings == stock.warnings
    assert ours.infos == stock.infos
    assert ours.auth == stock.auth
    assert ours.sessions == stock.sessions


PASSWD = "[127.0.0.1]:{port} alice:s3cret\n"
OK = "235 2.7.0 Authentication successful"
FAIL = "535 5.7.8 Error: authentication failed: bad credentials"


# --- the same bytes as stock -----------------------------------------------------------------

@pytest.mark.parametrize("mech,dialog", [
    ("PLAIN", lambda: AuthDialog(OK)),
    ("LOGIN", lambda: AuthDialog("334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", OK)),
    ("CRAM-MD5", lambda: AuthDialog("334 " + b64(b"<12345.67890@peer.test.invalid>"), OK)),
])
def test_wire_bytes_same_as_stock(tmp_base, agent_wrapper, mech, dialog):
    ours, stock = both(tmp_base, agent_wrapper, lambda: [(mech, dialog())], PASSWD,
                       cf={"smtp_sasl_security_options": "noanonymous"})
    assert_same(ours, stock)
    assert ours.lines[0][2] == "sent"
    first = ours.auth[0][0][0]
    assert first.startswith("AUTH " + mech)
    if mech == "PLAIN":
        assert first == "AUTH PLAIN " + b64(b"\0alice\0s3cret")


@pytest.mark.parametrize("map_type", ["hash", "lmdb"])
def test_root_only_password_table_types_same_as_stock(tmp_base, agent_wrapper, map_type):
    ours, stock = both(tmp_base, agent_wrapper, lambda: [("PLAIN", AuthDialog(OK))], PASSWD,
                       cf={"smtp_sasl_security_options": ""}, map_type=map_type)
    assert_same(ours, stock)
    assert ours.lines[0][2] == "sent"
    assert ours.auth[0][0] == ["AUTH PLAIN " + b64(b"\0alice\0s3cret")]


def test_authzid_same_as_stock(tmp_base, agent_wrapper):
    ours, stock = both(tmp_base, agent_wrapper, lambda: [("PLAIN", AuthDialog(OK))], PASSWD,
                       cf={"smtp_sasl_security_options": "", "send_cyrus_sasl_authzid": "yes"})
    assert_same(ours, stock)
    assert ours.auth[0][0] == ["AUTH PLAIN " + b64(b"alice\0alice\0s3cret")]


def test_long_initial_response_is_deferred_like_stock(tmp_base, agent_wrapper):
    passwd = "[127.0.0.1]:{port} alice:%s\n" % ("p" * 400)
    ours, stock = both(tmp_base, agent_wrapper, lambda: [("PLAIN", AuthDialog("334 ", OK))],
                       passwd, cf={"smtp_sasl_security_options": ""})
    assert_same(ours, stock)
    assert ours.auth[0][0] == ["AUTH PLAIN", b64(b"\0alice\0" + b"p" * 400)]


def test_non_empty_initial_challenge_deliberate_difference(tmp_base, agent_wrapper):
    """Stock quotes its own (credential-bearing) deferred initial response
    in the reason; the agent quotes the server's challenge instead."""
    passwd = "[127.0.0.1]:{port} alice:%s\n" % ("p" * 400)
    ours, stock = both(tmp_base, agent_wrapper, lambda: [("PLAIN", AuthDialog("334 Zm9v"))],
                       passwd, cf={"smtp_sasl_security_options": ""})
    secret = b64(b"\0alice\0" + b"p" * 400)
    prefix = ("SASL authentication failed; non-empty initial PLAIN challenge from server "
              "127.0.0.1[127.0.0.1]: ")
    assert stock.lines[0][1:3] == ("4.7.0", "deferred")
    assert stock.lines[0][3] == prefix + secret
    assert ours.lines[0][1:3] == ("4.7.0", "deferred")
    assert ours.lines[0][3] == prefix + "Zm9v"
    assert secret not in "\n".join(ours.log)
    assert ours.auth == stock.auth


def test_step_after_done_and_bad_base64_like_stock(tmp_base, agent_wrapper):
    ours, stock = both(tmp_base, agent_wrapper,
                       lambda: [("LOGIN", AuthDialog("334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6",
                                                     "334 TW9yZTo="))],
                       PASSWD, cf={"smtp_sasl_security_options": ""})
    assert_same(ours, stock)
    assert ours.lines[0][3] == ("SASL authentication failed; cannot authenticate to server "
                                "127.0.0.1[127.0.0.1]: generic failure")
    assert ours.warnings == ["warning: SASL authentication problem: attempting client step "
                             "after doneflag"]
    ours, stock = both(tmp_base + "/b64", agent_wrapper,
                       lambda: [("LOGIN", AuthDialog("334 Us*rname"))],
                       PASSWD, cf={"smtp_sasl_security_options": ""})
    assert_same(ours, stock)
    assert ours.lines[0][3].endswith(": bad protocol / cancel")


def test_lost_connection_during_auth_like_stock(tmp_base, agent_wrapper):
    ours, stock = both(tmp_base, agent_wrapper, lambda: [("PLAIN", AuthDialog("DROP"))],
                       PASSWD, cf={"smtp_sasl_security_options": ""})
    assert_same(ours, stock)
    assert ours.lines[0][1:] == ("4.4.2", "deferred", "lost connection with 127.0.0.1[127.0.0.1] "
                                 "while performing the EHLO handshake")


# --- the next server -------------------------------------------------------------------------

def test_next_server_after_auth_failure_like_stock(tmp_base, agent_wrapper):
    def peers():
        return [("PLAIN", AuthDialog(FAIL)), ("PLAIN", AuthDialog(OK))]
    passwd = "127.0.0.1 alice:s3cret\n"
    ours, stock = both(tmp_base, agent_wrapper, peers, passwd, fallback=True,
                       cf={"smtp_sasl_security_options": ""})
    assert_same(ours, stock)
    assert ours.infos == ["QID: SASL authentication failed; server 127.0.0.1[127.0.0.1] said: "
                          + FAIL]
    assert ours.lines[0][2] == "sent" and ours.lines[0][0] == "127.0.0.1[127.0.0.1]:PORT1"
    assert ours.sessions == [1, 1]


def test_hard_auth_failure_bounces_without_next_server_like_stock(tmp_base, agent_wrapper):
    def peers():
        return [("PLAIN", AuthDialog(FAIL)), ("PLAIN", AuthDialog(OK))]
    ours, stock = both(tmp_base, agent_wrapper, peers, "127.0.0.1 alice:s3cret\n",
                       fallback=True, cf={"smtp_sasl_security_options": "",
                                          "smtp_sasl_auth_soft_bounce": "no"})
    assert_same(ours, stock)
    assert ours.lines[0][1:3] == ("5.7.8", "bounced")
    assert ours.sessions[1] == 0          # (the bounce notice makes a second session)


# --- XOAUTH2 (agent only) ----------------------------------------------------------------------

XO_CF = {"smtp_sasl_mechanism_filter": "xoauth2", "smtp_sasl_security_options": ""}


def xoauth2(user: str, token: str) -> str:
    return b64(b"user=" + user.encode() + b"\x01auth=Bearer " + token.encode() + b"\x01\x01")


def test_xoauth2_token_from_password_map(tmp_base, agent_wrapper):
    token = "ya29.a0AfB_byC-test-token"
    dialog = AuthDialog(lambda line: OK if line == "AUTH XOAUTH2 " + xoauth2(
        "user@example.com", token) else FAIL)
    r = run(tmp_base, agent_wrapper, [("LOGIN PLAIN XOAUTH2", dialog)],
            "[127.0.0.1]:{port} user@example.com:%s\n" % token, cf=XO_CF)
    assert r.lines[0][2] == "sent", r.log
    assert dialog.lines == [["AUTH XOAUTH2 " + xoauth2("user@example.com", token)]]
    assert token not in "\n".join(r.log)


def test_xoauth2_token_file_json(tmp_base, agent_wrapper):
    token = "ya29.from-json-file"
    dialog = AuthDialog(OK)
    r = run(tmp_base, agent_wrapper, [("XOAUTH2", dialog)],
            "[127.0.0.1]:{port} user@example.com:{base}/token.json\n", cf=XO_CF,
            files={"token.json": json.dumps({"access_token": token, "refresh_token": "r",
                                             "expiry": "2000000000"})})
    assert r.lines[0][2] == "sent", r.log
    assert dialog.lines == [["AUTH XOAUTH2 " + xoauth2("user@example.com", token)]]


def test_xoauth2_error_challenge_then_535(tmp_base, agent_wrapper):
    err = b64(json.dumps({"status": "400", "schemes": "Bearer",
                          "scope": "https://mail.google.com/"}).encode())
    dialog = AuthDialog("334 " + err, "535 5.7.8 Username and Password not accepted")
    r = run(tmp_base, agent_wrapper, [("XOAUTH2", dialog)],
            "[127.0.0.1]:{port} user@example.com:expired\n", cf=XO_CF)
    assert dialog.lines == [["AUTH XOAUTH2 " + xoauth2("user@example.com", "expired"), ""]]
    assert r.lines[0][1:] == ("4.7.8", "deferred", "SASL authentication failed; server "
                              "127.0.0.1[127.0.0.1] said: 535 5.7.8 Username and Password not "
                              "accepted")


def test_xoauth2_long_token_deferred_initial_response(tmp_base, agent_wrapper):
    token = "t" * 700
    dialog = AuthDialog("334 ", OK)
    r = run(tmp_base, agent_wrapper, [("XOAUTH2", dialog)],
            "[127.0.0.1]:{port} user@example.com:%s\n" % token, cf=XO_CF)
    assert r.lines[0][2] == "sent", r.log
    assert dialog.lines == [["AUTH XOAUTH2", xoauth2("user@example.com", token)]]


def test_xoauth2_needs_the_filter(tmp_base, agent_wrapper):
    """Without smtp_sasl_mechanism_filter naming it, XOAUTH2 is never used
    (stock on Debian has no XOAUTH2 plug-in): here PLAIN is."""
    dialog = AuthDialog(OK)
    r = run(tmp_base, agent_wrapper, [("XOAUTH2 PLAIN", dialog)], PASSWD,
            cf={"smtp_sasl_security_options": ""})
    assert dialog.lines == [["AUTH PLAIN " + b64(b"\0alice\0s3cret")]]
    assert r.lines[0][2] == "sent"
