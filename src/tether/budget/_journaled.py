"""Reservations and settlements as the journal records them, in both layouts.

A reservation and its settlement always travel with a model call's own events, so a
main-loop model call records them inside those events instead of in two of their own
(two rows, two index entries and two audit copies less per step):

- `model.requested` carries `budget: {reservation_id, estimate_usd, priced}`: the hold
  made for it, of kind `model`, over the run's scopes (`scopes_for(agent, tenant)` of
  `run.created`, which is what the ledger holds it against).
- `model.completed` carries `budget: {reservation_id}`: the hold was settled at the
  event's own usage cost; its estimate is the reservation's.

Where a reservation does not ride on one model event the separate events are still
written: the summariser's (`kind: summary`), a hold taken again for a request a crash
left open (`model.requested` is already in the journal), and every `budget.denied`.
Journals written before the change have only the separate events. Every reader goes
through `reserved_in` / `settled_in`, so both layouts read the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..events import Event
from ._model import Reservation

__all__ = [
    "BUDGET_FIELD",
    "Reserved",
    "Settled",
    "reservation_field",
    "reserved_in",
    "settled_in",
    "settlement_field",
]

BUDGET_FIELD = "budget"
"""The payload field of `model.requested` / `model.completed` that carries the hold."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Reserved:
    reservation_id: str
    kind: str
    estimate_usd: float | None
    scopes: tuple[str, ...] | None
    """None: the run's own scopes (the folded form does not repeat them)."""
    priced: bool | None


@dataclass(frozen=True, kw_only=True, slots=True)
class Settled:
    reservation_id: str
    actual_usd: float
    estimate_usd: float | None
    """None in the folded form: the reservation it settles has it."""


def reservation_field(hold: Reservation | None, *, priced: bool) -> dict[str, Any]:
    """The `budget` field of a `model.requested` for `hold` (nothing without one)."""
    if hold is None:
        return {}
    return {
        BUDGET_FIELD: {
            "reservation_id": hold.id,
            "estimate_usd": hold.estimate_usd,
            "priced": priced,
        }
    }


def settlement_field(hold: Reservation | None) -> dict[str, Any]:
    """The `budget` field of a `model.completed` whose usage cost settled `hold`."""
    return {} if hold is None else {BUDGET_FIELD: {"reservation_id": hold.id}}


def _folded(event: Event, type_: str) -> dict[str, Any] | None:
    if event.type != type_:
        return None
    field = event.payload.get(BUDGET_FIELD)
    return field if isinstance(field, dict) and field.get("reservation_id") else None


def _money(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _flag(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def reserved_in(event: Event) -> Reserved | None:
    """The reservation `event` records: a `budget.reserved`, or a `model.requested` that
    carries its hold."""
    p = event.payload
    if event.type == "budget.reserved":
        scopes = p.get("scopes")
        return Reserved(
            reservation_id=str(p.get("reservation_id", "")),
            kind=str(p.get("kind", "model")),
            estimate_usd=_money(p.get("estimate_usd")),
            scopes=tuple(str(s) for s in scopes) if isinstance(scopes, list) else (),
            priced=_flag(p.get("priced")),
        )
    folded = _folded(event, "model.requested")
    if folded is None:
        return None
    return Reserved(
        reservation_id=str(folded["reservation_id"]),
        kind="model",
        estimate_usd=_money(folded.get("estimate_usd")),
        scopes=None,
        priced=_flag(folded.get("priced")),
    )


def settled_in(event: Event) -> Settled | None:
    """The settlement `event` records: a `budget.settled`, or a `model.completed` that
    settled its call's hold at its usage cost."""
    p = event.payload
    if event.type == "budget.settled":
        return Settled(
            reservation_id=str(p.get("reservation_id", "")),
            actual_usd=_money(p.get("actual_usd")) or 0.0,
            estimate_usd=_money(p.get("estimate_usd")),
        )
    folded = _folded(event, "model.completed")
    if folded is None:
        return None
    return Settled(
        reservation_id=str(folded["reservation_id"]),
        actual_usd=event.usage.cost_usd if event.usage is not None else 0.0,
        estimate_usd=None,
    )
