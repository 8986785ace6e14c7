"""Sealing's fast paths against the definitions they stand for.

The v2/v3 body is written out directly (`v2_body_bytes`) rather than built as a dict and
encoded: its bytes must be `canonical_json(v2_body(...))` for every input, or a journal
would hold events whose checksum no other writer reproduces. Timestamps are parsed and
checked in C: the same strings must count as the journal's format as before. A v3 event
deflates its body only when its bytes are first asked for (an event that is never stored
is never deflated); every store, the memory store included, asks at append.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether._canonical import canonical_json, canonical_text
from tether._envelope import micros_ts, ts_micros, v2_body, v2_body_bytes
from tether._envelope_v3 import LINK_BYTES, pack_v3, unpack_v3
from tether.events import GENESIS_HASH, EventDraft, Usage, decode_event
from tether.journal import MemoryStore, read_events, verify_run
from tether.journal._integrity import verify_row

from .helpers import RUN_ID, created, cycles, import_events, seal_chain

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def reference_ts_micros(ts: str) -> int | None:
    """The definition `ts_micros` had before it was made faster."""
    if len(ts) != 27 or ts[-1] != "Z" or ts[10] != "T":
        return None
    try:
        d = datetime.fromisoformat(ts[:-1]).replace(tzinfo=UTC)
    except ValueError:
        return None
    us = (d - _EPOCH) // timedelta(microseconds=1)
    return us if reference_micros_ts(us) == ts else None


def reference_micros_ts(us: int) -> str:
    d = _EPOCH + timedelta(microseconds=us)
    return (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:"
        f"{d.second:02d}.{d.microsecond:06d}Z"
    )


# -- the body ------------------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
ids = st.sampled_from(["r1", "run-é", "r"]) | st.text(max_size=6)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[Any, ...]:
    run_id = draw(ids)
    ts = draw(
        st.integers(-(10**15), 10**16).map(micros_ts)
        | st.sampled_from(["2026-01-02T03:04:05Z", "2026-W01-2T03:04:05.123456Z", ""])
        | st.text(max_size=30)
    )
    corr = draw(st.none() | st.text(max_size=8).map(lambda s: run_id + s) | st.text(max_size=8))
    cause = draw(
        st.none()
        | st.integers(-3, 10**12).map(lambda n: f"{run_id}:{n}")
        | st.sampled_from([f"{run_id}:01", f"{run_id}:", "other:3", ":1"])
        | st.text(max_size=8)
    )
    visibility = draw(st.sampled_from(["visible", "user_hidden", "always_hidden"]) | st.text())
    actor = draw(st.sampled_from(["runtime", "tool:fetch", "user"]) | st.text(max_size=8))
    payload = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=5))
    usage = draw(
        st.none()
        | st.builds(
            Usage,
            input_tokens=st.integers(0, 10**9),
            output_tokens=st.integers(0, 10**9),
            cost_usd=st.floats(0, 1e6) | st.integers(0, 10),
        )
    )
    return run_id, draw(st.text(max_size=12)), ts, corr, cause, visibility, actor, payload, usage


@settings(max_examples=600, deadline=None)
@given(bodies())
def test_the_body_written_out_is_the_canonical_encoding_of_the_body(args: tuple[Any, ...]) -> None:
    assert v2_body_bytes(*args) == canonical_json(v2_body(*args))


@pytest.mark.parametrize(
    "field, value", [("type", 7), ("visibility", None), ("actor", None), ("actor", 1.5)]
)
def test_a_field_of_an_unexpected_type_gets_the_general_encoding(field: str, value: Any) -> None:
    fields: dict[str, Any] = {
        "run_id": "r1", "type_": "note", "ts": micros_ts(0), "correlation_id": "r1/c1",
        "causation_id": "r1:1", "visibility": "visible", "actor": "runtime",
        "payload": {"a": 1}, "usage": None,
    }  # fmt: skip
    fields["type_" if field == "type" else field] = value
    assert v2_body_bytes(**fields) == canonical_json(v2_body(**fields))


def test_what_json_refuses_is_refused_the_same_way() -> None:
    looped: dict[str, Any] = {}
    looped["self"] = looped
    with pytest.raises(ValueError, match="Circular"):
        canonical_text(looped)
    with pytest.raises(ValueError, match="Circular"):
        EventDraft(type="note", payload=looped).seal(
            run_id="r", seq=1, prev_hash=GENESIS_HASH, ts=micros_ts(0)
        )
    for bad in ({"x": math.nan}, {"x": math.inf}):
        with pytest.raises(ValueError):
            EventDraft(type="note", payload=bad).seal(
                run_id="r", seq=1, prev_hash=GENESIS_HASH, ts=micros_ts(0)
            )
    with pytest.raises(ValueError):
        v2_body_bytes("r", "note", micros_ts(0), None, None, "visible", "runtime", {},
                      Usage(cost_usd=math.nan))  # fmt: skip
    with pytest.raises(TypeError):
        canonical_text({"x": object()})


# -- timestamps ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts",
    [
        "2026-01-02T03:04:05.123456Z",
        "1970-01-01T00:00:00.000000Z",
        "1969-12-31T23:59:59.999999Z",
        "0001-01-01T00:00:00.000000Z",
        "9999-12-31T23:59:59.999999Z",
        "2024-02-29T12:00:00.000000Z",
        "2023-02-29T12:00:00.000000Z",  # no such day
        "2026-01-02T24:00:00.000000Z",
        "2026-01-02T03:04:60.000000Z",
        "2026-W01-2T03:04:05.123456Z",  # a week date fromisoformat reads
        "2026-001T03:04:05.1234567Z",
        "2026-01-02T03:04:05,123456Z",
        "2026-01-02T03:04:05.123+01Z",
        "2026-01-02T03:04:05.123456+",
        "2026-01-02 03:04:05.123456Z",
        "2026-01-02T03:04:05.12345 Z",
        "２０２６-01-02T03:04:05.123456Z",
        "2026-01-02T03:04:05.123456",
        "",
    ],
)
def test_timestamps_count_as_the_journal_format_exactly_as_before(ts: str) -> None:
    assert ts_micros(ts) == reference_ts_micros(ts)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(10**15), 253402300799999999))
def test_microseconds_format_as_before_and_round_trip(us: int) -> None:
    assert micros_ts(us) == reference_micros_ts(us)
    assert ts_micros(micros_ts(us)) == us


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789-:.TWZ+ ,", min_size=27, max_size=27))
def test_near_misses_of_the_format_are_judged_as_before(ts: str) -> None:
    assert ts_micros(ts) == reference_ts_micros(ts)


# -- bytes made when first asked for --------------------------------------------------


def test_a_sealed_event_deflates_its_body_once_when_its_bytes_are_asked_for() -> None:
    event = seal_chain([created(), *cycles(1)], version=3)[-1]
    assert event.stored is None and event.body is not None
    raw = event.raw
    assert event.stored is raw and event.raw is raw  # made once, then the same bytes
    link, digest, body = unpack_v3(raw)
    assert (link.hex(), digest.hex(), body) == (event.prev_hash, event.checksum, event.body)
    assert raw == pack_v3(link, digest, event.body)
    again = decode_event(raw, run_id=event.run_id, seq=event.seq)
    assert again == event and again.raw == raw and again.portable() == event.portable()


def test_older_envelopes_are_made_at_once() -> None:
    for version in (1, 2):
        event = seal_chain([created()], version=version)[0]
        assert event.stored is not None


async def test_the_memory_store_makes_each_row_at_append_as_a_disk_store_does() -> None:
    store = MemoryStore()
    events = seal_chain([created(), *cycles(3)], version=3)
    await import_events(store, events)
    # The reference store holds what a disk store holds (deflating is part of what a
    # durable append costs, so it is not hidden from a memory:// comparison either).
    assert all(e.stored is not None for e in events)
    rows = await store.read_rows(RUN_ID)
    assert [r.raw for r in rows] == [e.raw for e in events]
    assert [verify_row(r) for r in rows] == events
    assert await read_events(store, RUN_ID) == events
    assert (await verify_run(store, RUN_ID)).ok
    # A row damaged after it was made is refused, as in every store.
    damaged = bytearray(rows[2].raw)
    damaged[LINK_BYTES + 3] ^= 1
    store._pokerow_of(RUN_ID, rows[2].seq, bytes(damaged))
    assert not (await verify_run(store, RUN_ID)).ok
