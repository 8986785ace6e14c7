"""The Anthropic SDK's failures as Tether's errors, so one retry policy decides what to retry.

408, 429, 5xx (529 included), timeouts, connection failures and in-stream
`overloaded_error`/`api_error` events are `Retryable`; a prompt the API calls too long is
`ContextOverflow`; every other failure is `ModelError`.
"""

from __future__ import annotations

import re
import sys
from typing import Any

from ..errors import ContextOverflow, ModelError
from ._provider import Retryable, retry_after

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 529})
"""Besides these, any status >= 500 is retried."""
RETRYABLE_ERROR_TYPES = frozenset(
    {"overloaded_error", "rate_limit_error", "api_error", "timeout_error"}
)
"""`error.type` values (also sent as in-stream `error` events) that are transient."""

_CONTEXT_OVERFLOW = re.compile(
    r"prompt is too long|exceeds? (?:the )?(?:model'?s? )?context (?:limit|window)"
    r"|context (?:limit|window) (?:exceeded|is exceeded)",
    re.IGNORECASE,
)
"""How the API words a request that cannot fit, e.g. "prompt is too long: 210000 tokens >
200000 maximum" or "input length and `max_tokens` exceed context limit: ..."."""


def translate(sdk: Any, name: str, exc: Exception) -> Exception:
    """An SDK or transport failure as Retryable, ContextOverflow or ModelError."""
    if isinstance(exc, Retryable | ModelError):
        return exc
    if isinstance(exc, sdk.APIStatusError):
        status = exc.status_code
        error = _error_body(exc.body)
        error_type, message = error.get("type"), str(error.get("message") or exc.message)
        # an `error` event inside a 200 stream arrives with the stream's status
        where = f"anthropic {name}: " + (
            f"HTTP {status}" if status >= 400 else "error event in the response stream"
        )
        if status == 413:
            return ContextOverflow(f"{where}: the request is too large ({message})")
        if (status == 400 or status < 300) and _CONTEXT_OVERFLOW.search(message):
            return ContextOverflow(f"{where}: {message}")
        transient = isinstance(error_type, str) and error_type in RETRYABLE_ERROR_TYPES
        if status in RETRYABLE_STATUS or status >= 500 or transient:
            return Retryable(
                f"{where}: {message}", retry_after(getattr(exc.response, "headers", None))
            )
        return ModelError(f"{where}: {message}")
    if isinstance(exc, sdk.APITimeoutError):
        return Retryable(f"anthropic {name}: the request timed out")
    if isinstance(exc, sdk.APIConnectionError):
        return Retryable(f"anthropic {name}: connection failed ({exc})")
    if isinstance(exc, _transport_errors()):
        return Retryable(f"anthropic {name}: {type(exc).__name__}: {exc}")
    # anything else (a malformed response, an SDK-side check) is not worth a retry
    return ModelError(f"anthropic {name}: {type(exc).__name__}: {exc}")


def _error_body(body: object) -> dict[str, Any]:
    """`{"type": ..., "message": ...}` from an API error body, or {}."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return error
    return {}


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network failures raised while a streamed body is read, from whichever HTTP library
    the SDK uses (the SDK wraps those raised while sending, not those while reading)."""
    found: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        module = sys.modules.get(name)
        error = getattr(module, "TransportError", None) if module is not None else None
        if isinstance(error, type) and issubclass(error, BaseException):
            found.append(error)
    return tuple(found)
