"""SQLite's audit index (schema 5): copied into `audit_rows` in batches, queried whole.

Whatever part of a store has been copied yet, a query must answer exactly as the
reference semantics (the memory store) do: rows in `audit_rows`, rows in the unindexed
tail, and rows on either side of the boundary alike.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tether.events import Event, EventDraft
from tether.journal import MemoryStore, RunJournal, SQLiteStore, Store, sqlite_functions, summary_of
from tether.journal import _sqlite as sqlite_store
from tether.journal._index import RowQuery
from tether.state import fold

from .helpers import audit_cycle, created, seal_chain

RUNS = [
    seal_chain([created(), *(d for i in range(1, 6) for d in audit_cycle(i))], run_id=f"run_{k}")
    for k in ("a", "b", "c")
]


async def interleaved(store: Store, runs: list[list[Event]], chunk: int) -> None:
    """Write the runs through the Store API, `chunk` events per append, taking turns."""
    leases = {}
    for events in runs:
        first = events[0]
        await store.create_run(
            first, agent="researcher", tenant=None, parent_run_id=None,
            summary=summary_of(fold([first])),
        )  # fmt: skip
        leases[first.run_id] = await store.acquire_lease(first.run_id, owner="w", ttl_s=3600)
    for start in range(1, max(len(e) for e in runs), chunk):
        for events in runs:
            part = events[start : start + chunk]
            if part:
                await store.append(
                    leases[events[0].run_id],
                    part,
                    summary=summary_of(fold(events[: start + len(part)])),
                )


def queries() -> list[RowQuery]:
    ts = sorted(e.ts for e in RUNS[0])
    return [
        RowQuery(),
        RowQuery(limit=4),
        RowQuery(newest_first=True, limit=5),
        RowQuery(run_id="run_a"),
        RowQuery(run_id="run_b", newest_first=True, limit=3),
        RowQuery(correlation_id="run/c2"),
        RowQuery(correlation_id="run/c4", run_id="run_c"),
        RowQuery(correlation_id="run/c3", newest_first=True, limit=2),
        RowQuery(types=("tool.requested", "tool.completed")),
        RowQuery(types=("tool.completed",), newest_first=True, limit=4),
        RowQuery(types=("note",), limit=2),
        RowQuery(types=("run.created", "note")),
        RowQuery(run_id="run_a", types=("message.system", "message.user")),
        RowQuery(tool="search", visibilities=("visible",)),
        RowQuery(tool="search", newest_first=True, limit=3),
        RowQuery(actor="tool:search"),
        RowQuery(actor="model:", actor_prefix=True),
        RowQuery(actor="cli:a_", actor_prefix=True),
        RowQuery(actor="cli:", actor_prefix=True, since=ts[3], until=ts[20]),
        RowQuery(since=ts[3], until=ts[9]),
        RowQuery(since=ts[10], newest_first=True, limit=6),
        RowQuery(run_id="run_a", after_seq=4, before_seq=9),
        RowQuery(visibilities=()),
    ]


@pytest.mark.parametrize("batch", [1, 7, 40, 10_000])
@pytest.mark.parametrize("chunk", [1, 4])
async def test_queries_answer_alike_wherever_the_copied_part_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int, chunk: int
) -> None:
    monkeypatch.setattr(sqlite_store, "AUDIT_BATCH", batch)
    memory, store = MemoryStore(), SQLiteStore(tmp_path / "a.db")
    await interleaved(memory, RUNS, chunk)
    await interleaved(store, RUNS, chunk)
    (copied,) = store._db.execute("SELECT COUNT(*) FROM audit_rows").fetchone()
    total = sum(len(r) for r in RUNS)
    # Every part is exercised: all copied, none, some with a tail, several batches.
    assert {1: copied == total, 7: copied >= 70, 40: 40 <= copied < total,
            10_000: copied == 0}[batch], copied  # fmt: skip
    for query in queries():
        want = [(r.run_id, r.seq) for r in await memory.query_rows(query)]
        got = [(r.run_id, r.seq) for r in await store.query_rows(query)]
        assert got == want, query
    await store.close()


async def test_a_cut_tail_leaves_the_audit_index_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "AUDIT_BATCH", 1)
    store = SQLiteStore(tmp_path / "a.db")
    await interleaved(store, RUNS[:1], 1)
    lease = await store.acquire_lease("run_a", owner="w", ttl_s=3600)
    keep = RUNS[0][9]
    await store.truncate(lease, "run_a", keep_through=keep.seq, head_hash=keep.checksum)
    found = await store.query_rows(RowQuery(types=("tool.completed",)))
    assert [r.seq for r in found] == [e.seq for e in RUNS[0][:10] if e.type == "tool.completed"]
    # The run goes on from the cut: the new events are indexed under the freed ids.
    await store.append(lease, RUNS[0][10:12], summary=summary_of(fold(RUNS[0][:12])))
    found = await store.query_rows(RowQuery(types=("tool.completed",)))
    assert [r.seq for r in found] == [e.seq for e in RUNS[0][:12] if e.type == "tool.completed"]
    await store.close()


async def test_event_ids_are_an_explicit_key_so_vacuum_keeps_them(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    await interleaved(store, RUNS, 3)
    before = store._db.execute("SELECT id, run_id, seq FROM events ORDER BY id").fetchall()
    await store.close()
    db = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    sqlite_functions(db)
    db.execute("DELETE FROM events WHERE id IN (2, 3)")  # gaps, which VACUUM may close
    db.execute("VACUUM")
    after = db.execute("SELECT id, run_id, seq FROM events ORDER BY id").fetchall()
    db.close()
    assert after == [row for row in before if row[0] not in (2, 3)]


# -- checking and rebuilding the copy ------------------------------------------------------


def damage_page_of(path: Path, btree: str) -> int:
    """Overwrite the header of one page of `btree` in the (closed, checkpointed) file."""
    db = sqlite3.connect(path)
    sqlite_functions(db)
    (page,) = db.execute(
        "SELECT pageno FROM dbstat WHERE name=? ORDER BY pageno DESC LIMIT 1", (btree,)
    ).fetchone()
    (size,) = db.execute("PRAGMA page_size").fetchone()
    db.close()
    with path.open("r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\x07\xff\xff\x00\x33" * 20)
    return int(page)


async def copied_store(path: Path, monkeypatch: pytest.MonkeyPatch) -> SQLiteStore:
    monkeypatch.setattr(sqlite_store, "AUDIT_BATCH", 1)
    store = SQLiteStore(path)
    await interleaved(store, RUNS, 2)
    return store


async def test_a_healthy_copy_checks_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = await copied_store(tmp_path / "a.db", monkeypatch)
    assert await store.check_audit_index() is None
    await store.close()


async def test_rows_that_disagree_or_are_missing_are_found_and_a_rebuild_restores_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await copied_store(tmp_path / "a.db", monkeypatch)
    store._db.execute("UPDATE audit_rows SET actor='cli:mallory' WHERE id=5")
    store._db.execute("DELETE FROM audit_rows WHERE id IN (7, 8)")
    problem = await store.check_audit_index()
    assert problem == "1 row disagree with the events; 2 events missing from it"
    assert await store.rebuild_audit_index() == sum(len(r) for r in RUNS)
    assert await store.check_audit_index() is None
    memory = MemoryStore()
    await interleaved(memory, RUNS, 2)
    for query in queries():
        want = [(r.run_id, r.seq) for r in await memory.query_rows(query)]
        assert [(r.run_id, r.seq) for r in await store.query_rows(query)] == want, query
    await store.close()


@pytest.mark.parametrize("btree", ["audit_by_ts", "audit_rows"])
async def test_a_damaged_page_is_found_and_a_rebuild_replaces_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, btree: str
) -> None:
    path = tmp_path / "a.db"
    await (await copied_store(path, monkeypatch)).close()
    page = damage_page_of(path, btree)
    store = SQLiteStore(path)
    problem = await store.check_audit_index()
    assert problem is not None
    assert f"Page {page}" in problem or "malformed" in problem
    # The journal goes on meanwhile: an append that should copy a batch skips the copy.
    lease = await store.acquire_lease("run_a", owner="w", ttl_s=60)
    journal, _ = await RunJournal.open(store, lease)
    for i in range(3):
        await journal.append(EventDraft(type="note", payload={"after": i}))
    assert await store.rebuild_audit_index() == sum(len(r) for r in RUNS) + 3
    assert await store.check_audit_index() is None
    assert [r[0] for r in store._db.execute("PRAGMA integrity_check")] == ["ok"]
    found = await store.query_rows(RowQuery(types=("tool.completed",)))
    assert len(found) == 15
    await store.close()


async def test_two_writers_fill_the_audit_copy_from_their_own_and_each_others_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema 6: a writer copies the columns of the events it sealed and computes those of
    events other processes appended meanwhile from their bytes; either way the copy agrees
    with the events."""
    monkeypatch.setattr(sqlite_store, "AUDIT_BATCH", 7)
    path = tmp_path / "two.db"
    one, two = SQLiteStore(path), SQLiteStore(path)
    try:
        await interleaved(one, RUNS[:1], chunk=2)
        await interleaved(two, RUNS[1:2], chunk=3)
        await interleaved(one, RUNS[2:], chunk=1)
        assert await one.check_audit_index() is None
        (copied,) = one._db.execute("SELECT COUNT(*) FROM audit_rows").fetchone()
        assert copied >= sum(len(r) for r in RUNS) - 7
        for q in queries():
            assert [(r.run_id, r.seq) for r in await one.query_rows(q)] == [
                (r.run_id, r.seq) for r in await two.query_rows(q)
            ]
    finally:
        await one.close()
        await two.close()


async def test_sealed_rows_whose_events_were_replaced_under_their_ids_are_not_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer keeps the audit rows of the events it sealed until the next batch. If the
    run is cut and written again meanwhile through another connection, the new events
    take the freed ids: the writer's rows for the old ones must not be copied over them
    (each row is copied only while its event row still holds the bytes it sealed)."""
    monkeypatch.setattr(sqlite_store, "AUDIT_BATCH", 10_000)
    path = tmp_path / "cut.db"
    one, two = SQLiteStore(path), SQLiteStore(path)
    try:
        original = RUNS[0]
        await interleaved(one, [original], chunk=3)  # all of it held by `one`, not copied
        assert one._db.execute("SELECT COUNT(*) FROM audit_rows").fetchone() == (0,)
        assert len(one._audit_pending) == len(original) - 1
        # Another holder cuts the run after seq 4 and writes a different tail.
        keep = original[3]
        other_tail = seal_chain(
            [audit_cycle(9)[1], audit_cycle(9)[0], audit_cycle(9)[3]],
            run_id=original[0].run_id,
            after=keep,
        )
        lease = await two.acquire_lease("run_a", owner="w", ttl_s=3600)
        await two.truncate(lease, "run_a", keep_through=keep.seq, head_hash=keep.checksum)
        await two.append(lease, other_tail, summary=summary_of(fold([*original[:4], *other_tail])))
        # `one` copies its batch (with another run's append): only what still holds.
        monkeypatch.setattr(sqlite_store, "AUDIT_BATCH", 1)
        await interleaved(one, RUNS[1:2], chunk=len(RUNS[1]))
        assert await one.check_audit_index() is None
        copied = one._db.execute(
            "SELECT a.seq, a.type FROM audit_rows a JOIN run_keys k ON k.key = a.run "
            "WHERE k.run_id = 'run_a' ORDER BY a.seq"
        ).fetchall()
        assert copied == [(e.seq, e.type) for e in [*original[:4], *other_tail]]
    finally:
        await one.close()
        await two.close()
