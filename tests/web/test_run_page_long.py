"""A long run's page: bounded sections (the newest of each, and whether older ones
exist), pins from the folded state, and the same page with or without SQLite's section
index."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.events import EventDraft
from tether.journal import SQLiteStore
from tether.journal._sections import SECTION_INDEX_NAME
from tether.web import _pages

from ..journal.helpers import RUN_ID, write_run


def drafts() -> list[EventDraft]:
    out: list[EventDraft] = []
    for i in range(1, 8):
        out += [
            EventDraft(type="note", payload={"i": i}),
            EventDraft(type="health.warning", payload={"message": f"warning {i}"}),
            EventDraft(type="approval.requested", payload={"request_id": f"apr:{i}",
                       "tool": "search", "arguments": {}, "kind": "approval"}),
            EventDraft(type="approval.resolved", actor="cli:ann",
                       payload={"request_id": f"apr:{i}", "decision": "approved"}),
            EventDraft(type="context.compacted", payload={"content": f"summary {i}",
                       "removed": []}),
        ]  # fmt: skip
    out.append(EventDraft(type="fact.pinned", payload={"id": "F1", "text": "gone", "source": ""}))
    out.append(EventDraft(type="fact.unpinned", payload={"id": "F1"}))
    out.append(EventDraft(type="fact.pinned", actor="cli:bo",
                          payload={"id": "F2", "text": "kept", "source": "ops"}))  # fmt: skip
    return out


@pytest.mark.parametrize("indexed", [False, True])
async def test_sections_are_the_newest_few_and_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, indexed: bool
) -> None:
    monkeypatch.setattr(_pages, "SECTION_SIZE", 3)
    store = SQLiteStore(tmp_path / "a.db")
    if not indexed:  # a store whose index was dropped (new stores have it: schema 8)
        store._db.execute(f"DROP INDEX {SECTION_INDEX_NAME}")
    _, lease = await write_run(store, drafts())
    await store.release_lease(lease)
    page = await _pages.run_data(store, "operator", RUN_ID)
    assert [e["line"] for e in page["health"]] == ["warning 5", "warning 6", "warning 7"]
    assert [e["payload"]["request_id"] for e in page["approvals"]] == ["apr:6", "apr:7", "apr:7"]
    assert [e["payload"]["content"] for e in page["compactions"]] == [
        "summary 5", "summary 6", "summary 7"
    ]  # fmt: skip
    assert page["older"] == {"approvals": True, "health": True, "compactions": True}
    assert [(p["id"], p["text"], p["by"]) for p in page["pins"]] == [("F2", "kept", "cli:bo")]
    # A user sees the approvals (visible), not the health events (operator-level).
    user = await _pages.run_data(store, "user", RUN_ID)
    assert user["health"] == [] and len(user["approvals"]) == 3 and user["pins"] == []
    monkeypatch.setattr(_pages, "SECTION_SIZE", 50)
    whole = await _pages.run_data(store, "operator", RUN_ID)
    assert len(whole["health"]) == 7 and whole["older"]["health"] is False
    await store.close()


async def test_the_page_links_to_the_older_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from tether.web import create_app
    from tether.web.tokens import create_token

    monkeypatch.setattr(_pages, "SECTION_SIZE", 3)
    store = SQLiteStore(tmp_path / "a.db")
    _, lease = await write_run(store, drafts())
    await store.release_lease(lease)
    token, _ = await create_token(store, role="operator", name="t")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(store=store)), base_url="http://t",
        headers={"authorization": f"Bearer {token}"},
    ) as client:  # fmt: skip
        page = (await client.get(f"/runs/{RUN_ID}")).text
    for section in ("approvals", "health", "compactions"):
        assert f'id="older-{section}"' in page
    assert f"/audit?run={RUN_ID}&amp;type=context.compacted" in page
    await store.close()
