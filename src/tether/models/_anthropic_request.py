"""Tether's model request in the Messages API's wire format.

System messages become the top-level `system` parameter, joined in order; the rest become
alternating user/assistant turns: consecutive same-role messages are merged, tool results
become `tool_result` blocks in a user turn (placed before any text, as the API requires),
assistant tool calls become `tool_use` blocks whose `input` is the parsed argument text
(`{"_raw": text}` when the stored text is not a JSON object).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import UsageError
from ._base import Message, ToolSpec


def _tool_input(arguments: str) -> dict[str, Any]:
    """The stored argument text as a `tool_use` input object, never raising."""
    if not arguments.strip():
        return {}
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return {"_raw": arguments}
    return parsed if isinstance(parsed, dict) else {"_raw": arguments}


def _message_blocks(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        if not message.tool_call_id:
            raise UsageError("a tool message needs the tool_call_id of the call it answers")
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if message.content:
            result["content"] = message.content
        return "user", [result]
    blocks: list[dict[str, Any]] = []
    if message.content:  # the API rejects empty text blocks
        blocks.append({"type": "text", "text": message.content})
    if message.role == "assistant":
        blocks.extend(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": _tool_input(call.arguments),
            }
            for call in message.tool_calls
        )
    return message.role, blocks


def to_anthropic_messages(
    messages: Sequence[Message],
) -> tuple[str | None, list[dict[str, Any]]]:
    """(system, messages) in the Messages API's shape."""
    system = [m.content for m in messages if m.role == "system" and m.content]
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role, blocks = _message_blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            # tool_result blocks must open the user turn that answers the tool calls
            content = turn["content"]
            turn["content"] = [b for b in content if b["type"] == "tool_result"] + [
                b for b in content if b["type"] != "tool_result"
            ]
    return ("\n\n".join(system) if system else None), turns


def to_anthropic_tools(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for tool in tools:
        schema = dict(tool.parameters) or {"type": "object", "properties": {}}
        schema.setdefault("type", "object")
        spec: dict[str, Any] = {"name": tool.name, "input_schema": schema}
        if tool.description:
            spec["description"] = tool.description
        out.append(spec)
    return out
