"""A run whose tools change an outside world, driven in its own process for the
power-loss and WAL-damage tests: `run DIR SYNC [KILL_AFTER_SEQ]` or `resume DIR SYNC RUN_ID`.

The world is a file in DIR: `pay` appends to it every time it runs (not idempotent), `note`
appends once per idempotency key (idempotent by key, as an effect store would be).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tether import Agent, Limits, Runtime, ToolContext, tool
from tether.chaos import FaultPlan
from tether.errors import TetherError
from tether.journal import SQLiteStore, read_events
from tether.models import ScriptedModel, Turn

TURNS = 10


def world_of(folder: Path) -> Path:
    return folder / "world.jsonl"


def effects(folder: Path) -> list[dict[str, object]]:
    path = world_of(folder)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def agent_for(folder: Path) -> Agent:
    world = world_of(folder)

    def append(entry: dict[str, object]) -> None:
        with world.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    @tool
    def pay(n: int, ctx: ToolContext) -> str:
        """Pay bill n (not idempotent: every call pays)."""
        append({"tool": "pay", "n": n, "key": ctx.idempotency_key})
        return f"paid {n}"

    @tool(idempotent=True)
    def note(n: int, ctx: ToolContext) -> str:
        """Record fact n, once per key."""
        if any(e["key"] == ctx.idempotency_key for e in effects(folder)):
            return f"noted {n} (already)"
        append({"tool": "note", "n": n, "key": ctx.idempotency_key})
        return f"noted {n}"

    script: list[Turn | str] = []
    for i in range(TURNS):
        calls: tuple[tuple[str, dict[str, object] | str], ...] = (("note", {"n": i}),)
        if i % 2:
            calls = (*calls, ("pay", {"n": i}))
        script.append(Turn(calls=calls))
    script.append("done")
    return Agent(
        name="world",
        instructions="Pay the bills and note the facts.",
        tools=[pay, note],
        model=ScriptedModel(script),
        limits=Limits(max_steps=TURNS + 5),
    )


async def main(argv: list[str]) -> None:
    command, folder, sync = argv[0], Path(argv[1]), argv[2]
    store = SQLiteStore(folder / "t.db", synchronous="full" if sync == "full" else "normal")
    agent = agent_for(folder)
    if command == "run":
        runtime = Runtime(store)
        run_id = await runtime.create(agent, "go")
        print(run_id, flush=True)
        if len(argv) > 3:
            runtime.store = FaultPlan(kill_after_seq=int(argv[3])).wrap_store(store)
        result = await runtime.resume(agent, run_id)
        print(result.status, flush=True)
        return
    runtime = Runtime(store)
    try:
        result = await runtime.resume(agent, argv[3])
        unknown = [
            e.payload["name"] for e in await read_events(store, argv[3]) if e.type == "tool.unknown"
        ]
        print(json.dumps({"status": result.status, "reason": result.reason, "unknown": unknown}))
    except TetherError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    finally:
        await runtime.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
