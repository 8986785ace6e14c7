"""Fault plans: the TETHER_CHAOS keys, plan files, per-run draws, and each injected fault
reaching the loop's boundaries without breaking a run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tether import Agent, Limits, ToolContext, tool
from tether.chaos import corrupted, malformed
from tether.errors import UsageError
from tether.journal import MemoryStore, read_events
from tether.models import ModelResponse, ModelUsage, ScriptedModel, ToolCall, Turn
from tether.testing import ChaosPlan, FaultPlan, run_to_end
from tether.testing._effects import EffectLog, counted, read_effects


def test_new_keys_parse_and_impossible_values_are_refused() -> None:
    plan = FaultPlan.parse("tool_latency=0.01;tool_corrupt_rate=0.5;model_malformed_rate=1;seed=4")
    assert (plan.tool_latency, plan.tool_corrupt_rate, plan.model_malformed_rate) == (0.01, 0.5, 1)
    for text in ("tool_corrupt_rate=2", "tool_latency=inf", "model_malformed_rate=-1"):
        with pytest.raises(UsageError):
            FaultPlan.parse(text)
    assert FaultPlan.from_mapping(plan.to_json()) == plan
    with pytest.raises(UsageError, match="unknown fault plan key"):
        FaultPlan.from_mapping({"kill_rate": 1})
    with pytest.raises(UsageError, match="must be a number"):
        FaultPlan.from_mapping({"tool_fail_rate": "often"})


def test_chaos_plans_load_from_toml_and_json_and_refuse_bad_keys(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text('max_kills = 2\ndamage = ["event"]\ntool_fail_rate = 0.5\n')
    (tmp_path / "p.json").write_text(json.dumps({"max_kills": 2, "damage": ["event"],
                                                 "tool_fail_rate": 0.5}))  # fmt: skip
    assert ChaosPlan.load(tmp_path / "p.toml") == ChaosPlan.load(tmp_path / "p.json")
    bad = {"max_kills": 1.5, "damage": ["fire"], "kill_share": 2, "tool_latency": "x"}
    for key, value in bad.items():
        (tmp_path / "bad.json").write_text(json.dumps({key: value}))
        with pytest.raises(UsageError):
            ChaosPlan.load(tmp_path / "bad.json")
    (tmp_path / "broken.toml").write_text("max_kills = = 2")
    with pytest.raises(UsageError, match="does not parse"):
        ChaosPlan.load(tmp_path / "broken.toml")


def test_a_run_plan_depends_only_on_the_seed_and_the_index() -> None:
    plan = ChaosPlan()
    assert plan.draw(1, 7) == plan.draw(1, 7)
    assert plan.draw(1, 7).kill_rng_seed == plan.draw(1, 7).kill_rng_seed
    assert len({plan.draw(1, i).kill_rng_seed for i in range(1, 30)}) == 29
    draws = [plan.draw(1, i) for i in range(1, 200)]
    assert {d.damage for d in draws} >= {"event", "snapshot", "missing_event"}
    assert any(d.limits for d in draws) and any(d.kills == 0 for d in draws)


def test_malformed_answers_and_corrupted_results_have_the_promised_shape() -> None:
    usage = ModelUsage(input_tokens=1, output_tokens=1)
    call = ToolCall(id="c", name="pay", arguments='{"n": 12345}')
    cut = malformed(ModelResponse(content="", tool_calls=(call,), finish_reason="tool_calls",
                                  usage=usage, model="m"))  # fmt: skip
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.tool_calls[0].arguments)
    final = malformed(ModelResponse(content="done", tool_calls=(), finish_reason="stop",
                                    usage=usage, model="m"))  # fmt: skip
    assert final.tool_calls[0].name == "chaos_no_such_tool"
    import random

    text = corrupted("hello world", random.Random(1))
    assert "\x00" in text and "\ud800" in text


async def test_every_tool_and_model_fault_reaches_the_boundary_and_the_run_ends() -> None:
    seen: list[str] = []

    @tool(retries=1, retry_backoff_s=0.0)
    def echo(n: int) -> str:
        """Echo n."""
        return f"echo {n}"

    plan = FaultPlan(seed=2, tool_fail_rate=0.3, tool_corrupt_rate=0.3, tool_latency=0.001,
                     model_fail_rate=0.2, model_latency=0.001, model_malformed_rate=0.2,
                     on_inject=seen.append)  # fmt: skip
    script = [Turn(calls=(("echo", {"n": i}),)) for i in range(30)]
    agent = Agent(name="echo", instructions="Echo.", tools=plan.wrap_tools([echo]),
                  model=plan.wrap_model(ScriptedModel([*script, "done"])),  # type: ignore[arg-type]
                  limits=Limits(max_steps=40))  # fmt: skip
    store = MemoryStore()
    result = await run_to_end(agent, "echo", store=store)
    assert result.status in ("completed", "failed", "stopped") and result.reason
    assert {"tool_failure", "tool_corruption", "tool_latency", "model_outage",
            "model_latency", "model_malformed"} <= set(seen)  # fmt: skip
    events = await read_events(store, result.run_id)
    outputs = [e.payload["output"] for e in events if e.type == "tool.completed"]
    assert any("\ufffd" in o for o in outputs) and not any("\x00" in o for o in outputs)
    assert any(e.type == "model.failed" for e in events)
    assert any(e.payload.get("error") == "malformed_arguments" for e in events
               if e.type == "tool.failed")  # fmt: skip


@pytest.mark.parametrize("is_async", [False, True])
@pytest.mark.parametrize("takes_ctx", [False, True])
async def test_counted_tools_log_each_completed_run_with_its_key(
    tmp_path: Path, is_async: bool, takes_ctx: bool
) -> None:
    def body(n: int, ctx: ToolContext | None = None) -> str:
        return f"ok {n}"

    if is_async:

        async def fn_async(n: int, ctx: ToolContext) -> str:
            return body(n)

        fn = fn_async
    else:

        def fn_sync(n: int, ctx: ToolContext) -> str:
            return body(n)

        fn = fn_sync
    fn.__doc__ = "Say ok."
    base = tool(fn)
    if not takes_ctx:
        base = dataclasses.replace(base, fn=lambda n: body(n), context_param=None)
        if is_async:

            async def plain(n: int) -> str:
                return body(n)

            base = dataclasses.replace(base, fn=plain)
    log = EffectLog(tmp_path / "effects.jsonl")
    agent = Agent(name="ok", instructions="Say ok.", tools=[counted(base, log)],
                  model=ScriptedModel([Turn(calls=(("fn_async" if is_async else "fn_sync",
                                                    {"n": 1}),)), "done"]))  # fmt: skip
    result = await run_to_end(agent, "go")
    assert result.status == "completed"
    (entry,) = list(read_effects(tmp_path / "effects.jsonl"))
    assert entry.kind == "ran" and entry.key.endswith("/c1/t0")
