"""Model and tool calls as spans: a chat span per model call (retries included), an
execute_tool span per tool call, and the span events of approvals, budget checks and the
like on the call or cycle they belong to."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..budget._journaled import BUDGET_FIELD, reserved_in, settled_in
from ..events import Event
from ..views import FIELD_VISIBILITY, can_see
from ._semconv import (
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_MAX_TOKENS,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_TOOL_CALL_ID,
    GEN_AI_TOOL_NAME,
    GEN_AI_TOOL_TYPE,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
)
from ._spans import _int, _ns, _Run, _SpanWriter, _text

if TYPE_CHECKING:
    from opentelemetry.trace import Span


class _CallSpans(_SpanWriter):
    """The model- and tool-call part of `TelemetryObserver`."""

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
