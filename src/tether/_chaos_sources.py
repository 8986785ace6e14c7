"""Faults for tools a tool source (an MCP server) offers: `FaultPlan.wrap_sources`.

A source's tools are built per run, when the runtime binds the agent's sources, so the
plan cannot wrap them up front as it wraps the agent's own tools: it wraps the source,
and each tool its session builds gets the plan's tool faults (failure, latency,
corruption) and the faults particular to a server on the other end of a connection:

- `mcp_failure`: the server answers with an error result (what a tool that reported
  `isError` gives: a `retry_requested` result the model reads);
- `mcp_timeout`: the call is sent, and its answer comes too late: either the server did
  the work and the answer is withheld, or the call is cut off in flight (cancelled, as
  the runtime's own timeout cancels it). The tool sees a timeout;
- `mcp_disconnect`: the server exits mid-call: its session is severed (the server process
  stopped, an HTTP client closed) while the call is in flight, or after the server did the
  work and before its answer arrived; the caller sees the connection drop with an unknown
  outcome. The next call starts a new session (a new server process), as after a crash.

The outcome of each is what the runtime's rules then decide: an idempotent call is retried,
any other is reported with an unknown outcome and never silently repeated, which is what
`tether chaos` checks.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .errors import ToolRetry
from .tools import Tool, ToolSession, ToolSource

if TYPE_CHECKING:
    from .chaos import FaultPlan

__all__ = ["MCP_FAULT_KINDS", "FaultySource"]

MCP_FAULT_KINDS = ("mcp_failure", "mcp_timeout", "mcp_disconnect")
"""What a `FaultPlan` injects into tools from sources, on top of the tool faults."""

_CUT_AFTER_S = 0.005
"""How long a call cut off in flight runs first: long enough for its request to be sent."""


class FaultySource:
    """A tool source whose sessions' tools are faulty by `plan`; `prepare` runs on each
    tool first (the chaos harness counts executions with it)."""

    def __init__(
        self,
        inner: ToolSource,
        plan: FaultPlan,
        prepare: Callable[[Tool], Tool] | None = None,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.plan = plan
        self.prepare = prepare
        self.tools_built = 0
        """Tools its sessions built (a harness learns the agent has source tools)."""

    def open(self, run_id: str) -> FaultySession:
        return FaultySession(self, self.inner.open(run_id))


class FaultySession:
    def __init__(self, source: FaultySource, inner: ToolSession) -> None:
        self.source = source
        self.inner = inner

    async def list_tools(self) -> list[dict[str, Any]]:
        return await self.inner.list_tools()

    def tools(self, listing: list[dict[str, Any]]) -> Sequence[Tool]:
        plan, prepare = self.source.plan, self.source.prepare
        built = [prepare(t) if prepare is not None else t for t in self.inner.tools(listing)]
        self.source.tools_built += len(built)
        return [self._faulty(t) for t in plan.wrap_tools(built)]

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _faulty(self, tool: Tool) -> Tool:
        plan = self.source.plan
        if not (plan.mcp_fail_rate or plan.mcp_timeout_rate or plan.mcp_disconnect_rate):
            return tool
        inner = tool.fn
        if not inspect.iscoroutinefunction(inner):
            return tool  # not a connection's call: the tool faults are all it gets
        sever: Callable[[], Any] | None = getattr(self.inner, "sever", None)
        source = self.source.name

        async def call(**kwargs: Any) -> Any:
            if plan.chance(plan.mcp_fail_rate):
                plan.injected("mcp_failure")
                raise ToolRetry(f"chaos: MCP server {source!r} answered with an error result")
            if plan.chance(plan.mcp_timeout_rate):
                plan.injected("mcp_timeout")
                if plan.rng.random() < 0.5:
                    await inner(**kwargs)  # done, but the answer comes too late
                else:
                    await _cut_off(inner(**kwargs), None)
                raise TimeoutError(f"chaos: MCP server {source!r} did not answer in time")
            if plan.chance(plan.mcp_disconnect_rate):
                plan.injected("mcp_disconnect")
                if plan.rng.random() < 0.5:
                    await inner(**kwargs)  # the server did the work; the answer is lost
                    if sever is not None:
                        await sever()
                else:
                    await _cut_off(inner(**kwargs), sever)
                raise ConnectionError(
                    f"chaos: MCP server {source!r} exited mid-call; its outcome is unknown"
                )
            return await inner(**kwargs)

        return replace(tool, fn=call)


async def _cut_off(pending: Any, sever: Callable[[], Any] | None) -> None:
    """Start a call and, while it is in flight, sever its session (the server exits) or,
    without `sever`, cancel it (as a timeout does). Whatever it then returns is lost."""
    task = asyncio.ensure_future(pending)
    try:
        await asyncio.wait({task}, timeout=_CUT_AFTER_S)
        if sever is not None:
            await sever()
        elif not task.done():
            task.cancel()
        await asyncio.wait({task})
    finally:
        if not task.done():  # this call itself was cancelled
            task.cancel()
    if not task.cancelled():
        task.exception()  # retrieved: the caller sees only that the answer was lost
