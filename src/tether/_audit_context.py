"""The model's context at a decision, rebuilt from indexed lookups (checked against the count
the request journaled) or, when that is impossible, replayed from the nearest snapshot."""

from __future__ import annotations

from dataclasses import dataclass, field

from ._audit_reader import ContextEntry, Reader
from .events import Event, EventDecodeError
from .journal import Store, read_events
from .journal._index import RowQuery
from .journal._integrity import StaleSnapshot, open_snapshot
from .state import RunState, fold

__all__ = ["CONTEXT_TYPES", "ContextInfo", "context_at", "context_of"]

CONTEXT_TYPES = frozenset(
    {
        "message.system", "message.user", "model.completed", "tool.completed",
        "tool.failed", "tool.unknown", "context.compacted",
    }
)  # fmt: skip
"""Event types the fold appends to the model's context."""
_TAIL_TYPES = tuple(sorted(CONTEXT_TYPES - {"context.compacted"}))
_MESSAGE_TYPES = ("message.system", "message.user")


@dataclass(frozen=True, kw_only=True, slots=True)
class ContextInfo:
    """What was in the model's context when it made a decision."""

    run_id: str
    at_seq: int
    """The context is `fold(events with seq < at_seq).context`."""
    seqs: tuple[int, ...]
    """Seqs of the context's events (pinned first, then the summary, then the tail)."""
    method: str
    """`index` (rebuilt from indexed lookups and checked) or `replay` (folded)."""
    entries: tuple[ContextEntry, ...] = field(default=(), repr=False)
    estimated_tokens: int | None = None
    """The runtime's token estimate of the context, journaled with the request."""
    input_tokens: int | None = None
    """Input tokens the provider counted for the call (from the decision's usage)."""


async def context_at(store: Store, run_id: str, at_seq: int) -> ContextInfo:
    """The model context of run `run_id` just before seq `at_seq`, as a set of events."""
    return await context_of(Reader(store), run_id, at_seq, expected=None)


async def context_of(
    reader: Reader, run_id: str, at_seq: int, *, expected: int | None
) -> ContextInfo:
    rebuilt = await _rebuild(reader, run_id, at_seq)
    if rebuilt is not None and expected is not None and len(rebuilt) == expected:
        return ContextInfo(
            run_id=run_id,
            at_seq=at_seq,
            seqs=tuple(e.seq for e in rebuilt),
            method="index",
            entries=tuple(rebuilt),
        )
    state = await _replay(reader, run_id, at_seq)
    found = {e.seq: e for e in rebuilt or ()}
    missing = [s for s in state.context if s not in found]
    if missing:
        for entry in await reader.entries(
            RowQuery(run_id=run_id, types=tuple(sorted(CONTEXT_TYPES)), after_seq=min(missing) - 1,
                     before_seq=max(missing) + 1)
        ):  # fmt: skip
            found.setdefault(entry.seq, entry)
    return ContextInfo(
        run_id=run_id,
        at_seq=at_seq,
        seqs=tuple(state.context),
        method="replay",
        entries=tuple(found[s] for s in state.context if s in found),
    )


def _entry(event: Event) -> ContextEntry:
    return ContextEntry(event.seq, event.type, event.visibility)


async def _rebuild(reader: Reader, run_id: str, at_seq: int) -> list[ContextEntry] | None:
    """The context from indexed lookups, or None when this journal does not allow it.

    The pinned messages and the newest compaction are read and verified; the tail (up to
    a window of events) is listed from the index columns alone, and the whole is checked
    against the count the request journaled. `tether doctor` verifies those columns.
    """
    messages = await reader.query(RowQuery(run_id=run_id, types=_MESSAGE_TYPES, before_seq=at_seq))
    pinned = [e for e in messages if e.payload.get("pinned", True)]
    pinned_seqs = {e.seq for e in pinned}
    last = await reader.query(
        RowQuery(
            run_id=run_id,
            types=("context.compacted",),
            before_seq=at_seq,
            newest_first=True,
            limit=1,
        )
    )
    summary = last[0] if last else None
    start = 1
    if summary is not None:
        found = await _tail_start(reader, summary, depth=0)
        if found is None:
            return None
        start = found
    tail = await reader.entries(
        RowQuery(run_id=run_id, types=_TAIL_TYPES, after_seq=start - 1, before_seq=at_seq)
    )
    return [
        *(_entry(e) for e in pinned),
        *([_entry(summary)] if summary is not None else []),
        *(e for e in tail if e.seq not in pinned_seqs),
    ]


async def _tail_start(reader: Reader, compaction: Event, *, depth: int) -> int | None:
    """The first seq of the tail a compaction kept (every later context event is in it)."""
    value = compaction.payload.get("removed")
    if not isinstance(value, list) or not all(isinstance(s, int) for s in value):
        return None
    removed: list[int] = value
    if not removed or depth > 50:
        return None
    previous = await reader.get(compaction.run_id, removed[0])
    if previous is not None and previous.type == "context.compacted":
        others = removed[1:]
        if not others:
            # Only the previous summary went: the kept tail is the one it kept.
            return await _tail_start(reader, previous, depth=depth + 1)
    else:
        others = removed
    return max(others) + 1


async def _replay(reader: Reader, run_id: str, at_seq: int) -> RunState:
    """fold(events < at_seq), from the newest snapshot at or before it when there is one."""
    base, after = RunState(), 0
    for seq, raw in await reader.store.read_snapshots(run_id):
        if seq >= at_seq:
            continue
        try:
            snapshot = open_snapshot(run_id, seq, raw)
        except (StaleSnapshot, EventDecodeError):
            continue
        anchor = await reader.get(run_id, seq)
        if anchor is not None and anchor.checksum == snapshot.head_hash:
            base, after = snapshot.state, seq
            break
    reader.lookups += 1
    events = await read_events(reader.store, run_id, after_seq=after, until_seq=at_seq - 1)
    return fold(events, base)
