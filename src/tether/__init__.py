"""Tether: a durable runtime for long-running LLM agents.

Names are imported on first use, so `import tether.journal` (and the CLI) do not pay for
the agent loop, tools and pydantic until they need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Agent": "agent",
    "Limits": "agent",
    "AppendConflict": "errors",
    "ContextOverflow": "errors",
    "CorruptionError": "errors",
    "LeaseHeld": "errors",
    "LeaseLost": "errors",
    "ModelError": "errors",
    "ModelUnavailable": "errors",
    "RunError": "errors",
    "RunNotFound": "errors",
    "StoreError": "errors",
    "TetherError": "errors",
    "ToolRetry": "errors",
    "UsageError": "errors",
    "Event": "events",
    "EventDraft": "events",
    "Usage": "events",
    "Visibility": "events",
    "RunJournal": "journal",
    "Store": "journal",
    "create_run": "journal",
    "fork_run": "journal",
    "load_run": "journal",
    "open_store": "journal",
    "verify_run": "journal",
    "Progress": "loop",
    "RunResult": "loop",
    "Runtime": "loop",
    "pin_fact": "loop",
    "unpin_fact": "loop",
    "RunState": "state",
    "RunStatus": "state",
    "fold": "state",
    "Tool": "tools",
    "ToolContext": "tools",
    "tool": "tools",
}

__all__ = [
    "Agent",
    "AppendConflict",
    "ContextOverflow",
    "CorruptionError",
    "Event",
    "EventDraft",
    "LeaseHeld",
    "LeaseLost",
    "Limits",
    "ModelError",
    "ModelUnavailable",
    "Progress",
    "RunError",
    "RunJournal",
    "RunNotFound",
    "RunResult",
    "RunState",
    "RunStatus",
    "Runtime",
    "Store",
    "StoreError",
    "TetherError",
    "Tool",
    "ToolContext",
    "ToolRetry",
    "Usage",
    "UsageError",
    "Visibility",
    "__version__",
    "create_run",
    "fold",
    "fork_run",
    "load_run",
    "open_store",
    "pin_fact",
    "tool",
    "unpin_fact",
    "verify_run",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tether' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from .agent import Agent, Limits
    from .errors import (
        AppendConflict,
        ContextOverflow,
        CorruptionError,
        LeaseHeld,
        LeaseLost,
        ModelError,
        ModelUnavailable,
        RunError,
        RunNotFound,
        StoreError,
        TetherError,
        ToolRetry,
        UsageError,
    )
    from .events import Event, EventDraft, Usage, Visibility
    from .journal import (
        RunJournal,
        Store,
        create_run,
        fork_run,
        load_run,
        open_store,
        verify_run,
    )
    from .loop import Progress, RunResult, Runtime, pin_fact, unpin_fact
    from .state import RunState, RunStatus, fold
    from .tools import Tool, ToolContext, tool
