"""Many runs in one process: a step keeps nothing alive that other runs' steps must pay for.

With 100 runs on one event loop, whatever a suspended run still holds survives the
collector's young generations and is scanned again and again (bench/concurrency.py
measures it); a task per call adds a turn of the event loop and its objects to every step.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from tether import Agent, Limits, Runtime, tool
from tether.models import ModelRequest, ModelResponse, ScriptedModel, Turn


async def test_a_single_tool_call_runs_in_the_runs_own_task() -> None:
    seen: dict[str, asyncio.Task[Any] | None] = {}

    @tool  # the default 60 s timeout applies
    async def probe() -> str:
        """Report the task it runs in."""
        seen["tool"] = asyncio.current_task()
        return "ok"

    class Model(ScriptedModel):
        async def complete(self, request: ModelRequest, *, on_text: Any = None) -> ModelResponse:
            seen["model"] = asyncio.current_task()
            return await super().complete(request, on_text=on_text)

    agent = Agent(
        name="probe",
        instructions="Probe.",
        tools=[probe],
        model=Model([Turn(calls=(("probe", {}),)), "done"]),
        limits=Limits(max_steps=5),
    )
    runtime = Runtime("memory://", ledger=False)
    result = await runtime.start(agent, "go")
    assert result.status == "completed"
    assert seen["tool"] is not None
    assert seen["tool"] is seen["model"]


async def test_the_request_is_let_go_before_the_tools_run() -> None:
    """The request holds the whole context; a run waiting on its tools must not keep it."""
    marks: dict[str, Any] = {}

    @tool
    async def look() -> str:
        """Check whether the last request is still alive."""
        gc.collect()
        target = marks["messages_id"]
        marks["alive"] = any(
            id(o) == target and type(o) is marks["type"] and len(o) == marks["length"]
            for o in gc.get_objects()
        )
        return "looked"

    class Model(ScriptedModel):
        async def complete(self, request: ModelRequest, *, on_text: Any = None) -> ModelResponse:
            if "messages_id" not in marks:
                marks["messages_id"] = id(request.messages)
                marks["type"] = type(request.messages)
                marks["length"] = len(request.messages)
            return await super().complete(request, on_text=on_text)

    agent = Agent(
        name="look",
        instructions="Look.",
        tools=[look],
        model=Model([Turn(calls=(("look", {}),)), "done"]),
        limits=Limits(max_steps=5),
    )
    runtime = Runtime("memory://", ledger=False)
    result = await runtime.start(agent, "go")
    assert result.status == "completed"
    assert marks["alive"] is False


def collector_references(messages: Any) -> int:
    """References the cyclic collector follows from `messages` through objects made with
    it (not into the cache's lists, which are old by the time runs wait on models)."""
    seen, todo, count = set(), [messages], 0
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        for ref in gc.get_referents(obj):
            count += 1
            if isinstance(ref, tuple) or type(ref) is type(messages):
                todo.append(ref)
    return count


async def test_a_waiting_runs_request_costs_the_collector_the_same_at_any_length() -> None:
    """What a run holds while its model works is scanned at every young collection, once
    per waiting run: it must not grow with the context (a tuple of it did)."""
    refs: list[tuple[int, int]] = []

    @tool
    async def noop() -> str:
        """Do nothing."""
        return "x"

    class Model(ScriptedModel):
        async def complete(self, request: ModelRequest, *, on_text: Any = None) -> ModelResponse:
            refs.append((len(request.messages), collector_references(request.messages)))
            return await super().complete(request, on_text=on_text)

    agent = Agent(
        name="noop",
        instructions="Loop.",
        tools=[noop],
        model=Model([Turn(calls=(("noop", {}),))] * 60 + ["done"]),
        limits=Limits(max_steps=100),
    )
    runtime = Runtime("memory://", ledger=False)
    result = await runtime.start(agent, "go")
    assert result.status == "completed"
    (short, first), (long, last) = refs[0], refs[-1]
    assert long > short + 100
    assert last <= max(first, 16)
