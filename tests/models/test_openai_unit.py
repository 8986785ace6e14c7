"""OpenAIModel against a mock chat-completions endpoint (no network, no server).

The HTTP mock is built with whichever library the installed SDK uses (`httpx2` for
openai>=3, `httpx` before). Bodies follow the shapes of OpenAI's and llama.cpp's replies.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

import tether.models._openai_tokens as openai_tokens
from tether.errors import ContextOverflow, ModelError, ModelUnavailable, UsageError
from tether.models import Message, Model, ModelRequest, ToolCall, ToolSpec, estimate_tokens
from tether.models._tokens import MESSAGE_OVERHEAD, estimate_text_tokens
from tether.models.openai import TOOLS_OVERHEAD, OpenAIModel

from ..conftest import require

try:
    import openai
except ImportError:  # pragma: no cover - the dev extra installs it
    openai = None  # type: ignore[assignment]


def _http_module() -> ModuleType:
    requires = importlib.metadata.requires("openai") or []
    uses_httpx2 = any(re.match(r"httpx2(?![\w.-])", r) for r in requires)
    return importlib.import_module("httpx2" if uses_httpx2 else "httpx")


# --------------------------------------------------------------------------- wire data


def completion_json(
    content: str | None = "Hello!",
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = "stop",
    usage: dict[str, Any] | None = None,
    with_usage: bool = True,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    body: dict[str, Any] = {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
    }
    if with_usage:
        body["usage"] = usage or {
            "prompt_tokens": 31,
            "completion_tokens": 7,
            "total_tokens": 38,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
    return body


def tool_call_json(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def chunk(
    delta: dict[str, Any] | None = None,
    *,
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-stream",
        "object": "chat.completion.chunk",
        "created": 1741570283,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def call_delta(
    index: int, *, call_id: str | None = None, name: str | None = None, args: str = ""
) -> dict[str, Any]:
    function: dict[str, Any] = {"arguments": args}
    if name is not None:
        function["name"] = name
    delta: dict[str, Any] = {"index": index, "function": function}
    if call_id is not None:
        delta.update(id=call_id, type="function")
    return {"tool_calls": [delta]}


def sse(*chunks: dict[str, Any], done: bool = True) -> bytes:
    text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
    return (text + ("data: [DONE]\n\n" if done else "")).encode()


STREAM_USAGE = {"prompt_tokens": 57, "completion_tokens": 21, "total_tokens": 78}

TEXT_AND_TWO_CALLS = (
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Let me "}),
    chunk({"content": "check."}),
    chunk(call_delta(0, call_id="call_a", name="get_weather")),
    chunk(call_delta(0, args='{"loc')),
    chunk(call_delta(1, call_id="call_b", name="get_weather", args='{"location"')),
    chunk(call_delta(0, args='ation": "Paris"}')),
    chunk(call_delta(1, args=': "Oslo"}')),
    chunk({}, finish_reason="tool_calls"),
    chunk(usage=STREAM_USAGE),
)

LLAMA_OVERFLOW = {
    "error": {
        "code": 400,
        "message": "request (5024 tokens) exceeds the available context size (4096 tokens), "
        "try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 5024,
        "n_ctx": 4096,
    }
}
OPENAI_OVERFLOW = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens. However, your "
        "messages resulted in 130415 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}


def error_json(message: str, *, kind: str = "invalid_request_error", code: Any = None) -> Any:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


# --------------------------------------------------------------------------- harness

Reply = Callable[[Any], Any]


class FakeAPI:
    """A scripted /chat/completions: each request takes the next reply (the last repeats)."""

    def __init__(self, http: ModuleType) -> None:
        self.http = http
        self.replies: list[Reply] = []
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: Any) -> Any:
        assert request.url.path.endswith("/chat/completions"), request.url
        self.requests.append(json.loads(request.content))
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        return reply(request)

    def json(self, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return lambda request: self.http.Response(status, json=body, headers=headers)

    def stream(self, data: bytes) -> Reply:
        return lambda request: self.http.Response(
            200, headers={"content-type": "text/event-stream"}, content=data
        )

    def fail(self, exc_type: str, message: str = "boom") -> Reply:
        def raise_(request: Any) -> Any:
            raise getattr(self.http, exc_type)(message, request=request)

        return raise_


class Harness:
    def __init__(self, http: ModuleType) -> None:
        self.http = http
        self.models: list[OpenAIModel] = []
        self.delays: list[float] = []

    def model(self, api: FakeAPI, **options: Any) -> OpenAIModel:
        client = self.http.AsyncClient(transport=self.http.MockTransport(api))
        options.setdefault("api_key", "sk-test")
        options.setdefault("backoff_base", 0.01)
        model = OpenAIModel(options.pop("model", "gpt-4o-mini"), http_client=client, **options)

        async def record(delay: float) -> None:
            self.delays.append(delay)

        model._sleep = record
        self.models.append(model)
        return model


@pytest.fixture
def http() -> ModuleType:
    require(openai is not None, "the openai SDK is not installed")
    return _http_module()


@pytest.fixture
def allow_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tether.models._base.ALLOW_MODEL_REQUESTS", True)


@pytest.fixture
async def harness(http: ModuleType) -> AsyncIterator[Harness]:
    h = Harness(http)
    yield h
    for model in h.models:
        await model.aclose()


@pytest.fixture
def api(http: ModuleType) -> FakeAPI:
    return FakeAPI(http)


WEATHER = ToolSpec(
    name="get_weather",
    description="Current weather for a city.",
    parameters={
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
)


def ask(text: str = "What's the weather in Paris?", **kw: Any) -> ModelRequest:
    return ModelRequest(
        messages=(Message(role="system", content="Be brief."), Message(role="user", content=text)),
        **kw,
    )


# --------------------------------------------------------------------------- translation


@pytest.mark.usefixtures("allow_requests")
async def test_request_wire_format(harness: Harness, api: FakeAPI) -> None:
    api.replies.append(api.json(completion_json()))
    history = (
        Message(role="system", content="Be brief."),
        Message(role="user", content="Weather in Paris and Oslo?"),
        Message(
            role="assistant",
            content="",
            tool_calls=(
                ToolCall(id="call_1", name="get_weather", arguments='{"location": "Paris"}'),
                ToolCall(id="call_2", name="get_weather", arguments='{"location": "Os'),
                ToolCall(id="call_3", name="get_weather", arguments=""),
            ),
        ),
        Message(role="tool", content="sunny", tool_call_id="call_1", name="get_weather"),
        Message(role="tool", content="bad arguments", tool_call_id="call_2", name="get_weather"),
        Message(role="tool", content="rain", tool_call_id="call_3", name="get_weather"),
        Message(role="assistant", content="Sunny in Paris."),
    )
    model = harness.model(api, max_output_tokens=100, extra={"stop": ["</tool_call>"], "seed": 7})
    await model.complete(
        ModelRequest(messages=history, tools=(WEATHER,), max_tokens=500, temperature=0.2)
    )
    [sent] = api.requests
    assert sent["model"] == "gpt-4o-mini"
    assert sent["max_tokens"] == 100  # the request's bound, capped at max_output_tokens
    assert sent["temperature"] == 0.2
    assert sent["stop"] == ["</tool_call>"] and sent["seed"] == 7
    assert "stream" not in sent or sent["stream"] is False
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city.",
                "parameters": WEATHER.parameters,
            },
        }
    ]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                tool_call_json("call_1", "get_weather", '{"location": "Paris"}'),
                # malformed or empty stored arguments go out as valid JSON objects
                tool_call_json("call_2", "get_weather", '{"_raw": "{\\"location\\": \\"Os"}'),
                tool_call_json("call_3", "get_weather", "{}"),
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "bad arguments"},
        {"role": "tool", "tool_call_id": "call_3", "content": "rain"},
        {"role": "assistant", "content": "Sunny in Paris."},
    ]


@pytest.mark.usefixtures("allow_requests")
async def test_max_tokens_defaults_and_alternative_parameter(
    harness: Harness, api: FakeAPI
) -> None:
    api.replies.append(api.json(completion_json()))
    await harness.model(api, max_output_tokens=321).complete(ask())
    await harness.model(api, max_tokens_param="max_completion_tokens").complete(ask(max_tokens=50))
    first, second = api.requests
    assert first["max_tokens"] == 321 and "temperature" not in first
    assert second["max_completion_tokens"] == 50 and "max_tokens" not in second


def test_invalid_options_are_usage_errors(http: ModuleType) -> None:
    with pytest.raises(UsageError, match="extra"):
        OpenAIModel("m", api_key="k", extra={"messages": []})
    with pytest.raises(UsageError, match="max_retries"):
        OpenAIModel("m", api_key="k", max_retries=-1)
    with pytest.raises(UsageError, match="max_tokens_param"):
        OpenAIModel("m", api_key="k", max_tokens_param="n_predict")
    model = OpenAIModel("m", api_key="k")
    with pytest.raises(UsageError, match="max_tokens"):
        model.build_request(ask(max_tokens=0))
    with pytest.raises(UsageError, match="tool_call_id"):
        model.build_request(ModelRequest(messages=(Message(role="tool", content="x"),)))


@pytest.mark.usefixtures("allow_requests")
async def test_plain_reply(harness: Harness, api: FakeAPI) -> None:
    api.replies.append(api.json(completion_json("Hello!")))
    seen: list[str] = []
    model = harness.model(api, stream=False, price_name="gpt-4o-mini")
    assert isinstance(model, Model)
    response = await model.complete(ask(), on_text=seen.append)
    assert response.content == "Hello!"
    assert response.tool_calls == ()
    assert response.finish_reason == "stop"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (31, 7)
    assert response.model == "gpt-4o-mini-2024-07-18"
    assert seen == ["Hello!"]  # unstreamed: on_text gets the whole text at once
    assert "stream" not in api.requests[0]


@pytest.mark.usefixtures("allow_requests")
async def test_streams_by_default_only_when_there_is_a_sink(harness: Harness, api: FakeAPI) -> None:
    api.replies += [
        api.json(completion_json("whole")),
        api.stream(sse(chunk({"content": "streamed"}), chunk({}, finish_reason="stop"))),
    ]
    model = harness.model(api)  # stream=None
    assert (await model.complete(ask())).content == "whole"
    assert (await model.complete(ask(), on_text=lambda text: None)).content == "streamed"
    assert "stream" not in api.requests[0]
    assert api.requests[1]["stream"] is True


@pytest.mark.usefixtures("allow_requests")
async def test_tool_calls_keep_raw_arguments(harness: Harness, api: FakeAPI) -> None:
    calls = [
        tool_call_json("call_ok", "get_weather", '{"location": "Paris"}'),
        tool_call_json("call_cut", "get_weather", '{"location": "Os'),
    ]
    api.replies.append(api.json(completion_json(None, tool_calls=calls, finish_reason="length")))
    response = await harness.model(api).complete(ask(tools=(WEATHER,)))
    assert response.content == ""
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("call_ok", "get_weather", '{"location": "Paris"}'),
        ("call_cut", "get_weather", '{"location": "Os'),  # kept exactly, not "fixed"
    ]
    assert response.finish_reason == "length"  # a cut-off call stays "length"


@pytest.mark.parametrize(
    ("wire", "has_calls", "expected"),
    [
        ("stop", False, "stop"),
        ("stop", True, "tool_calls"),  # servers that say "stop" while calling
        (None, True, "tool_calls"),
        (None, False, "stop"),
        ("tool_calls", True, "tool_calls"),
        ("function_call", True, "tool_calls"),
        ("length", False, "length"),
        ("length", True, "length"),
        ("content_filter", False, "content_filter"),
    ],
)
@pytest.mark.usefixtures("allow_requests")
async def test_finish_reasons(
    harness: Harness, api: FakeAPI, wire: str | None, has_calls: bool, expected: str
) -> None:
    calls = [tool_call_json("c1", "get_weather", "{}")] if has_calls else None
    api.replies.append(api.json(completion_json("x", tool_calls=calls, finish_reason=wire)))
    response = await harness.model(api).complete(ask())
    assert response.finish_reason == expected


@pytest.mark.usefixtures("allow_requests")
async def test_missing_usage_is_estimated_conservatively(harness: Harness, api: FakeAPI) -> None:
    api.replies += [
        api.json(completion_json("A fairly long answer " * 10, with_usage=False)),
        api.json(completion_json("", with_usage=False)),
        api.json(completion_json("hi", usage={"prompt_tokens": 0, "completion_tokens": 0})),
    ]
    model = harness.model(api, model="some-local-model")
    request = ask(tools=(WEATHER,))
    long, empty, zeros = [await model.complete(request) for _ in range(3)]
    floor = estimate_tokens(request.messages, request.tools)
    for response in (long, empty, zeros):
        assert response.usage.input_tokens == model.count_tokens(request.messages, request.tools)
        assert response.usage.input_tokens >= floor
        assert response.usage.output_tokens >= 1  # never zero: budgets charge this
    assert long.usage.output_tokens >= estimate_text_tokens("A fairly long answer " * 10) >= 40


# --------------------------------------------------------------------------- streaming


@pytest.mark.usefixtures("allow_requests")
async def test_streamed_text_and_tool_calls_reassemble(harness: Harness, api: FakeAPI) -> None:
    api.replies.append(api.stream(sse(*TEXT_AND_TWO_CALLS)))
    seen: list[str] = []
    response = await harness.model(api, stream=True).complete(
        ask(tools=(WEATHER,)), on_text=seen.append
    )
    [sent] = api.requests
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert seen == ["Let me ", "check."]
    assert response.content == "Let me check."
    assert [(c.id, c.name, c.arguments) for c in response.tool_calls] == [
        ("call_a", "get_weather", '{"location": "Paris"}'),
        ("call_b", "get_weather", '{"location": "Oslo"}'),
    ]
    assert response.finish_reason == "tool_calls"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (57, 21)


@pytest.mark.usefixtures("allow_requests")
async def test_streamed_without_usage_is_estimated(harness: Harness, api: FakeAPI) -> None:
    api.replies.append(
        api.stream(sse(chunk({"content": "Hi there"}), chunk({}, finish_reason="stop")))
    )
    response = await harness.model(api, stream=True).complete(ask())
    assert response.content == "Hi there"
    assert response.usage.input_tokens >= estimate_tokens(ask().messages)
    assert response.usage.output_tokens >= 1


@pytest.mark.usefixtures("allow_requests")
async def test_stream_cut_or_ended_early_is_retried(harness: Harness, api: FakeAPI) -> None:
    http = harness.http
    head = sse(chunk({"content": "Hel"}), done=False)

    def cut(request: Any) -> Any:
        async def body() -> AsyncIterator[bytes]:
            yield head
            raise http.ReadError("connection reset by peer", request=request)

        return http.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    api.replies += [
        cut,
        api.stream(head),  # ends cleanly, but without a finish_reason
        api.stream(sse(chunk({"content": "Hello"}), chunk({}, finish_reason="stop"))),
    ]
    seen: list[str] = []
    response = await harness.model(api).complete(ask(), on_text=seen.append)
    assert response.content == "Hello"
    assert seen == ["Hel", "Hel", "Hello"]  # on_text is a preview; the response is the record
    assert len(api.requests) == 3 and len(harness.delays) == 2


@pytest.mark.usefixtures("allow_requests")
async def test_a_failing_sink_is_raised_as_is(harness: Harness, api: FakeAPI) -> None:
    api.replies.append(api.stream(sse(*TEXT_AND_TWO_CALLS)))

    def sink(text: str) -> None:
        raise KeyError("display closed")

    with pytest.raises(KeyError, match="display closed"):
        await harness.model(api).complete(ask(), on_text=sink)
    assert len(api.requests) == 1


# --------------------------------------------------------------------------- errors


@pytest.mark.usefixtures("allow_requests")
async def test_rate_limits_and_server_errors_are_retried_with_backoff(
    harness: Harness, api: FakeAPI
) -> None:
    api.replies += [
        api.json(error_json("Rate limit reached", kind="requests"), status=429),
        api.json(error_json("The server had an error", kind="server_error"), status=500),
        api.json({"error": "Bad gateway"}, status=502),
        api.json(error_json("overloaded", kind="server_error"), status=503),
        api.json(completion_json("finally")),
    ]
    model = harness.model(api, backoff_base=0.01, backoff_max=10.0, max_retries=4)
    response = await model.complete(ask())
    assert response.content == "finally"
    assert len(api.requests) == 5
    # exponential with jitter: attempt n waits within [1/2, 1] of base * 2**(n-1)
    assert len(harness.delays) == 4
    for n, delay in enumerate(harness.delays, start=1):
        ceiling = 0.01 * 2 ** (n - 1)
        assert ceiling / 2 <= delay <= ceiling


@pytest.mark.usefixtures("allow_requests")
async def test_backoff_is_capped_and_retry_after_honoured(harness: Harness, api: FakeAPI) -> None:
    api.replies += [
        api.json(error_json("slow down"), status=429, headers={"retry-after": "0.5"}),
        api.json(error_json("slow down"), status=429, headers={"retry-after": "100"}),
        api.json(error_json("slow down"), status=429, headers={"retry-after-ms": "250"}),
        api.json(completion_json()),
    ]
    await harness.model(api, backoff_base=0.01, backoff_max=2.0).complete(ask())
    assert harness.delays[0] >= 0.5
    assert harness.delays[1] == 2.0  # a server's retry-after, but never past backoff_max
    assert harness.delays[2] >= 0.25


@pytest.mark.usefixtures("allow_requests")
async def test_model_unavailable_after_retries(harness: Harness, api: FakeAPI) -> None:
    api.replies.append(api.json(error_json("overloaded", kind="server_error"), status=503))
    with pytest.raises(ModelUnavailable, match=r"HTTP 503.*3 attempts") as caught:
        await harness.model(api, max_retries=2).complete(ask())
    assert len(api.requests) == 3
    assert len(harness.delays) == 2
    assert isinstance(caught.value.__cause__, openai.APIStatusError)  # kept, not leaked


@pytest.mark.parametrize(
    ("failure", "message"),
    [("ConnectError", "connection"), ("ReadTimeout", "timed out")],
)
@pytest.mark.usefixtures("allow_requests")
async def test_network_failures_are_retried_then_unavailable(
    harness: Harness, api: FakeAPI, failure: str, message: str
) -> None:
    api.replies.append(api.fail(failure))
    with pytest.raises(ModelUnavailable, match=message):
        await harness.model(api, max_retries=3).complete(ask())
    assert len(api.requests) == 4


@pytest.mark.usefixtures("allow_requests")
async def test_network_failure_then_success(harness: Harness, api: FakeAPI) -> None:
    api.replies += [api.fail("ConnectError"), api.json(completion_json("ok"))]
    response = await harness.model(api).complete(ask())
    assert response.content == "ok" and len(api.requests) == 2


@pytest.mark.parametrize("body", [LLAMA_OVERFLOW, OPENAI_OVERFLOW], ids=["llama.cpp", "openai"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.usefixtures("allow_requests")
async def test_context_overflow(
    harness: Harness, api: FakeAPI, body: dict[str, Any], stream: bool
) -> None:
    api.replies.append(api.json(body, status=400))
    with pytest.raises(ContextOverflow) as caught:
        await harness.model(api, stream=stream).complete(ask())
    assert body["error"]["message"] in str(caught.value)  # the provider's own words
    assert len(api.requests) == 1  # never retried
    assert harness.delays == []


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, error_json("Invalid value for 'temperature'")),
        (401, error_json("Incorrect API key provided", code="invalid_api_key")),
        (403, error_json("Forbidden")),
        (404, error_json("The model `gpt-9` does not exist", code="model_not_found")),
        (422, error_json("Unprocessable")),
        (429, error_json("You exceeded your current quota", code="insufficient_quota")),
    ],
)
@pytest.mark.usefixtures("allow_requests")
async def test_other_client_errors_are_not_retried(
    harness: Harness, api: FakeAPI, status: int, body: dict[str, Any]
) -> None:
    api.replies.append(api.json(body, status=status))
    with pytest.raises(ModelError) as caught:
        await harness.model(api).complete(ask())
    assert type(caught.value) is ModelError  # neither ModelUnavailable nor ContextOverflow
    assert f"HTTP {status}" in str(caught.value)
    assert body["error"]["message"] in str(caught.value)
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    "reply",
    [
        lambda http: http.Response(
            200, content=b"<html>oops", headers={"content-type": "application/json"}
        ),
        lambda http: http.Response(200, json={"choices": []}),
        lambda http: http.Response(200, json={"choices": "nonsense"}),
    ],
    ids=["not-json", "no-choices", "wrong-shape"],
)
@pytest.mark.usefixtures("allow_requests")
async def test_malformed_responses_are_model_errors(
    harness: Harness, api: FakeAPI, reply: Callable[[ModuleType], Any]
) -> None:
    api.replies.append(lambda request: reply(harness.http))
    with pytest.raises(ModelError):
        await harness.model(api).complete(ask())


# --------------------------------------------------------------------------- setup


async def test_real_requests_are_refused_while_switched_off(harness: Harness, api: FakeAPI) -> None:
    with pytest.raises(UsageError, match="TETHER_ALLOW_MODEL_REQUESTS"):
        await harness.model(api).complete(ask())
    assert api.requests == []


def test_keys_and_urls_from_the_environment(
    http: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UsageError, match="OPENAI_API_KEY"):
        OpenAIModel("gpt-4o-mini")
    local = OpenAIModel("local", base_url="http://127.0.0.1:8080/v1")  # a placeholder key
    assert local.name == "local"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-value")
    model = OpenAIModel("qwen", price_name="local")
    assert model.base_url == "http://127.0.0.1:9/v1"
    assert (model.name, model.model) == ("local", "qwen")  # priced as "local", sent as "qwen"
    assert "sk-secret" not in repr(model)


@pytest.fixture
def without_sdk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(sys.modules):
        if name == "openai" or name.startswith("openai."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "openai", None)  # makes `import openai` fail
    yield


@pytest.mark.usefixtures("without_sdk")
def test_missing_extra_names_it() -> None:
    with pytest.raises(UsageError, match=r"pip install 'tether-runtime\[openai\]'"):
        OpenAIModel("gpt-4o-mini", api_key="sk-test")


def test_one_sdk_client_per_event_loop(http: ModuleType) -> None:
    model = OpenAIModel("local", base_url="http://127.0.0.1:9/v1")

    async def twice() -> tuple[Any, Any]:
        return model._get_client(), model._get_client()

    first, same = asyncio.run(twice())
    second, _ = asyncio.run(twice())
    assert first is same
    assert second is not first  # a pooled connection cannot cross event loops


# --------------------------------------------------------------------------- tokens


@pytest.fixture
def fresh_encodings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_tokens, "_encodings", {})


@pytest.mark.usefixtures("fresh_encodings")
def test_count_tokens_estimates_for_unknown_tokenizers(http: ModuleType) -> None:
    model = OpenAIModel("local", base_url="http://127.0.0.1:9/v1")
    messages = ask().messages
    assert model.count_tokens(messages) == estimate_tokens(messages) + MESSAGE_OVERHEAD
    assert model.count_tokens(messages, (WEATHER,)) == (
        estimate_tokens(messages, (WEATHER,)) + MESSAGE_OVERHEAD + TOOLS_OVERHEAD
    )


class FakeEncoding:
    def encode(self, text: str, disallowed_special: Any = ()) -> list[int]:
        return [0] * len(text.split())


@pytest.mark.usefixtures("fresh_encodings")
def test_count_tokens_uses_tiktoken_when_its_encoding_loads(
    http: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiktoken = pytest.importorskip("tiktoken")
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: FakeEncoding())
    model = OpenAIModel("gpt-4o-mini", api_key="sk-test")
    messages = (Message(role="user", content="one two three"),)
    assert model.count_tokens(messages) == (MESSAGE_OVERHEAD + 3) + MESSAGE_OVERHEAD


@pytest.mark.usefixtures("fresh_encodings")
def test_count_tokens_falls_back_when_tiktoken_cannot_load(
    http: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline, tiktoken's first use tries to download its encoding: it must neither fail
    the count nor hang it."""
    tiktoken = pytest.importorskip("tiktoken")
    model = OpenAIModel("gpt-4o-mini", api_key="sk-test")
    messages = ask().messages
    expected = estimate_tokens(messages) + MESSAGE_OVERHEAD

    def offline(name: str) -> Any:
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    assert model.count_tokens(messages) == expected

    openai_tokens._encodings.clear()
    monkeypatch.setattr(openai_tokens, "TIKTOKEN_LOAD_TIMEOUT", 0.2)
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: time.sleep(5))  # a stalled fetch
    started = time.monotonic()
    assert model.count_tokens(messages) == expected
    assert model.count_tokens(messages) == expected  # the failure is remembered
    assert time.monotonic() - started < 2
