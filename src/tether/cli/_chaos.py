"""`tether chaos`: an agent (or the demo) driven many times under a seeded fault plan."""

from __future__ import annotations

import json
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..errors import UsageError
from ._app import JsonOpt, _print_json, app, err, out
from ._numbers import finite

if TYPE_CHECKING:
    from ..testing import ChaosReport, ChaosTarget, RunOutcome

DEMO_SPEC = "tether.demo:demo_agent"


def _target(agent: str | None, demo: bool, task: str | None, agent_args: str | None) -> ChaosTarget:
    from ..testing import ChaosTarget

    if demo == (agent is not None):
        raise UsageError("name an agent (module:attr or file.py:attr) or give --demo, not both")
    args: dict[str, Any] = {}
    if agent_args is not None:
        try:
            args = json.loads(agent_args)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--agent-args is not JSON: {exc.msg}") from None
        if not isinstance(args, dict):
            raise UsageError("--agent-args must be a JSON object")
    if demo:
        from ..demo import demo_plan

        return ChaosTarget(agent_spec=DEMO_SPEC, task=task or demo_plan()["task"],
                           agent_args={"out": "{run_dir}/out", **args})  # fmt: skip
    assert agent is not None
    if task is None:
        raise UsageError("give the task each run gets: --task TEXT")
    from ._agents import load_agent

    load_agent(agent, args)  # a bad spec is one line now, not an error in every child
    return ChaosTarget(agent_spec=agent, task=task, agent_args=args)


def _repro(agent: str | None, seed: int, index: int, plan: Path | None, task: str | None,
           agent_args: str | None) -> str:  # fmt: skip
    words = ["tether", "chaos", agent or "--demo", "--seed", str(seed), "--run", str(index)]
    if plan is not None:
        words += ["--plan", str(plan)]
    if task is not None:
        words += ["--task", task]
    if agent_args is not None:
        words += ["--agent-args", agent_args]
    return shlex.join(words)


@app.command()
def chaos(
    agent: Annotated[
        str | None, typer.Argument(help="The agent: module:attr or path/to/file.py:attr.")
    ] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Run the built-in demo agent.")] = False,
    runs: Annotated[int, typer.Option(help="How many runs.", min=1)] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the fault plan (same seed, same faults).")] = 0,
    run: Annotated[
        int | None, typer.Option("--run", help="Only this run (1-based): reproduce it.", min=1)
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            help="Soak: keep starting runs for this many seconds (overrides --runs).",
            min=0.001,
            callback=finite,
        ),
    ] = None,
    plan: Annotated[
        Path | None, typer.Option("--plan", help="Fault plan file (TOML or JSON; see docs).")
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="The task each run is given (the demo has its own).")
    ] = None,
    agent_args: Annotated[
        str | None,
        typer.Option(
            help='Arguments for an agent factory, as JSON; "{run_dir}" in a string '
            "becomes the run's own folder."
        ),
    ] = None,
    jobs: Annotated[int, typer.Option(help="Runs driven at the same time.", min=1)] = 2,
    keep: Annotated[
        Path | None, typer.Option(help="Keep every run's store and logs in this folder.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Drive an agent many times under seeded faults and check Tether's invariants.

    Faults: tool failures, latency and corrupted results; for the tools of MCP servers also
    error results, timeouts and servers exiting mid-call; model outages, latency and
    malformed answers; SIGKILLs at random journal positions, each followed by a resume in a
    fresh process; byte damage to events and snapshots on copies of the store; tiny
    budgets. Checked after each run: a terminal status with a reason, no effect repeated
    under one idempotency key, every damage detected, spend within every limit, no
    unhandled exception. Exit 1 if any run broke one, with the command that reproduces it.
    """
    from ..testing import ChaosPlan, run_chaos

    try:
        target = _target(agent, demo, task, agent_args)
        chaos_plan = ChaosPlan.load(plan) if plan is not None else ChaosPlan()
    except UsageError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    if keep is not None and keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
        what = "is not empty" if keep.is_dir() else "is not a folder"
        err.print(f"[red]error:[/red] --keep {escape(str(keep))} {what}: give a new folder")
        raise typer.Exit(2)
    workdir = keep or Path(tempfile.mkdtemp(prefix="tether-chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    total = 1 if run is not None else None if duration is not None else runs
    done: list[RunOutcome] = []
    planned = f"{total} runs" if total else f"runs for {duration}s"
    first = Text(f"chaos: a fault-free reference run, then {planned}")
    live = Live(first, console=err, transient=False) if err.is_terminal else None

    def on_run(outcome: RunOutcome) -> None:
        done.append(outcome)
        if live is not None:
            failed = sum(1 for r in done if not r.ok)
            kills = sum(r.kills for r in done)
            of = f"/{total}" if total else ""
            live.update(Text(f"chaos: {len(done)}{of} runs · {kills} kills · {failed} failed"))

    if live is not None:
        live.start()
    try:
        report = run_chaos(target, chaos_plan, workdir=workdir, seed=seed, runs=runs, only=run,
                           duration_s=duration, jobs=jobs, on_run=on_run)  # fmt: skip
    except KeyboardInterrupt:
        err.print(f"interrupted: the stores and logs so far are in {escape(str(workdir))}")
        raise typer.Exit(130) from None
    finally:
        if live is not None:
            live.stop()
    repro = {r.index: _repro(agent, seed, r.index, plan, task, agent_args) for r in report.failed}
    if as_json:
        data = report.to_json()
        data["reproduce"] = {str(k): v for k, v in repro.items()}
        data["workdir"] = str(workdir) if keep or not report.ok else None
        _print_json(data)
    else:
        _print_report(report, repro)
    if report.ok and keep is None:
        shutil.rmtree(workdir, ignore_errors=True)
    elif not as_json:
        out.print(f"stores and logs kept in {escape(str(workdir))}")
    if not report.ok:
        raise typer.Exit(1)


def _print_report(report: ChaosReport, repro: dict[int, str]) -> None:
    table = Table(title=f"tether chaos · seed {report.seed}", title_justify="left")
    for name in ("run", "status", "reason", "procs", "kills", "faults", "damage", "budget", "ok"):
        table.add_column(name, justify="right" if name in ("run", "procs", "kills") else "left")
    for r in report.runs:
        table.add_row(
            str(r.index), r.status, escape(r.reason[:40]), str(r.processes), str(r.kills),
            str(sum(r.faults.values())), r.damage or "", r.budget or "",
            "ok" if r.ok else "[red]FAIL[/red]",
        )  # fmt: skip
    out.print(table)
    counts = report.fault_counts()
    out.print("faults injected: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    missing = [k for k, v in counts.items() if not v and k in report.reported_kinds]
    if missing:
        out.print(f"not injected in these runs: {', '.join(missing)}")
    out.print(f"{len(report.runs)} runs in {report.seconds:.1f}s · "
              f"{len(report.failed)} broke an invariant")  # fmt: skip
    for r in report.failed:
        out.print(f"[red]run {r.index} ({r.run_id}) failed:[/red]")
        for v in r.violations:
            out.print(f"  - {escape(v)}")
        out.print(f"  reproduce: {escape(repro[r.index])}")
