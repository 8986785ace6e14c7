"""`tether why`, `audit` and `export`: the run readers of the CLI besides `show`
(`_show`), through views.

Each takes `--view user|operator|audit` (default operator) and hands the store to
`tether.views` / `tether.audit`, which return only what that audience may see.
"""

from __future__ import annotations

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
from ..views import Viewer
from ._app import JsonOpt, StoreOpt, ViewOpt, _print_json, _role, _run, _store, app, err, out
from ._event_text import artifacts_of as artifacts_of
from ._event_text import event_line as event_line
from ._event_text import pins_of as pins_of

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
