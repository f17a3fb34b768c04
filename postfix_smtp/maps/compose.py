"""unionmap:{...} and pipemap:{...} (dict_union.c, dict_pipe.c)."""

from __future__ import annotations

from typing import Any, List, Optional

from .base import (DICT_FLAG_FIXED, DICT_FLAG_PATTERN, DICT_ERR_NONE, MapError, OpenError,
                   Table)
from .text import balpar, mystrtokq


class _Composite(Table):
    impl_flags = 0
    needs_context = True

    def __init__(self, name: str, flags: int, log: Any = None, utf8: bool = False,
                 ctx: Any = None) -> None:
        super().__init__(name, flags, log, utf8)
        n = len(name)
        specs: List[str] = []
        if balpar(name) == n and n > 2 and name[1:n - 1]:
            specs = mystrtokq(name[1:n - 1])
        if not specs or any(":" not in s for s in specs):
            raise OpenError('bad syntax: "%s:%s"; need "%s:{type:name...}"'
                            % (self.type, name, self.type))
        self.tables: List[Table] = [ctx.open_table(spec, flags) for spec in specs]
        # The first table decides whether this is a fixed or a pattern table.
        self.flags |= self.tables[0].flags & (DICT_FLAG_FIXED | DICT_FLAG_PATTERN)

    def subtables(self) -> List[Table]:
        return list(self.tables)

    def changed(self) -> bool:
        return any(t.changed() for t in self.tables)

    def close(self) -> None:
        for t in self.tables:
            t.close()
        super().close()


class UnionTable(_Composite):
    """Query every table; join the results that were found with commas."""

    type = "unionmap"

    def _get(self, key: str) -> Optional[str]:
        buf = ""
        for t in self.tables:
            value = t.lookup(key)
            if value is not None:
                if buf:
                    buf += ","
                buf += value
        return buf or None


class PipeTable(_Composite):
    """Feed the key to the first table, its result to the next, and so on."""

    type = "pipemap"

    def _get(self, key: str) -> Optional[str]:
        query = key
        for t in self.tables:
            value = t.lookup(query)
            if value is None:
                return None
            query = value
        return query


__all__ = ["UnionTable", "PipeTable", "DICT_ERR_NONE", "MapError"]
