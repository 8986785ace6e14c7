"""The PostgreSQL store's work queue: runs claimed with `FOR UPDATE SKIP LOCKED` (so
workers never block each other), a lease taken in the same statement, and workers woken
by `LISTEN tether_runnable` on a connection of its own, reconnected with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import psycopg
from psycopg import sql

from ..errors import RunNotFound, StoreError
from ._base import DEFAULT_QUEUE, RUNNABLE_STATUSES, Claim, Lease
from ._postgres_core import PostgresCore
from ._schema import NOTIFY_CHANNEL

__all__ = ["PostgresQueue"]

log = logging.getLogger("tether.store")

_RUNNABLE = list(RUNNABLE_STATUSES)

_CLAIM = """
WITH picked AS (
    SELECT run_id, lease_owner, lease_expires_at FROM runs
    WHERE queue = %(queue)s AND status = ANY(%(runnable)s)
        AND (lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at <= %(now)s
             OR lease_owner = ANY(%(dead)s))
        AND (%(agents)s::text[] IS NULL OR agent = ANY(%(agents)s::text[]))
        AND NOT (run_id = ANY(%(exclude)s::text[]))
    ORDER BY created_at, run_id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE runs SET lease_owner = %(owner)s, lease_epoch = runs.lease_epoch + 1,
    lease_expires_at = %(expires)s
FROM picked WHERE runs.run_id = picked.run_id
RETURNING runs.run_id, runs.lease_epoch, picked.lease_owner, picked.lease_expires_at,
    runs.created_at
"""


class PostgresQueue(PostgresCore):
    """The work queue half of `PostgresStore` (see the module docstring)."""

    async def enqueue(self, run_id: str, *, queue: str = DEFAULT_QUEUE) -> None:
        async with self._conn() as conn:
            cur = await conn.execute("UPDATE runs SET queue=%s WHERE run_id=%s", (queue, run_id))
            if cur.rowcount != 1:
                raise RunNotFound(run_id)

    async def claim_runnable(
        self,
        *,
        owner: str,
        ttl_s: float,
        limit: int = 1,
        queue: str = DEFAULT_QUEUE,
        agents: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        takeover_from: Sequence[str] = (),
    ) -> list[Claim]:
        if limit < 1 or (agents is not None and not agents):
            return []
        now = self._clock.time()
        params = {
            "queue": queue, "runnable": _RUNNABLE, "now": now, "dead": list(takeover_from),
            "agents": list(agents) if agents is not None else None, "exclude": list(exclude),
            "limit": limit, "owner": owner, "expires": now + ttl_s,
        }  # fmt: skip
        async with self._conn() as conn:
            cur = await conn.execute(_CLAIM, params)
            rows = await cur.fetchall()
        rows.sort(key=lambda r: (r[4], r[0]))
        return [
            Claim(
                lease=Lease(run_id=r[0], owner=owner, epoch=r[1], expires_at=now + ttl_s),
                previous_owner=r[2],
                previous_expires_at=r[3],
            )
            for r in rows
        ]

    async def queue_leases(self, *, queue: str = DEFAULT_QUEUE, limit: int = 1000) -> list[Lease]:
        rows = await self._read(
            "SELECT run_id, lease_owner, lease_epoch, lease_expires_at FROM runs "
            "WHERE queue=%s AND status = ANY(%s) AND lease_owner IS NOT NULL "
            "ORDER BY lease_expires_at NULLS FIRST, run_id LIMIT %s",
            (queue, _RUNNABLE, limit),
        )
        return [Lease(run_id=r[0], owner=r[1], epoch=r[2], expires_at=r[3] or 0.0) for r in rows]

    async def wait_for_work(self, *, queue: str = DEFAULT_QUEUE, timeout_s: float) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        event = self._work.setdefault(queue, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=max(0.0, timeout_s))
        event.clear()

    def _wake(self, queue: str | None = None) -> None:
        for name, event in self._work.items():
            if queue is None or name == queue:
                event.set()

    async def _listen(self) -> None:
        """Hold a LISTEN connection; reconnect with backoff, logging every outage."""
        backoff = 0.1
        listened = False
        while not self._closed:
            try:
                await self._ready()
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
                    if listened:
                        log.warning("listening for work on %s again", self._where)
                        self._wake()  # anything announced while we were not listening
                    listened = True
                    backoff = 0.1
                    async for note in conn.notifies():
                        schema, _, queue = note.payload.partition(" ")
                        if schema == self._schema_name:
                            self._wake(queue)
            except (psycopg.Error, StoreError) as exc:
                if self._closed:
                    return
                log.warning(
                    "listening for work on %s failed (%s); reconnecting in %.1fs",
                    self._where, exc, backoff,
                )  # fmt: skip
                self._wake()  # let waiting workers poll meanwhile
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
