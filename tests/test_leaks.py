"""Leaks below the audit view: approvals, failure reasons, --json output, escaped secrets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tether import Agent, Limits, Runtime, tool
from tether._redact import REDACTED, Redactor, clear_registered_secrets, register_secret
from tether.approvals import pending_approvals
from tether.cli._app import _print_json
from tether.errors import ModelError
from tether.journal import MemoryStore
from tether.models import ModelRequest, ScriptedModel, call
from tether.views import Viewer

MARK = "ZQXJ-argument-marker"
PROMPT = "You are the vault keeper; the launch phrase is ORCHID-LANTERN."


@tool(requires_approval=True, visibility="always_hidden")
def vault(code: str) -> str:
    """Open the vault (audit-only data)."""
    return "opened"


async def test_an_always_hidden_tool_s_approval_shows_no_arguments_below_audit() -> None:
    store = MemoryStore()
    agent = Agent(
        name="v", instructions=PROMPT, tools=[vault],
        model=ScriptedModel([call("vault", {"code": MARK}), "done"]), limits=Limits(max_steps=5),
    )  # fmt: skip
    result = await Runtime(store).start(agent, "open it")
    assert result.status == "waiting_approval"
    for role in ("user", "operator"):
        text = json.dumps(await Viewer(store, role).run(result.run_id))
        assert MARK not in text and "ORCHID" not in text, role
    assert MARK in json.dumps(await Viewer(store, "audit").run(result.run_id))
    (approval,) = await pending_approvals(store, run_id=result.run_id)
    shown = approval.to_json()
    assert "excerpt" not in shown and MARK not in json.dumps(shown)
    assert shown["request_id"] == approval.request_id  # still listed, so it can be decided
    assert MARK in json.dumps(approval.to_json(redact=False))


async def test_the_excerpt_never_reaches_an_approval_s_operator_json() -> None:
    @tool(requires_approval=True)
    def send(to: str) -> str:
        """Send."""
        return "sent"

    store = MemoryStore()
    agent = Agent(
        name="v", instructions=PROMPT, tools=[send],
        model=ScriptedModel([call("send", {"to": "x"}), "done"]), limits=Limits(max_steps=5),
    )  # fmt: skip
    result = await Runtime(store).start(agent, f"the task {MARK}")
    (approval,) = await pending_approvals(store, run_id=result.run_id)
    assert MARK in approval.excerpt
    assert MARK not in json.dumps(approval.to_json())


async def test_a_model_error_echoing_the_prompt_stays_out_of_the_views() -> None:
    def echo_back(request: ModelRequest) -> Any:
        raise ModelError(f"bad request: {request.messages[0].content}")

    store = MemoryStore()
    agent = Agent(
        name="v", instructions=PROMPT, tools=[], model=ScriptedModel(echo_back),
        limits=Limits(max_steps=5),
    )  # fmt: skip
    result = await Runtime(store).start(agent, "go")
    assert result.status == "failed" and "ORCHID" not in (result.reason or "")
    for role in ("user", "operator"):
        assert "ORCHID" not in json.dumps(await Viewer(store, role).run(result.run_id)), role
    assert "ORCHID" in json.dumps(await Viewer(store, "audit").run(result.run_id))


async def test_a_model_error_echoing_the_prompt_stays_out_of_operator_spans() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tether.telemetry import TelemetryObserver, export_run

    def echo_back(request: ModelRequest) -> Any:
        raise ModelError(f"bad request: {request.messages[0].content}")

    store = MemoryStore()
    agent = Agent(
        name="v", instructions=PROMPT, tools=[], model=ScriptedModel(echo_back),
        limits=Limits(max_steps=5),
    )  # fmt: skip
    result = await Runtime(store).start(agent, "go")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        await export_run(store, result.run_id, TelemetryObserver(provider))
        spans = exporter.get_finished_spans()
        assert spans
        text = " ".join(f"{s.status.description} {dict(s.attributes or {})}" for s in spans)
        assert "ORCHID" not in text
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    "text",
    ["Record the basic mechanism", "Record the Basic Mechanism.", "a Bearer Instrument",
     "basic reasoning and bearer bonds", "a basic ATP-driven step", "Basic long-term research",
     "The secret: nobody knows the answer", "Password: must be reset yearly",
     "Credentials: issued by the vendor", "Authorization: required for all releases",
     "api-key: rotated monthly", "The trade secret: ferrogel knots hold data"],
)  # fmt: skip
def test_credential_patterns_do_not_fire_on_prose(text: str) -> None:
    assert Redactor().text(text) == text


@pytest.mark.parametrize(
    "text",
    ["Authorization: Basic dXNlcjpwYXNz", "Bearer abcdefgh12345", "basic dXNlcjpwYXNzd29yZA==",
     "bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig_abc123"],
)  # fmt: skip
def test_bearer_and_basic_credentials_are_still_redacted(text: str) -> None:
    assert REDACTED in Redactor().text(text)


@pytest.mark.parametrize(
    ("text", "secret"),
    [("password: letmein", "letmein"), ("secret: Nobody", "Nobody"),
     ("password:letmein more", "letmein"), ("password: hunter2 is the one", "hunter2"),
     ('"password": "letmein now"', "letmein"), ("PASSWORD=letmein and more", "letmein"),
     ("Authorization: Bearer letmeinplease now", "letmeinplease"),
     ("Authorization: Token abcdefgh", "abcdefgh"), ("secret:\n  letmein", "letmein"),
     ("api_key: SomeKey here", "SomeKey")],
)  # fmt: skip
def test_credentials_named_in_text_are_redacted_unless_the_value_reads_as_prose(
    text: str, secret: str
) -> None:
    assert secret not in Redactor().text(text)


@pytest.mark.parametrize(
    "text",
    [
        r'{"key": "\u0072eg-abcdef123"}',
        r'{"key": "sl\/a4xyz9"}',
        json.dumps(json.dumps(json.dumps({"a": "Ωжsecretß"}))),
    ],
)
def test_secrets_spelt_with_json_escapes_are_redacted(text: str) -> None:
    red = Redactor(["reg-abcdef123", "sl/a4xyz9", "Ωжsecretß"])
    assert red.text(text) == REDACTED


def test_json_output_is_redacted_below_audit(capsys: pytest.CaptureFixture[str]) -> None:
    register_secret("hunter2-registered")
    try:
        value = {"answer": "key sk-proj-abcdefghijklmnopqrstuvwx and hunter2-registered"}
        _print_json(value)
        shown = capsys.readouterr().out
        assert "hunter2" not in shown and "sk-proj-abc" not in shown
        _print_json(value, role="audit")
        assert "hunter2-registered" in capsys.readouterr().out
    finally:
        clear_registered_secrets()
