"""Log records as syslogd and postlogd receive them."""

import os
import re
import socket

from postfix_smtp.log import Logger


def _server(tmp_path, name):
    path = str(tmp_path / name)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    return s, path


def test_syslog_record_format(tmp_path):
    srv, path = _server(tmp_path, "log")
    log = Logger("postfix/smtp", facility="mail", syslog_path=path)
    log.info("ABC123: to=<a@b>, status=sent (250 ok)")
    log.warning("something odd")
    first = srv.recv(4096).decode()
    second = srv.recv(4096).decode()
    # <facility*8+severity>: mail=2, info=6 -> 22; warning=4 -> 20
    assert re.fullmatch(r"<22>\w{3} [ \d]\d \d\d:\d\d:\d\d postfix/smtp\[%d\]: "
                        r"ABC123: to=<a@b>, status=sent \(250 ok\)" % os.getpid(), first), first
    assert re.fullmatch(r"<20>.* postfix/smtp\[\d+\]: warning: something odd", second)


def test_postlog_record_format_and_sanitising(tmp_path):
    srv, path = _server(tmp_path, "postlog")
    log = Logger("postfix/relay/smtp", postlog_path=path, hostname="mx.example.org")
    log.info("bad\x01byte caf\u00e9")
    rec = srv.recv(4096).decode()
    assert re.fullmatch(r"\w{3} \d\d \d\d:\d\d:\d\d mx postfix/relay/smtp\[\d+\]: "
                        r"bad\?byte caf\u00e9", rec), rec


def test_long_text_is_cut(tmp_path):
    srv, path = _server(tmp_path, "postlog")
    Logger("postfix/smtp", postlog_path=path, hostname="h").info("x" * 5000)
    rec = srv.recv(8192)
    assert rec.endswith(b"x" * 10) and rec.split(b"]: ", 1)[1] == b"x" * 2000


def test_no_log_socket_is_not_fatal(tmp_path):
    log = Logger("postfix/smtp", syslog_path=str(tmp_path / "missing"))
    log.info("nobody listens")          # must not raise
