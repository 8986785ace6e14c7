"""A worker's auto-approval and its periodic sweep of the store.

A run submitted with --yes has its calls approved by the worker that paused it; the
sweep catches what no worker was there to do (a pause whose worker died before
approving, an approval whose time ran out), and names the runnable runs this worker
cannot serve, which would otherwise wait in silence.
"""

from __future__ import annotations

import logging
from collections.abc import Container
from typing import TYPE_CHECKING

from ._agent_sources import AgentUnavailable
from ._worker_drive import created_event
from .approvals import expire_approvals, pending_approvals, resolve_approval
from .errors import StoreError, UsageError
from .journal._base import RUNNABLE_STATUSES

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("tether.worker")


class Sweeper:
    """The worker's auto-approvals and sweeps, remembering the runs already looked at so
    each sweep reads only what is new."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._not_auto: set[str] = set()
        """Waiting runs not submitted for auto-approval (their first event is read once)."""
        self._looked_at: set[str] = set()
        """Runs already checked for an agent this worker lacks (each is logged once)."""

    async def auto_approve(self, run_id: str) -> None:
        """Approve a submitted run's calls (it was submitted with --yes); questions wait."""
        worker = self.worker
        for approval in await pending_approvals(worker.store, run_id=run_id):
            if approval.kind != "approval":
                log.info("run=%s asks a question; it waits for a human", run_id)
                continue
            await resolve_approval(
                worker.store, approval.request_id, decision="approved",
                actor=f"worker:{worker.owner}:auto-approve", clock=worker.clock,
                lease_ttl_s=worker.lease_ttl_s,
            )  # fmt: skip
            log.info("auto-approved %s", approval.request_id)

    async def sweep(self, active: Container[str]) -> None:
        """Apply approval expiries, and auto-approve submitted runs left waiting (say, by a
        worker that died between the pause and the approval)."""
        worker = self.worker
        try:
            for approval in await expire_approvals(
                worker.store, clock=worker.clock, lease_ttl_s=worker.lease_ttl_s
            ):
                log.info("approval %s expired: %s", approval.request_id, approval.action)
            waiting = await worker.store.list_runs(status="waiting_approval", limit=1000)
            for record in waiting:
                if record.run_id in self._not_auto:
                    continue
                meta = (await created_event(worker.store, record.run_id)).payload.get(
                    "metadata"
                ) or {}
                if meta.get("auto_approve"):
                    await self.auto_approve(record.run_id)
                else:
                    self._not_auto.add(record.run_id)
            await self._report_unservable(active)
        except (StoreError, OSError, UsageError) as exc:
            log.warning("sweeping approvals failed (%s); trying again later", exc)

    async def _report_unservable(self, active: Container[str]) -> None:
        """Log once per run each runnable run of this queue whose agent this worker lacks.

        Claims only offer runs of agents the worker has, so such a run is never refused:
        without this line it would wait in silence for a worker that has its agent.
        """
        worker = self.worker
        now = worker.clock.time()
        names = set(worker.agents.names())
        for status in RUNNABLE_STATUSES:
            for record in await worker.store.list_runs(status=status, limit=1000):
                run_id = record.run_id
                if run_id in self._looked_at or run_id in active:
                    continue
                if record.lease_owner is not None and (record.lease_expires_at or 0.0) > now:
                    continue
                self._looked_at.add(run_id)
                if record.agent in names:
                    # Its agent is here: claimed (and refused if the version differs). The
                    # run's row says so; reading its first event for every run would cost
                    # each worker a read per queued run, so more workers, more reads.
                    continue
                created = (await created_event(worker.store, run_id)).payload
                meta = created.get("metadata") or {}
                if meta.get("queue") != worker.queue:
                    continue  # another queue's
                try:
                    worker.agents.get(created["agent"], created.get("agent_version", ""))
                except AgentUnavailable as exc:
                    spec = meta.get("agent_spec")
                    log.warning(
                        "skipping run=%s: %s%s", run_id, exc,
                        f" (the run was submitted with {spec})" if spec else "",
                    )  # fmt: skip
