"""The journal side of a replay: an exported journal read back and verified, and what two
journals are compared by (the events that say what the agent did, in a comparable order)
up to their first divergence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..events import GENESIS_HASH, Event, EventDecodeError, decode_event

IGNORED = frozenset({"budget.reserved", "budget.settled", "budget.denied"})
"""Not compared: they depend on the store's budgets and on the environment, not on what
the agent did (a replay runs without the original store's limits). Nor is the `budget`
field of a model call's events (`project` never reads it): journals of before had the
call's hold as these separate events, today's carry it inside the call's own."""
IGNORED_PREFIXES = ("health.",)
"""Health events are the loop's observations (a new policy adds some to an old journal);
when one changes what the run does, the events that follow show it."""
COMPARED_FIELDS = ("name", "arguments", "idempotency_key", "decision", "reason", "error")
MODEL_FIELDS = ("content", "tool_calls")


class ReplayError(UsageError):
    """The file is not a journal that can be replayed (unreadable, damaged, not one run)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Divergence:
    """The first place where the replay did something other than the recording."""

    position: int
    """Index in the compared events (budget and health events are skipped)."""
    recorded_seq: int | None
    recorded: dict[str, Any] | None
    """What the recording has there (None: it had ended)."""
    now: dict[str, Any] | None
    """What the code did now (None: the replay ended there)."""

    def __str__(self) -> str:
        where = (
            f"recorded event {self.recorded_seq}" if self.recorded_seq else "the recording's end"
        )
        return f"first divergence at {where}: recorded {self.recorded}, now {self.now}"


@dataclass(frozen=True, kw_only=True, slots=True)
class ReplayReport:
    run_id: str
    recorded_events: int
    replayed_events: int
    recorded_status: str
    replayed_status: str
    divergence: Divergence | None

    @property
    def ok(self) -> bool:
        return self.divergence is None

    def to_json(self) -> dict[str, Any]:
        d = self.divergence
        return {
            "ok": self.ok, "run_id": self.run_id, "recorded_events": self.recorded_events,
            "replayed_events": self.replayed_events, "recorded_status": self.recorded_status,
            "replayed_status": self.replayed_status,
            "divergence": None if d is None else {
                "position": d.position, "recorded_seq": d.recorded_seq,
                "recorded": d.recorded, "now": d.now,
            },
        }  # fmt: skip


def load_journal(path: Path) -> list[Event]:
    """The events of an exported audit journal, verified (checksums, chain, one run)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReplayError(f"cannot read {path}: {exc.strerror}") from None
    events: list[Event] = []
    for n, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = decode_event(line)
        except EventDecodeError as exc:
            raise ReplayError(
                f"{path} line {n} is not a stored event ({exc}); export the run with "
                "`tether export RUN --view audit`"
            ) from None
        prev = events[-1] if events else None
        if event.seq != (prev.seq + 1 if prev else 1) or not event.follows(
            prev.checksum if prev else GENESIS_HASH
        ):
            raise ReplayError(f"{path} line {n}: the hash chain is broken at seq {event.seq}")
        if prev is not None and event.run_id != prev.run_id:
            raise ReplayError(f"{path} line {n}: events of more than one run")
        events.append(event)
    if not events or events[0].type != "run.created":
        raise ReplayError(f"{path} holds no run (its first event must be run.created)")
    return events


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


def _ignored(event: Event) -> bool:
    return event.type in IGNORED or event.type.startswith(IGNORED_PREFIXES)


def project(event: Event) -> dict[str, Any]:
    """What is compared: the type and the fields that say what the agent did (for a model
    answer, its text and calls)."""
    shown: dict[str, Any] = {"type": event.type}
    fields = MODEL_FIELDS if event.type == "model.completed" else COMPARED_FIELDS
    for name in fields:
        if name in event.payload:
            shown[name] = event.payload[name]
    return shown


RESULT_TYPES = frozenset({"tool.completed", "tool.failed", "tool.unknown"})


def _compared(events: Sequence[Event]) -> list[Event]:
    return [e for e in events if not _ignored(e)]


def _in_call_order(events: list[Event]) -> list[Event]:
    """`events` with each batch of consecutive tool results in call order.

    Parallel calls of one turn are journaled as they finish; a replay has every result at
    once and finishes them in call order. Sorting a batch by its calls' ids (stable) makes
    the two comparable without letting a result that differs go unseen."""
    start = 0
    for i in range(len(events) + 1):
        if i < len(events) and events[i].type in RESULT_TYPES:
            continue
        if i - start > 1:
            events[start:i] = sorted(events[start:i], key=lambda e: str(e.payload.get("call_id")))
        start = i + 1
    return events


def first_divergence(recorded: Sequence[Event], now: Sequence[Event]) -> Divergence | None:
    a, b = _in_call_order(_compared(recorded)), _in_call_order(_compared(now))
    for i in range(max(len(a), len(b))):
        left = project(a[i]) if i < len(a) else None
        right = project(b[i]) if i < len(b) else None
        if left != right:
            seq = a[i].seq if i < len(a) else None
            return Divergence(position=i, recorded_seq=seq, recorded=left, now=right)
    return None
