"""`tether pin` / `unpin`, and pins and artifacts in `tether show`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from tether import Agent, Limits, Runtime, tool
from tether.cli import app
from tether.models import ScriptedModel, call

runner = CliRunner()


@tool(max_output_chars=200)
async def big() -> str:
    """Returns 5,000 characters."""
    return "z" * 5_000


def the_agent() -> Agent:
    return Agent(
        name="pins",
        instructions="m",
        tools=[big],
        model=ScriptedModel([call("big"), "done"]),
        limits=Limits(max_steps=5),
    )


def tether(db: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--store", f"sqlite:///{db}"])
    return result.exit_code, result.stdout, result.stderr


async def create(db: Path) -> str:
    rt = Runtime(f"sqlite:///{db}")
    try:
        return await rt.create(the_agent(), "go")
    finally:
        await rt.close()


async def start(db: Path) -> str:
    rt = Runtime(f"sqlite:///{db}")
    try:
        return (await rt.start(the_agent(), "go")).run_id
    finally:
        await rt.close()


def test_an_operator_pins_a_fact_that_show_lists(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    run_id = asyncio.run(create(db))

    code, out, _ = tether(db, "pin", run_id, "the budget is 10k", "--source", "ops", "--json")
    assert code == 0
    fact_id = json.loads(out)["id"]
    code, out, _ = tether(db, "show", run_id, "--json")
    assert code == 0
    assert json.loads(out)["pins"] == [
        {"id": fact_id, "text": "the budget is 10k", "source": "ops", "by": "operator",
         "seq": int(fact_id[1:])}
    ]  # fmt: skip
    code, out, _ = tether(db, "show", run_id)
    assert "pinned facts" in out and "the budget is 10k (source: ops)" in out

    code, _, err = tether(db, "unpin", run_id, "F999")
    assert code == 2 and err.strip().startswith("error: run") and "F999" in err
    assert "Traceback" not in err
    code, _, _ = tether(db, "unpin", run_id, fact_id)
    assert code == 0
    code, out, _ = tether(db, "show", run_id, "--json")
    assert json.loads(out)["pins"] == []


def test_show_lists_large_outputs_as_artifacts(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    run_id = asyncio.run(start(db))
    code, out, _ = tether(db, "show", run_id, "--json")
    artifacts = json.loads(out)["artifacts"]
    assert code == 0 and len(artifacts) == 1
    assert artifacts[0]["chars"] == 5_000 and artifacts[0]["shown"] == 200
    assert artifacts[0]["handle"].startswith(run_id + ":")
    code, out, _ = tether(db, "show", run_id)
    assert "artifacts" in out and "5,000 chars" in out


def test_pin_has_help() -> None:
    for command in ("pin", "unpin"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.stdout
