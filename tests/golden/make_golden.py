"""Write the golden journals in this folder. Run once; commit; never regenerate casually.

    python tests/golden/make_golden.py            # refuses to overwrite existing files
    python tests/golden/make_golden.py --force    # only for a deliberate format change

Each journal is written through the real writer path (`create_run`, `RunJournal`) on a
memory store with a FakeClock, then exported as:

- `NAME.jsonl`: one stored event per line, exactly the bytes the store holds;
- `NAME.state.json`: the state those events fold to.

tests/journal/test_golden.py imports them into fresh stores and checks they verify and
fold to the committed state. They are the guard behind "journals written at any version
must keep loading": if that test fails after a change, the change broke old journals.
Regenerating the files would hide exactly that, so a new format needs new golden files
*beside* these, not in place of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from tether._clock import FakeClock
from tether.events import EventDraft, Usage
from tether.journal import (
    MemoryStore,
    RunJournal,
    Store,
    create_run,
    load_run,
    read_events,
    verify_run,
)

HERE = Path(__file__).parent
START = 1_780_000_000.0


def d(
    type_: str, cid: str | None = None, usage: Usage | None = None, **payload: object
) -> EventDraft:
    return EventDraft(type=type_, payload=dict(payload), correlation_id=cid, usage=usage)


async def _open(store: Store, run_id: str, clock: FakeClock, **kw: object) -> RunJournal:
    lease = await store.acquire_lease(run_id, owner="golden-worker", ttl_s=600)
    journal, _ = await RunJournal.open(store, lease, clock=clock, **kw)  # type: ignore[arg-type]
    return journal


async def _step(journal: RunJournal, clock: FakeClock, seconds: float, *drafts: EventDraft) -> None:
    clock.advance(seconds)
    await journal.append(*drafts)


async def completed_run(store: Store, clock: FakeClock) -> str:
    """Cycles with model and tool calls, budgets, a compaction, an approval, an answer."""
    run_id = "run_golden_completed"
    await create_run(
        store,
        agent="researcher",
        agent_version="3",
        task="Compare the two storage papers and recommend one",
        model="scripted:demo",
        limits={"max_steps": 12, "max_cost_usd": 2.5},
        tenant="acme",
        run_id=run_id,
        clock=clock,
    )
    j = await _open(store, run_id, clock, snapshot_every=10)
    await _step(
        j,
        clock,
        0.5,
        d("message.system", text="You are a careful research agent.", pinned=True),
        d("message.user", text="Compare the two storage papers and recommend one."),
    )
    for n in (1, 2):
        cid = f"cycle-{n}"
        await _step(j, clock, 0.2, d("cycle.started", cid, n=n))
        await _step(j, clock, 0.1, d("budget.reserved", cid, amount_usd=0.05, scope="run"))
        await _step(j, clock, 0.1, d("model.requested", cid, messages=2 + 3 * n))
        await _step(
            j,
            clock,
            2.3,
            d(
                "model.completed",
                cid,
                Usage(input_tokens=900 * n, output_tokens=120, cost_usd=0.0123 * n),
                text=f"I will search (turn {n}).",
                tool_calls=[
                    {"call_id": f"call-{n}", "name": "search", "args": {"q": f"paper {n}"}}
                ],
            ),
        )
        await _step(j, clock, 0.1, d("budget.settled", cid, amount_usd=0.0123 * n))
        s = j.state.last_seq
        await _step(
            j,
            clock,
            0.1,
            EventDraft(
                type="tool.requested",
                payload={"call_id": f"call-{n}", "name": "search", "args": {"q": f"paper {n}"}},
                correlation_id=cid,
                causation_id=f"{run_id}:{s}",
            ),
        )
        await _step(
            j,
            clock,
            1.7,
            EventDraft(
                type="tool.completed",
                payload={"call_id": f"call-{n}", "output": f"Paper {n}: erasure coding, 3 sites."},
                correlation_id=cid,
                causation_id=f"{run_id}:{s + 1}",
                visibility="visible",
            ),
        )
    await _step(j, clock, 0.3, d("limit.warning", "cycle-2", limit="steps", left=0.2))
    # Compaction of cycle 1's model turn and tool result (the pinned mission stays).
    old = [seq for seq in j.state.context if seq not in j.state.pinned][:2]
    await _step(
        j,
        clock,
        0.4,
        d(
            "context.compacted",
            usage=Usage(input_tokens=1500, output_tokens=200, cost_usd=0.004),
            removed=old,
            summary="Paper 1 uses erasure coding across 3 sites.",
        ),
    )
    await _step(j, clock, 0.2, d("cycle.started", "cycle-3", n=3))
    await _step(
        j,
        clock,
        0.1,
        d(
            "approval.requested",
            "cycle-3",
            request_id="appr-1",
            tool="publish",
            reason="publishing needs a human",
        ),
    )
    # A human takes an hour: not active time.
    await _step(
        j,
        clock,
        3600,
        EventDraft(
            type="approval.resolved",
            payload={"request_id": "appr-1", "decision": "approve", "by": "ops@acme"},
            correlation_id="cycle-3",
            actor="human:ops@acme",
        ),
    )
    await _step(
        j,
        clock,
        1.1,
        d(
            "run.completed",
            "cycle-3",
            answer="Recommend paper 2: same durability, half the storage overhead.",
            reason="answered",
        ),
    )
    return run_id


async def stopped_run(store: Store, clock: FakeClock) -> str:
    """A crash in flight (tool.unknown), a resume, failures, then a budget stop."""
    run_id = "run_golden_stopped"
    await create_run(
        store,
        agent="scraper",
        task="Collect prices from five shops",
        model="scripted:demo",
        limits={"max_cost_usd": 0.05},
        run_id=run_id,
        clock=clock,
    )
    j = await _open(store, run_id, clock)
    await _step(
        j, clock, 0.5, d("message.user", text="Collect prices from five shops", pinned=True)
    )
    await _step(j, clock, 0.2, d("cycle.started", "c1"), d("model.requested", "c1"))
    await _step(
        j,
        clock,
        1.0,
        d("model.completed", "c1", Usage(input_tokens=400, output_tokens=80, cost_usd=0.02)),
        d("tool.requested", "c1", call_id="t1", name="fetch", args={"url": "https://shop-a"}),
        d("tool.requested", "c1", call_id="t2", name="fetch", args={"url": "https://shop-b"}),
    )
    await _step(
        j, clock, 0.8, d("tool.failed", "c1", call_id="t1", error="timeout", retryable=True)
    )
    # The worker died here with t2 in flight; another resumes 20 minutes later.
    await _step(j, clock, 1200, d("run.resumed", worker="w2", after="crash"))
    await _step(
        j,
        clock,
        0.1,
        d("tool.unknown", "c1", call_id="t2", reason="not idempotent; outcome unknown"),
        d("health.warning", monitor="tool_errors", rate=1.0),
    )
    await _step(j, clock, 0.2, d("cycle.started", "c2"), d("model.requested", "c2"))
    await _step(
        j,
        clock,
        1.5,
        d("model.completed", "c2", Usage(input_tokens=600, output_tokens=90, cost_usd=0.028)),
    )
    await _step(j, clock, 0.1, d("budget.denied", "c2", needed_usd=0.03, left_usd=0.002))
    await _step(j, clock, 0.1, d("limit.reached", "c2", limit="cost"))
    await _step(
        j,
        clock,
        0.2,
        d(
            "run.stopped",
            "c2",
            answer="Prices found: shop-b unknown, shop-a timed out.",
            partial=True,
            reason="budget denied: 0.002 USD left, 0.03 needed",
        ),
    )
    return run_id


async def repaired_run(store: Store, clock: FakeClock) -> str:
    """A torn tail cut by the next writer (journal.repaired), then the run fails."""
    run_id = "run_golden_repaired"
    await create_run(
        store, agent="writer", task="Draft the release notes", run_id=run_id, clock=clock
    )
    j = await _open(store, run_id, clock)
    await _step(j, clock, 0.3, d("message.system", text="Mission: release notes", pinned=True))
    await _step(j, clock, 0.3, d("cycle.started", "c1"), d("model.requested", "c1"))
    await _step(j, clock, 0.9, d("note", "c1", text="this event will be torn"))
    # Tear the last write the way a disk would, then let the next writer open the run.
    assert isinstance(store, MemoryStore)
    torn = j.state.last_seq
    raw = (await store.read_rows(run_id, after_seq=torn - 1))[0].raw
    store._pokerow_of(run_id, torn, raw[: len(raw) // 2])
    clock.advance(30)
    j = await _open(store, run_id, clock)
    await _step(j, clock, 0.2, d("run.resumed", worker="w2"))
    await _step(j, clock, 0.5, d("model.failed", "c1", error="context overflow", permanent=True))
    await _step(
        j,
        clock,
        0.1,
        d("run.failed", "c1", reason="the model could not take the context"),
    )
    return run_id


JOURNALS: dict[str, Callable[[Store, FakeClock], Awaitable[str]]] = {
    "completed_run": completed_run,
    "stopped_run": stopped_run,
    "repaired_run": repaired_run,
}


async def make(name: str, force: bool) -> None:
    jsonl, state_json = HERE / f"{name}.jsonl", HERE / f"{name}.state.json"
    if not force and (jsonl.exists() or state_json.exists()):
        print(f"{name}: exists, left alone (use --force only for a deliberate format change)")
        return
    store = MemoryStore(clock=FakeClock(START))
    run_id = await JOURNALS[name](store, FakeClock(START))
    report = await verify_run(store, run_id)
    assert report.ok, report.problems
    events = await read_events(store, run_id)
    state = (await load_run(store, run_id)).state
    jsonl.write_bytes(b"".join(e.raw + b"\n" for e in events))
    state_json.write_text(
        json.dumps(state.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )
    print(f"{name}: {len(events)} events, status {state.status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("names", nargs="*", default=list(JOURNALS))
    args = parser.parse_args()
    for name in args.names:
        asyncio.run(make(name, args.force))


if __name__ == "__main__":
    sys.exit(main())
