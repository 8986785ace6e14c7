"""The ledger checked against the journals, and rebuilt from them.

The ledger's rows are a running sum of what the journals record (each model call's
settlement, a `budget.settled` or the `budget` field of its `model.completed`, see
`_journaled.py`; the cost of each completed paid tool call), kept apart for fast limit
checks. A damaged or rolled-back page there would make `tether budget` under-report spend
and let later calls overspend, silently: so `doctor` recomputes what each run and each
scope must have spent and compares. The journals are verified by checksums and hash
chains; the ledger is not, so where they disagree the journals are right and the ledger
can be rebuilt from them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import LedgerCorruption
from ..events import Event
from ._checked_rows import (
    HOLD_REPAIR,
    hold_amount,
    hold_minute,
    hold_scopes,
    open_limits,
    spend_amount,
    spend_minute,
)
from ._journaled import reserved_in, settled_in
from ._model import scopes_for

__all__ = [
    "LedgerProblem",
    "RunSpend",
    "check_limits",
    "compare_ledger",
    "spend_of_run",
    "verify_ledger",
]

_TOLERANCE = 1e-6
"""USD: sums of floats taken in another order differ in the last bits, never by this."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LedgerProblem:
    where: str
    """`run RUN_ID`, `scope SCOPE`, `limits of SCOPE` or `budget reservation ID`."""
    what: str

    def to_json(self) -> dict[str, str]:
        return {"where": self.where, "what": self.what}


@dataclass(kw_only=True, slots=True)
class RunSpend:
    """What one run's journal says the ledger must hold for it."""

    run_id: str
    total: float = 0.0
    entries: list[tuple[tuple[str, ...], int, float]] = field(default_factory=list)
    """(scopes, minute, USD) of each settled cost, as the ledger counts them."""
    metered: bool = False
    """Whether the run reserved through a ledger at all (a run driven without one has
    no rows, whatever its journal says it cost)."""


def _minute_of_reservation(reservation_id: str, fallback_ts: str) -> int:
    """Ledger reservation ids carry their time in ms (`rsv_<ms hex><random>`)."""
    try:
        return math.floor(int(reservation_id[4:16], 16) / 60_000)
    except ValueError:
        return _minute_of_ts(fallback_ts)


def _minute_of_ts(ts: str) -> int:
    return math.floor(datetime.fromisoformat(ts).timestamp() / 60)


def spend_of_run(events: list[Event]) -> RunSpend:
    """The costs a run's (verified) journal says the ledger settled, with their scopes."""
    spend = RunSpend(run_id=events[0].run_id if events else "")
    agent, tenant = "", None
    reserved: dict[str, tuple[tuple[str, ...], int]] = {}
    for e in events:
        p = e.payload
        held = reserved_in(e)
        settled = settled_in(e) if held is None else None
        if e.type == "run.created":
            agent, tenant = p.get("agent", ""), p.get("tenant")
        elif held is not None:
            spend.metered = True
            rid = held.reservation_id
            scopes = held.scopes if held.scopes is not None else scopes_for(agent, tenant)
            reserved[rid] = (scopes, _minute_of_reservation(rid, e.ts))
        elif settled is not None:
            rid = settled.reservation_id
            scopes, minute = reserved.get(rid, (scopes_for(agent, tenant), _minute_of_ts(e.ts)))
            spend.entries.append((scopes, minute, settled.actual_usd))
            spend.total += settled.actual_usd
        elif e.type == "tool.completed" and e.usage is not None and e.usage.cost_usd:
            # A paid tool's hold is settled with its price when the call succeeds.
            spend.entries.append((scopes_for(agent, tenant), _minute_of_ts(e.ts), e.usage.cost_usd))
            spend.total += e.usage.cost_usd
    return spend


def compare_ledger(
    runs: list[RunSpend],
    *,
    by_run: dict[str, float],
    by_scope_minutes: dict[str, float],
    by_scope_hours: dict[str, float],
) -> list[LedgerProblem]:
    """Where the ledger's sums disagree with the journals' (and with each other)."""
    problems: list[LedgerProblem] = []
    expected_scope: dict[str, float] = defaultdict(float)
    for run in runs:
        for scopes, _, usd in run.entries:
            for scope in scopes:
                expected_scope[scope] += usd
        held = by_run.get(run.run_id, 0.0)
        if not run.metered and not held:
            continue
        if abs(held - run.total) > _TOLERANCE:
            problems.append(
                LedgerProblem(where=f"run {run.run_id}", what=_differs(held, run.total))
            )
    known = {r.run_id for r in runs}
    for run_id, held in sorted(by_run.items()):
        if run_id not in known and held:
            problems.append(
                LedgerProblem(
                    where=f"run {run_id}",
                    what=f"the ledger holds ${held:.6f} for a run that is not in the store",
                )
            )
    all_scopes = sorted(set(expected_scope) | set(by_scope_minutes) | set(by_scope_hours))
    for scope in all_scopes:
        want = expected_scope.get(scope, 0.0)
        for label, table in (("minute", by_scope_minutes), ("hourly", by_scope_hours)):
            have = table.get(scope, 0.0)
            if abs(have - want) > _TOLERANCE:
                problems.append(
                    LedgerProblem(
                        where=f"scope {scope}", what=f"{label} buckets: {_differs(have, want)}"
                    )
                )
    return problems


def _differs(have: float, want: float) -> str:
    side = "under-reports" if have < want else "over-reports"
    return (
        f"the ledger {side} spend: ${have:.6f} recorded, the journals settled ${want:.6f} "
        "(repair: tether doctor --rebuild-ledger)"
    )


def ledger_sums(
    tables: Any,
) -> tuple[dict[str, float], dict[str, float], dict[str, float], list[LedgerProblem]]:
    """Spend per run, per scope from the minute buckets and from the hourly roll-up, and
    the rows whose values are not numbers (left out of the sums)."""
    damaged: list[LedgerProblem] = []

    def add(sums: dict[str, float], key: str, value: object, where: str) -> None:
        try:
            sums[key] = sums.get(key, 0.0) + spend_amount(value, where)
        except LedgerCorruption as exc:
            damaged.append(LedgerProblem(where=where, what=f"{exc.what} (repair: {exc.repair})"))

    by_run: dict[str, float] = {}
    for run_id, spent in tables._x("SELECT run_id, spent FROM budget_runs"):
        add(by_run, str(run_id), spent, f"run {run_id}")
    sums: list[dict[str, float]] = []
    for table, column in (("budget_usage", "minute"), ("budget_usage_hourly", "hour")):
        per_scope: dict[str, float] = {}
        for scope, when, spent in tables._x(f"SELECT scope, {column}, spent FROM {table}"):
            where = f"scope {scope}"
            try:
                spend_minute(when, where)
            except LedgerCorruption as exc:
                damaged.append(
                    LedgerProblem(where=where, what=f"{exc.what} (repair: {exc.repair})")
                )
            add(per_scope, str(scope), spent, where)
        sums.append(per_scope)
    return by_run, sums[0], sums[1], damaged


def check_limits(tables: Any) -> list[LedgerProblem]:
    """Each scope's stored limits against their checksum (no journal records them, so
    they cannot be rebuilt: a damaged row must be set again)."""
    problems = []
    for scope, text in tables._x("SELECT scope, limits FROM budget_limits ORDER BY scope"):
        try:
            open_limits(str(scope), text)
        except LedgerCorruption as exc:
            problems.append(
                LedgerProblem(
                    where=f"limits of {scope}",
                    what=f"{exc.what} (repair: {exc.repair})",
                )
            )
    return problems


_HOLD_STATES = frozenset({"reserved", "expired", "settled", "released"})


def damaged_holds(tables: Any) -> list[tuple[str, LedgerProblem]]:
    """Open holds whose scopes, amount or state no longer read, by reservation id."""
    found = []
    for rid, scopes, estimate, state, minute in tables._x(
        "SELECT id, scopes, estimate, state, minute FROM budget_reservations ORDER BY id"
    ):
        try:
            hold_scopes(scopes, rid)
            hold_amount(estimate, rid)
            hold_minute(minute, rid)
            if state not in _HOLD_STATES:
                raise LedgerCorruption(
                    f"budget reservation {rid}", f"its state is damaged ({state!r:.40})",
                    repair=HOLD_REPAIR,
                )  # fmt: skip
        except LedgerCorruption as exc:
            problem = LedgerProblem(where=exc.where, what=f"{exc.what} (repair: {exc.repair})")
            found.append((rid, problem))
    return found


def orphan_holds(tables: Any, known: set[str]) -> list[tuple[str, LedgerProblem]]:
    """Open holds naming a run the store does not hold (a damaged run id, or a run
    deleted under its ledger): money set aside that nothing will ever settle or release."""
    found = []
    for rid, run_id in tables._x(
        "SELECT id, run_id FROM budget_reservations WHERE state='reserved' ORDER BY id"
    ):
        if run_id not in known:
            found.append((rid, LedgerProblem(
                where=f"budget reservation {rid}",
                what=f"it is held for run {run_id!r:.60}, which is not in the store "
                f"(repair: {HOLD_REPAIR})",
            )))  # fmt: skip
    return found


def rebuild_ledger(tables: Any, runs: list[RunSpend], *, drop: Sequence[str] = ()) -> int:
    """Replace the settled spend with what the journals record; readable open holds are
    kept, damaged ones (and the holds in `drop`) dropped. Returns the costs counted."""
    from ._ledger import ReservationRow

    counted = 0
    with tables.transaction():
        for table in ("budget_usage", "budget_usage_hourly", "budget_runs"):
            tables._x(f"DELETE FROM {table}")
        for rid in [*drop, *(rid for rid, _ in damaged_holds(tables))]:
            # Money set aside for a call, not spend: dropping the unreadable hold loses
            # no record of what was paid.
            tables._x("DELETE FROM budget_reservations WHERE id=?", (rid,))
        for run in runs:
            for scopes, minute, usd in run.entries:
                row = ReservationRow(
                    id="rebuild", run_id=run.run_id, scopes=scopes, minute=minute,
                    estimate=0.0, state="settled",
                )  # fmt: skip
                tables.add_spend(row, usd)
                counted += 1
    return counted


async def verify_ledger(
    store: Any, *, rebuild: bool = False
) -> tuple[list[LedgerProblem], int | None]:
    """Compare (or, with `rebuild`, replace) the store's ledger with its journals.

    Returns the problems found (before any rebuild) and the costs counted by a rebuild.
    Runs whose journals do not verify are left out (doctor reports them); their spend
    cannot be known, so the per-scope sums are then not compared either.
    """
    from ..errors import CorruptionError
    from ..journal import read_events

    make = getattr(store, "ledger_tables", None)
    if make is None:
        return [], None
    tables = make()
    if not hasattr(tables, "_x"):
        return [], None  # the memory ledger lives and dies with its process
    runs: list[RunSpend] = []
    unreadable: list[str] = []
    for run_id in await store.run_ids():
        try:
            runs.append(spend_of_run(await read_events(store, run_id)))
        except CorruptionError:
            unreadable.append(run_id)
    by_run, minutes, hours, damaged = ledger_sums(tables)
    for run_id in unreadable:
        by_run.pop(run_id, None)
    problems = compare_ledger(runs, by_run=by_run, by_scope_minutes=minutes, by_scope_hours=hours)
    if unreadable:
        problems = [p for p in problems if p.where.startswith("run ")]
    orphans = orphan_holds(tables, {r.run_id for r in runs} | set(unreadable))
    problems += damaged + check_limits(tables) + [p for _, p in damaged_holds(tables)]
    problems += [p for _, p in orphans]
    counted = None
    if rebuild:
        if unreadable:
            from ..errors import UsageError

            raise UsageError(
                "--rebuild-ledger: the journals of "
                + ", ".join(unreadable[:3])
                + (" …" if len(unreadable) > 3 else "")
                + " do not verify, so their spend is unknown; repair them first (tether fork)"
            )
        counted = rebuild_ledger(tables, runs, drop=[rid for rid, _ in orphans])
    return problems, counted
