"""SQLite's compact audit copy (schema 7): every form a column can take round-trips.

Correlation ids are kept relative to their run when they start with its id and `/`, and
whole otherwise (including ids that themselves begin with `/`, and run ids that contain
`/`); timestamps as microseconds when they are the journal's ISO form, as text otherwise;
`runtime` and `user_hidden` as NULL. Whatever the form, a query answers exactly as the
reference semantics (the memory store) do, the Python and SQL encodings agree (a rebuild
from the bytes gives the same rows, and the check finds nothing), and a schema-6 copy
migrates to the same rows.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tether._clock import iso
from tether.events import GENESIS_HASH, Event, EventDraft
from tether.journal import MemoryStore, SQLiteStore, Store, sqlite_functions, summary_of
from tether.journal import _sqlite as sqlite_store
from tether.journal._audit_rows import bound_us
from tether.journal._index import RowQuery
from tether.journal._schema import SQLITE_INDEX_TAIL_V6, SQLITE_MIGRATIONS
from tether.state import fold

from .helpers import created

START = 1_780_000_000.0
"""2026-05-28: every timestamp below is in the journal's own ISO form unless odd."""


def _chain(run_id: str, drafts: list[tuple[EventDraft, str]]) -> list[Event]:
    out: list[Event] = []
    prev = GENESIS_HASH
    for seq, (draft, ts) in enumerate(drafts, start=1):
        event = draft.seal(run_id=run_id, seq=seq, prev_hash=prev, ts=ts)
        out.append(event)
        prev = event.checksum
    return out


def _runs() -> list[list[Event]]:
    runs = []
    for k, run_id in enumerate(("run_a", "team/run/1", "run_ab")):
        t = START + k * 100

        def at(i: int, t: float = t) -> str:
            return iso(t + i * 1.25)

        drafts = [(created(), at(0))]
        for i in range(1, 5):
            own = f"{run_id}/c{i}"
            drafts += [
                (EventDraft(type="cycle.started", payload={"cycle": i}, correlation_id=own),
                 at(i * 10)),
                (EventDraft(type="tool.requested", payload={"name": "search", "call_id": "x"},
                            correlation_id=own, actor="model:m", visibility="visible"),
                 at(i * 10 + 1)),
                # Another run's cycle (as a fork's copies carry), and odd whole ids.
                (EventDraft(type="note", payload={"i": i}, correlation_id="run_a/c2",
                            actor="cli:ann", visibility="always_hidden"), at(i * 10 + 2)),
                (EventDraft(type="note", payload={"i": i}, correlation_id="/lonely"),
                 at(i * 10 + 3)),
                (EventDraft(type="note", payload={"i": i}, correlation_id="\x1f/odd"),
                 at(i * 10 + 4)),
            ]  # fmt: skip
        runs.append(_chain(run_id, drafts))
    return runs


RUNS = _runs()
ODD = _chain(
    "run_odd",
    [
        (created(), iso(START)),
        # Timestamps not in the journal's form (the journal writes none) stay text; they
        # sort after every one that is, where the reference compares text.
        (EventDraft(type="note", payload={"odd": 1}), "2026-05-28 08:00:00"),
        (EventDraft(type="note", payload={"odd": 2}), "2026-05-28T09:00:00+00:00"),
    ],
)


async def _write(store: Store, runs: list[list[Event]]) -> None:
    for events in runs:
        first = events[0]
        await store.create_run(
            first, agent="researcher", tenant=None, parent_run_id=None,
            summary=summary_of(fold([first])),
        )  # fmt: skip
        lease = await store.acquire_lease(first.run_id, owner="w", ttl_s=3600)
        for i in range(1, len(events), 3):
            part = events[i : i + 3]
            await store.append(lease, part, summary=summary_of(fold(events[: i + len(part)])))


CORRELATIONS = (
    *("run_a/c1", "run_a/c2", "team/run/1/c3", "run_ab/c4", "/lonely", "\x1f/odd"),
    *("run_a", "team/run", "/c1", "nothing"),
)


def _queries() -> list[RowQuery]:
    iso_ts = sorted(e.ts for e in RUNS[0] if e.ts.endswith("Z"))
    return [
        RowQuery(),
        RowQuery(newest_first=True, limit=7),
        *(RowQuery(correlation_id=c) for c in CORRELATIONS),
        RowQuery(correlation_id="run_a/c2", run_id="run_ab"),
        RowQuery(actor="runtime"),
        RowQuery(actor="r", actor_prefix=True),
        RowQuery(actor="cli:", actor_prefix=True),
        RowQuery(actor="model:m"),
        RowQuery(visibilities=("user_hidden",)),
        RowQuery(visibilities=("visible", "always_hidden")),
        RowQuery(visibilities=("user_hidden", "visible")),
        RowQuery(since=iso_ts[3], until=iso_ts[12]),
        RowQuery(since=iso_ts[5], newest_first=True, limit=4),
        RowQuery(types=("note",), since=iso_ts[2]),
        RowQuery(run_id="team/run/1", types=("tool.requested",)),
    ]


@pytest.mark.parametrize("batch", [1, 10_000])
async def test_every_form_of_every_column_answers_as_the_reference_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    monkeypatch.setattr(sqlite_store, "AUDIT_BATCH", batch)
    memory, store = MemoryStore(), SQLiteStore(tmp_path / "a.db")
    await _write(memory, RUNS)
    await _write(store, RUNS)
    for query in _queries():
        want = await memory.query_rows(query)
        got = await store.query_rows(query)
        assert [(r.run_id, r.seq, r.correlation_id, r.audit) for r in got] == [
            (r.run_id, r.seq, r.correlation_id, r.audit) for r in want
        ], query
    await store.close()


async def test_the_python_and_sql_encodings_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "AUDIT_BATCH", 1)
    store = SQLiteStore(tmp_path / "a.db")
    await _write(store, [*RUNS, ODD])
    written = store._db.execute("SELECT * FROM audit_rows ORDER BY id").fetchall()
    assert len(written) == sum(len(r) for r in RUNS) + len(ODD)
    odd = await store.query_rows(RowQuery(run_id="run_odd"))
    assert [r.audit.ts for r in odd if r.audit] == [e.ts for e in ODD]
    forms = {type(r[5]) for r in written}
    assert forms == {int, str}  # both forms of ts are exercised
    assert {r[4] for r in written} >= {"/c1", "run_a/c2", "\x1f/lonely", "\x1f\x1f/odd"}
    assert await store.check_audit_index() is None
    assert await store.rebuild_audit_index() == len(written)  # from the bytes, in SQL
    assert store._db.execute("SELECT * FROM audit_rows ORDER BY id").fetchall() == written
    # A copy that disagrees is found.
    store._db.execute("UPDATE audit_rows SET corr='/c9' WHERE corr='/c1'")
    assert "disagree" in (await store.check_audit_index() or "")
    await store.close()


async def test_a_schema6_copy_migrates_to_the_same_rows(tmp_path: Path) -> None:
    # Write with this version, then put the store back as schema 6 wrote it: its audit
    # table and indexes, filled from the bytes by its own statement.
    path = tmp_path / "a.db"
    store = SQLiteStore(path)
    await _write(store, RUNS)
    await store.rebuild_audit_index()
    want = store._db.execute("SELECT * FROM audit_rows ORDER BY id").fetchall()
    await store.close()
    db = sqlite3.connect(path, isolation_level=None)
    sqlite_functions(db)
    db.execute("DROP TABLE audit_rows")
    (v6,) = [statements for version, statements in SQLITE_MIGRATIONS if version == 6]
    for statement in v6[v6.index("DROP TABLE events") + 1 :]:
        if not statement.lstrip().upper().startswith(("CREATE VIEW", "CREATE TRIGGER")):
            db.execute(statement)
    assert db.execute("SELECT COUNT(*) FROM audit_rows").fetchone()[0] == len(want)
    assert "correlation_id" in {r[1] for r in db.execute("PRAGMA table_info(audit_rows)")}
    # Nor did schema 6 have schema 9's ledger table (a ledger it never used: none at all).
    for view in ("budget_usage", "budget_usage_hourly", "budget_runs", "budget_reservations"):
        db.execute(f"DROP VIEW {view}")
    db.execute("DROP TABLE budget_ledger")
    db.execute("UPDATE tether_meta SET value='6' WHERE key='schema_version'")
    db.close()
    assert SQLITE_INDEX_TAIL_V6  # (the statement that filled it above)
    store = SQLiteStore(path)  # migrates
    assert store._db.execute("SELECT * FROM audit_rows ORDER BY id").fetchall() == want
    assert await store.check_audit_index() is None
    memory = MemoryStore()
    await _write(memory, RUNS)
    for query in _queries():
        want_rows = [(r.run_id, r.seq) for r in await memory.query_rows(query)]
        assert [(r.run_id, r.seq) for r in await store.query_rows(query)] == want_rows, query
    await store.close()


def test_time_bounds_are_instants() -> None:
    exact = "2026-05-28T08:00:01.250000Z"
    assert bound_us(exact) == bound_us("2026-05-28T08:00:01.25+00:00")
    assert bound_us("2026-05-28T08") == bound_us("2026-05-28T08:00:00.000000Z")
    assert bound_us("2026-05-28") == bound_us("2026-05-28T00:00:00+00:00")
    assert bound_us("2026-05-28T10:00:00+02:00") == bound_us("2026-05-28T08:00:00Z")
    with pytest.raises(Exception, match="not a time"):
        bound_us("yesterday-ish")
