"""A reservation and the events that record it commit together (`Store.append(also=...)`).

The loop reserves a model call's cost in the same transaction that journals the request,
and settles it in the one that journals the response: one commit per step instead of
three, and no window in which the ledger and the journal disagree.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tether._clock import FakeClock
from tether.budget import BudgetLimits, Denial, Reservation, ledger_for
from tether.errors import LeaseLost, UsageError
from tether.journal import MemoryStore, SQLiteStore, Store
from tether.journal._base import summary_of
from tether.state import fold

from ..conftest import postgres_store
from ..journal.helpers import RUN_ID, created, import_events, note, seal_chain


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    clock = FakeClock(start=1_800_000_000.0)
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
    with pytest.raises(LeaseLost):
        await store.append(
            lease, events[1:], summary=summary_of(fold(events)), also=lambda: called.append(True)
        )
    assert called == []
    assert ledger.tables is not None


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
async def test_postgres_keeps_its_ledger_on_its_own_connection() -> None:
    async with postgres_store(FakeClock()) as pg:
        ledger = ledger_for(pg)
        assert not pg.joins_ledger(ledger.tables)
        events = seal_chain([created(), note(1)])
        lease = await import_events(pg, events[:1])
        with pytest.raises(UsageError):
            await pg.append(lease, events[1:], summary=summary_of(fold(events)), also=lambda: None)
        assert (await pg.get_run(RUN_ID)).head_seq == 1
