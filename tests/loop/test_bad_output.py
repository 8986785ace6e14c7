"""Hostile model and tool output (DESIGN invariant 10): every run ends with a reason.

Each scenario hands the loop something a misbehaving provider or tool could: text the
journal cannot encode, arguments no parser should recurse into, usage that would credit a
budget, exceptions of every kind. The run must end in a terminal status with a reason (or
wait for an approval), its journal must verify, and nothing may escape the loop.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import BACKENDS, postgres_store
from tether import Agent, Limits, Runtime, tool
from tether.errors import SimulatedCrash
from tether.journal import MemoryStore, SQLiteStore, Store, read_events, verify_run
from tether.models import (
    Message,
    ModelRequest,
    ModelResponse,
    ModelUsage,
    ScriptedModel,
    ToolCall,
    ToolSpec,
    call,
)
from tether.models._base import TextSink
from tether.models._tokens import estimate_tokens

Step = Callable[[ModelRequest], Any]
"""One model turn: returns what `complete` returns, or raises."""


def answer(text: Any = "done", **usage: Any) -> ModelResponse:
    return ModelResponse(
        content=text,
        tool_calls=(),
        finish_reason="stop",
        usage=ModelUsage(input_tokens=usage.get("i", 10), output_tokens=usage.get("o", 5)),
        model="hostile",
    )


def calling(name: Any, arguments: Any, *, content: Any = "") -> ModelResponse:
    return ModelResponse(
        content=content,
        tool_calls=(ToolCall(id="c1", name=name, arguments=arguments),),
        finish_reason="tool_calls",
        usage=ModelUsage(input_tokens=10, output_tokens=5),
        model="hostile",
    )


def raising(exc: BaseException) -> Step:
    def step(request: ModelRequest) -> Any:
        raise exc

    return step


class Hostile:
    """Plays `steps` in order (one per call), then answers "done"."""

    name = "hostile"
    context_window = 100_000
    max_output_tokens = 1_000

    def __init__(self, *steps: Step | ModelResponse) -> None:
        self.steps = list(steps)
        self.calls = 0

    def count_tokens(self, messages: tuple[Message, ...], tools: tuple[ToolSpec, ...] = ()) -> int:
        return estimate_tokens(messages, tools)

    async def complete(self, request: ModelRequest, *, on_text: TextSink | None = None) -> Any:
        self.calls += 1
        if not self.steps:
            return answer()
        step = self.steps.pop(0)
        return step(request) if callable(step) else step


@tool
def echo(text: str) -> str:
    """Echo the text."""
    return text


@tool(requires_approval=True)
def pay(amount: float, when: datetime | None = None) -> str:
    """Pay an amount (needs approval)."""
    return f"paid {amount}"


def returning(value: Any) -> Any:
    @tool(name="weird")
    def weird() -> Any:
        """Returns something odd."""
        return value

    return weird


def raising_tool(exc: BaseException) -> Any:
    @tool(name="weird")
    def weird() -> str:
        """Raises."""
        raise exc

    return weird


@tool(name="weird")
async def cancels() -> str:
    """Raises CancelledError itself (nobody cancelled the run)."""
    raise asyncio.CancelledError


DEEP = "[" * 100_000 + "]" * 100_000
SCENARIOS: dict[str, tuple[tuple[Any, ...], Any]] = {
    "surrogate in the answer": ((answer("bad \ud800 text"),), None),
    "surrogate in arguments": ((calling("echo", '{"text": "a\\ud800b"}'),), None),
    "raw surrogate in arguments": ((calling("echo", '{"text": "a\ud800b"}'),), None),
    "surrogate in a tool name": ((calling("ec\udc00ho", "{}"),), None),
    "NUL in a tool name": ((calling("echo\x00", '{"text": "x"}'),), None),
    "NUL in the answer": ((answer("a\x00b"),), None),
    "NaN in approval arguments": ((calling("pay", '{"amount": NaN}'),), None),
    "nan text in approval arguments": ((calling("pay", '{"amount": "nan"}'),), None),
    "datetime in approval arguments": (
        (calling("pay", '{"amount": 1, "when": "2026-01-01T00:00:00"}'),),
        None,
    ),
    "100,000 nested brackets": ((calling("echo", DEEP),), None),
    "5,000-digit integer": ((calling("echo", '{"text": ' + "9" * 5_000 + "}"),), None),
    "arguments None": ((calling("echo", None),), None),
    "arguments a dict": ((calling("echo", {"text": "hi"}),), None),
    "content None": ((answer(None),), None),
    "content not text": ((answer(42),), None),
    "model returns None": ((lambda r: None,), None),
    "model raises RuntimeError": ((raising(RuntimeError("boom")),), None),
    "model raises KeyError": ((raising(KeyError("k")),), None),
    "model raises TimeoutError": ((raising(TimeoutError()),), None),
    "model raises CancelledError": ((raising(asyncio.CancelledError()),), None),
    "model raises SystemExit": ((raising(SystemExit(3)),), None),
    "negative usage": ((answer("done", i=-1_000_000, o=-5),), None),
    "NaN usage": ((answer("done", i=math.nan, o=math.inf),), None),
    "huge usage": ((answer("done", i=10**30, o=1.5),), None),
    "tool output surrogate": ((calling("weird", "{}"),), returning("x\udfffy")),
    "tool output NUL": ((calling("weird", "{}"),), returning("x\x00y")),
    "tool returns NaN and sets": ((calling("weird", "{}"),), returning({"n": math.nan})),
    "tool returns a cycle": ((calling("weird", "{}"),), returning(_cyclic := [])),
    "tool returns an object": ((calling("weird", "{}"),), returning(object())),
    "tool raises SystemExit": ((calling("weird", "{}"),), raising_tool(SystemExit(1))),
    "tool raises KeyboardInterrupt": (
        (calling("weird", "{}"),),
        raising_tool(KeyboardInterrupt()),
    ),
    "tool raises surrogate text": (
        (calling("weird", "{}"),),
        raising_tool(ValueError("bad \ud800")),
    ),
    "tool raises CancelledError": ((calling("weird", "{}"),), cancels),
}
_cyclic.append(_cyclic)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "postgres":
        async with postgres_store() as backend:
            yield backend
        return
    backend: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "t.db")
    yield backend
    await backend.close()


def agent_for(model: Hostile, extra: Any) -> Agent:
    tools = [echo, pay] + ([extra] if extra is not None else [])
    return Agent(
        name="hostile", instructions="Be careful.", tools=tools, model=model,
        limits=Limits(max_steps=6),
    )  # fmt: skip


async def settle(store: Store, model: Hostile, extra: Any) -> Any:
    """Start a run and check it ended with a reason (or waits for a human)."""
    rt = Runtime(store, model_retries=1, model_retry_backoff_s=0.001)
    result = await rt.start(agent_for(model, extra), "go")
    assert result.status in ("completed", "failed", "stopped", "waiting_approval"), result
    if result.status == "failed":
        assert result.reason
    report = await verify_run(store, result.run_id)
    assert report.ok, report.problems
    events = await read_events(store, result.run_id)
    for event in events:
        json.dumps(event.payload)  # everything journaled encodes
    return result, events


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_hostile_output_ends_every_run_with_a_reason(store: Store, name: str) -> None:
    steps, extra = SCENARIOS[name]
    result, events = await settle(store, Hostile(*steps), extra)
    state = await Runtime(store).get(result.run_id)
    assert state.input_tokens >= 0 and state.output_tokens >= 0 and state.cost_usd >= 0
    if result.status == "waiting_approval":
        requested = [e for e in events if e.type == "approval.requested"]
        assert requested and json.dumps(requested[0].payload["arguments"])


async def test_negative_usage_is_charged_at_the_estimate_and_warned_about() -> None:
    store = MemoryStore()
    result, events = await settle(store, Hostile(answer("done", i=-1_000_000, o=-5)), None)
    assert result.status == "completed" and result.cost_usd > 0
    warned = [e for e in events if e.type == "health.warning"]
    assert any(e.payload["kind"] == "bad_model_output" for e in warned)


async def test_a_tool_raising_system_exit_is_an_error_result_the_model_reads() -> None:
    store = MemoryStore()
    model = Hostile(calling("weird", "{}"))
    result, events = await settle(store, model, raising_tool(SystemExit(1)))
    assert result.status == "completed"
    failed = [e for e in events if e.type == "tool.failed"]
    assert failed[0].payload["output"].startswith("error: weird failed: SystemExit")


async def test_a_model_error_text_stays_out_of_the_visible_reason() -> None:
    store = MemoryStore()
    model = Hostile(raising(RuntimeError("echo: Be careful. SECRET PROMPT")))
    result, events = await settle(store, model, None)
    assert result.status == "failed" and "SECRET" not in (result.reason or "")
    failed = next(e for e in events if e.type == "run.failed")
    assert "SECRET PROMPT" in failed.payload["detail"]


async def test_a_real_cancellation_still_cancels_a_tool() -> None:
    started = asyncio.Event()

    @tool(name="weird")
    async def slow() -> str:
        """Sleeps."""
        started.set()
        await asyncio.sleep(30)
        return "late"

    store = MemoryStore()
    task = asyncio.create_task(settle(store, Hostile(calling("weird", "{}")), slow))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_chaos_crash_still_passes_through_a_tool() -> None:
    store = MemoryStore()
    with pytest.raises(SimulatedCrash):
        await settle(store, Hostile(calling("weird", "{}")), raising_tool(SimulatedCrash()))


_bad_text = st.text(
    alphabet=st.one_of(st.characters(), st.sampled_from(["\x00", "\ud800", "\udfff", "\\"])),
    max_size=12,
)
_bad_value = st.one_of(
    st.none(),
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    _bad_text,
)
_bad_exception = st.sampled_from(
    [RuntimeError("x"), KeyError("k"), TimeoutError(), asyncio.CancelledError(), SystemExit(2),
     KeyboardInterrupt(), ValueError("\ud800"), MemoryError()]
)  # fmt: skip
_bad_arguments = st.one_of(
    _bad_text,
    _bad_value,
    st.just("[" * 5_000),
    st.builds(lambda d: "{" + '"text":' * d + "1" + "}" * d, st.integers(1, 300)),
    st.dictionaries(_bad_text, _bad_value, max_size=3),
)
_bad_response = st.builds(
    lambda content, name, arguments, i, o: ModelResponse(
        content=content,
        tool_calls=(ToolCall(id="c", name=name, arguments=arguments),) if name is not None else (),
        finish_reason="stop",
        usage=ModelUsage(input_tokens=i, output_tokens=o),
        model="hostile",
    ),
    content=_bad_value,
    name=st.one_of(st.none(), st.just("echo"), st.just("weird"), _bad_text),
    arguments=_bad_arguments,
    i=_bad_value,
    o=_bad_value,
)
_bad_step = st.one_of(
    _bad_response,
    _bad_exception.map(raising),
    _bad_value.map(lambda v: lambda r: v),
)
_bad_tool = st.one_of(
    st.none(), _bad_exception.map(raising_tool), _bad_value.map(returning)
)  # fmt: skip


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(_bad_step, min_size=1, max_size=3), extra=_bad_tool)
def test_random_bad_output_never_escapes_the_loop(
    backend: str, tmp_path_factory: pytest.TempPathFactory, steps: list[Any], extra: Any
) -> None:
    async def go() -> None:
        store: Store = (
            MemoryStore()
            if backend == "memory"
            else SQLiteStore(tmp_path_factory.mktemp("h") / "t.db")
        )
        try:
            await settle(store, Hostile(*steps), extra)
        finally:
            await store.close()

    asyncio.run(go())


@pytest.mark.postgres
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=st.lists(_bad_step, min_size=1, max_size=3), extra=_bad_tool)
def test_random_bad_output_never_escapes_the_loop_on_postgres(steps: list[Any], extra: Any) -> None:
    async def go() -> None:
        async with postgres_store() as store:
            await settle(store, Hostile(*steps), extra)

    asyncio.run(go())


class Summariser(Hostile):
    """Answers every summary request with `step` (a response, or a function of the request)."""

    name = "summariser"

    def __init__(self, step: Step | ModelResponse) -> None:
        super().__init__()
        self.step = step

    async def complete(self, request: ModelRequest, *, on_text: TextSink | None = None) -> Any:
        self.calls += 1
        if not callable(self.step):
            return self.step
        got = self.step(request)
        return await got if asyncio.iscoroutine(got) else got


def _summary(content: Any = "Open tasks:\n- read on\nDone so far:\n- read", **usage: Any) -> Any:
    return answer(content, **usage)


async def _hang(request: ModelRequest) -> Any:
    await asyncio.sleep(60)


def _echoing(request: ModelRequest) -> Any:
    from tether.errors import ModelError

    raise ModelError("bad request: " + " ".join(m.content for m in request.messages))


SUMMARISERS: dict[str, Any] = {
    "negative usage": _summary(i=-(10**9), o=-(10**9)),
    "surrogate in the summary": _summary("Open tasks:\n- a\ud800\nDone so far:\n- b"),
    "returns None": lambda r: None,
    "raises RuntimeError": raising(RuntimeError("boom")),
    "raises SystemExit": raising(SystemExit(2)),
    "error echoing the request": _echoing,
    "hangs": _hang,
}


@pytest.mark.parametrize("name", list(SUMMARISERS))
async def test_a_hostile_summariser_falls_back_to_the_extractive_summary(name: str) -> None:
    """The summariser is a model too: its output is checked at the same boundary, its call
    is bounded in time, and a failure gives way to the extractive summary."""

    @tool(idempotent=True)
    def page(n: int) -> str:
        """A long page (private words: ORCHID-LANTERN)."""
        return f"page {n}: ORCHID-LANTERN " + "lorem ipsum " * 50

    turns = {"n": 0}

    def script(request: ModelRequest) -> Any:
        turns["n"] += 1
        return "done" if turns["n"] >= 12 else call("page", {"n": turns["n"]})

    step = SUMMARISERS[name]
    summariser = Summariser(step)
    agent = Agent(
        name="long", instructions="Read pages.", tools=[page],
        model=ScriptedModel(script, context_window=3_000), summary_model=summariser,
        limits=Limits(max_steps=20), max_output_tokens=200, model_timeout_s=0.5,
    )  # fmt: skip
    store = MemoryStore()
    result = await Runtime(store).start(agent, "read")
    assert result.status == "completed", result
    assert summariser.calls >= 1
    state = await Runtime(store).get(result.run_id)
    assert state.cost_usd > 0 and state.input_tokens >= 0 and state.output_tokens >= 0
    events = await read_events(store, result.run_id)
    compacted = [e for e in events if e.type == "context.compacted"]
    assert compacted
    for event in compacted:
        assert "ORCHID" not in (event.payload["rejected"] or "")
    assert (await verify_run(store, result.run_id)).ok


async def test_repeated_call_ids_in_one_turn_are_made_unique() -> None:
    """Results are matched to calls by id: with two calls named "c", the first result
    closed both, so a crash before the second left it with no result and no unknown
    outcome on resume."""
    twice = ModelResponse(
        content="",
        tool_calls=(
            ToolCall(id="c", name="echo", arguments='{"text": "a"}'),
            ToolCall(id="c", name="echo", arguments='{"text": "b"}'),
            ToolCall(id="c#1", name="echo", arguments='{"text": "c"}'),
        ),
        finish_reason="tool_calls",
        usage=ModelUsage(input_tokens=10, output_tokens=5),
        model="hostile",
    )
    store = MemoryStore()
    result, events = await settle(store, Hostile(twice), None)
    assert result.status == "completed"
    requested = [e.payload["call_id"] for e in events if e.type == "tool.requested"]
    assert len(requested) == 3 and len(set(requested)) == 3, requested
    outcomes = [e.payload["call_id"] for e in events if e.type in ("tool.completed", "tool.failed")]
    assert sorted(outcomes) == sorted(requested)
    assert any(e.type == "health.warning" and "same id" in e.payload["message"] for e in events)


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


async def test_a_model_exception_whose_text_cannot_be_read_is_a_model_failure() -> None:
    store = MemoryStore()
    result, _ = await settle(store, Hostile(raising(_BadStr())), None)
    assert result.status == "failed" and result.reason == "the model failed", result


class _HostileSource:
    """A tool server whose listing holds what JSON can carry but no journal can store."""

    name = "hostile-server"

    def open(self, run_id: str) -> Any:
        return self

    async def list_tools(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "lookup\ud800",
                "description": "Looks up \udfff things\x00.",
                "inputSchema": {"type": "object", "properties": {}, "maximum": math.inf},
            }
        ]

    def tools(self, listing: list[dict[str, Any]]) -> list[Any]:
        return []

    async def aclose(self) -> None:
        return None


async def test_a_tool_listing_with_bad_text_is_journaled_clean(store: Store) -> None:
    agent = Agent(
        name="sourced", instructions="x", tools=[_HostileSource()],
        model=Hostile(answer("done")), limits=Limits(max_steps=3),
    )  # fmt: skip
    result = await Runtime(store).start(agent, "go")
    assert result.status == "completed", result
    events = await read_events(store, result.run_id)
    listed = [e for e in events if e.type == "note" and e.payload.get("kind") == "tools.listed"]
    assert listed and "\ufffd" in listed[0].payload["tools"][0]["name"]
    assert (await verify_run(store, result.run_id)).ok


async def test_a_task_the_journal_cannot_store_is_a_usage_error() -> None:
    from tether.errors import UsageError
    from tether.worker import submit_run

    agent = Agent(name="t", instructions="x", tools=[], model=Hostile(), limits=Limits(max_steps=2))
    store = MemoryStore()
    with pytest.raises(UsageError, match="cannot be recorded"):
        await Runtime(store).start(agent, "a\ud800b")
    with pytest.raises(UsageError, match="cannot be recorded"):
        await submit_run(store, agent, "go", agent_spec="x:y", agent_args={"n": math.nan})
    assert await store.run_ids() == []
