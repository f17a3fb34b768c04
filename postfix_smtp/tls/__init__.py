"""STARTTLS for the SMTP/LMTP client, as the stock smtp(8) does it.

- :mod:`.config`  -- the TLS parameters of one process (``TlsConfig``), read once;
- :mod:`.policy`  -- pure: security levels, the obsolete controls, per-site and
  policy tables, cipher grades, protocol lists (``PolicyResolver``, ``Policy``);
- :mod:`.names`   -- pure: certificate name matching (OpenSSL's X509_check_host
  rules as Postfix configures them), fingerprints, hex digests;
- :mod:`.client`  -- the pyOpenSSL handshake, certificate checks, the stock log
  lines, the socket-like TLS stream (imports OpenSSL, only when a delivery
  actually starts TLS);
- :mod:`.scache`  -- TLS session resumption through tlsmgr(8), as stock does.

Nothing in this package imports OpenSSL at import time.
"""
