"""The PostgreSQL store's appends that carry budget ledger work (`append(also=...)`).

Usually the work rides in the append statement itself (`budget._deferred_pg`): one
statement on the pool, one round trip, one commit. Otherwise the exact way: the append
and the ledger's own check-and-reserve in one transaction on the ledger's connection
(`PostgresLedgerTables.joined`), from a thread.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import psycopg

from ..budget._deferred_pg import NOT_DEFERRED
from ..errors import StoreError
from ..events import Event
from ._base import Lease, check_continues

if TYPE_CHECKING:
    from ._postgres import PostgresStore

__all__ = ["append_with_ledger"]

APPEND_MAIN = ")\nINSERT INTO events"
"""Where the append statement's WITH clause ends: ledger clauses are spliced in there."""
_FENCE_GUARD = (
    "SELECT 1 / count(*)::int FROM runs WHERE run_id=%s AND head_seq=%s AND head_hash=%s "
    "AND lease_epoch=%s AND lease_owner=%s"
)
"""After a fenced append in a pipelined transaction: fails (division by zero) unless the
append moved the head under this lease, which aborts the transaction and all after it."""
_GUARD_FAILED = (psycopg.errors.DivisionByZero, psycopg.errors.PipelineAborted)
"""What a guard's failure (or a statement the pipeline skipped after it) raises."""


async def append_with_ledger(
    store: PostgresStore,
    lease: Lease,
    events: Sequence[Event],
    statement: str,
    params: list[Any],
    also: Callable[[], None],
    *,
    sync: bool,
) -> None:
    """The fenced append `statement` with the ledger's work `also`. Work the server can do
    without an answer first (a settlement; a reservation checked against the limits last
    read) becomes clauses of the statement itself, on the pool. Anything else, or a
    reservation the server did not insert, takes the exact way (`_append_joined`)."""
    from ._postgres import _execute

    tables = store._ledger_tables
    assert tables is not None
    extra = tables.deferred(also, "moved") if APPEND_MAIN in statement else None
    if extra is not None:
        combined, split = _combined(statement, extra.clauses)
        merged = [*params[:split], *extra.params, *params[split:]]
        try:
            async with store._conn() as conn:
                cur = await _execute(conn, combined, merged, sync=sync)
                if cur.rowcount == len(events):
                    return
                head_seq, head_hash = await store._check_lease(conn, lease)
                check_continues(head_seq, head_hash, events, lease.run_id)
                raise StoreError(f"run {lease.run_id}: append refused")  # pragma: no cover
        except StoreError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != NOT_DEFERRED:
                raise
            # Not reserved: a denial, or limits changed since the ledger read them.
    await _append_joined(store, lease, events, statement, params, also, sync=sync)


@functools.lru_cache(maxsize=256)
def _combined(statement: str, clauses: str) -> tuple[str, int]:
    """The append `statement` with ledger `clauses` spliced into its WITH, and how many of
    its parameters come before theirs. Cached: both strings are the same objects every time
    (`_append_sql`, `_deferred_pg`), so a hit costs no hashing of a 3 KB statement."""
    head, sep, tail = statement.partition(APPEND_MAIN)
    return f"{head}), {clauses}{sep[1:]}{tail}", head.count("%s")


async def _append_joined(
    store: PostgresStore,
    lease: Lease,
    events: Sequence[Event],
    statement: str,
    params: list[Any],
    also: Callable[[], None],
    *,
    sync: bool,
) -> None:
    """The append and the ledger's work (`also`) in one transaction on the ledger's
    connection (see `PostgresLedgerTables.joined`): one commit. The fence's outcome is not
    read before `also` runs: a guard statement aborts the transaction when the fence
    refused the append, so nothing `also` wrote can commit without the events."""
    tables = store._ledger_tables
    assert tables is not None
    await store._ready()
    last = events[-1]
    guard = (_FENCE_GUARD, (lease.run_id, last.seq, last.checksum, lease.epoch, lease.owner))
    try:
        await asyncio.to_thread(tables.joined, [(statement, params), guard], also, sync=sync)
    except psycopg.Error as exc:
        if not isinstance(exc, _GUARD_FAILED):
            raise store._error(exc) from exc
        # The guard's error (or a statement after it, aborted): say why it was refused.
        async with store._conn() as conn:
            head_seq, head_hash = await store._check_lease(conn, lease)
        check_continues(head_seq, head_hash, events, lease.run_id)
        raise store._error(exc) from exc
