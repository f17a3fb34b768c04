"""Per-process state in a real delivery: lookup tables and client keys opened
before privileges drop (root-only files work), a rebuilt table restarting the
process as stock does, and TLS sessions resumed across processes via tlsmgr."""

from __future__ import annotations

import os
import subprocess
import time

from postfix_smtp.testing.instance import PostfixInstance, tool
from postfix_smtp.testing.peer import PeerScript, SmtpPeer

MSG = b"Subject: tables\n\nhello\n"


def test_root_only_policy_table_and_rebuild_restart(tmp_base, agent_wrapper):
    peer = SmtpPeer(PeerScript(), max_lifetime=90)      # no STARTTLS offered
    peer.start()
    table = os.path.join(tmp_base, "tls_policy")
    with open(table, "w") as f:
        f.write("[127.0.0.1]:%d none\n" % peer.port)
    inst = PostfixInstance(
        os.path.join(tmp_base, "pf"), relayhost=peer.address, agent=agent_wrapper,
        # encrypt globally: only the table's "none" for this nexthop lets mail through
        main_cf={"smtp_tls_security_level": "encrypt",
                 "smtp_tls_policy_maps": "hash:" + table},
        max_lifetime=120)
    postmap = [tool("postmap"), "-c", inst.config_dir, "hash:" + table]
    try:
        inst.start()
        subprocess.run(postmap, check=True, timeout=30)
        os.chmod(table + ".db", 0o600)                  # root only, like sasl_passwd.db
        inst.sendmail(MSG, "a@src.test.invalid", ["b@dest.test.invalid"])
        inst.expect_log(r"postfix/smtp\[\d+\]: \w+: to=<b@dest.*status=sent", timeout=30)
        assert not any("is unavailable" in ln or "TLS is required" in ln for ln in inst.log_lines())
        # rebuild the table: the agent that used it exits after its next request
        time.sleep(1.1)
        subprocess.run(postmap, check=True, timeout=30)
        inst.sendmail(MSG, "a@src.test.invalid", ["c@dest.test.invalid"])
        inst.expect_log(r"postfix/smtp\[\d+\]: \w+: to=<c@dest.*status=sent", timeout=30)
        inst.expect_log(r"postfix/smtp\[\d+\]: table hash:%s has changed -- restarting" % table,
                        timeout=10)
    finally:
        inst.stop()
        peer.stop()


def test_root_only_client_key_is_loaded_before_privileges_drop(tmp_base, agent_wrapper):
    """smtp_tls_cert_file/key_file readable only by root: stock loads them before
    dropping privileges; so must we, or TLS is silently disabled."""
    import shutil

    from postfix_smtp.testing.tlscerts import make_pki
    pki = make_pki(os.path.join(tmp_base, "pki"))
    key = os.path.join(tmp_base, "client.key")
    shutil.copy(pki.key("client"), key)
    os.chmod(key, 0o600)                                     # root only
    peer = SmtpPeer(PeerScript(tls_cert=pki.cert("good"), tls_key=pki.key("good")),
                    max_lifetime=90)
    peer.start()
    inst = PostfixInstance(
        os.path.join(tmp_base, "pf"), relayhost=peer.address, agent=agent_wrapper,
        main_cf={"smtp_tls_security_level": "may", "smtp_tls_loglevel": "1",
                 "smtp_tls_cert_file": pki.cert("client"), "smtp_tls_key_file": key},
        max_lifetime=120)
    try:
        inst.start()
        inst.sendmail(MSG, "a@src.test.invalid", ["b@dest.test.invalid"])
        inst.expect_log(r"postfix/smtp\[\d+\]: \w+: to=<b@dest.*status=sent", timeout=30)
        log = inst.log_lines()
        assert not any("disabling TLS support" in ln for ln in log), log[-20:]
        assert any("TLS connection established to 127.0.0.1[127.0.0.1]" in ln for ln in log)
    finally:
        inst.stop()
        peer.stop()


def test_tls_session_resumed_across_processes(tmp_base, agent_wrapper):
    """smtp_tls_session_cache_database through tlsmgr(8): a second delivery in a
    new process (max_use=1) resumes the first one's TLS session, as stock logs it."""
    from postfix_smtp.testing.tlscerts import make_pki
    pki = make_pki(os.path.join(tmp_base, "pki"))
    peer = SmtpPeer(PeerScript(tls_cert=pki.cert("good"), tls_key=pki.key("good")),
                    max_lifetime=90)
    peer.start()
    inst = PostfixInstance(
        os.path.join(tmp_base, "pf"), relayhost=peer.address, agent=agent_wrapper,
        smtp_args=["-o", "max_use=1"],
        main_cf={"smtp_tls_security_level": "may", "smtp_tls_loglevel": "2",
                 "smtp_tls_session_cache_database": "btree:$data_directory/smtp_scache"},
        max_lifetime=120)
    try:
        inst.start()
        for i, rcpt in enumerate(("b@dest.test.invalid", "c@dest.test.invalid")):
            inst.sendmail(MSG, "a@src.test.invalid", [rcpt])
            inst.expect_log(r"postfix/smtp\[\d+\]: \w+: to=<%s>.*status=sent" % rcpt, timeout=30)
        log = inst.log_lines()
        pids = {ln.split("smtp[")[1].split("]")[0] for ln in log if "status=sent" in ln}
        assert len(pids) == 2, "expected two agent processes"
        assert any("reloaded session" in ln for ln in log), [l for l in log if "smtp[" in l][-15:]
        assert any("Reusing old session" in ln for ln in log)
    finally:
        inst.stop()
        peer.stop()
