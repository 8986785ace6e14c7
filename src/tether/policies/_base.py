"""The policy seam: one input object per hook, one verdict out.

The loop calls every policy of a run at five points: before a model call, after the
model's answer, before a tool call, after a tool result and before a final answer. Each
hook takes one frozen input (adding a field never breaks a policy) and returns a
`Verdict`: continue, tell the agent something in its next result, refuse a call, pause
for an operator (a durable interrupt, like an approval) or stop the run with a report.

A verdict may carry a health report; the loop journals it as a `health.*` event in the
same commit as the verdict's effect, so a crash between a decision and its effect loses
both or neither, and a decision is never taken twice.

Policies keep what they need from the journal through `observe`, which sees every event
the run appends. A policy whose state must outlive its window (an open breaker, a count of
rejections) returns it from `checkpoint`: the loop stores it in each health event the
policy emits, the run state keeps the latest one, and on resume the policy gets it back
through `restore` and then observes only the events after it (at most `Policy.window` of
them), so resume cost is constant and per-step work never grows with the run.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from ..errors import UsageError
from ..events import Event

if TYPE_CHECKING:
    from ..agent import Limits
    from ..models import ModelResponse
    from ..state import RunState
    from ..tools import Tool, ToolOutcome

__all__ = [
    "AfterModel",
    "AfterTool",
    "BeforeAnswer",
    "BeforeModel",
    "BeforeTool",
    "Health",
    "Policy",
    "Verdict",
]

Action = Literal["continue", "tell", "refuse", "pause", "stop"]
ACTIONS: tuple[str, ...] = get_args(Action)


@dataclass(frozen=True, kw_only=True, slots=True)
class Health:
    """What a policy saw: journaled as `health.<kind>` with its evidence."""

    kind: str
    """One of the registered `health.*` event types, without the prefix."""
    message: str
    evidence: Mapping[str, Any] = field(default_factory=dict)

    def payload(self, policy: str) -> dict[str, Any]:
        return {"policy": policy, "message": self.message, **dict(self.evidence)}


@dataclass(frozen=True, kw_only=True, slots=True)
class Verdict:
    """A policy's decision at one hook."""

    action: Action = "continue"
    message: str | None = None
    """Told to the agent (`tell`, `refuse`), or the reason a run pauses or stops."""
    health: Health | None = None
    """Journaled with the verdict's effect, whatever the action."""
    data: Mapping[str, Any] = field(default_factory=dict)
    """Fields a policy adds to the event its hook produced (a tool result's `level`)."""
    policy: str = ""
    """Filled in by the loop: the name of the policy that gave the verdict."""

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise UsageError(f"unknown verdict action {self.action!r}: use one of {ACTIONS}")

    @classmethod
    def ok(cls, *, health: Health | None = None) -> Verdict:
        return cls(health=health)

    @classmethod
    def tell(
        cls, message: str, *, health: Health | None = None, data: Mapping[str, Any] | None = None
    ) -> Verdict:
        return cls(action="tell", message=message, health=health, data=data or {})

    @classmethod
    def refuse(cls, message: str, *, health: Health | None = None) -> Verdict:
        return cls(action="refuse", message=message, health=health)

    @classmethod
    def pause(cls, reason: str, *, health: Health | None = None) -> Verdict:
        return cls(action="pause", message=reason, health=health)

    @classmethod
    def stop(cls, reason: str, *, health: Health | None = None) -> Verdict:
        return cls(action="stop", message=reason, health=health)


CONTINUE = Verdict()


@dataclass(frozen=True, kw_only=True, slots=True)
class BeforeModel:
    """The loop is about to start a cycle (a model call with tools)."""

    state: RunState
    now: float
    """The driver's clock (epoch seconds)."""
    limits: Limits
    elapsed_s: float
    next_turn_tokens: int
    """What the next turn and the wrap-up after it may use, input and output."""
    next_turn_cost_usd: float
    """What they may cost, by the price table."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AfterModel:
    """The model answered; nothing of the answer has been acted on yet."""

    state: RunState
    response: ModelResponse


@dataclass(frozen=True, kw_only=True, slots=True)
class BeforeTool:
    """A valid call is about to be journaled and run."""

    state: RunState
    now: float
    tool: Tool
    arguments: Mapping[str, Any]
    reason: str
    """What the model said with the call (shown to an approver)."""
    history: Callable[[], Awaitable[list[Event]]] | None = None
    """Reads the run's whole journal: for rare lookups past a policy's window only."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AfterTool:
    """A call has an outcome that is about to be journaled and shown to the model."""

    state: RunState
    now: float
    name: str
    tool: Tool | None
    """None for a call the loop refused before running (unknown tool, bad arguments)."""
    arguments: str
    """The call's arguments as the model sent them."""
    outcome: ToolOutcome
    limits: Limits
    elapsed_s: float
    context_fill: float | None


@dataclass(frozen=True, kw_only=True, slots=True)
class BeforeAnswer:
    """The model gave a final answer; a designated publish tool is checked at
    `before_tool` instead."""

    state: RunState
    answer: str
    now: float = 0.0
    """The driver's clock (epoch seconds)."""
    history: Callable[[], Awaitable[list[Event]]] | None = None
    """Reads the run's whole journal: for rare lookups past a policy's window only."""


class Policy:
    """Base of every policy: each hook continues unless overridden.

    Subclasses override the hooks they need. Hooks run in the loop's task, in the order
    the policies are given; the first verdict that is not `continue` (or `tell`, which
    accumulates) decides.
    """

    name: str = "policy"
    window: int = 0
    """How many recent journal events `observe` needs to see on resume (0: none; the loop
    reads at most 200, so resume cost stays bounded)."""

    observes: frozenset[str] | None = None
    """The event types `observe` needs (None: all of them): the loop calls it for those
    only, so a policy costs nothing on events it ignores."""

    def for_run(self) -> Policy:
        """This policy's instance for one run. An agent's policies are shared by all its
        runs, and most keep per-run state, so each run gets a deep copy; override for a
        policy holding something that must not be copied (a client, a lock)."""
        return copy.deepcopy(self)

    def observe(self, event: Event) -> None:
        """Called for every event the run appends, in order (and for a bounded suffix of
        the journal on resume): keep here whatever the hooks need."""

    def checkpoint(self) -> Any:
        """The state to restore on resume (JSON-safe), or None (rebuilt from the window).

        Taken when one of this policy's verdicts carries a health report, *before* the
        events of that commit are observed; on resume `restore` gets it and `observe`
        then sees those events and the ones after (the latest `window` of them)."""
        return None

    def restore(self, state: Any) -> None:
        """Take back a `checkpoint` (on resume, before observing what followed it)."""

    def context_marks(self, now: float) -> Mapping[int, str]:
        """Notes to add, from now on, to results in the model's context, by journal seq
        (a result that has just gone stale). Called before every model call: return only
        what is new, in O(1) when there is nothing (the loop keeps the marks)."""
        return {}

    def hidden_tools(self, state: RunState) -> Mapping[str, str]:
        """Tools the model must not be offered now, with the reason it is told."""
        return {}

    async def before_model(self, call: BeforeModel) -> Verdict:
        return CONTINUE

    async def after_model(self, answer: AfterModel) -> Verdict:
        return CONTINUE

    async def before_tool(self, call: BeforeTool) -> Verdict:
        return CONTINUE

    async def after_tool(self, result: AfterTool) -> Verdict:
        return CONTINUE

    async def before_answer(self, draft: BeforeAnswer) -> Verdict:
        return CONTINUE
