"""Verified reads for audit questions: point lookups and indexed queries, cached for the
length of one question (see `tether.audit`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import CorruptionError, UsageError
from .events import Event, EventDecodeError
from .journal import Store
from .journal._index import AuditIndex, RowQuery
from .journal._integrity import verify_row

__all__ = ["ContextEntry", "Reader", "cycle_events", "index_of"]


def index_of(store: Store) -> AuditIndex:
    """The store's indexed queries; a UsageError for a backend that has none yet."""
    if not isinstance(store, AuditIndex):
        raise UsageError(
            f"the store {store.url} does not answer audit queries yet (no audit index)"
        )
    return store


@dataclass(frozen=True, slots=True)
class ContextEntry:
    """One event of a context: enough to list it and to decide who may see it."""

    seq: int
    type: str
    visibility: str


class Reader:
    """Verified point lookups and indexed queries, cached for one question."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.index = index_of(store)
        self.events: dict[tuple[str, int], Event] = {}
        self.cycles: dict[tuple[str, str], list[Event]] = {}
        self.lookups = 0

    def _verify(self, rows: Sequence[Any]) -> list[Event]:
        out = []
        for row in rows:
            try:
                event = verify_row(row)
            except EventDecodeError as exc:
                raise CorruptionError(
                    row.run_id, row.seq, str(exc), repair=f"repair: tether doctor {row.run_id}"
                ) from None
            self.events[(event.run_id, event.seq)] = event
            out.append(event)
        return out

    async def get(self, run_id: str, seq: int) -> Event | None:
        key = (run_id, seq)
        if key not in self.events:
            self.lookups += 1
            self._verify(await self.store.read_rows_at(run_id, [seq]))
        return self.events.get(key)

    async def query(self, query: RowQuery) -> list[Event]:
        self.lookups += 1
        return self._verify(await self.index.query_rows(query))

    async def entries(self, query: RowQuery) -> list[ContextEntry]:
        """(seq, type, visibility) of matching rows from their index columns, unverified;
        decoded (and verified) only when a backend keeps no audit columns."""
        self.lookups += 1
        out = []
        for row in await self.index.query_rows(query):
            if row.audit is not None:
                out.append(ContextEntry(row.seq, row.type, row.audit.visibility))
            else:
                (event,) = self._verify([row])
                out.append(ContextEntry(event.seq, event.type, event.visibility))
        return out

    async def cycle(self, run_id: str, correlation_id: str) -> list[Event]:
        key = (run_id, correlation_id)
        if key not in self.cycles:
            found = await self.query(RowQuery(correlation_id=correlation_id))
            self.cycles[key] = sorted((e for e in found if e.run_id == run_id), key=lambda e: e.seq)
        return self.cycles[key]


async def cycle_events(store: Store, correlation_id: str) -> list[Event]:
    """Every event carrying `correlation_id` (one cycle), verified, in journal order.

    Unfiltered: for the engine and for `tether.views` callers, never for a surface.
    """
    return await Reader(store).query(RowQuery(correlation_id=correlation_id))
