"""The PostgreSQL ledger's lock: per schema, bounded waits, off the event loop, and
freed by the server when its holder freezes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import postgres_store
from tether.budget import Ledger
from tether.budget._tables_pg import PostgresLedgerTables
from tether.errors import StoreError

pytestmark = pytest.mark.postgres


def frozen_holder(store: Any, *, idle_timeout_s: float = 60.0) -> tuple[PostgresLedgerTables, Any]:
    """A ledger session that took the lock and then stopped answering (as under SIGSTOP)."""
    holder = PostgresLedgerTables(
        store._conninfo, schema=store.schema, idle_timeout_s=idle_timeout_s
    )
    cm = holder.transaction()
    cm.__enter__()
    holder._pipeline.sync()  # the lock request reaches the server now
    return holder, cm


async def reserve(ledger: Ledger) -> Any:
    return await ledger.reserve(run_id="r", agent="a", tenant=None, estimate_usd=0.01)


async def test_a_frozen_holder_delays_a_reservation_by_the_lock_timeout_only() -> None:
    async with postgres_store() as store:
        waiter = Ledger(PostgresLedgerTables(store._conninfo, schema=store.schema,
                                             lock_timeout_s=0.5))  # fmt: skip
        holder, thaw = frozen_holder(store)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        try:
            with pytest.raises(StoreError, match="lock"):
                await reserve(waiter)
            # The event loop kept running while the reservation waited (lease renewals do).
            assert ticks > 5
            thaw.__exit__(None, None, None)  # the holder wakes up and commits
            assert (await reserve(waiter)).estimate_usd == 0.01
        finally:
            ticker.cancel()
            holder.close()
            waiter.tables.close()


async def test_the_lock_is_per_schema() -> None:
    async with postgres_store() as one, postgres_store() as other:
        holder, _ = frozen_holder(one)
        elsewhere = Ledger(PostgresLedgerTables(other._conninfo, schema=other.schema,
                                                lock_timeout_s=0.5))  # fmt: skip
        try:
            held = await reserve(elsewhere)
            assert held.estimate_usd == 0.01
        finally:
            holder.close()
            elsewhere.tables.close()


async def test_the_server_ends_a_frozen_holder_s_session_and_frees_the_lock() -> None:
    async with postgres_store() as store:
        waiter = Ledger(PostgresLedgerTables(store._conninfo, schema=store.schema,
                                             lock_timeout_s=5.0))  # fmt: skip
        holder, _ = frozen_holder(store, idle_timeout_s=0.5)
        try:
            held = await reserve(waiter)  # waits < 5 s: the server ends the idle holder
            assert held.estimate_usd == 0.01
            # The holder learns its session was ended, and its next use reconnects.
            holder._depth = 0
            holder._pipeline = None
            with pytest.raises(StoreError):
                await reserve(Ledger(holder))
            assert (await reserve(Ledger(holder))).estimate_usd == 0.01
        finally:
            holder.close()
            waiter.tables.close()


async def test_a_frozen_opener_delays_another_store_s_start_by_the_lock_timeout_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import psycopg

    from tests.conftest import POSTGRES_URL
    from tether.journal import _postgres, _postgres_core

    monkeypatch.setattr(_postgres_core, "MIGRATION_LOCK_TIMEOUT_MS", 300)
    async with postgres_store() as store:
        schema = store.schema
        with psycopg.connect(POSTGRES_URL) as frozen:  # took the migration lock, then froze
            frozen.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tether:{schema}",))
            second = _postgres.PostgresStore(f"{POSTGRES_URL}?schema={schema}")
            try:
                with pytest.raises(StoreError, match="lock"):
                    await second.get_run("run_none")
            finally:
                frozen.rollback()
            # Once the holder lets go, the same store opens (a failed open is retried).
            with pytest.raises(Exception, match="run_none"):
                await second.get_run("run_none")
            await second.close()


async def test_a_reservation_riding_in_an_append_waits_by_the_lock_timeout_only() -> None:
    from tether._clock import FakeClock
    from tether.budget import Reservation, ledger_for
    from tether.journal._base import summary_of
    from tether.state import fold

    from ..journal.helpers import RUN_ID, created, import_events, note, seal_chain

    clock = FakeClock(start=1_800_000_000.0)
    async with postgres_store(clock) as store:
        store._ledger_tables = PostgresLedgerTables(  # type: ignore[attr-defined]
            store._conninfo,  # type: ignore[attr-defined]
            schema=store.schema,  # type: ignore[attr-defined]
            lock_timeout_s=0.5,
        )
        ledger = ledger_for(store, clock=clock)
        events = seal_chain([created(), note(1), note(2)])
        lease = await import_events(store, events[:1])
        held: list[Any] = []

        def hold() -> None:
            held.append(ledger.reserve_now(run_id=RUN_ID, agent="a", tenant=None, estimate_usd=1))

        # The first reservation sweeps expired holds (the exact way); the next one rides in
        # its append's statement and takes the lock there.
        await store.append(lease, events[1:2], summary=summary_of(fold(events[:2])), also=hold)
        holder, thaw = frozen_holder(store)
        try:
            started = asyncio.get_running_loop().time()
            with pytest.raises(StoreError, match="lock"):
                await store.append(lease, events[2:], summary=summary_of(fold(events)), also=hold)
            assert asyncio.get_running_loop().time() - started < 4.0
            assert (await store.get_run(RUN_ID)).head_seq == 2  # nothing written
            thaw.__exit__(None, None, None)
            await store.append(lease, events[2:], summary=summary_of(fold(events)), also=hold)
            assert all(isinstance(h, Reservation) for h in held)
        finally:
            holder.close()
