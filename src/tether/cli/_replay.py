"""`tether replay FILE`: re-drive an agent on what an exported journal recorded."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..errors import TetherError, UsageError
from ._app import JsonOpt, _print_json, app, err, out


def _agent_for(path: Path, spec: str | None) -> Any:
    from ..testing._replay import load_journal
    from ._agents import load_agent

    created = load_journal(path)[0]
    meta = created.payload.get("metadata") or {}
    meta = meta if isinstance(meta, dict) else {}
    args = meta.get("agent_args") or {}
    if spec:
        return load_agent(spec, _accepted(spec, args) if isinstance(args, dict) else {})
    recorded = meta.get("agent_spec")
    if not recorded:
        raise UsageError(f"{path} does not record where its agent lives: pass --agent module:attr")
    return _recorded_agent(str(recorded), args)


def _accepted(spec: str, args: dict[str, Any]) -> dict[str, Any]:
    """The recorded arguments the chosen agent's factory takes (it may be another one)."""
    import inspect

    from .._agent_sources import import_target

    value = import_target(spec)
    try:
        params = inspect.signature(value).parameters.values()
    except (TypeError, ValueError):
        return args
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return args
    return {k: v for k, v in args.items() if k in {p.name for p in params}}


def _recorded_agent(spec: str, args: Any) -> Any:
    """The agent a journal names, loaded only if it is one: a file can be written by
    anyone, so its spec must name an Agent, or a factory declared to return one, in an
    installed module or a file under the current folder; never any other callable (with
    the file's arguments)."""
    import typing

    from .._agent_sources import import_target
    from ..agent import Agent
    from ._agents import load_agent

    trust = "; pass --agent module:attr to choose the agent yourself"
    target = spec.rpartition(":")[0]
    if target.endswith(".py") and not Path(target).resolve().is_relative_to(Path.cwd()):
        raise UsageError(
            f"the journal names its agent in a file outside this folder ({spec}){trust}"
        )
    value = import_target(spec)
    if isinstance(value, Agent):
        return value
    try:
        returns = typing.get_type_hints(value).get("return") if callable(value) else None
    except Exception:
        returns = None
    if not (isinstance(returns, type) and issubclass(returns, Agent)):
        raise UsageError(
            f"the journal names {spec}, which is neither an Agent nor a function declared "
            f"to return one{trust}"
        )
    if not isinstance(args, dict):
        raise UsageError(f"the journal's agent arguments are not an object{trust}")
    return load_agent(spec, args)


@app.command()
def replay(
    file: Annotated[
        Path, typer.Argument(help="A journal exported with `tether export RUN --view audit`.")
    ],
    agent: Annotated[
        str | None,
        typer.Option(help="The agent to replay (module:attr); default: the one the run recorded."),
    ] = None,
    script: Annotated[
        bool | None,
        typer.Option(
            "--script/--recorded",
            help="Whether the agent's own ScriptedModel answers (so a change to its script "
            "shows; recorded model failures are still replayed) or the recorded answers "
            "are fed back. Default: --script when the agent's model is a script.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-drive the agent on the model answers and tool results a journal recorded.

    Nothing is called: the recorded answers and results are fed back in a fresh memory
    store, recorded crashes and approval decisions are replayed where they happened, and
    the new journal is compared event by event with the recording (type, tool name,
    arguments, idempotency key, decision, reason, error; a model answer's text and
    calls). An agent whose model is a script (the demo's plan) answers from its script,
    so a change to the script shows too. Exit 0 when the run reproduces, 1 at the first
    divergence (printed), 2 when the file cannot be replayed.
    """
    from ..models import ScriptedModel
    from ..testing import replay as replay_run

    try:
        target = _agent_for(file, agent)
        scripted = isinstance(getattr(target, "model", None), ScriptedModel)
        if script is None:
            script = scripted
        report = asyncio.run(replay_run(target, file, script=script))
    except UsageError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except TetherError as exc:
        err.print(f"[red]error:[/red] replaying {escape(str(file))}: {escape(str(exc))}")
        raise typer.Exit(1) from None
    if as_json:
        _print_json(report.to_json(), role="audit")
    elif report.ok:
        out.print(
            f"{report.run_id} replays: {report.replayed_events} events, "
            f"{report.replayed_status}, as recorded"
        )
        if scripted:
            out.print(
                "  the agent's model is a script: its answers were checked against the recording"
                if script
                else "  the answers came from the recording; --script checks the script too"
            )
    else:
        d = report.divergence
        assert d is not None
        where = f"event {d.recorded_seq}" if d.recorded_seq else "the recording's end"
        kind = (d.recorded or d.now or {}).get("type", "?")
        out.print(f"[red]{report.run_id} diverges at {where} ({kind})[/red]")
        out.print(f"  recorded: {escape(json.dumps(d.recorded, ensure_ascii=False))}")
        out.print(f"  now:      {escape(json.dumps(d.now, ensure_ascii=False))}")
        out.print(
            f"  recorded run: {report.recorded_events} events, {report.recorded_status}; "
            f"replay: {report.replayed_events} events, {report.replayed_status}"
        )
        if script and kind == "model.completed":
            out.print(
                "  the agent's script answered differently from the recording (a changed "
                "script, or answers injected by chaos); --recorded feeds the recorded answers"
            )
    if not report.ok:
        raise typer.Exit(1)
