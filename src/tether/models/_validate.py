"""The model boundary: what a provider hands back is untrusted input.

`complete_checked` calls a model and turns whatever comes back into either a clean
`ModelResponse` (plus warnings about what had to be repaired) or a `ModelError` the loop
already knows how to journal. Nothing a model returns or raises can leave a run
`running`: a wrong type, an exception of any kind (a `BaseException` raised by the
provider's own code included) and text the journal cannot encode are all handled here.

Decisions, so every reader knows what a repaired response means:

- **Usage** must be a non-negative integer below 2**53. Anything else (negative, NaN,
  a float, a bool, an absurd count) is replaced by the request's estimate: the input
  tokens counted before the call and the request's output bound. The estimate is what was
  reserved, so a provider can never credit a budget, and a warning says it happened.
- **Text** (content, tool names, call ids, arguments) is made valid UTF-8: lone surrogates
  become U+FFFD. NUL becomes U+FFFD too, so a text behaves the same on SQLite and
  PostgreSQL (whose text columns refuse it).
- **Shape**: `None` content is the empty string; `None` arguments are `{}`; a dict of
  arguments is encoded as JSON; a call without an id gets one from its position, and a
  call whose id repeats an earlier one of the turn is renamed (results are matched to
  calls by id: a repeat would let one result close both). A response that is not a
  `ModelResponse` at all is a `ModelError`.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ModelError, ModelUnavailable, SimulatedCrash
from ._base import Model, ModelRequest, ModelResponse, ModelUsage, ToolCall

__all__ = ["Checked", "clean_text", "complete_checked", "is_real_cancellation"]

_SURROGATE = re.compile("[\ud800-\udfff]")

MAX_TOKENS_REPORTED = 2**53
"""Above this a count is not a count (and would lose precision as a JSON number)."""
MAX_ERROR_CHARS = 500
"""A provider's error text is kept short: it may echo the whole request back."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Checked:
    """A response fit for the journal, and what had to be repaired to make it so."""

    response: ModelResponse
    warnings: tuple[str, ...] = ()


def clean_text(value: str) -> str:
    """Valid UTF-8 with no NUL: lone surrogates and NUL become U+FFFD."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = _SURROGATE.sub("\ufffd", value)
    return value


def is_real_cancellation() -> bool:
    """Whether the running task was asked to stop (not just handed a CancelledError)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _described(exc: BaseException) -> str:
    try:
        text = clean_text(str(exc))
    except Exception:  # an exception's own __str__ may raise
        text = ""
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def complete_checked(
    model: Model, request: ModelRequest, *, input_estimate: Callable[[], int]
) -> Checked:
    """Call `model`; return a clean response, or raise a `ModelError` the loop journals.

    A timeout or a `CancelledError` the provider raised without the run being cancelled is
    transient (`ModelUnavailable`, retried); any other exception is a `ModelError`. A
    real cancellation and the chaos crash pass through untouched.
    """
    try:
        raw: Any = await model.complete(request)
    except (ModelError, SimulatedCrash):
        raise
    except asyncio.CancelledError as exc:
        if is_real_cancellation():
            raise
        raise ModelUnavailable(f"the model call was cancelled ({_described(exc)})") from None
    except (TimeoutError, ConnectionError) as exc:
        raise ModelUnavailable(f"the model call failed: {_described(exc)}") from None
    except BaseException as exc:  # provider code is untrusted, SystemExit included
        raise ModelError(f"the model raised {_described(exc)}") from None
    return check_response(raw, request=request, input_estimate=input_estimate)


def check_response(
    raw: Any, *, request: ModelRequest, input_estimate: Callable[[], int]
) -> Checked:
    """`raw` as a clean response; `input_estimate` is called only if usage needs it."""
    if not isinstance(raw, ModelResponse):
        raise ModelError(f"the model returned {type(raw).__name__}, not a ModelResponse")
    warnings: list[str] = []

    def text(value: Any, what: str, default: str = "") -> str:
        if value is None:
            return default
        if not isinstance(value, str):
            warnings.append(f"{what} was {type(value).__name__}, not text")
            value = str(value)
        cleaned = clean_text(value)
        if cleaned != value:
            warnings.append(f"{what} held NUL or unpaired surrogates (replaced by U+FFFD)")
        return cleaned

    calls_in: Any = raw.tool_calls
    if calls_in is None:
        calls_in = ()
    if not isinstance(calls_in, (tuple, list)):
        raise ModelError(f"the model's tool_calls is {type(calls_in).__name__}, not a list")
    calls: list[ToolCall] = []
    seen: set[str] = set()
    for index, call in enumerate(calls_in):
        if not isinstance(call, ToolCall):
            raise ModelError(f"tool call {index + 1} is {type(call).__name__}, not a ToolCall")
        call_id = text(call.id, "a call id", default=f"call_{index}") or f"call_{index}"
        if call_id in seen:
            warnings.append("two tool calls of one turn had the same id (the later renamed)")
            base, n = call_id, index
            while call_id in seen:
                call_id, n = f"{base}#{n}", n + 1
        seen.add(call_id)
        calls.append(
            ToolCall(
                id=call_id,
                name=text(call.name, "a tool name"),
                arguments=_arguments(call.arguments, warnings),
            )
        )
    output_bound = request.max_tokens if request.max_tokens is not None else 0
    usage = _usage(raw.usage, input_estimate, output_bound, warnings)
    response = ModelResponse(
        content=text(raw.content, "the answer"),
        tool_calls=tuple(calls),
        finish_reason=text(raw.finish_reason, "the finish reason", default="stop") or "stop",
        usage=usage,
        model=text(raw.model, "the model name"),
    )
    return Checked(response=response, warnings=tuple(dict.fromkeys(warnings)))


def _arguments(value: Any, warnings: list[str]) -> str:
    if value is None:
        return "{}"
    if isinstance(value, str):
        cleaned = clean_text(value)
        if cleaned != value:
            warnings.append("arguments held NUL or unpaired surrogates (replaced by U+FFFD)")
        return cleaned
    try:
        return clean_text(json.dumps(value, allow_nan=False, sort_keys=True))
    except (TypeError, ValueError, RecursionError):
        warnings.append(f"arguments were {type(value).__name__}, not JSON text")
        return clean_text(repr(value))[:1_000]


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        else:
            return None
    return value if 0 <= value < MAX_TOKENS_REPORTED else None


def _usage(
    usage: Any, input_estimate: Callable[[], int], output_bound: int, warnings: list[str]
) -> ModelUsage:
    input_tokens = _count(getattr(usage, "input_tokens", None))
    output_tokens = _count(getattr(usage, "output_tokens", None))
    if input_tokens is None:
        warnings.append("the model reported an invalid input token count; charged the estimate")
        input_tokens = max(0, input_estimate())
    if output_tokens is None:
        warnings.append("the model reported an invalid output token count; charged the bound")
        output_tokens = max(0, output_bound)
    return ModelUsage(input_tokens=input_tokens, output_tokens=output_tokens)
