"""An OpenAI Agents SDK agent run by Tether: `await TetherRunner.run(agent, input)`.

A drop-in runner in the shape of DBOS's `DBOSRunner`: the agent's model (an SDK `Model`,
or a model name the SDK's providers resolve) becomes a Tether `Model` and its function
tools become Tether `Tool`s, driven by Tether's loop. Each model call and tool call is
journaled, budgets are reserved before each model call, a crashed run resumes in any
process without repeating completed calls, and `tether show`, `why`, `audit` and workers
work on the run. `tether_agent(agent)` gives the Tether `Agent` for a `Runtime` or worker.

Mapped: `needs_approval` tools become Tether's durable approvals (a callable rule is asked
before each call, with the SDK's tool context; approved, the call runs); a tool with
`is_enabled=False` is not offered. Refused with a clear error rather than silently dropped:
handoffs, hosted tools (web search, computer, ...), the agent's `mcp_servers` (give Tether
an `MCPServer` in `tools=` instead), a `tool_use_behavior` other than the default,
structured `output_type`s, dynamic instructions (pass `instructions=`), a callable
`is_enabled`, and guardrails (agent or tool; `skip_guardrails=True` runs the agent
without them). Lifecycle hooks are not called.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from ..agent import Agent, Limits
from ..errors import ApprovalNeeded, ContextOverflow, ModelError, ModelUnavailable, UsageError
from ..loop import Runtime
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
from ..tools import Tool, ToolContext, ToolSource
from ._schema import passthrough_model, require_module

__all__ = ["AgentsSDKModel", "TetherRunResult", "TetherRunner", "tether_agent", "to_input_items"]


_SDK_MODELS = frozenset({"OpenAIChatCompletionsModel", "OpenAIResponsesModel", "LitellmModel"})


def _sdk() -> Any:
    return require_module("agents", "openai-agents")


class AgentsSDKModel:
    """An Agents SDK `Model` (or a model name) as a Tether `Model`."""

    def __init__(
        self,
        model: Any,
        *,
        name: str | None = None,
        context_window: int = 128_000,
        max_output_tokens: int = 4_096,
        settings: Any = None,
    ) -> None:
        """`settings` (an SDK `ModelSettings`) applies to every request; Tether sets
        `max_tokens` (what budgets reserve against) on top of it."""
        sdk = _sdk()
        if model is None or isinstance(model, str):
            provider = require_module("agents.models.multi_provider", "openai-agents")
            self.name = name or model or "gpt-4.1"
            try:
                self.inner = provider.MultiProvider().get_model(model)
            except Exception as exc:  # the SDK's provider: no key, an unknown prefix, ...
                raise UsageError(
                    f"the Agents SDK cannot build model {self.name!r}: {type(exc).__name__}: {exc}"
                ) from None
        elif isinstance(model, sdk.Model):
            self.inner = model
            self.name = name or str(getattr(model, "model", None) or type(model).__name__)
        else:
            raise UsageError(f"not an Agents SDK model: {type(model).__name__}")
        self.context_window = context_window
        self.max_output_tokens = max_output_tokens
        self.settings = settings if settings is not None else sdk.ModelSettings()
        self.real = (
            model is None
            or isinstance(model, str)
            or any(c.__name__ in _SDK_MODELS for c in type(model).__mro__)
        )
        """A provider the SDK ships (not a fake): blocked while TETHER_ALLOW_MODEL_REQUESTS=0."""

    def count_tokens(self, messages: Sequence[Message], tools: tuple[ToolSpec, ...] = ()) -> int:
        return estimate_tokens(messages, tools)

    async def complete(
        self, request: ModelRequest, *, on_text: TextSink | None = None
    ) -> ModelResponse:
        if self.real:
            check_real_calls_allowed(f"Agents SDK {self.name}")
        sdk = _sdk()
        interface = require_module("agents.models.interface", "openai-agents")
        system, items = to_input_items(request.messages)
        tools = [
            sdk.FunctionTool(
                name=t.name,
                description=t.description,
                params_json_schema=t.parameters,
                on_invoke_tool=_not_here,
                strict_json_schema=False,
            )
            for t in request.tools
        ]
        settings = self.settings.resolve(
            sdk.ModelSettings(max_tokens=request.max_tokens, temperature=request.temperature)
        )
        try:
            response = await self.inner.get_response(
                system, items, settings, tools, None, [], interface.ModelTracing.DISABLED,
                previous_response_id=None, conversation_id=None, prompt=None,
            )  # fmt: skip
        except Exception as exc:
            raise _model_error(self.name, exc) from exc
        return _from_sdk(response, self.name, on_text)


async def _not_here(context: Any, arguments: str) -> str:
    raise RuntimeError("Tether runs the tools; the model only describes them")


def _model_error(name: str, exc: Exception) -> ModelError:
    status = getattr(exc, "status_code", None)
    text = f"{name}: {type(exc).__name__}: {exc}"
    if status is None and type(exc).__name__ in ("APIConnectionError", "APITimeoutError"):
        return ModelUnavailable(text)
    if isinstance(status, int) and (status == 429 or status >= 500):
        return ModelUnavailable(text)
    if status == 400 and "context" in str(exc).lower():
        return ContextOverflow(text)
    return ModelError(text)


def to_input_items(messages: Sequence[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """Tether's transcript as the SDK's system instructions and Responses-format items."""
    system: str | None = None
    items: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system" and system is None and not items:
            system = message.content
        elif message.role in ("system", "user"):
            items.append({"role": message.role, "content": message.content})
        elif message.role == "assistant":
            if message.content:
                items.append({"role": "assistant", "content": message.content})
            items.extend(
                {"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments}
                for c in message.tool_calls
            )
        else:
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.tool_call_id or "",
                    "output": message.content,
                }
            )
    return system, items


def _from_sdk(response: Any, name: str, on_text: TextSink | None) -> ModelResponse:
    texts: list[str] = []
    calls: list[ToolCall] = []
    for item in response.output:
        kind = getattr(item, "type", None)
        if kind == "message":
            for part in item.content:
                if getattr(part, "type", None) == "output_text":
                    texts.append(part.text)
                elif getattr(part, "type", None) == "refusal":
                    texts.append(part.refusal)
        elif kind == "function_call":
            calls.append(ToolCall(id=item.call_id, name=item.name, arguments=item.arguments))
    content = "".join(texts)
    if on_text and content:
        on_text(content)
    usage = response.usage
    return ModelResponse(
        content=content,
        tool_calls=tuple(calls),
        finish_reason="tool_calls" if calls else "stop",
        usage=ModelUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens),
        model=name,
    )


def _caller(source: Any, context: Any) -> Any:
    async def call(__tether_context__: ToolContext, **arguments: Any) -> Any:
        tool_context = require_module("agents.tool_context", "openai-agents")
        raw = json.dumps(arguments)
        ctx = tool_context.ToolContext(
            context=context,
            tool_name=source.name,
            tool_call_id=__tether_context__.call_id,
            tool_arguments=raw,
        )
        rule = source.needs_approval  # the SDK's per-call rule, asked before the tool runs
        asks = callable(rule) and not __tether_context__.approved
        if asks and await rule(ctx, dict(arguments), __tether_context__.call_id):
            raise ApprovalNeeded(f"{source.name} asks for approval")
        return await source.on_invoke_tool(ctx, raw)

    return call


def tether_agent(
    agent: Any,
    *,
    name: str | None = None,
    instructions: str | None = None,
    model: Any = None,
    context: Any = None,
    limits: Limits | None = None,
    idempotent: Sequence[str] = (),
    context_window: int = 128_000,
    max_output_tokens: int = 4_096,
    tools: Sequence[Tool | ToolSource] = (),
    skip_guardrails: bool = False,
    **options: Any,
) -> Agent:
    """The Tether `Agent` that runs an Agents SDK agent; `context` is handed to every tool
    call (it must be available in any process that resumes the run). `tools` adds Tether
    tools and tool sources (an `MCPServer`) to the agent's function tools."""
    sdk = _sdk()
    if not isinstance(agent, sdk.Agent):
        raise UsageError(f"expected an agents.Agent, not {type(agent).__name__}")
    _refuse_unrun_features(agent, skip_guardrails=skip_guardrails)
    if agent.output_type not in (None, str):
        raise UsageError(f"agent {agent.name!r}: only text output is supported yet")
    if instructions is None:
        if agent.instructions is not None and not isinstance(agent.instructions, str):
            raise UsageError("dynamic instructions cannot be journaled: pass instructions=")
        instructions = agent.instructions or "You are a helpful assistant."
    converted: list[Tool] = []
    for source in agent.tools:
        if not isinstance(source, sdk.FunctionTool):
            raise UsageError(f"{type(source).__name__} is not supported: only function tools are")
        if source.is_enabled is False:
            continue  # the SDK never offers it
        if source.is_enabled is not True:
            raise UsageError(
                f"tool {source.name!r}: a callable is_enabled needs the SDK's run context, "
                "which Tether does not have; use True or False"
            )
        schema = dict(source.params_json_schema)
        converted.append(
            Tool(
                name=source.name,
                description=source.description or source.name,
                fn=_caller(source, context),
                args_model=passthrough_model(source.name, schema),
                parameters=schema,
                context_param="__tether_context__",
                idempotent=source.name in idempotent,
                requires_approval=source.needs_approval is True,  # a callable: asked per call
                timeout_s=source.timeout_seconds or 60.0,
            )
        )
    chosen = model if model is not None else agent.model
    return Agent(
        name=name or agent.name,
        instructions=instructions,
        tools=cast(list[Tool], [*converted, *tools]),  # Agent moves sources apart
        model=AgentsSDKModel(
            chosen,
            context_window=context_window,
            max_output_tokens=max_output_tokens,
            settings=agent.model_settings,
        ),
        limits=limits or Limits(),
        max_output_tokens=min(max_output_tokens, 2_048),
        **options,
    )


def _refuse_unrun_features(agent: Any, *, skip_guardrails: bool) -> None:
    """What the SDK's runner would do and Tether's loop would not: refused, not dropped."""
    if agent.handoffs:
        raise UsageError(f"agent {agent.name!r} has handoffs, which Tether does not run yet")
    if agent.mcp_servers:
        raise UsageError(
            f"agent {agent.name!r} has mcp_servers, whose tools Tether would not journal: "
            "give tether.integrations.mcp.MCPServer in tools= instead"
        )
    if agent.tool_use_behavior != "run_llm_again":
        raise UsageError(
            f"agent {agent.name!r}: tool_use_behavior={agent.tool_use_behavior!r} is not "
            "supported yet (Tether gives tool results back to the model)"
        )
    guarded = bool(agent.input_guardrails or agent.output_guardrails) or any(
        getattr(t, "tool_input_guardrails", None) or getattr(t, "tool_output_guardrails", None)
        for t in agent.tools
    )
    if guarded and not skip_guardrails:
        raise UsageError(
            f"agent {agent.name!r} has guardrails, which Tether does not run yet: remove "
            "them, or pass skip_guardrails=True to run the agent without them"
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class TetherRunResult:
    """What `TetherRunner.run` returns: the SDK's `final_output`, and the run's id and status."""

    run_id: str
    status: str
    final_output: str | None
    """The answer; labelled partial when a limit stopped the run."""


class TetherRunner:
    """A drop-in for `agents.Runner` that runs the agent durably in a Tether store."""

    @staticmethod
    async def run(
        starting_agent: Any,
        input: str,
        *,
        store: str | None = None,
        runtime: Runtime | None = None,
        context: Any = None,
        max_turns: int | None = None,
        run_id: str | None = None,
        **agent_options: Any,
    ) -> TetherRunResult:
        """Start a run (or, with `run_id`, resume one) and drive it until it ends or waits."""
        if not isinstance(input, str):
            raise UsageError("TetherRunner.run takes the task as text (input items: not yet)")
        limits = agent_options.pop("limits", None) or Limits()
        if max_turns is not None:
            limits = limits.merged(max_steps=max_turns)
        agent = tether_agent(starting_agent, context=context, limits=limits, **agent_options)
        owned = runtime is None
        active = runtime or Runtime(store)
        try:
            if run_id is None:
                result = await active.start(agent, input)
            else:
                result = await active.resume(agent, run_id)
        finally:
            if owned:
                await active.close()
        return TetherRunResult(
            run_id=result.run_id, status=result.status, final_output=result.answer
        )

    @staticmethod
    def run_sync(starting_agent: Any, input: str, **options: Any) -> TetherRunResult:
        import asyncio

        return asyncio.run(TetherRunner.run(starting_agent, input, **options))
