"""The limit arithmetic the ledger checks with: which limits apply to a call, where each
window starts (rolling, or a calendar day in a time zone), whether an estimate fits, and
when enough spend leaves a window for it to fit. Apart from the ledger's operations
(`_ledger`) because it only reads the tables: what is decided, not how it is stored."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from ._ledger_port import LedgerTables
from ._model import BudgetLimits, Denial, Window

HOUR, DAY = 3600.0, 86400.0


class _LedgerWindows:
    """The window part of `Ledger` (which sets `tables` up)."""

    tables: LedgerTables

    def _window_start(self, window: Window, limits: BudgetLimits, now: float) -> float:
        if window == "hourly":
            return now - HOUR
        if limits.daily_tz:
            local = datetime.fromtimestamp(now, ZoneInfo(limits.daily_tz))
            return local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        return now - DAY

    def _frees_at(
        self,
        window: Window,
        limits: BudgetLimits,
        buckets: list[tuple[int, float]],
        need: float,
        now: float,
    ) -> float | None:
        """When enough settled spend has left the window for `need` more to fit."""
        if window == "daily" and limits.daily_tz:
            local = datetime.fromtimestamp(now, ZoneInfo(limits.daily_tz))
            midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
            return (midnight + timedelta(days=1)).timestamp()
        length = HOUR if window == "hourly" else DAY
        freed = 0.0
        for minute, spent in buckets:
            freed += spent
            if freed >= need:
                return minute * 60 + 60 + length
        return None

    def _check(
        self,
        scope: str,
        limits: BudgetLimits,
        run_id: str,
        estimate: float,
        now: float,
        sums: dict[int, tuple[float, float]],
    ) -> Denial | None:
        if limits.per_call is not None and estimate > limits.per_call:
            return Denial(
                scope=scope,
                window="per_call",
                limit=limits.per_call,
                spent=0.0,
                reserved=0.0,
                estimate=estimate,
                frees_at=None,
            )
        if limits.per_run is not None:
            spent, reserved = self.tables.run_usage(run_id)
            if spent + reserved + estimate > limits.per_run:
                return Denial(
                    scope=scope,
                    window="per_run",
                    limit=limits.per_run,
                    spent=spent,
                    reserved=reserved,
                    estimate=estimate,
                    frees_at=None,
                )
        for window, limit, start in self._rolling(limits, now):
            spent, reserved = sums[start]
            if spent + reserved + estimate > limit:
                need = spent + reserved + estimate - limit
                buckets = self.tables.usage(scope, start)
                return Denial(
                    scope=scope,
                    window=window,
                    limit=limit,
                    spent=spent,
                    reserved=reserved,
                    estimate=estimate,
                    frees_at=self._frees_at(window, limits, buckets, need, now),
                )
        return None

    def _rolling(self, limits: BudgetLimits, now: float) -> list[tuple[Window, float, int]]:
        """(window, limit, first minute) of each time window that has a limit."""
        out: list[tuple[Window, float, int]] = []
        if limits.hourly is not None:
            start = self._window_start("hourly", limits, now)
            out.append(("hourly", limits.hourly, math.floor(start / 60)))
        if limits.daily is not None:
            start = self._window_start("daily", limits, now)
            out.append(("daily", limits.daily, math.floor(start / 60)))
        return out

    @staticmethod
    def _applied(
        stored: Mapping[str, BudgetLimits],
        scopes: tuple[str, ...],
        extra: Mapping[str, BudgetLimits] | None,
    ) -> list[tuple[str, BudgetLimits]]:
        """The limits that apply to a call in `scopes`: stored ones merged with `extra`."""
        applied: list[tuple[str, BudgetLimits]] = []
        for scope in scopes:
            limits = stored.get(scope)
            if extra and scope in extra:
                limits = extra[scope] if limits is None else limits.merged(extra[scope])
            if limits is not None:
                applied.append((scope, limits))
        return applied

    def _windows(self, applied: list[tuple[str, BudgetLimits]], now: float) -> set[tuple[str, int]]:
        return {
            (scope, start)
            for scope, limits in applied
            for _, _, start in self._rolling(limits, now)
        }
