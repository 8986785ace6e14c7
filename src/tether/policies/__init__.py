"""Health policies: the defences that sit on the loop's seam, and the seam's interface.

A policy sees the run at five hooks (before a model call, after its answer, before a tool
call, after its result, before a final answer) and answers with a `Verdict`. Users add
their own by subclassing `Policy` and passing it in `Agent(policies=[...])`; leaving
`policies` unset gives `default_policies()`.
"""

from ._base import (
    AfterModel,
    AfterTool,
    BeforeAnswer,
    BeforeModel,
    BeforeTool,
    Health,
    Policy,
    Verdict,
)
from ._breaker import CircuitBreaker
from ._consistency import Freshness, SameCallDifferentData
from ._defaults import default_policies
from ._guardrails import Check, PublicationGuardrail
from ._monitors import DegradationMonitor, MonitorAction
from ._truncation import TruncatedAnswers

__all__ = [
    "AfterModel",
    "AfterTool",
    "BeforeAnswer",
    "BeforeModel",
    "BeforeTool",
    "Check",
    "CircuitBreaker",
    "DegradationMonitor",
    "Freshness",
    "Health",
    "MonitorAction",
    "Policy",
    "PublicationGuardrail",
    "SameCallDifferentData",
    "TruncatedAnswers",
    "Verdict",
    "default_policies",
]
