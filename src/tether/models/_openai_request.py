"""Tether's model request in the chat-completions wire format.

Tools become `{"type": "function", "function": ...}`; assistant tool calls go out as
`tool_calls` with their argument text unchanged when it is a JSON object (else wrapped
as `{"_raw": text}`); tool results as `role: "tool"` messages with their `tool_call_id`.
`max_tokens` is always sent: the request's bound, capped at `max_output_tokens`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import UsageError
from ._base import Message, ModelRequest, ToolSpec


def request_kwargs(
    request: ModelRequest,
    *,
    model: str,
    extra: Mapping[str, Any],
    max_tokens_param: str,
    max_output_tokens: int,
) -> dict[str, Any]:
    """The keyword arguments for `chat.completions.create` (without `stream`)."""
    kwargs: dict[str, Any] = dict(extra)
    kwargs["model"] = model
    kwargs["messages"] = [_message_to_wire(m) for m in request.messages]
    if request.tools:
        kwargs["tools"] = [_tool_to_wire(t) for t in request.tools]
    if request.max_tokens is not None and request.max_tokens < 1:
        raise UsageError(f"max_tokens must be at least 1, not {request.max_tokens}")
    kwargs[max_tokens_param] = (
        max_output_tokens
        if request.max_tokens is None
        else min(request.max_tokens, max_output_tokens)
    )
    if request.temperature is not None:
        kwargs["temperature"] = request.temperature
    return kwargs


def _wire_arguments(arguments: str) -> str:
    """Argument text to send back in the history: as stored when it is a JSON object, else
    wrapped as `{"_raw": text}` (servers that render calls through a chat template, such as
    llama.cpp, reject unparsable arguments with an HTTP 500 that no retry can fix)."""
    if not arguments.strip():
        return "{}"
    try:
        parsed = json.loads(arguments)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        return arguments
    return json.dumps({"_raw": arguments})


def _message_to_wire(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        if message.tool_call_id is None:
            raise UsageError("a tool message needs the tool_call_id of the call it answers")
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": _wire_arguments(call.arguments)},
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content}


def _tool_to_wire(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }
