"""A session of the store that took a row lock and then stopped answering (its process
frozen by SIGSTOP inside `acquire_lease`): every other session waits for it at most the
store's lock timeout per statement, and the server ends the frozen one, so a worker that
holds the run's lease renews it in time and keeps it."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from tests.conftest import postgres_store
from tether.errors import StoreError
from tether.journal import _postgres, _postgres_core
from tether.journal._base import summary_of
from tether.state import fold

from .helpers import RUN_ID, created, import_events, note, seal_chain

pytestmark = pytest.mark.postgres

LOCK_MS = 300
IDLE_MS = 1_500


async def test_a_frozen_row_lock_holder_delays_a_lease_holder_by_the_lock_timeout_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_postgres_core, "LOCK_TIMEOUT_MS", LOCK_MS)
    monkeypatch.setattr(_postgres_core, "IDLE_IN_TRANSACTION_TIMEOUT_MS", IDLE_MS)
    loop = asyncio.get_running_loop()
    async with postgres_store() as store:
        assert isinstance(store, _postgres.PostgresStore)
        events = seal_chain([created(), note(1)])
        lease = await import_events(store, events[:1], ttl_s=30)
        pool = store._pool
        # Another process's session, configured as every session of the store is, locks
        # the run's row (the first statement of `acquire_lease`) and then freezes.
        frozen = await psycopg.AsyncConnection.connect(store._conninfo, autocommit=True)
        try:
            await _postgres_core._bounded_waits(frozen)
            await frozen.execute("BEGIN")
            await frozen.execute("SELECT 1 FROM runs WHERE run_id=%s FOR UPDATE", (RUN_ID,))
            started = loop.time()
            with pytest.raises(StoreError, match="lock"):
                await asyncio.wait_for(store.renew_lease(lease, ttl_s=30), 10)
            assert loop.time() - started < LOCK_MS / 1000 + 1.0
            assert store._pool is pool  # a lock timeout is not a lost connection
            # The server ends the frozen session; the renewal then goes through, well
            # within the lease, and so does the next append.
            while True:
                try:
                    lease = await asyncio.wait_for(store.renew_lease(lease, ttl_s=30), 10)
                    break
                except StoreError:
                    assert loop.time() - started < IDLE_MS / 1000 + 5.0
                    await asyncio.sleep(0.1)
            await store.append(lease, events[1:], summary=summary_of(fold(events)))
            assert (await store.get_run(RUN_ID)).head_seq == 2
            with pytest.raises(psycopg.Error):
                await frozen.execute("SELECT 1")  # its session is gone
        finally:
            await frozen.close()
