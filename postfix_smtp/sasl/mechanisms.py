"""SASL client mechanisms as pure challenge/response objects.

Each mechanism behaves as the Cyrus SASL 2.1.28 client plug-in that stock
smtp(8) uses on Debian 12 (libsasl2-modules): the same initial responses,
the same checks of server challenges and the same result codes on errors
(see :mod:`postfix_smtp.sasl.codec`).  No I/O here, except XOAUTH2 reading
its token file when the password names one.

Interface::

    m = MECHANISMS["SCRAM-SHA-256"](creds, ctx)
    first = m.start()          # bytes: the initial response; None: wait for a challenge
    resp = m.step(challenge)   # bytes for each server challenge (decoded)
    m.done                     # the mechanism has nothing more to send

Errors raise :class:`~postfix_smtp.sasl.codec.MechanismError`.

Security flags are Cyrus's ``SASL_SEC_*`` bits as each plug-in declares
them; :mod:`postfix_smtp.sasl.policy` compares them with
``smtp_sasl_security_options``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
from ..valueclass import dataclass, field

from .codec import (SASL_BADAUTH, SASL_BADPARAM, SASL_BADPROT, SASL_FAIL, MechanismError,
                    decode64, encode64)

# Cyrus SASL_SEC_* bits
NOPLAINTEXT = 0x0001
NOACTIVE = 0x0002
NODICTIONARY = 0x0004
FORWARD_SECRECY = 0x0008
NOANONYMOUS = 0x0010
PASS_CREDENTIALS = 0x0020
MUTUAL_AUTH = 0x0040


class Credentials:
    """``username:password`` from the password table.  The password never
    appears in repr() or str(), so it cannot leak through a log line that
    formats this object."""

    __slots__ = ("username", "password")

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password

    def __repr__(self) -> str:
        return "Credentials(username=%r, password=<%d chars>)" % (self.username,
                                                                  len(self.password))

    __str__ = __repr__

    def __eq__(self, other) -> bool:
        return (isinstance(other, Credentials) and self.username == other.username
                and self.password == other.password)

    def __hash__(self) -> int:
        return hash((self.username, self.password))


@dataclass
class Context:
    """What a mechanism may need besides the credentials.

    ``authzid``: ``send_cyrus_sasl_authzid`` (send the username as
    authorization identity as well); ``service``/``server_name``: what Cyrus
    gets from Postfix (``var_procname`` and the server host name);
    ``hostname``: this machine's gethostname() (ANONYMOUS trace data);
    ``nonce``: fixed SCRAM client nonce (tests only).
    """
    authzid: bool = False
    service: str = "smtp"
    server_name: str = ""
    hostname: str = field(default_factory=socket.gethostname)
    nonce: str | None = None


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class Mechanism:
    name = ""
    security_flags = 0
    hash_bits = 0
    #: Cyrus SASL_FEAT_SERVER_FIRST: no initial response, wait for a challenge
    server_first = False

    def __init__(self, creds: Credentials, ctx: Context | None = None) -> None:
        self.creds = creds
        self.ctx = ctx or Context()
        self.done = False

    def start(self) -> bytes | None:
        """The initial response (Cyrus sasl_client_start), or None."""
        if self.server_first:
            return None
        return self._step(None)

    def step(self, challenge: bytes) -> bytes:
        """Answer one server challenge (Cyrus sasl_client_step)."""
        if self.done:        # sasl_client_step() after the plug-in said it is done
            raise MechanismError(SASL_FAIL, "attempting client step after doneflag", log="err")
        return self._step(challenge)

    def _step(self, challenge: bytes | None) -> bytes:
        raise NotImplementedError


class Plain(Mechanism):
    """RFC 4616.  ``authzid NUL authcid NUL password``; the authzid is
    empty unless ``send_cyrus_sasl_authzid = yes``."""
    name = "PLAIN"
    security_flags = NOANONYMOUS | PASS_CREDENTIALS

    def _step(self, challenge):
        self.done = True
        user = self.creds.username
        authz = user if self.ctx.authzid else ""
        return _b(authz) + b"\0" + _b(user) + b"\0" + _b(self.creds.password)


class Login(Mechanism):
    """The LOGIN mechanism: username, then password, each after a
    challenge whose text is ignored."""
    name = "LOGIN"
    security_flags = NOANONYMOUS | PASS_CREDENTIALS
    server_first = True

    def __init__(self, creds, ctx=None):
        super().__init__(creds, ctx)
        self._state = 1

    def _step(self, challenge):
        if challenge is None:
            raise MechanismError(SASL_BADPROT, "Server didn't issue challenge for USERNAME")
        if self._state == 1:
            self._state = 2
            return _b(self.creds.username)
        self.done = True
        return _b(self.creds.password)


class CramMD5(Mechanism):
    """RFC 2195: ``username SP hex(HMAC-MD5(password, challenge))``."""
    name = "CRAM-MD5"
    security_flags = NOPLAINTEXT | NOANONYMOUS
    server_first = True

    def _step(self, challenge):
        if challenge is None:
            challenge = b""
        if len(challenge) > 1024:
            raise MechanismError(SASL_BADPROT, "CRAM-MD5 input longer than 1024 bytes")
        digest = hmac.new(_b(self.creds.password), challenge, hashlib.md5).hexdigest()
        self.done = True
        return _b(self.creds.username) + b" " + digest.encode("ascii")


class Anonymous(Mechanism):
    """RFC 4505 trace data ``anonymous@HOSTNAME`` (Cyrus sends the
    username instead of ``anonymous`` when an authzid is configured)."""
    name = "ANONYMOUS"
    security_flags = NOPLAINTEXT

    def _step(self, challenge):
        if challenge:
            raise MechanismError(SASL_BADPROT, "Nonzero serverinlen in ANONYMOUS continue_step")
        self.done = True
        user = self.creds.username if self.ctx.authzid and self.creds.username else "anonymous"
        return _b(user) + b"@" + _b(self.ctx.hostname)


def _saslname(name: str) -> str:
    return name.replace("=", "=3D").replace(",", "=2C")


class Scram(Mechanism):
    """RFC 5802 / RFC 7677 SCRAM without channel binding: GS2 header
    ``n,,`` (``n,a=USER,`` with ``send_cyrus_sasl_authzid = yes``), exactly
    as the Cyrus client does when it has no channel-binding data.  Like
    Cyrus, the username is only ``=``/``,``-escaped and the password is used
    as given (no SASLprep); iteration counts above 65536 are refused."""
    digest = "sha256"
    security_flags = NOPLAINTEXT | NOANONYMOUS | NOACTIVE | MUTUAL_AUTH
    NONCE_BYTES = 24                # Cyrus: 32 base64 characters
    MAX_ITERATIONS = 0x10000
    MAX_SERVERIN = 2048

    def __init__(self, creds, ctx=None):
        super().__init__(creds, ctx)
        self._state = 0
        self._nonce = self.ctx.nonce or encode64(os.urandom(self.NONCE_BYTES))
        self._gs2 = ""
        self._first_bare = ""
        self._auth_message = b""
        self._salted = b""

    def _hmac(self, key: bytes, msg: bytes) -> bytes:
        return hmac.new(key, msg, self.digest).digest()

    def _err(self, text: str, code: int = SASL_BADPROT) -> MechanismError:
        return MechanismError(code, text.replace("%s", self.name))

    def _step(self, challenge):
        if challenge is not None and len(challenge) > self.MAX_SERVERIN:
            # Cyrus's message, with its unexpanded STRINGIZE((MAX_SERVERIN_LEN))
            raise self._err("%s input longer than (MAX_SERVERIN_LEN) bytes")
        state = self._state
        self._state += 1
        if state == 0:
            return self._client_first()
        if state == 1:
            return self._client_final(challenge or b"")
        if state == 2:
            return self._verify(challenge or b"")
        raise MechanismError(SASL_FAIL, "Invalid %s client step %d\n" % (self.name, state),
                             log="err")

    def _client_first(self) -> bytes:
        authz = ("a=" + _saslname(self.creds.username)) \
            if self.ctx.authzid and self.creds.username else ""
        self._gs2 = "n," + authz + ","
        self._first_bare = "n=%s,r=%s" % (_saslname(self.creds.username), self._nonce)
        return _b(self._gs2 + self._first_bare)

    def _client_final(self, server_first: bytes) -> bytes:
        # the checks and messages of Cyrus scram_client_mech_step2(), in its order
        if not server_first:
            raise self._err("%s input expected")
        if len(server_first) < 3 or server_first[1:2] != b"=":
            raise self._err("Invalid %s input")
        if server_first[:1] == b"m":
            raise self._err("Unsupported mandatory extension to %s")
        if server_first[:1] != b"r":
            raise self._err("Nonce (r=) expected in %s input")
        if b"\0" in server_first:
            raise self._err("NULs found in %s input")
        nonce, sep, rest = server_first[2:].partition(b",")
        if not sep or not rest.startswith(b"s="):
            raise self._err("Salt expected after the nonce in %s input")
        salt64, sep, rest = rest[2:].partition(b",")
        if not sep or not rest.startswith(b"i="):
            raise self._err("iteration-count expected after the salt in %s input")
        count_text = rest[2:].split(b",", 1)[0]
        if not count_text.isdigit() or len(count_text) > 20:
            raise self._err("Invalid iteration-count in %s input")
        iterations = int(count_text)
        if iterations > self.MAX_ITERATIONS:
            raise self._err("iteration-count is too big, refusing to compute")
        client_nonce = self._nonce.encode("ascii")
        if len(nonce) <= len(client_nonce) or not nonce.startswith(client_nonce):
            raise self._err("The nonce received from the server doesn't start from the nonce "
                            "sent by the client")
        if not salt64:
            raise self._err("The salt can't be empty")
        if len(salt64) % 4:
            raise self._err("Invalid base64 encoding of the salt")
        try:
            salt = decode64(salt64.decode("ascii", "surrogateescape"))
        except MechanismError:
            raise self._err("Invalid base64 encoding of the salt in %s input") from None
        final_no_proof = b"c=" + encode64(self._gs2.encode("utf-8", "surrogateescape")).encode() \
            + b",r=" + nonce
        self._auth_message = (_b(self._first_bare) + b"," + server_first + b"," + final_no_proof)
        self._salted = hashlib.pbkdf2_hmac(self.digest, _b(self.creds.password), salt,
                                           iterations)
        client_key = self._hmac(self._salted, b"Client Key")
        stored_key = hashlib.new(self.digest, client_key).digest()
        signature = self._hmac(stored_key, self._auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        return final_no_proof + b",p=" + encode64(proof).encode()

    def _verify(self, server_final: bytes) -> bytes:
        if len(server_final) < 3:
            raise self._err("Invalid %s input expected")
        if not server_final.startswith(b"v="):
            raise self._err("ServerSignature expected in %s input")
        proof64 = server_final[2:].split(b",", 1)[0]
        try:
            proof = decode64(proof64.decode("ascii", "surrogateescape"))
        except MechanismError:
            raise self._err("Invalid base64 encoding of the server proof in %s input") from None
        size = hashlib.new(self.digest).digest_size
        if len(proof) != size:
            raise self._err("Invalid server proof (truncated) in %s input")
        server_key = self._hmac(self._salted, b"Server Key")
        if not hmac.compare_digest(proof, self._hmac(server_key, self._auth_message)):
            raise MechanismError(SASL_BADAUTH, "ServerSignature mismatch")
        self.done = True
        return b""


class ScramSha1(Scram):
    name = "SCRAM-SHA-1"
    digest = "sha1"
    hash_bits = 160


class ScramSha256(Scram):
    name = "SCRAM-SHA-256"
    digest = "sha256"
    hash_bits = 256


class XOAuth2(Mechanism):
    """Google/Microsoft XOAUTH2: ``user=U^Aauth=Bearer TOKEN^A^A``.

    The token is the password field of the password-table entry
    (``user@example.com:TOKEN``), as with the Cyrus xoauth2 plug-ins.  A
    password that starts with ``/`` names a token file instead, read at
    every authentication (so an external tool can refresh it): either the
    bare token, or a JSON object with an ``access_token`` member (the
    format sasl-xoauth2 keeps its tokens in).  The file is read by the
    agent's unprivileged user, inside the chroot jail when master.cf says
    so.  After the initial response, a server challenge (the JSON error of
    RFC 7628 style servers) is answered with an empty response, as the
    providers require, so that the server sends its final 5xx reply.
    """
    name = "XOAUTH2"
    security_flags = NOANONYMOUS | PASS_CREDENTIALS

    def __init__(self, creds, ctx=None):
        super().__init__(creds, ctx)
        self._answered_error = False

    def token(self) -> str:
        secret = self.creds.password
        if not secret.startswith("/"):
            return secret
        try:
            with open(secret, "rb") as f:
                data = f.read(1 << 20).decode("utf-8", "surrogateescape").strip()
        except OSError as exc:
            msg = "cannot read XOAUTH2 token file %s: %s" % (secret, exc.strerror or exc)
            raise MechanismError(SASL_FAIL, msg, text=msg) from None
        if data.startswith("{"):
            try:
                tok = json.loads(data).get("access_token")
            except (ValueError, AttributeError):
                tok = None
            if not isinstance(tok, str) or not tok:
                msg = "no access_token in XOAUTH2 token file %s" % secret
                raise MechanismError(SASL_BADPARAM, msg, text=msg)
            return tok
        if not data:
            msg = "empty XOAUTH2 token file %s" % secret
            raise MechanismError(SASL_BADPARAM, msg, text=msg)
        return data

    def _step(self, challenge):
        if challenge is None:
            tok = self.token()
            self.done = True
            return b"user=" + _b(self.creds.username) + b"\x01auth=Bearer " + _b(tok) + b"\x01\x01"
        raise MechanismError(SASL_BADPROT, "unexpected XOAUTH2 challenge")  # pragma: no cover

    def step(self, challenge: bytes) -> bytes:
        if self.done and not self._answered_error:
            self._answered_error = True     # error details: answer empty, get the 5xx
            return b""
        return super().step(challenge)


#: Every mechanism by name.
MECHANISMS = {m.name: m for m in (ScramSha256, ScramSha1, CramMD5, XOAuth2, Plain, Login,
                                  Anonymous)}

#: Preference order: Cyrus 2.1.28 sorts its client plug-ins by security
#: flags (no-anonymous, no-plaintext, mutual auth, no-active, ...), then by
#: hash strength, and takes the first that the server offers and the
#: security options allow.  For Debian 12's plug-ins that is SCRAM-SHA-256,
#: SCRAM-SHA-1, (DIGEST-MD5, not implemented here), CRAM-MD5, PLAIN, LOGIN,
#: ANONYMOUS; PLAIN before LOGIN was observed with the stock smtp(8).
#: XOAUTH2 (not a Debian plug-in) comes before PLAIN: it is only ever a
#: candidate when smtp_sasl_mechanism_filter names it.
PREFERENCE = ("SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "XOAUTH2", "PLAIN", "LOGIN",
              "ANONYMOUS")
