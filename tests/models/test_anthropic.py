"""The Anthropic provider against a mock Messages API (no network).

Responses and SSE streams follow the shapes of the Messages API as the anthropic SDK's
types and its own streaming fixtures describe them. The HTTP mock is built with whichever
library the installed SDK uses (`httpx2` for anthropic>=2, `httpx` before).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import json
import re
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from tether.errors import ContextOverflow, ModelError, ModelUnavailable, UsageError
from tether.models import Message, Model, ModelRequest, ToolCall, ToolSpec, estimate_tokens
from tether.models.anthropic import (
    TOOL_USE_OVERHEAD,
    AnthropicModel,
    to_anthropic_messages,
    to_anthropic_tools,
)

from ..conftest import require

try:
    import anthropic
except ImportError:  # pragma: no cover - the dev extra installs it
    anthropic = None  # type: ignore[assignment]

MODEL = "claude-haiku-4-5"
"""Not on the SDK's deprecation list (a DeprecationWarning would fail the suite)."""


def _http_module() -> ModuleType:
    requires = importlib.metadata.requires("anthropic") or []
    uses_httpx2 = any(re.match(r"httpx2(?![\w.-])", r) for r in requires)
    return importlib.import_module("httpx2" if uses_httpx2 else "httpx")


# --------------------------------------------------------------------------- wire data


def message_json(
    content: list[dict[str, Any]],
    *,
    stop_reason: str = "end_turn",
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage
        or {
            "input_tokens": 25,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 9,
            "service_tier": "standard",
        },
    }


def error_json(kind: str, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }


def sse(*events: tuple[str, dict[str, Any]]) -> bytes:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()


def message_start(input_tokens: int = 377, cache_read: int = 0) -> tuple[str, dict[str, Any]]:
    return (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_019Q1hrJbZG26Fb9BQhrkHEr",
                "type": "message",
                "role": "assistant",
                "model": "claude-haiku-4-5-20251001",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": input_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": cache_read,
                    "output_tokens": 1,
                    "service_tier": "standard",
                },
            },
        },
    )


def block_start(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return (
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def text_delta(index: int, text: str) -> tuple[str, dict[str, Any]]:
    return (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": text},
        },
    )


def json_delta(index: int, partial: str) -> tuple[str, dict[str, Any]]:
    return (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": partial},
        },
    )


def block_stop(index: int) -> tuple[str, dict[str, Any]]:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(stop_reason: str, output_tokens: int) -> tuple[str, dict[str, Any]]:
    return (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
    )


PING = ("ping", {"type": "ping"})
MESSAGE_STOP = ("message_stop", {"type": "message_stop"})

TOOL_USE_STREAM = (
    message_start(input_tokens=377, cache_read=100),
    block_start(0, {"type": "text", "text": ""}),
    PING,
    text_delta(0, "I"),
    text_delta(0, "'ll check the weather in Paris."),
    block_stop(0),
    block_start(
        1,
        {
            "type": "tool_use",
            "id": "toolu_01NRLabsLyVHZPKxbKvkfSMn",
            "name": "get_weather",
            "caller": {"type": "direct"},
            "input": {},
        },
    ),
    json_delta(1, ""),
    json_delta(1, '{"locati'),
    json_delta(1, 'on": "P'),
    json_delta(1, "ar"),
    json_delta(1, 'is", "unit": "c"}'),
    block_stop(1),
    message_delta("tool_use", 65),
    MESSAGE_STOP,
)


# --------------------------------------------------------------------------- fake API


class FakeAPI:
    """A MockTransport handler answering POST /v1/messages from a queue of replies."""

    def __init__(self, http: ModuleType, *replies: Any) -> None:
        self.http = http
        self.replies = list(replies)
        self.requests: list[Any] = []

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]

    def __call__(self, request: Any) -> Any:
        assert request.method == "POST" and request.url.path == "/v1/messages"
        self.requests.append(request)
        assert self.replies, "the fake API got more requests than the test expected"
        reply = self.replies.pop(0)
        if callable(reply):
            reply = reply(request)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def json(self, status: int, body: dict[str, Any], **headers: str) -> Any:
        return self.http.Response(status, json=body, headers={"request-id": "req_1", **headers})

    def stream(self, data: bytes | Callable[[], AsyncIterator[bytes]], chunk: int = 23) -> Any:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(data), chunk):
                yield data[i : i + chunk]

        body = data if callable(data) else chunks
        return self.http.Response(
            200, headers={"content-type": "text/event-stream"}, content=body()
        )


@pytest.fixture
def http() -> ModuleType:
    require(anthropic is not None, "the anthropic SDK is not installed")
    return _http_module()


@pytest.fixture
def allow_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tether.models._base.ALLOW_MODEL_REQUESTS", True)


class Harness:
    def __init__(self, http: ModuleType) -> None:
        self.http = http
        self.models: list[AnthropicModel] = []
        self.delays: list[float] = []

    def model(self, api: FakeAPI, **options: Any) -> AnthropicModel:
        client = self.http.AsyncClient(transport=self.http.MockTransport(api))
        options.setdefault("api_key", "sk-ant-test")
        model = AnthropicModel(MODEL, http_client=client, **options)

        async def record(delay: float) -> None:
            self.delays.append(delay)

        model._sleep = record
        self.models.append(model)
        return model


@pytest.fixture
async def harness(http: ModuleType) -> AsyncIterator[Harness]:
    h = Harness(http)
    yield h
    for model in h.models:
        await model.aclose()


def ask(text: str = "What's the weather in Paris?", **kw: Any) -> ModelRequest:
    return ModelRequest(
        messages=(Message(role="system", content="Be brief."), Message(role="user", content=text)),
        **kw,
    )


WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city.",
    parameters={
        "type": "object",
        "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["location"],
    },
)


# --------------------------------------------------------------------------- translation


def test_system_messages_become_the_system_parameter_and_turns_merge() -> None:
    system, messages = to_anthropic_messages(
        (
            Message(role="system", content="You are terse."),
            Message(role="user", content="Hi."),
            Message(role="system", content="Answer in French."),
            Message(role="user", content="What time is it?"),
            Message(role="assistant", content="Il est"),
            Message(role="assistant", content="midi."),
        )
    )
    assert system == "You are terse.\n\nAnswer in French."
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Hi."},
                {"type": "text", "text": "What time is it?"},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Il est"}, {"type": "text", "text": "midi."}],
        },
    ]


def test_tool_use_and_tool_result_round_trip() -> None:
    calls = (
        ToolCall(id="toolu_1", name="get_weather", arguments='{"location": "Paris"}'),
        ToolCall(id="toolu_2", name="get_time", arguments=""),
    )
    system, messages = to_anthropic_messages(
        (
            Message(role="user", content="Weather and time in Paris?"),
            Message(role="assistant", content="Checking.", tool_calls=calls),
            Message(role="tool", content="18C, cloudy", tool_call_id="toolu_1", name="get_weather"),
            Message(role="user", content="(take your time)"),
            Message(role="tool", content="12:00", tool_call_id="toolu_2", name="get_time"),
            Message(role="assistant", content="18C and noon."),
        )
    )
    assert system is None
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"] == [
        {"type": "text", "text": "Checking."},
        {
            "type": "tool_use",
            "id": "toolu_1",
            "name": "get_weather",
            "input": {"location": "Paris"},
        },
        {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
    ]
    # the three user-side messages merge, tool results first as the API requires
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C, cloudy"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "12:00"},
        {"type": "text", "text": "(take your time)"},
    ]


@pytest.mark.parametrize("raw", ['{"location": "Par', "[1, 2]", "not json"])
def test_malformed_stored_arguments_are_sent_as_raw(raw: str) -> None:
    _, messages = to_anthropic_messages(
        (
            Message(role="user", content="go"),
            Message(
                role="assistant",
                content="",
                tool_calls=(ToolCall(id="t", name="f", arguments=raw),),
            ),
        )
    )
    assert messages[1]["content"] == [
        {"type": "tool_use", "id": "t", "name": "f", "input": {"_raw": raw}}
    ]


def test_empty_text_is_not_sent_as_a_block() -> None:
    _, messages = to_anthropic_messages(
        (
            Message(role="user", content="go"),
            Message(role="assistant", content=""),
            Message(role="user", content="again"),
        )
    )
    # the empty assistant turn vanishes, so the two user turns merge
    assert messages == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "go"}, {"type": "text", "text": "again"}],
        }
    ]


def test_tool_message_without_call_id_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="tool_call_id"):
        to_anthropic_messages((Message(role="tool", content="x"),))


def test_tools_translation() -> None:
    bare = ToolSpec(name="ping", description="", parameters={})
    assert to_anthropic_tools((WEATHER, bare)) == [
        {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "input_schema": WEATHER.parameters,
        },
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
    ]


# --------------------------------------------------------------------------- replies


@pytest.mark.usefixtures("allow_requests")
async def test_plain_reply(harness: Harness) -> None:
    api = FakeAPI(harness.http)
    api.replies.append(api.json(200, message_json([{"type": "text", "text": "Sunny, 21C."}])))
    model = harness.model(api, max_output_tokens=1024)
    assert isinstance(model, Model)

    response = await model.complete(ask())

    assert response.content == "Sunny, 21C."
    assert response.tool_calls == ()
    assert response.finish_reason == "stop"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (25, 9)
    assert response.model == "claude-haiku-4-5-20251001"
    [request] = api.requests
    # anthropic<2 sends x-api-key, anthropic>=2 a bearer token
    assert "sk-ant-test" in (
        request.headers.get("x-api-key"),
        request.headers.get("authorization", "").removeprefix("Bearer "),
    )
    assert "anthropic-version" in request.headers
    [body] = api.bodies
    assert body == {
        "model": MODEL,
        "max_tokens": 1024,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What's the weather in Paris?"}]}
        ],
    }


@pytest.mark.usefixtures("allow_requests")
async def test_max_tokens_and_temperature_are_sent(harness: Harness) -> None:
    api = FakeAPI(harness.http)
    for _ in range(2):
        api.replies.append(api.json(200, message_json([{"type": "text", "text": "ok"}])))
    model = harness.model(api, max_output_tokens=2048)

    await model.complete(ask(max_tokens=300, temperature=0.2))
    await model.complete(ask(max_tokens=100_000))  # never above the model's own limit

    first, second = api.bodies
    assert (first["max_tokens"], first["temperature"]) == (300, 0.2)
    assert second["max_tokens"] == 2048 and "temperature" not in second


@pytest.mark.usefixtures("allow_requests")
async def test_a_large_unstreamed_output_bound_is_accepted(harness: Harness) -> None:
    # without an explicit timeout the SDK refuses unstreamed requests it expects to be slow
    api = FakeAPI(harness.http)
    api.replies.append(api.json(200, message_json([{"type": "text", "text": "ok"}])))
    await harness.model(api, max_output_tokens=64_000, stream=False).complete(ask())
    assert api.bodies[0]["max_tokens"] == 64_000


@pytest.mark.usefixtures("allow_requests")
async def test_tool_call_reply(harness: Harness) -> None:
    api = FakeAPI(harness.http)
    api.replies.append(
        api.json(
            200,
            message_json(
                [
                    {"type": "text", "text": "I'll look that up."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01A09q90qw90lq917835lq9",
                        "name": "get_weather",
                        "input": {"unit": "celsius", "location": "Paris"},
                    },
                ],
                stop_reason="tool_use",
            ),
        )
    )
    model = harness.model(api)

    response = await model.complete(ask(tools=(WEATHER,)))

    assert response.content == "I'll look that up."
    assert response.finish_reason == "tool_calls"
    assert response.tool_calls == (
        ToolCall(
            id="toolu_01A09q90qw90lq917835lq9",
            name="get_weather",
            arguments='{"location": "Paris", "unit": "celsius"}',
        ),
    )
    assert api.bodies[0]["tools"] == to_anthropic_tools((WEATHER,))


@pytest.mark.usefixtures("allow_requests")
async def test_usage_counts_cache_reads_and_writes_as_input(harness: Harness) -> None:
    api = FakeAPI(harness.http)
    usage = {
        "input_tokens": 40,
        "cache_creation_input_tokens": 1200,
        "cache_read_input_tokens": 3000,
        "output_tokens": 17,
    }
    api.replies.append(api.json(200, message_json([{"type": "text", "text": "hi"}], usage=usage)))

    response = await harness.model(api).complete(ask())

    assert (response.usage.input_tokens, response.usage.output_tokens) == (4240, 17)


@pytest.mark.usefixtures("allow_requests")
@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("model_context_window_exceeded", "length"),
        ("refusal", "refusal"),
    ],
)
async def test_stop_reasons(harness: Harness, stop_reason: str, finish_reason: str) -> None:
    api = FakeAPI(harness.http)
    api.replies.append(
        api.json(200, message_json([{"type": "text", "text": "partial"}], stop_reason=stop_reason))
    )
    response = await harness.model(api).complete(ask())
    assert response.finish_reason == finish_reason


@pytest.mark.usefixtures("allow_requests")
async def test_unstreamed_reply_still_reaches_on_text(harness: Harness) -> None:
    api = FakeAPI(harness.http)
    api.replies.append(api.json(200, message_json([{"type": "text", "text": "all at once"}])))
    seen: list[str] = []

    await harness.model(api, stream=False).complete(ask(), on_text=seen.append)

    assert seen == ["all at once"]
    assert "stream" not in api.bodies[0]


# --------------------------------------------------------------------------- streaming


@pytest.mark.usefixtures("allow_requests")
async def test_streamed_reply_with_text_and_tool_use(harness: Harness) -> None:
    api = FakeAPI(harness.http)
    api.replies.append(api.stream(sse(*TOOL_USE_STREAM)))
    seen: list[str] = []

    response = await harness.model(api).complete(ask(tools=(WEATHER,)), on_text=seen.append)

    assert api.bodies[0]["stream"] is True
    assert seen == ["I", "'ll check the weather in Paris."]
    assert response.content == "I'll check the weather in Paris."
    assert response.tool_calls == (
        ToolCall(
            id="toolu_01NRLabsLyVHZPKxbKvkfSMn",
            name="get_weather",
            arguments='{"location": "Paris", "unit": "c"}',
        ),
    )
    assert response.finish_reason == "tool_calls"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (477, 65)
    assert response.model == "claude-haiku-4-5-20251001"


@pytest.mark.usefixtures("allow_requests")
async def test_stream_true_without_a_sink_and_a_tool_with_no_input(harness: Harness) -> None:
    api = FakeAPI(harness.http)
    api.replies.append(
        api.stream(
            sse(
                message_start(input_tokens=50),
                block_start(0, {"type": "tool_use", "id": "toolu_9", "name": "now", "input": {}}),
                block_stop(0),
                message_delta("tool_use", 12),
                MESSAGE_STOP,
            )
        )
    )
    response = await harness.model(api, stream=True).complete(ask())
    assert response.tool_calls == (ToolCall(id="toolu_9", name="now", arguments="{}"),)
    assert (response.usage.input_tokens, response.usage.output_tokens) == (50, 12)


@pytest.mark.usefixtures("allow_requests")
async def test_streamed_malformed_tool_json_is_kept_as_sent(harness: Harness) -> None:
    api = FakeAPI(harness.http)
    api.replies.append(
        api.stream(
            sse(
                message_start(),
                block_start(0, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}),
                json_delta(0, '{"path": "a.txt", '),
                json_delta(0, '"mode": }'),
                block_stop(0),
                message_delta("tool_use", 20),
                MESSAGE_STOP,
            )
        )
    )
    response = await harness.model(api, stream=True).complete(ask())
    assert response.tool_calls[0].arguments == '{"path": "a.txt", "mode": }'


# --------------------------------------------------------------------------- failures


@pytest.mark.usefixtures("allow_requests")
async def test_retries_overload_and_server_errors_then_succeeds(harness: Harness) -> None:
    api = FakeAPI(harness.http)
    api.replies += [
        api.json(529, error_json("overloaded_error", "Overloaded")),
        api.json(500, error_json("api_error", "Internal server error")),
        api.json(429, error_json("rate_limit_error", "Number of request tokens has exceeded")),
        api.json(200, message_json([{"type": "text", "text": "finally"}])),
    ]
    model = harness.model(api, max_retries=3, backoff_base=1.0, backoff_max=30.0)

    response = await model.complete(ask())

    assert response.content == "finally"
    assert len(api.requests) == 4
    # exponential with jitter: attempt n waits within [1/2, 1] of base * 2**(n-1)
    assert len(harness.delays) == 3
    for n, delay in enumerate(harness.delays, start=1):
        assert 2 ** (n - 1) / 2 <= delay <= 2 ** (n - 1)


@pytest.mark.usefixtures("allow_requests")
async def test_retry_after_header_is_honoured(harness: Harness) -> None:
    api = FakeAPI(harness.http)
    api.replies += [
        api.json(429, error_json("rate_limit_error", "slow down"), **{"retry-after": "7"}),
        api.json(200, message_json([{"type": "text", "text": "ok"}])),
    ]
    await harness.model(api, backoff_base=0.1).complete(ask())
    assert harness.delays == [7.0]


@pytest.mark.usefixtures("allow_requests")
async def test_connection_errors_and_timeouts_are_retried(harness: Harness) -> None:
    http = harness.http
    api = FakeAPI(http)
    api.replies += [
        lambda request: http.ConnectError("connection refused", request=request),
        lambda request: http.ReadTimeout("timed out", request=request),
        api.json(200, message_json([{"type": "text", "text": "ok"}])),
    ]
    response = await harness.model(api, max_retries=2).complete(ask())
    assert response.content == "ok"
    assert len(api.requests) == 3


@pytest.mark.usefixtures("allow_requests")
async def test_model_unavailable_after_retries(harness: Harness) -> None:
    api = FakeAPI(harness.http)
    api.replies += [api.json(529, error_json("overloaded_error", "Overloaded")) for _ in range(3)]

    with pytest.raises(
        ModelUnavailable,
        match=rf"^anthropic {MODEL}: HTTP 529: Overloaded \(gave up after 3 attempts\)$",
    ) as caught:
        await harness.model(api, max_retries=2).complete(ask())

    assert len(api.requests) == 3
    assert len(harness.delays) == 2
    assert not isinstance(caught.value, anthropic.AnthropicError)


@pytest.mark.usefixtures("allow_requests")
@pytest.mark.parametrize(
    "message",
    [
        "prompt is too long: 215463 tokens > 200000 maximum",
        "input length and `max_tokens` exceed context limit: 195000 + 8192 > 200000, "
        "decrease input length or `max_tokens` and try again",
    ],
)
async def test_prompt_too_long_is_context_overflow(harness: Harness, message: str) -> None:
    api = FakeAPI(harness.http)
    api.replies.append(api.json(400, error_json("invalid_request_error", message)))

    with pytest.raises(ContextOverflow, match=r"exceed|too long"):
        await harness.model(api).complete(ask())
    assert len(api.requests) == 1


@pytest.mark.usefixtures("allow_requests")
async def test_request_too_large_is_context_overflow(harness: Harness) -> None:
    # 413 is the 32 MB body limit: no retry helps, but compacting the history can
    api = FakeAPI(harness.http)
    api.replies.append(
        api.json(
            413,
            error_json("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        )
    )
    with pytest.raises(ContextOverflow, match="HTTP 413"):
        await harness.model(api).complete(ask())
    assert len(api.requests) == 1


@pytest.mark.usefixtures("allow_requests")
@pytest.mark.parametrize(
    ("status", "kind", "message"),
    [
        (400, "invalid_request_error", "messages.1.content.0.tool_use.name: String should match"),
        (401, "authentication_error", "invalid x-api-key"),
        (404, "not_found_error", "model: claude-nonexistent"),
    ],
)
async def test_other_client_errors_are_not_retried(
    harness: Harness, status: int, kind: str, message: str
) -> None:
    api = FakeAPI(harness.http)
    api.replies.append(api.json(status, error_json(kind, message)))

    with pytest.raises(ModelError, match=f"HTTP {status}: {re.escape(message)}") as caught:
        await harness.model(api).complete(ask())

    assert type(caught.value) is ModelError
    assert len(api.requests) == 1
    assert harness.delays == []


@pytest.mark.usefixtures("allow_requests")
async def test_in_stream_overload_error_is_retried(harness: Harness) -> None:
    api = FakeAPI(harness.http)
    api.replies += [
        api.stream(
            sse(
                message_start(),
                block_start(0, {"type": "text", "text": ""}),
                text_delta(0, "Hel"),
                (
                    "error",
                    {
                        "type": "error",
                        "error": {"type": "overloaded_error", "message": "Overloaded"},
                    },
                ),
            )
        ),
        api.stream(
            sse(
                message_start(),
                block_start(0, {"type": "text", "text": ""}),
                text_delta(0, "Hello"),
                block_stop(0),
                message_delta("end_turn", 3),
                MESSAGE_STOP,
            )
        ),
    ]
    seen: list[str] = []

    response = await harness.model(api).complete(ask(), on_text=seen.append)

    assert response.content == "Hello"
    # the failed attempt's text already went out; the record is the returned response
    assert seen == ["Hel", "Hello"]
    assert len(api.requests) == 2


@pytest.mark.usefixtures("allow_requests")
async def test_stream_cut_mid_body_or_truncated_is_retried(harness: Harness) -> None:
    http = harness.http
    api = FakeAPI(http)
    head = sse(message_start(), block_start(0, {"type": "text", "text": ""}), text_delta(0, "Hi"))

    def cut(request: Any) -> Any:
        async def body() -> AsyncIterator[bytes]:
            yield head
            raise http.ReadError("connection reset by peer", request=request)

        return http.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    api.replies += [
        cut,
        api.stream(head),  # ends cleanly but without message_stop
        api.stream(sse(*TOOL_USE_STREAM)),
    ]
    response = await harness.model(api, stream=True).complete(ask())
    assert response.finish_reason == "tool_calls"
    assert len(api.requests) == 3


@pytest.mark.usefixtures("allow_requests")
async def test_a_failing_sink_is_raised_as_is(harness: Harness) -> None:
    api = FakeAPI(harness.http)
    api.replies.append(api.stream(sse(*TOOL_USE_STREAM)))

    def sink(text: str) -> None:
        raise KeyError("display closed")

    with pytest.raises(KeyError, match="display closed"):
        await harness.model(api).complete(ask(), on_text=sink)
    assert len(api.requests) == 1


# --------------------------------------------------------------------------- setup


async def test_real_requests_are_refused_while_switched_off(harness: Harness) -> None:
    api = FakeAPI(harness.http)
    with pytest.raises(UsageError, match="TETHER_ALLOW_MODEL_REQUESTS"):
        await harness.model(api).complete(ask())
    assert api.requests == []


@pytest.mark.usefixtures("allow_requests")
async def test_missing_api_key(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    api = FakeAPI(harness.http)
    with pytest.raises(UsageError, match="ANTHROPIC_API_KEY"):
        await harness.model(api, api_key=None).complete(ask())
    assert api.requests == []


@pytest.mark.usefixtures("allow_requests")
async def test_an_http_client_from_the_wrong_library_is_a_usage_error(http: ModuleType) -> None:
    require(http.__name__ == "httpx2", "the installed SDK uses httpx itself")
    httpx = pytest.importorskip("httpx")
    async with httpx.AsyncClient() as wrong:
        model = AnthropicModel(MODEL, api_key="sk-ant-test", http_client=wrong)
        with pytest.raises(UsageError, match="httpx2"):
            await model.complete(ask())


@pytest.fixture
def without_sdk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(sys.modules):
        if name == "anthropic" or name.startswith("anthropic."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "anthropic", None)  # makes `import anthropic` fail
    yield


@pytest.mark.usefixtures("without_sdk")
def test_missing_extra_names_it() -> None:
    with pytest.raises(UsageError, match=r"tether-runtime\[anthropic\]"):
        AnthropicModel(MODEL, api_key="sk-ant-test")


def test_count_tokens_is_a_conservative_estimate(http: ModuleType) -> None:
    model = AnthropicModel(MODEL, api_key="sk-ant-test")
    assert repr(model) == f"AnthropicModel({MODEL!r})"  # no key in reprs or logs
    messages = ask().messages
    assert model.count_tokens(messages) == estimate_tokens(messages)
    assert model.count_tokens(messages, (WEATHER,)) == (
        estimate_tokens(messages, (WEATHER,)) + TOOL_USE_OVERHEAD
    )
    assert model.context_window == 200_000 and model.max_output_tokens == 8_192


def test_one_sdk_client_per_event_loop(http: ModuleType) -> None:
    model = AnthropicModel(MODEL, api_key="sk-ant-test")

    async def twice() -> tuple[Any, Any]:
        return model._get_client(), model._get_client()

    first, same = asyncio.run(twice())
    second, _ = asyncio.run(twice())
    assert first is same
    assert second is not first  # a pooled connection cannot cross event loops


# --------------------------------------------------------------------------- count tokens


class FakeCounter:
    """POST /v1/messages/count_tokens: one token per word, plus 5 for the request."""

    def __init__(self, http: ModuleType, status: int = 200) -> None:
        self.http = http
        self.status = status
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: Any) -> Any:
        assert request.method == "POST" and request.url.path == "/v1/messages/count_tokens"
        body = json.loads(request.content)
        self.bodies.append(body)
        if self.status != 200:
            error = {"type": "error", "error": {"type": "x", "message": "no"}}
            return self.http.Response(self.status, json=error)
        words = sum(len(str(m["content"]).split()) for m in body["messages"])
        words += sum(len(json.dumps(t).split()) for t in body.get("tools", []))
        return self.http.Response(200, json={"input_tokens": words + 5})


def counting_model(http: ModuleType, api: FakeCounter) -> AnthropicModel:
    return AnthropicModel(
        MODEL, api_key="sk-ant-test", count_tokens_api=True,
        count_http_client=http.Client(transport=http.MockTransport(api)),
    )  # fmt: skip


COUNTED = (
    Message(role="system", content="be brief please"),
    Message(role="user", content="one two three four"),
)


def test_counts_come_from_the_count_tokens_api_once_per_text(
    http: ModuleType, allow_requests: None
) -> None:
    api = FakeCounter(http)
    model = counting_model(http, api)
    assert model.count_tokens(COUNTED) == (3 + 5) + (4 + 5)
    assert model.count_tokens(COUNTED) == (3 + 5) + (4 + 5)
    assert [b["messages"][0]["content"] for b in api.bodies] == [
        "be brief please", "one two three four",
    ]  # fmt: skip
    assert all(b["model"] == MODEL for b in api.bodies)
    with_tools = model.count_tokens(COUNTED, (ToolSpec(name="t", description="d", parameters={}),))
    assert with_tools > model.count_tokens(COUNTED)
    assert "tools" in api.bodies[-1]


def test_a_refusing_count_api_is_asked_once_then_estimated(
    http: ModuleType, allow_requests: None
) -> None:
    api = FakeCounter(http, status=401)
    model = counting_model(http, api)
    estimate = AnthropicModel(MODEL, api_key="sk-ant-test").count_tokens(COUNTED)
    assert model.count_tokens(COUNTED) == estimate
    assert model.count_tokens(COUNTED) == estimate
    assert len(api.bodies) == 1


def test_the_count_api_is_not_asked_when_requests_are_forbidden(http: ModuleType) -> None:
    api = FakeCounter(http)
    model = counting_model(http, api)
    model.count_tokens(COUNTED)
    assert api.bodies == []
