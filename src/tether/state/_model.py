"""RunState: what a run's journal folds to."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

RunStatus = Literal[
    "queued", "running", "waiting_approval", "completed", "stopped", "failed", "cancelled"
]
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
TERMINAL_STATUSES: frozenset[RunStatus] = frozenset({"completed", "stopped", "failed", "cancelled"})

FOLD_VERSION = 2
"""Bumped whenever `apply` changes meaning; snapshots of another version are not used.

2: `active_s` (time worked, pauses excluded) was added to the state.
"""


@dataclass(frozen=True, kw_only=True, slots=True)
class PendingCall:
    """A tool call the journal shows as requested but not yet answered."""

    call_id: str
    name: str
    seq: int
    """Seq of its `tool.requested` event; `run_id:seq` is its idempotency key."""


@dataclass(frozen=True, kw_only=True)
class RunState:
    """The folded state of one run at `last_seq`.

    The model context is kept as references (`context`: seqs of journal events) rather
    than copies, so snapshots stay small and storage grows linearly with the run.
    Not slotted on purpose: the fold derives each state from the last by copying its
    `__dict__`, several times cheaper than `dataclasses.replace` on the hot path.
    """

    run_id: str = ""
    status: RunStatus = "queued"
    agent: str = ""
    agent_version: str = ""
    task: str = ""
    model: str = ""
    tenant: str | None = None
    parent_event: str | None = None
    """`run_id:seq` of the event in a parent run that started this one (sub-agents, forks)."""
    limits: dict[str, Any] = field(default_factory=dict)
    last_seq: int = 0
    last_hash: str = ""
    created_at: str = ""
    updated_at: str = ""
    active_s: float = 0.0
    """Seconds the run has been worked on: gaps before a resume or an approval are not counted."""
    cycle: int = 0
    """Number of cycles started; a cycle is one model turn and the tools it called."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    tool_calls: int = 0
    tool_errors: int = 0
    context: tuple[int, ...] = ()
    """Seqs of the events that make up the model's current context, in order."""
    pinned: tuple[int, ...] = ()
    """Seqs that compaction must never remove (the mission, the task, pinned facts)."""
    open_model_request: int | None = None
    """Seq of a `model.requested` with no outcome yet."""
    pending_calls: tuple[PendingCall, ...] = ()
    pending_approvals: tuple[str, ...] = ()
    answer: str | None = None
    partial: bool = False
    reason: str | None = None
    """Why the run ended (terminal statuses) or paused."""

    @property
    def steps(self) -> int:
        return self.cycle

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_json(self) -> dict[str, Any]:
        # Shallow on purpose: asdict deep-copies every entry of `context` (ms at 10k steps).
        values = dict(self.__dict__)
        values["pending_calls"] = [
            {"call_id": c.call_id, "name": c.name, "seq": c.seq} for c in self.pending_calls
        ]
        return values

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        """Rebuild from `to_json`; raises on any missing or unknown field."""
        values = dict(data)
        missing = {f.name for f in fields(cls)} - values.keys()
        if missing:
            # A default here would turn damaged or outdated state into a hollow one.
            raise KeyError(f"state is missing {sorted(missing)}")
        values["context"] = tuple(values["context"])
        values["pinned"] = tuple(values["pinned"])
        values["pending_approvals"] = tuple(values["pending_approvals"])
        values["pending_calls"] = tuple(PendingCall(**c) for c in values["pending_calls"])
        return cls(**values)
