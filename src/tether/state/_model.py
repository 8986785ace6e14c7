"""RunState: what a run's journal folds to."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from itertools import islice
from typing import Any, Literal, cast, get_args, overload

RunStatus = Literal[
    "queued", "running", "waiting_approval", "completed", "stopped", "failed", "cancelled"
]
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
TERMINAL_STATUSES: frozenset[RunStatus] = frozenset({"completed", "stopped", "failed", "cancelled"})

FOLD_VERSION = 3
"""Bumped whenever `apply` changes meaning; snapshots of another version are not used.

2: `active_s` (time worked, pauses excluded) was added to the state.
3: `key_base` (forks continue their parent's effect keys), pinned facts (`facts`) and a
   journaled summariser answer (`summary_seq`) were added.
"""


class ContextSeqs:
    """An immutable sequence of journal seqs that appends in O(1) amortised.

    Successive states share one backing list: a state's view is `items[:length]`, and
    appending to the newest view extends the list in place (no older view can see the new
    entry). Appending to an older view, which only a branching fold does, copies. A copy
    of the whole context per event made the fold O(context) per step.
    """

    __slots__ = ("_items", "_length")

    def __init__(self, items: list[int] | tuple[int, ...] = ()) -> None:
        self._items = list(items)
        self._length = len(self._items)

    def appended(self, seq: int) -> ContextSeqs:
        items = self._items
        if len(items) != self._length:
            items = items[: self._length]
        items.append(seq)
        new = object.__new__(ContextSeqs)
        new._items = items
        new._length = self._length + 1
        return new

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[int]:
        return islice(self._items, self._length)

    def __contains__(self, seq: object) -> bool:
        try:
            self._items.index(cast(int, seq), 0, self._length)
        except ValueError:
            return False
        return True

    def since(self, start: int) -> list[int]:
        """The seqs from index `start` on: O(len - start), no copy of the rest."""
        return self._items[start : self._length]

    def extends(self, older: ContextSeqs) -> bool:
        """Whether this context is `older` with seqs appended (a compaction is not): O(1)
        when both are views of one backing list, as successive states of a fold are."""
        n = older._length
        if n > self._length:
            return False
        if n == 0:
            return True
        if older._items is self._items:
            return True
        return self._items[n - 1] == older._items[n - 1] and self._items[0] == older._items[0]

    @overload
    def __getitem__(self, index: int) -> int: ...
    @overload
    def __getitem__(self, index: slice) -> list[int]: ...
    def __getitem__(self, index: int | slice) -> int | list[int]:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._length)
            if step == 1:
                return self._items[start:stop]
            return [self._items[i] for i in range(start, stop, step)]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("context index out of range")
        return self._items[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ContextSeqs):
            return self._length == other._length and self.to_list() == other.to_list()
        if isinstance(other, (tuple, list)):
            return self.to_list() == list(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self.to_list()))

    def __repr__(self) -> str:
        return f"ContextSeqs({self.to_list()!r})"

    def to_list(self) -> list[int]:
        return self._items[: self._length]


@dataclass(frozen=True, kw_only=True, slots=True)
class Fact:
    """A fact pinned into the model's context: never compacted, listed by `tether show`."""

    id: str
    text: str
    source: str
    by: str
    """`agent` (its pin tool) or the operator who pinned it."""
    seq: int
    """Seq of its `fact.pinned` event."""


@dataclass(frozen=True, kw_only=True, slots=True)
class PendingCall:
    """A tool call the journal shows as requested but not yet answered."""

    call_id: str
    name: str
    seq: int
    """Seq of its `tool.requested` event (whose payload holds its idempotency key)."""


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
    key_base: str = ""
    """The run whose effect keys this run continues: a fork redoing its parent's step
    presents the parent's key. Empty means the run's own id."""
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
    context: ContextSeqs = field(default_factory=ContextSeqs)
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
    facts: tuple[Fact, ...] = ()
    """Facts pinned by the agent or an operator, oldest first (bounded by the pin budget)."""
    summary_seq: int | None = None
    """Seq of a summariser answer not yet used by a compaction (a crash came in between)."""
    policy_state: dict[str, Any] = field(default_factory=dict)
    """Each policy's last checkpoint (`{"after", "at", "state"}`: its state as of seq
    `after`, carried by the event at `at`), by policy key,
    folded from the `health.*` events that carry one: restored on resume in O(1)."""

    @property
    def steps(self) -> int:
        return self.cycle

    def effect_key(self, index: int) -> str:
        """The idempotency key of the `index`th call of the current cycle's turn."""
        return f"{self.key_base or self.run_id}/c{self.cycle}/t{index}"

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def to_json(self) -> dict[str, Any]:
        # Shallow on purpose: asdict deep-copies every entry of `context` (ms at 10k steps).
        values = dict(self.__dict__)
        values["context"] = self.context.to_list()
        # Added in fold version 3; left out while empty so older states keep their JSON.
        if self.summary_seq is None:
            del values["summary_seq"]
        if not self.policy_state:
            del values["policy_state"]
        values["facts"] = [
            {"id": f.id, "text": f.text, "source": f.source, "by": f.by, "seq": f.seq}
            for f in self.facts
        ]
        if not self.facts:
            del values["facts"]
        values["pending_calls"] = [
            {"call_id": c.call_id, "name": c.name, "seq": c.seq} for c in self.pending_calls
        ]
        return values

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunState:
        """Rebuild from `to_json`; raises on any missing or unknown field."""
        values = dict(data)
        for name in _ADDED_IN_3:
            values.setdefault(name, _FIELD_DEFAULTS[name])
        values["policy_state"] = dict(values["policy_state"])
        missing = {f.name for f in fields(cls)} - values.keys()
        if missing:
            # A default here would turn damaged or outdated state into a hollow one.
            raise KeyError(f"state is missing {sorted(missing)}")
        values["context"] = ContextSeqs(list(values["context"]))
        values["facts"] = tuple(Fact(**f) for f in values["facts"])
        values["pinned"] = tuple(values["pinned"])
        values["pending_approvals"] = tuple(values["pending_approvals"])
        values["pending_calls"] = tuple(PendingCall(**c) for c in values["pending_calls"])
        return cls(**values)


_ADDED_IN_3 = ("facts", "summary_seq", "policy_state")
_FIELD_DEFAULTS: dict[str, Any] = {"facts": (), "summary_seq": None, "policy_state": {}}
