"""The recording's answers fed back: a model that returns the recorded outcomes in order,
tools that return the recorded results by idempotency key, and tool sources (MCP servers)
that give the journaled tool list. None of them calls anything."""

from __future__ import annotations

import dataclasses
from collections import defaultdict, deque
from collections.abc import Sequence
from typing import Any

from .._clock import FakeClock
from ..errors import (
    ApprovalNeeded,
    ContextOverflow,
    HumanInputRequired,
    ModelError,
    ModelUnavailable,
    ToolRetry,
)
from ..events import Event
from ..loop._sources import LISTING_NOTE
from ..models import (
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ModelUsage,
    ScriptedModel,
    ToolCall,
    ToolSpec,
)
from ..models._base import TextSink
from ..tools import Tool, ToolSession, ToolSource
from ._replay_journal import ReplayError, _epoch

_CTX = "_tether_replay_ctx"


class _Recorded:
    """What the recording answered, in the order it was asked."""

    def __init__(self, events: Sequence[Event]) -> None:
        by_seq = {e.seq: e for e in events}
        self.turns: deque[Event] = deque()
        self.summaries: deque[Event] = deque()
        self.results: dict[str, deque[Event]] = defaultdict(deque)
        self.questions: dict[str, str] = {}
        """Calls whose tool asked a human (`ask_human`), by key: the question."""
        self.asked: dict[str, str] = {}
        """Calls whose tool asked for approval (`ApprovalNeeded`), by key: the reason."""
        key_of_call: dict[tuple[str | None, str], str] = {}
        for e in events:
            cause = by_seq.get(_seq_of(e.causation_id))
            if e.type == "model.completed":
                self.turns.append(e)
            elif e.type == "summary.completed":
                self.summaries.append(e)
            elif e.type == "model.failed":
                summary = e.payload.get("purpose") == "summary"
                (self.summaries if summary else self.turns).append(e)
            elif e.type == "tool.requested":
                key_of_call[(e.correlation_id, e.payload["call_id"])] = e.payload["idempotency_key"]
            elif e.type in ("tool.completed", "tool.failed"):
                key = (
                    cause.payload["idempotency_key"]
                    if cause is not None and cause.type == "tool.requested"
                    else key_of_call.get((e.correlation_id, e.payload["call_id"]))
                )
                if key is not None:
                    self.results[key].append(e)
            elif e.type == "approval.requested" and e.payload.get("kind") == "question":
                call = by_seq.get(int(e.payload.get("call_seq") or 0))
                if call is not None and call.type == "tool.requested":
                    text = e.payload.get("question") or e.payload.get("reason") or ""
                    self.questions[call.payload["idempotency_key"]] = str(text)
            elif e.type == "approval.requested" and e.payload.get("by_tool"):
                call = by_seq.get(int(e.payload.get("call_seq") or 0))
                if call is not None and call.type == "tool.requested":
                    reason = str(e.payload.get("reason") or "")
                    self.asked[call.payload["idempotency_key"]] = reason


def _seq_of(event_id: str | None) -> int:
    if not event_id:
        return 0
    _, _, seq = event_id.rpartition(":")
    return int(seq) if seq.isdigit() else 0


class _ReplayModel:
    """Answers with the recorded model outcomes, in order; calls nothing. Window, output
    bound and token counts are the agent's own model's (counted locally), so context and
    budget decisions are taken as they were. With `script`, the agent's own scripted model
    answers instead (recorded failures still come back where they happened: they were
    the provider's, not the script's)."""

    def __init__(
        self,
        name: str,
        recorded: _Recorded,
        clock: FakeClock,
        counter: Model | None,
        *,
        script: ScriptedModel | None = None,
    ) -> None:
        self.name = name
        self.recorded = recorded
        self.clock = clock
        self.counter = counter
        self.script = script
        self.context_window = counter.context_window if counter else 128_000
        self.max_output_tokens = counter.max_output_tokens if counter else 4_096

    def count_tokens(self, messages: Sequence[Message], tools: tuple[ToolSpec, ...] = ()) -> int:
        if self.counter is None:
            from ..models._tokens import estimate_tokens

            return estimate_tokens(messages, tools)
        # A provider's counter may ask its server (llama.cpp's /tokenize, a count-tokens
        # API); with real requests switched off it counts locally, so nothing is called.
        from ..models import _base

        allowed, _base.ALLOW_MODEL_REQUESTS = _base.ALLOW_MODEL_REQUESTS, False
        try:
            return self.counter.count_tokens(messages, tools)
        finally:
            _base.ALLOW_MODEL_REQUESTS = allowed

    async def complete(
        self, request: ModelRequest, *, on_text: TextSink | None = None
    ) -> ModelResponse:
        queue = self.recorded.summaries if request.purpose == "summary" else self.recorded.turns
        if not queue:
            if self.script is not None:  # past the recording: the script goes on
                return await self.script.complete(request, on_text=on_text)
            raise ModelError("replay: the recording has no more model answers")
        event = queue.popleft()
        self.clock.now = max(self.clock.now, _epoch(event.ts))
        if event.type == "model.failed":
            kind, text = event.payload.get("kind"), str(event.payload.get("error", ""))
            raise {"ModelUnavailable": ModelUnavailable, "ContextOverflow": ContextOverflow}.get(
                str(kind), ModelError
            )(text)
        if self.script is not None:
            return await self.script.complete(request, on_text=on_text)
        p, usage = event.payload, event.usage
        return ModelResponse(
            content=p.get("content", ""),
            tool_calls=tuple(ToolCall(**c) for c in p.get("tool_calls", ())),
            finish_reason=p.get("finish_reason", "stop"),
            usage=ModelUsage(
                input_tokens=usage.input_tokens if usage else 0,
                output_tokens=usage.output_tokens if usage else 0,
            ),
            model=p.get("model", self.name),
        )


def _recorded_tool(tool: Tool, recorded: _Recorded, clock: FakeClock) -> Tool:
    """The tool with its body replaced by the recorded result for the call's key.

    A recorded failure is raised so that the executor gives it the recorded kind
    (`exception`, `timeout`, `retry_requested`) and text: policies such as a circuit
    breaker count failures by kind, so a replay that changed the kind would diverge
    silently. A sync tool stays sync (a timeout's text says whether it was abandoned)."""

    def answer(**kwargs: Any) -> Any:
        key = kwargs[_CTX].idempotency_key
        question = recorded.questions.pop(key, None)
        if question is not None:
            raise HumanInputRequired(question)  # the recorded answer is applied at the pause
        if key in recorded.asked and not kwargs[_CTX].approved:
            raise ApprovalNeeded(recorded.asked[key])  # the recorded decision is applied
        queue = recorded.results.get(key)
        if not queue:
            raise ToolRetry(f"replay: no recorded result for {tool.name} under key {key}")
        event = queue.popleft()
        clock.now = max(clock.now, _epoch(event.ts))
        output = str(event.payload.get("output", ""))
        error = event.payload.get("error")
        if error:
            raise _recorded_failure(tool.name, str(error), output)
        return output

    async def answer_async(**kwargs: Any) -> Any:
        return answer(**kwargs)

    return dataclasses.replace(tool, fn=answer if tool.is_sync else answer_async,
                               context_param=_CTX, retries=0)  # fmt: skip


def _recorded_failure(name: str, kind: str, output: str) -> BaseException:
    """The exception the executor turns into the recorded failure: `error: NAME failed:
    TYPE: MESSAGE` for an exception (TYPE named as recorded, and not transient, so it is
    not retried), a TimeoutError for a timeout, a ToolRetry otherwise."""
    if kind == "timeout":
        return TimeoutError()
    if kind == "exception":
        prefix = f"error: {name} failed: "
        type_name, sep, message = output.removeprefix(prefix).partition(": ")
        if output.startswith(prefix) and sep and type_name.isidentifier():
            recorded_type: type[_RecordedException] = type(type_name, (_RecordedException,), {})
            return recorded_type(message)
    return ToolRetry(output.removeprefix("error: "))


class _RecordedException(Exception):
    """A recorded tool exception, raised again under its recorded type name."""


class _RecordedSource:
    """A tool source (an MCP server) as the recording knew it: its journaled tool list and
    recorded results. It never connects, so a replay neither lists nor calls the server."""

    def __init__(
        self, inner: ToolSource, listings: dict[str, list[Any]], recorded: _Recorded,
        clock: FakeClock,
    ) -> None:  # fmt: skip
        self.inner, self.name = inner, inner.name
        self.listing = listings.get(inner.name)
        self.recorded, self.clock = recorded, clock

    def open(self, run_id: str) -> _RecordedSession:
        return _RecordedSession(self, self.inner.open(run_id))


class _RecordedSession:
    def __init__(self, source: _RecordedSource, inner: ToolSession) -> None:
        self.source, self.inner = source, inner

    async def list_tools(self) -> list[dict[str, Any]]:
        if self.source.listing is None:
            raise ReplayError(f"the recording has no tool list of source {self.source.name!r}")
        return self.source.listing

    def tools(self, listing: list[dict[str, Any]]) -> Sequence[Tool]:
        return [
            _recorded_tool(t, self.source.recorded, self.source.clock)
            for t in self.inner.tools(listing)
        ]

    async def aclose(self) -> None:
        await self.inner.aclose()  # nothing was opened: the inner session was never used


def _listings(events: Sequence[Event]) -> dict[str, list[Any]]:
    """The tool lists the recording journaled, by source (the first of each)."""
    found: dict[str, list[Any]] = {}
    for e in events:
        if e.type == "note" and e.payload.get("kind") == LISTING_NOTE:
            found.setdefault(str(e.payload["source"]), list(e.payload["tools"]))
    return found
