"""The Model port: one small async interface every provider implements.

Requests and responses are plain frozen data so they can be journaled as they are and
replayed byte for byte; providers translate them to and from their wire formats.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from ..errors import UsageError

__all__ = [
    "ALLOW_MODEL_REQUESTS",
    "Message",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "ModelUsage",
    "Role",
    "ToolCall",
    "ToolSpec",
    "check_real_calls_allowed",
]

Role = Literal["system", "user", "assistant", "tool"]

ALLOW_MODEL_REQUESTS = os.environ.get("TETHER_ALLOW_MODEL_REQUESTS", "1") != "0"
"""Set TETHER_ALLOW_MODEL_REQUESTS=0 (the test suite does) to make any real provider call fail."""


def check_real_calls_allowed(provider: str) -> None:
    """Called by real providers before any network request."""
    from . import _base

    if not _base.ALLOW_MODEL_REQUESTS:
        raise UsageError(
            f"a real {provider} request was attempted while TETHER_ALLOW_MODEL_REQUESTS=0"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolCall:
    """A call the model asked for. `arguments` is the raw JSON text: it may be malformed."""

    id: str
    name: str
    arguments: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "arguments": self.arguments}


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolSpec:
    """What the model is told about a tool: a name, a description and a JSON schema."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class Message:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    """Assistant messages only: the calls it made."""
    tool_call_id: str | None = None
    """Tool messages only: the call this result answers."""
    name: str | None = None
    """Tool messages only: the tool's name."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelRequest:
    messages: Sequence[Message]
    """The context in order. The runtime passes a `MessageView` (a read-only view that
    behaves as, and equals, the tuple of its messages); any sequence of messages will do."""
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int | None = None
    """Upper bound on output tokens; budgets reserve against it."""
    temperature: float | None = None
    purpose: Literal["turn", "summary"] = "turn"
    """`summary`: the runtime asks for a summary of compacted turns (scripted models answer
    these from their `summaries`)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelUsage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelResponse:
    content: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str
    """Normalised: "stop", "tool_calls", "length", or the provider's own word."""
    usage: ModelUsage
    model: str
    """The model name the provider reported."""

    def to_json(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "tool_calls": [c.to_json() for c in self.tool_calls],
            "finish_reason": self.finish_reason,
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
            },
            "model": self.model,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelResponse:
        return cls(
            content=data["content"],
            tool_calls=tuple(ToolCall(**c) for c in data["tool_calls"]),
            finish_reason=data["finish_reason"],
            usage=ModelUsage(**data["usage"]),
            model=data["model"],
        )


TextSink = Callable[[str], None]


@runtime_checkable
class Model(Protocol):
    """A chat model. Providers raise ModelUnavailable (transient, after their own retries),
    ContextOverflow (the request cannot fit) or ModelError (anything else)."""

    name: str
    """The model's name as priced in the price table (e.g. "gpt-4o-mini")."""
    context_window: int
    """Tokens the model accepts, input and output together."""
    max_output_tokens: int

    async def complete(
        self, request: ModelRequest, *, on_text: TextSink | None = None
    ) -> ModelResponse:
        """Answer one request. `on_text` receives streamed text as it arrives, if any."""
        ...

    def count_tokens(self, messages: Sequence[Message], tools: tuple[ToolSpec, ...] = ()) -> int:
        """Input tokens the request would use; at least the provider's own count."""
        ...
