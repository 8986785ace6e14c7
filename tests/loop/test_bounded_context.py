"""A bounded context over long runs: pins survive, summaries are checked, artifacts read back.

The figures (CPU per step, RSS, bytes per step, resume time over 100,000 steps) are
measured by bench/soak.py, not here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tether import Agent, Limits, Runtime, tool
from tether.errors import UsageError
from tether.events import Event
from tether.journal import MemoryStore, SQLiteStore, read_events
from tether.loop._artifacts import MAX_READ_CHARS, read_artifact
from tether.loop._context import ContextCache, plan_compaction
from tether.loop._driver_base import RESUME_WINDOW
from tether.loop._pins import pin_fact, unpin_fact
from tether.loop._summary import OPEN_TASKS, check_summary, extractive_summary
from tether.models import Message, ModelRequest, ScriptedModel, ToolCall
from tether.models.scripted import Turn, call
from tether.tools import ToolContext, execute
from tether.views import Viewer

MISSION = "You survey an archive."
TASK = "count the pages"
FACT = "the archive key is K-7731"


@tool(idempotent=True)
async def page(n: int) -> str:
    """One page of about 600 characters."""
    return f"page {n}: " + "lorem ipsum " * 50


def good_summary(request: ModelRequest) -> str:
    return f"{OPEN_TASKS}\n- count the remaining pages\nDone so far:\n- read some pages"


async def events_of(store: Any, run_id: str) -> list[Event]:
    return await read_events(store, run_id)


def agent(model: ScriptedModel, *, steps: int, **options: Any) -> Agent:
    return Agent(
        name="long",
        instructions=MISSION,
        tools=[page],
        model=model,
        limits=Limits(max_steps=steps),
        max_output_tokens=200,
        wrap_up_output_tokens=100,
        **options,
    )


def texts(request: ModelRequest) -> list[str]:
    return [m.content for m in request.messages]


@pytest.mark.slow
async def test_a_fact_pinned_at_step_10_and_the_task_are_in_the_context_at_step_20000() -> None:
    seen: dict[str, ModelRequest] = {}
    counter = {"n": 0}

    def script(request: ModelRequest) -> Turn | str:
        counter["n"] += 1
        n = counter["n"]
        if n == 10:
            return call("pin_fact", {"fact": FACT, "source": "index page 1"})
        if n == 20_000:
            seen["last"] = request
            return "done"
        return call("page", {"n": n})

    model = ScriptedModel(script, context_window=8_000, summaries=good_summary)
    store = MemoryStore()
    rt = Runtime(store, ledger=False)
    result = await rt.start(agent(model, steps=20_000), TASK)
    assert result.status == "completed" and result.steps == 20_000
    last = seen["last"]
    assert texts(last)[:2] == [MISSION, TASK]
    assert any(FACT in t and "index page 1" in t for t in texts(last))
    assert model.count_tokens(last.messages, last.tools) <= 8_000
    state = await rt.get(result.run_id)
    assert len(state.context) < 100  # bounded, after 20,000 steps
    assert [f.text for f in state.facts] == [FACT]


async def test_a_turn_of_wide_parallel_calls_fits_the_window_its_outputs_are_artifacts() -> None:
    @tool(idempotent=True)
    async def chapter(n: int) -> str:
        """One chapter of about 2,000 tokens."""
        return f"chapter {n}: " + "lorem ipsum dolor " * 400

    requests: list[ModelRequest] = []

    def script(request: ModelRequest) -> Turn | str:
        requests.append(request)
        n = len(requests)
        if n > 6:
            return "done"
        return Turn(calls=tuple(("chapter", {"n": 10 * n + i}) for i in range(8)))

    model = ScriptedModel(script, context_window=16_000, summaries=good_summary)
    store = MemoryStore()
    result = await Runtime(store, ledger=False).start(
        Agent(name="wide", instructions=MISSION, tools=[chapter], model=model,
              limits=Limits(max_steps=20), max_output_tokens=500),
        TASK,
    )  # fmt: skip
    # One turn's eight full outputs (about 16,000 tokens) would not fit the window alone.
    assert result.status == "completed", result.reason
    assert len(requests) == 7
    assert all(model.count_tokens(r.messages, r.tools) <= 16_000 for r in requests)
    events = await events_of(store, result.run_id)
    assert not any(e.type == "model.failed" for e in events)
    heads = [m.content for m in requests[1].messages if m.role == "tool"]
    assert len(heads) == 8 and all("read_artifact(handle=" in h for h in heads)


async def test_compaction_keeps_only_the_last_turn_when_the_budget_needs_it() -> None:
    store = MemoryStore()
    model = ScriptedModel([call("page", {"n": n}) for n in range(3)] + ["done"])
    result = await Runtime(store, ledger=False).start(agent(model, steps=10), TASK)
    state = await Runtime(store, ledger=False).get(result.run_id)
    cache = ContextCache(store, result.run_id)
    await cache.load(state)
    turns = [s for s in state.context if cache.messages[s].role == "assistant"]
    assert len(turns) == 4  # three calls and the answer
    removed = plan_compaction(state, cache, budget_tokens=300, summary_tokens=100)
    # Every turn but the last, whole: the calls and their results.
    assert removed == [s for s in state.context if s not in state.pinned and s < turns[-1]]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("", "empty"),
        ("Error: upstream rate limit exceeded, try again later", "error"),
        (f"{OPEN_TASKS}\n- x\nDone so far:\n" + "- page read\n" * 2_000, "over its budget"),
        ("Done so far:\n- read some pages", "open-task"),
    ],
)
async def test_a_summary_that_is_empty_an_error_over_budget_or_without_tasks_is_refused(
    answer: str, why: str
) -> None:
    counter = {"n": 0}

    def script(request: ModelRequest) -> Turn | str:
        counter["n"] += 1
        return "done" if counter["n"] >= 40 else call("page", {"n": counter["n"]})

    model = ScriptedModel(script, context_window=3_000, summaries=lambda r: answer)
    store = MemoryStore()
    result = await Runtime(store, ledger=False).start(agent(model, steps=50), TASK)
    assert result.status == "completed"
    events = await events_of(store, result.run_id)
    answers = [e for e in events if e.type == "summary.completed"]
    compactions = [e for e in events if e.type == "context.compacted"]
    assert answers and len(compactions) == len(answers)
    budget = compactions[0].payload["summary_budget"]
    for e in compactions:
        assert e.payload["source"] == "extractive"
        assert why in e.payload["rejected"]
        assert model.count_tokens((Message(role="user", content=e.payload["content"]),)) <= (
            budget + 16
        )
        assert OPEN_TASKS in e.payload["content"]


async def test_a_good_model_summary_is_used_and_the_call_is_journaled_with_its_usage() -> None:
    counter = {"n": 0}

    def script(request: ModelRequest) -> Turn | str:
        counter["n"] += 1
        return "done" if counter["n"] >= 40 else call("page", {"n": counter["n"]})

    model = ScriptedModel(script, context_window=3_000, summaries=good_summary)
    store = MemoryStore()
    result = await Runtime(store).start(agent(model, steps=50), TASK)
    events = await events_of(store, result.run_id)
    compaction = next(e for e in events if e.type == "context.compacted")
    answer = next(e for e in events if e.type == "summary.completed")
    asked = next(e for e in events if e.type == "summary.requested")
    assert compaction.payload["source"] == "model" and compaction.payload["rejected"] is None
    assert "count the remaining pages" in compaction.payload["content"]
    assert answer.usage is not None and answer.usage.output_tokens > 0
    assert asked.seq < answer.seq < compaction.seq
    kinds = [e.payload.get("kind") for e in events if e.type == "budget.reserved"]
    assert "summary" in kinds  # the summariser's cost is reserved like any model call


class Crash(BaseException):
    """Stands in for the process dying."""


async def test_a_crash_during_a_compaction_resumes_without_asking_the_summariser_again(
    tmp_path: Path,
) -> None:
    asked: list[ModelRequest] = []

    def summaries(request: ModelRequest) -> str:
        asked.append(request)
        return good_summary(request) + f"\n- summary number {len(asked)}"

    def script(request: ModelRequest) -> Turn | str:
        n = sum(1 for m in request.messages if m.role == "tool")
        return "done" if "summary number" in " ".join(texts(request)) else call("page", {"n": n})

    db = tmp_path / "run.db"
    model = ScriptedModel(script, context_window=3_000, summaries=summaries)
    crashed = {"done": False}

    def crash_after_the_answer(progress: Any) -> None:
        if progress.event == "summary.completed" and not crashed["done"]:
            crashed["done"] = True
            raise Crash

    rt = Runtime(SQLiteStore(db), ledger=False)
    the_agent = agent(model, steps=60)
    run_id = await rt.create(the_agent, TASK)
    with pytest.raises(Crash):
        await rt.resume(the_agent, run_id, observer=crash_after_the_answer)
    await rt.close()
    assert len(asked) == 1

    rt2 = Runtime(f"sqlite:///{db}", ledger=False)
    result = await rt2.resume(the_agent, run_id)
    events = await events_of(rt2.store, run_id)
    await rt2.close()
    assert result.status == "completed"
    first = next(e for e in events if e.type == "context.compacted")
    answer = next(e for e in events if e.type == "summary.completed")
    # The compaction after the resume used the journaled answer: no second call for it.
    assert "summary number 1" in first.payload["content"] and first.payload["source"] == "model"
    assert [e.type for e in events].count("summary.requested") == len(asked)
    assert answer.seq < first.seq
    assert any(e.type == "run.resumed" and answer.seq < e.seq < first.seq for e in events)


async def test_read_artifact_reads_back_a_5_mb_result_exactly() -> None:
    blob = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(80_000))[:5_000_000]
    assert len(blob) == 5_000_000

    @tool
    def dump() -> str:
        """Returns 5 MB."""
        return blob

    calls: list[Turn | str] = [call("dump"), "done"]
    model = ScriptedModel(calls, context_window=128_000)
    store = MemoryStore()
    result = await Runtime(store, ledger=False).start(
        Agent(name="a", instructions="m", tools=[dump], model=model), "go"
    )
    events = await events_of(store, result.run_id)
    output = next(e for e in events if e.type == "tool.completed")
    ctx = ToolContext(run_id=result.run_id, call_id="c", idempotency_key="k", attempt=1,
                      store=store)  # fmt: skip
    parts = []
    for offset in range(0, len(blob), MAX_READ_CHARS):
        args = {"handle": output.id, "offset": offset, "length": MAX_READ_CHARS}
        outcome = await execute(read_artifact, args, ctx)
        assert outcome.ok, outcome.output
        parts.append(outcome.output)
    assert "".join(parts) == blob


async def test_the_model_sees_a_head_and_a_handle_and_reads_on_through_the_loop() -> None:
    text = "".join(chr(65 + i % 26) for i in range(30_000))

    @tool(max_output_chars=1_000)
    def big() -> str:
        """Returns 30,000 characters."""
        return text

    requests: list[ModelRequest] = []

    def script(request: ModelRequest) -> Turn | str:
        requests.append(request)
        tool_msgs = [m for m in request.messages if m.role == "tool"]
        if not tool_msgs:
            return call("big")
        if len(tool_msgs) == 1:
            head = tool_msgs[0].content
            handle = head.split('handle="', 1)[1].split('"', 1)[0]
            return call("read_artifact", {"handle": handle, "offset": 1_000, "length": 500})
        return "done"

    store = MemoryStore()
    model = ScriptedModel(script)
    result = await Runtime(store, ledger=False).start(
        Agent(name="a", instructions="m", tools=[big], model=model), "go"
    )
    assert result.status == "completed"
    head = next(m for m in requests[1].messages if m.role == "tool").content
    assert head.startswith(text[:1_000] + "\n[... 29,000 more characters of 30,000 not shown")
    read = [m for m in requests[2].messages if m.role == "tool"][1].content
    assert read.split("\n[step", 1)[0] == text[1_000:1_500]
    assert any(t.name == "read_artifact" for t in requests[0].tools)


async def test_a_read_of_an_always_hidden_output_is_always_hidden() -> None:
    secret = "".join(f"secret-{i} " for i in range(3_000))

    @tool(visibility="always_hidden", max_output_chars=1_000)
    def internal() -> str:
        """Internal data, longer than the context shows."""
        return secret

    def script(request: ModelRequest) -> Turn | str:
        results = [m for m in request.messages if m.role == "tool"]
        if not results:
            return call("internal")
        if len(results) == 1:
            handle = results[0].content.split('handle="', 1)[1].split('"', 1)[0]
            return call("read_artifact", {"handle": handle, "offset": 1_000, "length": 500})
        return "done"

    store = MemoryStore()
    result = await Runtime(store, ledger=False).start(
        Agent(name="a", instructions="m", tools=[internal], model=ScriptedModel(script)), "go"
    )
    events = await events_of(store, result.run_id)
    read = [
        e for e in events if e.type == "tool.completed" and e.payload["name"] == "read_artifact"
    ]
    assert len(read) == 1 and read[0].payload["output"] == secret[1_000:1_500]
    # The slice is as private as the output it was read from: no operator ever sees it.
    assert read[0].visibility == "always_hidden"
    shown = await Viewer(store, "operator").run(result.run_id)
    assert "secret-" not in json.dumps(shown)


async def test_read_artifact_refuses_other_runs_and_non_outputs() -> None:
    store = MemoryStore()
    model = ScriptedModel([call("page", {"n": 1}), "done"])
    result = await Runtime(store, ledger=False).start(agent(model, steps=5), TASK)
    ctx = ToolContext(run_id=result.run_id, call_id="c", idempotency_key="k", attempt=1,
                      store=store)  # fmt: skip
    other = await execute(read_artifact, {"handle": "run_other:3"}, ctx)
    not_output = await execute(read_artifact, {"handle": f"{result.run_id}:1"}, ctx)
    assert "another run" in other.output and "not a tool output" in not_output.output


async def test_pins_have_a_budget_can_be_unpinned_and_are_shown_in_the_runway() -> None:
    long_fact = "word " * 400
    requests: list[ModelRequest] = []
    plan: list[Turn | str] = [
        call("pin_fact", {"fact": FACT, "source": "doc 1"}),
        call("pin_fact", {"fact": long_fact, "source": "doc 2"}),
        call("page", {"n": 1}),
        call("unpin_fact", {"id": "F?"}),
        "done",
    ]

    def script(request: ModelRequest) -> Turn | str:
        requests.append(request)
        turn = plan[len(requests) - 1]
        if isinstance(turn, Turn) and turn.calls[0][0] == "unpin_fact":
            state_fact = next(t for t in texts(request) if t.startswith("Pinned facts"))
            fact_id = state_fact.split("[", 1)[1].split("]", 1)[0]
            return call("unpin_fact", {"id": fact_id})
        return turn

    store = MemoryStore()
    result = await Runtime(store, ledger=False).start(
        agent(ScriptedModel(script), steps=10, pin_tokens=300), TASK
    )
    assert result.status == "completed"
    tool_text = [m.content for m in requests[2].messages if m.role == "tool"]
    assert "pinned as F" in tool_text[0]
    assert "error: pinning this would use" in tool_text[1]
    assert "pins 1 (" in tool_text[-1] and "/300 tokens)" in tool_text[-1]
    assert any(FACT in t for t in texts(requests[3]))
    assert not any(t.startswith("Pinned facts") for t in texts(requests[4]))
    assert (await Runtime(store).get(result.run_id)).facts == ()


async def test_an_operator_pins_and_unpins_facts_in_a_paused_run() -> None:
    store = MemoryStore()
    requests: list[ModelRequest] = []

    def script(request: ModelRequest) -> Turn | str:
        requests.append(request)
        return call("page", {"n": 1}) if len(requests) == 1 else "done"

    rt = Runtime(store, ledger=False)
    the_agent = agent(ScriptedModel(script), steps=5)
    run_id = await rt.create(the_agent, TASK)
    fact = await pin_fact(store, run_id, "the deadline is Friday", source="email from ops")
    assert fact.id.startswith("F") and fact.by == "operator"
    result = await rt.resume(the_agent, run_id)
    assert result.status == "completed"
    # The mission, the task, then the pinned facts, from the very first request on.
    assert texts(requests[0])[:2] == [MISSION, TASK]
    assert "the deadline is Friday (source: email from ops)" in texts(requests[0])[2]
    with pytest.raises(Exception, match="ended"):
        await unpin_fact(store, run_id, fact.id)


async def test_an_operators_pins_are_bounded_together() -> None:
    store = MemoryStore()
    rt = Runtime(store, ledger=False)
    run_id = await rt.create(agent(ScriptedModel(["done"]), steps=5), TASK)
    fact = "figure " * 1_500  # about 3,000 tokens: two fit, a third does not
    await pin_fact(store, run_id, fact, source="sheet 1")
    await pin_fact(store, run_id, fact, source="sheet 2")
    with pytest.raises(UsageError, match="unpin something first"):
        await pin_fact(store, run_id, fact, source="sheet 3")
    assert len((await rt.get(run_id)).facts) == 2


async def test_a_compaction_of_always_hidden_output_is_always_hidden() -> None:
    @tool(visibility="always_hidden")
    def secret(n: int) -> str:
        """Internal data."""
        return f"internal {n} " + "x" * 600

    counter = {"n": 0}

    def script(request: ModelRequest) -> Turn | str:
        counter["n"] += 1
        return "done" if counter["n"] >= 30 else call("secret", {"n": counter["n"]})

    store = MemoryStore()
    model = ScriptedModel(script, context_window=3_000, summaries=good_summary)
    result = await Runtime(store, ledger=False).start(
        Agent(name="h", instructions=MISSION, tools=[secret], model=model,
              limits=Limits(max_steps=40), max_output_tokens=200),
        TASK,
    )  # fmt: skip
    events = await events_of(store, result.run_id)
    summary_events = [
        e for e in events
        if e.type in ("context.compacted", "summary.requested", "summary.completed")
    ]  # fmt: skip
    assert summary_events
    assert {e.visibility for e in summary_events} == {"always_hidden"}


def test_the_extractive_summary_converges_within_its_budget() -> None:
    previous: str | None = None
    sizes = []
    for turn in range(300):
        removed = [
            Message(role="assistant", content="", tool_calls=(
                ToolCall(id=f"c{turn}", name="page", arguments=f'{{"n": {turn}}}'),)),
            Message(role="tool", content=f"page {turn}: " + "text " * 100, name="page",
                    tool_call_id=f"c{turn}"),
        ]  # fmt: skip
        previous = extractive_summary(previous, removed, budget_tokens=400)
        sizes.append(len(previous))
        assert check_summary(previous, budget_tokens=400, previous=None) is None
    assert max(sizes[100:]) <= max(sizes[:100]) * 1.05  # it stopped growing


def test_check_summary_keeps_the_open_tasks_of_the_previous_summary() -> None:
    previous = f"{OPEN_TASKS}\n- call the bank\nDone so far:\n- read the file"
    emptied = f"{OPEN_TASKS}\nDone so far:\n- read the file"
    assert "open tasks" in (check_summary(emptied, budget_tokens=500, previous=previous) or "")
    kept = f"{OPEN_TASKS}\n- call the bank\nDone so far:\n- read two files"
    assert check_summary(kept, budget_tokens=500, previous=previous) is None


class CountingStore(MemoryStore):
    """Counts the journal rows handed out, to show what a resume reads."""

    rows_read = 0

    async def read_rows(self, run_id: str, **kw: Any) -> Any:
        rows = await super().read_rows(run_id, **kw)
        self.rows_read += len(rows)
        return rows

    async def read_rows_at(self, run_id: str, seqs: Any) -> Any:
        rows = await super().read_rows_at(run_id, seqs)
        self.rows_read += len(rows)
        return rows


@pytest.mark.parametrize("steps", [300, 1_500])
async def test_a_resume_reads_the_snapshot_and_the_current_context_not_the_run(
    steps: int,
) -> None:
    counter = {"n": 0}

    def script(request: ModelRequest) -> Turn | str:
        counter["n"] += 1
        return call("page", {"n": counter["n"]})

    def crash_at(cycle: int) -> Callable[[Any], None]:
        def observer(progress: Any) -> None:
            if progress.event == "tool.requested" and progress.state.cycle >= cycle:
                raise Crash

        return observer

    store = CountingStore()
    model = ScriptedModel(script, context_window=3_000, summaries=good_summary)
    the_agent = agent(model, steps=steps + 10)
    run_id = await Runtime(store, ledger=False).create(the_agent, TASK)
    with pytest.raises(Crash):
        await Runtime(store, ledger=False).resume(the_agent, run_id, observer=crash_at(steps))
    store.rows_read = 0
    with pytest.raises(Crash):  # resumed in a fresh runtime until its next step is journaled
        await Runtime(store, ledger=False).resume(the_agent, run_id, observer=crash_at(steps + 1))
    read = store.rows_read
    state = await Runtime(store, ledger=False).get(run_id)
    assert state.cycle == steps + 1 and state.last_seq > 5 * steps
    # A snapshot's tail (at most 200 events), the health policies' window (at most 200
    # recent events), the current context and a few point reads.
    assert read <= 220 + RESUME_WINDOW + len(state.context)


def test_context_seqs_append_in_place_and_stay_immutable_when_branched() -> None:
    from tether.state import ContextSeqs

    base = ContextSeqs([1, 2])
    a = base.appended(3)
    b = a.appended(4)
    assert a._items is b._items  # the newest view extends the shared list: O(1)
    branch = a.appended(9)  # an older view appended again copies
    assert list(a) == [1, 2, 3] and list(b) == [1, 2, 3, 4] and list(branch) == [1, 2, 3, 9]
    assert branch._items is not b._items and b == (1, 2, 3, 4) and base == [1, 2]


async def test_token_counts_are_corrected_by_the_providers_count_of_the_last_request() -> None:
    class Undercounted(ScriptedModel):
        """A provider whose tokenizer counts twice what our estimate says."""

        async def complete(self, request: ModelRequest, **kw: Any) -> Any:
            response = await super().complete(request, **kw)
            usage = dataclasses.replace(
                response.usage, input_tokens=2 * response.usage.input_tokens
            )
            return dataclasses.replace(response, usage=usage)

    async def first_compaction(model_type: type[ScriptedModel]) -> int:
        counter = {"n": 0}

        def script(request: ModelRequest) -> Turn | str:
            counter["n"] += 1
            return "done" if counter["n"] >= 30 else call("page", {"n": counter["n"]})

        store = MemoryStore()
        model = model_type(script, context_window=8_000, summaries=good_summary)
        result = await Runtime(store, ledger=False).start(agent(model, steps=40), TASK)
        events = await events_of(store, result.run_id)
        requests = [e for e in events if e.type == "model.requested"]
        compaction = next(e for e in events if e.type == "context.compacted")
        return sum(1 for e in requests if e.seq < compaction.seq)

    plain, corrected = await first_compaction(ScriptedModel), await first_compaction(Undercounted)
    assert corrected < plain * 0.7  # it compacted about twice as early
