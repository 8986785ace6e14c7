"""The agent loop: load → fold → decide → record intent → effect → record result.

Every effect is journaled before it is acted on and after it happened (write-ahead), so
a run resumed anywhere continues from its journal: completed tool calls are never run
again, in-flight ones are re-run only when idempotent, and model answers are reused.

The loop itself is `run` and `cycle` below; each concern around it lives in its own
module of the driver chain (see `_driver_base.DriverBase`) or is a policy on the seam
(`tether.policies`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from .._clock import Clock, SystemClock
from ..agent import Agent
from ..approvals import expire_approvals
from ..budget import BudgetLimits, Denial, Ledger, Reservation
from ..errors import UsageError
from ..events import EventDraft
from ..journal import RunJournal, Store
from ..journal._integrity import verify_row
from ..models import Model, PriceTable
from ..policies import BeforeModel
from ..state import RunState
from ..tools._executor import SyncExecutor, use_executor
from ._ending import Ending
from ._guard import ended_on_error
from ._results import Observer, Progress, RunResult
from ._sources import bind_tool_sources

__all__ = ["Observer", "Progress", "RunResult", "drive_run"]


class _Driver(Ending):
    """Drives one run under one lease until it ends, pauses or loses the lease."""

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
        await self.load_policies()
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
        if self.halt is not None:
            (limit, reason), self.halt = self.halt, None
            await self.wrap_up(limit, reason)
            return
        paused = self.gate.resolved
        if (
            paused is not None
            and state.open_model_request is None
            and await self.after_pause(paused)
        ):
            return
        if state.open_model_request is None:
            try:
                if not await self.before_model():
                    return
            finally:
                self.waived = None
            state = self.state
            cycle = state.cycle + 1
            corr = self.correlation(cycle)
            await self.maybe_compact(corr)
            request = self.build_request(tools_enabled=True)
            run_id, last = self.state.run_id, self.state.last_seq

            def drafts(hold: Reservation | None) -> list[EventDraft]:
                return [
                    EventDraft(
                        type="cycle.started",
                        payload={"cycle": cycle},
                        correlation_id=corr,
                        causation_id=f"{run_id}:{last}",
                    ),
                    EventDraft(
                        type="model.requested",
                        # The call's hold rides on its request (budget/_journaled.py).
                        payload={**self.request_payload(), **self.reservation(hold)},
                        correlation_id=corr,
                        causation_id=f"{run_id}:{last + 1}",
                    ),
                ]

            hold, events = await self.request_with_hold(request, corr, drafts)
            if isinstance(hold, Denial):
                await self.wrap_up("budget", hold.reason)
                return
            request_seq = events[1].seq
            # Nothing below needs them while the model is called: with many runs in a
            # process, what a suspended run keeps alive is traversed by every collection.
            del events, drafts
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
                # The request is already journaled: this hold needs an event of its own.
                await self.append(*self.reserved_drafts(hold, corr, cause=request_seq))
        del state
        response = await self.call_model(corr, request_seq, request, hold, settle=not self.joined)
        # The request holds the whole context: let it go before the tools run, or with many
        # runs in a process every suspended run keeps one alive for the collector to scan.
        del request
        if response is None:
            return
        await self.record_response(response, corr, request_seq, hold)

    async def before_model(self) -> bool:
        """Consult the policies before a cycle; False when one stopped the run (it is
        then wrapping up) instead. Their notes reach the agent before the call."""
        state, limits = self.state, self.limits
        # Leave room for the next call and for the wrap-up turn after it: the context
        # grows by a result (and maybe a policy's notice, hence 300 rather than 200).
        input_est = self.cache.token_count(state) + 300
        out_max = self.max_tokens() + self.agent.wrap_up_output_tokens
        # The next turn also sends the tool specs (the wrap-up turn after it does not).
        input_est = 2 * input_est + self.offered_tools()[1]
        cost = (
            self.prices.cost(self.model.name, input_est, out_max)
            if limits.max_cost_usd is not None
            else 0.0
        )
        verdicts = await self.consult(
            "before_model",
            BeforeModel(
                state=state, now=self.clock.time(), limits=limits, elapsed_s=self.elapsed(),
                next_turn_tokens=input_est + out_max, next_turn_cost_usd=cost,
            ),
        )  # fmt: skip
        if not verdicts:
            return True
        corr = self.correlation(state.cycle + 1)
        drafts = self.health_drafts(verdicts, corr)
        notes = [v.message for v in verdicts if v.action == "tell" and v.message]
        if notes:
            drafts.append(self.runtime_note("\n".join(notes), corr))
        decision = verdicts[-1]
        if decision.action == "pause":
            # A durable interrupt before the cycle: nothing of it is journaled yet.
            await self.append(*drafts, self.pause(drafts, "before_model", decision, corr))
            return False
        if decision.action in ("stop", "refuse"):
            if drafts:
                await self.append(*drafts)
            limit = str(decision.data.get("limit", decision.policy))
            await self.wrap_up(limit, decision.message or f"{decision.policy} stopped the run")
            return False
        if drafts:
            await self.append(*drafts)
        return True


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
        sources = await bind_tool_sources(agent, journal)  # MCP servers: see _sources.py
        driver = _Driver(
            agent=sources.agent,
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
            with use_executor(SyncExecutor()):
                final = await ended_on_error(driver.run(), driver.journal)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await sources.aclose()
        return RunResult.of(final)
    finally:
        await store.release_lease(lease)


async def _heartbeat(journal: RunJournal, ttl_s: float) -> None:
    """Renew the lease at a third of its life so it never lapses while the run is driven."""
    while True:
        await asyncio.sleep(ttl_s / 3)
        journal.lease = await journal.store.renew_lease(journal.lease, ttl_s=ttl_s)
