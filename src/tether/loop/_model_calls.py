"""Model calls on the driver: bounded in time, retried on outages, compacted on overflow.

A call is bounded by its own timeout (`Agent.model_timeout_s`) and by the run's remaining
time (`Limits.max_time_s`), whichever is sooner: a hung provider cannot hold a run past
its limit. Every timed-out attempt is journaled as `model.failed` with its bound, and
while a call is in flight the observer is sent a `model.waiting` tick every second so a
live display keeps counting.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import Awaitable
from typing import Any, TypeVar

from ..budget import Reservation
from ..errors import ContextOverflow, ModelError, ModelUnavailable
from ..events import EventDraft
from ..models import ModelRequest, ModelResponse
from ..models._validate import clean_text, complete_checked
from ._budgeting import Budgeting
from ._compaction import compact, compaction_budget
from ._guard import bad_output_warning
from ._results import Progress

__all__ = ["CallTimedOut", "ModelCalls", "OutOfTime"]

T = TypeVar("T")

WRAP_UP_GRACE_S = 10.0
"""The wrap-up turn after a time limit may run this much past it (at most a tenth of the
limit): long enough for a short answer, short enough that a hung model cannot hold on."""

TICK_S = 1.0


class CallTimedOut(ModelError):
    """A model call outlived its own timeout: transient, retried like an outage."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the model call timed out after {timeout_s:g}s")
        self.timeout_s = timeout_s


class OutOfTime(ModelError):
    """A model call was cut short by the run's time limit."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            f"the model call was cut off after {timeout_s:.1f}s by the run's time limit"
        )
        self.timeout_s = timeout_s


class ModelCalls(Budgeting):
    """Calling the model, with its failures journaled."""

    def time_left(self, *, wrap_up: bool = False) -> float | None:
        """Seconds of the run's time limit left (with the wrap-up grace), or None."""
        limit = self.limits.max_time_s
        if limit is None:
            return None
        left = limit - self.elapsed()
        if wrap_up:
            left = max(left, 0.0) + min(WRAP_UP_GRACE_S, limit / 10)
        return max(left, 0.0)

    async def bounded(self, call: Awaitable[T], request: ModelRequest) -> T:
        """Await a model call within its timeout and the run's remaining time, sending
        progress ticks meanwhile."""
        own = self.agent.model_timeout_s
        left = self.time_left(wrap_up=not request.tools)
        bound = min(b for b in (own, left, float("inf")) if b is not None)
        ticker = asyncio.create_task(self.tick("model.waiting")) if self.observer else None
        try:
            if bound == float("inf"):
                return await call
            try:
                # `asyncio.timeout`, not `wait_for`: no extra task per call on the hot path.
                async with asyncio.timeout(bound):
                    return await call
            except TimeoutError:
                if left is not None and left <= bound:
                    raise OutOfTime(bound) from None
                raise CallTimedOut(bound) from None
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker

    async def tick(self, event: str, tool: str | None = None) -> None:
        """Tell the observer the run is still working, every second, until cancelled."""
        assert self.observer is not None
        while True:
            await asyncio.sleep(TICK_S)
            self.observer(
                Progress(state=self.state, event=event, tool=tool, elapsed_s=self.elapsed())
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
                    response = await self.bounded(self.complete(request, corr), request)
                    window = max(1, self.model.context_window)
                    self.last_fill = response.usage.input_tokens / window
                    # The context has not changed since the request was built: O(1).
                    self.cache.calibrate(
                        self.cache.estimate(self.state)
                        + (self.offered_tools()[1] if request.tools else 0),
                        response.usage.input_tokens,
                    )
                    if hold is not None and self.ledger is not None and settle:
                        await self.ledger.settle(hold, self.usage_of(response).cost_usd)
                    settled = True
                    return response
                except ContextOverflow as exc:
                    await self.append(self.model_failed(corr, request_seq, exc, transient=False))
                    if compacted:
                        await self.fail(
                            "the context does not fit the model even after compaction", detail=exc
                        )
                        return None
                    # The provider counted more than our estimate: halve what we send.
                    current = self.cache.token_count(self.state)
                    await compact(self, corr, budget=min(self.model.context_window, current) // 2)
                    request = dataclasses.replace(request, messages=self.cache.build(self.state))
                    compacted = True
                except OutOfTime as exc:
                    # Journaled, then left to the limits policy: the next cycle wraps up
                    # (or, for a wrap-up turn, the run stops without an answer).
                    await self.append(
                        self.model_failed(corr, request_seq, exc, transient=False,
                                          timeout_s=exc.timeout_s, run_limit=True)
                    )  # fmt: skip
                    return None
                except (ModelUnavailable, CallTimedOut) as exc:
                    attempt += 1
                    extra = {"timeout_s": exc.timeout_s} if isinstance(exc, CallTimedOut) else {}
                    await self.append(
                        self.model_failed(corr, request_seq, exc, transient=True, **extra)
                    )
                    if attempt > self.model_retries:
                        await self.fail("the model is unavailable", retryable=True, detail=exc)
                        return None
                    delay = self.model_retry_backoff_s * 2 ** (attempt - 1)
                    delay *= 0.5 + random.random()
                    left = self.time_left()
                    if left is not None and left <= delay:
                        return None  # no time for another attempt: the limits policy stops
                    await asyncio.sleep(delay)
                except ModelError as exc:
                    await self.append(self.model_failed(corr, request_seq, exc, transient=False))
                    await self.fail("the model failed", detail=exc)
                    return None
        finally:
            if hold is not None and not settled and self.ledger is not None:
                await self.ledger.release(hold)

    async def complete(self, request: ModelRequest, corr: str) -> ModelResponse:
        """The model's answer, checked at the boundary; repairs are journaled as warnings."""
        checked = await complete_checked(
            self.model,
            request,
            input_estimate=lambda: self.model.count_tokens(request.messages, request.tools),
        )
        if checked.warnings:
            await self.append(bad_output_warning(checked.warnings, corr))
        return checked.response

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

    def model_failed(
        self, corr: str, request_seq: int, exc: Exception, *, transient: bool, **extra: Any
    ) -> EventDraft:
        return EventDraft(
            type="model.failed",
            payload={
                "error": clean_text(str(exc)),
                "kind": type(exc).__name__,
                "transient": transient,
                **extra,
            },
            correlation_id=corr,
            causation_id=f"{self.state.run_id}:{request_seq}",
        )

    async def maybe_compact(self, corr: str) -> None:
        """Compact when the next request and its answer would pass the threshold (or a
        summariser answer journaled before a crash is waiting to be used)."""
        trigger, target = compaction_budget(self)
        used = self.cache.token_count(self.state) + self.tools_tokens + self.max_tokens()
        if used > trigger or self.state.summary_seq is not None:
            await compact(self, corr, budget=target - self.tools_tokens)
