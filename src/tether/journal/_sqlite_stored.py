"""Reading the SQLite store's events as `StoredRow`s: query columns from the bytes or from
their audit copy, and the cheap filters applied before parsing."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from .._envelope_v3 import V3_DEFLATED
from ..events import peek_fields
from ._base import StoredRow
from ._index import CONTEXT_INDEX_TYPES, AuditColumns, RowQuery, sort_key, tool_in
from ._sections import SECTION_TYPES

_EVENT_COLUMNS = "run_id, seq, data"
"""What a StoredRow is read from (the `events` view, schema 6): see `_stored`."""


def _bounds_only(q: RowQuery) -> bool:
    """A query within one run that filters on nothing but seq."""
    return not (q.types or q.tool or q.actor or q.since or q.until or q.visibilities is not None)


def _ordered(rows: list[StoredRow], q: RowQuery) -> list[StoredRow]:
    rows.sort(key=sort_key(q), reverse=q.newest_first)
    return rows if q.limit is None else rows[: q.limit]


_DEFLATED = bytes((V3_DEFLATED,))


def _type_filter(types: Sequence[str]) -> Callable[[Any], bool] | None:
    """A cheap first cut for a filter by type: the bytes of an event of one of `types`
    contain its type as canonical JSON spells it (`"t":"…"` in v2, `"type":"…"` in v1);
    a deflated v3 body cannot be searched, so it is kept. Rows it keeps are still matched
    on their parsed columns; damaged bytes are kept."""
    if not types:
        return None
    marks = [
        m.encode()
        for t in types
        for m in (f'"t":{json.dumps(t, ensure_ascii=False)}',
                  f'"type":{json.dumps(t, ensure_ascii=False)}')
    ]  # fmt: skip
    # One scan of each row for all the marks (a run's rows are all read: keep it cheap).
    search = re.compile(b"|".join(re.escape(m) for m in marks)).search

    def keep(raw: Any) -> bool:
        return not isinstance(raw, bytes) or raw[:1] == _DEFLATED or search(raw) is not None

    return keep


def _context_only(q: RowQuery) -> bool:
    return bool(q.types) and set(q.types) <= set(CONTEXT_INDEX_TYPES)


def _sections_only(q: RowQuery) -> bool:
    return bool(q.types) and set(q.types) <= set(SECTION_TYPES)


_UNCOPIED = "id > (SELECT COALESCE(MAX(id), 0) FROM audit_rows)"
"""Events past the audit copy's mark: the unindexed tail audit queries read directly."""


def _stored(r: Sequence[Any]) -> StoredRow:
    """A row of `(run_id, seq, data)` with its query columns read from the bytes in Python
    (SQLite's JSON functions parse the blob again for every column: ~120 µs a row against
    ~5 µs here). Unreadable bytes get empty columns; verification reports them."""
    run_id, seq, raw = r[0], r[1], r[2]
    f = peek_fields(raw, run_id) if isinstance(run_id, str) else None
    if f is None or not all(isinstance(f[k], str) for k in ("type", "ts", "actor", "visibility")):
        return StoredRow(run_id=run_id, seq=seq, type="", correlation_id=None, raw=raw)
    corr = f["correlation_id"]
    return StoredRow(
        run_id=run_id,
        seq=seq,
        type=f["type"],
        correlation_id=corr if isinstance(corr, str) else None,
        raw=raw,
        audit=AuditColumns(
            ts=f["ts"],
            actor=f["actor"],
            tool=tool_in(f["type"], f["payload"]),
            visibility=f["visibility"],
        ),
    )
