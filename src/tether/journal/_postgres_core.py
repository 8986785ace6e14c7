"""The PostgreSQL store's core: the pool opened lazily (a plain probe connection first),
the schema migrated once per open under an advisory lock, every pooled session's waits
bounded, psycopg errors turned into one-line StoreErrors that never name a password, reads
retried when the connection drops, and the secrets recorded in the store loaded for
redaction. The store's other parts (`_postgres_queue`, `_postgres`) build on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .._clock import Clock, SystemClock
from .._redact import remember_stored_secrets
from ..errors import InvalidStoreURL, StoreError, UsageError
from ._postgres_tokens import PostgresTokens
from ._postgres_url import SCHEMA_NAME as _SCHEMA_NAME
from ._postgres_url import parse_postgres_url
from ._postgres_url import redact as _redact
from ._schema import POSTGRES_MIGRATIONS, SCHEMA_VERSION
from ._secrets import COUNT_SECRETS, SECRET_KEY_PREFIX, SECRET_KEYS_END, secret_key

if TYPE_CHECKING:
    from ..budget._tables_pg import PostgresLedgerTables

__all__ = [
    "IDLE_IN_TRANSACTION_TIMEOUT_MS",
    "LOCK_TIMEOUT_MS",
    "MIGRATION_LOCK_TIMEOUT_MS",
    "PostgresCore",
]

log = logging.getLogger("tether.store")

_READ_ATTEMPTS = 3
MIGRATION_LOCK_TIMEOUT_MS = 10_000
"""How long an opener waits for another's migration lock (a frozen opener holds it)."""
LOCK_TIMEOUT_MS = 5_000
"""The longest any statement of the store waits for a lock (a row another session locked,
say a frozen `acquire_lease`); then it fails with a StoreError and is retried."""
IDLE_IN_TRANSACTION_TIMEOUT_MS = 15_000
"""A session of the store idle inside a transaction this long (its process frozen by
SIGSTOP between two statements) is ended by the server, which frees its locks. Shorter
than the default lease (30 s): a worker waiting on such a lock renews in time."""


class PostgresCore(PostgresTokens):
    """Connections, migration and errors of `PostgresStore`. Opened lazily: the pool
    connects on the first call."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        schema: str | None = None,
        connect_timeout_s: float = 10.0,
        pool_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        parsed = parse_postgres_url(url)
        libpq = parsed.libpq
        self._pool_min, self._pool_max = parsed.pool_min, parsed.pool_max
        self.synchronous = parsed.synchronous
        self.schema = schema or parsed.schema
        if self.schema is not None and not _SCHEMA_NAME.fullmatch(self.schema):
            raise InvalidStoreURL(f"bad schema name {self.schema!r}")
        params = conninfo_to_dict(libpq)
        if self.schema is not None:
            options = str(params.get("options") or "")
            params["options"] = f"{options} -c search_path={self.schema}".strip()
        params.setdefault("connect_timeout", str(max(1, round(connect_timeout_s))))
        params.setdefault("application_name", f"tether:{self.schema}" if self.schema else "tether")
        self._conninfo = make_conninfo("", **params)
        self._where = _redact(libpq)
        self._clock = clock or SystemClock()
        self._connect_timeout_s = connect_timeout_s
        self._pool_timeout_s = pool_timeout_s
        self._pool: AsyncConnectionPool[Any] | None = None
        self._opening: asyncio.Lock | None = None
        self._schema_name = self.schema or "public"
        self._listener: asyncio.Task[None] | None = None
        self._work: dict[str, asyncio.Event] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._migrated = False
        self._secrets_loaded = False
        self._secrets_seen: int | None = None
        self._closed = False
        self._ledger_tables: PostgresLedgerTables | None = None
        self._tokens_ready = False

    # -- plumbing ---------------------------------------------------------------------

    def _error(self, exc: BaseException) -> StoreError:
        """One line (libpq's messages span several), naming the server but no password."""
        what = " ".join(str(exc).split())
        return StoreError(f"PostgreSQL store {self._where}: {type(exc).__name__}: {what}")

    async def _ready(self) -> AsyncConnectionPool[Any]:
        """Open the pool (and migrate, the first time); a failed open is retried by the
        next call. The server is probed with one plain connection first, so an outage
        fails fast and recovery is immediate, on the caller's retry schedule rather than
        behind the pool's own reconnection backoff."""
        if self._pool is not None:
            if not self._secrets_loaded:
                await self._load_secrets(self._pool)
            return self._pool
        if self._closed:
            raise StoreError(f"PostgreSQL store {self._where} is closed")
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._pool is not None:
                return self._pool
            try:
                probe = await psycopg.AsyncConnection.connect(self._conninfo)
            except psycopg.Error as exc:
                raise self._error(exc) from exc
            await probe.close()
            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                self._conninfo,
                kwargs={"autocommit": True},
                min_size=self._pool_min,
                max_size=self._pool_max,
                open=False,
                timeout=self._pool_timeout_s,
                name="tether",
                configure=_bounded_waits,
            )
            try:
                await pool.open(wait=self._pool_min > 0, timeout=self._connect_timeout_s)
                if not self._migrated:
                    async with pool.connection() as conn:
                        await self._migrate(conn)
            except BaseException as exc:
                await pool.close()
                if isinstance(exc, psycopg.Error):
                    raise self._error(exc) from exc
                raise
            if self._migrated:
                log.warning("reconnected to %s", self._where)
            self._migrated = True
            self._pool = pool
        await self._load_secrets(pool)
        return pool

    async def _load_secrets(self, pool: AsyncConnectionPool[Any]) -> None:
        """Redact the secrets recorded in this store (see `_secrets`), once per open."""
        if self._secrets_loaded:
            return
        try:
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT value FROM tether_meta WHERE key LIKE %s", (f"{SECRET_KEY_PREFIX}%",)
                )
                rows = await cur.fetchall()
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        remember_stored_secrets(str(r[0]) for r in rows if isinstance(r[0], str))
        self._secrets_loaded = True
        self._secrets_seen = len(rows)

    async def _refresh_secrets(self) -> None:
        """Load the secrets recorded since this store was opened (see `COUNT_SECRETS`)."""
        try:
            rows = await self._read(
                COUNT_SECRETS.format(m="%s"), (SECRET_KEY_PREFIX, SECRET_KEYS_END)
            )
        except StoreError:
            return  # a read of events just worked: the next one tries again
        if rows and rows[0][0] != self._secrets_seen and self._pool is not None:
            self._secrets_loaded = False
            await self._load_secrets(self._pool)

    async def store_secrets(self, values: Sequence[str]) -> None:
        """Record registered secrets for every later reader (see `_secrets`)."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit TO on")
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO tether_meta (key, value) VALUES (%s, %s) "
                    "ON CONFLICT (key) DO NOTHING",
                    [(secret_key(v), v) for v in values],
                )

    async def record_doctor(self, result: dict[str, Any]) -> None:
        """Keep the last `doctor` result for the console."""
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO tether_meta (key, value) VALUES ('doctor.last', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (json.dumps(result, ensure_ascii=False),),
            )

    async def last_doctor(self) -> dict[str, Any] | None:
        rows = await self._read("SELECT value FROM tether_meta WHERE key='doctor.last'")
        if not rows:
            return None
        try:
            found = json.loads(rows[0][0])
        except (TypeError, ValueError, RecursionError):
            return None
        return found if isinstance(found, dict) else None

    async def _migrate(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn.transaction():
            # Serialise concurrent openers (many workers starting at once); a wait behind
            # a frozen opener is bounded, and the open is retried like any failed one.
            await conn.execute(f"SET LOCAL lock_timeout = {MIGRATION_LOCK_TIMEOUT_MS}")
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"tether:{self._schema_name}",)
            )
            if self.schema is not None:
                await conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
            cur = await conn.execute("SELECT current_schema()")
            row = await cur.fetchone()
            if row is None or row[0] is None:
                raise UsageError(
                    f"PostgreSQL store {self._where}: no schema to write to "
                    "(the search_path names none that exists); add ?schema=NAME"
                )
            self._schema_name = row[0]
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS tether_meta (key TEXT PRIMARY KEY, value TEXT)"
            )
            cur = await conn.execute("SELECT value FROM tether_meta WHERE key='schema_version'")
            found = await cur.fetchone()
            current = int(found[0]) if found else 0
            if current > SCHEMA_VERSION:
                raise UsageError(
                    f"the store {self._where} was written by a newer Tether "
                    f"(schema {current}; this version knows {SCHEMA_VERSION}): upgrade Tether"
                )
            for version, statements in POSTGRES_MIGRATIONS:
                if version > current:
                    for statement in statements:
                        await conn.execute(statement)
            await conn.execute(
                "INSERT INTO tether_meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (str(SCHEMA_VERSION),),
            )

    def _lost_connection(self, pool: AsyncConnectionPool[Any]) -> None:
        """After a connection error, drop the pool: its other connections are most likely
        broken too (a restarted server), and the next call opens a fresh one."""
        if self._pool is not pool:
            return
        self._pool = None
        task = asyncio.get_running_loop().create_task(self._discard(pool))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _discard(self, pool: AsyncConnectionPool[Any]) -> None:
        try:
            await pool.close(timeout=1.0)
        except Exception as exc:  # the next operation reports the outage itself
            log.debug("closing a broken pool of %s failed: %s", self._where, exc)

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection; psycopg errors become StoreError (the cause kept)."""
        pool = await self._ready()
        try:
            async with pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as exc:
            # A broken connection, not a busy pool or a cancelled query: the server most
            # likely went away, so the pool's other connections are broken too.
            # A lock wait that timed out is not a broken connection either.
            if not isinstance(
                exc, PoolTimeout | psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable
            ):
                self._lost_connection(pool)
            raise self._error(exc) from exc
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    async def _read(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        """A read, retried with backoff when the connection drops (reads are idempotent)."""
        for attempt in range(1, _READ_ATTEMPTS + 1):
            try:
                async with self._conn() as conn:
                    cur = await conn.execute(query, params)
                    return await cur.fetchall()
            except StoreError as exc:
                if attempt == _READ_ATTEMPTS or not _transient(exc):
                    raise
                log.info("%s; retrying the read (%d/%d)", exc, attempt, _READ_ATTEMPTS - 1)
                await asyncio.sleep(0.05 * 4 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover


async def _bounded_waits(conn: psycopg.AsyncConnection[Any]) -> None:
    """Every pooled session: lock waits and idle transactions are bounded (see the
    constants), so one frozen process cannot hold the others up for longer."""
    await conn.execute(
        "SELECT set_config('lock_timeout', %s, false), "
        "set_config('idle_in_transaction_session_timeout', %s, false)",
        (str(LOCK_TIMEOUT_MS), str(IDLE_IN_TRANSACTION_TIMEOUT_MS)),
    )


def _transient(exc: StoreError) -> bool:
    """A lost or refused connection (worth retrying), not a refused statement."""
    return isinstance(exc.__cause__, psycopg.OperationalError)
