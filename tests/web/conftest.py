"""Console fixtures: a store with runs of the shipping agent paused for approval, a token
per role, and an httpx client on the ASGI app (no server, no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tether.journal import SQLiteStore, Store
from tether.web import create_app
from tether.web.tokens import CONSOLE_ROLES, create_token
from tether.worker import AgentRegistry, AgentSource, Worker, submit_run

from ..conftest import BACKENDS, postgres_store
from .agents import shipping_agent

AGENT_SPEC = "tests.web.agents:shipping_agent"


def registry() -> AgentRegistry:
    return AgentRegistry([AgentSource.of(shipping_agent, AGENT_SPEC)])


async def submit_shipments(
    store: Store, n: int, *, ships: int = 1, tenant: str | None = None
) -> list[str]:
    agent = shipping_agent(ships)
    return [
        await submit_run(
            store, agent, f"ship batch {i}", agent_spec=AGENT_SPEC,
            agent_args={"ships": ships}, tenant=tenant,
        )
        for i in range(n)
    ]  # fmt: skip


async def drive_until_idle(store: Store) -> None:
    worker = Worker(store, agents=registry(), lease_ttl_s=5.0, poll_max_s=0.3)
    await asyncio.wait_for(worker.serve(until_idle=True), timeout=60)


@dataclass
class Console:
    store: Store
    app: Any
    tokens: dict[str, str]
    runs: list[str]
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    def api(self, role: str) -> httpx.AsyncClient:
        """A client that sends `role`'s token as a bearer header."""
        if role not in self.clients:
            self.clients[role] = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.app),
                base_url="http://console",
                headers={"authorization": f"Bearer {self.tokens[role]}"},
            )
        return self.clients[role]

    def anonymous(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://console"
        )


async def make_console(store: Store, runs: int = 2) -> Console:
    ids = await submit_shipments(store, runs)
    await drive_until_idle(store)
    tokens = {}
    for role in CONSOLE_ROLES:
        tokens[role], _ = await create_token(store, role=role, name=f"{role}-tester")
    return Console(store=store, app=create_app(store=store), tokens=tokens, runs=ids)


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    store = SQLiteStore(tmp_path / "console.db")
    c = await make_console(store)
    try:
        yield c
    finally:
        for client in c.clients.values():
            await client.aclose()
        await store.close()


@pytest.fixture(params=[b for b in BACKENDS if getattr(b, "values", (b,))[0] != "memory"])
async def any_console(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Console]:
    """The console on SQLite and on PostgreSQL (required in CI)."""
    if request.param == "postgres":
        async with postgres_store() as pg:
            c = await make_console(pg)
            yield c
            for client in c.clients.values():
                await client.aclose()
        return
    store = SQLiteStore(tmp_path / "console.db")
    c = await make_console(store)
    try:
        yield c
    finally:
        for client in c.clients.values():
            await client.aclose()
        await store.close()
