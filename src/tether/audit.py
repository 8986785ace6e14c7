"""The audit trail: "why did the agent do X?" as a query, and indexed event searches.

`why(store, EVENT_ID, role=...)` walks causation ids back from an event with point
lookups `(run_id, seq)` — never a scan — to the trigger of its cycle:

    trigger → cycle.started → model.requested (+ the context the model had) →
    model.completed (the decision) → tool.requested → approvals, budget checks →
    tool result → … → the event asked about

The walk stays inside the event's cycle (its correlation id); the first event of another
cycle reached is the trigger and ends it. Run-level events (the task message, the run's
creation, a resumption) are walked through, and a child run's creation leads into the
parent cycle whose tool call started it, so the chain crosses sub-agent boundaries. An
event without a causation id is linked to the event before it in its cycle (or in the
run), and the step says so (`"implied": true`). Approvals, budget checks, retries and
compactions of the cycle that hang off the chain are fetched with one indexed
correlation-id query and merged in.

The model's context at a decision is `fold(events before it).context`; it is rebuilt
from indexed lookups instead of a replay: the pinned messages, the newest compaction
before it, and the run of context events since that compaction's kept tail (compaction
always removes whole turns from the oldest end, so what it keeps is one contiguous tail).
The result is checked against the message count the request journaled; when that check
is impossible or fails, the context is replayed from the nearest snapshot and the step
says `"method": "replay"`.

Every step goes through `tether.views`: a role never receives an event, a field or a
secret above it, and steps it may not see are counted (`hidden_steps`), not shown.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from ._audit_context import ContextInfo, context_at, context_of
from ._audit_reader import ContextEntry, Reader, cycle_events
from ._redact import Redactor
from .errors import RunNotFound, UsageError
from .events import Event, parse_event_id
from .journal import Store
from .journal._index import RowQuery
from .views import ROLE_VISIBILITIES, Role, Viewer, can_see

__all__ = [
    "MAX_CHAIN",
    "AuditFilter",
    "ContextEntry",
    "ContextInfo",
    "audit_events",
    "context_at",
    "cycle_events",
    "why",
]

MAX_CHAIN = 1_000
"""Steps after which a walk stops (and says so): a guard against pathological journals."""

CHECK_TYPES = frozenset(
    {
        "approval.requested", "approval.resolved", "tool.started", "budget.reserved",
        "budget.settled", "budget.denied", "model.failed", "context.compacted",
        "limit.warning", "limit.reached", "health.warning", "note",
    }
)  # fmt: skip
"""Events that happen along a chain (checks, retries, decisions by humans) and are shown
with it when they hang off it, although nothing in the chain names them as a cause."""

_KIND = {
    "run.created": "run",
    "run.resumed": "resume",
    "run.forked": "fork",
    "message.system": "message",
    "message.user": "message",
    "cycle.started": "cycle",
    "model.requested": "request",
    "model.completed": "decision",
    "model.failed": "model_failure",
    "tool.requested": "tool_call",
    "tool.started": "tool_start",
    "tool.completed": "tool_result",
    "tool.failed": "tool_result",
    "tool.unknown": "tool_result",
    "approval.requested": "approval",
    "approval.resolved": "approval",
    "budget.reserved": "budget",
    "budget.settled": "budget",
    "budget.denied": "budget",
    "limit.warning": "limit",
    "limit.reached": "limit",
    "limit.changed": "limit",
    "context.compacted": "compaction",
    "run.completed": "outcome",
    "run.stopped": "outcome",
    "run.failed": "outcome",
    "run.cancelled": "outcome",
}


# -- why --------------------------------------------------------------------------------


@dataclass(kw_only=True, slots=True)
class _Step:
    event: Event
    implied: bool = False
    """Linked to the next step by position, not by a journaled causation id."""
    trigger: bool = False
    attached: bool = False
    """Hangs off the chain (a check along the way) rather than being a cause."""
    context: ContextInfo | None = None
    child_run: str | None = None


def _cause_of(event: Event) -> tuple[str, int] | None:
    if event.causation_id:
        try:
            return parse_event_id(event.causation_id)
        except ValueError:
            return None
    return None


async def _implied_cause(reader: Reader, event: Event) -> Event | None:
    """The event before this one in its cycle, else in its run."""
    if event.type == "run.created":
        return None
    if event.correlation_id:
        before = [
            e for e in await reader.cycle(event.run_id, event.correlation_id) if e.seq < event.seq
        ]
        if before:
            return before[-1]
    if event.seq > 1:
        return await reader.get(event.run_id, event.seq - 1)
    return None


async def _origin(reader: Reader, run_id: str, steps: list[_Step]) -> Event | None:
    """The `run.created` of a child run (one with a parent event) not yet in the chain."""
    if any(s.event.run_id == run_id and s.event.seq == 1 for s in steps):
        return None
    created = await reader.get(run_id, 1)
    if created is None or created.type != "run.created":
        return None
    return created if isinstance(created.payload.get("parent_event"), str) else None


async def _walk(reader: Reader, target: Event) -> tuple[list[_Step], list[str]]:
    """Causes of `target` back to its cycle's trigger, newest first.

    A chain that ends inside a child run continues from the child's creation into the
    parent's cycle whose tool call started it.
    """
    notes: list[str] = []
    steps = [_Step(event=target)]
    cycle = target.correlation_id
    through_run_level = False
    current = target
    while len(steps) < MAX_CHAIN:
        implied = False
        cause: Event | None = None
        where = _cause_of(current)
        crossing = False
        if where is not None:
            try:
                cause = await reader.get(*where)
            except RunNotFound:
                cause = None
            if cause is None:
                notes.append(f"{current.id} names cause {current.causation_id}, which is missing")
                break
        elif current.type == "run.created":
            parent = current.payload.get("parent_event")
            if not isinstance(parent, str):
                break
            try:
                cause = await reader.get(*parse_event_id(parent))
            except (ValueError, RunNotFound):
                cause = None
            if cause is None:
                notes.append(f"parent event {parent} of run {current.run_id} is missing")
                break
            crossing = True
        else:
            cause = await _implied_cause(reader, current)
            implied = True
            if cause is None:
                break
        if any(s.event.id == cause.id for s in steps):
            notes.append(f"{current.id} leads back to {cause.id} again: the chain stops there")
            break
        steps[-1].implied = implied
        step = _Step(event=cause)
        steps.append(step)
        current = cause
        if crossing:
            step.child_run = steps[-2].event.run_id
            cycle = cause.correlation_id
            through_run_level = False
            continue
        ended = False
        if through_run_level:
            ended = cause.correlation_id is not None
        elif cycle is None:
            cycle = cause.correlation_id
        elif cause.correlation_id != cycle:
            step.trigger = True
            ended = cause.correlation_id is not None
            through_run_level = not ended
        if ended:
            step.trigger = True
            origin = await _origin(reader, cause.run_id, steps)
            if origin is None:
                break
            # The chain ended inside a child run: go on from the call that started it.
            steps.append(_Step(event=origin, implied=True))
            current, cycle, through_run_level = origin, None, False
    else:
        notes.append(f"the chain was cut after {MAX_CHAIN} steps")
    return steps, notes


async def _attach(reader: Reader, steps: list[_Step]) -> list[_Step]:
    """Checks along the way: events of the chain's cycles that hang off chain events."""
    ids = {s.event.id for s in steps}
    target = steps[0].event
    # The latest chain event of each run bounds what may be attached there.
    bound: dict[str, int] = {}
    for s in steps:
        bound[s.event.run_id] = max(bound.get(s.event.run_id, 0), s.event.seq)
    extra: list[_Step] = []
    cycles = {
        (s.event.run_id, s.event.correlation_id)
        for s in steps
        if s.event.correlation_id and not s.trigger
    }
    for run_id, corr in sorted(cycles):
        assert corr is not None
        for event in await reader.cycle(run_id, corr):
            if event.id in ids or event.type not in CHECK_TYPES or event.seq >= bound[run_id]:
                continue
            if event.run_id == target.run_id and event.seq > target.seq:
                continue
            cause = event.causation_id
            if cause is None or cause in ids:
                ids.add(event.id)
                extra.append(_Step(event=event, attached=True, implied=cause is None))
    return extra


def _ordered(steps: list[_Step], extra: list[_Step]) -> list[_Step]:
    """Oldest first: runs in the order the walk entered them (parents first), then seq."""
    order: dict[str, int] = {}
    for s in reversed(steps):
        order.setdefault(s.event.run_id, len(order))
    everything = [*steps, *extra]
    return sorted(everything, key=lambda s: (order[s.event.run_id], s.event.seq))


async def why(
    store: Store,
    event_id: str,
    *,
    role: Role,
    redactor: Redactor | None = None,
) -> dict[str, Any]:
    """The causal chain of an event, oldest first, as `role` may see it.

    Returns `{"event": ID, "chain": [step, ...], "hidden_steps": N, "notes": [...],
    "lookups": N}`; each step is the event's view plus `kind`, `trigger`, `attached`,
    `implied`, and for a model request the `context` the model had.
    """
    try:
        run_id, seq = parse_event_id(event_id)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    reader = Reader(store)
    await store.get_run(run_id)  # RunNotFound: a usage error
    target = await reader.get(run_id, seq)
    if target is None or not can_see(role, target.visibility):
        raise UsageError(f"no event {event_id} in the {role} view of this store")
    steps, notes = await _walk(reader, target)
    extra = await _attach(reader, steps)
    chain = _ordered(steps, extra)
    await _add_contexts(reader, chain)
    await _link_children(reader, chain)
    viewer = Viewer(store, role, redactor=redactor)
    out: list[dict[str, Any]] = []
    hidden = 0
    for step in chain:
        view = viewer.event(step.event)
        if view is None:
            hidden += 1
            continue
        view["kind"] = _KIND.get(step.event.type, "event")
        view["target"] = step.event is target
        view["trigger"] = step.trigger
        view["attached"] = step.attached
        view["implied"] = step.implied
        if step.child_run is not None:
            view["child_run"] = step.child_run
        if step.context is not None:
            view["context"] = _context_view(step.context, role)
        out.append(view)
    return {
        "event": event_id,
        "role": role,
        "chain": out,
        "hidden_steps": hidden,
        "notes": notes,
        "lookups": reader.lookups,
    }


async def _link_children(reader: Reader, chain: list[_Step]) -> None:
    """Name the child run a sub-agent call started (`tether.subagents.child_run_id`)."""
    from .subagents import child_run_id

    for step in chain:
        event = step.event
        if event.type != "tool.requested" or step.child_run is not None:
            continue
        key = event.payload.get("idempotency_key")
        child = child_run_id(key if isinstance(key, str) else event.id)
        reader.lookups += 1
        try:
            record = await reader.store.get_run(child)
        except RunNotFound:
            continue
        if record.parent_run_id == event.run_id:
            step.child_run = child


async def _add_contexts(reader: Reader, chain: list[_Step]) -> None:
    """Give each model request of the chain the context its decision was made on."""
    by_request: dict[str, Event] = {}
    for step in chain:
        e = step.event
        if e.type == "model.completed" and e.causation_id:
            by_request[e.causation_id] = e
    for step in chain:
        request = step.event
        if request.type != "model.requested":
            continue
        decision = by_request.get(request.id)
        at = decision.seq if decision is not None else request.seq
        expected = request.payload.get("context_messages")
        if decision is not None and isinstance(expected, int):
            # A compaction between the request and the answer (an overflow retry) changed
            # the context after the count was journaled: the count cannot check it then.
            between = await reader.query(
                RowQuery(
                    run_id=request.run_id,
                    types=("context.compacted",),
                    after_seq=request.seq,
                    before_seq=decision.seq,
                    limit=1,
                )
            )
            if between:
                expected = None
        info = await context_of(
            reader,
            request.run_id,
            at,
            expected=expected if isinstance(expected, int) else None,
        )
        tokens = request.payload.get("context_tokens")
        step.context = replace(
            info,
            estimated_tokens=tokens if isinstance(tokens, int) else None,
            input_tokens=decision.usage.input_tokens
            if decision is not None and decision.usage is not None
            else None,
        )


def _context_view(info: ContextInfo, role: Role) -> dict[str, Any]:
    allowed = ROLE_VISIBILITIES[role]
    shown = [e for e in info.entries if e.visibility in allowed]
    return {
        "at_seq": info.at_seq,
        "messages": len(info.seqs),
        "seqs": [e.seq for e in shown],
        "by_type": dict(Counter(e.type for e in shown)),
        "hidden": len(info.seqs) - len(shown),
        "estimated_tokens": info.estimated_tokens,
        "input_tokens": info.input_tokens,
        "method": info.method,
    }


# -- audit queries ----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditFilter:
    """An audit search; every given field must match. Times are journal timestamps."""

    run_id: str | None = None
    correlation_id: str | None = None
    types: tuple[str, ...] = ()
    tool: str | None = None
    actor: str | None = None
    """Exact actor, or a prefix when it ends with `*` (`tool:*`, `cli:*`)."""
    since: str | None = None
    until: str | None = None
    limit: int = 100
    newest_first: bool = False
    """The newest `limit` matches, newest first (a health list), instead of the oldest."""


async def audit_events(
    store: Store, where: AuditFilter, *, role: Role, redactor: Redactor | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """Events matching `where` that `role` may see, oldest first (or newest first); and
    whether more match."""
    if where.limit < 1:
        raise UsageError("--limit must be 1 or more")
    actor, prefix = where.actor, False
    if actor is not None and actor.endswith("*"):
        actor, prefix = actor[:-1], True
    query = RowQuery(
        run_id=where.run_id,
        correlation_id=where.correlation_id,
        types=where.types,
        tool=where.tool,
        actor=actor,
        actor_prefix=prefix,
        since=where.since,
        until=where.until,
        visibilities=tuple(sorted(ROLE_VISIBILITIES[role])),
        newest_first=where.newest_first,
        limit=where.limit + 1,
    )
    reader = Reader(store)
    events = await reader.query(query)
    more = len(events) > where.limit
    viewer = Viewer(store, role, redactor=redactor)
    return viewer.events(events[: where.limit]), more
