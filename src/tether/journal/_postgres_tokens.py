"""Console access tokens (TokenStore) in the PostgreSQL store: sealed rows, the table made
on first use (and old rows sealed)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import psycopg

from ..errors import StoreError, UsageError
from ._base import TokenRecord
from ._schema import TOKEN_COLUMNS, TOKENS_TABLE
from ._tokens import SEAL_COLUMN, all_sealed, damaged_tokens, intact, sealed_token, token_seal

__all__ = ["PostgresTokens"]


def _token(r: Sequence[Any]) -> TokenRecord:
    return TokenRecord(**dict(zip(TOKEN_COLUMNS.split(", "), r, strict=True)))


class PostgresTokens:
    """The TokenStore half of `PostgresStore` (`PostgresCore` gives it `_conn` and `_read`)."""

    _tokens_ready: bool

    if TYPE_CHECKING:

        def _conn(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]: ...

        async def _read(self, query: str, params: Any = None) -> list[tuple[Any, ...]]: ...

    async def _token_table(self) -> None:
        """Make the token table, and seal the rows of one made before seals existed."""
        if self._tokens_ready:
            return
        async with self._conn() as conn, conn.transaction():
            await conn.execute(TOKENS_TABLE)
            cur = await conn.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = 'console_tokens' AND column_name = 'seal'"
            )
            if await cur.fetchone() is None:
                await conn.execute(SEAL_COLUMN)
                cur = await conn.execute(f"SELECT {TOKEN_COLUMNS} FROM console_tokens")
                for r in await cur.fetchall():
                    record = _token(r)
                    await conn.execute(
                        "UPDATE console_tokens SET seal=%s WHERE token_id=%s",
                        (token_seal(record), record.token_id),
                    )
        self._tokens_ready = True

    async def _token_rows(self, where: str, params: Any = None) -> list[tuple[TokenRecord, Any]]:
        await self._token_table()
        rows = await self._read(f"SELECT {TOKEN_COLUMNS}, seal FROM console_tokens {where}", params)
        return [(_token(r[:-1]), r[-1]) for r in rows]

    async def put_token(self, record: TokenRecord) -> None:
        await self._token_table()
        try:
            async with self._conn() as conn:
                await conn.execute(
                    f"INSERT INTO console_tokens ({TOKEN_COLUMNS}, seal) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                    (record.token_id, record.name, record.role, record.token_hash,
                     record.created_at, record.expires_at, record.revoked_at,
                     token_seal(record)),
                )  # fmt: skip
        except StoreError as exc:
            if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                raise UsageError(f"token {record.token_id!r} already exists") from None
            raise

    async def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        found = await self._token_rows("WHERE token_hash=%s", (token_hash,))
        return sealed_token(found[0]) if found else None

    async def list_tokens(self) -> list[TokenRecord]:
        return all_sealed(await self._token_rows("ORDER BY created_at, token_id"))

    async def check_tokens(self) -> str | None:
        return damaged_tokens(await self._token_rows(""))

    async def revoke_token(self, token_id: str, *, at: str) -> bool:
        await self._token_table()
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(
                f"SELECT {TOKEN_COLUMNS}, seal FROM console_tokens WHERE token_id=%s FOR UPDATE",
                (token_id,),
            )
            row = await cur.fetchone()
            if row is None:
                return False
            record = _token(row[:-1])
            if record.revoked_at is not None and intact(record, row[-1]):
                return False
            # A damaged row is written again revoked, with a fresh seal: the safe state.
            revoked = dataclasses.replace(record, revoked_at=at)
            await conn.execute(
                "UPDATE console_tokens SET revoked_at=%s, seal=%s WHERE token_id=%s",
                (at, token_seal(revoked), token_id),
            )
            return True
