"""`tether run`, `resume` and `ls`: starting a run of an agent, continuing one from its
journal, and listing a store's runs."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .._clock import SystemClock
from ..journal import Store, read_events, store_url_from_env
from ..loop import RunResult
from ..models._resolve import model_from_spec
from ..state import RUN_STATUSES
from ._agents import agent_of_run, load_agent
from ._app import (
    OTEL_HELP,
    DetachOpt,
    JsonOpt,
    MaxCostOpt,
    MaxStepsOpt,
    MaxTimeOpt,
    QuietOpt,
    StoreOpt,
    TenantOpt,
    YesOpt,
    _limits_overrides,
    _print_json,
    _run,
    _runtime,
    _store,
    _store_arg,
    _store_url,
    app,
    err,
    out,
)
from ._demo import DEMO_SPEC
from ._drive import _drive, _finish, _start
from ._hints import listed
from ._numbers import finite


def _shown(path: Path) -> str:
    """A path as a person in this folder would type it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@app.command(epilog=OTEL_HELP)
def run(
    agent: Annotated[str, typer.Argument(help="The agent: module:attr or path/to/file.py:attr.")],
    task: Annotated[str, typer.Option("--task", help="What the agent should do.")],
    store: StoreOpt = None,
    model: Annotated[
        str | None, typer.Option(help="openai:MODEL or anthropic:MODEL instead of the agent's.")
    ] = None,
    max_steps: MaxStepsOpt = None,
    max_cost: MaxCostOpt = None,
    max_time: MaxTimeOpt = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    yes: YesOpt = False,
    detach: DetachOpt = False,
) -> None:
    """Start a run of AGENT on a task and drive it until it ends or pauses."""
    store_url = _store_url(store)

    async def go() -> RunResult:
        return await _start(
            store_url, load_agent(agent), task, model=model_from_spec(model) if model else None,
            overrides=_limits_overrides(max_steps, max_cost, max_time), tenant=tenant,
            metadata={"agent_spec": agent, "agent_args": {}, "model_spec": model},
            show_progress=not quiet and not as_json, approve_all=yes, detach=detach,
        )  # fmt: skip

    _finish(_run(go), store_url=store_url, as_json=as_json, extra={})


async def _published(store: Store, run_id: str) -> bool:
    """Whether the demo run's own journal holds a `publish` that went through."""
    return any(
        e.type == "tool.completed" and e.payload.get("name") == "publish"
        for e in await read_events(store, run_id)
    )


@app.command(epilog=OTEL_HELP)
def resume(
    run_id: Annotated[str, typer.Argument(help="The run to continue.")],
    store: StoreOpt = None,
    model: Annotated[
        str | None, typer.Option(help="Override the model the run was started with.")
    ] = None,
    agent: Annotated[
        str | None, typer.Option(help="The agent (module:attr), if it moved since the start.")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="New step limit (continues a run a limit stopped).")
    ] = None,
    max_cost: Annotated[
        float | None, typer.Option(help="New cost limit in USD.", callback=finite)
    ] = None,
    max_time: Annotated[
        float | None, typer.Option(help="New active time limit in seconds.", callback=finite)
    ] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    yes: YesOpt = False,
    detach: DetachOpt = False,
) -> None:
    """Continue a run from its journal, in this process (after a crash, a pause or a limit).

    New limits (--max-steps, --max-cost, --max-time) are journaled first; a run a limit
    stopped then continues where its wrap-up left it."""
    store_url = _store_url(store)

    report: list[Path] = []

    async def go() -> RunResult:
        from ..loop._relimit import change_limits

        async with _runtime(store_url, create=False) as runtime:
            definition = await agent_of_run(runtime.store, run_id, agent)
            overrides = _limits_overrides(max_steps, max_cost, max_time)
            if any(v is not None for v in overrides.values()):
                await change_limits(
                    runtime.store, run_id, overrides, actor=f"cli:{getpass.getuser()}",
                    must_continue=True,
                )  # fmt: skip
            meta = (await read_events(runtime.store, run_id, until_seq=1))[0].payload.get(
                "metadata"
            ) or {}
            model_spec = model or meta.get("model_spec")
            if meta.get("agent_spec") == DEMO_SPEC:
                report.append(Path((meta.get("agent_args") or {}).get("out", ".")) / "report.md")
            chosen = model_from_spec(model_spec) if model_spec else None
            show = not quiet and not as_json
            result = await _drive(
                runtime, definition, run_id=run_id, store_url=store_url, model=chosen,
                show_progress=show, approve_all=yes, detach=detach,
            )  # fmt: skip
            if report and not await _published(runtime.store, run_id):
                report.clear()  # a fork shares its parent's folder: that report is not its own
            return result

    result = _run(go)
    extra = {"report": _shown(report[0])} if report and report[0].exists() else {}
    _finish(result, store_url=store_url, as_json=as_json, extra=extra)


# -- ls ----------------------------------------------------------------------------------


@app.command("ls")
def list_runs(
    store: StoreOpt = None,
    status: Annotated[
        str | None, typer.Option(help=f"Only runs in this status ({', '.join(RUN_STATUSES)}).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs, newest first.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first."""
    if status is not None and status not in RUN_STATUSES:
        err.print(
            f"[red]error:[/red] unknown status {status!r}; use one of {', '.join(RUN_STATUSES)}"
        )
        raise typer.Exit(2)
    if limit < 1:
        # SQLite reads LIMIT -1 as no limit and PostgreSQL refuses it: neither is meant.
        err.print("[red]error:[/red] --limit must be 1 or more")
        raise typer.Exit(2)

    async def go() -> list[dict[str, Any]]:
        s = _store(store, create=False)
        try:
            records = await s.list_runs(status=status, limit=limit)
            now = SystemClock().time()
            hint = _store_arg(store_url_from_env(store))
            shown = [await listed(s, r, now=now, store_arg=hint) for r in records]
        finally:
            await s.close()
        return [
            {
                "run_id": r.run_id,
                "agent": r.agent,
                "status": state,
                "steps": r.summary.steps,
                "tokens": r.summary.input_tokens + r.summary.output_tokens,
                "cost_usd": round(r.summary.cost_usd, 6),
                "created_at": r.created_at,
                "updated_at": r.summary.updated_at,
                "waiting_for": why or None,
            }
            for r, (state, why) in zip(records, shown, strict=True)
        ]

    rows = _run(go)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print(
            f"no {status} runs in this store"
            if status
            else "no runs in this store yet — try: tether demo"
        )
        return
    table = Table(box=None)
    for column in ("run", "agent", "status", "steps", "tokens", "cost", "updated", "waiting for"):
        table.add_column(column, no_wrap=True)
    for r in rows:
        table.add_row(
            r["run_id"], r["agent"], r["status"], str(r["steps"]), f"{r['tokens']:,}",
            f"${r['cost_usd']:.4f}", r["updated_at"][:19].replace("T", " "),
            r["waiting_for"] or "",
        )  # fmt: skip
    out.print(table)
