"""A small MCP server for the tests, built with the `mcp` SDK.

`python mcp_test_server.py` serves stdio; `--fail-start` writes to stderr and exits before
the handshake. `http_app()` is the same server as a streamable-HTTP ASGI app.
`TETHER_TEST_TOKEN` in its environment is a credential its tools echo and check;
`TETHER_TEST_WORLD` a file where `pay` records every payment it makes.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

server = MCPServer("tether-test")
SEEN_HEADERS: list[dict[str, str]] = []
"""Headers of every HTTP request `http_app()` received."""


def http_app() -> Any:
    """The server over streamable HTTP, recording each request's headers."""
    inner = server.streamable_http_app()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            SEEN_HEADERS.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await inner(scope, receive, send)

    return app


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def pid() -> str:
    """The server's process id."""
    return str(os.getpid())


@server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
def crash() -> str:
    """Exit the server process in the middle of the call."""
    os._exit(3)


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
async def slow(seconds: float) -> str:
    """Sleep, then answer: a call with an effect that can outlive its caller's timeout."""
    await anyio.sleep(seconds)
    return "slept"


@server.tool()
def fails() -> str:
    """Always fails: the result is an MCP error result."""
    raise ToolError("the disk is full")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def whoami() -> str:
    """Echo the server's credential and log level (a server that leaks its token)."""
    token = os.environ.get("TETHER_TEST_TOKEN", "")
    return f"token={token} level={os.environ.get('LOG_LEVEL', '')}"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def check_token(token: str) -> str:
    """Whether the caller knows the server's credential."""
    return "accepted" if token == os.environ.get("TETHER_TEST_TOKEN") else "refused"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def leaky_fail() -> str:
    """Fail with the credential in the error message."""
    raise ToolError(f"upstream refused token {os.environ.get('TETHER_TEST_TOKEN', '')}")


@server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False))
def pay(n: int) -> str:
    """Pay bill n: a real effect, recorded in TETHER_TEST_WORLD (no idempotency check)."""
    with open(os.environ["TETHER_TEST_WORLD"], "a") as world:
        world.write(f"{n}\n")
    return f"paid {n}"


if __name__ == "__main__":
    if "--fail-start" in sys.argv:
        token = os.environ.get("TETHER_TEST_TOKEN", "")
        print("fatal: config file /etc/nowhere.toml not found" + (f" (token {token})" if token
              else ""), file=sys.stderr, flush=True)  # fmt: skip
        sys.exit(2)
    server.run("stdio")
