"""A policy's pause at any hook: a durable interrupt, exactly like an approval.

A `pause` verdict is journaled as an `approval.requested` (kind `approval`, tool
`policy:NAME`, the hook in its payload) in the same commit as the decision's health event,
so the run goes `waiting_approval` with the policy's reason and its process may exit.
`tether approve` / `reject` resolve it like any approval. What the loop does next depends
on what was paused:

- a call (`before_tool`; every call of a turn paused at `after_model`): the call's own
  approval, as before — approved, it runs; rejected, the agent reads the rejection;
- a final answer (`after_model`, `before_answer`): approved, it is published (after the
  checks not yet run); rejected, it is not, and the agent is told the operator's comment;
- going on (`before_model`, `after_tool`): approved, the run continues; rejected, it
  wraps up and stops with a labelled partial answer.

`PauseGate` folds the journal to know a decided pause whose effect is not journaled yet:
it is cleared by the effect's own events, so a crash between the decision and its effect
redoes the effect once, and never asks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..approvals import request_id_for
from ..events import Event, EventDraft
from ..models._validate import clean_text
from ..policies._base import Policy, Verdict

__all__ = ["ANSWER_HOOKS", "PauseGate", "Resolved", "pause_draft"]

ANSWER_HOOKS = frozenset({"after_model", "before_answer"})
"""Hooks where a pause holds a final answer back."""

_EFFECTS = frozenset({"cycle.started", "limit.reached", "approval.requested", "run.completed",
                      "run.stopped", "run.failed", "run.cancelled"})  # fmt: skip
"""Events that carry out (or supersede) any decided pause."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Resolved:
    """A pause an operator decided, waiting for its effect."""

    hook: str
    policy: str
    approved: bool
    reason: str
    comment: str | None
    by: str
    answer: str | None
    resolved_seq: int


class PauseGate(Policy):
    """The loop's memory of pauses at hooks (a fold over the last few events)."""

    name = "pauses"
    window = 50
    """A decided pause is followed only by its resolution and the resume: it is always
    among the last few events when a driver starts."""

    def __init__(self) -> None:
        self.observes = _WATCHED
        self.requests: dict[str, dict[str, Any]] = {}
        self.resolved: Resolved | None = None

    def observe(self, event: Event) -> None:
        kind = event.type
        if kind not in _WATCHED:
            return
        p = event.payload
        if kind == "approval.requested" and "hook" in p:
            self.requests[p["request_id"]] = p
        elif kind == "approval.resolved" and p["request_id"] in self.requests:
            request = self.requests.pop(p["request_id"])
            approved = p.get("action", p["decision"]) == "approved"
            if request["hook"] == "after_tool" and approved:
                return  # nothing to do: the run simply goes on
            self.resolved = Resolved(
                hook=request["hook"],
                policy=request["policy"],
                approved=approved,
                reason=request.get("reason", ""),
                comment=p.get("comment"),
                by=event.actor,
                answer=(request.get("arguments") or {}).get("answer"),
                resolved_seq=event.seq,
            )
            return
        if self.resolved is None:
            return
        if kind in _EFFECTS or (
            kind == "message.user"
            and event.actor == "runtime"
            and self.resolved.hook in ANSWER_HOOKS
        ):
            self.resolved = None


_WATCHED = _EFFECTS | {"approval.resolved", "message.user"}
"""What the gate folds (approval.requested is among the effects)."""


def pause_draft(
    *,
    run_id: str,
    seq: int,
    hook: str,
    verdict: Verdict,
    excerpt: str,
    corr: str | None,
    answer: str | None = None,
) -> EventDraft:
    """The approval request of a pause at `hook`, to be journaled at `seq` (its id is
    `apr:RUN_ID:SEQ`, like a call's, and never shared)."""
    reason = verdict.message or f"{verdict.policy} paused the run"
    return EventDraft(
        type="approval.requested",
        payload={
            "request_id": request_id_for(run_id, seq),
            "call_id": "",
            "call_seq": seq,
            "tool": f"policy:{verdict.policy}",
            "arguments": {"answer": answer} if answer is not None else {},
            "kind": "approval",
            "question": None,
            "reason": clean_text(reason),
            "excerpt": excerpt,
            "expires_at": None,
            "on_expiry": "reject",
            "hook": hook,
            "policy": verdict.policy,
        },
        correlation_id=corr,
        causation_id=f"{run_id}:{seq - 1}",
        # A held answer is not published yet: operators see it, end users do not.
        visibility="user_hidden",
    )
