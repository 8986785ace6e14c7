"""The SQLite store's plumbing: its connection's transactions, reads and errors, shared by
the parts of `SQLiteStore` (see `_sqlite`)."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from .._clock import Clock
from ..errors import StoreError, StoreUnavailable
from ._checkpointer import BackgroundCheckpointer
from ._synclog import Synced, SyncLog

Synchronous = Literal["normal", "full"]

log = logging.getLogger("tether.store")

_CORRUPT_CODES = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}
_UNAVAILABLE_CODES = (
    "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_READONLY", "SQLITE_FULL", "SQLITE_CANTOPEN",
    "SQLITE_PERM", "SQLITE_IOERR", "SQLITE_AUTH",
)  # fmt: skip

FILE_CHECK_EVERY = 512
"""Commits between checks that the store's file is still the one at its path (a stat)."""


def _text(data: bytes) -> str:
    """Text cells as str even when not UTF-8: schema 6 computes columns from stored bytes,
    and damaged bytes must reach verification (which names them), not fail the read."""
    return str(data, "utf-8", "replace")


class SQLiteCore:
    """What every part of `SQLiteStore` stands on: the file's one connection, its
    IMMEDIATE transactions and the errors they raise. `SQLiteStore.__init__` sets the
    attributes."""

    path: Path
    url: str
    synchronous: Synchronous
    read_only: bool
    _db: sqlite3.Connection
    _clock: Clock
    _checkpointer: BackgroundCheckpointer
    _synclog: SyncLog
    _commits: int
    _identity: tuple[int, int]
    _ledger_tables: object | None
    _last_status: dict[str, str]
    _run_keys: dict[str, int]
    _audit_pending: list[tuple[Any, ...]]
    _audit_new: list[tuple[Any, ...]]
    _audit_broken: bool
    _audit_mark: int
    _tokens_ready: bool
    _secrets_seen: int | None
    _lost: list[Synced] | None

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
