"""The @tool decorator: a Python function becomes a Tool with a JSON schema.

The schema comes from the type hints (through pydantic) and the description from the
docstring, including per-argument lines of a Google-style `Args:` section.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..errors import UsageError
from ..events import Visibility
from ..models import ToolSpec
from ._executor import current_executor
from ._validate import ToolExited

if TYPE_CHECKING:
    from ..journal import Store

__all__ = ["ApprovalPredicate", "Tool", "ToolContext", "UnknownOutcomePolicy", "tool"]

UnknownOutcomePolicy = Literal["retry", "fail", "ask"]
"""What to do with a non-idempotent call whose outcome a crash left unknown."""

ApprovalPredicate = Callable[..., bool]
"""Decides whether a call needs a human's approval: `f(arguments)` or `f(arguments, state)`."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ToolContext:
    """Handed to a tool that declares a parameter of this type (it is not in the schema)."""

    run_id: str
    call_id: str
    idempotency_key: str
    """`RUN/cN/tI`: the run (a fork keeps its parent's), the cycle and the call's place in
    the model's turn. Stable when a step is redone, even after lost commits shifted journal
    positions, so an effect store recognises a call it has applied. Runs journaled before
    this format keep the `RUN:SEQ` keys they were given."""
    attempt: int
    """1 on the first execution; higher when an idempotent call is re-run after a crash."""
    store: Store | None = None
    """The run's store, for tools that start child runs (`tether.subagents.agent_tool`)."""
    correlation_id: str | None = None
    """The cycle the call belongs to (`RUN_ID/cN`)."""
    event_id: str | None = None
    """`RUN_ID:SEQ` of the call's `tool.requested` event (for links such as a child run's
    parent); unlike the key, it may differ when a step is redone."""
    approved: bool = False
    """A human approved this call (its tool's rule, or its own `ApprovalNeeded`)."""


@dataclass(frozen=True, kw_only=True)
class Tool:
    name: str
    description: str
    fn: Callable[..., Any]
    args_model: type[BaseModel]
    context_param: str | None = None
    idempotent: bool = False
    """Safe to execute twice; only idempotent calls are re-run when a crash hid their outcome."""
    read_only: bool = False
    """Changes nothing: the same call should return the same data (see health policies)."""
    fresh_for_s: float | None = None
    """How long a result stays fresh; older ones are flagged stale to the model."""
    timeout_s: float | None = 60.0
    retries: int = 0
    """Extra attempts for transient failures (timeouts, connection errors)."""
    retry_backoff_s: float = 0.5
    visibility: Visibility | None = None
    """Audience of this tool's results; None keeps the default (operators)."""
    requires_approval: bool | ApprovalPredicate = False
    approval_timeout_s: float | None = None
    """Deadline for a decision; then `approval_on_expiry` applies (reject the call, or stop)."""
    approval_on_expiry: Literal["reject", "stop"] = "reject"
    cost_usd: float = 0.0
    """Price of one call, for tools that spend money (a paid API)."""
    on_unknown: UnknownOutcomePolicy = "fail"
    max_output_chars: int = 8_000
    """Longer outputs enter the context truncated; the journal keeps them whole."""
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cost_usd) and self.cost_usd >= 0):
            # A negative price would credit the budget ledger on every call.
            raise UsageError(
                f"tool {self.name}: cost_usd must be a finite number ≥ 0, got {self.cost_usd}"
            )

    @functools.cached_property
    def spec(self) -> ToolSpec:
        # Built once: every model request offers it, and a fresh one per request was an
        # object per tool per step for the collector (the tool's fields never change).
        return ToolSpec(name=self.name, description=self.description, parameters=self.parameters)

    def needs_approval(self, arguments: dict[str, Any], state: Any = None) -> bool:
        policy = self.requires_approval
        if not callable(policy):
            return policy
        try:
            takes_state = len(inspect.signature(policy).parameters) >= 2
        except (TypeError, ValueError):
            takes_state = False
        return bool(policy(arguments, state) if takes_state else policy(arguments))

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Check arguments against the schema; raises ValidationError."""
        return self.args_model.model_validate(arguments).model_dump()

    async def invoke(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        kwargs = dict(arguments)
        if self.context_param:
            kwargs[self.context_param] = context
        try:
            if not self.is_sync:
                result: Any = await self.fn(**kwargs)
            else:
                result = await current_executor().run(functools.partial(self.fn, **kwargs))
        except (SystemExit, KeyboardInterrupt) as exc:
            # asyncio re-raises these two out of the event loop if they leave a task (the
            # call runs in the run's task, or in one of its own when a turn has several
            # calls): carry them out as an Exception.
            raise ToolExited(exc) from exc
        return result

    @functools.cached_property
    def is_sync(self) -> bool:
        """Runs on a thread (see `_executor`); a timeout abandons it rather than stops it."""
        return not inspect.iscoroutinefunction(self.fn)


_ARG_LINE = re.compile(r"^\s{2,}(\w+)(?:\s*\([^)]*\))?:\s*(.+)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Summary text and per-argument descriptions from a Google-style docstring."""
    doc = inspect.cleandoc(doc or "")
    summary: list[str] = []
    args: dict[str, str] = {}
    section = None
    current = None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            section = "args"
            continue
        if stripped.endswith(":") and stripped[:-1] in ("Returns", "Raises", "Yields", "Example"):
            section = "other"
            continue
        if section == "args":
            match = _ARG_LINE.match(line)
            if match:
                current = match.group(1)
                args[current] = match.group(2).strip()
            elif current and stripped:
                args[current] += " " + stripped
        elif section is None:
            summary.append(line)
    return "\n".join(summary).strip(), args


def _build(fn: Callable[..., Any], name: str | None, options: dict[str, Any]) -> Tool:
    if not callable(fn):
        raise UsageError("@tool decorates a function")
    tool_name = name or fn.__name__
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", tool_name):
        raise UsageError(f"tool name {tool_name!r} must be 1-64 letters, digits, _ or -")
    description, arg_docs = _parse_docstring(fn.__doc__ or "")
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    context_param = None
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise UsageError(f"tool {tool_name}: *args/**kwargs cannot be described to a model")
        annotation = hints.get(pname, Any)
        if annotation is ToolContext:
            context_param = pname
            continue
        default = ... if param.default is param.empty else param.default
        fields[pname] = (annotation, Field(default, description=arg_docs.get(pname)))
    model = create_model(f"{tool_name}_args", __config__=ConfigDict(extra="forbid"), **fields)
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    return Tool(
        name=tool_name,
        description=description or tool_name,
        fn=fn,
        args_model=model,
        context_param=context_param,
        parameters=schema,
        **options,
    )


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    idempotent: bool = False,
    read_only: bool = False,
    fresh_for_s: float | None = None,
    timeout_s: float | None = 60.0,
    retries: int = 0,
    retry_backoff_s: float = 0.5,
    visibility: Visibility | None = None,
    requires_approval: bool | ApprovalPredicate = False,
    approval_timeout_s: float | None = None,
    approval_on_expiry: Literal["reject", "stop"] = "reject",
    cost_usd: float = 0.0,
    on_unknown: UnknownOutcomePolicy = "fail",
    max_output_chars: int = 8_000,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    **options: Any,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a function (sync or async) into a Tool; use bare or with options."""
    if fn is not None:
        return _build(fn, name, options)

    def decorate(f: Callable[..., Any]) -> Tool:
        return _build(f, name, options)

    return decorate
