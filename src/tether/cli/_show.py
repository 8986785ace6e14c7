"""`tether show`: a run as its audience may see it, a transcript for users and a timeline
for operators and auditors.

The text reads only what it prints (`tether.run_reads`); `--json` and `--last 0` read and
verify the whole journal through `tether.views`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..journal import Store, load_run, store_url_from_env
from ..run_reads import (
    HEALTH_EVENT_TYPES,
    events_of_types,
    newest_events,
    pinned_events,
    summary_events,
)
from ..views import Role, Viewer
from ._app import (
    JsonOpt,
    StoreOpt,
    ViewOpt,
    _print_json,
    _role,
    _run,
    _store,
    _store_arg,
    app,
    out,
)
from ._event_text import _transcript_line, artifacts_of, event_line, pins_of
from ._hints import listed

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
