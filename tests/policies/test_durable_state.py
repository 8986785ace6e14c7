"""Policy state survives a killed process: checkpoints folded into the run state restore
it in O(1) however old it is, and an `after_model` tell is journaled with its turn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tether import Agent, Limits, Runtime, tool
from tether.errors import SimulatedCrash
from tether.journal import Lease, MemoryStore, SQLiteStore, read_events
from tether.journal._journal import load_run
from tether.loop import _driver_base
from tether.models import ScriptedModel, call
from tether.policies import DegradationMonitor, PublicationGuardrail
from tether.state import fold

from ._scenarios import RUNS, agent_named, child


async def test_an_open_breaker_stays_open_after_a_kill_far_past_the_resume_window(
    tmp_path: Path,
) -> None:
    db = tmp_path / "r.db"
    code, out = child("breaker", db, "tool")  # killed inside the 46th call of `other`
    assert code == -9, out
    run_id = out.split()[0]
    store = SQLiteStore(db)
    before = await read_events(store, run_id)
    opened = [e for e in before if e.type == "health.breaker"]
    assert [e.payload["state"] for e in opened] == ["open"]
    # The opening is far older than what a resume reads of the journal's tail.
    assert before[-1].seq - opened[0].seq > _driver_base.RESUME_WINDOW
    state = (await Runtime(store, ledger=False).get(run_id)).policy_state
    assert state["breaker"]["state"]["flaky"][0] == "closed"  # taken before the opening
    runs = RUNS["flaky"]
    result = await Runtime(store, ledger=False).resume(agent_named("breaker"), run_id)
    assert result.status == "completed"
    assert RUNS["flaky"] == runs  # the late call failed fast: the breaker was still open
    events = await read_events(store, run_id)
    refused = [
        e.payload for e in events if e.type == "tool.failed" and e.payload["name"] == "flaky"
    ]
    assert refused[-1]["error"] == "refused" and "breaker is open" in refused[-1]["output"]
    assert [e.payload["state"] for e in events if e.type == "health.breaker"] == ["open"]


async def test_a_tell_after_the_models_turn_survives_a_kill_before_its_result(
    tmp_path: Path,
) -> None:
    db = tmp_path / "r.db"
    code, out = child("tell", db, "tool")  # killed while the turn's call runs
    assert code == -9, out
    run_id = out.split()[0]
    store = SQLiteStore(db)
    requested = [e for e in await read_events(store, run_id) if e.type == "tool.requested"]
    assert requested[0].payload["notes"] == ["NOTE: prefer primary sources"]
    result = await Runtime(store, ledger=False).resume(agent_named("tell"), run_id)
    assert result.status == "completed"
    events = await read_events(store, run_id)
    [done] = [e.payload for e in events if e.type == "tool.completed"]
    assert "NOTE: prefer primary sources" in done["status"]
    assert done["status"].count("NOTE") == 1


async def test_a_guardrails_rejection_count_is_restored_from_its_checkpoint() -> None:
    # With a window of 0 the resumed guardrail sees no old event: its count of
    # rejections can only come from its checkpoint in the run state.
    guard = PublicationGuardrail(required_sections=["Sources"], max_rejections=1)
    guard.window = 0
    crashes = {"n": 0}

    @tool(idempotent=True)
    def noop() -> str:
        """Crashes the driver once."""
        crashes["n"] += 1
        if crashes["n"] == 1:
            raise SimulatedCrash()
        return "ok"

    script: list[Any] = ["draft one", call("noop"), "draft two"]
    store = MemoryStore()
    agent = Agent(name="g", instructions="t", model=ScriptedModel(script), tools=[noop],
                  policies=[guard])  # fmt: skip
    rt = Runtime(store, ledger=False, worker_id="w1")
    run_id = await rt.create(agent, "go")
    with pytest.raises(SimulatedCrash):
        await rt.resume(agent, run_id)
    assert (await rt.get(run_id)).policy_state["guardrail"]["state"] == {"rejections": 0}
    await store.release_lease(Lease(run_id=run_id, owner="w1", epoch=1, expires_at=0))
    result = await Runtime(store, ledger=False, worker_id="w2").resume(agent, run_id)
    assert result.status == "stopped" and result.reason is not None
    assert "2 times" in result.reason  # the first rejection was remembered


async def test_checkpoints_in_snapshots_equal_the_fold_of_the_stored_events() -> None:
    # Snapshots are written from the live state: a checkpoint must be a copy, not the
    # policy's own dict, which changes afterwards (the monitor's `fired` here).
    @tool
    def broken(n: int = 0) -> str:
        """Always fails."""
        raise RuntimeError("down")

    script: list[Any] = [call("broken", {"n": i}) for i in range(12)] + ["done"]
    store = MemoryStore()
    rt = Runtime(store, ledger=False, snapshot_every=3)
    monitor = DegradationMonitor(cycles=4, min_calls=2)
    agent = Agent(name="m", instructions="t", model=ScriptedModel(script), tools=[broken],
                  policies=[monitor], limits=Limits(max_steps=20))  # fmt: skip
    result = await rt.start(agent, "go")
    assert result.status == "completed"
    events = await read_events(store, result.run_id)
    assert sum(e.type == "health.monitor" for e in events) >= 2
    loaded = await load_run(store, result.run_id)
    assert loaded.state == fold(events)
