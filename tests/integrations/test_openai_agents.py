"""An OpenAI Agents SDK agent run by Tether, with a fake model implementing the SDK's
`Model` interface (the kill/resume test is in test_agent_crash.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integrations.conftest import lines, need, tether_cli

need("agents")

from agents import Agent as SDKAgent  # noqa: E402
from agents import WebSearchTool, function_tool  # noqa: E402

from tests.integrations.agents_under_test import fake_agents_model, openai_agent  # noqa: E402
from tether import Runtime  # noqa: E402
from tether.approvals import pending_approvals  # noqa: E402
from tether.budget import BudgetLimits  # noqa: E402
from tether.errors import UsageError  # noqa: E402
from tether.integrations.openai_agents import TetherRunner, tether_agent  # noqa: E402
from tether.journal import SQLiteStore, read_events  # noqa: E402


async def test_tether_runner_is_a_drop_in_runner(tmp_path: Path, effects: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    result = await TetherRunner.run(openai_agent(), "Do both steps.", store=url)
    assert result.status == "completed"
    assert result.final_output == "step_one:a + step_two:b"
    assert lines(effects) == ["step_one a", "step_two b"]
    store = SQLiteStore(tmp_path / "t.db")
    events = await read_events(store, result.run_id)
    await store.close()
    kinds = [e.type for e in events]
    assert kinds.count("model.completed") == 3 and kinds.count("tool.completed") == 2
    system = next(e for e in events if e.type == "message.system")
    assert system.payload["content"] == "Do both steps."


async def test_a_needs_approval_tool_pauses_and_tether_approve_continues_it(
    tmp_path: Path, effects: Path
) -> None:
    db = tmp_path / "t.db"
    url = f"sqlite:///{db}"
    first = await TetherRunner.run(openai_agent(approval=True), "Do both steps.", store=url)
    assert first.status == "waiting_approval" and first.final_output is None
    assert lines(effects) == []
    store = SQLiteStore(db)
    (pending,) = await pending_approvals(store, run_id=first.run_id)
    await store.close()
    assert pending.tool == "step_one"
    approve = tether_cli("approve", pending.request_id, "--store", url)
    assert approve.returncode == 0, approve.stderr
    done = await TetherRunner.run(
        openai_agent(approval=True), "Do both steps.", store=url, run_id=first.run_id
    )
    assert done.status == "completed" and done.final_output == "step_one:a + step_two:b"
    assert lines(effects) == ["step_one a", "step_two b"]


async def test_a_budget_limit_stops_the_run_before_the_model_is_called(tmp_path: Path) -> None:
    calls: list[object] = []
    model = fake_agents_model()
    real = model.get_response

    async def counted(*args: object, **kw: object) -> object:
        calls.append(args)
        return await real(*args, **kw)

    model.get_response = counted
    agent = SDKAgent(name="budgeted", instructions="Answer.", model=model)
    runtime = Runtime(
        SQLiteStore(tmp_path / "t.db"), budgets={"global": BudgetLimits(per_run=1e-9)}
    )
    result = await TetherRunner.run(agent, "Hello?", runtime=runtime)
    assert result.status == "stopped" and calls == []
    events = await read_events(runtime.store, result.run_id)
    assert any(e.type == "budget.denied" for e in events)
    await runtime.close()


def test_what_tether_cannot_run_yet_is_refused_with_a_reason() -> None:
    helper = SDKAgent(name="helper", instructions="Help.", model=fake_agents_model())
    with pytest.raises(UsageError, match="handoffs"):
        tether_agent(SDKAgent(name="a", handoffs=[helper], model=fake_agents_model()))
    with pytest.raises(UsageError, match="WebSearchTool"):
        tether_agent(SDKAgent(name="a", tools=[WebSearchTool()], model=fake_agents_model()))
    with pytest.raises(UsageError, match="text output"):
        tether_agent(SDKAgent(name="a", output_type=int, model=fake_agents_model()))
    with pytest.raises(UsageError, match="instructions="):
        tether_agent(SDKAgent(name="a", instructions=lambda ctx, agent: "hi"))
    with pytest.raises(UsageError, match=r"agents\.Agent"):
        tether_agent(object())
    with pytest.raises(UsageError, match="as text"):
        TetherRunner.run_sync(helper, [{"role": "user", "content": "hi"}])  # type: ignore[arg-type]


def test_what_would_be_silently_dropped_is_refused_instead() -> None:
    from agents import GuardrailFunctionOutput, input_guardrail, tool_input_guardrail
    from agents.mcp import MCPServerStdio

    from tether.integrations.mcp import MCPServer

    model = fake_agents_model()
    stdio = MCPServerStdio(params={"command": "true"})
    with pytest.raises(UsageError, match="MCPServer"):
        tether_agent(SDKAgent(name="a", mcp_servers=[stdio], model=model))
    with pytest.raises(UsageError, match="tool_use_behavior"):
        tether_agent(SDKAgent(name="a", tool_use_behavior="stop_on_first_tool", model=model))

    @input_guardrail
    def no_secrets(ctx: object, agent: object, text: object) -> GuardrailFunctionOutput:
        return GuardrailFunctionOutput(output_info=None, tripwire_triggered=False)

    guarded = SDKAgent(name="a", input_guardrails=[no_secrets], model=model)
    with pytest.raises(UsageError, match="guardrails"):
        tether_agent(guarded)
    assert tether_agent(guarded, skip_guardrails=True).name == "a"

    @tool_input_guardrail
    def check(data: object) -> object:
        raise AssertionError("never run")

    @function_tool(tool_input_guardrails=[check])
    def checked(x: str) -> str:
        """Checked."""
        return x

    with pytest.raises(UsageError, match="guardrails"):
        tether_agent(SDKAgent(name="a", tools=[checked], model=model))

    @function_tool(is_enabled=False)
    def hidden(x: str) -> str:
        """Disabled: the SDK never offers it."""
        return x

    @function_tool(is_enabled=lambda ctx, agent: True)
    def sometimes(x: str) -> str:
        """Enabled by a function of the run."""
        return x

    assert list(tether_agent(SDKAgent(name="a", tools=[hidden], model=model)).tools) == []
    with pytest.raises(UsageError, match="is_enabled"):
        tether_agent(SDKAgent(name="a", tools=[sometimes], model=model))
    # Tether's own MCP source (and Tether tools) can be added instead.
    agent = tether_agent(SDKAgent(name="a", model=model), tools=[MCPServer.stdio("srv")])
    assert [s.name for s in agent.tool_sources] == ["srv"]


def test_a_model_that_cannot_be_built_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UsageError, match="gpt-4o"):
        tether_agent(SDKAgent(name="a", model="gpt-4o"))


async def test_a_subclass_of_an_sdk_provider_model_is_still_a_real_model() -> None:
    from agents import OpenAIChatCompletionsModel
    from openai import AsyncOpenAI

    from tether.integrations.openai_agents import AgentsSDKModel
    from tether.models import Message, ModelRequest

    class Mine(OpenAIChatCompletionsModel):
        pass

    client = AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="unused", max_retries=0)
    model = AgentsSDKModel(Mine(model="m", openai_client=client))
    request = ModelRequest(messages=(Message(role="user", content="hi"),), tools=())
    with pytest.raises(UsageError, match="TETHER_ALLOW_MODEL_REQUESTS"):
        await model.complete(request)  # refused before any connection is tried
    await client.close()


async def test_a_callable_needs_approval_is_asked_per_call(tmp_path: Path, effects: Path) -> None:
    asked: list[dict[str, object]] = []

    async def only_a(ctx: object, params: dict[str, object], call_id: str) -> bool:
        asked.append(params)
        return params.get("value") == "a"

    url = f"sqlite:///{tmp_path / 't.db'}"
    first = await TetherRunner.run(openai_agent(approval=only_a), "Do both steps.", store=url)
    assert first.status == "waiting_approval" and lines(effects) == []
    store = SQLiteStore(tmp_path / "t.db")
    (pending,) = await pending_approvals(store, run_id=first.run_id)
    await store.close()
    assert pending.tool == "step_one" and pending.kind == "approval"
    assert tether_cli("approve", pending.request_id, "--store", url).returncode == 0
    done = await TetherRunner.run(
        openai_agent(approval=only_a), "Do both steps.", store=url, run_id=first.run_id
    )
    assert done.status == "completed" and done.final_output == "step_one:a + step_two:b"
    assert lines(effects) == ["step_one a", "step_two b"]
    assert asked == [{"value": "a"}]  # asked once; the approved call is not asked again
