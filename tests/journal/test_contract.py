"""The Store contract, run against every backend: the same calls, the same answers.

Each test is named for the claim it proves. `store` (tests/conftest.py) covers memory and
SQLite; `clocked` (tests/journal/conftest.py) does too, with a FakeClock for lease expiry.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tether._clock import FakeClock
from tether.errors import AppendConflict, LeaseHeld, LeaseLost, RunNotFound, UsageError
from tether.events import EventDraft, decode_event
from tether.journal import RunJournal, Store, create_run, seal_snapshot, summary_of
from tether.journal._base import RunSummary
from tether.state import fold

from .conftest import Clocked
from .helpers import RUN_ID, created, cycles, import_events, note, seal_chain

# -- the run index -----------------------------------------------------------------------


async def test_create_run_writes_the_index_row_and_the_first_event(store: Store) -> None:
    clock = FakeClock()
    state = await create_run(
        store, agent="researcher", task="t", tenant="acme", run_id=RUN_ID, clock=clock
    )
    record = await store.get_run(RUN_ID)
    assert record.run_id == RUN_ID
    assert record.agent == "researcher"
    assert record.tenant == "acme"
    assert record.parent_run_id is None
    assert record.head_seq == 1
    assert record.head_hash == state.last_hash
    assert record.lease_owner is None and record.lease_epoch == 0
    assert record.summary == summary_of(state)
    rows = await store.read_rows(RUN_ID)
    assert [(r.seq, r.type) for r in rows] == [(1, "run.created")]


async def test_stored_rows_keep_the_sealed_bytes_exactly(store: Store) -> None:
    events = seal_chain([*_created_and(cycles(2))])
    await import_events(store, events)
    rows = await store.read_rows(RUN_ID)
    assert [bytes(r.raw) for r in rows] == [e.raw for e in events]
    assert [(r.run_id, r.seq, r.type, r.correlation_id) for r in rows] == [
        (e.run_id, e.seq, e.type, e.correlation_id) for e in events
    ]


async def test_create_run_refuses_a_duplicate_run_id_and_keeps_the_original(store: Store) -> None:
    await create_run(store, agent="a", task="first", run_id=RUN_ID)
    before = await store.get_run(RUN_ID)
    with pytest.raises(UsageError, match="already exists"):
        await create_run(store, agent="b", task="second", run_id=RUN_ID)
    assert await store.get_run(RUN_ID) == before
    rows = await store.read_rows(RUN_ID)
    assert len(rows) == 1
    assert decode_event(bytes(rows[0].raw), run_id=RUN_ID, seq=1).payload["task"] == "first"


async def test_get_run_raises_run_not_found_for_an_unknown_id(store: Store) -> None:
    with pytest.raises(RunNotFound) as info:
        await store.get_run("run_nope")
    assert info.value.run_id == "run_nope"
    assert isinstance(info.value, UsageError)


async def test_lease_calls_on_an_unknown_run_raise_run_not_found(store: Store) -> None:
    with pytest.raises(RunNotFound):
        await store.acquire_lease("run_nope", owner="w", ttl_s=10)


async def test_list_runs_is_newest_first(store: Store) -> None:
    clock = FakeClock()
    for i in range(5):
        clock.advance(1)
        await create_run(store, agent="a", task="t", run_id=f"run_{i}", clock=clock)
    runs = await store.list_runs()
    assert [r.run_id for r in runs] == ["run_4", "run_3", "run_2", "run_1", "run_0"]
    assert [r.run_id for r in await store.list_runs(limit=2)] == ["run_4", "run_3"]
    assert await store.run_ids() == ["run_0", "run_1", "run_2", "run_3", "run_4"]


async def test_list_runs_breaks_created_at_ties_by_run_id(store: Store) -> None:
    clock = FakeClock()
    for name in ("run_b", "run_a", "run_c"):
        await create_run(store, agent="a", task="t", run_id=name, clock=clock)
    assert [r.run_id for r in await store.list_runs()] == ["run_c", "run_b", "run_a"]


async def test_list_runs_filters_by_status_from_the_summary(store: Store) -> None:
    clock = FakeClock()
    for i in range(3):
        clock.advance(1)
        await create_run(store, agent="a", task="t", run_id=f"run_{i}", clock=clock)
    lease = await store.acquire_lease("run_1", owner="w", ttl_s=60)
    journal, _ = await RunJournal.open(store, lease, clock=clock)
    await journal.append(EventDraft(type="run.completed", payload={"answer": "42"}))
    lease2 = await store.acquire_lease("run_2", owner="w", ttl_s=60)
    journal2, _ = await RunJournal.open(store, lease2, clock=clock)
    await journal2.append(*cycles(1, tools=0))

    assert [r.run_id for r in await store.list_runs(status="completed")] == ["run_1"]
    assert [r.run_id for r in await store.list_runs(status="running")] == ["run_2"]
    assert [r.run_id for r in await store.list_runs(status="queued")] == ["run_0"]
    assert await store.list_runs(status="failed") == []
    completed = (await store.list_runs(status="completed"))[0]
    assert completed.summary == summary_of(journal.state)


# -- leases ------------------------------------------------------------------------------


async def test_first_lease_has_epoch_one_and_is_recorded(clocked: Clocked) -> None:
    store, clock = clocked.store, clocked.clock
    await create_run(store, agent="a", task="t", run_id=RUN_ID)
    lease = await store.acquire_lease(RUN_ID, owner="w1", ttl_s=30)
    assert (lease.run_id, lease.owner, lease.epoch) == (RUN_ID, "w1", 1)
    assert lease.expires_at == pytest.approx(clock.now + 30)
    record = await store.get_run(RUN_ID)
    assert (record.lease_owner, record.lease_epoch) == ("w1", 1)
    assert record.lease_expires_at == pytest.approx(clock.now + 30)


async def test_acquire_is_refused_with_lease_held_while_another_owners_lease_is_live(
    clocked: Clocked,
) -> None:
    store, clock = clocked.store, clocked.clock
    await create_run(store, agent="a", task="t", run_id=RUN_ID)
    await store.acquire_lease(RUN_ID, owner="w1", ttl_s=30)
    clock.advance(29.9)
    with pytest.raises(LeaseHeld):
        await store.acquire_lease(RUN_ID, owner="w2", ttl_s=30)
    record = await store.get_run(RUN_ID)
    assert (record.lease_owner, record.lease_epoch) == ("w1", 1)


async def test_an_expired_lease_is_taken_over_with_a_higher_epoch(clocked: Clocked) -> None:
    store, clock = clocked.store, clocked.clock
    await create_run(store, agent="a", task="t", run_id=RUN_ID)
    old = await store.acquire_lease(RUN_ID, owner="w1", ttl_s=30)
    clock.advance(30.5)
    new = await store.acquire_lease(RUN_ID, owner="w2", ttl_s=30)
    assert new.epoch == old.epoch + 1
    assert new.owner == "w2"
    # The old holder is fenced: it can neither renew nor append.
    with pytest.raises(LeaseLost):
        await store.renew_lease(old, ttl_s=30)
    head = seal_chain([created()])[0]
    with pytest.raises(LeaseLost):
        await store.append(old, seal_chain([note(1)], after=head), summary=_any_summary())


async def test_epochs_keep_increasing_across_takeovers_and_releases(clocked: Clocked) -> None:
    store, clock = clocked.store, clocked.clock
    await create_run(store, agent="a", task="t", run_id=RUN_ID)
    epochs = []
    for i in range(6):
        lease = await store.acquire_lease(RUN_ID, owner=f"w{i % 2}", ttl_s=10)
        epochs.append(lease.epoch)
        if i % 3 == 0:
            await store.release_lease(lease)
        else:
            clock.advance(11)
    assert epochs == [1, 2, 3, 4, 5, 6]


async def test_takeover_from_a_named_dead_holder_skips_the_wait_and_fences_it(
    clocked: Clocked,
) -> None:
    store = clocked.store
    await create_run(store, agent="a", task="t", run_id=RUN_ID)
    dead = await store.acquire_lease(RUN_ID, owner="w1", ttl_s=300)
    with pytest.raises(LeaseHeld):  # naming someone else is no licence
        await store.acquire_lease(RUN_ID, owner="w2", ttl_s=300, takeover_from="w9")
    taken = await store.acquire_lease(RUN_ID, owner="w2", ttl_s=300, takeover_from="w1")
    assert taken.epoch == dead.epoch + 1
    with pytest.raises(LeaseLost):
        await store.renew_lease(dead, ttl_s=30)


async def test_reacquiring_by_the_same_owner_bumps_the_epoch_and_fences_the_old_lease(
    clocked: Clocked,
) -> None:
    store = clocked.store
    await create_run(store, agent="a", task="t", run_id=RUN_ID)
    first = await store.acquire_lease(RUN_ID, owner="w1", ttl_s=30)
    second = await store.acquire_lease(RUN_ID, owner="w1", ttl_s=30)
    assert second.epoch == first.epoch + 1
    with pytest.raises(LeaseLost):
        await store.renew_lease(first, ttl_s=30)
    await store.renew_lease(second, ttl_s=30)


async def test_renew_extends_the_lease_so_others_stay_out(clocked: Clocked) -> None:
    store, clock = clocked.store, clocked.clock
    await create_run(store, agent="a", task="t", run_id=RUN_ID)
    lease = await store.acquire_lease(RUN_ID, owner="w1", ttl_s=30)
    clock.advance(20)
    renewed = await store.renew_lease(lease, ttl_s=30)
    assert renewed.epoch == lease.epoch and renewed.owner == "w1"
    assert renewed.expires_at == pytest.approx(clock.now + 30)
    clock.advance(20)  # past the original expiry, inside the renewed one
    with pytest.raises(LeaseHeld):
        await store.acquire_lease(RUN_ID, owner="w2", ttl_s=30)
    assert (await store.get_run(RUN_ID)).lease_expires_at == pytest.approx(renewed.expires_at)


async def test_an_expired_lease_that_nobody_took_can_still_be_renewed(clocked: Clocked) -> None:
    store, clock = clocked.store, clocked.clock
    await create_run(store, agent="a", task="t", run_id=RUN_ID)
    lease = await store.acquire_lease(RUN_ID, owner="w1", ttl_s=5)
    clock.advance(10)
    renewed = await store.renew_lease(lease, ttl_s=5)
    assert renewed.epoch == lease.epoch


async def test_release_lets_another_owner_in_at_once(clocked: Clocked) -> None:
    store = clocked.store
    await create_run(store, agent="a", task="t", run_id=RUN_ID)
    lease = await store.acquire_lease(RUN_ID, owner="w1", ttl_s=300)
    await store.release_lease(lease)
    record = await store.get_run(RUN_ID)
    assert record.lease_owner is None and record.lease_expires_at is None
    other = await store.acquire_lease(RUN_ID, owner="w2", ttl_s=300)
    assert other.epoch == lease.epoch + 1
    with pytest.raises(LeaseLost):
        await store.renew_lease(lease, ttl_s=30)


async def test_releasing_a_stale_lease_does_not_release_the_current_one(clocked: Clocked) -> None:
    store, clock = clocked.store, clocked.clock
    await create_run(store, agent="a", task="t", run_id=RUN_ID)
    old = await store.acquire_lease(RUN_ID, owner="w1", ttl_s=10)
    clock.advance(11)
    current = await store.acquire_lease(RUN_ID, owner="w2", ttl_s=10)
    await store.release_lease(old)
    record = await store.get_run(RUN_ID)
    assert (record.lease_owner, record.lease_epoch) == ("w2", current.epoch)
    with pytest.raises(LeaseHeld):
        await store.acquire_lease(RUN_ID, owner="w3", ttl_s=10)


async def test_release_is_idempotent(clocked: Clocked) -> None:
    store = clocked.store
    await create_run(store, agent="a", task="t", run_id=RUN_ID)
    lease = await store.acquire_lease(RUN_ID, owner="w1", ttl_s=10)
    await store.release_lease(lease)
    await store.release_lease(lease)
    assert (await store.get_run(RUN_ID)).lease_owner is None


# -- append ------------------------------------------------------------------------------


async def test_append_extends_the_head_and_refreshes_the_summary(store: Store) -> None:
    events = seal_chain([*_created_and(cycles(1))])
    lease = await import_events(store, events[:1])
    summary = summary_of(fold(events))
    await store.append(lease, events[1:], summary=summary)
    record = await store.get_run(RUN_ID)
    assert (record.head_seq, record.head_hash) == (events[-1].seq, events[-1].checksum)
    assert record.summary == summary
    assert [bytes(r.raw) for r in await store.read_rows(RUN_ID)] == [e.raw for e in events]


async def test_append_rejects_stale_epoch_and_writes_nothing(clocked: Clocked) -> None:
    store, clock = clocked.store, clocked.clock
    events = seal_chain([created(), note(1), note(2)])
    stale = await import_events(store, events[:2], ttl_s=10)
    clock.advance(11)
    await store.acquire_lease(RUN_ID, owner="w2", ttl_s=10)
    before = await _snapshot_of(store)
    with pytest.raises(LeaseLost):
        await store.append(stale, events[2:], summary=summary_of(fold(events)))
    assert await _snapshot_of(store) == before


async def test_append_rejects_a_released_lease(store: Store) -> None:
    events = seal_chain([created(), note(1)])
    lease = await import_events(store, events[:1])
    await store.release_lease(lease)
    with pytest.raises(LeaseLost):
        await store.append(lease, events[1:], summary=summary_of(fold(events)))
    assert (await store.get_run(RUN_ID)).head_seq == 1


async def test_append_rejects_a_lease_with_the_right_epoch_but_another_owner(store: Store) -> None:
    events = seal_chain([created(), note(1)])
    lease = await import_events(store, events[:1])
    forged = replace(lease, owner="intruder")
    with pytest.raises(LeaseLost):
        await store.append(forged, events[1:], summary=summary_of(fold(events)))
    assert (await store.get_run(RUN_ID)).head_seq == 1


async def test_append_rejects_wrong_seq_with_append_conflict_and_writes_nothing(
    store: Store,
) -> None:
    events = seal_chain([created(), note(1), note(2), note(3)])
    lease = await import_events(store, events[:2])
    before = await _snapshot_of(store)
    # Skipping ahead (seq 4 after head 2) and going back (seq 2 again) are both refused.
    with pytest.raises(AppendConflict):
        await store.append(lease, events[3:], summary=summary_of(fold(events)))
    with pytest.raises(AppendConflict):
        await store.append(lease, events[1:2], summary=summary_of(fold(events[:2])))
    assert await _snapshot_of(store) == before


async def test_append_rejects_wrong_prev_hash_with_append_conflict_and_writes_nothing(
    store: Store,
) -> None:
    events = seal_chain([created(), note(1), note(2)])
    lease = await import_events(store, events[:2])
    # A writer that believed a different event 2 was the head: right seq, wrong predecessor.
    other_head = seal_chain([note(99)], after=events[0])[0]
    forked = seal_chain([note(2)], after=other_head)
    assert forked[0].seq == 3 and forked[0].prev_hash != events[1].checksum
    before = await _snapshot_of(store)
    with pytest.raises(AppendConflict):
        await store.append(lease, forked, summary=summary_of(fold(events)))
    assert await _snapshot_of(store) == before


async def test_append_rejects_an_event_of_another_run(store: Store) -> None:
    events = seal_chain([created(), note(1)])
    lease = await import_events(store, events[:1])
    alien = seal_chain([note(1)], run_id="run_other", after=events[0])
    with pytest.raises(AppendConflict):
        await store.append(lease, alien, summary=summary_of(fold(events)))
    assert (await store.get_run(RUN_ID)).head_seq == 1


async def test_several_events_in_one_append_land_together(store: Store) -> None:
    events = seal_chain([*_created_and(cycles(2))])
    lease = await import_events(store, events[:1])
    await store.append(lease, events[1:], summary=summary_of(fold(events)))
    assert len(await store.read_rows(RUN_ID)) == len(events)
    assert (await store.get_run(RUN_ID)).head_seq == len(events)


async def test_a_batch_broken_in_the_middle_is_refused_whole(store: Store) -> None:
    events = seal_chain([created(), note(1), note(2), note(3), note(4)])
    lease = await import_events(store, events[:2])
    good_then_gap = [events[2], events[4]]  # seq 3 continues the head; seq 5 leaves a gap
    before = await _snapshot_of(store)
    with pytest.raises(AppendConflict):
        await store.append(lease, good_then_gap, summary=summary_of(fold(events)))
    assert await _snapshot_of(store) == before
    broken_chain = [events[2], seal_chain([note(9)], after=events[0])[0]]
    broken_chain[1] = replace(broken_chain[1], seq=4)
    with pytest.raises(AppendConflict):
        await store.append(lease, broken_chain, summary=summary_of(fold(events)))
    assert await _snapshot_of(store) == before


async def test_a_refused_append_does_not_wedge_the_store(clocked: Clocked) -> None:
    store, clock = clocked.store, clocked.clock
    events = seal_chain([created(), note(1), note(2)])
    await import_events(store, events[:1], ttl_s=10)
    clock.advance(11)
    lease = await store.acquire_lease(RUN_ID, owner="w2", ttl_s=10)
    with pytest.raises(AppendConflict):
        await store.append(lease, events[2:], summary=summary_of(fold(events)))
    await store.append(lease, events[1:], summary=summary_of(fold(events)))
    assert (await store.get_run(RUN_ID)).head_seq == 3


# -- reads -------------------------------------------------------------------------------


async def test_read_rows_returns_the_half_open_range_in_seq_order(store: Store) -> None:
    events = seal_chain([created(), *(note(i) for i in range(1, 10))])
    await import_events(store, events)

    async def seqs(**kw: int | None) -> list[int]:
        return [r.seq for r in await store.read_rows(RUN_ID, **kw)]

    assert await seqs() == list(range(1, 11))
    assert await seqs(after_seq=3) == list(range(4, 11))
    assert await seqs(until_seq=3) == [1, 2, 3]
    assert await seqs(after_seq=3, until_seq=6) == [4, 5, 6]
    assert await seqs(after_seq=6, until_seq=6) == []
    assert await seqs(after_seq=7, until_seq=2) == []
    assert await seqs(after_seq=10) == []
    assert await seqs(after_seq=0, until_seq=100) == list(range(1, 11))


async def test_read_rows_at_returns_only_the_stored_seqs_asked_for(store: Store) -> None:
    events = seal_chain([created(), *(note(i) for i in range(1, 10))])
    await import_events(store, events)
    rows = await store.read_rows_at(RUN_ID, [7, 3, 3, 42, 0, 10])
    assert [r.seq for r in rows] == [3, 7, 10]
    assert [bytes(r.raw) for r in rows] == [events[2].raw, events[6].raw, events[9].raw]
    assert await store.read_rows_at(RUN_ID, []) == []


async def test_read_rows_at_handles_more_seqs_than_one_query_takes(store: Store) -> None:
    events = seal_chain([created(), *(note(i) for i in range(1, 1200))])
    await import_events(store, events)
    rows = await store.read_rows_at(RUN_ID, list(range(1, 1301)))
    assert [r.seq for r in rows] == list(range(1, 1201))


# -- snapshots ---------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [1, 2, 3])
async def test_snapshots_keep_only_the_newest_keep(store: Store, keep: int) -> None:
    events = seal_chain([created(), *(note(i) for i in range(1, 10))])
    lease = await import_events(store, events)
    for seq in (2, 4, 6, 8, 10):
        await store.put_snapshot(lease, RUN_ID, seq, seal_snapshot(fold(events[:seq])), keep=keep)
    snaps = await store.read_snapshots(RUN_ID)
    assert [seq for seq, _ in snaps] == [10, 8, 6, 4, 2][:keep]
    assert [bytes(raw) for _, raw in snaps] == [
        seal_snapshot(fold(events[:seq])) for seq in [10, 8, 6, 4, 2][:keep]
    ]


async def test_a_snapshot_put_out_of_order_still_keeps_the_newest(store: Store) -> None:
    events = seal_chain([created(), *(note(i) for i in range(1, 10))])
    lease = await import_events(store, events)
    for seq in (6, 10, 2, 8):
        await store.put_snapshot(lease, RUN_ID, seq, seal_snapshot(fold(events[:seq])), keep=2)
    assert [seq for seq, _ in await store.read_snapshots(RUN_ID)] == [10, 8]


async def test_a_snapshot_put_again_at_its_seq_replaces_it_and_keeps_the_newest(
    store: Store,
) -> None:
    events = seal_chain([created(), *(note(i) for i in range(1, 10))])
    lease = await import_events(store, events)
    for seq in (4, 6, 8):
        await store.put_snapshot(lease, RUN_ID, seq, b"old", keep=2)
    await store.put_snapshot(lease, RUN_ID, 8, b"new", keep=2)
    await store.put_snapshot(lease, RUN_ID, 4, b"too old", keep=2)
    assert [(seq, bytes(raw)) for seq, raw in await store.read_snapshots(RUN_ID)] == [
        (8, b"new"),
        (6, b"old"),
    ]


async def test_put_snapshot_is_fenced_like_append(clocked: Clocked) -> None:
    store, clock = clocked.store, clocked.clock
    events = seal_chain([created(), note(1)])
    stale = await import_events(store, events, ttl_s=10)
    clock.advance(11)
    await store.acquire_lease(RUN_ID, owner="w2", ttl_s=10)
    with pytest.raises(LeaseLost):
        await store.put_snapshot(stale, RUN_ID, 2, seal_snapshot(fold(events)), keep=2)
    assert await store.read_snapshots(RUN_ID) == []


async def test_a_run_without_snapshots_reads_none(store: Store) -> None:
    await import_events(store, seal_chain([created()]))
    assert await store.read_snapshots(RUN_ID) == []


async def test_reads_of_an_unknown_run_find_nothing_and_get_run_says_it_is_unknown(
    store: Store,
) -> None:
    assert await store.read_rows("run_nope") == []
    assert await store.read_rows_at("run_nope", [1, 2]) == []
    assert await store.read_snapshots("run_nope") == []
    with pytest.raises(RunNotFound):
        await store.get_run("run_nope")


async def test_an_empty_append_writes_nothing_and_checks_nothing(clocked: Clocked) -> None:
    store, clock = clocked.store, clocked.clock
    events = seal_chain([created(), note(1)])
    stale = await import_events(store, events, ttl_s=10)
    clock.advance(11)
    await store.acquire_lease(RUN_ID, owner="w2", ttl_s=10)
    before = await store.get_run(RUN_ID)
    await store.append(stale, [], summary=summary_of(fold(events)))
    assert await store.get_run(RUN_ID) == before
    with pytest.raises(LeaseLost):  # a real append on the stale lease is still refused
        await store.append(
            stale, seal_chain([note(2)], after=events[-1]), summary=summary_of(fold(events))
        )


# -- truncate ----------------------------------------------------------------------------


async def test_truncate_cuts_events_and_snapshots_past_the_cut_and_moves_the_head(
    store: Store,
) -> None:
    events = seal_chain([created(), *(note(i) for i in range(1, 10))])
    lease = await import_events(store, events)
    for seq in (4, 8):
        await store.put_snapshot(lease, RUN_ID, seq, seal_snapshot(fold(events[:seq])), keep=3)
    await store.truncate(lease, RUN_ID, keep_through=6, head_hash=events[5].checksum)
    assert [r.seq for r in await store.read_rows(RUN_ID)] == [1, 2, 3, 4, 5, 6]
    assert [seq for seq, _ in await store.read_snapshots(RUN_ID)] == [4]
    record = await store.get_run(RUN_ID)
    assert (record.head_seq, record.head_hash) == (6, events[5].checksum)
    # The journal continues from the cut.
    more = seal_chain([note(100)], after=events[5])
    await store.append(lease, more, summary=summary_of(fold([*events[:6], *more])))
    assert (await store.get_run(RUN_ID)).head_seq == 7


async def test_truncate_then_appends_the_report_of_the_cut_in_the_same_transaction(
    store: Store,
) -> None:
    events = seal_chain([created(), *(note(i) for i in range(1, 10))])
    lease = await import_events(store, events)
    report = seal_chain([note(99)], after=events[5])
    summary = summary_of(fold([*events[:6], *report]))
    await store.truncate(
        lease, RUN_ID, keep_through=6, head_hash=events[5].checksum, then=report,
        summary=summary,
    )  # fmt: skip
    rows = await store.read_rows(RUN_ID)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert rows[-1].raw == report[0].raw
    record = await store.get_run(RUN_ID)
    assert (record.head_seq, record.head_hash) == (7, report[0].checksum)
    assert record.summary == summary


async def test_truncate_refuses_a_report_that_does_not_continue_the_cut(store: Store) -> None:
    events = seal_chain([created(), *(note(i) for i in range(1, 5))])
    lease = await import_events(store, events)
    wrong = seal_chain([note(99)], after=events[3])  # continues seq 4, not the cut at 2
    with pytest.raises(AppendConflict):
        await store.truncate(
            lease, RUN_ID, keep_through=2, head_hash=events[1].checksum, then=wrong,
            summary=summary_of(fold([*events[:4], *wrong])),
        )  # fmt: skip
    assert [r.seq for r in await store.read_rows(RUN_ID)] == [1, 2, 3, 4, 5]


async def test_truncate_is_fenced(clocked: Clocked) -> None:
    store, clock = clocked.store, clocked.clock
    events = seal_chain([created(), note(1), note(2)])
    stale = await import_events(store, events, ttl_s=10)
    clock.advance(11)
    await store.acquire_lease(RUN_ID, owner="w2", ttl_s=10)
    with pytest.raises(LeaseLost):
        await store.truncate(stale, RUN_ID, keep_through=1, head_hash=events[0].checksum)
    assert [r.seq for r in await store.read_rows(RUN_ID)] == [1, 2, 3]
    assert (await store.get_run(RUN_ID)).head_seq == 3


# -- helpers -----------------------------------------------------------------------------


def _created_and(drafts: list[EventDraft]) -> list[EventDraft]:
    return [created(), *drafts]


def _any_summary() -> RunSummary:
    return summary_of(fold(seal_chain([created()])))


async def _snapshot_of(store: Store) -> tuple[object, ...]:
    """Everything observable about RUN_ID, to show a refused call changed nothing."""
    record = await store.get_run(RUN_ID)
    rows = await store.read_rows(RUN_ID)
    snaps = await store.read_snapshots(RUN_ID)
    return (
        record,
        [(r.seq, r.type, bytes(r.raw)) for r in rows],
        [(s, bytes(b)) for s, b in snaps],
    )
