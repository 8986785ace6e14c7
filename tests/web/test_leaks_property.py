"""Property: no page, JSON twin, export or error of the console holds more than its role.

The generator is the one `tests/test_views_property.py` uses for the library's readers:
random runs of every event type with random visibility overrides, secrets planted
anywhere (registered values, token-shaped strings) and a marker in every event and in
every payload field more private than its event. Each role's token then reads every
route that serves it; a marker of an event or field above the role, or a secret below
audit, anywhere in a response (HTML unescaped first) is a leak.
"""

from __future__ import annotations

import asyncio
import html
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings

from tether._redact import clear_registered_secrets, register_secret
from tether.events import EventDraft
from tether.journal import MemoryStore
from tether.views import ROLE_VISIBILITIES
from tether.web import create_app
from tether.web.tokens import CONSOLE_ROLES, create_token, view_of

from .. import test_views_property as base
from ..journal.helpers import import_events, seal_chain

RUN = base.RUN


def _routes(seqs: list[int]) -> list[str]:
    out = [
        "/runs", "/runs/{run}", "/runs/{run}/export", "/approvals", "/audit?run={run}",
        "/audit?run={run}&limit=1000", "/health", "/runs/run_missing", "/tokens",
    ]  # fmt: skip
    out += [f"/why/{{run}}:{seq}" for seq in seqs]
    return [r.format(run=RUN) for r in out] + ["/api" + r.format(run=RUN) for r in out]


async def _read_everything(
    drafts: list[EventDraft],
    registered: list[str],
    secrets: list[str],
    markers: dict[int, str],
    private: dict[int, str],
) -> int:
    store = MemoryStore()
    sealed = seal_chain(drafts, run_id=RUN)
    await import_events(store, sealed)
    visibilities = {e.seq: e.visibility for e in sealed}
    base.events_types.clear()
    base.events_types.update({e.seq: e.type for e in sealed})
    for value in registered:
        register_secret(value)
    checked = 0
    try:
        app = create_app(store=store)
        for role in CONSOLE_ROLES:
            token, _ = await create_token(store, role=role, name=f"prop-{role}")
            view = view_of(role)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://c",
                headers={"authorization": f"Bearer {token}"},
            ) as client:  # fmt: skip
                for url in _routes(sorted(visibilities)):
                    r = await client.get(url)
                    assert r.status_code < 500, (url, r.text[:300])
                    text: Any = html.unescape(r.text)
                    base._check(
                        text, view, events=visibilities, markers=markers, private=private,
                        secrets=secrets,
                    )  # fmt: skip
                    if r.status_code == 200 and url.startswith(f"/api/runs/{RUN}"):
                        shown = _event_visibilities(r)
                        assert shown <= ROLE_VISIBILITIES[view], (role, url, shown)
                    checked += 1
    finally:
        clear_registered_secrets()
    return checked


def _line_visibility(line: str) -> str:
    """An export line's visibility: the audit export is stored events (v1 bytes, or v2 in
    their portable form, where a default visibility is not spelled out); the other roles'
    exports are views with the field."""
    import json

    from tether.events import EventDecodeError, decode_event

    try:
        return decode_event(line.encode()).visibility
    except EventDecodeError:
        value: str = json.loads(line)["visibility"]
        return value


def _event_visibilities(r: httpx.Response) -> set[str]:
    if r.headers["content-type"].startswith("application/x-ndjson"):
        return {_line_visibility(line) for line in r.text.splitlines()}
    return {e["visibility"] for g in r.json()["groups"] for e in g["events"]}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(base.runs())
def test_no_console_route_returns_an_event_field_or_secret_above_the_role(
    run: tuple[list[EventDraft], list[str], list[str], dict[int, str], dict[int, str]],
) -> None:
    checked = asyncio.run(_read_everything(*run))
    assert checked >= 4 * 18
