"""Circuit breakers: open after repeated failures, hide the tool, fail fast, half-open,
close; state changes journaled once, even across a crash."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tether import Agent, Runtime, tool
from tether.errors import SimulatedCrash, UsageError
from tether.journal import Lease, MemoryStore, SQLiteStore, read_events
from tether.models import ModelRequest, ModelResponse, ScriptedModel, call
from tether.models._base import TextSink
from tether.policies import CircuitBreaker


class Recording(ScriptedModel):
    def __init__(self, script: Any, **kw: Any) -> None:
        super().__init__(script, **kw)
        self.requests: list[ModelRequest] = []

    async def complete(
        self, request: ModelRequest, *, on_text: TextSink | None = None
    ) -> ModelResponse:
        self.requests.append(request)
        return await super().complete(request, on_text=on_text)


def flaky_tool(fails: int, counts: dict[str, int]) -> Any:
    @tool(idempotent=True)
    def flaky(n: int = 0) -> str:
        """Fails `fails` times, then works."""
        counts["runs"] += 1
        if counts["runs"] <= fails:
            raise RuntimeError("upstream 503")
        return f"ok {n}"

    return flaky


def agent(model: Any, *tools: Any, breaker: CircuitBreaker) -> Agent:
    return Agent(name="t", instructions="test", model=model, tools=list(tools),
                 policies=[breaker])  # fmt: skip


def tool_names(request: ModelRequest) -> list[str]:
    return [t.name for t in request.tools]


async def test_repeated_failures_open_the_breaker_hide_the_tool_and_fail_fast() -> None:
    counts = {"runs": 0}
    flaky = flaky_tool(10, counts)
    model = Recording([call("flaky", {"n": i}) for i in range(5)] + ["gave up"])
    rt = Runtime(MemoryStore())
    breaker = CircuitBreaker(failures=3, backoff_s=600)
    result = await rt.start(agent(model, flaky, breaker=breaker), "go")
    assert result.status == "completed"
    assert counts["runs"] == 3  # calls 4 and 5 failed fast, never ran
    events = await read_events(rt.store, result.run_id)
    changes = [e.payload for e in events if e.type == "health.breaker"]
    assert [(c["state"], c["failures"]) for c in changes] == [("open", 3)]
    # Offered while closed, hidden once open.
    assert "flaky" in tool_names(model.requests[2]) and "flaky" not in tool_names(model.requests[3])
    results = [e.payload for e in events if e.type in ("tool.completed", "tool.failed")]
    assert "circuit breaker open" in results[2]["status"]  # the model is told why
    assert results[3]["error"] == "refused" and "not called" in results[3]["output"]


async def test_half_open_trial_closes_on_success_and_reopens_longer_on_failure() -> None:
    counts = {"runs": 0}
    flaky = flaky_tool(3, counts)  # fails 3 times, then works
    model = Recording([call("flaky", {"n": i}) for i in range(5)] + ["done"])
    rt = Runtime(MemoryStore())
    breaker = CircuitBreaker(failures=2, backoff_s=0.2)

    async def slow_model_turns() -> Any:
        return await rt.start(agent(model, flaky, breaker=breaker), "go")

    original = model.complete

    async def paced(request: ModelRequest, *, on_text: TextSink | None = None) -> ModelResponse:
        await asyncio.sleep(0.25)  # let each backoff pass between turns
        return await original(request, on_text=on_text)

    model.complete = paced  # type: ignore[method-assign]
    result = await slow_model_turns()
    assert result.status == "completed"
    events = await read_events(rt.store, result.run_id)
    states = [(e.payload["state"], e.payload.get("backoff_s")) for e in events
              if e.type == "health.breaker"]  # fmt: skip
    # fail, fail → open; trial fails → open again with twice the backoff; trial works → closed
    assert states == [
        ("open", 0.2),
        ("half_open", 0.2),
        ("open", 0.4),
        ("half_open", 0.4),
        ("closed", None),
    ]
    assert counts["runs"] == 4


async def test_an_opened_breaker_survives_a_crash_and_is_not_opened_twice(
    tmp_path: Path,
) -> None:
    counts = {"runs": 0, "crash": 0}
    flaky = flaky_tool(10, counts)

    @tool(idempotent=True)
    def other() -> str:
        """Crashes the process once."""
        counts["crash"] += 1
        if counts["crash"] == 1:
            raise SimulatedCrash()
        return "fine"

    script = [call("flaky"), call("flaky"), call("other"), call("flaky"), "done"]
    breaker = CircuitBreaker(failures=2, backoff_s=600)
    db = tmp_path / "r.db"
    rt = Runtime(SQLiteStore(db), worker_id="w1")
    with pytest.raises(SimulatedCrash):
        await rt.start(agent(ScriptedModel(script), flaky, other, breaker=breaker), "go")
    run_id = (await rt.list())[0].run_id
    await rt.store.release_lease(Lease(run_id=run_id, owner="w1", epoch=1, expires_at=0))
    rt2 = Runtime(SQLiteStore(db), worker_id="w2")
    result = await rt2.resume(agent(ScriptedModel(script), flaky, other, breaker=breaker), run_id)
    assert result.status == "completed"
    assert counts["runs"] == 2  # the fourth call failed fast after the resume
    events = await read_events(rt2.store, run_id)
    assert [e.payload["state"] for e in events if e.type == "health.breaker"] == ["open"]
    refused = [
        e.payload for e in events if e.type == "tool.failed" and e.payload["name"] == "flaky"
    ]
    assert refused[-1]["error"] == "refused"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(UsageError):
        CircuitBreaker(failures=0)
    with pytest.raises(UsageError):
        CircuitBreaker(backoff_s=10, max_backoff_s=5)
