"""Every command on a damaged store: a one-line error naming what is wrong, never a
traceback, and never a run continued on damaged data."""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tether.journal import sqlite_functions

pytestmark = pytest.mark.chaos

AGENT_FILE = '''
from tether import Agent, Limits, tool
from tether.models import ScriptedModel, call

@tool
def pay(amount: int) -> str:
    """Not idempotent."""
    return f"paid {amount}"

agent = Agent(
    name="payer",
    instructions="Pay.",
    tools=[pay],
    model=ScriptedModel([call("pay", {"amount": n}) for n in range(1, 6)] + ["done"]),
    limits=Limits(max_steps=10),
)
'''


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env=env,
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A store with a completed run and a run a crash left `running`."""
    folder = tmp_path_factory.mktemp("tpl")
    (folder / "agent.py").write_text(AGENT_FILE)
    done = cli("run", "agent.py:agent", "--task", "go", "--json", "--quiet", cwd=folder)
    assert done.returncode == 0, done.stderr
    completed = json.loads(done.stdout)["run_id"]
    import os

    env = {**os.environ, "TETHER_CHAOS": "kill_after_seq=12"}
    killed = cli("run", "agent.py:agent", "--task", "go", "--quiet", cwd=folder, env=env)
    assert killed.returncode == -9
    db = sqlite3.connect(folder / "tether.db")
    sqlite_functions(db)
    running = db.execute("SELECT run_id FROM runs WHERE status='running'").fetchone()[0]
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return folder, completed, running


def sql(*statements: str) -> Callable[[Path, str, str], None]:
    def damage(db_path: Path, completed: str, running: str) -> None:
        db = sqlite3.connect(db_path)
        sqlite_functions(db)
        for s in statements:
            db.execute(s.format(completed=completed, running=running))
        db.commit()
        db.close()

    return damage


def overwrite_page(which: str) -> Callable[[Path, str, str], None]:
    def damage(db_path: Path, completed: str, running: str) -> None:
        db = sqlite3.connect(db_path)
        sqlite_functions(db)
        (root,) = db.execute("SELECT rootpage FROM sqlite_schema WHERE name=?", (which,)).fetchone()
        (size,) = db.execute("PRAGMA page_size").fetchone()
        db.close()
        rng = random.Random(root)
        with db_path.open("r+b") as f:
            f.seek((root - 1) * size + 8)
            f.write(bytes(rng.randrange(256) for _ in range(size - 16)))

    return damage


DAMAGES: dict[str, Callable[[Path, str, str], None]] = {
    "event 1 missing": sql("DELETE FROM events WHERE seq=1"),
    "lease epoch not a number": sql("UPDATE runs SET lease_epoch='x', lease_owner=7"),
    "head behind the journal": sql("UPDATE runs SET head_seq=head_seq-3 WHERE run_id='{running}'"),
    "status unknown": sql("UPDATE runs SET status='sleeping'"),
    "tenant and parent of the wrong type": sql("UPDATE runs SET tenant=5, parent_run_id=x'00'"),
    "summary columns of the wrong type": sql("UPDATE runs SET steps='many', cost_usd=x'00ff'"),
    "event bytes as text": sql("UPDATE events SET data=CAST(data AS TEXT) WHERE seq=4"),
    "runs page overwritten": overwrite_page("runs"),
    "events page overwritten": overwrite_page("event_rows"),
    "snapshots dropped": sql("DROP TABLE snapshots"),
}

COMMANDS = [
    ["ls"], ["ls", "--json"], ["show", "{completed}"], ["show", "{running}", "--json"],
    ["why", "{completed}:5"], ["audit", "--run", "{running}"], ["export", "{completed}"],
    ["doctor"], ["approvals"], ["resume", "{running}", "--quiet"],
    ["resume", "{completed}", "--quiet"], ["fork", "{running}", "--at", "3"],
]  # fmt: skip


@pytest.mark.parametrize("name", list(DAMAGES))
def test_no_command_prints_a_traceback_on_a_damaged_store(
    tmp_path: Path, template: tuple[Path, str, str], name: str
) -> None:
    folder, completed, running = template
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    DAMAGES[name](tmp_path / "tether.db", completed, running)
    for command in COMMANDS:
        args = [a.format(completed=completed, running=running) for a in command]
        done = cli(*args, cwd=tmp_path)
        both = done.stdout + done.stderr
        assert "Traceback" not in both, (name, args, both[-3000:])
        assert done.returncode in (0, 1, 2, 3, 4), (name, args, done.returncode, both[-2000:])
        if done.returncode not in (0, 3, 4) and args[0] != "doctor":
            assert done.stderr.strip(), (name, args)
        if args[0] == "resume" and done.returncode == 0:
            # Only a run whose journal verifies may go on.
            check = cli("doctor", args[1], cwd=tmp_path)
            assert check.returncode == 0 or name.startswith(("summary", "status")), (
                name, args, check.stdout,
            )  # fmt: skip
