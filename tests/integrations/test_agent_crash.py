"""Agents written for pydantic-ai and for the OpenAI Agents SDK (with each framework's fake
models), SIGKILLed between two tool calls and resumed in a fresh process: each tool ran
once and the answer is the one an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integrations.conftest import lines, need
from tether.journal import SQLiteStore, read_events

CHILD = Path(__file__).with_name("agent_crash_child.py")
ROOT = Path(__file__).parents[2]
MODULES = {"pydantic-ai": "pydantic_ai", "openai-agents": "agents"}


def child(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHILD), *args], capture_output=True, text=True, timeout=120,
        cwd=ROOT, env=os.environ,
    )  # fmt: skip


def clear(path: Path) -> None:
    path.write_text("")


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.parametrize("framework", ["pydantic-ai", "openai-agents"])
async def test_killed_between_two_tool_calls_resumes_with_each_tool_run_once(
    tmp_path: Path, effects: Path, framework: str
) -> None:
    need(MODULES[framework])
    whole = child("whole", framework, str(tmp_path / "whole.db"))
    assert whole.returncode == 0, whole.stderr[-2000:]
    expected = json.loads(whole.stdout.splitlines()[-1])
    assert expected["status"] == "completed"
    clear(effects)

    db = str(tmp_path / "t.db")
    first = child("start", framework, db)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    run_id = first.stdout.split()[0]
    assert lines(effects) == ["step_one a"]

    second = child("resume", framework, db, run_id)
    assert second.returncode == 0, second.stderr[-2000:]
    resumed = json.loads(second.stdout.splitlines()[-1])
    assert resumed["status"] == "completed"
    assert resumed["answer"] == expected["answer"] == "step_one:a + step_two:b"
    assert lines(effects) == ["step_one a", "step_two b"]  # once each

    store = SQLiteStore(db)
    events = await read_events(store, run_id)
    await store.close()
    assert any(e.type == "run.resumed" for e in events)
    assert [e.payload["name"] for e in events if e.type == "tool.completed"] == [
        "step_one", "step_two"
    ]  # fmt: skip
    models = {e.payload["model"] for e in events if e.type == "model.requested"}
    assert len(models) == 1 and not models & {"scripted"}  # the framework's model ran
