"""What only the PostgreSQL store has: its URL, migrations shared by many processes,
dropped connections, and notifications scoped to its schema.

The Store contract itself runs on PostgreSQL through the `store` and `clocked` fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from tether.errors import InvalidStoreURL, StoreError, UsageError
from tether.journal import create_run, open_store, read_events
from tether.journal._postgres import PostgresStore, parse_postgres_url
from tether.journal._schema import SCHEMA_VERSION

from ..conftest import POSTGRES_URL, drop_postgres_schema, postgres_problem, require
from .helpers import RUN_ID, audit_cycle, created, import_events, note, seal_chain

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


def _terminate(schema: str) -> int:
    """Kill every server connection of the stores in `schema` (a crash, seen from them)."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (f"tether:{schema}",),
        ).fetchall()
    return len(rows)


# -- the URL -----------------------------------------------------------------------------


def test_tether_options_are_taken_out_of_the_url_and_the_rest_goes_to_libpq() -> None:
    parsed = parse_postgres_url(
        "postgres://u:secret@db:5433/app?schema=runs&sslmode=disable&pool_max=4&synchronous=normal"
    )
    assert parsed.libpq == "postgresql://u:secret@db:5433/app?sslmode=disable"
    assert parsed[1:] == ("runs", 1, 4, "normal")
    assert parse_postgres_url("postgresql://db/app")[1:] == (None, 1, 10, "full")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://db/app?schema=Runs",
        "postgresql://db/app?schema=a;drop",
        "postgresql://db/app?pool_max=zero",
        "postgresql://db/app?pool_min=5&pool_max=2",
        "postgresql://db/app?synchronous=off",
        "postgresql://db/app?synchronous=",
    ],
)
def test_bad_options_are_refused_with_a_usage_error(url: str) -> None:
    with pytest.raises(InvalidStoreURL):
        open_store(url)


async def test_an_unreachable_server_is_a_one_line_store_error_without_the_password() -> None:
    with socket_free_port() as port:
        store = open_store(f"postgresql://me:hunter2@127.0.0.1:{port}/db?schema=x")
        assert isinstance(store, PostgresStore)
        start = time.monotonic()
        with pytest.raises(StoreError) as info:
            await store.get_run("run_x")
        await store.close()
    assert time.monotonic() - start < 15
    message = str(info.value)
    assert "hunter2" not in message and "me:***@127.0.0.1" in message
    assert "\n" not in message.strip()


@contextlib.contextmanager
def socket_free_port() -> Iterator[int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])  # bound, not listening: connections are refused


# -- migrations ----------------------------------------------------------------------------


async def test_many_processes_opening_a_new_schema_at_once_migrate_it_once(schema: str) -> None:
    stores = [PostgresStore(f"{POSTGRES_URL}?schema={schema}") for _ in range(6)]
    try:
        await asyncio.gather(*(s.run_ids() for s in stores))
        await create_run(stores[0], agent="a", task="t", run_id=RUN_ID)
        assert [await s.run_ids() for s in stores] == [[RUN_ID]] * 6
    finally:
        for s in stores:
            await s.close()
    with psycopg.connect(POSTGRES_URL) as conn:
        version = conn.execute(
            f"SELECT value FROM {schema}.tether_meta WHERE key='schema_version'"
        ).fetchone()
    assert version == (str(SCHEMA_VERSION),)


async def test_reopening_keeps_the_data_and_a_newer_schema_is_refused(schema: str) -> None:
    async with opened(schema) as store:
        await import_events(store, seal_chain([created(), note(1)]))
    async with opened(schema) as store:
        assert [e.seq for e in await read_events(store, RUN_ID)] == [1, 2]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.tether_meta SET value='999'")
    async with opened(schema) as store:
        with pytest.raises(UsageError, match=r"newer Tether .* upgrade Tether"):
            await store.run_ids()


# -- dropped connections ---------------------------------------------------------------


async def test_reads_and_appends_go_on_after_the_servers_connections_are_killed(
    schema: str,
) -> None:
    events = seal_chain([created(), note(1), note(2), note(3)])
    async with opened(schema) as store:
        lease = await import_events(store, events[:2])
        assert _terminate(schema) >= 1
        assert [r.seq for r in await store.read_rows(RUN_ID)] == [1, 2]  # retried
        from tether.journal import summary_of
        from tether.state import fold

        assert _terminate(schema) >= 1
        with contextlib.suppress(StoreError):  # a write on a dead connection may fail once
            await store.append(lease, events[2:3], summary=summary_of(fold(events[:3])))
        if (await store.get_run(RUN_ID)).head_seq == 2:
            await store.append(lease, events[2:3], summary=summary_of(fold(events[:3])))
        await store.append(lease, events[3:], summary=summary_of(fold(events)))
        assert [e.seq for e in await read_events(store, RUN_ID)] == [1, 2, 3, 4]


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "not-committed"])
async def test_an_append_whose_reply_was_lost_is_resolved_from_the_head_exactly_once(
    schema: str, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    """The append's statement runs (or not) and then its connection dies: the store reads
    the head back, and lands the events exactly once. The failure is injected where the
    append sends its statement (`_execute`, a raw cursor), not at `conn.execute`, which
    appends no longer call."""
    from tether.journal import _postgres, summary_of
    from tether.state import fold

    events = seal_chain([created(), note(1), note(2)])
    async with opened(schema) as store:
        lease = await import_events(store, events[:2])
        real = _postgres._execute
        lost = []

        async def reply_lost(conn: Any, statement: str, params: Any, *, sync: bool) -> Any:
            if lost or "INSERT INTO events" not in statement:
                return await real(conn, statement, params, sync=sync)
            lost.append(True)
            if committed:
                await real(conn, statement, params, sync=sync)
            raise psycopg.OperationalError("server closed the connection unexpectedly")

        monkeypatch.setattr(_postgres, "_execute", reply_lost)
        await store.append(lease, events[2:], summary=summary_of(fold(events)))
        monkeypatch.undo()
        assert lost
        rows = await store.read_rows(RUN_ID)
        assert [r.seq for r in rows] == [1, 2, 3]
        assert bytes(rows[-1].raw) == events[-1].raw
        assert (await store.get_run(RUN_ID)).head_hash == events[-1].checksum


async def test_appends_share_their_connections_cursor_and_each_reads_its_own_row_count(
    schema: str,
) -> None:
    """Appends reuse one raw cursor per connection (made per append it cost CPU): a refused
    append after accepted ones still sees its own row count (none) and says why."""
    from tether.errors import AppendConflict
    from tether.journal import _postgres, summary_of
    from tether.state import fold

    events = seal_chain([created(), note(1), note(2), note(3)])
    async with opened(schema) as store:
        lease = await import_events(store, events[:2])
        await store.append(lease, events[2:3], summary=summary_of(fold(events[:3])))
        with pytest.raises(AppendConflict):  # seq 3 again: its head moved on
            await store.append(lease, events[2:3], summary=summary_of(fold(events[:3])))
        await store.append(lease, events[3:], summary=summary_of(fold(events)))
        assert [r.seq for r in await store.read_rows(RUN_ID)] == [1, 2, 3, 4]
        pool = await store._ready()
        async with pool.connection() as conn:
            assert _postgres._raw_cursor(conn) is _postgres._raw_cursor(conn)


# -- notifications -------------------------------------------------------------------------


async def test_notifications_wake_only_the_stores_of_their_own_schema(schema: str) -> None:
    other = f"{schema}_b"
    try:
        async with opened(schema) as mine, opened(other) as theirs:
            await create_run(theirs, agent="a", task="t", run_id="run_theirs")
            await mine.wait_for_work(timeout_s=0.05)  # start listening
            waiting = asyncio.create_task(mine.wait_for_work(timeout_s=1.0))
            await asyncio.sleep(0.2)
            start = time.monotonic()
            await theirs.enqueue("run_theirs")
            await waiting
            assert time.monotonic() - start > 0.6  # not woken by the other schema's run
    finally:
        drop_postgres_schema(other)


# -- audit queries -------------------------------------------------------------------------


async def test_audit_queries_answer_as_the_reference_semantics_do(schema: str) -> None:
    from tether.journal import MemoryStore
    from tether.journal._index import RowQuery

    runs = [
        seal_chain([created(), *(d for i in range(1, 4) for d in audit_cycle(i))], run_id=run)
        for run in ("run_a", "run_b")
    ]
    memory = MemoryStore()
    async with opened(schema) as pg:
        for events in runs:
            await import_events(memory, events)
            await import_events(pg, events)
        ts = sorted(e.ts for e in runs[0])
        queries = [
            RowQuery(),
            RowQuery(run_id="run_a"),
            RowQuery(run_id="run_b", newest_first=True, limit=3),
            RowQuery(correlation_id="run/c2"),
            RowQuery(types=("tool.requested", "tool.completed")),
            RowQuery(run_id="run_a", types=("message.system", "message.user")),
            RowQuery(tool="search", visibilities=("visible",)),
            RowQuery(actor="tool:search"),
            RowQuery(actor="model:", actor_prefix=True),
            RowQuery(actor="cli:a_", actor_prefix=True),  # _ and % are literal here
            RowQuery(actor="cli:a_b%", actor_prefix=True),
            RowQuery(actor="run", actor_prefix=True),
            RowQuery(since=ts[3], until=ts[9]),
            RowQuery(run_id="run_a", after_seq=4, before_seq=9),
            RowQuery(visibilities=()),
        ]
        for query in queries:
            want = [(r.run_id, r.seq) for r in await memory.query_rows(query)]
            got = [(r.run_id, r.seq) for r in await pg.query_rows(query)]
            assert got == want, query
        literal = await pg.query_rows(RowQuery(actor="cli:a_", actor_prefix=True))
        assert [(r.run_id, r.audit and r.audit.actor) for r in literal] == [
            ("run_a", "cli:a_b%"),
            ("run_b", "cli:a_b%"),
        ]
