"""`tether token`: console access tokens (create, list, revoke). The store keeps hashes."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import UsageError
from ..journal._base import TokenRecord
from ..web.tokens import create_token, list_tokens, revoke_token
from ._app import JsonOpt, StoreOpt, _print_json, _run, _store, app, err, out

token_app = typer.Typer(help="Console access tokens for tether serve.", no_args_is_help=True)
app.add_typer(token_app, name="token")


def _record_json(r: TokenRecord) -> dict[str, object]:
    return {
        "token_id": r.token_id, "name": r.name, "role": r.role, "created_at": r.created_at,
        "expires_at": r.expires_at, "revoked_at": r.revoked_at,
    }  # fmt: skip


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(text: str) -> float:
    """A lifetime such as 30m, 12h or 90d."""
    value, unit = text.strip()[:-1], text.strip()[-1:]
    try:
        seconds = float(value) * _UNITS[unit]
    except (KeyError, ValueError):
        raise UsageError(f"--expires {text!r}: write a duration such as 30m, 12h or 90d") from None
    if not 0 < seconds < 1e10:
        raise UsageError(f"--expires {text!r}: give a positive duration")
    return seconds


@token_app.command("create")
def create(
    role: Annotated[str, typer.Option(help="user, operator, audit or admin.")],
    name: Annotated[str, typer.Option(help="Who or what uses it (journaled as the actor).")],
    expires: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 12h or 90d (default: until revoked).")
    ] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make a token and print it once: only its hash is stored, so it cannot be shown again."""

    async def go() -> tuple[str, TokenRecord]:
        s = _store(store, create=False)
        try:
            lifetime = _seconds(expires) if expires is not None else None
            return await create_token(s, role=role, name=name, expires_in_s=lifetime)
        finally:
            await s.close()

    token, record = _run(go)
    if as_json:
        print(json.dumps({**_record_json(record), "token": token}))
        return
    err.print(f"token {record.token_id} ({record.role}) for {escape(record.name)}"
              + (f", expires {record.expires_at}" if record.expires_at else "")
              + " — shown once, store it now:")  # fmt: skip
    print(token)


@token_app.command("list")
def list_command(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """List tokens (ids, names, roles, expiry, revocation; never the tokens)."""

    async def go() -> list[TokenRecord]:
        s = _store(store, create=False)
        try:
            return await list_tokens(s)
        finally:
            await s.close()

    records = _run(go)
    if as_json:
        _print_json([_record_json(r) for r in records])
        return
    if not records:
        out.print("no console tokens — make one with: "
                  "tether token create --role operator --name NAME")  # fmt: skip
        return
    table = Table(box=None)
    for column in ("id", "name", "role", "created", "expires", "revoked"):
        table.add_column(column, no_wrap=True)
    for r in records:
        table.add_row(r.token_id, escape(r.name), r.role, r.created_at[:19],
                      (r.expires_at or "-")[:19], (r.revoked_at or "-")[:19])  # fmt: skip
    out.print(table)


@token_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (tok_…: tether token list).")],
    store: StoreOpt = None,
) -> None:
    """Revoke a token: its next request is refused."""

    async def go() -> None:
        s = _store(store, create=False)
        try:
            await revoke_token(s, token_id)
        finally:
            await s.close()

    _run(go)
    out.print(f"{token_id} revoked")
