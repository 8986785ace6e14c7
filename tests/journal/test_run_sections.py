"""A run's sparse events by type on SQLite: bounded, and answered as the reference does.

A query by type within one run (a run page's approvals, health events and endings) must
not read the run's other events: with the per-run section index (`_sections`) it is a
range of index entries, without it a walk of the audit copy's small rows. Either way it
answers exactly as the memory store, wherever the copied part of the journal ends.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tether.events import EventDraft
from tether.journal import MemoryStore, SQLiteStore
from tether.journal import _sqlite as sqlite_store
from tether.journal._index import RowQuery
from tether.journal._sections import RUN_SECTION_INDEX, SECTION_INDEX_NAME, SECTION_TYPES

from .helpers import audit_cycle, created, seal_chain
from .test_audit_rows import interleaved


def sparse(i: int) -> list[EventDraft]:
    """Every few cycles an approval, a health warning, a limit warning; visibilities vary."""
    corr = f"run/c{i}"
    out: list[EventDraft] = []
    if i % 3 == 0:
        out += [
            EventDraft(type="approval.requested", correlation_id=corr,
                       payload={"request_id": f"apr:{i}", "tool": "search"},
                       visibility="visible" if i % 2 else "user_hidden"),
            EventDraft(type="approval.resolved", correlation_id=corr, actor="cli:ann",
                       payload={"request_id": f"apr:{i}", "decision": "approved"}),
        ]  # fmt: skip
    if i % 4 == 0:
        out.append(EventDraft(type="health.warning", payload={"message": f"w{i}"}))
    if i % 5 == 0:
        out.append(EventDraft(type="limit.warning", payload={"message": f"l{i}"}))
    return out


def chain(run_id: str, cycles: int) -> list:  # type: ignore[type-arg]
    drafts = [created()]
    for i in range(1, cycles + 1):
        drafts += [*audit_cycle(i), *sparse(i)]
    drafts.append(EventDraft(type="run.completed", payload={"answer": "ok"}))
    return seal_chain(drafts, run_id=run_id)


RUNS = [chain("run_a", 30), chain("run_b", 12)]

QUERIES = [
    RowQuery(run_id="run_a", types=("approval.requested", "approval.resolved")),
    RowQuery(run_id="run_a", types=("approval.requested", "approval.resolved"),
             newest_first=True, limit=5),
    RowQuery(run_id="run_a", types=("health.warning", "limit.warning"), newest_first=True,
             limit=3),
    RowQuery(run_id="run_b", types=("health.warning",), newest_first=True, limit=1),
    RowQuery(run_id="run_a", types=("run.completed", "run.stopped", "run.failed")),
    RowQuery(run_id="run_a", types=("approval.requested",), visibilities=("visible",)),
    RowQuery(run_id="run_a", types=("approval.requested",), after_seq=40, before_seq=120),
    RowQuery(run_id="run_a", types=("approval.requested",), limit=2),
    RowQuery(run_id="run_b", types=("budget.denied",)),
    RowQuery(run_id="run_a", types=("context.compacted",), newest_first=True, limit=2),
    RowQuery(run_id="run_a", types=("note", "approval.requested"), newest_first=True, limit=4),
]  # fmt: skip


@pytest.mark.parametrize("indexed", [False, True])
@pytest.mark.parametrize("batch", [1, 40, 10_000])
async def test_section_queries_answer_as_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, indexed: bool, batch: int
) -> None:
    monkeypatch.setattr(sqlite_store, "AUDIT_BATCH", batch)
    memory, store = MemoryStore(), SQLiteStore(tmp_path / "a.db")
    if not indexed:  # a store whose index was dropped (new stores have it: schema 8)
        store._db.execute(f"DROP INDEX {SECTION_INDEX_NAME}")
    await interleaved(memory, RUNS, 3)
    await interleaved(store, RUNS, 3)
    assert store._has_section_index() is indexed
    for query in QUERIES:
        want = [(r.run_id, r.seq) for r in await memory.query_rows(query)]
        got = [(r.run_id, r.seq) for r in await store.query_rows(query)]
        assert got == want, query
    await store.close()


def _fetched(store: SQLiteStore) -> list[int]:
    """Counts the rows every read of the store fetches (into the returned list)."""
    counts: list[int] = []
    read = store._read

    def counting(sql: str, params: object = ()) -> list[object]:
        rows = read(sql, params)  # type: ignore[arg-type]
        counts.append(len(rows))
        return rows

    store._read = counting  # type: ignore[method-assign]
    return counts


@pytest.mark.parametrize("indexed", [False, True])
async def test_a_query_by_type_reads_the_matches_not_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, indexed: bool
) -> None:
    monkeypatch.setattr(sqlite_store, "AUDIT_BATCH", 16)
    store = SQLiteStore(tmp_path / "a.db")
    if not indexed:  # a store whose index was dropped (new stores have it: schema 8)
        store._db.execute(f"DROP INDEX {SECTION_INDEX_NAME}")
    await interleaved(store, RUNS, 3)
    total = len(RUNS[0])
    counts = _fetched(store)
    query = RowQuery(run_id="run_a", types=("health.warning",))
    found = await store.query_rows(query)
    assert len(found) == 7
    # The matches and the run's few rows not copied yet (fewer than a batch), never
    # the run's other events.
    assert sum(counts) <= len(found) + 16 < total // 4, (counts, total)
    counts.clear()
    newest = await store.query_rows(
        RowQuery(run_id="run_a", types=SECTION_TYPES, newest_first=True, limit=2)
    )
    assert len(newest) == 2 and newest[0].seq > newest[1].seq
    if indexed:
        # At most the newest 2 of each of the five types run_a has, the tail, the check
        # for the index and the store's own bookkeeping read.
        assert sum(counts) <= 2 * 5 + 16 + 2, counts
    await store.close()


async def test_an_index_of_another_definition_is_not_used(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "a.db")
    await interleaved(store, RUNS, 3)
    assert store._has_section_index()  # schema 8 made it
    store._db.execute(f"DROP INDEX {SECTION_INDEX_NAME}")
    store._db.execute(
        f"CREATE INDEX {SECTION_INDEX_NAME} ON audit_rows (run, type) "
        "WHERE type IN ('approval.requested')"
    )
    assert not store._has_section_index()
    plans: list[str] = []
    store._db.set_trace_callback(plans.append)
    found = await store.query_rows(RowQuery(run_id="run_a", types=("health.warning",)))
    assert len(found) == 7 and not any(f"INDEXED BY {SECTION_INDEX_NAME}" in p for p in plans)
    await store.close()
    db = sqlite3.connect(tmp_path / "a.db")
    db.execute(f"DROP INDEX {SECTION_INDEX_NAME}")
    db.execute(RUN_SECTION_INDEX)
    db.commit()
    db.close()
    store = SQLiteStore(tmp_path / "a.db")
    assert store._has_section_index()
    plans.clear()
    store._db.set_trace_callback(plans.append)
    assert len(await store.query_rows(RowQuery(run_id="run_a", types=("health.warning",)))) == 7
    assert any(f"INDEXED BY {SECTION_INDEX_NAME}" in p for p in plans)
    await store.close()
