"""What every HTTP model provider shares: retries with backoff, and the caller's text sink.

One retry policy for all providers (the SDKs' own retries are turned off): a transient
failure is a `Retryable`, retried after `backoff`, which honours a server's `retry-after`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from ._base import TextSink

__all__ = ["Retryable", "SinkFailed", "backoff", "emit", "retry_after"]


class SinkFailed(Exception):
    """Wraps an exception raised by the caller's `on_text`, so it is re-raised untouched."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def emit(on_text: TextSink | None, text: str) -> None:
    """Hand streamed text to the caller; its own failure is never taken for the provider's."""
    if on_text is None or not text:
        return
    try:
        on_text(text)
    except Exception as exc:
        raise SinkFailed(exc) from exc


class Retryable(Exception):
    """A transient failure worth another attempt (a 429, a 5xx, a timeout, a dropped stream)."""

    def __init__(self, description: str, retry_after: float | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.retry_after = retry_after


def backoff(attempt: int, *, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds before retry `attempt` (1 = the first retry): exponential with jitter, a random
    delay in [1/2, 1] of base * 2**(attempt-1) up to `cap`; a server's retry-after is
    honoured when longer, up to `cap`."""
    ceiling = min(cap, base * 2.0 ** (attempt - 1))
    delay = ceiling * (0.5 + random.random() / 2)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds; not an HTTP date), or None."""
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except (TypeError, ValueError):
            continue
        if seconds >= 0:
            return seconds
    return None
