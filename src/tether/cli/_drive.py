"""Driving a run in this process for `run`, `resume` and `demo`: inline approval decisions
while it waits, and the outcome printed with the command that continues it.

Exit codes for run, resume and demo: 0 completed, 1 failed, 2 usage error, 3 stopped by
a limit or budget (partial answer saved), 4 waiting for a human.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import typer
from rich.markup import escape

from .._redact import default_redactor
from ..agent import Agent
from ..approvals import pending_approvals, resolve_approval
from ..chaos import FaultPlan
from ..loop import RunResult, Runtime
from ..models import Model
from ._app import _driving, _print_json, _runtime, _store_arg, err, out
from ._progress import live_progress
from ._prompt import LeftWaiting, ask_inline


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
