"""The journal's vocabulary: the event envelope, its types, and how an event is sealed.

An event is sealed once, by the writer, when its `seq` and predecessor are known: the
checksum covers every field including `prev_hash`, so the events of a run form a hash
chain. Stores persist the sealed bytes exactly; every read re-verifies them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

__all__ = [
    "DEFAULT_VISIBILITY",
    "EVENT_TYPES",
    "GENESIS_HASH",
    "SCHEMA_VERSION",
    "Event",
    "EventDecodeError",
    "EventDraft",
    "Usage",
    "Visibility",
    "canonical_json",
    "decode_event",
    "event_id",
    "parse_event_id",
]

SCHEMA_VERSION = 1
"""Version of the event envelope. Journals written at any version must keep loading."""

GENESIS_HASH = "0" * 64
"""The `prev_hash` of every run's first event."""

Visibility = Literal["visible", "user_hidden", "always_hidden"]
VISIBILITIES: tuple[Visibility, ...] = get_args(Visibility)

# Default audience of each event type (DESIGN invariant 7). A writer may override it
# per event, e.g. a tool whose output end users may see.
DEFAULT_VISIBILITY: dict[str, Visibility] = {
    "run.created": "visible",
    "run.resumed": "user_hidden",
    "run.forked": "user_hidden",
    "run.completed": "visible",
    "run.stopped": "visible",
    "run.failed": "visible",
    "run.cancelled": "visible",
    "message.system": "always_hidden",
    "message.user": "visible",
    "cycle.started": "user_hidden",
    "model.requested": "user_hidden",
    "model.completed": "user_hidden",
    "model.failed": "user_hidden",
    "tool.requested": "user_hidden",
    "tool.started": "user_hidden",
    "tool.completed": "user_hidden",
    "tool.failed": "user_hidden",
    "tool.unknown": "user_hidden",
    "context.compacted": "user_hidden",
    "limit.warning": "user_hidden",
    "limit.reached": "user_hidden",
    "budget.reserved": "user_hidden",
    "budget.settled": "user_hidden",
    "budget.denied": "user_hidden",
    "approval.requested": "visible",
    "approval.resolved": "visible",
    "journal.repaired": "user_hidden",
    "health.warning": "user_hidden",
    "note": "user_hidden",
}
EVENT_TYPES = frozenset(DEFAULT_VISIBILITY)


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)  # one encoder for every call: json.dumps with options builds a new one each time


def canonical_json(value: Any) -> bytes:
    """The one byte encoding that checksums are computed over."""
    return _CANONICAL.encode(value).encode("utf-8")


def event_id(run_id: str, seq: int) -> str:
    return f"{run_id}:{seq}"


def parse_event_id(text: str) -> tuple[str, int]:
    """Split `RUN_ID:SEQ`; raises ValueError on anything else."""
    run_id, sep, seq = text.rpartition(":")
    if not sep or not run_id or not seq.isdigit() or int(seq) < 1:
        raise ValueError(f"not an event id (RUN_ID:SEQ): {text!r}")
    return run_id, int(seq)


@dataclass(frozen=True, kw_only=True, slots=True)
class Usage:
    """Tokens and money an event accounts for."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
        }


@dataclass(frozen=True, kw_only=True, slots=True)
class EventDraft:
    """An event before it has a place in the journal."""

    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None
    """The cycle this event belongs to."""
    causation_id: str | None = None
    """Id (`run_id:seq`) of the event that caused this one."""
    visibility: Visibility | None = None
    """None means the type's default."""
    actor: str = "runtime"
    usage: Usage | None = None

    def seal(self, *, run_id: str, seq: int, prev_hash: str, ts: str) -> Event:
        visibility = self.visibility or DEFAULT_VISIBILITY.get(self.type, "user_hidden")
        body: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "run_id": run_id,
            "seq": seq,
            "ts": ts,
            "type": self.type,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "visibility": visibility,
            "actor": self.actor,
            "payload": self.payload,
            "usage": self.usage.to_json() if self.usage else None,
            "prev_hash": prev_hash,
        }
        data = canonical_json(body)
        checksum = hashlib.sha256(data).hexdigest()
        # The stored form is the body plus its checksum, so one blob verifies itself.
        stored = data[:-1] + b',"checksum":"' + checksum.encode() + b'"}'
        return Event(
            run_id=run_id,
            seq=seq,
            ts=ts,
            type=self.type,
            correlation_id=self.correlation_id,
            causation_id=self.causation_id,
            visibility=visibility,
            actor=self.actor,
            payload=self.payload,
            usage=self.usage,
            schema_version=SCHEMA_VERSION,
            prev_hash=prev_hash,
            checksum=checksum,
            raw=stored,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """A sealed journal entry: immutable, checksummed, chained to its predecessor."""

    run_id: str
    seq: int
    ts: str
    """UTC ISO-8601 time the writer sealed it."""
    type: str
    correlation_id: str | None
    causation_id: str | None
    visibility: Visibility
    actor: str
    payload: dict[str, Any]
    usage: Usage | None
    schema_version: int
    prev_hash: str
    checksum: str
    """SHA-256 over the canonical body; the next event's `prev_hash`."""
    raw: bytes = field(repr=False, compare=False)
    """The exact stored bytes (the canonical body with its checksum)."""

    @property
    def id(self) -> str:
        return event_id(self.run_id, self.seq)

    def to_json(self) -> dict[str, Any]:
        """The full envelope as stored, checksum included."""
        value: dict[str, Any] = json.loads(self.raw)
        return value


class EventDecodeError(ValueError):
    """Stored bytes are not a valid sealed event; the message says what failed."""


_ENVELOPE_KEYS = frozenset(
    {
        "v", "run_id", "seq", "ts", "type", "correlation_id", "causation_id",
        "visibility", "actor", "payload", "usage", "prev_hash", "checksum",
    }
)  # fmt: skip


def decode_event(raw: bytes) -> Event:
    """Parse and verify one stored event. Never fills in a default for bad data."""
    if not isinstance(raw, bytes):
        # A damaged store can hand back another type (a TEXT or INTEGER cell in SQLite).
        raise EventDecodeError(f"stored data is {type(raw).__name__}, not bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # incl. JSONDecodeError, UnicodeDecodeError
        raise EventDecodeError(f"undecodable bytes ({exc.__class__.__name__})") from None
    if not isinstance(body, dict) or set(body) != _ENVELOPE_KEYS:
        raise EventDecodeError("envelope has missing or unknown fields")
    checksum = body.pop("checksum")
    if not isinstance(checksum, str):
        raise EventDecodeError("checksum is not a string")
    try:
        data = canonical_json(body)
    except (ValueError, RecursionError) as exc:  # NaN, Infinity: valid to json.loads only
        raise EventDecodeError(f"not canonical JSON ({exc.__class__.__name__})") from None
    if hashlib.sha256(data).hexdigest() != checksum:
        raise EventDecodeError("checksum mismatch")
    if data[:-1] + b',"checksum":"' + checksum.encode() + b'"}' != raw:
        raise EventDecodeError("bytes are not in canonical form")
    version = body["v"]
    if version != SCHEMA_VERSION:
        # Future versions add upcasters here; an unknown version is never guessed at.
        raise EventDecodeError(f"unknown schema version {version!r}")
    usage = body["usage"]
    try:
        event = Event(
            run_id=_str(body["run_id"]),
            seq=_int(body["seq"]),
            ts=_str(body["ts"]),
            type=_str(body["type"]),
            correlation_id=_opt_str(body["correlation_id"]),
            causation_id=_opt_str(body["causation_id"]),
            visibility=_visibility(body["visibility"]),
            actor=_str(body["actor"]),
            payload=_dict(body["payload"]),
            usage=None
            if usage is None
            else Usage(
                input_tokens=_int(usage["input_tokens"]),
                output_tokens=_int(usage["output_tokens"]),
                cost_usd=float(usage["cost_usd"]),
            ),
            schema_version=version,
            prev_hash=_str(body["prev_hash"]),
            checksum=checksum,
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EventDecodeError(f"malformed field: {exc}") from None
    return event


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


def _visibility(value: Any) -> Visibility:
    if value not in VISIBILITIES:
        raise ValueError(f"unknown visibility {value!r}")
    result: Visibility = value
    return result
