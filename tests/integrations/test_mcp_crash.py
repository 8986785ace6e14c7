"""A run that commits through mcp-server-git is SIGKILLed once the `git_commit` call is
journaled and resumed in a fresh process: the repository gets exactly one commit, and the
resumed run takes the server's tool list from its journal (its source refuses to list)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integrations.conftest import commits, need

need("mcp", "mcp_server_git")

from tether.journal import SQLiteStore, read_events  # noqa: E402

CHILD = Path(__file__).with_name("mcp_crash_child.py")
ROOT = Path(__file__).parents[2]


def child(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHILD), *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.chaos
@pytest.mark.slow
@pytest.mark.parametrize("kill", ["after-result", "in-flight"])
async def test_killed_after_git_commit_resumes_with_exactly_one_commit(
    tmp_path: Path, git_repo: Path, kill: str
) -> None:
    db = str(tmp_path / "t.db")
    first = child("start", db, str(git_repo), kill)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    run_id = first.stdout.split()[0]
    assert commits(git_repo) == ["add notes", "initial"]

    second = child("resume", db, str(git_repo), run_id)
    assert second.returncode == 0, second.stderr[-2000:]
    assert json.loads(second.stdout)["status"] == "completed"
    assert commits(git_repo) == ["add notes", "initial"]  # never committed twice

    store = SQLiteStore(db)
    events = await read_events(store, run_id)
    await store.close()
    listed = [e for e in events if e.type == "note" and e.payload["kind"] == "tools.listed"]
    assert len(listed) == 1
    commit_calls = [
        e for e in events if e.type == "tool.requested" and e.payload["name"] == "git_commit"
    ]
    assert len(commit_calls) == 1 and commit_calls[0].payload["idempotent"] is False
    outcomes = [
        e.type for e in events
        if e.type.startswith("tool.") and e.type != "tool.requested"
        and e.payload.get("call_id") == commit_calls[0].payload["call_id"]
    ]  # fmt: skip
    # Completed before the kill: its result is reused. In flight: reported as unknown.
    assert outcomes == (["tool.completed"] if kill == "after-result" else ["tool.unknown"])
    assert any(e.type == "run.resumed" for e in events)
