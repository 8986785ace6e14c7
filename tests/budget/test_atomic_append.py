"""A reservation and the events that record it commit together (`Store.append(also=...)`).

The loop reserves a model call's cost in the same transaction that journals the request,
and settles it in the one that journals the response: one commit per step instead of
three, and no window in which the ledger and the journal disagree.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tether._clock import FakeClock
from tether.budget import BudgetLimits, Denial, Reservation, ledger_for
from tether.errors import AppendConflict, LeaseLost, UsageError
from tether.journal import MemoryStore, SQLiteStore, Store
from tether.journal._base import summary_of
from tether.journal._postgres import PostgresStore
from tether.state import fold

from ..conftest import postgres_store
from ..journal.helpers import RUN_ID, created, import_events, note, seal_chain


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    clock = FakeClock(start=1_800_000_000.0)
    if request.param == "postgres":
        async with postgres_store(clock) as pg:
            yield pg
        return
    made: Store = (
        MemoryStore(clock=clock)
        if request.param == "memory"
        else SQLiteStore(tmp_path / "atomic.db", clock=clock)
    )
    yield made
    await made.close()


async def spent_and_reserved(store: Store) -> dict[str, tuple[float, float]]:
    ledger = ledger_for(store)
    return {
        f"{w.scope}/{w.window}": (w.spent, w.reserved)
        for w in await ledger.status()
        if w.window == "daily"
    }


async def test_a_reservation_commits_with_the_events_that_record_it(store: Store) -> None:
    ledger = ledger_for(store)
    assert store.joins_ledger(ledger.tables)  # type: ignore[attr-defined]
    events = seal_chain([created(), note(1)])
    lease = await import_events(store, events[:1])
    held: list[Reservation | Denial] = []

    def reserve() -> None:
        held.append(ledger.reserve_now(run_id=RUN_ID, agent="a", tenant=None, estimate_usd=0.25))

    await store.append(lease, events[1:], summary=summary_of(fold(events)), also=reserve)
    assert isinstance(held[0], Reservation)
    assert (await store.get_run(RUN_ID)).head_seq == 2
    assert (await spent_and_reserved(store))["global/daily"] == (0.0, 0.25)
    # Settling in the next append moves the hold to spend, again with its events.
    more = seal_chain([note(2)], after=events[-1])

    def settle() -> None:
        assert isinstance(held[0], Reservation)
        assert ledger.settle_now(held[0], 0.1)

    await store.append(lease, more, summary=summary_of(fold([*events, *more])), also=settle)
    assert (await spent_and_reserved(store))["global/daily"] == (0.1, 0.0)


async def test_a_denial_inside_the_append_writes_neither_events_nor_a_hold(store: Store) -> None:
    ledger = ledger_for(store)
    await ledger.set_limits("global", BudgetLimits(daily=0.1))
    events = seal_chain([created(), note(1)])
    lease = await import_events(store, events[:1])

    class Denied(Exception):
        pass

    def reserve() -> None:
        outcome = ledger.reserve_now(run_id=RUN_ID, agent="a", tenant=None, estimate_usd=0.5)
        assert isinstance(outcome, Denial)
        raise Denied

    with pytest.raises(Denied):
        await store.append(lease, events[1:], summary=summary_of(fold(events)), also=reserve)
    assert (await store.get_run(RUN_ID)).head_seq == 1
    assert len(await store.read_rows(RUN_ID)) == 1
    assert (await spent_and_reserved(store))["global/daily"] == (0.0, 0.0)


async def test_sqlite_rolls_back_ledger_writes_when_the_append_fails(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "rollback.db")
    ledger = ledger_for(store)
    events = seal_chain([created(), note(1)])
    lease = await import_events(store, events[:1])

    def reserve_then_fail() -> None:
        ledger.reserve_now(run_id=RUN_ID, agent="a", tenant=None, estimate_usd=0.25)
        raise RuntimeError("the process dies here")

    with pytest.raises(RuntimeError):
        await store.append(
            lease, events[1:], summary=summary_of(fold(events)), also=reserve_then_fail
        )
    assert (await spent_and_reserved(store)).get("global/daily", (0.0, 0.0)) == (0.0, 0.0)
    assert len(await store.read_rows(RUN_ID)) == 1
    await store.close()


async def test_a_fenced_out_writer_never_reaches_the_ledger(store: Store) -> None:
    ledger = ledger_for(store)
    events = seal_chain([created(), note(1)])
    lease = await import_events(store, events[:1])
    await store.release_lease(lease)
    called: list[bool] = []

    def reserve() -> None:
        called.append(True)
        ledger.reserve_now(run_id=RUN_ID, agent="a", tenant=None, estimate_usd=0.25)

    with pytest.raises(LeaseLost):
        await store.append(lease, events[1:], summary=summary_of(fold(events)), also=reserve)
    if not isinstance(store, PostgresStore):
        assert called == []  # the fence is checked before the ledger work runs
    # PostgreSQL pipelines the ledger's work behind the append without waiting for the
    # fence's answer; a guard aborts the transaction, so nothing it wrote is kept.
    assert (await spent_and_reserved(store)).get("global/daily", (0.0, 0.0)) == (0.0, 0.0)
    assert (await store.get_run(RUN_ID)).head_seq == 1


@pytest.mark.postgres
async def test_a_conflicting_append_keeps_no_hold_on_postgres() -> None:
    async with postgres_store(FakeClock()) as pg:
        ledger = ledger_for(pg)
        events = seal_chain([created(), note(1)])
        lease = await import_events(pg, events[:1])
        skipped = seal_chain([note(2)], after=events[-1])  # continues a head never written

        def reserve() -> None:
            ledger.reserve_now(run_id=RUN_ID, agent="a", tenant=None, estimate_usd=0.25)

        with pytest.raises(AppendConflict):
            await pg.append(lease, skipped, summary=summary_of(fold(events)), also=reserve)
        assert (await spent_and_reserved(pg)).get("global/daily", (0.0, 0.0)) == (0.0, 0.0)
        assert (await pg.get_run(RUN_ID)).head_seq == 1


async def test_other_ledger_work_or_an_empty_append_is_refused(store: Store) -> None:
    events = seal_chain([created(), note(1)])
    lease = await import_events(store, events[:1])
    # No ledger opened on this store yet: nothing to join.
    with pytest.raises(UsageError):
        await store.append(lease, events[1:], summary=summary_of(fold(events)), also=lambda: None)
    ledger_for(store)
    with pytest.raises(UsageError, match="at least one event"):
        await store.append(lease, [], summary=summary_of(fold(events[:1])), also=lambda: None)
    assert (await store.get_run(RUN_ID)).head_seq == 1


@pytest.mark.postgres
async def test_postgres_joins_only_its_own_ledger_and_keeps_it_usable_alone() -> None:
    async with postgres_store(FakeClock()) as pg, postgres_store(FakeClock()) as other:
        ledger = ledger_for(pg)
        assert pg.joins_ledger(ledger.tables)
        assert not pg.joins_ledger(ledger_for(other).tables)
        # On its own connection, outside any append, the ledger works as before.
        await ledger.set_limits("global", BudgetLimits(daily=1.0))
        hold = await ledger.reserve(run_id=RUN_ID, agent="a", tenant=None, estimate_usd=0.5)
        assert isinstance(hold, Reservation)
        assert await ledger.settle(hold, 0.2)
        assert (await spent_and_reserved(pg))["global/daily"] == (0.2, 0.0)


async def test_a_refused_append_settles_nothing(store: Store) -> None:
    ledger = ledger_for(store)
    events = seal_chain([created(), note(1)])
    lease = await import_events(store, events[:1])
    held: list[Reservation | Denial] = []

    def reserve() -> None:
        held.append(ledger.reserve_now(run_id=RUN_ID, agent="a", tenant=None, estimate_usd=0.25))

    await store.append(lease, events[1:], summary=summary_of(fold(events)), also=reserve)
    hold = held[0]
    assert isinstance(hold, Reservation)
    await store.release_lease(lease)
    more = seal_chain([note(2)], after=events[-1])
    with pytest.raises(LeaseLost):
        await store.append(
            lease,
            more,
            summary=summary_of(fold([*events, *more])),
            also=lambda: ledger.settle_now(hold, 0.1),
        )
    # The hold is still open (reclaimed when it expires), and nothing was counted.
    assert (await spent_and_reserved(store))["global/daily"] == (0.0, 0.25)
    assert (await store.get_run(RUN_ID)).head_seq == 2


@pytest.mark.postgres
async def test_postgres_checks_a_reservation_riding_in_an_append_on_the_server() -> None:
    async with postgres_store(FakeClock(start=1_800_000_000.0)) as pg:
        ledger = ledger_for(pg)
        await ledger.set_limits("global", BudgetLimits(daily=1.0))
        events = seal_chain([created()])
        lease = await import_events(pg, events)
        outcomes: list[Reservation | Denial] = []

        async def reserve(estimate: float) -> None:
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

        await reserve(0.6)
        # The ledger decides the next ones from the limits it read: only the server sees
        # that the window is full, refuses, and the exact path journals the denial.
        await reserve(0.6)
        assert isinstance(outcomes[-1], Denial)
        assert (await spent_and_reserved(pg))["global/daily"] == (0.0, 0.6)
        assert (await pg.get_run(RUN_ID)).head_seq == 2
        # Limits changed by another process: the server refuses the stale decision, the
        # exact path reads the new limits and reserves.
        other = PostgresStore(pg.url)
        try:
            await ledger_for(other).set_limits("global", BudgetLimits(daily=2.0))
        finally:
            await other.close()
        await reserve(0.6)
        assert isinstance(outcomes[-1], Reservation)
        assert (await spent_and_reserved(pg))["global/daily"] == (0.0, pytest.approx(1.2))
        assert (await pg.get_run(RUN_ID)).head_seq == 3


@pytest.mark.postgres
@pytest.mark.parametrize("agent", ["a,b", 'say "hi"', "back\\slash", "{braces}", "NULL", " "])
async def test_a_reservation_on_the_server_sums_the_window_of_an_oddly_named_scope(
    agent: str,
) -> None:
    """The windows go to the server as array literals (cheaper to send than lists): a scope
    with a comma, a quote, a backslash or braces is still one scope, its window summed."""
    async with postgres_store(FakeClock(start=1_800_000_000.0)) as pg:
        ledger = ledger_for(pg)
        await ledger.set_limits(f"agent:{agent}", BudgetLimits(daily=1.0))
        events = seal_chain([created()])
        lease = await import_events(pg, events)
        outcomes: list[Reservation | Denial] = []
        for _ in range(2):
            more = seal_chain([note(len(events))], after=events[-1])

            def hold() -> None:
                outcome = ledger.reserve_now(
                    run_id=RUN_ID, agent=agent, tenant=None, estimate_usd=0.6
                )
                outcomes.append(outcome)
                if isinstance(outcome, Denial):
                    raise RuntimeError("denied")

            with contextlib.suppress(RuntimeError):
                await pg.append(lease, more, summary=summary_of(fold(events)), also=hold)
                events.extend(more)
        # The second fits the ledger's cached view but not the server's sum of this scope.
        assert isinstance(outcomes[0], Reservation)
        assert isinstance(outcomes[-1], Denial)
        assert (await pg.get_run(RUN_ID)).head_seq == 2
