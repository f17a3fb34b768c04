"""Base64 as Cyrus SASL's sasl_encode64()/sasl_decode64() do it, and the
Cyrus result texts (sasl_errstring()) that stock smtp(8) puts in its
"cannot authenticate to server X: TEXT" reasons.

Postfix's Cyrus glue reports a client-side failure by the result code's
text only (``sasl_errstring``), never by the detail message, so the texts
here are all an administrator ever sees of a mechanism error.
"""

from __future__ import annotations

import base64
import binascii

# Cyrus SASL 2.1.28 result codes and their sasl_errstring() texts.
SASL_CONTINUE = 1
SASL_FAIL = -1
SASL_NOMEM = -2
SASL_BUFOVER = -3
SASL_NOMECH = -4
SASL_BADPROT = -5
SASL_BADPARAM = -7
SASL_BADSERV = -10
SASL_BADAUTH = -13

ERRSTRING = {
    SASL_CONTINUE: "another step is needed in authentication",
    SASL_FAIL: "generic failure",
    SASL_NOMEM: "no memory available",
    SASL_BUFOVER: "overflowed buffer",
    SASL_NOMECH: "no mechanism available",
    SASL_BADPROT: "bad protocol / cancel",
    SASL_BADPARAM: "invalid parameter supplied",
    SASL_BADSERV: "server failed mutual authentication step",
    SASL_BADAUTH: "authentication failure",
}


#: How Postfix's Cyrus log callback reports what a plug-in passes to
#: sasl_seterror() (SASL_LOG_FAIL) and what the library logs at SASL_LOG_ERR.
LOG_FAIL = "SASL authentication failure: %s"
LOG_ERR = "SASL authentication problem: %s"


class MechanismError(Exception):
    """A client-side SASL failure.

    ``code`` is the Cyrus result code; ``text`` what stock puts in the
    reason for it (``sasl_errstring``).  ``detail`` is the message Cyrus
    logs for it, if any; ``log`` the whole warning line stock smtp(8) logs
    through its Cyrus log callback (None: Cyrus logs nothing).  Neither
    ever contains a credential.
    """

    def __init__(self, code: int, detail: str = "", text: str | None = None,
                 log: str | None = "fail") -> None:
        self.code = code
        self.text = text if text is not None else ERRSTRING.get(code, "unknown error")
        self.detail = detail
        if not detail or log is None:
            self.log = None
        else:
            self.log = (LOG_ERR if log == "err" else LOG_FAIL) % detail
        super().__init__(self.text + (" (%s)" % detail if detail else ""))


_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def encode64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode64(text: str) -> bytes:
    """A server challenge, decoded as sasl_decode64() decodes it.

    Cyrus quirks kept: a leading CR is a "generic failure"; data after ``=``
    or a bad character is "bad protocol / cancel"; 1-3 left-over characters
    without padding make sasl_decode64() return SASL_CONTINUE, which Postfix
    treats as an error ("another step is needed in authentication").
    """
    raw = text.encode("utf-8", "surrogateescape")
    if raw[:1] == b"\r":
        raise MechanismError(SASL_FAIL, "challenge starts with CR", log=None)
    saw_equal = False
    i = 0
    n = len(raw)
    while n - i > 3:
        if saw_equal:
            raise MechanismError(SASL_BADPROT, "data after '=' in base64 challenge", log=None)
        c = raw[i:i + 4]
        i += 4
        if c[0] not in _ALPHABET or c[1] not in _ALPHABET:
            raise MechanismError(SASL_BADPROT, "invalid base64 challenge", log=None)
        if c[2] != 0x3d and c[2] not in _ALPHABET:
            raise MechanismError(SASL_BADPROT, "invalid base64 challenge", log=None)
        if c[3] != 0x3d and c[3] not in _ALPHABET:
            raise MechanismError(SASL_BADPROT, "invalid base64 challenge", log=None)
        if c[2] == 0x3d and c[3] != 0x3d:
            raise MechanismError(SASL_BADPROT, "invalid base64 padding", log=None)
        if c[2] == 0x3d or c[3] == 0x3d:
            saw_equal = True
    if n - i:
        if saw_equal:
            raise MechanismError(SASL_BADPROT, "data after '=' in base64 challenge", log=None)
        raise MechanismError(SASL_CONTINUE, "truncated base64 challenge", log=None)
    try:
        # padding bits are ignored as Cyrus ignores them
        return base64.b64decode(raw, validate=False)
    except (binascii.Error, ValueError):        # pragma: no cover - checked above
        raise MechanismError(SASL_BADPROT, "invalid base64 challenge", log=None) from None
