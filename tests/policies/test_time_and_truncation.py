"""Time limits hold during calls; truncated answers are never published as complete."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tether import Agent, Limits, Runtime, tool
from tether.journal import MemoryStore, read_events
from tether.loop import Progress
from tether.models import ModelRequest, ModelResponse, ScriptedModel, Turn
from tether.models._base import TextSink


class Hanging(ScriptedModel):
    """Hangs on the turns whose index is in `hang` (0-based), answers the rest."""

    def __init__(self, script: Any, *, hang: set[int], **kw: Any) -> None:
        super().__init__(script, **kw)
        self.hang = hang
        self.calls = 0

    async def complete(
        self, request: ModelRequest, *, on_text: TextSink | None = None
    ) -> ModelResponse:
        n = self.calls
        self.calls += 1
        if n in self.hang:
            await asyncio.sleep(3600)
        return await super().complete(request, on_text=on_text)


def agent(model: Any, **kw: Any) -> Agent:
    return Agent(name="t", instructions="test", model=model, **kw)


async def test_a_hung_model_call_ends_the_run_stopped_within_the_time_limit() -> None:
    model = Hanging(["never"], hang={0, 1, 2, 3})
    rt = Runtime(MemoryStore())
    started = time.monotonic()
    result = await rt.start(agent(model, limits=Limits(max_time_s=1.0)), "go")
    took = time.monotonic() - started
    assert result.status == "stopped" and result.partial
    # The limit plus the wrap-up grace (a tenth of the limit here), plus scheduling slack.
    assert took < 1.0 + 0.1 + 1.0, took
    events = await read_events(rt.store, result.run_id)
    failed = [e.payload for e in events if e.type == "model.failed"]
    assert failed and failed[0]["kind"] == "OutOfTime" and failed[0]["run_limit"] is True
    assert [e.payload["limit"] for e in events if e.type == "limit.reached"] == ["time"]


async def test_a_call_past_its_own_timeout_is_journaled_and_retried() -> None:
    model = Hanging(["fine"], hang={0})
    rt = Runtime(MemoryStore(), model_retry_backoff_s=0.001)
    result = await rt.start(agent(model, model_timeout_s=0.2), "go")
    assert result.status == "completed" and result.answer == "fine"
    events = await read_events(rt.store, result.run_id)
    failed = [e.payload for e in events if e.type == "model.failed"]
    assert len(failed) == 1 and failed[0]["kind"] == "CallTimedOut"
    assert failed[0]["timeout_s"] == 0.2 and failed[0]["transient"] is True


async def test_progress_keeps_counting_while_a_call_is_in_flight() -> None:
    @tool
    async def slow() -> str:
        """Takes a while."""
        await asyncio.sleep(2.3)
        return "ok"

    seen: list[Progress] = []
    model = ScriptedModel([Turn(calls=(("slow", {}),)), "done"])
    rt = Runtime(MemoryStore())
    result = await rt.start(agent(model, tools=[slow]), "go", observer=seen.append)
    assert result.status == "completed"
    ticks = [p for p in seen if p.event == "tool.waiting"]
    assert len(ticks) >= 2 and ticks[0].tool == "slow"
    assert ticks[-1].elapsed_s is not None and ticks[-1].elapsed_s > ticks[0].elapsed_s  # type: ignore[operator]


async def test_a_cut_off_answer_is_continued_and_joined() -> None:
    model = ScriptedModel(
        [Turn(text="The report: part one, ", finish_reason="length"), "part two."]
    )
    rt = Runtime(MemoryStore())
    result = await rt.start(agent(model), "go")
    assert result.status == "completed"
    assert result.answer == "The report: part one, part two."
    events = await read_events(rt.store, result.run_id)
    truncated = [e for e in events if e.type == "health.truncated"]
    assert len(truncated) == 1 and truncated[0].payload["action"] == "tell"
    cut = next(e for e in events if e.type == "model.completed")
    assert cut.visibility == "user_hidden"  # never shown to end users as an answer


async def test_an_answer_cut_off_past_the_bound_ends_stopped_never_completed() -> None:
    piece = Turn(text="more ", finish_reason="length")
    model = ScriptedModel([piece, piece, piece, "never reached"])
    rt = Runtime(MemoryStore())
    result = await rt.start(agent(model), "go")
    assert result.status == "stopped" and result.partial and result.exit_code == 3
    assert result.answer is not None and result.answer.startswith("[PARTIAL")
    assert result.answer.endswith("more more more")
    events = await read_events(rt.store, result.run_id)
    assert not [e for e in events if e.type == "run.completed"]
    assert [e.payload["action"] for e in events if e.type == "health.truncated"] == [
        "tell", "tell", "stop",
    ]  # fmt: skip


async def test_a_hung_tool_ends_the_run_within_the_time_limit_and_its_grace() -> None:
    @tool(timeout_s=None)
    async def stuck() -> str:
        """Never returns."""
        await asyncio.sleep(3600)
        return "never"

    model = ScriptedModel([Turn(calls=(("stuck", {}),)), "unreached"])
    rt = Runtime(MemoryStore())
    started = time.monotonic()
    result = await rt.start(agent(model, tools=[stuck], limits=Limits(max_time_s=0.5)), "go")
    took = time.monotonic() - started
    assert result.status == "stopped"
    assert took < 0.5 + 5 + 0.05 + 1.0, took  # limit + tool grace + wrap-up grace + slack
    events = await read_events(rt.store, result.run_id)
    (failed,) = [e.payload for e in events if e.type == "tool.failed"]
    assert failed["error"] == "timeout" and "time limit" in failed["output"]


async def test_a_continuation_interrupted_by_a_crash_is_joined_once_on_resume(
    tmp_path: Any,
) -> None:
    from tether.errors import SimulatedCrash
    from tether.journal import Lease, SQLiteStore

    crashed = {"n": 0}

    class CrashOnce(ScriptedModel):
        async def complete(
            self, request: ModelRequest, *, on_text: TextSink | None = None
        ) -> ModelResponse:
            if sum(1 for m in request.messages if m.role == "assistant") == 1 and not crashed["n"]:
                crashed["n"] = 1
                raise SimulatedCrash()
            return await super().complete(request, on_text=on_text)

    script = [Turn(text="first half, ", finish_reason="length"), "second half."]
    db = tmp_path / "r.db"
    rt = Runtime(SQLiteStore(db), worker_id="w1")
    with pytest.raises(SimulatedCrash):
        await rt.start(agent(CrashOnce(script)), "go")
    run_id = (await rt.list())[0].run_id
    await rt.store.release_lease(Lease(run_id=run_id, owner="w1", epoch=1, expires_at=0))
    result = await Runtime(SQLiteStore(db), worker_id="w2").resume(agent(CrashOnce(script)), run_id)
    assert result.status == "completed" and result.answer == "first half, second half."
    events = await read_events(SQLiteStore(db), run_id)
    assert len([e for e in events if e.type == "health.truncated"]) == 1
