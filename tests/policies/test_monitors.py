"""Degradation monitors: each signal fires on its evidence, not on healthy work, and takes
its configured action (tell, pause for an operator, stop) once per episode."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tether import Agent, Runtime, tool
from tether.approvals import pending_approvals, resolve_approval
from tether.errors import SimulatedCrash, UsageError
from tether.journal import Lease, MemoryStore, SQLiteStore, read_events
from tether.models import ScriptedModel, call
from tether.policies import DegradationMonitor


@tool(read_only=True)
def status(job: str) -> str:
    """Status of a job (the same while nothing changes)."""
    return "running"


def agent(script: list[Any], *tools: Any, monitor: DegradationMonitor) -> Agent:
    return Agent(name="t", instructions="test", model=ScriptedModel(script),
                 tools=list(tools), policies=[monitor])  # fmt: skip


async def monitor_events(rt: Runtime, run_id: str) -> list[dict[str, Any]]:
    return [e.payload for e in await read_events(rt.store, run_id) if e.type == "health.monitor"]


async def test_a_loop_of_identical_calls_and_results_is_told_once() -> None:
    script = [call("status", {"job": "a"}) for _ in range(6)] + ["done"]
    rt = Runtime(MemoryStore())
    monitor = DegradationMonitor(stale_cycles=99)
    result = await rt.start(agent(script, status, monitor=monitor), "go")
    assert result.status == "completed"
    found = await monitor_events(rt, result.run_id)
    assert [f["signal"] for f in found] == ["loop"]  # quiet for a window after firing
    assert found[0]["times"] == 3 and found[0]["call"] == 'status({"job":"a"})'
    events = await read_events(rt.store, result.run_id)
    told = [e.payload["status"] for e in events if e.type == "tool.completed"]
    assert "Health monitor" in told[2] and "Health monitor" not in told[1]


async def test_polling_that_makes_progress_is_not_a_loop() -> None:
    progress = iter(f"{p}% done" for p in range(0, 100, 10))

    @tool(read_only=True)
    def poll(job: str) -> str:
        """Progress of a job."""
        return next(progress)

    script = [call("poll", {"job": "a"}) for _ in range(8)] + ["done"]
    rt = Runtime(MemoryStore())
    result = await rt.start(agent(script, poll, monitor=DegradationMonitor()), "go")
    assert await monitor_events(rt, result.run_id) == []


async def test_error_rate_and_malformed_calls_are_flagged_with_evidence() -> None:
    @tool
    def broken() -> str:
        """Always fails."""
        raise RuntimeError("down")

    script = [call("broken"), call("nope"), call("broken", "{bad json"), call("status", {}),
              "done"]  # fmt: skip
    rt = Runtime(MemoryStore())
    monitor = DegradationMonitor(stale_cycles=99)
    result = await rt.start(agent(script, broken, status, monitor=monitor), "go")
    found = await monitor_events(rt, result.run_id)
    assert found, "four failures in four calls must be noticed"
    signals = {f["signal"] for f in found[0]["findings"]}
    assert signals == {"error_rate", "malformed"}
    assert found[0]["findings"][0]["failed"] == 4


async def test_cycles_that_learn_nothing_new_are_flagged() -> None:
    @tool(read_only=True)
    def other(job: str) -> str:
        """Another view of the same jobs."""
        return "running"  # the same text as status: nothing new

    script = [call("status", {"job": "a"}), call("other", {"job": "b"}),
              call("status", {"job": "c"}), call("other", {"job": "d"}), "done"]  # fmt: skip
    rt = Runtime(MemoryStore())
    monitor = DegradationMonitor(stale_cycles=3, repeats=99)
    result = await rt.start(agent(script, status, other, monitor=monitor), "go")
    found = await monitor_events(rt, result.run_id)
    assert [(f["signal"], f["cycles"]) for f in found] == [("no_progress", 3)]


async def test_pause_action_pauses_the_run_for_an_operator_after_the_result() -> None:
    script = [call("status", {"job": "a"}) for _ in range(4)] + ["done"]
    store = MemoryStore()
    rt = Runtime(store)
    a = agent(script, status, monitor=DegradationMonitor(action="pause", stale_cycles=99))
    result = await rt.start(a, "go")
    assert result.status == "waiting_approval"
    (approval,) = await pending_approvals(store, run_id=result.run_id)
    assert approval.reason.startswith("paused by the health monitor")
    await resolve_approval(store, approval.request_id, decision="approved", actor="ops")
    result = await rt.resume(a, result.run_id)
    assert result.status == "completed"
    assert len(await monitor_events(rt, result.run_id)) == 1


async def test_stop_action_wraps_up_with_a_labelled_partial_answer() -> None:
    script = [call("status", {"job": "a"}) for _ in range(5)] + ["what I have"]
    rt = Runtime(MemoryStore())
    a = agent(script, status, monitor=DegradationMonitor(action="stop", stale_cycles=99))
    result = await rt.start(a, "go")
    assert result.status == "stopped" and result.partial
    assert result.answer is not None and result.answer.startswith("[PARTIAL")
    events = await read_events(rt.store, result.run_id)
    assert [e.payload["limit"] for e in events if e.type == "limit.reached"] == ["health"]


async def test_a_finding_is_not_taken_twice_across_a_crash(tmp_path: Path) -> None:
    crashes = {"n": 0}

    @tool(idempotent=True)
    def crash() -> str:
        """Crashes the process the first time."""
        crashes["n"] += 1
        if crashes["n"] == 1:
            raise SimulatedCrash()
        return "ok"

    script = [call("status", {"job": "a"}) for _ in range(3)] + [call("crash")]
    script += [call("status", {"job": "a"}), "done"]
    monitor = DegradationMonitor(stale_cycles=99)
    db = tmp_path / "r.db"
    rt = Runtime(SQLiteStore(db), worker_id="w1")
    with pytest.raises(SimulatedCrash):
        await rt.start(agent(script, status, crash, monitor=monitor), "go")
    run_id = (await rt.list())[0].run_id
    await rt.store.release_lease(Lease(run_id=run_id, owner="w1", epoch=1, expires_at=0))
    rt2 = Runtime(SQLiteStore(db), worker_id="w2")
    result = await rt2.resume(agent(script, status, crash, monitor=monitor), run_id)
    assert result.status == "completed"
    # The fourth identical status call would fire again if the finding were forgotten.
    assert [f["signal"] for f in await monitor_events(rt2, run_id)] == ["loop"]


def test_bad_thresholds_are_refused() -> None:
    with pytest.raises(UsageError):
        DegradationMonitor(repeats=1)
    with pytest.raises(UsageError):
        DegradationMonitor(error_rate=0)
