"""MCP servers as durable tool sources: `Agent(tools=[..., MCPServer.stdio(...)])`.

Each run opens its own session (one server process per run for stdio servers) the first
time it needs one, lists the server's tools once and journals the list (see
`tether.loop._sources`); a resumed run builds its tools from that journaled list. Calls
are journaled like any tool call. The tool annotations decide Tether's rules:

- `readOnlyHint` or `idempotentHint`: the call is idempotent, so it is re-run after a
  crash hid its outcome (and retried once on a dropped connection);
- `destructiveHint` (stated, and not read-only): the call needs a human's approval;
- anything else in flight at a crash follows the unknown-outcome rule.

`approval={"tool": bool | predicate}`, `idempotent={"tool": bool}` and
`on_unknown={"tool": "fail" | "retry" | "ask"}` override them per tool.
Annotations are hints from the server: override them for servers you do not trust.

Credentials in a server's configuration (`env` values such as `GITHUB_TOKEN`, HTTP
`headers` such as `Authorization`, a password in its URL) are registered as secrets, so
a server that echoes one in a result or an error has it redacted in every view; the rule
is in `_mcp_secrets`, and `secret_env=[...]` names more variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO, cast

from .._redact import default_redactor, register_secrets
from ..errors import UsageError
from ..tools import ApprovalPredicate, Tool, ToolRetry, UnknownOutcomePolicy
from ._mcp_secrets import server_secrets
from ._schema import passthrough_model, require_module, tool_name

__all__ = ["MCPServer", "MCPServerError", "MCPSession"]

_CONNECTION_CLOSED = -32000
"""JSON-RPC error code the SDK gives a request whose connection closed under it."""

_STDERR_TAIL = 2_000
"""Characters of a server's stderr shown with a failure."""


class MCPServerError(UsageError):
    """An MCP server could not be started or reached; the message names its command or URL
    and ends with what the server wrote to stderr, with secrets redacted (it is printed as
    it is, where views would redact it)."""

    def __init__(self, message: str) -> None:
        super().__init__(default_redactor().text(message))


@dataclass(frozen=True, kw_only=True)
class MCPServer:
    """Where an MCP server is and how its tools are treated. Build with `stdio` or `http`."""

    name: str
    """Unique among an agent's sources: names the server's journaled tool list."""
    transport: Literal["stdio", "http"]
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    """Extra environment for a stdio server (merged over a minimal safe environment).
    Values of credential-named variables are registered as secrets (see `secret_env`)."""
    secret_env: Sequence[str] = ()
    """More `env` names whose values are secrets, whatever they are called."""
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] | None = None
    """For an HTTP server; values of credential headers (`Authorization`, `X-Api-Key`,
    `Cookie`, …) are registered as secrets."""
    timeout_s: float = 60.0
    """Per call: a call still running then is an error result (`timeout`)."""
    connect_timeout_s: float = 30.0
    """To start the server and complete the handshake; and for each page of its tool list."""
    approval: Mapping[str, bool | ApprovalPredicate] = field(default_factory=dict)
    """Per-tool approval rule, instead of the one `destructiveHint` gives."""
    idempotent: Mapping[str, bool] = field(default_factory=dict)
    """Per-tool idempotency, instead of the one `readOnlyHint`/`idempotentHint` give."""
    on_unknown: Mapping[str, UnknownOutcomePolicy] = field(default_factory=dict)
    """Per-tool policy for a non-idempotent call a crash left without an outcome
    (`fail`, the default: tell the model; `retry`; `ask` a human)."""
    include: Sequence[str] | None = None
    """Only these tools (by the server's names); None: all of them."""
    prefix: str = ""
    """Put before every tool name, to keep two servers' tools apart."""

    def __post_init__(self) -> None:
        if self.transport == "stdio" and not self.command:
            raise UsageError("MCPServer.stdio needs a command")
        if self.transport == "http" and not (self.url or "").startswith(("http://", "https://")):
            raise UsageError(f"MCPServer.http needs an http(s) URL, got {self.url!r}")
        if not self.timeout_s > 0 or not self.connect_timeout_s > 0:
            raise UsageError("MCPServer timeouts must be positive")
        if isinstance(self.secret_env, str):
            raise UsageError("MCPServer secret_env is a list of variable names, not one string")
        self.register_secrets()

    def secrets(self) -> list[str]:
        """The configuration values views must never show (see `_mcp_secrets`)."""
        return server_secrets(
            env=self.env, headers=self.headers, url=self.url, secret_env=self.secret_env,
            args=self.args,
        )  # fmt: skip

    def register_secrets(self) -> None:
        """Register `secrets()` for redaction: when the server is built, and again for
        each run's session (a process may have cleared its registered secrets since)."""
        register_secrets(self.secrets())

    @classmethod
    def stdio(
        cls,
        command: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        **options: Any,
    ) -> MCPServer:
        """A server Tether starts as a subprocess and talks to over stdin/stdout."""
        label = name or _default_name(command, args)
        return cls(
            name=label, transport="stdio", command=command, args=tuple(args), env=env, **options
        )

    @classmethod
    def http(
        cls,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        **options: Any,
    ) -> MCPServer:
        """A server reached over streamable HTTP."""
        return cls(name=name or url, transport="http", url=url, headers=headers, **options)

    def describe(self) -> str:
        """The command line or URL, for error messages."""
        if self.transport == "http":
            return str(self.url)
        return " ".join([str(self.command), *self.args])

    def open(self, run_id: str) -> MCPSession:
        require_module("mcp", "mcp")
        self.register_secrets()
        return MCPSession(self, run_id=run_id)


class _ConnectionLost(ConnectionError):
    """The session broke during a call; the next call opens a new one."""


class MCPSession:
    """One run's session with one server: connected on first use, reconnected after it
    dies, closed when the run is let go. The client lives in a task of its own because
    the MCP SDK's connections must be entered and left by the same task."""

    def __init__(self, server: MCPServer, *, run_id: str) -> None:
        self.server = server
        self.run_id = run_id
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._lock = asyncio.Lock()
        self._stderr: TextIO | None = None

    # -- the connection -------------------------------------------------------------------

    async def _connected(self) -> Any:
        async with self._lock:
            if self._client is not None and self._task is not None and not self._task.done():
                return self._client
            await self._shutdown()
            if self.server.transport == "stdio" and self._stderr is None:
                self._stderr = cast(
                    TextIO,
                    tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace"),  # noqa: SIM115
                )  # closed by aclose: it outlives this method
            ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(self._hold(ready, self._stop))
            try:
                self._client = await asyncio.wait_for(
                    asyncio.shield(ready), self.server.connect_timeout_s
                )
            except asyncio.CancelledError:
                ready.cancel()
                await self._shutdown()
                raise
            except Exception as exc:
                ready.cancel()  # _hold must not set an exception nobody will read
                await self._shutdown()
                why = "timed out" if isinstance(exc, TimeoutError) else _summary(exc)
                raise MCPServerError(
                    f"MCP server {self.server.name!r} ({self.server.describe()}) could not be "
                    f"started: {why}{self.stderr_tail()}"
                ) from None
            return self._client

    async def _hold(self, ready: asyncio.Future[Any], stop: asyncio.Event) -> None:
        from mcp.client import Client

        try:
            async with contextlib.AsyncExitStack() as stack:
                transport = await self._transport(stack)
                # cache=None: a listing cached across runs is what broke other engines' replay.
                client = await stack.enter_async_context(Client(transport, cache=None))
                ready.set_result(client)
                await stop.wait()
        except asyncio.CancelledError:
            if not ready.done():
                ready.set_exception(ConnectionError("the connection was cancelled"))
            raise
        except BaseException as exc:  # anyio task groups raise exception groups
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))

    async def _transport(self, stack: contextlib.AsyncExitStack) -> Any:
        server = self.server
        if server.transport == "stdio":
            from mcp.client.stdio import StdioServerParameters, stdio_client

            params = StdioServerParameters(
                command=str(server.command),
                args=list(server.args),
                env=dict(server.env) if server.env else None,
                cwd=server.cwd,
            )
            return stdio_client(params, errlog=self._stderr or sys.stderr)
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        http = await stack.enter_async_context(
            httpx2.AsyncClient(
                headers=dict(server.headers or {}),
                timeout=httpx2.Timeout(30.0, read=max(300.0, server.timeout_s)),
            )
        )
        return streamable_http_client(str(server.url), http_client=http)

    async def _shutdown(self) -> None:
        task, self._task, self._client = self._task, None, None
        if task is None:
            return
        if self._stop is not None:
            self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), 5.0)
        except (TimeoutError, Exception):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    def stderr_tail(self) -> str:
        """What the server wrote to stderr lately, as a suffix for an error message."""
        if self._stderr is None:
            return ""
        try:
            self._stderr.flush()
            size = self._stderr.seek(0, os.SEEK_END)
            self._stderr.seek(max(0, size - _STDERR_TAIL))
            text = self._stderr.read().strip()
        except (OSError, ValueError):
            return ""
        return f"; its stderr ends: {text}" if text else ""

    async def sever(self) -> None:
        """End the session at once, as a server crash does: a stdio server's process is
        stopped (an HTTP client closed), and the next call starts a new session. For fault
        injection (`tether chaos`); a call in flight sees its connection drop."""
        async with self._lock:
            await self._shutdown()

    async def aclose(self) -> None:
        async with self._lock:
            await self._shutdown()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    # -- ToolSession ----------------------------------------------------------------------

    async def list_tools(self) -> list[dict[str, Any]]:
        client = await self._connected()
        listing: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            try:
                page = await asyncio.wait_for(
                    client.list_tools(cursor=cursor), self.server.connect_timeout_s
                )
            except Exception as exc:
                await self._drop(client)
                raise MCPServerError(
                    f"MCP server {self.server.name!r} ({self.server.describe()}) did not list "
                    f"its tools: {_summary(exc)}{self.stderr_tail()}"
                ) from None
            for item in page.tools:
                entry = item.model_dump(by_alias=True, exclude_none=True, mode="json")
                listing.append(
                    {k: entry[k] for k in ("name", "description", "inputSchema", "annotations")
                     if k in entry}
                )  # fmt: skip
            cursor = page.next_cursor
            if not cursor:
                return listing

    def tools(self, listing: list[dict[str, Any]]) -> Sequence[Tool]:
        server = self.server
        built: list[Tool] = []
        for entry in listing:
            remote = str(entry["name"])
            if server.include is not None and remote not in server.include:
                continue
            hints = entry.get("annotations") or {}
            read_only = hints.get("readOnlyHint") is True
            idempotent = server.idempotent.get(
                remote, read_only or hints.get("idempotentHint") is True
            )
            destructive = hints.get("destructiveHint") is True and not read_only
            schema = entry.get("inputSchema") or {"type": "object", "properties": {}}
            local = tool_name(server.prefix + remote)
            built.append(
                Tool(
                    name=local,
                    description=str(entry.get("description") or remote),
                    fn=self._caller(remote),
                    args_model=passthrough_model(local, schema),
                    parameters=schema,
                    idempotent=idempotent,
                    # A dropped connection is retried once only where a repeat is harmless.
                    retries=1 if idempotent else 0,
                    retry_backoff_s=0.1,
                    timeout_s=server.timeout_s,
                    requires_approval=server.approval.get(remote, destructive),
                    on_unknown=server.on_unknown.get(remote, "fail"),
                )
            )
        return built

    def _caller(self, remote: str) -> Any:
        async def call(**arguments: Any) -> str:
            return await self.call(remote, arguments)

        return call

    async def call(self, remote: str, arguments: dict[str, Any]) -> str:
        """Call a tool; its error result becomes a Tether error result the model reads."""
        from mcp.shared.exceptions import MCPError

        client = await self._connected()
        try:
            result = await client.call_tool(
                remote, arguments, read_timeout_seconds=self.server.timeout_s + 5
            )
        except MCPError as exc:
            if exc.error.code != _CONNECTION_CLOSED:
                raise ToolRetry(f"{remote}: {exc}") from None
            await self._drop(client)
            raise _ConnectionLost(
                f"the session with MCP server {self.server.name!r} closed during the call; "
                f"its outcome is unknown{self.stderr_tail()}"
            ) from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._drop(client)
            raise _ConnectionLost(
                f"the session with MCP server {self.server.name!r} broke during the call "
                f"({_summary(exc)}); its outcome is unknown{self.stderr_tail()}"
            ) from None
        text = render_result(result)
        if result.is_error:
            raise ToolRetry(text or f"{remote} reported an error")
        return text

    async def _drop(self, broken: Any) -> None:
        """Close the session a call found broken, unless another call already replaced it."""
        async with self._lock:
            if self._client is broken:
                await self._shutdown()


def render_result(result: Any) -> str:
    """A call's content as the text the model reads (binary content is described)."""
    parts: list[str] = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {block.mime_type}, {len(block.data)} base64 characters]")
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
        elif kind == "resource":
            inner = block.resource
            parts.append(getattr(inner, "text", None) or f"[resource {inner.uri}]")
        else:
            parts.append(f"[{kind or 'unknown'} content]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


def _default_name(command: str, args: Sequence[str]) -> str:
    """`mcp_server_git` for `python -m mcp_server_git`, `pkg` for `npx -y pkg`."""
    args = list(args)
    if "-m" in args and args.index("-m") + 1 < len(args):
        return args[args.index("-m") + 1]
    base = os.path.basename(command)
    if base in ("npx", "uvx", "bunx", "pipx", "node", "deno", "uv"):
        named = [a for a in args if not a.startswith("-") and a != "run"]
        if named:
            return named[0]
    return base


def _summary(exc: BaseException) -> str:
    """One line for an exception, looking inside exception groups for the real cause."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
