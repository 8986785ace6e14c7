"""A chat completion, whole or streamed, read back into Tether's `ModelResponse`.

Argument text is kept exactly as the model wrote it, even when it is not valid JSON (a
call cut off by `max_tokens` comes back with `finish_reason="length"`), and a server
that reports no usage is charged the conservative estimate, never zero: budgets charge
these numbers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelError
from ._base import ModelResponse, ModelUsage, TextSink, ToolCall
from ._openai_errors import PROVIDER
from ._provider import Retryable, emit
from ._tokens import MESSAGE_OVERHEAD, estimate_text_tokens


@dataclass
class Reply:
    """What one attempt got back, before usage the server left out is estimated."""

    content: str
    calls: tuple[ToolCall, ...]
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    model: str | None


def read_completion(response: Any) -> Reply:
    """The reply in a whole (not streamed) completion."""
    if not response.choices:
        raise ModelError(f"{PROVIDER}: the response has no choices")
    choice = response.choices[0]
    message = choice.message
    calls: list[ToolCall] = []
    for call in message.tool_calls or ():
        function = getattr(call, "function", None)
        if function is None:  # a non-function (custom) tool call: not ours
            continue
        calls.append(
            ToolCall(
                id=call.id or _new_call_id(),
                name=function.name or "",
                arguments=function.arguments or "",
            )
        )
    usage = response.usage
    return Reply(
        content=message.content or "",
        calls=tuple(calls),
        finish_reason=choice.finish_reason,
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        completion_tokens=getattr(usage, "completion_tokens", None),
        model=response.model,
    )


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


async def read_stream(stream: Any, on_text: TextSink | None) -> Reply:
    """The reply a stream of chunks adds up to, its text passed to `on_text` as it comes;
    the stream is closed on every way out. A stream that ends before its finish_reason
    is `Retryable`."""
    text: list[str] = []
    partial: dict[int, _PartialCall] = {}
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    model: str | None = None
    try:
        async for chunk in stream:
            model = chunk.model or model
            if chunk.usage is not None:
                prompt_tokens = chunk.usage.prompt_tokens
                completion_tokens = chunk.usage.completion_tokens
            for choice in chunk.choices or ():  # the usage chunk has none
                if choice.index not in (0, None):
                    continue
                if choice.finish_reason is not None:
                    finish_reason = choice.finish_reason
                delta = choice.delta
                if delta is None:
                    continue
                for position, call_delta in enumerate(delta.tool_calls or ()):
                    index = call_delta.index if call_delta.index is not None else position
                    slot = partial.setdefault(index, _PartialCall())
                    if call_delta.id and not slot.id:
                        slot.id = call_delta.id
                    function = call_delta.function
                    if function is not None:
                        if function.name:
                            slot.name += function.name
                        if function.arguments:
                            slot.arguments.append(function.arguments)
                if delta.content:
                    text.append(delta.content)
                    emit(on_text, delta.content)
    finally:
        await stream.close()
    if finish_reason is None:
        raise Retryable("the response stream ended before its finish_reason")
    calls = tuple(
        ToolCall(id=slot.id or _new_call_id(), name=slot.name, arguments="".join(slot.arguments))
        for _, slot in sorted(partial.items())
    )
    return Reply(
        content="".join(text),
        calls=calls,
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        model=model,
    )


def to_response(reply: Reply, *, prompt_estimate: Callable[[], int], model: str) -> ModelResponse:
    """The reply as a `ModelResponse`. Usage a server omits (or reports as 0) is estimated:
    the prompt by `prompt_estimate()`, the completion from its text and calls. `model` is
    the name to record when the server sends none."""
    prompt_tokens = reply.prompt_tokens
    completion_tokens = reply.completion_tokens
    if not prompt_tokens or prompt_tokens < 0:
        prompt_tokens = max(1, prompt_estimate())
    if not completion_tokens or completion_tokens < 0:
        completion_tokens = max(
            1,
            estimate_text_tokens(reply.content)
            + sum(
                MESSAGE_OVERHEAD + estimate_text_tokens(c.name + c.arguments) for c in reply.calls
            ),
        )
    return ModelResponse(
        content=reply.content,
        tool_calls=reply.calls,
        finish_reason=_normalise_finish_reason(reply.finish_reason, bool(reply.calls)),
        usage=ModelUsage(input_tokens=prompt_tokens, output_tokens=completion_tokens),
        model=reply.model or model,
    )


def _normalise_finish_reason(reason: str | None, has_calls: bool) -> str:
    """Normalise to "stop", "tool_calls", "length", or the provider's own word.

    A call that was cut off keeps "length" (its arguments may be truncated); servers that
    say "stop" (or nothing) while returning calls get "tool_calls"."""
    if reason in ("length", "max_tokens"):
        return "length"
    if reason in ("tool_calls", "function_call"):
        return "tool_calls"
    if reason in (None, "", "stop", "eos", "end_turn", "stop_sequence"):
        return "tool_calls" if has_calls else "stop"
    return reason


def _new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"
