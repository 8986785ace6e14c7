"""Console tokens on every backend, and `tether token`: shown once, stored as a hash,
refused once revoked or expired."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether._clock import FakeClock
from tether.cli import app
from tether.errors import UsageError
from tether.journal import SQLiteStore, Store
from tether.web.tokens import (
    TokenRejected,
    authenticate,
    create_token,
    hash_token,
    list_tokens,
    revoke_token,
)

from ..conftest import postgres_store

runner = CliRunner()


async def test_a_token_authenticates_until_revoked_and_only_its_hash_is_kept(
    store: Store,
) -> None:
    token, record = await create_token(store, role="operator", name="ann")
    assert record.token_hash == hash_token(token) and token not in repr(record)
    assert (await authenticate(store, token)).token_id == record.token_id
    [listed] = await list_tokens(store)
    assert listed == record
    await revoke_token(store, record.token_id)
    with pytest.raises(TokenRejected, match="revoked"):
        await authenticate(store, token)
    with pytest.raises(UsageError, match="already revoked"):
        await revoke_token(store, record.token_id)
    with pytest.raises(UsageError, match="no token"):
        await revoke_token(store, "tok_missing")
    with pytest.raises(TokenRejected, match="unknown token"):
        await authenticate(store, token + "x")
    with pytest.raises(TokenRejected, match="not a Tether"):
        await authenticate(store, "Bearer-ish")


async def test_a_token_expires_and_bad_requests_are_refused(store: Store) -> None:
    clock = FakeClock(1_000_000.0)
    token, _ = await create_token(store, role="audit", name="temp", expires_in_s=30, clock=clock)
    assert (await authenticate(store, token, clock=clock)).role == "audit"
    clock.advance(30)
    with pytest.raises(TokenRejected, match="expired"):
        await authenticate(store, token, clock=clock)
    with pytest.raises(UsageError, match="unknown role"):
        await create_token(store, role="root", name="x")
    with pytest.raises(UsageError, match="needs a name"):
        await create_token(store, role="user", name=" ")
    with pytest.raises(UsageError, match="positive"):
        await create_token(store, role="user", name="x", expires_in_s=0)


async def test_the_sqlite_file_never_holds_a_token(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    store = SQLiteStore(path)
    tokens = [(await create_token(store, role="admin", name=f"n{i}"))[0] for i in range(3)]
    await store.close()
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())  # noqa: ASYNC240
    for token in tokens:
        assert token.encode() not in data
        assert hash_token(token).encode() in data  # what is kept instead


def test_tether_token_create_prints_once_and_list_and_revoke_never_show_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    asyncio.run(SQLiteStore(db).close())
    url = f"sqlite:///{db}"
    made = runner.invoke(app, ["token", "create", "--role", "operator", "--name", "ops",
                               "--expires", "12h", "--store", url])  # fmt: skip
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("tether_")
    assert "shown once" in made.stderr
    listed = runner.invoke(app, ["token", "list", "--json", "--store", url])
    [row] = json.loads(listed.stdout)
    assert row["role"] == "operator" and row["expires_at"] and token not in listed.output
    revoked = runner.invoke(app, ["token", "revoke", row["token_id"], "--store", url])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    for args, words in (
        (["create", "--role", "root", "--name", "x"], "unknown role"),
        (["create", "--role", "user", "--name", "x", "--expires", "soon"], "duration"),
        (["revoke", "tok_nope"], "no token"),
    ):
        bad = runner.invoke(app, ["token", *args, "--store", url])
        assert bad.exit_code == 2 and words in bad.stderr, bad.output
    missing = runner.invoke(app, ["token", "list", "--store", f"sqlite:///{tmp_path}/no.db"])
    assert missing.exit_code == 2 and "no store" in missing.stderr


def test_tether_serve_refuses_a_missing_store_and_a_bad_port(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["serve", "--store", f"sqlite:///{tmp_path}/no.db"])
    assert missing.exit_code == 2 and "no store" in missing.stderr
    db = tmp_path / "t.db"
    asyncio.run(SQLiteStore(db).close())
    port = runner.invoke(app, ["serve", "--store", f"sqlite:///{db}", "--port", "70000"])
    assert port.exit_code == 2 and "not a TCP port" in port.stderr


async def _tamper(store: Store, sql: str, *args: object) -> None:
    """Change a token row behind the store's back (as damage or a hand edit would)."""
    if isinstance(store, SQLiteStore):
        store._db.execute(sql.replace("%s", "?"), args)
        return
    async with store._conn() as conn:  # type: ignore[attr-defined]
        await conn.execute(sql, args)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_damaged_token_row_signs_no_one_in_and_doctor_names_it(
    backend: str, tmp_path: Path
) -> None:
    """A revoked token whose row is changed back (revoked_at nulled) must stay refused:
    its seal no longer matches, so it signs no one in, listing says why, `doctor`'s
    check names it, and revoking it again writes it revoked with a fresh seal."""
    if backend == "postgres":
        async with postgres_store() as store:
            await _damaged_token(store)
    else:
        store = SQLiteStore(tmp_path / "t.db")
        await _damaged_token(store)
        await store.close()


async def _damaged_token(store: Store) -> None:
    token, record = await create_token(store, role="user", name="ann")
    await revoke_token(store, record.token_id)
    assert await store.check_tokens() is None  # type: ignore[attr-defined]
    await _tamper(store, "UPDATE console_tokens SET revoked_at=NULL, role=%s", "admin")
    with pytest.raises(TokenRejected):
        await authenticate(store, token)
    with pytest.raises(Exception, match=r"damaged.*tether token revoke"):
        await list_tokens(store)
    problem = await store.check_tokens()  # type: ignore[attr-defined]
    assert problem is not None and record.token_id in problem
    await revoke_token(store, record.token_id)  # the way out
    assert await store.check_tokens() is None  # type: ignore[attr-defined]
    [again] = await list_tokens(store)
    assert again.revoked_at is not None
    with pytest.raises(TokenRejected, match="revoked"):
        await authenticate(store, token)


def test_doctor_reports_a_damaged_token_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.db"
    asyncio.run(SQLiteStore(tmp_path / "t.db").close())
    made = runner.invoke(app, ["token", "create", "--role", "operator", "--name", "ci",
                               "--store", url, "--json"])  # fmt: skip
    assert made.exit_code == 0, made.output
    assert runner.invoke(app, ["doctor", "--store", url]).exit_code == 0
    import sqlite3

    db = sqlite3.connect(tmp_path / "t.db")
    db.execute("UPDATE console_tokens SET expires_at='2999-01-01T00:00:00.000000Z'")
    db.commit()
    db.close()
    done = runner.invoke(app, ["doctor", "--store", url])
    assert done.exit_code == 1 and "console tokens" in done.output, done.output


async def test_tokens_made_before_seals_are_sealed_once_and_still_work(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    token, record = await create_token(store, role="operator", name="old")
    await store.close()
    import sqlite3

    # As a store made before seals existed: the table without the column.
    from tether.journal import sqlite_functions

    db = sqlite3.connect(tmp_path / "t.db")
    sqlite_functions(db)  # ALTER TABLE parses the whole schema, the events view included
    db.execute("ALTER TABLE console_tokens DROP COLUMN seal")
    db.commit()
    db.close()
    store = SQLiteStore(tmp_path / "t.db")
    assert (await authenticate(store, token)).token_id == record.token_id
    assert await store.check_tokens() is None
    await store.close()
