"""Property: no view ever contains an event, a field or a secret above its role.

Hypothesis writes random runs — every event type, random visibility overrides, secrets
(registered values and token-shaped strings) hidden anywhere in payloads, nested in JSON
strings or under secret-named keys — and reads each back through every surface that
serves a role: the run view (`show`), the export, audit queries and `why`. Every event
and every payload field more private than its event carries a unique marker, so a leak of
its content is found wherever it turns up in the output.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether._redact import Redactor, clear_registered_secrets, register_secret
from tether.approvals import approvals_in
from tether.audit import AuditFilter, audit_events, why
from tether.events import DEFAULT_VISIBILITY, EVENT_TYPES, EventDraft
from tether.journal import MemoryStore
from tether.views import (
    AUDIT_FIELDS,
    EVENT_FIELDS,
    FIELD_VISIBILITY,
    ROLE_VISIBILITIES,
    ROLES,
    Role,
    Viewer,
)

from .journal.helpers import import_events, seal_chain

RUN = "run_prop_views"
WHY_FIELDS = {"kind", "target", "trigger", "attached", "implied", "child_run", "context"}

TOKEN_SHAPES = [
    "sk-proj-{}",
    "ghp_{}",
    "xoxb-{}",
    "hf_{}",
    "AKIA{}",
    "Bearer {}",
    "https://u:{}@db.example",
]
_alnum = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789abcdefghijk", min_size=36, max_size=40)
# Registered values are any text, with one letter that no id, timestamp, hash or field
# name contains, so that finding one in the output can only mean its content leaked.
_secret_text = st.builds(
    lambda a, b: f"{a}Ωж{b}",
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
        min_size=2,
        max_size=8,
    ),
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
        min_size=2,
        max_size=8,
    ),
).filter(lambda s: "«" not in s and "»" not in s)
_plain = st.text(alphabet="abc def.,:-", max_size=12)

_TYPES = sorted(EVENT_TYPES - {"run.created"})


def _token(shape: str, body: str) -> tuple[str, str]:
    """The text to plant and the part of it that must never be seen below audit."""
    if shape == "AKIA{}":
        body = "".join(c for c in body.upper() if c.isalnum())[:16].ljust(16, "Q")
    return shape.format(body), body


@st.composite
def runs(
    draw: st.DrawFn,
) -> tuple[list[EventDraft], list[str], list[str], dict[int, str], dict[int, str]]:
    """(drafts, registered values, all secrets, event markers, private-field markers)."""
    registered = draw(st.lists(_secret_text, min_size=1, max_size=3, unique=True))
    secrets: list[str] = list(registered)
    markers: dict[int, str] = {}
    private: dict[int, str] = {}

    def plant(seq: int) -> str:
        """Some text with a secret somewhere in it."""
        kind = draw(st.sampled_from(["registered", "token", "none"]))
        before, after = draw(_plain), draw(_plain)
        if kind == "registered":
            return f"{before} {draw(st.sampled_from(registered))} {after}"
        if kind == "token":
            text, must_hide = _token(draw(st.sampled_from(TOKEN_SHAPES)), draw(_alnum))
            secrets.append(must_hide)
            return f"{before} {text} {after}"
        return before

    drafts = [
        EventDraft(
            type="run.created",
            payload={
                "agent": "prop",
                "task": f"«MK1» task {plant(1)}",
                "metadata": {"agent_spec": "«PF1»", "note": plant(1)},
            },
            visibility=draw(st.sampled_from([None, None, "user_hidden"])),
        )
    ]
    markers[1] = "«MK1»"
    private[1] = "«PF1»"
    for index in range(draw(st.integers(1, 24))):
        seq = index + 2
        kind = draw(st.sampled_from(_TYPES))
        marker = f"«MK{seq}»"
        markers[seq] = marker
        text = f"{marker} {plant(seq)}"
        payload: dict[str, Any] = {
            "content": text,
            "output": text,
            "reason": text,
            "call_id": f"call{seq}",
            "name": draw(st.sampled_from(["search", "vault"])),
            "arguments": json.dumps({"q": plant(seq), "api_key": plant(seq) or "k3y-value"}),
            "request_id": f"apr:{RUN}:{seq}",
            "call_seq": seq,
            "tool": draw(st.sampled_from(["search", "vault"])),
            "removed": [],
            "id": f"F{seq}",  # a pinned fact's
            "text": text,
            "from_event": f"{RUN}:1",
            "pinned": draw(st.booleans()),
        }
        for field in FIELD_VISIBILITY.get(kind, {}):
            payload[field] = f"«PF{seq}» {plant(seq)}"
            private[seq] = f"«PF{seq}»"
        visibility = draw(st.sampled_from([None, None, "visible", "user_hidden", "always_hidden"]))
        drafts.append(
            EventDraft(
                type=kind,
                payload=payload,
                correlation_id=f"{RUN}/c{seq // 4}",
                causation_id=f"{RUN}:{seq - 1}" if draw(st.booleans()) else None,
                visibility=visibility,
                actor=draw(st.sampled_from(["runtime", "tool:search", "cli:ann"])),
            )
        )
    return drafts, registered, secrets, markers, private


def _check(
    output: Any,
    role: Role,
    *,
    events: dict[int, str],
    markers: dict[int, str],
    private: dict[int, str],
    secrets: list[str],
) -> None:
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    allowed = ROLE_VISIBILITIES[role]
    for seq, visibility in events.items():
        if visibility not in allowed:
            assert markers[seq] not in text, f"event {seq} ({visibility}) leaked to {role}"
    for seq, marker in private.items():
        kind = events_types[seq]
        field_vis = next(iter(FIELD_VISIBILITY.get(kind, {"x": "always_hidden"}).values()))
        if field_vis not in allowed or events[seq] not in allowed:
            assert marker not in text, f"private field of {seq} leaked to {role}"
    if role != "audit":
        for secret in secrets:
            assert secret not in text, f"secret {secret!r} leaked to {role}"
            assert json.dumps(secret)[1:-1] not in text, f"escaped {secret!r} leaked to {role}"


events_types: dict[int, str] = {}


def _shapes(views: list[dict[str, Any]], role: Role, extra: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    allowed_keys = set(EVENT_FIELDS) | (set(AUDIT_FIELDS) if role == "audit" else set()) | extra
    for view in views:
        assert set(view) <= allowed_keys, set(view) - allowed_keys
        assert view["visibility"] in ROLE_VISIBILITIES[role]
        private = FIELD_VISIBILITY.get(view["type"], {})
        for field, visibility in private.items():
            if visibility not in ROLE_VISIBILITIES[role]:
                assert field not in view["payload"]


async def _read_everything(
    drafts: list[EventDraft],
    registered: list[str],
    secrets: list[str],
    markers: dict[int, str],
    private: dict[int, str],
) -> None:
    store = MemoryStore()
    sealed = seal_chain(drafts, run_id=RUN)
    await import_events(store, sealed)
    visibilities = {e.seq: e.visibility for e in sealed}
    events_types.clear()
    events_types.update({e.seq: e.type for e in sealed})
    redactor = Redactor(registered)
    for role in ROLES:
        check = dict(events=visibilities, markers=markers, private=private, secrets=secrets)
        viewer = Viewer(store, role, redactor=redactor)
        run = await viewer.run(RUN)
        _shapes(run["events"], role)
        _check(run, role, **check)  # type: ignore[arg-type]
        lines = await viewer.export_lines(RUN)
        _check("\n".join(line.decode() for line in lines), role, **check)  # type: ignore[arg-type]
        found, _ = await audit_events(
            store, AuditFilter(run_id=RUN, limit=1000), role=role, redactor=redactor
        )
        _shapes(found, role)
        _check(found, role, **check)  # type: ignore[arg-type]
        assert len(found) == sum(1 for v in visibilities.values() if v in ROLE_VISIBILITIES[role])
        for seq in sorted(visibilities)[-3:]:
            if visibilities[seq] not in ROLE_VISIBILITIES[role]:
                continue
            data = await why(store, f"{RUN}:{seq}", role=role, redactor=redactor)
            _shapes(data["chain"], role, WHY_FIELDS)
            _check(data, role, **check)  # type: ignore[arg-type]
    # The approvals inbox (`tether approvals --json`, `Approval.to_json()`) is operator-level.
    check = dict(events=visibilities, markers=markers, private=private, secrets=secrets)
    for value in registered:
        register_secret(value)
    try:
        inbox = [a.to_json() for a in approvals_in(sealed).values()]
    finally:
        clear_registered_secrets()
    _check(inbox, "operator", **check)  # type: ignore[arg-type]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(runs())
def test_no_view_contains_an_event_field_or_secret_above_its_role(
    run: tuple[list[EventDraft], list[str], list[str], dict[int, str], dict[int, str]],
) -> None:
    asyncio.run(_read_everything(*run))


def test_the_generator_covers_every_type_and_visibility() -> None:
    """The property above is only as good as what it generates."""
    assert set(_TYPES) | {"run.created"} == set(EVENT_TYPES) == set(DEFAULT_VISIBILITY)
