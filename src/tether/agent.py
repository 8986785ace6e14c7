"""Agent definitions and run limits: plain Python, versioned by name."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from .budget import BudgetLimits
from .errors import UsageError
from .models import Model
from .tools import Tool, ToolSource

if TYPE_CHECKING:
    from .policies import Policy

__all__ = ["Agent", "Limits"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """A run's runway. None means unlimited; every limit ends the run gracefully."""

    max_steps: int | None = 50
    """Cycles (model turns)."""
    max_tokens: int | None = None
    """Input plus output tokens over the whole run."""
    max_cost_usd: float | None = None
    max_time_s: float | None = None
    """Active seconds: time spent waiting for a human or dead between crashes is not counted."""
    context_threshold: float = 0.8
    """Fill of the model's window at which older turns are compacted."""
    warn_at: float = 0.20
    wrap_up_at: float = 0.10

    def __post_init__(self) -> None:
        for name in ("max_steps", "max_tokens", "max_cost_usd", "max_time_s"):
            value = getattr(self, name)
            if value is not None and not 0 < value < math.inf:
                raise UsageError(f"{name} must be a positive finite number, got {value}")
        if not 0.1 <= self.context_threshold <= 1.0:
            raise UsageError("context_threshold must be between 0.1 and 1.0")

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Limits:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def merged(self, **overrides: Any) -> Limits:
        """These limits with the given (non-None) overrides applied."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True, kw_only=True)
class Agent:
    """What an agent is: its mission, its model, its tools and its limits."""

    name: str
    instructions: str
    """The mission: journaled as the system message and never compacted."""
    tools: Sequence[Tool] = ()
    """Tools; a `ToolSource` (an MCP server) listed here is moved to `tool_sources`."""
    model: Model | None = None
    """The default model; a run may be given another."""
    version: str = "1"
    limits: Limits = field(default_factory=Limits)
    max_output_tokens: int = 2_048
    """Output bound of each model call (budgets reserve against it)."""
    wrap_up_output_tokens: int = 1_024
    budget: BudgetLimits | None = None
    """Limits for the scope `agent:NAME`, on top of those stored in the store."""
    approval_cost_usd: float | None = None
    """Global approval policy: any call of a tool costing more than this needs approval."""
    summary_model: Model | None = None
    """Writes the summary of compacted turns (a cheaper model, say); None: the run's model."""
    summary_share: float = 0.1
    """Share of the model's window the one summary of compacted turns may take."""
    pin_tokens: int = 2_000
    """Tokens all pinned facts may take together; the agent sees the budget's use."""
    tool_sources: Sequence[ToolSource] = ()
    """Servers whose tools each run lists once, journals, and reads back on resume."""
    model_timeout_s: float | None = 300.0
    """Bound of one model call (the run's remaining time bounds it too); a call past it
    is journaled as failed and retried like an outage."""
    policies: Sequence[Policy] | None = None
    """Health policies on the loop's seam (`tether.policies`); None: the defaults."""

    def __post_init__(self) -> None:
        sources = [t for t in self.tools if isinstance(t, ToolSource)]
        if sources:
            object.__setattr__(self, "tools", tuple(t for t in self.tools if isinstance(t, Tool)))
            object.__setattr__(self, "tool_sources", (*self.tool_sources, *sources))
        strays = [t for t in self.tools if not isinstance(t, Tool)]
        if strays:
            raise UsageError(
                f"agent {self.name}: {type(strays[0]).__name__} is not a tool "
                "(use @tool, or a tool source such as MCPServer)"
            )
        source_names = [s.name for s in self.tool_sources]
        if len(set(source_names)) != len(source_names):
            raise UsageError(f"agent {self.name}: two tool sources share a name {source_names}")
        names = [t.name for t in self.tools]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UsageError(f"agent {self.name}: duplicate tool names {duplicates}")
        if not self.name:
            raise UsageError("an agent needs a name")
        if not 0.01 <= self.summary_share <= 0.5:
            raise UsageError("summary_share must be between 0.01 and 0.5")
        if self.pin_tokens < 0:
            raise UsageError("pin_tokens must be 0 or more")
        if self.policies is not None:
            from .policies import Policy

            bad = [p for p in self.policies if not isinstance(p, Policy)]
            if bad or isinstance(self.policies, str | Policy):
                raise UsageError(
                    f"agent {self.name}: policies must be a list of tether.policies.Policy "
                    f"instances, got {bad[0] if bad else self.policies!r}"
                )
        if self.model_timeout_s is not None and not 0 < self.model_timeout_s < math.inf:
            raise UsageError(
                f"model_timeout_s must be a positive finite number, got {self.model_timeout_s}"
            )

    def tool(self, name: str) -> Tool | None:
        for t in self.tools:
            if t.name == name:
                return t
        return None
