"""Ledger rows read back and checked: a damaged one is refused by name, never obeyed.

Limits are configuration no journal records: nothing could recompute them. A flipped bit
that turns a daily limit of 5.0 into 7.0 would let every later run overspend, silently;
text that no longer parses would stop runs with an unexplained error. So each limits
row's JSON holds a SHA-256 of its scope and its fields, and reading checks it (and every
field's type). Rows written before the checksum have none and are read as before.

An open hold (a reservation for a call in flight) counts against every window of its
scopes; one whose scopes or amount no longer read is refused the same way. It holds no
spend, only money set aside, so `doctor --rebuild-ledger` drops it. Spend columns (a
run's, a scope's buckets) that are not numbers are refused too; the rebuild counts them
again from the journals.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, TypeGuard

from ..errors import LedgerCorruption, UsageError
from ._model import BudgetLimits

__all__ = [
    "HOLD_REPAIR",
    "SPEND_REPAIR",
    "hold_amount",
    "hold_minute",
    "hold_scopes",
    "open_limits",
    "seal_limits",
    "spend_amount",
    "spend_minute",
]

_CHECK = "check"
_NUMBERS = ("per_call", "per_run", "hourly", "daily")
_FIELDS = frozenset((*_NUMBERS, "daily_tz"))
HOLD_REPAIR = "tether doctor --rebuild-ledger drops it, or restore the store from a backup"
SPEND_REPAIR = "tether doctor --rebuild-ledger counts it again from the journals"


def _digest(scope: str, fields: dict[str, Any]) -> str:
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"tether.limits\0{scope}\0{body}".encode()).hexdigest()


def seal_limits(scope: str, limits: BudgetLimits) -> str:
    """The row's text: the limits and the checksum over them and their scope."""
    fields = limits.to_json()
    return json.dumps({**fields, _CHECK: _digest(scope, fields)}, sort_keys=True)


def open_limits(scope: str, text: object) -> BudgetLimits:
    """The limits a row holds; LedgerCorruption when it does not verify."""

    def damaged(what: str) -> LedgerCorruption:
        return LedgerCorruption(
            f"the budget limits of {scope}",
            what,
            repair=f"set them again with tether budget set --scope {scope}, "
            "or restore the store from a backup",
        )

    if not isinstance(text, str):
        raise damaged(f"the stored value is not text ({type(text).__name__})")
    try:
        data = json.loads(text)
    except ValueError:
        raise damaged("the stored value is not JSON") from None
    if not isinstance(data, dict) or not set(data) <= _FIELDS | {_CHECK}:
        raise damaged("the stored value has unknown fields")
    check = data.pop(_CHECK, None)
    if check is not None and check != _digest(scope, data):
        raise damaged("its checksum does not match its values")
    for name in _NUMBERS:
        value = data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise damaged(f"{name} is not a number")
    if not isinstance(data.get("daily_tz"), str | None):
        raise damaged("daily_tz is not text")
    try:
        return BudgetLimits.from_json(data)
    except UsageError as exc:
        raise damaged(str(exc)) from None


def _hold(reservation_id: object) -> str:
    return f"budget reservation {reservation_id}" if reservation_id else "an open budget hold"


def hold_scopes(text: object, reservation_id: object = None) -> tuple[str, ...]:
    """The scopes an open hold counts against (a JSON list of names)."""
    try:
        value = json.loads(text) if isinstance(text, str | bytes) else None
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise LedgerCorruption(_hold(reservation_id), "its scopes are damaged", repair=HOLD_REPAIR)
    return tuple(value)


def hold_amount(value: object, reservation_id: object = None) -> float:
    """An open hold's estimate in USD: a finite number ≥ 0."""
    if not _is_number(value) or value < 0:
        raise LedgerCorruption(
            _hold(reservation_id), f"its amount is damaged ({value!r:.40})", repair=HOLD_REPAIR
        )
    return float(value)


def _is_number(value: object) -> TypeGuard[int | float]:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def hold_minute(value: object, reservation_id: object = None) -> int:
    """The minute an open hold counts from."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LedgerCorruption(
            _hold(reservation_id), f"its minute is damaged ({value!r:.40})", repair=HOLD_REPAIR
        )
    return value


def spend_amount(value: object, where: str) -> float:
    """A stored spend in USD (`where` names its row)."""
    if not _is_number(value):
        raise LedgerCorruption(
            where, f"a stored amount is damaged ({value!r:.40})", repair=SPEND_REPAIR
        )
    return float(value)


def spend_minute(value: object, where: str) -> int:
    """A spend bucket's minute or hour."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise LedgerCorruption(
            where, f"a bucket's time is damaged ({value!r:.40})", repair=SPEND_REPAIR
        )
    return value
