"""Fault injection into the tools of a real MCP server (a subprocess): an error result, a
timeout, the server exiting mid-call. Each reaches the journal as the runtime's rules
decide, a non-idempotent payment is never repeated, and a severed session is replaced by
a new server process."""

from __future__ import annotations

import collections
import dataclasses
import sys
from pathlib import Path

import pytest

from tests.integrations.conftest import need

need("mcp")

from tether import Agent, Runtime  # noqa: E402
from tether.chaos import MCP_FAULT_KINDS, FaultPlan  # noqa: E402
from tether.events import Event  # noqa: E402
from tether.integrations.mcp import MCPServer  # noqa: E402
from tether.journal import SQLiteStore, read_events  # noqa: E402
from tether.models import ScriptedModel, Turn, call  # noqa: E402

TEST_SERVER = str(Path(__file__).with_name("mcp_test_server.py"))


def faulty_agent(world: Path, script: list[Turn | str], plan: FaultPlan) -> Agent:
    server = MCPServer.stdio(sys.executable, [TEST_SERVER], name="bank",
                             env={"TETHER_TEST_WORLD": str(world)})  # fmt: skip
    agent = Agent(name="bank-agent", instructions="Pay.", tools=[server],
                  model=ScriptedModel(script))  # fmt: skip
    return dataclasses.replace(agent, tool_sources=plan.wrap_sources(agent.tool_sources))


async def outcomes(tmp_path: Path, plan: FaultPlan, script: list[Turn | str]) -> list[Event]:
    world = tmp_path / "world.txt"
    world.touch()
    runtime = Runtime(SQLiteStore(tmp_path / "t.db"), model_retry_backoff_s=0.0)
    try:
        result = await runtime.start(faulty_agent(world, script, plan), "pay")
        assert result.status == "completed", result.reason
        events = await read_events(runtime.store, result.run_id)
    finally:
        await runtime.close()
    return [e for e in events if e.type in ("tool.completed", "tool.failed")]


@pytest.mark.parametrize(
    ("kind", "error", "words"),
    [
        ("mcp_failure", "retry_requested", "answered with an error result"),
        ("mcp_timeout", "timeout", "its outcome is unknown: check it first"),
        ("mcp_disconnect", "exception", "exited mid-call; its outcome is unknown"),
    ],
)
async def test_each_fault_reaches_the_journal_and_a_payment_is_never_repeated(
    tmp_path: Path, kind: str, error: str, words: str
) -> None:
    seen: collections.Counter[str] = collections.Counter()
    rate = {"mcp_failure": "mcp_fail_rate", "mcp_timeout": "mcp_timeout_rate",
            "mcp_disconnect": "mcp_disconnect_rate"}[kind]  # fmt: skip
    plan = FaultPlan(seed=1, on_inject=lambda k: seen.update([k]), **{rate: 1.0})  # type: ignore[arg-type]
    script: list[Turn | str] = [call("pay", {"n": n}) for n in range(3)] + ["done"]
    found = await outcomes(tmp_path, plan, script)
    assert [e.payload["error"] for e in found] == [error] * 3
    assert all(words in e.payload["output"] for e in found), found[0].payload["output"]
    assert seen == {kind: 3}  # pay is not idempotent: never retried, one fault a call
    paid = (tmp_path / "world.txt").read_text().split()
    assert len(paid) == len(set(paid))  # whatever reached the server, it ran once
    if kind == "mcp_failure":
        assert paid == []  # an error result: the server was never called


async def test_a_severed_session_is_replaced_by_a_new_server_process(tmp_path: Path) -> None:
    seen: collections.Counter[str] = collections.Counter()
    plan = FaultPlan(seed=3, mcp_disconnect_rate=0.4, on_inject=lambda k: seen.update([k]))
    found = await outcomes(tmp_path, plan, [call("pid") for _ in range(8)] + ["done"])
    pids = [e.payload["output"] for e in found if e.type == "tool.completed"]
    assert seen["mcp_disconnect"] >= 1
    # Each disconnect stopped the server; the next call (pid is read-only: the dropped call
    # itself is retried once) started a new one.
    assert len(set(pids)) >= 2, (pids, seen)


def test_the_kinds_and_rates_are_known_to_the_plan() -> None:
    assert MCP_FAULT_KINDS == ("mcp_failure", "mcp_timeout", "mcp_disconnect")
    plan = FaultPlan.parse("mcp_fail_rate=0.1;mcp_timeout_rate=0.2;mcp_disconnect_rate=0.3")
    assert (plan.mcp_fail_rate, plan.mcp_timeout_rate, plan.mcp_disconnect_rate) == (
        0.1, 0.2, 0.3,
    )  # fmt: skip
    from tether.errors import UsageError

    with pytest.raises(UsageError, match="mcp_timeout_rate"):
        FaultPlan(mcp_timeout_rate=1.5)


def test_the_report_counts_mcp_faults_only_for_an_agent_with_mcp_tools() -> None:
    from tether.testing import REPORTED_KINDS, ChaosReport
    from tether.testing._plan import ChaosPlan

    plain = ChaosReport(seed=0, plan=ChaosPlan(), runs=[], seconds=0.0, clean_length=3)
    assert tuple(plain.fault_counts()) == REPORTED_KINDS
    with_mcp = dataclasses.replace(plain, source_tools=9)
    assert tuple(with_mcp.fault_counts()) == (*REPORTED_KINDS, *MCP_FAULT_KINDS)
    assert with_mcp.to_json()["source_tools"] == 9


def test_tether_chaos_in_the_environment_reaches_mcp_tools_of_tether_run(tmp_path: Path) -> None:
    import json
    import os
    import subprocess

    agent_file = tmp_path / "agent.py"
    agent_file.write_text(
        "import sys\n"
        "from tether import Agent\n"
        "from tether.integrations.mcp import MCPServer\n"
        "from tether.models import ScriptedModel, call\n"
        f"server = MCPServer.stdio(sys.executable, [{TEST_SERVER!r}], name='calc')\n"
        "agent = Agent(name='adder', instructions='Add.', tools=[server],\n"
        "              model=ScriptedModel([call('add', {'a': 1, 'b': 2}), 'done']))\n"
    )
    env = {**os.environ, "TETHER_CHAOS": "mcp_fail_rate=1"}
    url = f"sqlite:///{tmp_path / 't.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "tether", "run", f"{agent_file}:agent", "--task", "add",
         "--store", url, "--quiet", "--json"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    run_id = json.loads(done.stdout)["run_id"]
    shown = subprocess.run(
        [sys.executable, "-m", "tether", "show", run_id, "--store", url, "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    failed = [e for e in json.loads(shown.stdout)["events"] if e["type"] == "tool.failed"]
    assert len(failed) == 1
    assert "chaos: MCP server 'calc' answered with an error result" in json.dumps(failed)
