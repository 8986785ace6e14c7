"""Ledger storage: in memory (tests, memory://) and in the SQLite store's file."""

from __future__ import annotations

import functools
import json
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError
from . import _sqlite_rows as rows
from ._checked_rows import (
    hold_amount,
    hold_minute,
    hold_scopes,
    open_limits,
    seal_limits,
    spend_amount,
    spend_minute,
)
from ._ledger import LedgerTables, ReservationRow
from ._model import BudgetLimits, LimitChange

__all__ = ["FINISHED_STATES", "MemoryLedgerTables", "SQLiteLedgerTables"]

FINISHED_STATES = frozenset({"settled", "released"})
"""A reservation in one of these states is forgotten: only open and reclaimed holds stay."""


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


def finish_in(tables: LedgerTables, row: ReservationRow, state: str, actual: float | None) -> bool:
    """`finish` in statements every backend has (the caller holds the transaction)."""
    if not tables.set_state(row.id, state, actual):
        return False
    if actual:
        tables.add_spend(row, actual)
    return True


def settle_in(tables: LedgerTables, row: ReservationRow, actual: float) -> bool:
    """`settle` in statements every backend has, in one transaction."""
    with tables.transaction():
        if tables.finish(row, "settled", actual):
            return True
        if actual:
            found = tables.get(row.id)
            if found is not None and found.state == "expired":
                # Reclaimed too early but the money was spent: count it anyway.
                tables.add_spend(row, actual)
                tables.set_state(row.id, "settled", actual, from_state="expired")
        return False


def held_in_windows(
    holds: Sequence[tuple[Sequence[str], int, float]], windows: list[tuple[str, int]]
) -> dict[tuple[str, int], float]:
    """What open holds (scopes, minute, estimate) keep back in each (scope, first minute)
    window. Holds live only while their call is in flight, so there are few to sum."""
    out = dict.fromkeys(windows, 0.0)
    for scopes, minute, estimate in holds:
        for scope in scopes:
            for window in windows:
                if window[0] == scope and minute >= window[1]:
                    out[window] += estimate
    return out


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


class SQLLedgerTables:
    """The ledger's statements, written once for the SQL backends.

    Statements use `?` placeholders; a backend sets `MARK` to its dialect's spelling and
    provides `db` (a DB-API connection) and `transaction`.
    """

    MARK = "?"
    db: Any
    transaction: Callable[[], AbstractContextManager[None]]
    """One write transaction (joined when one is open)."""

    def __init__(self) -> None:
        self._depth = 0
        self._prefetched: dict[tuple[str, object], Any] = {}
        """Reads issued ahead (`prefetch`), by what they answer; their transaction's own."""
        self._limits_rows: tuple[tuple[str, str], ...] = ()
        self._limits: dict[str, BudgetLimits] = {}

    def _x(self, sql: str, params: Sequence[object] = ()) -> Any:
        if self.MARK != "?":
            sql = sql.replace("?", self.MARK)
        return self.db.execute(sql, params)

    def _row(self, r: Sequence[Any]) -> ReservationRow:
        return ReservationRow(
            id=r[0],
            run_id=r[1],
            scopes=hold_scopes(r[2], r[0]),
            minute=hold_minute(r[3], r[0]),
            estimate=hold_amount(r[4], r[0]),
            state=r[5],
        )

    def expired(self, now: float) -> list[ReservationRow]:
        rows = self._x(
            f"SELECT {_RESERVATION} FROM budget_reservations "
            "WHERE state='reserved' AND expires_at <= ?",
            (now,),
        ).fetchall()
        return [self._row(r) for r in rows]

    def usage(self, scope: str, from_minute: int) -> list[tuple[int, float]]:
        rows = self._x(
            "SELECT minute, spent FROM budget_usage WHERE scope=? AND minute>=? ORDER BY minute",
            (scope, from_minute),
        ).fetchall()
        where = f"the budget ledger's spend of {scope}"
        return [(spend_minute(r[0], where), spend_amount(r[1], where)) for r in rows]

    def _totals_query(self, windows: list[tuple[str, int]]) -> Any:
        # Spend: exact and bounded, the minutes before the window's first whole hour, then
        # whole hours from the hourly roll-up, so a day reads at most 60 + 25 rows per
        # scope. Holds: the open reservations themselves (rows numbered -1). All in one
        # statement: on PostgreSQL each statement whose rows are read is a round trip.
        parts: list[str] = []
        params: list[object] = []
        for n, (scope, start) in enumerate(windows):
            first_hour = -(-start // 60)
            parts.append(
                f"SELECT {n}, COALESCE(SUM(spent), 0), {_NO_SCOPES} FROM budget_usage "
                "WHERE scope=? AND minute>=? AND minute<? "
                f"UNION ALL SELECT {n}, COALESCE(SUM(spent), 0), {_NO_SCOPES} "
                "FROM budget_usage_hourly WHERE scope=? AND hour>=?"
            )
            params += [scope, start, first_hour * 60, scope, first_hour]
        parts.append(
            "SELECT -1, estimate, scopes, minute FROM budget_reservations WHERE state='reserved'"
        )
        return self._x(" UNION ALL ".join(parts), params)

    def totals(self, windows: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[float, float]]:
        if not windows:
            return {}
        cursor = self._prefetched.pop(("totals", tuple(windows)), None)
        if cursor is None:
            cursor = self._totals_query(windows)
        spent = [0.0 for _ in windows]
        holds: list[tuple[Sequence[str], int, float]] = []
        for n, value, scopes, minute in cursor.fetchall():
            if n < 0:
                holds.append((hold_scopes(scopes), hold_minute(minute), hold_amount(value)))
            else:
                spent[n] += value
        held = held_in_windows(holds, windows)
        return {w: (float(spent[n]), held[w]) for n, w in enumerate(windows)}

    def _run_usage_query(self, run_id: str) -> Any:
        return self._x(
            "SELECT (SELECT spent FROM budget_runs WHERE run_id=?), "
            "(SELECT SUM(estimate) FROM budget_reservations WHERE state='reserved' AND run_id=?)",
            (run_id, run_id),
        )

    def run_usage(self, run_id: str) -> tuple[float, float]:
        cursor = self._prefetched.pop(("run", run_id), None)
        if cursor is None:
            cursor = self._run_usage_query(run_id)
        spent, held = cursor.fetchone()
        where = f"the budget ledger's spend of run {run_id}"
        return (0.0 if spent is None else spend_amount(spent, where)), float(held or 0.0)

    def finish(self, row: ReservationRow, state: str, actual: float | None) -> bool:
        """End an open hold (`state`: settled, released, expired) and count `actual` if it
        cost anything; False if the hold was not open."""
        return finish_in(self, row, state, actual)

    def settle(self, row: ReservationRow, actual: float) -> bool:
        return settle_in(self, row, actual)

    def add_spend(self, row: ReservationRow, spent: float) -> None:
        """Count a settled call's cost in its minute and hour of every scope, and its run."""
        values = ",".join("(?,?,?)" for _ in row.scopes)
        for table, key, bucket in (("budget_usage", "minute", row.minute),
                                   ("budget_usage_hourly", "hour", row.minute // 60)):  # fmt: skip
            params: list[object] = []
            for scope in row.scopes:
                params += [scope, bucket, spent]
            self._x(
                f"INSERT INTO {table} (scope, {key}, spent) VALUES {values} "
                f"ON CONFLICT (scope, {key}) DO UPDATE SET spent = {table}.spent + excluded.spent",
                params,
            )
        self._x(
            "INSERT INTO budget_runs (run_id, spent) VALUES (?,?) "
            "ON CONFLICT (run_id) DO UPDATE SET spent = budget_runs.spent + excluded.spent",
            (row.run_id, spent),
        )

    def insert(self, row: ReservationRow, *, created: float, expires: float) -> None:
        self._x(
            "INSERT INTO budget_reservations (id, run_id, scopes, minute, estimate, state, "
            "created_at, expires_at) VALUES (?,?,?,?,?,?,?,?)",
            (row.id, row.run_id, scopes_json(row.scopes), row.minute, row.estimate, row.state,
             created, expires),
        )  # fmt: skip

    def get(self, reservation_id: str) -> ReservationRow | None:
        r = self._x(
            f"SELECT {_RESERVATION} FROM budget_reservations WHERE id=?", (reservation_id,)
        ).fetchone()
        return self._row(r) if r else None

    def set_state(
        self, reservation_id: str, state: str, actual: float | None, *, from_state: str = "reserved"
    ) -> bool:
        if state in FINISHED_STATES:
            # Done with: the journal keeps its story (budget.settled), the buckets its money.
            moved = self._x(
                "DELETE FROM budget_reservations WHERE id=? AND state=?",
                (reservation_id, from_state),
            )
        else:
            moved = self._x(
                "UPDATE budget_reservations SET state=?, actual=? WHERE id=? AND state=?",
                (state, actual, reservation_id, from_state),
            )
        return bool(self._count(moved) == 1)

    def _count(self, cursor: Any) -> int:
        """Rows a statement changed (a backend that pipelines statements syncs first)."""
        return int(cursor.rowcount)

    def open_of_run(self, run_id: str) -> list[ReservationRow]:
        rows = self._x(
            f"SELECT {_RESERVATION} FROM budget_reservations WHERE run_id=? AND state='reserved'",
            (run_id,),
        ).fetchall()
        return [self._row(r) for r in rows]

    def limits(self) -> dict[str, BudgetLimits]:
        rows = tuple(
            (r[0], r[1]) for r in self._x("SELECT scope, limits FROM budget_limits ORDER BY scope")
        )
        if rows != self._limits_rows:  # another process may have changed them
            # Parsed before they are cached: a row that does not verify is refused on
            # every read, not only the first.
            self._limits = {r[0]: open_limits(r[0], r[1]) for r in rows}
            self._limits_rows = rows
        return dict(self._limits)

    def set_limits(self, scope: str, limits: BudgetLimits | None) -> None:
        if limits is None:
            self._x("DELETE FROM budget_limits WHERE scope=?", (scope,))
        else:
            self._x(
                "INSERT INTO budget_limits (scope, limits) VALUES (?, ?) "
                "ON CONFLICT (scope) DO UPDATE SET limits = excluded.limits",
                (scope, seal_limits(scope, limits)),
            )

    def record_limit_change(self, change: LimitChange) -> None:
        limits = change.limits.to_json() if change.limits is not None else None
        self._x(
            "INSERT INTO budget_limit_changes (at, scope, limits, actor) VALUES (?, ?, ?, ?)",
            (change.at, change.scope, json.dumps(limits, sort_keys=True) if limits else None,
             change.actor),
        )  # fmt: skip

    def limit_changes(self, limit: int) -> list[LimitChange]:
        rows = self._x(
            "SELECT at, scope, limits, actor FROM budget_limit_changes ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            LimitChange(
                at=r[0], scope=r[1], actor=r[3],
                limits=BudgetLimits.from_json(json.loads(r[2])) if r[2] else None,
            )
            for r in rows
        ]  # fmt: skip

    def known_scopes(self) -> list[str]:
        """Scopes with spend or with money held by a call in flight."""
        scopes = {r[0] for r in self._x("SELECT DISTINCT scope FROM budget_usage")}
        held = self._x("SELECT scopes FROM budget_reservations WHERE state='reserved'")
        for (row_scopes,) in held.fetchall():
            scopes.update(hold_scopes(row_scopes))
        return sorted(scopes)

    def close(self) -> None:
        self.db.close()


@functools.lru_cache(maxsize=256)
def scopes_json(scopes: tuple[str, ...]) -> str:
    """A hold's scopes as stored: a run's calls all share theirs, so encoded once."""
    return json.dumps(scopes)


_RESERVATION = "id, run_id, scopes, minute, estimate, state"
_NO_SCOPES = "CAST(NULL AS TEXT), CAST(NULL AS BIGINT)"
"""A spend row's empty hold columns, typed: PostgreSQL types a UNION's NULLs pairwise."""


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
