"""Output content inspection of smtp(8): smtp_header_checks,
smtp_mime_header_checks, smtp_nested_header_checks and smtp_body_checks
(header_body_checks.c with smtp(8)'s call-backs), and the combined MIME
header/body call-backs that also apply smtp_generic_maps (smtp_proto.c
smtp_header_rewrite / smtp_body_rewrite).

Actions allowed on output (case-insensitive first word of the table value):

- ``WARN text`` / ``INFO text``: log ``QUEUEID: warning: header CONTENT: text``
  (``info``), the content cut to 60 bytes; the line passes;
- ``REPLACE text``: log ``replace``, the line is replaced (a header
  replacement must look like ``name: value``, else warning ``bad REPLACE
  header text "..." in MAP map -- need "headername: headervalue"`` and the
  header passes); without text: warning, passes;
- ``PREPEND text``: log ``prepend``, a line is written before it (same
  checks as REPLACE);
- ``STRIP text``: log ``strip``, the line is dropped;
- ``IGNORE``: dropped, not logged;
- ``DUNNO``, ``OK``: passes;
- anything else (REJECT, HOLD, DISCARD, FILTER, REDIRECT, BCC, ...): warning
  ``unsupported command in MAP map: VALUE``, the line passes.

Which table: primary headers -> smtp_header_checks, MIME headers
(Content-*, MIME-Version) anywhere and the headers of multipart parts ->
smtp_mime_header_checks, headers of attached messages ->
smtp_nested_header_checks (an empty parameter means "no checks" for that
class).  A table lookup error raises :class:`ChecksLookupError` (stock: the
warning ``QUEUEID: smtp header checks lookup error`` and the delivery is
deferred with ``4.3.0 local data error while talking to HOST``).

Order for a header (stock): checks first (on the reassembled header, newlines
included), then generic address rewriting of the (possibly replaced) primary
header.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..maps.base import DICT_FLAG_LOCK, MapError
from .mime import (HDR_OPT_MIME, HDR_OPT_RECIP, HDR_OPT_SENDER, MULTIPART, NESTED, PRIMARY,
                   HeaderInfo, is_header_buf)

__all__ = ["HeaderBodyChecks", "ChecksLookupError", "OutputFilter", "IGNORE",
           "CHECKS_PARAMS"]

Record = Tuple[bytes, bool]

#: the header classes and their parameter names (smtp personality)
CHECKS_PARAMS = {
    PRIMARY: "smtp_header_checks",
    MULTIPART: "smtp_mime_header_checks",
    NESTED: "smtp_nested_header_checks",
}
BODY_PARAM = "smtp_body_checks"


class ChecksLookupError(Exception):
    """A header/body checks table lookup failed; ``args[0]`` is "header" or "body"."""


class _Ignore:
    def __repr__(self) -> str:
        return "IGNORE"


#: returned by the check functions when the line is dropped
IGNORE = _Ignore()


def _b2s(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _s2b(s: str) -> bytes:
    return s.encode("utf-8", "surrogateescape")


class HeaderBodyChecks:
    """The four output check tables of one process.

    *header_maps*: {PRIMARY/MULTIPART/NESTED: (Maps, map_class) or None};
    *body_maps*: (Maps, map_class) or None.  *log* has info() and warning().
    """

    def __init__(self, header_maps: Dict[int, Optional[Tuple[Any, str]]],
                 body_maps: Optional[Tuple[Any, str]], log: Any) -> None:
        self.header_maps = {k: v for k, v in header_maps.items() if v is not None}
        self.body_maps = body_maps
        self.log = log

    @classmethod
    def from_params(cls, params: Any, ctx: Any, log: Any,
                    pname=lambda n: n) -> Optional["HeaderBodyChecks"]:
        """Open the tables named by the parameters (*pname* maps an smtp_*
        name to the personality's name); None when all four are empty."""
        from ..maps import open_maps
        header_maps: Dict[int, Optional[Tuple[Any, str]]] = {}
        for cls_, name in CHECKS_PARAMS.items():
            name = pname(name)
            spec = params.get(name) or ""
            header_maps[cls_] = ((open_maps(spec, params, flags=DICT_FLAG_LOCK, title=name,
                                            ctx=ctx), name) if spec.strip() else None)
        name = pname(BODY_PARAM)
        spec = params.get(name) or ""
        body = ((open_maps(spec, params, flags=DICT_FLAG_LOCK, title=name, ctx=ctx), name)
                if spec.strip() else None)
        if not any(header_maps.values()) and body is None:
            return None
        return cls(header_maps, body, log)

    @property
    def has_header_checks(self) -> bool:
        return bool(self.header_maps)

    @property
    def has_body_checks(self) -> bool:
        return self.body_maps is not None

    # -- hbc_header_checks / hbc_body_checks -------------------------------------------

    def header(self, queue_id: str, header_class: int, info: Optional[HeaderInfo],
               text: bytes, prepend: List[bytes]) -> Any:
        """Check one reassembled header: returns *text* (unchanged), a
        replacement (bytes), or IGNORE.  PREPEND lines are appended to
        *prepend*.  Raises ChecksLookupError."""
        if info is not None and info.flags & HDR_OPT_MIME:
            header_class = MULTIPART
        entry = self.header_maps.get(header_class)
        if entry is None:
            return text
        maps, map_class = entry
        try:
            action = maps.lookup(_b2s(text))
        except MapError:
            raise ChecksLookupError("header") from None
        if action is None:
            return text
        return self._action(queue_id, map_class, "header", action, text, prepend)

    def body(self, queue_id: str, text: bytes, prepend: List[bytes]) -> Any:
        """Check one body record (same results as :meth:`header`)."""
        if self.body_maps is None:
            return text
        maps, map_class = self.body_maps
        try:
            action = maps.lookup(_b2s(text))
        except MapError:
            raise ChecksLookupError("body") from None
        if action is None:
            return text
        return self._action(queue_id, map_class, "body", action, text, prepend)

    def _logger(self, queue_id: str, action: str, where: str, content: bytes,
                text: str) -> None:
        shown = _b2s(content[:60])
        if text:
            self.log.info("%s: %s: %s %s: %s" % (queue_id, action, where, shown, text))
        else:
            self.log.info("%s: %s: %s %s" % (queue_id, action, where, shown))

    def _action(self, queue_id: str, map_class: str, where: str, cmd: str,
                line: bytes, prepend: List[bytes]) -> Any:
        """hbc_action() with smtp(8)'s call-backs (no extensions)."""
        i = 0
        n = len(cmd)
        while i < n and cmd[i] not in " \t":
            i += 1
        word = cmd[:i].upper()
        args = cmd[i:].lstrip(" \t\r\n\v\f")
        if word == "WARN":
            self._logger(queue_id, "warning", where, line, args)
            return line
        if word == "INFO":
            self._logger(queue_id, "info", where, line, args)
            return line
        if word == "REPLACE":
            if not args:
                self.log.warning("REPLACE action without text in %s map" % map_class)
                return line
            if where == "header" and not is_header_buf(_s2b(args)):
                self.log.warning('bad REPLACE header text "%s" in %s map -- '
                                 'need "headername: headervalue"' % (args, map_class))
                return line
            self._logger(queue_id, "replace", where, line, args)
            return _s2b(args)
        if word == "PREPEND":
            if not args:
                self.log.warning("PREPEND action without text in %s map" % map_class)
            elif where == "header" and not is_header_buf(_s2b(args)):
                self.log.warning('bad PREPEND header text "%s" in %s map -- '
                                 'need "headername: headervalue"' % (args, map_class))
            else:
                self._logger(queue_id, "prepend", where, line, args)
                prepend.append(_s2b(args))
            return line
        if word == "STRIP":
            self._logger(queue_id, "strip", where, line, args)
            return IGNORE
        if word == "IGNORE":
            return IGNORE
        if word in ("DUNNO", "OK"):
            return line
        self.log.warning("unsupported command in %s map: %s" % (map_class, cmd))
        return line


class OutputFilter:
    """The MimeDowngrade call-backs for one message: header/body checks, then
    generic address rewriting of primary sender/recipient headers.

    Use ``MimeDowngrade(..., header_callback=f.header_callback,
    body_callback=f.body_callback if f.checks and f.checks.has_body_checks
    else None)``.  Lookup errors propagate (ChecksLookupError,
    rewrite.GenericMapError): the caller must abandon the message.
    """

    def __init__(self, queue_id: str, checks: Optional[HeaderBodyChecks] = None,
                 generic: Any = None, log: Any = None) -> None:
        self.queue_id = queue_id
        self.checks = checks
        self.generic = generic
        self.log = log

    def header_callback(self, header_class: int, info: Optional[HeaderInfo],
                        text: bytes) -> List[bytes]:
        out: List[bytes] = []
        if self.checks is not None and self.checks.has_header_checks:
            try:
                result = self.checks.header(self.queue_id, header_class, info, text, out)
            except ChecksLookupError:
                if self.log is not None:
                    self.log.warning("%s: smtp header checks lookup error" % self.queue_id)
                raise
            if result is IGNORE:
                return out
            text = result
        if (self.generic is not None and info is not None and header_class == PRIMARY
                and info.flags & (HDR_OPT_SENDER | HDR_OPT_RECIP)
                and len(text) > len(info.name)):
            lines = self.generic.rewrite_header(text, len(info.name))
            if lines is not None:
                out.extend(lines)
                return out
        out.extend(text.split(b"\n"))
        return out

    def body_callback(self, text: bytes, complete: bool) -> Iterable[Record]:
        if self.checks is None or not self.checks.has_body_checks:
            return [(text, complete)]
        pre: List[bytes] = []
        try:
            result = self.checks.body(self.queue_id, text, pre)
        except ChecksLookupError:
            if self.log is not None:
                self.log.warning("%s: smtp body checks lookup error" % self.queue_id)
            raise
        out: List[Record] = [(p, True) for p in pre]
        if result is not IGNORE:
            out.append((result, complete))
        return out
