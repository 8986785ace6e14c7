"""Schema 6 and the v2 envelope against stores written before them.

A schema-5 file holding v1 events is built the way schema 5 wrote one (its own DDL, rows
with every column filled, `audit_rows` copied), then opened by this version: it must
migrate, verify, load, resume (v2 events continuing a v1 chain), export and answer audit
queries, with every old event's bytes kept exactly.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tether.events import GENESIS_HASH, decode_event
from tether.journal import (
    RunJournal,
    SQLiteStore,
    load_run,
    read_events,
    sqlite_functions,
    verify_run,
)
from tether.journal._index import RowQuery, audit_columns
from tether.journal._integrity import seal_snapshot
from tether.journal._schema import SQLITE_INDEX_TAIL, SQLITE_MIGRATIONS
from tether.state import fold
from tether.views import Viewer

from .helpers import RUN_ID, created, cycles, seal_chain

OLD = seal_chain([created(), *cycles(3)], version=1)


def _schema5_store(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    sqlite_functions(db)
    db.execute("CREATE TABLE tether_meta (key TEXT PRIMARY KEY, value TEXT)")
    for version, statements in SQLITE_MIGRATIONS:
        if version <= 5:
            for statement in statements:
                db.execute(statement)
    db.execute("INSERT INTO tether_meta VALUES ('schema_version', '5')")
    state = fold(OLD)
    db.execute(
        "INSERT INTO runs (run_id, agent, tenant, parent_run_id, created_at, updated_at, status,"
        " steps, input_tokens, output_tokens, cost_usd, head_seq, head_hash) "
        "VALUES (?, ?, NULL, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (RUN_ID, state.agent, OLD[0].ts, state.updated_at, state.status, state.steps,
         state.input_tokens, state.output_tokens, state.cost_usd, OLD[-1].seq,
         OLD[-1].checksum),
    )  # fmt: skip
    for e in OLD:
        a = audit_columns(e)
        db.execute(
            "INSERT INTO events (run_id, seq, type, correlation_id, data, ts, actor, tool,"
            " visibility) VALUES (?,?,?,?,?,?,?,?,?)",
            (e.run_id, e.seq, e.type, e.correlation_id, e.raw, a.ts, a.actor, a.tool,
             a.visibility),
        )  # fmt: skip
    db.execute(SQLITE_INDEX_TAIL)
    db.execute(
        "INSERT INTO snapshots (run_id, seq, data) VALUES (?, 10, ?)",
        (RUN_ID, seal_snapshot(fold(OLD[:10]))),
    )
    db.close()


async def test_a_schema5_store_of_v1_events_migrates_loads_resumes_and_exports(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    _schema5_store(path)
    store = SQLiteStore(path)
    try:
        assert (await verify_run(store, RUN_ID)).ok
        rows = await store.read_rows(RUN_ID)
        assert [bytes(r.raw) for r in rows] == [e.raw for e in OLD]  # bytes kept exactly
        assert [(r.type, r.correlation_id, r.audit) for r in rows] == [
            (e.type, e.correlation_id, audit_columns(e)) for e in OLD
        ]
        loaded = await load_run(store, RUN_ID)
        assert loaded.state == fold(OLD) and loaded.snapshot_seq == 10

        # Resume: new events are v3 and chain onto the last v1 event.
        lease = await store.acquire_lease(RUN_ID, owner="resumer", ttl_s=60)
        journal, _ = await RunJournal.open(store, lease)
        new = await journal.append(*cycles(1, start=4))
        assert {e.schema_version for e in new} == {3} and new[0].follows(OLD[-1].checksum)
        everything = await read_events(store, RUN_ID)
        assert everything == [*OLD, *new]
        assert (await verify_run(store, RUN_ID)).ok

        # Export: v1 lines are the stored bytes, v3 lines their portable form; every line
        # decodes on its own and the chain runs through both.
        lines = await Viewer(store, "audit").export_lines(RUN_ID)
        assert lines[: len(OLD)] == [e.raw for e in OLD]
        decoded = [decode_event(line) for line in lines]
        assert decoded == everything
        prev = GENESIS_HASH
        for e in decoded:
            assert e.follows(prev)
            prev = e.checksum

        # Audit queries across runs read the migrated `audit_rows` and the new tail.
        found = await store.query_rows(RowQuery(types=("tool.completed",)))
        assert [r.seq for r in found] == [e.seq for e in everything if e.type == "tool.completed"]
        (keys,) = store._db.execute("SELECT COUNT(*) FROM run_keys").fetchone()
        assert keys == 1
    finally:
        await store.close()


async def test_event_rows_hold_only_the_run_key_the_seq_and_the_bytes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "new.db")
    try:
        columns = [r[1] for r in store._db.execute("PRAGMA table_xinfo(event_rows)")]
        assert columns == ["id", "run", "seq", "data"]
        audit = [r[1] for r in store._db.execute("PRAGMA table_xinfo(audit_rows)")]
        assert "run_id" not in audit and "data" not in audit
    finally:
        await store.close()
