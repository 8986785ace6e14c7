"""Hypothesis strategies for journals: valid sequences of drafts, sealed in order.

A generated journal is what a real writer could produce: it starts with `run.created`,
cycles open with `cycle.started`, tool results answer calls that were requested (or are
left pending, as after a crash), approvals are resolved by id, compaction removes seqs
that exist. Timestamps never go backwards but gaps vary, so `active_s` is exercised.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tether._clock import iso
from tether.events import GENESIS_HASH, Event, EventDraft, Usage

RUN_ID = "run_prop0001"
START = 1_780_000_000.0

_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    _text,
)
_json = st.recursive(
    _json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=6,
)
_usage = st.builds(
    Usage,
    input_tokens=st.integers(0, 200_000),
    output_tokens=st.integers(0, 20_000),
    cost_usd=st.floats(0, 5, allow_nan=False),
)
_visibility = st.sampled_from([None, "visible", "user_hidden", "always_hidden"])

BOOKKEEPING = (
    "limit.warning",
    "limit.reached",
    "budget.reserved",
    "budget.settled",
    "budget.denied",
    "journal.repaired",
    "health.warning",
    "health.truncated",
    "health.breaker",
    "health.inconsistent",
    "health.stale",
    "health.monitor",
    "health.guardrail",
    "health.policy",
    "note",
)
TERMINAL = ("run.completed", "run.stopped", "run.failed", "run.cancelled")
GENERATED_TYPES = frozenset(
    {
        "run.created",
        "message.user",
        "message.system",
        "cycle.started",
        "model.requested",
        "model.completed",
        "model.failed",
        "tool.requested",
        "tool.started",
        "tool.completed",
        "tool.failed",
        "tool.unknown",
        "context.compacted",
        "summary.requested",
        "summary.completed",
        "fact.pinned",
        "fact.unpinned",
        "approval.requested",
        "approval.resolved",
        "run.resumed",
        "run.forked",
        "limit.changed",
        *BOOKKEEPING,
        *TERMINAL,
    }
)
"""Every type `draft_sequences` can emit (kept in step with the branches below)."""

STEP_KINDS = (
    "message",
    "cycle",
    "compact",
    "summary",
    "pin",
    "approval",
    "resolve",
    "bookkeeping",
    "resume",
    "fork",
    "relimit",
    "end",
)


@st.composite
def draft_sequences(draw: st.DrawFn, *, max_steps: int = 12) -> list[EventDraft]:
    """A valid journal as drafts: `run.created` first, then generated steps."""
    drafts: list[EventDraft] = [
        EventDraft(
            type="run.created",
            payload={
                "agent": draw(_text),
                "agent_version": draw(st.sampled_from(["", "1", "2.0"])),
                "task": draw(_text),
                "model": draw(st.sampled_from(["", "scripted", "gpt"])),
                "limits": draw(st.dictionaries(_text, _json, max_size=2)),
                "tenant": draw(st.one_of(st.none(), _text)),
                "parent_event": draw(st.one_of(st.none(), st.just("run_parent:7"))),
            },
        )
    ]
    pending_calls: list[str] = []
    pending_approvals: list[str] = []
    counter = 0

    def fresh(prefix: str) -> str:
        nonlocal counter
        counter += 1
        return f"{prefix}-{counter}"

    for _ in range(draw(st.integers(0, max_steps))):
        kind = draw(st.sampled_from(STEP_KINDS))
        seq = len(drafts)  # seq of the newest draft so far
        if kind == "message":
            payload: dict[str, Any] = {"text": draw(_text)}
            pinned = draw(st.sampled_from([None, True, False]))
            if pinned is not None:
                payload["pinned"] = pinned
            drafts.append(
                EventDraft(
                    type=draw(st.sampled_from(["message.user", "message.system"])),
                    payload=payload,
                    visibility=draw(_visibility),
                )
            )
        elif kind == "cycle":
            cid = fresh("cycle")
            drafts.append(EventDraft(type="cycle.started", payload={}, correlation_id=cid))
            drafts.append(EventDraft(type="model.requested", payload={}, correlation_id=cid))
            outcome = draw(st.sampled_from(["completed", "failed", "open"]))
            if outcome == "failed":
                drafts.append(
                    EventDraft(
                        type="model.failed", payload={"error": draw(_text)}, correlation_id=cid
                    )
                )
            elif outcome == "completed":
                drafts.append(
                    EventDraft(
                        type="model.completed",
                        payload={"text": draw(_text), "extra": draw(_json)},
                        correlation_id=cid,
                        usage=draw(st.one_of(st.none(), _usage)),
                    )
                )
                calls = [fresh("call") for _ in range(draw(st.integers(0, 3)))]
                for call in calls:
                    drafts.append(
                        EventDraft(
                            type="tool.requested",
                            payload={"call_id": call, "name": draw(_text), "args": draw(_json)},
                            correlation_id=cid,
                            causation_id=f"{RUN_ID}:{len(drafts)}",
                        )
                    )
                pending_calls.extend(calls)
                for call in calls:
                    if draw(st.booleans()):
                        drafts.append(
                            EventDraft(
                                type="tool.started",
                                payload={"call_id": call, "attempt": 1},
                                correlation_id=cid,
                            )
                        )
            answered = draw(
                st.lists(st.sampled_from(pending_calls), unique=True)
                if pending_calls
                else st.just([])
            )
            for call in answered:
                result = draw(st.sampled_from(["tool.completed", "tool.failed", "tool.unknown"]))
                payload = {"call_id": call, "output": draw(_json)}
                if result == "tool.completed" and draw(st.booleans()):
                    payload["is_error"] = draw(st.booleans())
                drafts.append(
                    EventDraft(
                        type=result,
                        payload=payload,
                        correlation_id=cid,
                        usage=draw(st.one_of(st.none(), _usage)),
                    )
                )
                pending_calls.remove(call)
        elif kind == "compact":
            removed = draw(st.lists(st.integers(1, seq), max_size=6)) if seq else []
            drafts.append(
                EventDraft(
                    type="context.compacted",
                    payload={"removed": removed, "summary": draw(_text)},
                    usage=draw(st.one_of(st.none(), _usage)),
                )
            )
        elif kind == "summary":
            drafts.append(EventDraft(type="summary.requested", payload={"removed": []}))
            if draw(st.booleans()):
                drafts.append(
                    EventDraft(
                        type="summary.completed",
                        payload={"content": draw(_text), "removed": []},
                        usage=draw(st.one_of(st.none(), _usage)),
                    )
                )
        elif kind == "pin":
            fact_id = f"F{draw(st.integers(1, 4))}"
            if draw(st.booleans()):
                drafts.append(
                    EventDraft(
                        type="fact.pinned",
                        payload={"id": fact_id, "text": draw(_text), "source": draw(_text)},
                        actor=draw(st.sampled_from(["agent", "operator"])),
                    )
                )
            else:
                drafts.append(EventDraft(type="fact.unpinned", payload={"id": fact_id}))
        elif kind == "approval":
            rid = fresh("req")
            pending_approvals.append(rid)
            drafts.append(
                EventDraft(type="approval.requested", payload={"request_id": rid, "tool": "x"})
            )
        elif kind == "resolve":
            if pending_approvals:
                rid = draw(st.sampled_from(pending_approvals))
                pending_approvals.remove(rid)
            else:
                rid = "req-unknown"  # resolving an id that is not pending changes nothing
            drafts.append(
                EventDraft(
                    type="approval.resolved",
                    payload={"request_id": rid, "decision": draw(st.booleans())},
                    actor="human:ops",
                )
            )
        elif kind == "bookkeeping":
            drafts.append(
                EventDraft(
                    type=draw(st.sampled_from(BOOKKEEPING)),
                    payload={"detail": draw(_json)},
                )
            )
        elif kind == "resume":
            drafts.append(EventDraft(type="run.resumed", payload={}))
        elif kind == "relimit":
            drafts.append(
                EventDraft(
                    type="limit.changed",
                    payload={"limits": {"max_steps": draw(st.integers(1, 100))}, "previous": {}},
                    actor="human:ops",
                )
            )
        elif kind == "fork":
            drafts.append(
                EventDraft(
                    type="run.forked",
                    payload={"from_run": "run_parent", "from_event": f"run_parent:{seq}"},
                )
            )
        else:
            payload = {}
            if draw(st.booleans()):
                payload["answer"] = draw(_text)
            if draw(st.booleans()):
                payload["partial"] = draw(st.booleans())
            if draw(st.booleans()):
                payload["reason"] = draw(_text)
            drafts.append(
                EventDraft(
                    type=draw(st.sampled_from(TERMINAL)),
                    payload=payload,
                )
            )
    return drafts


@st.composite
def journals(draw: st.DrawFn, *, max_steps: int = 12) -> list[Event]:
    """A generated journal, sealed in order as one hash chain."""
    drafts = draw(draft_sequences(max_steps=max_steps))
    gaps = draw(
        st.lists(
            st.one_of(st.just(0.0), st.floats(0, 5), st.floats(0, 86_400)),
            min_size=len(drafts),
            max_size=len(drafts),
        )
    )
    events: list[Event] = []
    prev, t = GENESIS_HASH, START
    for seq, (draft, gap) in enumerate(zip(drafts, gaps, strict=True), start=1):
        t += gap
        event = draft.seal(run_id=RUN_ID, seq=seq, prev_hash=prev, ts=iso(t))
        events.append(event)
        prev = event.checksum
    return events
