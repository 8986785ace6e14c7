"""The SQLite store's audit copy (`audit_rows`, schema 5): filled in batches by appends,
checked and rebuilt by `doctor`; damage to it never stops the journal."""

from __future__ import annotations

import functools
import sqlite3

from ..errors import StoreError
from ._audit_rows import AUDIT_COLUMNS, AUDIT_ROWS, COPY_FROM_EVENTS, DISAGREEING
from ._sqlite_core import SQLiteCore, log


class _AuditCopyFailed(Exception):
    """The batch copy into `audit_rows` met a damaged page (see `_append_in`)."""


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


class SQLiteAudit(SQLiteCore):
    """The audit copy part of `SQLiteStore`."""

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
