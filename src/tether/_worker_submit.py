"""Feeding workers: a run journaled with what a worker needs to rebuild it, then queued.

Apart from the claim loop in `worker.py`, which it does not need: `tether submit` and
`tether demo --submit` only write the run and its queue entry, and any process may.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._clock import Clock
from .agent import Agent, Limits
from .errors import UsageError
from .journal import Store, create_run
from .journal._base import DEFAULT_QUEUE
from .models import Model


async def submit_run(
    store: Store,
    agent: Agent,
    task: str,
    *,
    agent_spec: str,
    agent_args: Mapping[str, Any] | None = None,
    model: Model | None = None,
    model_spec: str | None = None,
    limits: Limits | None = None,
    auto_approve: bool = False,
    queue: str = DEFAULT_QUEUE,
    tenant: str | None = None,
    run_id: str | None = None,
    clock: Clock | None = None,
) -> str:
    """Journal a new run (its agent's name and version, and how to rebuild it) and put it
    in `queue` for workers; returns its id."""
    if not task.strip():
        raise UsageError("the task is empty: say what the agent should do")
    chosen = model or agent.model
    if chosen is None:
        raise UsageError(f"agent {agent.name} has no model: pass one with --model")
    state = await create_run(
        store,
        agent=agent.name,
        agent_version=agent.version,
        task=task,
        model=chosen.name,
        limits=(limits or agent.limits).to_json(),
        tenant=tenant,
        run_id=run_id,
        metadata={
            "agent_spec": agent_spec,
            "agent_args": dict(agent_args or {}),
            "model_spec": model_spec,
            "auto_approve": auto_approve,
            "queue": queue,
        },
        clock=clock,
    )
    await store.enqueue(state.run_id, queue=queue)
    return state.run_id
