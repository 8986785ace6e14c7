"""Fault injection, shipped as a feature: durability is shown by breaking things on purpose.

A `FaultPlan` wraps the ports (store, model, tools) without the loop knowing. It is
seeded, so a failing chaos run can be reproduced exactly. The CLI reads a plan from the
`TETHER_CHAOS` environment variable, e.g.::

    TETHER_CHAOS="kill_after_seq=57"               # SIGKILL this process once seq 57 is durable
    TETHER_CHAOS="model_latency=0.02;seed=7"       # 20 ms per model call
    TETHER_CHAOS="model_fail_rate=0.2;tool_fail_rate=0.1;seed=3"
    TETHER_CHAOS="tool_corrupt_rate=0.1;model_malformed_rate=0.05"
    TETHER_CHAOS="mcp_disconnect_rate=0.1;mcp_timeout_rate=0.05"   # MCP servers' tools

Every fault it injects is reported to `on_inject` (by kind, see `FAULT_KINDS`), so a
harness can prove each kind really happened; `tether chaos` (`tether.testing`) draws one
plan per run and counts them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import math
import os
import random
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ._chaos_sources import MCP_FAULT_KINDS, FaultySource
from .errors import ModelUnavailable, UsageError
from .events import Event
from .journal import Lease, RunSummary, Store
from .journal._wrapper import StoreWrapper
from .models import Message, Model, ModelRequest, ModelResponse, ToolCall, ToolSpec
from .models._base import TextSink
from .tools import Tool, ToolSource

__all__ = [
    "FAULT_KINDS", "MCP_FAULT_KINDS", "FaultPlan", "FaultyModel", "FaultySource", "FaultyStore",
    "faulty_tool", "wrap_fn",
]  # fmt: skip

FAULT_KINDS = (
    "tool_failure", "tool_latency", "tool_corruption",
    "model_outage", "model_latency", "model_malformed",
    "kill",
)  # fmt: skip
"""What a `FaultPlan` injects in a process (store damage and budgets are the harness's);
the tools of MCP servers get `MCP_FAULT_KINDS` too."""

_INTS = ("seed", "kill_after_seq", "kill_before_seq")
_FLOATS = (
    "model_latency", "model_fail_rate", "model_malformed_rate",
    "tool_latency", "tool_fail_rate", "tool_corrupt_rate",
    "mcp_fail_rate", "mcp_timeout_rate", "mcp_disconnect_rate",
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class FaultPlan:
    seed: int = 0
    kill_after_seq: int | None = None
    """SIGKILL the process right after an append makes this seq (or a later one) durable."""
    kill_before_seq: int | None = None
    """SIGKILL the process just before the append that would write this seq."""
    model_latency: float = 0.0
    """Seconds added to every model call."""
    model_fail_rate: float = 0.0
    """Chance that a model call fails as a transient outage."""
    model_malformed_rate: float = 0.0
    """Chance that a model answer comes back malformed: a tool call's arguments cut short
    (not JSON), or a final answer turned into a call of a tool that does not exist."""
    tool_latency: float = 0.0
    """Seconds added to every tool call."""
    tool_fail_rate: float = 0.0
    """Chance that a tool call raises ConnectionError (a transient failure) before it runs."""
    tool_corrupt_rate: float = 0.0
    """Chance that a tool's result is corrupted after it ran: cut short, with a NUL and an
    unpaired surrogate in it (what a broken upstream hands back)."""
    mcp_fail_rate: float = 0.0
    """Chance that a call of an MCP server's tool comes back as the server's error result."""
    mcp_timeout_rate: float = 0.0
    """Chance that such a call times out: sent, then its answer withheld or cut off."""
    mcp_disconnect_rate: float = 0.0
    """Chance that the server exits mid-call: its session is severed while the call is in
    flight or after the server did the work, and the outcome is unknown to the caller."""
    on_inject: Callable[[str], None] | None = field(default=None, compare=False, repr=False)
    """Told the kind (one of `FAULT_KINDS` or `MCP_FAULT_KINDS`) of every fault, as it is
    injected."""
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("kill_after_seq", "kill_before_seq"):
            seq = getattr(self, name)
            if seq is not None and seq < 1:
                raise UsageError(f"{name} must be a journal position (1 or more), not {seq}")
        for name in ("model_latency", "tool_latency"):
            if not 0 <= getattr(self, name) < math.inf:
                raise UsageError(f"{name} must be finite seconds ≥ 0, not {getattr(self, name)}")
        for name in ("model_fail_rate", "model_malformed_rate", "tool_fail_rate",
                     "tool_corrupt_rate", "mcp_fail_rate", "mcp_timeout_rate",
                     "mcp_disconnect_rate"):  # fmt: skip
            rate = getattr(self, name)
            if not 0 <= rate <= 1:
                raise UsageError(f"{name} must be a chance between 0 and 1, not {rate}")
        self.rng.seed(self.seed)

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """Parse `key=value;key=value` (the TETHER_CHAOS format)."""
        values: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(";"))):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in _INTS + _FLOATS:
                known = ", ".join(sorted(_INTS + _FLOATS))
                raise UsageError(f"bad TETHER_CHAOS entry {part!r}: known keys are {known}")
            try:
                values[key] = int(value) if key in _INTS else float(value)
            except ValueError:
                raise UsageError(f"bad TETHER_CHAOS value in {part!r}") from None
        return cls(**values)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FaultPlan:
        """A plan from decoded JSON or TOML; unknown keys and wrong types are refused."""
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in _INTS + _FLOATS:
                known = ", ".join(sorted(_INTS + _FLOATS))
                raise UsageError(f"unknown fault plan key {key!r}: known keys are {known}")
            if value is None and key in ("kill_after_seq", "kill_before_seq"):
                continue
            wanted: tuple[type, ...] = (int,) if key in _INTS else (int, float)
            if isinstance(value, bool) or not isinstance(value, wanted):
                raise UsageError(f"fault plan key {key!r} must be a number, not {value!r}")
            values[key] = value
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _INTS + _FLOATS}

    @classmethod
    def from_env(cls) -> FaultPlan | None:
        text = os.environ.get("TETHER_CHAOS", "").strip()
        return cls.parse(text) if text else None

    def injected(self, kind: str) -> None:
        if self.on_inject is not None:
            self.on_inject(kind)

    def chance(self, rate: float) -> bool:
        return bool(rate) and self.rng.random() < rate

    def wrap_store(self, store: Store) -> Store:
        if self.kill_after_seq is None and self.kill_before_seq is None:
            return store
        return FaultyStore(store, self)

    def wrap_model(self, model: Model) -> Model:
        if not (self.model_latency or self.model_fail_rate or self.model_malformed_rate):
            return model
        return FaultyModel(model, self)

    def wrap_tools(self, tools: Sequence[Tool]) -> list[Tool]:
        if not (self.tool_fail_rate or self.tool_latency or self.tool_corrupt_rate):
            return list(tools)
        return [faulty_tool(t, self) for t in tools]

    def wrap_sources(
        self, sources: Sequence[ToolSource], prepare: Callable[[Tool], Tool] | None = None
    ) -> list[ToolSource]:
        """Sources whose tools get the tool faults and `MCP_FAULT_KINDS` (each tool passed
        through `prepare` first); see `tether._chaos_sources`."""
        return [FaultySource(s, self, prepare) for s in sources]


def _die(plan: FaultPlan) -> None:
    plan.injected("kill")
    os.kill(os.getpid(), signal.SIGKILL)


class FaultyStore(StoreWrapper):
    """A store that kills its process at a chosen journal position."""

    def __init__(self, inner: Store, plan: FaultPlan) -> None:
        super().__init__(inner)
        self.plan = plan

    async def append(
        self,
        lease: Lease,
        events: Sequence[Event],
        *,
        summary: RunSummary,
        also: Callable[[], None] | None = None,
        sync: bool = False,
    ) -> None:
        before = self.plan.kill_before_seq
        if before is not None and events and events[0].seq <= before <= events[-1].seq:
            _die(self.plan)
        await self.inner.append(lease, events, summary=summary, also=also, sync=sync)
        after = self.plan.kill_after_seq
        if after is not None and events and events[-1].seq >= after:
            _die(self.plan)


class FaultyModel:
    """A model that is slow, fails transiently or answers malformed, as real providers do."""

    def __init__(self, inner: Model, plan: FaultPlan) -> None:
        self.inner = inner
        self.plan = plan
        self.name = inner.name
        self.context_window = inner.context_window
        self.max_output_tokens = inner.max_output_tokens

    def count_tokens(self, messages: Sequence[Message], tools: tuple[ToolSpec, ...] = ()) -> int:
        return self.inner.count_tokens(messages, tools)

    async def complete(
        self, request: ModelRequest, *, on_text: TextSink | None = None
    ) -> ModelResponse:
        if self.plan.model_latency:
            self.plan.injected("model_latency")
            await asyncio.sleep(self.plan.model_latency)
        if self.plan.chance(self.plan.model_fail_rate):
            self.plan.injected("model_outage")
            raise ModelUnavailable("chaos: injected provider outage")
        response = await self.inner.complete(request, on_text=on_text)
        if request.purpose == "turn" and self.plan.chance(self.plan.model_malformed_rate):
            self.plan.injected("model_malformed")
            return malformed(response)
        return response


def malformed(response: ModelResponse) -> ModelResponse:
    """The answer as a broken provider returns it: arguments cut mid-JSON, or (for a final
    answer) a call of a tool nobody offered."""
    if response.tool_calls:
        first = response.tool_calls[0]
        cut = dataclasses.replace(first, arguments=first.arguments[: len(first.arguments) // 2])
        calls = (cut, *response.tool_calls[1:])
    else:
        calls = (ToolCall(id="chaos_call", name="chaos_no_such_tool", arguments="{"),)
    return dataclasses.replace(response, tool_calls=calls, finish_reason="tool_calls")


def corrupted(value: Any, rng: random.Random) -> str:
    """A result cut at a random point, with a NUL and an unpaired surrogate spliced in."""
    text = value if isinstance(value, str) else repr(value)
    cut = rng.randrange(len(text) + 1)
    return text[:cut] + "\x00\ud800" + "\ufffd" * rng.randrange(1, 4)


def wrap_fn(
    tool: Tool,
    before: Callable[[dict[str, Any]], None],
    after: Callable[[dict[str, Any], Any], Any],
    *,
    sleep: Callable[[], float] = lambda: 0.0,
) -> Tool:
    """The same tool with `before(kwargs)` run first, `sleep()` seconds of latency, and its
    value passed through `after(kwargs, value)`; a sync tool stays sync (so it keeps its
    thread, its bounded executor and its timeout semantics)."""
    inner = tool.fn

    if inspect.iscoroutinefunction(inner):

        async def wrapped_async(**kwargs: Any) -> Any:
            before(kwargs)
            delay = sleep()
            if delay:
                await asyncio.sleep(delay)
            return after(kwargs, await inner(**kwargs))

        return replace(tool, fn=wrapped_async)

    def wrapped(**kwargs: Any) -> Any:
        before(kwargs)
        delay = sleep()
        if delay:
            time.sleep(delay)
        return after(kwargs, inner(**kwargs))

    return replace(tool, fn=wrapped)


def faulty_tool(tool: Tool, plan: FaultPlan) -> Tool:
    """The same tool, slow, failing transiently before it runs, or corrupting its result."""

    def before(_: dict[str, Any]) -> None:
        if plan.chance(plan.tool_fail_rate):
            plan.injected("tool_failure")
            raise ConnectionError("chaos: injected tool failure")

    def latency() -> float:
        if plan.tool_latency:
            plan.injected("tool_latency")
        return plan.tool_latency

    def after(_: dict[str, Any], value: Any) -> Any:
        if plan.chance(plan.tool_corrupt_rate):
            plan.injected("tool_corruption")
            return corrupted(value, plan.rng)
        return value

    return wrap_fn(tool, before, after, sleep=latency)
