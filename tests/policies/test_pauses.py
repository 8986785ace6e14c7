"""A policy's pause is a durable interrupt at every hook, exactly like an approval: the run
waits holding no process, an operator approves or rejects it, and a process killed between
the decision and its effect takes the effect once, never asks twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether import Runtime
from tether.approvals import pending_approvals, resolve_approval
from tether.journal import MemoryStore, SQLiteStore, read_events

from ._scenarios import RUNS, agent_named, child

HOOKS = ["before_model", "after_model", "final", "after_tool", "before_answer"]


async def approvals(store: object, run_id: str) -> list[dict[str, object]]:
    return [
        e.payload
        for e in await read_events(store, run_id)  # type: ignore[arg-type]
        if e.type == "approval.requested"
    ]


@pytest.mark.parametrize("hook", HOOKS)
async def test_a_pause_at_each_hook_survives_kills_before_and_after_its_approval(
    hook: str, tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    name = f"pause-{hook}"
    # 1. The child is killed right after the pause is journaled.
    code, out = child(name, db, "approval.requested")
    assert code == -9, out
    run_id = out.split()[0]
    rt = Runtime(SQLiteStore(db), ledger=False)
    state = await rt.get(run_id)
    assert state.status == "waiting_approval"
    [request] = await pending_approvals(rt.store, run_id=run_id)
    # A turn's calls are gated one by one (approved, each runs); other hooks pause the run.
    assert request.tool == ("lookup" if hook == "after_model" else "policy:pause-test")
    assert request.reason  # the policy's reason, for the operator
    # Driving it now does nothing: it waits for an operator, holding no process.
    assert (await rt.resume(agent_named(name), run_id)).status == "waiting_approval"
    # 2. Approved; the next driver is killed after its resume, before the effect.
    await resolve_approval(rt.store, request.request_id, decision="approved", actor="op")
    code, out = child(name, db, "run.resumed", run_id=run_id)
    assert code == -9, out
    # 3. A fresh driver takes the effect, once.
    runs_before = RUNS["lookup"]
    result = await Runtime(SQLiteStore(db), ledger=False).resume(agent_named(name), run_id)
    assert result.status == "completed", result
    events = await read_events(rt.store, run_id)
    assert len(await approvals(rt.store, run_id)) == 1  # never asked twice
    pauses = [e for e in events if e.type == "health.policy" or e.type.startswith("health.")]
    assert all(e.payload.get("action") == "pause" for e in pauses)
    assert [e.type for e in events].count("run.completed") == 1
    if hook == "after_model":
        # Every call of the paused turn was gated; approved, it ran once (in this process).
        assert RUNS["lookup"] == runs_before + 1
        assert result.answer == "the answer"
    if hook in ("final", "before_answer"):
        assert result.answer in ("PAUSE: the answer", "the report")  # the held answer
        held = [e for e in events if e.type == "model.completed"][-1]
        assert held.visibility == "user_hidden"
    if hook in ("before_model", "after_tool"):
        assert result.answer == "the answer"
        assert [e.type for e in events].count("cycle.started") == 3


@pytest.mark.parametrize("hook", ["before_model", "after_tool"])
async def test_rejecting_a_pause_on_going_on_stops_the_run_with_the_reason(hook: str) -> None:
    rt = Runtime(MemoryStore(), ledger=False)
    agent = agent_named(f"pause-{hook}")
    first = await rt.start(agent, "go")
    assert first.status == "waiting_approval"
    [request] = await pending_approvals(rt.store, run_id=first.run_id)
    await resolve_approval(
        rt.store, request.request_id, decision="rejected", comment="not now", actor="op"
    )
    result = await rt.resume(agent, first.run_id)
    assert result.status == "stopped"
    assert "op rejected going on" in (result.reason or "") and "not now" in (result.reason or "")
    assert (result.answer or "").startswith("[PARTIAL")


@pytest.mark.parametrize("hook", ["final", "before_answer"])
async def test_a_rejected_answer_is_not_published_and_the_agent_is_told(hook: str) -> None:
    rt = Runtime(MemoryStore(), ledger=False)
    agent = agent_named(f"pause-{hook}")
    first = await rt.start(agent, "go")
    assert first.status == "waiting_approval"
    [request] = await pending_approvals(rt.store, run_id=first.run_id)
    assert request.arguments["answer"] in ("PAUSE: the answer", "the report")
    await resolve_approval(
        rt.store, request.request_id, decision="rejected", comment="cite more", actor="op"
    )
    result = await rt.resume(agent, first.run_id)
    assert result.status == "completed"
    assert result.answer in ("revised answer", "the revised text")
    events = await read_events(rt.store, first.run_id)
    told = [
        e.payload["content"] for e in events if e.type == "message.user" and e.actor == "runtime"
    ]
    assert any("op rejected your final answer" in t and "cite more" in t for t in told)


async def test_a_pause_after_the_models_turn_gates_its_calls_and_a_rejection_is_their_result() -> (
    None
):
    rt = Runtime(MemoryStore(), ledger=False)
    agent = agent_named("pause-after_model")
    runs = RUNS["lookup"]
    first = await rt.start(agent, "go")
    assert first.status == "waiting_approval"
    assert RUNS["lookup"] == runs  # the call did not run
    [request] = await pending_approvals(rt.store, run_id=first.run_id)
    assert request.tool == "lookup" and request.reason == "the model said PAUSE"
    await resolve_approval(rt.store, request.request_id, decision="rejected", actor="op")
    result = await rt.resume(agent, first.run_id)
    assert result.status == "completed" and RUNS["lookup"] == runs
    events = await read_events(rt.store, first.run_id)
    failed = [e.payload for e in events if e.type == "tool.failed"]
    assert failed[0]["error"] == "rejected"
