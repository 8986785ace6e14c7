"""Invariant 3: corruption is always detected, never silently used.

Byte-level damage to stored events and snapshots, in memory and in SQLite (through a
second sqlite3 connection, as a disk or a stray tool would do it), and to the SQLite file
itself. After any damage, `verify_run` reports a problem, and `load_run` either stops with
CorruptionError naming the run, the first bad seq and the ways out (the built-in stores
commit atomically, so committed damage is never cut), or, when the damage is covered by a
good snapshot, yields exactly the state of the undamaged run. Only a store that declares
torn writes possible has a damaged tail cut back, with the cut journaled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tether.errors import CorruptionError, StoreError, TetherError
from tether.events import Event, EventDecodeError, EventDraft, canonical_json, decode_event
from tether.journal import (
    MemoryStore,
    RunJournal,
    SQLiteStore,
    Store,
    fork_run,
    load_run,
    read_events,
    seal_snapshot,
    sqlite_functions,
    verify_run,
)
from tether.journal._integrity import open_snapshot
from tether.journal._journal import torn_writes_possible
from tether.state import RunState, fold

from .helpers import (
    RUN_ID,
    created,
    cycle,
    import_events,
    note,
    poker,
    seal_chain,
    write_run,
)

pytestmark = pytest.mark.chaos

# One base journal: 14 events; snapshots at 5 and 10 in the "snapshots" variant.
DRAFTS = [
    created(),
    *cycle(1, tools=1),  # 2..6
    EventDraft(type="approval.requested", payload={"request_id": "r1"}),  # 7
    EventDraft(type="approval.resolved", payload={"request_id": "r1", "ok": True}),  # 8
    EventDraft(type="context.compacted", payload={"removed": [2, 3], "summary": "s"}),  # 9
    *cycle(2, tools=1)[:4],  # 10..13
    EventDraft(type="run.completed", payload={"answer": "done"}),  # 14
]
BASE: list[Event] = seal_chain(DRAFTS)
BASE_V1: list[Event] = seal_chain(DRAFTS, version=1)
"""The same journal in the v1 envelope, as stores written before v2 hold it."""
SNAPSHOT_SEQS = (5, 10)
FULL: RunState = fold(BASE)
assert FULL.last_seq == 14


def snapshot_bytes(seq: int) -> bytes:
    return seal_snapshot(fold(BASE[:seq]))


async def populate(store: Store, *, with_snapshots: bool) -> None:
    lease = await import_events(store, BASE)
    if with_snapshots:
        for seq in SNAPSHOT_SEQS:
            await store.put_snapshot(lease, RUN_ID, seq, snapshot_bytes(seq), keep=5)


@pytest.fixture(scope="module")
def sqlite_templates() -> Iterator[dict[bool, Path]]:
    """One closed, checkpointed SQLite file per variant; each example works on a copy."""
    folder = Path(tempfile.mkdtemp(prefix="tether-integrity-"))
    paths: dict[bool, Path] = {}

    async def build(path: Path, with_snapshots: bool) -> None:
        store = SQLiteStore(path)
        await populate(store, with_snapshots=with_snapshots)
        await store.close()

    for variant in (False, True):
        paths[variant] = folder / f"template-{variant}.db"
        asyncio.run(build(paths[variant], variant))
    yield paths
    shutil.rmtree(folder, ignore_errors=True)


# -- damage ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Damage:
    target: str  # "event" | "snapshot"
    seq: int
    how: str
    raw: bytes | None = None  # new bytes (None: the row is deleted)
    column: str | None = None
    value: object = None

    def apply(self, store: Store) -> None:
        p = poker(store)
        if self.column is not None:
            p.event_column(RUN_ID, self.seq, self.column, self.value)
        elif self.target == "event":
            p.event(RUN_ID, self.seq, self.raw)
        else:
            p.snapshot(RUN_ID, self.seq, self.raw)


@st.composite
def byte_damage(draw: st.DrawFn, original: bytes) -> tuple[str, bytes]:
    how = draw(st.sampled_from(["flip", "delete", "truncate", "insert"]))
    pos = draw(st.integers(0, len(original) - 1))
    if how == "flip":
        value = draw(st.integers(0, 255).filter(lambda v: v != original[pos]))
        return f"flip {pos} to {value}", original[:pos] + bytes([value]) + original[pos + 1 :]
    if how == "delete":
        return f"delete byte {pos}", original[:pos] + original[pos + 1 :]
    if how == "insert":
        value = draw(st.integers(0, 255))
        return f"insert {value} at {pos}", original[:pos] + bytes([value]) + original[pos:]
    return f"truncate to {pos}", original[:pos]


@st.composite
def damages(draw: st.DrawFn, *, backend: str, with_snapshots: bool) -> Damage:
    targets = ["event", "event", "event_row", "column"]
    if with_snapshots:
        targets += ["snapshot", "snapshot"]
    target = draw(st.sampled_from(targets))
    if target == "snapshot":
        seq = draw(st.sampled_from(SNAPSHOT_SEQS))
        how, raw = draw(byte_damage(snapshot_bytes(seq)))
        return Damage(target="snapshot", seq=seq, how=how, raw=raw)
    # The last event is drawn often: damage there is a torn tail, the one case that repairs.
    seq = draw(st.one_of(st.just(len(BASE)), st.integers(1, len(BASE))))
    if target == "event":
        how, raw = draw(byte_damage(BASE[seq - 1].raw))
        return Damage(target="event", seq=seq, how=how, raw=raw)
    if target == "event_row":
        return Damage(target="event", seq=seq, how="delete the row", raw=None)
    event = BASE[seq - 1]
    choices: list[tuple[str, object]] = [
        (
            "type",
            draw(st.sampled_from(["note", "run.completed", "x"]).filter(lambda t: t != event.type)),
        ),
        ("correlation_id", "cycle-9" if event.correlation_id else "cycle-1"),
        ("seq", draw(st.integers(len(BASE) + 1, 10_000))),
        ("seq", draw(st.integers(-5, 0))),
    ]
    if backend == "sqlite":
        # Schema 6 computes type and correlation from the bytes: the row's own columns
        # are the run key, the seq and the bytes.
        choices = [c for c in choices if c[0] == "seq"] + [
            ("seq", "seven"),
            ("run", 999),
            ("run", "other"),
            ("data", 5),
            ("data", event.raw[1:]),  # the tag byte gone
            ("data", 1.5),
        ]
    column, value = draw(st.sampled_from(choices))
    if column == "data" and backend == "sqlite":
        return Damage(target="event", seq=seq, how=f"data := {value!r}", column="data", value=value)
    return Damage(target="event", seq=seq, how=f"{column} := {value!r}", column=column, value=value)


# -- the checks --------------------------------------------------------------------------


async def check_damage(store: Store, damage: Damage) -> None:
    """What every damaged store must satisfy; runs the repair paths it offers."""
    report = await verify_run(store, RUN_ID)
    assert not report.ok, f"verify_run missed: {damage}"

    try:
        loaded = await load_run(store, RUN_ID)
    except CorruptionError as exc:
        event("load stopped: CorruptionError")
        assert damage.target == "event", f"a damaged snapshot stopped the load: {exc}"
        assert exc.run_id == RUN_ID and RUN_ID in str(exc)
        assert exc.seq is not None and exc.seq <= damage.seq
        good = exc.seq - 1
        if good >= 1:
            assert f"tether fork {RUN_ID} --at {good}" in str(exc)
            new_id = await fork_run(store, RUN_ID, at_seq=good)
            fork_report = await verify_run(store, new_id)
            assert fork_report.ok, fork_report.problems
            forked = await read_events(store, new_id)
            assert [(e.type, e.payload) for e in forked[:good]] == [
                (e.type, e.payload) for e in BASE[:good]
            ]
        return

    if damage.target == "snapshot":
        event("snapshot damage: fell back")
        assert loaded.torn_tail is None
        assert loaded.snapshot_seq != damage.seq
        assert loaded.state == FULL
        return
    if loaded.torn_tail is None:
        event("event damage covered by a newer snapshot")
        # Only a good snapshot past the damage can make it invisible to the load.
        assert loaded.snapshot_seq is not None and loaded.snapshot_seq >= damage.seq, damage
        assert loaded.state == FULL
        return
    event("torn tail: cut and journaled")
    assert torn_writes_possible(store), f"a store with atomic commits cut damage: {damage}"
    good = loaded.state.last_seq
    assert good < damage.seq
    assert loaded.state == fold(BASE[:good])

    # A torn tail is cut by the next writer, and the cut is journaled.
    lease = await store.acquire_lease(RUN_ID, owner="importer", ttl_s=60)
    journal, _ = await RunJournal.open(store, lease)
    assert journal.state.last_seq == good + 1
    repaired = (await read_events(store, RUN_ID, after_seq=good))[-1]
    assert repaired.type == "journal.repaired"
    assert repaired.payload["cut_after_seq"] == good
    after = await verify_run(store, RUN_ID)
    assert after.ok, (damage, after.problems)
    assert (await load_run(store, RUN_ID)).state == journal.state


def run_case(
    backend: str, with_snapshots: bool, damage: Damage, templates: dict[bool, Path]
) -> None:
    async def go(store: Store) -> None:
        try:
            if isinstance(store, MemoryStore):
                await populate(store, with_snapshots=with_snapshots)
            damage.apply(store)
            await check_damage(store, damage)
        finally:
            await store.close()

    if backend == "memory":
        asyncio.run(go(MemoryStore()))
        return
    with tempfile.TemporaryDirectory(prefix="tether-dmg-") as folder:
        path = Path(folder) / "t.db"
        shutil.copyfile(templates[with_snapshots], path)
        asyncio.run(go(SQLiteStore(path)))


PROPERTY = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("with_snapshots", [False, True], ids=["no-snapshots", "snapshots"])
@pytest.mark.parametrize("backend", ["memory", "sqlite"])
@PROPERTY
@given(data=st.data())
def test_damage_to_stored_events_or_snapshots_is_never_used(
    backend: str, with_snapshots: bool, data: st.DataObject, sqlite_templates: dict[bool, Path]
) -> None:
    damage = data.draw(damages(backend=backend, with_snapshots=with_snapshots), label="damage")
    run_case(backend, with_snapshots, damage, sqlite_templates)


# -- exhaustive single-byte changes at the decoder ---------------------------------------

_INTERESTING = sorted(set(b'\x00 "{}[],:-.0159eEaz\\nN') | {0x7F, 0x80, 0xC3, 0xFF})


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("seq", [1, 4, 14])
def test_every_single_byte_change_of_an_event_fails_to_decode(seq: int, version: int) -> None:
    raw = (BASE if version == 2 else BASE_V1)[seq - 1].raw

    def decode(data: bytes) -> object:
        return decode_event(data, run_id=RUN_ID, seq=seq)

    assert decode(raw)
    for pos in range(len(raw)):
        for value in [*_INTERESTING, raw[pos] ^ 0x01, raw[pos] ^ 0x20]:
            if value == raw[pos]:
                continue
            damaged = raw[:pos] + bytes([value]) + raw[pos + 1 :]
            with pytest.raises(EventDecodeError):
                decode(damaged)
        with pytest.raises(EventDecodeError):
            decode(raw[:pos] + raw[pos + 1 :])
        with pytest.raises(EventDecodeError):
            decode(raw[:pos])


@pytest.mark.parametrize("seq", [1, 4, 14])
def test_a_v2_event_verifies_only_at_its_own_run_and_seq(seq: int) -> None:
    raw = BASE[seq - 1].raw
    assert decode_event(raw, run_id=RUN_ID, seq=seq) == BASE[seq - 1]
    for run_id, at in [(RUN_ID + "x", seq), (RUN_ID, seq + 1), ("other", seq)]:
        with pytest.raises(EventDecodeError, match="checksum"):
            decode_event(raw, run_id=run_id, seq=at)
    with pytest.raises(EventDecodeError, match="run id and seq"):
        decode_event(raw)


def test_every_single_byte_change_of_a_snapshot_fails_to_open() -> None:
    raw = snapshot_bytes(10)
    for pos in range(len(raw)):
        for value in (raw[pos] ^ 0x01, ord("0"), ord('"'), 0xFF):
            if value == raw[pos]:
                continue
            with pytest.raises(EventDecodeError):
                open_snapshot(RUN_ID, 10, raw[:pos] + bytes([value]) + raw[pos + 1 :])
        with pytest.raises(EventDecodeError):
            open_snapshot(RUN_ID, 10, raw[:pos])


def _resealed(raw: bytes, edit: dict[str, object]) -> bytes:
    """Bytes with a valid checksum over an edited body: damage a checksum cannot see."""
    body = json.loads(raw)
    del body["checksum"]
    body.update(edit)
    data = canonical_json(body)
    return data[:-1] + b',"checksum":"' + hashlib.sha256(data).hexdigest().encode() + b'"}'


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda r: r.replace(b'"cost_usd":0.0013', b'"cost_usd":NaN'), id="nan"),
        pytest.param(lambda r: r.replace(b'"cost_usd":0.0013', b'"cost_usd":1e999'), id="inf"),
        pytest.param(lambda r: r.replace(b'"seq":4', b'"seq":' + b"9" * 5000), id="huge-int"),
        pytest.param(lambda r: b"\xef\xbb\xbf" + r, id="bom"),
        pytest.param(lambda r: r.decode().encode("utf-16"), id="utf-16"),
        pytest.param(lambda r: b"[" * 100_000 + b"]" * 100_000, id="deep-nesting"),
        pytest.param(lambda r: r.replace(b'"v":1', b'"v":2'), id="version"),
        pytest.param(lambda r: _resealed(r, {"v": 2}), id="resealed-version"),
        pytest.param(lambda r: _resealed(r, {"seq": "4"}), id="resealed-seq-type"),
        pytest.param(lambda r: _resealed(r, {"visibility": "public"}), id="resealed-visibility"),
        pytest.param(lambda r: _resealed(r, {"usage": {"input_tokens": 1}}), id="resealed-usage"),
        pytest.param(lambda r: _resealed(r, {"payload": []}), id="resealed-payload"),
        pytest.param(lambda r: _resealed(r, {"extra": 1}), id="resealed-extra-key"),
    ],
)
async def test_hostile_event_bytes_are_reported_not_raised(store: Store, bad: object) -> None:
    await import_events(store, BASE)
    raw = BASE_V1[3].raw  # v1 bytes are JSON throughout: the hostile edits apply to them
    damaged = bad(raw)  # type: ignore[operator]
    assert damaged != raw
    with pytest.raises(EventDecodeError):
        decode_event(damaged)
    poker(store).event(RUN_ID, 4, damaged)
    report = await verify_run(store, RUN_ID)
    assert [(p.kind, p.seq) for p in report.problems][:1] == [("event", 4)]
    with pytest.raises(CorruptionError, match="at seq 4"):
        await load_run(store, RUN_ID)


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda r: r.replace(b'"cost_usd":0.0', b'"cost_usd":NaN', 1), id="nan"),
        pytest.param(lambda r: r.replace(b'"last_seq":10', b'"last_seq":1e999'), id="inf"),
        pytest.param(lambda r: b"[" * 100_000 + b"]" * 100_000, id="deep-nesting"),
        pytest.param(lambda r: _resealed(r, {"state": {"run_id": RUN_ID}}), id="hollow-state"),
        pytest.param(lambda r: _resealed(r, {"state": []}), id="state-not-object"),
        pytest.param(lambda r: _resealed(r, {"seq": 5}), id="wrong-position"),
        pytest.param(lambda r: _resealed(r, {"head_hash": "0" * 64}), id="wrong-head-hash"),
    ],
)
async def test_hostile_snapshot_bytes_fall_back_to_replay(store: Store, bad: object) -> None:
    await populate(store, with_snapshots=True)
    raw = snapshot_bytes(10)
    damaged = bad(raw)  # type: ignore[operator]
    assert damaged != raw
    poker(store).snapshot(RUN_ID, 10, damaged)
    report = await verify_run(store, RUN_ID)
    assert [(p.kind, p.seq) for p in report.problems] == [("snapshot", 10)]
    loaded = await load_run(store, RUN_ID)
    assert loaded.snapshot_seq == 5 and loaded.state == FULL


# -- tail, middle, repair ----------------------------------------------------------------


def tearable(store: Store) -> Store:
    """The store as one that can tear a write: only such stores cut a damaged tail."""
    store.torn_writes = True  # type: ignore[attr-defined]
    return store


async def test_committed_damage_in_the_tail_is_refused_never_cut(store: Store) -> None:
    """SQLite and PostgreSQL commit atomically: a last event that does not verify is
    damage, not a torn write. The run is refused with its id, the bad seq and both ways
    out, and nothing is cut (a cut would forget an effect that happened)."""
    journal, lease = await write_run(store, [note(i) for i in range(1, 20)], snapshot_every=6)
    head = journal.state.last_seq
    original = await read_events(store, RUN_ID)
    poker(store).event(RUN_ID, head, original[-1].raw[:-7])
    rows_before = [(r.seq, r.raw) for r in await store.read_rows(RUN_ID)]
    for attempt in (load_run(store, RUN_ID), RunJournal.open(store, lease)):
        with pytest.raises(CorruptionError) as caught:
            await attempt
        text = str(caught.value)
        assert RUN_ID in text and f"seq {head}" in text
        assert f"tether fork {RUN_ID} --at {head - 1}" in text and "backup" in text
    assert [(r.seq, r.raw) for r in await store.read_rows(RUN_ID)] == rows_before
    assert (await store.get_run(RUN_ID)).head_seq == head


async def test_events_missing_from_the_end_are_refused_never_cut(store: Store) -> None:
    lease = await import_events(store, BASE)
    poker(store).event(RUN_ID, 14, None)
    with pytest.raises(CorruptionError, match="missing"):
        await RunJournal.open(store, lease)
    assert (await store.get_run(RUN_ID)).head_seq == 14


async def test_a_tearable_stores_torn_tail_is_cut_back_and_a_repair_event_is_appended(
    store: Store,
) -> None:
    tearable(store)
    journal, lease = await write_run(store, [note(i) for i in range(1, 20)], snapshot_every=6)
    head = journal.state.last_seq
    original = await read_events(store, RUN_ID)
    poker(store).event(RUN_ID, head, original[-1].raw[:-7])  # a torn last write

    loaded = await load_run(store, RUN_ID)
    assert loaded.torn_tail is not None and loaded.torn_tail.seq == head
    assert loaded.state == fold(original[:-1])
    report = await verify_run(store, RUN_ID)
    assert [p.kind for p in report.problems] == ["event"]
    assert "tail" in report.problems[0].what

    lease = await store.acquire_lease(RUN_ID, owner=lease.owner, ttl_s=60)
    reopened, seen = await RunJournal.open(store, lease, snapshot_every=6)
    assert seen.torn_tail is not None
    events = await read_events(store, RUN_ID)
    assert [e.raw for e in events[:-1]] == [e.raw for e in original[:-1]]
    assert events[-1].seq == head and events[-1].type == "journal.repaired"
    assert events[-1].payload["cut_after_seq"] == head - 1
    assert events[-1].payload["stored_head_seq"] == head
    assert events[-1].payload["fault"]["seq"] == head
    assert (await verify_run(store, RUN_ID)).ok
    await reopened.append(note(100))
    assert (await verify_run(store, RUN_ID)).ok
    assert (await load_run(store, RUN_ID)).state == reopened.state


async def test_a_damaged_tail_of_several_events_is_cut_back_to_the_last_good_one(
    store: Store,
) -> None:
    tearable(store)
    lease = await import_events(store, BASE)
    p = poker(store)
    p.event(RUN_ID, 12, b"{}")
    p.event(RUN_ID, 13, b"")
    p.event(RUN_ID, 14, BASE[13].raw[:10])
    loaded = await load_run(store, RUN_ID)
    assert loaded.torn_tail is not None and loaded.state == fold(BASE[:11])
    journal, _ = await RunJournal.open(store, lease)
    assert journal.state.last_seq == 12
    assert [e.type for e in await read_events(store, RUN_ID, after_seq=11)] == ["journal.repaired"]
    assert (await verify_run(store, RUN_ID)).ok


async def test_a_repair_that_fails_to_journal_its_report_cuts_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cut and its `journal.repaired` report are one transaction: if writing the
    report fails (here: injected into the very statements that write it), the tail is
    still there, the next open finds it again, and then repairs it with its report."""
    tearable(store)
    lease = await import_events(store, BASE)
    poker(store).event(RUN_ID, 14, BASE[13].raw[:-5])
    rows_before = [(r.seq, r.raw) for r in await store.read_rows(RUN_ID)]

    def broken(*args: object, **kwargs: object) -> object:
        raise StoreError("injected: the report's write failed")

    backend = type(store).__name__
    if backend == "SQLiteStore":
        monkeypatch.setattr(store, "_append_in", broken)
    elif backend == "PostgresStore":
        from tether.journal import _postgres

        monkeypatch.setattr(_postgres, "_append_statement", lambda *a, **k: ("SELECT 1/0", []))
    else:
        from tether.journal import _memory

        monkeypatch.setattr(_memory, "row_of", broken)
    with pytest.raises(StoreError):
        await RunJournal.open(store, lease)
    assert [(r.seq, r.raw) for r in await store.read_rows(RUN_ID)] == rows_before
    assert (await store.get_run(RUN_ID)).head_seq == 14
    monkeypatch.undo()
    _, seen = await RunJournal.open(store, lease)
    assert seen.torn_tail is not None
    events = await read_events(store, RUN_ID)
    assert events[-1].type == "journal.repaired" and events[-1].seq == 14
    assert (await verify_run(store, RUN_ID)).ok


async def test_a_missing_last_event_is_a_torn_tail_on_a_tearable_store(store: Store) -> None:
    tearable(store)
    lease = await import_events(store, BASE)
    poker(store).event(RUN_ID, 14, None)
    loaded = await load_run(store, RUN_ID)
    assert loaded.torn_tail is not None and loaded.torn_tail.kind == "missing"
    journal, _ = await RunJournal.open(store, lease)
    assert (await verify_run(store, RUN_ID)).ok
    assert journal.state.status != "completed"  # the cut event is really gone


async def test_mid_journal_corruption_stops_with_an_error_naming_run_seq_and_fork(
    store: Store,
) -> None:
    lease = await import_events(store, BASE)
    poker(store).event(RUN_ID, 6, BASE[5].raw.replace(b"result", b"RESULT"))
    with pytest.raises(CorruptionError) as info:
        await load_run(store, RUN_ID)
    exc = info.value
    assert (exc.run_id, exc.seq) == (RUN_ID, 6)
    assert RUN_ID in str(exc) and "seq 6" in str(exc)
    assert f"tether fork {RUN_ID} --at 5" in str(exc)
    # A writer does not cut mid-journal damage: it stops, and nothing is deleted.
    with pytest.raises(CorruptionError):
        await RunJournal.open(store, lease)
    assert len(await store.read_rows(RUN_ID)) == len(BASE)
    report = await verify_run(store, RUN_ID)
    assert report.problems[0].seq == 6 and "mid-journal; last good seq 5" in report.problems[0].what


async def test_fork_from_the_last_good_point_produces_a_verifying_run(store: Store) -> None:
    await import_events(store, BASE)
    poker(store).event(RUN_ID, 9, None)
    with pytest.raises(CorruptionError) as info:
        await load_run(store, RUN_ID)
    good = info.value.seq - 1  # type: ignore[operator]
    assert good == 8
    with pytest.raises(Exception, match="last good point is 8"):
        await fork_run(store, RUN_ID, at_seq=10)
    new_id = await fork_run(store, RUN_ID, at_seq=good)
    assert (await verify_run(store, new_id)).ok
    state = (await load_run(store, new_id)).state
    expected = fold(BASE[:good])
    assert (state.cycle, state.tool_calls, state.context, state.pending_approvals) == (
        expected.cycle,
        expected.tool_calls,
        expected.context,
        expected.pending_approvals,
    )
    assert state.parent_event == f"{RUN_ID}:{good}"


async def test_a_validly_sealed_event_from_another_history_breaks_the_chain(store: Store) -> None:
    await import_events(store, BASE)
    # Seqs 11 and 12 of a forked history: same types and cycle, another first step.
    changed = EventDraft(type=BASE[10].type, payload={"other": True}, correlation_id="cycle-2")
    alternative = seal_chain([changed, e_draft(BASE[11])], after=BASE[9])
    assert alternative[1].type == BASE[11].type and alternative[1].raw != BASE[11].raw
    poker(store).event(RUN_ID, 12, alternative[1].raw)
    report = await verify_run(store, RUN_ID)
    assert [(p.kind, p.seq) for p in report.problems] == [("chain", 12)]
    with pytest.raises(CorruptionError, match="hash chain broken"):
        await load_run(store, RUN_ID)


async def test_an_event_copied_from_another_run_is_detected(store: Store) -> None:
    await import_events(store, BASE)
    other = seal_chain([created(), *cycle(1, tools=1)], run_id="run_other")
    poker(store).event(RUN_ID, 4, other[3].raw)
    report = await verify_run(store, RUN_ID)
    assert report.problems and report.problems[0].seq == 4
    with pytest.raises(CorruptionError):
        await load_run(store, RUN_ID)


# -- snapshots ---------------------------------------------------------------------------


async def test_a_damaged_newest_snapshot_falls_back_to_an_older_one(store: Store) -> None:
    await populate(store, with_snapshots=True)
    poker(store).snapshot(RUN_ID, 10, snapshot_bytes(10).replace(b'"cycle":2', b'"cycle":3'))
    loaded = await load_run(store, RUN_ID)
    assert (loaded.snapshot_seq, loaded.replayed, loaded.state) == (5, 9, FULL)
    assert any("snapshot at seq 10 is damaged" in n for n in loaded.notes)
    assert [(p.kind, p.seq) for p in (await verify_run(store, RUN_ID)).problems] == [
        ("snapshot", 10)
    ]


async def test_with_every_snapshot_damaged_the_load_replays_the_whole_journal(
    store: Store,
) -> None:
    await populate(store, with_snapshots=True)
    for seq in SNAPSHOT_SEQS:
        poker(store).snapshot(RUN_ID, seq, snapshot_bytes(seq)[:-1])
    loaded = await load_run(store, RUN_ID)
    assert (loaded.snapshot_seq, loaded.replayed, loaded.state) == (None, 14, FULL)


async def test_a_snapshot_that_does_not_anchor_to_the_journal_is_not_used(store: Store) -> None:
    await populate(store, with_snapshots=True)
    # A well-sealed snapshot of another history at seq 10: its head_hash is not event 10's.
    other = seal_chain([*(e_draft(e) for e in BASE[:9]), note(42)])
    poker(store).snapshot(RUN_ID, 10, seal_snapshot(fold(other)))
    loaded = await load_run(store, RUN_ID)
    assert (loaded.snapshot_seq, loaded.state) == (5, FULL)
    assert any("does not match the journal" in n for n in loaded.notes)
    assert [(p.kind, p.seq) for p in (await verify_run(store, RUN_ID)).problems] == [
        ("snapshot", 10)
    ]


async def test_verify_run_catches_a_sealed_snapshot_whose_state_differs_from_the_fold(
    store: Store,
) -> None:
    await populate(store, with_snapshots=True)
    wrong = fold(BASE[:10])
    from dataclasses import replace

    poker(store).snapshot(RUN_ID, 10, seal_snapshot(replace(wrong, tool_calls=99)))
    report = await verify_run(store, RUN_ID)
    assert [(p.kind, p.seq, p.what) for p in report.problems] == [
        ("snapshot", 10, "snapshot state differs")
    ]


# -- the run index -----------------------------------------------------------------------


async def test_rows_past_the_recorded_head_are_reported(store: Store) -> None:
    await import_events(store, BASE[:10])
    if isinstance(store, MemoryStore):
        from tether.journal._base import row_of

        store._runs[RUN_ID].rows.extend(row_of(e) for e in BASE[10:12])
    elif not isinstance(store, SQLiteStore):
        from .helpers import PostgresPoker

        PostgresPoker(store).insert_events(BASE[10:12])
    else:
        db = sqlite3.connect(store.path, isolation_level=None)
        sqlite_functions(db)
        db.executemany(
            "INSERT INTO events (run_id, seq, type, correlation_id, data) VALUES (?,?,?,?,?)",
            [(e.run_id, e.seq, e.type, e.correlation_id, e.raw) for e in BASE[10:12]],
        )
        db.close()
    report = await verify_run(store, RUN_ID)
    assert [(p.kind, p.what) for p in report.problems] == [
        ("head", "events past the run index head")
    ]


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE runs SET head_hash='abc'",
        "UPDATE runs SET head_seq=9",
        "UPDATE runs SET head_seq=20",
        "UPDATE runs SET steps=77",
    ],
)
async def test_a_damaged_run_index_row_is_reported(tmp_path: Path, sql: str) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    await import_events(store, BASE)
    db = sqlite3.connect(store.path, isolation_level=None)
    sqlite_functions(db)
    db.execute(sql)
    db.close()
    report = await verify_run(store, RUN_ID)
    assert not report.ok
    try:
        loaded = await load_run(store, RUN_ID)
    except CorruptionError as exc:
        assert RUN_ID in str(exc)
        # The way out it names exists and works.
        good = int(re.search(r"--at (\d+)", str(exc)).group(1))  # type: ignore[union-attr]
        assert f"tether fork {RUN_ID} --at {good}" in str(exc)
        new_id = await fork_run(store, RUN_ID, at_seq=good)
        assert (await verify_run(store, new_id)).ok
    else:
        # A summary is not state: only doctor compares it with the fold.
        assert loaded.torn_tail is None and "steps" in sql
        assert loaded.state in (FULL, fold(BASE[:9]))
    await store.close()


# -- the SQLite file itself --------------------------------------------------------------


async def _build_file(path: Path) -> dict[str, list[bytes]]:
    store = SQLiteStore(path)
    runs: dict[str, list[bytes]] = {}
    for r in range(3):
        run_id = f"run_file{r}"
        await write_run(
            store,
            [d for n in range(1, 9) for d in cycle(n)],
            run_id=run_id,
            snapshot_every=20,
        )
        runs[run_id] = [bytes(x.raw) for x in await store.read_rows(run_id)]
    await store.close()  # checkpoints the WAL into the main file
    return runs


async def _observe(path: Path, runs: dict[str, list[bytes]]) -> str:
    """Use a damaged file; return how the damage showed. Raises on anything unclean."""
    try:
        store = SQLiteStore(path)
    except StoreError as exc:
        assert str(path) in str(exc)
        return "refused at open"
    except TetherError as exc:  # e.g. a damaged schema version reads as a newer store
        return f"refused at open: {type(exc).__name__}"
    outcome = "intact"
    try:
        for run_id, raws in runs.items():
            try:
                report = await verify_run(store, run_id)
                if not report.ok:
                    outcome = "reported"
                    continue
                loaded = await load_run(store, run_id)
                rows = await store.read_rows(run_id)
                await store.list_runs()
            except StoreError:  # includes CorruptionError
                outcome = "raised cleanly"
                continue
            except TetherError as exc:  # e.g. RunNotFound when the index row is gone
                outcome = f"raised {type(exc).__name__}"
                continue
            # No error and a clean report: then the data must be exactly what was written.
            assert [bytes(r.raw) for r in rows] == raws, "damaged rows passed as good"
            assert loaded.state == fold(
                decode_event(raw, run_id=run_id, seq=n) for n, raw in enumerate(raws, start=1)
            )
    finally:
        with contextlib.suppress(StoreError):
            await store.close()
    return outcome


def test_damage_inside_the_sqlite_file_is_a_clean_error_or_harmless(tmp_path: Path) -> None:
    template = tmp_path / "template.db"
    runs = asyncio.run(_build_file(template))
    size = template.stat().st_size
    data = template.read_bytes()
    rng = random.Random(20261124)
    outcomes: dict[str, int] = {}
    cases: list[tuple[int, bytes]] = []
    # Overwrites at random places in the middle of the file ...
    for _ in range(40):
        start = rng.randrange(size // 8, size - 64)
        cases.append((start, bytes(rng.randrange(256) for _ in range(rng.choice([1, 8, 64])))))
    # ... at every page header (b-tree structure) ...
    for page in range(1, size // 4096):
        cases.append((page * 4096, bytes(rng.randrange(256) for _ in range(12))))
    # ... and inside stored event bytes, which SQLite cannot check and we must.
    for raws in runs.values():
        for raw in raws[5::17]:
            at = data.find(raw)
            assert at > 0
            cases.append((at + len(raw) // 2, b"#"))
    for i, (start, junk) in enumerate(cases):
        path = tmp_path / f"damaged-{i}.db"
        damaged = data[:start] + junk + data[start + len(junk) :]
        if damaged == data:
            continue
        path.write_bytes(damaged)
        try:
            outcome = asyncio.run(_observe(path, runs))
        except sqlite3.Error as exc:  # pragma: no cover - the failure this test exists for
            pytest.fail(f"raw sqlite3 error for damage at {start}: {exc!r}")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if junk == b"#":
            assert outcome != "intact", f"event bytes changed at {start} and nobody noticed"
    print(outcomes)
    assert outcomes.get("reported", 0) + outcomes.get("raised cleanly", 0) > 0, outcomes


def e_draft(event: Event) -> EventDraft:
    return EventDraft(
        type=event.type,
        payload=event.payload,
        correlation_id=event.correlation_id,
        causation_id=event.causation_id,
        visibility=event.visibility,
        actor=event.actor,
        usage=event.usage,
    )
