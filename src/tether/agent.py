"""Agent definitions and run limits: plain Python, versioned by name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .budget import BudgetLimits
from .errors import UsageError
from .models import Model
from .tools import Tool

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
            if value is not None and value <= 0:
                raise UsageError(f"{name} must be positive, got {value}")
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

    def __post_init__(self) -> None:
        names = [t.name for t in self.tools]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UsageError(f"agent {self.name}: duplicate tool names {duplicates}")
        if not self.name:
            raise UsageError("an agent needs a name")

    def tool(self, name: str) -> Tool | None:
        for t in self.tools:
            if t.name == name:
                return t
        return None
