"""A stub resolver with the behaviour stock smtp(8) gets from glibc + libdns.

- :mod:`.resolvconf` reads ``/etc/resolv.conf`` as glibc does (pure);
- :mod:`.client` sends one query the way ``res_nsearch()`` does: the same
  nameserver order, per-try timeouts, retries, TCP after truncation, and the
  same mapping of rcodes and failures to ``h_errno``;
- :mod:`.lookup` is Postfix's ``dns_lookup()``: CNAME chasing, record
  validation, null MX, and the status codes and texts smtp(8) logs.

Nothing here is imported at agent start-up: :mod:`postfix_smtp.destinations`
imports this package only when a DNS lookup is needed, and dnspython (used to
parse replies) is imported only when the first reply arrives.
"""
