"""Loading agents named on the command line: `module:attr` or `path/to/file.py:attr`."""

from __future__ import annotations

import inspect
from typing import Any

from .._agent_sources import import_target
from ..agent import Agent
from ..errors import UsageError
from ..journal import Store, read_events

__all__ = ["agent_of_run", "load_agent"]


def load_agent(spec: str, args: dict[str, Any] | None = None) -> Agent:
    """The Agent a spec names; a callable is called (with `args`) to build it."""
    value = import_target(spec)
    if not isinstance(value, Agent) and callable(value):
        try:
            inspect.signature(value).bind(**(args or {}))
        except TypeError as exc:  # wrong arguments: a user mistake, not a traceback
            raise UsageError(f"{spec} cannot be called with {args or {}}: {exc}") from None
        except ValueError:
            pass  # no signature to check (a builtin): the call says what is wrong
        value = value(**(args or {}))
    if not isinstance(value, Agent):
        raise UsageError(f"{spec} is not an Agent (got {type(value).__name__})")
    return value


async def agent_of_run(store: Store, run_id: str, spec: str | None = None) -> Agent:
    """The agent a run was started with, rebuilt from what its creation recorded (or
    from `spec`, when the agent moved since)."""
    await store.get_run(run_id)  # RunNotFound before anything else
    first = (await read_events(store, run_id, until_seq=1))[0]
    meta = first.payload.get("metadata") or {}
    spec = spec or meta.get("agent_spec")
    if not spec:
        raise UsageError(
            f"run {run_id} does not record where its agent lives: pass --agent module:attr"
        )
    return load_agent(spec, meta.get("agent_args") or {})
