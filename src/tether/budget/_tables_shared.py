"""What the ledger's tables of every backend do alike, written once against the
`LedgerTables` protocol so the memory, SQLite and PostgreSQL ledgers cannot drift apart:
when a hold is forgotten, finishing and settling one, and what open holds keep back."""

from __future__ import annotations

from collections.abc import Sequence

from ._ledger import LedgerTables, ReservationRow

FINISHED_STATES = frozenset({"settled", "released"})
"""A reservation in one of these states is forgotten: only open and reclaimed holds stay."""


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
