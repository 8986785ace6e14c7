"""Audit columns and indexed event queries (schema 3), shared by every backend.

Besides `type` and `correlation_id`, each stored event keeps copies of its `ts`, `actor`,
`visibility` and tool name in indexed columns, so audits by time window, actor, tool,
event type and audience are index lookups, not scans. Like the other columns they are
copies: verification (`verify_row`) checks that they agree with the stored bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..events import Event

if TYPE_CHECKING:
    from ._base import StoredRow

__all__ = ["AuditColumns", "AuditIndex", "RowQuery", "audit_columns", "row_matches", "tool_of"]

TOOL_TYPES = frozenset({"tool.requested", "tool.completed", "tool.failed", "tool.unknown"})

CONTEXT_INDEX_TYPES = ("context.compacted", "message.system", "message.user")
CONTEXT_INDEX_TERM = "type IN ('context.compacted', 'message.system', 'message.user')"
"""The WHERE of the partial index `why` rebuilds contexts with. SQLite uses a partial
index only for a query that repeats this term word for word, so `sql_where` adds it."""
ACTOR_INDEX_TERM = "actor <> 'runtime'"
"""The WHERE of the partial actor index (likewise repeated by queries that may use it)."""
LOOP_TYPES = (
    "budget.reserved",
    "budget.settled",
    "cycle.started",
    "model.completed",
    "model.requested",
    "tool.completed",
    "tool.requested",
)
"""The types every step of every run writes. They are most of a store, so a search by
one of them finds matches at once by time (the ts index); the type index (schema 4)
leaves them out, which spares each step a page write per type. (A step no longer writes
`budget.reserved` / `budget.settled`, which ride in the model events now, but older
journals are full of them, and the list is the index's definition: it stays.)"""
TYPE_INDEX_TERM = f"type NOT IN ({', '.join(repr(t) for t in LOOP_TYPES)})"
"""The WHERE of the partial type index (repeated by queries that may use it)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditColumns:
    """The indexed copies of an event's envelope kept for audit queries."""

    ts: str
    actor: str
    tool: str | None
    visibility: str


def tool_of(event: Event) -> str | None:
    """The tool an event is about: a call, its result, or an approval of a call."""
    return tool_in(event.type, event.payload)


def tool_in(type_: str, payload: dict[str, Any]) -> str | None:
    if type_ in TOOL_TYPES:
        key = "name"
    elif type_ == "approval.requested":
        key = "tool"
    else:
        return None
    value = payload.get(key)
    return value if isinstance(value, str) else None


def audit_columns(event: Event) -> AuditColumns:
    return AuditColumns(
        ts=event.ts, actor=event.actor, tool=tool_of(event), visibility=event.visibility
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class RowQuery:
    """Stored events matching every given filter (None and empty mean "any")."""

    run_id: str | None = None
    correlation_id: str | None = None
    types: tuple[str, ...] = ()
    tool: str | None = None
    actor: str | None = None
    actor_prefix: bool = False
    """Match actors that start with `actor` (`tool:`, `cli:`) rather than equal it."""
    since: str | None = None
    """`ts >= since` (journal timestamps compare as text)."""
    until: str | None = None
    """`ts < until`."""
    after_seq: int | None = None
    """`seq > after_seq` (with `run_id`)."""
    before_seq: int | None = None
    """`seq < before_seq` (with `run_id`)."""
    visibilities: tuple[str, ...] | None = None
    """Only events with one of these visibilities (a role's)."""
    newest_first: bool = False
    limit: int | None = None


@runtime_checkable
class AuditIndex(Protocol):
    """A store that answers indexed queries (memory, SQLite; PostgreSQL to follow)."""

    async def query_rows(self, query: RowQuery) -> list[StoredRow]:
        """Matching stored events, unverified: in `(run_id, seq)` order within one run
        (`run_id` given), else in `(ts, run_id, seq)` order; reversed with `newest_first`."""
        ...


def row_matches(row: StoredRow, q: RowQuery) -> bool:
    """The reference semantics of `RowQuery` (the memory store's filter)."""
    audit = row.audit
    if audit is None:
        return False
    return (
        (q.run_id is None or row.run_id == q.run_id)
        and (q.correlation_id is None or row.correlation_id == q.correlation_id)
        and (not q.types or row.type in q.types)
        and (q.tool is None or audit.tool == q.tool)
        and (
            q.actor is None
            or (audit.actor.startswith(q.actor) if q.actor_prefix else audit.actor == q.actor)
        )
        and (q.since is None or audit.ts >= q.since)
        and (q.until is None or audit.ts < q.until)
        and (q.after_seq is None or row.seq > q.after_seq)
        and (q.before_seq is None or row.seq < q.before_seq)
        and (q.visibilities is None or audit.visibility in q.visibilities)
    )


def sort_key(q: RowQuery) -> Any:
    def key(row: StoredRow) -> tuple[Any, ...]:
        if q.run_id is not None:
            return (row.seq,)
        return (row.audit.ts if row.audit else "", row.run_id, row.seq)

    return key


def runs_where(
    *,
    status: str | None,
    agent: str | None,
    tenant: str | None,
    since: str | None,
    until: str | None,
    mark: str = "?",
) -> tuple[str, list[Any]]:
    """`list_runs`'s filters as a WHERE clause (with the keyword; empty without filters)
    over the run index's columns; `since`/`until` bound `created_at` (ISO text)."""
    given = [("status=?", status), ("agent=?", agent), ("tenant=?", tenant),
             ("created_at>=?", since), ("created_at<?", until)]  # fmt: skip
    used = [(clause.replace("?", mark), value) for clause, value in given if value is not None]
    if not used:
        return "", []
    return " WHERE " + " AND ".join(c for c, _ in used), [v for _, v in used]


def sql_where(q: RowQuery, *, mark: str = "?") -> tuple[str, list[Any]]:
    """The WHERE clause (without the keyword) and parameters of a query, for SQL stores."""
    clauses: list[str] = []
    params: list[Any] = []

    def add(clause: str, *values: Any) -> None:
        clauses.append(clause.replace("?", mark))
        params.extend(values)

    if q.run_id is not None:
        add("run_id=?", q.run_id)
    if q.correlation_id is not None:
        add("correlation_id=?", q.correlation_id)
    if q.types:
        add(f"type IN ({','.join('?' * len(q.types))})", *q.types)
        if q.run_id is not None and set(q.types) <= set(CONTEXT_INDEX_TYPES):
            clauses.append(CONTEXT_INDEX_TERM)
        if not set(q.types) & set(LOOP_TYPES):
            clauses.append(TYPE_INDEX_TERM)
    if q.tool is not None:
        add("tool=?", q.tool)
    if q.actor is not None:
        if not "runtime".startswith(q.actor) if q.actor_prefix else q.actor != "runtime":
            clauses.append(ACTOR_INDEX_TERM)
        if q.actor_prefix:
            # A range, so the (actor, ts) index serves it (LIKE would need the C collation).
            add("actor>=? AND actor<?", q.actor, q.actor + "\U0010ffff")
        else:
            add("actor=?", q.actor)
    if q.since is not None:
        add("ts>=?", q.since)
    if q.until is not None:
        add("ts<?", q.until)
    if q.after_seq is not None:
        add("seq>?", q.after_seq)
    if q.before_seq is not None:
        add("seq<?", q.before_seq)
    if q.visibilities is not None:
        values: Sequence[str] = q.visibilities or ("",)
        add(f"visibility IN ({','.join('?' * len(values))})", *values)
    return (" AND ".join(clauses) or "1=1"), params


def sqlite_audit_hint(q: RowQuery) -> str:
    """`INDEXED BY` for a query of SQLite's `audit_rows` (schema 5, 6) where the planner would
    pick a wider index: actor prefixes within a time window, and the step types."""
    others = (q.run_id, q.correlation_id, q.tool, *q.types)
    if q.actor_prefix and (q.since or q.until) and not any(others):
        # A prefix (`tool:*`) spans many actors: the time window is the narrower key.
        return "INDEXED BY audit_by_ts "
    if set(q.types) & set(LOOP_TYPES) and not any((q.run_id, q.correlation_id, q.tool, q.actor)):
        # A step type is in no type index (schema 4): they are dense in time order.
        return "INDEXED BY audit_by_ts "
    return ""


def sql_order(q: RowQuery) -> str:
    direction = " DESC" if q.newest_first else ""
    if q.run_id is not None:
        return f"seq{direction}"
    return f"ts{direction}, run_id{direction}, seq{direction}"
