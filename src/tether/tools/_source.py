"""Tool sources: tools that exist only once a run asks a server for them (MCP servers).

A source's tool list is fetched when a run starts and journaled; a resumed or replayed run
builds its tools from the journaled list, never from a cache shared across runs (a cached
list made other engines replay against tools the run never saw). Each run opens its own
session, so a stateful server never sees two runs' calls interleaved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ._tool import Tool

__all__ = ["ToolSession", "ToolSource"]


@runtime_checkable
class ToolSession(Protocol):
    """One run's connection to a source; opened lazily, closed when the run is let go."""

    async def list_tools(self) -> list[dict[str, Any]]:
        """The source's tools as JSON-able descriptions: what the journal records."""
        ...

    def tools(self, listing: list[dict[str, Any]]) -> Sequence[Tool]:
        """Tools built from a listing (fresh or journaled) whose calls go to this session."""
        ...

    async def aclose(self) -> None:
        """Release the connection (stop the server process); safe to call twice."""
        ...


@runtime_checkable
class ToolSource(Protocol):
    """Something an `Agent` lists among its tools that yields tools per run."""

    name: str
    """Unique among an agent's sources: the journaled listing is found by it."""

    def open(self, run_id: str) -> ToolSession:
        """A session for one run; must not connect until it is used."""
        ...
