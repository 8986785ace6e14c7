"""A process frozen by a real SIGSTOP while it holds the budget ledger's lock: a healthy
`tether worker` on the same database waits at most its lock timeout per attempt, never
lets its lease lapse, and completes the run once the server ends the frozen session."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tether.budget import BudgetLimits, ledger_for
from tether.budget._tables_pg import LOCK_TIMEOUT_S
from tether.journal import open_store, read_events
from tether.worker import submit_run

from .conftest import POSTGRES_URL, drop_postgres_schema, postgres_problem, require

pytestmark = [pytest.mark.postgres, pytest.mark.chaos, pytest.mark.slow]

LEASE_TTL = 2.0
HOLDER_IDLE_TIMEOUT_S = 8.0
"""The frozen session is ended by the server after this long (the holder's own setting)."""

HOLDER = """
import sys, time
from tether.budget._tables_pg import PostgresLedgerTables
from tether.journal import open_store

store = open_store(sys.argv[1])
holder = PostgresLedgerTables(store._conninfo, schema=store.schema,
                              idle_timeout_s=float(sys.argv[2]))
cm = holder.transaction()
cm.__enter__()
holder._pipeline.sync()
print("locked", flush=True)
time.sleep(600)
"""


def lease_of(schema: str, run_id: str) -> tuple[str | None, int, float | None, str]:
    with psycopg.connect(POSTGRES_URL) as conn:
        row = conn.execute(
            f"SELECT lease_owner, lease_epoch, lease_expires_at, status FROM {schema}.runs "
            "WHERE run_id=%s",
            (run_id,),
        ).fetchone()
    assert row is not None
    return row[0], int(row[1]), row[2], row[3]


def test_a_frozen_lock_holder_never_costs_a_healthy_worker_its_lease(tmp_path: Path) -> None:
    problem = postgres_problem()
    require(problem is None, problem or "")
    schema = f"test_sigstop_{os.getpid()}"
    url = f"{POSTGRES_URL}?schema={schema}"
    env = {k: v for k, v in os.environ.items() if k != "TETHER_STORE"}
    env.update(PYTHONPATH=os.pathsep.join(sys.path), TETHER_CHAOS="model_latency=0.1")

    async def prepare() -> str:
        from tether.demo import demo_agent, demo_plan

        store = open_store(url)
        try:
            ledger = ledger_for(store)
            assert ledger is not None
            await ledger.set_limits("global", BudgetLimits(daily=100.0))
            return await submit_run(
                store, demo_agent(tmp_path / "out"), demo_plan()["task"],
                agent_spec="tether.demo:demo_agent", agent_args={"out": str(tmp_path / "out")},
                model_spec="scripted", auto_approve=True,
            )  # fmt: skip
        finally:
            await store.close()

    worker: subprocess.Popen[bytes] | None = None
    holder: subprocess.Popen[str] | None = None
    log_path = tmp_path / "worker.log"
    try:
        run_id = asyncio.run(prepare())
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "tether", "worker", "--store", url, "--lease-ttl",
                 str(LEASE_TTL), "--no-local-takeover"],
                env=env, stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        # Let the run get going under its first lease.
        deadline = time.time() + 60
        while lease_of(schema, run_id)[0] is None and time.time() < deadline:
            time.sleep(0.1)
        owner = lease_of(schema, run_id)[0]
        assert owner is not None, "the worker never claimed the run"

        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, url, str(HOLDER_IDLE_TIMEOUT_S)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked", holder.stderr
        os.kill(holder.pid, signal.SIGSTOP)
        frozen_at = time.time()

        # While the holder is frozen (and until the server ends its session), sample the
        # run's lease: it must never lapse nor pass to anyone else.
        lapses: list[float] = []
        owners: set[str | None] = set()
        while time.time() - frozen_at < HOLDER_IDLE_TIMEOUT_S + 2 * LEASE_TTL:
            owner_now, _, expires, status = lease_of(schema, run_id)
            if status in ("completed", "failed", "stopped"):
                break
            owners.add(owner_now)
            if expires is not None and expires < time.time():
                lapses.append(time.time() - expires)
            time.sleep(0.2)
        assert not lapses, f"the worker's lease lapsed while the holder was frozen: {lapses}"
        assert owners <= {owner, None}, owners  # never another process's

        deadline = time.time() + 120
        while lease_of(schema, run_id)[3] not in ("completed", "failed", "stopped"):
            assert time.time() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.3)
        assert lease_of(schema, run_id)[3] == "completed", log_path.read_text()[-3000:]
    finally:
        if holder is not None:
            holder.kill()
            holder.communicate()
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)

    log_text = log_path.read_text()
    # The freeze was felt (a reservation gave up at its lock timeout and the worker
    # claimed the run again itself), but no lease was lost and nobody took the run over.
    assert "lock timeout" in log_text, log_text[-3000:]
    assert "stale" not in log_text and "LeaseLost" not in log_text, log_text[-3000:]
    assert "took over" not in log_text

    # Each wait for the lock ended within the lock timeout: no gap in the journal longer
    # than the freeze's end (the server freeing the lock), and none while it was frozen
    # longer than one lock timeout plus a re-claim.
    async def gaps() -> list[float]:
        from datetime import datetime

        store = open_store(url)
        try:
            events = await read_events(store, run_id)
        finally:
            await store.close()
        times = [datetime.fromisoformat(e.ts).timestamp() for e in events]
        return [b - a for a, b in itertools.pairwise(times)]

    longest = max(asyncio.run(gaps()))
    assert longest <= HOLDER_IDLE_TIMEOUT_S + LOCK_TIMEOUT_S, longest
    drop_postgres_schema(schema)
