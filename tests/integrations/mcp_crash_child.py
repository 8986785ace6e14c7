"""A real process for test_mcp_crash.py: runs an agent that commits through mcp-server-git.

`start DB REPO KILL` creates the run, prints its id, and drives it until it SIGKILLs itself:
`after-result` once the `git_commit` result is durable in the journal, `in-flight` right
after the server made the commit and before its result was journaled. `resume DB REPO
RUN_ID` drives the run on in a fresh process whose MCP source refuses to list its tools,
so the run can only go on from the listing in its journal; it prints the result as JSON.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tether import Agent, Runtime, Tool
from tether.events import Event
from tether.integrations.mcp import MCPServer
from tether.journal import SQLiteStore
from tether.models import ScriptedModel, Turn, call
from tether.tools import ToolSession


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Session:
    def __init__(self, inner: ToolSession, *, listable: bool, wrap: Callable[[Tool], Tool]):
        self.inner, self.listable, self.wrap = inner, listable, wrap

    async def list_tools(self) -> list[dict[str, Any]]:
        if not self.listable:
            raise AssertionError("a resumed run must read its tool list from the journal")
        return await self.inner.list_tools()

    def tools(self, listing: list[dict[str, Any]]) -> Sequence[Tool]:
        return [self.wrap(t) for t in self.inner.tools(listing)]

    async def aclose(self) -> None:
        await self.inner.aclose()


class Source:
    """The git server, as the test needs it in each process (the ToolSource protocol)."""

    def __init__(self, inner: MCPServer, *, listable: bool, kill_in_flight: bool) -> None:
        self.inner, self.name = inner, inner.name
        self.listable, self.kill_in_flight = listable, kill_in_flight

    def open(self, run_id: str) -> Session:
        return Session(self.inner.open(run_id), listable=self.listable, wrap=self.wrap)

    def wrap(self, tool: Tool) -> Tool:
        if tool.name != "git_commit" or not self.kill_in_flight:
            return tool
        real = tool.fn

        async def commit_then_die(**arguments: Any) -> Any:
            await real(**arguments)
            die()  # the commit is made; its result never reaches the journal

        return dataclasses.replace(tool, fn=commit_then_die)


class KillAfterCommitResult:
    """A store that SIGKILLs its process once the git_commit result is durable."""

    def __init__(self, inner: SQLiteStore) -> None:
        self.inner = inner
        self.url = inner.url

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append(self, lease: Any, events: Sequence[Event], **options: Any) -> None:
        await self.inner.append(lease, events, **options)
        if any(e.type == "tool.completed" and e.payload["name"] == "git_commit" for e in events):
            die()


def agent(repo: str, *, listable: bool, kill_in_flight: bool) -> Agent:
    server = MCPServer.stdio(sys.executable, ["-m", "mcp_server_git", "--repository", repo])
    script: list[Turn | str] = [
        call("git_add", {"repo_path": repo, "files": ["notes.txt"]}),
        call("git_commit", {"repo_path": repo, "message": "add notes"}),
        "Committed the notes.",
    ]
    source = Source(server, listable=listable, kill_in_flight=kill_in_flight)
    return Agent(
        name="git-committer",
        instructions="Commit notes.txt.",
        tools=[source],  # type: ignore[list-item]
        model=ScriptedModel(script),
    )


async def main(argv: list[str]) -> None:
    mode, db, repo = argv[:3]
    store = SQLiteStore(db)
    if mode == "start":
        kill = argv[3]
        the_agent = agent(repo, listable=True, kill_in_flight=kill == "in-flight")
        wrapped: Any = KillAfterCommitResult(store) if kill == "after-result" else store
        runtime = Runtime(wrapped)
        run_id = await runtime.create(the_agent, "Commit the notes")
        print(run_id, flush=True)
        await runtime.resume(the_agent, run_id)
        print("not killed", flush=True)
    else:
        runtime = Runtime(store)
        result = await runtime.resume(agent(repo, listable=False, kill_in_flight=False), argv[3])
        print(json.dumps({"status": result.status, "answer": result.answer}), flush=True)
    await runtime.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
