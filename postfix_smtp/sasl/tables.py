"""Opening the tables SASL reads, with :mod:`postfix_smtp.maps` (every
Postfix table type, opened before privileges are dropped):

- ``smtp_sasl_password_maps``: the flags stock opens it with
  (DICT_FLAG_LOCK | DICT_FLAG_FOLD_FIX | DICT_FLAG_UTF8_REQUEST), titled
  with the parameter name (stock's "QUEUEID: TITLE lookup error");
- ``type:table`` patterns in ``smtp_sasl_mechanism_filter``: as
  match_list opens them (DICT_FLAG_LOCK | DICT_FLAG_UTF8_REQUEST; the key
  is already lower case).
"""

from __future__ import annotations

from ..maps import DEFAULT_FLAGS, DICT_FLAG_LOCK, DICT_FLAG_UTF8_REQUEST, open_maps

FILTER_FLAGS = DICT_FLAG_LOCK | DICT_FLAG_UTF8_REQUEST


def open_password_maps(spec: str, params=None, title: str = "smtp_sasl_password_maps",
                       log=None):
    return open_maps(spec, params, DEFAULT_FLAGS, title=title, log=log)


def open_filter_table(spec: str, params=None, log=None):
    return open_maps(spec, params, FILTER_FLAGS, title=spec, log=log)
