"""A `pydantic_ai.Agent` run by Tether: `TetherAgent(agent, name=...)`.

In the style of pydantic-ai's own durable agents (`pydantic_ai.durable_exec`), the wrapper
uses the agent's public pieces: its model becomes a Tether `Model` (each request goes
through `pydantic_ai.direct.model_request`, so any model pydantic-ai supports works) and
its function tools become Tether `Tool`s. The run is driven by Tether's own loop, so each
model request and each tool call is journaled, budgets are reserved before each request,
a crashed run resumes in any process without repeating completed calls, and `tether show`,
`why`, `audit`, budgets and workers work on it.

Mapped: `requires_approval=True` tools and tools raising `ApprovalRequired` (pydantic-ai's
deferred approvals) become Tether's durable approvals (approved, the call runs with
`ctx.tool_call_approved`); a tool raising `CallDeferred` becomes a durable question whose answer
is the tool's result; `ModelRetry` becomes an error result the model reads. Not mapped
(refused with a clear error rather than silently dropped): structured `output_type`s,
output validators, dynamic instructions or system prompts (pass `instructions=`),
capabilities beyond pydantic-ai's defaults (web search, hooks, ...), and toolsets other
than function tools (give Tether an `MCPServer` in `tools=` instead of a pydantic-ai MCP
toolset). Tool `prepare` hooks are not called.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, cast

from ..agent import Agent, Limits
from ..errors import (
    ApprovalNeeded,
    ContextOverflow,
    HumanInputRequired,
    ModelError,
    ModelUnavailable,
    UsageError,
)
from ..loop import RunResult, Runtime
from ..models import (
    Message,
    ModelRequest,
    ModelResponse,
    ModelUsage,
    ToolCall,
    ToolSpec,
    estimate_tokens,
)
from ..models._base import TextSink, check_real_calls_allowed
from ..tools import Tool, ToolContext, ToolRetry, ToolSource
from ._schema import passthrough_model, require_module

__all__ = ["PydanticAIModel", "TetherAgent", "to_pydantic_messages"]


_FAKE_MODELS = frozenset({"TestModel", "FunctionModel"})
"""pydantic-ai's own test models: allowed while TETHER_ALLOW_MODEL_REQUESTS=0."""


def _pai() -> Any:
    return require_module("pydantic_ai", "pydantic-ai")


class PydanticAIModel:
    """A pydantic-ai model (or model name such as `openai:gpt-4o`) as a Tether `Model`."""

    def __init__(
        self,
        model: Any,
        *,
        context_window: int = 128_000,
        max_output_tokens: int = 4_096,
        settings: dict[str, Any] | None = None,
    ) -> None:
        models = require_module("pydantic_ai.models", "pydantic-ai")
        try:
            self.inner = models.infer_model(model)
        except Exception as exc:  # pydantic-ai's UserError: an unknown model, no key, ...
            raise UsageError(f"pydantic-ai cannot build model {model!r}: {exc}") from None
        self.name: str = str(self.inner.model_name)
        self.context_window = context_window
        self.max_output_tokens = max_output_tokens
        self.settings = dict(settings or {})

    def count_tokens(self, messages: Sequence[Message], tools: tuple[ToolSpec, ...] = ()) -> int:
        return estimate_tokens(messages, tools)

    async def complete(
        self, request: ModelRequest, *, on_text: TextSink | None = None
    ) -> ModelResponse:
        direct = require_module("pydantic_ai.direct", "pydantic-ai")
        models = require_module("pydantic_ai.models", "pydantic-ai")
        exceptions = require_module("pydantic_ai.exceptions", "pydantic-ai")
        tools_module = require_module("pydantic_ai.tools", "pydantic-ai")
        parameters = models.ModelRequestParameters(
            function_tools=[
                tools_module.ToolDefinition(
                    name=t.name, description=t.description, parameters_json_schema=t.parameters
                )
                for t in request.tools
            ],
            allow_text_output=True,
        )
        if type(self.inner).__name__ not in _FAKE_MODELS:
            check_real_calls_allowed(f"pydantic-ai {self.name}")
        settings = dict(self.settings)
        if request.max_tokens is not None:
            settings["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            settings["temperature"] = request.temperature
        try:
            response = await direct.model_request(
                self.inner,
                to_pydantic_messages(request.messages),
                model_settings=settings or None,
                model_request_parameters=parameters,
            )
        except exceptions.ModelHTTPError as exc:
            status = exc.status_code
            if status == 429 or status >= 500:
                raise ModelUnavailable(f"{self.name}: HTTP {status}: {exc.message}") from exc
            if status == 400 and "context" in str(exc.body or exc.message).lower():
                raise ContextOverflow(f"{self.name}: {exc.message}") from exc
            raise ModelError(f"{self.name}: HTTP {status}: {exc.message}") from exc
        except exceptions.ModelAPIError as exc:
            raise ModelUnavailable(f"{self.name}: {exc}") from exc
        except (exceptions.UnexpectedModelBehavior, exceptions.UserError) as exc:
            raise ModelError(f"{self.name}: {exc}") from exc
        return _from_pydantic(response, self.name, on_text)


def to_pydantic_messages(messages: Sequence[Message]) -> list[Any]:
    """Tether's transcript as pydantic-ai messages: consecutive request parts (system,
    user, tool results) form one `ModelRequest`, assistant turns one `ModelResponse`."""
    m = require_module("pydantic_ai.messages", "pydantic-ai")
    result: list[Any] = []
    parts: list[Any] = []
    for message in messages:
        if message.role == "assistant":
            if parts:
                result.append(m.ModelRequest(parts=parts))
                parts = []
            out: list[Any] = [m.TextPart(content=message.content)] if message.content else []
            out.extend(
                m.ToolCallPart(tool_name=c.name, args=c.arguments, tool_call_id=c.id)
                for c in message.tool_calls
            )
            result.append(m.ModelResponse(parts=out))
        elif message.role == "system":
            parts.append(m.SystemPromptPart(content=message.content))
        elif message.role == "user":
            parts.append(m.UserPromptPart(content=message.content))
        else:
            parts.append(
                m.ToolReturnPart(
                    tool_name=message.name or "tool",
                    content=message.content,
                    tool_call_id=message.tool_call_id or "",
                )
            )
    if parts:
        result.append(m.ModelRequest(parts=parts))
    return result


def _from_pydantic(response: Any, name: str, on_text: TextSink | None) -> ModelResponse:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for part in response.parts:
        kind = getattr(part, "part_kind", "")
        if kind == "text":
            texts.append(part.content)
        elif kind == "tool-call":
            arguments = part.args_as_json_str()
            calls.append(ToolCall(id=part.tool_call_id, name=part.tool_name, arguments=arguments))
    content = "".join(texts)
    if on_text and content:
        on_text(content)
    usage = response.usage
    reason = {"tool_call": "tool_calls", "length": "length"}.get(
        str(response.finish_reason), "tool_calls" if calls else "stop"
    )
    return ModelResponse(
        content=content,
        tool_calls=tuple(calls),
        finish_reason=reason,
        usage=ModelUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens),
        model=str(response.model_name or name),
    )


def _caller(wrapper: TetherAgent, tool: Any) -> Any:
    """Calls one pydantic-ai function tool the way pydantic-ai would, minus its graph."""

    async def call(__tether_context__: ToolContext, **arguments: Any) -> Any:
        pai = _pai()
        exceptions = require_module("pydantic_ai.exceptions", "pydantic-ai")
        schema = tool.function_schema
        try:
            validated = schema.validator.validate_python(arguments)
        except Exception as exc:  # pydantic's ValidationError: the model reads what is wrong
            raise ToolRetry(f"invalid arguments for {tool.name}: {exc}") from None
        ctx = pai.RunContext(
            deps=wrapper.deps,
            model=wrapper.model.inner,
            usage=require_module("pydantic_ai.usage", "pydantic-ai").RunUsage(),
            tool_name=tool.name,
            tool_call_id=__tether_context__.call_id,
            run_id=__tether_context__.run_id,
            retry=__tether_context__.attempt - 1,
            tool_call_approved=__tether_context__.approved,
            # Stable when a step is redone: an effect store can deduplicate by it.
            metadata={"tether_idempotency_key": __tether_context__.idempotency_key},
        )
        try:
            return await schema.call(validated, ctx)
        except exceptions.ModelRetry as exc:
            raise ToolRetry(str(exc)) from None
        except exceptions.CallDeferred:
            raise HumanInputRequired(
                f"{tool.name} is deferred: reply with its result "
                f"(arguments: {json.dumps(arguments, default=str)})"
            ) from None
        except exceptions.ApprovalRequired:
            raise ApprovalNeeded(f"{tool.name} asks for approval") from None

    return call


class TetherAgent:
    """An existing `pydantic_ai.Agent`, run durably by Tether.

    `agent` is the Tether `Agent` to hand a `Runtime`, `tether run` or a worker; `deps`
    are given to every tool call (they must be available in any process that resumes).
    """

    def __init__(
        self,
        wrapped: Any,
        *,
        name: str | None = None,
        instructions: str | None = None,
        deps: Any = None,
        limits: Limits | None = None,
        model: Any = None,
        context_window: int = 128_000,
        max_output_tokens: int = 4_096,
        idempotent: Sequence[str] = (),
        tools: Sequence[Tool | ToolSource] = (),
        **options: Any,
    ) -> None:
        """`tools` adds Tether tools and tool sources (an `MCPServer`) to the agent's own."""
        pai = _pai()
        if not isinstance(wrapped, pai.Agent):
            raise UsageError(f"TetherAgent wraps a pydantic_ai.Agent, not {type(wrapped).__name__}")
        if wrapped.output_type is not str:
            raise UsageError(
                "TetherAgent runs agents whose output is text; "
                f"{wrapped.output_type!r} output is not supported yet"
            )
        _refuse_unrun_features(wrapped)
        agent_name = name or wrapped.name
        if not agent_name:
            raise UsageError("give the agent a name (TetherAgent(agent, name=...)): runs use it")
        chosen = model if model is not None else wrapped.model
        if chosen is None:
            raise UsageError(f"agent {agent_name!r} has no model: pass model=")
        self.wrapped = wrapped
        self.deps = deps
        settings = wrapped.model_settings if isinstance(wrapped.model_settings, dict) else None
        self.model = PydanticAIModel(
            chosen,
            context_window=context_window,
            max_output_tokens=max_output_tokens,
            settings=settings,
        )
        self.agent = Agent(
            name=agent_name,
            instructions=instructions if instructions is not None else _instructions(wrapped),
            tools=cast(list[Tool], [*self._tools(set(idempotent)), *tools]),  # sources: moved
            model=self.model,
            limits=limits or Limits(),
            max_output_tokens=min(max_output_tokens, 2_048),
            **options,
        )

    async def run(
        self,
        task: str,
        *,
        store: str | None = None,
        runtime: Runtime | None = None,
        run_id: str | None = None,
    ) -> RunResult:
        """Start a run (or, with `run_id`, resume one) and drive it until it ends or waits."""
        active = runtime or Runtime(store)
        try:
            if run_id is None:
                return await active.start(self.agent, task)
            return await active.resume(self.agent, run_id)
        finally:
            if runtime is None:
                await active.close()

    def run_sync(self, task: str, **options: Any) -> RunResult:
        """`run` for scripts: `TetherAgent(agent).run_sync("...", store="sqlite:///a.db")`."""
        return asyncio.run(self.run(task, **options))

    def _tools(self, idempotent: set[str]) -> list[Tool]:
        function_toolset = require_module("pydantic_ai.toolsets.function", "pydantic-ai")
        tools: list[Tool] = []
        for toolset in self.wrapped.toolsets:
            if not isinstance(toolset, function_toolset.FunctionToolset):
                raise UsageError(
                    f"{type(toolset).__name__} is not supported under Tether: only function "
                    "tools are (for MCP servers use tether.integrations.mcp.MCPServer)"
                )
            for source in toolset.tools.values():
                definition = source.tool_def
                schema = dict(definition.parameters_json_schema)
                tools.append(
                    Tool(
                        name=definition.name,
                        description=definition.description or definition.name,
                        fn=_caller(self, source),
                        args_model=passthrough_model(definition.name, schema),
                        parameters=schema,
                        context_param="__tether_context__",
                        idempotent=definition.name in idempotent,
                        requires_approval=bool(source.requires_approval)
                        or definition.kind == "unapproved",
                        timeout_s=source.timeout or 60.0,
                    )
                )
        return tools


def _refuse_unrun_features(agent: Any) -> None:
    """What pydantic-ai's own run would do and Tether's loop would not: refused, not dropped."""
    if getattr(agent, "_output_validators", None):
        raise UsageError(
            "output validators are not run under Tether yet: remove them, or check the "
            "answer with a Tether output guardrail"
        )
    extra = sorted(set(_capabilities(agent)) - set(_capabilities(_pai().Agent())))
    if extra:
        raise UsageError(
            f"capabilities {', '.join(extra)} are not run under Tether yet: remove them "
            "(for MCP servers give tether.integrations.mcp.MCPServer in tools=)"
        )


def _capabilities(agent: Any) -> list[str]:
    """The names of an agent's capabilities (a fresh agent's are pydantic-ai's defaults)."""
    root = getattr(agent, "_root_capability", None)
    return [type(c).__name__ for c in getattr(root, "capabilities", None) or ()]


def _instructions(agent: Any) -> str:
    """The agent's static system prompts and instructions, joined; dynamic ones are refused
    because a resumed run must be given exactly the mission it started with."""
    if getattr(agent, "_system_prompt_functions", None) or getattr(
        agent, "_system_prompt_dynamic_functions", None
    ):
        raise UsageError("dynamic system prompts cannot be journaled: pass instructions=")
    texts = [p for p in getattr(agent, "_system_prompts", ()) if isinstance(p, str)]
    for item in getattr(agent, "_instructions", None) or ():
        text = getattr(item, "instruction", item)
        if not isinstance(text, str):
            raise UsageError("dynamic instructions cannot be journaled: pass instructions=")
        texts.append(text)
    return "\n\n".join(texts) or "You are a helpful assistant."
