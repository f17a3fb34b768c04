"""Test certificates: a CA, an intermediate, and server certificates good and bad.

``make_pki(directory)`` writes PEM files (mode 0644, readable by user postfix)
and returns a :class:`Pki` with their paths.  Uses ``cryptography`` (a
pyOpenSSL dependency).  Server certificates, each ``NAME.pem`` (certificate
followed by the intermediate when issued by it), ``NAME.key``, and
``NAME.chain.pem`` (key then certificates, for ``smtp_tls_chain_files``):

- ``good``: CN/SAN ``mx.test.invalid`` and ``*.wild.test.invalid``, issued by
  the intermediate (chain sent);
- ``expired``, ``notyet``: validity in the past / future;
- ``wrongname``: SAN ``other.test.invalid`` only;
- ``selfsigned``: self-signed;
- ``untrusted``: issued by a CA that is not in ``ca.pem``;
- ``weak``: RSA 1024-bit key;
- ``ec``: ECDSA P-256 key;
- ``cnonly``: no SAN, CN ``mx.test.invalid``;
- ``client``: a client certificate.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field

SERVER_NAME = "mx.test.invalid"


@dataclass
class Pki:
    directory: str
    ca: str = ""                  # CAfile: root only
    ca_key: str = ""
    intermediate: str = ""
    other_ca: str = ""
    certs: dict = field(default_factory=dict)     # name -> (cert chain pem, key pem, chain file)

    def cert(self, name: str) -> str:
        return self.certs[name][0]

    def key(self, name: str) -> str:
        return self.certs[name][1]

    def chain_file(self, name: str) -> str:
        return self.certs[name][2]


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o644)
    return path


def make_pki(directory: str) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    os.makedirs(directory, exist_ok=True)
    os.chmod(directory, 0o755)
    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)

    def key(bits=2048, ecdsa=False):
        if ecdsa:
            return ec.generate_private_key(ec.SECP256R1())
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)

    def name(cn, org=None):
        attrs = []
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        return x509.Name(attrs)

    def build(subject, issuer, pub, signer, ca=False, sans=None, nb=None, na=None,
              client=False, pathlen=None):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(pub).serial_number(x509.random_serial_number())
             .not_valid_before(nb or now - day).not_valid_after(na or now + 365 * day))
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=pathlen), critical=True)
        if ca:
            b = b.add_extension(x509.KeyUsage(True, False, False, False, False, True, True,
                                              False, False), critical=True)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]),
                                critical=False)
        return b.sign(signer, hashes.SHA256())

    def pem(c):
        return c.public_bytes(serialization.Encoding.PEM)

    def kpem(k):
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    pki = Pki(directory)
    root_k = key()
    root = build(name("Test Root CA", "postfix_smtp tests"), name("Test Root CA",
                 "postfix_smtp tests"), root_k.public_key(), root_k, ca=True)
    inter_k = key()
    inter = build(name("Test Intermediate CA", "postfix_smtp tests"), root.subject,
                  inter_k.public_key(), root_k, ca=True, pathlen=0)
    other_k = key()
    other = build(name("Other Root CA"), name("Other Root CA"), other_k.public_key(), other_k,
                  ca=True)
    pki.ca = _write(os.path.join(directory, "ca.pem"), pem(root))
    pki.ca_key = _write(os.path.join(directory, "ca.key"), kpem(root_k))
    pki.intermediate = _write(os.path.join(directory, "intermediate.pem"), pem(inter))
    pki.other_ca = _write(os.path.join(directory, "other-ca.pem"), pem(other))

    good_names = [SERVER_NAME, "*.wild.test.invalid"]
    specs = {
        "good": dict(sans=good_names),
        "expired": dict(sans=good_names, nb=now - 30 * day, na=now - 2 * day),
        "notyet": dict(sans=good_names, nb=now + 2 * day, na=now + 30 * day),
        "wrongname": dict(sans=["other.test.invalid"], cn="other.test.invalid"),
        "selfsigned": dict(sans=good_names, self_signed=True),
        "untrusted": dict(sans=good_names, issuer="other"),
        "weak": dict(sans=good_names, bits=1024),
        "ec": dict(sans=good_names, ecdsa=True),
        "cnonly": dict(sans=None),
        "client": dict(sans=["client.test.invalid"], cn="client.test.invalid", client=True),
    }
    for nm, sp in specs.items():
        k = key(sp.get("bits", 2048), sp.get("ecdsa", False))
        subj = name(sp.get("cn", SERVER_NAME))
        extra = b""
        if sp.get("self_signed"):
            c = build(subj, subj, k.public_key(), k, sans=sp.get("sans"))
        elif sp.get("issuer") == "other":
            c = build(subj, other.subject, k.public_key(), other_k, sans=sp.get("sans"))
        else:
            c = build(subj, inter.subject, k.public_key(), inter_k, sans=sp.get("sans"),
                      nb=sp.get("nb"), na=sp.get("na"), client=sp.get("client", False))
            extra = pem(inter)
        cert_path = _write(os.path.join(directory, nm + ".pem"), pem(c) + extra)
        key_path = _write(os.path.join(directory, nm + ".key"), kpem(k))
        chain = _write(os.path.join(directory, nm + ".chain.pem"), kpem(k) + pem(c) + extra)
        pki.certs[nm] = (cert_path, key_path, chain)
    return pki


def fingerprint(cert_path: str, digest: str = "sha256", pkey: bool = False) -> str:
    """The stock-style fingerprint (AA:BB:...) of the first certificate in a file."""
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    c = x509.load_pem_x509_certificate(open(cert_path, "rb").read())
    data = c.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
        if pkey else c.public_bytes(serialization.Encoding.DER)
    return ":".join("%02X" % b for b in hashlib.new(digest, data).digest())
