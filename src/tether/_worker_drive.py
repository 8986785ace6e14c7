"""Driving one run a worker claimed, apart from the claim loop that hands it the claim.

The run is rebuilt from its journal (its agent by name and version, its model from the
spec it was submitted with), driven behind a `LeaseGuard` whose watchdog stops it before
the lease can expire, and handed back at a step boundary while the worker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._lease_guard import LeaseGuard
from .errors import LeaseLost, StoreError, UsageError
from .events import Event, EventDraft
from .journal import RunJournal, Store, read_events
from .journal._base import Claim
from .loop import Progress, RunResult, drive_run
from .models import Model
from .models._resolve import model_from_spec

if TYPE_CHECKING:
    from .worker import Worker


class HandBack(BaseException):
    """Raised from the progress observer at a step boundary while the worker stops.

    A BaseException, so no `except Exception` on the way can swallow it.
    """


def hand_back_when(draining: Callable[[], bool]) -> Callable[[Progress], None]:
    """A progress observer that raises `HandBack` at the first step boundary once
    `draining()` is true: no tool running, no call pending, no model request open."""

    def observe(progress: Progress) -> None:
        state = progress.state
        if (
            draining()
            and progress.event != "tool.started"
            and state.status == "running"
            and not state.pending_calls
            and state.open_model_request is None
        ):
            raise HandBack

    return observe


async def created_event(store: Store, run_id: str) -> Event:
    """The run's first event: its agent, version and how it was submitted."""
    return (await read_events(store, run_id, until_seq=1))[0]


async def drive_claim(
    worker: Worker, claim: Claim, observer: Callable[[Progress], None]
) -> tuple[RunResult, bool]:
    """Drive the claimed run until it pauses or ends; returns how it ended and whether it
    was submitted for auto-approval. The lease is released on every way out."""
    lease = claim.lease
    run_id = lease.run_id
    try:
        created = await created_event(worker.store, run_id)
        payload = created.payload
        meta: dict[str, Any] = payload.get("metadata") or {}
        source = worker.agents.get(payload["agent"], payload.get("agent_version", ""))
        agent = source.build(meta.get("agent_args") or {})
        model_spec = meta.get("model_spec")
        model: Model | None = model_from_spec(model_spec) if model_spec else None
        model = model or agent.model
        if model is None:
            raise UsageError(f"run {run_id}: agent {agent.name} has no model")
    except BaseException:
        with contextlib.suppress(StoreError, OSError):
            await worker.store.release_lease(lease)
        raise
    guard = LeaseGuard(worker.store, lease, ttl_s=worker.lease_ttl_s, clock=worker.clock)
    store: Store = guard
    if worker.faults is not None:
        store = worker.faults.wrap_store(guard)
        model = worker.faults.wrap_model(model)
        agent = dataclasses.replace(
            agent,
            tools=worker.faults.wrap_tools(agent.tools),
            tool_sources=worker.faults.wrap_sources(agent.tool_sources),
        )
    driving = asyncio.create_task(
        drive_run(
            store=store,
            agent=agent,
            model=model,
            run_id=run_id,
            owner=worker.owner,
            clock=worker.clock,
            prices=worker.prices,
            observer=observer,
            lease_ttl_s=worker.lease_ttl_s,
            snapshot_every=worker.snapshot_every,
            model_retries=worker.model_retries,
            model_retry_backoff_s=worker.model_retry_backoff_s,
            ledger=worker.ledger,
        )
    )
    watching = asyncio.create_task(guard.watch())
    try:
        await asyncio.wait({driving, watching}, return_when=asyncio.FIRST_COMPLETED)
        if not driving.done() and watching.done() and watching.result() is not None:
            # The lease could not be renewed: stop now, before it can expire.
            driving.cancel()
            await asyncio.wait({driving})
            with contextlib.suppress(StoreError, OSError):
                await worker.store.release_lease(guard.lease)
            raise LeaseLost(f"stopped driving: {watching.result()}")
        result = await driving
    finally:
        for task in (driving, watching):
            task.cancel()
        await asyncio.gather(driving, watching, return_exceptions=True)
    return result, bool(meta.get("auto_approve"))


async def report_error(worker: Worker, run_id: str, exc: Exception) -> None:
    """Journal why the worker stopped driving the run (under a brief lease of its own),
    so an operator sees it in the run and can `tether resume` it; best effort."""
    with contextlib.suppress(Exception):
        lease = await worker.store.acquire_lease(run_id, owner=worker.owner, ttl_s=30)
        try:
            journal, _ = await RunJournal.open(worker.store, lease, clock=worker.clock)
            if not journal.state.terminal:
                await journal.append(
                    EventDraft(
                        type="health.warning",
                        payload={
                            "kind": "worker_error",
                            "message": (
                                f"worker {worker.owner} stopped driving the run after an "
                                f"unexpected {type(exc).__name__}; `tether resume "
                                f"{run_id}` continues it"
                            ),
                        },
                    )
                )
        finally:
            await worker.store.release_lease(lease)
