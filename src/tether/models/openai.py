"""OpenAI-compatible chat completions: OpenAI itself, and any server that speaks its wire
format (llama.cpp, vLLM, Ollama, LM Studio, gateways...).

```python
from tether.models.openai import OpenAIModel

model = OpenAIModel("gpt-4o-mini")                      # OPENAI_API_KEY from the environment
local = OpenAIModel("local", base_url="http://127.0.0.1:8080/v1", price_name="local")
```

Needs the `openai` extra (`pip install 'tether-runtime[openai]'`); the SDK is imported when
a model is built, not when this module is.

Translation to the wire format: tools become `{"type": "function", "function": ...}`;
assistant tool calls go out as `tool_calls` with their argument text unchanged when it is
a JSON object (else wrapped as `{"_raw": text}`, as the Anthropic provider does); tool
results as `role: "tool"` messages with their `tool_call_id` (`_openai_request`). Back
from the wire, argument text is kept exactly as the model wrote it, even when it is not
valid JSON (a call cut off by `max_tokens` comes back with `finish_reason="length"`), and
a server that reports no usage is charged the conservative estimate, never zero
(`_openai_response`). `max_tokens` is always sent: the request's bound, capped at
`max_output_tokens`.

Errors are Tether's, never the SDK's (the original is kept as `__cause__`): rate limits
(429, except an exhausted quota), 408, 409, 5xx, timeouts, dropped connections and streams
that end early are retried with exponential backoff and jitter (a `retry-after` header is
honoured up to `backoff_max`; the SDK's own retries are off, so there is one policy), then
raise `ModelUnavailable`. A request that does not fit the window raises `ContextOverflow`
with the provider's message; any other rejection raises `ModelError` at once
(`_openai_errors`).

A streamed attempt that fails part-way is retried like any other; text it already passed
to `on_text` is sent again by the retry, so treat `on_text` as a preview and the returned
response as the record.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import ModuleType, TracebackType
from typing import Any

from ..errors import ModelError, ModelUnavailable, TetherError, UsageError
from ._base import (
    Message,
    ModelRequest,
    ModelResponse,
    TextSink,
    ToolSpec,
    check_real_calls_allowed,
)
from ._openai_errors import PROVIDER, translate
from ._openai_request import request_kwargs
from ._openai_response import Reply, read_completion, read_stream, to_response
from ._openai_tokens import count_or_none, count_with_encoding, encoding_for
from ._provider import Retryable, SinkFailed, backoff, emit
from ._server_tokens import ServerTokenizer
from ._tokens import MESSAGE_OVERHEAD, estimate_tokens

__all__ = ["OpenAIModel"]

TOOLS_OVERHEAD = 200
"""Tokens a server adds when tools are offered, beyond their definitions: OpenAI's hidden
tools preamble, or the instructions a local server's chat template wraps around them (about
120 tokens in the Hermes/Qwen style). Added by `count_tokens` to keep it an upper bound."""

TOKENIZERS = ("auto", "tiktoken", "server", "estimate")
"""How `count_tokens` counts: see its docstring."""


def _import_openai() -> ModuleType:
    try:
        import openai
    except ImportError as exc:
        raise UsageError(
            "the OpenAI provider needs the `openai` package, which is not installed: "
            "pip install 'tether-runtime[openai]'"
        ) from exc
    return openai


class OpenAIModel:
    """A chat model behind an OpenAI-compatible `/chat/completions` endpoint.

    `model` is sent on the wire; `name` (what budgets price) is `price_name` or `model`.
    `base_url` and `api_key` default to OPENAI_BASE_URL and OPENAI_API_KEY; with a
    `base_url` and no key, a placeholder key is sent (local servers ignore it).
    `stream=None` (the default) streams whenever the caller passes `on_text`; `True`
    always streams, `False` never does (`on_text` then gets the whole text at once).
    `extra` holds more keyword arguments for `chat.completions.create`, e.g.
    `{"stop": ["</tool_call>"], "seed": 1, "extra_body": {...}}`.
    `http_client` is handed to the SDK as is (an `httpx2.AsyncClient` for openai>=3, an
    `httpx.AsyncClient` before): for proxies, custom TLS, or a mock transport in tests.
    `max_tokens_param="max_completion_tokens"` is for OpenAI's reasoning models.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        context_window: int = 128_000,
        max_output_tokens: int = 4_096,
        stream: bool | None = None,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        timeout: float = 600.0,
        extra: Mapping[str, Any] | None = None,
        price_name: str | None = None,
        max_tokens_param: str = "max_tokens",
        http_client: Any = None,
        tokenizer: str = "auto",
    ) -> None:
        self._openai = _import_openai()
        if max_retries < 0 or backoff_base < 0 or backoff_max < 0:
            raise UsageError("max_retries, backoff_base and backoff_max cannot be negative")
        if timeout <= 0:
            raise UsageError("timeout must be positive")
        if context_window < 1 or max_output_tokens < 1:
            raise UsageError("context_window and max_output_tokens must be at least 1")
        if tokenizer not in TOKENIZERS:
            raise UsageError(f"tokenizer is one of {', '.join(TOKENIZERS)}, not {tokenizer!r}")
        if max_tokens_param not in ("max_tokens", "max_completion_tokens"):
            raise UsageError('max_tokens_param is "max_tokens" or "max_completion_tokens"')
        extra = dict(extra or {})
        reserved = {"model", "messages", "tools", "stream", "stream_options", "n"} & extra.keys()
        if reserved:
            raise UsageError(f"set by the provider, not through extra: {sorted(reserved)}")

        self.model = model
        self.name = price_name or model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.base_url is None:
                raise UsageError("set OPENAI_API_KEY or pass api_key= to use OpenAI")
            key = "sk-no-key-required"  # local servers ignore it; the SDK insists on one
        self._api_key = key
        self.context_window = context_window
        self.max_output_tokens = max_output_tokens
        self.stream = stream
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.extra = extra
        self.max_tokens_param = max_tokens_param
        self._http_client = http_client
        self.tokenizer = tokenizer
        self._server_tokens = (
            ServerTokenizer(self.base_url, api_key=api_key)
            if self.base_url and tokenizer in ("auto", "server")
            else None
        )
        self._client: Any = None
        self._client_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        """Replaced by tests to observe backoff without waiting."""

    def __repr__(self) -> str:
        where = f", base_url={self.base_url!r}" if self.base_url else ""
        return f"OpenAIModel({self.model!r}{where})"

    # -- lifecycle ---------------------------------------------------------------------------

    def _get_client(self) -> Any:
        """One SDK client per event loop (a pooled connection cannot cross loops)."""
        loop = asyncio.get_running_loop()
        bound = self._client_loop() if self._client_loop is not None else None
        if self._client is not None and (bound is loop or self._http_client is not None):
            return self._client
        try:
            self._client = self._openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                timeout=self.timeout,
                max_retries=0,  # one retry policy: ours
                http_client=self._http_client,
            )
        except (TypeError, self._openai.OpenAIError) as exc:  # e.g. a wrong http_client
            raise UsageError(f"cannot configure the OpenAI client: {exc}") from exc
        self._client_loop = weakref.ref(loop)
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP connections (and a given `http_client`)."""
        if self._server_tokens is not None:
            self._server_tokens.close()
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        elif self._http_client is not None:
            await self._http_client.aclose()

    async def __aenter__(self) -> OpenAIModel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- the Model protocol ------------------------------------------------------------------

    def count_tokens(self, messages: Sequence[Message], tools: tuple[ToolSpec, ...] = ()) -> int:
        """The best count there is, plus the reply's priming and, with tools,
        TOOLS_OVERHEAD: tiktoken's for OpenAI models whose encoding loads offline; else the
        server's own tokenizer (llama.cpp's `/tokenize`) for a server at `base_url`; else
        the conservative estimate (`tokenizer=` picks one; "auto" tries them in order)."""
        overhead = MESSAGE_OVERHEAD + (TOOLS_OVERHEAD if tools else 0)
        encoding = encoding_for(self.model) if self.tokenizer in ("auto", "tiktoken") else None
        if encoding is not None:
            try:
                return count_with_encoding(encoding, messages, tools) + overhead
            except Exception:
                pass
        server = self._server_tokens
        if server is not None and server.available is not False:
            counted = count_or_none(server.count, messages, tools)
            if counted is not None:
                return counted + overhead
        return estimate_tokens(messages, tools) + overhead

    def build_request(self, request: ModelRequest) -> dict[str, Any]:
        """The keyword arguments for `chat.completions.create` (without `stream`)."""
        return request_kwargs(
            request,
            model=self.model,
            extra=self.extra,
            max_tokens_param=self.max_tokens_param,
            max_output_tokens=self.max_output_tokens,
        )

    async def complete(
        self, request: ModelRequest, *, on_text: TextSink | None = None
    ) -> ModelResponse:
        check_real_calls_allowed(PROVIDER)
        kwargs = self.build_request(request)
        stream = self.stream if self.stream is not None else on_text is not None
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                if stream:
                    return await self._complete_streamed(request, kwargs, on_text)
                return await self._complete_once(request, kwargs, on_text)
            except SinkFailed as failed:  # the caller's own exception, untouched
                raise failed.error from None
            except TetherError:
                raise
            except Exception as exc:
                error = exc if isinstance(exc, Retryable) else translate(self._openai, exc)
                if error is None:  # e.g. a body that is not JSON, or not a completion
                    error = ModelError(
                        f"{PROVIDER} {self.model}: malformed response ({type(exc).__name__}: {exc})"
                    )
                if not isinstance(error, Retryable):
                    raise error from exc
                if attempt + 1 == attempts:
                    raise ModelUnavailable(
                        f"{PROVIDER} {self.model}: {error.description} (gave up after "
                        f"{attempts} attempt{'s' if attempts != 1 else ''})"
                    ) from exc
                await self._sleep(
                    backoff(
                        attempt + 1,
                        base=self.backoff_base,
                        cap=self.backoff_max,
                        retry_after=error.retry_after,
                    )
                )
        raise AssertionError("unreachable")  # pragma: no cover

    # -- one attempt -------------------------------------------------------------------------

    async def _complete_once(
        self, request: ModelRequest, kwargs: dict[str, Any], on_text: TextSink | None
    ) -> ModelResponse:
        reply = read_completion(await self._get_client().chat.completions.create(**kwargs))
        result = self._response(request, reply)
        emit(on_text, reply.content)
        return result

    async def _complete_streamed(
        self, request: ModelRequest, kwargs: dict[str, Any], on_text: TextSink | None
    ) -> ModelResponse:
        stream = await self._get_client().chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )
        return self._response(request, await read_stream(stream, on_text))

    def _response(self, request: ModelRequest, reply: Reply) -> ModelResponse:
        return to_response(
            reply,
            prompt_estimate=lambda: self.count_tokens(request.messages, request.tools),
            model=self.model,
        )
