"""Budgets on the driver: estimate a call, reserve it in the ledger, settle it after.

A model call's reservation commits with the call's own events where the store shares a
transaction with the ledger (memory, SQLite), so a crash can never leave one without the
other (DESIGN invariant 5). It is journaled inside those events (`budget` of
`model.requested` and `model.completed`, see `budget/_journaled.py`); only a hold taken
again for a request a crash left open has a `budget.reserved` of its own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ..budget import Denial, Reservation, scopes_for
from ..budget._journaled import reservation_field
from ..budget._ledger import new_reservation_id
from ..events import Event, EventDraft
from ..models import ModelRequest, UnpricedModel
from ._driver_base import DriverBase

__all__ = ["Budgeting"]


class _Denied(Exception):
    """Raised inside an append's transaction to abandon it: the budget said no."""

    def __init__(self, denial: Denial) -> None:
        super().__init__(denial.reason)
        self.denial = denial


class Budgeting(DriverBase):
    """Reservations, settlements and denials, journaled."""

    def estimate(self, request: ModelRequest) -> tuple[int, int, float]:
        """Input tokens, output bound and cost of a request: what a reservation holds.

        The output is bounded by the request's max_tokens (or the model's maximum), never
        by the remaining budget, so one call cannot reserve a whole budget.
        """
        # Requests are built from the context cache, which counts each message once with
        # the model's tokenizer: O(1) per turn instead of a recount of the whole context.
        input_tokens = self.cache.token_count(self.state) + (
            self.offered_tools()[1] if request.tools else 0
        )
        output_tokens = min(request.max_tokens or self.model.max_output_tokens,
                            self.model.max_output_tokens)  # fmt: skip
        return (
            input_tokens,
            output_tokens,
            self.prices.cost(self.model.name, input_tokens, output_tokens),
        )

    async def request_with_hold(
        self,
        request: ModelRequest,
        corr: str,
        drafts: Callable[[Reservation | None], list[EventDraft]],
    ) -> tuple[Reservation | Denial | None, list[Event]]:
        """Reserve the request's cost and journal `drafts(hold)`, in one commit where the
        store allows it; a denial is journaled instead and returned with no events."""
        if not self.joined or self.ledger is None:
            hold = await self.hold(request, corr)
            if isinstance(hold, Denial):
                return hold, []
            return hold, await self.append(*drafts(hold))
        ledger = self.ledger
        try:
            _, _, cost = self.estimate(request)
        except UnpricedModel:
            return await self.hold(request, corr), []  # journals the refusal
        state = self.state
        provisional = Reservation(
            id=new_reservation_id(self.clock.time()),
            run_id=state.run_id,
            estimate_usd=cost,
            scopes=scopes_for(state.agent, state.tenant),
            minute=0,
        )
        held: list[Reservation] = []

        def reserve() -> None:
            outcome = ledger.reserve_now(
                run_id=state.run_id,
                agent=state.agent,
                tenant=state.tenant,
                estimate_usd=cost,
                extra=self.budget_extra,
                reservation_id=provisional.id,
            )
            if isinstance(outcome, Denial):
                raise _Denied(outcome)
            held.append(outcome)

        try:
            events = await self.append(*drafts(provisional), also=reserve)
        except _Denied as denied:
            reason = denied.denial.reason
            await self.append(self.denied_draft(denied.denial, corr, kind="model", reason=reason))
            return denied.denial, []
        return held[0], events

    async def hold(self, request: ModelRequest, corr: str) -> Reservation | Denial | None:
        """Reserve the request's estimated cost; a denial is journaled before it is returned."""
        if self.ledger is None:
            return None
        try:
            _, _, cost = self.estimate(request)
        except UnpricedModel as exc:
            denial = Denial(
                scope="global", window="per_call", limit=0.0, spent=0.0, reserved=0.0,
                estimate=0.0, frees_at=None,
            )  # fmt: skip
            await self.append(self.denied_draft(denial, corr, kind="model", reason=str(exc)))
            return dataclasses.replace(denial, scope=f"unpriced model {self.model.name}")
        return await self.reserve(cost, corr, kind="model")

    async def reserve(self, cost: float, corr: str, *, kind: str) -> Reservation | Denial | None:
        if self.ledger is None:
            return None
        state = self.state
        outcome = await self.ledger.reserve(
            run_id=state.run_id,
            agent=state.agent,
            tenant=state.tenant,
            estimate_usd=cost,
            extra=self.budget_extra,
        )
        if isinstance(outcome, Denial):
            await self.append(self.denied_draft(outcome, corr, kind=kind, reason=outcome.reason))
        return outcome

    def denied_draft(self, denial: Denial, corr: str, *, kind: str, reason: str) -> EventDraft:
        return EventDraft(
            type="budget.denied",
            payload={**denial.to_json(), "kind": kind, "reason": reason},
            correlation_id=corr,
            causation_id=f"{self.state.run_id}:{self.state.last_seq}",
        )

    def reservation(self, hold: Reservation | None) -> dict[str, Any]:
        """The `budget` field a `model.requested` carries for its call's hold."""
        return reservation_field(hold, priced=self.prices.is_priced(self.model.name))

    def reserved_drafts(
        self, hold: Reservation | None, corr: str, *, cause: int
    ) -> list[EventDraft]:
        """A `budget.reserved` of its own: for a hold taken again for a request already
        in the journal (a crash left it open), which has no event to ride on."""
        if hold is None:
            return []
        return [
            EventDraft(
                type="budget.reserved",
                payload={
                    "reservation_id": hold.id,
                    "kind": "model",
                    "estimate_usd": hold.estimate_usd,
                    "scopes": list(hold.scopes),
                    "priced": self.prices.is_priced(self.model.name),
                },
                correlation_id=corr,
                causation_id=f"{self.state.run_id}:{cause}",
            )
        ]
