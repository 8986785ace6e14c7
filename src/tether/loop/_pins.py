"""Pinned facts: what the agent or an operator decided the model must never lose.

A pin is journaled (`fact.pinned`, `fact.unpinned`), folded into `RunState.facts` and
shown to the model as one message right after the mission and the task, so compaction
never touches it. Pins share a token budget; the agent is told how much is left.
"""

from __future__ import annotations

from typing import Any

from .._clock import Clock
from ..errors import UsageError
from ..events import EventDraft
from ..journal import RunJournal, Store
from ..journal._leases import brief_journal
from ..models import Message, estimate_tokens
from ..models._tokens import estimate_text_tokens
from ..state import Fact, RunState
from ..tools import Tool, ToolOutcome, tool

__all__ = [
    "DEFAULT_PIN_TOKENS",
    "PIN_TOOLS",
    "facts_message",
    "pin_call",
    "pin_fact",
    "pin_status",
    "pinned_tokens",
    "unpin_fact",
]

DEFAULT_PIN_TOKENS = 2_000
"""Tokens all pinned facts may take together (`Agent.pin_tokens` overrides it)."""
OPERATOR_PIN_TOKENS = 4 * DEFAULT_PIN_TOKENS
"""Tokens all pins may take once an operator pins: an operator is not held to the agent's
budget (not known where the store is), but pins are never compacted, so they are bounded."""

FACTS_HEADER = "Pinned facts (never compacted; unpin what is no longer needed):"


_LOOP_ONLY = "pin tools are carried out by the loop (pin_call); their bodies never run"


@tool(name="pin_fact", idempotent=True)
def _pin(fact: str, source: str) -> str:
    """Pin a fact so it stays in your context for the rest of the run, whatever is compacted.

    Use it for what you must not forget: decisions, key figures, identifiers, constraints.
    Pins share a small token budget, shown in the status line after each tool result.

    Args:
        fact: The fact, short and self-contained.
        source: Where it comes from (a URL, a document, a tool call), so it can be checked.
    """
    raise RuntimeError(_LOOP_ONLY)


@tool(name="unpin_fact", idempotent=True)
def _unpin(id: str) -> str:
    """Unpin a fact you no longer need, freeing its share of the pin budget.

    Args:
        id: The fact's id, as shown in the pinned facts (e.g. F12).
    """
    raise RuntimeError(_LOOP_ONLY)


PIN_TOOLS: dict[str, Tool] = {_pin.name: _pin, _unpin.name: _unpin}


def _line(fact: Fact) -> str:
    source = f" (source: {fact.source})" if fact.source else ""
    return f"- [{fact.id}] {fact.text}{source}"


def facts_message(facts: tuple[Fact, ...]) -> Message:
    return Message(role="user", content="\n".join([FACTS_HEADER, *map(_line, facts)]))


def pinned_tokens(facts: tuple[Fact, ...]) -> int:
    return estimate_tokens((facts_message(facts),)) if facts else 0


def pin_status(state: RunState, budget: int) -> str:
    """The runway line's pin part: how much of the pin budget is used."""
    return f"pins {len(state.facts)} ({pinned_tokens(state.facts)}/{budget} tokens)"


def pin_call(
    state: RunState, name: str, arguments: dict[str, Any], *, call_seq: int, budget: int
) -> tuple[ToolOutcome, EventDraft | None]:
    """The outcome of a pin tool call and the event that makes it so (None: nothing to do).

    A fact's id comes from its call's seq, so re-running the call after a crash finds the
    pin it already made instead of pinning it twice.
    """
    if name == "unpin_fact":
        fact_id = str(arguments["id"]).strip()
        if not any(f.id == fact_id for f in state.facts):
            known = ", ".join(f.id for f in state.facts) or "none"
            return ToolOutcome(
                output=f"error: no pinned fact {fact_id!r} (pinned: {known})",
                error="invalid_arguments",
            ), None
        return ToolOutcome(output=f"unpinned {fact_id}"), EventDraft(
            type="fact.unpinned", payload={"id": fact_id}, actor="agent"
        )
    fact_id = f"F{call_seq}"
    if any(f.id == fact_id for f in state.facts):
        return ToolOutcome(output=f"pinned as {fact_id}"), None
    text, source = str(arguments["fact"]).strip(), str(arguments["source"]).strip()
    if not text:
        return ToolOutcome(output="error: the fact is empty", error="invalid_arguments"), None
    candidate = Fact(id=fact_id, text=text, source=source, by="agent", seq=0)
    used = pinned_tokens((*state.facts, candidate))
    if used > budget:
        return ToolOutcome(
            output=(
                f"error: pinning this would use {used} of the {budget} pin tokens; "
                "unpin something first or shorten the fact"
            ),
            error="invalid_arguments",
        ), None
    return ToolOutcome(output=f"pinned as {fact_id} ({used}/{budget} pin tokens used)"), (
        EventDraft(
            type="fact.pinned",
            payload={"id": fact_id, "text": text, "source": source},
            actor="agent",
        )
    )


async def pin_fact(
    store: Store,
    run_id: str,
    text: str,
    *,
    source: str = "",
    actor: str = "operator",
    clock: Clock | None = None,
) -> Fact:
    """Pin a fact into a run's context as an operator (under a brief lease of the run)."""
    if not text.strip():
        raise UsageError("the fact is empty")
    if estimate_text_tokens(text) > OPERATOR_PIN_TOKENS:
        raise UsageError("the fact is too long to pin; pin a short statement and its source")

    def draft(journal: RunJournal) -> EventDraft:
        seq = journal.state.last_seq + 1
        fact = Fact(id=f"F{seq}", text=text.strip(), source=source.strip(), by=actor, seq=seq)
        used = pinned_tokens((*journal.state.facts, fact))
        if used > OPERATOR_PIN_TOKENS:
            raise UsageError(
                f"run {run_id}'s pins would take {used} tokens, over the "
                f"{OPERATOR_PIN_TOKENS} all pins may take; unpin something first"
            )
        return EventDraft(
            type="fact.pinned",
            payload={"id": fact.id, "text": fact.text, "source": fact.source},
            actor=actor,
        )

    state = await _append_as(store, run_id, actor, draft, clock=clock)
    return state.facts[-1]


async def unpin_fact(
    store: Store, run_id: str, fact_id: str, *, actor: str = "operator", clock: Clock | None = None
) -> None:
    """Unpin a fact from a run's context as an operator."""

    def draft(journal: RunJournal) -> EventDraft:
        if not any(f.id == fact_id for f in journal.state.facts):
            known = ", ".join(f.id for f in journal.state.facts) or "none"
            raise UsageError(f"run {run_id} has no pinned fact {fact_id!r} (pinned: {known})")
        return EventDraft(type="fact.unpinned", payload={"id": fact_id}, actor=actor)

    await _append_as(store, run_id, actor, draft, clock=clock)


async def _append_as(
    store: Store, run_id: str, actor: str, make: Any, *, clock: Clock | None
) -> RunState:
    async with brief_journal(store, run_id, role=f"pin-{actor}", clock=clock) as journal:
        if journal.state.terminal:
            raise UsageError(f"run {run_id} has ended ({journal.state.status}); nothing to pin")
        await journal.append(make(journal))
        return journal.state
