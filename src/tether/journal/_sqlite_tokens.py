"""Console access tokens (TokenStore) in the SQLite store: sealed rows, the table made on
first use (and old rows sealed)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from typing import Any

from ..errors import StoreError, UsageError
from ._base import TokenRecord
from ._schema import TOKEN_COLUMNS, TOKENS_TABLE
from ._sqlite_core import SQLiteCore
from ._tokens import SEAL_COLUMN, all_sealed, damaged_tokens, intact, sealed_token, token_seal


def _token(r: Sequence[Any]) -> TokenRecord:
    return TokenRecord(**dict(zip(TOKEN_COLUMNS.split(", "), r, strict=True)))


class SQLiteTokens(SQLiteCore):
    """The TokenStore part of `SQLiteStore`."""

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
