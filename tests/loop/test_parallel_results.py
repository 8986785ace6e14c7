"""Parallel tool results of one turn: every result journaled once, on every backend."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BACKENDS, postgres_store
from tether import Agent, Limits, Runtime, tool
from tether.events import EventDraft
from tether.journal import (
    MemoryStore,
    RunJournal,
    SQLiteStore,
    Store,
    create_run,
    read_events,
    verify_run,
)
from tether.models import ScriptedModel, Turn

CALLS = 5


@tool(idempotent=True)
async def jitter(n: int) -> str:
    """Finishes after a random short delay, so results land in any order."""
    await asyncio.sleep(random.random() / 200)
    return f"r{n}"


def agent() -> Agent:
    turn = Turn(calls=tuple(("jitter", {"n": i}) for i in range(CALLS)))
    return Agent(
        name="par",
        instructions="Run them all.",
        tools=[jitter],
        model=ScriptedModel([turn, turn, "done"]),
        limits=Limits(max_steps=10),
    )


async def drive(store: Store, runs: int) -> None:
    rt = Runtime(store, ledger=False)
    for _ in range(runs):
        result = await rt.start(agent(), "go")
        assert result.status == "completed", result
        events = await read_events(store, result.run_id)
        finished = Counter(
            e.payload["call_id"] for e in events if e.type in ("tool.completed", "tool.failed")
        )
        requested = [e.payload["call_id"] for e in events if e.type == "tool.requested"]
        assert len(requested) == 2 * CALLS
        assert all(finished[c] == 1 for c in requested), finished
        assert (await verify_run(store, result.run_id)).ok


@pytest.mark.parametrize("backend", BACKENDS)
async def test_five_parallel_results_are_each_journaled_once(backend: str, tmp_path: Path) -> None:
    runs = 20
    if backend == "postgres":
        async with postgres_store() as store:
            await drive(store, runs)
        return
    store = MemoryStore() if backend == "memory" else SQLiteStore(tmp_path / "t.db")
    try:
        await drive(store, runs)
    finally:
        await store.close()


class YieldingStore(MemoryStore):
    """Lets other tasks run inside every append, as a networked store does."""

    async def append(self, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0)
        await super().append(*args, **kwargs)


async def test_concurrent_appends_and_stages_of_one_journal_are_serialised() -> None:
    store = YieldingStore()
    state = await create_run(store, agent="a", task="t")
    lease = await store.acquire_lease(state.run_id, owner="w", ttl_s=60)
    journal, _ = await RunJournal.open(store, lease)

    async def note(i: int) -> None:
        await journal.append(EventDraft(type="note", payload={"i": i}))

    await asyncio.gather(*(note(i) for i in range(8)), journal.stage(EventDraft(type="note")))
    await journal.flush()
    events = await read_events(store, state.run_id)
    assert [e.seq for e in events] == list(range(1, 11))
    assert journal.state.last_seq == 10 and journal.staged == 0
