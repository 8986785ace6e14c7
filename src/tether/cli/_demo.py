"""`tether demo`: the research-synthesis demo (or, with --incidents, the health-policy
incidents) driven here, or queued for a worker with --submit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..journal import new_run_id
from ..loop import RunResult
from ..models._resolve import model_from_spec
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
    _run,
    _store_url,
    app,
    err,
)
from ._drive import _finish, _start

DEMO_SPEC = "tether.demo:demo_agent"
INCIDENTS_SPEC = "tether.demo:incidents_agent"


def _check_out_dir(out_dir: Path, *, here: bool) -> None:
    """A folder the demo cannot write is one line now, not a run of failing tool calls.
    A run driven `here` makes it; a submitted one only refuses a path that is a file
    (its worker may run on another machine)."""
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise OSError("a file, not a folder")
        if here:
            out_dir.mkdir(parents=True, exist_ok=True)
            if not os.access(out_dir, os.W_OK | os.X_OK):
                raise OSError("not writable")
    except OSError as exc:
        why = escape(exc.strerror or str(exc))
        err.print(f"[red]error:[/red] --out {escape(str(out_dir))}: {why}")
        raise typer.Exit(2) from None


@app.command(epilog=OTEL_HELP)
def demo(
    store: StoreOpt = None,
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for report.md and the demo's workspace.")
    ] = Path("tether-demo"),
    model: Annotated[
        str, typer.Option(help="scripted (offline, default), openai:MODEL or anthropic:MODEL.")
    ] = "scripted",
    max_steps: MaxStepsOpt = None,
    max_cost: MaxCostOpt = None,
    max_time: MaxTimeOpt = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    yes: YesOpt = False,
    detach: DetachOpt = False,
    submit: Annotated[
        bool,
        typer.Option(
            "--submit",
            help="Queue the run for `tether worker` (workspace OUT/RUN_ID), print its id and "
            "exit; with --yes the worker approves it.",
        ),
    ] = False,
    incidents: Annotated[
        bool,
        typer.Option(
            "--incidents",
            help="Run the incidents plan: a looping search, a feed that changes its data, a "
            "failing tool and a bad first draft, each caught by a health policy.",
        ),
    ] = False,
) -> None:
    """Run the research-synthesis demo: search, read, note, draft and publish a cited report."""
    from ..demo import demo_agent, demo_plan, incidents_agent

    store_url = _store_url(store)
    make_agent, spec = (incidents_agent, INCIDENTS_SPEC) if incidents else (demo_agent, DEMO_SPEC)
    if incidents and submit:
        err.print("[red]error:[/red] --incidents runs here; it cannot be combined with --submit")
        raise typer.Exit(2)
    _check_out_dir(out_dir, here=not submit)
    if submit:
        from ._workers import submit_demo

        limits = _limits_overrides(max_steps, max_cost, max_time)
        submit_demo(store_url=store_url, out_dir=out_dir, model=model, limits=limits,
                    tenant=tenant, yes=yes, as_json=as_json)  # fmt: skip
        return

    run_id = new_run_id()
    # Each run has its own workspace, so its notes, drafts and report are its own.
    folder = out_dir.resolve() / run_id

    async def go() -> RunResult:
        chosen = model_from_spec(model)
        return await _start(
            store_url, make_agent(folder), demo_plan()["task"], model=chosen,
            overrides=_limits_overrides(max_steps, max_cost, max_time), tenant=tenant,
            metadata={"agent_spec": spec,
                      "agent_args": {"out": str(folder)}, "model_spec": model},
            show_progress=not quiet and not as_json, approve_all=yes, detach=detach,
            run_id=run_id,
        )  # fmt: skip

    result = _run(go)
    report = out_dir / run_id / "report.md"
    extra = {"report": str(report)} if report.exists() else {}
    _finish(result, store_url=store_url, as_json=as_json, extra=extra)
