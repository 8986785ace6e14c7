"""Anthropic's Messages API behind the Model port, through the official `anthropic` SDK.

The SDK is imported lazily, so `tether` works without it until an `AnthropicModel` is
built (install it with `pip install 'tether-runtime[anthropic]'`).

Translation to the wire format:

* system messages become the top-level `system` parameter, joined in order;
* the rest become alternating user/assistant turns: consecutive same-role messages are
  merged, tool results become `tool_result` blocks in a user turn (placed before any text,
  as the API requires), assistant tool calls become `tool_use` blocks whose `input` is the
  parsed argument text (`{"_raw": text}` when the stored text is not a JSON object);
* `max_tokens` is always sent: the request's bound, capped at `max_output_tokens`.

Retries are ours, not the SDK's (its own are switched off): 408, 429, 5xx (529 included),
timeouts, connection failures and in-stream `overloaded_error`/`api_error` events are
retried with exponential backoff and jitter (a `retry-after` header is honoured, up to
`backoff_max`), then surface as `ModelUnavailable`. A prompt the API calls too long is
`ContextOverflow`; every other failure is `ModelError`. No SDK exception escapes: the
original is kept as `__cause__`.

A streamed attempt that fails part-way is retried like any other; text it already passed
to `on_text` is sent again by the retry, so a sink that must not repeat itself should
treat `on_text` as a preview and use the returned response as the record.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from ..errors import ContextOverflow, ModelError, ModelUnavailable, UsageError
from ._anthropic_tokens import AnthropicTokenCounter
from ._base import (
    Message,
    ModelRequest,
    ModelResponse,
    ModelUsage,
    TextSink,
    ToolCall,
    ToolSpec,
    check_real_calls_allowed,
)
from ._provider import Retryable, SinkFailed, backoff, emit, retry_after
from ._tokens import estimate_tokens

__all__ = ["AnthropicModel", "to_anthropic_messages", "to_anthropic_tools"]

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

TOOL_USE_OVERHEAD = 600
"""Tokens the API adds (a hidden system prompt) when tools are offered. Anthropic documents
264-530 depending on the model; this rounds up so `count_tokens` stays an upper bound."""

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
}
"""Anthropic's stop_reason -> Tether's finish_reason; others ("refusal", "pause_turn")
pass through as the provider's own word."""

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


# --------------------------------------------------------------------------- translation


def _tool_input(arguments: str) -> dict[str, Any]:
    """The stored argument text as a `tool_use` input object, never raising."""
    if not arguments.strip():
        return {}
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return {"_raw": arguments}
    return parsed if isinstance(parsed, dict) else {"_raw": arguments}


def _message_blocks(message: Message) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        if not message.tool_call_id:
            raise UsageError("a tool message needs the tool_call_id of the call it answers")
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if message.content:
            result["content"] = message.content
        return "user", [result]
    blocks: list[dict[str, Any]] = []
    if message.content:  # the API rejects empty text blocks
        blocks.append({"type": "text", "text": message.content})
    if message.role == "assistant":
        blocks.extend(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": _tool_input(call.arguments),
            }
            for call in message.tool_calls
        )
    return message.role, blocks


def to_anthropic_messages(
    messages: Sequence[Message],
) -> tuple[str | None, list[dict[str, Any]]]:
    """(system, messages) in the Messages API's shape."""
    system = [m.content for m in messages if m.role == "system" and m.content]
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role, blocks = _message_blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            # tool_result blocks must open the user turn that answers the tool calls
            content = turn["content"]
            turn["content"] = [b for b in content if b["type"] == "tool_result"] + [
                b for b in content if b["type"] != "tool_result"
            ]
    return ("\n\n".join(system) if system else None), turns


def to_anthropic_tools(tools: tuple[ToolSpec, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for tool in tools:
        schema = dict(tool.parameters) or {"type": "object", "properties": {}}
        schema.setdefault("type", "object")
        spec: dict[str, Any] = {"name": tool.name, "input_schema": schema}
        if tool.description:
            spec["description"] = tool.description
        out.append(spec)
    return out


def _finish_reason(stop_reason: str | None, has_calls: bool) -> str:
    if stop_reason is None:
        return "tool_calls" if has_calls else "stop"
    return FINISH_REASONS.get(stop_reason, stop_reason)


def _arguments_text(raw: str) -> str:
    """Streamed tool input JSON as canonical text; left as sent if it is malformed."""
    if not raw.strip():
        return "{}"
    try:
        return json.dumps(json.loads(raw), sort_keys=True)
    except ValueError:
        return raw


# --------------------------------------------------------------------------- streaming


@dataclass(slots=True)
class _Block:
    type: str
    text: list[str] = field(default_factory=list)
    id: str = ""
    name: str = ""
    start_input: Any = None
    json_parts: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _StreamState:
    """A streamed message reassembled from raw events."""

    model: str = ""
    blocks: dict[int, _Block] = field(default_factory=dict)
    stop_reason: str | None = None
    input_tokens: int = 0
    cache_creation: int = 0
    cache_read: int = 0
    output_tokens: int = 0
    stopped: bool = False

    def usage(self, usage: Any, *, start: bool) -> None:
        if usage is None:
            return
        # message_delta counts are cumulative and optional; message_start's are complete.
        for attr, name in (
            ("input_tokens", "input_tokens"),
            ("cache_creation", "cache_creation_input_tokens"),
            ("cache_read", "cache_read_input_tokens"),
            ("output_tokens", "output_tokens"),
        ):
            value = getattr(usage, name, None)
            if value is not None or start:
                setattr(self, attr, int(value or 0))


# --------------------------------------------------------------------------- the model


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
            return self._from_message(message)
        except Exception as exc:
            raise self._translate(exc) from exc

    def _from_message(self, message: Any) -> ModelResponse:
        text: list[str] = []
        calls: list[ToolCall] = []
        for block in message.content or ():
            if block.type == "text":
                text.append(block.text)
            elif block.type == "tool_use":
                calls.append(
                    ToolCall(
                        id=block.id,
                        name=block.name,
                        arguments=json.dumps(block.input, sort_keys=True),
                    )
                )
            # thinking and server-tool blocks carry nothing the port has a place for
        usage = message.usage
        input_tokens = (
            usage.input_tokens
            + (getattr(usage, "cache_creation_input_tokens", None) or 0)
            + (getattr(usage, "cache_read_input_tokens", None) or 0)
        )
        return ModelResponse(
            content="".join(text),
            tool_calls=tuple(calls),
            finish_reason=_finish_reason(message.stop_reason, bool(calls)),
            usage=ModelUsage(input_tokens=input_tokens, output_tokens=usage.output_tokens),
            model=str(message.model),
        )

    async def _streamed(
        self, client: Any, params: dict[str, Any], on_text: TextSink | None
    ) -> ModelResponse:
        state = _StreamState()
        try:
            events = await client.messages.create(**params, stream=True)
            try:
                async for event in events:
                    self._on_event(state, event, on_text)
            finally:
                await events.close()
        except SinkFailed:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc
        if not state.stopped:
            raise Retryable("the response stream ended before message_stop")
        return self._from_stream(state)

    @staticmethod
    def _on_event(state: _StreamState, event: Any, on_text: TextSink | None) -> None:
        kind = event.type
        if kind == "message_start":
            state.model = str(event.message.model)
            state.usage(event.message.usage, start=True)
        elif kind == "content_block_start":
            block = event.content_block
            entry = _Block(type=block.type)
            if block.type == "tool_use":
                entry.id, entry.name, entry.start_input = block.id, block.name, block.input
            elif block.type == "text" and block.text:
                entry.text.append(block.text)
                emit(on_text, block.text)
            state.blocks[event.index] = entry
        elif kind == "content_block_delta":
            entry = state.blocks.setdefault(event.index, _Block(type="unknown"))
            delta = event.delta
            if delta.type == "text_delta":
                entry.text.append(delta.text)
                emit(on_text, delta.text)
            elif delta.type == "input_json_delta":
                entry.json_parts.append(delta.partial_json)
            # thinking, signature and citations deltas are not kept
        elif kind == "message_delta":
            state.stop_reason = event.delta.stop_reason or state.stop_reason
            state.usage(event.usage, start=False)
        elif kind == "message_stop":
            state.stopped = True

    @staticmethod
    def _from_stream(state: _StreamState) -> ModelResponse:
        text: list[str] = []
        calls: list[ToolCall] = []
        for index in sorted(state.blocks):
            block = state.blocks[index]
            if block.type == "text":
                text.extend(block.text)
            elif block.type == "tool_use":
                if block.json_parts:
                    arguments = _arguments_text("".join(block.json_parts))
                else:
                    arguments = json.dumps(block.start_input or {}, sort_keys=True)
                calls.append(ToolCall(id=block.id, name=block.name, arguments=arguments))
        return ModelResponse(
            content="".join(text),
            tool_calls=tuple(calls),
            finish_reason=_finish_reason(state.stop_reason, bool(calls)),
            usage=ModelUsage(
                input_tokens=state.input_tokens + state.cache_creation + state.cache_read,
                output_tokens=state.output_tokens,
            ),
            model=state.model,
        )

    # ------------------------------------------------------------------ errors

    def _translate(self, exc: Exception) -> Exception:
        """An SDK or transport failure as Retryable, ContextOverflow or ModelError."""
        sdk = self._sdk
        if isinstance(exc, Retryable | ModelError):
            return exc
        if isinstance(exc, sdk.APIStatusError):
            status = exc.status_code
            error = _error_body(exc.body)
            error_type, message = error.get("type"), str(error.get("message") or exc.message)
            # an `error` event inside a 200 stream arrives with the stream's status
            where = f"anthropic {self.name}: " + (
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
            return Retryable(f"anthropic {self.name}: the request timed out")
        if isinstance(exc, sdk.APIConnectionError):
            return Retryable(f"anthropic {self.name}: connection failed ({exc})")
        if isinstance(exc, _transport_errors()):
            return Retryable(f"anthropic {self.name}: {type(exc).__name__}: {exc}")
        # anything else (a malformed response, an SDK-side check) is not worth a retry
        return ModelError(f"anthropic {self.name}: {type(exc).__name__}: {exc}")


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
