"""Fault injection, shipped as a feature: durability is shown by breaking things on purpose.

A `FaultPlan` wraps the ports (store, model, tools) without the loop knowing. It is
seeded, so a failing chaos run can be reproduced exactly. The CLI reads a plan from the
`TETHER_CHAOS` environment variable, e.g.::

    TETHER_CHAOS="kill_after_seq=57"               # SIGKILL this process once seq 57 is durable
    TETHER_CHAOS="model_latency=0.02;seed=7"       # 20 ms per model call
    TETHER_CHAOS="model_fail_rate=0.2;tool_fail_rate=0.1;seed=3"
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import ModelUnavailable, UsageError
from .events import Event
from .journal import Lease, RunSummary, Store
from .models import Message, Model, ModelRequest, ModelResponse, ToolSpec
from .models._base import TextSink
from .tools import Tool

__all__ = ["FaultPlan", "FaultyModel", "FaultyStore", "faulty_tool"]


@dataclass(frozen=True, kw_only=True)
class FaultPlan:
    seed: int = 0
    kill_after_seq: int | None = None
    """SIGKILL the process right after an append makes this seq (or a later one) durable."""
    kill_before_seq: int | None = None
    """SIGKILL the process just before the append that would write this seq."""
    model_latency: float = 0.0
    model_fail_rate: float = 0.0
    """Chance that a model call fails as a transient outage."""
    tool_fail_rate: float = 0.0
    """Chance that a tool call raises ConnectionError (a transient failure)."""
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.rng.seed(self.seed)

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """Parse `key=value;key=value` (the TETHER_CHAOS format)."""
        values: dict[str, Any] = {}
        ints = {"seed", "kill_after_seq", "kill_before_seq"}
        floats = {"model_latency", "model_fail_rate", "tool_fail_rate"}
        for part in filter(None, (p.strip() for p in text.split(";"))):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in ints | floats:
                known = ", ".join(sorted(ints | floats))
                raise UsageError(f"bad TETHER_CHAOS entry {part!r}: known keys are {known}")
            try:
                values[key] = int(value) if key in ints else float(value)
            except ValueError:
                raise UsageError(f"bad TETHER_CHAOS value in {part!r}") from None
        return cls(**values)

    @classmethod
    def from_env(cls) -> FaultPlan | None:
        text = os.environ.get("TETHER_CHAOS", "").strip()
        return cls.parse(text) if text else None

    def wrap_store(self, store: Store) -> Store:
        if self.kill_after_seq is None and self.kill_before_seq is None:
            return store
        return FaultyStore(store, self)

    def wrap_model(self, model: Model) -> Model:
        if not self.model_latency and not self.model_fail_rate:
            return model
        return FaultyModel(model, self)

    def wrap_tools(self, tools: Sequence[Tool]) -> list[Tool]:
        if not self.tool_fail_rate:
            return list(tools)
        return [faulty_tool(t, self) for t in tools]


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class FaultyStore:
    """A store that kills its process at a chosen journal position."""

    def __init__(self, inner: Store, plan: FaultPlan) -> None:
        self.inner = inner
        self.plan = plan
        self.url = inner.url

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append(
        self,
        lease: Lease,
        events: Sequence[Event],
        *,
        summary: RunSummary,
        also: Callable[[], None] | None = None,
    ) -> None:
        before = self.plan.kill_before_seq
        if before is not None and events and events[0].seq <= before <= events[-1].seq:
            _die()
        await self.inner.append(lease, events, summary=summary, also=also)
        after = self.plan.kill_after_seq
        if after is not None and events and events[-1].seq >= after:
            _die()


class FaultyModel:
    """A model that is slow or fails transiently, as real providers are."""

    def __init__(self, inner: Model, plan: FaultPlan) -> None:
        self.inner = inner
        self.plan = plan
        self.name = inner.name
        self.context_window = inner.context_window
        self.max_output_tokens = inner.max_output_tokens

    def count_tokens(self, messages: tuple[Message, ...], tools: tuple[ToolSpec, ...] = ()) -> int:
        return self.inner.count_tokens(messages, tools)

    async def complete(
        self, request: ModelRequest, *, on_text: TextSink | None = None
    ) -> ModelResponse:
        if self.plan.model_latency:
            await asyncio.sleep(self.plan.model_latency)
        if self.plan.model_fail_rate and self.plan.rng.random() < self.plan.model_fail_rate:
            raise ModelUnavailable("chaos: injected provider outage")
        return await self.inner.complete(request, on_text=on_text)


def faulty_tool(tool: Tool, plan: FaultPlan) -> Tool:
    """The same tool, failing transiently at the plan's rate before it runs."""
    inner = tool.fn

    async def flaky(**kwargs: Any) -> Any:
        if plan.rng.random() < plan.tool_fail_rate:
            raise ConnectionError("chaos: injected tool failure")
        if asyncio.iscoroutinefunction(inner):
            return await inner(**kwargs)
        return await asyncio.to_thread(inner, **kwargs)

    return replace(tool, fn=flaky)
