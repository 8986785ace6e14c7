"""A real process for the kill/resume tests of agents written for other frameworks.

`start FRAMEWORK DB` creates a run, prints its id and drives it until the result of
`step_one` is durable in the journal, then SIGKILLs itself (between the two tool calls).
`resume FRAMEWORK DB RUN_ID` drives the run on in a fresh process and prints its result.
`whole FRAMEWORK DB` runs it uninterrupted. FRAMEWORK is `pydantic-ai` or `openai-agents`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from tether import Agent, Runtime
from tether.events import Event
from tether.journal import SQLiteStore

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.integrations.agents_under_test import openai_agent, pydantic_agent


class KillAfterStepOne:
    def __init__(self, inner: SQLiteStore) -> None:
        self.inner = inner
        self.url = inner.url

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def append(self, lease: Any, events: Sequence[Event], **options: Any) -> None:
        await self.inner.append(lease, events, **options)
        if any(e.type == "tool.completed" and e.payload["name"] == "step_one" for e in events):
            os.kill(os.getpid(), signal.SIGKILL)


def tether_agent(framework: str) -> Agent:
    if framework == "pydantic-ai":
        from tether.integrations.pydantic_ai import TetherAgent

        return TetherAgent(pydantic_agent(), name="steps").agent
    from tether.integrations.openai_agents import tether_agent as convert

    return convert(openai_agent())


async def main(mode: str, framework: str, db: str, *rest: str) -> None:
    store = SQLiteStore(db)
    agent = tether_agent(framework)
    runtime = Runtime(KillAfterStepOne(store) if mode == "start" else store)  # type: ignore[arg-type]
    if mode == "resume":
        result = await runtime.resume(agent, rest[0])
    else:
        run_id = await runtime.create(agent, "Do both steps.")
        print(run_id, flush=True)
        result = await runtime.resume(agent, run_id)
    print(json.dumps({"run_id": result.run_id, "status": result.status, "answer": result.answer}))
    await runtime.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
