"""Runtime: the Python entry point to start, resume, inspect and list runs."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from .._clock import Clock, SystemClock
from ..agent import Agent, Limits
from ..budget import BudgetLimits, Ledger, check_scope, ledger_for
from ..errors import UsageError
from ..journal import DEFAULT_SNAPSHOT_EVERY, RunRecord, Store, create_run, load_run, open_store
from ..journal._leases import holder_is_dead as holder_is_dead
from ..models import Model, PriceTable
from ..state import RunState, RunStatus
from ._runner import Observer, RunResult, drive_run

__all__ = ["Runtime"]

T = TypeVar("T")


def default_worker_id() -> str:
    """`host:pid:nonce`, so a worker on the same host can tell when the holder has died."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


class Runtime:
    """Runs agents durably in one store. Async first; `*_sync` wrappers for scripts."""

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        clock: Clock | None = None,
        prices: PriceTable | None = None,
        worker_id: str | None = None,
        lease_ttl_s: float = 60.0,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        model_retries: int = 3,
        model_retry_backoff_s: float = 1.0,
        budgets: Mapping[str, BudgetLimits] | None = None,
        ledger: bool = True,
    ) -> None:
        """`budgets` are in-process limits per scope (`global`, `agent:NAME`, `tenant:NAME`),
        applied on top of those stored with `set_budget`; `ledger=False` turns budget
        accounting off (spend is then only in the journals)."""
        self.clock = clock or SystemClock()
        self.store = (
            store
            if store is not None and not isinstance(store, str)
            else open_store(store, clock=self.clock)
        )
        self.prices = prices or PriceTable.from_env()
        self.worker_id = worker_id or default_worker_id()
        self.lease_ttl_s = lease_ttl_s
        self.snapshot_every = snapshot_every
        self.model_retries = model_retries
        self.model_retry_backoff_s = model_retry_backoff_s
        self.budgets = {check_scope(k): v for k, v in (budgets or {}).items()}
        self.ledger: Ledger | None = ledger_for(self.store, clock=self.clock) if ledger else None

    async def create(
        self,
        agent: Agent,
        task: str,
        *,
        limits: Limits | None = None,
        model: Model | None = None,
        tenant: str | None = None,
        run_id: str | None = None,
        metadata: dict[str, object] | None = None,
    ) -> str:
        """Journal a new run (status `queued`) without driving it."""
        if not task.strip():
            raise UsageError("the task is empty: say what the agent should do")
        chosen = self.model_of(agent, model)
        state = await create_run(
            self.store,
            agent=agent.name,
            agent_version=agent.version,
            task=task,
            model=chosen.name,
            limits=(limits or agent.limits).to_json(),
            tenant=tenant,
            run_id=run_id,
            metadata=metadata,
            clock=self.clock,
        )
        return state.run_id

    async def start(
        self,
        agent: Agent,
        task: str,
        *,
        limits: Limits | None = None,
        model: Model | None = None,
        tenant: str | None = None,
        observer: Observer | None = None,
        metadata: dict[str, object] | None = None,
    ) -> RunResult:
        """Create a run and drive it until it ends or pauses."""
        run_id = await self.create(
            agent, task, limits=limits, model=model, tenant=tenant, metadata=metadata
        )
        return await self.resume(agent, run_id, model=model, observer=observer)

    async def resume(
        self,
        agent: Agent,
        run_id: str,
        *,
        model: Model | None = None,
        observer: Observer | None = None,
    ) -> RunResult:
        """Drive an existing run on from its journal, in this process."""
        return await drive_run(
            store=self.store,
            agent=agent,
            model=self.model_of(agent, model),
            run_id=run_id,
            owner=self.worker_id,
            clock=self.clock,
            prices=self.prices,
            observer=observer,
            lease_ttl_s=self.lease_ttl_s,
            snapshot_every=self.snapshot_every,
            model_retries=self.model_retries,
            model_retry_backoff_s=self.model_retry_backoff_s,
            ledger=self.ledger,
            budgets=self.budgets,
        )

    async def set_budget(
        self, scope: str, limits: BudgetLimits | None, *, actor: str = "python"
    ) -> None:
        """Store limits for a scope, obeyed by every process sharing this store; `actor`
        is kept as who changed them (`tether budget changes`)."""
        if self.ledger is None:
            raise UsageError("this runtime was created with ledger=False")
        await self.ledger.set_limits(check_scope(scope), limits, actor=actor)

    async def get(self, run_id: str) -> RunState:
        """The run's verified state."""
        return (await load_run(self.store, run_id)).state

    async def list(self, *, status: RunStatus | None = None, limit: int = 100) -> list[RunRecord]:
        return await self.store.list_runs(status=status, limit=limit)

    async def close(self) -> None:
        await self.store.close()

    def model_of(self, agent: Agent, model: Model | None = None) -> Model:
        chosen = model or agent.model
        if chosen is None:
            raise UsageError(f"agent {agent.name} has no model: pass one, or set Agent(model=...)")
        return chosen

    # -- sync conveniences ------------------------------------------------------------

    def start_sync(self, agent: Agent, task: str, **options: Any) -> RunResult:
        return _run(self.start(agent, task, **options))

    def resume_sync(self, agent: Agent, run_id: str, **options: Any) -> RunResult:
        return _run(self.resume(agent, run_id, **options))


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise UsageError("the *_sync methods cannot be called from async code: await the async ones")
