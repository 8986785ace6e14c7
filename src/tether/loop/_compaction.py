"""Compaction: fold old turns into the one summary, by a journaled summariser call.

The summariser call is a model call like any other: its budget is reserved, its request
and answer are journaled (`summary.requested`, `summary.completed`, with usage and cost),
and a journaled answer is reused on resume, never asked for again. An answer that fails
the checks in `_summary.py` (or no answer) gives way to the extractive summary.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..budget import Denial, Reservation
from ..errors import CorruptionError, ModelError
from ..events import EventDecodeError, EventDraft, Usage, Visibility
from ..journal._integrity import verify_row
from ..models import Message, Model, UnpricedModel
from ..models._validate import clean_text, complete_checked
from ._context import SUMMARY_HEADER, is_summary, plan_compaction
from ._guard import bad_output_warning
from ._summary import check_summary, extractive_summary, summary_request

if TYPE_CHECKING:
    from ._model_calls import ModelCalls as _Driver

__all__ = ["compact", "compaction_budget", "summary_budget"]

_PRIVACY: dict[Visibility, int] = {"visible": 0, "user_hidden": 1, "always_hidden": 2}


def summary_budget(driver: _Driver) -> int:
    """Tokens the summary may take: a share of the window (`Agent.summary_share`)."""
    return max(200, int(driver.agent.summary_share * driver.model.context_window))


def compaction_budget(driver: _Driver) -> tuple[int, int]:
    """(trigger, target): compact when the next request would pass the trigger, down to
    the target, leaving room for the answer and for the summariser."""
    window = driver.model.context_window
    threshold = driver.limits.context_threshold
    return int(threshold * window), int(threshold * window * 0.6)


async def compact(driver: _Driver, corr: str, *, budget: int) -> None:
    state = driver.state
    cache = driver.cache
    s_budget = summary_budget(driver)
    reused = await _journaled_answer(driver)
    if reused is not None:
        removed, answer = reused
    else:
        removed = plan_compaction(state, cache, budget_tokens=budget, summary_tokens=s_budget)
        answer = None
    if not removed:
        return
    previous = next(
        (cache.messages[s].content for s in removed if is_summary(cache.messages[s])), None
    )
    messages = [cache.messages[s] for s in removed if not is_summary(cache.messages[s])]
    # The summary carries what it summarises: it is as private as the most private part.
    visibility: Visibility = max(
        (cache.visibility.get(s, "user_hidden") for s in removed), key=_PRIVACY.__getitem__
    )
    rejected: str | None = None
    if answer is None:
        answer, rejected = await _ask(driver, corr, removed, previous, messages,
                                      s_budget, visibility)  # fmt: skip
    if answer is not None:
        rejected = check_summary(answer, budget_tokens=s_budget, previous=previous)
    if answer is not None and rejected is None:
        content, source = _with_header(answer), "model"
    else:
        content = extractive_summary(previous, messages, budget_tokens=s_budget)
        source = "extractive"
    await driver.append(
        EventDraft(
            type="context.compacted",
            payload={
                "removed": removed,
                "content": content,
                "source": source,
                "rejected": rejected,
                "summary_budget": s_budget,
                "tokens_before": cache.token_count(driver.state),
            },
            correlation_id=corr,
            visibility=visibility,
        )
    )
    cache.forget(driver.state.context)


def _with_header(text: str) -> str:
    body = text.strip()
    return body if body.startswith(SUMMARY_HEADER) else f"{SUMMARY_HEADER}\n{body}"


async def _journaled_answer(driver: _Driver) -> tuple[list[int], str] | None:
    """A summariser answer journaled before a crash, if its turns are all still there."""
    seq = driver.state.summary_seq
    if seq is None:
        return None
    run_id = driver.state.run_id
    rows = await driver.journal.store.read_rows_at(run_id, [seq])
    try:
        event = verify_row(rows[0]) if rows else None
    except EventDecodeError as exc:
        raise CorruptionError(run_id, seq, str(exc), repair="repair: tether fork") from None
    if event is None:
        raise CorruptionError(run_id, seq, "the summariser's answer is missing")
    removed: list[int] = list(event.payload["removed"])
    if not removed or any(s not in driver.state.context for s in removed):
        return None
    await driver.cache.load(driver.state)
    return removed, str(event.payload["content"])


def _summary_model(driver: _Driver) -> Model:
    return driver.agent.summary_model or driver.model


async def _ask(
    driver: _Driver,
    corr: str,
    removed: list[int],
    previous: str | None,
    messages: list[Message],
    budget: int,
    visibility: Visibility,
) -> tuple[str | None, str | None]:
    """Ask the summariser, journaled and within budget: (answer, why there is none)."""
    model = _summary_model(driver)
    room = model.context_window - budget - 256
    request = summary_request(previous, messages, budget_tokens=budget, room_tokens=room)
    hold: Reservation | Denial | None = None
    if driver.ledger is not None:
        try:
            input_tokens = model.count_tokens(request.messages)
            cost = driver.prices.cost(model.name, input_tokens, budget)
        except UnpricedModel as exc:
            return None, f"the summariser is not priced: {exc}"
        hold = await driver.reserve(cost, corr, kind="summary")
        if isinstance(hold, Denial):
            return None, f"the summariser's budget was denied: {hold.reason}"
    drafts: list[EventDraft] = [
        EventDraft(
            type="summary.requested",
            payload={
                "model": model.name,
                "removed": removed,
                "budget_tokens": budget,
                "max_tokens": request.max_tokens,
            },
            correlation_id=corr,
            visibility=visibility,
        )
    ]
    if isinstance(hold, Reservation):
        drafts.append(_budget_draft(driver, "budget.reserved", corr, {
            "reservation_id": hold.id, "kind": "summary", "estimate_usd": hold.estimate_usd,
            "scopes": list(hold.scopes), "priced": driver.prices.is_priced(model.name),
        }))  # fmt: skip
    events = await driver.append(*drafts)
    settled = False
    try:
        try:
            # The summariser is a model like any other: bounded in time and checked at
            # the boundary (usage, text, shape, any exception it raises).
            checked = await driver.bounded(
                complete_checked(
                    model, request, input_estimate=lambda: model.count_tokens(request.messages)
                ),
                request,
            )
        except ModelError as exc:
            await driver.append(
                EventDraft(
                    type="model.failed",
                    payload={
                        "error": clean_text(str(exc)),
                        "kind": type(exc).__name__,
                        "transient": False,
                        "purpose": "summary",
                    },
                    correlation_id=corr,
                    causation_id=events[0].id,
                )
            )
            # The error's text may echo the request: it stays in `model.failed` (audit).
            return None, f"the summariser failed ({type(exc).__name__})"
        if checked.warnings:
            await driver.append(bad_output_warning(checked.warnings, corr))
        response = checked.response
        u = response.usage
        usage = Usage(
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cost_usd=driver.prices.cost(model.name, u.input_tokens, u.output_tokens),
        )
        after: list[EventDraft] = []
        if isinstance(hold, Reservation) and driver.ledger is not None:
            await driver.ledger.settle(hold, usage.cost_usd)
            settled = True
            after.append(_budget_draft(driver, "budget.settled", corr, {
                "reservation_id": hold.id, "estimate_usd": hold.estimate_usd,
                "actual_usd": usage.cost_usd,
            }))  # fmt: skip
        await driver.append(
            EventDraft(
                type="summary.completed",
                payload={
                    "content": response.content,
                    "removed": removed,
                    "model": response.model,
                    "finish_reason": response.finish_reason,
                },
                correlation_id=corr,
                causation_id=events[0].id,
                actor=f"model:{model.name}",
                usage=usage,
                visibility=visibility,
            ),
            *after,
        )
        return response.content, None
    finally:
        if isinstance(hold, Reservation) and not settled and driver.ledger is not None:
            await driver.ledger.release(hold)


def _budget_draft(driver: _Driver, kind: str, corr: str, payload: dict[str, Any]) -> EventDraft:
    return EventDraft(type=kind, payload=payload, correlation_id=corr)
