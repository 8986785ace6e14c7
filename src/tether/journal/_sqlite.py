"""SQLite store: one file, WAL mode, one connection per store, BEGIN IMMEDIATE writes.

Calls run on the event loop thread: a WAL commit costs tens of microseconds, far less
than a hop to a worker thread. Lock waits (another process writing) are bounded by the
busy timeout.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from .._clock import Clock, SystemClock
from ..errors import LeaseHeld, LeaseLost, RunNotFound, StoreError, UsageError
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
from ._checkpointer import BackgroundCheckpointer
from ._index import (
    AuditColumns,
    RowQuery,
    audit_columns,
    sql_order,
    sql_where,
    sqlite_audit_hint,
    sqlite_run_hint,
)
from ._schema import (
    SCHEMA_VERSION,
    SQLITE_AUDIT_ROWS,
    SQLITE_INDEX_TAIL,
    SQLITE_MIGRATIONS,
)

Synchronous = Literal["normal", "full"]

log = logging.getLogger("tether.store")

WAL_SIZE_LIMIT = 64 * 1024 * 1024
"""A rewound WAL larger than this is cut back to it, so a burst does not keep its size."""

_RUN_COLUMNS = (
    "run_id, agent, tenant, parent_run_id, created_at, updated_at, status, steps, "
    "input_tokens, output_tokens, cost_usd, head_seq, head_hash, lease_owner, lease_epoch, "
    "lease_expires_at"
)
_APPEND_TAIL = (
    "steps=?, input_tokens=?, output_tokens=?, cost_usd=?, updated_at=? WHERE run_id=? "
    "AND lease_epoch=? AND lease_owner=? AND head_seq=? AND head_hash=?"
)
_APPEND_NEW_STATUS = "UPDATE runs SET head_seq=?, head_hash=?, status=?, " + _APPEND_TAIL
_APPEND_SAME_STATUS = "UPDATE runs SET head_seq=?, head_hash=?, " + _APPEND_TAIL
_CORRUPT_CODES = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}
_EVENT_COLUMNS = "run_id, seq, type, correlation_id, data, ts, actor, tool, visibility"
_INSERT_EVENT = f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"
_INSERT_ROWS = 500
"""Events per INSERT statement (9 parameters each, far below SQLite's limit)."""

AUDIT_BATCH = 512
"""Events an append copies into `audit_rows` at once (schema 5). Until then they are the
unindexed tail that audit queries scan: at most about this many rows."""


class _AuditCopyFailed(Exception):
    """The batch copy into `audit_rows` met a damaged page (see `_append_in`)."""


@functools.cache
def _insert_events(n: int) -> str:
    return f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES " + ",".join(["(?,?,?,?,?,?,?,?,?)"] * n)


def _event_row(e: Event) -> tuple[Any, ...]:
    a = audit_columns(e)
    return (e.run_id, e.seq, e.type, e.correlation_id, e.raw, a.ts, a.actor, a.tool, a.visibility)


def _stored(r: Sequence[Any]) -> StoredRow:
    return StoredRow(
        run_id=r[0],
        seq=r[1],
        type=r[2],
        correlation_id=r[3],
        raw=r[4],
        audit=AuditColumns(ts=r[5], actor=r[6], tool=r[7], visibility=r[8]),
    )


class SQLiteStore:
    """Journals in one SQLite file. `synchronous="full"` also survives power loss."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = "normal",
        clock: Clock | None = None,
        busy_timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._clock = clock or SystemClock()
        self._ledger_tables: object | None = None
        self._last_status: dict[str, str] = {}
        self._audit_broken = False
        self._checkpointer = BackgroundCheckpointer(
            self.path, synchronous=synchronous, busy_timeout_s=busy_timeout_s
        )
        if not self.path.parent.exists():
            raise UsageError(f"cannot create the store {self.path}: its folder does not exist")
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.execute("PRAGMA foreign_keys=ON")
            # Checkpoints run on a thread (see BackgroundCheckpointer), not inside commits.
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._migrate()
            self._audit_mark = self._indexed_through()
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None

    # -- plumbing ---------------------------------------------------------------------

    def _error(self, exc: sqlite3.Error) -> StoreError:
        name = getattr(exc, "sqlite_errorname", "")
        if name in _CORRUPT_CODES or "malformed" in str(exc) or "not a database" in str(exc):
            return StoreError(f"the store file {self.path} is damaged: {exc}")
        return StoreError(f"store {self.path}: {exc}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken before anything is read."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from None
            raise
        self._checkpointer.committed(db)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    def _migrate(self) -> None:
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS tether_meta (key TEXT PRIMARY KEY, value TEXT)")
            row = db.execute("SELECT value FROM tether_meta WHERE key='schema_version'").fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise UsageError(
                    f"the store {self.path} was written by a newer Tether "
                    f"(schema {current}; this version knows {SCHEMA_VERSION}): upgrade Tether"
                )
            for version, statements in SQLITE_MIGRATIONS:
                if version > current:
                    for statement in statements:
                        db.execute(statement)
            db.execute(
                "INSERT OR REPLACE INTO tether_meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    # -- runs and leases --------------------------------------------------------------

    async def create_run(
        self,
        first: Event,
        *,
        agent: str,
        tenant: str | None,
        parent_run_id: str | None,
        summary: RunSummary,
    ) -> None:
        with self._write() as db:
            if db.execute("SELECT 1 FROM runs WHERE run_id=?", (first.run_id,)).fetchone():
                raise UsageError(f"run {first.run_id!r} already exists")
            db.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,NULL,0,NULL)",
                (
                    first.run_id, agent, tenant, parent_run_id, first.ts, summary.updated_at,
                    summary.status, summary.steps, summary.input_tokens,
                    summary.output_tokens, summary.cost_usd, first.seq, first.checksum,
                ),
            )  # fmt: skip
            db.execute(_INSERT_EVENT, _event_row(first))

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
        rows = self._read(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id=?", (run_id,))
        if not rows:
            raise RunNotFound(run_id)
        return self._record(rows[0])

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 100
    ) -> list[RunRecord]:
        if status is None:
            rows = self._read(
                f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created_at DESC, run_id DESC LIMIT ?",
                (limit,),
            )
        else:
            rows = self._read(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE status=? "
                "ORDER BY created_at DESC, run_id DESC LIMIT ?",
                (status, limit),
            )
        return [self._record(r) for r in rows]

    async def acquire_lease(
        self, run_id: str, *, owner: str, ttl_s: float, takeover_from: str | None = None
    ) -> Lease:
        self._last_status.pop(run_id, None)  # others may have written since: set it again
        now = self._clock.time()
        with self._write() as db:
            row = db.execute(
                "SELECT lease_owner, lease_epoch, lease_expires_at FROM runs WHERE run_id=?",
                (run_id,),
            ).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            holder, epoch, expires = row
            live = holder is not None and expires is not None and expires > now
            if live and holder not in (owner, takeover_from):
                raise LeaseHeld(f"run {run_id} is leased by {holder} for {expires - now:.0f}s more")
            lease = Lease(run_id=run_id, owner=owner, epoch=epoch + 1, expires_at=now + ttl_s)
            db.execute(
                "UPDATE runs SET lease_owner=?, lease_epoch=?, lease_expires_at=? WHERE run_id=?",
                (owner, lease.epoch, lease.expires_at, run_id),
            )
        return lease

    def _check_lease(self, db: sqlite3.Connection, lease: Lease) -> tuple[int, str]:
        row = db.execute(
            "SELECT lease_owner, lease_epoch, head_seq, head_hash FROM runs WHERE run_id=?",
            (lease.run_id,),
        ).fetchone()
        if row is None:
            raise RunNotFound(lease.run_id)
        if row[1] != lease.epoch or row[0] != lease.owner:
            raise LeaseLost(
                f"run {lease.run_id}: lease epoch {lease.epoch} is stale (current {row[1]})"
            )
        return row[2], row[3]

    async def renew_lease(self, lease: Lease, *, ttl_s: float) -> Lease:
        expires = self._clock.time() + ttl_s
        with self._write() as db:
            self._check_lease(db, lease)
            db.execute("UPDATE runs SET lease_expires_at=? WHERE run_id=?", (expires, lease.run_id))
        return Lease(run_id=lease.run_id, owner=lease.owner, epoch=lease.epoch, expires_at=expires)

    async def release_lease(self, lease: Lease) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE runs SET lease_owner=NULL, lease_expires_at=NULL "
                "WHERE run_id=? AND lease_epoch=? AND lease_owner=?",
                (lease.run_id, lease.epoch, lease.owner),
            )

    # -- the work queue ---------------------------------------------------------------

    async def enqueue(self, run_id: str, *, queue: str = DEFAULT_QUEUE) -> None:
        with self._write() as db:
            if db.execute("UPDATE runs SET queue=? WHERE run_id=?", (queue, run_id)).rowcount != 1:
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
        dead = f" OR lease_owner IN ({','.join('?' * len(takeover_from))})" if takeover_from else ""
        where = [
            "queue=?",
            f"status IN ({','.join('?' * len(RUNNABLE_STATUSES))})",
            f"(lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at<=?{dead})",
        ]
        params: list[Any] = [queue, *RUNNABLE_STATUSES, now, *takeover_from]
        if agents is not None:
            where.append(f"agent IN ({','.join('?' * len(agents))})")
            params.extend(agents)
        if exclude:
            where.append(f"run_id NOT IN ({','.join('?' * len(exclude))})")
            params.extend(exclude)
        claims: list[Claim] = []
        # BEGIN IMMEDIATE serialises claimers (in every process), like SKIP LOCKED does.
        with self._write() as db:
            rows = db.execute(
                "SELECT run_id, lease_owner, lease_epoch, lease_expires_at FROM runs WHERE "
                + " AND ".join(where)
                + " ORDER BY created_at, run_id LIMIT ?",
                (*params, limit),
            ).fetchall()
            for run_id, holder, epoch, expires in rows:
                lease = Lease(run_id=run_id, owner=owner, epoch=epoch + 1, expires_at=now + ttl_s)
                db.execute(
                    "UPDATE runs SET lease_owner=?, lease_epoch=?, lease_expires_at=? "
                    "WHERE run_id=?",
                    (owner, lease.epoch, lease.expires_at, run_id),
                )
                claims.append(
                    Claim(lease=lease, previous_owner=holder, previous_expires_at=expires)
                )
        return claims

    async def queue_leases(self, *, queue: str = DEFAULT_QUEUE, limit: int = 1000) -> list[Lease]:
        rows = self._read(
            "SELECT run_id, lease_owner, lease_epoch, lease_expires_at FROM runs "
            f"WHERE queue=? AND status IN ({','.join('?' * len(RUNNABLE_STATUSES))}) "
            "AND lease_owner IS NOT NULL ORDER BY lease_expires_at, run_id LIMIT ?",
            (queue, *RUNNABLE_STATUSES, limit),
        )
        return [Lease(run_id=r[0], owner=r[1], epoch=r[2], expires_at=r[3] or 0.0) for r in rows]

    async def wait_for_work(self, *, queue: str = DEFAULT_QUEUE, timeout_s: float) -> None:
        # Other processes cannot signal through the file: workers poll with backoff.
        await asyncio.sleep(max(0.0, timeout_s))

    # -- journal ----------------------------------------------------------------------

    async def append(
        self,
        lease: Lease,
        events: Sequence[Event],
        *,
        summary: RunSummary,
        also: Callable[[], None] | None = None,
    ) -> None:
        if not events:
            if also is not None:
                raise UsageError("append(also=...) needs at least one event")
            return
        first = events[0]
        check_continues(first.seq - 1, first.prev_hash, events, lease.run_id)
        if also is not None and self._ledger_tables is None:
            raise UsageError("append(also=...) runs only this store's own ledger work")
        try:
            with self._write() as db:
                marked = self._append_in(db, lease, events, summary=summary, also=also)
        except _AuditCopyFailed as exc:
            self._audit_damaged(str(exc))
            with self._write() as db:
                marked = self._append_in(db, lease, events, summary=summary, also=also)
        self._last_status[lease.run_id] = summary.status
        self._audit_mark = marked

    def _append_in(
        self,
        db: sqlite3.Connection,
        lease: Lease,
        events: Sequence[Event],
        *,
        summary: RunSummary,
        also: Callable[[], None] | None = None,
    ) -> int:
        """An append's statements, in the caller's transaction; returns the audit mark."""
        first, last = events[0], events[-1]
        # Naming `status` in the SET rewrites its index entry even when the value is the
        # same, so it is only set when it changed since this store last wrote it.
        status_known = self._last_status.get(lease.run_id) == summary.status
        # The fence and the continuity check are one conditional UPDATE: no read first.
        moved = db.execute(
            _APPEND_SAME_STATUS if status_known else _APPEND_NEW_STATUS,
            (
                last.seq, last.checksum, *(() if status_known else (summary.status,)),
                summary.steps, summary.input_tokens, summary.output_tokens,
                summary.cost_usd, summary.updated_at, lease.run_id, lease.epoch,
                lease.owner, first.seq - 1, first.prev_hash,
            ),
        ).rowcount  # fmt: skip
        if moved != 1:
            self._last_status.pop(lease.run_id, None)
            head_seq, head_hash = self._check_lease(db, lease)
            check_continues(head_seq, head_hash, events, lease.run_id)
            raise StoreError(f"run {lease.run_id}: append refused")  # pragma: no cover
        if also is not None:
            also()  # the ledger's statements, on this connection, in this transaction
        last_id = 0
        for i in range(0, len(events), _INSERT_ROWS):
            chunk = events[i : i + _INSERT_ROWS]
            params = [value for e in chunk for value in _event_row(e)]
            last_id = db.execute(_insert_events(len(chunk)), params).lastrowid or 0
        marked = self._audit_mark
        if last_id - marked >= AUDIT_BATCH and not self._audit_broken:
            try:
                db.execute(SQLITE_INDEX_TAIL)
            except sqlite3.DatabaseError as exc:
                # SQLite cannot commit a transaction that met a damaged page: the caller
                # rolls back and appends again without the copy.
                raise _AuditCopyFailed(str(exc)) from None
            marked = last_id
        return marked

    def _audit_damaged(self, why: str) -> None:
        """A damaged audit index must not stop the journal: stop copying into it."""
        self._audit_broken = True
        log.warning(
            "the audit index of %s is damaged (%s): the journal goes on without it; "
            "repair it with: tether doctor --rebuild-index",
            self.path, why,
        )  # fmt: skip

    def _indexed_through(self) -> int:
        """The newest event `audit_rows` holds: every older one is in it too.

        A damaged audit index must not keep the store from opening (doctor repairs it):
        then the newest event stands in, so appends try to copy again only a batch later.
        """
        try:
            return int(
                self._db.execute("SELECT COALESCE(MAX(id), 0) FROM audit_rows").fetchone()[0]
            )
        except sqlite3.DatabaseError as exc:
            self._audit_damaged(str(exc))
            try:
                return int(
                    self._db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
                )
            except sqlite3.DatabaseError:
                return 0

    async def read_rows(
        self, run_id: str, *, after_seq: int = 0, until_seq: int | None = None
    ) -> list[StoredRow]:
        rows = self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE run_id=? AND seq>? AND seq<=? ORDER BY seq",
            (run_id, after_seq, until_seq if until_seq is not None else 2**62),
        )
        return [_stored(r) for r in rows]

    async def read_rows_at(self, run_id: str, seqs: Sequence[int]) -> list[StoredRow]:
        out: list[StoredRow] = []
        unique = sorted(set(seqs))
        for i in range(0, len(unique), 500):
            chunk = unique[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT {_EVENT_COLUMNS} FROM events "
                f"WHERE run_id=? AND seq IN ({marks}) ORDER BY seq",
                (run_id, *chunk),
            )
            out.extend(_stored(r) for r in rows)
        return out

    async def query_rows(self, query: RowQuery) -> list[StoredRow]:
        where, params = sql_where(query)
        order = sql_order(query)
        limit = "" if query.limit is None else f" LIMIT {int(query.limit)}"
        if query.run_id is not None and query.correlation_id is None:
            # Within one run: its (run_id, seq) key, complete, no audit index needed.
            sql = (
                f"SELECT {_EVENT_COLUMNS} FROM events {sqlite_run_hint(query)}"
                f"WHERE {where} ORDER BY {order}{limit}"
            )
        else:
            # Across runs: the indexed copies in `audit_rows`, plus the newest events that
            # no append has copied there yet (at most about AUDIT_BATCH), scanned.
            sql = (
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE id IN ("
                f"SELECT id FROM (SELECT id FROM audit_rows {sqlite_audit_hint(query)}"
                f"WHERE {where} ORDER BY {order}{limit}) "
                "UNION ALL SELECT id FROM (SELECT id FROM events NOT INDEXED "
                "WHERE id > (SELECT COALESCE(MAX(id), 0) FROM audit_rows) "
                f"AND {where} ORDER BY {order}{limit})"
                f") ORDER BY {order}{limit}"
            )
            params = params + params
        return [_stored(r) for r in self._read(sql, params)]

    async def put_snapshot(
        self, lease: Lease, run_id: str, seq: int, raw: bytes, *, keep: int
    ) -> None:
        with self._write() as db:
            self._check_lease(db, lease)
            db.execute(
                "INSERT OR REPLACE INTO snapshots (run_id, seq, data) VALUES (?,?,?)",
                (run_id, seq, raw),
            )
            db.execute(
                "DELETE FROM snapshots WHERE run_id=? AND seq NOT IN "
                "(SELECT seq FROM snapshots WHERE run_id=? ORDER BY seq DESC LIMIT ?)",
                (run_id, run_id, keep),
            )

    async def read_snapshots(self, run_id: str) -> list[tuple[int, bytes]]:
        rows = self._read(
            "SELECT seq, data FROM snapshots WHERE run_id=? ORDER BY seq DESC", (run_id,)
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
        self._last_status.pop(run_id, None)
        with self._write() as db:
            self._check_lease(db, lease)
            db.execute(
                "DELETE FROM audit_rows WHERE id IN "
                "(SELECT id FROM events WHERE run_id=? AND seq>?)",
                (run_id, keep_through),
            )
            db.execute("DELETE FROM events WHERE run_id=? AND seq>?", (run_id, keep_through))
            db.execute("DELETE FROM snapshots WHERE run_id=? AND seq>?", (run_id, keep_through))
            db.execute(
                "UPDATE runs SET head_seq=?, head_hash=? WHERE run_id=?",
                (keep_through, head_hash, run_id),
            )
            if then and summary is not None:
                self._append_in(db, lease, then, summary=summary)
        self._audit_mark = self._indexed_through()

    # -- the audit index (schema 5) ----------------------------------------------------

    async def check_audit_index(self) -> str | None:
        """What is wrong with `audit_rows`, or None: damaged pages, rows that disagree
        with `events`, rows missing below the copied mark. Queries across runs read it,
        while verification reads `events`, so `doctor` asks this as well."""
        try:
            damage = [r[0] for r in self._db.execute("PRAGMA quick_check('audit_rows')")]
            if damage != ["ok"]:
                return f"damaged pages: {'; '.join(damage[:3])}"
            (wrong,) = self._db.execute(
                "SELECT COUNT(*) FROM audit_rows a LEFT JOIN events e ON e.id = a.id "
                "WHERE e.id IS NULL OR a.run_id IS NOT e.run_id OR a.seq IS NOT e.seq "
                "OR a.type IS NOT e.type OR a.correlation_id IS NOT e.correlation_id "
                "OR a.ts IS NOT e.ts OR a.actor IS NOT e.actor OR a.tool IS NOT e.tool "
                "OR a.visibility IS NOT e.visibility"
            ).fetchone()
            (missing,) = self._db.execute(
                "SELECT COUNT(*) FROM events WHERE id <= "
                "(SELECT COALESCE(MAX(id), 0) FROM audit_rows) "
                "AND id NOT IN (SELECT id FROM audit_rows)"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            return f"unreadable: {exc}"
        problems = []
        if wrong:
            problems.append(f"{wrong} row{'s' if wrong != 1 else ''} disagree with the events")
        if missing:
            problems.append(f"{missing} event{'s' if missing != 1 else ''} missing from it")
        return "; ".join(problems) or None

    async def rebuild_audit_index(self) -> int:
        """Drop `audit_rows` and copy it again from `events` (it holds nothing else);
        returns the rows copied.

        A damaged page can make DROP TABLE fail (it walks the pages to free them). Then
        the table is unlinked from the schema instead and VACUUM writes the file again
        without its pages: VACUUM copies tables and builds indexes anew, so it never
        reads them."""
        try:
            with self._write() as db:
                db.execute("DROP TABLE IF EXISTS audit_rows")
                self._create_audit_rows(db)
        except StoreError:
            with self._write() as db:
                (version,) = db.execute("PRAGMA schema_version").fetchone()
                db.execute("PRAGMA writable_schema=ON")
                try:
                    db.execute("DELETE FROM sqlite_schema WHERE tbl_name='audit_rows'")
                    db.execute(f"PRAGMA schema_version={int(version) + 1}")
                finally:
                    db.execute("PRAGMA writable_schema=OFF")
            try:
                self._db.execute("VACUUM")
            except sqlite3.DatabaseError as exc:
                raise self._error(exc) from None
            with self._write() as db:
                self._create_audit_rows(db)
        self._audit_broken = False
        self._audit_mark = self._indexed_through()
        return int(self._read("SELECT COUNT(*) FROM audit_rows")[0][0])

    def _create_audit_rows(self, db: sqlite3.Connection) -> None:
        for statement in SQLITE_AUDIT_ROWS:
            db.execute(statement)

    def joins_ledger(self, tables: object) -> bool:
        """Whether `append(also=...)` can run these ledger tables' work atomically: they
        are this store's own, on its connection, so they join its transaction."""
        return tables is not None and tables is self._ledger_tables

    def ledger_tables(self) -> object:
        """The budget ledger's tables, in this store's file and on its connection, so a
        reservation and the events that record it can commit together."""
        if self._ledger_tables is None:
            from ..budget._tables import SQLiteLedgerTables

            self._ledger_tables = SQLiteLedgerTables(
                self.path, db=self._db, on_commit=self._checkpointer.committed
            )
        return self._ledger_tables

    async def run_ids(self) -> list[str]:
        return [r[0] for r in self._read("SELECT run_id FROM runs ORDER BY created_at, run_id")]

    async def close(self) -> None:
        if self._ledger_tables is not None:
            self._ledger_tables.close()  # type: ignore[attr-defined]
        self._checkpointer.close()
        self._db.close()
