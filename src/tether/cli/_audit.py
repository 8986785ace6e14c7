"""`tether show`, `why`, `audit` and `export`: every run reader of the CLI, through views.

Each takes `--view user|operator|audit` (default operator) and hands the store to
`tether.views` / `tether.audit`, which return only what that audience may see.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .._clock import iso
from ..audit import AuditFilter, audit_events, why
from ..errors import UsageError
from ..events import EVENT_TYPES, parse_event_id
from ..journal import Store, load_run, store_url_from_env
from ..run_reads import (
    HEALTH_EVENT_TYPES,
    events_of_types,
    newest_events,
    pinned_events,
    summary_events,
)
from ..views import Role, Viewer, parse_role
from ._app import JsonOpt, StoreOpt, _print_json, _run, _store, _store_arg, app, err, out
from ._hints import listed

ViewOpt = Annotated[
    str,
    typer.Option(
        "--view",
        help="Audience: user (decisions), operator (debugging, the default) or audit (all, "
        "unredacted).",
    ),
]


def _role(view: str) -> Role:
    try:
        return parse_role(view)
    except UsageError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


# -- rendering ----------------------------------------------------------------------------


def _one_line(text: Any, limit: int = 110) -> str:
    flat = " ".join(str(text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def event_line(view: dict[str, Any]) -> str:
    """One line describing an event view (payload already filtered and redacted)."""
    p = view["payload"]
    kind = view["type"]
    if kind == "model.completed":
        calls = ", ".join(
            f"{c.get('name')}({_one_line(c.get('arguments'), 60)})"
            for c in p.get("tool_calls") or []
            if isinstance(c, dict)
        )
        text = _one_line(p.get("content"), 100)
        said = text + (" → " if calls and text else "") + calls
        if isinstance(p.get("budget"), dict):  # settled with it (budget/_journaled.py)
            said += f" · {_money((view.get('usage') or {}).get('cost_usd'))} spent"
        return said
    if kind in ("tool.completed", "tool.failed", "tool.unknown"):
        output = str(p.get("output") or "").strip()
        return f"{p.get('name')}: {_one_line(output.splitlines()[0] if output else '')}"
    if kind == "tool.requested":
        return f"{p.get('name')} {_one_line(p.get('arguments'), 100)}"
    if kind in ("message.user", "message.system", "context.compacted"):
        return _one_line(p.get("content") if "content" in p else p.get("text"))
    if kind in ("run.completed", "run.stopped", "run.failed", "run.cancelled"):
        return _one_line(p.get("reason")) + (" · partial" if p.get("partial") else "")
    if kind == "run.created":
        return f"{p.get('agent')} · {_one_line(p.get('task'), 90)}"
    if kind == "approval.requested":
        return f"{p.get('tool')} {_one_line(json.dumps(p.get('arguments')), 80)} ({p.get('kind')})"
    if kind == "approval.resolved":
        return f"{p.get('decision')} by {view['actor']}" + (
            f": {_one_line(p.get('comment'), 80)}" if p.get("comment") else ""
        )
    line = _short(kind, p)
    return line if line is not None else _one_line(json.dumps(p, sort_keys=True))


def _money(value: Any) -> str:
    return f"${value:.4f}" if isinstance(value, int | float) else "$?"


def _short(kind: str, p: dict[str, Any]) -> str | None:
    """Bookkeeping events in words; None for the JSON fallback."""
    if kind == "cycle.started" and "cycle" in p:
        return f"cycle {p['cycle']}"
    if kind == "model.requested":
        text = f"{p.get('model')} · {p.get('context_messages')} messages"
        if isinstance(p.get("context_tokens"), int):
            text += f", ~{p['context_tokens']:,} tokens"
        if isinstance(p.get("budget"), dict):  # its call's hold (budget/_journaled.py)
            text += f" · {_money(p['budget'].get('estimate_usd'))} reserved"
        return text + (" · wrap-up" if p.get("wrap_up") else "")
    if kind == "model.failed":
        return f"{p.get('kind')}: {_one_line(p.get('error'), 90)}"
    if kind == "tool.started":
        return f"{p.get('call_id')} started"
    if kind == "budget.reserved":
        return f"{_money(p.get('estimate_usd'))} reserved for the {p.get('kind')} call"
    if kind == "budget.settled":
        return f"{_money(p.get('actual_usd'))} spent ({_money(p.get('estimate_usd'))} reserved)"
    if kind in ("budget.denied", "limit.reached", "limit.warning"):
        return _one_line(p.get("reason") or p.get("message"), 110) or None
    if kind == "health.warning":
        return _one_line(p.get("message"), 110) or None
    if kind.startswith("health."):
        action = f" → {p['action']}" if p.get("action") not in (None, "continue") else ""
        return f"⚠ {_one_line(p.get('message'), 110)}{action}" if p.get("message") else None
    if kind == "run.resumed":
        return f"by {p.get('worker')} (lease epoch {p.get('epoch')})"
    return None


def _transcript_line(view: dict[str, Any]) -> str | None:
    """The user view: a conversation, not a timeline."""
    p = view["payload"]
    kind = view["type"]
    if kind == "message.user":
        return f"[bold]task[/bold]   {escape(str(p.get('content') or p.get('text') or ''))}"
    if kind == "model.completed":
        return f"[bold]agent[/bold]  {escape(str(p.get('content') or ''))}"
    if kind == "approval.requested":
        if p.get("kind") == "question":
            return f"[cyan]question[/cyan] {escape(str(p.get('question') or ''))}"
        args = json.dumps(p.get("arguments"), ensure_ascii=False)
        reason = f" — {escape(_one_line(p.get('reason'), 200))}" if p.get("reason") else ""
        return f"[cyan]approval needed[/cyan] {escape(str(p.get('tool')))} {escape(args)}{reason}"
    if kind == "approval.resolved":
        comment = f": {escape(str(p.get('comment')))}" if p.get("comment") else ""
        return f"[cyan]{escape(str(p.get('decision')))}[/cyan] by {escape(view['actor'])}{comment}"
    if kind in ("run.completed", "run.stopped", "run.failed", "run.cancelled"):
        status = kind.removeprefix("run.")
        reason = f": {escape(str(p.get('reason')))}" if p.get("reason") else ""
        return f"[bold]— {status}[/bold]{reason}"
    if kind == "run.created":
        return None
    return f"[dim]{escape(kind)}[/dim] {escape(event_line(view))}"


# -- show ---------------------------------------------------------------------------------

_RUN_KEYS = (
    "run_id", "agent", "status", "steps", "input_tokens", "output_tokens", "tokens",
    "cost_usd", "tool_calls", "tool_errors", "created_at", "updated_at", "answer", "partial",
    "reason", "pending_approvals", "last_seq", "task", "active_s", "parent_event",
)  # fmt: skip


SHOW_SCAN = 20
"""`tether show` reads back at most this many events per one it prints (a user's view
shows few of a run's events): bounded by `--last`, not by the run's length."""
HEALTH_SHOWN = 12


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="The run to show.")],
    store: StoreOpt = None,
    view: ViewOpt = "operator",
    last: Annotated[
        int,
        typer.Option(
            "--last",
            min=0,
            help="Print only the newest N events of the timeline (0: all). --json has all.",
        ),
    ] = 500,
    as_json: JsonOpt = False,
) -> None:
    """Show a run: a transcript for users, a timeline for operators and auditors.

    A long run's timeline starts at its newest 500 events (--last), and only those are
    read: the summary comes from the run's newest snapshot and the events after it, its
    pins from the folded state, its health events by an indexed query. With --json: the
    run's summary and {"events": [...]} with every event, each with seq, type,
    visibility, correlation_id, cause, actor, payload and usage (the audit view adds
    checksum and prev_hash); it reads the whole journal, so it takes time linear in the
    run's length (--last 0 too).
    """
    role = _role(view)
    if as_json or last == 0:
        _show_all(run_id, store, role, as_json=as_json)
        return

    async def go() -> tuple[dict[str, Any], tuple[str, str], list[dict[str, Any]], int, bool]:
        s = _store(store, create=False)
        try:
            return await _newest(s, run_id, role, last, store)
        finally:
            await s.close()

    summary, (status, waiting_for), health, earlier, more_health = _run(go)
    shown: list[dict[str, Any]] = summary.pop("events")
    _print_show(
        {**summary, "status": status}, shown, earlier, role=role,
        waiting_for="" if role == "user" else waiting_for,  # the hint is for operators
        health=health, more_health=more_health,
    )  # fmt: skip


async def _newest(
    s: Store, run_id: str, role: Role, last: int, store: str | None
) -> tuple[dict[str, Any], tuple[str, str], list[dict[str, Any]], int, bool]:
    """What the text of `show` prints, by bounded reads (`tether.run_reads`)."""
    state = (await load_run(s, run_id)).state
    viewer = Viewer(s, role)
    summary = viewer.state(state, await summary_events(s, run_id, state))
    events, earlier = await newest_events(
        viewer, run_id, until_seq=state.last_seq, count=last, scan=last * SHOW_SCAN
    )
    found = viewer.events(
        await events_of_types(s, run_id, HEALTH_EVENT_TYPES, newest=HEALTH_SHOWN + 1)
    )
    summary["pins"] = pins_of(viewer.events(await pinned_events(s, run_id, state)))
    summary["events"] = events
    # As `tether ls` shows it: a run a worker handed back is queued, not running.
    hint = _store_arg(store_url_from_env(store))
    listing = await listed(s, await s.get_run(run_id), now=time.time(), store_arg=hint)
    return summary, listing, found[-HEALTH_SHOWN:], earlier, len(found) > HEALTH_SHOWN


def _show_all(run_id: str, store: str | None, role: Role, *, as_json: bool) -> None:
    """`show --json` and `--last 0`: the whole journal, read and verified."""

    async def go() -> tuple[dict[str, Any], tuple[str, str]]:
        s = _store(store, create=False)
        try:
            data = await Viewer(s, role).run(run_id)
            hint = _store_arg(store_url_from_env(store))
            return data, await listed(s, await s.get_run(run_id), now=time.time(), store_arg=hint)
        finally:
            await s.close()

    data, (status, waiting_for) = _run(go)
    summary, events = {**data["run"], "status": status}, data["events"]
    waiting_for = "" if role == "user" else waiting_for
    pins, artifacts = pins_of(events), artifacts_of(events)
    if as_json:
        _print_json(
            {**{k: summary.get(k) for k in _RUN_KEYS}, "waiting_for": waiting_for or None,
             "view": role, "pins": pins, "artifacts": artifacts, "events": events},
            role=role,
        )  # fmt: skip
        return
    health = [e for e in events if e["type"].startswith("health.")]
    _print_show(
        {**summary, "pins": pins}, events, 0, role=role, waiting_for=waiting_for,
        health=health[-HEALTH_SHOWN:], more_health=len(health) > HEALTH_SHOWN,
    )  # fmt: skip


def _print_show(
    summary: dict[str, Any],
    shown: list[dict[str, Any]],
    earlier: int,
    *,
    role: Role,
    waiting_for: str,
    health: list[dict[str, Any]],
    more_health: bool,
) -> None:
    """The text of `show`: `shown` are the events printed, `earlier` the last seq of
    those left out before them (0: none)."""
    out.print(f"[bold]{summary['run_id']}[/bold] · {summary['agent']} · "
              f"[bold]{summary['status']}[/bold]")  # fmt: skip
    if waiting_for:
        out.print(f"waiting for {escape(waiting_for)}")
    more = f"[dim]… {earlier:,} earlier events (--last 0 shows them all)[/dim]"
    if role == "user":
        out.print()
        if earlier:
            out.print(more)
        for e in shown:
            line = _transcript_line(e)
            if line is not None:
                out.print(line)
        if summary["answer"] and not any(e["type"] == "model.completed" for e in shown):
            out.print()
            out.print(escape(summary["answer"]))
        return
    out.print(
        f"steps {summary['steps']} · tokens {summary['tokens']:,} · ${summary['cost_usd']:.4f} · "
        f"tool calls {summary['tool_calls']} ({summary['tool_errors']} errors) · "
        f"{summary['active_s']:.1f}s active"
    )
    if summary["reason"] and summary["status"] != "completed":
        out.print(f"reason: {escape(summary['reason'])}")
    if health:
        # What the health policies saw lately, with the seqs to look for below.
        found = ", ".join(f"{e['type'].removeprefix('health.')} @{e['seq']}" for e in health)
        older = f"; older ones: tether audit --run {summary['run_id']} --type TYPE"
        out.print(f"[yellow]health events: {escape(found)}{older if more_health else ''}[/yellow]")
    out.print()
    if earlier:
        out.print(more)
    for e in shown:
        check = f" [dim]{e['checksum'][:12]}[/dim]" if role == "audit" else ""
        style = "yellow" if e["type"].startswith("health.") else "cyan"
        out.print(
            f"[dim]{e['seq']:>5}[/dim] {e['ts'][11:19]} [{style}]{e['type']:<18}[/{style}]{check} "
            f"{escape(event_line(e))}"
        )
    pins, artifacts = summary["pins"], artifacts_of(shown)
    if pins:
        out.print()
        out.print("[bold]pinned facts[/bold]")
        for p in pins:
            source = f" (source: {p['source']})" if p["source"] else ""
            out.print(f"  {p['id']} {escape(p['text'] + source)} [dim]by {p['by']}[/dim]")
    if artifacts:
        out.print()
        out.print("[bold]artifacts[/bold] (outputs longer than the context shows)")
        for a in artifacts:
            check = f" sha256 {a['checksum'][:12]}" if a.get("checksum") else ""
            out.print(f"  {a['handle']} {a['tool']} · {a['chars']:,} chars "
                      f"({a['shown']:,} shown){check}")  # fmt: skip
    if summary["answer"]:
        out.print()
        out.print(escape(summary["answer"]))


def artifacts_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool outputs longer than the context showed (`read_artifact` reads them on)."""
    found = []
    for e in events:
        p = e["payload"]
        if e["type"] not in _RESULTS or not isinstance(p.get("output"), str):
            continue
        limit = p.get("max_chars", 8_000)
        if isinstance(limit, int) and len(p["output"]) > limit:
            found.append(
                {
                    "handle": e.get("id") or f"{e.get('run_id')}:{e['seq']}",
                    "tool": p.get("name"),
                    "chars": len(p["output"]),
                    "shown": limit,
                    "checksum": e.get("checksum"),
                }
            )
    return found


_RESULTS = ("tool.completed", "tool.failed", "tool.unknown")


def pins_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The facts pinned at the end of these events (pins, minus unpins)."""
    pins: dict[str, dict[str, Any]] = {}
    for e in events:
        p = e["payload"]
        if e["type"] == "fact.pinned" and "id" in p:
            pins[p["id"]] = {
                "id": p["id"],
                "text": p.get("text", ""),
                "source": p.get("source", ""),
                "by": e["actor"],
                "seq": e["seq"],
            }
        elif e["type"] == "fact.unpinned":
            pins.pop(p.get("id"), None)
    return list(pins.values())


# -- why ----------------------------------------------------------------------------------


def _event_arg(text: str) -> str:
    """RUN_ID:SEQ, or an approval id apr:RUN_ID:SEQ (the call it gated)."""
    if text.startswith("apr:"):
        text = text[4:]
    try:
        run_id, seq = parse_event_id(text)
    except ValueError:
        raise UsageError(
            f"not an event id: {text!r} (write RUN_ID:SEQ, e.g. from tether show --json)"
        ) from None
    return f"{run_id}:{seq}"


def _context_text(ctx: dict[str, Any]) -> str:
    parts = [f"{ctx['messages']} messages in the model's context"]
    if ctx["by_type"]:
        parts.append(", ".join(f"{n} {t}" for t, n in sorted(ctx["by_type"].items())))
    if ctx["hidden"]:
        parts.append(f"{ctx['hidden']} hidden from this view")
    if ctx.get("estimated_tokens") is not None:
        parts.append(f"~{ctx['estimated_tokens']:,} tokens estimated")
    if ctx.get("input_tokens") is not None:
        parts.append(f"{ctx['input_tokens']:,} input tokens counted by the model")
    return " · ".join(parts)


def _seq_ranges(seqs: list[int]) -> str:
    out: list[str] = []
    ordered = sorted(seqs)
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ", ".join(out)


@app.command("why")
def why_command(
    event: Annotated[
        str, typer.Argument(help="The event: RUN_ID:SEQ (or an approval id apr:RUN_ID:SEQ).")
    ],
    store: StoreOpt = None,
    view: ViewOpt = "operator",
    as_json: JsonOpt = False,
) -> None:
    """Why did the agent do this? The causal chain of EVENT back to its cycle's trigger.

    Shows the trigger, the cycle, what was in the model's context, the decision, the tool
    calls and results, and the approvals and budget checks along the way, oldest first.
    With --json: {"chain": [...]} (plus hidden_steps and notes).
    """
    role = _role(view)

    async def go() -> dict[str, Any]:
        target = _event_arg(event)
        s = _store(store, create=False)
        try:
            return await why(s, target, role=role)
        finally:
            await s.close()

    data = _run(go)
    if as_json:
        _print_json(data, role=role)
        return
    chain = data["chain"]
    out.print(f"why [bold]{data['event']}[/bold] ({len(chain)} steps, oldest first)")
    run_of_target = data["event"].rpartition(":")[0]
    for step in chain:
        where = f"{step['seq']}" if step["run_id"] == run_of_target else step["id"]
        marks = []
        if step["trigger"]:
            marks.append("[yellow]trigger[/yellow]")
        if step["target"]:
            marks.append("[bold]◀ asked[/bold]")
        if step["implied"]:
            marks.append("[dim](linked by position)[/dim]")
        if step.get("child_run"):
            marks.append(f"[magenta]started child run {escape(step['child_run'])}[/magenta]")
        prefix = "  + " if step["attached"] else "    "
        out.print(
            f"{prefix}[dim]{where:>6}[/dim] [cyan]{step['type']:<18}[/cyan] "
            f"{escape(event_line(step))} {' '.join(marks)}".rstrip()
        )
        ctx = step.get("context")
        if ctx is not None:
            out.print(f"           [dim]context:[/dim] {escape(_context_text(ctx))}")
            seqs = ctx["seqs"]
            if seqs:
                shown = (
                    _seq_ranges(seqs)
                    if len(seqs) <= 16
                    else (
                        f"{_seq_ranges(seqs[:6])} … {_seq_ranges(seqs[-6:])} "
                        f"({len(seqs)} events; --json lists them all)"
                    )
                )
                out.print(f"           [dim]events:[/dim] {shown}")
    if data["hidden_steps"]:
        out.print(
            f"[dim]{data['hidden_steps']} step(s) hidden from the {role} view; "
            "--view audit shows all[/dim]"
        )
    for note in data["notes"]:
        out.print(f"[yellow]note:[/yellow] {escape(note)}")


# -- audit --------------------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str, *, option: str) -> str:
    """A journal timestamp from ISO-8601 (naive means UTC) or a duration ago (30m, 2h, 7d)."""
    match = _RELATIVE.match(text.strip())
    try:
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
            return iso(time.time() - seconds)
        value = datetime.fromisoformat(text.strip())
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return iso((value - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(seconds=1))
    except (ValueError, OverflowError):  # not a time, or one before year 1 or after 9999
        raise UsageError(
            f"{option} {text!r} is not a time: write ISO-8601 (2026-05-28T20:00, UTC unless "
            "an offset is given) or a duration ago (30m, 2h, 7d)"
        ) from None


@app.command("audit")
def audit_command(
    store: StoreOpt = None,
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run.")] = None,
    correlation: Annotated[
        str | None, typer.Option("--correlation", help="Only this cycle (RUN_ID/cN).")
    ] = None,
    event_type: Annotated[
        list[str] | None,
        typer.Option("--type", help="Only this event type (repeatable), e.g. approval.resolved."),
    ] = None,
    tool: Annotated[str | None, typer.Option(help="Only calls of this tool.")] = None,
    actor: Annotated[
        str | None,
        typer.Option(
            help="Only this actor (cli:alice, tool:search, model:…); end with * for a prefix."
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="From this time: ISO-8601 (UTC) or ago (30m, 2h, 7d).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Before this time: ISO-8601 (UTC) or ago (30m, 2h, 7d).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many events, oldest first.")] = 100,
    view: ViewOpt = "operator",
    as_json: JsonOpt = False,
) -> None:
    """Search the journal of every run by run, cycle, type, tool, actor and time (indexed)."""
    role = _role(view)

    async def go() -> tuple[list[dict[str, Any]], bool]:
        types = tuple(event_type or ())
        unknown = sorted(set(types) - EVENT_TYPES)
        if unknown:
            raise UsageError(f"unknown event type {unknown[0]!r}; e.g. tool.completed")
        where = AuditFilter(
            run_id=run_id,
            correlation_id=correlation,
            types=types,
            tool=tool,
            actor=actor,
            since=parse_when(since, option="--since") if since else None,
            until=parse_when(until, option="--until") if until else None,
            limit=limit,
        )
        s = _store(store, create=False)
        try:
            if run_id is not None:
                await s.get_run(run_id)
            return await audit_events(s, where, role=role)
        finally:
            await s.close()

    events, more = _run(go)
    if as_json:
        _print_json({"events": events, "more": more}, role=role)
        return
    if not events:
        out.print("no events match")
        return
    for e in events:
        out.print(
            f"{e['ts'][:19].replace('T', ' ')} [dim]{e['id']}[/dim] [cyan]{e['type']:<18}[/cyan] "
            f"{escape(e['actor'])}  {escape(event_line(e))}"
        )
    if more:
        out.print(f"[yellow]more events match: narrow the search or raise --limit ({limit})[/]")


# -- export -------------------------------------------------------------------------------


@app.command("export")
def export_command(
    run_id: Annotated[str, typer.Argument(help="The run to export.")],
    store: StoreOpt = None,
    view: ViewOpt = "operator",
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Export a run as JSON Lines, one event per line, as the chosen audience may see it.

    The audit view writes the stored events byte for byte (checksums and hash chain
    included), so the file can be verified and replayed.
    """
    role = _role(view)

    async def go() -> list[bytes]:
        s = _store(store, create=False)
        try:
            return await Viewer(s, role).export_lines(run_id)
        finally:
            await s.close()

    lines = _run(go)
    data = b"".join(line + b"\n" for line in lines)
    if out_file is not None:
        try:
            out_file.write_bytes(data)
        except OSError as exc:
            err.print(f"[red]error:[/red] cannot write {escape(str(out_file))}: {exc.strerror}")
            raise typer.Exit(2) from None
        err.print(f"wrote {len(lines)} events to {escape(str(out_file))}")
        return
    typer.echo(data, nl=False)
