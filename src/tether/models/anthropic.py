"""Anthropic's Messages API behind the Model port, through the official `anthropic` SDK.

The SDK is imported lazily, so `tether` works without it until an `AnthropicModel` is
built (install it with `pip install 'tether-runtime[anthropic]'`).

Translation to the wire format (`_anthropic_request`):

* system messages become the top-level `system` parameter, joined in order;
* the rest become alternating user/assistant turns: consecutive same-role messages are
  merged, tool results become `tool_result` blocks in a user turn (placed before any text,
  as the API requires), assistant tool calls become `tool_use` blocks whose `input` is the
  parsed argument text (`{"_raw": text}` when the stored text is not a JSON object);
* `max_tokens` is always sent: the request's bound, capped at `max_output_tokens`.

Responses, whole or streamed, are read back in `_anthropic_response`.

Retries are ours, not the SDK's (its own are switched off): 408, 429, 5xx (529 included),
timeouts, connection failures and in-stream `overloaded_error`/`api_error` events are
retried with exponential backoff and jitter (a `retry-after` header is honoured, up to
`backoff_max`), then surface as `ModelUnavailable`. A prompt the API calls too long is
`ContextOverflow`; every other failure is `ModelError` (`_anthropic_errors`). No SDK
exception escapes: the original is kept as `__cause__`.

A streamed attempt that fails part-way is retried like any other; text it already passed
to `on_text` is sent again by the retry, so a sink that must not repeat itself should
treat `on_text` as a preview and use the returned response as the record.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any

from ..errors import ModelUnavailable, UsageError
from ._anthropic_errors import RETRYABLE_ERROR_TYPES as RETRYABLE_ERROR_TYPES
from ._anthropic_errors import RETRYABLE_STATUS as RETRYABLE_STATUS
from ._anthropic_errors import translate
from ._anthropic_request import to_anthropic_messages, to_anthropic_tools
from ._anthropic_response import FINISH_REASONS as FINISH_REASONS
from ._anthropic_response import _StreamState, from_message, from_stream, on_stream_event
from ._anthropic_tokens import AnthropicTokenCounter
from ._base import (
    Message,
    ModelRequest,
    ModelResponse,
    TextSink,
    ToolSpec,
    check_real_calls_allowed,
)
from ._provider import Retryable, SinkFailed, backoff
from ._tokens import estimate_tokens

__all__ = ["AnthropicModel", "to_anthropic_messages", "to_anthropic_tools"]


TOOL_USE_OVERHEAD = 600
"""Tokens the API adds (a hidden system prompt) when tools are offered. Anthropic documents
264-530 depending on the model; this rounds up so `count_tokens` stays an upper bound."""


_INSTALL_HINT = (
    "the Anthropic provider needs the `anthropic` package: "
    "install the extra with `pip install 'tether-runtime[anthropic]'`"
)


def _import_sdk() -> Any:
    try:
        import anthropic
    except ImportError as exc:
        raise UsageError(_INSTALL_HINT) from exc
    return anthropic


class AnthropicModel:
    """A Claude model through the Messages API.

    `stream=None` (the default) streams whenever the caller passes `on_text`; `True`
    always streams, `False` never does (`on_text` then gets the whole text at once).
    `http_client` is handed to the SDK (an `httpx2.AsyncClient` for anthropic>=2, an
    `httpx.AsyncClient` before), which is how tests inject a mock transport.
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        context_window: int = 200_000,
        max_output_tokens: int = 8_192,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        timeout: float = 600.0,
        stream: bool | None = None,
        http_client: Any = None,
        count_tokens_api: bool = False,
        count_http_client: Any = None,
    ) -> None:
        if max_output_tokens < 1:
            raise UsageError("max_output_tokens must be at least 1")
        if max_retries < 0:
            raise UsageError("max_retries cannot be negative")
        self._sdk = _import_sdk()
        self.name = model
        self.context_window = context_window
        self.max_output_tokens = max_output_tokens
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.stream = stream
        self._api_key = api_key if api_key is not None else os.environ.get("ANTHROPIC_API_KEY")
        self._base_url = base_url
        self._http_client = http_client
        self._counter = (
            AnthropicTokenCounter(
                self._sdk,
                model,
                api_key=self._api_key,
                base_url=base_url,
                http_client=count_http_client,
            )
            if count_tokens_api
            else None
        )
        self._client: Any = None
        self._client_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        """Replaced by tests to observe backoff without waiting."""

    # ------------------------------------------------------------------ port

    def count_tokens(self, messages: Sequence[Message], tools: tuple[ToolSpec, ...] = ()) -> int:
        """The count-tokens API's count with `count_tokens_api=True` (see
        `_anthropic_tokens`), else, or when it cannot answer, the conservative estimate."""
        overhead = TOOL_USE_OVERHEAD if tools else 0
        if self._counter is not None:
            counted = self._counter.count(messages, tools)
            if counted is not None:
                return counted + overhead
        return estimate_tokens(messages, tools) + overhead

    async def complete(
        self, request: ModelRequest, *, on_text: TextSink | None = None
    ) -> ModelResponse:
        check_real_calls_allowed("anthropic")
        params = self._params(request)
        stream = self.stream if self.stream is not None else on_text is not None
        client = self._get_client()
        last: Retryable | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                await self._sleep(
                    backoff(
                        attempt,
                        base=self.backoff_base,
                        cap=self.backoff_max,
                        retry_after=last.retry_after if last else None,
                    )
                )
            try:
                if stream:
                    return await self._streamed(client, params, on_text)
                response = await self._single(client, params)
            except SinkFailed as failed:
                raise failed.error from None
            except Retryable as exc:
                last = exc
                continue
            if on_text is not None and response.content:
                on_text(response.content)
            return response
        attempts = self.max_retries + 1
        raise ModelUnavailable(
            f"{last} (gave up after {attempts} attempt{'s' if attempts != 1 else ''})"
        ) from (last.__cause__ if last else None)

    def __repr__(self) -> str:
        where = f", base_url={self._base_url!r}" if self._base_url else ""
        return f"AnthropicModel({self.name!r}{where})"

    async def aclose(self) -> None:
        """Close the HTTP connections (and an injected `http_client` with them)."""
        if self._counter is not None:
            self._counter.close()
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        elif self._http_client is not None:
            await self._http_client.aclose()

    async def __aenter__(self) -> AnthropicModel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ request

    def _params(self, request: ModelRequest) -> dict[str, Any]:
        if request.max_tokens is not None and request.max_tokens < 1:
            raise UsageError(f"max_tokens must be at least 1, not {request.max_tokens}")
        max_tokens = (
            self.max_output_tokens
            if request.max_tokens is None
            else min(request.max_tokens, self.max_output_tokens)
        )
        system, messages = to_anthropic_messages(request.messages)
        params: dict[str, Any] = {
            "model": self.name,
            "max_tokens": max_tokens,
            "messages": messages,
            "timeout": self.timeout,
        }
        if system is not None:
            params["system"] = system
        if request.tools:
            params["tools"] = to_anthropic_tools(request.tools)
        if request.temperature is not None:
            # anthropic>=2 has no typed `temperature` argument; older SDKs accept it either way
            params["extra_body"] = {"temperature": request.temperature}
        return params

    def _get_client(self) -> Any:
        """One SDK client per event loop (a pooled connection cannot cross loops)."""
        loop = asyncio.get_running_loop()
        bound = self._client_loop() if self._client_loop is not None else None
        if self._client is not None and (bound is loop or self._http_client is not None):
            return self._client
        if not self._api_key:
            raise UsageError("no Anthropic API key: pass api_key= or set ANTHROPIC_API_KEY")
        kwargs: dict[str, Any] = {"api_key": self._api_key, "max_retries": 0}
        if self._base_url is not None:
            kwargs["base_url"] = self._base_url
        if self._http_client is not None:
            kwargs["http_client"] = self._http_client
        try:
            self._client = self._sdk.AsyncAnthropic(**kwargs)
        except (TypeError, self._sdk.AnthropicError) as exc:  # e.g. a wrong http_client
            raise UsageError(f"cannot configure the Anthropic client: {exc}") from exc
        self._client_loop = weakref.ref(loop)
        return self._client

    # ------------------------------------------------------------------ calls

    async def _single(self, client: Any, params: dict[str, Any]) -> ModelResponse:
        try:
            message = await client.messages.create(**params)
            return from_message(message)
        except Exception as exc:
            raise translate(self._sdk, self.name, exc) from exc

    async def _streamed(
        self, client: Any, params: dict[str, Any], on_text: TextSink | None
    ) -> ModelResponse:
        state = _StreamState()
        try:
            events = await client.messages.create(**params, stream=True)
            try:
                async for event in events:
                    on_stream_event(state, event, on_text)
            finally:
                await events.close()
        except SinkFailed:
            raise
        except Exception as exc:
            raise translate(self._sdk, self.name, exc) from exc
        if not state.stopped:
            raise Retryable("the response stream ended before message_stop")
        return from_stream(state)
