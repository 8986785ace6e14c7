"""PostgreSQL store: journals, snapshots, the run index and the work queue, shared by many
workers on many machines (psycopg 3, an async connection pool, autocommit).

The semantics are exactly those of the SQLite store; the contract suite runs on both.
The hot path is one round trip per append: a single statement whose data-modifying CTE
moves the run's head only if the lease epoch, the owner and the expected head all match,
and inserts the events only if it did, so a refused append writes nothing.

A dropped connection is never swallowed: reads are retried (they are idempotent), and an
append whose commit was in flight when the connection died is resolved by reading the
head back (the events' checksums say whether they landed) before it is retried or
reported as a StoreError. Workers wake on `LISTEN tether_runnable` (see `_schema.py`).

URL: `postgresql://user:password@host:port/dbname?schema=NAME&pool_max=10`. `schema`
(created if missing) and `pool_min`/`pool_max` are Tether's; every other query parameter
goes to libpq unchanged.

Its parts: the write statements (`_postgres_writes`), appends that carry budget ledger
work (`_postgres_ledger`), console tokens (`_postgres_tokens`), store URLs
(`_postgres_url`), the pool, migration and errors (`_postgres_core`), the work queue
(`_postgres_queue`); here runs and leases, appends, reads and snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from ..errors import LeaseHeld, LeaseLost, RunNotFound, StoreError, UsageError
from ..events import Event
from ..state import RunStatus
from ._base import Lease, RunRecord, RunSummary, StoredRow, check_continues
from ._index import (
    ACTOR_INDEX_TERM,
    AuditColumns,
    RowQuery,
    audit_columns,
    runs_where,
    sql_order,
    sql_where,
)
from ._postgres_core import _transient
from ._postgres_ledger import append_with_ledger
from ._postgres_queue import PostgresQueue
from ._postgres_url import parse_postgres_url
from ._postgres_writes import _CREATE, _PUT_SNAPSHOT, _RUN_COLUMNS
from ._postgres_writes import _append_statement as _append_statement
from ._postgres_writes import _execute as _execute
from ._postgres_writes import _raw_cursor as _raw_cursor

__all__ = ["PostgresStore", "parse_postgres_url"]

log = logging.getLogger("tether.store")

_APPEND_ATTEMPTS = 3

_EVENT_COLUMNS = "run_id, seq, type, correlation_id, data, ts, actor, tool, visibility"


def _stored(r: Sequence[Any]) -> StoredRow:
    return StoredRow(
        run_id=r[0],
        seq=r[1],
        type=r[2],
        correlation_id=r[3],
        raw=r[4],
        audit=AuditColumns(ts=r[5], actor=r[6], tool=r[7], visibility=r[8]),
    )


class PostgresStore(PostgresQueue):
    """Journals in PostgreSQL. Opened lazily: the pool connects on the first call."""

    # -- runs and leases --------------------------------------------------------------

    async def create_run(
        self,
        first: Event,
        *,
        agent: str,
        tenant: str | None,
        parent_run_id: str | None,
        summary: RunSummary,
        created_at: str | None = None,
    ) -> None:
        params = {
            "run_id": first.run_id, "agent": agent, "tenant": tenant, "parent": parent_run_id,
            "created_at": created_at or first.ts, "updated_at": summary.updated_at,
            "status": summary.status,
            "steps": summary.steps, "input_tokens": summary.input_tokens,
            "output_tokens": summary.output_tokens, "cost_usd": summary.cost_usd,
            "seq": first.seq, "hash": first.checksum, "type": first.type,
            "correlation_id": first.correlation_id, "data": first.raw,
        }  # fmt: skip
        a = audit_columns(first)
        params.update(ts=a.ts, actor=a.actor, tool=a.tool, visibility=a.visibility)
        async with self._conn() as conn:
            cur = await _execute(conn, _CREATE, params, sync=True)
            if cur.rowcount != 1:
                raise UsageError(f"run {first.run_id!r} already exists")

    def _record(self, row: Sequence[Any]) -> RunRecord:
        return RunRecord(
            run_id=row[0],
            agent=row[1],
            tenant=row[2],
            parent_run_id=row[3],
            created_at=row[4],
            summary=RunSummary(
                updated_at=row[5],
                status=row[6],
                steps=row[7],
                input_tokens=row[8],
                output_tokens=row[9],
                cost_usd=row[10],
            ),
            head_seq=row[11],
            head_hash=row[12],
            lease_owner=row[13],
            lease_epoch=row[14],
            lease_expires_at=row[15],
        )

    async def get_run(self, run_id: str) -> RunRecord:
        rows = await self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id=%s", (run_id,))
        if not rows:
            raise RunNotFound(run_id)
        return self._record(rows[0])

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        limit: int = 100,
        agent: str | None = None,
        tenant: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[RunRecord]:
        where, params = runs_where(
            status=status, agent=agent, tenant=tenant, since=since, until=until, mark="%s"
        )
        rows = await self._read(
            f"SELECT {_RUN_COLUMNS} FROM runs{where} "
            "ORDER BY created_at DESC, run_id DESC LIMIT %s",
            (*params, limit),
        )
        return [self._record(r) for r in rows]

    async def acquire_lease(
        self, run_id: str, *, owner: str, ttl_s: float, takeover_from: str | None = None
    ) -> Lease:
        now = self._clock.time()
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT lease_owner, lease_epoch, lease_expires_at FROM runs "
                "WHERE run_id=%s FOR UPDATE",
                (run_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise RunNotFound(run_id)
            holder, epoch, expires = row
            live = holder is not None and expires is not None and expires > now
            if live and holder not in (owner, takeover_from):
                raise LeaseHeld(f"run {run_id} is leased by {holder} for {expires - now:.0f}s more")
            lease = Lease(run_id=run_id, owner=owner, epoch=epoch + 1, expires_at=now + ttl_s)
            await conn.execute(
                "UPDATE runs SET lease_owner=%s, lease_epoch=%s, lease_expires_at=%s "
                "WHERE run_id=%s",
                (owner, lease.epoch, lease.expires_at, run_id),
            )
        return lease

    async def _check_lease(
        self, conn: psycopg.AsyncConnection[Any], lease: Lease
    ) -> tuple[int, str]:
        cur = await conn.execute(
            "SELECT lease_owner, lease_epoch, head_seq, head_hash FROM runs WHERE run_id=%s",
            (lease.run_id,),
        )
        row = await cur.fetchone()
        if row is None:
            raise RunNotFound(lease.run_id)
        if row[1] != lease.epoch or row[0] != lease.owner:
            raise LeaseLost(
                f"run {lease.run_id}: lease epoch {lease.epoch} is stale (current {row[1]})"
            )
        return row[2], row[3]

    async def _lock_lease(self, conn: psycopg.AsyncConnection[Any], lease: Lease) -> None:
        """Inside a transaction: lock the run's row and check the lease is current."""
        cur = await conn.execute(
            "SELECT lease_owner, lease_epoch FROM runs WHERE run_id=%s FOR UPDATE",
            (lease.run_id,),
        )
        row = await cur.fetchone()
        if row is None:
            raise RunNotFound(lease.run_id)
        if row[1] != lease.epoch or row[0] != lease.owner:
            raise LeaseLost(
                f"run {lease.run_id}: lease epoch {lease.epoch} is stale (current {row[1]})"
            )

    async def renew_lease(self, lease: Lease, *, ttl_s: float) -> Lease:
        expires = self._clock.time() + ttl_s
        async with self._conn() as conn:
            cur = await conn.execute(
                "UPDATE runs SET lease_expires_at=%s "
                "WHERE run_id=%s AND lease_epoch=%s AND lease_owner=%s",
                (expires, lease.run_id, lease.epoch, lease.owner),
            )
            if cur.rowcount != 1:
                await self._check_lease(conn, lease)
                raise LeaseLost(f"run {lease.run_id}: lease epoch {lease.epoch} is stale")
        return Lease(run_id=lease.run_id, owner=lease.owner, epoch=lease.epoch, expires_at=expires)

    async def release_lease(self, lease: Lease) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE runs SET lease_owner=NULL, lease_expires_at=NULL "
                "WHERE run_id=%s AND lease_epoch=%s AND lease_owner=%s",
                (lease.run_id, lease.epoch, lease.owner),
            )

    # -- journal ----------------------------------------------------------------------

    async def append(
        self,
        lease: Lease,
        events: Sequence[Event],
        *,
        summary: RunSummary,
        also: Callable[[], None] | None = None,
        sync: bool = False,
    ) -> None:
        if also is not None and not events:
            raise UsageError("append(also=...) needs at least one event")
        if also is not None and self._ledger_tables is None:
            raise UsageError("append(also=...) runs only this store's own ledger work")
        if not events:
            return
        first, last = events[0], events[-1]
        check_continues(first.seq - 1, None, events, lease.run_id)
        unflushed = not sync and self.synchronous == "normal"
        statement, params = _append_statement(lease, events, summary, unflushed=unflushed)
        for attempt in range(1, _APPEND_ATTEMPTS + 1):
            try:
                if also is not None:
                    await append_with_ledger(
                        self, lease, events, statement, params, also, sync=sync
                    )
                    return
                async with self._conn() as conn:
                    cur = await _execute(conn, statement, params, sync=sync)
                    if cur.rowcount == len(events):
                        return
                    # Refused: say why, exactly as the other backends do.
                    head_seq, head_hash = await self._check_lease(conn, lease)
                    check_continues(head_seq, head_hash, events, lease.run_id)
                    raise StoreError(f"run {lease.run_id}: append refused")  # pragma: no cover
            except StoreError as exc:
                if not _transient(exc):
                    raise
                # The connection died: the statement may or may not have committed.
                if await self._landed(lease.run_id, first, last, exc):
                    return
                if attempt == _APPEND_ATTEMPTS:
                    raise
                log.warning(
                    "%s; the append to %s did not land, retrying (%d/%d)",
                    exc, lease.run_id, attempt, _APPEND_ATTEMPTS - 1,
                )  # fmt: skip
                await asyncio.sleep(0.05 * 4 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _landed(self, run_id: str, first: Event, last: Event, cause: StoreError) -> bool:
        """Whether an append whose outcome a dropped connection hid did commit.

        The head names the last event's checksum only if these very events landed; if it
        is still where they were to go, they did not. Anything else is a conflict, or an
        outage that leaves the outcome unknown: both are raised.
        """
        try:
            rows = await self._read(
                "SELECT head_seq, head_hash FROM runs WHERE run_id=%s", (run_id,)
            )
        except StoreError as exc:
            raise StoreError(
                f"{cause}; whether the append to {run_id} landed is unknown ({exc})"
            ) from exc
        if not rows:
            raise RunNotFound(run_id)
        head = (rows[0][0], rows[0][1])
        if head == (last.seq, last.checksum):
            log.warning("%s; the append to %s had landed", cause, run_id)
            return True
        if head[0] == first.seq - 1 and first.follows(head[1]):
            return False
        raise StoreError(f"{cause}; the run {run_id} moved on meanwhile (head {head[0]})")

    async def read_rows(
        self, run_id: str, *, after_seq: int = 0, until_seq: int | None = None
    ) -> list[StoredRow]:
        rows = await self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events "
            "WHERE run_id=%s AND seq>%s AND seq<=%s ORDER BY seq",
            (run_id, after_seq, until_seq if until_seq is not None else 2**62),
        )
        await self._refresh_secrets()
        return [_stored(r) for r in rows]

    async def read_rows_at(self, run_id: str, seqs: Sequence[int]) -> list[StoredRow]:
        wanted = sorted({s for s in seqs if isinstance(s, int)})
        if not wanted:
            return []
        rows = await self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events "
            "WHERE run_id=%s AND seq = ANY(%s::bigint[]) ORDER BY seq",
            (run_id, wanted),
        )
        await self._refresh_secrets()
        return [_stored(r) for r in rows]

    async def query_rows(self, query: RowQuery) -> list[StoredRow]:
        """Audit queries on schema 3's indexed columns, with SQLite's semantics.

        An actor prefix is a LIKE (not SQLite's range up to U+10FFFF, which only the C
        collation orders last)."""
        prefix = query.actor if query.actor is not None and query.actor_prefix else None
        where, params = sql_where(
            dataclasses.replace(query, actor=None) if prefix is not None else query, mark="%s"
        )
        if prefix is not None:
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where += " AND actor LIKE %s"
            params.append(escaped + "%")
            if not "runtime".startswith(prefix):
                where += f" AND {ACTOR_INDEX_TERM}"
        limit = "" if query.limit is None else f" LIMIT {int(query.limit)}"
        rows = await self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE {where} ORDER BY {sql_order(query)}{limit}",
            params,
        )
        await self._refresh_secrets()
        return [_stored(r) for r in rows]

    async def put_snapshot(
        self, lease: Lease, run_id: str, seq: int, raw: bytes, *, keep: int
    ) -> None:
        fence = (lease.run_id, lease.epoch, lease.owner)
        params = (*fence, run_id, seq, keep, run_id, seq, raw, seq, run_id)
        async with self._conn() as conn:
            cur = await conn.execute(_PUT_SNAPSHOT, params)
            row = await cur.fetchone()
            if row is None or row[0] != 1:
                await self._check_lease(conn, lease)  # raises RunNotFound or LeaseLost
                raise StoreError(f"run {run_id}: snapshot refused")  # pragma: no cover

    async def read_snapshots(self, run_id: str) -> list[tuple[int, bytes]]:
        rows = await self._read(
            "SELECT seq, data FROM snapshots WHERE run_id=%s ORDER BY seq DESC", (run_id,)
        )
        return [(r[0], r[1]) for r in rows]

    async def truncate(
        self,
        lease: Lease,
        run_id: str,
        *,
        keep_through: int,
        head_hash: str,
        then: Sequence[Event] = (),
        summary: RunSummary | None = None,
    ) -> None:
        check_continues(keep_through, head_hash, then, lease.run_id)
        if then and summary is None:
            raise UsageError("truncate(then=...) needs the run's new summary")
        async with self._conn() as conn, conn.transaction():
            await self._lock_lease(conn, lease)
            await conn.execute(
                "DELETE FROM events WHERE run_id=%s AND seq>%s", (run_id, keep_through)
            )
            await conn.execute(
                "DELETE FROM snapshots WHERE run_id=%s AND seq>%s", (run_id, keep_through)
            )
            await conn.execute(
                "UPDATE runs SET head_seq=%s, head_hash=%s WHERE run_id=%s",
                (keep_through, head_hash, run_id),
            )
            if then and summary is not None:
                # The append's own fenced statement, now continuing the cut head.
                statement, params = _append_statement(lease, then, summary)
                cur = await conn.execute(statement, params)
                if cur.rowcount != len(then):  # pragma: no cover - the lease is locked
                    raise StoreError(f"run {run_id}: the repair's append was refused")

    async def run_ids(self) -> list[str]:
        return [
            r[0] for r in await self._read("SELECT run_id FROM runs ORDER BY created_at, run_id")
        ]

    def joins_ledger(self, tables: object) -> bool:
        """Whether `append(also=...)` can run these ledger tables' work in the append's own
        transaction: they must be this store's (`ledger_tables`)."""
        return tables is not None and tables is self._ledger_tables

    def ledger_tables(self) -> object:
        """The budget ledger's tables, in this store's database on a connection of their
        own, on which appends that carry ledger work run too (`append(also=...)`)."""
        if self._ledger_tables is None:
            from ..budget._tables_pg import PostgresLedgerTables

            self._ledger_tables = PostgresLedgerTables(self._conninfo, schema=self.schema)
        return self._ledger_tables

    async def close(self) -> None:
        self._closed = True
        if self._ledger_tables is not None:
            self._ledger_tables.close()
            self._ledger_tables = None
        for task in [self._listener, *self._background]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
