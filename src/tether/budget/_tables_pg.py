"""Ledger storage in a PostgreSQL store, shared by every worker on every machine.

Reservations are serialised by a transaction-scoped advisory lock (the PostgreSQL
counterpart of SQLite's BEGIN IMMEDIATE), so a check and its reservation are one atomic
step across processes. The lock is per schema (stores in other schemas never wait for
it), a wait for it is bounded (`lock_timeout`), and a session that stops answering while
it holds it (a process frozen by SIGSTOP) is ended by the server after
`idle_in_transaction_session_timeout`, which frees the lock. The ledger runs synchronously
on its own connection, off the event loop (`blocking`: the `Ledger` calls it from a
thread), so a wait never stops a worker's lease renewals. Statements are pipelined:
those whose results nothing reads yet (the lock, the writes, the commit) travel together,
so a reservation costs a few round trips, not one per statement.

A model call's ledger work joins the store's append. Usually it rides in the append's
own statement on the store's pool (`deferred`, see `_deferred_pg`). The exact way
(`joined`), for a reservation the server did not insert or one due a sweep, runs on this
connection: the fenced append, a guard that aborts the transaction if the fence refused
it, and the ledger's check-and-reserve, in one transaction with one commit (two round
trips: the check reads before it writes).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import StoreError, UsageError
from ._deferred_pg import (
    FIRST_FITS_SIGNATURE,
    FITS_FUNCTION,
    FITS_SIGNATURE,
    Deferred,
    DeferredReservation,
    reservation_clauses,
    settlement_clauses,
)
from ._ledger import ReservationRow
from ._model import BudgetLimits, LimitChange
from ._tables_sql import SQLLedgerTables

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

_LOCK = "tether:budget-ledger:"
"""Prefix of the advisory lock's key; the schema the ledger lives in completes it."""
LOCK_TIMEOUT_S = 5.0
"""The longest a reservation waits for another process's; then it fails (StoreError)."""
IDLE_TIMEOUT_S = 15.0
"""A ledger session idle inside a transaction this long is ended by the server."""

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


LIMIT_CHANGES_PG = """CREATE TABLE IF NOT EXISTS budget_limit_changes (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    scope TEXT NOT NULL,
    limits TEXT,
    actor TEXT NOT NULL
)"""
"""Who changed which limits: made with the first change (under the ledger's lock), so a
schema set up before it existed gets it without a migration, and opening costs nothing."""


class _NotDeferrable(Exception):
    """Ledger work that must read before it writes: it cannot ride in an append statement."""


class PostgresLedgerTables(SQLLedgerTables):
    MARK = "%s"
    blocking = True
    """Every call waits on a server: the `Ledger` makes it from a thread."""
    lock: threading.Lock
    """One operation at a time on the one connection: the `Ledger`'s own and the store's
    joined appends (both from threads) take it."""

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str | None = None,
        lock_timeout_s: float = LOCK_TIMEOUT_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        import psycopg
        from psycopg import sql

        super().__init__()
        self._psycopg = psycopg
        self._pipeline: Any = None
        self._conninfo = conninfo
        self._lock_timeout_ms = max(1, int(lock_timeout_s * 1000))
        self._idle_timeout_ms = max(1, int(idle_timeout_s * 1000))
        self._schema = schema
        self._lock_key = ""
        self.lock = threading.Lock()
        self._joined = False
        """Inside a store's append (`joined`): the ledger's transaction is that one."""
        self._locked = False
        """Whether the advisory lock is held by the joined transaction."""
        self._committed = False
        """Whether the joined transaction's COMMIT has been sent (by a settlement)."""
        self._deferring = threading.local()
        """Per thread: ledger work recorded for a store's append statement (`deferred`)."""
        try:
            self.db: Any = self._connect()
            if not self._set_up():
                with self.transaction():
                    if not self._set_up():
                        if schema is not None:
                            self.db.execute(
                                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                                    sql.Identifier(schema)
                                )
                            )
                        # Tables made with the first check function need only the new
                        # one: no DDL that locks a table other versions' workers use.
                        made = self._set_up(FIRST_FITS_SIGNATURE)
                        for statement in [*([] if made else LEDGER_SCHEMA_PG), FITS_FUNCTION]:
                            self.db.execute(statement)
        except psycopg.Error as exc:
            raise StoreError(f"budget ledger: {' '.join(str(exc).split())}") from None

    def _set_up(self, signature: str = FITS_SIGNATURE) -> bool:
        """Whether the tables exist (the function, created last with them, says so).

        Checked before any DDL: a CREATE INDEX IF NOT EXISTS locks its table even when the
        index exists, and a deferred reservation (see `_deferred_pg`) holds that table
        while it waits for the advisory lock the DDL's transaction holds: a deadlock."""
        row = self.db.execute("SELECT to_regprocedure(%s) IS NOT NULL", (signature,))
        found = row.fetchone()
        return bool(found and found[0])

    def _connect(self) -> Any:
        db = self._psycopg.connect(self._conninfo, autocommit=True)
        db.execute(f"SET idle_in_transaction_session_timeout = {self._idle_timeout_ms}")
        # For the whole session: a lock wait of the ledger's, or of a joined append's, is
        # bounded without one more statement per transaction.
        db.execute(f"SET lock_timeout = {self._lock_timeout_ms}")
        schema = self._schema
        if schema is None:
            row = db.execute("SELECT current_schema()").fetchone()
            schema = str(row[0] if row else "")
        self._lock_key = _LOCK + schema
        return db

    def _usable(self) -> Any:
        """The connection, made again if the server ended it (see IDLE_TIMEOUT_S)."""
        if self.db.closed or self.db.broken:
            with contextlib.suppress(self._psycopg.Error):
                self.db.close()
            self.db = self._connect()
        return self.db

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._not_deferring()
        if self._depth:
            if self._joined and not self._locked:
                # A check-and-reserve inside a store's append: serialise it like any.
                self._locked = True
                self._take_lock(self.db)
            yield
            return
        self._depth = 1
        try:
            db = self._usable()
            with db.pipeline() as pipeline, db.transaction():
                self._pipeline = pipeline
                self._take_lock(db)
                yield
        except self._psycopg.Error as exc:
            raise StoreError(f"budget ledger: {' '.join(str(exc).split())}") from None
        finally:
            self._depth = 0
            self._pipeline = None
            self._prefetched.clear()  # unread answers belong to the transaction that ended

    def deferred(self, also: Callable[[], None], moved: str) -> Deferred | None:
        """`also`'s ledger work as clauses of a store's append statement (see
        `_deferred_pg`), acting only if the clause named `moved` returned a row; None if
        it cannot be (then use `joined`). `also` runs here, on the caller's thread,
        touching no server; an exception it raises propagates (and nothing is written).

        A deferred settlement answers True (the hold is settled with its events or not at
        all; a hold reclaimed meanwhile has its cost counted all the same), a deferred
        reservation its hold: the server makes sure it fits before anything commits."""
        local = self._deferring
        local.work = []
        try:
            also()
        except _NotDeferrable:
            return None
        finally:
            work: list[Any] = local.work
            local.work = None
        if len(work) != 1:
            return None
        if isinstance(work[0], DeferredReservation):
            return reservation_clauses(work[0], moved, self._lock_key, self._lock_timeout_ms)
        reservation_id, actual = work[0]
        return settlement_clauses(reservation_id, actual, moved)

    def deferring(self) -> bool:
        """Whether ledger work on this thread is being recorded for an append (`deferred`)."""
        return getattr(self._deferring, "work", None) is not None

    def defer_reservation(self, reservation: DeferredReservation) -> None:
        self._deferring.work.append(reservation)

    def record_limit_change(self, change: LimitChange) -> None:
        self.db.execute(LIMIT_CHANGES_PG)
        super().record_limit_change(change)

    def limit_changes(self, limit: int) -> list[LimitChange]:
        found = self.db.execute("SELECT to_regclass('budget_limit_changes') IS NOT NULL")
        row = found.fetchone()
        return super().limit_changes(limit) if row and row[0] else []

    def cached_limits(self) -> tuple[tuple[tuple[str, str], ...], dict[str, BudgetLimits]]:
        """The stored limits as last read (rows, parsed), without reading them again."""
        return self._limits_rows, dict(self._limits)

    def _not_deferring(self) -> None:
        if self.deferring():
            raise _NotDeferrable

    def _take_lock(self, db: Any) -> None:
        db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._lock_key,))

    def joined(
        self,
        statements: Sequence[tuple[str, Sequence[Any]]],
        also: Callable[[], None],
        *,
        sync: bool,
    ) -> None:
        """Run a store's `statements` (its fenced append and the guard that aborts the
        transaction when the fence refused it), then `also` (the ledger's reserve or
        settle), in one pipelined transaction on this connection: one commit.

        The transaction is spelled out (BEGIN ... COMMIT) so that a settlement, the last
        thing its append does, can send the COMMIT with its own statement: one round trip.
        Blocking (call it from a thread). psycopg errors propagate unchanged, so the store
        can tell a refused fence or a dropped connection from anything else; whatever
        `also` raises before the commit rolls everything back and propagates too."""
        with self.lock:
            if self._depth:  # pragma: no cover - the lock serialises every caller
                raise UsageError("the budget ledger is already in a transaction")
            self._depth = 1
            self._joined = True
            self._committed = False
            db = self._usable()
            try:
                with db.pipeline() as pipeline:
                    self._pipeline = pipeline
                    db.execute("BEGIN")
                    if sync:
                        db.execute("SET LOCAL synchronous_commit TO on")
                    for statement, params in statements:
                        db.execute(statement, params)
                    also()
                    if not self._committed:
                        self._committed = True
                        db.execute("COMMIT")
            finally:
                self._depth = 0
                self._joined = self._locked = False
                self._pipeline = None
                self._prefetched.clear()
                self._end_failed_transaction(db)

    def _end_failed_transaction(self, db: Any) -> None:
        """After an error (in a pipeline the server skips everything up to the sync, the
        COMMIT too), roll back whatever is still open; a broken connection is made again
        by the next call (`_usable`)."""
        if db.closed or db.broken:
            return
        if db.info.transaction_status != self._psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(self._psycopg.Error):
                db.execute("ROLLBACK")

    def prefetch(self, windows: list[tuple[str, int]], run_id: str | None) -> None:
        """Issue the check's reads before the limits' own read: pipelined, they all come
        back in the round trip that read brings (`totals` and `run_usage` take them)."""
        self._prefetched.clear()
        if windows:
            self._prefetched[("totals", tuple(windows))] = self._totals_query(windows)
        if run_id is not None:
            self._prefetched[("run", run_id)] = self._run_usage_query(run_id)

    def settle(self, row: ReservationRow, actual: float) -> bool:
        if self.deferring():
            self._deferring.work.append((row.id, actual))
            return True
        params = {"id": row.id, "actual": actual}
        if self._joined:
            # The last statement of its append's transaction: the COMMIT travels with it.
            if self._committed:
                raise UsageError("a settlement ends its append's transaction: one per append")
            cursor = self.db.execute(_SETTLE, params)
            self._committed = True
            self.db.execute("COMMIT")
            found = cursor.fetchone()
        elif self._depth:  # inside a transaction of the ledger's own: one more statement
            found = self.db.execute(_SETTLE, params).fetchone()
        else:
            try:
                found = self._usable().execute(_SETTLE, params).fetchone()
            except self._psycopg.Error as exc:
                raise StoreError(f"budget ledger: {' '.join(str(exc).split())}") from None
        return found is not None and found[0] == "reserved"

    def _count(self, cursor: Any) -> int:
        if self._pipeline is not None:
            self._pipeline.sync()  # a row count is known only once its result is back
        return int(cursor.rowcount)
