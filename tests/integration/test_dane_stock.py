"""DANE through real DNS: TLSA records (AD bit) from the tests' DNS server,
delivery to Postfix's own smtpd with STARTTLS; the stock smtp(8) and this
agent side by side (each in its own mount namespace with a private
/etc/resolv.conf naming only that server).

Scenarios, with ``smtp_dns_support_level = dnssec``:

- ``ok.dane.test``: signed MX and A records, TLSA 3 1 1 of the server key;
- ``bad.dane.test``: the same with a TLSA record that does not match;
- ``none.dane.test``: signed, no TLSA records;
- ``unusable.dane.test``: only a PKIX-TA(0) record (dropped: unusable);
- ``half.dane.test``: unsigned MX RRset, signed MX host with a matching
  TLSA record (``smtp_tls_dane_insecure_mx_policy`` = dane: "half-dane");
- ``insechost.dane.test``: signed MX, unsigned A record (no TLSA lookup);
- ``test.invalid``: MX ``mx.test.invalid`` (the certificate's name), TLSA
  2 1 1 of the issuing intermediate CA (DANE-TA with name checks);

at ``smtp_tls_security_level = dane`` and ``dane-only``.  The two runs must
agree on every outcome (status, DSN, reason text) and on the TLS log lines.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time

import pytest

from postfix_smtp.testing.dnsserver import (DnsTestServer, ResolverPostfixInstance,
                                            free_loopback_address, resolv_conf_text,
                                            tlsa_rdata)
from postfix_smtp.testing.instance import LOOPBACK, PostfixInstance, port_open
from postfix_smtp.testing.tlscerts import SERVER_NAME

SENDER = "alice@src.test.invalid"
MESSAGE = b"Subject: dane test\n\nhello over DANE\n"
DOMAINS = ("ok", "bad", "none", "unusable", "half", "insechost", "ta")
DOMAIN = {d: "%s.dane.test" % d for d in DOMAINS}
DOMAIN["ta"] = SERVER_NAME.split(".", 1)[1]
AGENT_LINE = re.compile(r"postfix/(?:relay/)?smtp\[\d+\]: (.*)$")
TLS_LINE = re.compile(r"TLS connection|verification failed|TLS is required|Server certificate|"
                      r"Cannot start TLS|TLS policy|TLSA|DANE|dnssec|DNSSEC|peername|subject_CN")


@pytest.fixture(scope="module")
def world(pki):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    base = tempfile.mkdtemp(prefix="pfsmtp-dane-rcv-", dir="/tmp")
    os.chmod(base, 0o755)
    rcv = PostfixInstance(base, relayhost="[127.0.0.1]:9", myhostname=SERVER_NAME,
                          main_cf={"smtpd_tls_security_level": "may",
                                   "smtpd_tls_cert_file": pki.cert("good"),
                                   "smtpd_tls_key_file": pki.key("good"),
                                   "defer_transports": "smtp relay"},
                          max_lifetime=900, quick_start=True)
    rcv.start()
    port = rcv.smtpd_port
    end = time.monotonic() + 15
    while time.monotonic() < end and not port_open(port):
        time.sleep(0.1)
    ns = free_loopback_address()
    srv = DnsTestServer(host=ns, port=53, max_lifetime=900).start()
    srv.add(".", "NS", "ns.dane.test.")              # the dnssec_probe (ns:.)
    srv.secure(".")
    good = tlsa_rdata(pki.cert("good"), 3, 1, 1)
    for d in DOMAINS:
        dom = DOMAIN[d]
        mx = "mx." + dom
        srv.add(dom, "MX", "10 %s." % mx)
        srv.add(mx, "A", LOOPBACK)
        if d != "half":
            srv.secure(dom)
        if d != "insechost":
            srv.secure(mx)
    srv.add_tlsa("mx.ok.dane.test", port, good)
    srv.add_tlsa("mx.half.dane.test", port, good)
    srv.add_tlsa("mx.insechost.dane.test", port, good)
    srv.add_tlsa(SERVER_NAME, port, tlsa_rdata(pki.cert("good"), 2, 1, 1, index=1))
    srv.add_tlsa("mx.bad.dane.test", port, "3 1 1 " + "00" * 32)
    srv.add_tlsa("mx.unusable.dane.test", port, good.replace("3 ", "0 ", 1))
    yield srv, ns, port
    srv.stop()
    rcv.stop()
    shutil.rmtree(base, ignore_errors=True)


def run(tmp_base, tag, agent, ns, port, level, loglevel="1"):
    cf = {"minimal_backoff_time": "300s", "maximal_backoff_time": "300s",
          "smtp_tcp_port": str(port), "smtp_connect_timeout": "5s",
          "delay_warning_time": "0", "smtp_dns_support_level": "dnssec",
          "smtp_tls_security_level": level, "smtp_tls_loglevel": loglevel}
    base = os.path.join(tmp_base, "%s-%s-%s" % (level, loglevel, tag))
    os.makedirs(base, mode=0o755)
    inst = ResolverPostfixInstance(base, agent=agent, main_cf=cf, max_lifetime=300,
                                   myhostname="sender.test.invalid",
                                   resolv_conf=resolv_conf_text([ns], 1, 2))
    try:
        inst.start()
        rcpts = ["user@%s" % DOMAIN[d] for d in DOMAINS]
        for r in rcpts:
            inst.sendmail(MESSAGE, SENDER, [r])
        for r in rcpts:
            inst.expect_log(r"to=<%s>, .*status=" % re.escape(r), timeout=60)
        time.sleep(0.3)
        return inst.log_lines()
    finally:
        inst.stop()


def per_domain(lines, port):
    """{domain: [interesting agent lines in order]} (QIDs, delays and pids cut)."""
    out = {d: [] for d in DOMAINS}
    other = []
    for ln in lines:
        m = AGENT_LINE.search(ln)
        if not m:
            continue
        text = m.group(1)
        text = re.sub(r"^[0-9A-F]{6,}: ", "", text)
        text = re.sub(r"delay=[\d.]+, delays=[\d./]+, ", "", text)
        text = re.sub(r"queued as [0-9A-Za-z]+", "queued as QID", text)
        text = text.replace(":%d" % port, ":PORT").replace("_%d._tcp" % port, "_PORT._tcp")
        if not (text.startswith("to=<") or TLS_LINE.search(text)):
            continue
        for d in DOMAINS:
            if ".%s" % DOMAIN[d] in text or "@%s" % DOMAIN[d] in text:
                out[d].append(text)
                break
        else:
            other.append(text)
    out["other"] = other
    return out


def _both(world, tmp_base, agent_wrapper, level, loglevel="1"):
    srv, ns, port = world
    ours = per_domain(run(tmp_base, "agent", agent_wrapper, ns, port, level, loglevel), port)
    stock = per_domain(run(tmp_base, "stock", None, ns, port, level, loglevel), port)
    for d in list(DOMAINS) + ["other"]:
        assert ours[d] == stock[d], "%s\nours:  %s\nstock: %s" % (
            d, "\n       ".join(ours[d]), "\n       ".join(stock[d]))
    return ours


def test_dane_matches_stock(world, tmp_base, agent_wrapper):
    out = _both(world, tmp_base, agent_wrapper, "dane")
    assert any(ln.startswith("Verified TLS connection established to mx.ok.dane.test")
               for ln in out["ok"]), out["ok"]
    assert any("status=sent" in ln for ln in out["ok"]), out
    assert any("Server certificate not verified" in ln for ln in out["bad"]), out["bad"]
    assert any("status=sent" in ln for ln in out["none"])          # dane -> may
    assert any("status=sent" in ln for ln in out["unusable"])      # dane -> encrypt
    assert any(ln.startswith("Trusted TLS connection established to mx.half")
               for ln in out["half"]), out["half"]                    # half-dane
    assert any(ln.startswith("Untrusted TLS") for ln in out["insechost"]), out["insechost"]
    assert any(ln.startswith("Verified TLS connection established to " + SERVER_NAME)
               for ln in out["ta"]), out["ta"]


def test_dane_only_matches_stock(world, tmp_base, agent_wrapper):
    out = _both(world, tmp_base, agent_wrapper, "dane-only")
    assert any("status=sent" in ln for ln in out["ok"]), out["ok"]
    assert any("no TLSA records found" in ln and "status=deferred" in ln
               for ln in out["none"]), out["none"]
    assert any("TLSA records unusable" in ln for ln in out["unusable"]), out["unusable"]


def test_dane_loglevel_2_matches_stock(world, tmp_base, agent_wrapper):
    """The "Matched DANE ..." and "matched peername" lines."""
    out = _both(world, tmp_base, agent_wrapper, "dane", "2")
    assert any("Matched DANE EE certificate at depth 0: 3 1 1 " in ln
               for ln in out["ok"]), out["ok"]
    assert any("Matched DANE TA certificate at depth 1: 2 1 1 " in ln
               for ln in out["ta"]), out["ta"]
