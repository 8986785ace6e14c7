"""The SQLite store's background checkpoints: the WAL stays bounded, nothing is lost.

The thresholds are lowered so a few hundred small appends exercise what a long run does.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from tether.journal import SQLiteStore, load_run, verify_run
from tether.journal import _checkpointer as checkpointer

from .helpers import RUN_ID, note, write_run

COMMITS = 600


def wal_frames(path: Path) -> int:
    """Frames in the WAL now (a PASSIVE checkpoint reports them; it copies, never blocks)."""
    db = sqlite3.connect(path)
    try:
        _, log, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(log)
    finally:
        db.close()


@pytest.fixture
def small_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpointer, "WAKE_EVERY_COMMITS", 8)
    monkeypatch.setattr(checkpointer, "INLINE_AFTER_FRAMES", 64)
    monkeypatch.setattr(checkpointer, "INLINE_AFTER_COMMITS", 40)


def checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("tether-checkpoint:")]


@pytest.mark.usefixtures("small_thresholds")
async def test_the_wal_is_copied_and_rewound_while_appends_go_on(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    await write_run(store, [note(i) for i in range(COMMITS)])
    # Without checkpoints the WAL would hold every page of every commit (thousands of
    # frames); the thread and the writer's fallback keep it near the thresholds.
    assert wal_frames(path) < 400
    assert checkpoint_threads(), "a commit stream should have started the thread"
    await store.close()
    assert not checkpoint_threads()

    reopened = SQLiteStore(path)
    assert (await verify_run(reopened, RUN_ID)).ok
    assert (await load_run(reopened, RUN_ID)).record.head_seq == COMMITS + 1
    await reopened.close()


@pytest.mark.usefixtures("small_thresholds")
async def test_the_writer_checkpoints_itself_when_the_thread_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The thread never runs (as if it had died): the WAL must still stay bounded.
    monkeypatch.setattr(checkpointer.BackgroundCheckpointer, "_kick", lambda self: None)
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    await write_run(store, [note(i) for i in range(COMMITS)])
    assert store._checkpointer.inline_runs >= COMMITS // 40 - 1
    assert wal_frames(path) < 400
    await store.close()
    reopened = SQLiteStore(path)
    assert (await load_run(reopened, RUN_ID)).record.head_seq == COMMITS + 1
    await reopened.close()


@pytest.mark.usefixtures("small_thresholds")
async def test_the_thread_leaves_when_idle_and_comes_back_for_more_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpointer, "IDLE_EXIT_S", 0.05)
    store = SQLiteStore(tmp_path / "s.db")
    journal, _ = await write_run(store, [note(i) for i in range(40)])
    first = store._checkpointer._thread
    assert first is not None
    first.join(timeout=5)
    assert not first.is_alive()
    for i in range(40):
        await journal.append(note(100 + i))
    second = store._checkpointer._thread
    assert second is not None and second is not first
    await store.close()


async def test_a_store_checkpoints_nothing_inside_its_commits(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    (auto,) = store._db.execute("PRAGMA wal_autocheckpoint").fetchone()
    assert auto == 0
    await store.close()
