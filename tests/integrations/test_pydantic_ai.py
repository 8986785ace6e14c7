"""A pydantic-ai agent run by Tether, with pydantic-ai's own test models."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integrations.conftest import lines, need, tether_cli

need("pydantic_ai")

from pydantic_ai import Agent as PydanticAgent  # noqa: E402
from pydantic_ai import RunContext  # noqa: E402
from pydantic_ai.models.test import TestModel  # noqa: E402

from tests.integrations.agents_under_test import pydantic_agent  # noqa: E402
from tether import Limits, Runtime  # noqa: E402
from tether.approvals import pending_approvals, resolve_approval  # noqa: E402
from tether.budget import BudgetLimits  # noqa: E402
from tether.errors import UsageError  # noqa: E402
from tether.integrations.pydantic_ai import TetherAgent  # noqa: E402
from tether.journal import SQLiteStore, read_events  # noqa: E402


async def test_a_budget_limit_stops_the_run_before_the_model_is_called(tmp_path: Path) -> None:
    model = TestModel()
    wrapped = PydanticAgent(model, instructions="Answer.", name="budgeted")
    agent = TetherAgent(wrapped).agent
    runtime = Runtime(
        SQLiteStore(tmp_path / "t.db"), budgets={"global": BudgetLimits(per_run=1e-9)}
    )
    result = await runtime.start(agent, "Hello?")
    assert result.status == "stopped"
    assert model.last_model_request_parameters is None  # never asked
    events = await read_events(runtime.store, result.run_id)
    assert any(e.type == "budget.denied" for e in events)
    assert not any(e.type == "model.completed" for e in events)
    await runtime.close()


async def test_an_approval_required_tool_pauses_durably_and_tether_approve_continues_it(
    tmp_path: Path, effects: Path
) -> None:
    db = tmp_path / "t.db"
    agent = TetherAgent(pydantic_agent(approval=True), name="steps").agent
    runtime = Runtime(SQLiteStore(db))
    first = await runtime.start(agent, "Do both steps.")
    assert first.status == "waiting_approval"
    assert lines(effects) == []  # nothing ran before the decision
    (pending,) = await pending_approvals(runtime.store, run_id=first.run_id)
    assert pending.tool == "step_one"
    await runtime.close()

    approve = tether_cli("approve", pending.request_id, "--store", f"sqlite:///{db}")
    assert approve.returncode == 0, approve.stderr

    runtime = Runtime(SQLiteStore(db))
    done = await runtime.resume(agent, first.run_id)
    assert done.status == "completed", done.reason
    assert done.answer == "step_one:a + step_two:b"
    assert lines(effects) == ["step_one a", "step_two b"]
    events = await read_events(runtime.store, first.run_id)
    await runtime.close()

    # The CLI reads the run like any other.
    url = f"sqlite:///{db}"
    audit = tether_cli("audit", "--tool", "step_two", "--store", url)
    assert audit.returncode == 0 and first.run_id in audit.stdout, audit.stderr
    result = next(
        e for e in events if e.type == "tool.completed" and e.payload["name"] == "step_two"
    )
    why = tether_cli("why", result.id, "--store", url)
    assert why.returncode == 0 and "step_two" in why.stdout, why.stderr


async def test_test_model_runs_its_tools_through_the_journal(tmp_path: Path) -> None:
    wrapped = PydanticAgent(TestModel(call_tools=["double"]), system_prompt="Be brief.", name="tm")

    @wrapped.tool_plain
    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    result = await runtime.start(TetherAgent(wrapped).agent, "Double something")
    assert result.status == "completed", result.reason
    events = await read_events(runtime.store, result.run_id)
    assert [e.payload["name"] for e in events if e.type == "tool.completed"] == ["double"]
    system = next(e for e in events if e.type == "message.system")
    assert system.payload["content"] == "Be brief."
    await runtime.close()


async def test_tools_get_the_deps_and_a_stable_idempotency_key(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []
    wrapped = PydanticAgent(TestModel(call_tools=["charge"]), name="payer", deps_type=str)

    @wrapped.tool
    def charge(ctx: RunContext[str], cents: int) -> str:
        """Charge a card."""
        assert ctx.metadata is not None
        seen.append((ctx.deps, ctx.metadata["tether_idempotency_key"]))
        return "charged"

    durable = TetherAgent(wrapped, deps="acct-42")
    result = await durable.run("Charge it", store=f"sqlite:///{tmp_path / 't.db'}")
    assert result.status == "completed", result.reason
    assert seen == [("acct-42", f"{result.run_id}/c1/t0")]


async def test_a_deferred_tool_becomes_a_durable_question_whose_answer_is_its_result(
    tmp_path: Path,
) -> None:
    from pydantic_ai.exceptions import CallDeferred

    wrapped = PydanticAgent(TestModel(call_tools=["ask_finance"]), name="deferring")

    @wrapped.tool_plain
    def ask_finance(question: str) -> str:
        """Ask the finance team; they answer later."""
        raise CallDeferred

    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    agent = TetherAgent(wrapped).agent
    first = await runtime.start(agent, "Is the budget approved?")
    assert first.status == "waiting_approval"
    (pending,) = await pending_approvals(runtime.store, run_id=first.run_id)
    assert pending.kind == "question" and "ask_finance is deferred" in (pending.question or "")
    await resolve_approval(
        runtime.store, pending.request_id, decision="approved", comment="yes, 10k"
    )
    done = await runtime.resume(agent, first.run_id)
    assert done.status == "completed"
    events = await read_events(runtime.store, first.run_id)
    (answer,) = [e for e in events if e.type == "tool.completed"]
    assert answer.payload["output"] == "yes, 10k"
    await runtime.close()


def test_the_agents_model_settings_go_with_every_request() -> None:
    wrapped = PydanticAgent(TestModel(), name="s", model_settings={"temperature": 0.25})
    assert TetherAgent(wrapped).model.settings == {"temperature": 0.25}


def test_unsupported_agents_are_refused_with_a_reason() -> None:
    with pytest.raises(UsageError, match="output"):
        TetherAgent(PydanticAgent(TestModel(), output_type=int, name="x"))
    with pytest.raises(UsageError, match="name"):
        TetherAgent(PydanticAgent(TestModel()))
    dynamic = PydanticAgent(TestModel(), name="d")

    @dynamic.system_prompt
    def prompt() -> str:
        return "now"

    with pytest.raises(UsageError, match="instructions="):
        TetherAgent(dynamic)
    assert TetherAgent(dynamic, instructions="fixed").agent.instructions == "fixed"
    with pytest.raises(UsageError, match=r"pydantic_ai\.Agent"):
        TetherAgent(object())
    assert Limits  # the limits type is re-exported for wrappers' users


def test_what_would_be_silently_dropped_is_refused_and_tether_tools_can_be_added() -> None:
    from pydantic_ai.capabilities import WebSearch

    from tether import tool
    from tether.integrations.mcp import MCPServer

    validated = PydanticAgent(TestModel(), name="v")

    @validated.output_validator
    def no_empty(text: str) -> str:
        return text

    with pytest.raises(UsageError, match="output validator"):
        TetherAgent(validated)
    with pytest.raises(UsageError, match="WebSearch"):
        TetherAgent(PydanticAgent(TestModel(), name="w", capabilities=[WebSearch()]))

    @tool
    def local(x: str) -> str:
        """A Tether tool."""
        return x

    durable = TetherAgent(
        PydanticAgent(TestModel(), name="t"), tools=[local, MCPServer.stdio("srv")]
    )
    assert [t.name for t in durable.agent.tools] == ["local"]
    assert [s.name for s in durable.agent.tool_sources] == ["srv"]
    with pytest.raises(UsageError, match="nosuch:thing"):
        TetherAgent(PydanticAgent("nosuch:thing", name="m", defer_model_check=True))


async def test_a_tool_raising_approval_required_pauses_and_runs_approved(tmp_path: Path) -> None:
    from pydantic_ai.exceptions import ApprovalRequired

    seen: list[tuple[str, bool]] = []
    wrapped = PydanticAgent(TestModel(call_tools=["delete"]), name="deleter")

    @wrapped.tool
    def delete(ctx: RunContext[None], path: str) -> str:
        """Delete a file; asks first (pydantic-ai's dynamic approval)."""
        seen.append((path, ctx.tool_call_approved))
        if not ctx.tool_call_approved:
            raise ApprovalRequired
        return f"deleted {path}"

    db = tmp_path / "t.db"
    agent = TetherAgent(wrapped).agent
    assert agent.tools[0].requires_approval is False  # decided by the tool, at run time
    runtime = Runtime(SQLiteStore(db))
    first = await runtime.start(agent, "Delete it")
    assert first.status == "waiting_approval", first.reason
    (pending,) = await pending_approvals(runtime.store, run_id=first.run_id)
    assert pending.tool == "delete" and pending.kind == "approval"
    await runtime.close()
    approve = tether_cli("approve", pending.request_id, "--store", f"sqlite:///{db}")
    assert approve.returncode == 0, approve.stderr
    runtime = Runtime(SQLiteStore(db))
    done = await runtime.resume(agent, first.run_id)
    assert done.status == "completed", done.reason
    assert [approved for _, approved in seen] == [False, True]  # asked, then ran approved
    events = await read_events(runtime.store, first.run_id)
    (result,) = [e for e in events if e.type == "tool.completed"]
    assert result.payload["output"].startswith("deleted ")
    # A replay asks again where the tool asked, applies the recorded decision, calls nothing.
    from tether.testing import replay
    from tether.views import Viewer

    exported = tmp_path / "run.jsonl"
    lines_out = await Viewer(runtime.store, "audit").export_lines(first.run_id)
    exported.write_bytes(b"".join(line + b"\n" for line in lines_out))
    await runtime.close()
    report = await replay(agent, exported)
    assert report.ok, report.divergence
    assert len(seen) == 2
