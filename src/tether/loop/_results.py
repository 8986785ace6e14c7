"""What the loop reports: live progress for a display, and a run's result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..state import RunState

__all__ = ["Observer", "Progress", "RunResult"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Progress:
    """What a live display shows; sent after every journal append and tool start, and
    every second while a model or tool call is in flight (`event` is then `*.waiting`)."""

    state: RunState
    event: str
    tool: str | None = None
    elapsed_s: float | None = None
    """The run's working time now; `state.active_s` only moves when an event is written."""


Observer = Callable[[Progress], None]


@dataclass(frozen=True, kw_only=True, slots=True)
class RunResult:
    """How a drive of a run ended (or paused); `exit_code` is the CLI's."""

    run_id: str
    status: str
    answer: str | None
    partial: bool
    reason: str | None
    steps: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    pending_approvals: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        """The CLI's contract: 0 completed, 1 failed, 3 stopped by a limit, 4 waiting."""
        return {"completed": 0, "stopped": 3, "waiting_approval": 4}.get(self.status, 1)

    @classmethod
    def of(cls, state: RunState) -> RunResult:
        return cls(
            run_id=state.run_id,
            status=state.status,
            answer=state.answer,
            partial=state.partial,
            reason=state.reason,
            steps=state.steps,
            input_tokens=state.input_tokens,
            output_tokens=state.output_tokens,
            cost_usd=state.cost_usd,
            pending_approvals=state.pending_approvals,
        )
