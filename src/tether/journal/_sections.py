"""A run's sparse events (approvals, health, endings): the per-run index they need.

The console's run page and `tether show` list a run's newest approvals and health events
and decide what of its summary a role may see from its endings. These events are rare (a
few per hundred steps), but on SQLite a query by type within one run had no index to go
by: the audit copy's type index is per store, so the query read every row of the run, and
a run page of a 40,000-event run cost twice one of 10,000.

`RUN_SECTION_INDEX` is the partial index that makes such a query a range of a few
entries: it holds only events of `SECTION_TYPES`, which no ordinary step writes, so it
costs a step no index page and a store ~30 bytes per approval, health event or ending.
Schema 8 creates it (new stores, migrations and audit rebuilds, with the other
`audit_rows` indexes). The SQLite store uses it whenever it is present with exactly this
definition; without it (a store whose index was dropped or altered) the store finds the
run's rows of these types through the audit copy's type column, reading no event bytes
but the matches.
"""

from __future__ import annotations

__all__ = ["RUN_SECTION_INDEX", "SECTION_INDEX_NAME", "SECTION_INDEX_TERM", "SECTION_TYPES"]

SECTION_TYPES = (
    "approval.requested", "approval.resolved", "budget.denied", "health.breaker",
    "health.guardrail", "health.inconsistent", "health.monitor", "health.policy",
    "health.stale", "health.truncated", "health.warning", "limit.reached", "limit.warning",
    "run.cancelled", "run.completed", "run.failed", "run.stopped",
)  # fmt: skip
"""Written on approvals, health findings, limits and endings only: never by a plain step.
A literal list (not derived from `EVENT_TYPES`): the index's WHERE must not change
under a store that has it."""

SECTION_INDEX_TERM = f"type IN ({', '.join(repr(t) for t in SECTION_TYPES)})"
"""The WHERE of the partial index; SQLite uses it only for a query that repeats it."""

SECTION_INDEX_NAME = "audit_by_run_section"
RUN_SECTION_INDEX = (
    f"CREATE INDEX {SECTION_INDEX_NAME} ON audit_rows (run, type, seq) WHERE {SECTION_INDEX_TERM}"
)
"""The index as schema 8 creates it (SQLite's `audit_rows`)."""
