"""Binding an agent's tool sources to one run: list once, journal, read back on resume.

The first time a run is driven, each source's tool list is fetched and journaled as a
`note` (kind `tools.listed`) before the mission; every later drive of the run (a resume in
another process, a worker taking over, a replay) builds the tools from that journaled list
and never asks the server again. So the tools a run's model saw stay the tools the run
has, whatever the server offers today, and nothing is cached across runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..agent import Agent
from ..errors import UsageError
from ..events import EventDraft
from ..journal import RunJournal, Store, read_events
from ..tools import Tool, ToolSession
from ..tools._validate import json_safe

__all__ = [
    "LISTING_NOTE",
    "BoundSources",
    "bind_tool_sources",
    "journaled_listings",
    "with_journaled_tools",
]

LISTING_NOTE = "tools.listed"
"""`kind` of the note that records one source's tool list."""

_PREFIX_EVENTS = 64
"""Listings are journaled before the first cycle; resume reads no further than this many
events past one per source."""


@dataclass(kw_only=True, slots=True)
class BoundSources:
    """The agent with its sources' tools in place, and the sessions to close afterwards."""

    agent: Agent
    sessions: Sequence[ToolSession] = ()

    async def aclose(self) -> None:
        for session in self.sessions:
            with contextlib.suppress(Exception):
                await session.aclose()


async def journaled_listings(
    store: Store, run_id: str, *, sources: int
) -> dict[str, list[dict[str, Any]]]:
    """Listings journaled at the start of the run, by source name (a bounded read)."""
    events = await read_events(store, run_id, until_seq=_PREFIX_EVENTS + sources)
    found: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if event.type == "cycle.started":
            break
        if event.type == "note" and event.payload.get("kind") == LISTING_NOTE:
            found.setdefault(str(event.payload["source"]), list(event.payload["tools"]))
    return found


async def with_journaled_tools(agent: Agent, store: Store, run_id: str) -> Agent:
    """The agent with the tools its sources listed in this run's journal, for checking an
    edited approval against their schemas; it opens no connection."""
    if not agent.tool_sources:
        return agent
    listed = await journaled_listings(store, run_id, sources=len(agent.tool_sources))
    tools = [
        tool
        for source in agent.tool_sources
        if source.name in listed
        for tool in source.open(run_id).tools(listed[source.name])
    ]
    return dataclasses.replace(agent, tools=(*agent.tools, *tools), tool_sources=())


async def bind_tool_sources(agent: Agent, journal: RunJournal) -> BoundSources:
    """Open one session per source for this run and add the tools of each.

    A listing the journal already holds is used as it is; a missing one is fetched from
    the server and journaled (synced: the model will be shown these tools) before use,
    unless the run is past its first cycle: a source added to the agent since then is
    refused, so a run's tools never change under it.
    """
    if not agent.tool_sources:
        return BoundSources(agent=agent)
    listed = await journaled_listings(
        journal.store, journal.run_id, sources=len(agent.tool_sources)
    )
    sessions: list[ToolSession] = []
    bound = BoundSources(agent=agent, sessions=sessions)
    drafts: list[EventDraft] = []
    tools: list[Tool] = []
    offered_by = {t.name: "the agent" for t in agent.tools}
    try:
        for source in agent.tool_sources:
            session = source.open(journal.run_id)
            sessions.append(session)
            listing = listed.get(source.name)
            if listing is None and journal.state.cycle > 0:
                raise UsageError(
                    f"run {journal.run_id} has no tool list of source {source.name!r}: the "
                    "source was added to the agent after the run started, and the run's "
                    "model was never offered its tools; resume it with the agent it started "
                    "with, or start a new run"
                )
            if listing is None:
                # A server's listing is untrusted: text the journal can store, no NaN.
                listing = json_safe(await session.list_tools())
                drafts.append(
                    EventDraft(
                        type="note",
                        payload={"kind": LISTING_NOTE, "source": source.name, "tools": listing},
                        causation_id=f"{journal.run_id}:{journal.state.last_seq}",
                        actor=f"source:{source.name}",
                    )
                )
            for tool in session.tools(listing):
                if tool.name in offered_by:  # refused before anything is journaled
                    raise UsageError(
                        f"agent {agent.name}: tool {tool.name!r} of source {source.name!r} is "
                        f"also offered by {offered_by[tool.name]}: give the source prefix= "
                        "or include=[...]"
                    )
                offered_by[tool.name] = f"source {source.name!r}"
                tools.append(tool)
        if drafts:
            await journal.append(*drafts, sync=True)
        bound.agent = dataclasses.replace(agent, tools=(*agent.tools, *tools), tool_sources=())
    except BaseException:
        await bound.aclose()
        raise
    return bound
