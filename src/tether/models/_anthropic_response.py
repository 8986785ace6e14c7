"""A Messages API response read back: a whole message, or a stream reassembled from its raw
events, as the port's `ModelResponse` (cache reads and writes counted as input tokens)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ._base import ModelResponse, ModelUsage, TextSink, ToolCall
from ._provider import emit

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
}
"""Anthropic's stop_reason -> Tether's finish_reason; others ("refusal", "pause_turn")
pass through as the provider's own word."""


def _finish_reason(stop_reason: str | None, has_calls: bool) -> str:
    if stop_reason is None:
        return "tool_calls" if has_calls else "stop"
    return FINISH_REASONS.get(stop_reason, stop_reason)


def _arguments_text(raw: str) -> str:
    """Streamed tool input JSON as canonical text; left as sent if it is malformed."""
    if not raw.strip():
        return "{}"
    try:
        return json.dumps(json.loads(raw), sort_keys=True)
    except ValueError:
        return raw


@dataclass(slots=True)
class _Block:
    type: str
    text: list[str] = field(default_factory=list)
    id: str = ""
    name: str = ""
    start_input: Any = None
    json_parts: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _StreamState:
    """A streamed message reassembled from raw events."""

    model: str = ""
    blocks: dict[int, _Block] = field(default_factory=dict)
    stop_reason: str | None = None
    input_tokens: int = 0
    cache_creation: int = 0
    cache_read: int = 0
    output_tokens: int = 0
    stopped: bool = False

    def usage(self, usage: Any, *, start: bool) -> None:
        if usage is None:
            return
        # message_delta counts are cumulative and optional; message_start's are complete.
        for attr, name in (
            ("input_tokens", "input_tokens"),
            ("cache_creation", "cache_creation_input_tokens"),
            ("cache_read", "cache_read_input_tokens"),
            ("output_tokens", "output_tokens"),
        ):
            value = getattr(usage, name, None)
            if value is not None or start:
                setattr(self, attr, int(value or 0))


def from_message(message: Any) -> ModelResponse:
    """A whole (not streamed) message as the port's response."""
    text: list[str] = []
    calls: list[ToolCall] = []
    for block in message.content or ():
        if block.type == "text":
            text.append(block.text)
        elif block.type == "tool_use":
            calls.append(
                ToolCall(
                    id=block.id,
                    name=block.name,
                    arguments=json.dumps(block.input, sort_keys=True),
                )
            )
        # thinking and server-tool blocks carry nothing the port has a place for
    usage = message.usage
    input_tokens = (
        usage.input_tokens
        + (getattr(usage, "cache_creation_input_tokens", None) or 0)
        + (getattr(usage, "cache_read_input_tokens", None) or 0)
    )
    return ModelResponse(
        content="".join(text),
        tool_calls=tuple(calls),
        finish_reason=_finish_reason(message.stop_reason, bool(calls)),
        usage=ModelUsage(input_tokens=input_tokens, output_tokens=usage.output_tokens),
        model=str(message.model),
    )


def on_stream_event(state: _StreamState, event: Any, on_text: TextSink | None) -> None:
    """One raw stream event folded into `state`; text passed on to `on_text` as it comes."""
    kind = event.type
    if kind == "message_start":
        state.model = str(event.message.model)
        state.usage(event.message.usage, start=True)
    elif kind == "content_block_start":
        block = event.content_block
        entry = _Block(type=block.type)
        if block.type == "tool_use":
            entry.id, entry.name, entry.start_input = block.id, block.name, block.input
        elif block.type == "text" and block.text:
            entry.text.append(block.text)
            emit(on_text, block.text)
        state.blocks[event.index] = entry
    elif kind == "content_block_delta":
        entry = state.blocks.setdefault(event.index, _Block(type="unknown"))
        delta = event.delta
        if delta.type == "text_delta":
            entry.text.append(delta.text)
            emit(on_text, delta.text)
        elif delta.type == "input_json_delta":
            entry.json_parts.append(delta.partial_json)
        # thinking, signature and citations deltas are not kept
    elif kind == "message_delta":
        state.stop_reason = event.delta.stop_reason or state.stop_reason
        state.usage(event.usage, start=False)
    elif kind == "message_stop":
        state.stopped = True


def from_stream(state: _StreamState) -> ModelResponse:
    """The response a finished stream adds up to."""
    text: list[str] = []
    calls: list[ToolCall] = []
    for index in sorted(state.blocks):
        block = state.blocks[index]
        if block.type == "text":
            text.extend(block.text)
        elif block.type == "tool_use":
            if block.json_parts:
                arguments = _arguments_text("".join(block.json_parts))
            else:
                arguments = json.dumps(block.start_input or {}, sort_keys=True)
            calls.append(ToolCall(id=block.id, name=block.name, arguments=arguments))
    return ModelResponse(
        content="".join(text),
        tool_calls=tuple(calls),
        finish_reason=_finish_reason(state.stop_reason, bool(calls)),
        usage=ModelUsage(
            input_tokens=state.input_tokens + state.cache_creation + state.cache_read,
            output_tokens=state.output_tokens,
        ),
        model=state.model,
    )
