"""Feeding a store's appends, or a stored run, to a TelemetryObserver."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, cast

from ..events import Event
from ..journal import Lease, RunSummary, Store, read_events
from ..journal._wrapper import StoreWrapper
from ._observer import _TERMINAL, TelemetryObserver
from ._spans import _ns


class _InstrumentedStore(StoreWrapper):
    """A store that shows every event it durably appends to a TelemetryObserver."""

    def __init__(self, inner: Store, observer: TelemetryObserver) -> None:
        super().__init__(inner)
        self.observer = observer

    async def _agent(self, event: Event) -> str | None:
        if event.run_id in self.observer.runs or event.type == "run.created":
            return None
        try:
            return (await self.inner.get_run(event.run_id)).agent
        except Exception:  # the name is a nicety; never fail an append over it
            return None

    async def _observe(self, events: Sequence[Event]) -> None:
        ended = False
        for event in events:
            self.observer.observe(event, agent=await self._agent(event))
            ended = ended or event.type in _TERMINAL
        if ended or self.observer.flush_due():
            await asyncio.to_thread(self.observer.flush)

    async def create_run(self, first: Event, **kwargs: Any) -> None:
        await self.inner.create_run(first, **kwargs)
        await self._observe([first])

    async def append(
        self,
        lease: Lease,
        events: Sequence[Event],
        *,
        summary: RunSummary,
        also: Callable[[], None] | None = None,
        sync: bool = False,
    ) -> None:
        await self.inner.append(lease, events, summary=summary, also=also, sync=sync)
        await self._observe(events)

    async def release_lease(self, lease: Lease) -> None:
        await self.inner.release_lease(lease)
        if lease.run_id in self.observer.runs:
            self.observer.end_segment(lease.run_id)
            await asyncio.to_thread(self.observer.flush)


def instrument(store: Store, observer: TelemetryObserver) -> Store:
    """`store`, with every appended event mapped to spans by `observer`."""
    return cast(Store, _InstrumentedStore(store, observer))


async def export_run(store: Store, run_id: str, observer: TelemetryObserver) -> int:
    """Send the spans of a stored run (up to its head) and flush; returns the spans ended."""
    before = observer.spans_ended
    events = await read_events(store, run_id)
    for event in events:
        observer.observe(event)
    if events:
        observer.end_segment(run_id, reason="exported", end_ns=_ns(events[-1].ts))
    await asyncio.to_thread(observer.flush)
    return observer.spans_ended - before
