"""TLS parameters that no other test would notice being ignored, stock smtp(8)
vs this agent.

Most scenarios share one sending Postfix instance per agent: each scenario is
a master.cf service of its own (``-o`` overrides, ``syslog_name =
postfix/<scenario>``) reached through transport_maps by the recipient domain
``<scenario>.test.invalid``, and one message with one recipient per scenario
goes out, so all scenarios run at once.  Each scenario has its own scriptable
peer, a :class:`RecordingPeer`: it asks for a client certificate and records
the one the client presented, the protocol and the cipher.  The stock run
and ours must agree on each scenario's log lines (queue ids, ports, delays
masked) and on what the peer saw; then each test states what the parameter
must have changed compared with its default, so it fails when the parameter
is ignored.

Groups with instances of their own: the TLS session cache (tlsmgr(8) reads
the timeout, so it is a main.cf setting), and a DNS/DANE world for
``smtp_tls_force_insecure_host_tlsa_lookup``.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import pytest

from postfix_smtp.testing.instance import PostfixInstance
from postfix_smtp.testing.peer import PeerScript, SmtpPeer
from postfix_smtp.testing.tlscerts import SERVER_NAME, fingerprint, make_pki

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SENDER = "alice@src.test.invalid"
MESSAGE = b"Subject: tls params\n\nhello\n"
SVC_LINE = re.compile(r"postfix/([a-z0-9-]+)/smtp\[(\d+)\]: (.*)$")
SMTP_LINE = re.compile(r"postfix/smtp\[(\d+)\]: (.*)$")
TO_LINE = re.compile(r"^(?:[0-9A-F]{6,}: )?to=<")


# ---------------------------------------------------------------------------
# certificates: the shared test PKI, client certificates of every key type,
# a server chain with two intermediates, a hashed CA directory


@dataclass
class Certs:
    pki: object
    directory: str
    client: Dict[str, tuple] = field(default_factory=dict)   # kind -> (cert, key)
    deep: tuple = ()                       # (chain, key): leaf, two intermediates
    capath: str = ""

    def fp(self, kind: str) -> str:
        return fingerprint(self.client[kind][0])


def _write_pem(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o644)
    return path


def _extra_certs(pki, directory: str):
    """RSA, ECDSA and DSA client certificates issued by the test root CA, and
    a server certificate for SERVER_NAME under two intermediate CAs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = x509.load_pem_x509_certificate(open(pki.ca, "rb").read())
    ca_key = serialization.load_pem_private_key(open(pki.ca_key, "rb").read(), None)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def build(subject, issuer, pub, signer, ca_cert=False, eku=None, sans=None):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(pub).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(days=1))
             .not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca_cert, path_length=None),
                            critical=True))
        if ca_cert:
            b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True,
                                              False, False), critical=True)
        if eku:
            b = b.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]),
                                critical=False)
        return b.sign(signer, hashes.SHA256())

    def pem(c):
        return c.public_bytes(serialization.Encoding.PEM)

    def kpem(k):
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    client = {}
    keys = {"rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec": ec.generate_private_key(ec.SECP256R1()),
            "dsa": dsa.generate_private_key(key_size=2048)}
    for kind, k in keys.items():
        c = build(name("%s-client.test.invalid" % kind), ca.subject, k.public_key(), ca_key,
                  eku=ExtendedKeyUsageOID.CLIENT_AUTH)
        client[kind] = (_write_pem(os.path.join(directory, "%s-client.pem" % kind), pem(c)),
                        _write_pem(os.path.join(directory, "%s-client.key" % kind), kpem(k)))
    # the intermediate-issued client certificate of the shared PKI, as a chain
    # file (key, certificate, intermediate): the peer, which trusts only the
    # root, accepts it only when the intermediate is sent along
    client["chain"] = (pki.cert("client"), pki.key("client"))
    ka, kb, kl = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
                  for _ in range(3))
    ia = build(name("Deep CA A"), ca.subject, ka.public_key(), ca_key, ca_cert=True)
    ib = build(name("Deep CA B"), ia.subject, kb.public_key(), ka, ca_cert=True)
    leaf = build(name(SERVER_NAME), ib.subject, kl.public_key(), kb,
                 eku=ExtendedKeyUsageOID.SERVER_AUTH, sans=[SERVER_NAME])
    deep = (_write_pem(os.path.join(directory, "deep.pem"), pem(leaf) + pem(ib) + pem(ia)),
            _write_pem(os.path.join(directory, "deep.key"), kpem(kl)))
    return client, deep


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="pfsmtp-tlsp-pki-", dir="/tmp")
    os.chmod(d, 0o755)
    pki = make_pki(d)
    client, deep = _extra_certs(pki, d)
    c = Certs(pki, d, client, deep)
    # an OpenSSL hashed directory ("openssl rehash") holding only the root CA
    c.capath = os.path.join(d, "capath")
    os.mkdir(c.capath)
    os.chmod(c.capath, 0o755)
    shutil.copy(pki.ca, os.path.join(c.capath, "root.pem"))
    os.chmod(os.path.join(c.capath, "root.pem"), 0o644)
    subprocess.run(["openssl", "rehash", c.capath], check=True, timeout=30,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert any(re.match(r"^[0-9a-f]{8}\.0$", n) for n in os.listdir(c.capath))
    yield c
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------
# peers


def _der_fingerprint(der: bytes) -> str:
    return ":".join("%02X" % b for b in hashlib.sha256(der).digest())


class RecordingPeer(SmtpPeer):
    """SmtpPeer that also records the client certificate (``tls["client_cert"]``:
    its SHA-256 fingerprint, or None when the client sent none)."""

    def _start_tls(self, c, session) -> None:
        super()._start_tls(c, session)
        der = c.sock.getpeercert(binary_form=True)
        session.tls["client_cert"] = _der_fingerprint(der) if der else None


class EarlyMailReplyPeer(RecordingPeer):
    """Inside TLS, sends the reply to MAIL FROM right after its EHLO reply,
    before the client sent MAIL (the CVE-2009-3555 pattern that
    smtp_tls_block_early_mail_reply is about); MAIL then gets no reply of its
    own, so the dialog stays in step."""

    def _reply(self, c, session, stage, line, spec):
        if stage == "ehlo" and session.tls is not None:
            text = super()._reply(c, session, stage, line, spec)
            c.send(b"250 2.1.0 Ok\r\n")
            session.early_mail_reply = True
            return text
        if stage == "mail" and getattr(session, "early_mail_reply", False):
            session.early_mail_reply = False
            return "250 2.1.0 Ok"           # sent already
        return super()._reply(c, session, stage, line, spec)


def server_context(certs: Certs, chain: tuple = ()) -> ssl.SSLContext:
    """The peers' side: the good server certificate (with its intermediate)
    unless ``chain`` (cert file, key file) says otherwise; asks for a client
    certificate (verified against the root CA); every cipher OpenSSL has,
    server preference (so the client's cipher list decides what changes)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert, key = chain or (certs.pki.cert("good"), certs.pki.key("good"))
    ctx.load_cert_chain(cert, key)
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(certs.pki.ca)
    return ctx


def _peer_factory(certs: Certs, cls=RecordingPeer, plain: bool = False, chain: tuple = (),
                  **script_kw):
    def make():
        kw = dict(script_kw)
        if not plain:
            kw["tls_context"] = server_context(certs, chain)
        return cls(PeerScript(**kw), max_lifetime=240)
    return make


# ---------------------------------------------------------------------------
# the harness: one instance, one master.cf service per scenario


@dataclass
class Scen:
    name: str                              # service name, syslog name, domain label
    cf: Dict[str, str]                     # -o overrides
    peer: Optional[Callable[[], SmtpPeer]] = None   # None: no peer (nexthop given)
    nexthop: str = ""                      # when peer is None: the transport's nexthop
    lines: int = 1                         # "to=<" lines to wait for


@dataclass
class Result:
    lines: List[str]                       # this scenario's log lines (text after "]: ")
    norm: List[str]                        # the same, normalised
    sessions: list

    @property
    def tls(self) -> list:
        return [s.tls for s in self.sessions]

    def has(self, text: str) -> bool:
        return any(text in ln for ln in self.lines)

    def status(self) -> List[str]:
        return [re.search(r" status=(\w+)", ln).group(1) for ln in self.lines
                if TO_LINE.match(ln)]


def _o(name: str, value: str) -> str:
    if any(c.isspace() for c in value) or not value:
        return "-o { %s=%s }" % (name, value)
    return "-o %s=%s" % (name, value)


def normalise(lines: List[str], ports) -> List[str]:
    out = []
    for ln in lines:
        ln = re.sub(r"^[0-9A-F]{6,}: ", "QID: ", ln)
        for p in ports:
            ln = ln.replace(":%d" % p, ":PORT").replace("_%d._tcp" % p, "_PORT._tcp")
        ln = re.sub(r"delay=[\d.]+, delays=[\d./]+", "delay=D", ln)
        ln = re.sub(r"queued as [0-9A-Za-z]+", "queued as QID", ln)
        ln = re.sub(r"TLS library problem: .*", "TLS library problem: ...", ln)
        ln = re.sub(r"(SSL_connect error to [^:]+:PORT): -?\d+$", r"\1: N", ln)
        ln = re.sub(r"&&[0-9A-F]{32,}", "&&DIGEST", ln)      # session cache keys
        out.append(ln)
    return out


def _split(log: List[str]) -> Dict[str, list]:
    out: Dict[str, list] = {}
    for ln in log:
        m = SVC_LINE.search(ln)
        if m:
            out.setdefault(m.group(1), []).append(m.group(3))
    return out


def _count_to(lines) -> int:
    return sum(1 for ln in lines if TO_LINE.match(ln))


def run_group(base: str, agent, scens: List[Scen], main_cf: Dict[str, str],
              instance_cls=PostfixInstance, instance_kw=None, timeout: float = 90,
              ports=()) -> Dict[str, Result]:
    """Every scenario at once through one instance; {name: Result}.  A
    scenario without its delivery line(s) after ``timeout`` has whatever
    was logged (the tests check the lines)."""
    os.makedirs(base, mode=0o755, exist_ok=True)
    peers = {}
    for s in scens:
        if s.peer is not None:
            peers[s.name] = s.peer()
            peers[s.name].start()
    transport = os.path.join(base, "transport")
    with open(transport, "w") as f:
        for s in scens:
            hop = peers[s.name].address if s.name in peers else s.nexthop
            f.write("%s.test.invalid %s:%s\n" % (s.name, s.name, hop))
    os.chmod(transport, 0o644)
    cf = {"minimal_backoff_time": "300s", "maximal_backoff_time": "300s",
          "smtp_tls_loglevel": "1", "transport_maps": "texthash:" + transport}
    cf.update(main_cf)
    inst = instance_cls(os.path.join(base, "pf"), relayhost="[127.0.0.1]:9", agent=agent,
                        main_cf=cf, myhostname="sender.test.invalid", max_lifetime=300,
                        quick_start=True, **(instance_kw or {}))
    try:
        inst.start()
        with open(os.path.join(inst.config_dir, "master.cf"), "a") as f:
            for s in scens:
                opts = [_o("syslog_name", "postfix/" + s.name)]
                opts += [_o(k, v) for k, v in s.cf.items()]
                f.write("%s unix - - n - - %s\n  %s\n" % (s.name, inst.smtp_command,
                                                          "\n  ".join(opts)))
        inst.reload()
        end = time.monotonic() + 20
        socks = [os.path.join(inst.queue_dir, "private", s.name) for s in scens]
        while time.monotonic() < end and not all(os.path.exists(p) for p in socks):
            time.sleep(0.05)
        inst.sendmail(MESSAGE, SENDER, ["bob@%s.test.invalid" % s.name for s in scens])
        end = time.monotonic() + timeout
        while True:
            got = _split(inst.log_lines())
            if all(_count_to(got.get(s.name, [])) >= s.lines for s in scens) \
                    or time.monotonic() > end:
                break
            time.sleep(0.1)
        time.sleep(0.5)               # the agents' QUIT
        got = _split(inst.log_lines())
    finally:
        inst.stop()
        for p in peers.values():
            p.stop()
    ports = list(ports) + [p.port for p in peers.values()]
    return {s.name: Result(got.get(s.name, []), normalise(got.get(s.name, []), ports),
                           peers[s.name].sessions if s.name in peers else [])
            for s in scens}


@pytest.fixture(scope="module")
def workdir():
    d = tempfile.mkdtemp(prefix="pfsmtp-tlsp-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    if not os.environ.get("POSTFIX_SMTP_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)


def diff_text(ours: Result, stock: Result) -> str:
    return "\nours:  %s\nstock: %s" % ("\n       ".join(ours.norm), "\n       ".join(stock.norm))


def cf(*dicts, **kw) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for d in dicts:
        out.update(d)
    out.update(kw)
    return out


# ---------------------------------------------------------------------------
# the big group: scripted peers

TLS12 = {"smtp_tls_protocols": "<=TLSv1.2"}
MTLS12 = {"smtp_tls_mandatory_protocols": "<=TLSv1.2"}
MAY = {"smtp_tls_security_level": "may"}
ENC = {"smtp_tls_security_level": "encrypt"}
VERIFY = {"smtp_tls_security_level": "verify", "smtp_tls_verify_cert_match": SERVER_NAME}
DEFAULT12 = "ECDHE-RSA-AES256-GCM-SHA384"      # the peer's choice at TLS 1.2, default lists


def peer_scenarios(certs: Certs, per_site_table: str) -> List[Scen]:
    pki = certs.pki
    cl = certs.client
    tls = _peer_factory(certs)
    deep = _peer_factory(certs, chain=certs.deep)
    return [
        # smtp_starttls_timeout: the peer says 220 to STARTTLS, then nothing
        Scen("starttls-timeout", cf(ENC, smtp_starttls_timeout="2s"),
             _peer_factory(certs, tls_after_starttls="hang")),
        # client certificates (the peer records the one presented)
        Scen("cc-none", cf(MAY), tls),
        Scen("cc-rsa", cf(MAY, smtp_tls_cert_file=cl["rsa"][0],
                          smtp_tls_key_file=cl["rsa"][1]), tls),
        Scen("cc-ec", cf(MAY, smtp_tls_eccert_file=cl["ec"][0],
                         smtp_tls_eckey_file=cl["ec"][1]), tls),
        Scen("cc-rsa-ec", cf(MAY, smtp_tls_cert_file=cl["rsa"][0],
                             smtp_tls_key_file=cl["rsa"][1],
                             smtp_tls_eccert_file=cl["ec"][0],
                             smtp_tls_eckey_file=cl["ec"][1]), tls),
        # DSA: TLS 1.3 has no DSA signatures; OpenSSL 3.0 still signs with it in 1.2
        Scen("cc-dsa", cf(MAY, TLS12, smtp_tls_dcert_file=cl["dsa"][0],
                          smtp_tls_dkey_file=cl["dsa"][1]), tls),
        Scen("cc-chain", cf(MAY, smtp_tls_chain_files=pki.chain_file("client")), tls),
        Scen("cc-badkey", cf(MAY, smtp_tls_cert_file=cl["rsa"][0],
                             smtp_tls_key_file=cl["ec"][1]), tls),
        # server certificate verification
        Scen("capath", cf(VERIFY, smtp_tls_CApath=certs.capath), tls),
        Scen("ta-file", {"smtp_tls_security_level": "secure",
                         "smtp_tls_secure_cert_match": SERVER_NAME,
                         "smtp_tls_trust_anchor_file": pki.intermediate}, tls),
        Scen("depth-0", cf(VERIFY, smtp_tls_CAfile=pki.ca, smtp_tls_scert_verifydepth="0"),
             deep),
        Scen("depth-1", cf(VERIFY, smtp_tls_CAfile=pki.ca, smtp_tls_scert_verifydepth="1"),
             deep),
        Scen("fp-sha1", {"smtp_tls_security_level": "fingerprint",
                         "smtp_tls_fingerprint_digest": "sha1",
                         "smtp_tls_fingerprint_cert_match":
                             fingerprint(pki.cert("good"), "sha1")}, tls),
        # protocols
        Scen("proto-default", cf(MAY), tls),
        Scen("proto-may", cf(MAY, TLS12), tls),
        Scen("proto-may-mand", cf(MAY, MTLS12), tls),
        Scen("proto-enc-mand", cf(ENC, MTLS12), tls),
        Scen("proto-enc-opp", cf(ENC, TLS12), tls),
        # ciphers (at TLS 1.2: cipher lists do not choose TLS 1.3 suites)
        Scen("ciph-default12", cf(MAY, TLS12), tls),
        Scen("ciph-may-low", cf(MAY, TLS12, smtp_tls_ciphers="low",
                                tls_low_cipherlist="ECDHE-RSA-AES128-SHA"), tls),
        Scen("ciph-may-medium", cf(MAY, TLS12,
                                   tls_medium_cipherlist="ECDHE-RSA-CHACHA20-POLY1305"), tls),
        Scen("ciph-may-export", cf(MAY, TLS12, smtp_tls_ciphers="export",
                                   tls_export_cipherlist="ECDHE-RSA-AES128-SHA256"), tls),
        Scen("ciph-may-mand", cf(MAY, TLS12, smtp_tls_mandatory_ciphers="high",
                                 tls_high_cipherlist="AES256-SHA"), tls),
        Scen("ciph-enc-high", cf(ENC, MTLS12, smtp_tls_mandatory_ciphers="high",
                                 tls_high_cipherlist="AES256-SHA"), tls),
        Scen("excl-may", cf(MAY, TLS12, smtp_tls_exclude_ciphers="AESGCM"), tls),
        Scen("excl-may-mand", cf(MAY, TLS12, smtp_tls_mandatory_exclude_ciphers="AESGCM"), tls),
        Scen("excl-enc-mand", cf(ENC, MTLS12, smtp_tls_mandatory_exclude_ciphers="AESGCM"), tls),
        Scen("excl-enc-both", cf(ENC, MTLS12, smtp_tls_exclude_ciphers="CHACHA20",
                                 smtp_tls_mandatory_exclude_ciphers="AESGCM"), tls),
        Scen("cipherlist", cf(ENC, MTLS12, smtp_tls_cipherlist="AES256-SHA"), tls),
        # STARTTLS offered, TLS off
        Scen("note-offer", {"smtp_tls_note_starttls_offer": "yes"}, tls),
        Scen("note-offer-default", {}, tls),
        # per-site table: MUST_NOPEERMATCH for a peer without STARTTLS
        Scen("per-site", {"smtp_tls_per_site": "texthash:" + per_site_table},
             _peer_factory(certs, plain=True)),
        # an early MAIL reply inside TLS
        Scen("early-mail", cf(MAY, smtp_tls_block_early_mail_reply="yes"),
             _peer_factory(certs, EarlyMailReplyPeer)),
    ]


@pytest.fixture(scope="module")
def group(certs, tls_agent, workdir):
    """(ours, stock): {scenario: Result} of both runs."""
    per_site = os.path.join(workdir, "per_site")
    with open(per_site, "w") as f:
        f.write("127.0.0.1 MUST_NOPEERMATCH\n")        # key: the nexthop domain
    os.chmod(per_site, 0o644)
    scens = peer_scenarios(certs, per_site)
    ours = run_group(os.path.join(workdir, "agent"), tls_agent, scens, {})
    stock = run_group(os.path.join(workdir, "stock"), None, scens, {})
    return ours, stock


def same(group, name, drop=None) -> tuple:
    """Both runs of a scenario: each has its delivery line; same normalised
    log lines (``drop``: a regex for lines left out of the comparison)."""
    ours, stock = group[0][name], group[1][name]
    for who, r in (("ours", ours), ("stock", stock)):
        assert _count_to(r.lines) >= 1, "%s: no delivery line for %s%s" % (
            who, name, diff_text(ours, stock))
    a, b = ours.norm, stock.norm
    if drop:
        a = [ln for ln in a if not re.search(drop, ln)]
        b = [ln for ln in b if not re.search(drop, ln)]
    assert a == b, name + diff_text(ours, stock)
    return ours, stock


def peer_tls(r: Result) -> dict:
    assert len(r.sessions) == 1 and r.sessions[0].tls, (r.sessions, r.lines)
    return r.sessions[0].tls


def test_starttls_timeout(group):
    """smtp_starttls_timeout=2s: a peer that says 220 to STARTTLS and then
    nothing gets the handshake timeout's deferral within seconds (with the
    default, 300 s, run_group's 90 s wait would end without a delivery line)."""
    ours, stock = same(group, "starttls-timeout")
    assert ours.has("SSL_connect error to 127.0.0.1[127.0.0.1]:")
    assert ours.status() == ["deferred"] and ours.has("Cannot start TLS: handshake failure")
    for r in (ours, stock):
        assert r.sessions[0].commands[-1] == "STARTTLS" and r.sessions[0].tls is None


def test_client_cert_and_key_files(group, certs):
    """smtp_tls_cert_file/key_file: the peer, which asks for a client
    certificate, gets exactly that one (none without them)."""
    for name, want in (("cc-none", None), ("cc-rsa", certs.fp("rsa"))):
        ours, stock = same(group, name)
        assert peer_tls(ours)["client_cert"] == peer_tls(stock)["client_cert"] == want, name
        assert ours.status() == ["sent"]


def test_ec_client_cert_files(group, certs):
    """smtp_tls_eccert_file/eckey_file alone, and next to an RSA pair: the
    ECDSA certificate is presented (OpenSSL's choice for this peer's
    signature algorithms, stock's too)."""
    for name in ("cc-ec", "cc-rsa-ec"):
        ours, stock = same(group, name)
        assert peer_tls(ours)["client_cert"] == peer_tls(stock)["client_cert"] \
            == certs.fp("ec"), name
        assert ours.has("client-signature ECDSA (prime256v1)")


def test_dsa_client_cert_files(group, certs):
    """smtp_tls_dcert_file/dkey_file: OpenSSL 3.0 still loads a DSA pair and
    signs with it at TLS 1.2; stock and this agent both present it."""
    ours, stock = same(group, "cc-dsa")
    assert peer_tls(ours)["client_cert"] == peer_tls(stock)["client_cert"] == certs.fp("dsa")
    assert peer_tls(ours)["version"] == "TLSv1.2"


def test_chain_files(group, certs):
    """smtp_tls_chain_files (key, certificate, intermediate in one file): the
    peer trusts only the root, so it verified the chain the client sent."""
    ours, stock = same(group, "cc-chain")
    assert peer_tls(ours)["client_cert"] == peer_tls(stock)["client_cert"] == certs.fp("chain")


def test_mismatched_client_key_disables_tls(group):
    """A key that does not belong to smtp_tls_cert_file: TLS support off for
    the process ("disabling TLS support"), so at level may the mail goes
    out in plaintext, as with stock."""
    ours, stock = group[0]["cc-badkey"], group[1]["cc-badkey"]
    for r in (ours, stock):
        assert r.status() == ["sent"], diff_text(ours, stock)
        assert r.sessions[0].tls is None and "STARTTLS" not in r.sessions[0].commands
        assert any(re.search(r"^warning: RSA private key in \S+ does not match public key in "
                             r"\S+: disabling TLS support$", ln) for ln in r.lines), r.lines


def test_mismatched_client_key_logged_as_stock(group):
    same(group, "cc-badkey")


def test_capath(group):
    """smtp_tls_CApath (a hashed directory with the root CA, no CAfile):
    "Verified" at level verify; without it there would be no trust anchor
    and the delivery would be deferred ("Server certificate not trusted")."""
    ours, stock = same(group, "capath")
    assert ours.lines[0].startswith("Verified TLS connection established")
    assert ours.status() == ["sent"]


def test_trust_anchor_file(group):
    """smtp_tls_trust_anchor_file = the intermediate CA, level secure, no
    CAfile: verified through the trust anchor; without it, deferred."""
    ours, stock = same(group, "ta-file")
    assert ours.lines[0].startswith("Verified TLS connection established")
    assert ours.status() == ["sent"]


def test_scert_verifydepth(group):
    """smtp_tls_scert_verifydepth with a chain of leaf, two intermediates and
    the root: depth 0 is too short (deferred), depth 1 enough (the default,
    9, too: the verification would succeed if the parameter were ignored)."""
    ours, stock = same(group, "depth-0")
    assert ours.status() == ["deferred"]
    assert ours.has("certificate verification failed for 127.0.0.1[127.0.0.1]:")
    assert ours.has(": certificate chain longer than limit(1)")
    assert ours.has("Server certificate not verified")
    ours, stock = same(group, "depth-1")
    assert ours.lines[0].startswith("Verified TLS connection established")
    assert ours.status() == ["sent"]


def test_fingerprint_digest(group):
    """smtp_tls_fingerprint_digest=sha1 with the certificate's SHA-1
    fingerprint at level fingerprint: verified (with sha256 it would not
    match and the delivery would be deferred)."""
    ours, stock = same(group, "fp-sha1")
    assert ours.lines[0].startswith("Verified TLS connection established")
    assert ours.status() == ["sent"]


def test_protocols(group):
    """smtp_tls_protocols applies at may, smtp_tls_mandatory_protocols at
    encrypt; each only there.  The default is TLS 1.3 with this peer."""
    expect = {"proto-default": "TLSv1.3", "proto-may": "TLSv1.2", "proto-may-mand": "TLSv1.3",
              "proto-enc-mand": "TLSv1.2", "proto-enc-opp": "TLSv1.3"}
    for name, version in expect.items():
        ours, stock = same(group, name)
        assert peer_tls(ours)["version"] == peer_tls(stock)["version"] == version, name
        assert ours.status() == ["sent"], name


def test_ciphers_and_grade_cipherlists(group):
    """smtp_tls_ciphers (may) and smtp_tls_mandatory_ciphers (encrypt) pick a
    grade, whose tls_<grade>_cipherlist is the cipher list: with the
    defaults the peer (server preference) chooses DEFAULT12."""
    expect = {"ciph-default12": DEFAULT12,
              "ciph-may-low": "ECDHE-RSA-AES128-SHA",
              "ciph-may-medium": "ECDHE-RSA-CHACHA20-POLY1305",
              "ciph-may-export": "ECDHE-RSA-AES128-SHA256",
              "ciph-may-mand": DEFAULT12,              # the mandatory grade is not used at may
              "ciph-enc-high": "AES256-SHA"}
    for name, cipher in expect.items():
        ours, stock = same(group, name)
        assert peer_tls(ours)["cipher"] == peer_tls(stock)["cipher"] == cipher, name
        assert peer_tls(ours)["version"] == "TLSv1.2"


def test_exclude_ciphers(group):
    """smtp_tls_exclude_ciphers applies at every level,
    smtp_tls_mandatory_exclude_ciphers at mandatory levels only."""
    expect = {"excl-may": "ECDHE-RSA-CHACHA20-POLY1305",
              "excl-may-mand": DEFAULT12,
              "excl-enc-mand": "ECDHE-RSA-CHACHA20-POLY1305"}
    for name, cipher in expect.items():
        ours, stock = same(group, name)
        assert peer_tls(ours)["cipher"] == peer_tls(stock)["cipher"] == cipher, name
    ours, stock = same(group, "excl-enc-both")
    got = peer_tls(ours)["cipher"]
    assert got == peer_tls(stock)["cipher"]
    # both lists apply: neither AES-GCM nor ChaCha20 (what each alone leaves)
    assert "CHACHA20" not in got and not re.search(r"AES(128|256)-GCM", got), got


def test_retired_cipherlist_warns_and_changes_nothing(group):
    """smtp_tls_cipherlist (Postfix < 2.3; stock 3.7 ignores it silently):
    this agent warns once, naming the replacement, and negotiates exactly
    what stock does (not the AES256-SHA the value asks for)."""
    warning = ("warning: smtp_tls_cipherlist: obsolete parameter; "
               "use smtp_tls_mandatory_ciphers instead")
    ours, stock = same(group, "cipherlist", drop=re.escape(warning))
    assert ours.lines.count(warning) == 1, ours.lines
    assert not stock.has("smtp_tls_cipherlist")
    assert peer_tls(ours)["cipher"] == peer_tls(stock)["cipher"] == DEFAULT12


def test_note_starttls_offer(group):
    """smtp_tls_note_starttls_offer=yes at level none: "Host offered
    STARTTLS: [127.0.0.1]"; not by default."""
    ours, stock = same(group, "note-offer")
    assert "Host offered STARTTLS: [127.0.0.1]" in ours.lines
    ours, stock = same(group, "note-offer-default")
    assert not ours.has("offered STARTTLS")
    for name in ("note-offer", "note-offer-default"):
        for r in (group[0][name], group[1][name]):
            assert r.sessions[0].tls is None and r.status() == ["sent"]


def test_per_site(group):
    """smtp_tls_per_site with "127.0.0.1 MUST_NOPEERMATCH" (level none
    otherwise): a peer without STARTTLS gets stock's deferral."""
    ours, stock = same(group, "per-site")
    assert ours.status() == ["deferred"]
    assert ours.has("dsn=4.7.4, status=deferred (TLS is required, but was not offered by host "
                    "127.0.0.1[127.0.0.1])")


def test_block_early_mail_reply_is_a_no_op_as_in_stock(group):
    """smtp_tls_block_early_mail_reply=yes and a peer whose MAIL reply
    arrives inside TLS before MAIL was sent: stock 3.7 does not object
    (its check runs only while the STARTTLS flag is set, which smtp(8)
    clears before MAIL), so the mail is delivered; this agent does the same.
    The peer really sent the early reply: it is in its transcript before
    the client's MAIL FROM."""
    ours, stock = same(group, "early-mail")
    for r in (ours, stock):
        assert r.status() == ["sent"]
        assert not r.has("violates") and not r.has("unexpected server message")
        s = r.sessions[0]
        assert s.tls and len(s.messages) == 1
        order = [d for d, data in s.transcript
                 if (d == "S" and data == b"250 2.1.0 Ok\r\n") or
                 (d == "C" and data.startswith(b"MAIL FROM:"))]
        assert order[:2] == ["S", "C"], s.transcript


# ---------------------------------------------------------------------------
# the TLS session cache: smtp_tls_session_cache_timeout (read by tlsmgr)

def run_sequential(base: str, agent, certs: Certs, main_cf: Dict[str, str],
                   count: int = 2) -> List[str]:
    """``count`` messages one after another, each by a new process
    (max_use=1); the agents' log lines, normalised."""
    os.makedirs(base, mode=0o755, exist_ok=True)
    peer = RecordingPeer(PeerScript(tls_context=server_context(certs)), max_lifetime=120)
    peer.start()
    cf = {"minimal_backoff_time": "300s", "maximal_backoff_time": "300s",
          "smtp_tls_security_level": "may", "smtp_tls_loglevel": "2",
          "smtp_tls_session_cache_database": "btree:$data_directory/smtp_scache"}
    cf.update(main_cf)
    inst = PostfixInstance(base, relayhost=peer.address, agent=agent, main_cf=cf,
                           smtp_args=["-o", "max_use=1"], myhostname="sender.test.invalid",
                           max_lifetime=180, quick_start=True)
    try:
        inst.start()
        for i in range(count):
            rcpt = "r%d@dest.test.invalid" % i
            inst.sendmail(MESSAGE, SENDER, [rcpt])
            inst.expect_log(r"postfix/smtp\[\d+\]: \w+: to=<%s>" % rcpt, timeout=40)
            time.sleep(0.3)
        lines = []
        for ln in inst.log_lines():
            m = SMTP_LINE.search(ln)
            if m:
                lines.append(m.group(2))
        return normalise(lines, [peer.port])
    finally:
        inst.stop()
        peer.stop()


@pytest.fixture(scope="module")
def cache_runs(certs, tls_agent, workdir):
    """{timeout: (ours, stock)} for smtp_tls_session_cache_timeout 0 and the
    default (the control: resumption happens)."""
    out = {}
    for label, extra in (("0", {"smtp_tls_session_cache_timeout": "0"}), ("default", {})):
        out[label] = tuple(run_sequential(os.path.join(workdir, "cache-%s-%s" % (label, who)),
                                          agent, certs, extra)
                           for who, agent in (("agent", tls_agent), ("stock", None)))
    return out


def test_session_cache_timeout_zero_disables_resumption(cache_runs):
    """smtp_tls_session_cache_timeout=0: tlsmgr(8) opens no cache and
    reports the client cache as not cachable; neither agent looks for a
    session, both do two full handshakes.  Compared at smtp_tls_loglevel 2
    (handshake state lines left out), so a cache lookup stock does not make
    would show.  The control, with the default timeout, resumes.  (The
    TLS engine's start-up line is left out too: not about the cache.)"""
    ours, stock = cache_runs["0"]
    strip = re.compile(r"^SSL_connect:|depth=\d+ verify=|^initializing the client-side TLS")
    a = [ln for ln in ours if not strip.search(ln)]
    b = [ln for ln in stock if not strip.search(ln)]
    assert a == b, "\nours:  %s\nstock: %s" % ("\n       ".join(a), "\n       ".join(b))
    assert not any("Reusing old session" in ln or "looking for session" in ln for ln in ours)
    assert sum(1 for ln in ours if "TLS connection established" in ln) == 2
    for run in cache_runs["default"]:
        assert sum(1 for ln in run if "Reusing old session" in ln) == 1, run


def test_resumed_session_keeps_the_verification_result(cache_runs):
    """With the default timeout the second delivery resumes the first
    session; its certificate (not trusted: no CAfile) stays untrusted, as
    stock logs it."""
    ours, stock = cache_runs["default"]
    a = [ln for ln in ours if re.search(r"TLS connection established|Reusing old|to=<", ln)]
    b = [ln for ln in stock if re.search(r"TLS connection established|Reusing old|to=<", ln)]
    assert a == b, "\nours:  %s\nstock: %s" % ("\n       ".join(a), "\n       ".join(b))


# ---------------------------------------------------------------------------
# DANE: smtp_tls_force_insecure_host_tlsa_lookup


@pytest.fixture(scope="module")
def dane_runs(certs, tls_agent, workdir):
    """Two destinations with a DNSSEC-signed MX record, an unsigned address
    record for the MX host and a signed TLSA record matching the peer's
    certificate; one through a service with the parameter set."""
    from postfix_smtp.testing.dnsserver import (DnsTestServer, ResolverPostfixInstance,
                                                free_loopback_address, resolv_conf_text,
                                                tlsa_rdata)
    ns = free_loopback_address()
    srv = DnsTestServer(host=ns, port=53, max_lifetime=300).start()
    peer = RecordingPeer(PeerScript(tls_context=server_context(certs)), max_lifetime=240)
    peer.start()
    try:
        srv.add(".", "NS", "ns.dane.test.")             # the dnssec probe (ns:.)
        srv.secure(".")
        names = ("dane-default", "dane-force")
        for n in names:
            dom = "%s.test.invalid" % n
            mx = "mx." + dom
            srv.add(dom, "MX", "10 %s." % mx)
            srv.secure(dom)
            srv.add(mx, "A", "127.0.0.1")               # not signed
            srv.add_tlsa(mx, peer.port, tlsa_rdata(certs.pki.cert("good"), 3, 1, 1))
        scens = [Scen("dane-default", {}, nexthop="dane-default.test.invalid"),
                 Scen("dane-force", {"smtp_tls_force_insecure_host_tlsa_lookup": "yes"},
                      nexthop="dane-force.test.invalid")]
        main_cf = {"smtp_tcp_port": str(peer.port), "smtp_connect_timeout": "5s",
                   "smtp_dns_support_level": "dnssec", "smtp_tls_security_level": "dane",
                   "delay_warning_time": "0"}
        kw = {"resolv_conf": resolv_conf_text([ns], 1, 2)}
        out = []
        for who, agent in (("agent", tls_agent), ("stock", None)):
            r = run_group(os.path.join(workdir, "dane-" + who), agent, scens, main_cf,
                          instance_cls=ResolverPostfixInstance, instance_kw=kw,
                          ports=[peer.port])
            out.append(r)
        yield tuple(out)
    finally:
        peer.stop()
        srv.stop()


def test_force_insecure_host_tlsa_lookup(dane_runs):
    """Without the parameter, the insecure address record means no TLSA
    lookup: unauthenticated TLS ("Untrusted").  With it, the signed TLSA
    record is looked up and used: "Verified"."""
    ours, stock = dane_runs
    for name, label in (("dane-default", "Untrusted"), ("dane-force", "Verified")):
        a, b = ours[name], stock[name]
        assert _count_to(a.lines) == 1 and _count_to(b.lines) == 1, name + diff_text(a, b)
        assert a.norm == b.norm, name + diff_text(a, b)
        assert any(ln.startswith("%s TLS connection established to mx.%s.test.invalid"
                                 % (label, name)) for ln in a.lines), name + diff_text(a, b)
        assert a.status() == ["sent"]
