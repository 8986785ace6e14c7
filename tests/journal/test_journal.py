"""RunJournal, load_run, verify_run, read_events and fork_run on healthy journals."""

from __future__ import annotations

import hashlib
import itertools
import json

import pytest

from tether._clock import FakeClock
from tether.errors import CorruptionError, LeaseLost, RunNotFound, UsageError
from tether.events import EventDraft, canonical_json
from tether.journal import (
    RunJournal,
    Store,
    create_run,
    fork_run,
    load_run,
    read_events,
    seal_snapshot,
    verify_run,
)
from tether.journal._integrity import open_snapshot
from tether.state import fold

from .helpers import RUN_ID, all_events, cycles, note, write_run


async def test_appended_events_are_sealed_in_order_as_one_chain(store: Store) -> None:
    journal, _ = await write_run(store, cycles(3), batch=3)
    events = await all_events(store)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    for before, after in itertools.pairwise(events):
        assert after.follows(before.checksum)  # v3: the first 16 digits of it
        assert after.prev_hash == before.checksum[:16]
    assert journal.state == fold(events)
    assert (await verify_run(store, RUN_ID)).ok


async def test_append_returns_the_sealed_events_it_stored(store: Store) -> None:
    journal, _ = await write_run(store, [])
    written = await journal.append(note(1), note(2))
    stored = await read_events(store, RUN_ID, after_seq=1)
    assert [e.raw for e in written] == [e.raw for e in stored]
    assert journal.state.last_seq == 3


async def test_a_refused_append_leaves_the_journal_state_alone(store: Store) -> None:
    journal, lease = await write_run(store, cycles(1))
    before = journal.state
    await store.acquire_lease(RUN_ID, owner=lease.owner, ttl_s=60)  # bumps the epoch
    with pytest.raises(LeaseLost):
        await journal.append(note(1))
    assert journal.state == before
    assert (await store.get_run(RUN_ID)).head_seq == before.last_seq


async def test_reload_gives_the_state_the_writer_had(store: Store) -> None:
    journal, _ = await write_run(store, cycles(4), snapshot_every=5)
    loaded = await load_run(store, RUN_ID)
    assert loaded.state == journal.state
    assert loaded.torn_tail is None


async def test_snapshots_are_written_every_k_events_and_only_the_newest_kept(
    store: Store,
) -> None:
    journal, _ = await write_run(store, [note(i) for i in range(1, 30)], snapshot_every=7)
    assert journal.state.last_seq == 30
    snaps = await store.read_snapshots(RUN_ID)
    assert [seq for seq, _ in snaps] == [28, 21]
    for seq, raw in snaps:
        snap = open_snapshot(RUN_ID, seq, raw)
        assert snap.state == fold(await read_events(store, RUN_ID, until_seq=seq))


async def test_a_batch_that_crosses_a_snapshot_boundary_snapshots_its_end(store: Store) -> None:
    await write_run(store, [note(i) for i in range(1, 12)], snapshot_every=5, batch=4)
    # Heads after each append: 1 (created), 5, 9, 12; boundaries 5 and 10 are crossed.
    assert [seq for seq, _ in await store.read_snapshots(RUN_ID)] == [12, 5]


async def test_load_starts_from_the_newest_snapshot_and_replays_only_the_tail(
    store: Store,
) -> None:
    await write_run(store, [note(i) for i in range(1, 40)], snapshot_every=10)
    loaded = await load_run(store, RUN_ID)
    assert loaded.snapshot_seq == 40
    assert loaded.replayed == 0
    journal, _ = await RunJournal.open(
        store, await store.acquire_lease(RUN_ID, owner="writer", ttl_s=60), snapshot_every=10
    )
    await journal.append(note(100), note(101), note(102))
    loaded = await load_run(store, RUN_ID)
    assert (loaded.snapshot_seq, loaded.replayed) == (40, 3)
    assert loaded.state == fold(await all_events(store))


async def test_a_snapshot_from_another_fold_version_is_skipped_not_used(store: Store) -> None:
    journal, lease = await write_run(store, [note(i) for i in range(1, 10)])
    state = journal.state
    body = json.loads(seal_snapshot(state))
    del body["checksum"]
    body["fold_version"] += 1
    body["state"]["cycle"] = 999  # what another version might mean; must not leak in
    data = canonical_json(body)
    raw = data[:-1] + b',"checksum":"' + hashlib.sha256(data).hexdigest().encode() + b'"}'
    await store.put_snapshot(lease, RUN_ID, state.last_seq, raw, keep=2)
    loaded = await load_run(store, RUN_ID)
    assert loaded.snapshot_seq is None
    assert loaded.state == state and loaded.state.cycle == 0
    assert any("another version" in n for n in loaded.notes)
    assert (await verify_run(store, RUN_ID)).ok


async def test_verify_run_is_clean_on_a_healthy_journal(store: Store) -> None:
    await write_run(store, cycles(5), snapshot_every=6, keep_snapshots=3)
    report = await verify_run(store, RUN_ID)
    assert report.ok, report.problems
    assert report.events == report.head_seq == 1 + 5 * 7
    assert report.snapshots == 3


async def test_verify_and_load_name_an_unknown_run(store: Store) -> None:
    with pytest.raises(RunNotFound):
        await verify_run(store, "run_nope")
    with pytest.raises(RunNotFound):
        await load_run(store, "run_nope")


async def test_read_events_returns_verified_ranges(store: Store) -> None:
    await write_run(store, [note(i) for i in range(1, 10)])
    assert [e.seq for e in await read_events(store, RUN_ID, after_seq=3, until_seq=6)] == [
        4,
        5,
        6,
    ]
    assert [e.seq for e in await read_events(store, RUN_ID, after_seq=9)] == [10]
    with pytest.raises(CorruptionError):
        await read_events(store, RUN_ID, after_seq=50)


async def test_fork_copies_a_verified_prefix_into_a_new_run(store: Store) -> None:
    clock = FakeClock()
    await write_run(store, cycles(3), clock=clock)
    source = await all_events(store)
    clock.advance(3600)
    state_at_8 = fold(source[:8])
    new_id = await fork_run(store, RUN_ID, at_seq=8, clock=clock)
    assert new_id != RUN_ID
    report = await verify_run(store, new_id)
    assert report.ok, report.problems
    forked = await read_events(store, new_id)
    assert len(forked) == 9
    assert [(e.type, e.payload) for e in forked[:8]] == [(e.type, e.payload) for e in source[:8]]
    assert forked[-1].type == "run.forked"
    assert forked[-1].payload == {
        "from_run": RUN_ID,
        "from_event": f"{RUN_ID}:8",
        "key_base": RUN_ID,
        "cycle": state_at_8.cycle,
    }
    record = await store.get_run(new_id)
    assert record.parent_run_id == RUN_ID and record.lease_owner is None
    state = (await load_run(store, new_id)).state
    assert state.parent_event == f"{RUN_ID}:8" and state.status == "queued"
    # Listed by its own creation time (newest first), not its parent's.
    assert record.created_at == state.created_at == forked[-1].ts > source[0].ts
    assert (await store.list_runs())[0].run_id == new_id
    # Its calls continue the parent's effect keys; a fork of the fork still does.
    assert state.key_base == RUN_ID
    grandchild = await fork_run(store, new_id, at_seq=9, clock=clock)
    assert (await load_run(store, grandchild)).state.key_base == RUN_ID
    # The source run is untouched.
    assert [e.raw for e in await all_events(store)] == [e.raw for e in source]


async def test_fork_refuses_a_point_past_the_head(store: Store) -> None:
    await write_run(store, cycles(1))
    with pytest.raises(UsageError, match="no event 99"):
        await fork_run(store, RUN_ID, at_seq=99)
    with pytest.raises(UsageError):
        await fork_run(store, RUN_ID, at_seq=0)


async def test_a_second_writer_continues_where_the_first_stopped(store: Store) -> None:
    clock = FakeClock()
    first, lease = await write_run(store, cycles(2), clock=clock)
    await store.release_lease(lease)
    lease2 = await store.acquire_lease(RUN_ID, owner="w2", ttl_s=60)
    second, loaded = await RunJournal.open(store, lease2, clock=clock)
    assert loaded.state == first.state
    await second.append(EventDraft(type="run.resumed"), *cycles(1, start=3))
    assert (await verify_run(store, RUN_ID)).ok
    assert (await load_run(store, RUN_ID)).state == second.state


async def test_load_during_a_concurrent_append_sees_a_consistent_journal(store: Store) -> None:
    """A reader (doctor, console) loading while the lease holder appends is not corruption."""
    journal, _ = await write_run(store, cycles(2), snapshot_every=4)

    class Racing:
        """The store, with the writer's next append landing between the reader's calls."""

        def __init__(self, inner: Store) -> None:
            self.inner = inner
            self.pending = [note(i) for i in range(1, 6)]

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

        async def read_snapshots(self, run_id: str) -> list[tuple[int, bytes]]:
            if self.pending:
                await journal.append(self.pending.pop())
            return await self.inner.read_snapshots(run_id)

        async def read_rows(self, run_id: str, **kw: int | None) -> list[object]:
            if self.pending:
                await journal.append(self.pending.pop())
            return await self.inner.read_rows(run_id, **kw)  # type: ignore[arg-type]

    racing = Racing(store)
    for _ in range(2):
        loaded = await load_run(racing, RUN_ID)  # type: ignore[arg-type]
        events = await all_events(store)
        assert loaded.torn_tail is None
        assert loaded.state == fold(events[: loaded.state.last_seq])
        report = await verify_run(racing, RUN_ID)  # type: ignore[arg-type]
        assert report.ok, report.problems


async def test_create_run_records_tenant_and_parent(store: Store) -> None:
    state = await create_run(
        store, agent="sub", task="t", tenant="acme", parent_event="run_parent:12", run_id=RUN_ID
    )
    record = await store.get_run(RUN_ID)
    assert (record.tenant, record.parent_run_id) == ("acme", "run_parent")
    assert (state.tenant, state.parent_event) == ("acme", "run_parent:12")
