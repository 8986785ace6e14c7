"""Console access tokens: who may read what through `tether serve`, and who may act.

A token is 256 random bits shown once when it is made; the store keeps only its sha256
(`TokenRecord`), so a copy of the store grants nothing. Each token has one role:

- `user`, `operator`, `audit` read runs exactly as `tether show --view` does for that
  audience (`tether.views`); `audit` reads everything and changes nothing;
- `operator` also decides approvals, forks and queues runs;
- `admin` acts like an operator, reads with the operator's view (administering limits is
  not a licence to read internals), and alone may change budget limits.

No part of this module needs the web extra: `tether token` works without it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Literal, get_args

from .._clock import Clock, SystemClock, iso
from ..errors import TetherError, UsageError
from ..journal import Store
from ..journal._base import TokenRecord, TokenStore
from ..views import Role

__all__ = [
    "ACTING_ROLES",
    "CONSOLE_ROLES",
    "ConsoleRole",
    "TokenRejected",
    "authenticate",
    "create_token",
    "hash_token",
    "list_tokens",
    "parse_console_role",
    "revoke_token",
    "view_of",
]

ConsoleRole = Literal["user", "operator", "audit", "admin"]
CONSOLE_ROLES: tuple[ConsoleRole, ...] = get_args(ConsoleRole)
ACTING_ROLES: frozenset[ConsoleRole] = frozenset({"operator", "admin"})
"""Roles that may approve, reject, fork and queue runs."""

_VIEW: dict[ConsoleRole, Role] = {
    "user": "user",
    "operator": "operator",
    "audit": "audit",
    "admin": "operator",
}
TOKEN_PREFIX = "tether_"


class TokenRejected(TetherError):
    """The token is unknown, revoked or expired (the message never repeats the token)."""


def view_of(role: ConsoleRole) -> Role:
    """The audience (`tether show --view`) a console role reads with."""
    return _VIEW[role]


def parse_console_role(text: str) -> ConsoleRole:
    for role in CONSOLE_ROLES:
        if text == role:
            return role
    raise UsageError(f"unknown role {text!r}; use user, operator, audit or admin")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _tokens(store: Store) -> TokenStore:
    if not isinstance(store, TokenStore):
        raise UsageError(f"the store {store.url} keeps no console tokens")
    return store


async def create_token(
    store: Store,
    *,
    role: str,
    name: str,
    expires_in_s: float | None = None,
    clock: Clock | None = None,
) -> tuple[str, TokenRecord]:
    """A new token (returned once, never stored) and its stored record."""
    checked = parse_console_role(role)
    if not name.strip():
        raise UsageError("the token needs a name (who or what uses it)")
    if expires_in_s is not None and not expires_in_s > 0:
        raise UsageError("--expires must be a positive duration")
    now = (clock or SystemClock()).time()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    record = TokenRecord(
        token_id="tok_" + secrets.token_hex(6),
        name=name.strip(),
        role=checked,
        token_hash=hash_token(token),
        created_at=iso(now),
        expires_at=iso(now + expires_in_s) if expires_in_s is not None else None,
        revoked_at=None,
    )
    await _tokens(store).put_token(record)
    return token, record


async def authenticate(store: Store, token: str, *, clock: Clock | None = None) -> TokenRecord:
    """The live token record for `token`; TokenRejected says why not."""
    if not token.startswith(TOKEN_PREFIX):
        raise TokenRejected("not a Tether console token")
    digest = hash_token(token)
    record = await _tokens(store).token_by_hash(digest)
    # The lookup is by hash; the comparison is constant-time all the same.
    if record is None or not hmac.compare_digest(record.token_hash, digest):
        raise TokenRejected("unknown token")
    if record.revoked_at is not None:
        raise TokenRejected(f"token {record.token_id} was revoked")
    if record.expires_at is not None:
        now = (clock or SystemClock()).time()
        if datetime.fromisoformat(record.expires_at).timestamp() <= now:
            raise TokenRejected(f"token {record.token_id} expired at {record.expires_at}")
    parse_console_role(record.role)  # a damaged role grants nothing
    return record


async def list_tokens(store: Store) -> list[TokenRecord]:
    return await _tokens(store).list_tokens()


async def revoke_token(store: Store, token_id: str, *, clock: Clock | None = None) -> None:
    now = (clock or SystemClock()).time()
    if not await _tokens(store).revoke_token(token_id, at=iso(now)):
        known = {t.token_id for t in await _tokens(store).list_tokens()}
        if token_id in known:
            raise UsageError(f"token {token_id} is already revoked")
        raise UsageError(f"no token {token_id!r} (tether token list shows them)")
