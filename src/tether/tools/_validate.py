"""The tool boundary: arguments a model wrote and values a tool returned are untrusted.

Arguments are parsed with bounds (size, nesting, number length, no NaN), so no text a
model writes can raise out of the parser; values a tool returns or raises are turned into
text the journal can encode. What a tool receives is unchanged: `json_safe` is only for
copies of arguments that go into the journal (an approval request).
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic_core import to_jsonable_python

from ..models._validate import clean_text

__all__ = [
    "MAX_ARGUMENT_CHARS",
    "MAX_ARGUMENT_DEPTH",
    "BadArguments",
    "ToolExited",
    "json_safe",
    "load_arguments",
    "render_value",
]

MAX_ARGUMENT_CHARS = 1_000_000
"""Arguments longer than this are refused before parsing: no tool needs a megabyte of JSON."""
MAX_ARGUMENT_DEPTH = 64
"""Deeper nesting is refused before parsing (Python's parser recurses per level)."""


class ToolExited(Exception):
    """A tool raised SystemExit or KeyboardInterrupt itself; `original` is what it raised."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


class BadArguments(ValueError):
    """The arguments text cannot be used; the message is what the model is told."""


def _refuse_constant(name: str) -> Any:
    raise BadArguments(f"{name} is not a JSON number")


def _depth(text: str) -> int:
    """The deepest bracket nesting outside strings, found without recursing."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def load_arguments(raw: str) -> Any:
    """Parse a model's arguments text; raises `BadArguments` (a ValueError) or
    `json.JSONDecodeError` with a message fit for the model."""
    if len(raw) > MAX_ARGUMENT_CHARS:
        raise BadArguments(
            f"the arguments are {len(raw)} characters (at most {MAX_ARGUMENT_CHARS})"
        )
    if ("[" in raw or "{" in raw) and _depth(raw) > MAX_ARGUMENT_DEPTH:
        raise BadArguments(f"the arguments nest deeper than {MAX_ARGUMENT_DEPTH} levels")
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, BadArguments):
        raise
    except (ValueError, RecursionError) as exc:  # e.g. an integer of 5,000 digits
        raise BadArguments(f"the arguments cannot be read: {clean_text(str(exc))[:200]}") from None


def json_safe(value: Any) -> Any:
    """A JSON-encodable copy (datetimes as ISO text, non-finite floats as text)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int)):
        return value
    try:
        return json_safe(to_jsonable_python(value, fallback=str))
    except Exception:  # a value's own __str__ may fail too
        return f"<{type(value).__name__}>"


def render_value(value: Any) -> str:
    """A tool's return value as the text the model reads and the journal keeps."""
    if isinstance(value, str):
        return clean_text(value)
    if value is None:
        return "ok"
    try:
        text = json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        try:
            text = json.dumps(json_safe(value), ensure_ascii=False, sort_keys=True, default=str)
        except (TypeError, ValueError, RecursionError):
            text = f"<a {type(value).__name__} that cannot be rendered as JSON>"
    return clean_text(text)
