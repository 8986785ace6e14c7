"""Parallel calls of one turn are journaled as they finish, which a replay (where every
result is at hand at once) cannot reproduce: it compares such a batch of results as a set.

Claims: a turn whose calls finished in the reverse of call order replays without
divergence; a result that differs inside the batch (a tool renamed, so the recorded call
fails) still diverges, at the recorded event it differs from."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tether import Agent, Limits, tool
from tether.events import decode_event
from tether.journal import MemoryStore
from tether.models import ScriptedModel, Turn
from tether.testing import replay, run_to_end
from tether.testing._replay import load_journal


@tool(idempotent=True)
async def lookup(n: int) -> str:
    """Slow: finishes after `search` though it was called first."""
    await asyncio.sleep(0.05)
    return f"looked up {n}"


@tool(idempotent=True)
async def search(q: str) -> str:
    """Fast."""
    return f"found {q}"


@tool(idempotent=True)
async def find(q: str) -> str:
    """`search` renamed: the recorded calls to `search` now name no tool."""
    return f"found {q}"


def _agent(*, search_tool: object = search) -> Agent:
    turn = Turn(calls=(("lookup", {"n": 1}), ("search", {"q": "x"}), ("lookup", {"n": 2})))
    return Agent(
        name="par",
        instructions="Call them all.",
        model=ScriptedModel([turn, Turn(text="done")]),
        tools=[lookup, search_tool],  # type: ignore[list-item]
    )


async def _record(tmp_path: Path) -> Path:
    store = MemoryStore()
    result = await run_to_end(_agent(), "go", store=store, limits=Limits(max_steps=5))
    path = tmp_path / "par.jsonl"
    lines = [
        decode_event(r.raw, run_id=r.run_id, seq=r.seq).portable() + b"\n"
        for r in await store.read_rows(result.run_id)
    ]
    path.write_bytes(b"".join(lines))
    return path


async def test_parallel_results_recorded_out_of_call_order_replay(tmp_path: Path) -> None:
    path = await _record(tmp_path)
    done = [e.payload["name"] for e in load_journal(path) if e.type == "tool.completed"]
    assert done[0] == "search"  # recorded as they finished: not in call order
    report = await replay(_agent(), path)
    assert report.ok, report.divergence


async def test_a_failure_inside_a_parallel_batch_still_diverges(tmp_path: Path) -> None:
    path = await _record(tmp_path)
    recorded = load_journal(path)
    report = await replay(_agent(search_tool=find), path)
    d = report.divergence
    assert d is not None and d.recorded is not None and d.now is not None
    assert (d.recorded["type"], d.recorded["name"]) == ("tool.completed", "search")
    assert d.now["type"] in ("tool.failed", "tool.unknown")
    assert recorded[d.recorded_seq - 1].payload["name"] == "search"
