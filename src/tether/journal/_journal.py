"""Reading and writing one run's journal: seal, verify, fold, snapshot, repair, fork.

Loading is the newest valid snapshot plus the verified tail, so recovery cost does not
grow with run length. A damaged tail (a torn last write) is cut back to the last good
event and the cut is journaled; damage before the tail stops with a CorruptionError
that names the run, the seq and the way out (`tether fork RUN --at SEQ`).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

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

__all__ = [
    "DEFAULT_KEEP_SNAPSHOTS",
    "DEFAULT_SNAPSHOT_EVERY",
    "Loaded",
    "RunJournal",
    "RunReport",
    "create_run",
    "fork_run",
    "load_run",
    "new_run_id",
    "read_events",
    "verify_run",
]

DEFAULT_SNAPSHOT_EVERY = 200
"""Events between snapshots: bounds the tail a load must replay."""
DEFAULT_KEEP_SNAPSHOTS = 2
"""Older snapshots are dropped so their copies of state never add up (linear storage)."""


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
    if result.fault is not None:
        if result.valid_after_fault:
            fault = result.fault
            good = (fault.seq or 1) - 1
            raise CorruptionError(
                run_id,
                fault.seq,
                fault.what,
                repair=f"repair: tether fork {run_id} --at {good}" if good else "",
            )
        torn = result.fault
    elif last_seq < record.head_seq:
        torn = Problem(
            kind="missing",
            seq=last_seq + 1,
            what=f"events {last_seq + 1}..{record.head_seq} are missing from the journal end",
        )
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
    return result.events


@dataclass(kw_only=True, slots=True)
class RunReport:
    """What `doctor` found in one run."""

    run_id: str
    events: int
    head_seq: int
    snapshots: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify_run(store: Store, run_id: str) -> RunReport:
    """Walk the whole journal from seq 1, every snapshot, and the run index."""
    record = await store.get_run(run_id)
    # Up to the recorded head only; rows past it are checked below, against a fresh read of
    # the record, so a live writer appending meanwhile is not reported as damage.
    rows = await store.read_rows(run_id, until_seq=record.head_seq)
    result = walk(rows, start_seq=1, prev_hash=GENESIS_HASH)
    problems: list[Problem] = []
    if result.fault is not None:
        fault = result.fault
        where = "mid-journal" if result.valid_after_fault else "tail"
        problems.append(
            replace(fault, what=f"{fault.what} ({where}; last good seq {len(result.events)})")
        )
    last = result.events[-1] if result.events else None
    if result.fault is None:
        if last is None or last.seq < record.head_seq:
            have = last.seq if last else 0
            problems.append(
                Problem(
                    kind="missing",
                    seq=have + 1,
                    what=f"events {have + 1}..{record.head_seq} are missing from the journal end",
                )
            )
        elif last.seq > record.head_seq or last.checksum != record.head_hash:
            problems.append(
                Problem(kind="head", seq=record.head_seq, what="run index disagrees with journal")
            )
    by_seq = {e.seq: e for e in result.events}
    snapshots = await store.read_snapshots(run_id)
    past_head: list[int] = []
    for seq, raw in snapshots:
        try:
            snap = open_snapshot(run_id, seq, raw)
        except StaleSnapshot:
            continue
        except EventDecodeError as exc:
            problems.append(Problem(kind="snapshot", seq=seq, what=str(exc)))
            continue
        if seq > record.head_seq:
            past_head.append(seq)
            continue
        anchor = by_seq.get(seq)
        if anchor is None and result.fault is None:
            problems.append(Problem(kind="snapshot", seq=seq, what="snapshot is past the journal"))
        elif anchor is not None and anchor.checksum != snap.head_hash:
            problems.append(Problem(kind="snapshot", seq=seq, what="snapshot does not match"))
        elif anchor is not None and fold(e for e in result.events if e.seq <= seq) != snap.state:
            problems.append(Problem(kind="snapshot", seq=seq, what="snapshot state differs"))
    if result.fault is None and last is not None:
        state = fold(result.events)
        if summary_of(state) != record.summary:
            problems.append(
                Problem(kind="index", seq=None, what="run index summary differs from the fold")
            )
    beyond = await store.read_rows(run_id, after_seq=record.head_seq)
    if beyond or past_head:
        # Appends move rows and head together, so a head read now covers every row and
        # snapshot a live writer added since `record` was read; anything past it is damage.
        latest = await store.get_run(run_id)
        for seq in past_head:
            if seq > latest.head_seq:
                problems.append(
                    Problem(kind="snapshot", seq=seq, what="snapshot is past the journal")
                )
        if any(not isinstance(r.seq, int) or r.seq > latest.head_seq for r in beyond):
            problems.append(
                Problem(kind="head", seq=latest.head_seq, what="events past the run index head")
            )
    return RunReport(
        run_id=run_id,
        events=len(rows),
        head_seq=record.head_seq,
        snapshots=len(snapshots),
        problems=problems,
    )


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

    def stage(self, *drafts: EventDraft) -> list[Event]:
        """Seal and fold drafts now, and write them with the next `append` (or `flush`).

        For an outcome whose only reader is the next step: the loop stages the last tool
        result of a turn, and the next model request carries it to disk in the same
        commit. A crash before then loses it exactly as a crash just before its own
        append would have: recovery sees the call in flight.
        """
        events, self.state = self._seal(drafts)
        self._staged.extend(events)
        return events

    async def flush(self) -> None:
        """Make staged events durable now."""
        if self._staged:
            await self.append()

    async def append(
        self, *drafts: EventDraft, also: Callable[[], None] | None = None
    ) -> list[Event]:
        """Seal, fold and durably append drafts (after any staged events) as one
        transaction; returns the new events. `also` runs inside that transaction (see
        `Store.append`)."""
        durable = self._durable_seq
        events, new_state = self._seal(drafts)
        batch = [*self._staged, *events] if self._staged else events
        await self.store.append(self.lease, batch, summary=summary_of(new_state), also=also)
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
    first = draft.seal(run_id=run_id, seq=1, prev_hash=GENESIS_HASH, ts=iso(clock.time()))
    state = fold([first])
    parent_run = parent_event.rpartition(":")[0] if parent_event else None
    await store.create_run(
        first, agent=agent, tenant=tenant, parent_run_id=parent_run, summary=summary_of(state)
    )
    return state


async def fork_run(
    store: Store,
    run_id: str,
    *,
    at_seq: int,
    owner: str = "fork",
    clock: Clock | None = None,
) -> str:
    """Start a new run whose journal is a verified copy of `run_id` up to `at_seq`."""
    clock = clock or SystemClock()
    record = await store.get_run(run_id)
    if at_seq < 1:
        raise UsageError("--at must be a seq of 1 or more")
    rows = await store.read_rows(run_id, until_seq=at_seq)
    result = walk(rows, start_seq=1, prev_hash=GENESIS_HASH)
    if len(result.events) < at_seq:
        if not rows or (rows[-1].seq < at_seq and result.fault is None):
            raise UsageError(f"run {run_id} has no event {at_seq} (head is {record.head_seq})")
        good = len(result.events)
        fault = result.fault
        raise UsageError(
            f"cannot fork {run_id} at {at_seq}: "
            f"{fault.what if fault else 'damaged'} at seq {fault.seq if fault else '?'}; "
            f"the last good point is {good}"
        )
    new_id = new_run_id(clock)
    prefix = f"{run_id}:"

    def relink(event: Event) -> EventDraft:
        cause = event.causation_id
        if cause and cause.startswith(prefix):
            cause = f"{new_id}:{cause[len(prefix) :]}"
        return EventDraft(
            type=event.type,
            payload=event.payload,
            correlation_id=event.correlation_id,
            causation_id=cause,
            visibility=event.visibility,
            actor=event.actor,
            usage=event.usage,
        )

    copied: list[Event] = []
    prev = GENESIS_HASH
    for seq, event in enumerate(result.events, start=1):
        sealed = relink(event).seal(run_id=new_id, seq=seq, prev_hash=prev, ts=event.ts)
        copied.append(sealed)
        prev = sealed.checksum
    first_state = fold(copied[:1])
    created = copied[0]
    await store.create_run(
        created,
        agent=record.agent,
        tenant=record.tenant,
        parent_run_id=run_id,
        summary=summary_of(first_state),
    )
    lease = await store.acquire_lease(new_id, owner=owner, ttl_s=60)
    try:
        journal = RunJournal(
            store,
            lease,
            first_state,
            clock=clock,
            snapshot_every=DEFAULT_SNAPSHOT_EVERY,
            keep_snapshots=DEFAULT_KEEP_SNAPSHOTS,
        )
        if len(copied) > 1:
            rest = copied[1:]
            state = fold(rest, first_state)
            await store.append(lease, rest, summary=summary_of(state))
            journal.state = state
        await journal.append(
            EventDraft(
                type="run.forked",
                payload={"from_run": run_id, "from_event": f"{run_id}:{at_seq}"},
                causation_id=f"{run_id}:{at_seq}",
            )
        )
    finally:
        await store.release_lease(lease)
    return new_id
