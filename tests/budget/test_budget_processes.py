"""Budgets across real processes: a race for one small limit, and a killed worker."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.budget import ledger_for
from tether.journal import open_store, read_events

from ..conftest import POSTGRES_URL, drop_postgres_schema, postgres_problem, require

pytestmark = [pytest.mark.chaos]

AGENT = """
from tether import Agent, Limits, tool
from tether.models import ModelRequest, ScriptedModel, Turn, call

@tool
def work() -> str:
    '''Works.'''
    return "worked " * 20

def policy(request: ModelRequest) -> Turn:
    return Turn(text="out of budget") if not request.tools else call("work")

agent = Agent(name="racer", instructions="Work until stopped.", tools=[work],
              model=ScriptedModel(policy), limits=Limits(max_steps=500), max_output_tokens=400)
"""

LIMIT = 0.01


def store_url(folder: Path) -> str:
    return (
        (folder / "store-url").read_text()
        if (folder / "store-url").exists()
        else (f"sqlite:///{folder}/s.db")
    )


def run(*args: str, folder: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tether", *args, "--store", store_url(folder)],
        cwd=folder,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def tether(*args: str, folder: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tether", *args, "--store", store_url(folder)],
        cwd=folder,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where the racing processes keep their runs and the ledger."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    problem = postgres_problem()
    require(problem is None, problem or "")
    schema = f"race_{os.getpid()}_{secrets.token_hex(3)}"
    (tmp_path / "store-url").write_text(f"{POSTGRES_URL}?schema={schema}")
    try:
        yield "postgres"
    finally:
        drop_postgres_schema(schema)


def test_eight_processes_never_push_settled_spend_past_a_daily_limit(
    tmp_path: Path, backend: str
) -> None:
    (tmp_path / "racer.py").write_text(AGENT)
    setup = run("budget", "set", "--scope", "global", "--daily", str(LIMIT), folder=tmp_path)
    assert setup.returncode == 0, setup.stderr
    procs = [
        tether("run", "racer.py:agent", "--task", f"job {i}", "--json", folder=tmp_path)
        for i in range(8)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 3, err  # stopped by the budget, with a partial answer
        results.append(json.loads(out))

    async def inspect() -> tuple[float, float, int, float]:
        store = open_store(store_url(tmp_path))
        try:
            status = await ledger_for(store).status()
            daily = next(s for s in status if s.scope == "global" and s.window == "daily")
            denials = 0
            journal_cost = 0.0
            for r in results:
                events = await read_events(store, r["run_id"])
                denials += sum(e.type == "budget.denied" for e in events)
                assert events[-1].type == "run.stopped"
                journal_cost += sum(e.usage.cost_usd for e in events if e.usage)
            return daily.spent, daily.reserved, denials, journal_cost
        finally:
            await store.close()

    spent, reserved, denials, journal_cost = asyncio.run(inspect())
    assert spent <= LIMIT
    assert reserved == pytest.approx(0, abs=1e-12)
    assert denials >= 8  # every run was stopped by a journaled denial
    assert journal_cost == pytest.approx(spent)  # the ledger and the journals agree
    assert spent > LIMIT * 0.5  # the limit was actually used, not refused up front


def test_a_killed_process_leaves_no_orphaned_reservation(tmp_path: Path, backend: str) -> None:
    (tmp_path / "racer.py").write_text(AGENT)
    # Kill right after the first model request, which carries its reservation, is durable.
    killed = run(
        "run", "racer.py:agent", "--task", "x", "--json", folder=tmp_path,
        TETHER_CHAOS="kill_after_seq=5",
    )  # fmt: skip
    assert killed.returncode == -9

    def daily() -> dict[str, float]:
        rows = json.loads(run("budget", "--json", folder=tmp_path).stdout)
        row: dict[str, float] = next(
            r for r in rows if r["scope"] == "global" and r["window"] == "daily"
        )
        return row

    assert daily()["reserved"] > 0  # the dead call's hold is still there
    run_id = json.loads(run("ls", "--json", folder=tmp_path).stdout)[0]["run_id"]
    limit = run("budget", "set", "--scope", "global", "--daily", "0.004", folder=tmp_path)
    assert limit.returncode == 0
    resumed = run("resume", run_id, "--json", folder=tmp_path)
    assert resumed.returncode == 3, resumed.stderr
    after = daily()
    assert after["reserved"] == 0
    assert after["spent"] == pytest.approx(json.loads(resumed.stdout)["cost_usd"], abs=1e-6)
