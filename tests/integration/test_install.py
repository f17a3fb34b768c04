"""`postfix-smtp install` against a Postfix instance whose daemon_directory is
Debian's /usr/lib/postfix/sbin: the wrapper lands there, master.cf's smtp and
relay services point at it, `postfix check` stays clean, and mail flows."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from postfix_smtp.testing.instance import PostfixInstance, tool
from postfix_smtp.testing.peer import PeerScript, SmtpPeer


def test_install_apply_check_reload_deliver(tmp_base, agent_wrapper):
    name = "pysmtp-test%d" % os.getpid()
    peer = SmtpPeer(PeerScript(), max_lifetime=60)
    peer.start()
    inst = PostfixInstance(tmp_base, relayhost=peer.address, max_lifetime=120)
    target = None
    try:
        inst.start()
        daemon_dir = inst.postconf_get("daemon_directory")
        assert daemon_dir == "/usr/lib/postfix/sbin"
        target = os.path.join(daemon_dir, name)
        cmd = [sys.executable, "-m", "postfix_smtp.cli", "install", "--name", name,
               "-c", inst.config_dir, "--apply", "--python", agent_wrapper.python]
        if agent_wrapper.pythonpath:
            cmd += ["--pythonpath", agent_wrapper.pythonpath]
        env = dict(os.environ, PYTHONPATH=agent_wrapper.pythonpath or "")
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert os.access(target, os.X_OK)
        with open(target) as f:
            assert 'exec %s' % agent_wrapper.python in f.read()
        master_cf = open(os.path.join(inst.config_dir, "master.cf")).read()
        assert re.search(r"^smtp\s+unix\s+-\s+-\s+n\s+-\s+-\s+%s\s*$" % name, master_cf, re.M)
        assert re.search(r"^relay\s+unix\s+-\s+-\s+n\s+-\s+-\s+%s\s*\n\s+-o syslog_name="
                         r"postfix/\$service_name" % name, master_cf, re.M)
        check = subprocess.run([tool("postfix"), "-c", inst.config_dir, "check"],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), \
            check.stdout + check.stderr
        inst.reload()
        inst.sendmail(b"Subject: installed\n\nhi\n", "a@src.test.invalid", ["b@dest.test.invalid"])
        hits = inst.expect_log(r"postfix/smtp\[\d+\]: \w+: to=<b@dest\.test\.invalid>.*status=sent",
                               timeout=30)
        pid = re.search(r"smtp\[(\d+)\]", hits[0]).group(1)
        assert peer.wait_messages(1, timeout=10)
        # it was our agent: the process that logged the line runs postfix_smtp, idle now
        from test_crash import agent_pids
        assert int(pid) in agent_pids(inst.config_dir)
    finally:
        inst.stop()
        peer.stop()
        if target and os.path.exists(target):
            os.unlink(target)
