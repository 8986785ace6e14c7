"""The `tether` command: thin calls into the public API, with one-line errors.

Exit codes for run, resume and demo: 0 completed, 1 failed, 2 usage error, 3 stopped by
a limit or budget (partial answer saved), 4 waiting for a human.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import json
import os
import shlex
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._clock import SystemClock
from .._redact import default_redactor
from ..agent import Agent
from ..approvals import (
    Approval,
    Decision,
    expire_approvals,
    parse_request_id,
    pending_approvals,
    resolve_approval,
)
from ..budget._verify import LedgerProblem, verify_ledger
from ..chaos import FaultPlan
from ..errors import StoreError, StoreUnavailable, TetherError, UsageError
from ..journal import (
    DiscardedCall,
    RunReport,
    Store,
    calls_after,
    fork_run,
    new_run_id,
    open_store,
    read_events,
    store_url_from_env,
    verify_run,
)
from ..loop import RunResult, Runtime
from ..models import Model
from ..models._resolve import model_from_spec
from ..state import RUN_STATUSES, RunState
from ._agents import agent_of_run, load_agent
from ._hints import listed, next_step
from ._numbers import finite
from ._progress import live_progress
from ._prompt import LeftWaiting, ask_inline, json_object

T = TypeVar("T")

DEMO_SPEC = "tether.demo:demo_agent"
INCIDENTS_SPEC = "tether.demo:incidents_agent"

app = typer.Typer(
    name="tether",
    help="Tether: a durable runtime for long-running LLM agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output keeps whole lines (no wrapping at 80 columns) so scripts can grep it.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="TETHER_STORE",
        help="Store URL: sqlite:///path.db (default sqlite:///./tether.db) or memory://.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
YesOpt = Annotated[bool, typer.Option("--yes", help="Approve every approval request.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No live progress.")]
MaxStepsOpt = Annotated[int | None, typer.Option(help="Step (model turn) limit.")]
MaxCostOpt = Annotated[float | None, typer.Option(help="Cost limit in USD.", callback=finite)]
MaxTimeOpt = Annotated[
    float | None, typer.Option(help="Active time limit in seconds.", callback=finite)
]
TenantOpt = Annotated[
    str | None, typer.Option(help="Tenant the run's spend counts against (budget scope).")
]
DetachOpt = Annotated[
    bool,
    typer.Option("--detach", help="Leave approval requests waiting and print how to resolve."),
]
OTEL_HELP = escape(
    "OpenTelemetry spans: set TETHER_OTEL=console (spans on stderr, one JSON object a line) "
    "or TETHER_OTEL=otlp (an OTLP exporter set up by the OTEL_EXPORTER_OTLP_* variables; "
    "OTEL_SERVICE_NAME defaults to tether). Needs pip install 'tether-runtime[otel]'."
)  # the epilog of run, resume, demo and worker (rich markup: `[otel]` escaped)


class Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; user mistakes become one line on stderr and exit code 2."""
    try:
        return asyncio.run(make())
    except UsageError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except TetherError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        if _driving:
            run_id, store_url = _driving[-1]
            err.print(
                f"interrupted: run {run_id} is safe in its journal; continue it with: "
                f"tether resume {run_id}{_store_arg(store_url)}"
            )
        else:
            err.print("interrupted")
        raise typer.Exit(130) from None


def _default_store_url() -> str | None:
    try:
        return store_url_from_env(None)
    except UsageError:
        return None


def _store_url(url: str | None) -> str:
    """The store URL a command uses; a mistake in it is one line and exit 2."""
    try:
        return store_url_from_env(url)
    except UsageError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


def _store(url: str | None, *, create: bool = True) -> Store:
    """The store at `url`; readers pass `create=False`, so a mistyped path is an error,
    not a new empty store (a store they cannot write is opened read-only)."""
    if url is not None and not url.strip():
        raise UsageError("--store is empty: give a store URL or leave the option out")
    return open_store(url, create=create)


_driving: list[tuple[str, str]] = []
"""The run this process drives and its store, for the message Ctrl-C prints."""


def _store_arg(store_url: str) -> str:
    """` --store URL` when a printed command needs it to find the same store, quoted for
    the shell (a PostgreSQL URL's `?schema=` is a glob that zsh refuses unquoted)."""
    return "" if store_url == _default_store_url() else f" --store {shlex.quote(store_url)}"


@contextlib.asynccontextmanager
async def _runtime(store_url: str, *, create: bool = True) -> AsyncIterator[Runtime]:
    """A Runtime on the store, closed on the way out; its appends become OpenTelemetry
    spans when TETHER_OTEL asks (every span exported before the process exits).
    `create=False` for commands on an existing run: a missing store is an error."""
    from ..telemetry import instrument, observer_from_env

    observer = observer_from_env()
    runtime = Runtime(store_url if create else _store(store_url, create=False))
    if observer is not None:
        runtime.store = instrument(runtime.store, observer)
    try:
        yield runtime
    finally:
        try:
            await runtime.close()
        finally:
            if observer is not None:
                await asyncio.to_thread(observer.close)


def _print_json(value: Any, *, role: str = "operator") -> None:
    """Print JSON for scripts; below the audit role every string is redacted first."""
    if role != "audit":
        value = default_redactor().value(value)
    out.print_json(data=value) if sys.stdout.isatty() else print(json.dumps(value))


def run_json(state: RunState) -> dict[str, Any]:
    return {
        "run_id": state.run_id,
        "agent": state.agent,
        "status": state.status,
        "steps": state.steps,
        "input_tokens": state.input_tokens,
        "output_tokens": state.output_tokens,
        "tokens": state.tokens,
        "cost_usd": round(state.cost_usd, 6),
        "tool_calls": state.tool_calls,
        "tool_errors": state.tool_errors,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
        "answer": state.answer,
        "partial": state.partial,
        "reason": state.reason,
        "pending_approvals": list(state.pending_approvals),
        "last_seq": state.last_seq,
    }


def _limits_overrides(
    max_steps: int | None, max_cost: float | None, max_time: float | None
) -> dict[str, Any]:
    return {"max_steps": max_steps, "max_cost_usd": max_cost, "max_time_s": max_time}


async def _drive(
    runtime: Runtime,
    agent: Agent,
    *,
    run_id: str,
    store_url: str,
    model: Model | None,
    show_progress: bool,
    approve_all: bool = False,
    detach: bool = False,
) -> RunResult:
    """Drive the run; when it waits for a human, decide inline (a terminal or --yes)."""
    plan = FaultPlan.from_env()
    if plan is not None:
        runtime.store = plan.wrap_store(runtime.store)
        model = plan.wrap_model(model or runtime.model_of(agent))
        agent = dataclasses.replace(
            agent,
            tools=plan.wrap_tools(agent.tools),
            tool_sources=plan.wrap_sources(agent.tool_sources),
        )
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    _driving.append((run_id, store_url))
    while True:
        with live_progress(err, enabled=show_progress, run_id=run_id) as observer:
            result = await runtime.resume(agent, run_id, model=model, observer=observer)
        if result.status != "waiting_approval" or detach:
            return result
        decided = False
        for approval in await pending_approvals(runtime.store, run_id=run_id):
            if approve_all and approval.kind == "approval":
                await resolve_approval(
                    runtime.store, approval.request_id, decision="approved", actor="cli:--yes"
                )
                decided = True
            elif interactive:
                try:
                    asked = await ask_inline(err, runtime.store, approval, agent=agent)
                except LeftWaiting:
                    err.print()
                    err.print(f"interrupted: run {run_id} waits for {approval.request_id}")
                    return result
                decided = asked or decided
        if not decided:
            return result


async def _start(
    store_url: str,
    agent: Agent,
    task: str,
    *,
    model: Model | None,
    overrides: dict[str, Any],
    tenant: str | None,
    metadata: dict[str, object],
    show_progress: bool,
    approve_all: bool,
    detach: bool,
    run_id: str | None = None,
) -> RunResult:
    """Create a run (recording how to rebuild its agent for `resume`) and drive it."""
    async with _runtime(store_url) as runtime:
        run_id = await runtime.create(
            agent, task, limits=agent.limits.merged(**overrides), model=model, tenant=tenant,
            metadata=metadata, run_id=run_id,
        )  # fmt: skip
        return await _drive(
            runtime, agent, run_id=run_id, store_url=store_url, model=model,
            show_progress=show_progress, approve_all=approve_all, detach=detach,
        )  # fmt: skip


def _shown(path: Path) -> str:
    """A path as a person in this folder would type it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


_RAISE = {"step": "--max-steps N", "cost": "--max-cost USD", "time": "--max-time SECONDS"}
"""The `resume` option that raises each limit a run can be stopped by."""


def _finish(result: RunResult, *, store_url: str, as_json: bool, extra: dict[str, Any]) -> None:
    red = default_redactor()
    result = dataclasses.replace(
        result,
        answer=red.text(result.answer) if result.answer else result.answer,
        reason=red.text(result.reason) if result.reason else result.reason,
    )
    store_arg = _store_arg(store_url)
    if as_json:
        _print_json(
            {
                "run_id": result.run_id,
                "status": result.status,
                "steps": result.steps,
                "input_tokens": result.input_tokens,
                "output_tokens": result.output_tokens,
                "cost_usd": round(result.cost_usd, 6),
                "answer": result.answer,
                "partial": result.partial,
                "reason": result.reason,
                "pending_approvals": list(result.pending_approvals),
                **extra,
            }
        )
    else:
        colour = {"completed": "green", "stopped": "yellow", "waiting_approval": "cyan"}.get(
            result.status, "red"
        )
        why = f" — {escape(result.reason)}" if result.reason and result.exit_code else ""
        out.print(f"[bold]{result.run_id}[/bold] [{colour}]{result.status}[/{colour}]{why}")
        out.print(
            f"steps {result.steps} · tokens {result.input_tokens + result.output_tokens:,} "
            f"({result.input_tokens:,} in, {result.output_tokens:,} out) · ${result.cost_usd:.4f}"
        )
        for key, value in extra.items():
            out.print(f"{key}: {value}")
        if result.answer:
            out.print()
            out.print(escape(result.answer))
        out.print()
        for request_id in result.pending_approvals:
            out.print(f"approve:  tether approve {request_id}{store_arg}")
            out.print(f"reject:   tether reject {request_id} --reason TEXT{store_arg}")
        out.print(f"inspect:  tether show {result.run_id}{store_arg}")
        if result.status not in ("completed", "stopped", "cancelled", "waiting_approval"):
            out.print(f"continue: tether resume {result.run_id}{store_arg}")
        raise_it = _RAISE.get((result.reason or "").partition(" limit reached")[0])
        if result.status == "stopped" and raise_it:
            out.print(f"continue: tether resume {result.run_id} {raise_it}{store_arg}")
    raise typer.Exit(result.exit_code)


# -- demo ---------------------------------------------------------------------------------


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


# -- run / resume -------------------------------------------------------------------------


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
        out.print("no runs in this store yet — try: tether demo")
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


# -- doctor / fork ------------------------------------------------------------------------


def _report_json(report: RunReport) -> dict[str, Any]:
    return {
        "run_id": report.run_id,
        "ok": report.ok,
        "events": report.events,
        "head_seq": report.head_seq,
        "snapshots": report.snapshots,
        "problems": [p.to_json() for p in report.problems],
    }


@app.command()
def doctor(
    run_id: Annotated[str | None, typer.Argument(help="One run; all runs when omitted.")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
    rebuild_index: Annotated[
        bool,
        typer.Option(
            "--rebuild-index",
            help="First copy the audit index again from the events (SQLite; it holds "
            "nothing else, so this loses nothing).",
        ),
    ] = False,
    rebuild_ledger: Annotated[
        bool,
        typer.Option(
            "--rebuild-ledger",
            help="First count the budget ledger's spend again from the journals (its "
            "settled costs are a running sum of what they record).",
        ),
    ] = False,
) -> None:
    """Verify every run's checksums and hash chain, snapshots, indexes, ledger and pages.

    Checks the run index, the budget ledger, the audit index and the file's pages too.
    Exit 1 on corruption, 3 when the store could not be checked (locked, unreadable, out
    of space), which says nothing about its data.
    """
    index: dict[str, object] = {}
    whole: dict[str, Any] = {}

    async def go() -> list[RunReport]:
        s = _store(store, create=False)
        try:
            check = getattr(s, "check_audit_index", None)
            if rebuild_index:
                rebuild = getattr(s, "rebuild_audit_index", None)
                if rebuild is None:
                    raise UsageError("--rebuild-index: this store keeps no separate audit index")
                index["rebuilt"] = await rebuild()
            ids = [run_id] if run_id else await s.run_ids()
            lost = getattr(s, "lost_synced_commits", None)
            if run_id is None and lost is not None:
                # A run the store lost whole after a synced commit is still reported.
                ids += sorted({r.run_id for r in await lost()} - set(ids))
            reports = [await verify_run(s, r) for r in ids]
            if run_id is None:
                if check is not None:
                    index["problem"] = await check()
                pages = getattr(s, "check_file_integrity", None)
                if pages is not None:
                    whole["file"] = await pages()
                secrets = getattr(s, "check_secrets", None)
                if secrets is not None:
                    whole["secrets"] = await secrets()
                tokens = getattr(s, "check_tokens", None)
                if tokens is not None:
                    whole["tokens"] = await tokens()
                if getattr(s, "read_only", False) and rebuild_ledger:
                    raise UsageError("--rebuild-ledger: the store is open read-only")
                if getattr(s, "read_only", False):
                    whole["ledger_note"] = "not checked: the store is open read-only"
                else:
                    problems, counted = await verify_ledger(s, rebuild=rebuild_ledger)
                    whole["ledger"] = problems
                    whole["ledger_rebuilt"] = counted
                record = getattr(s, "record_doctor", None)
                if record is not None and not getattr(s, "read_only", False):
                    # For the console's health page (it shows the last result); a store
                    # too damaged or full to take it still gets its verdict printed.
                    with contextlib.suppress(StoreError, OSError):
                        await record(_doctor_record(reports, index.get("problem"), whole))
            return reports
        finally:
            await s.close()

    url = _store_url(store)
    try:
        reports = asyncio.run(go())
    except UsageError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except StoreUnavailable as exc:
        if as_json:
            _print_json({"store": url, "ok": None, "runs": [], "cannot_verify": str(exc)})
        else:
            err.print(f"[yellow]CANNOT VERIFY[/yellow] {escape(str(exc))}")
            err.print("        nothing was found damaged: the store could not be read")
        raise typer.Exit(3) from None
    except StoreError as exc:
        if as_json:
            _print_json({"store": url, "ok": False, "runs": [], "store_error": str(exc)})
        else:
            err.print(f"[red]CORRUPT[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    bad = [r for r in reports if not r.ok]
    index_problem = index.get("problem")
    ledger: list[LedgerProblem] = whole.get("ledger") or []
    if whole.get("ledger_rebuilt") is not None:
        # What was found is reported; the rebuild replaced the spend and dropped damaged
        # holds, not the limits.
        ledger = [p for p in ledger if p.where.startswith("limits ")]
    file_problem = whole.get("file")
    secrets_problem = whole.get("secrets")
    tokens_problem = whole.get("tokens")
    damaged = bool(
        bad or index_problem or ledger or file_problem or secrets_problem or tokens_problem
    )
    if as_json:
        doc: dict[str, object] = {
            "store": url,
            "ok": not damaged,
            "runs": [_report_json(r) for r in reports],
        }
        if "problem" in index or "rebuilt" in index:
            doc["audit_index"] = {"ok": not index_problem, **index}
        if "ledger" in whole or "ledger_note" in whole:
            doc["ledger"] = {
                "ok": not ledger,
                "problems": [p.to_json() for p in whole.get("ledger") or []],
                "rebuilt_costs": whole.get("ledger_rebuilt"),
                "note": whole.get("ledger_note"),
            }
        if "file" in whole:
            doc["file"] = {"ok": not file_problem, "problem": file_problem}
        if "secrets" in whole:
            doc["secrets"] = {"ok": not secrets_problem, "problem": secrets_problem}
        if "tokens" in whole:
            doc["console_tokens"] = {"ok": not tokens_problem, "problem": tokens_problem}
        _print_json(doc)
    else:
        if "rebuilt" in index:
            out.print(f"audit index rebuilt: {index['rebuilt']} events copied")
        for p in whole.get("ledger") or []:
            out.print(f"[red]CORRUPT[/red] budget ledger, {escape(p.where)}: {escape(p.what)}")
        if whole.get("ledger_rebuilt") is not None:
            out.print(f"budget ledger rebuilt from the journals: {whole['ledger_rebuilt']} costs")
        if whole.get("ledger_note"):
            out.print(f"budget ledger {whole['ledger_note']}")
        if file_problem:
            out.print(f"[red]CORRUPT[/red] store file pages: {escape(str(file_problem))}")
            out.print("        repair: restore the store from a backup")
        if secrets_problem:
            out.print(f"[red]CORRUPT[/red] recorded secrets: {escape(str(secrets_problem))}")
        if tokens_problem:
            out.print(f"[red]CORRUPT[/red] console tokens: {escape(str(tokens_problem))}")
        for r in reports:
            if r.ok:
                out.print(f"[green]ok[/green]      {r.run_id}  {r.events} events, "
                          f"{r.snapshots} snapshots")  # fmt: skip
            else:
                out.print(f"[red]CORRUPT[/red] {r.run_id}")
                for p in r.problems:
                    where = f"seq {p.seq}" if p.seq is not None else "index"
                    out.print(f"        {where}: {escape(p.what)} [{p.kind}]")
                last_good = _last_good(r)
                if last_good:
                    out.print(f"        repair: tether fork {r.run_id} --at {last_good}")
        if index_problem:
            out.print(f"[red]CORRUPT[/red] audit index: {escape(str(index_problem))}")
            out.print("        repair: tether doctor --rebuild-index")
        total = len(reports)
        out.print(
            f"{total} run{'s' if total != 1 else ''} checked in {url}: "
            + ("all intact" if not damaged else f"{len(bad)} with problems")
            + ("; the audit index is damaged" if index_problem else "")
            + ("; the budget ledger disagrees with the journals" if ledger else "")
            + ("; the file has damaged pages" if file_problem else "")
            + ("; recorded secrets are damaged" if secrets_problem else "")
            + ("; console tokens are damaged" if tokens_problem else "")
        )
    raise typer.Exit(1 if damaged else 0)


def _doctor_record(
    reports: list[RunReport], index_problem: object, whole: dict[str, Any]
) -> dict[str, Any]:
    """A doctor result as the console shows it (the first 20 damaged runs)."""
    damaged = [
        {"run_id": r.run_id, "problems": [p.to_json() for p in r.problems]}
        for r in reports
        if not r.ok
    ]
    ledger = [p.to_json() for p in whole.get("ledger") or []]
    problems = [whole.get(k) for k in ("file", "secrets", "tokens")]
    return {
        "at": time.time(),
        "by": "tether doctor",
        "runs": len(reports),
        "damaged": damaged[:20],
        "audit_index": index_problem,
        "file": whole.get("file"),
        "secrets": whole.get("secrets"),
        "tokens": whole.get("tokens"),
        "ledger": ledger,
        "ok": not (damaged or index_problem or ledger or any(problems)),
    }


def _last_good(report: RunReport) -> int:
    seqs = [p.seq for p in report.problems if p.seq is not None and p.kind != "snapshot"]
    return (min(seqs) - 1) if seqs else report.head_seq


@app.command()
def fork(
    run_id: Annotated[str, typer.Argument(help="The run to copy from.")],
    at: Annotated[int, typer.Option("--at", help="Last seq to keep (a good point).")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a new run from a verified prefix of RUN_ID (the repair path for damage).

    Lists the tool calls recorded after --at: the fork does not know they happened, so
    any that had effects may be made again (the fork presents the same idempotency keys,
    so a deduplicating tool recognises them)."""

    async def go() -> tuple[str, list[DiscardedCall], int]:
        s = _store(store, create=False)
        try:
            new_id = await fork_run(s, run_id, at_seq=at)
            discarded, unreadable = await calls_after(s, run_id, at)
            return new_id, discarded, unreadable
        finally:
            await s.close()

    new_id, discarded, unreadable = _run(go)
    if as_json:
        _print_json(
            {
                "run_id": new_id,
                "forked_from": run_id,
                "at_seq": at,
                "discarded_calls": [c.to_json() for c in discarded],
                "unreadable_events": unreadable,
            }
        )
        return
    out.print(f"forked {run_id} at seq {at} → [bold]{new_id}[/bold]")
    if discarded:
        n = len(discarded)
        out.print(f"{n} tool call(s) after seq {at} are discarded; they may have had effects:")
        for c in discarded:
            safe = {True: "idempotent", False: "NOT idempotent", None: "idempotency unknown"}
            out.print(
                f"  seq {c.seq}  {escape(c.name)}  {c.outcome}  key {escape(c.key or '-')}"
                f"  ({safe[c.idempotent]})"
            )
    if unreadable:
        out.print(
            f"{unreadable} damaged event(s) after seq {at} could not be read: "
            "they may record more calls"
        )
    out.print(f"continue it: tether resume {new_id}")


# -- approvals ----------------------------------------------------------------------------


@app.command()
def approvals(
    store: StoreOpt = None,
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List approval requests waiting for a decision (expired ones get their default)."""

    async def go() -> list[Approval]:
        s = _store(store, create=False)
        try:
            await expire_approvals(s, run_id=run_id)
            return await pending_approvals(s, run_id=run_id)
        finally:
            await s.close()

    pending = _run(go)
    if as_json:
        _print_json([a.to_json() for a in pending])
        return
    if not pending:
        out.print("no approvals waiting")
        return
    for shown in (a.to_json() for a in pending):  # the redacted, operator-level view
        out.print(
            f"[bold]{shown['request_id']}[/bold]  {shown['kind']}  "
            f"requested {shown['requested_at'][:19]}"
        )
        if shown["kind"] == "question":
            out.print(f"  question: {escape(shown['question'] or '')}")
        else:
            out.print(f"  tool {shown['tool']} {escape(json.dumps(shown['arguments']))}")
        if shown["reason"] and shown["kind"] != "question":
            out.print(f"  reason: {escape(shown['reason'][:300])}")
        if shown["expires_at"]:
            out.print(f"  expires {shown['expires_at'][:19]} (then: {shown['on_expiry']})")


def _resolve(
    store: str | None,
    request_id: str,
    *,
    decision: Decision,
    arguments: str | None,
    comment: str | None,
    as_json: bool,
    agent: str | None = None,
) -> None:
    store_url = _store_url(store)

    async def go() -> tuple[Approval, str]:
        s = _store(store_url, create=False)
        try:
            args = json_object(arguments) if arguments is not None else None
            definition = None
            if args is not None:
                # Edits are checked against the tool's schema before anything is journaled.
                definition = await agent_of_run(s, parse_request_id(request_id)[0], agent)
            approval = await resolve_approval(
                s, request_id, decision=decision, arguments=args, agent=definition,
                comment=comment, actor=f"cli:{getpass.getuser()}",
            )  # fmt: skip
            return approval, await next_step(s, approval.run_id, store_arg=_store_arg(store_url))
        finally:
            await s.close()

    approval, hint = _run(go)
    if as_json:
        _print_json(approval.to_json())
        return
    out.print(f"{approval.request_id} {approval.decision}")
    if approval.resolved_arguments is not None:  # as --json shows them: redacted
        shown = approval.to_json()["resolved_arguments"]
        out.print(f"runs with: {escape(json.dumps(shown, ensure_ascii=False))}")
    out.print(hint)


@app.command()
def approve(
    request_id: Annotated[str, typer.Argument(help="The approval id (apr:RUN_ID:SEQ).")],
    store: StoreOpt = None,
    args: Annotated[
        str | None,
        typer.Option("--args", help='Arguments to change, as JSON: \'{"title": "..."}\'.'),
    ] = None,
    comment: Annotated[
        str | None, typer.Option(help="A note for the journal; for a question, the answer.")
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(help="The run's agent (module:attr), to check --args, if it moved."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a waiting call (optionally with edited arguments), or answer a question.

    --args JSON changes only the arguments it names; the rest stay as the agent asked.
    The result is checked against the tool's schema before the approval is journaled."""
    _resolve(
        store, request_id, decision="approved", arguments=args, comment=comment,
        as_json=as_json, agent=agent,
    )  # fmt: skip


@app.command()
def reject(
    request_id: Annotated[str, typer.Argument(help="The approval id (apr:RUN_ID:SEQ).")],
    reason: Annotated[str, typer.Option(help="Why: the agent reads this as the call's result.")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject a waiting call; the agent sees the rejection and carries on."""
    if not reason.strip():
        err.print("[red]error:[/red] --reason is empty: the agent reads it as the call's result")
        raise typer.Exit(2)
    _resolve(
        store, request_id, decision="rejected", arguments=None, comment=reason, as_json=as_json
    )
