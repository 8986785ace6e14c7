"""SQLite's ledger reads its limits again only when they may have changed.

Every budget check needs the limits; unchanged, they are kept from the last read, and
`PRAGMA data_version` (any other connection committed) or this connection's own
`set_limits` makes the next check read them again.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tether.budget import BudgetLimits, Denial, Reservation, ledger_for
from tether.budget._checked_rows import seal_limits
from tether.budget._tables import SQLiteLedgerTables
from tether.errors import LedgerCorruption
from tether.journal import SQLiteStore


def _write(path: Path, sql: str, *params: object) -> None:
    db = sqlite3.connect(path)
    db.execute(sql, params)
    db.commit()
    db.close()


def _limit_reads(store: SQLiteStore) -> list[str]:
    seen: list[str] = []
    store._db.set_trace_callback(
        lambda sql: seen.append(sql) if "FROM budget_limits" in sql else None
    )
    return seen


async def test_unchanged_limits_are_not_read_again(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "b.db")
    ledger = ledger_for(store)
    await ledger.set_limits("global", BudgetLimits(hourly=5.0))
    reads = _limit_reads(store)
    for i in range(5):
        held = await ledger.reserve(run_id=f"r{i}", agent="a", tenant=None, estimate_usd=0.1)
        assert isinstance(held, Reservation)
        await ledger.settle(held, 0.1)
    assert len(reads) == 1  # the first check after the change; none since
    await store.close()


async def test_limits_set_through_another_connection_apply_to_the_next_check(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"
    store, other = SQLiteStore(path), SQLiteStore(path)  # two connections, like two processes
    ledger, theirs = ledger_for(store), ledger_for(other)
    assert isinstance(
        await ledger.reserve(run_id="r1", agent="a", tenant=None, estimate_usd=0.3), Reservation
    )
    await theirs.set_limits("global", BudgetLimits(hourly=0.5))
    denied = await ledger.reserve(run_id="r2", agent="a", tenant=None, estimate_usd=0.3)
    assert isinstance(denied, Denial) and denied.window == "hourly"
    await theirs.set_limits("global", None)
    assert isinstance(
        await ledger.reserve(run_id="r3", agent="a", tenant=None, estimate_usd=0.3), Reservation
    )
    # A plain SQL change from elsewhere (`tether budget set` in another process writes
    # the same way) is seen too, and a row that does not verify is refused, not cached.
    sealed = seal_limits("global", BudgetLimits(hourly=0.25))
    _write(path, "INSERT INTO budget_limits (scope, limits) VALUES ('global', ?)", sealed)
    denied = await ledger.reserve(run_id="r4", agent="a", tenant=None, estimate_usd=0.3)
    assert isinstance(denied, Denial) and denied.limit == pytest.approx(0.25)
    _write(path, "UPDATE budget_limits SET limits = ?", sealed.replace("0.25", "25.0"))
    for _ in range(2):
        with pytest.raises(LedgerCorruption):
            await ledger.reserve(run_id="r5", agent="a", tenant=None, estimate_usd=0.1)
    await store.close()
    await other.close()


async def test_limits_set_in_a_transaction_that_rolls_back_are_not_kept(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "b.db")
    tables = store.ledger_tables()
    assert isinstance(tables, SQLiteLedgerTables)
    with tables.transaction():
        assert tables.limits() == {}
    with pytest.raises(RuntimeError), tables.transaction():
        tables.set_limits("global", BudgetLimits(hourly=1.0))
        assert "global" in tables.limits()  # this transaction sees its own change
        raise RuntimeError("abandoned")
    with tables.transaction():
        assert tables.limits() == {}
    await store.close()
