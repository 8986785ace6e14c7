"""Changing a run's limits from outside it: `tether resume RUN --max-steps N`.

The new limits are journaled (`limit.changed`, with the old ones) under a brief lease,
like an approval, so every process that drives the run from then on obeys them. A run
a limit stopped is reopened by it and continues from its journal; a run that completed,
failed or was cancelled is over and is refused.
"""

from __future__ import annotations

from typing import Any

from .._clock import Clock
from ..agent import Limits
from ..errors import UsageError
from ..events import EventDraft
from ..journal import Store
from ..journal._leases import brief_journal
from ..state import RunState
from ._awareness import limit_reached

__all__ = ["change_limits"]

_OPTION = {"steps": "--max-steps", "tokens": "max_tokens", "cost": "--max-cost",
           "time": "--max-time"}  # fmt: skip


async def change_limits(
    store: Store,
    run_id: str,
    overrides: dict[str, Any],
    *,
    actor: str = "user",
    clock: Clock | None = None,
    must_continue: bool = False,
) -> RunState:
    """Journal the run's limits with `overrides` (non-None values) applied; returns the
    state after it. Nothing is journaled when nothing changes.

    `must_continue` (for `tether resume`) refuses, for a run a limit stopped, limits it
    has already used up: the run would only stop again, after paying for another
    wrap-up turn."""
    changes = {k: v for k, v in overrides.items() if v is not None}
    async with brief_journal(store, run_id, role=f"limits-{actor}", clock=clock) as journal:
        state = journal.state
        if state.status in ("completed", "failed", "cancelled"):
            raise UsageError(
                f"run {run_id} is {state.status}: new limits only continue a run a limit stopped"
            )
        before = Limits.from_json(state.limits)
        after = before.merged(**changes)
        if after == before:
            return state
        reached = limit_reached(state, after, elapsed_s=state.active_s)
        if must_continue and state.status == "stopped" and reached is not None:
            name, reason = reached
            raise UsageError(
                f"run {run_id} would stop again at once ({reason}): "
                f"raise {_OPTION[name]} above what it has used"
            )
        await journal.append(
            EventDraft(
                type="limit.changed",
                payload={"limits": after.to_json(), "previous": before.to_json()},
                causation_id=f"{run_id}:{state.last_seq}",
                actor=actor,
            )
        )
        return journal.state
