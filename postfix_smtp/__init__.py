"""postfix_smtp: a Postfix delivery agent (smtp(8)/lmtp(8) replacement) in Python.

The package is laid out by concept:

- ``master``  the master(8) child interface (argv, fds, status, privileges)
- ``config``  main.cf/master.cf parameters, defaults and ``$name`` expansion
- ``ipc``     the internal attribute-stream protocols (qmgr, bounce, defer, trace, verify)
- ``queue``   queue file records, locking and recipient marking
- ``smtp``    the SMTP client: reply parsing, protocol state machine, content, session I/O
- ``testing`` a private Postfix instance and a scriptable SMTP peer, for tests and the demo
"""

__version__ = "0.1.0"
