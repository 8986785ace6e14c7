"""The PostgreSQL store's own connection for appends, used whenever it is free.

A pool checkout and return cost about as much CPU as a third of the append's own client
work (~78,000 instructions of ~290,000, measured with callgrind), on every step. Appends are
the hot path, so the store keeps one connection outside the pool for them: an append takes it
if no other append holds it, and otherwise a pooled one, so concurrent runs are never held up.
It is made like the pool's (autocommit, the same session settings), belongs to the pool it
was made beside (a new pool after an outage means a new connection), and is dropped when an
error leaves it anything but idle; after a failed connect the pool serves for a while.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

__all__ = ["HotConnection"]

RETRY_AFTER_S = 5.0
"""After a failed connect, appends use the pool this long before the next attempt."""


class HotConnection:
    """One connection for appends, lent to one caller at a time (`take`, `give_back`)."""

    def __init__(
        self,
        conninfo: str,
        configure: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]],
    ) -> None:
        self._conninfo = conninfo
        self._configure = configure
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._owner: object | None = None
        self._busy = False
        self._failed_at = -RETRY_AFTER_S
        self._closing: set[asyncio.Task[None]] = set()

    async def take(self, owner: object) -> psycopg.AsyncConnection[Any] | None:
        """The connection, made if need be, for the pool `owner`; None if it is lent out
        or cannot be had now (then use the pool). Give it back with `give_back`."""
        if self._busy:
            return None
        self._busy = True
        try:
            conn = self._conn
            if conn is not None and (self._owner is not owner or conn.closed or conn.broken):
                self.drop()
                conn = None
            if conn is None:
                if time.monotonic() - self._failed_at < RETRY_AFTER_S:
                    self._busy = False
                    return None
                try:
                    conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                    await self._configure(conn)
                except psycopg.Error:
                    self._failed_at = time.monotonic()
                    self._busy = False
                    return None
                self._conn, self._owner = conn, owner
            return conn
        except BaseException:
            self._busy = False
            raise

    def give_back(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Return the connection; one left in a transaction or a query (an error, a
        cancelled task) is dropped, never lent again."""
        self._busy = False
        if self._conn is conn and (
            conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE
        ):
            self.drop()

    def drop(self) -> None:
        """Forget the connection and close it in the background."""
        conn, self._conn, self._owner = self._conn, None, None
        if conn is None or conn.closed:
            return
        task = asyncio.get_running_loop().create_task(conn.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        conn, self._conn, self._owner = self._conn, None, None
        if conn is not None:
            await conn.close()
        for task in list(self._closing):
            await task
