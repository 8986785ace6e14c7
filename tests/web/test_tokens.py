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
