"""How the CLI opens stores: readers never create one, read-only stores stay readable,
`doctor` tells damage apart from a store it could not check, and checks every table that
holds state (runs index fields, the budget ledger, the file's pages)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether import Agent, Runtime, tool
from tether.cli import app
from tether.errors import StoreError
from tether.journal import SQLiteStore
from tether.models import ScriptedModel, call

from ..conftest import require

runner = CliRunner()

READERS = [["ls"], ["show", "run_x"], ["why", "run_x:1"], ["audit"], ["export", "run_x"],
           ["doctor"], ["approvals"], ["fork", "run_x", "--at", "1"], ["budget"],
           ["budget", "--json"], ["approve", "apr:run_x:3"], ["reject", "apr:run_x:3", "--reason",
           "r"], ["token", "list"],
           # These write, but only to a run that exists: a missing store is a typo.
           ["resume", "run_x"], ["pin", "run_x", "a fact"], ["unpin", "run_x", "F1"]]  # fmt: skip


def tether(*args: str, store: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--store", store])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("args", READERS, ids=lambda a: "-".join(a[:2]))
def test_a_reader_never_creates_a_store(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "typo.db"
    code, out, err = tether(*args, store=f"sqlite:///{path}")
    assert code == 2, (out, err)
    assert "no store at" in err and "Traceback" not in err + out
    assert not path.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("args", [["ls"], ["doctor"], ["resume", "run_x"]], ids=lambda a: a[0])
def test_an_empty_store_option_is_an_error_not_the_default(tmp_path: Path, args: list[str]) -> None:
    code, out, err = tether(*args, store="")
    assert code == 2 and "empty" in err and "Traceback" not in err + out


def paid_run(path: Path) -> str:
    @tool(cost_usd=0.01)
    def pay(amount: int) -> str:
        """A paid call."""
        return "ok"

    agent = Agent(name="payer", instructions="x", tools=[pay],
                  model=ScriptedModel([call("pay", {"amount": 1}), call("pay", {"amount": 2}),
                                       "done"]))  # fmt: skip

    async def go() -> str:
        rt = Runtime(SQLiteStore(path))
        try:
            return (await rt.start(agent, "go")).run_id
        finally:
            await rt.close()

    return asyncio.run(go())


def doctor(path: Path, *extra: str) -> tuple[int, dict[str, object]]:
    code, out, err = tether("doctor", "--json", *extra, store=f"sqlite:///{path}")
    assert "Traceback" not in out + err
    return code, json.loads(out)


def test_doctor_reports_altered_run_index_fields(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    run_id = paid_run(path)
    assert doctor(path)[0] == 0
    db = sqlite3.connect(path)
    db.execute("UPDATE runs SET agent='someone-else', created_at='2020-01-01T00:00:00.000000Z'")
    db.commit()
    db.close()
    code, report = doctor(path)
    assert code == 1 and not report["ok"]
    [run] = report["runs"]  # type: ignore[misc]
    assert run["run_id"] == run_id
    assert any("agent, created_at" in p["what"] for p in run["problems"])


def test_doctor_finds_a_ledger_that_under_reports_and_rebuilds_it(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    run_id = paid_run(path)
    db = sqlite3.connect(path)
    (spent,) = db.execute("SELECT spent FROM budget_runs WHERE run_id=?", (run_id,)).fetchone()
    assert spent > 0.02  # two paid calls and the model's turns
    # An older page restored: every bucket and the run's row lose spend.
    for table in ("budget_usage", "budget_usage_hourly", "budget_runs"):
        db.execute(f"UPDATE {table} SET spent = spent / 4")
    db.commit()
    db.close()
    code, report = doctor(path)
    assert code == 1
    problems = report["ledger"]["problems"]  # type: ignore[index]
    wheres = {p["where"] for p in problems}
    assert f"run {run_id}" in wheres and "scope global" in wheres
    assert all("under-reports" in p["what"] for p in problems)
    code, report = doctor(path, "--rebuild-ledger")
    assert report["ledger"]["rebuilt_costs"] == 5  # type: ignore[index]
    assert doctor(path)[0] == 0
    db = sqlite3.connect(path)
    assert db.execute("SELECT spent FROM budget_runs").fetchone()[0] == pytest.approx(spent)
    db.close()


def test_doctor_reports_a_ledger_bucket_altered_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    paid_run(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE budget_usage_hourly SET spent = 0 WHERE scope='global'")
    db.commit()
    db.close()
    code, report = doctor(path)
    assert code == 1
    assert [p["where"] for p in report["ledger"]["problems"]] == ["scope global"]  # type: ignore[index]


def test_doctor_runs_sqlites_own_page_check(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    paid_run(path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (root,) = db.execute("SELECT rootpage FROM sqlite_schema WHERE name='budget_limits'").fetchone()
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    # Scribble over the page of a table no checksum covers.
    with path.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\x0d" + b"\xff" * 64)
    code, report = doctor(path)
    assert code == 1
    assert report["file"]["ok"] is False  # type: ignore[index]


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A folder (and a read-only view of it) that this process cannot write, as on a
    read-only mount or with files owned by another user."""
    source = tmp_path / "src"
    source.mkdir()
    view = tmp_path / "ro"
    view.mkdir()
    if os.geteuid() != 0:
        yield source, source
        source.chmod(0o755)
        for f in source.iterdir():
            f.chmod(0o644)
        return
    mount = shutil.which("mount")
    require(mount is not None, "mount is needed for a read-only bind mount")
    ok = subprocess.run(["mount", "--bind", str(source), str(view)], capture_output=True)
    require(ok.returncode == 0, f"cannot bind-mount: {ok.stderr.decode().strip()}")
    subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
    try:
        yield source, view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def make_read_only(source: Path, view: Path) -> None:
    if source == view:  # not root: permissions do it
        for f in source.iterdir():
            f.chmod(0o444)
        source.chmod(0o555)


def test_a_store_that_cannot_be_written_is_read(read_only_folder: tuple[Path, Path]) -> None:
    source, view = read_only_folder
    run_id = paid_run(source / "s.db")
    make_read_only(source, view)
    url = f"sqlite:///{view / 's.db'}"
    for args in (["ls", "--json"], ["show", run_id], ["why", f"{run_id}:3"], ["audit"],
                 ["export", run_id], ["doctor"]):  # fmt: skip
        code, out, err = tether(*args, store=url)
        assert code == 0, (args, out, err)
        assert "Traceback" not in out + err
    assert run_id in tether("ls", store=url)[1]
    code, out, err = tether("doctor", store=url)
    assert "ledger not checked: the store is open read-only" in out
    # A write is refused with one line, never a traceback.
    code, out, err = tether("fork", run_id, "--at", "3", store=url)
    assert code == 1 and "read-only" in err and "Traceback" not in out + err


def test_doctor_says_cannot_verify_when_it_cannot_read(
    read_only_folder: tuple[Path, Path],
) -> None:
    source, view = read_only_folder
    if source == view:
        pytest.skip("needs a read-only mount (run as root) to make an unreadable WAL")
    path = source / "s.db"
    paid_run(path)
    # A WAL left by a crash, on a read-only mount without its index file: SQLite cannot
    # read it there, and nothing says the data is damaged.
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE scratch (x)")
    shutil.copyfile(f"{path}-wal", source / "keep-wal")
    db.close()
    os.replace(source / "keep-wal", f"{path}-wal")
    Path(f"{path}-shm").unlink(missing_ok=True)
    code, out, err = tether("doctor", store=f"sqlite:///{view / 's.db'}")
    assert code == 3, (out, err)
    assert "CANNOT VERIFY" in err and "CORRUPT" not in out + err


async def test_a_store_file_removed_under_a_running_process_is_noticed(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "s.db"
    removed = {"done": False}

    @tool
    def pay(amount: int) -> str:
        """Not idempotent: its commit is synced and the file checked."""
        if not removed["done"]:
            removed["done"] = True
            shutil.rmtree(folder)
        return "paid"

    agent = Agent(name="r", instructions="x", tools=[pay],
                  model=ScriptedModel([call("pay", {"amount": 1}), call("pay", {"amount": 2}),
                                       "done"]))  # fmt: skip
    rt = Runtime(SQLiteStore(path))
    with pytest.raises(StoreError, match="was removed"):
        await rt.start(agent, "go")
    await rt.close()


def test_doctor_finds_a_damaged_recorded_secret_and_registering_it_again_repairs_it(
    tmp_path: Path,
) -> None:
    """A recorded secret whose value changed would no longer be redacted by readers."""
    path = tmp_path / "s.db"
    paid_run(path)
    secret = "sk-live-0123456789abcdef"

    async def record() -> None:
        store = SQLiteStore(path)
        await store.store_secrets([secret])
        await store.close()

    asyncio.run(record())
    assert doctor(path)[0] == 0
    db = sqlite3.connect(path)
    db.execute(
        "UPDATE tether_meta SET value = ? WHERE value = ?", ("sk-live-0123456789abcdeg", secret)
    )
    db.commit()
    db.close()
    code, report = doctor(path)
    assert code == 1 and "1 recorded secret damaged" in report["secrets"]["problem"]  # type: ignore[index]
    asyncio.run(record())
    assert doctor(path)[0] == 0
