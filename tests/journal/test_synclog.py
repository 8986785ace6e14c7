"""The sync log: commits synced before a side effect are named outside the database, so
a database that lost them (a damaged WAL, a restored backup) refuses those runs.

The loss is made the way an operator or a disk makes it: an older copy of the database
file put back under a newer sync log.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.cli import app
from tether.errors import CorruptionError, StoreError
from tether.journal import RunJournal, SQLiteStore, create_run, load_run, verify_run
from tether.journal._synclog import SETTLE, Synced, SyncLog, _line, lost_records

from .helpers import note

OWNER = "tester"


async def new_run(store: SQLiteStore, run_id: str) -> RunJournal:
    await create_run(store, agent="researcher", task="Summarise the field", run_id=run_id)
    lease = await store.acquire_lease(run_id, owner=OWNER, ttl_s=3600)
    journal, _ = await RunJournal.open(store, lease)
    return journal


def snapshot_db(path: Path, to: Path) -> None:
    """A consistent copy of the database file alone (the WAL folded in first)."""
    import sqlite3

    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    shutil.copyfile(path, to)


def put_back(copy: Path, path: Path) -> None:
    shutil.copyfile(copy, path)
    for side in ("-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)


async def test_a_database_that_lost_a_synced_commit_refuses_the_run(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    journal = await new_run(store, "run_a")
    await journal.append(note(1))
    await store.close()
    snapshot_db(path, tmp_path / "older.db")

    store = SQLiteStore(path)
    journal = await new_run(store, "run_b")
    lease = await store.acquire_lease("run_a", owner="again", ttl_s=3600, takeover_from=OWNER)
    journal, _ = await RunJournal.open(store, lease)
    await journal.append(note(2))  # not synced: nothing waited for it
    await journal.append(note(3), sync=True)  # what a non-idempotent call waits for
    await store.close()

    put_back(tmp_path / "older.db", path)
    store = SQLiteStore(path)
    try:
        with pytest.raises(CorruptionError) as lost_a:
            await load_run(store, "run_a")
        assert lost_a.value.seq == 3  # the first event the store no longer holds
        assert "sync log" in str(lost_a.value) and "tether fork run_a --at 2" in str(lost_a.value)
        # A run lost whole is not "not found": it may have had effects.
        with pytest.raises(CorruptionError, match="lost this run"):
            await load_run(store, "run_b")
        report = await verify_run(store, "run_a")
        assert [p.kind for p in report.problems] == ["lost"]
        assert not (await verify_run(store, "run_b")).ok
    finally:
        await store.close()


async def test_a_lost_commit_stays_refused_after_many_later_commits(tmp_path: Path) -> None:
    """Found once, remembered in the store: later synced commits of other runs (which
    end the newest-first scan sooner) never make the damaged run runnable again."""
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    await new_run(store, "run_a")
    await store.close()
    snapshot_db(path, tmp_path / "older.db")
    store = SQLiteStore(path)
    lease = await store.acquire_lease("run_a", owner="again", ttl_s=3600, takeover_from=OWNER)
    journal, _ = await RunJournal.open(store, lease)
    await journal.append(note(1), sync=True)
    await store.close()
    put_back(tmp_path / "older.db", path)

    store = SQLiteStore(path)
    with pytest.raises(CorruptionError):
        await load_run(store, "run_a")
    other = await new_run(store, "run_c")
    for i in range(SETTLE + 5):
        await other.append(note(i), sync=True)
    await store.close()

    store = SQLiteStore(path)
    try:
        with pytest.raises(CorruptionError, match="sync log"):
            await load_run(store, "run_a")
        assert (await load_run(store, "run_c")).state.last_seq == SETTLE + 6
    finally:
        await store.close()


def test_doctor_names_runs_the_store_lost(tmp_path: Path) -> None:
    path = tmp_path / "t.db"

    async def make(run_id: str) -> None:
        store = SQLiteStore(path)
        await new_run(store, run_id)
        await store.close()

    asyncio.run(make("run_kept"))
    snapshot_db(path, tmp_path / "older.db")
    asyncio.run(make("run_gone"))
    put_back(tmp_path / "older.db", path)

    result = CliRunner().invoke(app, ["doctor", "--store", f"sqlite:///{path}", "--json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    by_run = {r["run_id"]: r for r in doc["runs"]}
    assert by_run["run_kept"]["ok"] is True
    assert by_run["run_gone"]["ok"] is False
    assert by_run["run_gone"]["problems"][0]["kind"] == "lost"


async def test_a_healthy_store_reports_nothing_lost(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    try:
        journal = await new_run(store, "run_a")
        for i in range(5):
            await journal.append(note(i), sync=True)
        assert await store.lost_synced_commits() == []
        assert (await load_run(store, "run_a")).state.last_seq == 6
    finally:
        await store.close()


async def test_the_call_is_not_made_when_its_sync_record_cannot_be_written(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    try:
        journal = await new_run(store, "run_a")
        store._synclog.close()
        store._synclog.path = tmp_path / "no-such-folder" / "log"
        with pytest.raises(StoreError, match="the call it guards was not made"):
            await journal.append(note(1), sync=True)
    finally:
        await store.close()


def test_damaged_and_torn_lines_are_skipped_newest_first(tmp_path: Path) -> None:
    log = SyncLog(tmp_path / "log")
    for seq in range(1, 4):
        log.record("run_a", seq, f"h{seq}")
    log.close()
    data = bytearray((tmp_path / "log").read_bytes())
    second = data.index(b"run_a 2")
    data[second + 8] ^= 0x01  # the checksum of record 2 no longer matches its CRC
    data += _line(Synced("run_a", 4, "h4"))[:-7]  # a torn last line: crash mid-write
    (tmp_path / "log").write_bytes(bytes(data))
    assert [r.seq for r in SyncLog(tmp_path / "log").newest_first()] == [3, 1]


def test_reading_newest_first_crosses_block_boundaries(tmp_path: Path) -> None:
    log = SyncLog(tmp_path / "log")
    count = 3000  # about 200 KB: several 64 KB blocks, lines split between them
    for seq in range(count):
        log.record(f"run_{seq % 7}", seq, "x" * 40)
    log.close()
    assert [r.seq for r in SyncLog(tmp_path / "log").newest_first()] == list(reversed(range(count)))


def test_the_scan_stops_after_a_settled_streak_of_present_commits(tmp_path: Path) -> None:
    log = SyncLog(tmp_path / "log")
    for seq in range(1, 1001):
        log.record("run_a", seq, "h")
    log.close()
    asked: list[int] = []

    def present(record: Synced) -> bool:
        asked.append(record.seq)
        return record.seq not in (1000, 998, 10)  # 10 is far behind the streak

    assert [r.seq for r in lost_records(SyncLog(tmp_path / "log"), present)] == [1000, 998]
    assert len(asked) == 2 + 1 + SETTLE  # constant, not the whole log


def test_a_new_log_file_is_readable_like_the_database(tmp_path: Path) -> None:
    """Created under the umask, as SQLite creates the database: a reader who may read
    the store may read its log (it names runs and checksums, nothing more)."""
    old = os.umask(0o022)
    try:
        log = SyncLog(tmp_path / "log")
        log.record("run_a", 1, "h")
        log.close()
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "log").st_mode & 0o777 == 0o644


async def test_a_reader_that_cannot_read_the_log_still_reads_the_store(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    await new_run(store, "run_a")
    await store.close()
    os.unlink(f"{path}-synclog")
    os.mkdir(f"{path}-synclog")  # unreadable as a file, whoever runs the test
    reader = SQLiteStore(path, read_only=True)
    try:
        assert (await load_run(reader, "run_a")).state.last_seq == 1
    finally:
        await reader.close()
    writer = SQLiteStore(path)
    try:
        with pytest.raises(StoreError, match="sync log"):
            await load_run(writer, "run_a")
    finally:
        await writer.close()
