"""Budget guardrails: reserve before you spend (DESIGN invariant 5).

Before every model or tool call its estimated cost is checked against every applicable
limit (per call, per run, rolling hour, rolling or calendar day; global, per agent, per
tenant) and reserved atomically in the store's ledger; afterwards the reservation is
settled with the actual cost, or released if the call failed or was cancelled.
"""

from __future__ import annotations

from typing import Any

from .._clock import Clock
from ..errors import UsageError
from ._ledger import DEFAULT_RESERVATION_TTL_S, Ledger, LedgerTables
from ._model import (
    WINDOWS,
    BudgetLimits,
    Denial,
    LimitChange,
    Reservation,
    WindowStatus,
    check_scope,
    scopes_for,
)

__all__ = [
    "DEFAULT_RESERVATION_TTL_S",
    "WINDOWS",
    "BudgetLimits",
    "Denial",
    "Ledger",
    "LedgerTables",
    "LimitChange",
    "Reservation",
    "WindowStatus",
    "check_scope",
    "ledger_for",
    "scopes_for",
]


def ledger_for(
    store: Any, *, clock: Clock | None = None, reservation_ttl_s: float | None = None
) -> Ledger:
    """The budget ledger kept in `store`."""
    make = getattr(store, "ledger_tables", None)
    if make is None:
        raise UsageError(f"the store {getattr(store, 'url', store)!r} has no budget ledger")
    tables: LedgerTables = make()
    return Ledger(
        tables,
        clock=clock,
        reservation_ttl_s=reservation_ttl_s or DEFAULT_RESERVATION_TTL_S,
    )
