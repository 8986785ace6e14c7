"""SQLite store: one file, WAL mode, one connection per store, BEGIN IMMEDIATE writes.

Calls run on the event loop thread: a WAL commit costs tens of microseconds, far less
than a hop to a worker thread. Lock waits (another process writing) are bounded by the
busy timeout.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._clock import Clock, SystemClock
from ..errors import StoreError, StoreUnavailable, UsageError
from ..events import Event
from ._audit_rows import audit_row
from ._base import Lease, RunSummary, check_continues
from ._checkpointer import BackgroundCheckpointer
from ._schema import SCHEMA_VERSION, SQLITE_MIGRATIONS, sqlite_functions
from ._sqlite_audit import SQLiteAudit, _AuditCopyFailed
from ._sqlite_core import Synchronous, _text
from ._sqlite_reads import SQLiteReads
from ._sqlite_runs import _RUN_COLUMNS, SQLiteRuns
from ._sqlite_tokens import SQLiteTokens
from ._synclog import Synced, SyncLog

__all__ = ["AUDIT_BATCH", "PAGE_SIZE", "SQLiteStore", "Synchronous"]

WAL_SIZE_LIMIT = 64 * 1024 * 1024
"""A rewound WAL larger than this is cut back to it, so a burst does not keep its size."""

_APPEND_TAIL = (
    "steps=?, input_tokens=?, output_tokens=?, cost_usd=?, updated_at=? WHERE run_id=? "
    "AND lease_epoch=? AND lease_owner=? AND head_seq=? "
    "AND substr(head_hash, 1, 16)=substr(?, 1, 16)"
)
"""The head hash is compared on the 16 digits a v3 event's link holds (see `Event.follows`;
the lease and the seq are the fence, the hash only says the history is the same one)."""
_APPEND_NEW_STATUS = "UPDATE runs SET head_seq=?, head_hash=?, status=?, " + _APPEND_TAIL
_APPEND_SAME_STATUS = "UPDATE runs SET head_seq=?, head_hash=?, " + _APPEND_TAIL
_INSERT_ROWS = 500
"""Events per INSERT statement (3 parameters each, far below SQLite's limit)."""

PAGE_SIZE = 8192
"""Page size of new store files. Events are appended in key order, so each table page is
filled until the next row does not fit and that row starts a new page, leaving the rest
empty. With a step's ~1.3 KB tool result row that left 28% of 4 KB event pages unused, and
leaves 4% of 8 KB ones (the loop bench's 1,000-step store)."""

AUDIT_BATCH = 512
"""Events an append copies into `audit_rows` at once (schema 5). Until then they are the
unindexed tail that audit queries scan: at most about this many rows."""


@functools.cache
def _insert_events(n: int) -> str:
    return "INSERT INTO event_rows (run, seq, data) VALUES " + ",".join(["(?,?,?)"] * n)


class SQLiteStore(SQLiteRuns, SQLiteReads, SQLiteAudit, SQLiteTokens):
    """Journals in one SQLite file. `synchronous="full"` also survives power loss.

    The parts: `SQLiteCore` (connection and transactions), `SQLiteMeta` (secrets, lost
    commits, doctor), `SQLiteRuns` (runs, leases, queue), `SQLiteReads` (queries),
    `SQLiteAudit` (the audit copy), `SQLiteTokens` (console tokens); here: opening,
    migrating, appending, snapshots and truncation."""

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: Synchronous = "normal",
        clock: Clock | None = None,
        busy_timeout_s: float = 30.0,
        read_only: bool = False,
        create: bool = True,
    ) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self.synchronous = synchronous
        self.read_only = read_only
        """Opened for reading only (the file or its folder cannot be written): every
        write raises StoreUnavailable."""
        self._clock = clock or SystemClock()
        self._ledger_tables: object | None = None
        self._last_status: dict[str, str] = {}
        self._run_keys: dict[str, int] = {}
        self._audit_pending: list[tuple[Any, ...]] = []
        """`audit_rows` rows of the events this store appended since the last copy (with
        each event's bytes, to check the row still holds them when they are copied)."""
        self._audit_new: list[tuple[Any, ...]] = []
        """Those of the append in progress, pending once it commits."""
        self._audit_broken = False
        self._tokens_ready = False
        self._secrets_seen: int | None = None
        """How many recorded secrets this process has loaded (see `_refresh_secrets`)."""
        self._commits = 0
        self._synclog = SyncLog(Path(f"{self.path}-synclog"))
        self._lost: list[Synced] | None = None
        self._checkpointer = BackgroundCheckpointer(
            self.path, synchronous=synchronous, busy_timeout_s=busy_timeout_s
        )
        if not self.path.parent.exists():
            raise UsageError(f"cannot create the store {self.path}: its folder does not exist")
        if (read_only or not create) and not self.path.is_file():
            raise UsageError(
                f"no store at {self.path} (nothing to read); give --store or set TETHER_STORE, "
                "or run tether demo to make one"
            )
        if read_only:
            self._open_read_only(busy_timeout_s)
            return
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_s
            )
            self._db.text_factory = _text
            sqlite_functions(self._db)
            # A new file only (an existing one keeps its size): see PAGE_SIZE.
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.execute("PRAGMA foreign_keys=ON")
            # Checkpoints run on a thread (see BackgroundCheckpointer), not inside commits.
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._migrate()
            self._audit_mark = self._indexed_through()
            stat = os.stat(self.path)
            self._identity = (stat.st_dev, stat.st_ino)
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from None
        except UnicodeDecodeError as exc:
            # A damaged header can make SQLite's own message undecodable.
            raise StoreError(f"the store file {self.path} is damaged: {exc}") from None
        self._load_secrets()

    def _open_read_only(self, busy_timeout_s: float) -> None:
        """Read a store this process cannot write (a read-only file, folder or mount).

        `mode=ro` reads the WAL too but needs its side files; a store with no WAL to
        read (cleanly closed) opens `immutable` instead, which needs none."""
        wal = Path(f"{self.path}-wal")
        has_wal = wal.exists() and wal.stat().st_size > 0
        uri = "file:" + urllib.parse.quote(str(self.path.resolve()))
        modes = ["mode=ro"] if has_wal else ["mode=ro", "immutable=1"]
        last: sqlite3.Error | None = None
        for mode in modes:
            try:
                db = sqlite3.connect(
                    f"{uri}?{mode}", uri=True, isolation_level=None,
                    check_same_thread=False, timeout=busy_timeout_s,
                )  # fmt: skip
                row = db.execute(
                    "SELECT value FROM tether_meta WHERE key='schema_version'"
                ).fetchone()
            except sqlite3.Error as exc:
                last = exc
                continue
            version = int(row[0]) if row else 0
            if version != SCHEMA_VERSION:
                db.close()
                raise UsageError(
                    f"the store {self.path} is read-only here and was written by "
                    f"{'an older' if version < SCHEMA_VERSION else 'a newer'} Tether "
                    f"(schema {version}, this one reads {SCHEMA_VERSION}): open it once "
                    "where it can be written, or use a matching version"
                )
            db.text_factory = _text
            sqlite_functions(db)
            self._db = db
            self._audit_mark = self._indexed_through()
            stat = os.stat(self.path)
            self._identity = (stat.st_dev, stat.st_ino)
            self._load_secrets()
            return
        assert last is not None
        raise self._error(last)

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
        # Synced: a run whose effects began must not vanish in a power cut (its steps
        # can then be redone with the same effect keys).
        with self._write(sync=True) as db:
            if db.execute("SELECT 1 FROM runs WHERE run_id=?", (first.run_id,)).fetchone():
                raise UsageError(f"run {first.run_id!r} already exists")
            db.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,NULL,0,NULL)",
                (
                    first.run_id, agent, tenant, parent_run_id, created_at or first.ts,
                    summary.updated_at,
                    summary.status, summary.steps, summary.input_tokens,
                    summary.output_tokens, summary.cost_usd, first.seq, first.checksum,
                ),
            )  # fmt: skip
            db.execute("INSERT OR IGNORE INTO run_keys (run_id) VALUES (?)", (first.run_id,))
            key = self._run_key(db, first.run_id)
            db.execute(_insert_events(1), (key, first.seq, first.raw))
        self._synclog.record(first.run_id, first.seq, first.checksum)

    async def append(
        self,
        lease: Lease,
        events: Sequence[Event],
        *,
        summary: RunSummary,
        also: Callable[[], None] | None = None,
        sync: bool = False,
    ) -> None:
        if not events:
            if also is not None:
                raise UsageError("append(also=...) needs at least one event")
            return
        first = events[0]
        check_continues(first.seq - 1, None, events, lease.run_id)
        if also is not None and self._ledger_tables is None:
            raise UsageError("append(also=...) runs only this store's own ledger work")
        try:
            with self._write(sync=sync) as db:
                marked = self._append_in(db, lease, events, summary=summary, also=also)
        except _AuditCopyFailed as exc:
            self._audit_damaged(str(exc))
            with self._write(sync=sync) as db:
                marked = self._append_in(db, lease, events, summary=summary, also=also)
        self._last_status[lease.run_id] = summary.status
        self._commit_audit(marked)
        if sync:
            self._synclog.record(lease.run_id, events[-1].seq, events[-1].checksum)

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
        key = self._run_key(db, lease.run_id)
        for i in range(0, len(events), _INSERT_ROWS):
            chunk = events[i : i + _INSERT_ROWS]
            params = [value for e in chunk for value in (key, e.seq, e.raw)]
            last_id = db.execute(_insert_events(len(chunk)), params).lastrowid or 0
        marked = self._audit_mark
        if self._audit_broken:
            return marked
        # One INSERT gives its rows consecutive ids (this transaction holds the write lock).
        first_id = last_id - len(events) + 1
        run_id = lease.run_id
        self._audit_new = [audit_row(first_id + i, key, run_id, e) for i, e in enumerate(events)]
        if last_id - marked >= AUDIT_BATCH:
            try:
                self._copy_audit(db, marked)
            except sqlite3.DatabaseError as exc:
                # SQLite cannot commit a transaction that met a damaged page: the caller
                # rolls back and appends again without the copy.
                raise _AuditCopyFailed(str(exc)) from None
            marked = last_id
        return marked

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
            key = self._run_key(db, run_id)
            db.execute(
                "DELETE FROM audit_rows WHERE id IN "
                "(SELECT id FROM event_rows WHERE run=? AND seq>?)",
                (key, keep_through),
            )
            db.execute("DELETE FROM event_rows WHERE run=? AND seq>?", (key, keep_through))
            db.execute("DELETE FROM snapshots WHERE run_id=? AND seq>?", (run_id, keep_through))
            db.execute(
                "UPDATE runs SET head_seq=?, head_hash=? WHERE run_id=?",
                (keep_through, head_hash, run_id),
            )
            if then and summary is not None:
                self._append_in(db, lease, then, summary=summary)
        self._audit_pending, self._audit_new = [], []
        self._audit_mark = self._indexed_through()

    async def check_file_integrity(self) -> str | None:
        """SQLite's own `quick_check` of every page of the file: damage to a table
        nothing else verifies (the ledger, the queue columns) shows up here."""
        try:
            found = [str(r[0]) for r in self._db.execute("PRAGMA quick_check(20)")]
            if found == ["ok"]:
                # quick_check does not compare an index with its table. For the two small
                # tables that name runs, a full check is cheap and catches a flipped id.
                for table in ("runs", "run_keys"):
                    found = [
                        str(r[0]) for r in self._db.execute(f"PRAGMA integrity_check('{table}')")
                    ]
                    if found != ["ok"]:
                        break
        except sqlite3.DatabaseError as exc:
            error = self._error(exc)
            if isinstance(error, StoreUnavailable):
                raise error from None
            return f"unreadable: {exc}"
        if found == ["ok"]:
            return None
        # Damage confined to the audit copy is reported (and repaired) on its own.
        rest = [f for f in found if "audit_" not in f]
        return "; ".join(rest[:3]) if rest else None

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

    async def close(self) -> None:
        if self._ledger_tables is not None:
            self._ledger_tables.close()  # type: ignore[attr-defined]
        self._checkpointer.close()
        self._synclog.close()
        if hasattr(self, "_db"):
            self._db.close()
