"""The budget ledger: reserve before spending, settle after, reclaim what the dead left.

Settled spend is kept per scope in one-minute buckets (rolled up per hour), so a window
check reads a bounded number of rows whatever the traffic. A bucket counts while any part
of it lies in the window: windows are conservative by at most one minute, never generous.
Money held for calls in flight is read from the open reservations themselves, so a hold
costs one row written and a settlement one deleted. Every check-and-reserve runs in one
write transaction, so concurrent workers sharing a store can never push spend past a
limit.

Here: the operations (reserve, settle, release, reclaim, limits, status). The tables'
contract (`LedgerTables`, `ReservationRow`) is in `_ledger_port`; the window arithmetic
`Ledger` derives from, in `_ledger_windows`.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
from collections.abc import Callable, Mapping
from typing import TypeVar

from .._clock import Clock, SystemClock
from ..errors import UsageError
from ._ledger_port import LedgerTables, ReservationRow, new_reservation_id
from ._ledger_windows import DAY as DAY
from ._ledger_windows import HOUR as HOUR
from ._ledger_windows import _LedgerWindows
from ._model import (
    BudgetLimits,
    Denial,
    LimitChange,
    Reservation,
    Window,
    WindowStatus,
    scopes_for,
)

__all__ = [
    "DEFAULT_RESERVATION_TTL_S",
    "Ledger",
    "LedgerTables",
    "ReservationRow",
    "new_reservation_id",
]

T = TypeVar("T")

DEFAULT_RESERVATION_TTL_S = 900.0
"""A reservation not settled by then belongs to a dead call and is reclaimed."""

RECLAIM_EVERY_S = 5.0
"""Expired holds are swept at most this often (and always before a denial)."""


def _check_money(value: float, what: str) -> None:
    """The ledger's last line: an amount that is negative or not finite would credit a
    budget (or poison every sum), whoever computed it."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value >= 0)
    ):
        raise UsageError(f"{what} must be a finite number of USD ≥ 0, got {value!r}")


class Ledger(_LedgerWindows):
    """Budget reservations over any `LedgerTables` backend."""

    def __init__(
        self,
        tables: LedgerTables,
        *,
        clock: Clock | None = None,
        reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S,
    ) -> None:
        self.tables = tables
        self.clock = clock or SystemClock()
        self._seen_limits: dict[str, BudgetLimits] | None = None
        self.reservation_ttl_s = reservation_ttl_s
        self._reclaimed_at = -math.inf
        self._blocking = bool(getattr(tables, "blocking", False))
        self._one_at_a_time: threading.Lock = getattr(tables, "lock", None) or threading.Lock()
        """The tables' own lock where they have one (a store's joined appends take it too)."""

    async def _off_loop(self, fn: Callable[[], T]) -> T:
        """Run a ledger operation; tables that wait on a server (`blocking`) are called
        from a thread, so a lock wait never stops the event loop (and its lease renewals).
        One operation at a time there: the tables keep one connection and one transaction."""
        if not self._blocking:
            return fn()

        def locked() -> T:
            with self._one_at_a_time:
                return fn()

        return await asyncio.to_thread(locked)

    # -- operations ---------------------------------------------------------------------

    def _reclaim(self, now: float, *, force: bool = False) -> bool:
        """Reclaim expired holds; at most every few seconds unless forced (before a denial)."""
        if not force and now - self._reclaimed_at < RECLAIM_EVERY_S:
            return False
        self._reclaimed_at = now
        rows = self.tables.expired(now)
        for row in rows:
            self.tables.finish(row, "expired", None)
        return bool(rows)

    def _denial(
        self,
        scopes: tuple[str, ...],
        extra: Mapping[str, BudgetLimits] | None,
        run_id: str,
        estimate: float,
        now: float,
    ) -> Denial | None:
        prefetch = getattr(self.tables, "prefetch", None)
        if prefetch is not None and self._seen_limits is not None:
            # Ask now for the reads the limits seen last time need: on PostgreSQL they
            # travel with the limits' own read, one round trip instead of three.
            guess = self._applied(self._seen_limits, scopes, extra)
            per_run = any(limits.per_run is not None for _, limits in guess)
            prefetch(sorted(self._windows(guess, now)), run_id if per_run else None)
        stored = self.tables.limits()
        self._seen_limits = stored
        applied = self._applied(stored, scopes, extra)
        # Every window sum of every scope in one read.
        wanted = self._windows(applied, now)
        sums = self.tables.totals(sorted(wanted)) if wanted else {}
        for scope, limits in applied:
            per_scope = {start: value for (s, start), value in sums.items() if s == scope}
            denial = self._check(scope, limits, run_id, estimate, now, per_scope)
            if denial is not None:
                return denial
        return None

    async def reserve(
        self,
        *,
        run_id: str,
        agent: str,
        tenant: str | None,
        estimate_usd: float,
        extra: Mapping[str, BudgetLimits] | None = None,
    ) -> Reservation | Denial:
        """Check `estimate_usd` against every applicable limit and hold it, atomically."""
        reserve = functools.partial(
            self.reserve_now,
            run_id=run_id,
            agent=agent,
            tenant=tenant,
            estimate_usd=estimate_usd,
            extra=extra,
        )
        return await self._off_loop(reserve)

    def reserve_now(
        self,
        *,
        run_id: str,
        agent: str,
        tenant: str | None,
        estimate_usd: float,
        extra: Mapping[str, BudgetLimits] | None = None,
        reservation_id: str | None = None,
    ) -> Reservation | Denial:
        """`reserve`, synchronously: inside a store's append (`Store.append(also=...)`) it
        joins that transaction, so the hold and the events recording it commit together."""
        _check_money(estimate_usd, "a reservation's estimate")
        now = self.clock.time()
        scopes = scopes_for(agent, tenant)
        deferred = self._defer(run_id, scopes, estimate_usd, extra, reservation_id, now)
        if deferred is not None:
            return deferred
        with self.tables.transaction():
            self._reclaim(now)
            denial = self._denial(scopes, extra, run_id, estimate_usd, now)
            if denial is not None and self._reclaim(now, force=True):
                denial = self._denial(scopes, extra, run_id, estimate_usd, now)
            if denial is not None:
                return denial
            row = _new_row(run_id, scopes, estimate_usd, reservation_id, now)
            self.tables.insert(row, created=now, expires=now + self.reservation_ttl_s)
        return Reservation(
            id=row.id, run_id=run_id, estimate_usd=estimate_usd, scopes=scopes, minute=row.minute
        )

    def _defer(
        self,
        run_id: str,
        scopes: tuple[str, ...],
        estimate: float,
        extra: Mapping[str, BudgetLimits] | None,
        reservation_id: str | None,
        now: float,
    ) -> Reservation | None:
        """Inside a PostgreSQL append (`deferred` tables): hand the tables a reservation
        decided from the limits last read, for the server to check and insert with the
        append; None when only the exact path will do (a sweep is due, or a per-call limit
        says no: the exact path journals the denial with fresh limits)."""
        tables = self.tables
        deferring = getattr(tables, "deferring", None)
        if deferring is None or not deferring() or now - self._reclaimed_at >= RECLAIM_EVERY_S:
            return None
        from ._deferred_pg import DeferredReservation

        rows, stored = tables.cached_limits()  # type: ignore[attr-defined]
        applied = self._applied(stored, scopes, extra)
        if any(lim.per_call is not None and estimate > lim.per_call for _, lim in applied):
            return None
        per_run = [lim.per_run for _, lim in applied if lim.per_run is not None]
        row = _new_row(run_id, scopes, estimate, reservation_id, now)
        tables.defer_reservation(  # type: ignore[attr-defined]
            DeferredReservation(
                row=row,
                created=now,
                expires=now + self.reservation_ttl_s,
                windows=[
                    (scope, start, limit)
                    for scope, lim in applied
                    for _, limit, start in self._rolling(lim, now)
                ],
                per_run=min(per_run) if per_run else None,
                limits_rows=rows,
            )
        )
        return Reservation(
            id=row.id, run_id=run_id, estimate_usd=estimate, scopes=scopes, minute=row.minute
        )

    async def settle(self, reservation: Reservation, actual_usd: float) -> bool:
        """Replace the hold with the actual cost; False if it had already been reclaimed."""
        return await self._off_loop(lambda: self._finish(reservation, "settled", actual_usd))

    def settle_now(self, reservation: Reservation, actual_usd: float) -> bool:
        """`settle`, synchronously (joins a store's append like `reserve_now`)."""
        return self._finish(reservation, "settled", actual_usd)

    async def release(self, reservation: Reservation) -> bool:
        """Drop the hold (the call failed or was cancelled before it cost anything)."""
        return await self._off_loop(lambda: self._finish(reservation, "released", None))

    def _finish(self, reservation: Reservation, state: str, actual: float | None) -> bool:
        if actual is not None:
            _check_money(actual, "a settlement's actual cost")
        row = ReservationRow(
            id=reservation.id,
            run_id=reservation.run_id,
            scopes=reservation.scopes,
            minute=reservation.minute,
            estimate=reservation.estimate_usd,
            state="reserved",
        )
        if state == "settled":
            return self.tables.settle(row, actual or 0.0)
        with self.tables.transaction():
            return self.tables.finish(row, state, actual)

    async def release_run(self, run_id: str) -> int:
        """Reclaim a dead session's holds on `run_id`; call before driving it again."""

        def release() -> int:
            with self.tables.transaction():
                rows = self.tables.open_of_run(run_id)
                for row in rows:
                    self.tables.finish(row, "released", None)
            return len(rows)

        return await self._off_loop(release)

    async def set_limits(
        self, scope: str, limits: BudgetLimits | None, *, actor: str = "python"
    ) -> None:
        """Store (or with None remove) a scope's limits, and who did it (`limit_changes`)."""
        change = LimitChange(at=self.clock.time(), scope=scope, limits=limits, actor=actor)

        def store() -> None:
            with self.tables.transaction():
                self.tables.set_limits(scope, limits)
                self.tables.record_limit_change(change)

        await self._off_loop(store)

    async def limit_changes(self, limit: int = 50) -> list[LimitChange]:
        """Who changed which limits and when, newest first."""

        def read() -> list[LimitChange]:
            with self.tables.transaction():
                return self.tables.limit_changes(limit)

        return await self._off_loop(read)

    async def limits(self) -> dict[str, BudgetLimits]:
        def read() -> dict[str, BudgetLimits]:
            with self.tables.transaction():
                return self.tables.limits()

        return await self._off_loop(read)

    async def status(self) -> list[WindowStatus]:
        """Every scope with a limit or spend: limit, spent, reserved, when it frees up."""
        return await self._off_loop(self._status)

    def _status(self) -> list[WindowStatus]:
        now = self.clock.time()
        out: list[WindowStatus] = []
        with self.tables.transaction():
            self._reclaim(now, force=True)
            stored = self.tables.limits()
            for scope in sorted(set(stored) | set(self.tables.known_scopes())):
                limits = stored.get(scope, BudgetLimits())
                rolling: tuple[Window, ...] = ("hourly", "daily")
                for window in rolling:
                    limit = limits.hourly if window == "hourly" else limits.daily
                    start = math.floor(self._window_start(window, limits, now) / 60)
                    buckets = self.tables.usage(scope, start)
                    spent = sum(b[1] for b in buckets)
                    reserved = self.tables.totals([(scope, start)])[(scope, start)][1]
                    frees = self._frees_at(window, limits, buckets, spent, now) if spent else None
                    out.append(
                        WindowStatus(
                            scope=scope,
                            window=window,
                            limit=limit,
                            spent=spent,
                            reserved=reserved,
                            frees_at=frees,
                        )
                    )
                fixed: tuple[Window, ...] = ("per_call", "per_run")
                for window in fixed:
                    limit = getattr(limits, window)
                    if limit is not None:
                        out.append(
                            WindowStatus(
                                scope=scope,
                                window=window,
                                limit=limit,
                                spent=0.0,
                                reserved=0.0,
                                frees_at=None,
                            )
                        )
        return out


def _new_row(
    run_id: str, scopes: tuple[str, ...], estimate: float, reservation_id: str | None, now: float
) -> ReservationRow:
    """A hold about to be written (by the ledger itself, or deferred into an append)."""
    return ReservationRow(
        id=reservation_id or new_reservation_id(now),
        run_id=run_id,
        scopes=scopes,
        minute=math.floor(now / 60),
        estimate=estimate,
        state="reserved",
    )
