"""Every hostile output of `tests/loop/test_bad_output.py`, through `tether run --json`:
the command ends with a status and an exit code, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.cli import app

from ..loop.test_bad_output import SCENARIOS

AGENT = """
from tests.loop.test_bad_output import SCENARIOS, Hostile, agent_for

steps, extra = SCENARIOS[{name!r}]
agent = agent_for(Hostile(*steps), extra)
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_tether_run_ends_every_hostile_run_without_a_traceback(tmp_path: Path, name: str) -> None:
    module = tmp_path / "hostile_agent.py"
    module.write_text(AGENT.format(name=name), encoding="utf-8")
    done = CliRunner().invoke(
        app, ["run", f"{module}:agent", "--task", "go", "--json", "--detach", "--quiet",
              "--store", f"sqlite:///{tmp_path / 't.db'}"],
    )  # fmt: skip
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    assert "Traceback" not in done.output
    data = json.loads(done.stdout)
    assert data["status"] in ("completed", "failed", "stopped", "waiting_approval"), data
    expected = {"completed": 0, "failed": 1, "stopped": 3, "waiting_approval": 4}
    assert done.exit_code == expected[data["status"]], data
    assert data["cost_usd"] >= 0
