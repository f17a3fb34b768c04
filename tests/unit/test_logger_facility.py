"""syslog_facility: the priority of every record sent to syslog.

Stock Postfix passes facility | level to syslog(3); the facility names are
those of msg_syslog.c's table, with the values of the platform's syslog.h
(taken here from Python's syslog module, which exposes the same constants).
"""

import re
import socket
import sys
import syslog

import pytest

from postfix_smtp.log import Logger


def _server(tmp_path):
    path = str(tmp_path / "log")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    return s, path


def _pri(record: bytes) -> int:
    m = re.match(rb"<(\d+)>", record)
    assert m, record
    return int(m.group(1))


def test_local3_priorities(tmp_path):
    srv, path = _server(tmp_path)
    log = Logger("postfix/smtp", facility="local3", syslog_path=path)
    log.info("i")
    log.warning("w")
    log.error("e")
    log.fatal("f")
    got = [_pri(srv.recv(4096)) for _ in range(4)]
    # local3 = 19 << 3 = 152; info 6, warning 4, err 3, crit 2
    assert got == [158, 156, 155, 154]
    assert got == [syslog.LOG_LOCAL3 | lvl for lvl in
                   (syslog.LOG_INFO, syslog.LOG_WARNING, syslog.LOG_ERR, syslog.LOG_CRIT)]
    # (the default, mail, would give 22/20/19/18)


def test_reopen_switches_facility(tmp_path):
    """main.cf is read after the bootstrap logger exists (master/server.py
    calls reopen(facility=syslog_facility)): records after it use the new one."""
    srv, path = _server(tmp_path)
    log = Logger("postfix/smtp", syslog_path=path)
    log.info("before")
    log.reopen(facility="local3")
    log.info("after")
    assert [_pri(srv.recv(4096)) for _ in range(2)] == [
        syslog.LOG_MAIL | syslog.LOG_INFO, syslog.LOG_LOCAL3 | syslog.LOG_INFO]


@pytest.mark.parametrize("name", ["auth", "authpriv", "cron", "daemon", "ftp", "kern", "lpr",
                                  "mail", "news", "syslog", "user", "uucp", "local0", "local1",
                                  "local2", "local3", "local4", "local5", "local6", "local7"])
def test_every_stock_facility_name(tmp_path, name):
    want = getattr(syslog, "LOG_" + name.upper(), None)
    if want is None and name == "ftp" and sys.platform.startswith("linux"):
        want = 11 << 3                     # glibc's LOG_FTP (not in Python's module)
    if want is None:
        pytest.skip("no LOG_%s on this platform" % name.upper())
    srv, path = _server(tmp_path)
    Logger("postfix/smtp", facility=name, syslog_path=path).warning("x")
    assert _pri(srv.recv(4096)) == want | syslog.LOG_WARNING
