"""The server's check of a reservation riding in a PostgreSQL append (`tether_budget_fits_v2`):
every window's parts and the run's cap are summed as the ledger's own check sums them, and a
ledger made with the first version of the function gets the new one without table DDL."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
import pytest

from tether._clock import FakeClock
from tether.budget import BudgetLimits, Denial, Reservation, ledger_for
from tether.budget._deferred_pg import FIRST_FITS_SIGNATURE, FITS_SIGNATURE
from tether.budget._tables_pg import PostgresLedgerTables
from tether.journal._base import summary_of
from tether.state import fold

from ..conftest import postgres_store
from ..journal.helpers import RUN_ID, created, import_events, note, seal_chain

pytestmark = pytest.mark.postgres

T0 = 1_800_000_000.0
"""On a whole hour: spend ten minutes before it lies in the hour before."""


@pytest.mark.parametrize(
    ("limits", "fitting"),
    [
        # 0.6 spent ten minutes before the hour: 30 minutes past it, the hourly window
        # starts mid-hour, so that spend is in its minutes, not its whole hours.
        (BudgetLimits(hourly=1.0), 0.3),
        (BudgetLimits(daily=1.0), 0.3),
        (BudgetLimits(per_run=1.0), 0.3),
    ],
    ids=["hourly-minutes", "daily-hours", "per-run"],
)
async def test_the_server_sums_spend_and_holds_as_the_ledger_does(
    limits: BudgetLimits, fitting: float
) -> None:
    clock = FakeClock(start=T0 - 600)
    async with postgres_store(clock) as pg:
        ledger = ledger_for(pg, clock=clock)
        await ledger.set_limits("agent:a", limits)
        spent = await ledger.reserve(run_id=RUN_ID, agent="a", tenant=None, estimate_usd=0.6)
        assert isinstance(spent, Reservation)
        assert await ledger.settle(spent, 0.6)
        clock.advance(2400)
        # The exact path (a sweep is due after the clock moved) holds 0.01 more.
        held = await ledger.reserve(run_id=RUN_ID, agent="a", tenant=None, estimate_usd=0.01)
        assert isinstance(held, Reservation)

        tables: Any = ledger.tables
        exact_calls = 0
        joined = tables.joined

        def counted(*args: Any, **kwargs: Any) -> None:
            nonlocal exact_calls
            exact_calls += 1
            joined(*args, **kwargs)

        tables.joined = counted
        events = seal_chain([created()])
        lease = await import_events(pg, events)

        async def reserve(estimate: float) -> Reservation | Denial:
            outcomes: list[Reservation | Denial] = []
            more = seal_chain([note(len(events))], after=events[-1])

            def hold() -> None:
                outcome = ledger.reserve_now(
                    run_id=RUN_ID, agent="a", tenant=None, estimate_usd=estimate
                )
                outcomes.append(outcome)
                if isinstance(outcome, Denial):
                    raise RuntimeError("denied")

            with contextlib.suppress(RuntimeError):
                await pg.append(lease, more, summary=summary_of(fold(events)), also=hold)
                events.extend(more)
            return outcomes[-1]

        # 0.6 + 0.01 + 0.3 fits: the server inserts the hold, no exact path.
        assert isinstance(await reserve(fitting), Reservation)
        assert exact_calls == 0
        # 0.6 + 0.01 + 0.3 + 0.3 does not: the server refuses, the exact path denies.
        denied = await reserve(0.3)
        assert isinstance(denied, Denial)
        assert exact_calls == 1
        assert denied.spent == pytest.approx(0.6)
        assert denied.reserved == pytest.approx(0.31)


def regprocedure(conn: psycopg.Connection[Any], signature: str) -> bool:
    row = conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (signature,)).fetchone()
    return bool(row and row[0])


async def test_a_ledger_made_with_the_first_check_function_gets_the_new_one_alone() -> None:
    """Workers of an older version keep using their tables while a newer one opens the
    ledger: it adds its function and touches no table (a CREATE INDEX IF NOT EXISTS would
    wait for their writes, and they for the ledger's lock its transaction holds)."""
    async with postgres_store() as pg:
        PostgresLedgerTables(pg._conninfo, schema=pg.schema).close()
        options = f"-c search_path={pg.schema}"
        with psycopg.connect(pg._conninfo, autocommit=True, options=options) as conn:
            conn.execute(f"DROP FUNCTION {FITS_SIGNATURE}")
            name, args = FIRST_FITS_SIGNATURE.split("(", 1)
            params = ", ".join(f"p{i} {t.strip()}" for i, t in enumerate(args[:-1].split(",")))
            conn.execute(
                f"CREATE FUNCTION {name}({params}) RETURNS BOOLEAN LANGUAGE sql AS 'SELECT true'"
            )
            with psycopg.connect(pg._conninfo, options=options) as writer:
                # An older worker's reservation in flight: its transaction holds the table.
                writer.execute("LOCK TABLE budget_reservations IN ROW EXCLUSIVE MODE")
                PostgresLedgerTables(pg._conninfo, schema=pg.schema, lock_timeout_s=0.5).close()
                writer.rollback()
            assert regprocedure(conn, FITS_SIGNATURE)
            assert regprocedure(conn, FIRST_FITS_SIGNATURE)  # older workers still call it
