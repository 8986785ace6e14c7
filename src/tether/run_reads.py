"""Bounded reads of one run for the views of it (`tether show`, the console's run page).

A run is meant to last hours and 100,000 steps, and a view that shows a bounded amount of
it must read a bounded amount: its state from the newest snapshot and the tail after it
(`load_run`, as resume does), its timeline as a window of the newest events, its pins from
the folded state, and its rare events (approvals, health, endings) by indexed queries
that stop at the newest few. Nothing here decides what a role may see: callers hand the
events to a `Viewer`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._audit_reader import index_of
from .errors import CorruptionError
from .events import Event, EventDecodeError
from .journal import Store, read_events
from .journal._index import RowQuery
from .journal._integrity import verify_row
from .state import RunState
from .views import _TERMINAL, Viewer

__all__ = [
    "HEALTH_EVENT_TYPES",
    "events_of_types",
    "newest_events",
    "pinned_events",
    "summary_events",
]

HEALTH_EVENT_TYPES = (
    "health.breaker", "health.guardrail", "health.inconsistent", "health.monitor",
    "health.policy", "health.stale", "health.truncated", "health.warning",
)  # fmt: skip
"""What the health policies journal (`tether show` lists them)."""


def _verified(run_id: str, rows: Iterable[Any]) -> list[Event]:
    events = []
    for row in rows:
        try:
            events.append(verify_row(row))
        except EventDecodeError as exc:
            raise CorruptionError(run_id, row.seq, str(exc)) from None
    return events


async def events_of_types(
    store: Store, run_id: str, types: Iterable[str], *, newest: int | None = None
) -> list[Event]:
    """The run's events of `types` (only the newest `newest` of them when given), verified
    and oldest first, by one indexed query: never a replay of the journal."""
    query = RowQuery(
        run_id=run_id, types=tuple(sorted(set(types))), newest_first=newest is not None,
        limit=newest,
    )  # fmt: skip
    rows = await index_of(store).query_rows(query)
    return sorted(_verified(run_id, rows), key=lambda e: e.seq)


async def summary_events(store: Store, run_id: str, state: RunState) -> list[Event]:
    """What `state_view` needs to decide what of the summary a role may see: the creation
    (always seq 1), every ending, and the requests of the approvals still pending (the
    newest requests; older ones are looked up only when one of them is not among those)."""
    created = await read_events(store, run_id, until_seq=1)
    ends = await events_of_types(store, run_id, _TERMINAL)
    requests: list[Event] = []
    pending = set(state.pending_approvals)
    if pending:
        requests = await events_of_types(
            store, run_id, ("approval.requested",), newest=len(pending) + 20
        )
        if not pending <= {e.payload.get("request_id") for e in requests}:
            requests = await events_of_types(store, run_id, ("approval.requested",))
    return sorted({e.seq: e for e in (*created, *ends, *requests)}.values(), key=lambda e: e.seq)


async def pinned_events(store: Store, run_id: str, state: RunState) -> list[Event]:
    """The `fact.pinned` events of the facts pinned now (the fold keeps them, bounded by
    the pin budget), verified: a view reads who pinned what, and whether it may see it."""
    rows = await store.read_rows_at(run_id, [f.seq for f in state.facts])
    return _verified(run_id, rows)


async def newest_events(
    viewer: Viewer, run_id: str, *, until_seq: int, count: int, scan: int
) -> tuple[list[dict[str, Any]], int]:
    """The newest `count` events up to `until_seq` that the viewer's role may see, as
    views, oldest first, reading back at most about `scan` events (a user's view shows
    few of a run's events). Also the last seq of the events left out before them: 0 when
    none is (the view starts at the run's beginning)."""
    shown: list[dict[str, Any]] = []
    until, read = until_seq, 0
    window = max(count, 256)
    while until > 0 and len(shown) < count and read < scan:
        after = max(0, until - window)
        events = await read_events(viewer.store, run_id, after_seq=after, until_seq=until)
        shown[:0] = viewer.events(events)
        read += until - after
        until = after
    if len(shown) > count:
        shown = shown[-count:]
        until = shown[0]["seq"] - 1
    return shown, until
