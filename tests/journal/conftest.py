"""Fixtures for the journal suite: backends driven by a FakeClock, so lease expiry is exact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tether._clock import FakeClock
from tether.journal import MemoryStore, SQLiteStore, Store

from ..conftest import BACKENDS, postgres_store


@dataclass
class Clocked:
    store: Store
    clock: FakeClock
    backend: str


@pytest.fixture(params=BACKENDS)
async def clocked(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Clocked]:
    """Every backend, each reading time from one FakeClock the test moves by hand."""
    clock = FakeClock()
    if request.param == "postgres":
        async with postgres_store(clock) as pg:
            yield Clocked(store=pg, clock=clock, backend="postgres")
        return
    backend: Store = (
        MemoryStore(clock=clock)
        if request.param == "memory"
        else SQLiteStore(tmp_path / "clocked.db", clock=clock)
    )
    yield Clocked(store=backend, clock=clock, backend=request.param)
    await backend.close()
