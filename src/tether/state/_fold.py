"""apply(state, event) -> state: deterministic, side-effect free, total over EVENT_TYPES."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any

from ..errors import CorruptionError
from ..events import EVENT_TYPES, Event
from ._model import ContextSeqs, Fact, PendingCall, RunState, RunStatus


def fold(events: Iterable[Event], initial: RunState | None = None) -> RunState:
    state = initial if initial is not None else RunState()
    for event in events:
        state = apply(state, event)
    return state


def apply(state: RunState, event: Event) -> RunState:
    handler = _HANDLERS.get(event.type)
    if handler is None:
        # A type this version does not know: never guess what it meant.
        raise CorruptionError(event.run_id, event.seq, f"unknown event type {event.type!r}")
    # Handlers return only what changed, so each event costs one copy of the state.
    changes = handler(state, event, event.payload)
    usage = event.usage
    if usage is not None:
        changes["input_tokens"] = state.input_tokens + usage.input_tokens
        changes["output_tokens"] = state.output_tokens + usage.output_tokens
        changes["cost_usd"] = round(state.cost_usd + usage.cost_usd, 10)
    if state.updated_at and event.type not in _PAUSE_ENDING:
        gap = epoch_of(event.ts) - epoch_of(state.updated_at)
        if gap > 0:
            changes["active_s"] = round(state.active_s + gap, 6)
    changes["last_seq"] = event.seq
    changes["last_hash"] = event.checksum
    changes["updated_at"] = event.ts
    return _evolve(state, changes)


def _evolve(state: RunState, changes: dict[str, Any]) -> RunState:
    """A copy of `state` with `changes` applied (handlers only name known fields)."""
    new = object.__new__(RunState)
    values = new.__dict__
    values.update(state.__dict__)
    values.update(changes)
    return new


_PAUSE_ENDING = frozenset({"run.resumed", "approval.resolved", "run.forked", "limit.changed"})
"""Events that end a pause: the time before them was not spent working on the run."""


@lru_cache(maxsize=8)
def epoch_of(ts: str) -> float:
    # Each timestamp is parsed twice in a row (as the event's, then as the state's last).
    return datetime.fromisoformat(ts).timestamp()


_Changes = dict[str, Any]
_Handler = Callable[[RunState, Event, dict[str, Any]], _Changes]


def _created(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    return dict(
        run_id=e.run_id,
        status="queued",
        agent=p["agent"],
        agent_version=p.get("agent_version", ""),
        task=p["task"],
        model=p.get("model", ""),
        tenant=p.get("tenant"),
        parent_event=p.get("parent_event"),
        limits=dict(p.get("limits", {})),
        created_at=e.ts,
    )


def _noop(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    return {}


def _message(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    pinned = (*s.pinned, e.seq) if p.get("pinned", True) else s.pinned
    return dict(context=s.context.appended(e.seq), pinned=pinned)


def _cycle(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    return dict(cycle=s.cycle + 1, status="running")


def _model_requested(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    return dict(open_model_request=e.seq, status="running")


def _model_completed(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    return dict(open_model_request=None, context=s.context.appended(e.seq))


def _model_failed(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    return dict(open_model_request=None)


def _tool_requested(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    call = PendingCall(call_id=p["call_id"], name=p["name"], seq=e.seq)
    return dict(pending_calls=(*s.pending_calls, call), tool_calls=s.tool_calls + 1)


def _tool_result(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    call_id = p["call_id"]
    remaining = tuple(c for c in s.pending_calls if c.call_id != call_id)
    errors = s.tool_errors + (1 if e.type != "tool.completed" or p.get("is_error") else 0)
    return dict(pending_calls=remaining, context=s.context.appended(e.seq), tool_errors=errors)


def _health(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    # A policy's checkpoint rides on its health event (see loop/_driver_base.py).
    checkpoint = p.get("checkpoint")
    if not isinstance(checkpoint, dict) or "key" not in checkpoint:
        return {}
    saved = {"after": checkpoint.get("after", 0), "at": e.seq, "state": checkpoint.get("state")}
    return dict(policy_state={**s.policy_state, str(checkpoint["key"]): saved})


def _compacted(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    # O(context), but only once per compaction; every other event appends in O(1).
    removed = set(p["removed"])
    pinned = set(s.pinned)
    kept = [seq for seq in s.context if seq not in removed or seq in pinned]
    # The summary event takes the place of what it replaced, after the pinned prefix.
    head = [seq for seq in kept if seq in pinned]
    tail = [seq for seq in kept if seq not in pinned]
    return dict(context=ContextSeqs([*head, e.seq, *tail]), summary_seq=None)


def _summary_completed(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    return dict(summary_seq=e.seq)


def _fact_pinned(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    fact = Fact(id=p["id"], text=p["text"], source=p.get("source", ""), by=e.actor, seq=e.seq)
    return dict(facts=(*(f for f in s.facts if f.id != fact.id), fact))


def _fact_unpinned(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    return dict(facts=tuple(f for f in s.facts if f.id != p["id"]))


def _approval_requested(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    return dict(
        pending_approvals=(*s.pending_approvals, p["request_id"]),
        status="waiting_approval",
    )


def _approval_resolved(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    remaining = tuple(r for r in s.pending_approvals if r != p["request_id"])
    status: RunStatus = "waiting_approval" if remaining else "queued"
    return dict(pending_approvals=remaining, status=status)


def _ended(status: RunStatus) -> _Handler:
    def handler(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
        return dict(
            status=status,
            answer=p.get("answer", s.answer),
            partial=bool(p.get("partial", False)),
            reason=p.get("reason"),
            open_model_request=None,
        )

    return handler


def _limits_changed(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    # New limits reopen a run a limit stopped: it continues where the wrap-up left it.
    limits = p.get("limits")
    changes: _Changes = dict(limits=dict(limits) if isinstance(limits, dict) else s.limits)
    if s.status == "stopped":
        changes.update(status="queued", answer=None, partial=False, reason=None)
    return changes


def _resumed(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    return dict(status="running")


def _forked(s: RunState, e: Event, p: dict[str, Any]) -> _Changes:
    # A fork continues from a good point: whatever was in flight there is not carried on.
    return dict(
        status="queued",
        parent_event=p["from_event"],
        key_base=p.get("key_base") or p["from_event"].rpartition(":")[0],
        cycle=p.get("cycle", s.cycle),
        created_at=e.ts,
        answer=None,
        partial=False,
        reason=None,
    )


_HANDLERS: dict[str, _Handler] = {
    "run.created": _created,
    "run.resumed": _resumed,
    "run.forked": _forked,
    "run.completed": _ended("completed"),
    "run.stopped": _ended("stopped"),
    "run.failed": _ended("failed"),
    "run.cancelled": _ended("cancelled"),
    "message.system": _message,
    "message.user": _message,
    "cycle.started": _cycle,
    "model.requested": _model_requested,
    "model.completed": _model_completed,
    "model.failed": _model_failed,
    "tool.requested": _tool_requested,
    "tool.started": _noop,
    "tool.completed": _tool_result,
    "tool.failed": _tool_result,
    "tool.unknown": _tool_result,
    "context.compacted": _compacted,
    "summary.requested": _noop,
    "summary.completed": _summary_completed,
    "fact.pinned": _fact_pinned,
    "fact.unpinned": _fact_unpinned,
    "limit.warning": _noop,
    "limit.reached": _noop,
    "limit.changed": _limits_changed,
    "budget.reserved": _noop,
    "budget.settled": _noop,
    "budget.denied": _noop,
    "approval.requested": _approval_requested,
    "approval.resolved": _approval_resolved,
    "journal.repaired": _noop,
    "health.warning": _noop,
    "health.truncated": _health,
    "health.breaker": _health,
    "health.inconsistent": _health,
    "health.stale": _health,
    "health.monitor": _health,
    "health.guardrail": _health,
    "health.policy": _health,
    "note": _noop,
}

assert set(_HANDLERS) == EVENT_TYPES, "every event type needs a fold rule"
