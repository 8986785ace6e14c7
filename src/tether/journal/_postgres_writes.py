"""The PostgreSQL store's write statements: the fenced append (one statement, one round
trip, prepared per batch size), a run's creation and a snapshot, and how they are sent.

The append's data-modifying CTE moves the run's head only if the lease epoch, the owner
and the expected head all match, and inserts the events only if it did, so a refused
append writes nothing (`_postgres_ledger` splices the budget ledger's clauses into it).

Under `synchronous=normal` an append that is not at a sync boundary turns
`synchronous_commit` off for its own transaction from inside the statement (one round trip,
as always), so its commit does not wait for the flush: what SQLite's default does. A later
flushed commit makes it durable too (the WAL is written in order), so a database crash
loses only the newest such appends, never one before a boundary.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import psycopg

from ..events import Event
from ._base import Lease, RunSummary
from ._index import audit_columns

_RUN_COLUMNS = (
    "run_id, agent, tenant, parent_run_id, created_at, updated_at, status, steps, "
    "input_tokens, output_tokens, cost_usd, head_seq, head_hash, lease_owner, lease_epoch, "
    "lease_expires_at"
)

_APPEND_HEAD = """
WITH moved AS (
    UPDATE runs SET head_seq=%s, head_hash=%s, status=%s, steps=%s, input_tokens=%s,
        output_tokens=%s, cost_usd=%s, updated_at=%s
    WHERE run_id=%s AND lease_epoch=%s AND lease_owner=%s AND head_seq=%s
        AND left(head_hash, 16)=left(%s, 16){unflushed}
    RETURNING run_id
)
INSERT INTO events (run_id, seq, type, correlation_id, data, ts, actor, tool, visibility)
SELECT moved.run_id, e.seq, e.type, e.correlation_id, e.data, e.ts, e.actor, e.tool,
    e.visibility
FROM moved, (VALUES {rows}) AS e(seq, type, correlation_id, data, ts, actor, tool, visibility)
"""
_APPEND_ROW = "(%s::bigint, %s, %s, %s::bytea, %s, %s, %s, %s)"
_UNFLUSHED = "\n        AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'"
"""A one-time filter of the head move: its transaction's commit skips the flush."""
_APPENDS: dict[tuple[int, bool], str] = {}


def _append_statement(
    lease: Lease, events: Sequence[Event], summary: RunSummary, *, unflushed: bool = False
) -> tuple[str, list[Any]]:
    """The fenced append of `events` (see `_append_sql`) and its parameters; `unflushed`,
    its commit does not wait for the WAL flush (see the module docstring)."""
    first, last = events[0], events[-1]
    params: list[Any] = [
        last.seq, last.checksum, summary.status, summary.steps, summary.input_tokens,
        summary.output_tokens, summary.cost_usd, summary.updated_at, lease.run_id,
        lease.epoch, lease.owner, first.seq - 1, first.prev_hash,
    ]  # fmt: skip
    for e in events:
        a = audit_columns(e)
        params += (e.seq, e.type, e.correlation_id, e.raw, a.ts, a.actor, a.tool, a.visibility)
    return _append_sql(len(events), unflushed), params


def _append_sql(count: int, unflushed: bool = False) -> str:
    """The append statement for `count` events: scalar parameters (adapting Python lists to
    arrays costs more than the statement), one prepared statement per batch size."""
    found = _APPENDS.get((count, unflushed))
    if found is None:
        found = _APPENDS[count, unflushed] = _APPEND_HEAD.format(
            rows=", ".join([_APPEND_ROW] * count), unflushed=_UNFLUSHED if unflushed else ""
        )
    return found


@functools.lru_cache(maxsize=128)
def _numbered(statement: str) -> str:
    """`statement` with its `%s` placeholders as PostgreSQL's `$1, $2, …`.

    psycopg parses a query's placeholders in Python on every call once the query is over
    4 KB or 50 parameters (its own cache stops there), and a step's append with the
    ledger's clauses is both: ~0.2 ms of CPU per step. Numbered here once, it goes to a raw
    cursor, which sends it as it is."""
    parts = statement.split("%s")
    if any("%" in part for part in parts):
        raise ValueError("only %s placeholders can be numbered")
    return "".join(f"{part}${i}" for i, part in enumerate(parts[:-1], start=1)) + parts[-1]


async def _execute(
    conn: psycopg.AsyncConnection[Any],
    statement: str,
    params: Sequence[Any] | dict[str, Any],
    *,
    sync: bool,
) -> psycopg.AsyncCursor[Any] | psycopg.AsyncRawCursor[Any]:
    """Run one write statement; with `sync`, its commit waits for the WAL flush whatever
    the session's `synchronous_commit` (a user may run the database with it off).
    Positional (`%s`) statements go numbered to a raw cursor (see `_numbered`)."""
    if sync:
        async with conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit TO on")
            return await _execute(conn, statement, params, sync=False)
    if isinstance(params, dict):
        return await conn.execute(statement, params)
    return await _raw_cursor(conn).execute(_numbered(statement), params)


def _raw_cursor(conn: psycopg.AsyncConnection[Any]) -> psycopg.AsyncRawCursor[Any]:
    """The connection's raw cursor for appends, made once: a cursor made per append
    (its adapters copied) cost ~30-90 us of CPU on a step's cold caches. The pool hands a
    connection to one task at a time, and each caller reads the cursor's row count before
    it gives the connection back, so sharing it is safe; it goes with its connection."""
    cursor: psycopg.AsyncRawCursor[Any] | None = getattr(conn, _CURSOR_ATTRIBUTE, None)
    if cursor is None or cursor.closed:
        cursor = psycopg.AsyncRawCursor(conn)
        setattr(conn, _CURSOR_ATTRIBUTE, cursor)
    return cursor


_CURSOR_ATTRIBUTE = "_tether_raw_cursor"


_CREATE = f"""
WITH created AS (
    INSERT INTO runs ({_RUN_COLUMNS})
    VALUES (%(run_id)s, %(agent)s, %(tenant)s, %(parent)s, %(created_at)s, %(updated_at)s,
            %(status)s, %(steps)s, %(input_tokens)s, %(output_tokens)s, %(cost_usd)s,
            %(seq)s, %(hash)s, NULL, 0, NULL)
    ON CONFLICT (run_id) DO NOTHING
    RETURNING run_id
)
INSERT INTO events (run_id, seq, type, correlation_id, data, ts, actor, tool, visibility)
SELECT run_id, %(seq)s, %(type)s, %(correlation_id)s, %(data)s, %(ts)s, %(actor)s, %(tool)s,
    %(visibility)s
FROM created
"""

_PUT_SNAPSHOT = """
WITH fenced AS MATERIALIZED (
    SELECT run_id FROM runs WHERE run_id=%s AND lease_epoch=%s AND lease_owner=%s FOR UPDATE
), newest AS MATERIALIZED (
    SELECT s FROM (SELECT seq AS s FROM snapshots WHERE run_id=%s UNION SELECT %s::bigint) AS u
    ORDER BY s DESC LIMIT %s
), kept AS (
    INSERT INTO snapshots (run_id, seq, data)
    SELECT %s, %s::bigint, %s::bytea FROM fenced WHERE %s::bigint IN (SELECT s FROM newest)
    ON CONFLICT (run_id, seq) DO UPDATE SET data = EXCLUDED.data
), pruned AS (
    DELETE FROM snapshots WHERE run_id=%s AND EXISTS (SELECT 1 FROM fenced)
        AND seq NOT IN (SELECT s FROM newest)
)
SELECT count(*) FROM fenced
"""
"""A snapshot in one statement, one round trip (a transaction of its own took five): under
the run's row lock, only while the lease is current, and the newest `keep` of the old
snapshots and this one are what stays. The new row is written only if it is among them,
so no row is both written and deleted (one statement sees one snapshot of the table)."""
