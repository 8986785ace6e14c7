"""Schema 9: the SQLite ledger's spend and holds in one table (`budget_ledger`): a
settlement is two statements (the hold, then every sum); schema 8's four tables remain
readable and writable as views, and a real schema-8 store (written by the code before
schema 9) migrates."""

from __future__ import annotations

import gzip
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.budget import BudgetLimits, Reservation, ledger_for
from tether.budget._verify import verify_ledger
from tether.cli import app
from tether.journal import SQLiteStore
from tether.journal._schema import SCHEMA_VERSION

FIXTURE = Path(__file__).parent / "data" / "schema8-ledger.db.gz"
"""Written by Tether at schema 8 (`git show 18a6810`): one run (`payer`, two paid tool
calls), limits on `global`, one hold still open. Its ledger rows were:"""
RUN = "run_mx7lpwtl73f6ca86"
SPENT = 0.02036615
MINUTE, HOUR = 29938419, 498973
HOLD = "rsv_01a23c21b395af2f47e4"


def _schema8(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    path.write_bytes(gzip.decompress(FIXTURE.read_bytes()))
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM tether_meta WHERE key='schema_version'").fetchone() == (
        "8",
    )
    kinds = dict(db.execute("SELECT name, type FROM sqlite_schema WHERE name LIKE 'budget_%'"))
    assert kinds["budget_usage"] == kinds["budget_runs"] == "table"
    assert kinds["budget_reservations"] == "table"
    assert "budget_ledger" not in kinds
    db.close()
    return path


async def test_a_schema8_store_migrates_its_spend_and_keeps_every_figure(tmp_path: Path) -> None:
    path = _schema8(tmp_path)
    store = SQLiteStore(path)
    try:
        db = store._db
        assert db.execute("SELECT value FROM tether_meta WHERE key='schema_version'").fetchone()[
            0
        ] == str(SCHEMA_VERSION)
        kinds = dict(db.execute("SELECT name, type FROM sqlite_schema WHERE name LIKE 'budget_%'"))
        assert kinds["budget_ledger"] == "table"
        assert kinds["budget_usage"] == kinds["budget_usage_hourly"] == "view"
        assert kinds["budget_runs"] == kinds["budget_reservations"] == "view"
        # The old names read what the old tables held.
        assert sorted(db.execute("SELECT scope, minute, spent FROM budget_usage")) == [
            ("agent:payer", MINUTE, SPENT),
            ("global", MINUTE, SPENT),
        ]
        assert sorted(db.execute("SELECT scope, hour, spent FROM budget_usage_hourly")) == [
            ("agent:payer", HOUR, SPENT),
            ("global", HOUR, SPENT),
        ]
        assert db.execute("SELECT run_id, spent FROM budget_runs").fetchall() == [(RUN, SPENT)]
        assert db.execute(
            "SELECT id, run_id, scopes, minute, estimate, actual, state FROM budget_reservations"
        ).fetchall() == [(HOLD, RUN, '["global", "agent:payer"]', MINUTE, 0.25, None, "reserved")]
        assert db.execute("SELECT count(*) FROM budget_ledger").fetchone()[0] == 6
        ledger = ledger_for(store)
        assert (await ledger.limits())["global"] == BudgetLimits(
            hourly=50.0, daily=100.0, per_run=5.0
        )
        tables = ledger.tables
        assert tables.run_usage(RUN) == (pytest.approx(SPENT), 0.25)  # the open hold
        assert tables.usage("global", MINUTE) == [(MINUTE, pytest.approx(SPENT))]
        # The journals agree with the moved ledger.
        assert (await verify_ledger(store))[0] == []
        # New spend lands on the moved rows (one per key), not beside them.
        [hold] = tables.open_of_run(RUN)
        assert hold.id == HOLD
        assert tables.settle(hold, 0.5)
        assert db.execute("SELECT spent FROM budget_runs").fetchall() == [
            (pytest.approx(SPENT + 0.5),)
        ]
        assert db.execute("SELECT count(*) FROM budget_ledger").fetchone()[0] == 5
    finally:
        await store.close()


def test_doctor_and_a_ledger_rebuild_work_on_a_migrated_store(tmp_path: Path) -> None:
    path = _schema8(tmp_path)
    url = f"sqlite:///{path}"
    runner = CliRunner()
    assert runner.invoke(app, ["doctor", "--store", url]).exit_code == 0
    db = sqlite3.connect(path)
    db.execute("UPDATE budget_runs SET spent = spent / 4")  # a view, since the migration
    db.commit()
    db.close()
    found = runner.invoke(app, ["doctor", "--store", url])
    assert found.exit_code == 1 and f"run {RUN}" in found.stdout
    assert runner.invoke(app, ["doctor", "--store", url, "--rebuild-ledger"]).exit_code == 0
    assert runner.invoke(app, ["doctor", "--store", url]).exit_code == 0
    shown = runner.invoke(app, ["budget", "--store", url])
    assert shown.exit_code == 0 and "global" in shown.stdout


async def test_a_settlement_inside_an_append_is_one_statement_on_one_table(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    try:
        ledger = ledger_for(store)
        held = await ledger.reserve(run_id="r", agent="a", tenant="t", estimate_usd=0.5)
        assert isinstance(held, Reservation)
        seen: list[str] = []
        store._db.set_trace_callback(seen.append)
        assert await ledger.settle(held, 0.25)
        store._db.set_trace_callback(None)
        writes = [s for s in seen if s.startswith(("INSERT", "UPDATE", "DELETE"))]
        assert len(writes) == 2, writes  # the hold's row, then every sum at once
        assert writes[0].startswith("DELETE FROM budget_ledger")
        assert writes[1].startswith("INSERT INTO budget_ledger")
        rows = sorted(store._db.execute("SELECT kind, key, spent FROM budget_ledger"))
        assert rows == [
            (0, "agent:a", 0.25), (0, "global", 0.25), (0, "tenant:t", 0.25),
            (1, "agent:a", 0.25), (1, "global", 0.25), (1, "tenant:t", 0.25),
            (2, "r", 0.25),
        ]  # fmt: skip
        assert await ledger.settle(
            await ledger.reserve(run_id="r", agent="a", tenant="t", estimate_usd=0.5),  # type: ignore[arg-type]
            0.5,
        )
        assert store._db.execute("SELECT spent FROM budget_runs").fetchall() == [(0.75,)]
    finally:
        await store.close()


def test_the_ledgers_reads_search_the_spend_table_by_its_key(tmp_path: Path) -> None:
    """Through the views, each read is a search of `budget_ledger`'s key, never a scan (a
    view SQLite could not flatten would read every bucket of every scope)."""
    store = SQLiteStore(tmp_path / "s.db")
    tables = ledger_for(store).tables
    db = store._db
    reads = [
        (tables._totals_query, ([("global", 100), ("agent:a", 200)],)),  # type: ignore[attr-defined]
        (tables._run_usage_query, ("r",)),  # type: ignore[attr-defined]
    ]
    plans: list[str] = []
    for make, args in reads:
        seen: list[str] = []
        db.set_trace_callback(seen.append)
        make(*args).fetchall()
        db.set_trace_callback(None)
        for sql in seen:
            plans += [r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}")]
    spend = [p for p in plans if "budget_ledger" in p]
    assert spend and all(p.startswith("SEARCH") and "PRIMARY KEY" in p for p in spend), plans
    for sql in ("SELECT minute, spent FROM budget_usage WHERE scope='g' AND minute>=5",):
        [plan] = [r[3] for r in db.execute(f"EXPLAIN QUERY PLAN {sql}")]
        assert plan.startswith("SEARCH budget_ledger USING PRIMARY KEY"), plan


async def test_a_new_store_has_the_spend_table_before_its_ledger_opens(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    try:
        kinds = dict(
            store._db.execute("SELECT name, type FROM sqlite_schema WHERE name LIKE 'budget_%'")
        )
        assert kinds["budget_ledger"] == "table" and kinds["budget_runs"] == "view"
        ledger = ledger_for(store)  # its own CREATE ... IF NOT EXISTS finds them
        held = await ledger.reserve(run_id="r", agent="a", tenant=None, estimate_usd=0.5)
        assert isinstance(held, Reservation) and await ledger.settle(held, 0.125)
        assert store._db.execute("SELECT spent FROM budget_runs").fetchall() == [(0.125,)]
    finally:
        await store.close()


async def test_a_settlement_inside_a_transaction_counts_a_reclaimed_holds_cost_too(
    tmp_path: Path,
) -> None:
    """The joined settlement's short path (delete the open hold, count the cost) falls
    back to the general one when the hold was reclaimed: its cost is counted all the
    same, once, and the settlement says the hold was not open."""
    from tether._clock import FakeClock

    clock = FakeClock(start=1_800_000_000.0)
    store = SQLiteStore(tmp_path / "s.db", clock=clock)
    try:
        ledger = ledger_for(store, clock=clock, reservation_ttl_s=60)
        tables = ledger.tables
        kept = await ledger.reserve(run_id="r", agent="a", tenant=None, estimate_usd=0.5)
        late = await ledger.reserve(run_id="r", agent="a", tenant=None, estimate_usd=0.5)
        assert isinstance(kept, Reservation) and isinstance(late, Reservation)
        with tables.transaction():
            assert ledger.settle_now(kept, 0.25)
        clock.advance(120)
        await ledger.status()  # reclaims the expired hold
        assert tables.get(late.id).state == "expired"  # type: ignore[attr-defined,union-attr]
        with tables.transaction():
            assert not ledger.settle_now(late, 0.125)
        assert tables.get(late.id) is None  # type: ignore[attr-defined]
        assert store._db.execute("SELECT spent FROM budget_runs").fetchall() == [(0.375,)]
        with tables.transaction():
            assert not ledger.settle_now(kept, 0.25)  # settled already: nothing counted
        assert store._db.execute("SELECT spent FROM budget_runs").fetchall() == [(0.375,)]
    finally:
        await store.close()
