"""The run index's status stays right when the SQLite store skips rewriting it."""

from __future__ import annotations

from pathlib import Path

from tether.events import EventDraft
from tether.journal import RunJournal, SQLiteStore, create_run, verify_run


async def test_status_written_by_another_store_is_rewritten_in_a_new_session(
    tmp_path: Path,
) -> None:
    a, b = SQLiteStore(tmp_path / "s.db"), SQLiteStore(tmp_path / "s.db")
    state = await create_run(a, agent="x", task="t")
    run_id = state.run_id
    lease = await a.acquire_lease(run_id, owner="a", ttl_s=60)
    journal, _ = await RunJournal.open(a, lease)
    await journal.append(EventDraft(type="cycle.started", payload={"cycle": 1}))
    await journal.append(EventDraft(type="cycle.started", payload={"cycle": 2}))
    await a.release_lease(lease)
    assert (await a.get_run(run_id)).summary.status == "running"

    # Another process (here: another store object) moves the run to waiting_approval.
    lease_b = await b.acquire_lease(run_id, owner="b", ttl_s=60)
    other, _ = await RunJournal.open(b, lease_b)
    await other.append(
        EventDraft(type="approval.requested", payload={"request_id": "apr:x:1"}),
        EventDraft(type="approval.resolved", payload={"request_id": "apr:x:1"}),
    )
    await b.release_lease(lease_b)
    assert (await a.get_run(run_id)).summary.status == "queued"

    # The first store drives it again; its cached status ("running") must not hide the change.
    lease = await a.acquire_lease(run_id, owner="a", ttl_s=60)
    journal, _ = await RunJournal.open(a, lease)
    await journal.append(EventDraft(type="cycle.started", payload={"cycle": 3}))
    assert (await a.get_run(run_id)).summary.status == "running"
    assert (await verify_run(a, run_id)).ok
    await a.close()
    await b.close()
