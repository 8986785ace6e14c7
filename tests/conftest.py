"""Shared fixtures. Real provider calls are switched off for the whole suite."""

from __future__ import annotations

import functools
import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

os.environ["TETHER_ALLOW_MODEL_REQUESTS"] = "0"

import tether.models._base as _models_base
from tether._clock import Clock
from tether.journal import MemoryStore, SQLiteStore, Store

_models_base.ALLOW_MODEL_REQUESTS = False

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip outside CI; in CI a missing prerequisite is a failure, never a skip."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI requires this test to run, but: {reason}")
    pytest.skip(reason)


POSTGRES_URL = os.environ.get("TETHER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""The server the PostgreSQL tests use; each test works in a schema of its own."""

BACKENDS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
"""Parameters of the fixtures that cover every backend."""


@functools.cache
def postgres_problem() -> str | None:
    """Why the PostgreSQL tests cannot run here, or None if they can."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a dev dependency
        return f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            pass
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}"
    return None


def drop_postgres_schema(schema: str, url: str = POSTGRES_URL) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@asynccontextmanager
async def postgres_store(clock: Clock | None = None) -> AsyncIterator[Store]:
    """A PostgresStore in a fresh schema, dropped afterwards (required in CI)."""
    problem = postgres_problem()
    require(problem is None, problem or "")
    from tether.journal._postgres import PostgresStore

    schema = f"test_{os.getpid()}_{secrets.token_hex(4)}"
    backend = PostgresStore(f"{POSTGRES_URL}?schema={schema}", clock=clock)
    try:
        yield backend
    finally:
        await backend.close()
        drop_postgres_schema(schema)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every backend, so one behaviour suite covers them all."""
    if request.param == "postgres":
        async with postgres_store() as backend:
            yield backend
        return
    backend: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "t.db")
    yield backend
    await backend.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print what tests report as measurements (`record_property("report", ...)`), such as
    the chaos test's takeover latencies, at the end of every run (xdist workers included)."""
    lines = [
        f"{report.nodeid}: {value}"
        for report in terminalreporter.stats.get("passed", [])
        if report.when == "call"
        for name, value in report.user_properties
        if name == "report"
    ]
    if lines:
        terminalreporter.section("measured by the tests")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def _tether_logging_restored() -> Any:
    """`tether worker` run in-process sets the `tether` logger up for a terminal (its own
    handler, no propagation): later tests in the same process must still see its records
    through pytest's capture."""
    logger = logging.getLogger("tether")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
