"""The health policies every agent gets unless it names its own."""

from __future__ import annotations

from ._base import Policy
from ._breaker import CircuitBreaker
from ._consistency import Freshness, SameCallDifferentData
from ._monitors import DegradationMonitor
from ._truncation import TruncatedAnswers

__all__ = ["default_policies"]


def default_policies() -> list[Policy]:
    """A fresh set of the default health policies (one set per run: they keep state)."""
    return [
        TruncatedAnswers(),
        CircuitBreaker(),
        SameCallDifferentData(),
        Freshness(),
        DegradationMonitor(),
    ]
