"""A model call's budget hold in the journal: inside its own events now, separate events in
journals written before (tether/budget/_journaled.py).

Claims: both layouts of the same run charge the ledger the same (doctor's check and
rebuild read either); a journal written before the change, left with a model request
open by a crash, opens, verifies, resumes on today's code and still agrees with its
ledger; a request a crash left open gets its new hold as an event of its own, settled
inside the answer; a main-loop step writes no budget event at all.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tether import Agent, Runtime
from tether.budget._journaled import reserved_in, settled_in
from tether.budget._verify import spend_of_run, verify_ledger
from tether.demo import demo_agent, incidents_agent
from tether.events import Event
from tether.journal import SQLiteStore, read_events, summary_of, verify_run
from tether.state import fold
from tether.testing import run_to_end
from tether.testing._replay import load_journal

INCIDENTS = Path(__file__).parent.parent / "golden" / "incidents"
SEPARATE = ("budget.reserved", "budget.settled")


def test_both_layouts_of_a_run_charge_the_ledger_the_same() -> None:
    old = load_journal(INCIDENTS / "demo.jsonl")  # before: separate budget events
    new = load_journal(INCIDENTS / "demo_folded_budget.jsonl")  # the same run today
    assert sum(e.type in SEPARATE for e in old) == 96
    assert not any(e.type in SEPARATE for e in new)
    before, after = spend_of_run(old), spend_of_run(new)
    assert before.metered and after.metered
    assert len(after.entries) == len(before.entries) == 48
    assert after.entries == before.entries  # scopes, minute and cost of every call
    assert after.total == pytest.approx(before.total) and after.total > 0


def test_the_folded_form_keeps_what_the_separate_events_said() -> None:
    old = load_journal(INCIDENTS / "demo.jsonl")
    new = load_journal(INCIDENTS / "demo_folded_budget.jsonl")
    holds_old = [r for r in map(reserved_in, old) if r is not None]
    holds_new = [r for r in map(reserved_in, new) if r is not None]
    assert [(r.kind, r.estimate_usd, r.priced) for r in holds_new] == [
        (r.kind, r.estimate_usd, r.priced) for r in holds_old
    ]
    # The scopes are the run's own, which the folded form does not repeat.
    assert {r.scopes for r in holds_old} == {("global", "agent:research-demo")}
    assert {r.scopes for r in holds_new} == {None}
    paid_old = [s.actual_usd for s in map(settled_in, old) if s is not None]
    paid_new = [s.actual_usd for s in map(settled_in, new) if s is not None]
    assert paid_new == paid_old


async def _import(store: SQLiteStore, events: list[Event]) -> None:
    """Put recorded events into a store as they are (sealed bytes, same seqs)."""
    first = events[0]
    await store.create_run(
        first, agent=first.payload["agent"], tenant=first.payload.get("tenant"),
        parent_run_id=None, summary=summary_of(fold(events[:1])), created_at=events[-1].ts,
    )  # fmt: skip
    lease = await store.acquire_lease(first.run_id, owner="dead-worker", ttl_s=60)
    await store.append(lease, events[1:], summary=summary_of(fold(events)))
    await store.release_lease(lease)


def _cut(name: str) -> list[Event]:
    """What an old journal held when its worker died waiting for the model."""
    recorded = load_journal(INCIDENTS / f"{name}.jsonl")
    if name == "demo_crash_resumed":  # a real crash (v1 envelopes)
        crash = next(e.seq for e in recorded if e.type == "run.resumed")
        return recorded[: crash - 1]
    # v2 envelopes, as the current store writes them: cut after the fifth call's hold,
    # where a crash with that call in flight leaves the journal.
    held = [e.seq for e in recorded if e.type == "budget.reserved"]
    return recorded[: held[4]]


@pytest.mark.parametrize(
    ("name", "make"),
    [("demo_crash_resumed", demo_agent), ("incidents", incidents_agent)],
)
async def test_an_old_journal_with_a_request_open_resumes_and_agrees_with_its_ledger(
    tmp_path: Path, name: str, make: Callable[[Path], Agent]
) -> None:
    old = _cut(name)
    state = fold(old)
    assert state.open_model_request is not None  # it died waiting for the model
    assert old[-1].type == "budget.reserved"  # written in the old layout
    store = SQLiteStore(tmp_path / "s.db")
    try:
        await _import(store, old)
        run_id = old[0].run_id
        # The ledger as the old process left it: what the old journal settled.
        problems, counted = await verify_ledger(store, rebuild=True)
        assert counted == sum(e.type == "budget.settled" for e in old) > 0
        result = await run_to_end(make(tmp_path / "out"), run_id=run_id, runtime=Runtime(store))
        # The demo's notes of before the crash are not in this workspace, so its script
        # goes on until its step limit: a wrap-up turn, whose hold rides on it too.
        assert result.status in ("completed", "stopped") and result.steps > 10
        assert (await verify_run(store, run_id)).ok
        events = await read_events(store, run_id)
        assert [e.raw for e in events[: len(old)]] == [e.raw for e in old]
        resumed = events[len(old) :]
        # The open request is asked again under a new hold: an event of its own, since
        # its request is already journaled; its answer carries the settlement.
        again = next(e for e in resumed if e.type == "budget.reserved")
        answer = next(e for e in resumed if e.type == "model.completed")
        settled = settled_in(answer)
        assert again.causation_id == f"{run_id}:{state.open_model_request}"
        assert settled is not None and settled.reservation_id == again.payload["reservation_id"]
        # Every later call: the hold inside its own events, no budget event.
        later = resumed[resumed.index(answer) + 1 :]
        assert not any(e.type in SEPARATE for e in later)
        assert all(reserved_in(e) for e in later if e.type == "model.requested")
        assert all(settled_in(e) for e in later if e.type == "model.completed")
        # doctor: the ledger agrees with the journal's two layouts, summed.
        problems, _ = await verify_ledger(store)
        assert problems == []
        assert spend_of_run(events).total == pytest.approx(result.cost_usd)
    finally:
        await store.close()


async def test_the_check_sees_a_ledger_that_misses_a_folded_settlement(tmp_path: Path) -> None:
    """The folded settlements are spend: a ledger without them under-reports."""
    store = SQLiteStore(tmp_path / "s.db")
    try:
        result = await run_to_end(demo_agent(tmp_path / "out"), "Write the report",
                                  runtime=Runtime(store))  # fmt: skip
        events = await read_events(store, result.run_id)
        assert not any(e.type in SEPARATE for e in events)
        assert (await verify_ledger(store))[0] == []
        tables = store.ledger_tables()  # type: ignore[attr-defined]
        with tables.transaction():
            tables._x("UPDATE budget_runs SET spent = spent / 2")
        problems, _ = await verify_ledger(store)
        assert [p.where for p in problems] == [f"run {result.run_id}"]
        assert "under-reports" in problems[0].what
        await verify_ledger(store, rebuild=True)
        assert (await verify_ledger(store))[0] == []
    finally:
        await store.close()
