"""The contract between the ledger and its storage: the row a hold is stored as, the id it
is stored under, and the statements every backend (`_tables`, `_tables_sql`, `_tables_pg`)
provides. Kept apart from `Ledger`, which only calls it, so a backend can be written
against this page alone."""

from __future__ import annotations

import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from ._model import BudgetLimits, LimitChange


@dataclass(frozen=True, kw_only=True, slots=True)
class ReservationRow:
    id: str
    run_id: str
    scopes: tuple[str, ...]
    minute: int
    estimate: float
    state: str
    """reserved or expired (reclaimed); settled and released holds are deleted."""


def new_reservation_id(now: float) -> str:
    """Time-ordered, so each new hold lands at the end of the reservations' key index
    (a random key would dirty a random page of it on every call)."""
    return f"rsv_{int(now * 1000):012x}{secrets.token_hex(4)}"


class LedgerTables(Protocol):
    """Storage for the ledger; every method runs inside `transaction()`."""

    def transaction(self) -> AbstractContextManager[None]: ...
    def expired(self, now: float) -> list[ReservationRow]: ...
    def usage(self, scope: str, from_minute: int) -> list[tuple[int, float]]:
        """(minute, spent) buckets of a scope from `from_minute` on, oldest first."""
        ...

    def totals(self, windows: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[float, float]]:
        """(spent, held by open reservations) of each (scope, first minute) window."""
        ...

    def run_usage(self, run_id: str) -> tuple[float, float]:
        """(spent, held by open reservations) of a run."""
        ...

    def add_spend(self, row: ReservationRow, spent: float) -> None:
        """Count `spent` in the row's minute of each of its scopes, and in its run."""
        ...

    def finish(self, row: ReservationRow, state: str, actual: float | None) -> bool:
        """Move an open hold to `state` and count `actual` if it cost anything, as one
        change; False (and nothing changed) if the hold was not open."""
        ...

    def settle(self, row: ReservationRow, actual: float) -> bool:
        """Replace a hold by its actual cost, atomically on its own (or inside an open
        `transaction()`); False if the hold had been reclaimed, whose cost, when there is
        one, is counted all the same (the money was spent)."""
        ...

    def insert(self, row: ReservationRow, *, created: float, expires: float) -> None: ...
    def get(self, reservation_id: str) -> ReservationRow | None: ...
    def set_state(
        self, reservation_id: str, state: str, actual: float | None, *, from_state: str = "reserved"
    ) -> bool:
        """Move a reservation from `from_state` to `state`; False if it was not in it."""
        ...

    def open_of_run(self, run_id: str) -> list[ReservationRow]: ...
    def limits(self) -> dict[str, BudgetLimits]: ...
    def set_limits(self, scope: str, limits: BudgetLimits | None) -> None: ...
    def record_limit_change(self, change: LimitChange) -> None:
        """Keep `change` (in the transaction that stores its limits)."""
        ...

    def limit_changes(self, limit: int) -> list[LimitChange]:
        """The newest `limit` changes, newest first."""
        ...

    def known_scopes(self) -> list[str]: ...
