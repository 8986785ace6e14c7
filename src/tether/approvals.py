"""Human approval as a durable interrupt (DESIGN invariant 9).

A call that needs approval is journaled (`tool.requested`, `approval.requested`) and not
run; the run goes to `waiting_approval` and its process may exit. A decision from any
process is journaled (`approval.resolved`) under a brief lease; once every approval of
the turn is decided, the run is runnable again and continues exactly at the interrupt.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from ._clock import Clock, SystemClock, iso
from .errors import CorruptionError, HumanInputRequired, UsageError
from .events import Event, EventDecodeError, EventDraft, Visibility
from .journal import Store, read_events
from .journal._index import AuditIndex, RowQuery
from .journal._integrity import verify_row
from .journal._leases import BRIEF_LEASE_TTL_S, brief_journal
from .models._validate import clean_text
from .tools._validate import json_safe

if TYPE_CHECKING:
    from .agent import Agent

__all__ = [
    "Approval",
    "ApprovalConflict",
    "Decision",
    "HumanInputRequired",
    "ask_human",
    "edited_arguments",
    "expire_approvals",
    "pending_approvals",
    "request_id_for",
    "resolve_approval",
]

Decision = Literal["approved", "rejected"]
ExpiryAction = Literal["reject", "stop"]


class ApprovalConflict(UsageError):
    """The approval was already resolved differently."""


def ask_human(question: str) -> None:
    """Pause the run until a human answers; the answer becomes this tool call's result."""
    raise HumanInputRequired(question)


def approval_visibility(tool_visibility: Visibility | None) -> Visibility:
    """An approval request carries its call's arguments: it is no more public than the
    tool's own events (a tool without a visibility keeps the visible default)."""
    return tool_visibility if tool_visibility in ("user_hidden", "always_hidden") else "visible"


def request_id_for(run_id: str, call_seq: int) -> str:
    """Stable id of the approval for the call journaled at `call_seq` (its tool.requested)."""
    return f"apr:{run_id}:{call_seq}"


def parse_request_id(request_id: str) -> tuple[str, int]:
    prefix, _, rest = request_id.partition(":")
    run_id, _, seq = rest.rpartition(":")
    if prefix != "apr" or not run_id or not seq.isdigit():
        raise UsageError(f"not an approval id: {request_id!r} (ids look like apr:RUN_ID:SEQ)")
    return run_id, int(seq)


@dataclass(frozen=True, kw_only=True, slots=True)
class Approval:
    """One approval request and, once decided, its resolution."""

    request_id: str
    run_id: str
    call_id: str
    call_seq: int
    tool: str
    arguments: dict[str, Any]
    kind: Literal["approval", "question"]
    question: str | None
    reason: str
    """What the agent said when it made the call."""
    excerpt: str
    requested_at: str
    expires_at: str | None
    on_expiry: ExpiryAction
    requested_seq: int
    correlation_id: str | None = None
    visibility: Visibility = "visible"
    """The request's audience: an always-hidden tool's arguments are audit-only."""
    decision: str | None = None
    """approved, rejected, or expired."""
    action: Decision | None = None
    """What happens to the call: approved or rejected (an expiry applies its default)."""
    resolved_arguments: dict[str, Any] | None = None
    comment: str | None = None
    resolved_by: str | None = None
    resolved_seq: int | None = None

    @property
    def pending(self) -> bool:
        return self.decision is None

    def to_json(self, *, redact: bool = True) -> dict[str, Any]:
        """The request as an operator may see it, unless `redact=False` (audit): secrets
        redacted, no context excerpt (it copies other events, the system prompt and
        always-hidden tool output among them), and no arguments of an always-hidden tool."""
        data = self._json()
        if not redact:
            return data
        data.pop("excerpt")
        if self.visibility == "always_hidden":
            hidden = "[hidden: the tool's data is audit-only]"
            data["arguments"] = hidden
            data["reason"] = hidden  # the model's words on a turn that called the tool
            if data["question"] is not None:
                data["question"] = hidden  # the tool's own words (its reason, repeated)
            if data["resolved_arguments"] is not None:
                data["resolved_arguments"] = hidden
        from ._redact import default_redactor

        redacted: dict[str, Any] = default_redactor().value(data)
        return redacted

    def _json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "run_id": self.run_id,
            "tool": self.tool,
            "arguments": self.arguments,
            "kind": self.kind,
            "question": self.question,
            "reason": self.reason,
            "excerpt": self.excerpt,
            "requested_at": self.requested_at,
            "expires_at": self.expires_at,
            "on_expiry": self.on_expiry,
            "decision": self.decision,
            "action": self.action,
            "resolved_arguments": self.resolved_arguments,
            "comment": self.comment,
            "resolved_by": self.resolved_by,
        }


def approvals_in(events: list[Event]) -> dict[str, Approval]:
    """Approval requests and resolutions found in a stretch of journal, by request id."""
    found: dict[str, Approval] = {}
    for e in events:
        p = e.payload
        if e.type == "approval.requested":
            found[p["request_id"]] = Approval(
                request_id=p["request_id"],
                run_id=e.run_id,
                call_id=p["call_id"],
                call_seq=p["call_seq"],
                tool=p["tool"],
                arguments=p["arguments"],
                kind=p.get("kind", "approval"),
                question=p.get("question"),
                reason=p.get("reason", ""),
                excerpt=p.get("excerpt", ""),
                visibility=e.visibility,
                requested_at=e.ts,
                expires_at=p.get("expires_at"),
                on_expiry=p.get("on_expiry", "reject"),
                requested_seq=e.seq,
                correlation_id=e.correlation_id,
            )
        elif e.type == "approval.resolved" and p["request_id"] in found:
            found[p["request_id"]] = replace(
                found[p["request_id"]],
                decision=p["decision"],
                action=p.get("action", p["decision"]),
                resolved_arguments=p.get("arguments"),
                comment=p.get("comment"),
                resolved_by=e.actor,
                resolved_seq=e.seq,
            )
    return found


_APPROVAL_TYPES = ("approval.requested", "approval.resolved")


async def _approvals_of_run(store: Store, run_id: str, *, from_seq: int = 0) -> dict[str, Approval]:
    """The run's approvals, from its approval events alone where the store has an audit
    index (each row verified), so an inbox of long runs does not read whole journals."""
    if not isinstance(store, AuditIndex):
        return approvals_in(await read_events(store, run_id, after_seq=from_seq))
    query = RowQuery(run_id=run_id, types=_APPROVAL_TYPES, after_seq=from_seq)
    events = []
    for row in await store.query_rows(query):
        try:
            events.append(verify_row(row))
        except EventDecodeError as exc:
            raise CorruptionError(run_id, row.seq, str(exc)) from None
    return approvals_in(events)


async def pending_approvals(store: Store, *, run_id: str | None = None) -> list[Approval]:
    """Every undecided approval in the store (or in one run), oldest first."""
    if run_id is not None:
        run_ids = [run_id]
    else:
        run_ids = [r.run_id for r in await store.list_runs(status="waiting_approval", limit=10_000)]
    out: list[Approval] = []
    for rid in run_ids:
        out.extend(a for a in (await _approvals_of_run(store, rid)).values() if a.pending)
    return sorted(out, key=lambda a: (a.requested_at, a.request_id))


def edited_arguments(approval: Approval, edits: dict[str, Any], agent: Agent) -> dict[str, Any]:
    """The arguments an edited approval runs with: `edits` merged onto the call's own
    arguments and checked against the tool's schema, exactly as the tool will get them."""
    tool = agent.tool(approval.tool)
    if tool is None:
        raise UsageError(f"agent {agent.name} has no tool {approval.tool!r} to check the edit with")
    merged = {**approval.arguments, **edits}
    try:
        return tool.validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
        )
        raise UsageError(f"edited arguments for {tool.name} are invalid: {problems}") from None


async def resolve_approval(
    store: Store,
    request_id: str,
    *,
    decision: Decision,
    arguments: dict[str, Any] | None = None,
    agent: Agent | None = None,
    comment: str | None = None,
    actor: str = "user",
    clock: Clock | None = None,
    lease_ttl_s: float = BRIEF_LEASE_TTL_S,
    _expired: bool = False,
) -> Approval:
    """Journal a decision. Repeating the same decision is a no-op; a different one is refused.

    `arguments` edits the call: its keys replace the call's own, the result is validated
    against the tool's schema (so `agent`, the run's agent, is required with it), and what
    is journaled is exactly what the tool will run with.
    """
    if decision not in ("approved", "rejected"):
        raise UsageError(f"decision must be approved or rejected, not {decision!r}")
    if decision == "rejected" and arguments is not None:
        raise UsageError("edited arguments only go with an approval")
    if arguments is not None and agent is None:
        raise UsageError("edited arguments are checked against the tool's schema: pass the agent")
    run_id, _ = parse_request_id(request_id)
    async with brief_journal(
        store, run_id, role=f"approver-{actor}", clock=clock, ttl_s=lease_ttl_s
    ) as journal:
        approvals = await _approvals_of_run(store, run_id)
        approval = approvals.get(request_id)
        if approval is None:
            raise UsageError(f"no approval {request_id!r} in run {run_id}")
        if arguments is not None:
            if approval.kind == "question":
                raise UsageError(f"{request_id} is a question: answer it with --comment TEXT")
            assert agent is not None
            from .loop._sources import with_journaled_tools  # MCP tools: from the journal

            agent = await with_journaled_tools(agent, store, run_id)
            arguments = edited_arguments(approval, arguments, agent)
        if not approval.pending:
            same = approval.decision == decision and (
                arguments is None or arguments == approval.resolved_arguments
            )
            if same and not _expired:
                return approval
            raise ApprovalConflict(
                f"approval {request_id} was already {approval.decision}"
                f"{' by ' + approval.resolved_by if approval.resolved_by else ''}; "
                "a conflicting decision is refused"
            )
        if approval.kind == "question" and decision == "approved" and not comment:
            raise UsageError(f"{request_id} is a question: answer it with --comment TEXT")
        payload: dict[str, Any] = {
            "request_id": request_id,
            "decision": "expired" if _expired else decision,
            "action": decision,
            # What a person or a script typed is made journal-safe like a model's arguments
            # (datetimes as ISO text, NaN as text, unpaired surrogates replaced).
            "arguments": json_safe(arguments) if arguments is not None else None,
            "comment": clean_text(comment) if comment is not None else None,
        }
        events = await journal.append(
            EventDraft(
                type="approval.resolved",
                payload=payload,
                correlation_id=approval.correlation_id,
                causation_id=f"{run_id}:{approval.requested_seq}",
                actor=actor,
                visibility=approval.visibility,
            )
        )
        if _expired and approval.on_expiry == "stop":
            await journal.append(
                EventDraft(
                    type="run.stopped",
                    payload={
                        "reason": f"approval {request_id} expired unanswered",
                        "partial": True,
                        "answer": None,
                    },
                    causation_id=events[0].id,
                )
            )
        after = await read_events(store, run_id, after_seq=approval.requested_seq - 1)
        return approvals_in(after)[request_id]


async def expire_approvals(
    store: Store,
    *,
    clock: Clock | None = None,
    run_id: str | None = None,
    lease_ttl_s: float = BRIEF_LEASE_TTL_S,
) -> list[Approval]:
    """Apply the expiry default to every pending approval whose deadline has passed."""
    clock = clock or SystemClock()
    now = clock.time()
    expired: list[Approval] = []
    for approval in await pending_approvals(store, run_id=run_id):
        if approval.expires_at is None:
            continue
        if datetime.fromisoformat(approval.expires_at).timestamp() > now:
            continue
        expired.append(
            await resolve_approval(
                store,
                approval.request_id,
                decision="rejected",
                comment=f"expired unanswered at {iso(now)}",
                actor="expiry",
                clock=clock,
                lease_ttl_s=lease_ttl_s,
                _expired=True,
            )
        )
    return expired
