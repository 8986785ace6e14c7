"""The PostgreSQL store's own connection for appends (`_postgres_hot`): appends skip the
pool when it is free, concurrent appends use the pool beside it, and a connection that
died or was left in a transaction is never lent again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from tether.journal import summary_of
from tether.journal._postgres import PostgresStore
from tether.state import fold

from ..conftest import POSTGRES_URL, drop_postgres_schema, postgres_problem, require
from .helpers import RUN_ID, created, import_events, note, seal_chain

pytestmark = pytest.mark.postgres


@pytest.fixture
def schema() -> Iterator[str]:
    problem = postgres_problem()
    require(problem is None, problem or "")
    name = f"test_{os.getpid()}_{secrets.token_hex(4)}"
    yield name
    drop_postgres_schema(name)


@contextlib.asynccontextmanager
async def opened(schema: str, **kw: Any) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(f"{POSTGRES_URL}?schema={schema}", **kw)
    try:
        yield store
    finally:
        await store.close()


async def _backend_pid(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT pg_backend_pid()")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_appends_use_the_stores_own_connection_not_the_pool(schema: str) -> None:
    events = seal_chain([created(), *(note(i) for i in range(1, 8))])
    async with opened(schema) as store:
        lease = await import_events(store, events[:2])
        pool = await store._ready()
        before = pool.get_stats()["requests_num"]
        for i in range(2, len(events)):
            await store.append(lease, events[i : i + 1], summary=summary_of(fold(events[: i + 1])))
        assert pool.get_stats()["requests_num"] == before
        assert [r.seq for r in await store.read_rows(RUN_ID)] == list(range(1, 9))


async def test_concurrent_appends_of_many_runs_all_land(schema: str) -> None:
    chains = [
        seal_chain([created(), *(note(i) for i in range(1, 13))], run_id=f"run_hot{k:04d}")
        for k in range(6)
    ]
    async with opened(schema) as store:
        leases = [await import_events(store, chain[:1]) for chain in chains]

        async def drive(lease: Any, chain: Any) -> None:
            for i in range(1, len(chain)):
                summary = summary_of(fold(chain[: i + 1]))
                await store.append(lease, chain[i : i + 1], summary=summary)

        await asyncio.gather(*(drive(lease, c) for lease, c in zip(leases, chains, strict=True)))
        for chain in chains:
            rows = await store.read_rows(chain[0].run_id)
            assert [bytes(r.raw) for r in rows] == [e.raw for e in chain]


async def test_an_append_after_its_connection_was_killed_lands_once_on_a_new_one(
    schema: str,
) -> None:
    events = seal_chain([created(), note(1), note(2), note(3)])
    async with opened(schema) as store:
        lease = await import_events(store, events[:3])
        pool = await store._ready()
        hot = await store._hot.take(pool)
        assert hot is not None
        pid = await _backend_pid(hot)
        store._hot.give_back(hot)
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await store.append(lease, events[3:], summary=summary_of(fold(events)))
        assert [r.seq for r in await store.read_rows(RUN_ID)] == [1, 2, 3, 4]
        again = await store._hot.take(await store._ready())
        assert again is not None and again is not hot
        assert await _backend_pid(again) != pid
        store._hot.give_back(again)


async def test_a_connection_left_in_a_transaction_is_not_lent_again(schema: str) -> None:
    async with opened(schema) as store:
        pool = await store._ready()
        conn = await store._hot.take(pool)
        assert conn is not None
        assert await store._hot.take(pool) is None  # lent out: callers use the pool
        await conn.execute("BEGIN")
        store._hot.give_back(conn)
        other = await store._hot.take(pool)
        assert other is not None and other is not conn
        store._hot.give_back(other)
        assert await store._hot.take(pool) is other
        store._hot.give_back(other)
