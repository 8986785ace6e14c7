"""State is a pure, deterministic fold over the journal, and snapshots are faithful to it."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether._clock import iso
from tether.errors import CorruptionError
from tether.events import EVENT_TYPES, GENESIS_HASH, Event, EventDraft, Usage, decode_event
from tether.journal._integrity import open_snapshot, seal_snapshot
from tether.state import RunState, apply, fold

from .strategies import GENERATED_TYPES, RUN_ID, START, journals

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The smallest payload each type's fold rule accepts (see src/tether/state/_fold.py).
MINIMAL_PAYLOADS: dict[str, dict[str, object]] = {
    "run.created": {"agent": "a", "task": "t"},
    "run.resumed": {},
    "run.forked": {"from_event": "run_parent:3"},
    "run.completed": {"answer": "done"},
    "run.stopped": {"reason": "budget", "partial": True},
    "run.failed": {"reason": "boom"},
    "run.cancelled": {},
    "message.system": {"text": "mission"},
    "message.user": {"text": "hi"},
    "cycle.started": {},
    "model.requested": {},
    "model.completed": {},
    "model.failed": {},
    "tool.requested": {"call_id": "c1", "name": "search"},
    "tool.started": {"call_id": "c1"},
    "tool.completed": {"call_id": "c1"},
    "tool.failed": {"call_id": "c1"},
    "tool.unknown": {"call_id": "c1"},
    "context.compacted": {"removed": []},
    "summary.requested": {},
    "summary.completed": {},
    "fact.pinned": {"id": "F1", "text": "fact"},
    "fact.unpinned": {"id": "F1"},
    "limit.warning": {},
    "limit.reached": {},
    "limit.changed": {"limits": {"max_steps": 9}},
    "budget.reserved": {},
    "budget.settled": {},
    "budget.denied": {},
    "approval.requested": {"request_id": "r1"},
    "approval.resolved": {"request_id": "r1"},
    "journal.repaired": {},
    "health.warning": {},
    "health.truncated": {},
    "health.breaker": {},
    "health.inconsistent": {},
    "health.stale": {},
    "health.monitor": {},
    "health.guardrail": {},
    "health.policy": {},
    "note": {},
}


def chain(*drafts: EventDraft, gaps: list[float] | None = None) -> list[Event]:
    events: list[Event] = []
    prev, t = GENESIS_HASH, START
    for seq, draft in enumerate(drafts, start=1):
        t += gaps[seq - 1] if gaps else 1.0
        event = draft.seal(run_id=RUN_ID, seq=seq, prev_hash=prev, ts=iso(t))
        events.append(event)
        prev = event.checksum
    return events


def d(type_: str, usage: Usage | None = None, **payload: object) -> EventDraft:
    return EventDraft(type=type_, payload=dict(payload), usage=usage)


CREATED = d("run.created", agent="researcher", task="find X", limits={"max_steps": 5})


# -- totality and determinism ------------------------------------------------------------


def test_the_minimal_payload_table_covers_every_event_type() -> None:
    assert set(MINIMAL_PAYLOADS) == EVENT_TYPES


@pytest.mark.parametrize("type_", sorted(EVENT_TYPES))
def test_every_event_type_has_a_fold_rule(type_: str) -> None:
    events = chain(CREATED, d(type_, **MINIMAL_PAYLOADS[type_]))
    state = fold(events)
    assert state.last_seq == 2
    assert state.last_hash == events[1].checksum
    assert state.updated_at == events[1].ts
    assert state.run_id == RUN_ID


def test_the_journal_strategy_covers_every_event_type() -> None:
    """So the properties below exercise every fold rule; a new type must be added there."""
    assert GENERATED_TYPES == EVENT_TYPES, sorted(EVENT_TYPES ^ GENERATED_TYPES)


def test_an_unknown_event_type_is_corruption_not_a_guess() -> None:
    events = chain(CREATED, d("tool.teleported", call_id="c1"))
    with pytest.raises(CorruptionError) as info:
        fold(events)
    assert info.value.seq == 2 and "tool.teleported" in str(info.value)


def test_new_limits_reopen_a_stopped_run_and_its_pause_is_not_active_time() -> None:
    stopped = d("run.stopped", reason="step limit reached (5/5 steps)", partial=True, answer="x")
    raised = d("limit.changed", limits={"max_steps": 9}, previous={"max_steps": 5})
    state = fold(chain(CREATED, d("cycle.started"), stopped, raised, gaps=[1, 1, 1, 3600]))
    assert state.status == "queued" and state.limits == {"max_steps": 9}
    assert (state.answer, state.partial, state.reason) == (None, False, None)
    assert state.active_s == 2.0  # the hour between the stop and the new limits is a pause
    running = fold(chain(CREATED, d("cycle.started"), raised))
    assert running.status == "running" and running.limits == {"max_steps": 9}


@PROPERTY
@given(journals())
def test_fold_is_deterministic_and_reads_only_the_journal(events: list[Event]) -> None:
    first = fold(events)
    assert fold(events) == first
    assert fold(list(events)) == fold(iter(events))
    # Decoding the stored bytes again gives the very same state: nothing comes from
    # outside the sealed event (no clock, no randomness, no shared mutable input).
    assert fold(decode_event(e.raw, run_id=e.run_id, seq=e.seq) for e in events) == first
    assert first.last_seq == len(events)
    assert first.last_hash == events[-1].checksum


@PROPERTY
@given(journals())
def test_apply_never_changes_the_state_it_is_given(events: list[Event]) -> None:
    states = [RunState()]
    dumps = [json.dumps(RunState().to_json(), sort_keys=True)]
    for event in events:
        states.append(apply(states[-1], event))
        dumps.append(json.dumps(states[-1].to_json(), sort_keys=True))
    assert [json.dumps(s.to_json(), sort_keys=True) for s in states] == dumps


# -- RunState JSON ---------------------------------------------------------------------


@PROPERTY
@given(journals())
def test_run_state_round_trips_through_json(events: list[Event]) -> None:
    state = RunState()
    for event in events:
        state = apply(state, event)
        data = state.to_json()
        assert RunState.from_json(data) == state
        # Also through text, as a snapshot stores it.
        assert RunState.from_json(json.loads(json.dumps(data))) == state


def test_run_state_from_json_refuses_an_unknown_field() -> None:
    data = fold(chain(CREATED)).to_json()
    data["surprise"] = 1
    with pytest.raises(TypeError):
        RunState.from_json(data)


# Fields added in fold version 3 are left out of the JSON while empty, so states folded from
# older journals (the golden ones) keep their exact JSON; every other field is required.
ADDED_IN_3 = ("facts", "summary_seq", "policy_state")


@pytest.mark.parametrize("name", [f.name for f in fields(RunState) if f.name not in ADDED_IN_3])
def test_run_state_from_json_refuses_a_missing_field(name: str) -> None:
    """A field missing from stored state is never filled in with a default."""
    data = fold(chain(CREATED)).to_json()
    del data[name]
    with pytest.raises((KeyError, TypeError, ValueError)):
        RunState.from_json(data)


def test_fields_added_in_fold_3_are_written_only_when_set() -> None:
    plain = fold(chain(CREATED))
    assert not set(ADDED_IN_3) & plain.to_json().keys()
    assert RunState.from_json(plain.to_json()) == plain
    pinned = fold(
        chain(
            CREATED,
            d("fact.pinned", id="F2", text="the key is 42", source="doc"),
            d("summary.completed", content="s", removed=[]),
        )
    )
    data = json.loads(json.dumps(pinned.to_json()))
    assert data["facts"][0]["text"] == "the key is 42" and data["summary_seq"] == 3
    assert RunState.from_json(data) == pinned


def test_a_policys_checkpoint_on_a_health_event_is_folded_and_kept_in_snapshots() -> None:
    state = fold(
        chain(
            CREATED,
            d("health.breaker", policy="breaker", tool="t", state="open",
              checkpoint={"key": "breaker", "after": 1, "state": {"t": ["closed", 2, 0, 0]}}),
            d("health.monitor", policy="monitor", signal="loop"),  # no checkpoint: kept
        )
    )  # fmt: skip
    saved = {"breaker": {"after": 1, "at": 2, "state": {"t": ["closed", 2, 0, 0]}}}
    assert state.policy_state == saved
    assert RunState.from_json(json.loads(json.dumps(state.to_json()))) == state


# -- snapshots are equivalent to replay --------------------------------------------------


@PROPERTY
@given(journals())
def test_snapshot_at_any_seq_plus_the_tail_folds_to_the_full_state(events: list[Event]) -> None:
    full = fold(events)
    prefix = RunState()
    for k, event in enumerate(events, start=1):
        prefix = apply(prefix, event)
        # In memory ...
        assert fold(events[k:], prefix) == full
        # ... and through the sealed snapshot bytes a store would hold.
        snapshot = open_snapshot(RUN_ID, k, seal_snapshot(prefix))
        assert snapshot.seq == k and snapshot.head_hash == event.checksum
        assert snapshot.state == prefix
        assert fold(events[k:], snapshot.state) == full


@settings(max_examples=30, deadline=None)
@given(journals(), st.data())
def test_folding_in_arbitrary_chunks_matches_one_fold(
    events: list[Event], data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=4)))
    state = RunState()
    last = 0
    for cut in [*cuts, len(events)]:
        state = fold(events[last:cut], state)
        last = cut
    assert state == fold(events)


# -- what the fold means -----------------------------------------------------------------


def test_created_sets_the_identity_of_the_run() -> None:
    [created] = chain(CREATED)
    state = fold([created])
    assert (state.run_id, state.agent, state.task, state.status) == (
        RUN_ID,
        "researcher",
        "find X",
        "queued",
    )
    assert state.limits == {"max_steps": 5}
    assert state.created_at == created.ts


def test_usage_is_counted_once_from_the_event_that_spent_it() -> None:
    u1 = Usage(input_tokens=100, output_tokens=10, cost_usd=0.1)
    u2 = Usage(input_tokens=5, output_tokens=1, cost_usd=0.2)
    state = fold(
        chain(
            CREATED,
            d("budget.reserved", amount=1.0),
            d("cycle.started"),
            d("model.requested"),
            d("model.completed", usage=u1),
            d("tool.requested", call_id="c1", name="fetch"),
            d("tool.completed", usage=u2, call_id="c1"),
            d("budget.settled", amount=0.3),
        )
    )
    assert (state.input_tokens, state.output_tokens) == (105, 11)
    assert state.cost_usd == pytest.approx(0.3)
    assert state.tokens == 116


def test_tool_calls_are_pending_until_answered() -> None:
    events = chain(
        CREATED,
        d("cycle.started"),
        d("tool.requested", call_id="c1", name="a"),
        d("tool.requested", call_id="c2", name="b"),
        d("tool.requested", call_id="c3", name="c"),
        d("tool.completed", call_id="c2"),
        d("tool.failed", call_id="c1"),
    )
    state = fold(events)
    assert [(c.call_id, c.name, c.seq) for c in state.pending_calls] == [("c3", "c", 5)]
    assert (state.tool_calls, state.tool_errors) == (3, 1)
    state = fold(chain(*[e_draft(e) for e in events], d("tool.unknown", call_id="c3")))
    assert state.pending_calls == ()
    assert state.tool_errors == 2


def test_a_completed_tool_with_is_error_counts_as_an_error() -> None:
    state = fold(
        chain(
            CREATED,
            d("tool.requested", call_id="c1", name="a"),
            d("tool.completed", call_id="c1", is_error=True),
        )
    )
    assert state.tool_errors == 1


def test_compaction_replaces_what_it_removed_but_never_a_pinned_event() -> None:
    state = fold(
        chain(
            CREATED,
            d("message.system", text="mission"),  # 2, pinned by default
            d("message.user", text="task", pinned=True),  # 3
            d("message.user", text="chatter", pinned=False),  # 4
            d("model.completed"),  # 5
            d("tool.completed", call_id="x"),  # 6
            d("model.completed"),  # 7
            d("context.compacted", removed=[2, 4, 5, 6]),  # 8
        )
    )
    assert state.pinned == (2, 3)
    assert state.context == (2, 3, 8, 7)


def test_approvals_pause_the_run_until_all_are_resolved() -> None:
    events = chain(
        CREATED,
        d("cycle.started"),
        d("approval.requested", request_id="r1"),
        d("approval.requested", request_id="r2"),
        d("approval.resolved", request_id="r1"),
    )
    state = fold(events)
    assert state.status == "waiting_approval" and state.pending_approvals == ("r2",)
    state = fold(chain(*[e_draft(e) for e in events], d("approval.resolved", request_id="r2")))
    assert state.status == "queued" and state.pending_approvals == ()


@pytest.mark.parametrize(
    "type_,status",
    [
        ("run.completed", "completed"),
        ("run.stopped", "stopped"),
        ("run.failed", "failed"),
        ("run.cancelled", "cancelled"),
    ],
)
def test_a_terminal_event_ends_the_run_with_its_answer_and_reason(type_: str, status: str) -> None:
    state = fold(
        chain(
            CREATED,
            d("cycle.started"),
            d("model.requested"),
            d(type_, answer="partial result", partial=True, reason="limit"),
        )
    )
    assert state.status == status and state.terminal
    assert (state.answer, state.partial, state.reason) == ("partial result", True, "limit")
    assert state.open_model_request is None


def test_a_fork_starts_queued_from_its_parent_event() -> None:
    state = fold(
        chain(
            CREATED,
            d("run.failed", answer="x", reason="corrupt"),
            d("run.forked", from_run="run_parent", from_event="run_parent:1"),
        )
    )
    assert (state.status, state.parent_event, state.answer, state.reason) == (
        "queued",
        "run_parent:1",
        None,
        None,
    )


def test_active_time_counts_work_and_skips_pauses() -> None:
    state = fold(
        chain(
            CREATED,  # t0
            d("cycle.started"),  # +10 s of work
            d("approval.requested", request_id="r"),  # +5 s of work
            d("approval.resolved", request_id="r"),  # +3600 s waiting for a human
            d("run.resumed"),  # +7200 s paused
            d("run.completed"),  # +2 s of work
            gaps=[0, 10, 5, 3600, 7200, 2],
        )
    )
    assert state.active_s == pytest.approx(17)


def e_draft(event: Event) -> EventDraft:
    return EventDraft(
        type=event.type,
        payload=event.payload,
        correlation_id=event.correlation_id,
        causation_id=event.causation_id,
        visibility=event.visibility,
        actor=event.actor,
        usage=event.usage,
    )
