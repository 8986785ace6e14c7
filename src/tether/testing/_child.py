"""One process of a chaos run: `python -m tether.testing._child CONFIG.json`.

It opens the run's SQLite store, builds the agent, wraps its model, tools and store in the
run's fault plan (which may SIGKILL this process at a journal position; the tools of its
MCP servers are wrapped as their sessions build them), creates the run or
resumes it, approves what waits for a human, and prints the outcome as one JSON line.
Exit 0: the run was driven to a terminal status; 3: Tether refused the run (a clear
error, printed as JSON); anything else is an unhandled exception (a bug).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from ..agent import Agent, Limits
from ..approvals import pending_approvals, resolve_approval
from ..budget import BudgetLimits
from ..chaos import FaultPlan
from ..cli._agents import load_agent
from ..errors import RunNotFound, TetherError
from ..journal import SQLiteStore
from ..loop import Runtime
from ._effects import EffectLog, counted

REFUSED = 3


def _plan(config: dict[str, Any]) -> FaultPlan:
    fd = os.open(config["faults_log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def injected(kind: str) -> None:
        os.write(fd, (kind + "\n").encode())  # one write: it survives the kill that follows

    return dataclasses.replace(FaultPlan.from_mapping(config["faults"]), on_inject=injected)


async def drive(config: dict[str, Any]) -> dict[str, Any]:
    plan = _plan(config)
    log = EffectLog(Path(config["effects_log"]))
    log.install()
    agent: Agent = load_agent(config["agent_spec"], config.get("agent_args") or {})
    sources = plan.wrap_sources(agent.tool_sources, lambda t: counted(t, log))
    agent = dataclasses.replace(
        agent, tools=plan.wrap_tools([counted(t, log) for t in agent.tools]), tool_sources=sources
    )
    store = SQLiteStore(Path(config["store"]))
    daily = config.get("daily_usd")
    budgets = {"global": BudgetLimits(daily=daily)} if daily is not None else None
    runtime = Runtime(store, snapshot_every=config["snapshot_every"], model_retry_backoff_s=0.0,
                      budgets=budgets)  # fmt: skip
    run_id: str = config["run_id"]
    try:
        try:
            await store.get_run(run_id)
        except RunNotFound:
            limits = Limits.from_json({**agent.limits.to_json(), **(config.get("limits") or {})})
            metadata = {"agent_spec": config["agent_spec"],
                        "agent_args": config.get("agent_args") or {}}  # fmt: skip
            await runtime.create(agent, config["task"], limits=limits, run_id=run_id,
                                 metadata=metadata)  # fmt: skip
        runtime.store = plan.wrap_store(store)
        model = plan.wrap_model(runtime.model_of(agent))
        while True:
            result = await runtime.resume(agent, run_id, model=model)
            if result.status != "waiting_approval":
                built = sum(getattr(s, "tools_built", 0) for s in sources)
                return {"run_id": run_id, "status": result.status, "reason": result.reason,
                        "source_tools": built}  # fmt: skip
            for approval in await pending_approvals(store, run_id=run_id):
                await resolve_approval(
                    store, approval.request_id, decision="approved", actor="chaos",
                    comment=None if approval.kind == "approval" else "chaos: no answer",
                )  # fmt: skip
    finally:
        await runtime.close()


def main(argv: list[str]) -> int:
    config = json.loads(Path(argv[0]).read_text())
    try:
        outcome = asyncio.run(drive(config))
    except TetherError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}), flush=True)
        return REFUSED
    except Exception:
        traceback.print_exc()
        return 70
    print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
