"""SQLite's audit copy in its compact form (schema 7): what each column holds, how a query
of `RowQuery` reads it, and the SQL that fills and checks it.

Schema 6 copied each event's audit columns as the text the envelope spells out: the whole
correlation id (the run id again, ~25 bytes), an ISO timestamp (27 bytes), `runtime` and
`user_hidden` on most rows; three indexes repeated the id and the time. That was 1.5 KB
of a 4.9 KB step. Schema 7 keeps the same information in less:

    corr        the correlation id after its run's id (`/c12`) when it starts with the
                run id and `/`; otherwise the whole id, behind a `\\x1f` when it would
                itself begin with `/` or `\\x1f` (so the two forms never collide)
    ts          microseconds since the epoch (an integer) when the text is the journal's
                ISO form exactly; otherwise the text (the column has no type affinity,
                so it stays text, and sorts after every number: the journal writes
                only its own form, so only a hand-made event has one)
    actor       NULL for `runtime`
    visibility  NULL for `user_hidden`

`type`, `tool`, `run` (the run's key) and `seq` are as before. A query takes its time
bounds as instants (`since`, `until` parsed as ISO-8601; a prefix of the journal's form,
`2026-12-03T08`, is completed with zeros) where the reference semantics compares text:
the two agree for every timestamp the journal writes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from .._envelope import micros_ts, ts_micros
from ..errors import UsageError
from ..events import Event
from ._base import StoredRow
from ._index import (
    CONTEXT_INDEX_TERM,
    CONTEXT_INDEX_TYPES,
    LOOP_TYPES,
    TYPE_INDEX_TERM,
    AuditColumns,
    RowQuery,
    tool_in,
)
from ._sections import RUN_SECTION_INDEX

__all__ = [
    "ACTOR_TERM",
    "AUDIT_COLUMNS",
    "AUDIT_INDEXES",
    "AUDIT_ROWS",
    "COPY_FROM_EVENTS",
    "DISAGREEING",
    "MIGRATE_TO_V7",
    "audit_order",
    "audit_row",
    "audit_where",
    "bound_us",
    "copied_row",
]

_SEP = "\x1f"
ACTOR_TERM = "actor IS NOT NULL"
"""The WHERE of the partial actor index (repeated by queries that may use it)."""
AUDIT_COLUMNS = "id, run, seq, type, corr, ts, actor, tool, visibility"

_TABLE = """CREATE TABLE audit_rows (
    id INTEGER PRIMARY KEY,
    run INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT,
    corr TEXT,
    ts,
    actor TEXT,
    tool TEXT,
    visibility TEXT
)"""
AUDIT_INDEXES = [
    "CREATE INDEX audit_by_correlation ON audit_rows (corr, run) WHERE corr IS NOT NULL",
    f"CREATE INDEX audit_by_type ON audit_rows (type, ts) WHERE {TYPE_INDEX_TERM}",
    "CREATE INDEX audit_by_tool ON audit_rows (tool, ts) WHERE tool IS NOT NULL",
    f"CREATE INDEX audit_by_actor ON audit_rows (actor, ts) WHERE {ACTOR_TERM}",
    "CREATE INDEX audit_by_ts ON audit_rows (ts)",
    # `why` rebuilds a model's context from a run's messages and compactions.
    f"CREATE INDEX audit_by_run_context ON audit_rows (run, type, seq) WHERE {CONTEXT_INDEX_TERM}",
    # A run page's approvals, health and endings (schema 8; see `_sections`).
    RUN_SECTION_INDEX,
]

_ISO = (
    "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]."
    "[0-9][0-9][0-9][0-9][0-9][0-9]Z"
)


def _corr_sql(corr: str, run_id: str) -> str:
    return (
        f"CASE WHEN {corr} IS NULL THEN NULL "
        f"WHEN substr({corr}, 1, length({run_id}) + 1) = {run_id} || '/' "
        f"THEN substr({corr}, length({run_id}) + 1) "
        f"WHEN substr({corr}, 1, 1) IN ('/', char(31)) THEN char(31) || {corr} "
        f"ELSE {corr} END"
    )


def _ts_sql(ts: str) -> str:
    # The same test as `ts_micros`: the exact form, and a real date and time (strftime
    # gives back the same text only for one).
    head = f"substr({ts}, 1, 19)"
    return (
        f"CASE WHEN {ts} GLOB '{_ISO}' AND strftime('%Y-%m-%dT%H:%M:%S', {head}) = {head} "
        f"THEN CAST(strftime('%s', {head}) AS INTEGER) * 1000000 "
        f"+ CAST(substr({ts}, 21, 6) AS INTEGER) ELSE {ts} END"
    )


def _encoded(e: str, run_id: str) -> str:
    """The schema-7 columns (named as in `audit_rows`) of a row of schema 6's (`e.…`)."""
    return (
        f"{e}.id AS id, {e}.run AS run, {e}.seq AS seq, {e}.type AS type, "
        f"{_corr_sql(f'{e}.correlation_id', run_id)} AS corr, {_ts_sql(f'{e}.ts')} AS ts, "
        f"NULLIF({e}.actor, 'runtime') AS actor, {e}.tool AS tool, "
        f"NULLIF({e}.visibility, 'user_hidden') AS visibility"
    )


COPY_FROM_EVENTS = (
    f"INSERT INTO audit_rows ({AUDIT_COLUMNS}) SELECT {_encoded('e', 'e.run_id')} "
    "FROM events e WHERE e.id > ? AND e.id NOT IN (SELECT id FROM audit_rows WHERE id > ?) "
    "ORDER BY e.id"
)
"""Copies events after an id (twice as parameter) that are not in `audit_rows` yet,
computing their columns from their bytes: events another process appended, a rebuild."""

AUDIT_ROWS = [
    _TABLE,
    COPY_FROM_EVENTS.replace("?", "0"),
    *AUDIT_INDEXES,
]
"""`audit_rows` made and filled from `events` (a new store, a rebuild)."""

_V6_INDEXES = (
    "audit_by_correlation",
    "audit_by_type",
    "audit_by_tool",
    "audit_by_actor",
    "audit_by_ts",
    "audit_by_run_context",
)
MIGRATE_TO_V7 = [
    "ALTER TABLE audit_rows RENAME TO audit_rows_v6",
    *(f"DROP INDEX IF EXISTS {name}" for name in _V6_INDEXES),
    _TABLE,
    # From schema 6's copy, not from the bytes: a column rewrite, no JSON parsing.
    f"INSERT INTO audit_rows ({AUDIT_COLUMNS}) SELECT {_encoded('a', 'k.run_id')} "
    "FROM audit_rows_v6 a JOIN run_keys k ON k.key = a.run ORDER BY a.id",
    "DROP TABLE audit_rows_v6",
    *AUDIT_INDEXES,
]

DISAGREEING = (
    "SELECT COUNT(*) FROM audit_rows a LEFT JOIN "
    f"(SELECT {_encoded('e', 'e.run_id')} FROM events e) x ON x.id = a.id "
    "WHERE x.id IS NULL OR a.run IS NOT x.run OR a.seq IS NOT x.seq OR a.type IS NOT x.type "
    "OR a.corr IS NOT x.corr OR a.ts IS NOT x.ts OR a.actor IS NOT x.actor "
    "OR a.tool IS NOT x.tool OR a.visibility IS NOT x.visibility"
)
"""Rows of `audit_rows` that are not what their event's bytes give (or have no event)."""


# -- Python's side of the same encoding -------------------------------------------------


def _corr(run_id: str, correlation_id: str | None) -> str | None:
    if correlation_id is None:
        return None
    if correlation_id.startswith(run_id + "/"):
        return correlation_id[len(run_id) :]
    return _whole(correlation_id)


def _whole(correlation_id: str) -> str:
    return _SEP + correlation_id if correlation_id[:1] in ("/", _SEP) else correlation_id


def _uncorr(run_id: str, corr: str | None) -> str | None:
    if corr is None:
        return None
    if corr[:1] == "/":
        return run_id + corr
    if corr[:1] == _SEP:
        return corr[1:]
    return corr


_sealed_ts = functools.lru_cache(maxsize=64)(ts_micros)
"""`ts_micros` for the writer's own events: the few of a step share a timestamp, and
parsing and checking one is most of what building a row costs."""


def audit_row(event_id: int, key: int, run_id: str, event: Event) -> tuple[Any, ...]:
    """The `audit_rows` values of an event this process sealed (`AUDIT_COLUMNS` order),
    then its bytes (the copy checks its event row still holds them). Read off the event
    itself, with no `AuditColumns` made for it: this runs for every event appended."""
    ts, actor, visibility = event.ts, event.actor, event.visibility
    us = _sealed_ts(ts)
    return (
        event_id, key, event.seq, event.type, _corr(run_id, event.correlation_id),
        ts if us is None else us,
        None if actor == "runtime" else actor,
        tool_in(event.type, event.payload),
        None if visibility == "user_hidden" else visibility,
        event.raw,
    )  # fmt: skip


def copied_row(r: Sequence[Any]) -> StoredRow:
    """A stored row from `(run_id, seq, data, type, corr, ts, actor, tool, visibility)`, its
    query columns decoded from the copy (verifying it checks them against the bytes)."""
    run_id, ts = r[0], r[5]
    return StoredRow(
        run_id=run_id,
        seq=r[1],
        type=r[3],
        correlation_id=_uncorr(run_id, r[4]),
        raw=r[2],
        audit=AuditColumns(
            ts=micros_ts(ts) if isinstance(ts, int) else ts,
            actor="runtime" if r[6] is None else r[6],
            tool=r[7],
            visibility="user_hidden" if r[8] is None else r[8],
        ),
    )


# -- queries ---------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FORM = "0000-01-01T00:00:00.000000Z"


def bound_us(text: str) -> int:
    """A query's time bound as microseconds since the epoch (see the module docstring)."""
    us = ts_micros(text)
    if us is None and len(text) < len(_FORM):
        us = ts_micros(text + _FORM[len(text) :])
    if us is not None:
        return us
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"{text!r} is not a time (ISO-8601)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // timedelta(microseconds=1)


def audit_where(q: RowQuery) -> tuple[str, list[Any]]:
    """The WHERE (without the keyword) and parameters of a query of `audit_rows a` joined
    to `run_keys k`: `RowQuery`'s semantics on the compact columns."""
    clauses: list[str] = []
    params: list[Any] = []

    def add(clause: str, *values: Any) -> None:
        clauses.append(clause)
        params.extend(values)

    if q.run_id is not None:
        add("k.run_id=?", q.run_id)
    if q.correlation_id is not None:
        # Stored relative to whichever run it begins with (any `/` may end a run id),
        # or whole.
        cid = q.correlation_id
        terms = ["a.corr=?"]
        values: list[Any] = [_whole(cid)]
        for i, ch in enumerate(cid):
            if ch == "/" and i > 0:
                terms.append("(a.corr=? AND a.run=(SELECT key FROM run_keys WHERE run_id=?))")
                values += [cid[i:], cid[:i]]
        add(f"({' OR '.join(terms)})", *values)
    if q.types:
        add(f"a.type IN ({','.join('?' * len(q.types))})", *q.types)
        if q.run_id is not None and set(q.types) <= set(CONTEXT_INDEX_TYPES):
            clauses.append(CONTEXT_INDEX_TERM)
        if not set(q.types) & set(LOOP_TYPES):
            clauses.append(TYPE_INDEX_TERM)
    if q.tool is not None:
        add("a.tool=?", q.tool)
    if q.actor is not None:
        if q.actor_prefix:
            # A range, so the (actor, ts) index serves it (LIKE would need the C collation).
            rng = "(a.actor>=? AND a.actor<?)"
            if "runtime".startswith(q.actor):
                add(f"(a.actor IS NULL OR {rng})", q.actor, q.actor + "\U0010ffff")
            else:
                add(f"{ACTOR_TERM} AND {rng}", q.actor, q.actor + "\U0010ffff")
        elif q.actor == "runtime":
            clauses.append("a.actor IS NULL")
        else:
            add(f"{ACTOR_TERM} AND a.actor=?", q.actor)
    if q.since is not None:
        add("a.ts>=?", bound_us(q.since))
    if q.until is not None:
        add("a.ts<?", bound_us(q.until))
    if q.after_seq is not None:
        add("a.seq>?", q.after_seq)
    if q.before_seq is not None:
        add("a.seq<?", q.before_seq)
    if q.visibilities is not None:
        shown = [v for v in q.visibilities if v != "user_hidden"] or [""]
        term = f"a.visibility IN ({','.join('?' * len(shown))})"
        if "user_hidden" in q.visibilities:
            term = f"(a.visibility IS NULL OR {term})"
        add(term, *shown)
    return (" AND ".join(clauses) or "1=1"), params


def audit_order(q: RowQuery) -> str:
    direction = " DESC" if q.newest_first else ""
    if q.run_id is not None:
        return f"a.seq{direction}"
    return f"a.ts{direction}, k.run_id{direction}, a.seq{direction}"
