"""Ledger storage in a PostgreSQL store, shared by every worker on every machine.

Reservations are serialised by a transaction-scoped advisory lock (the PostgreSQL
counterpart of SQLite's BEGIN IMMEDIATE), so a check and its reservation are one atomic
step across processes. The ledger runs synchronously on its own connection: each call is
a handful of indexed statements over loopback, shorter than a hop to a thread. They are
pipelined: statements whose results nothing reads yet (the lock, the writes, the commit)
travel together, so a reservation costs a few round trips, not one per statement.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import StoreError
from ._tables import SQLLedgerTables

__all__ = ["PostgresLedgerTables"]

LEDGER_SCHEMA_PG = [
    """CREATE TABLE IF NOT EXISTS budget_limits (
        scope TEXT PRIMARY KEY,
        limits TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS budget_usage (
        scope TEXT NOT NULL,
        minute BIGINT NOT NULL,
        spent DOUBLE PRECISION NOT NULL DEFAULT 0,
        reserved DOUBLE PRECISION NOT NULL DEFAULT 0,
        PRIMARY KEY (scope, minute)
    )""",
    """CREATE TABLE IF NOT EXISTS budget_usage_hourly (
        scope TEXT NOT NULL,
        hour BIGINT NOT NULL,
        spent DOUBLE PRECISION NOT NULL DEFAULT 0,
        reserved DOUBLE PRECISION NOT NULL DEFAULT 0,
        PRIMARY KEY (scope, hour)
    )""",
    """CREATE TABLE IF NOT EXISTS budget_runs (
        run_id TEXT PRIMARY KEY,
        spent DOUBLE PRECISION NOT NULL DEFAULT 0,
        reserved DOUBLE PRECISION NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS budget_reservations (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        scopes TEXT NOT NULL,
        minute BIGINT NOT NULL,
        estimate DOUBLE PRECISION NOT NULL,
        actual DOUBLE PRECISION,
        state TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS budget_open ON budget_reservations (expires_at)"
    " WHERE state = 'reserved'",
    "CREATE INDEX IF NOT EXISTS budget_open_by_run ON budget_reservations (run_id)"
    " WHERE state = 'reserved'",
]

_LOCK = "tether:budget-ledger"


class PostgresLedgerTables(SQLLedgerTables):
    MARK = "%s"

    def __init__(self, conninfo: str, *, schema: str | None = None) -> None:
        import psycopg
        from psycopg import sql

        super().__init__()
        self._psycopg = psycopg
        self._pipeline: Any = None
        try:
            self.db: Any = psycopg.connect(conninfo, autocommit=True)
            with self.transaction():
                if schema is not None:
                    self.db.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                    )
                for statement in LEDGER_SCHEMA_PG:
                    self.db.execute(statement)
        except psycopg.Error as exc:
            raise StoreError(f"budget ledger: {' '.join(str(exc).split())}") from None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            yield
            return
        self._depth = 1
        try:
            with self.db.pipeline() as pipeline, self.db.transaction():
                self._pipeline = pipeline
                self.db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK,))
                yield
        except self._psycopg.Error as exc:
            raise StoreError(f"budget ledger: {' '.join(str(exc).split())}") from None
        finally:
            self._depth = 0
            self._pipeline = None

    def _count(self, cursor: Any) -> int:
        if self._pipeline is not None:
            self._pipeline.sync()  # a row count is known only once its result is back
        return int(cursor.rowcount)
