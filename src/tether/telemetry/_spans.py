"""What the observer's spans are built with: a run's open spans (`_Run`), journal values as
span times and attributes, and `_SpanWriter`, which starts, ends and marks spans (error
texts and attribute strings redacted for the observer's role)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .._redact import Redactor, default_redactor, secrets_generation
from ..events import Event
from ..views import Role
from ._semconv import ERROR_TYPE, GEN_AI_CONVERSATION_ID

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer


def _ns(ts: str) -> int:
    """A journal timestamp (UTC ISO-8601, microseconds) in nanoseconds since the epoch."""
    d = datetime.fromisoformat(ts)
    return int(d.timestamp()) * 1_000_000_000 + d.microsecond * 1_000


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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


def _belongs(run: _Run, seq: int, corr: str) -> bool:
    request = run.requested.get(seq)
    return request is not None and request.correlation_id == corr


class _SpanWriter:
    """The span-writing part of `TelemetryObserver` (which sets these attributes up)."""

    _trace: Any
    tracer: Tracer
    role: Role
    redactor: Redactor | None
    _generation: int | None
    runs: dict[str, _Run]
    spans_started: int
    spans_ended: int

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
