"""Journal events to OpenTelemetry spans (GenAI semantic conventions), one run segment at a time.

Here: the observer itself, which spans an event opens or ends (run segments, cycles, the
run's end) and flushing. Model and tool calls are `_call_spans`, the span plumbing
`_spans`, the attribute names `_semconv`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .._redact import Redactor, default_redactor, secrets_generation
from ..errors import UsageError
from ..events import Event
from ..views import Role, can_see
from ._call_spans import _CallSpans
from ._semconv import (
    GEN_AI_AGENT_NAME,
    GEN_AI_AGENT_VERSION,
    GEN_AI_OPERATION_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    _provider,
)
from ._spans import _belongs, _ns, _Run

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

INSTRUMENTATION_NAME = "tether"
OTEL_ENV = "TETHER_OTEL"
"""The environment variable `observer_from_env` reads: unset, `console` or `otlp`."""

_INSTALL_OTEL = (
    "OpenTelemetry is not installed: pip install 'tether-runtime[otel]' "
    "(opentelemetry-api and opentelemetry-sdk)"
)

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


class TelemetryObserver(_CallSpans):
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
