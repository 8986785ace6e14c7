"""pydantic-ai and Agents SDK agents under Tether against a real OpenAI-compatible server:
llama.cpp with a tiny local model (see tests/models/conftest.py). A 270M model is neither
reproducible nor smart, so these tests check what Tether journals around it (requests,
answers with the server's usage, tool calls among those offered, a run that ends), never
what the model chose to say. Measured here, it answered without calling a tool (with no
examples in its history it rarely does; each test reports what it did): the framework's
model boundary and the run's journal are what these tests cover, the tool path is covered
with the frameworks' fake models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integrations.conftest import need

# Imported at collection: importing these deep inside a running test has tripped a
# CPython 3.11 parser check (pytest rewrites the asserts of anyio, a pytest plugin).
need("pydantic_ai", "agents", "openai")

from agents import Agent as SDKAgent  # noqa: E402
from agents import ModelSettings, OpenAIChatCompletionsModel, function_tool  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402
from pydantic_ai import Agent as PydanticAgent  # noqa: E402
from pydantic_ai.models.openai import OpenAIChatModel  # noqa: E402
from pydantic_ai.providers.openai import OpenAIProvider  # noqa: E402

import tether.models._base as models_base  # noqa: E402
from tests.models.conftest import llm_server  # noqa: E402, F401  (the session's server)
from tether import Limits, Runtime  # noqa: E402
from tether.integrations.openai_agents import tether_agent  # noqa: E402
from tether.integrations.pydantic_ai import TetherAgent  # noqa: E402
from tether.journal import SQLiteStore, read_events  # noqa: E402

pytestmark = pytest.mark.llm

STOP = ["<|im_end|>", "<|im_start|>", "</tool_call>"]
"""The test template's markers are plain text to Gemma: stop on them."""
TASK = "What is the weather in Paris? Use the get_weather tool."


def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"{city}: sunny, 21°C"


@pytest.fixture
def real_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models_base, "ALLOW_MODEL_REQUESTS", True)


async def check_run(tmp_path: Path, agent: Any, report: Any) -> None:
    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    result = await runtime.start(agent, TASK)
    events = await read_events(runtime.store, result.run_id)
    await runtime.close()
    assert result.status in ("completed", "stopped"), (result.status, result.reason)
    answers = [e for e in events if e.type == "model.completed"]
    assert answers and all(e.usage and e.usage.input_tokens > 0 for e in answers)
    offered = {t.name for t in agent.tools} | {"pin_fact", "unpin_fact", "read_artifact"}
    called = [e.payload["name"] for e in events if e.type == "tool.requested"]
    assert set(called) <= offered
    results = [e for e in events if e.type in ("tool.completed", "tool.failed")]
    assert len(results) == len(called)  # every call the model made has a journaled outcome
    report("report", f"{result.status} after {len(answers)} model calls; tools called: {called}")


@pytest.mark.slow
async def test_pydantic_ai_agent_on_llama_cpp(
    tmp_path: Path,
    llm_server: str,  # noqa: F811
    real_requests: None,
    record_property: Any,
) -> None:
    client = AsyncOpenAI(base_url=llm_server, api_key="unused", max_retries=0)
    model = OpenAIChatModel("local", provider=OpenAIProvider(openai_client=client))
    wrapped = PydanticAgent(
        model,
        instructions="Answer weather questions with the get_weather tool.",
        name="weather",
        tools=[get_weather],
        model_settings={"stop_sequences": STOP, "temperature": 0.0},
    )
    agent = TetherAgent(
        wrapped, context_window=4096, max_output_tokens=128, limits=Limits(max_steps=3)
    ).agent
    try:
        await check_run(tmp_path, agent, record_property)
    finally:
        await client.close()


@pytest.mark.slow
async def test_openai_agents_sdk_agent_on_llama_cpp(
    tmp_path: Path,
    llm_server: str,  # noqa: F811
    real_requests: None,
    record_property: Any,
) -> None:
    client = AsyncOpenAI(base_url=llm_server, api_key="unused", max_retries=0)
    sdk_agent = SDKAgent(
        name="weather",
        instructions="Answer weather questions with the get_weather tool.",
        tools=[function_tool(get_weather)],
        model=OpenAIChatCompletionsModel(model="local", openai_client=client),
        model_settings=ModelSettings(temperature=0.0, extra_args={"stop": STOP}),
    )
    agent = tether_agent(
        sdk_agent, context_window=4096, max_output_tokens=128, limits=Limits(max_steps=3)
    )
    try:
        await check_run(tmp_path, agent, record_property)
    finally:
        await client.close()
