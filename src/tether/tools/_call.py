"""Executing one tool call: validate, run with timeout and retries, map failures to results.

Nothing a tool or a model does here can crash the run: every failure becomes an error
result the model reads, with a kind the monitors count. That includes `BaseException`s a
tool raises itself (`SystemExit`, `KeyboardInterrupt`, a `CancelledError` while the run is
not being cancelled); a real cancellation and the chaos crash still pass through.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from ..errors import ApprovalNeeded, HumanInputRequired, SimulatedCrash, ToolRetry
from ..models._validate import clean_text, is_real_cancellation
from ._tool import Tool, ToolContext
from ._validate import BadArguments, ToolExited, load_arguments, render_value

__all__ = ["ErrorKind", "ToolOutcome", "execute", "parse_arguments", "render_output"]

ErrorKind = Literal[
    "unknown_tool", "malformed_arguments", "invalid_arguments", "timeout", "exception",
    "retry_requested", "rejected", "unknown_outcome", "budget_denied", "no_answer", "refused",
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
        arguments = load_arguments(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        return ToolOutcome(
            output=f"error: the arguments are not valid JSON ({exc.msg} at char {exc.pos}); "
            "send a JSON object",
            error="malformed_arguments",
        )
    except BadArguments as exc:
        return ToolOutcome(output=f"error: {exc}; send a JSON object", error="malformed_arguments")
    if not isinstance(arguments, dict):
        return ToolOutcome(
            output="error: the arguments must be a JSON object", error="malformed_arguments"
        )
    try:
        return tool.validate(arguments)
    except ValidationError as exc:
        problems = clean_text("; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
        ))  # fmt: skip
        return ToolOutcome(
            output=f"error: invalid arguments for {tool.name}: {problems}",
            error="invalid_arguments",
        )


def render_output(value: Any) -> str:
    return render_value(value)


def _failed(tool: Tool, exc: BaseException, attempts: int) -> ToolOutcome:
    if isinstance(exc, ToolExited):
        exc = exc.original
    try:
        message = clean_text(str(exc))
    except Exception:  # an exception's own __str__ may raise
        message = "(no message)"
    return ToolOutcome(
        output=f"error: {tool.name} failed: {type(exc).__name__}: {message}",
        error="exception",
        attempts=attempts,
    )


async def execute(tool: Tool, arguments: dict[str, Any], context: ToolContext) -> ToolOutcome:
    """Run the tool with its timeout; transient failures are retried with jittered backoff."""
    attempts = 0
    while True:
        attempts += 1
        try:
            if tool.timeout_s is None:
                value = await tool.invoke(arguments, context)
            else:
                # `asyncio.timeout`, not `wait_for`: the call runs in the caller's task, so a
                # tool that does not wait costs no task, no extra turn of the event loop and
                # no objects left alive while other runs take their turns.
                async with asyncio.timeout(tool.timeout_s):
                    value = await tool.invoke(arguments, context)
            return ToolOutcome(output=render_output(value), attempts=attempts)
        except (HumanInputRequired, ApprovalNeeded):
            raise  # the loop turns it into a durable question or approval
        except ToolRetry as exc:
            return ToolOutcome(
                output=f"error: {clean_text(str(exc))}", error="retry_requested", attempts=attempts
            )
        except TRANSIENT as exc:
            if attempts <= tool.retries:
                delay = tool.retry_backoff_s * 2 ** (attempts - 1)
                await asyncio.sleep(delay * (0.5 + random.random()))
                continue
            if isinstance(exc, TimeoutError):
                abandoned = " (abandoned; it may still be running)" if tool.is_sync else ""
                # A call that was cut off may still have taken effect (a commit, a payment).
                unknown = "" if tool.idempotent else "; its outcome is unknown: check it first"
                return ToolOutcome(
                    output=(
                        f"error: {tool.name} timed out after {tool.timeout_s}s{abandoned}{unknown}"
                    ),
                    error="timeout",
                    attempts=attempts,
                )
            return _failed(tool, exc, attempts)
        except asyncio.CancelledError as exc:
            if is_real_cancellation():
                raise
            return _failed(tool, exc, attempts)  # raised by the tool, not a cancellation
        except SimulatedCrash:
            raise
        except BaseException as exc:  # SystemExit, KeyboardInterrupt from tool code
            return _failed(tool, exc, attempts)
