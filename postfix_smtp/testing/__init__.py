"""Test harness: a private loopback Postfix instance and a scriptable SMTP peer.

- :mod:`postfix_smtp.testing.instance`: :class:`PostfixInstance` (a throw-away
  Postfix 3.x instance under one directory, optionally running ``postfix_smtp``
  as its smtp/relay delivery agent) and :class:`SmtpSink` (Postfix's smtp-sink).
- :mod:`postfix_smtp.testing.peer`: :class:`SmtpPeer`, a threaded SMTP/LMTP
  server whose replies, delays and disconnects are scripted by :class:`PeerScript`.

Standard library only. Everything listens on loopback and stops by itself.
"""
