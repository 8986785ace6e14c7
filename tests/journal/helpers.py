"""Builders and byte-level pokers shared by the journal, state and golden tests.

Nothing here goes through a private code path of the journal to *write*: runs are built
with `create_run` / `RunJournal` or imported through the Store API. Only the pokers reach
under the contract, to damage stored bytes the way a disk or a bad tool would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from tether._clock import FakeClock, iso
from tether.events import GENESIS_HASH, Event, EventDraft, Usage
from tether.journal import (
    Lease,
    MemoryStore,
    RunJournal,
    SQLiteStore,
    Store,
    create_run,
    summary_of,
)
from tether.state import fold

RUN_ID = "run_test0001"
START = 1_780_000_000.0


def created(
    *, agent: str = "researcher", task: str = "Summarise the field", **extra: object
) -> EventDraft:
    """The `run.created` draft `create_run` would write (for chains sealed by hand)."""
    payload: dict[str, object] = {
        "agent": agent,
        "agent_version": "1",
        "task": task,
        "model": "scripted",
        "limits": {"max_steps": 50},
        "tenant": None,
        "parent_event": None,
    }
    payload.update(extra)
    return EventDraft(type="run.created", payload=payload)


def cycle(n: int, *, tools: int = 2, fail_tool: bool = False) -> list[EventDraft]:
    """One loop turn: cycle, model request/response with usage, tool calls and results."""
    cid = f"cycle-{n}"
    drafts = [
        EventDraft(type="cycle.started", payload={"cycle": n}, correlation_id=cid),
        EventDraft(type="model.requested", payload={"messages": 3 + n}, correlation_id=cid),
        EventDraft(
            type="model.completed",
            payload={"text": f"turn {n}", "tool_calls": tools},
            correlation_id=cid,
            usage=Usage(input_tokens=100 + n, output_tokens=20 + n, cost_usd=0.0013),
        ),
    ]
    for t in range(tools):
        drafts.append(
            EventDraft(
                type="tool.requested",
                payload={"call_id": f"call-{n}-{t}", "name": "search", "args": {"q": f"q{n}{t}"}},
                correlation_id=cid,
            )
        )
    for t in range(tools):
        failed = fail_tool and t == tools - 1
        drafts.append(
            EventDraft(
                type="tool.failed" if failed else "tool.completed",
                payload={"call_id": f"call-{n}-{t}", "output": f"result {n}.{t}"},
                correlation_id=cid,
            )
        )
    return drafts


def audit_cycle(i: int) -> list[EventDraft]:
    """One cycle whose events differ in every audit column: actors (one with LIKE's
    wildcards in it), tools, visibilities and correlation ids, for query tests."""
    corr = f"run/c{i}"
    return [
        EventDraft(type="cycle.started", payload={"cycle": i}, correlation_id=corr),
        EventDraft(type="model.requested", payload={}, correlation_id=corr, actor="runtime"),
        EventDraft(type="tool.requested", payload={"call_id": f"c{i}", "name": "search"},
                   correlation_id=corr, actor=f"model:m{i % 2}"),
        EventDraft(type="tool.completed", payload={"call_id": f"c{i}", "name": "search"},
                   correlation_id=corr, actor="tool:search", visibility="user_hidden"),
        EventDraft(type="note", payload={"by": i}, actor="cli:a_b%" if i == 2 else "cli:ann"),
    ]  # fmt: skip


def cycles(count: int, *, start: int = 1, tools: int = 2) -> list[EventDraft]:
    out: list[EventDraft] = []
    for n in range(start, start + count):
        out.extend(cycle(n, tools=tools))
    return out


def note(i: int) -> EventDraft:
    return EventDraft(type="note", payload={"i": i})


def seal_chain(
    drafts: Sequence[EventDraft],
    *,
    run_id: str = RUN_ID,
    after: Event | None = None,
    start: float = START,
    step_s: float = 1.5,
    version: int = 2,
) -> list[Event]:
    """Seal drafts in order as a hash chain, continuing `after` if given."""
    seq = after.seq if after else 0
    prev = after.checksum if after else GENESIS_HASH
    t = start + seq * step_s
    events: list[Event] = []
    for draft in drafts:
        seq += 1
        t += step_s
        event = draft.seal(run_id=run_id, seq=seq, prev_hash=prev, ts=iso(t), version=version)
        events.append(event)
        prev = event.checksum
    return events


async def import_events(
    store: Store, events: Sequence[Event], *, owner: str = "importer", ttl_s: float = 3600
) -> Lease:
    """Put an already sealed journal into a store through its API; returns the lease used."""
    first = events[0]
    await store.create_run(
        first,
        agent=first.payload["agent"],
        tenant=first.payload.get("tenant"),
        parent_run_id=None,
        summary=summary_of(fold([first])),
    )
    lease = await store.acquire_lease(first.run_id, owner=owner, ttl_s=ttl_s)
    if len(events) > 1:
        await store.append(lease, events[1:], summary=summary_of(fold(events)))
    return lease


async def write_run(
    store: Store,
    drafts: Iterable[EventDraft],
    *,
    run_id: str = RUN_ID,
    clock: FakeClock | None = None,
    snapshot_every: int = 0,
    keep_snapshots: int = 2,
    batch: int = 1,
    owner: str = "writer",
) -> tuple[RunJournal, Lease]:
    """Create a run and append drafts through RunJournal, `batch` drafts per append."""
    clock = clock or FakeClock()
    await create_run(
        store, agent="researcher", task="Summarise the field", run_id=run_id, clock=clock
    )
    lease = await store.acquire_lease(run_id, owner=owner, ttl_s=3600)
    journal, _ = await RunJournal.open(
        store, lease, clock=clock, snapshot_every=snapshot_every, keep_snapshots=keep_snapshots
    )
    pending = list(drafts)
    for i in range(0, len(pending), batch):
        clock.advance(0.25)
        await journal.append(*pending[i : i + batch])
    return journal, lease


async def all_events(store: Store, run_id: str = RUN_ID) -> list[Event]:
    """Every stored event, decoded and verified (the test's own view of a healthy store)."""
    from tether.journal import read_events

    return await read_events(store, run_id)


class Poker:
    """Reaches under a store to change, delete or truncate what it holds."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def event(self, run_id: str, seq: int, raw: bytes | None) -> None:
        raise NotImplementedError

    def snapshot(self, run_id: str, seq: int, raw: bytes | None) -> None:
        raise NotImplementedError

    def event_column(self, run_id: str, seq: int, column: str, value: object) -> None:
        raise NotImplementedError


class MemoryPoker(Poker):
    store: MemoryStore

    def event(self, run_id: str, seq: int, raw: bytes | None) -> None:
        self.store._pokerow_of(run_id, seq, raw)

    def snapshot(self, run_id: str, seq: int, raw: bytes | None) -> None:
        snaps = self.store._runs[run_id].snapshots
        if raw is None:
            del snaps[seq]
        else:
            snaps[seq] = raw

    def event_column(self, run_id: str, seq: int, column: str, value: object) -> None:
        from dataclasses import replace

        run = self.store._runs[run_id]
        run.rows = [replace(r, **{column: value}) if r.seq == seq else r for r in run.rows]
        run.rows.sort(key=lambda r: (not isinstance(r.seq, int), r.seq))


class SQLitePoker(Poker):
    """Changes the file through a second, independent sqlite3 connection.

    Schema 6 stores events in `event_rows` (run key, seq, bytes); their other columns are
    computed from the bytes, so only those three can be damaged apart from the bytes."""

    store: SQLiteStore

    def _exec(self, sql: str, params: Sequence[object]) -> None:
        db = sqlite3.connect(self.store.path, isolation_level=None)
        try:
            changed = db.execute(sql, params).rowcount
            assert changed == 1, f"poke changed {changed} rows: {sql}"
        finally:
            db.close()

    _ROW = "WHERE run=(SELECT key FROM run_keys WHERE run_id=?) AND seq=?"

    def event(self, run_id: str, seq: int, raw: bytes | None) -> None:
        if raw is None:
            self._exec(f"DELETE FROM event_rows {self._ROW}", (run_id, seq))
        else:
            self._exec(f"UPDATE event_rows SET data=? {self._ROW}", (raw, run_id, seq))

    def snapshot(self, run_id: str, seq: int, raw: bytes | None) -> None:
        if raw is None:
            self._exec("DELETE FROM snapshots WHERE run_id=? AND seq=?", (run_id, seq))
        else:
            self._exec("UPDATE snapshots SET data=? WHERE run_id=? AND seq=?", (raw, run_id, seq))

    def event_column(self, run_id: str, seq: int, column: str, value: object) -> None:
        assert column in ("seq", "run", "data"), f"{column} is computed from the bytes"
        self._exec(f"UPDATE event_rows SET {column}=? {self._ROW}", (value, run_id, seq))


class PostgresPoker(Poker):
    """Changes the tables through a second, independent psycopg connection."""

    def _exec(self, query: str, params: Sequence[object]) -> None:
        import psycopg

        from tether.journal._postgres import PostgresStore

        assert isinstance(self.store, PostgresStore)
        with psycopg.connect(self.store._conninfo, autocommit=True) as conn:
            changed = conn.execute(query, params).rowcount
            assert changed == 1, f"poke changed {changed} rows: {query}"

    def event(self, run_id: str, seq: int, raw: bytes | None) -> None:
        if raw is None:
            self._exec("DELETE FROM events WHERE run_id=%s AND seq=%s", (run_id, seq))
        else:
            self._exec("UPDATE events SET data=%s WHERE run_id=%s AND seq=%s", (raw, run_id, seq))

    def snapshot(self, run_id: str, seq: int, raw: bytes | None) -> None:
        if raw is None:
            self._exec("DELETE FROM snapshots WHERE run_id=%s AND seq=%s", (run_id, seq))
        else:
            self._exec(
                "UPDATE snapshots SET data=%s WHERE run_id=%s AND seq=%s", (raw, run_id, seq)
            )

    def event_column(self, run_id: str, seq: int, column: str, value: object) -> None:
        assert column in ("seq", "type", "correlation_id", "run_id", "data")
        self._exec(
            f"UPDATE events SET {column}=%s WHERE run_id=%s AND seq=%s", (value, run_id, seq)
        )

    def insert_events(self, events: Sequence[Event]) -> None:
        for e in events:
            self._exec(
                "INSERT INTO events (run_id, seq, type, correlation_id, data) "
                "VALUES (%s, %s, %s, %s, %s)",
                (e.run_id, e.seq, e.type, e.correlation_id, e.raw),
            )


def poker(store: Store) -> Poker:
    if isinstance(store, MemoryStore):
        return MemoryPoker(store)
    if isinstance(store, SQLiteStore):
        return SQLitePoker(store)
    if type(store).__name__ == "PostgresStore":
        return PostgresPoker(store)
    raise TypeError(f"no poker for {type(store).__name__}")


def open_backend(kind: str, path: Path, clock: FakeClock | None = None) -> Store:
    if kind == "memory":
        return MemoryStore(clock=clock)
    return SQLiteStore(path, clock=clock)
