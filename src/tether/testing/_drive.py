"""Driving an agent in a test: to its end (deciding what it asks), or to its first pause."""

from __future__ import annotations

from ..agent import Agent, Limits
from ..approvals import pending_approvals, resolve_approval
from ..errors import UsageError
from ..journal import MemoryStore, Store
from ..loop import RunResult, Runtime

__all__ = ["run_to_end", "run_to_pause"]


def _runtime(store: Store | None, runtime: Runtime | None) -> Runtime:
    if runtime is not None:
        return runtime
    return Runtime(store or MemoryStore(), model_retry_backoff_s=0.0)


async def run_to_pause(
    agent: Agent,
    task: str | None = None,
    *,
    run_id: str | None = None,
    store: Store | None = None,
    runtime: Runtime | None = None,
    limits: Limits | None = None,
) -> RunResult:
    """Start a run on `task` (or drive the existing `run_id`) until it ends or waits for a
    human. Without a store or runtime: a memory store and no retry backoff."""
    rt = _runtime(store, runtime)
    if (task is None) == (run_id is None):
        raise UsageError("give a task (a new run) or a run_id (an existing one), not both")
    if run_id is not None:
        return await rt.resume(agent, run_id)
    assert task is not None
    return await rt.start(agent, task, limits=limits)


async def run_to_end(
    agent: Agent,
    task: str | None = None,
    *,
    run_id: str | None = None,
    store: Store | None = None,
    runtime: Runtime | None = None,
    limits: Limits | None = None,
    approve: bool = True,
) -> RunResult:
    """`run_to_pause`, then decide every approval it asks for (`approve=False` rejects
    them) and drive on, until a terminal status; questions get an empty answer. Decisions
    are dated by the runtime's clock, so a run on a fake clock stays on it."""
    rt = _runtime(store, runtime)
    result = await run_to_pause(agent, task, run_id=run_id, runtime=rt, limits=limits)
    while result.status == "waiting_approval":
        for approval in await pending_approvals(rt.store, run_id=result.run_id):
            question = approval.kind != "approval"
            await resolve_approval(
                rt.store, approval.request_id,
                decision="approved" if approve or question else "rejected",
                comment="" if question else (None if approve else "rejected by the test"),
                actor="test", clock=rt.clock,
            )  # fmt: skip
        result = await rt.resume(agent, result.run_id)
    return result
