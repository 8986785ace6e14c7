"""Ledger rows that no journal can recompute are checked when read: stored limits carry a
checksum, open holds must read as scopes and an amount. A damaged row is refused with a
line naming it, and `doctor` reports it, never obeyed or counted with other values."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.budget import BudgetLimits, Reservation, ledger_for
from tether.budget._checked_rows import open_limits, seal_limits
from tether.cli import app
from tether.errors import LedgerCorruption
from tether.journal import SQLiteStore

LIMITS = BudgetLimits(per_run=1.0, daily=5.0, daily_tz="UTC")


def test_a_sealed_row_opens_to_its_limits_and_any_changed_byte_is_refused() -> None:
    text = seal_limits("global", LIMITS)
    assert open_limits("global", text) == LIMITS
    for i in range(len(text)):
        for bit in (1, 2, 4, 16):
            changed = text[:i] + chr(ord(text[i]) ^ bit) + text[i + 1 :]
            try:
                opened = open_limits("global", changed)
            except LedgerCorruption:
                continue
            # Only a change that alters no value may pass (e.g. whitespace).
            assert opened == LIMITS, (i, changed)


def test_a_row_moved_to_another_scope_or_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(LedgerCorruption, match="checksum"):
        open_limits("tenant:acme", seal_limits("global", LIMITS))
    for bad in (b"\x00", "[1]", '{"daily": "5"}', '{"daily": true}', '{"dayly": 5.0}', "5"):
        with pytest.raises(LedgerCorruption, match="global"):
            open_limits("global", bad)


def test_rows_written_before_the_checksum_are_read_as_before() -> None:
    assert open_limits("global", '{"daily": 5.0, "per_run": 1.0}') == BudgetLimits(
        daily=5.0, per_run=1.0
    )


def _alter(path: Path, sql: str) -> None:
    db = sqlite3.connect(path)
    db.execute(sql)
    db.commit()
    db.close()


async def test_the_ledger_refuses_damaged_limits_on_every_read(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    store = SQLiteStore(path)
    ledger = ledger_for(store)
    await ledger.set_limits("global", LIMITS)
    assert (await ledger.limits())["global"] == LIMITS
    _alter(path, "UPDATE budget_limits SET limits = replace(limits, '5.0', '7.0')")
    for _ in range(2):  # not only the first read: the damaged row is never cached
        with pytest.raises(LedgerCorruption, match="tether budget set --scope global"):
            await ledger.limits()
    with pytest.raises(LedgerCorruption):
        await ledger.reserve(run_id="r", agent="a", tenant=None, estimate_usd=0.1)
    await ledger.set_limits("global", LIMITS)  # the way out: set them again
    assert (await ledger.limits())["global"] == LIMITS
    await store.close()


def test_doctor_and_budget_name_an_altered_limit(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    url = f"sqlite:///{path}"

    async def setup() -> None:
        store = SQLiteStore(path)
        await ledger_for(store).set_limits("global", LIMITS)
        await store.close()

    asyncio.run(setup())
    runner = CliRunner()
    assert runner.invoke(app, ["doctor", "--store", url]).exit_code == 0
    _alter(path, "UPDATE budget_limits SET limits = replace(limits, '5.0', '7.0')")
    done = runner.invoke(app, ["doctor", "--store", url, "--rebuild-ledger"])
    assert done.exit_code == 1, done.stdout
    assert "limits of global" in done.stdout and "checksum" in done.stdout
    shown = runner.invoke(app, ["budget", "--store", url])
    assert shown.exit_code == 1
    assert shown.exception is None or isinstance(shown.exception, SystemExit)
    assert "budget limits of global" in shown.stderr and "Traceback" not in shown.stderr


def test_a_damaged_open_hold_is_refused_reported_and_dropped_by_a_rebuild(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.db"
    url = f"sqlite:///{path}"

    async def hold_then_damage() -> str:
        store = SQLiteStore(path)
        ledger = ledger_for(store)
        await ledger.set_limits("global", LIMITS)  # with a limit, a check sums the holds
        held = await ledger.reserve(run_id="r", agent="a", tenant=None, estimate_usd=0.5)
        assert isinstance(held, Reservation)
        _alter(path, "UPDATE budget_reservations SET scopes = '[\"glo'")
        with pytest.raises(LedgerCorruption, match="budget hold: its scopes are damaged"):
            await ledger.reserve(run_id="r2", agent="a", tenant=None, estimate_usd=0.1)
        await store.close()
        return held.id

    rid = asyncio.run(hold_then_damage())
    runner = CliRunner()
    shown = runner.invoke(app, ["budget", "--store", url])
    assert shown.exit_code == 1 and "its scopes are damaged" in shown.stderr
    found = runner.invoke(app, ["doctor", "--store", url])
    assert found.exit_code == 1 and f"budget reservation {rid}" in found.stdout
    assert runner.invoke(app, ["doctor", "--store", url, "--rebuild-ledger"]).exit_code == 0
    assert runner.invoke(app, ["doctor", "--store", url]).exit_code == 0
    assert runner.invoke(app, ["budget", "--store", url]).exit_code == 0


DAMAGES = {
    "spend not a number": "UPDATE budget_usage SET spent = x'00ff'",
    "bucket time not a number": "UPDATE budget_usage SET minute = 'abc'",
    "hourly spend not a number": "UPDATE budget_usage_hourly SET spent = 'lots'",
    "run spend not a number": "UPDATE budget_runs SET spent = 'lots'",
    "hold minute not a number": "UPDATE budget_reservations SET minute = 'x'",
    "hold amount not a number": "UPDATE budget_reservations SET estimate = 'x'",
    "hold state unknown": "UPDATE budget_reservations SET state = 'reservee'",
}


@pytest.fixture(scope="module")
def ledger_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a run's settled spend and an open hold."""
    from ..cli.test_store_access import paid_run

    path = tmp_path_factory.mktemp("ledger") / "s.db"
    run_id = paid_run(path)

    async def hold() -> None:
        store = SQLiteStore(path)
        ledger = ledger_for(store)
        await ledger.set_limits("global", LIMITS)
        held = await ledger.reserve(run_id=run_id, agent="a", tenant=None, estimate_usd=0.1)
        assert isinstance(held, Reservation)
        await store.close()

    asyncio.run(hold())
    return path


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_ledger_value_of_the_wrong_type_is_named_never_a_traceback(
    tmp_path: Path, ledger_store: Path, damage: str
) -> None:
    source = ledger_store
    path = tmp_path / "s.db"
    shutil.copyfile(source, path)
    url = f"sqlite:///{path}"
    runner = CliRunner()
    assert runner.invoke(app, ["doctor", "--store", url]).exit_code == 0
    _alter(path, DAMAGES[damage])
    shown = runner.invoke(app, ["budget", "--store", url])
    assert shown.exit_code in (0, 1), shown.output
    assert shown.exception is None or isinstance(shown.exception, SystemExit), shown.exception
    if shown.exit_code:
        assert "corruption in" in shown.stderr and "tether doctor --rebuild-ledger" in shown.stderr
    found = runner.invoke(app, ["doctor", "--store", url])
    assert found.exit_code == 1 and "CORRUPT budget ledger" in found.stdout, found.output
    assert found.exception is None or isinstance(found.exception, SystemExit), found.exception
    assert runner.invoke(app, ["doctor", "--store", url, "--rebuild-ledger"]).exit_code == 0
    assert runner.invoke(app, ["doctor", "--store", url]).exit_code == 0
    assert runner.invoke(app, ["budget", "--store", url]).exit_code == 0
