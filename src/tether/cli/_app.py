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
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..agent import Agent
from ..approvals import (
    Approval,
    Decision,
    expire_approvals,
    pending_approvals,
    resolve_approval,
)
from ..chaos import FaultPlan
from ..errors import StoreError, TetherError, UsageError
from ..journal import (
    Store,
    fork_run,
    open_store,
    read_events,
    store_url_from_env,
    verify_run,
)
from ..journal._journal import RunReport
from ..loop import RunResult, Runtime
from ..models import Model
from ..models._resolve import model_from_spec
from ..state import RUN_STATUSES, RunState
from ._agents import load_agent
from ._progress import live_progress

T = TypeVar("T")

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
MaxCostOpt = Annotated[float | None, typer.Option(help="Cost limit in USD.")]
MaxTimeOpt = Annotated[float | None, typer.Option(help="Active time limit in seconds.")]
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
        err.print("interrupted: the run is safe in its journal; continue it with tether resume")
        raise typer.Exit(130) from None


def _store(url: str | None) -> Store:
    return open_store(store_url_from_env(url))


@contextlib.asynccontextmanager
async def _runtime(store_url: str) -> AsyncIterator[Runtime]:
    """A Runtime on the store, closed on the way out; its appends become OpenTelemetry
    spans when TETHER_OTEL asks (every span exported before the process exits)."""
    from ..telemetry import instrument, observer_from_env

    observer = observer_from_env()
    runtime = Runtime(store_url)
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


def _print_json(value: Any) -> None:
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
        agent = dataclasses.replace(agent, tools=plan.wrap_tools(agent.tools))
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
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
                decided = await _ask_inline(runtime.store, approval) or decided
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
) -> RunResult:
    """Create a run (recording how to rebuild its agent for `resume`) and drive it."""
    async with _runtime(store_url) as runtime:
        run_id = await runtime.create(
            agent, task, limits=agent.limits.merged(**overrides), model=model, tenant=tenant,
            metadata=metadata,
        )  # fmt: skip
        return await _drive(
            runtime, agent, run_id=run_id, model=model, show_progress=show_progress,
            approve_all=approve_all, detach=detach,
        )  # fmt: skip


async def _ask_inline(store: Store, approval: Approval) -> bool:
    """Offer approve / reject / edit on the terminal; False if the user leaves it pending."""
    err.print()
    err.print(f"[bold cyan]approval needed[/bold cyan] {approval.request_id}")
    if approval.kind == "question":
        err.print(f"question from {approval.tool}: {escape(approval.question or '')}")
        answer = typer.prompt("answer (empty to leave it waiting)", default="", err=True)
        if not answer:
            return False
        await resolve_approval(
            store, approval.request_id, decision="approved", comment=answer, actor="cli"
        )
        return True
    err.print(f"tool {approval.tool} {json.dumps(approval.arguments)}")
    if approval.reason:
        err.print(f"agent's reason: {escape(approval.reason)}")
    choice = typer.prompt("[a]pprove, [r]eject, [e]dit arguments, [w]ait", default="a", err=True)
    choice = choice.strip().lower()[:1]
    if choice == "a":
        await resolve_approval(store, approval.request_id, decision="approved", actor="cli")
    elif choice == "r":
        reason = typer.prompt("reason", default="rejected at the terminal", err=True)
        await resolve_approval(
            store, approval.request_id, decision="rejected", comment=reason, actor="cli"
        )
    elif choice == "e":
        text = typer.prompt("arguments as JSON", default=json.dumps(approval.arguments), err=True)
        await resolve_approval(
            store, approval.request_id, decision="approved", arguments=_json_object(text),
            actor="cli",
        )  # fmt: skip
    else:
        return False
    return True


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--args is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise UsageError("--args must be a JSON object")
    return value


def _finish(result: RunResult, *, store_url: str, as_json: bool, extra: dict[str, Any]) -> None:
    store_arg = "" if store_url == store_url_from_env(None) else f" --store {store_url}"
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
    raise typer.Exit(result.exit_code)


# -- demo ---------------------------------------------------------------------------------


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
) -> None:
    """Run the research-synthesis demo: search, read, note, draft and publish a cited report."""
    from ..demo import demo_agent, demo_plan

    store_url = store_url_from_env(store)
    if submit:
        from ._workers import submit_demo

        limits = _limits_overrides(max_steps, max_cost, max_time)
        submit_demo(store_url=store_url, out_dir=out_dir, model=model, limits=limits,
                    tenant=tenant, yes=yes, as_json=as_json)  # fmt: skip
        return

    async def go() -> RunResult:
        chosen = model_from_spec(model)
        folder = out_dir.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return await _start(
            store_url, demo_agent(folder), demo_plan()["task"], model=chosen,
            overrides=_limits_overrides(max_steps, max_cost, max_time), tenant=tenant,
            metadata={"agent_spec": "tether.demo:demo_agent",
                      "agent_args": {"out": str(folder)}, "model_spec": model},
            show_progress=not quiet and not as_json, approve_all=yes, detach=detach,
        )  # fmt: skip

    result = _run(go)
    report = out_dir / "report.md"
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
    store_url = store_url_from_env(store)

    async def go() -> RunResult:
        return await _start(
            store_url, load_agent(agent), task, model=model_from_spec(model) if model else None,
            overrides=_limits_overrides(max_steps, max_cost, max_time), tenant=tenant,
            metadata={"agent_spec": agent, "agent_args": {}, "model_spec": model},
            show_progress=not quiet and not as_json, approve_all=yes, detach=detach,
        )  # fmt: skip

    _finish(_run(go), store_url=store_url, as_json=as_json, extra={})


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
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    yes: YesOpt = False,
    detach: DetachOpt = False,
) -> None:
    """Continue a run from its journal, in this process (after a crash, a pause or a limit)."""
    store_url = store_url_from_env(store)

    async def go() -> RunResult:
        async with _runtime(store_url) as runtime:
            await runtime.store.get_run(run_id)  # RunNotFound before anything else
            first = (await read_events(runtime.store, run_id, until_seq=1))[0]
            meta = first.payload.get("metadata", {})
            spec = agent or meta.get("agent_spec")
            if not spec:
                raise UsageError(
                    f"run {run_id} does not record where its agent lives: pass --agent module:attr"
                )
            definition = load_agent(spec, meta.get("agent_args") or {})
            model_spec = model or meta.get("model_spec")
            chosen = model_from_spec(model_spec) if model_spec else None
            show = not quiet and not as_json
            return await _drive(
                runtime, definition, run_id=run_id, model=chosen, show_progress=show,
                approve_all=yes, detach=detach,
            )  # fmt: skip

    _finish(_run(go), store_url=store_url, as_json=as_json, extra={})


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
        s = _store(store)
        try:
            records = await s.list_runs(status=status, limit=limit)
        finally:
            await s.close()
        return [
            {
                "run_id": r.run_id,
                "agent": r.agent,
                "status": r.summary.status,
                "steps": r.summary.steps,
                "tokens": r.summary.input_tokens + r.summary.output_tokens,
                "cost_usd": round(r.summary.cost_usd, 6),
                "created_at": r.created_at,
                "updated_at": r.summary.updated_at,
            }
            for r in records
        ]

    rows = _run(go)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("no runs in this store yet — try: tether demo")
        return
    table = Table(box=None)
    for column in ("run", "agent", "status", "steps", "tokens", "cost", "updated"):
        table.add_column(column, no_wrap=True)
    for r in rows:
        table.add_row(
            r["run_id"], r["agent"], r["status"], str(r["steps"]), f"{r['tokens']:,}",
            f"${r['cost_usd']:.4f}", r["updated_at"][:19].replace("T", " "),
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
) -> None:
    """Verify checksums, hash chains, snapshots, the run index and the audit index.
    Exit 1 on corruption."""
    index: dict[str, object] = {}

    async def go() -> list[RunReport]:
        s = _store(store)
        try:
            check = getattr(s, "check_audit_index", None)
            if rebuild_index:
                rebuild = getattr(s, "rebuild_audit_index", None)
                if rebuild is None:
                    raise UsageError("--rebuild-index: this store keeps no separate audit index")
                index["rebuilt"] = await rebuild()
            ids = [run_id] if run_id else await s.run_ids()
            reports = [await verify_run(s, r) for r in ids]
            if check is not None and run_id is None:
                index["problem"] = await check()
            return reports
        finally:
            await s.close()

    url = store_url_from_env(store)
    try:
        if url.startswith("sqlite:///") and not Path(url[10:].split("?")[0]).exists():
            raise UsageError(f"no store at {url} (nothing to verify); run tether demo to make one")
        reports = asyncio.run(go())
    except UsageError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except StoreError as exc:
        if as_json:
            _print_json({"store": url, "ok": False, "runs": [], "store_error": str(exc)})
        else:
            err.print(f"[red]CORRUPT[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    bad = [r for r in reports if not r.ok]
    index_problem = index.get("problem")
    if as_json:
        doc: dict[str, object] = {
            "store": url,
            "ok": not bad and not index_problem,
            "runs": [_report_json(r) for r in reports],
        }
        if "problem" in index or "rebuilt" in index:
            doc["audit_index"] = {"ok": not index_problem, **index}
        _print_json(doc)
    else:
        if "rebuilt" in index:
            out.print(f"audit index rebuilt: {index['rebuilt']} events copied")
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
            + ("all intact" if not bad else f"{len(bad)} with problems")
            + ("; the audit index is damaged" if index_problem else "")
        )
    raise typer.Exit(1 if bad or index_problem else 0)


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
    """Start a new run from a verified prefix of RUN_ID (the repair path for damage)."""

    async def go() -> str:
        s = _store(store)
        try:
            return await fork_run(s, run_id, at_seq=at)
        finally:
            await s.close()

    new_id = _run(go)
    if as_json:
        _print_json({"run_id": new_id, "forked_from": run_id, "at_seq": at})
    else:
        out.print(f"forked {run_id} at seq {at} → [bold]{new_id}[/bold]")
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
        s = _store(store)
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
) -> None:
    async def go() -> Approval:
        s = _store(store)
        try:
            args = _json_object(arguments) if arguments is not None else None
            return await resolve_approval(
                s, request_id, decision=decision, arguments=args, comment=comment,
                actor=f"cli:{getpass.getuser()}",
            )  # fmt: skip
        finally:
            await s.close()

    approval = _run(go)
    if as_json:
        _print_json(approval.to_json())
        return
    out.print(f"{approval.request_id} {approval.decision}")
    out.print(f"continue the run: tether resume {approval.run_id}")


@app.command()
def approve(
    request_id: Annotated[str, typer.Argument(help="The approval id (apr:RUN_ID:SEQ).")],
    store: StoreOpt = None,
    args: Annotated[
        str | None, typer.Option("--args", help="Edited arguments for the call, as JSON.")
    ] = None,
    comment: Annotated[
        str | None, typer.Option(help="A note for the journal; for a question, the answer.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a waiting call (optionally with edited arguments), or answer a question."""
    _resolve(
        store, request_id, decision="approved", arguments=args, comment=comment, as_json=as_json
    )


@app.command()
def reject(
    request_id: Annotated[str, typer.Argument(help="The approval id (apr:RUN_ID:SEQ).")],
    reason: Annotated[str, typer.Option(help="Why: the agent reads this as the call's result.")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject a waiting call; the agent sees the rejection and carries on."""
    _resolve(
        store, request_id, decision="rejected", arguments=None, comment=reason, as_json=as_json
    )
