"""OpenAIModel against a real OpenAI-compatible server: llama.cpp with a tiny local model
(see conftest.py and llm_server.py).

A 270M model is not reproducible across builds nor smart: these tests assert protocol
shapes (finish reasons, ids, names among the offered tools, arguments that parse, streamed
deltas that reassemble, usage the server agrees with), never what the model chose to say.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import tether.models._base as models_base
from tether.errors import ContextOverflow
from tether.models import Message, ModelRequest, ModelResponse, ToolCall, ToolSpec
from tether.models.openai import OpenAIModel

pytestmark = pytest.mark.llm

END_OF_TURN = ["<|im_end|>", "<|im_start|>"]
"""The test template's turn markers are plain text to Gemma: stop on them."""

TOOLS = (
    ToolSpec(
        name="get_weather",
        description="Get the current weather for a city",
        parameters={
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    ),
    ToolSpec(
        name="add",
        description="Add two integers",
        parameters={
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    ),
)
TOOL_NAMES = {t.name for t in TOOLS}

EXAMPLES = (
    Message(role="user", content="What is the weather in Paris?"),
    Message(
        role="assistant",
        content="",
        tool_calls=(ToolCall(id="call_ex1", name="get_weather", arguments='{"city": "Paris"}'),),
    ),
    Message(role="tool", content="sunny", tool_call_id="call_ex1", name="get_weather"),
    Message(role="assistant", content="It is sunny in Paris."),
    Message(role="user", content="What is 2 plus 3?"),
    Message(
        role="assistant",
        content="",
        tool_calls=(ToolCall(id="call_ex2", name="add", arguments='{"a": 2, "b": 3}'),),
    ),
    Message(role="tool", content="5", tool_call_id="call_ex2", name="add"),
    Message(role="assistant", content="2 plus 3 is 5."),
)
"""A two-example history: with it (and a stop on </tool_call>) the tiny model calls tools.
Small changes matter to a 270M model: measured here, an arithmetic question got a call
with every variant of this history tried, a weather question with most but not all."""

TOOL_QUESTION = (*EXAMPLES, Message(role="user", content="What is 7 plus 8?"))

PLAIN = (
    Message(role="system", content="You are a helpful assistant."),
    Message(role="user", content="Name a colour of the sky."),
)

ModelFactory = Callable[..., OpenAIModel]


@pytest.fixture
async def make_model(
    llm_server: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ModelFactory]:
    """Builds OpenAIModels on the server, with real requests allowed for this test only."""
    monkeypatch.setattr(models_base, "ALLOW_MODEL_REQUESTS", True)
    made: list[OpenAIModel] = []

    def make(**options: Any) -> OpenAIModel:
        options.setdefault("context_window", 4096)
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", 60.0)
        model = OpenAIModel("local", base_url=llm_server, api_key="unused", **options)
        made.append(model)
        return model

    yield make
    for model in made:
        await model.aclose()


async def raw_completion(model: OpenAIModel, request: ModelRequest) -> Any:
    """The server's own answer to the same wire request, through the SDK directly."""
    import openai

    async with openai.AsyncOpenAI(base_url=model.base_url, api_key="unused") as client:
        return await client.chat.completions.create(**model.build_request(request))


def assert_tool_calls(response: ModelResponse) -> None:
    assert response.finish_reason == "tool_calls", response
    assert response.tool_calls, response
    ids = [call.id for call in response.tool_calls]
    assert all(ids) and len(set(ids)) == len(ids)
    for call in response.tool_calls:
        assert call.name in TOOL_NAMES
        assert isinstance(json.loads(call.arguments), dict)


async def test_plain_reply(make_model: ModelFactory) -> None:
    model = make_model(extra={"stop": END_OF_TURN})
    response = await model.complete(ModelRequest(messages=PLAIN, max_tokens=24, temperature=0))
    assert response.content.strip()
    assert response.tool_calls == ()
    assert response.finish_reason in ("stop", "length")
    assert response.model == "local"
    assert response.usage.input_tokens > 0
    assert 0 < response.usage.output_tokens <= 24


async def test_streamed_reply_reassembles(make_model: ModelFactory) -> None:
    model = make_model(stream=True, extra={"stop": END_OF_TURN})
    deltas: list[str] = []
    response = await model.complete(
        ModelRequest(messages=PLAIN, max_tokens=24, temperature=0), on_text=deltas.append
    )
    assert len(deltas) >= 2, deltas  # it really streamed, token by token
    assert "".join(deltas) == response.content
    assert response.content.strip()
    assert response.finish_reason in ("stop", "length")
    # usage arrives in the final chunk (stream_options.include_usage)
    assert response.usage.input_tokens > 0
    assert 0 < response.usage.output_tokens <= 24


async def test_usage_agrees_with_the_server(make_model: ModelFactory) -> None:
    request = ModelRequest(messages=PLAIN, max_tokens=16, temperature=0)
    model = make_model(extra={"stop": END_OF_TURN})
    ours = await model.complete(request)
    raw = await raw_completion(model, request)
    assert raw.usage is not None
    assert ours.usage.input_tokens == raw.usage.prompt_tokens > 0
    assert 0 < ours.usage.output_tokens <= 16
    if raw.choices[0].message.content == ours.content:  # same greedy answer: same count
        assert ours.usage.output_tokens == raw.usage.completion_tokens

    streamed = await make_model(stream=True, extra={"stop": END_OF_TURN}).complete(request)
    assert streamed.usage.input_tokens == raw.usage.prompt_tokens
    assert 0 < streamed.usage.output_tokens <= 16


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_tool_call(make_model: ModelFactory, stream: bool) -> None:
    model = make_model(stream=stream, extra={"stop": ["</tool_call>"]})
    response = await model.complete(
        ModelRequest(messages=TOOL_QUESTION, tools=TOOLS, max_tokens=64, temperature=0)
    )
    assert_tool_calls(response)


async def test_tool_result_is_sent_back_and_answered(make_model: ModelFactory) -> None:
    caller = make_model(extra={"stop": ["</tool_call>"]})
    first = await caller.complete(
        ModelRequest(messages=TOOL_QUESTION, tools=TOOLS, max_tokens=64, temperature=0)
    )
    assert_tool_calls(first)
    result = "rainy, 12 C and windy along the whole coast of the bay"
    history = (
        *TOOL_QUESTION,
        Message(role="assistant", content=first.content, tool_calls=first.tool_calls),
        *(
            Message(role="tool", content=result, tool_call_id=call.id, name=call.name)
            for call in first.tool_calls
        ),
    )
    answerer = make_model(extra={"stop": [*END_OF_TURN, "</tool_call>"]})
    second = await answerer.complete(
        ModelRequest(messages=history, tools=TOOLS, max_tokens=12, temperature=0)
    )
    assert second.finish_reason in ("stop", "length", "tool_calls")
    assert second.content.strip() or second.tool_calls
    # The server rendered the call and its result into the prompt.
    assert second.usage.input_tokens > first.usage.input_tokens + len(first.tool_calls) * 10


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_truncated_tool_call_keeps_raw_arguments(
    make_model: ModelFactory, stream: bool
) -> None:
    # No stop sequence and a small max_tokens: the call is cut off mid-arguments.
    request = ModelRequest(messages=TOOL_QUESTION, tools=TOOLS, max_tokens=20, temperature=0)
    model = make_model(stream=stream)
    response = await model.complete(request)
    assert response.finish_reason == "length"
    assert response.usage.output_tokens == 20
    for call in response.tool_calls:
        assert call.name in TOOL_NAMES
        assert isinstance(call.arguments, str)
    if stream or not response.tool_calls:
        return  # (a partial call the server kept as text has nothing to preserve)

    # Exactly the server's text, malformed or not (greedy and cached: it answers the same).
    raw = await raw_completion(model, request)
    raw_calls = raw.choices[0].message.tool_calls or []
    assert [c.arguments for c in response.tool_calls] == [c.function.arguments for c in raw_calls]

    # The malformed call goes back in the history and the server still answers.
    history = (
        *TOOL_QUESTION,
        Message(role="assistant", content=response.content, tool_calls=response.tool_calls),
        *(
            Message(
                role="tool",
                content="error: the arguments were cut off; call the tool again",
                tool_call_id=call.id,
            )
            for call in response.tool_calls
        ),
    )
    again = await make_model(extra={"stop": [*END_OF_TURN, "</tool_call>"]}).complete(
        ModelRequest(messages=history, tools=TOOLS, max_tokens=4, temperature=0)
    )
    assert again.usage.input_tokens > response.usage.input_tokens


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_context_overflow(make_model: ModelFactory, stream: bool) -> None:
    model = make_model(stream=stream)
    huge = Message(role="user", content="word " * 5000)  # ~5000 tokens > 4096
    with pytest.raises(ContextOverflow, match="context") as caught:
        await model.complete(ModelRequest(messages=(huge,), max_tokens=8))
    assert "exceeds the available context size" in str(caught.value)


PROSE = (
    Message(role="system", content="You are a careful research assistant. " * 8),
    Message(
        role="user",
        content="Summarise the history of lighthouses along the Atlantic coast, with dates, "
        "keepers' duties and how lamps changed from oil to electricity. " * 6,
    ),
)


@pytest.mark.parametrize("messages", [PLAIN, PROSE, TOOL_QUESTION], ids=["plain", "prose", "tools"])
async def test_the_server_tokenizer_counts_close_to_the_server_and_never_under(
    make_model: ModelFactory, messages: tuple[Message, ...]
) -> None:
    """llama.cpp's /tokenize: an upper bound of the prompt the server reports, and nearer
    to it than the conservative estimate."""
    model = make_model(extra={"stop": END_OF_TURN})
    tools = TOOLS if messages is TOOL_QUESTION else ()
    counted = model.count_tokens(messages, tools)
    assert model._server_tokens is not None and model._server_tokens.available is True
    estimated = make_model(tokenizer="estimate").count_tokens(messages, tools)
    response = await model.complete(
        ModelRequest(messages=messages, tools=tools, max_tokens=1, temperature=0)
    )
    actual = response.usage.input_tokens
    assert counted >= actual, (counted, actual)
    assert counted - actual < estimated - actual, (counted, estimated, actual)
