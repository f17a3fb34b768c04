"""A postmaster notice never waits for a busy cleanup(8) (stock:
post_mail_fopen_nowait): a UNIX-domain connect with a timeout fails at once
(EAGAIN) when the listen queue is full, whatever ipc_timeout is."""

from __future__ import annotations

import socket
import time

import pytest

from postfix_smtp.ipc import postmail
from postfix_smtp.ipc.stream import IpcError


def test_notice_gives_up_at_once_on_a_busy_cleanup(tmp_path):
    path = str(tmp_path / "cleanup")
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(0)
    fillers = []
    try:
        for _ in range(8):                       # fill the listen queue
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(path)
            except OSError:
                pass
            fillers.append(c)
        t0 = time.monotonic()
        with pytest.raises(IpcError, match="Resource temporarily unavailable"):
            postmail.PostMail.open("double-bounce@example", "postmaster@example",
                                   myhostname="mx.example", timeout=3600, path=path)
        assert time.monotonic() - t0 < 2
    finally:
        for c in fillers:
            c.close()
        ls.close()
