"""Budget data: scopes, limits, reservations, denials and window status."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

from ..errors import UsageError

__all__ = [
    "WINDOWS",
    "BudgetLimits",
    "Denial",
    "Reservation",
    "WindowStatus",
    "check_scope",
    "scopes_for",
]

Window = Literal["per_call", "per_run", "hourly", "daily"]
WINDOWS: tuple[Window, ...] = ("per_call", "per_run", "hourly", "daily")


def check_scope(scope: str) -> str:
    """`global`, `agent:NAME` or `tenant:NAME`; anything else is a usage error."""
    kind, sep, name = scope.partition(":")
    if scope == "global" or (sep and kind in ("agent", "tenant") and name):
        return scope
    raise UsageError(f"bad budget scope {scope!r}: use global, agent:NAME or tenant:NAME")


def scopes_for(agent: str, tenant: str | None) -> tuple[str, ...]:
    """Every scope a call of this agent (and tenant) counts against."""
    scopes = ("global", f"agent:{agent}")
    return (*scopes, f"tenant:{tenant}") if tenant else scopes


@dataclass(frozen=True, kw_only=True, slots=True)
class BudgetLimits:
    """USD limits of one scope; None means no limit in that window."""

    per_call: float | None = None
    per_run: float | None = None
    hourly: float | None = None
    """Rolling 60 minutes."""
    daily: float | None = None
    """Rolling 24 hours, or the calendar day in `daily_tz` when it is set."""
    daily_tz: str | None = None

    def __post_init__(self) -> None:
        for window in WINDOWS:
            value = getattr(self, window)
            if value is not None and not 0 <= value < math.inf:
                raise UsageError(f"budget {window} must be a finite number ≥ 0, got {value}")
        if self.daily_tz is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(self.daily_tz)
            except (ZoneInfoNotFoundError, ValueError):
                raise UsageError(f"unknown time zone {self.daily_tz!r}") from None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BudgetLimits:
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})

    def merged(self, other: BudgetLimits) -> BudgetLimits:
        """The stricter of two limit sets, window by window."""

        def pick(a: float | None, b: float | None) -> float | None:
            return b if a is None else a if b is None else min(a, b)

        return BudgetLimits(
            per_call=pick(self.per_call, other.per_call),
            per_run=pick(self.per_run, other.per_run),
            hourly=pick(self.hourly, other.hourly),
            daily=pick(self.daily, other.daily),
            daily_tz=self.daily_tz or other.daily_tz,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class LimitChange:
    """Who set a scope's limits, when, and to what (None: removed). The ledger keeps one
    per change, so "who raised this budget?" has an answer, as a run's journal has for
    approvals."""

    at: float
    scope: str
    limits: BudgetLimits | None
    actor: str

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "scope": self.scope,
            "limits": self.limits.to_json() if self.limits is not None else None,
            "actor": self.actor,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class Reservation:
    id: str
    run_id: str
    estimate_usd: float
    scopes: tuple[str, ...]
    minute: int
    """The minute bucket the hold (and later the spend) is counted in."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Denial:
    """Why a call may not be made: which limit, in which window, and the numbers."""

    scope: str
    window: Window
    limit: float
    spent: float
    reserved: float
    estimate: float
    frees_at: float | None
    """When enough of the window's spend leaves it for this call to fit (epoch seconds)."""

    @property
    def reason(self) -> str:
        window = self.window.replace("_", "-")
        return (
            f"budget {self.scope} {window} limit ${self.limit:.4f} would be exceeded: "
            f"spent ${self.spent:.4f} + reserved ${self.reserved:.4f} + this call "
            f"~${self.estimate:.4f}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "window": self.window,
            "limit": self.limit,
            "spent": self.spent,
            "reserved": self.reserved,
            "estimate": self.estimate,
            "frees_at": self.frees_at,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class WindowStatus:
    scope: str
    window: Window
    limit: float | None
    spent: float
    reserved: float
    frees_at: float | None

    @property
    def remaining(self) -> float | None:
        if self.limit is None:
            return None
        return max(0.0, self.limit - self.spent - self.reserved)

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "window": self.window,
            "limit": self.limit,
            "spent": round(self.spent, 8),
            "reserved": round(self.reserved, 8),
            "remaining": None if self.remaining is None else round(self.remaining, 8),
            "frees_at": self.frees_at,
        }
