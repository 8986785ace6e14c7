"""The driver's core: what it holds, how it journals, how it consults its policies."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

from .._clock import Clock
from ..agent import Agent, Limits
from ..budget import BudgetLimits, Denial, Ledger
from ..events import EVENT_TYPES, Event, EventDraft, Usage
from ..journal import RunJournal, read_events
from ..models import Model, ModelRequest, ModelResponse, PriceTable, ToolSpec
from ..policies import Policy, Verdict, default_policies
from ..state import RunState
from ..state._fold import epoch_of
from ..tools import Tool
from ._artifacts import ARTIFACT_TOOLS
from ._context import ContextCache
from ._core_policies import ApprovalPolicy, LimitsPolicy, RunwayPolicy
from ._guard import failed_draft
from ._pauses import PauseGate
from ._pins import PIN_TOOLS
from ._results import Observer, Progress

__all__ = ["ENDINGS", "DriverBase"]

ENDINGS = frozenset({"run.completed", "run.stopped", "run.failed", "run.cancelled"})
"""Events that end a run: its answer is published, so their commit is synced."""

RESUME_WINDOW = 200
"""At most this many recent events are read on resume for the policies to fold: resume
cost stays bounded whatever a policy asks for (DESIGN: bounded by the window)."""

HOOKS = ("observe", "hidden_tools", "before_model", "after_model", "before_tool",
         "after_tool", "before_answer", "context_marks")  # fmt: skip

DECISIVE = frozenset({"refuse", "pause", "stop"})
"""Verdicts that end a consultation: the first one decides."""


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(after, until] ranges, overlapping ones joined."""
    out: list[tuple[int, int]] = []
    for after, until in sorted(ranges):
        if out and after <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], until))
        else:
            out.append((after, until))
    return out


_NONE_HIDDEN: frozenset[str] = frozenset()


class DriverBase:
    """A run's driver: what it holds, how it journals, and how it consults its policies.

    The driver is split by concern into a chain of classes, one module each:
    `DriverBase` → `_budgeting.Budgeting` → `_model_calls.ModelCalls` →
    `_tool_calls.ToolCalls` → `_recovery.Recovery` → `_ending.Ending` → `_runner._Driver`.
    """

    def __init__(
        self,
        *,
        agent: Agent,
        model: Model,
        journal: RunJournal,
        clock: Clock,
        prices: PriceTable,
        observer: Observer | None,
        model_retries: int,
        model_retry_backoff_s: float,
        ledger: Ledger | None = None,
        budgets: Mapping[str, BudgetLimits] | None = None,
    ) -> None:
        self.agent = agent
        self.model = model
        self.journal = journal
        self.clock = clock
        self.prices = prices
        self.observer = observer
        self.model_retries = model_retries
        self.model_retry_backoff_s = model_retry_backoff_s
        self.limits = Limits.from_json(journal.state.limits)
        self.cache = ContextCache(journal.store, journal.run_id, model.count_tokens)
        builtins = {**PIN_TOOLS, **ARTIFACT_TOOLS}
        # The agent's own tools win a name clash with the built-in ones.
        self.builtins = {n: t for n, t in builtins.items() if agent.tool(n) is None}
        self.tools = (*agent.tools, *self.builtins.values())
        specs = tuple(t.spec for t in self.tools)
        self.tools_tokens = model.count_tokens((), specs)
        self._offered: tuple[frozenset[str], tuple[Tool, ...], int, tuple[ToolSpec, ...]] = (
            frozenset(), self.tools, self.tools_tokens, specs,
        )  # fmt: skip
        """(hidden names, tools offered, their tokens, their specs): rebuilt only when the
        hidden set changes, so a request reuses one tuple of specs."""
        user = default_policies() if agent.policies is None else agent.policies
        self.gate = PauseGate()
        self.policies: list[Policy] = [
            self.gate,
            LimitsPolicy(),
            RunwayPolicy(agent),
            *(p.for_run() for p in user),
            ApprovalPolicy(agent),
        ]
        """The runway line comes first in a result's status, then any notice; a human is
        asked to approve only a call no other policy refused."""
        names = [p.name for p in self.policies]
        self.keys: dict[int, str] = {
            id(p): p.name if names.count(p.name) == 1 else f"{p.name}#{i}"
            for i, p in enumerate(self.policies)
        }
        """Each policy's key: its name, made unique by its position when two share one
        (verdicts name it; checkpoints are stored under it)."""
        self.by_key = {self.keys[id(p)]: p for p in self.policies}
        self.waived: tuple[str, str] | None = None
        """(hook, policy key): a pause an operator approved, not asked again at that hook."""
        # Only the policies that override a hook are called at it: the seam costs nothing
        # for hooks nobody uses.
        self.hooked: dict[str, list[Policy]] = {
            hook: [p for p in self.policies if getattr(type(p), hook) is not getattr(Policy, hook)]
            for hook in HOOKS
        }
        self.asks: dict[str, list[tuple[str, Any]]] = {
            hook: [(self.keys[id(p)], getattr(p, hook)) for p in self.hooked[hook]]
            for hook in HOOKS[2:]
        }
        """Hook → (policy key, bound hook method), bound once rather than per call."""
        self.observers = self.hooked["observe"]
        self.observing: dict[str, list[Policy]] = {}
        """Event type → the policies whose `observe` wants it (filled as types come)."""
        self.last_fill: float | None = None
        self.ledger = ledger
        self.joined = ledger is not None and bool(
            getattr(journal.store, "joins_ledger", lambda _: False)(ledger.tables)
        )
        """Whether a model call's hold commits with its events (memory and SQLite stores)."""
        self.pausing = asyncio.Lock()
        """Held while a pause after a result is journaled: parallel results pausing at
        once get distinct approval ids."""
        self.call_notes: dict[str, list[str]] = {}
        """Notices from `before_tool` (a `tell`), for that call's own result."""
        self.halt: tuple[str, str] | None = None
        """A policy's stop outside a cycle's start (limit name, reason): the next cycle
        wraps up."""
        self.denied: Denial | None = None
        """A tool call's budget denial: the next cycle wraps up instead of calling the model."""
        self.budget_extra = dict(budgets or {})
        agent_scope = f"agent:{agent.name}"
        if agent.budget is not None:
            mine = self.budget_extra.get(agent_scope)
            self.budget_extra[agent_scope] = (
                agent.budget if mine is None else mine.merged(agent.budget)
            )
        if self.limits.max_cost_usd is not None:
            # The run's own cost limit is also a per-run budget, reserved like any other.
            run_limit = BudgetLimits(per_run=self.limits.max_cost_usd)
            mine = self.budget_extra.get("global")
            self.budget_extra["global"] = run_limit if mine is None else mine.merged(run_limit)

    # -- journal helpers ----------------------------------------------------------------

    @property
    def state(self) -> RunState:
        return self.journal.state

    def correlation(self, cycle: int | str) -> str:
        return f"{self.journal.run_id}/c{cycle}"

    async def append(
        self, *drafts: EventDraft, also: Callable[[], None] | None = None, sync: bool = False
    ) -> list[Event]:
        """Journal drafts in one commit. `sync` (and any run end, which publishes its
        answer) makes the commit survive power loss: see `Store.append`."""
        sync = sync or any(d.type in ENDINGS for d in drafts)
        events = await self.journal.append(*self.caused(drafts), also=also, sync=sync)
        self.took(events)
        return events

    async def stage(self, *drafts: EventDraft) -> None:
        """Record drafts now; they reach the disk with the next append (see RunJournal)."""
        self.took(await self.journal.stage(*self.caused(drafts)))

    def caused(self, drafts: tuple[EventDraft, ...]) -> list[EventDraft]:
        """Every event names its cause (DESIGN invariant 8): a draft that names none was
        caused by the state the journal was in, i.e. the event just before it."""
        run_id, last = self.state.run_id, self.state.last_seq
        return [
            d
            if d.causation_id is not None
            else dataclasses.replace(d, causation_id=f"{run_id}:{last + i}")
            for i, d in enumerate(drafts)
        ]

    def took(self, events: list[Event]) -> None:
        if not events:
            return
        self.cache.add(events, self.journal.state)
        for event in events:
            for policy in self.observers_of(event.type):
                policy.observe(event)
        if self.observer:
            self.observer(Progress(state=self.journal.state, event=events[-1].type))

    def observers_of(self, kind: str) -> list[Policy]:
        found = self.observing.get(kind)
        if found is None:
            found = [p for p in self.observers if p.observes is None or kind in p.observes]
            self.observing[kind] = found
        return found

    def elapsed(self) -> float:
        state = self.state
        return state.active_s + max(0.0, self.clock.time() - epoch_of(state.updated_at))

    def tool(self, name: str) -> Tool | None:
        return self.agent.tool(name) or self.builtins.get(name)

    def max_tokens(self) -> int:
        return min(self.agent.max_output_tokens, self.model.max_output_tokens)

    def usage_of(self, response: ModelResponse) -> Usage:
        u = response.usage
        return Usage(
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cost_usd=self.prices.cost(self.model.name, u.input_tokens, u.output_tokens),
        )

    def offered_tools(self) -> tuple[tuple[Tool, ...], int]:
        """The tools the model is offered now (policies may hide some) and their tokens;
        recounted only when the hidden set changes."""
        hidden: frozenset[str] | set[str] = _NONE_HIDDEN
        for policy in self.hooked["hidden_tools"]:
            names = policy.hidden_tools(self.state)
            if names:  # asked four times a step: nothing built while nothing is hidden
                hidden = {*hidden, *names}
        if hidden != self._offered[0]:
            key = frozenset(hidden)
            tools = tuple(t for t in self.tools if t.name not in key)
            specs = tuple(t.spec for t in tools)
            self._offered = (key, tools, self.model.count_tokens((), specs), specs)
        return self._offered[1], self._offered[2]

    def build_request(self, *, tools_enabled: bool) -> ModelRequest:
        self.mark_context()
        if tools_enabled:
            self.offered_tools()
        return ModelRequest(
            messages=self.cache.build(self.state),
            tools=self._offered[3] if tools_enabled else (),
            max_tokens=self.max_tokens() if tools_enabled else self.agent.wrap_up_output_tokens,
        )

    async def fail(
        self, reason: str, *, retryable: bool = False, detail: BaseException | None = None
    ) -> None:
        """End the run `failed`. `reason` is for every audience; the error's own text, which
        may echo the request (the system prompt), goes in `detail`, for auditors only."""
        await self.append(failed_draft(reason, retryable=retryable, detail=detail))

    # -- the policy seam ----------------------------------------------------------------

    def mark_context(self) -> None:
        """Add the policies' new marks (results gone stale) to the context the model sees;
        the journal is not rewritten, and nothing is done when there is nothing new."""
        policies = self.hooked["context_marks"]
        if not policies:
            return
        now = self.clock.time()
        for policy in policies:
            for seq, note in policy.context_marks(now).items():
                self.cache.mark(seq, note)

    async def load_policies(self) -> None:
        """Give each policy back its last checkpoint (from the run state, O(1)) and show it
        the journal after that: the checkpoint's own commit, then at most its window of
        recent events. Resume cost is bounded whatever the run's length."""
        last = self.state.last_seq
        if last == 0:
            return
        spans: dict[int, list[tuple[int, int]]] = {}
        for policy in self.policies:
            window = min(RESUME_WINDOW, policy.window)
            start = max(0, last - window)
            mine: list[tuple[int, int]] = []
            saved = self.state.policy_state.get(self.keys[id(policy)])
            if saved is not None and type(policy).restore is not Policy.restore:
                policy.restore(saved["state"])
                after, at = int(saved["after"]), int(saved["at"])
                if after >= start:
                    start = after
                else:
                    mine.append((after, at))  # the commit that carried the checkpoint
            if start < last and (window > 0 or saved is not None):
                mine.append((start, last))
            spans[id(policy)] = mine
        ranges = _merged([r for mine in spans.values() for r in mine])
        for after, until in ranges:
            events = await read_events(
                self.journal.store, self.state.run_id, after_seq=after, until_seq=until
            )
            for event in events:
                for policy in self.policies:
                    if any(a < event.seq <= u for a, u in spans[id(policy)]):
                        policy.observe(event)

    async def history(self) -> list[Event]:
        """The run's whole journal, for a policy's rare lookup past its window."""
        return await read_events(self.journal.store, self.state.run_id)

    async def consult(self, hook: str, value: Any, *, first_decides: bool = True) -> list[Verdict]:
        """Every policy's verdict at `hook` that is not a plain continue, in order; the
        first refusal, pause or stop ends the list (it is the decision) unless
        `first_decides` is false (after a result every policy has its say). A pause an
        operator has just approved at this hook is not asked again."""
        verdicts: list[Verdict] = []
        for key, ask in self.asks[hook]:
            verdict: Verdict = await ask(value)
            if verdict.action == "continue" and verdict.health is None and not verdict.data:
                continue
            if verdict.action == "pause" and self.waived == (hook, key):
                continue
            verdicts.append(
                Verdict(
                    action=verdict.action, message=verdict.message, health=verdict.health,
                    data=verdict.data, policy=key,
                )
            )  # fmt: skip
            if first_decides and verdict.action in DECISIVE:
                break
        return verdicts

    def health_drafts(self, verdicts: list[Verdict], corr: str | None) -> list[EventDraft]:
        """The `health.*` events of some verdicts (an unregistered kind becomes
        `health.policy`, naming it), for the commit that carries their effect."""
        drafts = []
        for verdict in verdicts:
            health = verdict.health
            if health is None:
                continue
            kind = f"health.{health.kind}"
            payload = health.payload(verdict.policy)
            if kind not in EVENT_TYPES or kind == "health.warning":
                payload = {"kind": health.kind, **payload}
                kind = "health.policy"
            payload["action"] = verdict.action
            policy = self.by_key.get(verdict.policy)
            saved = policy.checkpoint() if policy is not None else None
            if saved is not None:
                # The policy's state before this commit: restored on resume, then this
                # commit and what follows are observed again (see `load_policies`). A
                # JSON copy: the policy goes on changing its own objects, and the state
                # folded live must equal the one folded from the stored event.
                payload["checkpoint"] = {
                    "key": verdict.policy, "after": self.state.last_seq,
                    "state": json.loads(json.dumps(saved)),
                }  # fmt: skip
            drafts.append(EventDraft(type=kind, payload=payload, correlation_id=corr))
        return drafts
