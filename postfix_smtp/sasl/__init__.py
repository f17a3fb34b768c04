"""SASL client authentication as the stock smtp(8) does it (Postfix 3.7 with
Cyrus SASL 2.1.28, as on Debian 12).

Modules:

- :mod:`.mechanisms` -- PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256,
  ANONYMOUS, XOAUTH2 as pure challenge/response objects, and the preference
  order;
- :mod:`.policy` -- EHLO AUTH parsing, smtp_sasl_mechanism_filter, the
  security options and mechanism choice;
- :mod:`.credentials` -- smtp_sasl_password_maps lookup order and
  ``username:password`` parsing;
- :mod:`.exchange` -- the AUTH command exchange, sans-I/O;
- :mod:`.cache` -- the 535 failure cache through proxywrite(8);
- :mod:`.client` -- configuration from main.cf and the per-session login;
- :mod:`.codec` -- Cyrus base64 and result texts;
- :mod:`.tables` -- opening tables (postfix_smtp.maps, or a small stand-in).
"""

from .client import (TLS_NONE, TLS_UNVERIFIED, TLS_VERIFIED, ConnectionIO, LoginResult,
                     SaslClient, run_exchange)
from .codec import MechanismError
from .credentials import TableError, find_credentials, parse_credentials
from .exchange import AuthExchange, Outcome
from .mechanisms import MECHANISMS, PREFERENCE, Context, Credentials
from .policy import HeloAuth, MechanismFilter, SaslConfigError, choose, parse_security_options

__all__ = [
    "TLS_NONE", "TLS_UNVERIFIED", "TLS_VERIFIED", "ConnectionIO", "LoginResult", "SaslClient",
    "run_exchange", "MechanismError", "TableError", "find_credentials", "parse_credentials",
    "AuthExchange", "Outcome", "MECHANISMS", "PREFERENCE", "Context", "Credentials",
    "HeloAuth", "MechanismFilter", "SaslConfigError", "choose", "parse_security_options",
]
