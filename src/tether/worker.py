"""Workers: processes that serve a store's work queue (DESIGN: Scale, invariant 4).

A worker claims runnable runs of a queue (queued, runnable again after an approval, or
running under an expired lease) with a fresh lease epoch, drives each one from its
journal, renews the lease while it does, and releases it when the run pauses or ends.

- **Fencing.** Every append is conditional on the lease epoch (the store refuses a stale
  one), and a worker that cannot renew its lease stops driving the run *before* the lease
  can expire: its watchdog cancels the run and refuses further appends locally.
- **Takeover.** A run whose holder died is claimed by another worker once the lease
  expires (workers sleep until the next expiry they can see), or at once when the holder
  is a process on this host that no longer exists. The new holder continues from the
  journal; the old holder's appends are refused by the epoch check.
- **Waking.** PostgreSQL announces runs becoming runnable (LISTEN/NOTIFY); on SQLite
  workers poll with backoff.
- **Outages.** A failed claim, renewal or recovery is retried with backoff and logged,
  never swallowed; a run interrupted by one is simply claimed again from its journal.
- **Agents** are found by name and version: built in (the demo), installed entry points
  (group `tether.agents`) or modules given to the worker. A run whose agent version the
  worker does not have is refused with a clear error and left for a worker that has it.

Driving one claimed run (`_worker_drive`), auto-approval and the periodic sweep
(`_worker_sweep`), `submit_run` (`_worker_submit`), the agent registry
(`_agent_sources`) and the lease guard (`_lease_guard`) live in modules of their own;
their public names are re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from dataclasses import dataclass

from ._agent_sources import (
    ENTRY_POINT_GROUP,
    AgentRegistry,
    AgentSource,
    AgentUnavailable,
)
from ._clock import Clock, SystemClock
from ._lease_guard import LeaseGuard
from ._process_usage import ProcessUsage
from ._worker_drive import HandBack, drive_claim, hand_back_when, report_error
from ._worker_submit import submit_run
from ._worker_sweep import Sweeper
from .budget import Ledger, ledger_for
from .chaos import FaultPlan
from .errors import CorruptionError, LeaseHeld, LeaseLost, StoreError, UsageError
from .journal import DEFAULT_SNAPSHOT_EVERY, Lease, Store
from .journal._base import DEFAULT_QUEUE, Claim
from .loop._runtime import default_worker_id, holder_is_dead
from .models import PriceTable

__all__ = [
    "ENTRY_POINT_GROUP",
    "AgentRegistry",
    "AgentSource",
    "AgentUnavailable",
    "LeaseGuard",
    "Worker",
    "WorkerStats",
    "submit_run",
]

log = logging.getLogger("tether.worker")


@dataclass
class WorkerStats:
    claimed: int = 0
    taken_over: int = 0
    """Claims of runs whose previous holder's lease had expired or whose holder had died."""
    finished: int = 0
    paused: int = 0
    handed_back: int = 0
    lost: int = 0
    """Runs this worker stopped driving because its lease or the store failed."""
    refused: int = 0
    errors: int = 0
    cpu_s: float = 0.0
    """CPU seconds of this process while `serve()` ran (claims, drives, sweeps, waits,
    the hand-back): the serving work, without the process's start-up and exit."""
    user_s: float = 0.0
    """The part of the serving CPU spent in user space (`getrusage`)."""
    sys_s: float = 0.0
    """The part spent in the kernel on this process's behalf: syscalls, socket work."""
    voluntary_switches: int = 0
    """Times the process gave up the CPU while serving (it waited: epoll, a lock)."""
    involuntary_switches: int = 0
    """Times the kernel preempted it while serving (other processes wanted the CPU)."""


class Worker:
    """Serves one queue of one store until `request_stop()` (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        *,
        agents: AgentRegistry | None = None,
        concurrency: int = 8,
        queue: str = DEFAULT_QUEUE,
        lease_ttl_s: float = 30.0,
        owner: str | None = None,
        clock: Clock | None = None,
        prices: PriceTable | None = None,
        poll_min_s: float = 0.05,
        poll_max_s: float = 2.0,
        local_takeover: bool = True,
        sweep_every_s: float = 10.0,
        grace_s: float = 30.0,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        model_retries: int = 3,
        model_retry_backoff_s: float = 1.0,
        faults: FaultPlan | None = None,
    ) -> None:
        if concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if lease_ttl_s <= 0:
            raise UsageError("the lease time must be positive")
        self.store = store
        self.agents = agents if agents is not None else AgentRegistry.discover()
        self.concurrency = concurrency
        self.queue = queue
        self.lease_ttl_s = lease_ttl_s
        self.owner = owner or default_worker_id()
        self.clock = clock or SystemClock()
        self.prices = prices or PriceTable.from_env()
        self.poll_min_s = poll_min_s
        self.poll_max_s = max(poll_min_s, poll_max_s)
        self.local_takeover = local_takeover
        self.sweep_every_s = sweep_every_s
        self.grace_s = grace_s
        self.snapshot_every = snapshot_every
        self.model_retries = model_retries
        self.model_retry_backoff_s = model_retry_backoff_s
        self.faults = faults
        self.ledger: Ledger | None = ledger_for(store, clock=self.clock)
        """The store's budget ledger (SQLite and PostgreSQL), shared by every worker."""
        self.stats = WorkerStats()
        self._active: dict[str, asyncio.Task[None]] = {}
        self._refused: set[str] = set()
        self._sweeper = Sweeper(self)
        """Auto-approvals and the periodic sweep, with the runs it has already looked at."""
        self._dead: set[str] = set()
        self._changed = asyncio.Event()
        self._stopping = False
        self._draining = False

    # -- control ------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming; hand the runs being driven back at their next step boundary.

        Asked again while handing back, cancel the runs at once (their leases are still
        released, and the journal keeps everything they completed)."""
        if self._draining:
            log.info("worker %s: cancelling %d run(s) now", self.owner, len(self._active))
            for task in self._active.values():
                task.cancel()
        elif not self._stopping:
            log.info("worker %s stopping", self.owner)
        self._stopping = True
        self._changed.set()

    @property
    def active(self) -> list[str]:
        return sorted(self._active)

    async def serve(self, *, until_idle: bool = False) -> WorkerStats:
        """Claim and drive runs until stopped (or, with `until_idle`, until the queue has
        nothing runnable or leased left); then release every lease and return."""
        log.info(
            "worker %s serving queue %r of %s (concurrency %d, lease %gs, agents %s)",
            self.owner, self.queue, _redacted(self.store.url), self.concurrency,
            self.lease_ttl_s, self.agents.describe(),
        )  # fmt: skip
        cpu = time.process_time()
        usage = ProcessUsage.now()
        try:
            await self._serve(until_idle)
        finally:
            await self._drain()
            self.stats.cpu_s += time.process_time() - cpu
            self._count_usage(ProcessUsage.now().since(usage))
        log.info("worker %s stopped: %s", self.owner, _stats_line(self.stats))
        return self.stats

    def _count_usage(self, used: ProcessUsage) -> None:
        stats = self.stats
        stats.user_s += used.user_s
        stats.sys_s += used.sys_s
        stats.voluntary_switches += used.voluntary_switches
        stats.involuntary_switches += used.involuntary_switches

    async def _serve(self, until_idle: bool) -> None:
        backoff = self.poll_min_s
        failures = 0
        last_logged = 0.0
        next_sweep = time.monotonic()
        while not self._stopping:
            self._changed.clear()
            if time.monotonic() >= next_sweep:
                await self._sweep()
                next_sweep = time.monotonic() + self.sweep_every_s
            free = self.concurrency - len(self._active)
            claimed = 0
            leases: list[Lease] = []
            try:
                if free > 0:
                    claims = await self.store.claim_runnable(
                        owner=self.owner,
                        ttl_s=self.lease_ttl_s,
                        limit=free,
                        queue=self.queue,
                        agents=self.agents.names(),
                        exclude=sorted(self._refused | set(self._active)),
                        takeover_from=sorted(self._dead),
                    )
                    for claim in claims:
                        self._start(claim)
                    claimed = len(claims)
                    if claimed == free:
                        backoff = self.poll_min_s
                        failures = 0
                        await asyncio.sleep(0)
                        continue  # there may be more: claim again once capacity frees
                leases = await self.store.queue_leases(queue=self.queue)
            except (StoreError, OSError) as exc:
                failures += 1
                delay = min(0.1 * 2 ** (failures - 1), 1.0) * (0.75 + random.random() / 2)
                # Every failure is retried; during a long outage it is logged every 30 s.
                if failures <= 3 or time.monotonic() - last_logged >= 30:
                    last_logged = time.monotonic()
                    log.warning(
                        "claiming from %s failed (%s); retry %d in %.1fs",
                        _redacted(self.store.url), exc, failures, delay,
                    )  # fmt: skip
                await self._wait(delay)
                continue
            if failures:
                log.warning(
                    "claiming from %s works again after %d failed attempts",
                    _redacted(self.store.url), failures,
                )  # fmt: skip
                failures = 0
            now = self.clock.time()
            timeout = backoff if free > 0 else self.poll_max_s
            if self._plan_takeovers(leases, now):
                continue
            later = [ls.expires_at for ls in leases if ls.expires_at > now]
            if later and free > 0:
                # Wake the moment the next lease another worker holds can be taken over.
                timeout = min(timeout, min(later) - now + 0.005)
            # A run that ended (or paused and was auto-approved) since the claim above may
            # have made work runnable: only call the queue drained after a quiet pass.
            quiet = not self._changed.is_set()
            if until_idle and quiet and not self._active and not leases and not claimed:
                stats = self.stats
                if stats.errors or stats.refused:
                    log.warning(
                        "worker %s: nothing more it can run in queue %r (%d errors, %d refused)",
                        self.owner, self.queue, stats.errors, stats.refused,
                    )  # fmt: skip
                else:
                    log.info("worker %s: the queue %r is drained", self.owner, self.queue)
                return
            await self._wait(timeout)
            backoff = self.poll_min_s if claimed else min(backoff * 2, self.poll_max_s)

    def _plan_takeovers(self, leases: list[Lease], now: float) -> bool:
        """Name holders to take over from at once; True if that is new (claim again now).

        A live lease held by a process on this host that no longer exists, or by this
        worker for a run it is not driving (a claim whose answer a dropped connection
        lost, or a release that failed), need not wait for its expiry.

        Each holder is looked at once per pass, not once per lease: every other worker
        holds many leases, and asking the OS about each one would make a pass cost more
        the more workers there are.
        """
        dead: set[str] = set()
        alive: set[str] = set()
        for lease in leases:
            owner = lease.owner
            if lease.expires_at <= now or lease.run_id in self._active:
                continue
            if owner in dead or owner in alive:
                continue
            if owner == self.owner or (self.local_takeover and holder_is_dead(owner)):
                dead.add(owner)
            else:
                alive.add(owner)
        new = bool(dead - self._dead)
        self._dead = dead
        return new

    async def _wait(self, delay: float) -> None:
        """Until the store announces work, a driven run ends, or `delay` passes."""
        if self._stopping:
            return
        changed = asyncio.ensure_future(self._changed.wait())
        work = asyncio.ensure_future(self._wait_for_work(delay))
        try:
            await asyncio.wait({changed, work}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (changed, work):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _wait_for_work(self, delay: float) -> None:
        try:
            await self.store.wait_for_work(queue=self.queue, timeout_s=max(0.0, delay))
        except Exception as exc:  # the contract says it never raises; be safe anyway
            log.warning("waiting for work failed (%s); polling", exc)
            await asyncio.sleep(max(0.0, delay))

    async def _drain(self) -> None:
        """Hand back every driven run at its next step boundary; cancel it after grace_s."""
        self._stopping = True
        if not self._active:
            return
        log.info(
            "handing back %d run(s) at their next step boundary (grace %gs)",
            len(self._active), self.grace_s,
        )  # fmt: skip
        self._draining = True
        _, pending = await asyncio.wait(list(self._active.values()), timeout=self.grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- one run --------------------------------------------------------------------------

    def _start(self, claim: Claim) -> None:
        lease = claim.lease
        self.stats.claimed += 1
        if claim.previous_owner is not None and claim.previous_owner != self.owner:
            self.stats.taken_over += 1
            expired = claim.previous_expires_at
            ago = f"{self.clock.time() - expired:.3f}" if expired is not None else "?"
            log.info(
                "took over run=%s epoch=%d from=%s expired_ago=%s t=%.3f",
                lease.run_id, lease.epoch, claim.previous_owner, ago, self.clock.time(),
            )  # fmt: skip
        else:
            log.info("claimed run=%s epoch=%d t=%.3f", lease.run_id, lease.epoch, self.clock.time())
        task = asyncio.create_task(self._drive(claim), name=f"drive {lease.run_id}")
        self._active[lease.run_id] = task

    async def _drive(self, claim: Claim) -> None:
        run_id = claim.lease.run_id
        try:
            await self._drive_claimed(claim)
        except asyncio.CancelledError:
            self.stats.handed_back += 1
            log.info("cancelled run=%s (its lease was released)", run_id)
            raise
        except HandBack:
            self.stats.handed_back += 1
            log.info("handed back run=%s at a step boundary", run_id)
        except AgentUnavailable as exc:
            self._refuse(run_id, f"refusing run={run_id}: {exc}")
        except CorruptionError as exc:
            self._refuse(run_id, f"refusing run={run_id}: {exc}")
        except (LeaseLost, LeaseHeld) as exc:
            self.stats.lost += 1
            log.warning("lost run=%s: %s", run_id, exc)
        except (StoreError, OSError) as exc:
            self.stats.lost += 1
            log.warning(
                "lost run=%s to a store failure (%s); it will be claimed again", run_id, exc
            )
        except UsageError as exc:
            self._refuse(run_id, f"refusing run={run_id}: {exc}")
        except Exception as exc:
            self.stats.errors += 1
            self._refused.add(run_id)
            log.exception("run=%s failed with an unexpected error (a bug); not retrying it", run_id)
            await report_error(self, run_id, exc)
        finally:
            self._active.pop(run_id, None)
            self._changed.set()

    def _refuse(self, run_id: str, message: str) -> None:
        self.stats.refused += 1
        self._refused.add(run_id)
        log.error("%s", message)

    async def _drive_claimed(self, claim: Claim) -> None:
        run_id = claim.lease.run_id
        hand_back = hand_back_when(lambda: self._draining)
        result, auto_approve = await drive_claim(self, claim, hand_back)
        if result.status == "waiting_approval":
            self.stats.paused += 1
            log.info("paused run=%s for approval %s", run_id, ", ".join(result.pending_approvals))
            if auto_approve:
                await self._sweeper.auto_approve(run_id)
            return
        self.stats.finished += 1
        log.info(
            "finished run=%s status=%s steps=%d reason=%s",
            run_id, result.status, result.steps, result.reason,
        )  # fmt: skip

    async def _sweep(self) -> None:
        """Approval expiries, leftover auto-approvals, runs no agent here can serve."""
        await self._sweeper.sweep(self._active)


def _redacted(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.partition(":")[0]
    return f"{scheme}://{user + '@' if user else ''}{host}"


def _stats_line(stats: WorkerStats) -> str:
    return " ".join(
        f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
        for k, v in dataclasses.asdict(stats).items()
    )
