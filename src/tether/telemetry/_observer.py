"""Journal events to OpenTelemetry spans (GenAI semantic conventions), one run segment at a time."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._redact import Redactor, default_redactor, secrets_generation
from ..budget._journaled import BUDGET_FIELD, reserved_in, settled_in
from ..errors import UsageError
from ..events import Event
from ..views import FIELD_VISIBILITY, Role, can_see

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

INSTRUMENTATION_NAME = "tether"
OTEL_ENV = "TETHER_OTEL"
"""The environment variable `observer_from_env` reads: unset, `console` or `otlp`."""

_INSTALL_OTEL = (
    "OpenTelemetry is not installed: pip install 'tether-runtime[otel]' "
    "(opentelemetry-api and opentelemetry-sdk)"
)

# GenAI semantic-convention attribute names (opentelemetry-semantic-conventions,
# opentelemetry.semconv._incubating.attributes.gen_ai_attributes).
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_AGENT_VERSION = "gen_ai.agent.version"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
ERROR_TYPE = "error.type"

_SPAN_EVENTS = frozenset(
    {
        "approval.requested", "approval.resolved", "budget.reserved", "budget.settled",
        "budget.denied", "context.compacted", "limit.warning", "limit.reached",
        "health.warning", "note", "run.resumed", "journal.repaired", "tool.started",
    }
)  # fmt: skip
_TERMINAL = frozenset({"run.completed", "run.stopped", "run.failed", "run.cancelled"})
_RESULTS = frozenset({"tool.completed", "tool.failed", "tool.unknown"})
_OPENING = frozenset(
    {"run.created", "run.resumed", "cycle.started", "model.requested", "model.completed",
     "model.failed", "tool.requested", "tool.started", *_RESULTS, *_TERMINAL}
)  # fmt: skip
"""Events that do work: seeing one opens a run segment span when none is open."""


def _ns(ts: str) -> int:
    """A journal timestamp (UTC ISO-8601, microseconds) in nanoseconds since the epoch."""
    d = datetime.fromisoformat(ts)
    return int(d.timestamp()) * 1_000_000_000 + d.microsecond * 1_000


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _provider(model: str, spec: str | None) -> str:
    """gen_ai.provider.name from the model spec the run was started with, else its name."""
    if spec and ":" in spec:
        prefix = spec.split(":", 1)[0].lower()
        if prefix in ("openai", "anthropic"):
            return prefix
    name = model.lower()
    if name.startswith("scripted"):
        return "tether.scripted"
    if name.startswith("claude"):
        return "anthropic"
    if name.startswith(("gpt-", "o1", "o3", "o4", "chatgpt")):
        return "openai"
    return "openai" if spec and spec.startswith("openai") else "unknown"


@dataclass(kw_only=True)
class _Run:
    """The open spans of one run in this process."""

    run_id: str
    agent: str
    span: Span
    model: str = ""
    provider: str = "unknown"
    cycles: dict[str, Span] = field(default_factory=dict)
    chats: dict[int, Span] = field(default_factory=dict)
    """Open model-call spans by the seq of their `model.requested`."""
    retry_from: dict[int, int] = field(default_factory=dict)
    """A request's last failure time: a later answer is a retried call starting there."""
    tools: dict[int, Span] = field(default_factory=dict)
    """Open tool-call spans by the seq of their `tool.requested`."""
    requested: dict[int, Event] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    last_ns: int = 0


class TelemetryObserver:
    """Maps journal events to OpenTelemetry spans; feed it with `instrument` or `export_run`."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        role: Role = "operator",
        redactor: Redactor | None = None,
        flush_interval_s: float | None = 10.0,
        flush_every_spans: int | None = 1_000,
        flush_timeout_ms: int = 10_000,
        owns_provider: bool = False,
    ) -> None:
        """`owns_provider`: `close()` shuts `tracer_provider` down too (it is this
        observer's alone, as with `observer_from_env`)."""
        try:
            from opentelemetry import trace
        except ImportError:  # pragma: no cover - exercised only without the extra
            raise UsageError(_INSTALL_OTEL) from None
        self._trace = trace
        self.provider = tracer_provider or trace.get_tracer_provider()
        self.owns_provider = owns_provider and tracer_provider is not None
        from .. import __version__

        self.tracer: Tracer = self.provider.get_tracer(INSTRUMENTATION_NAME, __version__)
        self.role = role
        self.redactor = None if role == "audit" else (redactor or default_redactor())
        # The process's own redactor is rebuilt when a secret is registered later (an MCP
        # server's credentials are registered when a run opens its session).
        self._generation: int | None = (
            secrets_generation() if role != "audit" and redactor is None else None
        )
        self.flush_interval_s = flush_interval_s
        self.flush_every_spans = flush_every_spans
        self.flush_timeout_ms = flush_timeout_ms
        self._ended_at_flush = 0
        self.runs: dict[str, _Run] = {}
        self._last_flush = time.monotonic()
        self.spans_started = 0
        self.spans_ended = 0

    # -- helpers --------------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        if self._generation is not None and self._generation != secrets_generation():
            self._generation = secrets_generation()
            self.redactor = default_redactor()
        return self.redactor.text(text) if self.redactor is not None else text

    def _start(
        self,
        name: str,
        event: Event,
        *,
        parent: Span | None,
        kind: str = "INTERNAL",
        attributes: dict[str, Any] | None = None,
        start_ns: int | None = None,
    ) -> Span:
        trace = self._trace
        context = trace.set_span_in_context(parent) if parent is not None else None
        attrs: dict[str, Any] = {
            "tether.run_id": event.run_id,
            "tether.event_id": event.id,
            GEN_AI_CONVERSATION_ID: event.run_id,
        }
        if event.correlation_id:
            attrs["tether.correlation_id"] = event.correlation_id
        attrs.update({k: v for k, v in (attributes or {}).items() if v is not None})
        self.spans_started += 1
        return self.tracer.start_span(
            name,
            context=context,
            kind=getattr(trace.SpanKind, kind),
            attributes=attrs,
            start_time=start_ns if start_ns is not None else _ns(event.ts),
        )

    def _end(self, span: Span, end_ns: int) -> None:
        self.spans_ended += 1
        span.end(end_time=end_ns)

    def _error(self, span: Span, kind: str, description: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute(ERROR_TYPE, kind or "_OTHER")
        span.set_status(Status(StatusCode.ERROR, self._clean(description)[:500]))

    # -- the mapping ----------------------------------------------------------------------

    def observe(self, event: Event, *, agent: str | None = None) -> None:
        """Map one appended event (events of a run must arrive in journal order)."""
        if not can_see(self.role, event.visibility):
            return
        run = self.runs.get(event.run_id)
        if run is None:
            if event.type not in _OPENING:
                return
            run = self._open_run(event, agent=agent)
        now = _ns(event.ts)
        run.last_ns = max(run.last_ns, now)
        kind = event.type
        p = event.payload
        if kind in _TERMINAL:
            self._finish(run, event)
            return
        if kind in ("run.created", "run.resumed"):
            if kind == "run.resumed":
                run.span.add_event("run.resumed", {"tether.event_id": event.id}, timestamp=now)
            return
        cycle = self._cycle(run, event)
        if kind == "cycle.started":
            if cycle is not None:
                n = p.get("cycle")
                if isinstance(n, int):
                    cycle.set_attribute("tether.cycle", n)
                    cycle.update_name(f"cycle {n}")
            return
        if kind == "model.requested":
            self._chat_open(run, event, cycle, start_ns=now)
            self._folded_budget(run, run.chats.get(event.seq), event, now)
        elif kind in ("model.completed", "model.failed"):
            self._folded_budget(run, cycle or run.span, event, now)
            self._chat_close(run, event, cycle)
        elif kind == "tool.requested":
            self._tool_open(run, event, cycle, start_ns=now)
        elif kind == "tool.started":
            seq = p.get("call_seq")
            if isinstance(seq, int) and seq not in run.tools and seq in run.requested:
                self._tool_open(run, run.requested[seq], cycle, start_ns=now)
            target = run.tools.get(seq) if isinstance(seq, int) else None
            (target or cycle or run.span).add_event(
                "tool.started", {"tether.event_id": event.id}, timestamp=now
            )
        elif kind in _RESULTS:
            self._tool_close(run, event, cycle)
        elif kind in _SPAN_EVENTS:
            self._span_event(run, event, cycle)

    def _open_run(self, event: Event, *, agent: str | None) -> _Run:
        p = event.payload if event.type == "run.created" else {}
        name = str(p.get("agent") or agent or "agent")
        metadata = p.get("metadata") if isinstance(p.get("metadata"), dict) else {}
        spec = metadata.get("model_spec") if isinstance(metadata, dict) else None
        model = str(p.get("model") or "")
        parent: Span | None = None
        parent_event = p.get("parent_event")
        if isinstance(parent_event, str):
            parent_run, _, parent_seq = parent_event.rpartition(":")
            owner = self.runs.get(parent_run)
            if owner is not None and parent_seq.isdigit():
                parent = owner.tools.get(int(parent_seq))
        span = self._start(
            f"invoke_agent {name}",
            event,
            parent=parent,
            attributes={
                GEN_AI_OPERATION_NAME: "invoke_agent",
                GEN_AI_AGENT_NAME: name,
                GEN_AI_AGENT_VERSION: p.get("agent_version") or None,
                GEN_AI_REQUEST_MODEL: model or None,
                "tether.parent_event": parent_event if isinstance(parent_event, str) else None,
                "tether.segment": "start" if event.type == "run.created" else "continued",
            },
        )
        run = _Run(
            run_id=event.run_id,
            agent=name,
            span=span,
            model=model,
            provider=_provider(model, spec if isinstance(spec, str) else None),
        )
        self.runs[event.run_id] = run
        return run

    def _cycle(self, run: _Run, event: Event) -> Span | None:
        corr = event.correlation_id
        if corr is None:
            return None
        span = run.cycles.get(corr)
        if span is None:
            # A new cycle: the previous ones are over (their results are all in).
            now = _ns(event.ts)
            for other, open_span in list(run.cycles.items()):
                if not any(_belongs(run, s, other) for s in (*run.chats, *run.tools)):
                    self._end(open_span, now)
                    del run.cycles[other]
            label = corr.rsplit("/", 1)[-1]
            span = self._start(f"cycle {label.removeprefix('c')}", event, parent=run.span)
            run.cycles[corr] = span
        return span

    def _chat_open(self, run: _Run, request: Event, cycle: Span | None, *, start_ns: int) -> None:
        p = request.payload
        model = str(p.get("model") or run.model or "model")
        run.requested[request.seq] = request
        run.chats[request.seq] = self._start(
            f"chat {model}",
            request,
            parent=cycle or run.span,
            kind="CLIENT",
            start_ns=start_ns,
            attributes={
                GEN_AI_OPERATION_NAME: "chat",
                GEN_AI_PROVIDER_NAME: run.provider,
                GEN_AI_REQUEST_MODEL: model,
                GEN_AI_REQUEST_MAX_TOKENS: _int(p.get("max_tokens")),
                "tether.context.messages": _int(p.get("context_messages")),
                "tether.context.tokens": _int(p.get("context_tokens")),
                "tether.wrap_up": bool(p.get("wrap_up")) or None,
            },
        )

    def _request_seq(self, event: Event) -> int | None:
        cause = event.causation_id or ""
        run_id, _, seq = cause.rpartition(":")
        return int(seq) if run_id == event.run_id and seq.isdigit() else None

    def _chat_close(self, run: _Run, event: Event, cycle: Span | None) -> None:
        now = _ns(event.ts)
        seq = self._request_seq(event)
        span = run.chats.pop(seq, None) if seq is not None else None
        if span is None:
            # A retried call, or one whose request this process did not see: it ran from
            # the last failure (or the request) to now.
            request = run.requested.get(seq) if seq is not None else None
            start = run.retry_from.pop(seq, now) if seq is not None else now
            base = request or event
            self._chat_open(run, base, cycle, start_ns=start)
            span = run.chats.pop(base.seq if request else event.seq)
        p = event.payload
        if event.type == "model.failed":
            # The provider's text may echo the request: only roles that may read it get it.
            shown = can_see(self.role, FIELD_VISIBILITY["model.failed"]["error"])
            error = str(p.get("error") or "") if shown else ""
            self._error(span, str(p.get("kind") or "_OTHER"), error)
            span.set_attribute("tether.transient", bool(p.get("transient")))
            if seq is not None:
                run.retry_from[seq] = now
        else:
            usage = event.usage
            reason = p.get("finish_reason")
            attrs: dict[str, Any] = {
                GEN_AI_RESPONSE_MODEL: _text(p.get("model")),
                GEN_AI_RESPONSE_FINISH_REASONS: [reason] if isinstance(reason, str) else None,
                GEN_AI_USAGE_INPUT_TOKENS: usage.input_tokens if usage else None,
                GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_tokens if usage else None,
                "tether.cost_usd": usage.cost_usd if usage else None,
                "tether.completion_event_id": event.id,
            }
            for key, value in attrs.items():
                if value is not None:
                    span.set_attribute(key, value)
            if usage is not None:
                run.input_tokens += usage.input_tokens
                run.output_tokens += usage.output_tokens
        self._end(span, now)

    def _tool_open(self, run: _Run, request: Event, cycle: Span | None, *, start_ns: int) -> None:
        p = request.payload
        name = str(p.get("name") or "tool")
        run.requested[request.seq] = request
        run.tools[request.seq] = self._start(
            f"execute_tool {name}",
            request,
            parent=cycle or run.span,
            start_ns=start_ns,
            attributes={
                GEN_AI_OPERATION_NAME: "execute_tool",
                GEN_AI_TOOL_NAME: name,
                GEN_AI_TOOL_CALL_ID: _text(p.get("call_id")),
                GEN_AI_TOOL_TYPE: "function",
                "tether.idempotency_key": _text(p.get("idempotency_key")),
            },
        )

    def _tool_close(self, run: _Run, event: Event, cycle: Span | None) -> None:
        now = _ns(event.ts)
        seq = self._request_seq(event)
        span = run.tools.pop(seq, None) if seq is not None else None
        if span is None:
            request = run.requested.get(seq) if seq is not None else None
            if request is None:
                # The call was requested in another process: describe it from the result.
                self._tool_open(run, event, cycle, start_ns=now)
                span = run.tools.pop(event.seq)
                span.set_attribute("tether.requested_elsewhere", True)
            else:
                self._tool_open(run, request, cycle, start_ns=now)
                span = run.tools.pop(request.seq)
        p = event.payload
        attempts = p.get("attempts")
        if isinstance(attempts, int):
            span.set_attribute("tether.attempts", attempts)
        span.set_attribute("tether.result_event_id", event.id)
        if event.type != "tool.completed":
            error = p.get("error")
            output = p.get("output")
            self._error(
                span,
                str(error) if isinstance(error, str) else event.type,
                output if isinstance(output, str) else event.type,
            )
        self._end(span, now)

    def _span_event(self, run: _Run, event: Event, cycle: Span | None) -> None:
        now = _ns(event.ts)
        attrs = self._attrs(event.id, event.payload)
        seq = self._request_seq(event)
        target = None
        if seq is not None:
            target = run.tools.get(seq) or run.chats.get(seq)
        (target or cycle or run.span).add_event(event.type, attrs, timestamp=now)

    def _attrs(self, event_id: str, p: dict[str, Any]) -> dict[str, Any]:
        attrs: dict[str, Any] = {"tether.event_id": event_id}
        for key in ("request_id", "decision", "kind", "limit", "reservation_id", "tool"):
            value = p.get(key)
            if isinstance(value, str | int | float | bool):
                attrs[f"tether.{key}"] = self._clean(value) if isinstance(value, str) else value
        for key in ("estimate_usd", "actual_usd"):
            value = p.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attrs[f"tether.{key}"] = float(value)
        return attrs

    def _folded_budget(self, run: _Run, target: Span | None, event: Event, now: int) -> None:
        """A hold carried by a model event gets the span event its own `budget.reserved`
        / `budget.settled` would have had (on the chat span / the cycle, as those)."""
        private = FIELD_VISIBILITY.get(event.type, {}).get(BUDGET_FIELD)
        if target is None or private is None or not can_see(self.role, private):
            return
        held = reserved_in(event)
        if held is not None:
            p: dict[str, Any] = {
                "reservation_id": held.reservation_id, "kind": held.kind,
                "estimate_usd": held.estimate_usd,
            }  # fmt: skip
            target.add_event("budget.reserved", self._attrs(event.id, p), timestamp=now)
            return
        settled = settled_in(event)
        if settled is not None:
            seq = self._request_seq(event)
            request = run.requested.get(seq) if seq is not None else None
            hold = reserved_in(request) if request is not None else None
            if hold is not None and hold.reservation_id != settled.reservation_id:
                hold = None  # a hold taken again after a crash, journaled on its own
            p = {
                "reservation_id": settled.reservation_id, "actual_usd": settled.actual_usd,
                "estimate_usd": hold.estimate_usd if hold is not None else None,
            }  # fmt: skip
            target.add_event("budget.settled", self._attrs(event.id, p), timestamp=now)

    def _finish(self, run: _Run, event: Event) -> None:
        now = _ns(event.ts)
        p = event.payload
        status = event.type.removeprefix("run.")
        self._close_open(run, now, reason=status)
        span = run.span
        span.set_attribute("tether.status", status)
        span.set_attribute("tether.end_event_id", event.id)
        span.set_attribute(GEN_AI_USAGE_INPUT_TOKENS, run.input_tokens)
        span.set_attribute(GEN_AI_USAGE_OUTPUT_TOKENS, run.output_tokens)
        if p.get("partial"):
            span.set_attribute("tether.partial", True)
        if event.type == "run.failed":
            self._error(span, "run.failed", str(p.get("reason") or "failed"))
        self._end(span, now)
        del self.runs[run.run_id]

    def _close_open(self, run: _Run, now: int, *, reason: str) -> None:
        for spans in (run.chats, run.tools):
            for span in spans.values():
                span.set_attribute("tether.interrupted", reason)
                self._end(span, now)
            spans.clear()
        for span in run.cycles.values():
            self._end(span, now)
        run.cycles.clear()

    def end_segment(
        self, run_id: str, *, reason: str = "released", end_ns: int | None = None
    ) -> None:
        """The process stopped driving the run (a pause, a lost lease): end its spans."""
        run = self.runs.pop(run_id, None)
        if run is None:
            return
        now = end_ns if end_ns is not None else max(run.last_ns, time.time_ns())
        self._close_open(run, now, reason=reason)
        run.span.set_attribute("tether.status", reason)
        run.span.set_attribute(GEN_AI_USAGE_INPUT_TOKENS, run.input_tokens)
        run.span.set_attribute(GEN_AI_USAGE_OUTPUT_TOKENS, run.output_tokens)
        self._end(run.span, now)

    # -- flushing -------------------------------------------------------------------------

    def flush(self) -> bool:
        """Export every finished span now (the provider's force_flush), if it can."""
        self._last_flush = time.monotonic()
        self._ended_at_flush = self.spans_ended
        flush = getattr(self.provider, "force_flush", None)
        if flush is None:
            return True
        return bool(flush(self.flush_timeout_ms))

    def flush_due(self) -> bool:
        """Time to flush: `flush_interval_s` passed, or `flush_every_spans` spans ended.

        The span count keeps a batch processor's queue (2,048 spans by default) from ever
        overflowing and dropping spans during a burst: the flush is the back-pressure.
        """
        every = self.flush_every_spans
        if every is not None and self.spans_ended - self._ended_at_flush >= every:
            return True
        interval = self.flush_interval_s
        return interval is not None and time.monotonic() - self._last_flush >= interval

    def close(self, *, reason: str = "process_exit") -> None:
        """The process is done: end every open run segment, export every span, and shut
        the provider down if this observer owns it. Blocking (run it in a thread)."""
        for run_id in list(self.runs):
            self.end_segment(run_id, reason=reason)
        self.flush()
        shutdown = getattr(self.provider, "shutdown", None) if self.owns_provider else None
        if shutdown is not None:
            shutdown()


def _belongs(run: _Run, seq: int, corr: str) -> bool:
    request = run.requested.get(seq)
    return request is not None and request.correlation_id == corr
