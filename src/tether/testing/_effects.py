"""Counting a tool's effects by idempotency key, across the processes of one chaos run.

`tether chaos` wraps every tool so each completed execution is logged with its key, and a
tool that knows where its real effect happens (after its own check for a key it has seen)
says so with `record_effect(ctx)`. Lines are appended with one `write` each, so a line that
was written survives the SIGKILL that follows it. Outside a chaos run both are no-ops.
"""

from __future__ import annotations

import contextvars
import inspect
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..tools import Tool, ToolContext

__all__ = ["EffectLog", "Execution", "counted", "read_effects", "record_effect"]

_CTX_PARAM = "_tether_effect_ctx"
_tool_name: contextvars.ContextVar[str] = contextvars.ContextVar("tether_effect_tool", default="")
_sink: EffectLog | None = None


class EffectLog:
    """An append-only JSON Lines file of executions and effects."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, entry: dict[str, Any]) -> None:
        os.write(self._fd, (json.dumps(entry, sort_keys=True) + "\n").encode())

    def install(self) -> None:
        """Make `record_effect` write here (one log per process)."""
        global _sink
        _sink = self


def record_effect(ctx: ToolContext, what: str = "") -> None:
    """Declare that this call changed the outside world, under `ctx.idempotency_key`.

    Call it where the effect really happens (after the tool's own check for a key it has
    already applied): `tether chaos` fails a run in which one key has two effects, which is
    how a tool wrongly declared idempotent is caught. A no-op outside `tether chaos`.
    """
    if _sink is not None:
        _sink.write({"kind": "effect", "key": ctx.idempotency_key, "tool": _tool_name.get(),
                     "what": what})  # fmt: skip


@dataclass(frozen=True, kw_only=True, slots=True)
class Execution:
    kind: str
    """`ran` (the harness saw the tool return) or `effect` (the tool called record_effect)."""
    key: str
    tool: str
    idempotent: bool = True


def counted(tool: Tool, log: EffectLog) -> Tool:
    """The tool, logging each completed execution with its key (the call's context is
    borrowed even when the tool does not take one). A sync tool stays sync."""
    own = tool.context_param
    inner = tool.fn

    def key_of(kwargs: dict[str, Any]) -> str:
        ctx = kwargs[own] if own else kwargs.pop(_CTX_PARAM)
        return str(ctx.idempotency_key)

    def done(key: str) -> None:
        log.write({"kind": "ran", "key": key, "tool": tool.name, "idempotent": tool.idempotent})

    fn: Any
    if inspect.iscoroutinefunction(inner):

        async def run_async(**kwargs: Any) -> Any:
            key = key_of(kwargs)
            token = _tool_name.set(tool.name)
            try:
                value = await inner(**kwargs)
            finally:
                _tool_name.reset(token)
            done(key)
            return value

        fn = run_async
    else:

        def run_sync(**kwargs: Any) -> Any:
            key = key_of(kwargs)
            token = _tool_name.set(tool.name)
            try:
                value = inner(**kwargs)
            finally:
                _tool_name.reset(token)
            done(key)
            return value

        fn = run_sync
    return replace(tool, fn=fn, context_param=own or _CTX_PARAM)


def read_effects(path: Path) -> Iterator[Execution]:
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        if line.strip():
            data = json.loads(line)
            yield Execution(kind=data["kind"], key=data["key"], tool=data["tool"],
                            idempotent=data.get("idempotent", True))  # fmt: skip
