"""Views and redaction: what each audience may read of an event, and secrets kept out."""

from __future__ import annotations

import json

import pytest

from tether._clock import iso
from tether._redact import (
    REDACTED,
    Redactor,
    clear_registered_secrets,
    default_redactor,
    register_secret,
    registered_secrets,
)
from tether.errors import UsageError
from tether.events import GENESIS_HASH, Event, EventDraft
from tether.state import fold
from tether.views import AUDIT_FIELDS, EVENT_FIELDS, event_view, parse_role, state_view

RUN = "run_views01"


def seal(draft: EventDraft, seq: int = 2) -> Event:
    return draft.seal(run_id=RUN, seq=seq, prev_hash=GENESIS_HASH, ts=iso(1_780_000_000 + seq))


@pytest.fixture(autouse=True)
def _no_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TETHER_SECRETS", raising=False)
    clear_registered_secrets()


# -- roles and fields ---------------------------------------------------------------------


def test_each_role_sees_only_its_visibilities() -> None:
    events = {
        vis: seal(EventDraft(type="note", payload={"n": 1}, visibility=vis))
        for vis in ("visible", "user_hidden", "always_hidden")
    }
    seen = {
        role: {v for v, e in events.items() if event_view(e, role) is not None}
        for role in ("user", "operator", "audit")
    }
    assert seen == {
        "user": {"visible"},
        "operator": {"visible", "user_hidden"},
        "audit": {"visible", "user_hidden", "always_hidden"},
    }


def test_default_classification_hides_system_prompts_and_tool_traffic_from_users() -> None:
    system = seal(EventDraft(type="message.system", payload={"content": "You are…"}))
    call = seal(EventDraft(type="tool.requested", payload={"name": "search"}))
    task = seal(EventDraft(type="message.user", payload={"content": "Find X"}))
    assert event_view(system, "operator") is None and event_view(system, "audit") is not None
    assert event_view(call, "user") is None and event_view(call, "operator") is not None
    assert event_view(task, "user") is not None


def test_integrity_fields_are_audit_only_and_the_envelope_is_fixed() -> None:
    event = seal(EventDraft(type="message.user", payload={"content": "hi"}))
    for role in ("user", "operator"):
        view = event_view(event, role)
        assert view is not None and set(view) == set(EVENT_FIELDS)
    audit = event_view(event, "audit")
    assert audit is not None and set(audit) == set(EVENT_FIELDS) | set(AUDIT_FIELDS)
    assert audit["checksum"] == event.checksum and audit["prev_hash"] == event.prev_hash
    assert event.follows(GENESIS_HASH)  # a v3 prev_hash is the link: 16 of the 64 digits
    assert audit["cause"] == event.causation_id and audit["payload"] == {"content": "hi"}


def test_private_payload_fields_are_dropped_below_their_audience() -> None:
    approval = seal(
        EventDraft(
            type="approval.requested",
            payload={"tool": "publish", "arguments": {}, "excerpt": "system: secret mission"},
        )
    )
    created = seal(
        EventDraft(
            type="run.created",
            payload={"agent": "a", "task": "t", "metadata": {"agent_spec": "/home/me/a.py:x"}},
        ),
        seq=1,
    )
    result = seal(
        EventDraft(
            type="tool.completed",
            payload={"name": "x", "output": "ok", "status": "[step 1/5]", "level": "ok"},
            visibility="visible",
        )
    )
    for role in ("user", "operator"):
        view = event_view(approval, role)
        assert view is not None and "excerpt" not in view["payload"]
    audit = event_view(approval, "audit")
    assert audit is not None and audit["payload"]["excerpt"] == "system: secret mission"
    user_created = event_view(created, "user")
    operator_created = event_view(created, "operator")
    assert user_created is not None and "metadata" not in user_created["payload"]
    assert operator_created is not None and "metadata" in operator_created["payload"]
    user_result = event_view(result, "user")
    assert user_result is not None and set(user_result["payload"]) == {"name", "output"}


def test_parse_role_names_the_choices() -> None:
    assert parse_role("audit") == "audit"
    with pytest.raises(UsageError, match="unknown view 'boss'; use user, operator or audit"):
        parse_role("boss")


# -- redaction ----------------------------------------------------------------------------

TOKENS = [
    "sk-proj-Ab3dEf6hIj9kLmN0pQrStUvWx1yZ2",
    "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_0123456789abcdefghijABCDEFGHIJ0123456789",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuv",
    "xoxb-123456789012-abcdefghijkl",
    "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "hf_abcdefghijklmnopqrstuvwxyzABCDEFGH",
    "sk_live_abcdefghijklmnop1234",
    "glpat-abcdefghij1234567890",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
]


@pytest.mark.parametrize("token", TOKENS)
def test_known_token_shapes_are_redacted_in_text(token: str) -> None:
    red = Redactor()
    for text in (token, f"key: {token}.", f'{{"k": "{token}"}}', f"({token})"):
        cleaned = red.text(text)
        assert token not in cleaned and REDACTED in cleaned, text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl"),
        ('headers={"Authorization": "Basic dXNlcjpwYXNz"}', "dXNlcjpwYXNz"),
        ("curl -H 'x-api-key: 9f8e7d6c5b4a'", "9f8e7d6c5b4a"),
        ("postgresql://app:s3cr3t-pw@db.internal:5432/tether", "s3cr3t-pw"),
        ("OPENAI_API_KEY=some-opaque-value", "some-opaque-value"),
        ('{"password": "hunter2!"}', "hunter2!"),
        ("client_secret: 'q1w2e3r4'", "q1w2e3r4"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAbC\n-----END RSA PRIVATE KEY-----",
            "MIIEow",
        ),
    ],
)
def test_credentials_in_headers_urls_and_assignments_are_redacted(text: str, secret: str) -> None:
    cleaned = Redactor().text(text)
    assert secret not in cleaned and REDACTED in cleaned


def test_ordinary_prose_is_left_alone() -> None:
    text = (
        "The task-list covers risk-assessment-for-the-whole-company and token estimates; "
        "a bearer of news said the secretary: Anne."
    )
    assert Redactor().text(text) == text


def test_registered_values_are_redacted_raw_and_json_escaped() -> None:
    secret = 'pa"ss\\wörd-42'
    red = Redactor([secret])
    raw = f"login with {secret} now"
    arguments = json.dumps({"hint": secret})  # tool-call arguments: JSON inside a string
    twice = json.dumps({"arguments": arguments}, ensure_ascii=True)  # and quoted again
    for text in (raw, arguments, twice, json.dumps(secret, ensure_ascii=True)):
        cleaned = red.text(text)
        assert REDACTED in cleaned
        assert secret not in cleaned and json.dumps(secret)[1:-1] not in cleaned
    payload = red.value({"tool_calls": [{"arguments": arguments}]})
    assert secret not in json.dumps(payload, ensure_ascii=False)


def test_secret_named_keys_are_redacted_whatever_their_value() -> None:
    value = {"args": {"api_key": "x1", "user": "ann", "nested": [{"db_password": "pw"}]}}
    assert Redactor().value(value) == {
        "args": {"api_key": REDACTED, "user": "ann", "nested": [{"db_password": REDACTED}]}
    }


def test_register_secret_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    register_secret("correct-horse")
    monkeypatch.setenv("TETHER_SECRETS", "battery-staple, tr0ub4dor")
    assert registered_secrets() == {"correct-horse", "battery-staple", "tr0ub4dor"}
    red = default_redactor()
    assert red.text("correct-horse battery-staple tr0ub4dor") == " ".join([REDACTED] * 3)
    with pytest.raises(UsageError, match="at least 4"):
        register_secret("abc")
    with pytest.raises(UsageError, match="part of"):
        register_secret("DACT")
    monkeypatch.setenv("TETHER_SECRETS", "fine-value,ab")
    with pytest.raises(UsageError, match="TETHER_SECRETS: value #2"):
        registered_secrets()


def test_redaction_fails_closed_when_a_value_survives() -> None:
    # A registered value that straddles the marker once redaction has run.
    red = Redactor(["TED]x1", "abcd"])
    out = red.text("abcdx1")
    assert "TED]x1" not in out and "abcd" not in out


def test_views_redact_below_audit_and_audit_keeps_the_bytes() -> None:
    key = "sk-proj-Zz9yX8wV7uT6sR5qP4oN3mL2"
    event = seal(
        EventDraft(
            type="tool.completed",
            payload={"name": "env", "output": f"OPENAI_API_KEY={key}"},
            actor="tool:env",
        )
    )
    operator = event_view(event, "operator")
    audit = event_view(event, "audit")
    assert operator is not None and key not in json.dumps(operator)
    assert audit is not None and key in audit["payload"]["output"]


def test_state_view_redacts_answers_and_reasons() -> None:
    register_secret("hunter22")
    created = EventDraft(type="run.created", payload={"agent": "a", "task": "t"}).seal(
        run_id=RUN, seq=1, prev_hash=GENESIS_HASH, ts=iso(1_780_000_000)
    )
    failed = EventDraft(
        type="run.failed", payload={"reason": "login hunter22 refused", "answer": "hunter22"}
    ).seal(run_id=RUN, seq=2, prev_hash=created.checksum, ts=iso(1_780_000_001))
    state = fold([created, failed])
    for role in ("user", "operator"):
        view = state_view(state, role, [created, failed])
        assert "hunter22" not in json.dumps(view)
    assert state_view(state, "audit", [created, failed])["reason"] == "login hunter22 refused"


def test_state_view_leaves_out_what_it_folded_from_hidden_events() -> None:
    created = EventDraft(type="run.created", payload={"agent": "a", "task": "t"}).seal(
        run_id=RUN, seq=1, prev_hash=GENESIS_HASH, ts=iso(1_780_000_000)
    )
    failed = EventDraft(
        type="run.failed",
        payload={"reason": "internal: db password rotated", "answer": None},
        visibility="user_hidden",
    ).seal(run_id=RUN, seq=2, prev_hash=created.checksum, ts=iso(1_780_000_001))
    state = fold([created, failed])
    assert state_view(state, "user", [created, failed])["reason"] is None
    assert state_view(state, "operator", [created, failed])["reason"] is not None
