"""The sync boundary on PostgreSQL: a store URL with `synchronous=normal`, or a database run
with `synchronous_commit=off` (a common tuning), still flushes the commits a side effect
waits for, and only those; by default every commit is flushed.

A trigger on the events table records the `synchronous_commit` in force in the
transaction that inserted each event: what the server did, not what the store meant to do.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tether import Runtime
from tether.journal._postgres import PostgresStore

from ..chaos.scenario import TURNS, agent_for, effects
from ..conftest import POSTGRES_URL, drop_postgres_schema, postgres_problem, require

pytestmark = pytest.mark.postgres


@pytest.fixture
def schema() -> Iterator[str]:
    problem = postgres_problem()
    require(problem is None, problem or "")
    name = f"test_sync_{os.getpid()}_{secrets.token_hex(4)}"
    yield name
    drop_postgres_schema(name)


def watch_commit_modes(schema: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {schema}.commit_modes (run_id TEXT, seq BIGINT, type TEXT, mode TEXT)"
        )
        conn.execute(
            f"""CREATE FUNCTION {schema}.note_mode() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO {schema}.commit_modes
                VALUES (NEW.run_id, NEW.seq, NEW.type, current_setting('synchronous_commit'));
                RETURN NEW;
            END $$"""
        )
        conn.execute(
            f"CREATE TRIGGER note_mode AFTER INSERT ON {schema}.events "
            f"FOR EACH ROW EXECUTE FUNCTION {schema}.note_mode()"
        )


def commit_modes(schema: str) -> list[tuple[int, str, str]]:
    with psycopg.connect(POSTGRES_URL) as conn:
        rows = conn.execute(
            f"SELECT seq, type, mode FROM {schema}.commit_modes ORDER BY seq"
        ).fetchall()
    return [(int(seq), str(kind), str(mode)) for seq, kind, mode in rows]


async def drive(url: str, schema: str, tmp_path: Path) -> dict[str, list[str]]:
    """Drive the scenario's agent on `url`; the commit mode of each event's insert, by type."""
    store = PostgresStore(url)
    rt = Runtime(store)
    try:
        await store.list_runs()  # creates the schema and its tables
        watch_commit_modes(schema)
        result = await rt.start(agent_for(tmp_path), "go")
        assert result.status == "completed"
    finally:
        await rt.close()
    modes = commit_modes(schema)
    assert modes, "the trigger saw no insert"
    by_type: dict[str, list[str]] = {}
    for _, kind, mode in modes:
        by_type.setdefault(kind, []).append(mode)
    return by_type


@pytest.mark.parametrize(
    "options",
    ["options=-c%20synchronous_commit%3Doff", "synchronous=normal", "synchronous=NORMAL"],
)
async def test_only_the_boundary_commits_are_flushed_with_async_commit(
    schema: str, tmp_path: Path, options: str
) -> None:
    by_type = await drive(f"{POSTGRES_URL}?schema={schema}&{options}", schema, tmp_path)
    paid = len([e for e in effects(tmp_path) if e["tool"] == "pay"])
    assert paid == TURNS // 2
    # Ordinary steps commit without waiting for the flush.
    for kind in ("cycle.started", "model.requested", "tool.completed"):
        assert set(by_type[kind]) == {"off"}, kind
    # A run's creation and end are flushed, and so is every turn that asks for a payment
    # (its calls are requested in one commit); a turn of notes only is not.
    assert by_type["run.created"] == by_type["run.completed"] == ["on"]
    requested = by_type["tool.requested"]
    assert requested.count("on") == 2 * paid  # a note and a payment per paying turn
    assert requested.count("off") == TURNS - paid  # one note per other turn


@pytest.mark.parametrize("options", ["", "&synchronous=full"])
async def test_by_default_every_commit_is_flushed(
    schema: str, tmp_path: Path, options: str
) -> None:
    by_type = await drive(f"{POSTGRES_URL}?schema={schema}{options}", schema, tmp_path)
    assert {mode for modes in by_type.values() for mode in modes} == {"on"}
    assert "cycle.started" in by_type and "tool.completed" in by_type
