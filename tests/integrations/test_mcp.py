"""MCP servers as tool sources, against real servers from PyPI over stdio and a server
built with the `mcp` SDK (stdio and streamable HTTP)."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integrations.conftest import need, tether_cli

need("mcp", "mcp_server_time", "mcp_server_git")

from tether import Agent, Runtime  # noqa: E402
from tether.approvals import pending_approvals, resolve_approval  # noqa: E402
from tether.errors import UsageError  # noqa: E402
from tether.events import Event  # noqa: E402
from tether.integrations.mcp import MCPServer, MCPServerError  # noqa: E402
from tether.journal import SQLiteStore, read_events  # noqa: E402
from tether.models import ScriptedModel, Turn, call  # noqa: E402

TEST_SERVER = str(Path(__file__).with_name("mcp_test_server.py"))


def time_server() -> MCPServer:
    return MCPServer.stdio(sys.executable, ["-m", "mcp_server_time", "--local-timezone", "UTC"])


def git_server(repo: Path, **options: object) -> MCPServer:
    return MCPServer.stdio(
        sys.executable, ["-m", "mcp_server_git", "--repository", str(repo)], **options
    )


def agent_with(source: MCPServer, script: list[Turn | str]) -> Agent:
    return Agent(
        name="mcp-agent",
        instructions="Use the tools.",
        tools=[source],
        model=ScriptedModel(script),
    )


async def events_of(runtime: Runtime, run_id: str) -> list[Event]:
    return await read_events(runtime.store, run_id)


def listings(events: list[Event]) -> list[Event]:
    return [e for e in events if e.type == "note" and e.payload.get("kind") == "tools.listed"]


async def test_time_server_tools_are_listed_once_journaled_and_called(tmp_path: Path) -> None:
    agent = agent_with(
        time_server(), [call("get_current_time", {"timezone": "UTC"}), "It is late."]
    )
    assert agent.tools == () and [s.name for s in agent.tool_sources] == ["mcp_server_time"]
    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    result = await runtime.start(agent, "What time is it?")
    assert result.status == "completed", result.reason
    events = await events_of(runtime, result.run_id)
    (listed,) = listings(events)
    assert listed.payload["source"] == "mcp_server_time"
    names = {t["name"] for t in listed.payload["tools"]}
    assert names == {"get_current_time", "convert_time"}
    # Journaled before the mission: a resume finds it in the run's first events.
    assert listed.seq < next(e.seq for e in events if e.type == "message.system")
    requested = next(e for e in events if e.type == "tool.requested")
    assert requested.payload["idempotent"] is True  # readOnlyHint
    completed = next(e for e in events if e.type == "tool.completed")
    assert json.loads(completed.payload["output"])["timezone"] == "UTC"
    assert completed.payload["status"].startswith("[step 1/")  # the runway line, as any call
    await runtime.close()

    # The CLI reads these runs like any other: the timeline, and why a result came to be.
    store_url = f"sqlite:///{tmp_path / 't.db'}"
    shown = tether_cli("show", result.run_id, "--view", "operator", "--store", store_url)
    assert shown.returncode == 0 and "get_current_time" in shown.stdout, shown.stderr
    why = tether_cli("why", completed.id, "--store", store_url)
    assert why.returncode == 0 and "get_current_time" in why.stdout, why.stderr


async def test_destructive_tool_waits_for_approval_and_runs_once_approved(
    tmp_path: Path, git_repo: Path
) -> None:
    (git_repo / "README").write_text("changed\n")
    script: list[Turn | str] = [
        call("git_add", {"repo_path": str(git_repo), "files": ["README"]}),
        call("git_reset", {"repo_path": str(git_repo)}),
        "Reset.",
    ]
    agent = agent_with(git_server(git_repo), script)
    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    first = await runtime.start(agent, "Stage then unstage README")
    assert first.status == "waiting_approval"
    (pending,) = await pending_approvals(runtime.store, run_id=first.run_id)
    assert pending.tool == "git_reset"  # destructiveHint: approval by default
    # An edit is checked against the tool's schema from the journaled listing.
    with pytest.raises(UsageError, match="repo_path"):
        await resolve_approval(
            runtime.store, pending.request_id, decision="approved", agent=agent,
            arguments={"repo_path": 5},
        )  # fmt: skip
    await resolve_approval(
        runtime.store, pending.request_id, decision="approved", agent=agent,
        arguments={"repo_path": str(git_repo)},
    )  # fmt: skip
    done = await runtime.resume(agent, first.run_id)
    assert done.status == "completed", done.reason
    events = await events_of(runtime, first.run_id)
    outputs = [e.payload["output"] for e in events if e.type == "tool.completed"]
    assert any("reset" in o.lower() for o in outputs), outputs
    assert len(listings(events)) == 1  # the resume read the listing from the journal
    await runtime.close()


async def test_approval_rule_is_configurable_per_tool(tmp_path: Path, git_repo: Path) -> None:
    script: list[Turn | str] = [call("git_status", {"repo_path": str(git_repo)}), "Clean."]
    source = git_server(git_repo, approval={"git_status": True})
    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    result = await runtime.start(agent_with(source, script), "Status?")
    assert result.status == "waiting_approval"
    source = git_server(git_repo, approval={"git_reset": False}, include=["git_reset"])
    tools = source.open("run_x").tools(
        [{"name": "git_reset", "annotations": {"destructiveHint": True}}]
    )
    assert [t.requires_approval for t in tools] == [False]
    (commit,) = (
        git_server(git_repo, on_unknown={"git_commit": "ask"})
        .open("run_x")
        .tools([{"name": "git_commit", "annotations": {"readOnlyHint": False}}])
    )
    assert (commit.idempotent, commit.on_unknown, commit.requires_approval) == (False, "ask", False)
    await runtime.close()


async def test_a_server_that_cannot_start_is_an_error_naming_its_command(tmp_path: Path) -> None:
    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    missing = MCPServer.stdio("/nonexistent/mcp-server", ["--flag"])
    with pytest.raises(MCPServerError, match=r"/nonexistent/mcp-server --flag"):
        await runtime.start(agent_with(missing, ["done"]), "hi")
    failing = MCPServer.stdio(sys.executable, [TEST_SERVER, "--fail-start"], name="broken")
    with pytest.raises(MCPServerError) as info:
        await runtime.start(agent_with(failing, ["done"]), "hi")
    message = str(info.value)
    assert "broken" in message and "--fail-start" in message
    assert "config file /etc/nowhere.toml not found" in message  # its stderr, captured
    await runtime.close()


async def test_a_dead_session_reconnects_and_an_error_result_reaches_the_model(
    tmp_path: Path,
) -> None:
    source = MCPServer.stdio(sys.executable, [TEST_SERVER], name="test")
    script: list[Turn | str] = [call("pid"), call("crash"), call("pid"), call("fails"), "done"]
    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    result = await runtime.start(agent_with(source, script), "go")
    assert result.status == "completed", result.reason
    events = await events_of(runtime, result.run_id)
    outcomes = [
        (e.payload["name"], e.payload["error"], e.payload["output"])
        for e in events
        if e.type in ("tool.completed", "tool.failed")
    ]
    (_, _, first_pid), crashed, (_, _, second_pid), failed = outcomes
    assert crashed[1] == "exception" and "outcome is unknown" in crashed[2]
    assert first_pid != second_pid  # a new session, a new server process
    assert failed[1] == "retry_requested" and "the disk is full" in failed[2]
    await runtime.close()


async def test_each_run_has_its_own_session(tmp_path: Path) -> None:
    import asyncio

    agent = agent_with(
        MCPServer.stdio(sys.executable, [TEST_SERVER], name="test"), [call("pid"), "done"]
    )
    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    runs = await asyncio.gather(runtime.start(agent, "one"), runtime.start(agent, "two"))
    pids = set()
    for run in runs:
        assert run.status == "completed"
        events = await events_of(runtime, run.run_id)
        pids |= {e.payload["output"] for e in events if e.type == "tool.completed"}
    assert len(pids) == 2  # two runs, two server processes: no state shared between runs
    await runtime.close()


async def test_a_call_that_outlives_its_timeout_is_an_error_result(tmp_path: Path) -> None:
    source = MCPServer.stdio(
        sys.executable, ["-m", "mcp_server_time"], name="slow", timeout_s=0.001
    )
    script: list[Turn | str] = [call("get_current_time", {"timezone": "UTC"}), "ok"]
    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    result = await runtime.start(agent_with(source, script), "time?")
    events = await events_of(runtime, result.run_id)
    failed = [e.payload for e in events if e.type == "tool.failed"]
    assert failed and failed[0]["error"] == "timeout"
    assert "outcome is unknown" not in failed[0]["output"]  # read-only: nothing to check
    await runtime.close()


async def test_a_call_with_effects_that_times_out_is_said_to_have_an_unknown_outcome(
    tmp_path: Path,
) -> None:
    source = MCPServer.stdio(sys.executable, [TEST_SERVER], name="test", timeout_s=0.5)
    script: list[Turn | str] = [call("slow", {"seconds": 5}), "ok"]
    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    result = await runtime.start(agent_with(source, script), "sleep")
    events = await events_of(runtime, result.run_id)
    (failed,) = [e.payload for e in events if e.type == "tool.failed"]
    assert failed["error"] == "timeout"
    assert "its outcome is unknown: check it first" in failed["output"]
    await runtime.close()


@pytest.fixture
def http_server() -> Iterator[str]:
    """The test server over streamable HTTP, in a thread of this process."""
    import uvicorn

    from tests.integrations import mcp_test_server

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(
        mcp_test_server.http_app(), host="127.0.0.1", port=port,
        log_level="warning", lifespan="on",
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the HTTP MCP server did not start"
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def test_streamable_http_server(tmp_path: Path, http_server: str) -> None:
    source = MCPServer.http(http_server, headers={"X-Api-Key": "k"}, name="calc")
    script: list[Turn | str] = [
        call("add", {"a": 2, "b": 40}), call("add", {"a": 2}), call("add", {"a": "2", "b": 1}),
        "42",
    ]  # fmt: skip
    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    result = await runtime.start(agent_with(source, script), "2+40?")
    assert result.status == "completed", result.reason
    events = await events_of(runtime, result.run_id)
    outputs = [e.payload for e in events if e.type in ("tool.completed", "tool.failed")]
    assert outputs[0]["output"] == "42"
    # A required argument missing is refused before the call, in words the model reads.
    assert outputs[1]["error"] == "invalid_arguments" and "b" in outputs[1]["output"]
    assert outputs[2]["error"] == "invalid_arguments"
    assert "a must be integer" in outputs[2]["output"]
    (listed,) = listings(events)
    assert listed.payload["source"] == "calc"
    from tests.integrations.mcp_test_server import SEEN_HEADERS

    assert SEEN_HEADERS and all(h.get("x-api-key") == "k" for h in SEEN_HEADERS)
    await runtime.close()


async def test_an_unreachable_http_server_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = MCPServer.http(f"http://127.0.0.1:{port}/mcp", connect_timeout_s=5)
    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    with pytest.raises(MCPServerError, match=f"127.0.0.1:{port}"):
        await runtime.start(agent_with(source, ["done"]), "hi")
    await runtime.close()


def test_bad_configuration_is_refused_up_front() -> None:
    from tether.errors import UsageError

    with pytest.raises(UsageError, match="http"):
        MCPServer.http("ftp://example.invalid")
    with pytest.raises(UsageError, match="share a name"):
        Agent(name="a", instructions="x", tools=[time_server(), time_server()])
    with pytest.raises(UsageError, match="not a tool"):
        Agent(name="a", instructions="x", tools=[print])  # type: ignore[list-item]


async def test_a_replay_takes_the_tool_list_and_results_from_the_recording(
    tmp_path: Path,
) -> None:
    from tether.testing import replay
    from tether.views import Viewer

    recorded_source = MCPServer.stdio(sys.executable, [TEST_SERVER], name="test")
    script: list[Turn | str] = [call("pid"), call("add", {"a": 1, "b": 2}), "done"]
    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    result = await runtime.start(agent_with(recorded_source, script), "go")
    assert result.status == "completed", result.reason
    exported = tmp_path / "run.jsonl"
    exported.write_bytes(
        b"".join(line + b"\n" for line in await Viewer(runtime.store, "audit").export_lines(
            result.run_id
        ))
    )  # fmt: skip
    await runtime.close()
    # The same source, now unable to start: a replay must neither list nor call it.
    gone = MCPServer.stdio("/nonexistent/mcp-server", name="test")
    report = await replay(agent_with(gone, script), exported)
    assert report.ok, report.divergence
    assert report.replayed_status == "completed"


@pytest.mark.slow  # four server processes
async def test_two_sources_offering_one_tool_name_are_refused_before_journaling(
    tmp_path: Path,
) -> None:
    first = MCPServer.stdio(sys.executable, [TEST_SERVER], name="one")
    second = MCPServer.stdio(sys.executable, [TEST_SERVER], name="two")
    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    agent = Agent(
        name="twice", instructions="x", tools=[first, second], model=ScriptedModel(["done"])
    )
    with pytest.raises(
        UsageError, match=r"'pid' of source 'two' is also offered by source 'one'.*prefix="
    ):
        await runtime.start(agent, "go")
    (run,) = await runtime.store.list_runs()
    assert listings(await events_of(runtime, run.run_id)) == []  # fix the agent, then resume
    prefixed = MCPServer.stdio(sys.executable, [TEST_SERVER], name="two", prefix="two_")
    fixed = Agent(
        name="twice", instructions="x", tools=[first, prefixed],
        model=ScriptedModel([call("two_pid"), "done"]),
    )  # fmt: skip
    result = await runtime.resume(fixed, run.run_id)
    assert result.status == "completed", result.reason
    assert len(listings(await events_of(runtime, run.run_id))) == 2
    await runtime.close()


async def test_a_source_added_after_the_run_started_is_refused(tmp_path: Path) -> None:
    from tether import tool

    @tool(requires_approval=True)
    def publish(text: str) -> str:
        """Publish."""
        return "published"

    def agent(*sources: MCPServer) -> Agent:
        script: list[Turn | str] = [call("publish", {"text": "t"}), "done"]
        return Agent(
            name="grown", instructions="x", tools=[publish, *sources],
            model=ScriptedModel(script),
        )  # fmt: skip

    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    first = await runtime.start(agent(), "go")
    assert first.status == "waiting_approval"  # past its first cycle
    (pending,) = await pending_approvals(runtime.store, run_id=first.run_id)
    await resolve_approval(runtime.store, pending.request_id, decision="approved")
    late = MCPServer.stdio("/nonexistent/mcp-server", name="late")  # never contacted
    with pytest.raises(UsageError, match="'late': the source was added to the agent after"):
        await runtime.resume(agent(late), first.run_id)
    done = await runtime.resume(agent(), first.run_id)  # the agent it started with
    assert done.status == "completed", done.reason
    await runtime.close()
