"""Invariant 4: a writer that lost its lease cannot write, so the journal never forks.

Stale writers are refused with LeaseLost even when their events continue the head
perfectly; after any interleaving of attempts by several writers (one process, two
SQLite connections, or two real processes on one file) the journal is one verified
chain made of exactly the appends that were reported as successful.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tether._clock import FakeClock
from tether.errors import LeaseLost
from tether.events import Event
from tether.journal import (
    Lease,
    MemoryStore,
    RunJournal,
    SQLiteStore,
    Store,
    create_run,
    load_run,
    read_events,
    verify_run,
)
from tether.journal._base import summary_of
from tether.state import fold

from .conftest import Clocked
from .helpers import RUN_ID, cycles, note, seal_chain

TTL = 30.0


async def test_a_writer_whose_lease_was_taken_over_cannot_append(clocked: Clocked) -> None:
    store, clock = clocked.store, clocked.clock
    await create_run(store, agent="a", task="t", run_id=RUN_ID, clock=clock)
    lease_a = await store.acquire_lease(RUN_ID, owner="A", ttl_s=TTL)
    a, _ = await RunJournal.open(store, lease_a, clock=clock)
    await a.append(*cycles(1))

    clock.advance(TTL + 1)  # A stalls (GC pause, partition) and its lease runs out
    lease_b = await store.acquire_lease(RUN_ID, owner="B", ttl_s=TTL)
    assert lease_b.epoch > lease_a.epoch
    b, loaded = await RunJournal.open(store, lease_b, clock=clock)
    assert loaded.state == a.state

    a_before = a.state
    with pytest.raises(LeaseLost):
        await a.append(note(1))
    await b.append(note(2))
    with pytest.raises(LeaseLost):
        await a.append(note(3))
    with pytest.raises(LeaseLost):
        await store.renew_lease(lease_a, ttl_s=TTL)
    assert a.state == a_before

    events = await read_events(store, RUN_ID)
    assert [e.payload.get("i") for e in events if e.type == "note"] == [2]
    assert (await verify_run(store, RUN_ID)).ok


async def test_a_stale_epoch_is_refused_even_when_its_events_continue_the_head(
    clocked: Clocked,
) -> None:
    store, clock = clocked.store, clocked.clock
    await create_run(store, agent="a", task="t", run_id=RUN_ID, clock=clock)
    stale = await store.acquire_lease(RUN_ID, owner="A", ttl_s=TTL)
    clock.advance(TTL + 1)
    fresh = await store.acquire_lease(RUN_ID, owner="B", ttl_s=TTL)
    b, _ = await RunJournal.open(store, fresh, clock=clock)
    await b.append(note(1), note(2))

    # The stale writer somehow knows the exact head: right seq, right prev_hash.
    head = (await read_events(store, RUN_ID))[-1]
    perfect = seal_chain([note(3)], after=head)
    with pytest.raises(LeaseLost):
        await store.append(stale, perfect, summary=summary_of(fold([head, *perfect])))
    # Same owner name with the old epoch is refused too: the epoch is the fence.
    with pytest.raises(LeaseLost):
        await store.append(
            Lease(run_id=RUN_ID, owner="B", epoch=fresh.epoch - 1, expires_at=fresh.expires_at),
            perfect,
            summary=summary_of(fold([head, *perfect])),
        )
    assert (await store.get_run(RUN_ID)).head_seq == 3
    # ... while the current holder can append exactly those bytes.
    await store.append(fresh, perfect, summary=summary_of(fold([*await _all(store), *perfect])))
    assert (await verify_run(store, RUN_ID)).ok


async def test_a_stale_writer_cannot_truncate_or_snapshot_either(clocked: Clocked) -> None:
    store, clock = clocked.store, clocked.clock
    await create_run(store, agent="a", task="t", run_id=RUN_ID, clock=clock)
    stale = await store.acquire_lease(RUN_ID, owner="A", ttl_s=TTL)
    a, _ = await RunJournal.open(store, stale, clock=clock, snapshot_every=2)
    await a.append(note(1))
    clock.advance(TTL + 1)
    await store.acquire_lease(RUN_ID, owner="B", ttl_s=TTL)
    before = await _all(store)
    with pytest.raises(LeaseLost):
        await store.truncate(stale, RUN_ID, keep_through=1, head_hash=before[0].checksum)
    with pytest.raises(LeaseLost):
        await store.put_snapshot(stale, RUN_ID, 2, b"{}", keep=2)
    assert [e.raw for e in await _all(store)] == [e.raw for e in before]


async def test_an_append_whose_snapshot_is_fenced_out_still_reports_its_events(
    clocked: Clocked,
) -> None:
    """The events are durable before the snapshot; a takeover in between is no failure."""
    store, clock = clocked.store, clocked.clock
    await create_run(store, agent="a", task="t", run_id=RUN_ID, clock=clock)
    lease = await store.acquire_lease(RUN_ID, owner="A", ttl_s=TTL)

    class TakeoverAfterAppend:
        def __init__(self, inner: Store) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

        async def append(self, *args: object, **kw: object) -> None:
            await self.inner.append(*args, **kw)  # type: ignore[arg-type]
            clock.advance(TTL + 1)
            await self.inner.acquire_lease(RUN_ID, owner="B", ttl_s=TTL)

    a, _ = await RunJournal.open(TakeoverAfterAppend(store), lease, clock=clock, snapshot_every=2)  # type: ignore[arg-type]
    events = await a.append(note(1))
    assert [e.seq for e in events] == [2]
    assert [e.raw for e in (await _all(store))[1:]] == [e.raw for e in events]
    assert await store.read_snapshots(RUN_ID) == []
    with pytest.raises(LeaseLost):  # the next append is where A learns it was fenced
        await a.append(note(2))


# -- interleavings -----------------------------------------------------------------------


@dataclass
class Writer:
    name: str
    store: Store
    journal: RunJournal | None = None


@pytest.mark.parametrize("layout", ["memory", "sqlite", "sqlite-connection-per-writer"])
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_interleaved_writers_leave_one_chain_of_exactly_the_accepted_appends(
    tmp_path: Path, layout: str, seed: int
) -> None:
    rng = random.Random(seed)
    clock = FakeClock()
    path = tmp_path / "fence.db"
    shared: Store = (
        MemoryStore(clock=clock) if layout == "memory" else SQLiteStore(path, clock=clock)
    )
    writers = [
        Writer(
            name=f"w{i}",
            store=SQLiteStore(path, clock=clock)
            if layout == "sqlite-connection-per-writer"
            else shared,
        )
        for i in range(3)
    ]
    await create_run(shared, agent="a", task="t", run_id=RUN_ID, clock=clock)
    accepted: list[Event] = (await _all(shared))[:1]
    holder: Writer | None = None
    refused = 0
    for step in range(150):
        w = rng.choice(writers)
        action = rng.random()
        if action < 0.2 or w.journal is None:
            clock.advance(TTL + 1)  # whoever held the run has gone quiet
            lease = await w.store.acquire_lease(RUN_ID, owner=w.name, ttl_s=TTL)
            w.journal, loaded = await RunJournal.open(
                w.store, lease, clock=clock, snapshot_every=rng.choice([0, 5])
            )
            assert loaded.state.last_seq == accepted[-1].seq
            holder = w
            continue
        drafts = [note(step) for _ in range(rng.randint(1, 3))]
        if w is holder:
            accepted.extend(await w.journal.append(*drafts))
            if rng.random() < 0.3:
                w.journal.lease = await w.store.renew_lease(w.journal.lease, ttl_s=TTL)
        else:
            before = w.journal.state
            with pytest.raises(LeaseLost):
                await w.journal.append(*drafts)
            assert w.journal.state == before
            refused += 1
    assert refused > 10
    stored = await _all(shared)
    assert [e.raw for e in stored] == [e.raw for e in accepted]
    report = await verify_run(shared, RUN_ID)
    assert report.ok, report.problems
    assert (await load_run(shared, RUN_ID)).state == fold(stored)
    for store in {id(w.store): w.store for w in writers}.values():
        await store.close()


# -- two real processes ------------------------------------------------------------------

WORKER = Path(__file__).with_name("fence_worker.py")


@pytest.mark.chaos
@pytest.mark.timeout(120)
def test_two_processes_fighting_over_one_sqlite_run_never_fork_it(tmp_path: Path) -> None:
    db = tmp_path / "fight.db"

    async def start() -> None:
        store = SQLiteStore(db)
        await create_run(store, agent="a", task="t", run_id=RUN_ID)
        await store.close()

    asyncio.run(start())
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(db), RUN_ID, name, "150"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("P1", "P2")
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:  # start both at once
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=90) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err

    ok: dict[int, tuple[int, str, str]] = {}
    lost = {"P1": 0, "P2": 0}
    for name, (out, _) in zip(("P1", "P2"), outputs, strict=True):
        for line in out.splitlines():
            parts = line.split()
            if parts[0] == "ok":
                seq = int(parts[2])
                assert seq not in ok, f"two writers were both told they appended seq {seq}"
                ok[seq] = (int(parts[1]), parts[3], name)
            elif parts[0] == "lost":
                lost[name] += 1
            else:
                pytest.fail(f"unexpected report from {name}: {line}")
    asyncio.run(_check_fight(db, ok, lost))


async def _check_fight(db: Path, ok: dict[int, tuple[int, str, str]], lost: dict[str, int]) -> None:
    store = SQLiteStore(db)
    events = await _all(store)
    report = await verify_run(store, RUN_ID)
    assert report.ok, report.problems
    # Every stored event after run.created was reported by exactly one writer, and the
    # bytes it was told it appended are the bytes in the journal.
    assert sorted(ok) == [e.seq for e in events[1:]]
    for event in events[1:]:
        _epoch, checksum, name = ok[event.seq]
        assert event.checksum == checksum
        assert event.payload["writer"] == name
    # Epochs only ever go up along the journal: a fenced writer never wrote later.
    epochs = [ok[e.seq][0] for e in events[1:]]
    assert epochs == sorted(epochs)
    assert sum(lost.values()) > 0, "the two writers never contended; the test proved nothing"
    assert len({name for _, _, name in ok.values()}) == 2
    await store.close()


async def _all(store: Store) -> list[Event]:
    return await read_events(store, RUN_ID)
