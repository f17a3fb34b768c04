"""Postfix lookup tables for the agent: the dict(3)/maps(3) layer of Postfix 3.7.

Usage (open before dropping privileges, as stock smtp(8) does)::

    from postfix_smtp.maps import MapError, open_maps
    maps = open_maps(params.sget("smtp_sasl_password_maps"), params,
                     title="smtp_sasl_password_maps")
    try:
        value = maps.lookup("mail.example.com")       # or lookup_address / lookup_domain
    except MapError:
        ...                                            # defer the delivery
    if maps.changed():                                 # a file table was rebuilt:
        ...                                            # exit after this request

Types: hash, btree (pure-Python Berkeley DB reader), lmdb (``lmdb``
package), cdb (pure Python), texthash, inline, static, fail, regexp, pcre
(translated for Python ``re``), cidr, unionmap, pipemap, proxy (proxymap(8)
client), socketmap, tcp.  Each type lives in its own module, imported when
a table of that type is first opened.
"""

from .base import (DICT_FLAG_DUP_IGNORE, DICT_FLAG_DUP_REPLACE, DICT_FLAG_DUP_WARN,
                   DICT_FLAG_FIXED, DICT_FLAG_FOLD_FIX, DICT_FLAG_FOLD_MUL, DICT_FLAG_LOCK,
                   DICT_FLAG_NONE, DICT_FLAG_PATTERN, DICT_FLAG_TRY0NULL, DICT_FLAG_TRY1NULL,
                   DICT_FLAG_UTF8_REQUEST, DICT_ERR_CONFIG, DICT_ERR_RETRY, MapError,
                   NullLog, RecordingLog, Table)
from .api import DEFAULT_FLAGS, Maps, OpenContext, open_maps

__all__ = [
    "MapError", "Maps", "OpenContext", "open_maps", "Table", "NullLog", "RecordingLog",
    "DEFAULT_FLAGS", "DICT_FLAG_NONE", "DICT_FLAG_DUP_WARN", "DICT_FLAG_DUP_IGNORE",
    "DICT_FLAG_DUP_REPLACE", "DICT_FLAG_TRY0NULL", "DICT_FLAG_TRY1NULL", "DICT_FLAG_FIXED",
    "DICT_FLAG_PATTERN", "DICT_FLAG_LOCK", "DICT_FLAG_FOLD_FIX", "DICT_FLAG_FOLD_MUL",
    "DICT_FLAG_UTF8_REQUEST", "DICT_ERR_RETRY", "DICT_ERR_CONFIG",
]
