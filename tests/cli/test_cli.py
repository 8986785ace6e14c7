"""The `tether` command as a user drives it: exit codes, JSON shapes, one-line errors."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.cli import app
from tether.journal import SQLiteStore, sqlite_functions

runner = CliRunner()

AGENT_FILE = '''
from tether import Agent, Limits, tool
from tether.models import ScriptedModel, call

@tool
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()

agent = Agent(
    name="shouter",
    instructions="Shout.",
    tools=[shout],
    model=ScriptedModel([call("shout", {"text": "hi"}), "HI"]),
    limits=Limits(max_steps=5),
)
'''


def tether(*args: str, store: Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--store", f"sqlite:///{store}"])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "t.db"


def run_demo(store: Path, *extra: str) -> tuple[int, dict[str, object]]:
    out_dir = str(store.parent / "out")
    code, out, err = tether("demo", "--yes", "--json", "--out", out_dir, *extra, store=store)
    assert not err or "Traceback" not in err
    return code, json.loads(out)


def test_demo_completes_and_writes_the_report(store: Path) -> None:
    code, data = run_demo(store)
    assert code == 0
    assert data["status"] == "completed" and data["steps"] == 48
    assert float(str(data["cost_usd"])) > 0 and int(str(data["input_tokens"])) > 0
    report_path = store.parent / "out" / str(data["run_id"]) / "report.md"
    assert data["report"] == str(report_path)
    report = report_path.read_text()
    assert report.startswith("# Ferrogel Knot Storage") and "## Sources" in report


def test_demo_with_a_step_limit_stops_with_exit_3_and_a_partial_answer(store: Path) -> None:
    code, data = run_demo(store, "--max-steps", "6")
    assert code == 3
    assert data["status"] == "stopped" and data["partial"] is True
    assert str(data["answer"]).startswith("[PARTIAL — step limit reached")
    assert "report" not in data
    assert not (store.parent / "out" / str(data["run_id"]) / "report.md").exists()


def test_demo_detached_waits_for_approval_and_the_cli_resolves_it(store: Path) -> None:
    out_dir = str(store.parent / "out")
    code, out, _ = tether("demo", "--detach", "--json", "--out", out_dir, store=store)
    assert code == 4
    data = json.loads(out)
    assert data["status"] == "waiting_approval"
    (request_id,) = data["pending_approvals"]
    report = store.parent / "out" / str(data["run_id"]) / "report.md"
    assert not report.exists() and "report" not in data
    code, out, _ = tether("approvals", "--json", store=store)
    (pending,) = json.loads(out)
    assert pending["request_id"] == request_id and pending["tool"] == "publish"
    code, out, _ = tether("approve", request_id, "--comment", "ship it", store=store)
    assert code == 0 and "approved" in out
    code, out, err = tether("reject", request_id, "--reason", "changed my mind", store=store)
    assert code == 2 and "already approved" in err
    code, out, _ = tether("resume", str(data["run_id"]), "--json", store=store)
    assert code == 0 and json.loads(out)["status"] == "completed"
    assert report.exists() and json.loads(out)["report"] == str(report)


def test_rejecting_publish_reaches_the_model_and_the_run_carries_on(store: Path) -> None:
    out_dir = str(store.parent / "out")
    code, out, _ = tether("demo", "--json", "--out", out_dir, store=store)
    data = json.loads(out)
    (request_id,) = data["pending_approvals"]
    code, _, _ = tether("reject", request_id, "--reason", "needs a legal review", store=store)
    assert code == 0
    code, out, _ = tether("resume", str(data["run_id"]), "--json", store=store)
    # The scripted policy retries the step after an error result, so it asks again.
    assert code == 4 and json.loads(out)["status"] == "waiting_approval"
    _, out, _ = tether("show", str(data["run_id"]), "--json", store=store)
    failed = [e for e in json.loads(out)["events"] if e["type"] == "tool.failed"]
    assert "rejected the call: needs a legal review" in failed[-1]["payload"]["output"]


def test_ls_and_show_json_shapes(store: Path) -> None:
    _, data = run_demo(store)
    code, out, _ = tether("ls", "--json", store=store)
    assert code == 0
    code, empty, _ = tether("ls", "--status", "failed", store=store)
    assert code == 0 and "no failed runs in this store" in empty and "try" not in empty
    (row,) = json.loads(out)
    assert {"run_id", "status", "steps", "cost_usd"} <= set(row)
    assert row["run_id"] == data["run_id"] and row["status"] == "completed"
    code, out, _ = tether("show", str(data["run_id"]), "--json", store=store)
    shown = json.loads(out)
    assert {"run_id", "status", "steps", "cost_usd", "events"} <= set(shown)
    event = shown["events"][0]
    assert {"seq", "type", "visibility", "correlation_id", "cause", "payload"} <= set(event)
    visibilities = {e["visibility"] for e in shown["events"]}
    assert visibilities == {"visible", "user_hidden"}
    _, out, _ = tether("show", str(data["run_id"]), "--json", "--view", "user", store=store)
    assert {e["visibility"] for e in json.loads(out)["events"]} == {"visible"}
    _, out, _ = tether("show", str(data["run_id"]), "--json", "--view", "audit", store=store)
    audit = json.loads(out)["events"]
    assert "always_hidden" in {e["visibility"] for e in audit} and "checksum" in audit[0]


def test_show_text_view_prints_a_timeline(store: Path) -> None:
    _, data = run_demo(store)
    code, out, _ = tether("show", str(data["run_id"]), store=store)
    assert code == 0 and "completed" in out and "tool.completed" in out
    assert "earlier events" not in out  # the demo's whole timeline fits the default
    # A long run's timeline starts at its newest events; --last 0 prints them all.
    _, full, _ = tether("show", str(data["run_id"]), "--last", "0", store=store)
    code, short, _ = tether("show", str(data["run_id"]), "--last", "5", store=store)
    assert code == 0 and "earlier events (--last 0 shows them all)" in short
    timeline = [line for line in full.splitlines() if line[:5].strip().isdigit()]
    assert [line for line in short.splitlines() if line[:5].strip().isdigit()] == timeline[-5:]
    code, _, err = tether("show", str(data["run_id"]), "--last", "-1", store=store)
    assert code == 2 and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "run_nope"], "no run 'run_nope'"),
        (["resume", "run_nope"], "no run 'run_nope'"),
        (["run", "no_such_module:agent", "--task", "x"], "cannot import module"),
        (["ls", "--status", "sleeping"], "unknown status"),
        (["ls", "--limit", "0"], "--limit must be 1 or more"),
        (["ls", "--limit", "-1"], "--limit must be 1 or more"),
        (["show", "x", "--view", "boss"], "unknown view"),
        (["fork", "run_nope", "--at", "3"], "no run 'run_nope'"),
    ],
)
def test_user_mistakes_are_one_line_errors_with_exit_2(
    store: Path, args: list[str], message: str
) -> None:
    asyncio.run(SQLiteStore(store).close())  # an empty store: readers never create one
    code, out, err = tether(*args, store=store)
    assert code == 2
    assert message in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


def test_bad_store_urls_are_usage_errors(tmp_path: Path) -> None:
    for url in ("mysql://x", "sqlite://relative.db", f"sqlite:///{tmp_path}/nodir/x.db"):
        result = runner.invoke(app, ["ls", "--store", url])
        assert result.exit_code == 2, url
        assert "error:" in result.stderr and "Traceback" not in result.stderr


def test_run_a_user_agent_from_a_file_and_resume_it(store: Path, tmp_path: Path) -> None:
    path = tmp_path / "my_agent.py"
    path.write_text(AGENT_FILE)
    code, out, _ = tether("run", f"{path}:agent", "--task", "shout hi", "--json", store=store)
    assert code == 0
    data = json.loads(out)
    assert data["answer"] == "HI" and data["steps"] == 2
    code, out, _ = tether("resume", data["run_id"], "--json", store=store)
    assert code == 0 and json.loads(out)["status"] == "completed"


def test_doctor_finds_corruption_and_fork_repairs_it(store: Path) -> None:
    _, data = run_demo(store)
    run_id = str(data["run_id"])
    code, out, _ = tether("doctor", store=store)
    assert code == 0 and "all intact" in out
    with sqlite3.connect(store) as db:
        sqlite_functions(db)
        raw = db.execute("SELECT data FROM events WHERE run_id=? AND seq=100", (run_id,)).fetchone()
        damaged = raw[0][:-2] + bytes([raw[0][-2] ^ 1]) + raw[0][-1:]  # one bit flipped
        db.execute("UPDATE events SET data=? WHERE run_id=? AND seq=100", (damaged, run_id))
    code, out, _ = tether("doctor", run_id, store=store)
    assert code == 1 and "seq 100" in out and f"tether fork {run_id} --at 99" in out
    code, out, _ = tether("doctor", "--json", store=store)
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert report["runs"][0]["problems"][0]["seq"] == 100
    code, out, err = tether("show", run_id, store=store)
    assert code == 1 and "corruption in run" in err and "seq 100" in err
    code, out, _ = tether("fork", run_id, "--at", "99", "--json", store=store)
    assert code == 0
    forked = json.loads(out)["run_id"]
    code, out, _ = tether("resume", forked, "--yes", "--json", "--quiet", store=store)
    assert code == 0 and json.loads(out)["status"] == "completed"
    code, out, _ = tether("doctor", forked, store=store)
    assert code == 0


def test_doctor_checks_the_audit_index_and_rebuilds_it(store: Path) -> None:
    run_demo(store)
    code, out, _ = tether("doctor", "--rebuild-index", store=store)
    with sqlite3.connect(store) as db:
        sqlite_functions(db)
        (events,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
    assert code == 0 and f"audit index rebuilt: {events} events copied" in out
    with sqlite3.connect(store) as db:
        sqlite_functions(db)
        db.execute("UPDATE audit_rows SET tool='rm' WHERE id=40")
        db.execute("DELETE FROM audit_rows WHERE id=41")
    code, out, _ = tether("doctor", store=store)
    assert code == 1
    assert "audit index: 1 row disagree with the events; 1 event missing from it" in out
    assert "repair: tether doctor --rebuild-index" in out
    code, out, _ = tether("doctor", "--json", store=store)
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and report["audit_index"]["ok"] is False
    code, out, _ = tether("doctor", "--rebuild-index", "--json", store=store)
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert report["audit_index"] == {"ok": True, "rebuilt": events, "problem": None}


def test_doctor_on_a_missing_store_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = tether("doctor", store=tmp_path / "absent.db")
    assert code == 2 and "no store" in err


def test_the_installed_command_prints_no_traceback_on_mistakes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tether", "show", "run_x", "--store", f"sqlite:///{tmp_path}/a.db"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith(f"error: no store at {tmp_path}/a.db (nothing to read)")
    assert not (tmp_path / "a.db").exists()


def test_every_command_has_help() -> None:
    commands = ("demo", "run", "resume", "ls", "show", "doctor", "fork", "approvals", "approve")
    for command in (*commands, "reject"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.stdout, command


HOSTILE_FILE = '''
from tether import Agent, Limits, tool
from tether.models import ModelResponse, ModelUsage, ScriptedModel, ToolCall

class Hostile(ScriptedModel):
    """Answers with what a broken provider could send."""

    async def complete(self, request, *, on_text=None):
        mode = "MODE"
        if mode == "raise":
            raise KeyError("no such field")
        if mode == "none":
            return None
        return ModelResponse(
            content="bad \\ud800 answer", tool_calls=(), finish_reason="stop",
            usage=ModelUsage(input_tokens=-5, output_tokens=-5), model="x",
        )

agent = Agent(name="hostile", instructions="The prompt.", tools=[],
              model=Hostile(["x"]), limits=Limits(max_steps=3))
'''


@pytest.mark.parametrize(("mode", "status"), [("raise", 1), ("none", 1), ("text", 0)])
def test_run_with_a_hostile_model_ends_without_a_traceback(
    store: Path, mode: str, status: int
) -> None:
    path = store.parent / f"hostile_{mode}.py"
    path.write_text(HOSTILE_FILE.replace('"MODE"', repr(mode)))
    code, out, err = tether("run", f"{path}:agent", "--task", "go", "--json", store=store)
    assert "Traceback" not in err and "Traceback" not in out
    assert code == status, (out, err)
    data = json.loads(out)
    assert data["status"] == ("completed" if status == 0 else "failed")
    assert data["cost_usd"] >= 0


@pytest.mark.parametrize(
    "args",
    [
        [b"run", b"agent.py:agent", b"--task", b"a\xffb"],
        [b"submit", b"agent.py:agent", b"--task", b"x", b"--arg", b"k=\xfe"],
        [b"show", b"run_\xff"],
        [b"approve", b"apr:\xff:1"],
    ],
)
def test_an_argument_that_is_not_utf8_is_one_line_not_a_traceback(
    tmp_path: Path, args: list[bytes]
) -> None:
    store = f"sqlite:///{tmp_path / 't.db'}".encode()
    done = subprocess.run(
        [sys.executable.encode(), b"-m", b"tether", *args, b"--store", store],
        capture_output=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 2, err
    assert "Traceback" not in err and "not valid UTF-8" in err
    assert len(err.strip().splitlines()) == 1


def test_the_command_line_freezes_what_its_imports_built_before_running_a_command() -> None:
    """Each `tether` process walks its imports' objects in no later full collection and
    not at exit (a worker process saves ~0.15 s of CPU); in a fresh process, so the test
    process's own heap is never frozen."""
    code = (
        "import gc, sys, tether.cli as cli\n"
        "cli.app = lambda: print(gc.get_freeze_count())\n"
        "sys.argv = ['tether', 'worker']\n"
        "cli.main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert int(done.stdout) > 10_000
