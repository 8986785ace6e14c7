"""Runs of integration agents are served by workers like any run: a pydantic-ai agent, an
Agents SDK agent and an agent with an MCP server, submitted to a queue and driven by a
`Worker`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.integrations.conftest import lines, need
from tether import Agent
from tether.journal import SQLiteStore, read_events
from tether.models import ScriptedModel, call
from tether.worker import AgentRegistry, AgentSource, Worker, submit_run


async def serve(store: SQLiteStore, agent: Agent, task: str) -> str:
    run_id = await submit_run(store, agent, task, agent_spec="tests:agent")
    worker = Worker(
        store, agents=AgentRegistry([AgentSource.of(agent, "tests:agent")]), poll_max_s=0.2
    )
    await asyncio.wait_for(worker.serve(until_idle=True), timeout=60)
    return run_id


async def test_a_worker_drives_a_pydantic_ai_agent(tmp_path: Path, effects: Path) -> None:
    need("pydantic_ai")
    from tests.integrations.agents_under_test import pydantic_agent
    from tether.integrations.pydantic_ai import TetherAgent

    store = SQLiteStore(tmp_path / "t.db")
    agent = TetherAgent(pydantic_agent(), name="steps").agent
    run_id = await serve(store, agent, "Do both steps.")
    record = await store.get_run(run_id)
    await store.close()
    assert record.summary.status == "completed"
    assert lines(effects) == ["step_one a", "step_two b"]


async def test_a_worker_drives_an_agents_sdk_agent(tmp_path: Path, effects: Path) -> None:
    need("agents")
    from tests.integrations.agents_under_test import openai_agent
    from tether.integrations.openai_agents import tether_agent

    store = SQLiteStore(tmp_path / "t.db")
    run_id = await serve(store, tether_agent(openai_agent()), "Do both steps.")
    record = await store.get_run(run_id)
    await store.close()
    assert record.summary.status == "completed"
    assert lines(effects) == ["step_one a", "step_two b"]


async def test_a_worker_drives_an_agent_with_an_mcp_server(tmp_path: Path) -> None:
    need("mcp", "mcp_server_time")
    from tether.integrations.mcp import MCPServer

    store = SQLiteStore(tmp_path / "t.db")
    agent = Agent(
        name="clock",
        instructions="Tell the time.",
        tools=[MCPServer.stdio(sys.executable, ["-m", "mcp_server_time"])],
        model=ScriptedModel([call("get_current_time", {"timezone": "UTC"}), "Noted."]),
    )
    run_id = await serve(store, agent, "Time?")
    events = await read_events(store, run_id)
    await store.close()
    assert events[-1].type == "run.completed"
    assert [e.payload["name"] for e in events if e.type == "tool.completed"] == ["get_current_time"]
