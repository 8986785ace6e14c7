"""The agent loop: load → fold → decide → record intent → effect → record result.

Every effect is journaled before it is acted on and after it happened (write-ahead), so
a run resumed anywhere continues from its journal: completed tool calls are never run
again, in-flight ones are re-run only when idempotent, and model answers are reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .._clock import Clock, SystemClock, iso
from ..agent import Agent, Limits
from ..approvals import approvals_in, expire_approvals, request_id_for
from ..budget import BudgetLimits, Denial, Ledger, Reservation, scopes_for
from ..budget._ledger import new_reservation_id
from ..errors import (
    ContextOverflow,
    HumanInputRequired,
    ModelError,
    ModelUnavailable,
    UsageError,
)
from ..events import Event, EventDraft, Usage
from ..journal import RunJournal, Store, read_events
from ..journal._integrity import verify_row
from ..models import Model, ModelRequest, ModelResponse, PriceTable, UnpricedModel
from ..state import PendingCall, RunState
from ..tools import Tool, ToolContext, ToolOutcome, execute, parse_arguments
from ._awareness import limit_reached, runway
from ._context import ContextCache, plan_compaction, summarize

__all__ = ["Progress", "RunResult", "drive_run"]

WRAP_UP_PROMPT = (
    "A limit has been reached: {reason}. Tools are now disabled. Write your best final "
    "answer from what you have gathered so far. Say clearly what is complete and what is "
    "missing. It will be published labelled as a partial answer."
)
UNKNOWN_OUTCOME = (
    "error: outcome unknown. The process running {name} stopped while the call was in "
    "flight, so it may or may not have taken effect. It was not repeated automatically "
    "because {name} is not idempotent. Check its effect before calling it again."
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Progress:
    """What a live display shows; sent after every journal append and tool start."""

    state: RunState
    event: str
    tool: str | None = None


Observer = Callable[[Progress], None]


class _Denied(Exception):
    """Raised inside an append's transaction to abandon it: the budget said no."""

    def __init__(self, denial: Denial) -> None:
        super().__init__(denial.reason)
        self.denial = denial


@dataclass(frozen=True, kw_only=True, slots=True)
class RunResult:
    run_id: str
    status: str
    answer: str | None
    partial: bool
    reason: str | None
    steps: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    pending_approvals: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        """The CLI's contract: 0 completed, 1 failed, 3 stopped by a limit, 4 waiting."""
        return {"completed": 0, "stopped": 3, "waiting_approval": 4}.get(self.status, 1)

    @classmethod
    def of(cls, state: RunState) -> RunResult:
        return cls(
            run_id=state.run_id,
            status=state.status,
            answer=state.answer,
            partial=state.partial,
            reason=state.reason,
            steps=state.steps,
            input_tokens=state.input_tokens,
            output_tokens=state.output_tokens,
            cost_usd=state.cost_usd,
            pending_approvals=state.pending_approvals,
        )


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


class _Driver:
    """Drives one run under one lease until it ends, pauses or loses the lease."""

    def __init__(
        self,
        *,
        agent: Agent,
        model: Model,
        journal: RunJournal,
        clock: Clock,
        prices: PriceTable,
        observer: Observer | None,
        model_retries: int,
        model_retry_backoff_s: float,
        ledger: Ledger | None = None,
        budgets: Mapping[str, BudgetLimits] | None = None,
    ) -> None:
        self.agent = agent
        self.model = model
        self.journal = journal
        self.clock = clock
        self.prices = prices
        self.observer = observer
        self.model_retries = model_retries
        self.model_retry_backoff_s = model_retry_backoff_s
        self.limits = Limits.from_json(journal.state.limits)
        self.cache = ContextCache(journal.store, journal.run_id)
        self.last_fill: float | None = None
        self.ledger = ledger
        self.joined = ledger is not None and bool(
            getattr(journal.store, "joins_ledger", lambda _: False)(ledger.tables)
        )
        """Whether a model call's hold commits with its events (memory and SQLite stores)."""
        self.denied: Denial | None = None
        """A tool call's budget denial: the next cycle wraps up instead of calling the model."""
        self.budget_extra = dict(budgets or {})
        agent_scope = f"agent:{agent.name}"
        if agent.budget is not None:
            mine = self.budget_extra.get(agent_scope)
            self.budget_extra[agent_scope] = (
                agent.budget if mine is None else mine.merged(agent.budget)
            )
        if self.limits.max_cost_usd is not None:
            # The run's own cost limit is also a per-run budget, reserved like any other.
            run_limit = BudgetLimits(per_run=self.limits.max_cost_usd)
            mine = self.budget_extra.get("global")
            self.budget_extra["global"] = run_limit if mine is None else mine.merged(run_limit)

    # -- journal helpers ----------------------------------------------------------------

    @property
    def state(self) -> RunState:
        return self.journal.state

    def correlation(self, cycle: int | str) -> str:
        return f"{self.journal.run_id}/c{cycle}"

    async def append(
        self, *drafts: EventDraft, also: Callable[[], None] | None = None
    ) -> list[Event]:
        events = await self.journal.append(*self.caused(drafts), also=also)
        self.took(events)
        return events

    def stage(self, *drafts: EventDraft) -> None:
        """Record drafts now; they reach the disk with the next append (see RunJournal)."""
        self.took(self.journal.stage(*self.caused(drafts)))

    def caused(self, drafts: tuple[EventDraft, ...]) -> list[EventDraft]:
        """Every event names its cause (DESIGN invariant 8): a draft that names none was
        caused by the state the journal was in, i.e. the event just before it."""
        run_id, last = self.state.run_id, self.state.last_seq
        return [
            d
            if d.causation_id is not None
            else dataclasses.replace(d, causation_id=f"{run_id}:{last + i}")
            for i, d in enumerate(drafts)
        ]

    def took(self, events: list[Event]) -> None:
        if not events:
            return
        self.cache.add(events, self.journal.state)
        if self.observer:
            self.observer(Progress(state=self.journal.state, event=events[-1].type))

    def elapsed(self) -> float:
        state = self.state
        return state.active_s + max(0.0, self.clock.time() - _epoch(state.updated_at))

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> RunState:
        state = self.state
        if not state.pinned:
            await self.append(
                EventDraft(
                    type="message.system",
                    payload={"content": self.agent.instructions, "pinned": True},
                    causation_id=f"{state.run_id}:1",
                ),
                EventDraft(
                    type="message.user",
                    payload={"content": state.task, "pinned": True},
                    causation_id=f"{state.run_id}:1",
                    actor="user",
                ),
            )
        else:
            released = await self.ledger.release_run(state.run_id) if self.ledger else 0
            await self.append(
                EventDraft(
                    type="run.resumed",
                    payload={
                        "worker": self.journal.lease.owner,
                        "epoch": self.journal.lease.epoch,
                        "released_reservations": released,
                    },
                )
            )
        await self.cache.load(self.state)
        if self.ledger is not None and not self.prices.is_priced(self.model.name):
            price = self.prices.price(self.model.name) if not self.prices.fail_closed else None
            await self.append(
                EventDraft(
                    type="health.warning",
                    payload={
                        "kind": "unpriced_model",
                        "model": self.model.name,
                        "message": (
                            f"model {self.model.name!r} is not in the price table: "
                            + (
                                f"charged at ${price.input_per_mtok}/${price.output_per_mtok} "
                                "per million tokens (conservative); set TETHER_PRICES"
                                if price
                                else "refused because the price table fails closed"
                            )
                        ),
                    },
                )
            )
        try:
            if self.state.pending_calls:
                await self.recover_calls()
            while not self.state.terminal and self.state.status != "waiting_approval":
                await self.cycle()
        finally:
            # A staged tool result is flushed even when the loop is leaving on an error
            # or a cancellation (a worker handing the run back): its outcome is known.
            if self.journal.staged:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.journal.flush())
        return self.state

    async def cycle(self) -> None:
        state = self.state
        if self.denied is not None:
            denial, self.denied = self.denied, None
            await self.wrap_up("budget", denial.reason)
            return
        if state.open_model_request is None:
            reached = self.check_limits()
            if reached is not None:
                await self.wrap_up(*reached)
                return
            cycle = state.cycle + 1
            corr = self.correlation(cycle)
            await self.maybe_compact(corr)
            request = self.build_request(tools_enabled=True)
            state = self.state

            def drafts(hold: Reservation | None) -> list[EventDraft]:
                return [
                    EventDraft(
                        type="cycle.started",
                        payload={"cycle": cycle},
                        correlation_id=corr,
                        causation_id=f"{state.run_id}:{state.last_seq}",
                    ),
                    EventDraft(
                        type="model.requested",
                        payload=self.request_payload(),
                        correlation_id=corr,
                        causation_id=f"{state.run_id}:{state.last_seq + 1}",
                    ),
                    *self.reserved_drafts(hold, corr, cause=state.last_seq + 2),
                ]

            hold, events = await self.request_with_hold(request, corr, drafts)
            if isinstance(hold, Denial):
                await self.wrap_up("budget", hold.reason)
                return
            request_seq = events[1].seq
        else:
            # A crash interrupted this model call: ask again (model calls have no side effects).
            request_seq = state.open_model_request
            rows = await self.journal.store.read_rows_at(state.run_id, [request_seq])
            payload = verify_row(rows[0]).payload
            if payload.get("wrap_up"):
                await self.finish_wrap_up(request_seq, payload["limit"], payload["reason"])
                return
            corr = self.correlation(state.cycle)
            request = self.build_request(tools_enabled=True)
            hold = await self.hold(request, corr)
            if isinstance(hold, Denial):
                await self.wrap_up("budget", hold.reason)
                return
            if hold is not None:
                await self.append(*self.reserved_drafts(hold, corr, cause=request_seq))
        response = await self.call_model(corr, request_seq, request, hold, settle=not self.joined)
        if response is None:
            return
        await self.record_response(response, corr, request_seq, hold)

    # -- budgets ------------------------------------------------------------------------

    def build_request(self, *, tools_enabled: bool) -> ModelRequest:
        return ModelRequest(
            messages=self.cache.build(self.state),
            tools=tuple(t.spec for t in self.agent.tools) if tools_enabled else (),
            max_tokens=self.max_tokens() if tools_enabled else self.agent.wrap_up_output_tokens,
        )

    def estimate(self, request: ModelRequest) -> tuple[int, int, float]:
        """Input tokens, output bound and cost of a request: what a reservation holds.

        The output is bounded by the request's max_tokens (or the model's maximum), never
        by the remaining budget, so one call cannot reserve a whole budget.
        """
        input_tokens = self.model.count_tokens(request.messages, request.tools)
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

    def reserved_drafts(
        self, hold: Reservation | None, corr: str, *, cause: int
    ) -> list[EventDraft]:
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

    def settled_draft(
        self, hold: Reservation, actual: float, corr: str, *, cause: int
    ) -> EventDraft:
        return EventDraft(
            type="budget.settled",
            payload={
                "reservation_id": hold.id,
                "estimate_usd": hold.estimate_usd,
                "actual_usd": actual,
            },
            correlation_id=corr,
            causation_id=f"{self.state.run_id}:{cause}",
        )

    async def call_model(
        self,
        corr: str,
        request_seq: int,
        request: ModelRequest,
        hold: Reservation | None,
        *,
        settle: bool = True,
    ) -> ModelResponse | None:
        """Call the model with compaction on overflow and retries on outages; None if the
        run has ended because the call could not be made. The reservation is settled with
        the actual cost on success (by the caller's next append when `settle` is false)
        and released on failure or cancellation."""
        attempt = 0
        compacted = False
        settled = False
        try:
            while True:
                try:
                    response = await self.model.complete(request)
                    window = max(1, self.model.context_window)
                    self.last_fill = response.usage.input_tokens / window
                    if hold is not None and self.ledger is not None and settle:
                        await self.ledger.settle(hold, self.usage_of(response).cost_usd)
                    settled = True
                    return response
                except ContextOverflow as exc:
                    await self.append(self.model_failed(corr, request_seq, exc, transient=False))
                    if compacted:
                        await self.fail(
                            f"the context does not fit the model even after compaction: {exc}"
                        )
                        return None
                    # The provider counted more than our estimate: halve what we send.
                    current = self.cache.token_count(self.state)
                    await self.compact(corr, budget=min(self.model.context_window, current) // 2)
                    request = dataclasses.replace(request, messages=self.cache.build(self.state))
                    compacted = True
                except ModelUnavailable as exc:
                    attempt += 1
                    await self.append(self.model_failed(corr, request_seq, exc, transient=True))
                    if attempt > self.model_retries:
                        await self.fail(f"the model is unavailable: {exc}", retryable=True)
                        return None
                    delay = self.model_retry_backoff_s * 2 ** (attempt - 1)
                    await asyncio.sleep(delay * (0.5 + random.random()))
                except ModelError as exc:
                    await self.append(self.model_failed(corr, request_seq, exc, transient=False))
                    await self.fail(f"the model failed: {exc}")
                    return None
        finally:
            if hold is not None and not settled and self.ledger is not None:
                await self.ledger.release(hold)

    def request_payload(self, **wrap_up: str) -> dict[str, Any]:
        """`model.requested` payload; a wrap-up request carries its limit and reason."""
        return {
            "model": self.model.name,
            "max_tokens": self.agent.wrap_up_output_tokens if wrap_up else self.max_tokens(),
            "context_messages": len(self.state.context),
            "context_tokens": self.cache.token_count(self.state),
            "wrap_up": bool(wrap_up),
            **wrap_up,
        }

    def max_tokens(self) -> int:
        return min(self.agent.max_output_tokens, self.model.max_output_tokens)

    def check_limits(self) -> tuple[str, str] | None:
        """A limit that forbids another cycle, judged on what the next call may spend."""
        state, limits = self.state, self.limits
        reached = limit_reached(state, limits, elapsed_s=self.elapsed())
        if reached is not None:
            return reached
        # Leave room for the next call and for the wrap-up turn after it.
        input_est = self.cache.token_count(state) + 200
        out_max = self.max_tokens() + self.agent.wrap_up_output_tokens
        if (
            limits.max_tokens is not None
            and state.tokens + 2 * input_est + out_max > limits.max_tokens
        ):
            return "tokens", (
                f"token limit reached ({state.tokens}/{limits.max_tokens} tokens; "
                "the next turn would not fit)"
            )
        if limits.max_cost_usd is not None:
            estimate = self.prices.cost(self.model.name, 2 * input_est, out_max)
            if state.cost_usd + estimate > limits.max_cost_usd:
                return "cost", (
                    f"cost limit reached (${state.cost_usd:.4f} spent of "
                    f"${limits.max_cost_usd:.2f}; the next turn may cost ~${estimate:.4f})"
                )
        return None

    def model_failed(
        self, corr: str, request_seq: int, exc: Exception, *, transient: bool
    ) -> EventDraft:
        return EventDraft(
            type="model.failed",
            payload={"error": str(exc), "kind": type(exc).__name__, "transient": transient},
            correlation_id=corr,
            causation_id=f"{self.state.run_id}:{request_seq}",
        )

    async def maybe_compact(self, corr: str) -> None:
        window = self.model.context_window
        used = self.cache.token_count(self.state) + self.max_tokens()
        if used > self.limits.context_threshold * window:
            await self.compact(corr, budget=int(self.limits.context_threshold * window * 0.6))

    async def compact(self, corr: str, *, budget: int) -> None:
        removed = plan_compaction(self.state, self.cache, budget_tokens=budget)
        if not removed:
            return
        summary = summarize([self.cache.messages[s] for s in removed])
        await self.append(
            EventDraft(
                type="context.compacted",
                payload={
                    "removed": removed,
                    "content": summary,
                    "tokens_before": self.cache.token_count(self.state),
                },
                correlation_id=corr,
            )
        )
        self.cache.forget(self.state.context)

    def usage_of(self, response: ModelResponse) -> Usage:
        u = response.usage
        return Usage(
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cost_usd=self.prices.cost(self.model.name, u.input_tokens, u.output_tokens),
        )

    async def record_response(
        self,
        response: ModelResponse,
        corr: str,
        request_seq: int,
        hold: Reservation | None = None,
    ) -> None:
        run_id = self.state.run_id
        completed = EventDraft(
            type="model.completed",
            payload={
                "content": response.content,
                "tool_calls": [c.to_json() for c in response.tool_calls],
                "finish_reason": response.finish_reason,
                "model": response.model,
            },
            correlation_id=corr,
            causation_id=f"{run_id}:{request_seq}",
            actor=f"model:{self.model.name}",
            usage=self.usage_of(response),
            visibility=None if response.tool_calls else "visible",
        )
        actual = self.usage_of(response).cost_usd
        # The settlement follows model.completed, whose usage it records.
        after = self.state.last_seq + 1
        settled = [self.settled_draft(hold, actual, corr, cause=after)] if hold else []
        ledger = self.ledger
        settle_too: Callable[[], None] | None = None
        if hold is not None and ledger is not None and self.joined:

            def settle_too() -> None:
                ledger.settle_now(hold, actual)

        if not response.tool_calls:
            completed_seq = self.state.last_seq + 1
            await self.append(
                completed,
                *settled,
                EventDraft(
                    type="run.completed",
                    payload={"answer": response.content, "partial": False, "reason": "answered"},
                    correlation_id=corr,
                    causation_id=f"{run_id}:{completed_seq}",
                ),
                also=settle_too,
            )
            return
        completed_seq = self.state.last_seq + 1
        drafts = [completed, *settled]
        first_call_seq = completed_seq + 1 + len(settled)
        invalid: list[tuple[int, str, str, ToolOutcome]] = []
        runnable: list[tuple[PendingCall, Tool, dict[str, Any]]] = []
        gated: list[tuple[PendingCall, Tool, dict[str, Any]]] = []
        for index, call in enumerate(response.tool_calls):
            seq = first_call_seq + index
            tool = self.agent.tool(call.name)
            parsed = parse_arguments(tool, call.name, call.arguments)
            drafts.append(
                EventDraft(
                    type="tool.requested",
                    payload={
                        "call_id": call.id,
                        "name": call.name,
                        "arguments": call.arguments,
                        "idempotency_key": f"{run_id}:{seq}",
                        "valid": not isinstance(parsed, ToolOutcome),
                    },
                    correlation_id=corr,
                    causation_id=f"{run_id}:{completed_seq}",
                    visibility=tool.visibility if tool else None,
                )
            )
            if isinstance(parsed, ToolOutcome):
                invalid.append((seq, call.id, call.name, parsed))
            else:
                assert tool is not None
                pending = PendingCall(call_id=call.id, name=call.name, seq=seq)
                if self.needs_approval(tool, parsed):
                    gated.append((pending, tool, parsed))
                else:
                    runnable.append((pending, tool, parsed))
        for pending, tool, parsed in gated:
            drafts.append(
                self.approval_draft(
                    pending, tool, parsed, corr, reason=response.content, kind="approval"
                )
            )
        await self.append(*drafts, also=settle_too)
        for seq, call_id, name, outcome in invalid:
            await self.record_result(call_id, name, seq, outcome, tool=None, corr=corr)
        await asyncio.gather(
            *(self.run_tool(call, tool, args, corr, attempt=1) for call, tool, args in runnable)
        )

    async def run_tool(
        self, call: PendingCall, tool: Tool, args: dict[str, Any], corr: str, *, attempt: int
    ) -> None:
        if self.observer:
            self.observer(Progress(state=self.state, event="tool.started", tool=tool.name))
        context = ToolContext(
            run_id=self.state.run_id,
            call_id=call.call_id,
            idempotency_key=f"{self.state.run_id}:{call.seq}",
            attempt=attempt,
            store=self.journal.store,
            correlation_id=corr,
        )
        hold: Reservation | Denial | None = None
        if tool.cost_usd and self.ledger is not None:
            hold = await self.reserve(tool.cost_usd, corr, kind="tool")
            if isinstance(hold, Denial):
                self.denied = hold
                denied = ToolOutcome(output=f"error: {hold.reason}", error="budget_denied")
                await self.record_result(
                    call.call_id, tool.name, call.seq, denied, tool=None, corr=corr
                )
                return
        try:
            outcome = await execute(tool, args, context)
        except HumanInputRequired as question:
            if isinstance(hold, Reservation) and self.ledger is not None:
                await self.ledger.settle(hold, tool.cost_usd)
            await self.append(
                self.approval_draft(
                    call, tool, args, corr, reason=question.question, kind="question"
                )
            )
            return
        except BaseException:
            if isinstance(hold, Reservation) and self.ledger is not None:
                await self.ledger.release(hold)
            raise
        if isinstance(hold, Reservation) and self.ledger is not None:
            if outcome.ok:
                await self.ledger.settle(hold, tool.cost_usd)
            else:
                await self.ledger.release(hold)
        await self.record_result(call.call_id, tool.name, call.seq, outcome, tool=tool, corr=corr)

    def needs_approval(self, tool: Tool, arguments: dict[str, Any]) -> bool:
        threshold = self.agent.approval_cost_usd
        if threshold is not None and tool.cost_usd > threshold:
            return True
        return tool.needs_approval(arguments, self.state)

    def approval_draft(
        self,
        call: PendingCall,
        tool: Tool,
        arguments: dict[str, Any],
        corr: str,
        *,
        reason: str,
        kind: str,
    ) -> EventDraft:
        run_id = self.state.run_id
        timeout = tool.approval_timeout_s
        return EventDraft(
            type="approval.requested",
            payload={
                "request_id": request_id_for(run_id, call.seq),
                "call_id": call.call_id,
                "call_seq": call.seq,
                "tool": tool.name,
                "arguments": arguments,
                "kind": kind,
                "question": reason if kind == "question" else None,
                "reason": reason,
                "excerpt": self.excerpt(),
                "expires_at": iso(self.clock.time() + timeout) if timeout else None,
                "on_expiry": tool.approval_on_expiry,
            },
            correlation_id=corr,
            causation_id=f"{run_id}:{call.seq}",
        )

    def excerpt(self, limit: int = 400) -> str:
        """The last few messages of the context, for the human deciding.

        Never the system prompt (always hidden): an approver is an operator.
        """
        messages = [m for m in self.cache.build(self.state) if m.role != "system"][-3:]
        text = " | ".join(f"{m.role}: {' '.join(m.content.split())}" for m in messages)
        return text if len(text) <= limit else "…" + text[-(limit - 1) :]

    async def record_result(
        self,
        call_id: str,
        name: str,
        request_seq: int,
        outcome: ToolOutcome,
        *,
        tool: Tool | None,
        corr: str,
        kind: str | None = None,
    ) -> None:
        status = runway(
            self.state, self.limits, elapsed_s=self.elapsed(), context_fill=self.last_fill
        )
        cost = tool.cost_usd if tool is not None and outcome.error != "unknown_outcome" else 0.0
        draft = EventDraft(
            type=kind or ("tool.completed" if outcome.ok else "tool.failed"),
            payload={
                "call_id": call_id,
                "name": name,
                "output": outcome.output,
                "error": outcome.error,
                "attempts": outcome.attempts,
                "status": status.line,
                "level": status.level,
                "max_chars": tool.max_output_chars if tool else 8_000,
            },
            correlation_id=corr,
            causation_id=f"{self.state.run_id}:{request_seq}",
            actor=f"tool:{name}",
            visibility=tool.visibility if tool else None,
            usage=Usage(cost_usd=cost) if cost else None,
        )
        others = [c for c in self.state.pending_calls if c.seq != request_seq]
        if others or self.denied is not None or self.state.status != "running":
            await self.append(draft)
        else:
            # The turn's last outcome: the next step's first commit carries it to disk.
            # Nothing acts on it before then, and a crash in between is a crash with the
            # call in flight, which recovery already handles (DESIGN invariant 2).
            self.stage(draft)

    async def recover_calls(self) -> None:
        """Settle calls that have no outcome yet (DESIGN invariants 2 and 9).

        A call gated by an approval runs now if it was approved (it never ran before);
        a rejection becomes its result. Any other call without an outcome was in flight
        when a process stopped: it is re-run only if idempotent (or its policy says so),
        otherwise the model is told the outcome is unknown.
        """
        state = self.state
        pending = state.pending_calls
        since = await read_events(
            self.journal.store, state.run_id, after_seq=min(c.seq for c in pending) - 1
        )
        requested = {e.seq: e for e in since if e.type == "tool.requested"}
        approvals = {a.call_seq: a for a in approvals_in(since).values()}
        started = {e.payload["call_seq"] for e in since if e.type == "tool.started"}
        corr = self.correlation(state.cycle)
        rerun: list[tuple[PendingCall, Tool, dict[str, Any], int]] = []
        for call in pending:
            tool = self.agent.tool(call.name)
            approval = approvals.get(call.seq)
            if approval is not None and approval.pending:
                continue
            if approval is not None and approval.action == "rejected":
                who = approval.resolved_by or "a human"
                why = f": {approval.comment}" if approval.comment else ""
                verb = "declined to answer" if approval.kind == "question" else "rejected the call"
                outcome = ToolOutcome(
                    output=f"error: {who} {verb}{why}",
                    error="no_answer" if approval.kind == "question" else "rejected",
                )
                await self.record_result(
                    call.call_id, call.name, call.seq, outcome, tool=tool, corr=corr
                )
                continue
            if approval is not None and approval.kind == "question":
                answer = ToolOutcome(output=approval.comment or "")
                await self.record_result(
                    call.call_id, call.name, call.seq, answer, tool=tool, corr=corr
                )
                continue
            raw = requested[call.seq].payload["arguments"]
            parsed = parse_arguments(tool, call.name, raw)
            if isinstance(parsed, ToolOutcome) or tool is None:
                assert isinstance(parsed, ToolOutcome)
                await self.record_result(
                    call.call_id, call.name, call.seq, parsed, tool=None, corr=corr
                )
                continue
            if approval is not None:
                args = approval.resolved_arguments or parsed
                if approval.resolved_arguments is not None:
                    edited = parse_arguments(tool, call.name, json.dumps(args))
                    if isinstance(edited, ToolOutcome):
                        await self.record_result(
                            call.call_id, call.name, call.seq, edited, tool=tool, corr=corr
                        )
                        continue
                    args = edited
                if call.seq not in started:
                    # Approved and never started: say so durably, then run it for the first time.
                    await self.append(
                        EventDraft(
                            type="tool.started",
                            payload={"call_id": call.call_id, "call_seq": call.seq},
                            correlation_id=corr,
                            causation_id=f"{state.run_id}:{approval.resolved_seq}",
                        )
                    )
                    rerun.append((call, tool, args, 1))
                    continue
                parsed = args
            if tool.idempotent or tool.on_unknown == "retry":
                rerun.append((call, tool, parsed, 2))
            else:
                outcome = ToolOutcome(
                    output=UNKNOWN_OUTCOME.format(name=tool.name), error="unknown_outcome"
                )
                await self.record_result(
                    call.call_id, tool.name, call.seq, outcome, tool=tool, corr=corr,
                    kind="tool.unknown",
                )  # fmt: skip
        await asyncio.gather(
            *(self.run_tool(call, tool, args, corr, attempt=n) for call, tool, args, n in rerun)
        )

    async def wrap_up(self, limit: str, reason: str) -> None:
        """One last turn without tools, then stop with a labelled partial answer."""
        run_id = self.state.run_id
        corr = self.correlation("wrap-up")
        prompt = WRAP_UP_PROMPT.format(reason=reason)
        await self.append(
            EventDraft(
                type="limit.reached",
                payload={"limit": limit, "reason": reason},
                correlation_id=corr,
                causation_id=f"{run_id}:{self.state.last_seq}",
            ),
            EventDraft(
                type="message.user",
                payload={"content": prompt, "pinned": False},
                correlation_id=corr,
                actor="runtime",
                visibility="user_hidden",
            ),
        )
        request = self.build_request(tools_enabled=False)
        hold = await self.hold(request, corr)
        if isinstance(hold, Denial):
            await self.stop(limit, reason, corr, answer=None, extra=[])
            return
        events = await self.append(
            EventDraft(
                type="model.requested",
                payload=self.request_payload(limit=limit, reason=reason),
                correlation_id=corr,
            ),
            *self.reserved_drafts(hold, corr, cause=self.state.last_seq + 1),
        )
        await self.finish_wrap_up(events[0].seq, limit, reason, request, hold)

    async def finish_wrap_up(
        self,
        request_seq: int,
        limit: str,
        reason: str,
        request: ModelRequest | None = None,
        hold: Reservation | None = None,
    ) -> None:
        run_id = self.state.run_id
        corr = self.correlation("wrap-up")
        if request is None:  # resuming a wrap-up a crash interrupted
            request = self.build_request(tools_enabled=False)
            held = await self.hold(request, corr)
            if isinstance(held, Denial):
                await self.stop(limit, reason, corr, answer=None, extra=[])
                return
            hold = held
            if hold is not None:
                await self.append(*self.reserved_drafts(hold, corr, cause=request_seq))
        response = await self.call_model(corr, request_seq, request, hold)
        if response is None or self.state.terminal:
            if not self.state.terminal:
                await self.stop(limit, reason, corr, answer=None, extra=[])
            return
        extra = [
            EventDraft(
                type="model.completed",
                payload={
                    "content": response.content,
                    "tool_calls": [],
                    "finish_reason": response.finish_reason,
                    "model": response.model,
                    "ignored_tool_calls": len(response.tool_calls),
                },
                correlation_id=corr,
                causation_id=f"{run_id}:{request_seq}",
                actor=f"model:{self.model.name}",
                usage=self.usage_of(response),
                visibility="visible",
            )
        ]
        if hold is not None:
            cost = self.usage_of(response).cost_usd
            extra.append(self.settled_draft(hold, cost, corr, cause=self.state.last_seq + 1))
        await self.stop(limit, reason, corr, answer=response.content, extra=extra)

    async def stop(
        self, limit: str, reason: str, corr: str, *, answer: str | None, extra: list[EventDraft]
    ) -> None:
        """End the run `stopped`, with an answer labelled partial and a report."""
        state = self.state
        if answer is None:
            answer = (
                "No final answer: there was no room left for a wrap-up turn. "
                f"Done so far: {state.steps} steps, {state.tool_calls} tool calls."
            )
        await self.append(
            *extra,
            EventDraft(
                type="run.stopped",
                payload={
                    "answer": f"[PARTIAL — {reason}]\n\n{answer}".rstrip(),
                    "partial": True,
                    "reason": reason,
                    "limit": limit,
                    "report": {
                        "steps": state.steps,
                        "tool_calls": state.tool_calls,
                        "tool_errors": state.tool_errors,
                        "tokens": state.tokens,
                        "cost_usd": state.cost_usd,
                        "missing": f"the run was stopped before it finished: {reason}",
                    },
                },
                correlation_id=corr,
            ),
        )

    async def fail(self, reason: str, *, retryable: bool = False) -> None:
        await self.append(
            EventDraft(
                type="run.failed",
                payload={"reason": reason, "retryable": retryable, "answer": None},
            )
        )


async def drive_run(
    *,
    store: Store,
    agent: Agent,
    model: Model,
    run_id: str,
    owner: str,
    clock: Clock | None = None,
    prices: PriceTable | None = None,
    observer: Observer | None = None,
    lease_ttl_s: float = 60.0,
    snapshot_every: int = 200,
    model_retries: int = 3,
    model_retry_backoff_s: float = 1.0,
    ledger: Ledger | None = None,
    budgets: Mapping[str, BudgetLimits] | None = None,
) -> RunResult:
    """Drive a run under a fresh lease until it ends or pauses; always releases the lease."""
    from ._runtime import holder_is_dead

    clock = clock or SystemClock()
    record = await store.get_run(run_id)
    if record.summary.status == "waiting_approval":
        await expire_approvals(store, clock=clock, run_id=run_id)
    holder = record.lease_owner
    takeover = holder if holder and holder != owner and holder_is_dead(holder) else None
    lease = await store.acquire_lease(
        run_id, owner=owner, ttl_s=lease_ttl_s, takeover_from=takeover
    )
    try:
        journal, _ = await RunJournal.open(store, lease, clock=clock, snapshot_every=snapshot_every)
        state = journal.state
        if state.terminal or state.status == "waiting_approval":
            return RunResult.of(state)
        if state.agent != agent.name:
            raise UsageError(f"run {run_id} belongs to agent {state.agent!r}, not {agent.name!r}")
        driver = _Driver(
            agent=agent,
            model=model,
            journal=journal,
            clock=clock,
            prices=prices or PriceTable.from_env(),
            observer=observer,
            model_retries=model_retries,
            model_retry_backoff_s=model_retry_backoff_s,
            ledger=ledger,
            budgets=budgets,
        )
        heartbeat = asyncio.create_task(_heartbeat(journal, lease_ttl_s))
        try:
            final = await driver.run()
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        return RunResult.of(final)
    finally:
        await store.release_lease(lease)


async def _heartbeat(journal: RunJournal, ttl_s: float) -> None:
    """Renew the lease at a third of its life so it never lapses while the run is driven."""
    while True:
        await asyncio.sleep(ttl_s / 3)
        journal.lease = await journal.store.renew_lease(journal.lease, ttl_s=ttl_s)
