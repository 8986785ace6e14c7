"""An MCP server's credentials (its env, its HTTP headers) are registered as secrets: a
server that echoes its token in a result or an error has it redacted in `tether show`,
`--json` and export output, the console's API and telemetry spans, while the model still
reads it and can pass it back to the server."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integrations.conftest import need, tether_cli

need("mcp", "opentelemetry")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from tether import Agent, Runtime  # noqa: E402
from tether._redact import clear_registered_secrets, registered_secrets  # noqa: E402
from tether.errors import UsageError  # noqa: E402
from tether.integrations._mcp_secrets import credential_name, server_secrets  # noqa: E402
from tether.integrations.mcp import MCPServer  # noqa: E402
from tether.journal import SQLiteStore, read_events  # noqa: E402
from tether.models import ModelRequest, ScriptedModel, Turn, call  # noqa: E402
from tether.telemetry import TelemetryObserver, instrument  # noqa: E402

TEST_SERVER = str(Path(__file__).with_name("mcp_test_server.py"))
TOKEN = "tok-Heron-5517-plum"
"""Matches none of the redactor's credential patterns: only registration hides it."""


@pytest.fixture(autouse=True)
def no_secrets() -> Iterator[None]:
    clear_registered_secrets()
    yield
    clear_registered_secrets()


def test_the_rule_registers_credentials_and_leaves_ordinary_configuration() -> None:
    for name in ("GITHUB_TOKEN", "API_KEY", "db-password", "MYAPIKEY", "Authorization",
                 "X-Api-Key", "SLACK_BOT_PAT", "sentry_dsn", "Cookie"):  # fmt: skip
        assert credential_name(name), name
    for name in ("PATH", "PWD", "LOG_LEVEL", "PYTHONPATH", "HOME", "REGION", "Accept",
                 "KEY_FILE", "SESSION_DIR", "GOOGLE_CREDENTIALS_PATH"):  # fmt: skip
        assert not credential_name(name), name
    found = server_secrets(
        env={
            "GITHUB_TOKEN": "ghx-one-two", "LOG_LEVEL": "debug-verbose", "PATH": "/usr/bin",
            "DATABASE_URL": "postgres://app:pg-Pass-99@db/app", "ODD": "plain-value-9",
            "OPENAI": "sk-proj-Ab3dEf6hIj9kLmN0pQrStUvWx1yZ2", "SHORT_TOKEN": "abc",
        },
        headers={"Authorization": "Bearer brr-77-zz", "Accept": "application/json",
                 "Cookie": "sid=cookie-val-1; theme=dark"},
        url="https://mcp.example.invalid/mcp?api_key=q-key-42&page=2",
        secret_env=["ODD"],
        args=["--api-key", "arg-key-1", "--token=arg-tok-2", "--verbose", "--port", "8080",
              "https://u:url-pw-3@host/x"],
    )  # fmt: skip
    assert set(found) == {
        "ghx-one-two", "postgres://app:pg-Pass-99@db/app", "pg-Pass-99", "plain-value-9",
        "sk-proj-Ab3dEf6hIj9kLmN0pQrStUvWx1yZ2", "Bearer brr-77-zz", "brr-77-zz",
        "sid=cookie-val-1; theme=dark", "cookie-val-1", "dark", "q-key-42",
        "arg-key-1", "arg-tok-2", "url-pw-3",
    }  # fmt: skip
    with pytest.raises(UsageError, match="'NOPE'"):
        server_secrets(env={}, secret_env=["NOPE"])
    with pytest.raises(UsageError, match="at least 4"):
        server_secrets(env={"X": "ab"}, secret_env=["X"])


def test_building_a_server_registers_its_credentials() -> None:
    MCPServer.http("https://mcp.example.invalid/mcp", headers={"Authorization": "Bearer hh-1234"})
    MCPServer.stdio(sys.executable, [TEST_SERVER], env={"TETHER_TEST_TOKEN": TOKEN,
                                                        "LOG_LEVEL": "debug-verbose"})  # fmt: skip
    known = registered_secrets()
    assert {"hh-1234", "Bearer hh-1234", TOKEN} <= known
    assert "debug-verbose" not in known
    clear_registered_secrets()  # a process that forgot them: each run's session registers
    MCPServer.stdio(sys.executable, [TEST_SERVER]).open("run_x")
    source = MCPServer.stdio(sys.executable, [TEST_SERVER], env={"TETHER_TEST_TOKEN": TOKEN})
    clear_registered_secrets()
    source.open("run_y")
    assert TOKEN in registered_secrets()


async def test_a_server_that_fails_to_start_is_an_error_without_its_token(
    tmp_path: Path,
) -> None:
    from tether.integrations.mcp import MCPServerError

    failing = MCPServer.stdio(
        sys.executable, [TEST_SERVER, "--fail-start", "--api-key", "cli-key-5150"],
        env={"TETHER_TEST_TOKEN": TOKEN}, name="broken",
    )  # fmt: skip
    agent = Agent(name="a", instructions="x", tools=[failing], model=ScriptedModel(["done"]))
    runtime = Runtime(SQLiteStore(tmp_path / "t.db"))
    with pytest.raises(MCPServerError) as info:
        await runtime.start(agent, "hi")
    await runtime.close()
    message = str(info.value)
    assert "config file /etc/nowhere.toml not found" in message  # its stderr, still shown
    assert TOKEN not in message and "cli-key-5150" not in message
    assert "[REDACTED]" in message


def _policy(seen: list[str]) -> ScriptedModel:
    """Read the token from whoami's result and prove it to the server."""

    def policy(request: ModelRequest) -> Turn | str:
        results = [m.content for m in request.messages if m.role == "tool"]
        seen.extend(results)
        if not results:
            return call("whoami")
        if len(results) == 1:
            token = results[0].split("token=", 1)[1].split()[0]
            return call("check_token", {"token": token})
        if len(results) == 2:
            return call("leaky_fail")
        return "done"

    return ScriptedModel(policy)


async def test_a_server_echoing_its_token_never_shows_it_in_any_view(tmp_path: Path) -> None:
    # The telemetry observer exists before the server registers anything.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = TelemetryObserver(provider)
    db = tmp_path / "t.db"
    source = MCPServer.stdio(
        sys.executable, [TEST_SERVER], name="leaky",
        env={"TETHER_TEST_TOKEN": TOKEN, "LOG_LEVEL": "debug-verbose"},
    )  # fmt: skip
    seen: list[str] = []
    agent = Agent(name="leaky-agent", instructions="Use the tools.", tools=[source],
                  model=_policy(seen))  # fmt: skip
    runtime = Runtime(instrument(SQLiteStore(db), observer))
    result = await runtime.start(agent, "who are you?")
    assert result.status == "completed", result.reason
    events = await read_events(runtime.store, result.run_id)
    await runtime.close()
    provider.shutdown()

    # The agent got what it needed: the token reached the model and went back to the server.
    assert any(TOKEN in text for text in seen)
    outputs = [e.payload["output"] for e in events if e.type in ("tool.completed", "tool.failed")]
    assert outputs[1] == "accepted" and TOKEN in outputs[2]  # the journal (audit) has it all

    spans = exporter.get_finished_spans()
    assert spans
    text = json.dumps(
        [[s.name, dict(s.attributes or {}), s.status.description,
          [dict(e.attributes or {}) for e in s.events]] for s in spans],
        default=str,
    )  # fmt: skip
    assert TOKEN not in text and "[REDACTED]" in text

    # Other processes that never saw the value: the CLI.
    url = f"sqlite:///{db}"
    for args in (
        ("show", result.run_id, "--view", "operator"),
        ("show", result.run_id, "--view", "operator", "--json"),
        ("show", result.run_id, "--view", "user", "--json"),
        ("export", result.run_id, "--view", "operator"),
        ("why", next(e.id for e in events if e.type == "tool.failed")),
    ):
        shown = tether_cli(*args, "--store", url)
        assert shown.returncode == 0, (args, shown.stderr)
        assert TOKEN not in shown.stdout + shown.stderr, args
        if args[0] == "show" and args[3] == "operator":
            assert "level=debug-verbose" in shown.stdout  # ordinary configuration stays
            assert "[REDACTED]" in shown.stdout
    audit = tether_cli("show", result.run_id, "--view", "audit", "--json", "--store", url)
    assert TOKEN in audit.stdout  # audit sees what happened

    # The console, in a process that forgot the value: it reads the store's record.
    clear_registered_secrets()
    await _console_never_shows_it(db, result.run_id)


async def _console_never_shows_it(db: Path, run_id: str) -> None:
    import httpx

    from tether.web import create_app
    from tether.web.tokens import create_token

    store = SQLiteStore(db)
    try:
        app = create_app(store=store)
        for role in ("user", "operator"):
            token, _ = await create_token(store, role=role, name=f"{role}-tester")
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://console",
                headers={"authorization": f"Bearer {token}"},
            ) as client:  # fmt: skip
                for path in (f"/api/runs/{run_id}", f"/api/runs/{run_id}/export", "/api/runs"):
                    got = await client.get(path)
                    assert got.status_code == 200, (path, got.text)
                    assert TOKEN not in got.text, (role, path)
        assert TOKEN in registered_secrets()  # loaded from the store's record
    finally:
        await store.close()
