"""PostgreSQL store: journals, snapshots, the run index and the work queue, shared by many
workers on many machines (psycopg 3, an async connection pool, autocommit).

The semantics are exactly those of the SQLite store; the contract suite runs on both.
The hot path is one round trip per append: a single statement whose data-modifying CTE
moves the run's head only if the lease epoch, the owner and the expected head all match,
and inserts the events only if it did, so a refused append writes nothing.

A dropped connection is never swallowed: reads are retried (they are idempotent), and an
append whose commit was in flight when the connection died is resolved by reading the
head back (the events' checksums say whether they landed) before it is retried or
reported as a StoreError. Workers wake on `LISTEN tether_runnable` (see `_schema.py`).

URL: `postgresql://user:password@host:port/dbname?schema=NAME&pool_max=10`. `schema`
(created if missing) and `pool_min`/`pool_max` are Tether's; every other query parameter
goes to libpq unchanged.

Its parts: the write statements (`_postgres_writes`), appends that carry budget ledger
work (`_postgres_ledger`), console tokens (`_postgres_tokens`), store URLs
(`_postgres_url`); here the pool, runs and leases, reads, snapshots and the work queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .._clock import Clock, SystemClock
from .._redact import remember_stored_secrets
from ..errors import (
    InvalidStoreURL,
    LeaseHeld,
    LeaseLost,
    RunNotFound,
    StoreError,
    UsageError,
)
from ..events import Event
from ..state import RunStatus
from ._base import (
    DEFAULT_QUEUE,
    RUNNABLE_STATUSES,
    Claim,
    Lease,
    RunRecord,
    RunSummary,
    StoredRow,
    check_continues,
)
from ._index import (
    ACTOR_INDEX_TERM,
    AuditColumns,
    RowQuery,
    audit_columns,
    runs_where,
    sql_order,
    sql_where,
)
from ._postgres_ledger import append_with_ledger
from ._postgres_tokens import PostgresTokens
from ._postgres_url import SCHEMA_NAME as _SCHEMA_NAME
from ._postgres_url import parse_postgres_url
from ._postgres_url import redact as _redact
from ._postgres_writes import _CREATE, _PUT_SNAPSHOT, _RUN_COLUMNS
from ._postgres_writes import _append_statement as _append_statement
from ._postgres_writes import _execute as _execute
from ._postgres_writes import _raw_cursor as _raw_cursor
from ._schema import (
    NOTIFY_CHANNEL,
    POSTGRES_MIGRATIONS,
    SCHEMA_VERSION,
)
from ._secrets import COUNT_SECRETS, SECRET_KEY_PREFIX, SECRET_KEYS_END, secret_key

if TYPE_CHECKING:
    from ..budget._tables_pg import PostgresLedgerTables

__all__ = ["PostgresStore", "parse_postgres_url"]

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
_APPEND_ATTEMPTS = 3
_RUNNABLE = list(RUNNABLE_STATUSES)

_EVENT_COLUMNS = "run_id, seq, type, correlation_id, data, ts, actor, tool, visibility"


def _stored(r: Sequence[Any]) -> StoredRow:
    return StoredRow(
        run_id=r[0],
        seq=r[1],
        type=r[2],
        correlation_id=r[3],
        raw=r[4],
        audit=AuditColumns(ts=r[5], actor=r[6], tool=r[7], visibility=r[8]),
    )


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


class PostgresStore(PostgresTokens):
    """Journals in PostgreSQL. Opened lazily: the pool connects on the first call."""

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
        libpq, url_schema, self._pool_min, self._pool_max = parse_postgres_url(url)
        self.schema = schema or url_schema
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

    # -- runs and leases --------------------------------------------------------------

    async def create_run(
        self,
        first: Event,
        *,
        agent: str,
        tenant: str | None,
        parent_run_id: str | None,
        summary: RunSummary,
        created_at: str | None = None,
    ) -> None:
        params = {
            "run_id": first.run_id, "agent": agent, "tenant": tenant, "parent": parent_run_id,
            "created_at": created_at or first.ts, "updated_at": summary.updated_at,
            "status": summary.status,
            "steps": summary.steps, "input_tokens": summary.input_tokens,
            "output_tokens": summary.output_tokens, "cost_usd": summary.cost_usd,
            "seq": first.seq, "hash": first.checksum, "type": first.type,
            "correlation_id": first.correlation_id, "data": first.raw,
        }  # fmt: skip
        a = audit_columns(first)
        params.update(ts=a.ts, actor=a.actor, tool=a.tool, visibility=a.visibility)
        async with self._conn() as conn:
            cur = await _execute(conn, _CREATE, params, sync=True)
            if cur.rowcount != 1:
                raise UsageError(f"run {first.run_id!r} already exists")

    def _record(self, row: Sequence[Any]) -> RunRecord:
        return RunRecord(
            run_id=row[0],
            agent=row[1],
            tenant=row[2],
            parent_run_id=row[3],
            created_at=row[4],
            summary=RunSummary(
                updated_at=row[5],
                status=row[6],
                steps=row[7],
                input_tokens=row[8],
                output_tokens=row[9],
                cost_usd=row[10],
            ),
            head_seq=row[11],
            head_hash=row[12],
            lease_owner=row[13],
            lease_epoch=row[14],
            lease_expires_at=row[15],
        )

    async def get_run(self, run_id: str) -> RunRecord:
        rows = await self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id=%s", (run_id,))
        if not rows:
            raise RunNotFound(run_id)
        return self._record(rows[0])

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        limit: int = 100,
        agent: str | None = None,
        tenant: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[RunRecord]:
        where, params = runs_where(
            status=status, agent=agent, tenant=tenant, since=since, until=until, mark="%s"
        )
        rows = await self._read(
            f"SELECT {_RUN_COLUMNS} FROM runs{where} "
            "ORDER BY created_at DESC, run_id DESC LIMIT %s",
            (*params, limit),
        )
        return [self._record(r) for r in rows]

    async def acquire_lease(
        self, run_id: str, *, owner: str, ttl_s: float, takeover_from: str | None = None
    ) -> Lease:
        now = self._clock.time()
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT lease_owner, lease_epoch, lease_expires_at FROM runs "
                "WHERE run_id=%s FOR UPDATE",
                (run_id,),
            )
            row = await cur.fetchone()
            if row is None:
                raise RunNotFound(run_id)
            holder, epoch, expires = row
            live = holder is not None and expires is not None and expires > now
            if live and holder not in (owner, takeover_from):
                raise LeaseHeld(f"run {run_id} is leased by {holder} for {expires - now:.0f}s more")
            lease = Lease(run_id=run_id, owner=owner, epoch=epoch + 1, expires_at=now + ttl_s)
            await conn.execute(
                "UPDATE runs SET lease_owner=%s, lease_epoch=%s, lease_expires_at=%s "
                "WHERE run_id=%s",
                (owner, lease.epoch, lease.expires_at, run_id),
            )
        return lease

    async def _check_lease(
        self, conn: psycopg.AsyncConnection[Any], lease: Lease
    ) -> tuple[int, str]:
        cur = await conn.execute(
            "SELECT lease_owner, lease_epoch, head_seq, head_hash FROM runs WHERE run_id=%s",
            (lease.run_id,),
        )
        row = await cur.fetchone()
        if row is None:
            raise RunNotFound(lease.run_id)
        if row[1] != lease.epoch or row[0] != lease.owner:
            raise LeaseLost(
                f"run {lease.run_id}: lease epoch {lease.epoch} is stale (current {row[1]})"
            )
        return row[2], row[3]

    async def _lock_lease(self, conn: psycopg.AsyncConnection[Any], lease: Lease) -> None:
        """Inside a transaction: lock the run's row and check the lease is current."""
        cur = await conn.execute(
            "SELECT lease_owner, lease_epoch FROM runs WHERE run_id=%s FOR UPDATE",
            (lease.run_id,),
        )
        row = await cur.fetchone()
        if row is None:
            raise RunNotFound(lease.run_id)
        if row[1] != lease.epoch or row[0] != lease.owner:
            raise LeaseLost(
                f"run {lease.run_id}: lease epoch {lease.epoch} is stale (current {row[1]})"
            )

    async def renew_lease(self, lease: Lease, *, ttl_s: float) -> Lease:
        expires = self._clock.time() + ttl_s
        async with self._conn() as conn:
            cur = await conn.execute(
                "UPDATE runs SET lease_expires_at=%s "
                "WHERE run_id=%s AND lease_epoch=%s AND lease_owner=%s",
                (expires, lease.run_id, lease.epoch, lease.owner),
            )
            if cur.rowcount != 1:
                await self._check_lease(conn, lease)
                raise LeaseLost(f"run {lease.run_id}: lease epoch {lease.epoch} is stale")
        return Lease(run_id=lease.run_id, owner=lease.owner, epoch=lease.epoch, expires_at=expires)

    async def release_lease(self, lease: Lease) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "UPDATE runs SET lease_owner=NULL, lease_expires_at=NULL "
                "WHERE run_id=%s AND lease_epoch=%s AND lease_owner=%s",
                (lease.run_id, lease.epoch, lease.owner),
            )

    # -- journal ----------------------------------------------------------------------

    async def append(
        self,
        lease: Lease,
        events: Sequence[Event],
        *,
        summary: RunSummary,
        also: Callable[[], None] | None = None,
        sync: bool = False,
    ) -> None:
        if also is not None and not events:
            raise UsageError("append(also=...) needs at least one event")
        if also is not None and self._ledger_tables is None:
            raise UsageError("append(also=...) runs only this store's own ledger work")
        if not events:
            return
        first, last = events[0], events[-1]
        check_continues(first.seq - 1, None, events, lease.run_id)
        statement, params = _append_statement(lease, events, summary)
        for attempt in range(1, _APPEND_ATTEMPTS + 1):
            try:
                if also is not None:
                    await append_with_ledger(
                        self, lease, events, statement, params, also, sync=sync
                    )
                    return
                async with self._conn() as conn:
                    cur = await _execute(conn, statement, params, sync=sync)
                    if cur.rowcount == len(events):
                        return
                    # Refused: say why, exactly as the other backends do.
                    head_seq, head_hash = await self._check_lease(conn, lease)
                    check_continues(head_seq, head_hash, events, lease.run_id)
                    raise StoreError(f"run {lease.run_id}: append refused")  # pragma: no cover
            except StoreError as exc:
                if not _transient(exc):
                    raise
                # The connection died: the statement may or may not have committed.
                if await self._landed(lease.run_id, first, last, exc):
                    return
                if attempt == _APPEND_ATTEMPTS:
                    raise
                log.warning(
                    "%s; the append to %s did not land, retrying (%d/%d)",
                    exc, lease.run_id, attempt, _APPEND_ATTEMPTS - 1,
                )  # fmt: skip
                await asyncio.sleep(0.05 * 4 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _landed(self, run_id: str, first: Event, last: Event, cause: StoreError) -> bool:
        """Whether an append whose outcome a dropped connection hid did commit.

        The head names the last event's checksum only if these very events landed; if it
        is still where they were to go, they did not. Anything else is a conflict, or an
        outage that leaves the outcome unknown: both are raised.
        """
        try:
            rows = await self._read(
                "SELECT head_seq, head_hash FROM runs WHERE run_id=%s", (run_id,)
            )
        except StoreError as exc:
            raise StoreError(
                f"{cause}; whether the append to {run_id} landed is unknown ({exc})"
            ) from exc
        if not rows:
            raise RunNotFound(run_id)
        head = (rows[0][0], rows[0][1])
        if head == (last.seq, last.checksum):
            log.warning("%s; the append to %s had landed", cause, run_id)
            return True
        if head[0] == first.seq - 1 and first.follows(head[1]):
            return False
        raise StoreError(f"{cause}; the run {run_id} moved on meanwhile (head {head[0]})")

    async def read_rows(
        self, run_id: str, *, after_seq: int = 0, until_seq: int | None = None
    ) -> list[StoredRow]:
        rows = await self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events "
            "WHERE run_id=%s AND seq>%s AND seq<=%s ORDER BY seq",
            (run_id, after_seq, until_seq if until_seq is not None else 2**62),
        )
        await self._refresh_secrets()
        return [_stored(r) for r in rows]

    async def read_rows_at(self, run_id: str, seqs: Sequence[int]) -> list[StoredRow]:
        wanted = sorted({s for s in seqs if isinstance(s, int)})
        if not wanted:
            return []
        rows = await self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events "
            "WHERE run_id=%s AND seq = ANY(%s::bigint[]) ORDER BY seq",
            (run_id, wanted),
        )
        await self._refresh_secrets()
        return [_stored(r) for r in rows]

    async def query_rows(self, query: RowQuery) -> list[StoredRow]:
        """Audit queries on schema 3's indexed columns, with SQLite's semantics.

        An actor prefix is a LIKE (not SQLite's range up to U+10FFFF, which only the C
        collation orders last)."""
        prefix = query.actor if query.actor is not None and query.actor_prefix else None
        where, params = sql_where(
            dataclasses.replace(query, actor=None) if prefix is not None else query, mark="%s"
        )
        if prefix is not None:
            escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where += " AND actor LIKE %s"
            params.append(escaped + "%")
            if not "runtime".startswith(prefix):
                where += f" AND {ACTOR_INDEX_TERM}"
        limit = "" if query.limit is None else f" LIMIT {int(query.limit)}"
        rows = await self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE {where} ORDER BY {sql_order(query)}{limit}",
            params,
        )
        await self._refresh_secrets()
        return [_stored(r) for r in rows]

    async def put_snapshot(
        self, lease: Lease, run_id: str, seq: int, raw: bytes, *, keep: int
    ) -> None:
        fence = (lease.run_id, lease.epoch, lease.owner)
        params = (*fence, run_id, seq, keep, run_id, seq, raw, seq, run_id)
        async with self._conn() as conn:
            cur = await conn.execute(_PUT_SNAPSHOT, params)
            row = await cur.fetchone()
            if row is None or row[0] != 1:
                await self._check_lease(conn, lease)  # raises RunNotFound or LeaseLost
                raise StoreError(f"run {run_id}: snapshot refused")  # pragma: no cover

    async def read_snapshots(self, run_id: str) -> list[tuple[int, bytes]]:
        rows = await self._read(
            "SELECT seq, data FROM snapshots WHERE run_id=%s ORDER BY seq DESC", (run_id,)
        )
        return [(r[0], r[1]) for r in rows]

    async def truncate(
        self,
        lease: Lease,
        run_id: str,
        *,
        keep_through: int,
        head_hash: str,
        then: Sequence[Event] = (),
        summary: RunSummary | None = None,
    ) -> None:
        check_continues(keep_through, head_hash, then, lease.run_id)
        if then and summary is None:
            raise UsageError("truncate(then=...) needs the run's new summary")
        async with self._conn() as conn, conn.transaction():
            await self._lock_lease(conn, lease)
            await conn.execute(
                "DELETE FROM events WHERE run_id=%s AND seq>%s", (run_id, keep_through)
            )
            await conn.execute(
                "DELETE FROM snapshots WHERE run_id=%s AND seq>%s", (run_id, keep_through)
            )
            await conn.execute(
                "UPDATE runs SET head_seq=%s, head_hash=%s WHERE run_id=%s",
                (keep_through, head_hash, run_id),
            )
            if then and summary is not None:
                # The append's own fenced statement, now continuing the cut head.
                statement, params = _append_statement(lease, then, summary)
                cur = await conn.execute(statement, params)
                if cur.rowcount != len(then):  # pragma: no cover - the lease is locked
                    raise StoreError(f"run {run_id}: the repair's append was refused")

    async def run_ids(self) -> list[str]:
        return [
            r[0] for r in await self._read("SELECT run_id FROM runs ORDER BY created_at, run_id")
        ]

    # -- the work queue ---------------------------------------------------------------

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

    def joins_ledger(self, tables: object) -> bool:
        """Whether `append(also=...)` can run these ledger tables' work in the append's own
        transaction: they must be this store's (`ledger_tables`)."""
        return tables is not None and tables is self._ledger_tables

    def ledger_tables(self) -> object:
        """The budget ledger's tables, in this store's database on a connection of their
        own, on which appends that carry ledger work run too (`append(also=...)`)."""
        if self._ledger_tables is None:
            from ..budget._tables_pg import PostgresLedgerTables

            self._ledger_tables = PostgresLedgerTables(self._conninfo, schema=self.schema)
        return self._ledger_tables

    async def close(self) -> None:
        self._closed = True
        if self._ledger_tables is not None:
            self._ledger_tables.close()
            self._ledger_tables = None
        for task in [self._listener, *self._background]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._listener = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


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
