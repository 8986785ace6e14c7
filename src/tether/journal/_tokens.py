"""Seals on console token rows: a token row decides who may act on runs, so damage to one
(a `revoked_at` or `expires_at` nulled, a role changed) must be found, not obeyed.

Each row keeps a SHA-256 over its values (`seal`). A row whose seal does not match is
never used to sign anyone in, `doctor` reports it, and revoking the token writes it again
as revoked with a fresh seal. Rows made before seals existed are sealed once, when a
store first opens its token table with this version.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

from ..errors import StoreError
from ._base import TokenRecord

__all__ = ["SEAL_COLUMN", "all_sealed", "damaged_tokens", "intact", "sealed_token", "token_seal"]

log = logging.getLogger("tether.store")

SEAL_COLUMN = "ALTER TABLE console_tokens ADD COLUMN seal TEXT"


def token_seal(record: TokenRecord) -> str:
    values = [record.token_id, record.name, record.role, record.token_hash,
              record.created_at, record.expires_at, record.revoked_at]  # fmt: skip
    return hashlib.sha256(
        b"tether.token\0" + json.dumps(values, ensure_ascii=False).encode()
    ).hexdigest()


def intact(record: TokenRecord, seal: Any) -> bool:
    try:
        return isinstance(seal, str) and token_seal(record) == seal
    except (TypeError, ValueError):
        return False


def damaged_tokens(rows: Sequence[tuple[TokenRecord, Any]]) -> str | None:
    """What is wrong with the stored tokens `(record, seal)`, or None."""
    bad = [str(r.token_id)[:40] for r, seal in rows if not intact(r, seal)]
    if not bad:
        return None
    return (
        f"{len(bad)} console token row{'s' if len(bad) > 1 else ''} damaged "
        f"({', '.join(bad[:3])}{'…' if len(bad) > 3 else ''}): "
        f"{'they sign' if len(bad) > 1 else 'it signs'} no one in; revoke "
        f"{'them' if len(bad) > 1 else 'it'} (tether token revoke ID) and make new ones"
    )


def sealed_token(row: tuple[TokenRecord, Any]) -> TokenRecord | None:
    """The record of an intact row; a damaged one signs no one in (and is logged)."""
    record, seal = row
    if intact(record, seal):
        return record
    log.warning("console token %s is damaged: refused (tether doctor)", str(record.token_id)[:40])
    return None


def all_sealed(rows: Sequence[tuple[TokenRecord, Any]]) -> list[TokenRecord]:
    """Every record, or a StoreError naming the damaged ones and the way out."""
    problem = damaged_tokens(rows)
    if problem is not None:
        raise StoreError(problem)
    return [record for record, _ in rows]
