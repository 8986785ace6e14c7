"""Same call, different data; stale results."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tether import Agent, Runtime, tool
from tether.errors import SimulatedCrash
from tether.journal import Lease, MemoryStore, read_events
from tether.models import ModelRequest, ScriptedModel, call
from tether.policies import Freshness, SameCallDifferentData


def agent(model: Any, *tools: Any, policies: list[Any]) -> Agent:
    return Agent(name="t", instructions="test", model=model, tools=list(tools),
                 policies=policies)  # fmt: skip


async def test_a_read_only_call_returning_other_data_is_flagged_with_both_results() -> None:
    prices = iter(["price: 100\nstock: 7", "price: 100\nstock: 7", "price: 120\nstock: 7"])

    @tool(read_only=True)
    def quote(symbol: str, currency: str = "USD") -> str:
        """A price quote."""
        return next(prices)

    script = [
        call("quote", {"symbol": "ACME"}),
        call("quote", {"currency": "USD", "symbol": "ACME"}),  # same call, same data
        call("quote", {"symbol": "ACME"}),  # same call, different data
        "done",
    ]
    rt = Runtime(MemoryStore())
    result = await rt.start(
        agent(ScriptedModel(script), quote, policies=[SameCallDifferentData()]), "go"
    )
    assert result.status == "completed"
    events = await read_events(rt.store, result.run_id)
    flagged = [e for e in events if e.type == "health.inconsistent"]
    assert len(flagged) == 1
    evidence = flagged[0].payload
    assert evidence["earlier_output"] == "price: 100\nstock: 7"
    assert evidence["newer_output"] == "price: 120\nstock: 7"
    assert evidence["changes"] == "-price: 100\n+price: 120"
    results = [e.payload for e in events if e.type == "tool.completed"]
    assert "Inconsistent data" not in results[1]["status"]
    told = results[2]["status"]
    assert "Inconsistent data" in told and "This one is newer" in told and "+price: 120" in told
    # The health event commits with the result it is about.
    assert (
        flagged[0].seq
        == next(e.seq for e in events if e.type == "tool.completed" and e.payload is results[2]) + 1
    )


async def test_tools_that_may_change_the_world_are_not_compared() -> None:
    counter = iter(range(10))

    @tool
    def bump() -> str:
        """Not read-only: a different answer each time is expected."""
        return str(next(counter))

    rt = Runtime(MemoryStore())
    script = [call("bump"), call("bump"), "done"]
    result = await rt.start(
        agent(ScriptedModel(script), bump, policies=[SameCallDifferentData()]), "go"
    )
    events = await read_events(rt.store, result.run_id)
    assert not [e for e in events if e.type == "health.inconsistent"]


async def test_results_past_their_freshness_are_flagged_once() -> None:
    @tool(fresh_for_s=0.2, idempotent=True)
    def rate() -> str:
        """An exchange rate."""
        return "1.08"

    @tool
    async def wait() -> str:
        """Time passes."""
        await asyncio.sleep(0.3)
        return "waited"

    script = [call("rate"), call("wait"), call("wait"), "done"]
    rt = Runtime(MemoryStore())
    result = await rt.start(agent(ScriptedModel(script), rate, wait, policies=[Freshness()]), "go")
    assert result.status == "completed"
    events = await read_events(rt.store, result.run_id)
    results = [e for e in events if e.type == "tool.completed"]
    assert results[0].payload["fresh_for_s"] == 0.2
    assert "Stale (marked in your context): rate (event" in results[1].payload["status"]
    assert "· 1 stale" in results[1].payload["status"].splitlines()[0]  # the runway line
    assert "⚠ Stale" not in results[2].payload["status"]  # told once
    assert "· 1 stale" in results[2].payload["status"].splitlines()[0]
    stale = [e.payload for e in events if e.type == "health.stale"]
    assert len(stale) == 1 and stale[0]["seqs"] == [results[0].seq]


async def test_stale_results_are_marked_in_the_context_not_in_the_journal_and_after_resume() -> (
    None
):
    seen: list[ModelRequest] = []
    crashes = {"n": 0}

    @tool(fresh_for_s=0.2, idempotent=True)
    def rate() -> str:
        """An exchange rate."""
        return "1.08"

    @tool(idempotent=True)
    async def wait() -> str:
        """Time passes; the driver crashes once."""
        await asyncio.sleep(0.3)
        crashes["n"] += 1
        if crashes["n"] == 2:
            raise SimulatedCrash()
        return "waited"

    def script(request: ModelRequest) -> Any:
        seen.append(request)
        turns = [call("rate"), call("wait"), call("wait"), "done"]
        return turns[sum(1 for m in request.messages if m.role == "assistant")]

    store = MemoryStore()
    agent_ = agent(ScriptedModel(script), rate, wait, policies=[Freshness()])
    rt = Runtime(store, ledger=False, worker_id="w1")
    run_id = await rt.create(agent_, "go")
    with pytest.raises(SimulatedCrash):
        await rt.resume(agent_, run_id)

    def rate_message(request: ModelRequest) -> str:
        [m] = [m for m in request.messages if m.role == "tool" and m.name == "rate"]
        return m.content

    assert "STALE" not in rate_message(seen[1])  # fresh when the second turn was asked
    assert "⚠ STALE" in rate_message(seen[2])  # marked once it aged past 0.2 s
    await store.release_lease(Lease(run_id=run_id, owner="w1", epoch=1, expires_at=0))
    result = await Runtime(store, ledger=False, worker_id="w2").resume(agent_, run_id)
    assert result.status == "completed"
    assert "⚠ STALE" in rate_message(seen[-1])  # marked again by the resumed driver
    events = await read_events(store, run_id)
    [journaled] = [e for e in events if e.type == "tool.completed" and e.payload["name"] == "rate"]
    assert journaled.payload["output"] == "1.08" and "STALE" not in journaled.payload["status"]
    assert len([e for e in events if e.type == "health.stale"]) == 1


async def test_remembered_results_are_left_to_the_collector_untracked() -> None:
    """A run remembers up to MAX_KEYS results: as tuples of atomic values the cyclic
    collector stops traversing them, so many live runs do not make every collection dearer."""
    import gc

    @tool(read_only=True)
    def page(n: int) -> str:
        """A page."""
        return f"page {n}"

    policy = SameCallDifferentData()
    script = [call("page", {"n": i}) for i in range(5)] + ["done"]

    class Keep(SameCallDifferentData):
        def for_run(self) -> SameCallDifferentData:
            return policy  # the test reads the run's own instance

    result = await Runtime(MemoryStore()).start(
        agent(ScriptedModel(script), page, policies=[Keep()]), "go"
    )
    assert result.status == "completed" and len(policy.seen) == 5
    gc.collect()
    assert not any(gc.is_tracked(seen) for seen in policy.seen.values())
