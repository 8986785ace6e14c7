"""What a new user hit (edited approvals, hints, numbers, the demo's folder), each pinned."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether.chaos import FaultPlan
from tether.cli import app
from tether.errors import UsageError
from tether.events import EventDraft
from tether.journal import SQLiteStore, read_events
from tether.journal._journal import RunJournal

from .test_cli import AGENT_FILE

runner = CliRunner()


def tether(*args: str, store: Path) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--store", f"sqlite:///{store}"])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "t.db"


def detached_demo(store: Path) -> tuple[str, str]:
    """A demo run waiting for its publish approval: (run id, approval id)."""
    out = str(store.parent / "out")
    code, text, _ = tether("demo", "--detach", "--json", "--out", out, store=store)
    assert code == 4
    data = json.loads(text)
    (request_id,) = data["pending_approvals"]
    return str(data["run_id"]), request_id


def resolutions(store: Path, run_id: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        s = SQLiteStore(store)
        try:
            events = await read_events(s, run_id)
        finally:
            await s.close()
        return [e.payload for e in events if e.type == "approval.resolved"]

    return asyncio.run(read())


def original_arguments(store: Path) -> dict[str, Any]:
    _, text, _ = tether("approvals", "--json", store=store)
    (pending,) = json.loads(text)
    arguments: dict[str, Any] = pending["arguments"]
    return arguments


# -- approvals ----------------------------------------------------------------------------


def test_approve_with_args_merges_onto_the_call_and_journals_what_runs(store: Path) -> None:
    run_id, request_id = detached_demo(store)
    original = original_arguments(store)
    code, out, err = tether("approve", request_id, "--args", '{"title": "Edited"}', store=store)
    assert code == 0, err
    assert f"{request_id} approved" in out
    (resolved,) = resolutions(store, run_id)
    assert resolved["arguments"] == {**original, "title": "Edited"}
    code, out, _ = tether("resume", run_id, "--json", store=store)
    data = json.loads(out)
    assert code == 0 and data["status"] == "completed"
    report = Path(data["report"]).read_text()
    assert report.startswith("# Edited\n") and "## Open questions" in report


def test_approve_prints_the_edited_arguments_redacted(store: Path) -> None:
    _, request_id = detached_demo(store)
    key = "sk-proj-abcdefghijklmnopqrstuvwx"
    code, out, _ = tether("approve", request_id, "--args", json.dumps({"title": key}), store=store)
    assert code == 0 and "runs with: " in out
    assert key not in out and "[REDACTED]" in out and '"sections": ["Summary"' in out


def test_approve_with_empty_args_journals_the_arguments_that_run(store: Path) -> None:
    run_id, request_id = detached_demo(store)
    original = original_arguments(store)
    code, _, err = tether("approve", request_id, "--args", "{}", store=store)
    assert code == 0, err
    (resolved,) = resolutions(store, run_id)
    assert resolved["arguments"] == original  # not {}: the journal says what runs
    code, out, _ = tether("resume", run_id, "--json", store=store)
    report = Path(json.loads(out)["report"]).read_text()
    assert report.startswith(f"# {original['title']}\n")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ('{"sections": "Summary"}', "edited arguments for publish are invalid: sections"),
        ('{"colour": "red"}', "edited arguments for publish are invalid: colour"),
        ('{"title": ', "not valid JSON"),
        ("[1]", "must be a JSON object"),
    ],
)
def test_invalid_edits_are_refused_before_anything_is_journaled(
    store: Path, edit: str, message: str
) -> None:
    run_id, request_id = detached_demo(store)
    code, out, err = tether("approve", request_id, "--args", edit, store=store)
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out
    assert resolutions(store, run_id) == []  # still waiting, nothing journaled
    code, _, _ = tether("approve", request_id, store=store)
    assert code == 0


def test_approve_and_reject_print_resume_with_the_store_given(store: Path) -> None:
    run_id, request_id = detached_demo(store)
    _, out, _ = tether("ls", "--json", store=store)
    assert json.loads(out)[0]["waiting_for"] == (
        f"a human's decision: tether approvals --store sqlite:///{store}"
    )
    code, out, _ = tether("approve", request_id, store=store)
    assert code == 0
    assert f"continue the run: tether resume {run_id} --store sqlite:///{store}" in out
    code, out, _ = tether("approve", request_id, store=store)  # the same decision again
    assert code == 0 and f"--store sqlite:///{store}" in out
    tether("resume", run_id, "--json", store=store)
    code, out, _ = tether("approve", request_id, store=store)
    assert code == 0
    assert f"run {run_id} is completed: nothing to continue" in out
    assert "tether resume" not in out


def test_printed_commands_quote_a_store_url_for_the_shell(store: Path) -> None:
    url = f"sqlite:///{store}?synchronous=full"  # `?` is a glob: zsh refuses it unquoted
    out_dir = str(store.parent / "out")
    result = runner.invoke(app, ["demo", "--detach", "--out", out_dir, "--store", url])
    assert result.exit_code == 4
    approve_line = next(x for x in result.stdout.splitlines() if x.startswith("approve:"))
    assert approve_line.endswith(f" --store '{url}'")
    command = shlex.split(approve_line.removeprefix("approve:"))
    assert command[0] == "tether" and command[-1] == url
    result = runner.invoke(app, command[1:])
    assert result.exit_code == 0
    hint = result.stdout.splitlines()[-1]
    assert hint.startswith("continue the run: tether resume ") and hint.endswith(f"'{url}'")
    result = runner.invoke(app, [*shlex.split(hint.partition(": ")[2])[1:], "--yes"])
    assert result.exit_code == 0, result.stdout + result.stderr


def test_a_submitted_run_is_left_to_its_worker_not_to_resume(store: Path) -> None:
    out_dir = str(store.parent / "out")
    code, run_id, _ = tether("demo", "--submit", "--out", out_dir, store=store)
    run_id = run_id.strip()
    # Drive it to its approval as a worker would, then decide it from the CLI.
    from tether.worker import Worker

    async def drive() -> None:
        s = SQLiteStore(store)
        try:
            await Worker(s, poll_max_s=0.2).serve(until_idle=True)
        finally:
            await s.close()

    asyncio.run(drive())
    request_id = json.loads(tether("approvals", "--json", store=store)[1])[0]["request_id"]
    code, out, _ = tether("reject", request_id, "--reason", "not yet", store=store)
    assert code == 0
    assert "a worker serving queue 'default' continues the run" in out
    assert "tether resume" not in out


def test_a_rejection_without_a_reason_is_refused(store: Path) -> None:
    run_id, request_id = detached_demo(store)
    code, _, err = tether("reject", request_id, "--reason", "  ", store=store)
    assert code == 2 and err.strip() == (
        "error: --reason is empty: the agent reads it as the call's result"
    )
    assert resolutions(store, run_id) == []


def test_approve_args_on_a_run_whose_agent_cannot_be_found_says_how(store: Path) -> None:
    run_id, request_id = detached_demo(store)
    code, _, err = tether(
        "approve", request_id, "--args", '{"title": "x"}', "--agent", "nowhere:agent",
        store=store,
    )  # fmt: skip
    assert code == 2 and "cannot import module 'nowhere'" in err
    assert resolutions(store, run_id) == []


# -- workers and hints ----------------------------------------------------------------------


def test_submit_of_a_file_agent_prints_a_worker_command_with_agent(
    store: Path, tmp_path: Path
) -> None:
    (tmp_path / "my_agent.py").write_text(AGENT_FILE)
    result = subprocess.run(
        [sys.executable, "-m", "tether", "submit", "my_agent.py:agent", "--task", "hi",
         "--store", f"sqlite:///{store}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        f"serve it with: tether worker --store sqlite:///{store} --agent my_agent.py:agent"
        in result.stderr
    )
    code, _, err = tether("demo", "--submit", "--out", str(tmp_path / "o"), store=store)
    assert code == 0 and "--agent" not in err  # the demo is built into every worker


def test_ls_says_why_a_queued_run_waits(store: Path, tmp_path: Path) -> None:
    (tmp_path / "my_agent.py").write_text(AGENT_FILE)
    subprocess.run(
        [sys.executable, "-m", "tether", "submit", "my_agent.py:agent", "--task", "hi",
         "--store", f"sqlite:///{store}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    code, out, _ = tether("ls", "--json", store=store)
    (row,) = json.loads(out)
    assert row["status"] == "queued"
    assert row["waiting_for"] == "a worker on queue 'default' that has agent shouter@1"
    code, out, _ = tether("ls", store=store)
    assert code == 0 and "waiting for" in out and "that has agent shouter@1" in out


def test_a_run_handed_back_by_a_worker_lists_as_queued(store: Path) -> None:
    out_dir = str(store.parent / "out")
    run_id = tether("demo", "--submit", "--out", out_dir, store=store)[1].strip()

    async def hand_back() -> None:
        # What a stopping worker leaves: the run started (journaled `running`), lease released.
        s = SQLiteStore(store)
        try:
            lease = await s.acquire_lease(run_id, owner="w:1", ttl_s=30)
            journal, _ = await RunJournal.open(s, lease)
            await journal.append(EventDraft(type="cycle.started", payload={"cycle": 1}))
            await s.release_lease(lease)
            assert (await s.get_run(run_id)).summary.status == "running"
        finally:
            await s.close()

    asyncio.run(hand_back())
    _, out, _ = tether("ls", "--json", store=store)
    (row,) = json.loads(out)
    assert row["status"] == "queued"
    assert row["waiting_for"] == "a worker on queue 'default' that has agent research-demo@1"
    _, out, _ = tether("show", run_id, "--json", store=store)  # `show` says the same
    shown = json.loads(out)
    assert (shown["status"], shown["waiting_for"]) == (row["status"], row["waiting_for"])
    _, out, _ = tether("show", run_id, store=store)
    assert " · queued\nwaiting for a worker on queue 'default'" in out


def test_resume_raises_the_limit_that_stopped_a_run(store: Path) -> None:
    out_dir = str(store.parent / "out")
    code, out, _ = tether("demo", "--yes", "--json", "--max-steps", "6", "--out", out_dir,
                          store=store)  # fmt: skip
    stopped = json.loads(out)
    assert code == 3 and stopped["status"] == "stopped"
    code, out, _ = tether("resume", str(stopped["run_id"]), store=store)
    assert code == 3  # the same limit: nothing changes, and it says how to raise it
    assert f"continue: tether resume {stopped['run_id']} --max-steps N --store sqlite:///" in out
    code, out, err = tether(
        "resume", str(stopped["run_id"]), "--max-steps", "80", "--yes", "--json", store=store
    )
    assert code == 0, err
    done = json.loads(out)
    assert done["status"] == "completed" and done["partial"] is False
    assert Path(done["report"]).exists()


def test_resume_refuses_limits_a_stopped_run_has_already_used(store: Path) -> None:
    out_dir = str(store.parent / "out")
    _, out, _ = tether("demo", "--yes", "--json", "--max-steps", "6", "--out", out_dir,
                       store=store)  # fmt: skip
    stopped = json.loads(out)
    run_id = str(stopped["run_id"])
    used_up = [(["--max-steps", "5"], "--max-steps"), (["--max-cost", "5"], "--max-steps"),
               (["--max-steps", "9", "--max-cost", "0.001"], "--max-cost")]  # fmt: skip
    for args, option in used_up:
        code, out, err = tether("resume", run_id, *args, store=store)
        assert code == 2 and f"run {run_id} would stop again at once" in err
        assert f"raise {option} above what it has used" in err and out == ""
    _, out, _ = tether("show", run_id, "--json", store=store)
    shown = json.loads(out)
    assert shown["input_tokens"] == stopped["input_tokens"]  # no wrap-up turn was paid for
    assert "limit.changed" not in out


def test_resume_refuses_new_limits_for_a_completed_run(store: Path) -> None:
    out_dir = str(store.parent / "out")
    _, out, _ = tether("demo", "--yes", "--json", "--out", out_dir, store=store)
    code, _, err = tether("resume", json.loads(out)["run_id"], "--max-steps", "90", store=store)
    assert code == 2 and "is completed: new limits only continue a run a limit stopped" in err


# -- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["demo", "--max-cost", "nan"],
        ["demo", "--max-cost", "inf"],
        ["demo", "--max-time", "-inf"],
        ["run", "x:y", "--task", "t", "--max-cost", "nan"],
        ["resume", "run_x", "--max-time", "inf"],
        ["submit", "research-demo", "--task", "t", "--max-cost", "nan"],
        ["budget", "set", "--scope", "global", "--daily", "nan"],
        ["budget", "set", "--scope", "global", "--per-call", "inf"],
        ["worker", "--lease-ttl", "nan"],
        ["worker", "--grace", "inf"],
    ],
)
def test_non_finite_numbers_are_one_line_usage_errors(store: Path, args: list[str]) -> None:
    code, out, err = tether(*args, store=store)
    assert code == 2
    assert "must be a finite number" in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1
    assert not store.exists()


def test_a_soak_of_infinite_duration_is_a_one_line_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["chaos", "--demo", "--duration", "inf"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --duration must be a finite number, not inf"


def test_budget_set_without_values_is_an_error_and_huge_values_print_short(store: Path) -> None:
    code, _, err = tether("budget", "set", "--scope", "global", store=store)
    assert code == 2 and "nothing to set" in err
    code, out, _ = tether("budget", "set", "--scope", "global", "--per-call", "1e308", store=store)
    assert code == 0 and out.strip() == "global: per_call $1e+308"
    code, out, _ = tether("budget", "--json", store=store)

    def refuse(constant: str) -> None:
        raise AssertionError(f"not strict JSON: {constant}")

    rows = json.loads(out, parse_constant=refuse)
    assert {"window": "per_call", "limit": 1e308} in [
        {"window": r["window"], "limit": r["limit"]} for r in rows
    ]
    _, out, _ = tether("budget", store=store)
    assert "$1e+308" in out and max(len(line) for line in out.splitlines()) < 120


@pytest.mark.parametrize("text", ["kill_after_seq=0", "kill_after_seq=-1", "kill_before_seq=0",
                                  "model_latency=nan", "tool_fail_rate=2"])  # fmt: skip
def test_chaos_plans_refuse_impossible_values(text: str) -> None:
    with pytest.raises(UsageError):
        FaultPlan.parse(text)


def test_demo_with_an_impossible_chaos_plan_is_a_one_line_error(store: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tether", "demo", "--quiet", "--store", f"sqlite:///{store}",
         "--out", str(store.parent / "out")],
        env={**os.environ, "TETHER_CHAOS": "kill_after_seq=0"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: kill_after_seq must be a journal position (1 or more), not 0"
    )


# -- the demo -----------------------------------------------------------------------------


def test_identical_demo_runs_have_their_own_workspace_and_identical_numbers(store: Path) -> None:
    out_dir = store.parent / "out"
    runs = []
    for _ in range(2):
        code, out, _ = tether("demo", "--yes", "--json", "--out", str(out_dir), store=store)
        assert code == 0
        runs.append(json.loads(out))
    first, second = runs
    for key in ("steps", "input_tokens", "output_tokens", "cost_usd"):
        assert first[key] == second[key], key
    assert first["report"] != second["report"]
    assert Path(first["report"]).read_bytes() == Path(second["report"]).read_bytes()
    for run in runs:
        workspace = out_dir / str(run["run_id"])
        effects = (workspace / ".tether-demo" / "effects.jsonl").read_text().splitlines()
        notes = [json.loads(line) for line in effects if '"tool": "note"' in line]
        assert len(notes) == 17  # this run's notes only


def test_an_out_folder_the_demo_cannot_use_is_one_line_before_the_run(
    store: Path, tmp_path: Path
) -> None:
    (tmp_path / "afile").write_text("")
    cases = [
        (["--yes", "--out", str(tmp_path / "afile")], "afile: a file, not a folder"),
        (["--submit", "--out", str(tmp_path / "afile")], "afile: a file, not a folder"),
        (["--yes", "--out", str(tmp_path / "afile" / "sub")], "sub: Not a directory"),
    ]
    for args, message in cases:
        code, _, err = tether("demo", *args, store=store)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not store.exists()  # no run was started


def test_report_is_printed_only_for_the_run_that_published(store: Path) -> None:
    out_dir = str(store.parent / "out")
    tether("demo", "--yes", "--json", "--out", out_dir, store=store)  # one report exists
    code, out, _ = tether("demo", "--yes", "--max-steps", "6", "--out", out_dir, store=store)
    assert code == 3 and "report:" not in out
    code, out, _ = tether("demo", "--detach", "--json", "--out", out_dir, store=store)
    assert code == 4 and "report" not in json.loads(out)


def test_a_fork_that_did_not_publish_prints_no_report_of_its_parent(store: Path) -> None:
    out_dir = str(store.parent / "out")
    _, out, _ = tether("demo", "--yes", "--json", "--out", out_dir, store=store)
    parent = json.loads(out)
    assert Path(parent["report"]).exists()
    _, out, _ = tether("fork", str(parent["run_id"]), "--at", "20", "--json", store=store)
    fork_id = json.loads(out)["run_id"]
    code, out, _ = tether("resume", fork_id, "--max-steps", "4", store=store)
    assert code == 3 and "report:" not in out  # the folder's report.md is the parent's
    code, out, _ = tether("resume", fork_id, "--max-steps", "80", "--yes", "--json", store=store)
    assert code == 0 and json.loads(out)["report"] == parent["report"]  # now it published


def test_the_readme_sample_output_is_what_the_demo_prints(store: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    sample = re.search(r"\n(steps \d+ · tokens [\d,]+ \([\d,]+ in, [\d,]+ out\) · \$[\d.]+)\n",
                       readme)  # fmt: skip
    assert sample is not None
    code, out, _ = tether("demo", "--yes", "--out", str(store.parent / "out"), store=store)
    assert code == 0
    assert sample.group(1) in out.splitlines()
    run_id = out.split()[0]
    assert f"report: {store.parent}/out/{run_id}/report.md" in out


def test_ls_says_a_killed_runs_holder_died_and_how_to_resume(store: Path) -> None:
    killed = subprocess.run(
        [sys.executable, "-m", "tether", "demo", "--quiet", "--store", f"sqlite:///{store}",
         "--out", str(store.parent / "out")],
        env={**os.environ, "TETHER_CHAOS": "kill_after_seq=30"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert killed.returncode == -9
    _, out, _ = tether("ls", "--json", store=store)
    (row,) = json.loads(out)
    assert row["status"] == "running"
    assert row["waiting_for"] == (
        f"its holder died: tether resume {row['run_id']} --store sqlite:///{store}"
    )
