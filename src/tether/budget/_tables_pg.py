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
from ._ledger import ReservationRow
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

_SETTLE = """
WITH d AS (
    DELETE FROM budget_reservations
    WHERE id = %(id)s AND (state = 'reserved' OR (state = 'expired' AND %(actual)s > 0))
    RETURNING scopes, minute, run_id, state
), by_minute AS (
    INSERT INTO budget_usage (scope, minute, spent)
    SELECT e.scope, d.minute, %(actual)s
    FROM d, json_array_elements_text(d.scopes::json) AS e(scope) WHERE %(actual)s > 0
    ON CONFLICT (scope, minute) DO UPDATE SET spent = budget_usage.spent + excluded.spent
), by_hour AS (
    INSERT INTO budget_usage_hourly (scope, hour, spent)
    SELECT e.scope, d.minute / 60, %(actual)s
    FROM d, json_array_elements_text(d.scopes::json) AS e(scope) WHERE %(actual)s > 0
    ON CONFLICT (scope, hour) DO UPDATE SET spent = budget_usage_hourly.spent + excluded.spent
), by_run AS (
    INSERT INTO budget_runs (run_id, spent) SELECT d.run_id, %(actual)s FROM d
    WHERE %(actual)s > 0
    ON CONFLICT (run_id) DO UPDATE SET spent = budget_runs.spent + excluded.spent
)
SELECT state FROM d
"""
"""A settlement as one autocommit statement, one round trip: the hold goes (an expired
one too when it cost something: the money was spent) and its cost is counted. It needs
no lock: a reservation's check reads spend and holds in one statement, one snapshot, so
it sees the hold or its cost, never neither."""


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
            self._prefetched.clear()  # unread answers belong to the transaction that ended

    def prefetch(self, windows: list[tuple[str, int]], run_id: str | None) -> None:
        """Issue the check's reads before the limits' own read: pipelined, they all come
        back in the round trip that read brings (`totals` and `run_usage` take them)."""
        self._prefetched.clear()
        if windows:
            self._prefetched[("totals", tuple(windows))] = self._totals_query(windows)
        if run_id is not None:
            self._prefetched[("run", run_id)] = self._run_usage_query(run_id)

    def settle(self, row: ReservationRow, actual: float) -> bool:
        if self._depth:  # inside a transaction of the ledger's: join it
            return super().settle(row, actual)
        try:
            found = self.db.execute(_SETTLE, {"id": row.id, "actual": actual}).fetchone()
        except self._psycopg.Error as exc:
            raise StoreError(f"budget ledger: {' '.join(str(exc).split())}") from None
        return found is not None and found[0] == "reserved"

    def _count(self, cursor: Any) -> int:
        if self._pipeline is not None:
            self._pipeline.sync()  # a row count is known only once its result is back
        return int(cursor.rowcount)
