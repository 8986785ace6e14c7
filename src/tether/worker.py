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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import logging
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._clock import Clock, SystemClock
from .agent import Agent, Limits
from .approvals import expire_approvals, pending_approvals, resolve_approval
from .budget import Ledger, ledger_for
from .chaos import FaultPlan
from .errors import CorruptionError, LeaseHeld, LeaseLost, StoreError, UsageError
from .events import Event
from .journal import (
    DEFAULT_SNAPSHOT_EVERY,
    Lease,
    RunSummary,
    Store,
    create_run,
    read_events,
)
from .journal._base import DEFAULT_QUEUE, Claim
from .loop import Progress, drive_run
from .loop._runtime import default_worker_id, holder_is_dead
from .models import Model, PriceTable
from .models._resolve import model_from_spec

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

ENTRY_POINT_GROUP = "tether.agents"
"""Installed packages offer agents to workers under this entry point group."""

BUILTIN_AGENTS = ("tether.demo:demo_agent",)


class AgentUnavailable(UsageError):
    """This worker does not have the agent (name and version) a run was started with."""


# -- agents ---------------------------------------------------------------------------------


def _import_target(spec: str) -> Any:
    """The object a `module:attr` or `path/to/file.py:attr` spec names."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise UsageError(f"bad agent {spec!r}: write module:attr or path/to/file.py:attr")
    if target.endswith(".py"):
        path = Path(target).resolve()
        if not path.is_file():
            raise UsageError(f"agent file not found: {target}")
        name = f"_tether_agent_{abs(hash(str(path)))}"
        module = sys.modules.get(name)
        if module is None:
            loader = importlib.util.spec_from_file_location(name, path)
            if loader is None or loader.loader is None:
                raise UsageError(f"cannot import {target}")
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module
            try:
                loader.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[name]
                raise UsageError(
                    f"importing {target} failed: {type(exc).__name__}: {exc}"
                ) from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UsageError(f"cannot import module {target!r}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UsageError(f"{target} has no attribute {attr!r}") from None


@dataclass(frozen=True, kw_only=True)
class AgentSource:
    """An agent a worker can drive: an Agent, or a factory called with a run's agent_args."""

    name: str
    version: str
    spec: str
    """Where it came from (`module:attr`, `file.py:attr` or `entry point NAME`)."""
    target: Agent | Callable[..., Agent]

    @classmethod
    def load(cls, spec: str, *, origin: str | None = None) -> AgentSource:
        """Import `spec` and learn the agent's name and version (a factory is called once
        without arguments to find out)."""
        return cls.of(_import_target(spec), origin or spec)

    @classmethod
    def of(cls, target: Any, spec: str) -> AgentSource:
        if isinstance(target, Agent):
            return cls(name=target.name, version=target.version, spec=spec, target=target)
        if not callable(target):
            raise UsageError(f"{spec} is not an Agent or a function returning one")
        try:
            probe = target()
        except TypeError as exc:
            raise UsageError(
                f"{spec} needs arguments ({exc}); give them defaults so a worker can learn "
                "the agent's name and version"
            ) from None
        if not isinstance(probe, Agent):
            raise UsageError(f"{spec} returned {type(probe).__name__}, not an Agent")
        return cls(name=probe.name, version=probe.version, spec=spec, target=target)

    def build(self, args: Mapping[str, Any]) -> Agent:
        """The agent for one run (a factory gets the run's recorded agent_args)."""
        if isinstance(self.target, Agent):
            return self.target
        try:
            agent = self.target(**args)
        except TypeError as exc:
            raise UsageError(f"{self.spec} cannot be built with {dict(args)!r}: {exc}") from None
        if not isinstance(agent, Agent) or (agent.name, agent.version) != (self.name, self.version):
            raise UsageError(f"{self.spec} built another agent than {self.name}@{self.version}")
        return agent


class AgentRegistry:
    """The agents a worker has, by name and version; later additions win."""

    def __init__(self, sources: Iterable[AgentSource] = ()) -> None:
        self._sources: dict[tuple[str, str], AgentSource] = {}
        for source in sources:
            self.add(source)

    def add(self, source: AgentSource) -> None:
        self._sources[(source.name, source.version)] = source

    @classmethod
    def discover(
        cls, specs: Sequence[str] = (), *, builtins: bool = True, entry_points: bool = True
    ) -> AgentRegistry:
        """Built-in agents, then installed entry points, then `specs` (which win).

        A broken entry point is logged and skipped; a bad spec given explicitly is an error.
        """
        registry = cls()
        if builtins:
            for spec in BUILTIN_AGENTS:
                registry.add(AgentSource.load(spec))
        if entry_points:
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                try:
                    registry.add(AgentSource.of(ep.load(), f"entry point {ep.name} ({ep.value})"))
                except Exception as exc:
                    log.warning("skipping agent entry point %s (%s): %s", ep.name, ep.value, exc)
        for spec in specs:
            registry.add(AgentSource.load(spec))
        return registry

    def names(self) -> list[str]:
        return sorted({name for name, _ in self._sources})

    def versions(self, name: str) -> list[str]:
        return sorted(version for n, version in self._sources if n == name)

    def describe(self) -> str:
        return ", ".join(f"{n}@{v}" for n, v in sorted(self._sources)) or "none"

    def get(self, name: str, version: str) -> AgentSource:
        """The source for exactly this name and version; AgentUnavailable otherwise."""
        source = self._sources.get((name, version))
        if source is not None:
            return source
        have = self.versions(name)
        if not have:
            raise AgentUnavailable(
                f"this worker has no agent {name!r} (it has {self.describe()}); start it with "
                "--agent module:attr or install the package that provides it"
            )
        raise AgentUnavailable(
            f"agent {name!r} version {version!r} is needed, but this worker has version "
            f"{', '.join(repr(v) for v in have)}; start a worker with that version"
        )

    def find(self, name: str) -> AgentSource | None:
        """The newest version of `name` (for submitting), or None."""
        have = self.versions(name)
        return self._sources[(name, have[-1])] if have else None


# -- the lease of one driven run ------------------------------------------------------------


class LeaseGuard:
    """The store as one driven run sees it: under the lease its worker claimed.

    A watchdog (`watch`) renews the lease every third of its life; when renewal keeps
    failing it gives up `margin_s` before the lease could expire, and from then on every
    append, snapshot and cut is refused here, before it reaches the store. The loop's own
    acquire and renew calls are answered from the claimed lease, so it is never re-taken.
    """

    def __init__(
        self,
        inner: Store,
        lease: Lease,
        *,
        ttl_s: float,
        clock: Clock,
        retry_s: float | None = None,
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.lease = lease
        self.ttl_s = ttl_s
        self.margin_s = ttl_s / 4
        self.retry_s = retry_s if retry_s is not None else max(0.05, ttl_s / 15)
        self.clock = clock
        self.fenced: str | None = None
        self.released = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _mine(self, lease: Lease) -> bool:
        return lease.run_id == self.lease.run_id and lease.owner == self.lease.owner

    def _check(self) -> None:
        if self.fenced is None and self.clock.time() > self.lease.expires_at - self.margin_s / 2:
            self.fenced = "the lease was not renewed in time"
        if self.fenced is not None:
            raise LeaseLost(f"run {self.lease.run_id}: {self.fenced}; this worker stopped writing")

    async def acquire_lease(
        self, run_id: str, *, owner: str, ttl_s: float, takeover_from: str | None = None
    ) -> Lease:
        if run_id == self.lease.run_id and owner == self.lease.owner:
            self._check()
            return self.lease
        return await self.inner.acquire_lease(
            run_id, owner=owner, ttl_s=ttl_s, takeover_from=takeover_from
        )

    async def renew_lease(self, lease: Lease, *, ttl_s: float) -> Lease:
        if self._mine(lease):
            self._check()
            return self.lease
        return await self.inner.renew_lease(lease, ttl_s=ttl_s)

    async def release_lease(self, lease: Lease) -> None:
        if self._mine(lease):
            self.released = True
            lease = self.lease
        await self.inner.release_lease(lease)

    async def append(
        self,
        lease: Lease,
        events: Sequence[Event],
        *,
        summary: RunSummary,
        also: Callable[[], None] | None = None,
    ) -> None:
        if self._mine(lease):
            self._check()
        await self.inner.append(lease, events, summary=summary, also=also)

    async def put_snapshot(
        self, lease: Lease, run_id: str, seq: int, raw: bytes, *, keep: int
    ) -> None:
        if self._mine(lease):
            self._check()
        await self.inner.put_snapshot(lease, run_id, seq, raw, keep=keep)

    async def truncate(
        self,
        lease: Lease,
        run_id: str,
        *,
        keep_through: int,
        head_hash: str,
        then: Sequence[Event] = (),
        summary: RunSummary | None = None,
    ) -> None:
        if self._mine(lease):
            self._check()
        await self.inner.truncate(
            lease, run_id, keep_through=keep_through, head_hash=head_hash, then=then,
            summary=summary,
        )  # fmt: skip

    async def watch(self) -> str | None:
        """Renew until released (None) or until it must give up (returns why)."""
        run_id = self.lease.run_id
        while not self.released:
            await asyncio.sleep(self.ttl_s / 3)
            deadline = self.lease.expires_at - self.margin_s
            failure: BaseException | None = None
            while not self.released:
                remaining = deadline - self.clock.time()
                if remaining <= 0:
                    self.fenced = (
                        f"could not renew the lease for {self.ttl_s - self.margin_s:.1f}s "
                        f"({failure}); stopped before it could expire"
                    )
                    return self.fenced
                try:
                    self.lease = await asyncio.wait_for(
                        self.inner.renew_lease(self.lease, ttl_s=self.ttl_s), timeout=remaining
                    )
                    if failure is not None:
                        log.info("renewed lease run=%s after %s", run_id, failure)
                    break
                except LeaseLost as exc:
                    self.fenced = f"the lease was taken over ({exc})"
                    return self.fenced
                except (StoreError, OSError, TimeoutError) as exc:
                    failure = exc if str(exc) else TimeoutError("renewal timed out")
                    log.warning(
                        "renewing lease run=%s failed (%s); retrying for %.1fs more",
                        run_id, failure, max(0.0, deadline - self.clock.time()),
                    )  # fmt: skip
                    await asyncio.sleep(min(self.retry_s, max(0.0, deadline - self.clock.time())))
        return None


# -- the worker -----------------------------------------------------------------------------


class _HandBack(BaseException):
    """Raised from the progress observer at a step boundary while the worker stops.

    A BaseException, so no `except Exception` on the way can swallow it.
    """


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
        self._not_auto: set[str] = set()
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
        try:
            await self._serve(until_idle)
        finally:
            await self._drain()
        log.info("worker %s stopped: %s", self.owner, _stats_line(self.stats))
        return self.stats

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
                log.info("worker %s: the queue %r is drained", self.owner, self.queue)
                return
            await self._wait(timeout)
            backoff = self.poll_min_s if claimed else min(backoff * 2, self.poll_max_s)

    def _plan_takeovers(self, leases: list[Lease], now: float) -> bool:
        """Name holders to take over from at once; True if that is new (claim again now).

        A live lease held by a process on this host that no longer exists, or by this
        worker for a run it is not driving (a claim whose answer a dropped connection
        lost, or a release that failed), need not wait for its expiry.
        """
        dead: set[str] = set()
        for lease in leases:
            if lease.expires_at <= now or lease.run_id in self._active:
                continue
            if lease.owner == self.owner or (self.local_takeover and holder_is_dead(lease.owner)):
                dead.add(lease.owner)
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
        except _HandBack:
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
        except Exception:
            self.stats.errors += 1
            self._refused.add(run_id)
            log.exception("run=%s failed with an unexpected error (a bug); not retrying it", run_id)
        finally:
            self._active.pop(run_id, None)
            self._changed.set()

    def _refuse(self, run_id: str, message: str) -> None:
        self.stats.refused += 1
        self._refused.add(run_id)
        log.error("%s", message)

    async def _created(self, run_id: str) -> Event:
        return (await read_events(self.store, run_id, until_seq=1))[0]

    async def _drive_claimed(self, claim: Claim) -> None:
        lease = claim.lease
        run_id = lease.run_id
        try:
            created = await self._created(run_id)
            payload = created.payload
            meta: dict[str, Any] = payload.get("metadata") or {}
            source = self.agents.get(payload["agent"], payload.get("agent_version", ""))
            agent = source.build(meta.get("agent_args") or {})
            model_spec = meta.get("model_spec")
            model: Model | None = model_from_spec(model_spec) if model_spec else None
            model = model or agent.model
            if model is None:
                raise UsageError(f"run {run_id}: agent {agent.name} has no model")
        except BaseException:
            with contextlib.suppress(StoreError, OSError):
                await self.store.release_lease(lease)
            raise
        guard = LeaseGuard(self.store, lease, ttl_s=self.lease_ttl_s, clock=self.clock)
        store: Store = guard
        if self.faults is not None:
            store = self.faults.wrap_store(guard)
            model = self.faults.wrap_model(model)
            agent = dataclasses.replace(agent, tools=self.faults.wrap_tools(agent.tools))
        driving = asyncio.create_task(
            drive_run(
                store=store,
                agent=agent,
                model=model,
                run_id=run_id,
                owner=self.owner,
                clock=self.clock,
                prices=self.prices,
                observer=self._observer(),
                lease_ttl_s=self.lease_ttl_s,
                snapshot_every=self.snapshot_every,
                model_retries=self.model_retries,
                model_retry_backoff_s=self.model_retry_backoff_s,
                ledger=self.ledger,
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
                    await self.store.release_lease(guard.lease)
                raise LeaseLost(f"stopped driving: {watching.result()}")
            result = await driving
        finally:
            for task in (driving, watching):
                task.cancel()
            await asyncio.gather(driving, watching, return_exceptions=True)
        if result.status == "waiting_approval":
            self.stats.paused += 1
            log.info("paused run=%s for approval %s", run_id, ", ".join(result.pending_approvals))
            if meta.get("auto_approve"):
                await self._auto_approve(run_id)
            return
        self.stats.finished += 1
        log.info(
            "finished run=%s status=%s steps=%d reason=%s",
            run_id, result.status, result.steps, result.reason,
        )  # fmt: skip

    def _observer(self) -> Callable[[Progress], None]:
        def observe(progress: Progress) -> None:
            state = progress.state
            if (
                self._draining
                and progress.event != "tool.started"
                and state.status == "running"
                and not state.pending_calls
                and state.open_model_request is None
            ):
                raise _HandBack

        return observe

    async def _auto_approve(self, run_id: str) -> None:
        """Approve a submitted run's calls (it was submitted with --yes); questions wait."""
        for approval in await pending_approvals(self.store, run_id=run_id):
            if approval.kind != "approval":
                log.info("run=%s asks a question; it waits for a human", run_id)
                continue
            await resolve_approval(
                self.store, approval.request_id, decision="approved",
                actor=f"worker:{self.owner}:auto-approve", clock=self.clock,
            )  # fmt: skip
            log.info("auto-approved %s", approval.request_id)

    async def _sweep(self) -> None:
        """Apply approval expiries, and auto-approve submitted runs left waiting (say, by a
        worker that died between the pause and the approval)."""
        try:
            for approval in await expire_approvals(self.store, clock=self.clock):
                log.info("approval %s expired: %s", approval.request_id, approval.action)
            waiting = await self.store.list_runs(status="waiting_approval", limit=1000)
            for record in waiting:
                if record.run_id in self._not_auto:
                    continue
                meta = (await self._created(record.run_id)).payload.get("metadata") or {}
                if meta.get("auto_approve"):
                    await self._auto_approve(record.run_id)
                else:
                    self._not_auto.add(record.run_id)
        except (StoreError, OSError, UsageError) as exc:
            log.warning("sweeping approvals failed (%s); trying again later", exc)


# -- submitting -----------------------------------------------------------------------------


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


def _redacted(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, _, rest = url.partition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.partition(":")[0]
    return f"{scheme}://{user + '@' if user else ''}{host}"


def _stats_line(stats: WorkerStats) -> str:
    return " ".join(f"{k}={v}" for k, v in dataclasses.asdict(stats).items())
