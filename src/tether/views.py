"""Views: the one reader every surface goes through (DESIGN invariant 7).

Three audiences read a run. `user` sees `visible` events (the task, approvals, the
answer), `operator` sees `visible` and `user_hidden` ones (everything needed to debug),
`audit` sees everything, byte for byte. The role is decided by the caller — the CLI's
`--view`, later a token of the console or the HTTP API — and nothing here returns more
than it allows:

- an event whose visibility is above the role is left out entirely;
- payload fields that are more private than their event (`FIELD_VISIBILITY`) are dropped;
- the integrity fields (`checksum`, `prev_hash`, `v`) are audit-only;
- every string of a user or operator view is redacted (`tether._redact`).

Surfaces never hand out `Event` objects: they call `event_view` / `state_view`, or the
`Viewer`, which reads verified events from a store and returns view dictionaries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, get_args

from ._redact import Redactor, default_redactor, register_secret
from .errors import UsageError
from .events import Event, Visibility, canonical_json
from .journal import Store, load_run, read_events
from .state import RunState

__all__ = [
    "AUDIT_FIELDS",
    "EVENT_FIELDS",
    "FIELD_VISIBILITY",
    "ROLES",
    "ROLE_VISIBILITIES",
    "Role",
    "Viewer",
    "can_see",
    "event_view",
    "parse_role",
    "register_secret",
    "state_view",
]

Role = Literal["user", "operator", "audit"]
ROLES: tuple[Role, ...] = get_args(Role)

ROLE_VISIBILITIES: dict[Role, frozenset[Visibility]] = {
    "user": frozenset({"visible"}),
    "operator": frozenset({"visible", "user_hidden"}),
    "audit": frozenset({"visible", "user_hidden", "always_hidden"}),
}

EVENT_FIELDS = (
    "id", "run_id", "seq", "ts", "type", "visibility", "correlation_id", "cause", "actor",
    "payload", "usage",
)  # fmt: skip
"""The envelope every view shows."""
AUDIT_FIELDS = ("v", "prev_hash", "checksum")
"""Integrity fields: the audit view only (they let an auditor re-verify the chain)."""

FIELD_VISIBILITY: dict[str, dict[str, Visibility]] = {
    # How to rebuild the agent: module paths, file locations, model specs.
    "run.created": {"metadata": "user_hidden"},
    # A copy of the last context messages, which may include the system prompt or the
    # output of an always-hidden tool: its audience is the most private of its sources.
    "approval.requested": {"excerpt": "always_hidden"},
    # A provider's error text may echo the request, system prompt included; the reason
    # every audience reads names only what failed.
    "model.failed": {"error": "always_hidden"},
    # A model call's budget hold (budget/_journaled.py) is operators' business, as the
    # `budget.*` events it replaces, even on a turn end users may read.
    "model.requested": {"budget": "user_hidden"},
    "model.completed": {"budget": "user_hidden"},
    "run.failed": {"detail": "always_hidden"},
    # The runway line and truncation bound are the model's and the operator's business.
    "tool.completed": {"status": "user_hidden", "level": "user_hidden", "max_chars": "user_hidden"},
    "tool.failed": {"status": "user_hidden", "level": "user_hidden", "max_chars": "user_hidden"},
    "tool.unknown": {"status": "user_hidden", "level": "user_hidden", "max_chars": "user_hidden"},
}
"""Payload fields more private than the event that carries them."""


def parse_role(text: str) -> Role:
    """A role from user input; UsageError names the choices."""
    for role in ROLES:
        if text == role:
            return role
    raise UsageError(f"unknown view {text!r}; use user, operator or audit")


def can_see(role: Role, visibility: Visibility) -> bool:
    return visibility in ROLE_VISIBILITIES[role]


def _redactor_for(role: Role, redactor: Redactor | None) -> Redactor | None:
    if role == "audit":
        return None
    return redactor if redactor is not None else default_redactor()


def _payload(event: Event, role: Role, redactor: Redactor | None) -> dict[str, Any]:
    private = FIELD_VISIBILITY.get(event.type, {})
    payload = {
        k: v for k, v in event.payload.items() if k not in private or can_see(role, private[k])
    }
    return redactor.value(payload) if redactor is not None else dict(payload)


def event_view(
    event: Event, role: Role, *, redactor: Redactor | None = None
) -> dict[str, Any] | None:
    """The event as `role` may see it, or None when it is above the role.

    `redactor` defaults to the process's (patterns + registered values); audit never
    redacts.
    """
    if not can_see(role, event.visibility):
        return None
    red = _redactor_for(role, redactor)
    view: dict[str, Any] = {
        "id": event.id,
        "run_id": event.run_id,
        "seq": event.seq,
        "ts": event.ts,
        "type": event.type,
        "visibility": event.visibility,
        "correlation_id": event.correlation_id,
        "cause": event.causation_id,
        "actor": red.text(event.actor) if red else event.actor,
        "payload": _payload(event, role, red),
        "usage": event.usage.to_json() if event.usage else None,
    }
    if role == "audit":
        view["v"] = event.schema_version
        view["prev_hash"] = event.prev_hash
        view["checksum"] = event.checksum
    return view


def events_view(
    events: Iterable[Event], role: Role, *, redactor: Redactor | None = None
) -> list[dict[str, Any]]:
    red = _redactor_for(role, redactor)
    out = []
    for event in events:
        view = event_view(event, role, redactor=red)
        if view is not None:
            out.append(view)
    return out


_TERMINAL = frozenset({"run.completed", "run.stopped", "run.failed", "run.cancelled"})


def state_view(
    state: RunState,
    role: Role,
    events: Iterable[Event],
    *,
    redactor: Redactor | None = None,
) -> dict[str, Any]:
    """A run's summary (the fold of `events`) as `role` may see it.

    The fold reads every event, so what it derives from an event above the role is left
    out: the task and parent unless `run.created` is visible, the answer and reason unless
    every terminal event is, approvals whose request is not.
    """
    red = _redactor_for(role, redactor)
    created_visible = True
    ends_visible = True
    requests: set[str] = set()
    for event in events:
        seen = can_see(role, event.visibility)
        if event.type == "run.created":
            created_visible = created_visible and seen
        elif event.type in _TERMINAL:
            ends_visible = ends_visible and seen
        elif event.type == "approval.requested" and seen:
            requests.add(str(event.payload.get("request_id")))

    def clean(text: str | None, allowed: bool = True) -> str | None:
        if not allowed or text is None:
            return None
        return red.text(text) if red is not None else text

    view: dict[str, Any] = {
        "run_id": state.run_id,
        "agent": state.agent,
        "task": clean(state.task, created_visible),
        "status": state.status,
        "steps": state.steps,
        "input_tokens": state.input_tokens,
        "output_tokens": state.output_tokens,
        "tokens": state.tokens,
        "cost_usd": round(state.cost_usd, 6),
        "tool_calls": state.tool_calls,
        "tool_errors": state.tool_errors,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "active_s": state.active_s,
        "answer": clean(state.answer, ends_visible),
        "partial": state.partial if ends_visible else False,
        "reason": clean(state.reason, ends_visible),
        "pending_approvals": [r for r in state.pending_approvals if r in requests],
        "parent_event": state.parent_event if created_visible else None,
        "last_seq": state.last_seq,
    }
    if role == "audit":
        view["last_hash"] = state.last_hash
    return view


class Viewer:
    """Reads verified journals from a store and returns only what `role` may see."""

    def __init__(self, store: Store, role: Role, *, redactor: Redactor | None = None) -> None:
        self.store = store
        self.role = role
        self._given = redactor
        self.redactor = _redactor_for(role, redactor)

    def event(self, event: Event) -> dict[str, Any] | None:
        return event_view(event, self.role, redactor=self.redactor)

    def events(self, events: Iterable[Event]) -> list[dict[str, Any]]:
        return events_view(events, self.role, redactor=self.redactor)

    def state(self, state: RunState, events: Iterable[Event]) -> dict[str, Any]:
        return state_view(state, self.role, events, redactor=self.redactor)

    async def _load(self, run_id: str) -> tuple[RunState, list[Event]]:
        """The run's verified state and events, unfiltered: never returned as they are."""
        loaded = await load_run(self.store, run_id)
        events = await read_events(self.store, run_id, until_seq=loaded.state.last_seq)
        if self._given is None:
            # A store that opens lazily (PostgreSQL) has loaded its recorded secrets now.
            self.redactor = _redactor_for(self.role, None)
        return loaded.state, events

    async def run(self, run_id: str) -> dict[str, Any]:
        """`{"run": summary, "events": [...]}` for the run, as the role may see it."""
        state, events = await self._load(run_id)
        return {"run": self.state(state, events), "events": self.events(events)}

    async def export_lines(self, run_id: str) -> list[bytes]:
        """One JSON line per event: audit gets each event's self-verifying form (v1: the
        stored bytes exactly; v2: its body with the run id, seq and digests of its row)."""
        _, events = await self._load(run_id)
        if self.role == "audit":
            return [e.portable() for e in events]
        return [canonical_json(v) for v in self.events(events)]
