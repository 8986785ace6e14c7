"""`verify_run`: what `doctor` checks in one run, beside the load path's own checks.

The load path verifies only what it needs (the newest snapshot and the tail); this walks
the whole journal, every snapshot and the run index columns, and reports instead of
raising, so every problem of a run is listed at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import CorruptionError, RunNotFound
from ..events import GENESIS_HASH, EventDecodeError
from ..state import RunState, fold
from ._base import RunRecord, Store, summary_of
from ._integrity import Problem, StaleSnapshot, open_snapshot, walk
from ._journal import lost_problem

__all__ = ["RunReport", "index_fields_altered", "verify_run"]


@dataclass(kw_only=True, slots=True)
class RunReport:
    """What `doctor` found in one run."""

    run_id: str
    events: int
    head_seq: int
    snapshots: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


async def verify_run(store: Store, run_id: str) -> RunReport:
    """Walk the whole journal from seq 1, every snapshot, and the run index."""
    try:
        record = await store.get_run(run_id)
    except (RunNotFound, CorruptionError) as exc:
        gone = await lost_problem(store, run_id, head_seq=None)
        if gone is None:
            if isinstance(exc, RunNotFound) and run_id not in await store.run_ids():
                raise
            # Listed by the store yet not readable by its id: the run index is damaged.
            what = (
                exc.what
                if isinstance(exc, CorruptionError)
                else (
                    "the run index lists this run but cannot find it by its id "
                    "(the `runs` table or its index is damaged)"
                )
            )
            gone = Problem(kind="index", seq=None, what=what)
        return RunReport(run_id=run_id, events=0, head_seq=0, snapshots=0, problems=[gone])
    lost = await lost_problem(store, run_id, head_seq=record.head_seq)
    # Up to the recorded head only; rows past it are checked below, against a fresh read of
    # the record, so a live writer appending meanwhile is not reported as damage.
    rows = await store.read_rows(run_id, until_seq=record.head_seq)
    result = walk(rows, start_seq=1, prev_hash=GENESIS_HASH)
    problems: list[Problem] = []
    if result.fault is not None:
        fault = result.fault
        where = "mid-journal" if result.valid_after_fault else "tail"
        problems.append(
            replace(fault, what=f"{fault.what} ({where}; last good seq {len(result.events)})")
        )
    last = result.events[-1] if result.events else None
    if result.fault is None:
        if last is None or last.seq < record.head_seq:
            have = last.seq if last else 0
            problems.append(
                Problem(
                    kind="missing",
                    seq=have + 1,
                    what=f"events {have + 1}..{record.head_seq} are missing from the journal end",
                )
            )
        elif last.seq > record.head_seq or last.checksum != record.head_hash:
            problems.append(
                Problem(kind="head", seq=record.head_seq, what="run index disagrees with journal")
            )
    by_seq = {e.seq: e for e in result.events}
    snapshots = await store.read_snapshots(run_id)
    past_head: list[int] = []
    for seq, raw in snapshots:
        try:
            snap = open_snapshot(run_id, seq, raw)
        except StaleSnapshot:
            continue
        except EventDecodeError as exc:
            problems.append(Problem(kind="snapshot", seq=seq, what=str(exc)))
            continue
        if seq > record.head_seq:
            past_head.append(seq)
            continue
        anchor = by_seq.get(seq)
        if anchor is None and result.fault is None:
            problems.append(Problem(kind="snapshot", seq=seq, what="snapshot is past the journal"))
        elif anchor is not None and anchor.checksum != snap.head_hash:
            problems.append(Problem(kind="snapshot", seq=seq, what="snapshot does not match"))
        elif anchor is not None and fold(e for e in result.events if e.seq <= seq) != snap.state:
            problems.append(Problem(kind="snapshot", seq=seq, what="snapshot state differs"))
    if result.fault is None and last is not None:
        state = fold(result.events)
        if summary_of(state) != record.summary:
            problems.append(
                Problem(kind="index", seq=None, what="run index summary differs from the fold")
            )
        altered = index_fields_altered(record, state, first_ts=result.events[0].ts)
        if altered:
            problems.append(
                Problem(
                    kind="index",
                    seq=None,
                    what=f"run index {', '.join(altered)} differ from the journal",
                )
            )
    beyond = await store.read_rows(run_id, after_seq=record.head_seq)
    if beyond or past_head:
        # Appends move rows and head together, so a head read now covers every row and
        # snapshot a live writer added since `record` was read; anything past it is damage.
        latest = await store.get_run(run_id)
        for seq in past_head:
            if seq > latest.head_seq:
                problems.append(
                    Problem(kind="snapshot", seq=seq, what="snapshot is past the journal")
                )
        if any(not isinstance(r.seq, int) or r.seq > latest.head_seq for r in beyond):
            problems.append(
                Problem(kind="head", seq=latest.head_seq, what="events past the run index head")
            )
    if lost is not None:
        problems.insert(0, lost)
    return RunReport(
        run_id=run_id,
        events=len(rows),
        head_seq=record.head_seq,
        snapshots=len(snapshots),
        problems=problems,
    )


def index_fields_altered(record: RunRecord, state: RunState, *, first_ts: str) -> list[str]:
    """The run index columns (beside the summary) that disagree with the journal: the
    agent, tenant, parent and creation time that listings and queues read."""
    parent = state.parent_event.rpartition(":")[0] if state.parent_event else None
    altered = [
        name
        for name, have, want in (
            ("agent", record.agent, state.agent),
            ("tenant", record.tenant, state.tenant),
            ("parent_run_id", record.parent_run_id, parent),
        )
        if have != want
    ]
    # A fork is listed from its fork event; forks made before that list from run.created.
    if record.created_at not in (state.created_at, first_ts):
        altered.append("created_at")
    return altered
