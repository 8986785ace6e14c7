"""The OpenAI SDK's failures as Tether's errors, so one retry policy decides what to retry.

A rejection that names the context window is a `ContextOverflow` (the loop compacts and
tries again); 408, 409, 429 (except an exhausted quota), 5xx, timeouts and dropped
connections are `Retryable`; anything else from the SDK is a `ModelError` at once.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..errors import ContextOverflow, ModelError
from ._provider import Retryable, retry_after

PROVIDER = "openai"

RETRYABLE_STATUS = frozenset({408, 409, 429})
"""Plus every 5xx."""

OVERFLOW_MARKERS = (
    "context_length_exceeded",  # OpenAI's error code
    "exceed_context_size",  # llama.cpp's error type
    "exceeds the available context size",  # llama.cpp
    "maximum context length",  # OpenAI, vLLM
    "context length",
    "context window",
    "context_window",
    "prompt is too long",
    "too many tokens",
    "input is too long",
    "reduce the length of the messages",
)
"""Lower-case phrases that mark a 4xx as "the request does not fit the window"."""

NOT_RETRYABLE_429 = ("insufficient_quota", "billing")
"""A 429 that retrying cannot fix: the account is out of credit."""


def provider_message(exc: Any) -> str:
    """The provider's own error message, without the SDK's "Error code: ..." wrapping."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    return str(getattr(exc, "message", None) or exc)


def _headers(exc: Any) -> Any:
    return getattr(getattr(exc, "response", None), "headers", None)


def is_transport_error(exc: BaseException) -> bool:
    """httpx/httpx2 network errors, which the SDK does not wrap while a stream is read."""
    return any(
        cls.__name__ in ("TransportError", "StreamError")
        and cls.__module__.split(".")[0] in ("httpx", "httpx2")
        for cls in type(exc).__mro__
    )


def translate(openai: ModuleType, exc: BaseException) -> Exception | None:
    """Tether's error for an SDK/network failure (`Retryable` if transient), None if the
    exception is not the SDK's (the caller's own, e.g. from `on_text`: re-raise it as is)."""
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = provider_message(exc)
        text = " ".join(
            str(part) for part in (message, exc.code, exc.type, exc.body) if part
        ).lower()
        if 400 <= status < 500 and (
            status == 413 or any(marker in text for marker in OVERFLOW_MARKERS)
        ):
            return ContextOverflow(f"{PROVIDER} HTTP {status}: {message}")
        if status == 429 and any(marker in text for marker in NOT_RETRYABLE_429):
            return ModelError(f"{PROVIDER} HTTP 429 (not retried, quota): {message}")
        if status in RETRYABLE_STATUS or status >= 500:
            return Retryable(f"HTTP {status}: {message}", retry_after(_headers(exc)))
        return ModelError(f"{PROVIDER} HTTP {status}: {message}")
    if isinstance(exc, openai.APITimeoutError):
        return Retryable("request timed out")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return Retryable(f"connection error: {cause!r}" if cause else "connection error")
    if is_transport_error(exc):
        return Retryable(f"connection error: {exc!r}")
    if isinstance(exc, openai.OpenAIError):
        return ModelError(f"{PROVIDER}: {type(exc).__name__}: {exc}")
    return None
