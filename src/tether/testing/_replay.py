"""Replaying a recorded run: the code of today, fed the answers and results of then.

`replay(agent, path)` reads a journal exported with `tether export RUN --view audit`
(checksums and hash chain verified), creates the same run in a fresh memory store and
drives `agent` on it with a model that returns the recorded answers in order and tools
that return the recorded results by idempotency key (a tool source such as an MCP server
gives the tool list the recording journaled): no model, tool or server is called. A
recorded crash (a `run.resumed` that no pause and no outside input explains) is replayed
as a crash at the same position followed by a resume; what came from outside the loop
(approval decisions, new limits, an operator's pins) is applied where the recording has
it; a fork's copied history (up to its `run.forked`) is imported as it is. Then the two
journals are compared event by event (type, tool name, arguments, idempotency key,
decision, reason, error; a model answer's text and calls; the results of one turn's
parallel calls as a batch, since they are journaled as they finish) and the first
divergence is named. With `script=True` an agent's own `ScriptedModel` answers instead of
the recording (recorded model failures are still replayed), so a change to its script
shows.

What a replay cannot reproduce: limits stored in the original store (budget events are
not compared for that reason), an operator's pin made while the loop was running (it is
applied at the next pause instead, which shows as a divergence), and a policy that reads
the world a tool changed (a file it wrote) rather than the journal: no tool runs, so that
world stays as it is.

Here: the drive (crashes placed and outside inputs applied). The recorded model, tools
and sources are in `_replay_answers`; reading and comparing journals in `_replay_journal`.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from .._clock import FakeClock
from ..agent import Agent, Limits
from ..approvals import parse_request_id, request_id_for, resolve_approval
from ..errors import SimulatedCrash, UsageError
from ..events import Event
from ..journal import Lease, MemoryStore, RunSummary, Store, read_events, summary_of
from ..journal._wrapper import StoreWrapper
from ..loop import Runtime
from ..models import ScriptedModel
from ..state import RunState, fold
from ..state._fold import apply
from ._replay_answers import _listings, _Recorded, _recorded_tool, _RecordedSource, _ReplayModel
from ._replay_journal import (
    Divergence,
    ReplayError,
    ReplayReport,
    _compared,
    _epoch,
    _ignored,
    first_divergence,
    load_journal,
)

__all__ = ["Divergence", "ReplayError", "ReplayReport", "assert_replays", "load_journal", "replay"]


class _CrashAt(StoreWrapper):
    """A store that raises SimulatedCrash once an append has made `after_seq` durable."""

    def __init__(self, inner: Store, after_seq: int) -> None:
        super().__init__(inner)
        self.after_seq = after_seq

    async def append(
        self,
        lease: Lease,
        events: Sequence[Event],
        *,
        summary: RunSummary,
        also: Callable[[], None] | None = None,
        sync: bool = False,
    ) -> None:
        await self.inner.append(lease, events, summary=summary, also=also, sync=sync)
        if events and self._reached(events):
            raise SimulatedCrash()

    def _reached(self, events: Sequence[Event]) -> bool:
        return events[-1].seq >= self.after_seq


class _CrashAtPosition(_CrashAt):
    """The same, once the `target`-th compared event is durable: a replay places a
    recorded crash by position, since events the recording lacks (health) shift seqs."""

    def __init__(self, inner: Store, target: int, have: int) -> None:
        super().__init__(inner, 0)
        self.target, self.have = target, have

    def _reached(self, events: Sequence[Event]) -> bool:
        self.have += len(_compared(events))
        return self.have >= self.target


def _crash_points(events: Sequence[Event]) -> list[int]:
    """Seqs after which the recorded process stopped (died, or a worker handed the run
    back): a `run.resumed` that no outside input or fork led to and no pause explains."""
    points, state = [], RunState()
    for i, e in enumerate(events):
        after_input = i > 0 and (_external(events[i - 1]) or events[i - 1].type == "run.forked")
        paused = state.status in ("waiting_approval", "stopped")
        if e.type == "run.resumed" and not after_input and not paused:
            points.append(e.seq - 1)
        state = apply(state, e)
    return points


def _external(event: Event) -> bool:
    """Appended from outside the loop: a human's decision, new limits, an operator's pin."""
    if event.type in ("approval.resolved", "limit.changed"):
        return True
    return event.type in ("fact.pinned", "fact.unpinned") and event.correlation_id is None


async def _apply_inputs(
    store: Store, run_id: str, recorded: Sequence[Event], agent: Agent, clock: FakeClock
) -> int:
    """Append the outside inputs the recording has right where the replay stopped (a
    pause, a stop); how many (0: the replay is over)."""
    from ..loop._pins import pin_fact, unpin_fact
    from ..loop._relimit import change_limits

    applied = 0
    now = _compared(await read_events(store, run_id))
    at = _after_position(recorded, len(now))
    position = {e.seq: i for i, e in enumerate(_compared(recorded))}
    while at < len(recorded) and _external(recorded[at]):
        e, p = recorded[at], recorded[at].payload
        clock.now = max(clock.now, _epoch(e.ts))
        if e.type == "approval.resolved":
            edited = p.get("arguments")
            # The request is named by its call's seq: find that call in the replay by
            # position, since events the recording lacks (health) shift seqs.
            request_id = p["request_id"]
            with contextlib.suppress(UsageError):
                call = position.get(parse_request_id(request_id)[1])
                if call is not None and call < len(now):
                    request_id = request_id_for(run_id, now[call].seq)
            await resolve_approval(
                store, request_id, decision=p["decision"], arguments=edited,
                agent=agent if edited is not None else None, comment=p.get("comment"),
                actor=e.actor, clock=clock,
            )  # fmt: skip
        elif e.type == "limit.changed":
            await change_limits(store, run_id, p["limits"], actor=e.actor, clock=clock)
        elif e.type == "fact.pinned":
            await pin_fact(store, run_id, p["text"], source=p.get("source", ""), actor=e.actor,
                           clock=clock)  # fmt: skip
        else:
            await unpin_fact(store, run_id, p["id"], actor=e.actor, clock=clock)
        applied += 1
        at += 1
        while at < len(recorded) and _ignored(recorded[at]):
            at += 1
    return applied


def _after_position(recorded: Sequence[Event], count: int) -> int:
    """The index in `recorded` just after its `count`-th compared event, past any ignored
    events that follow it."""
    seen, at = 0, 0
    while at < len(recorded) and (seen < count or _ignored(recorded[at])):
        if not _ignored(recorded[at]):
            seen += 1
        at += 1
    return at


async def _import(store: Store, events: Sequence[Event]) -> None:
    """Put recorded events into the store as they are (sealed bytes, same seqs)."""
    first = events[0]
    forked = events[-1].payload if events[-1].type == "run.forked" else {}
    await store.create_run(
        first, agent=first.payload["agent"], tenant=first.payload.get("tenant"),
        parent_run_id=forked.get("from_run"), summary=summary_of(fold(events[:1])),
        created_at=events[-1].ts,
    )  # fmt: skip
    lease = await store.acquire_lease(first.run_id, owner="replay-import", ttl_s=60)
    try:
        if len(events) > 1:
            await store.append(lease, events[1:], summary=summary_of(fold(events)))
    finally:
        await store.release_lease(lease)


async def replay(agent: Agent, path: Path | str, *, script: bool = False) -> ReplayReport:
    """Re-drive `agent` on what the exported journal at `path` recorded; see the module.

    `script=True` lets the agent's own `ScriptedModel` (and scripted summariser) answer
    instead of the recording, so a change to the script shows as a divergence; a model
    that is not a script is refused, since it would be called."""
    own = agent.model if isinstance(agent.model, ScriptedModel) else None
    if script and own is None:
        name = agent.model.name if agent.model is not None else "no model"
        raise UsageError(
            f"a replay with the agent's script needs a ScriptedModel, not {name!r} "
            "(it would be called)"
        )
    recorded_events = load_journal(Path(path))
    created = recorded_events[0]
    forked_at = next((e.seq for e in recorded_events if e.type == "run.forked"), 0)
    recorded = _Recorded(recorded_events[forked_at:])
    clock = FakeClock(_epoch(created.ts))
    store = MemoryStore(clock=clock)
    model = _ReplayModel(str(created.payload.get("model", "replay")), recorded, clock,
                         agent.model, script=own if script else None)  # fmt: skip
    summarizer = agent.summary_model
    agent = dataclasses.replace(
        agent,
        model=model,
        summary_model=None if summarizer is None else _ReplayModel(
            summarizer.name, recorded, clock, summarizer,
            script=summarizer if script and isinstance(summarizer, ScriptedModel) else None,
        ),
        tools=[_recorded_tool(t, recorded, clock) for t in agent.tools],
        tool_sources=[
            _RecordedSource(s, _listings(recorded_events), recorded, clock)
            for s in agent.tool_sources
        ],
    )  # fmt: skip
    p = created.payload
    run_id = created.run_id
    runtime = Runtime(store, clock=clock, model_retry_backoff_s=0.0, worker_id="replay-0")
    forked = next((e.seq for e in recorded_events if e.type == "run.forked"), 0)
    if forked:
        # A fork starts from a copy of its parent's history: history, not behaviour.
        await _import(store, recorded_events[:forked])
        clock.now = max(clock.now, _epoch(recorded_events[forked - 1].ts))
    else:
        await runtime.create(
            agent, p["task"], limits=Limits.from_json(p.get("limits") or {}),
            tenant=p.get("tenant"), run_id=run_id, metadata=p.get("metadata") or None,
        )  # fmt: skip
    compared_seqs = [e.seq for e in _compared(recorded_events)]
    crashes = deque(
        bisect.bisect_right(compared_seqs, seq)  # compared events durable at the crash
        for seq in _crash_points(recorded_events)
        if seq >= forked
    )
    workers = 0
    while True:
        if crashes:
            have = len(_compared(await read_events(store, run_id)))
            runtime.store = _CrashAtPosition(store, crashes[0], have)
        else:
            runtime.store = store
        try:
            await runtime.resume(agent, run_id)
        except SimulatedCrash:
            crashes.popleft()
            record = await store.get_run(run_id)
            if record.lease_owner is not None:  # a dead process leaves its lease behind
                lease = Lease(run_id=run_id, owner=record.lease_owner,
                              epoch=record.lease_epoch, expires_at=0)  # fmt: skip
                await store.release_lease(lease)
            workers += 1
            runtime.worker_id = f"replay-{workers}"
            continue
        if not await _apply_inputs(store, run_id, recorded_events, agent, clock):
            break
    replayed_events = await read_events(store, run_id)
    await store.close()
    return ReplayReport(
        run_id=run_id, recorded_events=len(recorded_events), replayed_events=len(replayed_events),
        recorded_status=fold(recorded_events).status, replayed_status=fold(replayed_events).status,
        divergence=first_divergence(recorded_events, replayed_events),
    )  # fmt: skip


async def assert_replays(agent: Agent, path: Path | str, *, script: bool = False) -> ReplayReport:
    """`replay`, failing the test with the first divergence when there is one."""
    report = await replay(agent, path, script=script)
    if report.divergence is not None:
        raise AssertionError(f"{path} no longer replays: {report.divergence}")
    return report
