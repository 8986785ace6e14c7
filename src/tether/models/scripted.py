"""A deterministic model for tests, the demo and replays.

It answers from a script: a list of turns, or a function of the request. It keeps no
state between calls, so a run resumed in another process gets the same answers: a list
script picks its turn by the number of assistant messages already in the request.
Usage is estimated from the text and priced like a small real model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ContextOverflow, ModelError
from ._base import Message, ModelRequest, ModelResponse, ModelUsage, TextSink, ToolCall, ToolSpec
from ._tokens import estimate_text_tokens, estimate_tokens

__all__ = ["ScriptedModel", "Turn", "call"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Turn:
    """One scripted answer: text, tool calls, or both."""

    text: str = ""
    calls: tuple[tuple[str, dict[str, Any] | str], ...] = ()
    """(tool name, arguments); a str is sent as raw (possibly malformed) JSON text."""
    finish_reason: str | None = None


def call(name: str, arguments: dict[str, Any] | str | None = None, *, text: str = "") -> Turn:
    """A turn that calls one tool."""
    return Turn(text=text, calls=((name, arguments if arguments is not None else {}),))


Script = Sequence[Turn | str] | Callable[[ModelRequest], Turn | str]
Summaries = Callable[[ModelRequest], str]
"""Answers summary requests (`ModelRequest.purpose == "summary"`); see `loop/_summary.py`."""


class ScriptedModel:
    """Answers from `script`; a `str` turn is a final text answer.

    Summary requests are answered by `summaries`; without it they fail with a ModelError,
    so the runtime falls back to its extractive summary. `context_window` is enforced the
    way providers enforce it: a request that does not fit raises ContextOverflow.
    """

    def __init__(
        self,
        script: Script,
        *,
        name: str = "scripted",
        context_window: int = 128_000,
        max_output_tokens: int = 4_096,
        summaries: Summaries | None = None,
    ) -> None:
        self.script = script
        self.summaries = summaries
        self.name = name
        self.context_window = context_window
        self.max_output_tokens = max_output_tokens
        self.calls = 0
        """Requests answered by this instance (for tests; not used to pick turns)."""

    def count_tokens(self, messages: Sequence[Message], tools: tuple[ToolSpec, ...] = ()) -> int:
        return estimate_tokens(messages, tools)

    def _turn(self, request: ModelRequest) -> Turn:
        if callable(self.script):
            turn = self.script(request)
        else:
            index = sum(1 for m in request.messages if m.role == "assistant")
            if index >= len(self.script):
                raise ModelError(f"the script has no turn {index + 1} (it has {len(self.script)})")
            turn = self.script[index]
        return Turn(text=turn) if isinstance(turn, str) else turn

    async def complete(
        self, request: ModelRequest, *, on_text: TextSink | None = None
    ) -> ModelResponse:
        self.calls += 1
        input_tokens = self.count_tokens(request.messages, request.tools)
        if input_tokens > self.context_window:
            raise ContextOverflow(
                f"request of ~{input_tokens} tokens exceeds the {self.context_window}-token window"
            )
        if request.purpose == "summary":
            return self._summary(request, input_tokens)
        turn = self._turn(request)
        cycle = sum(1 for m in request.messages if m.role == "assistant") + 1
        calls = tuple(
            ToolCall(
                id=f"call_{cycle}_{i}",
                name=name,
                arguments=args if isinstance(args, str) else json.dumps(args, sort_keys=True),
            )
            for i, (name, args) in enumerate(turn.calls)
        )
        if on_text and turn.text:
            on_text(turn.text)
        output_tokens = estimate_text_tokens(turn.text) + sum(
            estimate_text_tokens(c.name + c.arguments) for c in calls
        )
        if request.max_tokens is not None:
            output_tokens = min(output_tokens, request.max_tokens)
        return ModelResponse(
            content=turn.text,
            tool_calls=calls,
            finish_reason=turn.finish_reason or ("tool_calls" if calls else "stop"),
            usage=ModelUsage(input_tokens=input_tokens, output_tokens=output_tokens),
            model=self.name,
        )

    def _summary(self, request: ModelRequest, input_tokens: int) -> ModelResponse:
        if self.summaries is None:
            raise ModelError("this scripted model has no summaries to give")
        text = self.summaries(request)
        return ModelResponse(
            content=text,
            tool_calls=(),
            finish_reason="stop",
            usage=ModelUsage(input_tokens=input_tokens, output_tokens=estimate_text_tokens(text)),
            model=self.name,
        )
