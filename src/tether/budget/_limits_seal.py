"""Stored budget limits carry a checksum, so a damaged row is refused, never obeyed.

A limit is configuration no journal records: nothing could recompute it. A flipped bit
that turns a daily limit of 5.0 into 7.0 would let every later run overspend, silently;
text that no longer parses would stop runs with an unexplained error. So each row's JSON
holds a SHA-256 of its scope and its fields, and reading checks it (and every field's
type). Rows written before the checksum have none and are read as before.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..errors import LimitsCorruption, UsageError
from ._model import BudgetLimits

__all__ = ["open_limits", "seal_limits"]

_CHECK = "check"
_NUMBERS = ("per_call", "per_run", "hourly", "daily")
_FIELDS = frozenset((*_NUMBERS, "daily_tz"))


def _digest(scope: str, fields: dict[str, Any]) -> str:
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"tether.limits\0{scope}\0{body}".encode()).hexdigest()


def seal_limits(scope: str, limits: BudgetLimits) -> str:
    """The row's text: the limits and the checksum over them and their scope."""
    fields = limits.to_json()
    return json.dumps({**fields, _CHECK: _digest(scope, fields)}, sort_keys=True)


def open_limits(scope: str, text: object) -> BudgetLimits:
    """The limits a row holds; LimitsCorruption when it does not verify."""
    if not isinstance(text, str):
        raise LimitsCorruption(scope, f"the stored value is not text ({type(text).__name__})")
    try:
        data = json.loads(text)
    except ValueError:
        raise LimitsCorruption(scope, "the stored value is not JSON") from None
    if not isinstance(data, dict) or not set(data) <= _FIELDS | {_CHECK}:
        raise LimitsCorruption(scope, "the stored value has unknown fields")
    check = data.pop(_CHECK, None)
    if check is not None and check != _digest(scope, data):
        raise LimitsCorruption(scope, "its checksum does not match its values")
    for name in _NUMBERS:
        value = data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise LimitsCorruption(scope, f"{name} is not a number")
    if not isinstance(data.get("daily_tz"), str | None):
        raise LimitsCorruption(scope, "daily_tz is not text")
    try:
        return BudgetLimits.from_json(data)
    except UsageError as exc:
        raise LimitsCorruption(scope, str(exc)) from None
