"""What each console page shows, as plain dictionaries: the HTML page and its JSON twin
render the same dictionary.

Nothing here decides visibility. Run contents come from `tether.views` (`Viewer`), causal
chains from `tether.audit.why`, searches from `tether.audit.audit_events`, approvals from
`tether.approvals` (`Approval.to_json`, the CLI's redaction), spend from the budget
ledger, and list rows from the same helper `tether ls` uses. The role passed in is the
audience (`tokens.view_of`), never the console role.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from .._clock import SystemClock
from ..agent import Agent, Limits
from ..approvals import Approval, expire_approvals, pending_approvals
from ..audit import AuditFilter, audit_events, why
from ..budget import ledger_for
from ..budget._verify import verify_ledger
from ..cli._agents import agent_of_run
from ..cli._audit import artifacts_of, event_line, parse_when, pins_of
from ..cli._hints import listed
from ..errors import CorruptionError, StoreUnavailable, TetherError, UsageError
from ..events import EVENT_TYPES, GENESIS_HASH, Event
from ..journal import Store, load_run, read_events, verify_run
from ..journal._base import RunRecord
from ..journal._index import AuditIndex, RowQuery
from ..journal._integrity import walk
from ..loop._awareness import runway
from ..run_reads import events_of_types, pinned_events, summary_events
from ..state import RUN_STATUSES, RunState
from ..views import Role, Viewer

__all__ = [
    "MINOR_TYPES",
    "RunFilter",
    "audit_data",
    "budgets_data",
    "doctor_data",
    "health_data",
    "inbox_data",
    "run_data",
    "runs_data",
    "why_data",
]

MINOR_TYPES = frozenset(
    {
        "cycle.started", "model.requested", "tool.started", "budget.reserved",
        "budget.settled", "run.resumed", "snapshot.taken",
    }
)  # fmt: skip
"""Bookkeeping events a timeline folds away (still there, one click to open)."""

SCAN_LIMIT = 10_000
"""The most runs a list, or events a search or a page's sections, read in one request."""

HEALTH_TYPES = ("health.warning", "limit.warning", "limit.reached", "budget.denied")
_APPROVAL_TYPES = ("approval.requested", "approval.resolved")


@dataclass(frozen=True, kw_only=True, slots=True)
class RunFilter:
    status: str | None = None
    agent: str | None = None
    tenant: str | None = None
    since: str | None = None
    """ISO-8601 or a duration ago (30m, 2h, 7d), as `tether audit --since`."""
    until: str | None = None
    limit: int = 100

    def checked(self) -> RunFilter:
        if self.status is not None and self.status not in RUN_STATUSES:
            raise UsageError(
                f"unknown status {self.status!r}; use one of {', '.join(RUN_STATUSES)}"
            )
        if not 1 <= self.limit <= SCAN_LIMIT:
            raise UsageError(f"limit must be between 1 and {SCAN_LIMIT}")
        return self


def _runway(
    summary: dict[str, Any], limits: dict[str, Any], *, active_s: float | None = None
) -> dict[str, Any] | None:
    """Steps, tokens and cost left: the run's status line (`tether.loop`'s), without the
    context fill, and without time when the active seconds are not at hand (the list)."""
    try:
        bounds = Limits.from_json(
            limits if active_s is not None else {**limits, "max_time_s": None}
        )
    except (TypeError, ValueError):
        return None
    state = RunState(
        cycle=summary["steps"], input_tokens=summary["input_tokens"],
        output_tokens=summary["output_tokens"], cost_usd=summary["cost_usd"],
    )  # fmt: skip
    line = runway(state, bounds, elapsed_s=active_s or 0.0, context_fill=None)
    text = line.line.splitlines()[0]
    if active_s is None:
        text = text.rpartition(" · ")[0] + "]"  # the time part, which is last
    return {
        "line": text,
        "level": line.level,
        "tightest": line.tightest,
        "left": line.left,
    }


async def runs_data(store: Store, role: Role, where: RunFilter) -> dict[str, Any]:
    """The runs list: status, steps, tokens, cost, runway and health per run."""
    where = where.checked()
    since = parse_when(where.since, option="since") if where.since else None
    until = parse_when(where.until, option="until") if where.until else None
    records = await store.list_runs(
        status=where.status,  # type: ignore[arg-type]  # checked against RUN_STATUSES
        agent=where.agent, tenant=where.tenant, since=since, until=until, limit=where.limit,
    )  # fmt: skip
    health: Counter[str] = Counter()
    if records:
        # Health events of these runs come after their creation (a fork counts from its
        # own): one indexed query.
        oldest = min(r.created_at for r in records)
        found, _ = await audit_events(
            store, AuditFilter(types=HEALTH_TYPES, since=oldest, limit=SCAN_LIMIT), role=role
        )
        health.update(e["run_id"] for e in found)
    now = SystemClock().time()
    viewer = Viewer(store, role)
    creations = await _creations(store, records)
    rows = []
    for record in records:
        status, waiting = await listed(store, record, now=now)
        first = creations.get(record.run_id) or await read_events(store, record.run_id, until_seq=1)
        # Only the limits and tenant are needed here: the view of a copy that carries just
        # them (the role's rules still decide) costs far less than redacting the whole task.
        created = viewer.events(
            replace(e, payload={k: e.payload.get(k) for k in ("limits", "tenant")}) for e in first
        )
        s = record.summary
        summary = {
            "steps": s.steps, "input_tokens": s.input_tokens,
            "output_tokens": s.output_tokens, "cost_usd": s.cost_usd,
        }  # fmt: skip
        limits = created[0]["payload"].get("limits") if created else None
        rows.append(
            {
                "run_id": record.run_id,
                "agent": record.agent,
                "tenant": created[0]["payload"].get("tenant") if created else None,
                "status": status,
                "steps": s.steps,
                "tokens": s.input_tokens + s.output_tokens,
                "cost_usd": round(s.cost_usd, 6),
                "created_at": record.created_at,
                "updated_at": s.updated_at,
                # What a run waits for names its queue and agent version (the creation's
                # operator-level metadata): not for users.
                "waiting_for": (waiting or None) if role != "user" else None,
                # The runway line is the model's and the operator's (as in tool results).
                "runway": _runway(summary, limits)
                if role != "user" and isinstance(limits, dict)
                else None,
                "health_events": health[record.run_id],
            }
        )
    moving = any(r["status"] in ("queued", "running") for r in rows)
    return {"runs": rows, "filter": where_json(where), "moving": moving}


async def _creations(store: Store, records: list[RunRecord]) -> dict[str, list[Event]]:
    """The `run.created` events of these runs, verified, from one indexed query over their
    creation times (a fork's copies its parent's time, so a miss is read one by one)."""
    if not records or not isinstance(store, AuditIndex):
        return {}
    wanted = {r.run_id for r in records}
    since = min(r.created_at for r in records)
    rows = await store.query_rows(RowQuery(types=("run.created",), since=since))
    found: dict[str, list[Event]] = {}
    for row in rows:
        if row.run_id in wanted and row.seq == 1:
            # The same check as `read_events(until_seq=1)`: the chain's first link.
            checked = walk([row], start_seq=1, prev_hash=GENESIS_HASH)
            if checked.fault is not None:
                raise CorruptionError(row.run_id, 1, checked.fault.what)
            found[row.run_id] = checked.events
    return found


def where_json(where: RunFilter) -> dict[str, Any]:
    return {
        "status": where.status, "agent": where.agent, "tenant": where.tenant,
        "since": where.since, "until": where.until, "limit": where.limit,
    }  # fmt: skip


def _groups(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive events of one cycle (correlation id) as one group, minor ones marked."""
    groups: list[dict[str, Any]] = []
    for e in events:
        e["line"] = event_line(e)
        e["minor"] = e["type"] in MINOR_TYPES
        key = e["correlation_id"]
        if not groups or groups[-1]["correlation_id"] != key:
            groups.append({"correlation_id": key, "events": [], "minor": 0})
        groups[-1]["events"].append(e)
        groups[-1]["minor"] += e["minor"]
    return groups


TIMELINE_WINDOW = 400
"""Events a run page shows at once (older ones a link away): its work stays bounded
however long the run grows."""

SECTION_SIZE = 50
"""The newest approvals, health events and compactions a run page lists (each section
says when there are older ones, which the audit search finds)."""


async def _section(
    viewer: Viewer, run_id: str, types: tuple[str, ...]
) -> tuple[list[dict[str, Any]], bool]:
    """The newest `SECTION_SIZE` events of `types` the reader may see, oldest first, and
    whether older ones exist. One more than shown is read, to know; the role's filter
    comes after the query, so a section may show fewer than its size."""
    found = await events_of_types(viewer.store, run_id, types, newest=SECTION_SIZE + 1)
    more = len(found) > SECTION_SIZE
    shown = viewer.events(found[1:] if more else found)
    for e in shown:
        e["line"] = event_line(e)
    return shown, more


async def run_data(
    store: Store, role: Role, run_id: str, *, before: int | None = None
) -> dict[str, Any]:
    """A run as `role` may see it: summary, runway, approvals, health, compactions, pins,
    and a window of its timeline (the newest `TIMELINE_WINDOW` events before `before`),
    grouped by cycle. Each part is a bounded read, so a run of 100,000 steps costs what
    one of 1,000 does: the state from the snapshot and tail (the summary is `state_view`
    of it, as `tether show` has it), pins from the folded state, and the sections as the
    newest `SECTION_SIZE` of their events by indexed queries (`tether.run_reads`)."""
    state = (await load_run(store, run_id)).state
    viewer = Viewer(store, role)
    summary = viewer.state(state, await summary_events(store, run_id, state))
    head = state.last_seq
    until = head if before is None else max(0, min(before - 1, head))
    after = max(0, until - TIMELINE_WINDOW)
    events = viewer.events(await read_events(store, run_id, after_seq=after, until_seq=until))
    approvals, more_approvals = await _section(viewer, run_id, _APPROVAL_TYPES)
    health, more_health = await _section(viewer, run_id, HEALTH_TYPES)
    compactions, more_compactions = await _section(viewer, run_id, ("context.compacted",))
    created = await read_events(store, run_id, until_seq=1)
    shown = viewer.events(created)
    # The runway reads the limits in force (the fold applies `limit.changed`), as the
    # loop's status line does; it is only shown to roles that see the creation.
    limits = state.limits if shown else None
    return {
        "run": summary,
        "tenant": shown[0]["payload"].get("tenant") if shown else None,
        "parent_event": summary["parent_event"],
        "runway": _runway(summary, limits, active_s=summary["active_s"])
        if role != "user" and isinstance(limits, dict)
        else None,
        "pins": pins_of(viewer.events(await pinned_events(store, run_id, state))),
        "artifacts": artifacts_of(events),
        "compactions": compactions,
        "health": health,
        "approvals": approvals,
        "older": {"approvals": more_approvals, "health": more_health,
                  "compactions": more_compactions},
        "window": {
            "after_seq": after,
            "until_seq": until,
            "head_seq": head,
            "size": TIMELINE_WINDOW,
            "older": after > 0,
            "newer": until < head,
        },
        "groups": _groups(events),
        "events": len(events),
        "moving": summary["status"] in ("queued", "running"),
    }  # fmt: skip


async def why_data(store: Store, role: Role, event_id: str) -> dict[str, Any]:
    """`tether why`: the causal chain of one event."""
    data = await why(store, event_id.removeprefix("apr:"), role=role)
    for step in data["chain"]:
        step["line"] = event_line(step)
    return data


CONTEXT_EVENTS = 4
"""Events of the run before a request that its inbox card shows (the reader's view)."""
_CONTEXT_TYPES = ("message.user", "model.completed", "tool.completed", "tool.failed",
                  "tool.unknown", "context.compacted")  # fmt: skip
_CONTEXT_SCAN = 40
"""Journal events read back from a request to find them: bounded, whatever the run's length."""


async def _context_before(viewer: Viewer, approval: Approval) -> list[dict[str, Any]]:
    """What the agent had just seen and said before it asked, as the reader may see it
    (the stored excerpt copies the whole context, so it is the auditor's alone)."""
    until = approval.requested_seq - 1
    events = await read_events(
        viewer.store, approval.run_id, after_seq=max(0, until - _CONTEXT_SCAN), until_seq=until
    )
    shown = [e for e in viewer.events(events) if e["type"] in _CONTEXT_TYPES]
    return [
        {"id": e["id"], "seq": e["seq"], "type": e["type"], "line": event_line(e)}
        for e in shown[-CONTEXT_EVENTS:]
    ]


async def inbox_data(store: Store, role: Role) -> dict[str, Any]:
    """Every pending approval across runs, as `tether approvals` shows it (expired ones
    first get their default), with the last events before it in the reader's view
    (`context`); the audit view adds the stored context excerpt, unredacted. Each
    carries its tool's parameters (the JSON schema an edit is checked against) when the
    run's agent can be rebuilt here, as `tether approve --args` rebuilds it."""
    await expire_approvals(store)
    pending = await pending_approvals(store)
    viewer = Viewer(store, role)
    agents: dict[str, Agent | None] = {}
    out = []
    for approval in pending:
        shown = approval.to_json(redact=role != "audit")
        shown["context"] = await _context_before(viewer, approval)
        shown["parameters"] = None
        if role == "audit":  # auditors edit nothing: no agent code is imported for them
            out.append(shown)
            continue
        if approval.run_id not in agents:
            try:
                agents[approval.run_id] = await agent_of_run(store, approval.run_id)
            except TetherError:
                agents[approval.run_id] = None  # validated when decided, as in the CLI
        agent = agents[approval.run_id]
        tool = agent.tool(approval.tool) if agent is not None else None
        shown["parameters"] = tool.parameters if tool is not None else None
        out.append(shown)
    return {"approvals": out}


BUDGET_CHANGES = 20
"""Limit changes the budgets page lists (newest first; `tether budget changes` has more)."""


async def budgets_data(store: Store) -> dict[str, Any]:
    """`tether budget`: limit, spent, reserved and remaining per scope and window, and
    who changed which limits lately (`tether budget changes`)."""
    ledger = ledger_for(store)
    rows = await ledger.status()
    limits = await ledger.limits()
    return {
        "windows": [r.to_json() for r in rows],
        "limits": {scope: lim.to_json() for scope, lim in sorted(limits.items())},
        "changes": [c.to_json() for c in await ledger.limit_changes(BUDGET_CHANGES)],
    }


def audit_filter(
    *,
    run_id: str | None,
    correlation: str | None,
    types: list[str],
    tool: str | None,
    actor: str | None,
    since: str | None,
    until: str | None,
    limit: int,
) -> AuditFilter:
    """The `tether audit` filters, checked as the CLI checks them."""
    unknown = sorted(set(types) - EVENT_TYPES)
    if unknown:
        raise UsageError(f"unknown event type {unknown[0]!r}; e.g. tool.completed")
    return AuditFilter(
        run_id=run_id or None, correlation_id=correlation or None, types=tuple(types),
        tool=tool or None, actor=actor or None,
        since=parse_when(since, option="since") if since else None,
        until=parse_when(until, option="until") if until else None, limit=limit,
    )  # fmt: skip


async def audit_data(store: Store, role: Role, where: AuditFilter) -> dict[str, Any]:
    """`tether audit`: indexed search of every journal."""
    if where.run_id is not None:
        await store.get_run(where.run_id)  # RunNotFound, as the CLI
    events, more = await audit_events(store, where, role=role)
    for e in events:
        e["line"] = event_line(e)
    return {"events": events, "more": more}


async def health_data(store: Store, role: Role, *, limit: int = 200) -> dict[str, Any]:
    """The newest health warnings, limits reached and budget denials across runs, newest
    first (`more`: older ones exist; the audit search finds them)."""
    events, more = await audit_events(
        store, AuditFilter(types=HEALTH_TYPES, limit=limit, newest_first=True), role=role
    )
    for e in events:
        e["line"] = event_line(e)
    return {"events": events, "more": more}


async def doctor_data(store: Store) -> dict[str, Any]:
    """What `tether doctor` checks, without repairs: chains, snapshots, indexes, ledger."""
    reports = [await verify_run(store, r) for r in await store.run_ids()]
    out: dict[str, Any] = {
        "at": SystemClock().time(),
        "runs": len(reports),
        "damaged": [
            {"run_id": r.run_id, "problems": [p.to_json() for p in r.problems]}
            for r in reports
            if not r.ok
        ],
    }
    check = getattr(store, "check_audit_index", None)
    out["audit_index"] = await check() if check is not None else None
    pages = getattr(store, "check_file_integrity", None)
    out["file"] = await pages() if pages is not None else None
    try:
        problems, _ = await verify_ledger(store)
        out["ledger"] = [p.to_json() for p in problems]
    except StoreUnavailable as exc:
        out["ledger"] = [{"where": "ledger", "what": f"not checked: {exc}"}]
    out["ok"] = not (out["damaged"] or out["audit_index"] or out["file"] or out["ledger"])
    return out
