"""The seam as a user sees it: a custom policy at every hook, with each verdict's effect."""

from __future__ import annotations

from typing import Any

from tether import Agent, Runtime, tool
from tether.journal import MemoryStore, read_events
from tether.models import ScriptedModel, call
from tether.policies import (
    AfterModel,
    AfterTool,
    BeforeAnswer,
    BeforeModel,
    BeforeTool,
    Health,
    Policy,
    Verdict,
)


@tool
def echo(text: str) -> str:
    """Echo."""
    return text


class Recorder(Policy):
    """Sees every hook; refuses `echo("secret")`; notes the model's tool turns."""

    name = "recorder"

    def __init__(self) -> None:
        self.hooks: list[str] = []
        self.seen: list[str] = []

    def observe(self, event: Any) -> None:
        self.seen.append(event.type)

    async def before_model(self, call: BeforeModel) -> Verdict:
        self.hooks.append("before_model")
        return Verdict.ok()

    async def after_model(self, answer: AfterModel) -> Verdict:
        self.hooks.append("after_model")
        if answer.response.tool_calls:
            return Verdict.tell("note from after_model")
        return Verdict.ok()

    async def before_tool(self, call: BeforeTool) -> Verdict:
        self.hooks.append("before_tool")
        if call.arguments.get("text") == "secret":
            return Verdict.refuse(
                "echoing secrets is not allowed",
                health=Health(kind="custom_check", message="a secret was refused"),
            )
        return Verdict.ok()

    async def after_tool(self, result: AfterTool) -> Verdict:
        self.hooks.append("after_tool")
        return Verdict.ok()

    async def before_answer(self, draft: BeforeAnswer) -> Verdict:
        self.hooks.append("before_answer")
        return Verdict.ok()


async def test_a_user_policy_sees_every_hook_and_its_verdicts_take_effect() -> None:
    policy = Recorder()
    script = [call("echo", {"text": "hi"}), call("echo", {"text": "secret"}), "done"]
    a = Agent(name="t", instructions="t", model=ScriptedModel(script), tools=[echo],
              policies=[policy])  # fmt: skip
    rt = Runtime(MemoryStore())
    result = await rt.start(a, "go")
    assert result.status == "completed"
    # The agent's policy object is copied per run: the original saw nothing.
    assert policy.hooks == [] and policy.seen == []
    events = await read_events(rt.store, result.run_id)
    results = [e.payload for e in events if e.type in ("tool.completed", "tool.failed")]
    assert results[0]["output"] == "hi"
    status = results[0]["status"].splitlines()
    assert status[0].startswith("[step 1") and status[1] == "note from after_model"
    assert results[1]["error"] == "refused" and "not allowed" in results[1]["output"]
    # An unregistered health kind is journaled as health.policy, naming its kind.
    (custom,) = [e.payload for e in events if e.type == "health.policy"]
    assert custom["kind"] == "custom_check" and custom["policy"] == "recorder"
    assert custom["action"] == "refuse"


async def test_hooks_run_in_loop_order() -> None:
    seen: list[Recorder] = []

    class Keep(Recorder):
        def for_run(self) -> Policy:
            seen.append(self)
            return self

    script = [call("echo", {"text": "hi"}), "done"]
    a = Agent(name="t", instructions="t", model=ScriptedModel(script), tools=[echo],
              policies=[Keep()])  # fmt: skip
    await Runtime(MemoryStore()).start(a, "go")
    assert seen[0].hooks == [
        "before_model", "after_model", "before_tool", "after_tool",
        "before_model", "after_model", "before_answer",
    ]  # fmt: skip


def test_bad_policies_and_verdicts_are_refused_with_a_clear_error() -> None:
    import pytest

    from tether.errors import UsageError

    with pytest.raises(UsageError, match="policies must be a list"):
        Agent(name="t", instructions="t", policies=[object()])  # type: ignore[list-item]
    with pytest.raises(UsageError, match="unknown verdict action"):
        Verdict(action="explode")  # type: ignore[arg-type]


async def test_a_tell_before_a_tool_call_reaches_that_calls_result() -> None:
    class Warn(Policy):
        name = "warn"

        async def before_tool(self, call: BeforeTool) -> Verdict:
            if call.arguments.get("text") == "b":
                return Verdict.tell("b is rate limited: go easy")
            return Verdict.ok()

    script = [call("echo", {"text": "a"}), call("echo", {"text": "b"}), "done"]
    a = Agent(name="t", instructions="t", model=ScriptedModel(script), tools=[echo],
              policies=[Warn()])  # fmt: skip
    rt = Runtime(MemoryStore())
    result = await rt.start(a, "go")
    assert result.status == "completed"
    events = await read_events(rt.store, result.run_id)
    first, second = [e.payload for e in events if e.type == "tool.completed"]
    assert "rate limited" not in first["status"]
    assert second["status"].splitlines()[1] == "b is rate limited: go easy"
    assert second["output"] == "b"  # a tell does not stop the call
