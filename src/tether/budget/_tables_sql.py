"""The ledger's statements, written once for both SQL backends (SQLite in `_tables`,
PostgreSQL in `_tables_pg`): each supplies its connection, placeholder spelling and
transactions, and overrides only what its dialect or its store does better."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from ._checked_rows import (
    hold_amount,
    hold_minute,
    hold_scopes,
    open_limits,
    seal_limits,
    spend_amount,
    spend_minute,
)
from ._ledger import ReservationRow
from ._model import BudgetLimits, LimitChange
from ._tables_shared import FINISHED_STATES, finish_in, held_in_windows, settle_in


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
