"""Reading and writing one run's journal: seal, verify, fold, snapshot, repair.

Loading is the newest valid snapshot plus the verified tail, so recovery cost does not
grow with run length. Committed events that do not verify stop the run with a
CorruptionError naming the run, the first bad seq and the ways out (`tether fork RUN --at
SEQ`, or a backup): nothing committed is cut automatically. Only a store that can tear a
write (`torn_writes = True`; none of the built-in ones) has a damaged last write cut back
to the last good event, with the cut journaled.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .._clock import Clock, SystemClock, iso
from ..errors import CorruptionError, LeaseLost, UsageError
from ..events import GENESIS_HASH, Event, EventDecodeError, EventDraft
from ..state import RunState, fold
from ._base import Lease, RunRecord, Store, summary_of
from ._integrity import (
    Problem,
    StaleSnapshot,
    open_snapshot,
    seal_snapshot,
    verify_row,
    walk,
)
from ._secrets import keep_secrets

__all__ = [
    "DEFAULT_KEEP_SNAPSHOTS",
    "DEFAULT_SNAPSHOT_EVERY",
    "Loaded",
    "RunJournal",
    "create_run",
    "load_run",
    "new_run_id",
    "read_events",
]

DEFAULT_SNAPSHOT_EVERY = 200
"""Events between snapshots: bounds the tail a load must replay."""
DEFAULT_KEEP_SNAPSHOTS = 2
"""Older snapshots are dropped so their copies of state never add up (linear storage)."""


def torn_writes_possible(store: Store) -> bool:
    """Whether a crash can leave a half-written event at the end of this store's journals.

    SQLite and PostgreSQL commit atomically, and the memory store cannot crash apart from
    its process, so none of the built-in stores can: for them a tail that does not verify
    is damage. A store that appends without transactions declares `torn_writes = True`.
    """
    return bool(getattr(store, "torn_writes", False))


def damaged(run_id: str, problem: Problem, *, good: int) -> CorruptionError:
    """The refusal for a run whose committed journal does not verify: where, what, and
    the two ways out (nothing committed is ever cut automatically)."""
    if good >= 1:
        repair = (
            f"fork from the last good event: tether fork {run_id} --at {good}; "
            "or restore the store from a backup"
        )
    else:
        repair = "restore the store from a backup"
    return CorruptionError(run_id, problem.seq, problem.what, repair=repair)


async def lost_problem(store: Store, run_id: str, *, head_seq: int | None) -> Problem | None:
    """The run's earliest commit that was synced before a side effect and that the
    store no longer holds (only stores that keep a sync log can tell; see `_synclog`)."""
    find = getattr(store, "lost_synced_commits", None)
    lost = await find(run_id) if find is not None else []
    if not lost:
        return None
    first = min(record.seq for record in lost)
    now = "the run is gone" if head_seq is None else f"the journal now ends at seq {head_seq}"
    return Problem(
        kind="lost",
        seq=min(first, (head_seq or 0) + 1),
        what=(
            f"the store lost committed events: the sync log shows seq {first} was synced "
            f"before a side effect, so that effect may have happened, and {now}"
        ),
    )


def new_run_id(clock: Clock | None = None) -> str:
    """Time-ordered, so listings sort naturally: run_<ms since epoch, base36><random>."""
    ms = int((clock or SystemClock()).time() * 1000)
    return f"run_{_base36(ms)}{secrets.token_hex(4)}"


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out or "0"


@dataclass(kw_only=True, slots=True)
class Loaded:
    """A run's verified state, and how it was obtained."""

    record: RunRecord
    state: RunState
    snapshot_seq: int | None
    """The snapshot the load started from, if any."""
    replayed: int
    """Events folded on top of the snapshot."""
    torn_tail: Problem | None = None
    """A damaged tail found (and, for writers, cut) during the load."""
    notes: list[str] = field(default_factory=list)


async def load_run(store: Store, run_id: str) -> Loaded:
    """The run's latest verified state: newest usable snapshot + verified tail."""
    record = await store.get_run(run_id)
    lost = await lost_problem(store, run_id, head_seq=record.head_seq)
    if lost is not None:
        raise damaged(run_id, lost, good=(lost.seq or 1) - 1)
    notes: list[str] = []
    for seq, raw in await store.read_snapshots(run_id):
        if seq > record.head_seq:
            notes.append(f"snapshot at seq {seq} is past the journal head; ignored")
            continue
        try:
            snapshot = open_snapshot(run_id, seq, raw)
        except StaleSnapshot as exc:
            notes.append(str(exc))
            continue
        except EventDecodeError as exc:
            notes.append(f"snapshot at seq {seq} is damaged ({exc}); using an older one")
            continue
        anchor = await store.read_rows_at(run_id, [seq])
        try:
            anchored = bool(anchor) and verify_row(anchor[0]).checksum == snapshot.head_hash
        except EventDecodeError:
            anchored = False
        if not anchored:
            notes.append(f"snapshot at seq {seq} does not match the journal; using an older one")
            continue
        return await _replay_tail(store, record, snapshot.state, seq, notes)
    return await _replay_tail(store, record, RunState(), 0, notes)


async def _replay_tail(
    store: Store, record: RunRecord, base: RunState, from_seq: int, notes: list[str]
) -> Loaded:
    run_id = record.run_id
    # Only up to the head the record names: a live writer may append after the record was
    # read, and those rows are not part of the journal this load is consistent with.
    rows = await store.read_rows(run_id, after_seq=from_seq, until_seq=record.head_seq)
    result = walk(rows, start_seq=from_seq + 1, prev_hash=base.last_hash or GENESIS_HASH)
    state = fold(result.events, base)
    last_seq = state.last_seq
    torn: Problem | None = None
    problem: Problem | None = result.fault
    if problem is None and last_seq < record.head_seq:
        problem = Problem(
            kind="missing",
            seq=last_seq + 1,
            what=f"events {last_seq + 1}..{record.head_seq} are missing from the journal end",
        )
    if problem is not None:
        if result.valid_after_fault or not torn_writes_possible(store):
            # On a store whose commits are atomic (SQLite, PostgreSQL) a committed event
            # that does not verify is damage, never a torn write: cutting it would forget
            # effects that happened. Fail closed and name the ways out.
            raise damaged(run_id, problem, good=(problem.seq or 1) - 1)
        torn = problem
    elif state.last_hash != record.head_hash:
        raise CorruptionError(
            run_id,
            record.head_seq,
            "the run index disagrees with the journal head",
            # The events themselves verify up to last_seq: that is the last good point.
            repair=f"repair: tether fork {run_id} --at {last_seq}",
        )
    if last_seq == 0:
        raise CorruptionError(run_id, 1, torn.what if torn else "the journal is empty")
    return Loaded(
        record=record,
        state=state,
        snapshot_seq=from_seq or None,
        replayed=len(result.events),
        torn_tail=torn,
        notes=notes,
    )


async def read_events(
    store: Store, run_id: str, *, after_seq: int = 0, until_seq: int | None = None
) -> list[Event]:
    """Verified events of a range; raises CorruptionError on the first fault in it."""
    rows = await store.read_rows(run_id, after_seq=after_seq, until_seq=until_seq)
    prev_hash = GENESIS_HASH
    if after_seq:
        before = await store.read_rows_at(run_id, [after_seq])
        if not before:
            raise CorruptionError(run_id, after_seq, f"event {after_seq} is missing")
        try:
            prev_hash = verify_row(before[0]).checksum
        except EventDecodeError as exc:
            raise CorruptionError(run_id, after_seq, str(exc)) from None
    result = walk(rows, start_seq=after_seq + 1, prev_hash=prev_hash)
    if result.fault is not None:
        raise CorruptionError(run_id, result.fault.seq, result.fault.what)
    have = result.events[-1].seq if result.events else after_seq
    if until_seq is not None and have < until_seq:
        # A range that stops short is whole only if the journal itself ends there.
        head = (await store.get_run(run_id)).head_seq
        if have < min(until_seq, head):
            raise CorruptionError(run_id, have + 1, f"event {have + 1} is missing")
    return result.events


class RunJournal:
    """A run's journal as its lease holder sees it: verified state and fenced appends."""

    def __init__(
        self,
        store: Store,
        lease: Lease,
        state: RunState,
        *,
        clock: Clock,
        snapshot_every: int,
        keep_snapshots: int,
    ) -> None:
        self.store = store
        self.lease = lease
        self.state = state
        """The run as its holder sees it: durable events, then any staged ones."""
        self.clock = clock
        self.snapshot_every = snapshot_every
        self.keep_snapshots = keep_snapshots
        self._staged: list[Event] = []
        self._durable_seq = state.last_seq
        self._lock = asyncio.Lock()
        """Held from sealing to the store's answer: seq and prev_hash come from the state at
        seal time, so concurrent results (parallel tool calls) must seal one at a time."""

    @property
    def staged(self) -> int:
        """How many sealed events wait for the next append to make them durable."""
        return len(self._staged)

    @property
    def run_id(self) -> str:
        return self.lease.run_id

    @classmethod
    async def open(
        cls,
        store: Store,
        lease: Lease,
        *,
        clock: Clock | None = None,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS,
    ) -> tuple[RunJournal, Loaded]:
        """Load the run under `lease`, cutting a torn tail (and journaling the cut)."""
        await keep_secrets(store)
        loaded = await load_run(store, lease.run_id)
        journal = cls(
            store,
            lease,
            loaded.state,
            clock=clock or SystemClock(),
            snapshot_every=snapshot_every,
            keep_snapshots=keep_snapshots,
        )
        if loaded.torn_tail is None and snapshot_every and loaded.replayed >= snapshot_every:
            # A long replay (no snapshot, or one from another fold version): save the work.
            state = loaded.state
            await store.put_snapshot(
                lease, lease.run_id, state.last_seq, seal_snapshot(state), keep=keep_snapshots
            )
        if loaded.torn_tail is not None:
            good = loaded.state.last_seq
            report, repaired = journal._seal(
                [
                    EventDraft(
                        type="journal.repaired",
                        payload={
                            "cut_after_seq": good,
                            "stored_head_seq": loaded.record.head_seq,
                            "fault": loaded.torn_tail.to_json(),
                        },
                    )
                ]
            )
            # The cut and its report are one transaction: neither lands without the other.
            await store.truncate(
                lease,
                lease.run_id,
                keep_through=good,
                head_hash=loaded.state.last_hash,
                then=report,
                summary=summary_of(repaired),
            )
            journal.state = repaired
            journal._durable_seq = repaired.last_seq
        return journal, loaded

    def _seal(self, drafts: Sequence[EventDraft]) -> tuple[list[Event], RunState]:
        state = self.state
        ts = iso(self.clock.time())
        events: list[Event] = []
        seq, prev = state.last_seq, state.last_hash
        for draft in drafts:
            seq += 1
            event = draft.seal(run_id=self.run_id, seq=seq, prev_hash=prev, ts=ts)
            events.append(event)
            prev = event.checksum
        return events, fold(events, state)

    async def stage(self, *drafts: EventDraft) -> list[Event]:
        """Seal and fold drafts now, and write them with the next `append` (or `flush`).

        For an outcome whose only reader is the next step: the loop stages the last tool
        result of a turn, and the next model request carries it to disk in the same
        commit. A crash before then loses it exactly as a crash just before its own
        append would have: recovery sees the call in flight. Waits for an append in
        flight, whose events the staged ones must follow.
        """
        async with self._lock:
            events, self.state = self._seal(drafts)
            self._staged.extend(events)
            return events

    async def flush(self) -> None:
        """Make staged events durable now."""
        if self._staged:
            await self.append()

    async def append(
        self, *drafts: EventDraft, also: Callable[[], None] | None = None, sync: bool = False
    ) -> list[Event]:
        """Seal, fold and durably append drafts (after any staged events) as one
        transaction; returns the new events. `also` runs inside that transaction and
        `sync` makes it survive power loss (see `Store.append`). Appends of one journal
        are serialised (see `_lock`)."""
        async with self._lock:
            return await self._append(drafts, also, sync)

    async def _append(
        self, drafts: Sequence[EventDraft], also: Callable[[], None] | None, sync: bool
    ) -> list[Event]:
        await keep_secrets(self.store)  # before any event that may hold a new one
        durable = self._durable_seq
        events, new_state = self._seal(drafts)
        batch = [*self._staged, *events] if self._staged else events
        await self.store.append(
            self.lease, batch, summary=summary_of(new_state), also=also, sync=sync
        )
        self._staged.clear()
        self.state = new_state
        self._durable_seq = new_state.last_seq
        every = self.snapshot_every
        if every and new_state.last_seq // every > durable // every:
            # The events are durable now. If a takeover fences the snapshot out, raising
            # would tell the caller its append failed; the new holder snapshots instead,
            # and this writer learns it lost the lease at its next append.
            with contextlib.suppress(LeaseLost):
                await self.store.put_snapshot(
                    self.lease,
                    self.run_id,
                    new_state.last_seq,
                    seal_snapshot(new_state),
                    keep=self.keep_snapshots,
                )
        return events


async def create_run(
    store: Store,
    *,
    agent: str,
    task: str,
    agent_version: str = "",
    model: str = "",
    limits: dict[str, object] | None = None,
    tenant: str | None = None,
    parent_event: str | None = None,
    run_id: str | None = None,
    metadata: dict[str, object] | None = None,
    clock: Clock | None = None,
) -> RunState:
    """Write a run's first event (`run.created`) and its index row atomically.

    `metadata` is kept in the event for tools such as the CLI (how to rebuild the agent).
    """
    clock = clock or SystemClock()
    run_id = run_id or new_run_id(clock)
    draft = EventDraft(
        type="run.created",
        payload={
            "agent": agent,
            "agent_version": agent_version,
            "task": task,
            "model": model,
            "limits": dict(limits or {}),
            "tenant": tenant,
            "parent_event": parent_event,
            "metadata": dict(metadata or {}),
        },
    )
    try:
        first = draft.seal(run_id=run_id, seq=1, prev_hash=GENESIS_HASH, ts=iso(clock.time()))
    except (UnicodeEncodeError, ValueError, TypeError) as exc:
        # The caller's input, not a fault of the store: say what cannot be recorded.
        raise UsageError(
            "the run cannot be recorded: its task or metadata holds something JSON text "
            f"cannot store (an unpaired surrogate, NaN, a non-JSON value): {exc}"
        ) from None
    state = fold([first])
    parent_run = parent_event.rpartition(":")[0] if parent_event else None
    await keep_secrets(store)
    await store.create_run(
        first, agent=agent, tenant=tenant, parent_run_id=parent_run, summary=summary_of(state)
    )
    return state
