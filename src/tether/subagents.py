"""Sub-agents: an agent used as a tool of another runs as a child run.

`agent_tool(researcher)` is a tool whose call starts a run of `researcher` in the same
store, linked to the call that started it: the child's `run.created` names the parent's
`tool.requested` as its `parent_event` (and the run index its parent run), so
`tether why` walks from any event of the child into the parent's cycle, and telemetry
nests the child's spans under the parent's tool span.

The child is named after the call's idempotency key (`PARENT/cN/tI` becomes
`PARENT.cN.tI`; journals from before stable keys gave `PARENT:SEQ`, named `PARENT.SEQ`), so
the call is idempotent: re-running it after a crash, even one that lost commits and
shifted journal positions, resumes the same child run instead of starting another. The
tool's result is the child's answer (a stopped child's partial answer is labelled as such);
a failed child is an error result.
"""

from __future__ import annotations

from ._clock import SystemClock
from .agent import Agent, Limits
from .errors import RunNotFound
from .events import Visibility
from .journal import create_run
from .models import Model
from .tools import Tool, ToolContext, tool

__all__ = ["agent_tool", "child_run_id"]


def child_run_id(key: str) -> str:
    """The run a sub-agent call with this idempotency key runs as."""
    run_id, sep, seq = key.rpartition(":")
    if sep and seq.isdigit():  # a key journaled before stable keys: RUN_ID:SEQ
        return f"{run_id}.{seq}"
    return key.replace("/", ".")


def agent_tool(
    agent: Agent,
    *,
    name: str | None = None,
    description: str | None = None,
    model: Model | None = None,
    limits: Limits | None = None,
    timeout_s: float | None = None,
    visibility: Visibility | None = None,
) -> Tool:
    """A tool that delegates a task to `agent`, run as a child run of the calling run."""
    what = description or (
        f"Delegate a task to the {agent.name} agent. It works on its own, with its own "
        "tools, and returns its answer."
    )

    async def delegate(task: str, ctx: ToolContext) -> str:
        from .loop import Runtime

        store = ctx.store
        if store is None:
            raise RuntimeError("agent tools run inside a Tether run (the call has no store)")
        parent = await store.get_run(ctx.run_id)
        child = child_run_id(ctx.idempotency_key)
        runtime = Runtime(store)  # shares the store (and its budget ledger); not closed here
        chosen = runtime.model_of(agent, model)
        try:
            await store.get_run(child)
        except RunNotFound:
            await create_run(
                store,
                agent=agent.name,
                agent_version=agent.version,
                task=task,
                model=chosen.name,
                limits=(limits or agent.limits).to_json(),
                tenant=parent.tenant,
                parent_event=ctx.event_id or ctx.idempotency_key,
                run_id=child,
                metadata={"parent_correlation_id": ctx.correlation_id},
                clock=SystemClock(),
            )
        result = await runtime.resume(agent, child, model=chosen)
        if result.status in ("completed", "stopped"):
            return result.answer or ""
        if result.status == "waiting_approval":
            raise RuntimeError(
                f"sub-agent run {child} is waiting for approval "
                f"({', '.join(result.pending_approvals)}); it continues once approved and "
                f"resumed (tether resume {child})"
            )
        raise RuntimeError(f"sub-agent run {child} {result.status}: {result.reason}")

    delegate.__doc__ = (
        f"{what}\n\nArgs:\n    task: what the {agent.name} agent should do, with everything "
        "it needs to know"
    )
    return tool(
        name=name or agent.name.replace(" ", "_"),
        idempotent=True,
        timeout_s=timeout_s,
        visibility=visibility,
    )(delegate)
