"""What a run is waiting for, and the command (if any) that moves it on.

`approve`/`reject` print the next step for the run they decided, and `tether ls` shows
why a run that is not finished is not moving. Both read the run index and the run's
creation event (its queue and agent), never the whole journal.
"""

from __future__ import annotations

from typing import Any

from .._clock import SystemClock
from ..approvals import pending_approvals
from ..journal import RunRecord, Store, read_events
from ..loop._runtime import holder_is_dead

__all__ = ["listed", "next_step"]


async def _created(store: Store, run_id: str) -> dict[str, Any]:
    payload: dict[str, Any] = (await read_events(store, run_id, until_seq=1))[0].payload
    return payload


def _live_lease(record: RunRecord, now: float) -> bool:
    return record.lease_owner is not None and (record.lease_expires_at or 0.0) > now


async def next_step(store: Store, run_id: str, *, store_arg: str) -> str:
    """One line saying what happens to the run now, with the command when one is needed."""
    record = await store.get_run(run_id)
    status = record.summary.status
    if status == "waiting_approval":
        waiting = [a.request_id for a in await pending_approvals(store, run_id=run_id)]
        return f"the run still waits for: {', '.join(waiting)}"
    if status in ("completed", "stopped", "failed", "cancelled"):
        return f"run {run_id} is {status}: nothing to continue"
    queue = (await _created(store, run_id)).get("metadata", {}).get("queue")
    if queue is not None:
        return f"a worker serving queue {queue!r} continues the run (tether worker{store_arg})"
    if _live_lease(record, SystemClock().time()):
        return f"run {run_id} is being driven by {record.lease_owner}"
    return f"continue the run: tether resume {run_id}{store_arg}"


async def listed(
    store: Store, record: RunRecord, *, now: float, store_arg: str = ""
) -> tuple[str, str]:
    """The status `tether ls` shows, and why the run waits ('' when it is not waiting).

    A queued run whose lease was released (a stopping worker handed it back) or expired
    reads as `queued`, although its last journaled status is `running`.
    """
    status = record.summary.status
    if status in ("completed", "stopped", "failed", "cancelled"):
        return status, ""
    if status == "waiting_approval":
        return status, f"a human's decision: tether approvals{store_arg}"
    created = await _created(store, record.run_id)
    queue = (created.get("metadata") or {}).get("queue")
    live = _live_lease(record, now)
    dead = live and record.lease_owner is not None and holder_is_dead(record.lease_owner)
    if queue is not None:
        if live and not dead:
            return "running", ""
        agent = f"{created['agent']}@{created.get('agent_version', '')}"
        return "queued", f"a worker on queue {queue!r} that has agent {agent}"
    if dead:
        return status, f"its holder died: tether resume {record.run_id}{store_arg}"
    if live:
        return status, ""
    return status, f"no process drives it: tether resume {record.run_id}{store_arg}"
