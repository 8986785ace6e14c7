"""Agents for the policy tests that kill a real process: built the same way in the child
that is killed and in the test that resumes the run, so both drive the same agent.

Run as `python -m tests.policies._scenarios NAME DB KILL_AT`: drives a new run of agent
NAME in the SQLite store DB and kills its own process (SIGKILL) right after the journal
commit whose last event has type KILL_AT, or, with KILL_AT `tool`, inside the tool whose
scenario says so. Prints the run id first.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from tether import Agent, Limits, Runtime, tool
from tether.journal import SQLiteStore
from tether.loop import Progress
from tether.models import ScriptedModel, Turn, call
from tether.policies import (
    AfterModel,
    AfterTool,
    BeforeAnswer,
    BeforeModel,
    CircuitBreaker,
    Policy,
    Verdict,
)

KILL_ENV = "TETHER_TEST_KILL"


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def killing(point: str) -> bool:
    return os.environ.get(KILL_ENV) == point


class PauseAt(Policy):
    """Pauses at one hook, on a condition that still holds when the hook is asked again
    (so only the loop's memory of the operator's approval keeps it from pausing twice)."""

    name = "pause-test"

    def __init__(self, hook: str) -> None:
        self.hook = hook

    async def before_model(self, call: BeforeModel) -> Verdict:
        if self.hook == "before_model" and call.state.cycle == 1:
            return Verdict.pause("check the first result before the second cycle")
        return Verdict()

    async def after_model(self, answer: AfterModel) -> Verdict:
        if self.hook == "after_model" and "PAUSE" in answer.response.content:
            return Verdict.pause("the model said PAUSE")
        return Verdict()

    async def after_tool(self, result: AfterTool) -> Verdict:
        if self.hook == "after_tool" and "sensitive" in result.outcome.output:
            return Verdict.pause("a result looks sensitive")
        return Verdict()

    async def before_answer(self, draft: BeforeAnswer) -> Verdict:
        if self.hook == "before_answer" and "report" in draft.answer:
            return Verdict.pause("an operator reads every report before it goes out")
        return Verdict()


RUNS: dict[str, int] = {"lookup": 0, "flaky": 0, "other": 0}
"""How often each tool really ran in this process."""


@tool(idempotent=True)
def lookup(q: str = "") -> str:
    """Look something up."""
    RUNS["lookup"] += 1
    if killing("tool"):
        die()
    return f"sensitive data about {q}" if q == "secret" else f"data about {q}"


@tool(idempotent=True)
def flaky() -> str:
    """An upstream that is down."""
    RUNS["flaky"] += 1
    raise RuntimeError("upstream 503")


@tool(idempotent=True)
def other(n: int = 0) -> str:
    """Another source; kills the process on call 45 when asked to."""
    RUNS["other"] += 1
    if n == 45 and killing("tool"):
        die()
    return f"other {n}"


class TellAfterModel(Policy):
    """Tells the agent something when a turn calls a tool (an `after_model` tell)."""

    name = "teller"

    async def after_model(self, answer: AfterModel) -> Verdict:
        if answer.response.tool_calls:
            return Verdict.tell("NOTE: prefer primary sources")
        return Verdict()


def pause_agent(hook: str) -> Agent:
    if hook == "after_model":
        script: list[Turn | str] = [call("lookup", {"q": "a"}, text="PAUSE"), "the answer"]
    elif hook == "final":  # a pause at after_model on a final answer
        script = [call("lookup", {"q": "a"}), "PAUSE: the answer", "revised answer"]
    elif hook == "after_tool":
        script = [call("lookup", {"q": "secret"}), call("lookup", {"q": "b"}), "the answer"]
    elif hook == "before_answer":
        script = [call("lookup", {"q": "a"}), "the report", "the revised text"]
    else:
        script = [call("lookup", {"q": "a"}), call("lookup", {"q": "b"}), "the answer"]
    return Agent(
        name=f"pause-{hook}",
        instructions="test",
        model=ScriptedModel(script),
        tools=[lookup],
        policies=[PauseAt("after_model" if hook == "final" else hook)],
        limits=Limits(max_steps=10),
    )


def breaker_agent() -> Agent:
    # Two failures open the breaker; 50 calls of another tool push its opening far out
    # of any resume window; then the agent tries the broken tool again.
    script: list[Turn | str] = [call("flaky"), call("flaky")]
    script += [call("other", {"n": n}) for n in range(50)]
    script += [call("flaky"), "done"]
    return Agent(
        name="breaker-long",
        instructions="test",
        model=ScriptedModel(script),
        tools=[flaky, other],
        policies=[CircuitBreaker(failures=2, backoff_s=600)],
        limits=Limits(max_steps=100),
    )


def tell_agent() -> Agent:
    return Agent(
        name="tell-after-model",
        instructions="test",
        model=ScriptedModel([call("lookup", {"q": "a"}), "done"]),
        tools=[lookup],
        policies=[TellAfterModel()],
    )


def agent_named(name: str) -> Agent:
    if name.startswith("pause-"):
        return pause_agent(name.removeprefix("pause-"))
    return {"breaker": breaker_agent, "tell": tell_agent}[name]()


async def main(name: str, db: str, kill_at: str) -> None:
    rt = Runtime(SQLiteStore(db), ledger=False)

    def observer(progress: Progress) -> None:
        if progress.event == kill_at:
            die()

    run_id = os.environ.get("TETHER_TEST_RUN")
    agent = agent_named(name)
    if run_id is None:
        run_id = await rt.create(agent, "go")
        print(run_id, flush=True)
    result = await rt.resume(agent, run_id, observer=observer)
    print(result.status, flush=True)


if __name__ == "__main__":
    os.environ.setdefault(KILL_ENV, sys.argv[3] if len(sys.argv) > 3 else "")
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""))


def child(name: str, db: Any, kill_at: str, *, run_id: str | None = None) -> tuple[int, str]:
    """Run the scenario in a child process; its exit code and output."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, KILL_ENV: kill_at}
    if run_id is not None:
        env["TETHER_TEST_RUN"] = run_id
    done = subprocess.run(
        [sys.executable, "-m", "tests.policies._scenarios", name, str(db), kill_at],
        cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr
