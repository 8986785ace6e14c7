"""Ledger work as clauses of a PostgreSQL store's append statement: no reads first.

A model call's settlement and, in the common case, its reservation ride in the statement
that appends the call's events, so the step costs the round trip and the commit the
append costs anyway. The clauses act only if the append's fenced head move (the clause
named `moved`) happened; the statement is prepared like any append.

- A settlement needs no lock and no answer (see `_tables_pg._SETTLE`).
- A reservation is checked by `tether_budget_fits_v2` (a function in the ledger's schema)
  against the limits the ledger last read: it takes the ledger's advisory lock first, and
  each of its queries takes a snapshot of its own after that (a volatile function's do,
  under READ COMMITTED), so the check sees every hold committed before it, exactly as the
  ledger's own check-and-reserve. Unless those limits are still the stored ones and every
  window, the run's spend and the call fit (with a hair of margin for rounding), it raises
  `NOT_DEFERRED`, which undoes the whole statement, events included; the store then does
  the step the exact way (`PostgresLedgerTables.joined`), which says why.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from ._ledger import ReservationRow

__all__ = [
    "FIRST_FITS_SIGNATURE",
    "FITS_FUNCTION",
    "FITS_SIGNATURE",
    "NOT_DEFERRED",
    "Deferred",
    "DeferredReservation",
    "reservation_clauses",
    "settlement_clauses",
]

_MARGIN = 1e-9
"""Relative margin under a limit: a sum the server rounds differently from Python falls
back to the exact path instead of deciding by a rounding error."""


NOT_DEFERRED = "TB001"
"""SQLSTATE of `tether_budget_fits_v2` refusing: the reservation must take the exact path."""


@dataclass(frozen=True, slots=True)
class Deferred:
    """Clauses for an append's WITH and their parameters."""

    clauses: str
    params: list[Any]


@dataclass(frozen=True, slots=True)
class DeferredReservation:
    """A reservation the ledger decided on from the limits it last read."""

    row: ReservationRow
    created: float
    expires: float
    windows: list[tuple[str, int, float]]
    """(scope, first minute, limit) of every time window that applies."""
    per_run: float | None
    limits_rows: tuple[tuple[str, str], ...]
    """The stored limits the decision was made from, as read (scope, JSON), by scope."""


_SETTLE = """d AS (
    DELETE FROM budget_reservations
    WHERE id = %s AND (state = 'reserved' OR (state = 'expired' AND %s > 0))
        AND EXISTS (SELECT 1 FROM {moved})
    RETURNING scopes, minute, run_id
), by_minute AS (
    INSERT INTO budget_usage (scope, minute, spent)
    SELECT e.scope, d.minute, %s
    FROM d, json_array_elements_text(d.scopes::json) AS e(scope) WHERE %s > 0
    ON CONFLICT (scope, minute) DO UPDATE SET spent = budget_usage.spent + excluded.spent
), by_hour AS (
    INSERT INTO budget_usage_hourly (scope, hour, spent)
    SELECT e.scope, d.minute / 60, %s
    FROM d, json_array_elements_text(d.scopes::json) AS e(scope) WHERE %s > 0
    ON CONFLICT (scope, hour) DO UPDATE SET spent = budget_usage_hourly.spent + excluded.spent
), by_run AS (
    INSERT INTO budget_runs (run_id, spent) SELECT d.run_id, %s FROM d WHERE %s > 0
    ON CONFLICT (run_id) DO UPDATE SET spent = budget_runs.spent + excluded.spent
)"""

_HOLD = """held AS (
    INSERT INTO budget_reservations
        (id, run_id, scopes, minute, estimate, state, created_at, expires_at)
    SELECT %s, m.run_id, %s, %s, %s, 'reserved', %s, %s FROM {moved} AS m
    WHERE tether_budget_fits_v2(%s, %s, m.run_id, %s, %s, %s::text[], %s::bigint[],
                             %s::bigint[], %s::float8[], %s)
    RETURNING id
)"""

FITS_FUNCTION = f"""CREATE OR REPLACE FUNCTION tether_budget_fits_v2(
    p_lock TEXT, p_lock_timeout_ms INT, p_run TEXT, p_estimate FLOAT8, p_limits TEXT,
    p_scopes TEXT[], p_starts BIGINT[], p_hours BIGINT[], p_caps FLOAT8[], p_run_cap FLOAT8
) RETURNS BOOLEAN LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    refusal TEXT;
BEGIN
    -- Bounded like the ledger's own waits (this statement holds the run's row meanwhile):
    -- one statement, the timeout set before the lock is waited for (and undone when the
    -- function returns, with its SET clause).
    PERFORM set_config('lock_timeout', p_lock_timeout_ms::text, true),
        pg_advisory_xact_lock(hashtext(p_lock));
    -- Everything else in one query, its plan made once (generic): each statement a
    -- function runs costs the server an executor's start and end.
    SELECT CASE
        WHEN (SELECT COALESCE(string_agg(l.scope || chr(31) || l.limits, chr(30)
                                         ORDER BY l.scope), '')
              FROM budget_limits l) <> p_limits THEN 'budget limits changed'
        WHEN EXISTS (
            SELECT 1 FROM unnest(p_scopes, p_starts, p_hours, p_caps) AS w(scope, start, hour, cap)
            WHERE (SELECT COALESCE(SUM(s.amount), 0) FROM (
                        SELECT u.spent AS amount FROM budget_usage u
                        WHERE u.scope = w.scope AND u.minute >= w.start
                            AND u.minute < w.hour * 60
                        UNION ALL SELECT h.spent FROM budget_usage_hourly h
                        WHERE h.scope = w.scope AND h.hour >= w.hour
                        UNION ALL SELECT r.estimate FROM budget_reservations r
                        WHERE r.state = 'reserved' AND r.minute >= w.start
                            AND r.scopes::jsonb ? w.scope) AS s) + p_estimate > w.cap
        ) THEN 'over a budget window'
        WHEN p_run_cap IS NOT NULL AND (SELECT COALESCE(SUM(s.amount), 0) FROM (
                    SELECT b.spent AS amount FROM budget_runs b WHERE b.run_id = p_run
                    UNION ALL SELECT r.estimate FROM budget_reservations r
                    WHERE r.state = 'reserved' AND r.run_id = p_run) AS s)
                + p_estimate > p_run_cap THEN 'over the run budget'
    END INTO refusal;
    IF refusal IS NOT NULL THEN
        RAISE EXCEPTION '%', refusal USING ERRCODE = '{NOT_DEFERRED}';
    END IF;
    RETURN TRUE;
END $$"""
"""The server's half of a deferred reservation (see the module docstring). Two statements
where its first version (`tether_budget_fits`, kept for workers of older versions) ran six
or more: a third less of the server's work per reservation, measured in instructions."""
FIRST_FITS_SIGNATURE = (
    "tether_budget_fits(text, int, text, float8, text, text[], bigint[], bigint[], float8[], "
    "float8)"
)
"""The first version's: a schema that has it has every table (made together)."""
FITS_SIGNATURE = (
    "tether_budget_fits_v2(text, int, text, float8, text, text[], bigint[], bigint[], "
    "float8[], float8)"
)


@functools.cache
def _clauses(template: str, moved: str) -> str:
    """One string per (template, name): the append caches its statement by identity."""
    return template.format(moved=moved)


def settlement_clauses(reservation_id: str, actual: float, moved: str) -> Deferred:
    a = actual
    return Deferred(_clauses(_SETTLE, moved), [reservation_id, a, a, a, a, a, a, a])


def array_literal(elements: list[str]) -> str:
    """An array as PostgreSQL's text form, for a `%s::type[]` parameter: psycopg adapts a
    Python list element by element in Python (about 15 us each, 4 per reservation), a
    string in C; the server parses the text in a few microseconds."""
    return "{" + ",".join(elements) + "}"


def _quoted(text: str) -> str:
    """An array element that stays one text element whatever it holds (commas, quotes,
    braces, backslashes, NULL)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _under(limit: float) -> float:
    return limit - _MARGIN * max(1.0, abs(limit))


def reservation_clauses(
    r: DeferredReservation, moved: str, lock_key: str, lock_timeout_ms: int
) -> Deferred:
    row = r.row
    fingerprint = chr(30).join(f"{scope}{chr(31)}{limits}" for scope, limits in r.limits_rows)
    return Deferred(
        _clauses(_HOLD, moved),
        [
            row.id, json.dumps(row.scopes), row.minute, row.estimate, r.created, r.expires,
            lock_key, lock_timeout_ms, row.estimate, fingerprint,
            array_literal([_quoted(scope) for scope, _, _ in r.windows]),
            array_literal([str(int(start)) for _, start, _ in r.windows]),
            array_literal([str(-(-int(start) // 60)) for _, start, _ in r.windows]),
            array_literal([repr(_under(limit)) for _, _, limit in r.windows]),
            None if r.per_run is None else _under(r.per_run),
        ],
    )  # fmt: skip
