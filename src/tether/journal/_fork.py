"""Forks: a new run from a verified prefix of another, and what the fork leaves behind.

A fork is the way out of a damaged or regretted run (nothing committed is ever cut), so
it lists every tool call after the fork point whose effect the new run will not know of.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from .._clock import Clock, FakeClock, SystemClock, iso
from ..errors import UsageError
from ..events import GENESIS_HASH, Event, EventDecodeError, EventDraft
from ..state import fold
from ._base import Store, summary_of
from ._integrity import verify_row, walk
from ._journal import DEFAULT_KEEP_SNAPSHOTS, DEFAULT_SNAPSHOT_EVERY, RunJournal, new_run_id

__all__ = ["DiscardedCall", "calls_after", "fork_run"]


@dataclass(frozen=True, kw_only=True, slots=True)
class DiscardedCall:
    """A tool call recorded after a fork point: the fork does not know it happened."""

    seq: int
    """Seq of the call's `tool.requested` in the parent run."""
    name: str
    key: str | None
    """The idempotency key the call was given (a deduplicating tool recognises it)."""
    idempotent: bool | None
    """As journaled with the call; None for journals from before it was recorded."""
    outcome: str
    """`completed`, `failed`, or `in flight` (requested, no outcome recorded)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "name": self.name,
            "key": self.key,
            "idempotent": self.idempotent,
            "outcome": self.outcome,
        }


async def calls_after(store: Store, run_id: str, at_seq: int) -> tuple[list[DiscardedCall], int]:
    """The tool calls whose outcome a fork at `at_seq` would discard (they may have had
    effects), and how many stored events after `at_seq` could not be read (damaged ones
    may hide more calls). Reads each event on its own: the range is usually damaged."""
    rows = await store.read_rows(run_id, after_seq=at_seq)
    unreadable = 0
    requested: dict[str, Event] = {}
    outcomes: dict[str, str] = {}
    for row in rows:
        try:
            event = verify_row(row)
        except EventDecodeError:
            unreadable += 1
            continue
        if event.type == "tool.requested":
            requested[event.payload.get("call_id", "")] = event
        elif event.type in ("tool.completed", "tool.failed"):
            call_id = event.payload.get("call_id", "")
            outcomes[call_id] = event.type.partition(".")[2]
            cause = event.causation_id or ""
            if call_id not in requested and cause.startswith(f"{run_id}:"):
                # Requested before the fork point: the fork has the request, not its result.
                seq = int(cause.rpartition(":")[2])
                for before in await store.read_rows_at(run_id, [seq]):
                    with contextlib.suppress(EventDecodeError):
                        requested[call_id] = verify_row(before)
    found = []
    for call_id, event in requested.items():
        outcome = outcomes.get(call_id)
        if outcome is None and event.seq <= at_seq:
            continue
        p = event.payload
        idempotent = p.get("idempotent")
        found.append(
            DiscardedCall(
                seq=event.seq,
                name=str(p.get("name", "?")),
                key=p.get("idempotency_key"),
                idempotent=idempotent if isinstance(idempotent, bool) else None,
                outcome=outcome or "in flight",
            )
        )
    found.sort(key=lambda c: c.seq)
    return found, unreadable


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
    parent = fold(result.events)
    first_state = fold(copied[:1])
    created = copied[0]
    # A fork is listed by its own creation time: its `run.forked` is sealed at this
    # instant, which the fold takes as the fork's `created_at`, like its index row.
    now = clock.time()
    await store.create_run(
        created,
        agent=record.agent,
        tenant=record.tenant,
        parent_run_id=run_id,
        summary=summary_of(first_state),
        created_at=iso(now),
    )
    lease = await store.acquire_lease(new_id, owner=owner, ttl_s=60)
    try:
        journal = RunJournal(
            store,
            lease,
            first_state,
            clock=FakeClock(now),
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
                payload={
                    "from_run": run_id,
                    "from_event": f"{run_id}:{at_seq}",
                    "key_base": parent.key_base or run_id,
                    # A fork point just after a cycle began (before its model request) leaves
                    # that cycle to be started again, so it keeps its number and its keys.
                    "cycle": parent.cycle - (1 if result.events[-1].type == "cycle.started" else 0),
                },
                causation_id=f"{run_id}:{at_seq}",
            )
        )
    finally:
        await store.release_lease(lease)
    return new_id
