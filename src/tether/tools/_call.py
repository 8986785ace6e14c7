"""Executing one tool call: validate, run with timeout and retries, map failures to results.

Nothing a tool or a model does here can crash the run: every failure becomes an error
result the model reads, with a kind the monitors count.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from ..errors import HumanInputRequired, ToolRetry
from ._tool import Tool, ToolContext

__all__ = ["ErrorKind", "ToolOutcome", "execute", "parse_arguments", "render_output"]

ErrorKind = Literal[
    "unknown_tool", "malformed_arguments", "invalid_arguments", "timeout", "exception",
    "retry_requested", "rejected", "unknown_outcome", "budget_denied", "no_answer",
]  # fmt: skip

TRANSIENT = (TimeoutError, ConnectionError)


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolOutcome:
    output: str
    error: ErrorKind | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


def parse_arguments(tool: Tool | None, name: str, raw: str) -> dict[str, Any] | ToolOutcome:
    """Arguments ready to call with, or the error result the model should see instead."""
    if tool is None:
        return ToolOutcome(output=f"error: there is no tool named {name!r}", error="unknown_tool")
    try:
        arguments = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        return ToolOutcome(
            output=f"error: the arguments are not valid JSON ({exc.msg} at char {exc.pos}); "
            "send a JSON object",
            error="malformed_arguments",
        )
    if not isinstance(arguments, dict):
        return ToolOutcome(
            output="error: the arguments must be a JSON object", error="malformed_arguments"
        )
    try:
        return tool.validate(arguments)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
        )
        return ToolOutcome(
            output=f"error: invalid arguments for {tool.name}: {problems}",
            error="invalid_arguments",
        )


def render_output(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "ok"
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)


async def execute(tool: Tool, arguments: dict[str, Any], context: ToolContext) -> ToolOutcome:
    """Run the tool with its timeout; transient failures are retried with jittered backoff."""
    attempts = 0
    while True:
        attempts += 1
        try:
            if tool.timeout_s is None:
                value = await tool.invoke(arguments, context)
            else:
                value = await asyncio.wait_for(tool.invoke(arguments, context), tool.timeout_s)
            return ToolOutcome(output=render_output(value), attempts=attempts)
        except HumanInputRequired:
            raise  # the loop turns it into a durable question
        except ToolRetry as exc:
            return ToolOutcome(output=f"error: {exc}", error="retry_requested", attempts=attempts)
        except TRANSIENT as exc:
            if attempts <= tool.retries:
                delay = tool.retry_backoff_s * 2 ** (attempts - 1)
                await asyncio.sleep(delay * (0.5 + random.random()))
                continue
            if isinstance(exc, TimeoutError):
                return ToolOutcome(
                    output=f"error: {tool.name} timed out after {tool.timeout_s}s",
                    error="timeout",
                    attempts=attempts,
                )
            return ToolOutcome(
                output=f"error: {tool.name} failed: {type(exc).__name__}: {exc}",
                error="exception",
                attempts=attempts,
            )
        except Exception as exc:
            return ToolOutcome(
                output=f"error: {tool.name} failed: {type(exc).__name__}: {exc}",
                error="exception",
                attempts=attempts,
            )
