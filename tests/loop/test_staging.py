"""A step is two commits: the turn's last tool result rides in the next step's first one.

What must hold: the result is in the model's next request and on disk before that request
is made; results that finish while other calls still run are written at once; and a loop
that leaves for any reason (an error, a cancellation) writes what it staged.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tether import Agent, Limits, Runtime, tool
from tether.journal import SQLiteStore, Store, read_events
from tether.loop import Progress
from tether.models import ModelRequest, ModelResponse, ScriptedModel, Turn, call
from tether.models._base import TextSink


@tool
def ping(n: int) -> str:
    """Answer a ping."""
    return f"pong {n}"


class Watching(ScriptedModel):
    """Checks, at every call, that the previous tool result is already durable."""

    def __init__(self, script: Any, store: Store) -> None:
        super().__init__(script)
        self.store = store
        self.durable_results_at_call: list[int] = []

    async def complete(
        self, request: ModelRequest, *, on_text: TextSink | None = None
    ) -> ModelResponse:
        run_id = (await self.store.list_runs())[0].run_id
        stored = await read_events(self.store, run_id)
        self.durable_results_at_call.append(sum(e.type == "tool.completed" for e in stored))
        assert (
            sum(m.role == "tool" for m in request.messages) == (self.durable_results_at_call[-1])
        ), "the model saw a tool result that is not on disk yet"
        return await super().complete(request, on_text=on_text)


def agent(model: Any) -> Agent:
    return Agent(name="s", instructions="Ping.", tools=[ping], model=model,
                 limits=Limits(max_steps=20))  # fmt: skip


async def test_each_tool_result_is_durable_before_the_next_model_call(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    model = Watching([call("ping", {"n": 1}), call("ping", {"n": 2}), "done"], store)
    result = await Runtime(store).start(agent(model), "go")
    assert result.status == "completed"
    assert model.durable_results_at_call == [0, 1, 2]
    events = await read_events(store, result.run_id)
    # Two commits per tool step: the result is written with the next cycle's request.
    results = [e for e in events if e.type == "tool.completed"]
    assert len(results) == 2
    for r in results:
        assert events[r.seq].type == "cycle.started"  # the next event (seqs start at 1)
    await store.close()


async def test_a_loop_leaving_on_an_error_writes_the_result_it_staged(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")

    class Boom(Exception):
        pass

    def observer(progress: Progress) -> None:
        if progress.event == "tool.completed":  # staged, not yet written
            raise Boom

    # The error ends the run failed (DESIGN invariant 10) after the staged result is written.
    result = await Runtime(store).start(
        agent(ScriptedModel([call("ping", {"n": 1}), "done"])), "go", observer=observer
    )
    assert result.status == "failed"
    events = await read_events(store, result.run_id)
    done = events[-2]
    assert done.type == "tool.completed" and done.payload["output"] == "pong 1"
    assert events[-1].type == "run.failed" and events[-1].payload["detail"] == "Boom"
    await store.close()


async def test_a_cancelled_loop_writes_the_result_it_staged(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    staged = asyncio.Event()

    class Slow(ScriptedModel):
        async def complete(
            self, request: ModelRequest, *, on_text: TextSink | None = None
        ) -> ModelResponse:
            if any(m.role == "tool" for m in request.messages):
                await asyncio.sleep(30)  # cancelled here
            return await super().complete(request, on_text=on_text)

    def observer(progress: Progress) -> None:
        if progress.event == "tool.completed":
            staged.set()

    task = asyncio.create_task(
        Runtime(store).start(agent(Slow([call("ping", {"n": 1}), "done"])), "go", observer=observer)
    )
    await staged.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    run_id = (await store.list_runs())[0].run_id
    types = [e.type for e in await read_events(store, run_id)]
    assert "tool.completed" in types
    await store.close()


@tool
async def slow_ping(n: int) -> str:
    """Answer a ping, slowly for n=1."""
    await asyncio.sleep(0.3 if n == 1 else 0)
    return f"pong {n}"


async def test_a_result_is_written_at_once_while_other_calls_still_run(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    model = ScriptedModel([
        Turn(calls=(("slow_ping", {"n": 1}), ("slow_ping", {"n": 2}))),
        "done",
    ])  # fmt: skip
    a = Agent(name="s", instructions="Ping.", tools=[slow_ping], model=model,
              limits=Limits(max_steps=20))  # fmt: skip
    task = asyncio.create_task(Runtime(store).start(a, "go"))
    await asyncio.sleep(0.15)  # the fast call is done, the slow one still runs
    run_id = (await store.list_runs())[0].run_id
    on_disk = [e for e in await read_events(store, run_id) if e.type == "tool.completed"]
    assert [e.payload["output"] for e in on_disk] == ["pong 2"]
    result = await task
    assert result.status == "completed"
    await store.close()
