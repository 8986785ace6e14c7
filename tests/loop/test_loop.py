"""The agent loop: bad model output, tool failures, limits, recovery, compaction."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tether import Agent, Limits, Runtime, ToolContext, ToolRetry, tool
from tether._clock import FakeClock
from tether.errors import ContextOverflow, ModelUnavailable, SimulatedCrash
from tether.journal import MemoryStore, SQLiteStore, read_events, verify_run
from tether.models import (
    Message,
    ModelRequest,
    ModelResponse,
    ScriptedModel,
    ToolSpec,
    Turn,
    call,
)
from tether.models._base import TextSink


class Recording(ScriptedModel):
    """A scripted model that keeps every turn request it was sent (not summary requests)."""

    def __init__(self, script: Any, **kw: Any) -> None:
        super().__init__(script, **kw)
        self.requests: list[ModelRequest] = []

    async def complete(
        self, request: ModelRequest, *, on_text: TextSink | None = None
    ) -> ModelResponse:
        if request.purpose == "turn":
            self.requests.append(request)
        return await super().complete(request, on_text=on_text)


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def agent_with(*tools: Any, model: Any, limits: Limits | None = None, **kw: Any) -> Agent:
    return Agent(
        name="t",
        instructions="You are a test agent.",
        tools=list(tools),
        model=model,
        limits=limits or Limits(max_steps=20),
        **kw,
    )


async def events_of(rt: Runtime, run_id: str) -> list[Any]:
    return await read_events(rt.store, run_id)


def tool_results(model: Recording) -> list[str]:
    return [m.content for m in model.requests[-1].messages if m.role == "tool"]


async def test_bad_model_output_becomes_error_results_and_the_run_goes_on() -> None:
    @tool
    def boom() -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    @tool
    def picky(n: int) -> str:
        """Asks for another try."""
        raise ToolRetry("n must be even")

    model = Recording(
        [
            call("nope", {}),
            call("add", '{"a": 1,'),
            call("add", {"a": "x"}),
            call("add", "[1, 2]"),
            call("boom", {}),
            call("picky", {"n": 1}),
            call("add", {"a": 2, "b": 3}),
            "done",
        ]
    )
    rt = Runtime(MemoryStore())
    result = await rt.start(agent_with(add, boom, picky, model=model), "go")
    assert result.status == "completed" and result.answer == "done"
    results = tool_results(model)
    assert results[0].startswith("error: there is no tool named 'nope'")
    assert results[1].startswith("error: the arguments are not valid JSON")
    assert results[2].startswith("error: invalid arguments for add")
    assert results[3].startswith("error: the arguments must be a JSON object")
    assert "RuntimeError: disk on fire" in results[4]
    assert results[5].startswith("error: n must be even")
    assert results[6].startswith("5\n[step 7/20")
    state = await rt.get(result.run_id)
    assert state.tool_calls == 7 and state.tool_errors == 6
    kinds = [e.payload.get("error") for e in await events_of(rt, result.run_id)
             if e.type in ("tool.completed", "tool.failed")]  # fmt: skip
    assert kinds == [
        "unknown_tool", "malformed_arguments", "invalid_arguments", "malformed_arguments",
        "exception", "retry_requested", None,
    ]  # fmt: skip


async def test_tool_timeout_and_transient_retries() -> None:
    attempts = {"flaky": 0}

    @tool(timeout_s=0.05)
    async def slow() -> str:
        """Never returns in time."""
        await asyncio.sleep(5)
        return "late"

    @tool(retries=2, retry_backoff_s=0.001)
    def flaky() -> str:
        """Fails twice, then works."""
        attempts["flaky"] += 1
        if attempts["flaky"] < 3:
            raise ConnectionError("reset")
        return "ok at last"

    model = Recording([call("slow"), call("flaky"), "done"])
    rt = Runtime(MemoryStore())
    result = await rt.start(agent_with(slow, flaky, model=model), "go")
    assert result.status == "completed"
    results = tool_results(model)
    assert results[0].startswith("error: slow timed out after 0.05s")
    assert results[1].startswith("ok at last")
    events = await events_of(rt, result.run_id)
    flaky_done = [e for e in events if e.type == "tool.completed" and e.payload["name"] == "flaky"]
    assert flaky_done[0].payload["attempts"] == 3


async def test_tool_calls_of_one_turn_run_concurrently() -> None:
    started = asyncio.Event()

    @tool
    async def waiter() -> str:
        """Waits for the other call to start: deadlocks if calls ran one by one."""
        await asyncio.wait_for(started.wait(), 5)
        return "saw the other"

    @tool
    async def starter() -> str:
        """Starts."""
        started.set()
        return "started"

    both = Turn(calls=(("waiter", {}), ("starter", {})))
    model = Recording([both, "done"])
    rt = Runtime(MemoryStore())
    result = await rt.start(agent_with(waiter, starter, model=model), "go")
    assert result.status == "completed"
    results = tool_results(model)
    # Results reach the model in the order the calls were made, whatever order they finished.
    assert results[0].startswith("saw the other") and results[1].startswith("started")


@pytest.mark.parametrize(
    ("limits", "limit"),
    [
        (Limits(max_steps=3), "steps"),
        # Each turn sends ~700 tokens of tool specs: 4,000 fits three turns and a wrap-up.
        (Limits(max_steps=None, max_tokens=4_000), "tokens"),
        (Limits(max_steps=None, max_cost_usd=0.002), "cost"),
    ],
)
async def test_each_limit_ends_in_a_labelled_partial_answer(limits: Limits, limit: str) -> None:
    def forever(request: ModelRequest) -> Turn:
        if not request.tools:
            return Turn(text="Here is what I found so far.")
        return call("add", {"a": 1, "b": 1})

    rt = Runtime(MemoryStore())
    agent = agent_with(
        add, model=ScriptedModel(forever), limits=limits, max_output_tokens=200,
        wrap_up_output_tokens=100,
    )  # fmt: skip
    result = await rt.start(agent, "go")
    assert result.steps >= 3
    assert result.status == "stopped" and result.partial and result.exit_code == 3
    assert result.answer is not None and result.answer.startswith("[PARTIAL — ")
    assert result.answer.endswith("Here is what I found so far.")
    assert result.reason is not None and limit in result.reason
    events = await events_of(rt, result.run_id)
    reached = [e for e in events if e.type == "limit.reached"]
    assert [e.payload["limit"] for e in reached] == [limit]
    if limit == "cost":
        assert result.cost_usd <= 0.002
    if limit == "tokens":
        assert result.input_tokens + result.output_tokens <= 4_000


async def test_time_limit_counts_active_time_only() -> None:
    clock = FakeClock()

    @tool
    def tick() -> str:
        """Takes ten seconds of (fake) time."""
        clock.advance(10)
        return "tick"

    def forever(request: ModelRequest) -> Turn:
        return Turn(text="partial") if not request.tools else call("tick")

    rt = Runtime(MemoryStore(clock=clock), clock=clock)
    limits = Limits(max_steps=None, max_time_s=35)
    agent = agent_with(tick, model=ScriptedModel(forever), limits=limits)
    result = await rt.start(agent, "go")
    assert result.status == "stopped" and "time limit" in (result.reason or "")
    assert 35 <= (await rt.get(result.run_id)).active_s < 50


async def test_status_line_warns_at_20_and_wraps_up_at_10_percent() -> None:
    model = Recording([call("add", {"a": 1, "b": 1})] * 10 + ["done"])
    rt = Runtime(MemoryStore())
    result = await rt.start(agent_with(add, model=model, limits=Limits(max_steps=10)), "go")
    assert result.status == "stopped"
    lines = [r.split("\n", 1)[1] for r in tool_results(model)]
    assert lines[0].startswith("[step 1/10 ·") and "⚠" not in lines[0]
    assert "⚠" not in lines[6]  # 30% left
    assert "20% of your steps budget is left" in lines[7]
    assert "WRAP UP NOW: 10% of your steps budget is left" in lines[8]


async def test_completed_tool_calls_never_rerun_and_in_flight_ones_follow_policy(
    tmp_path: Path,
) -> None:
    counts = {"charge": 0, "fetch": 0, "keys": []}
    crash = {"armed": True}

    @tool
    def charge(amount: int) -> str:
        """Not idempotent: charges a card."""
        counts["charge"] += 1
        if crash["armed"]:
            crash["armed"] = False
            raise SimulatedCrash()
        return "charged"

    @tool(idempotent=True)
    def fetch(ctx: ToolContext) -> str:
        """Idempotent: safe to repeat with its key."""
        counts["fetch"] += 1
        counts["keys"].append((ctx.idempotency_key, ctx.attempt))  # type: ignore[attr-defined]
        if counts["fetch"] == 2:
            raise SimulatedCrash()
        return "fetched"

    script = [call("fetch"), call("charge", {"amount": 5}), call("fetch"), "done"]
    agent = agent_with(charge, fetch, model=ScriptedModel(script))
    db = tmp_path / "r.db"
    rt = Runtime(SQLiteStore(db), worker_id="w1")
    with pytest.raises(SimulatedCrash):
        await rt.start(agent, "go")
    run_id = (await rt.list())[0].run_id
    await rt.store.release_lease(
        __import__("tether").journal.Lease(run_id=run_id, owner="w1", epoch=1, expires_at=0)
    )
    # A new process: the charge's outcome is unknown and is not repeated.
    rt2 = Runtime(SQLiteStore(db), worker_id="w2")
    with pytest.raises(SimulatedCrash):
        await rt2.resume(agent, run_id)
    assert counts["charge"] == 1
    rt3 = Runtime(SQLiteStore(db), worker_id="w3")
    await rt3.store.release_lease(
        __import__("tether").journal.Lease(run_id=run_id, owner="w2", epoch=2, expires_at=0)
    )
    result = await rt3.resume(agent, run_id)
    assert result.status == "completed"
    assert counts["charge"] == 1  # never re-run
    assert counts["fetch"] == 3  # the in-flight idempotent call was re-run once
    first_key, second_key = counts["keys"][1], counts["keys"][2]  # type: ignore[index]
    assert first_key[0] == second_key[0] and (first_key[1], second_key[1]) == (1, 2)
    events = await read_events(rt3.store, run_id)
    unknown = [e for e in events if e.type == "tool.unknown"]
    assert len(unknown) == 1 and "outcome unknown" in unknown[0].payload["output"]
    assert (await verify_run(rt3.store, run_id)).ok


async def test_model_outage_is_retried_then_fails_retryably() -> None:
    class Down(ScriptedModel):
        fails = 2

        async def complete(
            self, request: ModelRequest, *, on_text: TextSink | None = None
        ) -> ModelResponse:
            if self.fails:
                self.fails -= 1
                raise ModelUnavailable("503")
            return await super().complete(request, on_text=on_text)

    rt = Runtime(MemoryStore(), model_retries=3, model_retry_backoff_s=0.001)
    result = await rt.start(agent_with(model=Down(["fine"])), "go")
    assert result.status == "completed"
    events = await events_of(rt, result.run_id)
    assert sum(e.type == "model.failed" for e in events) == 2

    dead = Down(["fine"])
    dead.fails = 10
    result = await rt.start(agent_with(model=dead), "go")
    assert result.status == "failed" and result.exit_code == 1
    assert "unavailable" in (result.reason or "")
    last = (await events_of(rt, result.run_id))[-1]
    assert last.type == "run.failed" and last.payload["retryable"] is True


async def test_compaction_keeps_mission_task_and_whole_call_result_pairs() -> None:
    big = "x" * 3_000

    @tool
    def blob(n: int) -> str:
        """Returns a large text."""
        return f"{n}:{big}"

    model = Recording(
        lambda r: Turn(text="done") if len(model.requests) >= 30
        else call("blob", {"n": len(model.requests)}),
        context_window=12_000,
    )  # fmt: skip
    rt = Runtime(MemoryStore())
    result = await rt.start(agent_with(blob, model=model, limits=Limits(max_steps=40)), "go")
    assert result.status == "completed"
    events = await events_of(rt, result.run_id)
    assert any(e.type == "context.compacted" for e in events)
    for request in model.requests:
        msgs = request.messages
        assert msgs[0].role == "system" and msgs[0].content == "You are a test agent."
        assert msgs[1].role == "user" and msgs[1].content == "go"
        assert model.count_tokens(msgs, request.tools) <= 12_000
        called = {c.id for m in msgs if m.role == "assistant" for c in m.tool_calls}
        answered = {m.tool_call_id for m in msgs if m.role == "tool"}
        assert answered == called, "a tool result without its call, or a call without result"


async def test_context_overflow_compacts_and_retries() -> None:
    class Tight(Recording):
        async def complete(
            self, request: ModelRequest, *, on_text: TextSink | None = None
        ) -> ModelResponse:
            if sum(m.role == "tool" for m in request.messages) > 4:
                self.requests.append(request)
                raise ContextOverflow("prompt too long")
            return await super().complete(request, on_text=on_text)

    model = Tight(
        lambda r: Turn(text="done") if any("Summary of earlier" in m.content for m in r.messages)
        else call("add", {"a": 1, "b": 2})
    )  # fmt: skip
    rt = Runtime(MemoryStore())
    result = await rt.start(agent_with(add, model=model), "go")
    assert result.status == "completed"
    types = [e.type for e in await events_of(rt, result.run_id)]
    assert types.index("model.failed") < types.index("context.compacted")


async def test_large_tool_output_is_truncated_in_context_but_whole_in_the_journal() -> None:
    @tool(max_output_chars=100)
    def huge() -> str:
        """Returns 10,000 characters."""
        return "y" * 10_000

    model = Recording([call("huge"), "done"])
    rt = Runtime(MemoryStore())
    result = await rt.start(agent_with(huge, model=model), "go")
    seen = tool_results(model)[0]
    assert seen.startswith("y" * 100 + "\n[... 9,900 more characters of 10,000 not shown")
    event = next(e for e in await events_of(rt, result.run_id) if e.type == "tool.completed")
    assert event.payload["output"] == "y" * 10_000
    assert f'read_artifact(handle="{event.id}", offset=100)]' in seen


async def test_a_run_resumes_in_another_runtime_with_the_same_answers(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    rt = Runtime(SQLiteStore(db))
    agent = agent_with(add, model=ScriptedModel([call("add", {"a": 2, "b": 2}), "four"]))
    run_id = await rt.create(agent, "what is 2+2")
    await rt.close()
    rt2 = Runtime(f"sqlite:///{db}")
    result = await rt2.resume(agent, run_id)
    assert (result.status, result.answer) == ("completed", "four")
    again = await rt2.resume(agent, run_id)  # a finished run is not driven again
    assert again == result


def test_sync_conveniences_work_outside_an_event_loop() -> None:
    rt = Runtime("memory://")
    result = rt.start_sync(agent_with(model=ScriptedModel(["hi"])), "say hi")
    assert result.status == "completed" and result.answer == "hi"


def test_message_and_spec_types_are_plain_data() -> None:
    spec = add.spec
    assert isinstance(spec, ToolSpec) and spec.parameters["required"] == ["a", "b"]
    assert json.loads(json.dumps(spec.parameters))["properties"]["a"]["type"] == "integer"
    assert Message(role="user", content="x").tool_calls == ()
