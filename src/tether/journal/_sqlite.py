"""SQLite store: one file, WAL mode, one connection per store, BEGIN IMMEDIATE writes.

Calls run on the event loop thread: a WAL commit costs tens of microseconds, far less
than a hop to a worker thread. Lock waits (another process writing) are bounded by the
busy timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from .._clock import Clock, SystemClock
from .._envelope_v3 import V3_DEFLATED
from .._redact import remember_stored_secrets
from ..errors import (
    CorruptionError,
    LeaseHeld,
    LeaseLost,
    RunNotFound,
    StoreError,
    StoreUnavailable,
    UsageError,
)
from ..events import Event, EventDecodeError, peek_fields
from ..state import RUN_STATUSES, RunStatus
from ._audit_rows import (
    AUDIT_COLUMNS,
    AUDIT_ROWS,
    COPY_FROM_EVENTS,
    DISAGREEING,
    audit_order,
    audit_row,
    audit_where,
    copied_row,
)
from ._base import (
    DEFAULT_QUEUE,
    RUNNABLE_STATUSES,
    Claim,
    Lease,
    RunRecord,
    RunSummary,
    StoredRow,
    TokenRecord,
    check_continues,
)
from ._checkpointer import BackgroundCheckpointer
from ._index import (
    CONTEXT_INDEX_TYPES,
    AuditColumns,
    RowQuery,
    row_matches,
    runs_where,
    sort_key,
    sql_order,
    sql_where,
    sqlite_audit_hint,
    tool_in,
)
from ._integrity import verify_row
from ._schema import (
    SCHEMA_VERSION,
    SQLITE_MIGRATIONS,
    TOKEN_COLUMNS,
    TOKENS_TABLE,
    sqlite_functions,
)
from ._secrets import (
    COUNT_SECRETS,
    SECRET_KEY_PREFIX,
    SECRET_KEYS_END,
    damaged_secrets,
    secret_key,
)
from ._sections import RUN_SECTION_INDEX, SECTION_INDEX_NAME, SECTION_INDEX_TERM, SECTION_TYPES
from ._synclog import Synced, SyncLog, lost_records
from ._tokens import SEAL_COLUMN, all_sealed, damaged_tokens, intact, sealed_token, token_seal

Synchronous = Literal["normal", "full"]

log = logging.getLogger("tether.store")

_LOST = "lost-synced"
"""`tether_meta` keys naming synced commits found missing: once found, always refused."""

WAL_SIZE_LIMIT = 64 * 1024 * 1024
"""A rewound WAL larger than this is cut back to it, so a burst does not keep its size."""

_RUN_COLUMNS = (
    "run_id, agent, tenant, parent_run_id, created_at, updated_at, status, steps, "
    "input_tokens, output_tokens, cost_usd, head_seq, head_hash, lease_owner, lease_epoch, "
    "lease_expires_at"
)
_RUN_COLUMN_NAMES = [c.strip() for c in _RUN_COLUMNS.split(",")]
_TEXT, _OPT_TEXT = (str,), (str, type(None))
_RUN_COLUMN_KINDS: list[tuple[type, ...]] = [
    _TEXT, _TEXT, _OPT_TEXT, _OPT_TEXT, _TEXT, _TEXT, _TEXT, (int,), (int,), (int,),
    (int, float), (int,), _TEXT, _OPT_TEXT, (int,), (int, float, type(None)),
]  # fmt: skip
"""What each column of `_RUN_COLUMNS` may hold."""
_APPEND_TAIL = (
    "steps=?, input_tokens=?, output_tokens=?, cost_usd=?, updated_at=? WHERE run_id=? "
    "AND lease_epoch=? AND lease_owner=? AND head_seq=? "
    "AND substr(head_hash, 1, 16)=substr(?, 1, 16)"
)
"""The head hash is compared on the 16 digits a v3 event's link holds (see `Event.follows`;
the lease and the seq are the fence, the hash only says the history is the same one)."""
_APPEND_NEW_STATUS = "UPDATE runs SET head_seq=?, head_hash=?, status=?, " + _APPEND_TAIL
_APPEND_SAME_STATUS = "UPDATE runs SET head_seq=?, head_hash=?, " + _APPEND_TAIL
_CORRUPT_CODES = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}
_UNAVAILABLE_CODES = (
    "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_READONLY", "SQLITE_FULL", "SQLITE_CANTOPEN",
    "SQLITE_PERM", "SQLITE_IOERR", "SQLITE_AUTH",
)  # fmt: skip
"""Errors that say the store could not be used now, not that its data is damaged."""
_EVENT_COLUMNS = "run_id, seq, data"
"""What a StoredRow is read from (the `events` view, schema 6): see `_stored`."""
_INSERT_ROWS = 500
"""Events per INSERT statement (3 parameters each, far below SQLite's limit)."""

PAGE_SIZE = 8192
"""Page size of new store files. Events are appended in key order, so each table page is
filled until the next row does not fit and that row starts a new page, leaving the rest
empty. With a step's ~1.3 KB tool result row that left 28% of 4 KB event pages unused, and
leaves 4% of 8 KB ones (the loop bench's 1,000-step store)."""

FILE_CHECK_EVERY = 512
"""Commits between checks that the store's file is still the one at its path (a stat)."""

AUDIT_BATCH = 512
"""Events an append copies into `audit_rows` at once (schema 5). Until then they are the
unindexed tail that audit queries scan: at most about this many rows."""


def _text(data: bytes) -> str:
    """Text cells as str even when not UTF-8: schema 6 computes columns from stored bytes,
    and damaged bytes must reach verification (which names them), not fail the read."""
    return str(data, "utf-8", "replace")


def _bounds_only(q: RowQuery) -> bool:
    """A query within one run that filters on nothing but seq."""
    return not (q.types or q.tool or q.actor or q.since or q.until or q.visibilities is not None)


def _ordered(rows: list[StoredRow], q: RowQuery) -> list[StoredRow]:
    rows.sort(key=sort_key(q), reverse=q.newest_first)
    return rows if q.limit is None else rows[: q.limit]


_DEFLATED = bytes((V3_DEFLATED,))


def _type_filter(types: Sequence[str]) -> Callable[[Any], bool] | None:
    """A cheap first cut for a filter by type: the bytes of an event of one of `types`
    contain its type as canonical JSON spells it (`"t":"…"` in v2, `"type":"…"` in v1);
    a deflated v3 body cannot be searched, so it is kept. Rows it keeps are still matched
    on their parsed columns; damaged bytes are kept."""
    if not types:
        return None
    marks = [
        m.encode()
        for t in types
        for m in (f'"t":{json.dumps(t, ensure_ascii=False)}',
                  f'"type":{json.dumps(t, ensure_ascii=False)}')
    ]  # fmt: skip
    # One scan of each row for all the marks (a run's rows are all read: keep it cheap).
    search = re.compile(b"|".join(re.escape(m) for m in marks)).search

    def keep(raw: Any) -> bool:
        return not isinstance(raw, bytes) or raw[:1] == _DEFLATED or search(raw) is not None

    return keep


def _context_only(q: RowQuery) -> bool:
    return bool(q.types) and set(q.types) <= set(CONTEXT_INDEX_TYPES)


def _sections_only(q: RowQuery) -> bool:
    return bool(q.types) and set(q.types) <= set(SECTION_TYPES)


_UNCOPIED = "id > (SELECT COALESCE(MAX(id), 0) FROM audit_rows)"
"""Events past the audit copy's mark: the unindexed tail audit queries read directly."""


def _short(row: Sequence[Any] | None) -> str:
    return "nothing" if row is None else f"{row[0]!r:.60}"


def _lease_columns(run_id: str, row: Sequence[Any]) -> tuple[str | None, int, float | None]:
    """A run's lease columns, refused by name when damaged (see `SQLiteStore._record`)."""
    holder, epoch, expires = row
    if (
        not isinstance(holder, str | None)
        or not isinstance(epoch, int)
        or isinstance(epoch, bool)
        or not isinstance(expires, int | float | None)
    ):
        raise CorruptionError(
            run_id,
            None,
            f"its lease columns are damaged (owner={holder!r:.40}, epoch={epoch!r:.40})",
            repair="tether doctor shows what else is damaged; restore the store from a backup",
        )
    return holder, epoch, expires


class _AuditCopyFailed(Exception):
    """The batch copy into `audit_rows` met a damaged page (see `_append_in`)."""


@functools.cache
@functools.cache
def _insert_events(n: int) -> str:
    return "INSERT INTO event_rows (run, seq, data) VALUES " + ",".join(["(?,?,?)"] * n)


_COPY_ROWS = 64
"""Sealed audit rows per copying INSERT (10 parameters each)."""


@functools.cache
def _copy_sealed(n: int) -> str:
    """Copies `n` sealed audit rows (`AUDIT_COLUMNS` and the event's bytes, flattened),
    each only while `event_rows` still holds that event under its id."""
    values = ",".join(["(?,?,?,?,?,?,?,?,?,?)"] * n)
    picked = ", ".join(f"v.column{i}" for i in range(1, 10))
    return (
        f"INSERT OR IGNORE INTO audit_rows ({AUDIT_COLUMNS}) SELECT {picked} "
        f"FROM (VALUES {values}) v CROSS JOIN event_rows e ON e.id = v.column1 "
        "AND e.run = v.column2 AND e.seq = v.column3 AND e.data = v.column10"
    )


def _stored(r: Sequence[Any]) -> StoredRow:
    """A row of `(run_id, seq, data)` with its query columns read from the bytes in Python
    (SQLite's JSON functions parse the blob again for every column: ~120 µs a row against
    ~5 µs here). Unreadable bytes get empty columns; verification reports them."""
    run_id, seq, raw = r[0], r[1], r[2]
    f = peek_fields(raw, run_id) if isinstance(run_id, str) else None
    if f is None or not all(isinstance(f[k], str) for k in ("type", "ts", "actor", "visibility")):
        return StoredRow(run_id=run_id, seq=seq, type="", correlation_id=None, raw=raw)
    corr = f["correlation_id"]
    return StoredRow(
        run_id=run_id,
        seq=seq,
        type=f["type"],
        correlation_id=corr if isinstance(corr, str) else None,
        raw=raw,
        audit=AuditColumns(
            ts=f["ts"],
            actor=f["actor"],
            tool=tool_in(f["type"], f["payload"]),
            visibility=f["visibility"],
        ),
    )


def _doctor_json(value: Any) -> dict[str, Any] | None:
    """A kept doctor result; a damaged one reads as none (the next doctor run replaces it)."""
    try:
        found = json.loads(value)
    except (TypeError, ValueError, RecursionError):
        return None
    return found if isinstance(found, dict) else None


def _token(r: Sequence[Any]) -> TokenRecord:
    return TokenRecord(**dict(zip(TOKEN_COLUMNS.split(", "), r, strict=True)))


class SQLiteStore:
    """Journals in one SQLite file. `synchronous="full"` also survives power loss."""

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

    # -- plumbing ---------------------------------------------------------------------

    def _error(self, exc: sqlite3.Error) -> StoreError:
        name = getattr(exc, "sqlite_errorname", "")
        if name in _CORRUPT_CODES or "malformed" in str(exc) or "not a database" in str(exc):
            return StoreError(f"the store file {self.path} is damaged: {exc}")
        if name.startswith(_UNAVAILABLE_CODES) or "unable to open" in str(exc):
            return StoreUnavailable(f"store {self.path}: {exc}")
        return StoreError(f"store {self.path}: {exc}")

    @contextmanager
    def _write(self, *, sync: bool = False) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: the write lock is taken before anything is read.

        `sync` makes this commit reach stable storage even under `synchronous=normal`:
        the WAL is synced at its commit (and with it every earlier commit), which is what
        a write-ahead record needs before an effect in the outside world.
        """
        if self.read_only:
            raise StoreUnavailable(f"the store {self.path} is open read-only: it cannot be written")
        db = self._db
        upgraded = sync and self.synchronous == "normal"
        try:
            if upgraded:
                # The safety level cannot change inside a transaction: set it around one.
                db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if upgraded:
                self._restore_sync()
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
        finally:
            if upgraded:
                self._restore_sync()
        self._checkpointer.committed(db)
        self._commits += 1
        if sync or self._commits % FILE_CHECK_EVERY == 0:
            self.check_file()

    def _restore_sync(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA synchronous=NORMAL")

    def check_file(self) -> None:
        """Refuse to go on when the store's file was removed or replaced under this process.

        SQLite keeps writing to the file it opened, even once its name is gone: a run would
        then "complete" into a file nobody can open again. Checked at every synced commit
        (the boundaries with the outside world, a run's end) and with each checkpoint.
        """
        try:
            now = os.stat(self.path)
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != self._identity:
            what = "removed" if now is None else "replaced by another file"
            raise StoreError(
                f"the store file {self.path} was {what} while this process was using it: "
                "what it wrote since is not in the store at that path"
            )

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

    def _run_key(self, db: sqlite3.Connection, run_id: str) -> int:
        """The run's integer key in `event_rows` (schema 6); fixed once given, so cached."""
        key = self._run_keys.get(run_id)
        if key is None:
            row = db.execute("SELECT key FROM run_keys WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            # The lookup reads only the index; the table's own copy of the id must agree,
            # or a flipped byte there would go unnoticed until the index is rebuilt.
            named = db.execute("SELECT run_id FROM run_keys WHERE key=?", (row[0],)).fetchone()
            if named is None or named[0] != run_id:
                raise CorruptionError(
                    run_id, None,
                    f"its journal key row is damaged (it names {_short(named)})",
                    repair="tether doctor shows what else is damaged; restore the store "
                    "from a backup",
                )  # fmt: skip
            key = self._run_keys[run_id] = int(row[0])
        return key

    def _record(
        self, row: Sequence[Any], stored_id: Any = None, asked: str | None = None
    ) -> RunRecord:
        # SQLite keeps any value in any column: a damaged page or a stray write can put
        # text where a count belongs. Refuse it by name rather than fail somewhere later.
        if asked is not None and stored_id != asked:
            # Found through the index under `asked`, yet the row names another run.
            raise CorruptionError(
                asked, None,
                f"its run index row is damaged (it names {_short((stored_id,))})",
                repair="tether doctor shows what else is damaged; restore the store from a backup",
            )  # fmt: skip
        wrong = [
            name
            for name, value, kinds in zip(_RUN_COLUMN_NAMES, row, _RUN_COLUMN_KINDS, strict=True)
            if not isinstance(value, kinds) or isinstance(value, bool)
        ]
        if wrong or row[6] not in RUN_STATUSES:
            what = ", ".join(f"{n}={row[_RUN_COLUMN_NAMES.index(n)]!r:.40}" for n in wrong)
            raise CorruptionError(
                str(row[0]),
                None,
                f"its run index row is damaged ({what or f'status={row[6]!r:.40}'})",
                repair="tether doctor shows what else is damaged; restore the store from a backup",
            )
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
        # The id is read back from the table row itself (a rowid lookup), not from the
        # index the search used: a flipped byte in the row must not pass unseen.
        rows = self._read(
            f"SELECT {_RUN_COLUMNS}, (SELECT r.run_id FROM runs AS r NOT INDEXED "
            "WHERE r.rowid = runs.rowid) FROM runs WHERE run_id=?",
            (run_id,),
        )
        if not rows:
            if await self.lost_synced_commits(run_id):
                raise CorruptionError(
                    run_id, 1,
                    "the store lost this run: the sync log shows its commits were synced "
                    "before side effects, so they may have happened",
                    repair="restore the store from a backup",
                )  # fmt: skip
            if self._read("SELECT 1 FROM run_keys WHERE run_id=?", (run_id,)):
                raise CorruptionError(
                    run_id, None,
                    "its journal is in the store but its run index row cannot be found "
                    "(the `runs` table or its index is damaged)",
                    repair="tether doctor shows what else is damaged; restore the store "
                    "from a backup",
                )  # fmt: skip
            raise RunNotFound(run_id)
        return self._record(rows[0][:-1], rows[0][-1], run_id)

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
            status=status, agent=agent, tenant=tenant, since=since, until=until
        )
        rows = self._read(
            f"SELECT {_RUN_COLUMNS} FROM runs{where} ORDER BY created_at DESC, run_id DESC LIMIT ?",
            (*params, limit),
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
            holder, epoch, expires = _lease_columns(run_id, row)
            live = holder is not None and expires is not None and expires > now
            if live and holder not in (owner, takeover_from):
                left = (expires or now) - now
                raise LeaseHeld(f"run {run_id} is leased by {holder} for {left:.0f}s more")
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
            for run_id, *columns in rows:
                holder, epoch, expires = _lease_columns(run_id, columns)
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

    async def lost_synced_commits(self, run_id: str | None = None) -> list[Synced]:
        """Commits the sync log says were synced before an effect and this file no longer
        holds (see `_synclog`): found once per open, then remembered in the store itself."""
        if self._lost is None:
            try:
                found = lost_records(self._synclog, self._holds)
            except StoreError as exc:
                if not self.read_only:
                    raise  # a writer never resumes a run it cannot check
                log.warning("%s; runs are shown without that check", exc)
                found = []
            if found and not self.read_only:
                with self._write(sync=True) as db:
                    db.executemany(
                        # REPLACE: registering a secret again repairs a damaged copy of it.
                        "INSERT OR REPLACE INTO tether_meta(key, value) VALUES (?, ?)",
                        [(f"{_LOST} {r.run_id} {r.seq}", r.checksum) for r in found],
                    )
            known = {(r.run_id, r.seq): r for r in found}
            for key, checksum in self._read(
                f"SELECT key, value FROM tether_meta WHERE key LIKE '{_LOST} %'"
            ):
                _, lost_run, seq = str(key).split(" ")
                known.setdefault((lost_run, int(seq)), Synced(lost_run, int(seq), str(checksum)))
            self._lost = sorted(known.values(), key=lambda r: (r.run_id, r.seq))
        return [r for r in self._lost if run_id is None or r.run_id == run_id]

    async def store_secrets(self, values: Sequence[str]) -> None:
        """Record registered secrets for every later reader (see `_secrets`)."""
        with self._write(sync=True) as db:
            db.executemany(
                # REPLACE: registering a secret again repairs a damaged copy of it.
                "INSERT OR REPLACE INTO tether_meta(key, value) VALUES (?, ?)",
                [(secret_key(v), v) for v in values],
            )

    async def record_doctor(self, result: dict[str, Any]) -> None:
        """Keep the last `doctor` result for the console (see `tether.doctor_record`)."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO tether_meta(key, value) VALUES ('doctor.last', ?)",
                (json.dumps(result, ensure_ascii=False),),
            )

    async def last_doctor(self) -> dict[str, Any] | None:
        rows = self._read("SELECT value FROM tether_meta WHERE key='doctor.last'")
        return _doctor_json(rows[0][0]) if rows else None

    def _load_secrets(self) -> None:
        try:
            rows = self._read(
                f"SELECT value FROM tether_meta WHERE key LIKE '{SECRET_KEY_PREFIX}%'"
            )
        except StoreError as exc:
            log.warning(
                "the secrets recorded in %s cannot be read (%s): views redact only the "
                "patterns and this process's secrets", self.path, exc,
            )  # fmt: skip
            return
        remember_stored_secrets(str(r[0]) for r in rows if isinstance(r[0], str))
        self._secrets_seen = len(rows)

    def _refresh_secrets(self) -> None:
        """Load the secrets recorded since this store was opened (see `COUNT_SECRETS`)."""
        try:
            rows = self._read(COUNT_SECRETS.format(m="?"), (SECRET_KEY_PREFIX, SECRET_KEYS_END))
        except StoreError:
            return  # `_load_secrets` warned when the store was opened
        if rows and rows[0][0] != self._secrets_seen:
            self._load_secrets()

    def _holds(self, record: Synced) -> bool:
        rows = self._read(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE run_id=? AND seq=?",
            (record.run_id, record.seq),
        )
        if not rows:
            return False
        try:
            return verify_row(_stored(rows[0])).checksum == record.checksum
        except EventDecodeError:
            return True  # there, but damaged: the journal's own checks name that

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

    def _copy_audit(self, db: sqlite3.Connection, marked: int) -> None:
        """Fill `audit_rows` up to the newest event: from the values this store sealed, and,
        for events other processes appended meanwhile, computed from their bytes."""
        # Each row only if its event is still the one sealed (a run cut and written again
        # by another holder reuses ids). Many rows per statement: the partial indexes'
        # `IN` terms build a lookup table once per statement run, which `executemany`
        # (one run per row) paid for every row and index, a third of the copy's cost.
        rows = [r for r in (*self._audit_pending, *self._audit_new) if r[0] > marked]
        for i in range(0, len(rows), _COPY_ROWS):
            chunk = rows[i : i + _COPY_ROWS]
            db.execute(_copy_sealed(len(chunk)), [value for r in chunk for value in r])
        db.execute(COPY_FROM_EVENTS, (marked, marked))
        self._audit_new = []
        self._audit_pending = []

    def _commit_audit(self, marked: int) -> None:
        """After a commit: the rows it did not copy wait for the next batch."""
        if marked != self._audit_mark:
            self._audit_pending = []
        elif not self._audit_broken:
            self._audit_pending.extend(self._audit_new)
        self._audit_new = []
        self._audit_mark = marked

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
                    self._db.execute("SELECT COALESCE(MAX(id), 0) FROM event_rows").fetchone()[0]
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
        self._refresh_secrets()
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
        self._refresh_secrets()
        return out

    async def query_rows(self, query: RowQuery) -> list[StoredRow]:
        rows = self._query_rows(query)
        self._refresh_secrets()
        return rows

    def _query_rows(self, query: RowQuery) -> list[StoredRow]:
        # Only `audit_rows` filters in SQL on stored columns. Rows read from `event_rows`
        # (a run's events, the tail not copied yet) get their columns in Python and are
        # filtered by the reference semantics (`row_matches`), then ordered and cut here.
        where, params = sql_where(query)
        order = sql_order(query)
        limit = "" if query.limit is None else f" LIMIT {int(query.limit)}"
        if query.run_id is not None and query.correlation_id is None:
            if _bounds_only(query):
                # By the run's (run, seq) key alone: SQL cuts (the join may reorder).
                return _ordered(self._rows(f"WHERE {where} ORDER BY {order}{limit}", params), query)
            if _context_only(query):
                # `why`'s context lookups: the copied rows by the per-run context index,
                # and the run's rows not copied yet. A limit is applied in SQL to the copied
                # rows (a run page's newest compactions), then again to the whole.
                copied_where, copied_params = audit_where(query)
                found = self._rows(
                    "WHERE id IN (SELECT id FROM (SELECT a.id AS id FROM audit_rows a INDEXED BY "
                    f"audit_by_run_context JOIN run_keys k ON k.key = a.run WHERE {copied_where}"
                    f" ORDER BY {audit_order(query)}{limit}))",
                    copied_params,
                )
                seen = {r.seq for r in found}
                found += [r for r in self._uncopied(query.run_id) if r.seq not in seen]
            elif _sections_only(query) and self._has_section_index():
                return self._section_rows(query, query.run_id)
            else:
                found = self._run_rows(query)
            return _ordered([r for r in found if row_matches(r, query)], query)
        # Across runs: the indexed copies in `audit_rows` (filtered, ordered and cut in
        # SQL), plus the newest events no append has copied yet (about AUDIT_BATCH).
        copied_where, copied_params = audit_where(query)
        copied = self._rows(
            "WHERE id IN (SELECT id FROM (SELECT a.id AS id FROM audit_rows a "
            f"{sqlite_audit_hint(query)}JOIN run_keys k ON k.key = a.run "
            f"WHERE {copied_where} ORDER BY {audit_order(query)}{limit}))",
            copied_params,
        )
        newest = self._rows(f"WHERE {_UNCOPIED}")
        return _ordered([*copied, *(r for r in newest if row_matches(r, query))], query)

    def _uncopied(self, run_id: str) -> list[StoredRow]:
        """The run's events not copied to `audit_rows` yet (at most about AUDIT_BATCH).
        `+run_id`: driven by the (short) id range, not the whole run's key."""
        return self._rows(f"WHERE {_UNCOPIED} AND +run_id=?", (run_id,))

    def _run_rows(self, query: RowQuery) -> list[StoredRow]:
        """Candidates for a query within one run: by type, the rows whose copied type
        matches (found through the copy's small rows, so the run's other events are never
        read), those not copied yet and those whose copy has no type (damaged bytes,
        which verification must still see); without types, all of the run's rows."""
        bounds = (
            query.run_id,
            0 if query.after_seq is None else query.after_seq,
            2**62 if query.before_seq is None else query.before_seq,
        )
        if not query.types:
            return self._rows("WHERE run_id=? AND seq>? AND seq<? ORDER BY seq", bounds)
        marks = ",".join("?" * len(query.types))
        return self._rows(
            "WHERE id IN (SELECT e.id FROM event_rows e LEFT JOIN audit_rows a ON a.id = e.id "
            "WHERE e.run=(SELECT key FROM run_keys WHERE run_id=?) AND e.seq>? AND e.seq<? "
            f"AND (a.type IS NULL OR a.type IN ({marks}))) ORDER BY seq",
            (*bounds, *query.types),
            types=query.types,
        )

    def _has_section_index(self) -> bool:
        """Whether `audit_rows` has the per-run index of sparse events, exactly as
        `_sections` defines it (looked up per query: a rebuild of the copy drops it)."""
        found = self._read(
            "SELECT sql FROM sqlite_master WHERE type='index' AND name=?", (SECTION_INDEX_NAME,)
        )
        return bool(found) and " ".join(str(found[0][0]).split()) == RUN_SECTION_INDEX

    def _section_rows(self, query: RowQuery, run_id: str) -> list[StoredRow]:
        """A run's sparse events by the section index: per type, its newest (or oldest)
        `limit` in SQL, so the work is bounded by the limit, not by the run's length; the
        run's rows not copied yet are matched as they are read."""
        order = "a.seq DESC" if query.newest_first else "a.seq"
        limit = "" if query.limit is None else f" LIMIT {int(query.limit)}"
        arms: list[str] = []
        params: list[Any] = []
        for kind in sorted(set(query.types)):
            where, values = audit_where(dataclasses.replace(query, types=(kind,)))
            arms.append(
                f"SELECT id FROM (SELECT a.id AS id FROM audit_rows a INDEXED BY "
                f"{SECTION_INDEX_NAME} JOIN run_keys k ON k.key = a.run WHERE {where} "
                f"AND {SECTION_INDEX_TERM} ORDER BY {order}{limit})"
            )
            params += values
        found = self._rows(f"WHERE id IN ({' UNION ALL '.join(arms)})", params)
        newest = self._uncopied(run_id)
        return _ordered([*found, *(r for r in newest if row_matches(r, query))], query)

    def _rows(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        types: Sequence[str] = (),
    ) -> list[StoredRow]:
        """Events selected from the `events` view by `sql`, with their query columns.

        Rows already copied to `audit_rows` take their columns from there (no parse: a
        `why` lists dozens of rows by type and visibility and verifies only a few); the
        newest rows, not copied yet, are parsed. `types` filters on those columns.
        """
        found = self._read(
            "SELECT v.run_id, v.seq, v.data, a.type, a.corr, a.ts, a.actor, a.tool,"
            f" a.visibility FROM (SELECT id, {_EVENT_COLUMNS} FROM events {sql}) v"
            " LEFT JOIN audit_rows a ON a.id = v.id",
            params,
        )
        keep = _type_filter(types)
        out: list[StoredRow] = []
        for r in found:
            if r[3] is None:  # not copied yet, or its bytes were unreadable when copied
                if keep is None or keep(r[2]):
                    out.append(_stored(r))
            elif not types or r[3] in types:
                out.append(copied_row(r))
        return out

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

    async def check_secrets(self) -> str | None:
        """The recorded secrets against their keys (see `_secrets.damaged_secrets`)."""
        return damaged_secrets(
            self._read(f"SELECT key, value FROM tether_meta WHERE key LIKE '{SECRET_KEY_PREFIX}%'")
        )

    # -- the audit index (schema 5) ----------------------------------------------------

    async def check_audit_index(self) -> str | None:
        """What is wrong with `audit_rows`, or None: damaged pages, rows that disagree
        with `events`, rows missing below the copied mark. Queries across runs read it,
        while verification reads `events`, so `doctor` asks this as well."""
        try:
            damage = [r[0] for r in self._db.execute("PRAGMA quick_check('audit_rows')")]
            if damage != ["ok"]:
                return f"damaged pages: {'; '.join(damage[:3])}"
            (wrong,) = self._db.execute(DISAGREEING).fetchone()
            (missing,) = self._db.execute(
                "SELECT COUNT(*) FROM event_rows WHERE id <= "
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
        """Drop `audit_rows` and copy it again from `event_rows` (it holds nothing else);
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
        self._audit_pending, self._audit_new = [], []
        self._audit_mark = self._indexed_through()
        return int(self._read("SELECT COUNT(*) FROM audit_rows")[0][0])

    def _create_audit_rows(self, db: sqlite3.Connection) -> None:
        for statement in AUDIT_ROWS:
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

    # -- console access tokens (TokenStore) -------------------------------------------

    def _token_table(self, db: sqlite3.Connection) -> None:
        """Make the token table, and seal the rows of one made before seals existed."""
        db.execute(TOKENS_TABLE)
        if "seal" not in {r[1] for r in db.execute("PRAGMA table_info(console_tokens)")}:
            db.execute(SEAL_COLUMN)
            for r in db.execute(f"SELECT {TOKEN_COLUMNS} FROM console_tokens").fetchall():
                record = _token(r)
                db.execute(
                    "UPDATE console_tokens SET seal=? WHERE token_id=?",
                    (token_seal(record), record.token_id),
                )

    def _token_rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[TokenRecord, Any]]:
        """Token rows with their seals; none when the table was never made (a store open
        read-only). A read-only store from before seals has none to check: `True`."""
        if not self.read_only:
            if not self._tokens_ready:
                with self._write() as db:
                    self._token_table(db)
                self._tokens_ready = True
        elif not self._read("SELECT 1 FROM sqlite_master WHERE name='console_tokens'"):
            return []
        elif "seal" not in {r[1] for r in self._read("PRAGMA table_info(console_tokens)")}:
            rows = self._read(f"SELECT {TOKEN_COLUMNS} FROM console_tokens {sql}", params)
            return [(record, token_seal(record)) for record in map(_token, rows)]
        rows = self._read(f"SELECT {TOKEN_COLUMNS}, seal FROM console_tokens {sql}", params)
        return [(_token(r[:-1]), r[-1]) for r in rows]

    async def put_token(self, record: TokenRecord) -> None:
        try:
            with self._write(sync=True) as db:
                self._token_table(db)
                db.execute(
                    f"INSERT INTO console_tokens ({TOKEN_COLUMNS}, seal) VALUES (?,?,?,?,?,?,?,?)",
                    (record.token_id, record.name, record.role, record.token_hash,
                     record.created_at, record.expires_at, record.revoked_at,
                     token_seal(record)),
                )  # fmt: skip
        except StoreError as exc:
            if "UNIQUE" in str(exc):
                raise UsageError(f"token {record.token_id!r} already exists") from None
            raise

    async def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        found = self._token_rows("WHERE token_hash=?", (token_hash,))
        return sealed_token(found[0]) if found else None

    async def list_tokens(self) -> list[TokenRecord]:
        return all_sealed(self._token_rows("ORDER BY created_at, token_id"))

    async def check_tokens(self) -> str | None:
        return damaged_tokens(self._token_rows(""))

    async def revoke_token(self, token_id: str, *, at: str) -> bool:
        with self._write(sync=True) as db:
            self._token_table(db)
            row = db.execute(
                f"SELECT {TOKEN_COLUMNS}, seal FROM console_tokens WHERE token_id=?", (token_id,)
            ).fetchone()
            if row is None:
                return False
            record = _token(row[:-1])
            if record.revoked_at is not None and intact(record, row[-1]):
                return False
            # A damaged row is written again revoked, with a fresh seal: the safe state.
            revoked = dataclasses.replace(record, revoked_at=at)
            db.execute(
                "UPDATE console_tokens SET revoked_at=?, seal=? WHERE token_id=?",
                (at, token_seal(revoked), token_id),
            )
            return True

    async def close(self) -> None:
        if self._ledger_tables is not None:
            self._ledger_tables.close()  # type: ignore[attr-defined]
        self._checkpointer.close()
        self._synclog.close()
        if hasattr(self, "_db"):
            self._db.close()
