"""`tether chaos`: real SIGKILLs, resumes in fresh processes, damaged store copies.

Claims: `tether chaos --demo --runs 20 --seed 1` passes on a clean checkout and injects
every kind of fault it knows at least once (the report counts them), and every journal
it wrote replays without divergence (`tether replay`'s engine); an agent whose tool
is wrongly declared idempotent makes it fail with exit 1 and a command that reproduces
the failing run (which fails again), while the same agent declared correctly passes the
same plan; user mistakes are one line and exit 2.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tether.demo import demo_agent
from tether.events import decode_event
from tether.journal import SQLiteStore
from tether.testing import REPORTED_KINDS, assert_replays

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

HERE = Path(__file__).parent
AGENTS = str(HERE / "agents.py")
TETHER = [sys.executable, "-m", "tether"]
WORLD = ["--task", "pay", "--agent-args", '{"folder": "{run_dir}"}']
"""Each run's payments agent keeps its world in the run's own folder."""
KILL_HEAVY = """\
max_kills = 6
kill_share = 1.0
kill_before_share = 0.7
damage_share = 0.0
tiny_budget_share = 0.0
model_malformed_rate = 0.0
"""


def chaos(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TETHER, "chaos", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)  # fmt: skip


def test_demo_chaos_passes_and_injects_every_kind_of_fault(tmp_path: Path) -> None:
    done = chaos("--demo", "--runs", "20", "--seed", "1", "--json", "--keep", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["runs"] == 20 and report["failed_runs"] == []
    missing = [kind for kind in REPORTED_KINDS if report["faults"][kind] < 1]
    assert not missing, report["faults"]
    results = report["results"]
    assert sum(r["kills"] for r in results) == report["faults"]["kill"]
    assert any(r["kills"] >= 2 for r in results)  # resumed repeatedly within one run
    assert all(r["processes"] == r["kills"] + 1 for r in results)
    assert {r["status"] for r in results} <= {"completed", "stopped", "failed"}
    assert any(r["status"] == "stopped" for r in results if r["budget"])  # a tiny budget bit
    asyncio.run(_every_journal_replays(tmp_path, results))


async def _every_journal_replays(workdir: Path, results: list[dict[str, object]]) -> None:
    """Journals written under SIGKILLs and faults replay event for event (crashes and all),
    and show the faults the report counted: outages, corrupted and malformed results,
    resumes after kills."""
    seen: set[str] = set()
    for r in results:
        store = SQLiteStore(workdir / f"run-{r['run']}" / "t.db")
        try:
            rows = await store.read_rows(str(r["run_id"]))
        finally:
            await store.close()
        journal = workdir / f"run-{r['run']}" / "run.jsonl"
        events = [decode_event(row.raw, run_id=row.run_id, seq=row.seq) for row in rows]
        journal.write_bytes(b"".join(e.portable() + b"\n" for e in events))
        await assert_replays(demo_agent(workdir / "never-written"), journal)
        for event in events:
            kind, payload = event.type, event.payload
            if kind == "model.failed" and payload.get("kind") == "ModelUnavailable":
                seen.add("outage")
            if kind in ("tool.completed", "tool.failed") and "\ufffd" in payload["output"]:
                seen.add("corrupted")
            if kind == "tool.failed" and payload.get("error") == "malformed_arguments":
                seen.add("malformed")
            if kind == "tool.failed" and "ConnectionError" in payload["output"]:
                seen.add("tool failure")
            if kind == "run.resumed":
                seen.add("resumed")
    assert not (workdir / "never-written").exists()
    assert seen == {"outage", "corrupted", "malformed", "tool failure", "resumed"}, seen


def test_a_tool_wrongly_declared_idempotent_fails_with_a_reproducing_command(
    tmp_path: Path,
) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(KILL_HEAVY)
    args = [*WORLD, "--plan", str(plan), "--seed", "3"]
    broken = chaos(f"{AGENTS}:broken_payments", "--runs", "2", *args,
                   "--keep", str(tmp_path / "broken"))  # fmt: skip
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "effect of pay applied 2 times under key" in broken.stdout
    line = next(x for x in broken.stdout.splitlines() if x.strip().startswith("reproduce:"))
    command = shlex.split(line.split("reproduce:", 1)[1])
    assert command[:2] == ["tether", "chaos"] and "--run" in command and "--seed" in command
    again = subprocess.run([*TETHER, *command[1:], "--keep", str(tmp_path / "again")],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 1, again.stdout + again.stderr
    assert "effect of pay applied" in again.stdout

    honest = chaos(f"{AGENTS}:payments", "--runs", "2", *args, "--keep", str(tmp_path / "ok"))
    assert honest.returncode == 0, honest.stdout + honest.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "name an agent"),
        (["--demo", f"{AGENTS}:payments"], "not both"),
        (["no_such_module:agent", "--task", "x"], "cannot import module"),
        ([f"{AGENTS}:payments"], "give the task"),
        (["--demo", "--keep", "{tmp}"], "is not empty"),
        (["--demo", "--keep", "{tmp}/plan.toml"], "is not a folder"),
        (["--demo", "--plan", "{tmp}/plan.toml"], "unknown chaos plan key 'kill_rate'"),
        (["--demo", "--plan", "{tmp}/missing.json"], "cannot read the chaos plan"),
        (["--demo", "--agent-args", "[1]"], "must be a JSON object"),
        (
            [f"{AGENTS}:payments", "--task", "x", "--agent-args", '{"nope": 1}'],
            "cannot be called with",
        ),
    ],
)
def test_user_mistakes_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "plan.toml").write_text("kill_rate = 0.5\n")
    done = chaos(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_plan_that_deletes_a_committed_event_fails_with_a_reproducing_command(
    tmp_path: Path,
) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"max_kills": 1, "kill_share": 1.0, "delete_committed_share": 1.0,
                                "damage_share": 0.0, "tiny_budget_share": 0.0}))  # fmt: skip
    done = chaos(f"{AGENTS}:payments", *WORLD, "--runs", "1", "--seed", "5", "--plan", str(plan),
                 "--json", "--keep", str(tmp_path / "w"))  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    (result,) = report["results"]
    assert report["faults"]["deleted_committed_event"] == 1
    violations = result["violations"]
    assert any(v.startswith("process exited 3") and "CorruptionError" in v for v in violations)
    assert any("the journal cannot be read" in v for v in violations), violations
    command = report["reproduce"]["1"]
    assert command.startswith("tether chaos ") and "--run 1" in command


def test_a_soak_runs_until_its_duration_and_tiny_ledger_budgets_hold(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text("tiny_budget_share = 1.0\nmax_kills = 1\ndamage_share = 0.0\n")
    done = chaos(f"{AGENTS}:payments", *WORLD, "--duration", "3", "--seed", "2",
                 "--plan", str(plan), "--json", "--jobs", "1")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert 1 <= report["runs"] < 20  # not the default count: the duration decided
    assert sum(r["seconds"] for r in report["results"]) >= 2.5
    assert report["faults"]["tiny_budget"] == report["runs"]
    assert all(r["status"] in ("completed", "stopped") for r in report["results"])


def test_a_terminal_gets_a_live_line_then_the_table(tmp_path: Path) -> None:
    from tests.cli.terminal import Terminal

    plan = tmp_path / "plan.toml"
    plan.write_text("max_kills = 1\ndamage_share = 0.0\n")
    term = Terminal("chaos", f"{AGENTS}:payments", *WORLD, "--runs", "2", "--jobs", "1",
                    "--plan", str(plan), cwd=tmp_path)  # fmt: skip
    try:
        term.expect(r"chaos: a fault-free reference run, then 2 runs", timeout=120)
        term.expect(r"chaos: 1/2 runs · \d+ kills · 0 failed", timeout=120)
        term.expect(r"2 runs in [\d.]+s · 0 broke an invariant", timeout=120)
        assert term.wait() == 0
    finally:
        term.close()
