"""Ledger storage: in memory (tests, memory://) and in the SQLite store's file.

The statements SQLite shares with PostgreSQL are in `_tables_sql`; what every backend
shares (finishing and settling a hold, the sums of open holds) in `_tables_shared`.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import StoreError
from . import _sqlite_rows as rows
from ._ledger import ReservationRow
from ._model import BudgetLimits, LimitChange
from ._tables_shared import FINISHED_STATES, finish_in, held_in_windows, settle_in
from ._tables_sql import SQLLedgerTables, scopes_json

__all__ = ["FINISHED_STATES", "MemoryLedgerTables", "SQLiteLedgerTables"]


class MemoryLedgerTables:
    def __init__(self) -> None:
        self.buckets: dict[str, dict[int, float]] = defaultdict(dict)
        self.runs: dict[str, float] = defaultdict(float)
        self.rows: dict[str, tuple[ReservationRow, float]] = {}
        self.limit_table: dict[str, BudgetLimits] = {}
        self.changes: list[LimitChange] = []

    @contextmanager
    def transaction(self) -> Iterator[None]:
        yield  # one event loop thread and no awaits inside: already atomic

    def expired(self, now: float) -> list[ReservationRow]:
        return [r for r, exp in self.rows.values() if r.state == "reserved" and exp <= now]

    def usage(self, scope: str, from_minute: int) -> list[tuple[int, float]]:
        b = self.buckets.get(scope, {})
        return [(m, b[m]) for m in sorted(b) if m >= from_minute]

    def _open(self) -> list[ReservationRow]:
        return [r for r, _ in self.rows.values() if r.state == "reserved"]

    def totals(self, windows: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[float, float]]:
        held = held_in_windows([(r.scopes, r.minute, r.estimate) for r in self._open()], windows)
        out = {}
        for window in windows:
            scope, start = window
            b = self.buckets.get(scope, {})
            out[window] = (sum(v for m, v in b.items() if m >= start), held[window])
        return out

    def run_usage(self, run_id: str) -> tuple[float, float]:
        held = sum(r.estimate for r in self._open() if r.run_id == run_id)
        return self.runs.get(run_id, 0.0), held

    def add_spend(self, row: ReservationRow, spent: float) -> None:
        for scope in row.scopes:
            bucket = self.buckets[scope]
            bucket[row.minute] = bucket.get(row.minute, 0.0) + spent
        self.runs[row.run_id] += spent

    def insert(self, row: ReservationRow, *, created: float, expires: float) -> None:
        self.rows[row.id] = (row, expires)

    def finish(self, row: ReservationRow, state: str, actual: float | None) -> bool:
        return finish_in(self, row, state, actual)

    def settle(self, row: ReservationRow, actual: float) -> bool:
        return settle_in(self, row, actual)

    def get(self, reservation_id: str) -> ReservationRow | None:
        found = self.rows.get(reservation_id)
        return found[0] if found else None

    def set_state(
        self, reservation_id: str, state: str, actual: float | None, *, from_state: str = "reserved"
    ) -> bool:
        found = self.rows.get(reservation_id)
        if found is None or found[0].state != from_state:
            return False
        if state in FINISHED_STATES:
            del self.rows[reservation_id]
            return True
        row, expires = found
        self.rows[reservation_id] = (
            ReservationRow(
                id=row.id,
                run_id=row.run_id,
                scopes=row.scopes,
                minute=row.minute,
                estimate=row.estimate,
                state=state,
            ),
            expires,
        )
        return True

    def open_of_run(self, run_id: str) -> list[ReservationRow]:
        return [r for r in self._open() if r.run_id == run_id]

    def limits(self) -> dict[str, BudgetLimits]:
        return dict(self.limit_table)

    def set_limits(self, scope: str, limits: BudgetLimits | None) -> None:
        if limits is None:
            self.limit_table.pop(scope, None)
        else:
            self.limit_table[scope] = limits

    def record_limit_change(self, change: LimitChange) -> None:
        self.changes.append(change)

    def limit_changes(self, limit: int) -> list[LimitChange]:
        return self.changes[::-1][:limit]

    def known_scopes(self) -> list[str]:
        return sorted(set(self.buckets).union(*(r.scopes for r in self._open())))


# The `reserved` columns of the usage tables are no longer written: open holds are read
# from `budget_reservations` itself, so reserving a call writes one row, not four.
_LIMITS_TABLE = """CREATE TABLE IF NOT EXISTS budget_limits (
    scope TEXT PRIMARY KEY,
    limits TEXT NOT NULL
)"""
_CHANGES_TABLE = (
    # Who changed which limits, and when: appended beside each change, never updated.
    """CREATE TABLE IF NOT EXISTS budget_limit_changes (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        scope TEXT NOT NULL,
        limits TEXT,
        actor TEXT NOT NULL
    )"""
)
# No secondary indexes on holds: a hold's row is deleted when it is settled or released,
# so only calls in flight and reclaimed ones have one, and every index would cost each
# reservation one more page written at commit.
LEDGER_SCHEMA = [_LIMITS_TABLE, *rows.SCHEMA, _CHANGES_TABLE]
"""The SQLite ledger's tables (schema 9: spend and holds in `budget_ledger`, see
`_sqlite_rows`)."""


class SQLiteLedgerTables(SQLLedgerTables):
    """The ledger's tables live in the store's own file, on the store's connection: the
    ledger's work joins a transaction the store has open (an append), so a step's
    reservation and its events commit together. The store closes the connection."""

    def __init__(
        self,
        path: Path,
        *,
        db: sqlite3.Connection,
        on_commit: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        super().__init__()
        self.path = path
        self.db = db
        self._on_commit = on_commit
        self._limits_version: int | None = None
        """`PRAGMA data_version` when the cached limits were read (None: read again)."""
        self._limits_written = False
        """This connection changed limits in a transaction that may not have ended."""
        try:
            with self.transaction():
                for statement in LEDGER_SCHEMA:
                    self.db.execute(statement)
        except sqlite3.Error as exc:
            raise StoreError(f"budget ledger in {path}: {exc}") from None

    def close(self) -> None:
        pass  # the connection is the store's

    def settle(self, row: ReservationRow, actual: float) -> bool:
        """Inside the store's append (the usual case: a model call's settlement rides in
        the commit of its `model.completed`): the hold's row deleted and the cost counted,
        two statements and nothing else; otherwise, or when the hold was not open, the
        general path (`settle_in`)."""
        db = self.db
        if db.in_transaction and db.execute(rows.DELETE_HOLD, (row.id, "reserved")).rowcount == 1:
            if actual:
                self.add_spend(row, actual)
            return True
        return settle_in(self, row, actual)

    def add_spend(self, row: ReservationRow, spent: float) -> None:
        """Count a settled call's cost in its minute and hour of every scope and in its
        run: one statement, one table (see `_sqlite_rows`)."""
        hour = row.minute // 60
        params: list[object] = []
        for scope in row.scopes:
            params += (scope, row.minute, spent, scope, hour, spent)
        params += (row.run_id, spent)
        self.db.execute(rows.add_spend_sql(len(row.scopes)), params)

    def insert(self, row: ReservationRow, *, created: float, expires: float) -> None:
        self.db.execute(
            rows.INSERT_HOLD,
            (row.id, row.run_id, scopes_json(row.scopes), row.minute, row.estimate, row.state,
             created, expires),
        )  # fmt: skip

    def set_state(
        self, reservation_id: str, state: str, actual: float | None, *, from_state: str = "reserved"
    ) -> bool:
        # On the table itself: a view's rowcount leaves out what its triggers changed.
        if state in FINISHED_STATES:
            moved = self.db.execute(rows.DELETE_HOLD, (reservation_id, from_state))
        else:
            moved = self.db.execute(rows.UPDATE_HOLD, (state, actual, reservation_id, from_state))
        return bool(moved.rowcount == 1)

    def limits(self) -> dict[str, BudgetLimits]:
        """The stored limits, read again only when they may have changed.

        Every check reads them, so a change by another process or `tether budget set`
        is obeyed at the next one. Unchanged, they cost a step one statement and the
        rows' comparison; SQLite's `data_version` says in one cheap pragma whether any
        other connection committed since this one last looked (inside the check's
        transaction, so what it says holds until the reservation commits), and this
        connection's own changes go through `set_limits`, which forgets the cache.
        """
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._limits_version or self._limits_written:
            self._limits_version = None  # kept only once the rows read verify
            super().limits()
            if not self._limits_written:
                self._limits_version = version
        return dict(self._limits)

    def set_limits(self, scope: str, limits: BudgetLimits | None) -> None:
        # Not cached until the transaction that wrote them ends: it may roll back.
        self._limits_version = None
        self._limits_written = True
        super().set_limits(scope, limits)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth or self.db.in_transaction:
            # Nested, or inside the store's append on the shared connection: join it.
            yield
            return
        self._depth = 1
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
            if self._on_commit is not None:
                self._on_commit(self.db)
        except sqlite3.Error as exc:
            raise StoreError(f"budget ledger in {self.path}: {exc}") from None
        finally:
            self._depth = 0
            self._limits_written = False  # committed or rolled back: nothing is cached
