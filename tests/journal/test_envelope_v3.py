"""The v3 envelope (`tether._envelope_v3`): a deflated body, a CRC, an 8-byte link.

What must hold: every stored bit is covered (a flip anywhere in a stored row is refused,
naming the run and seq, on every backend); the checksum depends on the uncompressed body
only (so another zlib's bytes verify and the portable form round-trips); the short link
still chains events; and v1/v2 journals keep loading, with runs that cross from v2 to v3
verifying across the boundary, in SQLite stores migrated from schema 7 too.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import sqlite3
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tether._envelope import v2_body
from tether._envelope_v3 import (
    DICTIONARY,
    LINK_BYTES,
    V3_DEFLATED,
    V3_HEAD,
    V3_RAW,
    body_text,
    pack_v3,
    unpack_v3,
    v3_digest,
)
from tether.errors import CorruptionError
from tether.events import (
    GENESIS_HASH,
    Event,
    EventDecodeError,
    EventDraft,
    canonical_json,
    decode_event,
)
from tether.journal import (
    RunJournal,
    SQLiteStore,
    Store,
    load_run,
    read_events,
    sqlite_functions,
    summary_of,
    verify_run,
)
from tether.journal._audit_rows import DISAGREEING
from tether.journal._base import row_of
from tether.journal._index import audit_columns
from tether.journal._integrity import walk
from tether.journal._schema import SQLITE_EVENTS_VIEW, SQLITE_MIGRATIONS
from tether.journal._sections import RUN_SECTION_INDEX, SECTION_INDEX_NAME
from tether.state import fold

from .helpers import RUN_ID, created, cycles, import_events, poker, seal_chain

OUTPUT = " ".join(f"line {i}: the page lists item {i * 7} at {i}.{i % 3} units" for i in range(40))
"""A tool output that deflates (a row of form 0x03)."""


def drafts() -> list[EventDraft]:
    return [
        created(),
        *cycles(2),
        EventDraft(
            type="tool.completed",
            payload={"call_id": "c9", "name": "fetch", "output": OUTPUT},
            correlation_id="cycle-9",
            actor="tool:fetch",
        ),
        EventDraft(type="note", payload={"i": 1}),
    ]


EVENTS = seal_chain(drafts(), version=3)
DEFLATED = next(e for e in EVENTS if e.payload.get("output") == OUTPUT)
SMALL = EVENTS[-1]
RAW_ROW = bytes((V3_RAW,)) + SMALL.raw[1:V3_HEAD] + unpack_v3(SMALL.raw)[2]
"""`SMALL` in the form stored when deflating does not pay (the dictionary makes every
event body seen in practice smaller, so this form is built here)."""


def test_the_dictionary_is_the_one_the_format_names() -> None:
    # Part of the format of tag 0x03: changing it would make every stored row undecodable.
    assert hashlib.sha256(DICTIONARY).hexdigest() == (
        "cfa3c9c9f9f6cf89709e3c4ae300e4682dd869d38d6030e516e95763530eed77"
    )


def test_new_events_are_v3_in_both_forms_and_decode_to_the_same_event() -> None:
    assert {e.schema_version for e in EVENTS} == {3}
    assert DEFLATED.raw[0] == V3_DEFLATED
    assert decode_event(RAW_ROW, run_id=RUN_ID, seq=SMALL.seq) == SMALL
    for event in EVENTS:
        link, digest, body = unpack_v3(event.raw)
        assert len(link) == LINK_BYTES and event.prev_hash == link.hex()
        assert digest == v3_digest(event.run_id, event.seq, link, body)
        assert event.checksum == digest.hex()
        again = canonical_json(
            v2_body(
                event.run_id, event.type, event.ts, event.correlation_id, event.causation_id,
                event.visibility, event.actor, event.payload, event.usage,
            )
        )  # fmt: skip
        assert body == again  # the checksum is over the uncompressed canonical body
        assert decode_event(event.raw, run_id=event.run_id, seq=event.seq) == event
        assert decode_event(event.portable()) == event
        assert body_text(event.raw) == body.decode()
    # Deflating pays: the big body is stored in well under half its size.
    assert len(DEFLATED.raw) < len(unpack_v3(DEFLATED.raw)[2]) / 2
    assert unpack_v3(RAW_ROW)[2] == RAW_ROW[V3_HEAD:] == unpack_v3(SMALL.raw)[2]


def test_a_body_deflating_does_not_shrink_is_stored_as_it_is() -> None:
    noise = random.Random(3).randbytes(300)
    stored = pack_v3(b"l" * LINK_BYTES, b"d" * 32, noise)
    assert stored == bytes((V3_RAW,)) + b"l" * LINK_BYTES + b"d" * 32 + noise
    assert unpack_v3(stored) == (b"l" * LINK_BYTES, b"d" * 32, noise)
    text = b'{"t":"note"}' * 20
    assert pack_v3(b"l" * LINK_BYTES, b"d" * 32, text)[0] == V3_DEFLATED


def test_the_link_chains_events_and_a_wrong_one_breaks_the_chain() -> None:
    assert EVENTS[0].prev_hash == GENESIS_HASH[: 2 * LINK_BYTES]
    for before, after in itertools.pairwise(EVENTS):
        assert after.follows(before.checksum)
        assert not after.follows(EVENTS[0].checksum if before is not EVENTS[0] else "1" * 64)
    other = seal_chain([EventDraft(type="note", payload={"i": 2})], after=EVENTS[2], version=3)[0]
    rows = [row_of(e) for e in [*EVENTS[:4], _moved(other, 5)]]
    result = walk(rows, start_seq=1, prev_hash=GENESIS_HASH)
    assert result.fault is not None and (result.fault.kind, result.fault.seq) == ("chain", 5)


def _moved(event: Event, seq: int) -> Event:
    """`event`'s draft sealed at `seq` after event 3 (well sealed, but not after `seq - 1`)."""
    draft = EventDraft(type=event.type, payload=event.payload)
    return draft.seal(run_id=RUN_ID, seq=seq, prev_hash=EVENTS[2].checksum, ts=event.ts)


def test_another_zlibs_bytes_for_the_same_body_still_verify() -> None:
    # What a zlib that deflates differently would write: other bytes, the same event.
    body = unpack_v3(DEFLATED.raw)[2]
    for level in (0, 9):
        d = zlib.compressobj(level, zlib.DEFLATED, -12, 9, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)
        packed = d.compress(body) + d.flush()
        raw = DEFLATED.raw[:V3_HEAD] + zlib.crc32(packed).to_bytes(4, "big") + packed
        assert raw != DEFLATED.raw
        again = decode_event(raw, run_id=RUN_ID, seq=DEFLATED.seq)
        assert again == DEFLATED and again.checksum == DEFLATED.checksum


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda p: p + b"\x00", id="bytes-after-the-stream"),
        pytest.param(lambda p: p[:-3], id="truncated-stream"),
        pytest.param(lambda p: zlib.compress(b"{}")[2:-4], id="another-dictionary"),
    ],
)
def test_a_stream_with_a_valid_crc_must_still_inflate_exactly(
    edit: Callable[[bytes], bytes],
) -> None:
    packed = edit(DEFLATED.raw[V3_HEAD + 4 :])
    raw = DEFLATED.raw[:V3_HEAD] + zlib.crc32(packed).to_bytes(4, "big") + packed
    with pytest.raises(EventDecodeError):
        decode_event(raw, run_id=RUN_ID, seq=DEFLATED.seq)


def _flips(raw: bytes) -> list[tuple[int, int]]:
    """Every byte once (a bit that moves with the position), and every bit of a few bytes:
    the tag, the link, the checksum, the CRC, the first and the last byte of the body."""
    every = [(i, i % 8) for i in range(len(raw))]
    spots = {0, 1, V3_HEAD - 1, V3_HEAD, V3_HEAD + 4, len(raw) - 1}
    return every + [(i, bit) for i in sorted(spots) for bit in range(8) if bit != i % 8]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_a_flip_of_any_stored_bit_of_a_v3_row_is_refused_naming_run_and_seq(
    backend: str, tmp_path: Path
) -> None:
    from tests.conftest import postgres_store

    async def check(store: Store) -> None:
        await import_events(store, EVENTS)
        poke = poker(store)
        for target, stored in ((DEFLATED, DEFLATED.raw), (SMALL, RAW_ROW)):
            poke.event(RUN_ID, target.seq, stored)
            assert (await verify_run(store, RUN_ID)).ok
            for at, bit in _flips(stored):
                raw = bytearray(stored)
                raw[at] ^= 1 << bit
                poke.event(RUN_ID, target.seq, bytes(raw))
                report = await verify_run(store, RUN_ID)
                where = (at, bit, target.seq)
                assert [(p.kind, p.seq) for p in report.problems] == [("event", target.seq)], where
                with pytest.raises(CorruptionError) as caught:
                    await load_run(store, RUN_ID)
                assert f"run {RUN_ID} at seq {target.seq}" in str(caught.value), where
            poke.event(RUN_ID, target.seq, target.raw)
        assert (await verify_run(store, RUN_ID)).ok

    if backend == "postgres":
        async with postgres_store() as pg:
            await check(pg)
    else:
        store = SQLiteStore(tmp_path / "t.db")
        try:
            await check(store)
        finally:
            await store.close()


async def test_a_run_crosses_from_v1_and_v2_to_v3_and_verifies_across(store: Store) -> None:
    old = seal_chain([created(), *cycles(1)], version=1)
    old += seal_chain(cycles(1, start=2), after=old[-1], version=2)
    lease = await import_events(store, old)
    journal, _ = await RunJournal.open(store, lease)
    new = await journal.append(*cycles(2, start=3))
    assert {e.schema_version for e in new} == {3} and new[0].follows(old[-1].checksum)
    assert new[0].prev_hash == old[-1].checksum[:16]
    assert await read_events(store, RUN_ID) == [*old, *new]
    assert (await verify_run(store, RUN_ID)).ok
    loaded = await load_run(store, RUN_ID)
    assert loaded.state == fold([*old, *new])
    # A v3 event sealed after the wrong v2 event is refused at the append.
    stray = EventDraft(type="note", payload={}).seal(
        run_id=RUN_ID, seq=new[-1].seq + 1, prev_hash=old[-1].checksum, ts=new[-1].ts
    )
    with pytest.raises(Exception, match="expected seq"):
        await store.append(lease, [stray], summary=summary_of(journal.state))


def _schema7_store(path: Path, events: list[Event]) -> None:
    """A SQLite store as schema 7 wrote it (its view reads v1 and v2 bodies in SQL only),
    holding `events` (v2), written through that view as older code did."""
    old_view = (
        SQLITE_EVENTS_VIEW[0]
        .replace(
            "tether_event_body(e.data)",
            "(CASE WHEN substr(e.data, 1, 1) = x'02' THEN CAST(substr(e.data, 66) AS TEXT) "
            "ELSE CAST(e.data AS TEXT) END)",
        )
        .replace("IN (x'02', x'03', x'04')", "= x'02'")
    )
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE tether_meta (key TEXT PRIMARY KEY, value TEXT)")
    for version, statements in SQLITE_MIGRATIONS:
        if version <= 7:
            for statement in statements:
                if statement == RUN_SECTION_INDEX:
                    continue  # schema 8's index (schema 7 had none)
                db.execute(old_view if statement == SQLITE_EVENTS_VIEW[0] else statement)
    db.execute("INSERT INTO tether_meta VALUES ('schema_version', '7')")
    assert (
        "tether_event_body"
        not in db.execute("SELECT sql FROM sqlite_schema WHERE name='events'").fetchone()[0]
    )
    assert not db.execute(
        "SELECT 1 FROM sqlite_schema WHERE name=?", (SECTION_INDEX_NAME,)
    ).fetchall()
    first, last = events[0], events[-1]
    s = summary_of(fold(events))
    db.execute(
        "INSERT INTO runs (run_id, agent, tenant, parent_run_id, created_at, updated_at, status,"
        " steps, input_tokens, output_tokens, cost_usd, head_seq, head_hash) "
        "VALUES (?, ?, NULL, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (first.run_id, first.payload["agent"], first.ts, s.updated_at, s.status, s.steps,
         s.input_tokens, s.output_tokens, s.cost_usd, last.seq, last.checksum),
    )  # fmt: skip
    db.executemany(
        "INSERT INTO events (run_id, seq, data) VALUES (?,?,?)",
        [(e.run_id, e.seq, e.raw) for e in events],
    )
    db.close()


async def test_a_schema7_store_of_v2_events_migrates_and_reads_v3_rows_in_sql(
    tmp_path: Path,
) -> None:
    old = seal_chain([created(), *cycles(2)], version=2)
    path = tmp_path / "old.db"
    _schema7_store(path, old)
    store = SQLiteStore(path)
    try:
        assert store._has_section_index()  # the migration to 8 made the run page's index
        assert (await verify_run(store, RUN_ID)).ok
        lease = await store.acquire_lease(RUN_ID, owner="resumer", ttl_s=60)
        journal, _ = await RunJournal.open(store, lease)
        new = await journal.append(
            *cycles(1, start=3),
            EventDraft(type="note", payload={"output": OUTPUT}, actor="cli:ann"),
        )  # fmt: skip
        assert {e.schema_version for e in new} == {3}
        assert any(e.raw[0] == V3_DEFLATED for e in new)
        everything = [*old, *new]
        assert await read_events(store, RUN_ID) == everything
        assert (await verify_run(store, RUN_ID)).ok
        # The view computes every event's columns from its bytes, v2 and v3 alike ...
        db = sqlite3.connect(path)
        sqlite_functions(db)
        shown = db.execute(
            "SELECT seq, type, correlation_id, ts, actor, tool, visibility FROM events "
            "WHERE run_id=? ORDER BY seq",
            (RUN_ID,),
        ).fetchall()
        db.close()
        assert shown == [(e.seq, e.type, e.correlation_id, *_audit(e)) for e in everything]
        # ... so the audit copy rebuilt from them agrees with the bytes (doctor's check).
        assert await store.rebuild_audit_index() == len(everything)
        assert store._has_section_index()  # a rebuild makes it again
        assert await store.check_audit_index() is None
        (wrong,) = store._db.execute(DISAGREEING).fetchone()
        assert wrong == 0
    finally:
        await store.close()


def _audit(e: Event) -> list[object]:
    a = audit_columns(e)
    return [a.ts, a.actor, a.tool, a.visibility]


def test_the_sql_body_of_a_damaged_or_foreign_value_is_no_json() -> None:
    flipped = bytearray(DEFLATED.raw)
    flipped[-1] ^= 1
    assert body_text(bytes(flipped)) == ""
    assert body_text(b"\x03short") == ""
    assert body_text(None) == ""
    assert body_text("text") == "text"
    assert json.loads(body_text(EVENTS[1].raw))["t"] == EVENTS[1].type
