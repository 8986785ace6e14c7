"""What an approval carries is journal-safe and faithful: the approver sees the call's
real numbers, and what a person types (an edit, a comment) can never break the journal."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether import Agent, Limits, Runtime, tool
from tether.approvals import pending_approvals, resolve_approval
from tether.cli import app
from tether.journal import MemoryStore, SQLiteStore, read_events
from tether.models import ScriptedModel, call
from tether.tools._validate import json_safe


@tool(requires_approval=True)
def pay(amount: float, note: str = "") -> str:
    """Pay an amount."""
    return f"paid {amount}"


def payer() -> Agent:
    return Agent(
        name="payer", instructions="Pay.", tools=[pay],
        model=ScriptedModel([call("pay", {"amount": 12.5}), "done"]), limits=Limits(max_steps=4),
    )  # fmt: skip


def test_json_safe_keeps_numbers_and_makes_the_rest_text() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5)
    safe = json_safe({"a": 1.5, "b": math.nan, "c": when, "d": "x\ud800", "e": [2, -0.25]})
    assert safe == {
        "a": 1.5, "b": "nan", "c": "2026-01-02T03:04:05", "d": "x\ufffd", "e": [2, -0.25]
    }  # fmt: skip


async def test_the_approver_sees_the_amount_and_an_edit_runs_with_its_own() -> None:
    store = MemoryStore()
    agent = payer()
    rt = Runtime(store)
    result = await rt.start(agent, "pay it")
    (approval,) = await pending_approvals(store, run_id=result.run_id)
    assert approval.arguments == {"amount": 12.5, "note": ""}
    assert approval.to_json()["arguments"]["amount"] == 12.5
    await resolve_approval(
        store, approval.request_id, decision="approved", arguments={"amount": 7.25},
        agent=agent, comment="half, \ud800 ok",
    )  # fmt: skip
    result = await rt.resume(agent, result.run_id)
    assert result.status == "completed", result
    events = await read_events(store, result.run_id)
    done = [e.payload["output"] for e in events if e.type == "tool.completed"]
    assert done and done[0].startswith("paid 7.25")
    resolved = next(e for e in events if e.type == "approval.resolved")
    assert resolved.payload["comment"] == "half, \ufffd ok"


@pytest.mark.parametrize(
    "edit", ['{"amount": NaN}', '{"amount": 1e999}', '{"note": "\\ud800"}', '{"amount": -Infinity}']
)
def test_an_edit_the_journal_cannot_store_is_one_line(tmp_path: Path, edit: str) -> None:
    import asyncio

    path = tmp_path / "t.db"

    async def start() -> str:
        store = SQLiteStore(path)
        try:
            result = await Runtime(store).start(payer(), "pay it")
            (approval,) = await pending_approvals(store, run_id=result.run_id)
            return approval.request_id
        finally:
            await store.close()

    request_id = asyncio.run(start())
    module = tmp_path / "payer_agent.py"
    module.write_text(
        "from tests.test_approval_inputs import payer\nagent = payer()\n", encoding="utf-8"
    )
    done = CliRunner().invoke(
        app, ["approve", request_id, "--args", edit, "--agent", f"{module}:agent",
              "--store", f"sqlite:///{path}"],
    )  # fmt: skip
    assert done.exit_code == 2, done.output
    assert done.exception is None or isinstance(done.exception, SystemExit)
    assert "not usable JSON" in done.stderr
