"""The same small agent written for pydantic-ai and for the OpenAI Agents SDK, with fake
models from each framework: it calls `step_one`, then `step_two`, then answers with both
results. Each tool appends a line to the file named by TETHER_TEST_EFFECTS, so a test can
count how often each really ran."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def effect(name: str, value: str) -> str:
    with Path(os.environ["TETHER_TEST_EFFECTS"]).open("a") as f:
        f.write(f"{name} {value}\n")
    return f"{name}:{value}"


def first_line(content: Any) -> str:
    """A tool result without the runway line Tether appends to it."""
    return str(content).splitlines()[0]


# -- pydantic-ai --------------------------------------------------------------------------


def pydantic_agent(*, approval: bool = False) -> Any:
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    def script(messages: list[Any], info: AgentInfo) -> ModelResponse:
        returns = [
            p for m in messages for p in getattr(m, "parts", ()) if isinstance(p, ToolReturnPart)
        ]
        if not returns:
            return ModelResponse(parts=[ToolCallPart("step_one", {"value": "a"}, "c1")])
        if len(returns) == 1:
            return ModelResponse(parts=[ToolCallPart("step_two", {"value": "b"}, "c2")])
        return ModelResponse(parts=[TextPart(" + ".join(first_line(r.content) for r in returns))])

    agent = Agent(FunctionModel(script, model_name="fake"), instructions="Do both steps.")

    @agent.tool_plain(requires_approval=approval)
    def step_one(value: str) -> str:
        """The first step."""
        return effect("step_one", value)

    @agent.tool_plain
    def step_two(value: str) -> str:
        """The second step."""
        return effect("step_two", value)

    return agent


# -- OpenAI Agents SDK --------------------------------------------------------------------


def openai_agent(*, approval: Any = False) -> Any:
    from agents import Agent, function_tool

    @function_tool(needs_approval=approval)
    def step_one(value: str) -> str:
        """The first step."""
        return effect("step_one", value)

    @function_tool
    def step_two(value: str) -> str:
        """The second step."""
        return effect("step_two", value)

    return Agent(
        name="steps", instructions="Do both steps.", tools=[step_one, step_two],
        model=fake_agents_model(),
    )  # fmt: skip


def fake_agents_model() -> Any:
    """A model implementing the Agents SDK's `Model` interface with a fixed plan."""
    from agents.items import ModelResponse
    from agents.models.interface import Model
    from agents.usage import Usage
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )

    class FakeModel(Model):
        async def get_response(self, system_instructions: Any, input: Any, *args: Any,
                               **kw: Any) -> ModelResponse:  # fmt: skip
            items = input if isinstance(input, list) else []
            outputs = [
                i for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"
            ]
            if len(outputs) < 2:
                name, value = ("step_one", "a") if not outputs else ("step_two", "b")
                n = len(outputs) + 1
                out: Any = ResponseFunctionToolCall(
                    type="function_call", call_id=f"c{n}", name=name,
                    arguments=f'{{"value": "{value}"}}', id=f"fc{n}", status="completed",
                )  # fmt: skip
            else:
                text = " + ".join(first_line(o["output"]) for o in outputs)
                out = ResponseOutputMessage(
                    id="m1", type="message", role="assistant", status="completed",
                    content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
                )  # fmt: skip
            usage = Usage(requests=1, input_tokens=50, output_tokens=10, total_tokens=60)
            return ModelResponse(output=[out], usage=usage, response_id=None)

        def stream_response(self, *args: Any, **kw: Any) -> Any:
            raise NotImplementedError

    return FakeModel()
