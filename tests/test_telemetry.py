"""OpenTelemetry spans from the journal, checked with the SDK's in-memory exporter."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tether import Agent, Limits, Runtime, tool
from tether._clock import FakeClock
from tether.events import EventDraft, Usage
from tether.journal import MemoryStore, RunJournal, create_run
from tether.models import ScriptedModel, Turn, call
from tether.telemetry import TelemetryObserver, export_run, instrument


@pytest.fixture
def exported() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def by_name(spans: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def parent_of(span: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    found = [s for s in spans if s.context is not None and s.context.span_id == span.parent.span_id]
    assert len(found) == 1, f"parent of {span.name} was not exported"
    return found[0]


@tool(idempotent=True)
def lookup(city: str) -> str:
    """Weather for a city."""
    return f"{city}: 18°C"


@tool(visibility="always_hidden")
def vault(key: str) -> str:
    """Read a secret (an internal tool)."""
    return "s3cr3t-value"


def weather_agent(model: ScriptedModel, *tools: Any) -> Agent:
    return Agent(
        name="weather",
        instructions="Answer weather questions.",
        tools=list(tools) or [lookup],
        model=model,
        limits=Limits(max_steps=10),
    )


async def test_a_run_becomes_run_cycle_chat_and_tool_spans(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    model = ScriptedModel(
        [Turn(calls=(("lookup", {"city": "Oslo"}), ("lookup", {"city": "Bergen"}))), "Rain."]
    )
    store = instrument(MemoryStore(), TelemetryObserver(provider))
    result = await Runtime(store).start(weather_agent(model), "Is it raining?")
    assert result.status == "completed"
    spans = exporter.get_finished_spans()
    (run,) = by_name(spans, "invoke_agent")
    cycles = by_name(spans, "cycle")
    chats = by_name(spans, "chat")
    tools = by_name(spans, "execute_tool")
    assert [len(cycles), len(chats), len(tools)] == [2, 2, 2]
    assert len(spans) == 7
    # Parentage: run → cycle → (chat, tools); one trace.
    assert run.parent is None
    assert {parent_of(c, spans) for c in cycles} == {run}
    for span in (*chats, *tools):
        parent = parent_of(span, spans)
        assert parent in cycles
        corr = span.attributes["tether.correlation_id"]
        assert parent.attributes["tether.correlation_id"] == corr
    assert len({s.context.trace_id for s in spans if s.context}) == 1
    # GenAI semantic conventions.
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.agent.name"] == "weather"
    assert run.attributes["tether.status"] == "completed"
    first = min(chats, key=lambda s: s.start_time or 0)
    assert first.kind == SpanKind.CLIENT and first.name == "chat scripted"
    assert first.attributes["gen_ai.operation.name"] == "chat"
    assert first.attributes["gen_ai.request.model"] == "scripted"
    assert first.attributes["gen_ai.provider.name"] == "tether.scripted"
    assert first.attributes["gen_ai.usage.input_tokens"] > 0
    assert first.attributes["gen_ai.usage.output_tokens"] > 0
    assert first.attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert run.attributes["gen_ai.usage.input_tokens"] == result.input_tokens
    tool_span = min(tools, key=lambda s: s.start_time or 0)
    assert tool_span.name == "execute_tool lookup"
    assert tool_span.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool_span.attributes["gen_ai.tool.name"] == "lookup"
    assert tool_span.attributes["gen_ai.tool.call.id"] == "call_1_0"
    # Correlation and event ids tie every span back to the journal.
    for span in spans:
        assert span.attributes["tether.run_id"] == result.run_id
        assert str(span.attributes["tether.event_id"]).startswith(result.run_id + ":")
        assert span.start_time is not None and span.end_time is not None
        assert span.start_time <= span.end_time
    assert {c.attributes["tether.correlation_id"] for c in cycles} == {
        f"{result.run_id}/c1",
        f"{result.run_id}/c2",
    }


async def test_failures_are_error_spans_with_redacted_descriptions(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported

    @tool
    def leaky() -> str:
        """Fails with a key in its message."""
        raise RuntimeError("denied for sk-proj-Ab3dEf6hIj9kLmN0pQrStUvWx1yZ2")

    model = ScriptedModel([call("leaky"), "done"])
    store = instrument(MemoryStore(), TelemetryObserver(provider))
    await Runtime(store).start(weather_agent(model, leaky), "go")
    (span,) = by_name(exporter.get_finished_spans(), "execute_tool")
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "exception"
    assert "sk-proj" not in (span.status.description or "")
    assert "[REDACTED]" in (span.status.description or "")


async def test_events_above_the_role_make_no_span(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    model = ScriptedModel([call("vault", {"key": "db"}), call("lookup", {"city": "Oslo"}), "ok"])
    store = instrument(MemoryStore(), TelemetryObserver(provider))
    await Runtime(store).start(weather_agent(model, vault, lookup), "go")
    names = [s.name for s in by_name(exporter.get_finished_spans(), "execute_tool")]
    assert names == ["execute_tool lookup"]
    exporter.clear()
    audit = TelemetryObserver(provider, role="audit")
    store2 = instrument(MemoryStore(), audit)
    model2 = ScriptedModel([call("vault", {"key": "db"}), "ok"])
    await Runtime(store2).start(weather_agent(model2, vault), "go")
    assert [s.name for s in by_name(exporter.get_finished_spans(), "execute_tool")] == [
        "execute_tool vault"
    ]


async def test_a_paused_run_ends_its_segment_and_the_resumed_one_opens_another(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    from tether.approvals import pending_approvals, resolve_approval

    provider, exporter = exported

    @tool(requires_approval=True)
    def publish(text: str) -> str:
        """Publish."""
        return "published"

    model = ScriptedModel([call("publish", {"text": "hi"}), "done"])
    store = instrument(MemoryStore(), TelemetryObserver(provider))
    runtime = Runtime(store)
    agent = weather_agent(model, publish)
    first = await runtime.start(agent, "publish it")
    assert first.status == "waiting_approval"
    spans = exporter.get_finished_spans()
    (segment,) = by_name(spans, "invoke_agent")
    assert segment.attributes["tether.status"] == "released"
    (waiting,) = by_name(spans, "execute_tool")
    assert waiting.attributes["tether.interrupted"] == "released"
    assert [e.name for e in waiting.events] == ["approval.requested"]
    (approval,) = await pending_approvals(store, run_id=first.run_id)
    await resolve_approval(store, approval.request_id, decision="approved", actor="cli:ann")
    done = await runtime.resume(agent, first.run_id)
    assert done.status == "completed"
    spans = exporter.get_finished_spans()
    segments = by_name(spans, "invoke_agent")
    assert len(segments) == 2
    assert segments[1].attributes["tether.segment"] == "continued"
    assert segments[1].attributes["tether.status"] == "completed"
    ran = [s for s in by_name(spans, "execute_tool") if "tether.interrupted" not in s.attributes]
    assert len(ran) == 1 and ran[0].attributes["gen_ai.tool.call.id"] == "call_1_0"


async def test_export_run_sends_a_stored_run_after_the_fact(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    store = MemoryStore()
    model = ScriptedModel([call("lookup", {"city": "Oslo"}), "Rain."])
    result = await Runtime(store).start(weather_agent(model), "Is it raining?")
    ended = await export_run(store, result.run_id, TelemetryObserver(provider))
    spans = exporter.get_finished_spans()
    assert ended == len(spans) == 6
    assert sorted(s.name.split()[0] for s in spans) == [
        "chat", "chat", "cycle", "cycle", "execute_tool", "invoke_agent",
    ]  # fmt: skip


async def test_nothing_is_lost_over_1000_cycles_without_a_shutdown() -> None:
    """A batch processor (queue of 2,048) and a worker that never shuts down: every span of
    a 1,000-cycle run is exported by the time the run ends."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    observer = TelemetryObserver(provider, flush_interval_s=None)
    store = instrument(MemoryStore(), observer)
    clock = FakeClock()
    state = await create_run(store, agent="soak", task="loop", run_id="run_soak", clock=clock)
    lease = await store.acquire_lease(state.run_id, owner="w", ttl_s=3600)
    journal, _ = await RunJournal.open(store, lease, clock=clock, snapshot_every=0)
    cycles = 1_000
    for n in range(1, cycles + 1):
        corr = f"run_soak/c{n}"
        clock.advance(0.01)
        started, requested = await journal.append(
            EventDraft(type="cycle.started", payload={"cycle": n}, correlation_id=corr),
            EventDraft(
                type="model.requested", payload={"model": "m"}, correlation_id=corr,
                causation_id=f"run_soak:{journal.state.last_seq + 1}",
            ),
        )  # fmt: skip
        clock.advance(0.5)
        final = n == cycles
        _, *calls = await journal.append(
            EventDraft(
                type="model.completed",
                payload={"content": "", "tool_calls": [], "finish_reason": "stop", "model": "m"},
                correlation_id=corr,
                causation_id=requested.id,
                usage=Usage(input_tokens=10, output_tokens=2),
            ),
            *(
                []
                if final
                else [
                    EventDraft(
                        type="tool.requested",
                        payload={"call_id": f"c{n}", "name": "t", "arguments": "{}"},
                        correlation_id=corr,
                        causation_id=f"run_soak:{journal.state.last_seq + 1}",
                    )
                ]
            ),
        )
        del started
        clock.advance(0.1)
        if final:
            await journal.append(
                EventDraft(type="run.completed", payload={"answer": "ok"}, correlation_id=corr)
            )
        else:
            await journal.append(
                EventDraft(
                    type="tool.completed",
                    payload={"call_id": f"c{n}", "name": "t", "output": "x"},
                    correlation_id=corr,
                    causation_id=calls[0].id,
                )
            )
    spans = exporter.get_finished_spans()  # no shutdown, no manual flush
    counts = {p: len(by_name(spans, p)) for p in ("invoke_agent", "cycle", "chat", "execute_tool")}
    assert counts == {
        "invoke_agent": 1, "cycle": cycles, "chat": cycles, "execute_tool": cycles - 1,
    }  # fmt: skip
    ids = {s.context.span_id for s in spans if s.context}
    assert all(s.parent is None or s.parent.span_id in ids for s in spans)
    assert observer.spans_started == observer.spans_ended == len(spans)
    provider.shutdown()


def test_the_module_imports_without_opentelemetry_and_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import tether.telemetry as t\n"
        "try:\n"
        "    t.TelemetryObserver()\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("UsageError OpenTelemetry is not installed")
    assert "tether-runtime[otel]" in done.stdout


async def test_a_sub_agent_run_nests_under_the_tool_call_that_started_it(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    from tether.subagents import agent_tool

    provider, exporter = exported
    child = Agent(
        name="weather",
        instructions="Look it up.",
        tools=[lookup],
        model=ScriptedModel([call("lookup", {"city": "Oslo"}), "Oslo: 18°C"]),
    )
    parent = Agent(
        name="planner",
        instructions="Plan.",
        tools=[agent_tool(child)],
        model=ScriptedModel([call("weather", {"task": "Oslo?"}), "Pack a jumper."]),
    )
    store = instrument(MemoryStore(), TelemetryObserver(provider))
    result = await Runtime(store).start(parent, "Plan my day")
    assert result.status == "completed"
    spans = exporter.get_finished_spans()
    runs = {s.attributes["gen_ai.agent.name"]: s for s in by_name(spans, "invoke_agent")}
    assert set(runs) == {"planner", "weather"}
    delegate = next(s for s in by_name(spans, "execute_tool") if s.name == "execute_tool weather")
    assert parent_of(runs["weather"], spans) is delegate
    assert (
        runs["weather"].attributes["tether.parent_event"] == delegate.attributes["tether.event_id"]
    )
    assert len({s.context.trace_id for s in spans if s.context}) == 1


async def _budget_span_events(
    path: Any, exported: tuple[TracerProvider, InMemorySpanExporter]
) -> list[tuple[str, str, dict[str, Any]]]:
    from tether.testing._replay import _import, load_journal

    provider, exporter = exported
    exporter.clear()
    events = load_journal(path)
    store = MemoryStore()
    await _import(store, events)
    await export_run(store, events[0].run_id, TelemetryObserver(provider))
    found = []
    for span in sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0):
        for e in span.events:
            if e.name.startswith("budget."):
                attrs = {k: v for k, v in (e.attributes or {}).items() if k != "tether.event_id"}
                found.append((span.name.split()[0], e.name, attrs))
    return found


async def test_a_model_calls_budget_hold_makes_the_same_span_events_in_both_layouts(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Separate budget events (journals of before) and the hold carried by the model
    call's own events (today) give the same span events, with the same attributes."""
    from pathlib import Path

    golden = Path(__file__).parent / "golden" / "incidents"
    old = await _budget_span_events(golden / "demo.jsonl", exported)
    new = await _budget_span_events(golden / "demo_folded_budget.jsonl", exported)
    assert len(old) == 96 and [n for _, n, _ in old].count("budget.settled") == 48
    assert {(span, name) for span, name, _ in new} == {
        ("chat", "budget.reserved"), ("cycle", "budget.settled"),
    }  # fmt: skip
    assert [(s, n, {k: v for k, v in a.items() if k != "tether.reservation_id"})
            for s, n, a in new] == [
        (s, n, {k: v for k, v in a.items() if k != "tether.reservation_id"})
        for s, n, a in old
    ]  # fmt: skip
    settled = [a for _, n, a in new if n == "budget.settled"]
    assert all(a["tether.actual_usd"] <= a["tether.estimate_usd"] for a in settled)
