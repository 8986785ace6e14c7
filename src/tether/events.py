"""The journal's vocabulary: the event envelope, its types, and how an event is sealed.

An event is sealed once, by the writer, when its `seq` and predecessor are known: the
checksum covers every field including `prev_hash`, so the events of a run form a hash
chain. Stores persist the sealed bytes exactly; every read re-verifies them.

Three envelopes exist; all keep loading (`decode_event`), new events are sealed in v3:

- v1: canonical JSON with every field spelled out and hex digests (~400 bytes of envelope).
- v2 (`_envelope.py`): one version byte, the raw 32-byte `prev_hash` and checksum, then a
  compact canonical JSON body. What the row already binds (run id, seq) is not stored but
  is part of the hashed input, so a row moved to another run or seq fails its checksum.
- v3 (`_envelope_v3.py`): v2's body deflated with a fixed dictionary (or as is, when that
  is not smaller), a CRC of the deflated bytes, and only the first 8 bytes of
  `prev_hash` (a v3 event's `prev_hash` is those 16 hex digits; `Event.follows` is the
  chain check). The checksum is still over the uncompressed body.

Here: the event types, their default visibilities and sealing. The sealed `Event` itself
is in `_events_sealed`, verified decoding (`decode_event`, `peek_fields`) in
`_events_decode`; both are exported from here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ._canonical import canonical_json
from ._envelope import V2_TAG, v2_body_bytes, v2_salt
from ._envelope_v3 import LINK_BYTES, v3_digest
from ._events_decode import EventDecodeError, decode_event, peek_fields
from ._events_sealed import VISIBILITIES as VISIBILITIES
from ._events_sealed import Event, Usage, Visibility, event_id, parse_event_id

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
    "peek_fields",
]

SCHEMA_VERSION = 3
"""Version of the event envelope new events are sealed in. Journals written at any
version must keep loading: `decode_event` reads v1, v2 and v3."""

GENESIS_HASH = "0" * 64
"""The `prev_hash` of every run's first event."""

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
    "summary.requested": "user_hidden",
    "summary.completed": "user_hidden",
    "fact.pinned": "user_hidden",
    "fact.unpinned": "user_hidden",
    "limit.warning": "user_hidden",
    "limit.reached": "user_hidden",
    "limit.changed": "user_hidden",
    # A main-loop model call's hold rides in its model.requested / model.completed
    # (`budget` field, budget/_journaled.py); these remain for the summariser, a hold
    # taken again on resume, and journals written before.
    "budget.reserved": "user_hidden",
    "budget.settled": "user_hidden",
    "budget.denied": "user_hidden",
    "approval.requested": "visible",
    "approval.resolved": "visible",
    "journal.repaired": "user_hidden",
    "health.warning": "user_hidden",
    # Health policies (tether.policies): each names its policy, its evidence and the action.
    "health.truncated": "user_hidden",
    "health.breaker": "user_hidden",
    "health.inconsistent": "user_hidden",
    "health.stale": "user_hidden",
    "health.monitor": "user_hidden",
    "health.guardrail": "user_hidden",
    "health.policy": "user_hidden",
    "note": "user_hidden",
}
EVENT_TYPES = frozenset(DEFAULT_VISIBILITY)


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

    def seal(self, *, run_id: str, seq: int, prev_hash: str, ts: str, version: int = 3) -> Event:
        """Seal in the current envelope (v3) after the event whose checksum is `prev_hash`;
        `version=1` or `2` writes an older one (tests, tools that must produce journals
        older code reads)."""
        visibility = self.visibility or DEFAULT_VISIBILITY.get(self.type, "user_hidden")
        usage = self.usage
        if usage is not None and not (
            type(usage) is Usage
            and type(usage.input_tokens) is int
            and type(usage.output_tokens) is int
            and type(usage.cost_usd) is float
        ):
            # The envelope stores exact JSON types: a cost given as an int is a float here.
            usage = Usage(
                input_tokens=int(usage.input_tokens),
                output_tokens=int(usage.output_tokens),
                cost_usd=float(usage.cost_usd),
            )
        if version not in (1, 2, 3):
            raise ValueError(f"no envelope version {version}")
        body = None
        if version == 1:
            checksum, stored = _seal_v1(self, run_id, seq, prev_hash, ts, visibility, usage)
        else:
            prev = bytes.fromhex(prev_hash)
            if len(prev) != 32:
                raise ValueError("prev_hash must be a 64-digit hex SHA-256")
            data = v2_body_bytes(
                run_id, self.type, ts, self.correlation_id, self.causation_id, visibility,
                self.actor, self.payload, usage,
            )  # fmt: skip
            if version == 3:
                prev = prev[:LINK_BYTES]
                prev_hash = prev.hex()
                digest = v3_digest(run_id, seq, prev, data)
                stored, body = None, data  # deflated when first asked for (`raw`)
            else:
                digest = hashlib.sha256(v2_salt(run_id, seq) + prev + data).digest()
                stored = V2_TAG + prev + digest + data
            checksum = digest.hex()
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
            usage=usage,
            schema_version=version,
            prev_hash=prev_hash,
            checksum=checksum,
            stored=stored,
            body=body,
        )


def _seal_v1(
    draft: EventDraft, run_id: str, seq: int, prev_hash: str, ts: str, visibility: str,
    usage: Usage | None,
) -> tuple[str, bytes]:  # fmt: skip
    body: dict[str, Any] = {
        "v": 1,
        "run_id": run_id,
        "seq": seq,
        "ts": ts,
        "type": draft.type,
        "correlation_id": draft.correlation_id,
        "causation_id": draft.causation_id,
        "visibility": visibility,
        "actor": draft.actor,
        "payload": draft.payload,
        "usage": usage.to_json() if usage else None,
        "prev_hash": prev_hash,
    }
    data = canonical_json(body)
    checksum = hashlib.sha256(data).hexdigest()
    # The stored form is the body plus its checksum, so one blob verifies itself.
    return checksum, data[:-1] + b',"checksum":"' + checksum.encode() + b'"}'
