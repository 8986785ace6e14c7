"""The work queue in the Store contract, on every backend: enqueue, claim, leases, waking.

Each test is named for the claim it proves. Time is a FakeClock, so lease expiry is exact.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tether._clock import FakeClock
from tether.errors import LeaseHeld, LeaseLost, RunNotFound
from tether.events import EventDraft
from tether.journal import MemoryStore, RunJournal, SQLiteStore, Store, create_run

from .conftest import BACKENDS, postgres_store


@dataclass
class Q:
    store: Store
    clock: FakeClock
    backend: str


@pytest.fixture(params=BACKENDS)
async def q(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Q]:
    clock = FakeClock()
    if request.param == "postgres":
        async with postgres_store(clock) as pg:
            yield Q(store=pg, clock=clock, backend="postgres")
        return
    store: Store = (
        MemoryStore(clock=clock)
        if request.param == "memory"
        else SQLiteStore(tmp_path / "q.db", clock=clock)
    )
    yield Q(store=store, clock=clock, backend=request.param)
    await store.close()


async def _runs(q: Q, n: int, *, agent: str = "a", queue: str | None = "default") -> list[str]:
    ids = []
    for i in range(n):
        q.clock.advance(1)
        run_id = f"run_{agent}_{i:03d}"
        await create_run(q.store, agent=agent, task="t", run_id=run_id, clock=q.clock)
        if queue is not None:
            await q.store.enqueue(run_id, queue=queue)
        ids.append(run_id)
    return ids


async def _append(q: Q, run_id: str, *drafts: EventDraft) -> None:
    lease = await q.store.acquire_lease(run_id, owner="writer", ttl_s=60)
    journal, _ = await RunJournal.open(q.store, lease, clock=q.clock)
    await journal.append(*drafts)
    await q.store.release_lease(lease)


async def test_enqueue_an_unknown_run_raises_run_not_found(q: Q) -> None:
    with pytest.raises(RunNotFound):
        await q.store.enqueue("run_nope")


async def test_only_enqueued_runs_are_claimed_oldest_first_up_to_the_limit(q: Q) -> None:
    await _runs(q, 2, agent="local", queue=None)  # started by `tether run`: never claimed
    ids = await _runs(q, 5)
    claims = await q.store.claim_runnable(owner="w1", ttl_s=30, limit=3)
    assert [c.lease.run_id for c in claims] == ids[:3]
    assert all(c.lease.owner == "w1" and c.lease.epoch == 1 for c in claims)
    assert all(c.previous_owner is None for c in claims)
    rest = await q.store.claim_runnable(owner="w2", ttl_s=30, limit=10)
    assert [c.lease.run_id for c in rest] == ids[3:]
    assert await q.store.claim_runnable(owner="w3", ttl_s=30, limit=10) == []
    record = await q.store.get_run(ids[0])
    assert (record.lease_owner, record.lease_epoch) == ("w1", 1)
    assert record.lease_expires_at == pytest.approx(q.clock.now + 30)


async def test_a_claim_is_a_lease_the_store_fences_like_any_other(q: Q) -> None:
    [run_id] = await _runs(q, 1)
    [claim] = await q.store.claim_runnable(owner="w1", ttl_s=30)
    with pytest.raises(LeaseHeld):
        await q.store.acquire_lease(run_id, owner="w2", ttl_s=30)
    renewed = await q.store.renew_lease(claim.lease, ttl_s=30)
    assert renewed.epoch == claim.lease.epoch
    await q.store.release_lease(claim.lease)
    [again] = await q.store.claim_runnable(owner="w2", ttl_s=30)
    assert again.lease.epoch == claim.lease.epoch + 1 and again.previous_owner is None


async def test_an_expired_lease_is_claimed_with_a_new_epoch_and_the_old_holder_is_fenced(
    q: Q,
) -> None:
    await _runs(q, 1)
    [old] = await q.store.claim_runnable(owner="w1", ttl_s=30)
    q.clock.advance(29.9)
    assert await q.store.claim_runnable(owner="w2", ttl_s=30) == []
    q.clock.advance(0.2)
    [new] = await q.store.claim_runnable(owner="w2", ttl_s=30)
    assert new.lease.epoch == old.lease.epoch + 1
    assert new.previous_owner == "w1"
    assert new.previous_expires_at == pytest.approx(old.lease.expires_at)
    with pytest.raises(LeaseLost):
        await q.store.renew_lease(old.lease, ttl_s=30)


async def test_a_live_lease_of_a_holder_named_dead_is_claimed_at_once(q: Q) -> None:
    await _runs(q, 2)
    first, second = await q.store.claim_runnable(owner="w1", ttl_s=300, limit=2)
    assert await q.store.claim_runnable(owner="w2", ttl_s=30, takeover_from=["w9"]) == []
    taken = await q.store.claim_runnable(owner="w2", ttl_s=30, limit=5, takeover_from=["w1"])
    assert {c.lease.run_id for c in taken} == {first.lease.run_id, second.lease.run_id}
    assert {c.previous_owner for c in taken} == {"w1"}


async def test_claims_are_restricted_to_the_agents_named_and_skip_excluded_runs(q: Q) -> None:
    a = await _runs(q, 2, agent="alpha")
    b = await _runs(q, 2, agent="beta")
    assert await q.store.claim_runnable(owner="w", ttl_s=30, limit=9, agents=[]) == []
    got = await q.store.claim_runnable(
        owner="w", ttl_s=30, limit=9, agents=["beta"], exclude=[b[0]]
    )
    assert [c.lease.run_id for c in got] == [b[1]]
    got = await q.store.claim_runnable(owner="w", ttl_s=30, limit=9, exclude=[a[1]])
    assert [c.lease.run_id for c in got] == [a[0], b[0]]


async def test_each_queue_is_claimed_only_by_its_own_workers(q: Q) -> None:
    gpu = await _runs(q, 2, queue="gpu")
    cpu = await _runs(q, 1, agent="b", queue="default")
    assert [c.lease.run_id for c in await q.store.claim_runnable(owner="w", ttl_s=9, limit=9)] == (
        cpu
    )
    got = await q.store.claim_runnable(owner="w", ttl_s=9, limit=9, queue="gpu")
    assert [c.lease.run_id for c in got] == gpu


async def test_runs_that_wait_or_ended_are_not_runnable_until_an_approval_resolves(q: Q) -> None:
    waiting, ended, running = await _runs(q, 3)
    request = f"apr:{waiting}:2"
    await _append(
        q, waiting, EventDraft(type="approval.requested", payload={"request_id": request})
    )
    await _append(q, ended, EventDraft(type="run.completed", payload={"answer": "42"}))
    await _append(q, running, EventDraft(type="cycle.started", payload={"cycle": 1}))
    got = await q.store.claim_runnable(owner="w", ttl_s=30, limit=9)
    assert [c.lease.run_id for c in got] == [running]  # running, lease released: runnable
    await _append(q, waiting, EventDraft(type="approval.resolved", payload={"request_id": request}))
    assert (await q.store.get_run(waiting)).summary.status == "queued"
    got = await q.store.claim_runnable(owner="w", ttl_s=30, limit=9)
    assert [c.lease.run_id for c in got] == [waiting]


async def test_queue_leases_lists_held_leases_on_runnable_runs_soonest_expiry_first(q: Q) -> None:
    ids = await _runs(q, 3)
    await _runs(q, 1, agent="local", queue=None)
    await q.store.acquire_lease("run_local_000", owner="cli", ttl_s=5)
    assert await q.store.queue_leases() == []
    await q.store.acquire_lease(ids[2], owner="w1", ttl_s=10)
    await q.store.acquire_lease(ids[0], owner="w2", ttl_s=20)
    leases = await q.store.queue_leases()
    assert [(ls.run_id, ls.owner) for ls in leases] == [(ids[2], "w1"), (ids[0], "w2")]
    assert leases[0].expires_at == pytest.approx(q.clock.now + 10)
    assert await q.store.queue_leases(queue="other") == []


async def test_concurrent_claimers_never_receive_the_same_run(q: Q, tmp_path: Path) -> None:
    ids = await _runs(q, 30)
    stores: list[Store] = [q.store]
    if isinstance(q.store, SQLiteStore):
        stores += [SQLiteStore(q.store.path, clock=q.clock) for _ in range(3)]
    elif not isinstance(q.store, MemoryStore):
        from tether.journal._postgres import PostgresStore

        assert isinstance(q.store, PostgresStore)
        stores += [PostgresStore(q.store.url, clock=q.clock) for _ in range(3)]

    async def claimer(i: int) -> list[str]:
        store = stores[i % len(stores)]
        got: list[str] = []
        while True:
            claims = await store.claim_runnable(owner=f"w{i}", ttl_s=60, limit=2)
            if not claims:
                return got
            got += [c.lease.run_id for c in claims]
            await asyncio.sleep(0)

    try:
        results = await asyncio.gather(*(claimer(i) for i in range(8)))
    finally:
        for extra in stores[1:]:
            await extra.close()
    claimed = [run_id for got in results for run_id in got]
    assert sorted(claimed) == ids  # every run exactly once
    for i, got in enumerate(results):
        for run_id in got:
            assert (await q.store.get_run(run_id)).lease_owner == f"w{i}"


async def test_wait_for_work_returns_after_its_timeout_without_work(q: Q) -> None:
    await q.store.wait_for_work(timeout_s=0.05)  # PostgreSQL: start listening
    start = time.monotonic()
    await q.store.wait_for_work(timeout_s=0.2)
    assert 0.15 < time.monotonic() - start < 2.0


async def test_enqueueing_or_releasing_a_runnable_run_wakes_a_waiting_worker(q: Q) -> None:
    """PostgreSQL by NOTIFY, memory in process; SQLite sleeps out its timeout (polling)."""
    [run_id] = await _runs(q, 1, queue=None)
    if q.backend == "sqlite":
        # Other processes cannot signal through the file: SQLite workers poll instead.
        waiting = asyncio.create_task(q.store.wait_for_work(timeout_s=0.5))
        start = time.monotonic()
        await q.store.enqueue(run_id)
        await waiting
        assert time.monotonic() - start > 0.4
        return
    await q.store.wait_for_work(timeout_s=0.05)  # PostgreSQL: start listening

    async def woken_by(action: object) -> float:
        waiter = asyncio.create_task(q.store.wait_for_work(timeout_s=10))
        await asyncio.sleep(0.2)
        start = time.monotonic()
        await action  # type: ignore[misc]
        await asyncio.wait_for(waiter, timeout=5)
        return time.monotonic() - start

    assert await woken_by(q.store.enqueue(run_id)) < 2.0
    [claim] = await q.store.claim_runnable(owner="w", ttl_s=30)
    assert await woken_by(q.store.release_lease(claim.lease)) < 2.0
