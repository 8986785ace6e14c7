"""`tether worker` serves a store's work queue; `tether submit` (and `tether demo --submit`)
feed it. Thin calls into `tether.worker`, with one-line errors."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .._agent_sources import BUILTIN_AGENTS
from ..chaos import FaultPlan
from ..errors import UsageError
from ..journal import new_run_id, open_store
from ..journal._base import DEFAULT_QUEUE
from ..models._resolve import model_from_spec
from ..worker import (
    AgentRegistry,
    AgentSource,
    Worker,
    WorkerStats,
    submit_run,
)
from ._app import (
    OTEL_HELP,
    JsonOpt,
    StoreOpt,
    _limits_overrides,
    _print_json,
    _run,
    _store_arg,
    _store_url,
    app,
    err,
    out,
)
from ._numbers import finite

QueueOpt = Annotated[str, typer.Option("--queue", help="The work queue.")]


def _configure_logging(level_name: str) -> None:
    level = logging.getLevelName(level_name.upper())
    if not isinstance(level, int):
        raise UsageError(f"unknown --log-level {level_name!r}: use debug, info, warning or error")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("tether")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


@app.command(epilog=OTEL_HELP)
def worker(
    store: StoreOpt = None,
    concurrency: Annotated[int, typer.Option(help="Runs this process drives at once.")] = 8,
    agent: Annotated[
        list[str] | None,
        typer.Option(
            "--agent",
            help="Serve this agent too (module:attr or path/to/file.py:attr; an Agent or a "
            "function returning one); repeatable. Built-in agents and installed ones "
            "(entry point group tether.agents) are always served.",
        ),
    ] = None,
    queue: QueueOpt = DEFAULT_QUEUE,
    lease_ttl: Annotated[
        float,
        typer.Option(
            "--lease-ttl",
            help="Seconds a lease lasts unrenewed: a dead worker's runs are taken over then.",
            callback=finite,
        ),
    ] = 30.0,
    grace: Annotated[
        float,
        typer.Option(
            help="On SIGTERM, seconds to let runs reach a step boundary.",
            callback=finite,
            min=0,
        ),
    ] = 30.0,
    local_takeover: Annotated[
        bool,
        typer.Option(
            "--local-takeover/--no-local-takeover",
            help="Take over at once the runs of dead worker processes on this host.",
        ),
    ] = True,
    until_idle: Annotated[
        bool,
        typer.Option("--until-idle", help="Exit once nothing in the queue is runnable or leased."),
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="On exit, print what this worker did as JSON: runs claimed, finished, "
            "paused, handed back, lost, refused, errors, and what serving cost the "
            "process (start-up and exit not in it): cpu_s (CPU seconds), user_s and sys_s "
            "(its user and kernel parts), voluntary_switches and involuntary_switches "
            "(context switches: waits, preemptions).",
        ),
    ] = False,
) -> None:
    """Serve a store: claim runnable runs and drive them under renewed leases.

    SIGTERM or Ctrl-C stops it: no new claims, every run being driven is handed back at
    its next step boundary (or cancelled after --grace seconds), every lease is released,
    and the worker exits 0. A second signal skips the grace period. With TETHER_OTEL set,
    the spans of every run it drove are exported before it exits.
    """
    # Until the loop's handlers are in place nothing is claimed: SIGTERM simply exits 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    store_url = _store_url(store)

    async def go() -> WorkerStats:
        from ..telemetry import instrument, observer_from_env

        _configure_logging(log_level)
        observer = observer_from_env()
        registry = AgentRegistry.discover(agent or [])
        backend = open_store(store_url)
        serving = Worker(
            backend if observer is None else instrument(backend, observer),
            agents=registry,
            concurrency=concurrency,
            queue=queue,
            lease_ttl_s=lease_ttl,
            grace_s=grace,
            local_takeover=local_takeover,
            faults=FaultPlan.from_env(),
        )
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, serving.request_stop)
        try:
            return await serving.serve(until_idle=until_idle)
        finally:
            try:
                if observer is not None:
                    # Every lease is released by now (each run's spans ended and flushed
                    # then); export what is left while a signal still only asks to stop.
                    await asyncio.to_thread(observer.close)
            finally:
                for sig in signals:
                    loop.remove_signal_handler(sig)
                await backend.close()

    stats = _run(go)
    if as_json:
        _print_json(dataclasses.asdict(stats))
    if stats.errors:
        # A supervisor (or a script running --until-idle) must learn that runs need a look.
        err.print(
            f"[red]error:[/red] {stats.errors} run(s) stopped on an unexpected error; "
            "each says why in `tether show RUN` (health.warning) and `tether resume RUN` "
            "continues it"
        )
        raise typer.Exit(1)


def _parse_args(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; a VALUE that parses as JSON is taken as JSON, else as text."""
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"bad --arg {pair!r}: write KEY=VALUE")
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    return args


def _print_submitted(
    run_id: str, source: AgentSource, *, store_url: str, queue: str, yes: bool, as_json: bool
) -> None:
    if as_json:
        _print_json(
            {
                "run_id": run_id,
                "agent": source.name,
                "agent_version": source.version,
                "queue": queue,
                "auto_approve": yes,
                "store": store_url,
            }
        )
        return
    out.print(run_id)
    store_arg = _store_arg(store_url)
    queue_arg = "" if queue == DEFAULT_QUEUE else f" --queue {shlex.quote(queue)}"
    # A worker only claims runs of agents it has: name the module unless every worker
    # has it (built in, or installed under the tether.agents entry point group).
    served = source.spec in BUILTIN_AGENTS or source.spec.startswith("entry point ")
    agent_arg = "" if served else f" --agent {shlex.quote(source.spec)}"
    err.print(
        f"queued {source.name}@{source.version} on {queue!r}; "
        f"serve it with: tether worker{store_arg}{queue_arg}{agent_arg}"
    )


@app.command()
def submit(
    agent: Annotated[
        str,
        typer.Argument(
            help="An agent a worker serves, by name (e.g. research-demo), or module:attr / "
            "path/to/file.py:attr (start workers with --agent for it)."
        ),
    ],
    task: Annotated[str, typer.Option("--task", help="What the agent should do.")],
    store: StoreOpt = None,
    arg: Annotated[
        list[str] | None,
        typer.Option(
            "--arg", help="KEY=VALUE for the agent's factory (VALUE may be JSON); repeatable."
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="openai:MODEL or anthropic:MODEL instead of the agent's.")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(help="Step (model turn) limit.")] = None,
    max_cost: Annotated[
        float | None, typer.Option(help="Cost limit in USD.", callback=finite)
    ] = None,
    max_time: Annotated[
        float | None, typer.Option(help="Active time limit in seconds.", callback=finite)
    ] = None,
    tenant: Annotated[
        str | None, typer.Option(help="Tenant the run's spend counts against (budget scope).")
    ] = None,
    yes: Annotated[
        bool,
        typer.Option("--yes", help="The worker approves this run's approval requests itself."),
    ] = False,
    queue: QueueOpt = DEFAULT_QUEUE,
    as_json: JsonOpt = False,
) -> None:
    """Queue a run of AGENT for `tether worker` and print its id."""
    store_url = _store_url(store)

    async def go() -> tuple[str, AgentSource]:
        args = _parse_args(arg or [])
        if ":" in agent:
            source = AgentSource.load(agent)
        else:
            registry = AgentRegistry.discover()
            found = registry.find(agent)
            if found is None:
                raise UsageError(
                    f"no agent named {agent!r} here (known: {registry.describe()}); "
                    "give module:attr or path/to/file.py:attr"
                )
            source = found
        definition = source.build(args)
        backend = open_store(store_url)
        try:
            run_id = await submit_run(
                backend,
                definition,
                task,
                agent_spec=source.spec,
                agent_args=args,
                model=model_from_spec(model) if model else None,
                model_spec=model,
                limits=definition.limits.merged(**_limits_overrides(max_steps, max_cost, max_time)),
                auto_approve=yes,
                queue=queue,
                tenant=tenant,
            )
        finally:
            await backend.close()
        return run_id, source

    run_id, source = _run(go)
    _print_submitted(run_id, source, store_url=store_url, queue=queue, yes=yes, as_json=as_json)


def submit_demo(
    *,
    store_url: str,
    out_dir: Path,
    model: str,
    limits: dict[str, Any],
    tenant: str | None,
    yes: bool,
    as_json: bool,
    queue: str = DEFAULT_QUEUE,
) -> None:
    """`tether demo --submit`: queue a demo run whose workspace is OUT/RUN_ID."""
    from ..demo import demo_agent, demo_plan

    base = out_dir.resolve()

    async def go() -> tuple[str, AgentSource]:
        run_id = new_run_id()
        folder = base / run_id
        agent = demo_agent(folder)
        source = AgentSource(
            name=agent.name, version=agent.version, spec="tether.demo:demo_agent",
            target=demo_agent,
        )  # fmt: skip
        backend = open_store(store_url)
        try:
            await submit_run(
                backend,
                agent,
                demo_plan()["task"],
                agent_spec=source.spec,
                agent_args={"out": str(folder)},
                model=model_from_spec(model),
                model_spec=model,
                limits=agent.limits.merged(**limits),
                auto_approve=yes,
                queue=queue,
                tenant=tenant,
                run_id=run_id,
            )
        finally:
            await backend.close()
        return run_id, source

    run_id, source = _run(go)
    _print_submitted(run_id, source, store_url=store_url, queue=queue, yes=yes, as_json=as_json)
