"""Synchronous tools: a blocked one is abandoned past its timeout, starves nothing, and
never keeps the process from exiting."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from tether import Agent, Limits, Runtime, tool
from tether.journal import MemoryStore, read_events
from tether.models import ScriptedModel, Turn, call
from tether.tools._executor import SyncExecutor, use_executor

release = threading.Event()


@tool(timeout_s=0.2)
def stuck(n: int) -> str:
    """Blocks until the test ends."""
    release.wait(60)
    return "late"


@tool
def trivial() -> str:
    """Answers at once."""
    return "quick"


async def test_blocked_sync_tools_are_abandoned_and_starve_nothing() -> None:
    blocked = Turn(calls=tuple(("stuck", {"n": i}) for i in range(12)))
    agent = Agent(
        name="s", instructions="x", tools=[stuck, trivial],
        model=ScriptedModel([blocked, call("trivial"), "done"]), limits=Limits(max_steps=5),
    )  # fmt: skip
    store = MemoryStore()
    try:
        result = await Runtime(store).start(agent, "go")
    finally:
        release.set()
    assert result.status == "completed"
    events = await read_events(store, result.run_id)
    outcomes = [e.payload for e in events if e.type in ("tool.completed", "tool.failed")]
    timeouts = [p for p in outcomes if p["error"] == "timeout"]
    assert len(timeouts) == 12
    assert all("abandoned" in p["output"] for p in timeouts)
    assert [p["output"].split("\n")[0] for p in outcomes if p["name"] == "trivial"] == ["quick"]


async def test_an_executor_refuses_new_threads_past_its_abandoned_bound() -> None:
    gate = threading.Event()
    executor = SyncExecutor(limit=2, max_abandoned=1)
    with use_executor(executor):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(executor.run(lambda: gate.wait(60)), 0.05)
        assert executor.abandoned == 1 and executor.stuck == 1
        try:
            await executor.run(lambda: None)
        except RuntimeError as exc:
            assert "abandoned" in str(exc)
        else:
            raise AssertionError("a new thread was started past the bound")
    gate.set()


def test_a_blocked_sync_tool_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import threading, sys
        from tether import Agent, Limits, Runtime, tool
        from tether.models import ScriptedModel, call

        @tool(timeout_s=0.2)
        def stuck() -> str:
            \"\"\"Never returns.\"\"\"
            threading.Event().wait()
            return "never"

        agent = Agent(name="s", instructions="x", tools=[stuck],
                      model=ScriptedModel([call("stuck"), "done"]), limits=Limits(max_steps=5))
        result = Runtime(sys.argv[1]).start_sync(agent, "go")
        print(result.status)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{tmp_path / 't.db'}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "completed"
