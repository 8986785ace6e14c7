"""Agents for the test-kit tests, loaded by path (`tests/kit/agents.py:NAME`) by the CLI.

`payments(folder)` pays a bill each turn and records every payment in `folder/world.jsonl`
(and with `record_effect`). `broken_payments` is the same agent with `pay` wrongly
declared idempotent: a crash that hides a payment's outcome makes the runtime pay again.
`mcp_payments(folder)` pays through a real MCP server (a subprocess, which records each
payment in `folder/world.txt`) and adds numbers with its read-only `add`;
`broken_mcp_payments` declares the server's `pay` idempotent, wrongly.
The demo variants change what the demo's code does, for replays to catch.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from pathlib import Path
from unittest import mock

from tether import Agent, Limits, ToolContext, tool
from tether.demo import _agent as demo_module
from tether.demo import demo_agent, demo_plan
from tether.models import ModelRequest, ScriptedModel, Turn
from tether.testing import record_effect

TURNS = 12


def payments(folder: str = ".", *, idempotent: bool = False) -> Agent:
    world = Path(folder) / "world.jsonl"

    @tool(idempotent=idempotent)
    def pay(n: int, ctx: ToolContext) -> str:
        """Pay bill n: every call pays (no check for a key it has seen)."""
        with world.open("a") as f:
            f.write(json.dumps({"n": n, "key": ctx.idempotency_key}) + "\n")
        record_effect(ctx, f"paid {n}")
        return f"paid {n}"

    script: list[Turn | str] = [Turn(calls=(("pay", {"n": i}),)) for i in range(TURNS)]
    return Agent(
        name="payments",
        instructions="Pay the bills.",
        tools=[pay],
        model=ScriptedModel([*script, "all paid"]),
        limits=Limits(max_steps=TURNS + 5),
    )


def broken_payments(folder: str = ".") -> Agent:
    return payments(folder, idempotent=True)


MCP_SERVER = str(Path(__file__).parent.parent / "integrations" / "mcp_test_server.py")
MCP_TURNS = 8


def mcp_payments(folder: str = ".", *, idempotent: bool = False) -> Agent:
    from tether.integrations.mcp import MCPServer

    server = MCPServer.stdio(
        sys.executable, [MCP_SERVER], name="bank",
        env={"TETHER_TEST_WORLD": str(Path(folder) / "world.txt")},
        idempotent={"pay": True} if idempotent else {}, timeout_s=20,
    )  # fmt: skip
    # One call a turn: a replay compares the order of outcomes, and two calls of one turn
    # run concurrently, finishing in whatever order their faults give them.
    script: list[Turn | str] = [
        Turn(calls=((("pay", {"n": i // 2}) if i % 2 == 0 else ("add", {"a": i, "b": 1})),))
        for i in range(2 * MCP_TURNS)
    ]
    return Agent(
        name="mcp-payments",
        instructions="Pay the bills.",
        tools=[server],
        model=ScriptedModel([*script, "all paid"]),
        limits=Limits(max_steps=2 * MCP_TURNS + 5),
    )


def broken_mcp_payments(folder: str = ".") -> Agent:
    return mcp_payments(folder, idempotent=True)


def demo_publish_unguarded(out: str = "tether-demo") -> Agent:
    """The demo with its publish step no longer waiting for a human."""
    agent = demo_agent(out)
    tools = [dataclasses.replace(t, requires_approval=False) if t.name == "publish" else t
             for t in agent.tools]  # fmt: skip
    return dataclasses.replace(agent, tools=tools)


def demo_search_renamed(out: str = "tether-demo") -> Agent:
    """The demo with its search tool renamed (the recorded model still calls `search`)."""
    agent = demo_agent(out)
    tools = [dataclasses.replace(t, name="find") if t.name == "search" else t
             for t in agent.tools]  # fmt: skip
    return dataclasses.replace(agent, tools=tools)


def demo_plan_changed(out: str = "tether-demo") -> Agent:
    """The demo with one step of its plan (`plan.json`) changed: step 6 searches for other
    words. The plan is the demo's script, so only a replay with `--script` sees it."""
    plan = copy.deepcopy(demo_plan())
    plan["steps"][5]["args"]["query"] = "orrimek retention claims"

    def policy(request: ModelRequest) -> Turn:
        with mock.patch.object(demo_module, "demo_plan", lambda: plan):
            return demo_module.scripted_policy(request)

    return dataclasses.replace(demo_agent(out), model=ScriptedModel(policy, name="scripted"))
