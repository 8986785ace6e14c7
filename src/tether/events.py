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
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ._canonical import canonical_json
from ._envelope import V2_HEAD, V2_TAG, v2_body_bytes, v2_fields, v2_salt
from ._envelope_v3 import LINK_BYTES, LINK_HEX, V3_TAGS, pack_v3, unpack_v3, v3_digest

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
    """The previous event's checksum (`GENESIS_HASH` for the first); in v3, its first 16
    hex digits, which is all the row stores (see `follows`)."""
    checksum: str
    """SHA-256 over the canonical body; the next event's `prev_hash`."""
    stored: bytes | None = field(default=None, repr=False, compare=False)
    """The exact stored bytes, or None until `raw` first makes them from `body`."""
    body: bytes | None = field(default=None, repr=False, compare=False)
    """A v2/v3 event's canonical JSON body (uncompressed), when at hand; else None."""

    @property
    def raw(self) -> bytes:
        """The exact stored bytes (the canonical body with its checksum). A v3 event
        sealed here deflates its body when a store first asks (every store does, at
        append), so an event that is never stored is never compressed."""
        stored = self.stored
        if stored is None:
            if self.body is None:
                raise ValueError("an event with neither its stored bytes nor its body")
            stored = pack_v3(bytes.fromhex(self.prev_hash), bytes.fromhex(self.checksum), self.body)
            object.__setattr__(self, "stored", stored)  # a cache: the same bytes every time
        return stored

    @property
    def id(self) -> str:
        return event_id(self.run_id, self.seq)

    def follows(self, checksum: str) -> bool:
        """Whether this event is chained to the event whose checksum is `checksum` (the
        whole 64 digits): its `prev_hash` is that checksum, or in v3 its prefix."""
        if self.schema_version == 3:
            return len(checksum) == 64 and checksum[:LINK_HEX] == self.prev_hash
        return checksum == self.prev_hash

    def portable(self) -> bytes:
        """One self-verifying JSON line (exports): a v1 event's stored bytes, or a v2/v3
        event's (uncompressed) body with the run id, seq and digests its row holds beside
        it (a v3 `prev_hash` is its 16-digit link)."""
        if self.schema_version == 1:
            return self.raw
        body = self.body
        if body is None:
            body = self.raw[V2_HEAD:] if self.schema_version == 2 else unpack_v3(self.raw)[2]
        return canonical_json(
            {
                "v": self.schema_version,
                "run_id": self.run_id,
                "seq": self.seq,
                "prev_hash": self.prev_hash,
                "checksum": self.checksum,
                "event": json.loads(body),
            }
        )

    def to_json(self) -> dict[str, Any]:
        """The full envelope in its portable form, checksum included."""
        value: dict[str, Any] = json.loads(self.portable())
        return value


class EventDecodeError(ValueError):
    """Stored bytes are not a valid sealed event; the message says what failed."""


_ENVELOPE_KEYS = frozenset(
    {
        "v", "run_id", "seq", "ts", "type", "correlation_id", "causation_id",
        "visibility", "actor", "payload", "usage", "prev_hash", "checksum",
    }
)  # fmt: skip


_PORTABLE_V2_KEYS = frozenset({"v", "run_id", "seq", "prev_hash", "checksum", "event"})


def decode_event(raw: bytes, *, run_id: str | None = None, seq: int | None = None) -> Event:
    """Parse and verify one stored event. Never fills in a default for bad data.

    A v2 or v3 event's stored bytes do not hold its run id and seq (its row does): pass
    them. v1 bytes and portable lines (`Event.portable`) carry their own."""
    if not isinstance(raw, bytes):
        # A damaged store can hand back another type (a TEXT or INTEGER cell in SQLite).
        raise EventDecodeError(f"stored data is {type(raw).__name__}, not bytes")
    if raw[:1] == V2_TAG or (raw and raw[0] in V3_TAGS):
        if run_id is None or seq is None:
            raise EventDecodeError("a v2 or v3 event decodes with its row's run id and seq")
        return _decode_compact(raw, run_id, seq)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # incl. JSONDecodeError, UnicodeDecodeError
        raise EventDecodeError(f"undecodable bytes ({exc.__class__.__name__})") from None
    if isinstance(body, dict) and set(body) == _PORTABLE_V2_KEYS and body["v"] in (2, 3):
        return _decode_portable(raw, body)
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
    if version != 1:
        # Versions other than these two are never guessed at.
        raise EventDecodeError(f"unknown schema version {version!r}")
    usage = body["usage"]
    try:
        event = _event(
            body,
            usage=None
            if usage is None
            else [usage["input_tokens"], usage["output_tokens"], usage["cost_usd"]],
            version=1,
            prev_hash=_str(body["prev_hash"]),
            checksum=checksum,
            raw=raw,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EventDecodeError(f"malformed field: {exc}") from None
    return event


def peek_fields(raw: Any, run_id: str) -> dict[str, Any] | None:
    """An event's envelope fields read from its bytes without verifying them (no checksum,
    no canonical form): what a store shows in its query columns. None when unreadable;
    `decode_event` is what says whether the bytes are good."""
    try:
        if not isinstance(raw, bytes):
            return None
        if raw[:1] == V2_TAG:
            fields = v2_fields(run_id, json.loads(raw[V2_HEAD:]))
        elif raw and raw[0] in V3_TAGS:
            fields = v2_fields(run_id, json.loads(unpack_v3(raw)[2]))
        else:
            body = json.loads(raw)
            fields = {k: body[k] for k in _PEEK_V1}
        if not isinstance(fields["payload"], dict):
            return None
        return fields
    except (ValueError, TypeError, KeyError, RecursionError):
        return None


_PEEK_V1 = ("type", "ts", "correlation_id", "causation_id", "visibility", "actor", "payload")


def _decode_compact(raw: bytes, run_id: str, seq: int) -> Event:
    """A v2 or v3 event from its row: the same body, told apart by the first byte."""
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(run_id, str):
        raise EventDecodeError("the row's run id or seq is damaged")
    if raw[:1] == V2_TAG:
        version = 2
        prev, digest, data = raw[1:33], raw[33:V2_HEAD], raw[V2_HEAD:]
        if len(digest) != 32:
            raise EventDecodeError("truncated envelope")
        expected = hashlib.sha256(v2_salt(run_id, seq) + prev + data).digest()
    else:
        version = 3
        try:
            prev, digest, data = unpack_v3(raw)
        except ValueError as exc:
            raise EventDecodeError(str(exc)) from None
        expected = v3_digest(run_id, seq, prev, data)
    if expected != digest:
        raise EventDecodeError("checksum mismatch")
    try:
        fields = v2_fields(run_id, json.loads(data))
        event = _event(
            {**fields, "run_id": run_id, "seq": seq},
            usage=fields["usage"],
            version=version,
            prev_hash=prev.hex(),
            checksum=digest.hex(),
            raw=raw,
            data=data,
        )
        again = v2_body_bytes(
            run_id, event.type, event.ts, event.correlation_id, event.causation_id,
            event.visibility, event.actor, event.payload, event.usage,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        # ValueError covers undecodable JSON and NaN/Infinity (not canonical JSON)
        raise EventDecodeError(f"malformed field: {exc.__class__.__name__}: {exc}") from None
    if again != data:
        raise EventDecodeError("bytes are not in canonical form")
    return event


def _decode_portable(line: bytes, body: dict[str, Any]) -> Event:
    """A v2 or v3 event from an export line: rebuilt into its stored bytes (a v3 body
    deflated by this zlib: the checksum does not depend on it), then verified."""
    try:
        run_id, seq = _str(body["run_id"]), _int(body["seq"])
        prev, digest = bytes.fromhex(_str(body["prev_hash"])), bytes.fromhex(_str(body["checksum"]))
        data = canonical_json(body["event"])
        if body["v"] == 2:
            if len(prev) != 32 or len(digest) != 32:
                raise ValueError("digests are not SHA-256")
            raw = V2_TAG + prev + digest + data
        else:
            raw = pack_v3(prev, digest, data)
    except (TypeError, ValueError, RecursionError) as exc:
        raise EventDecodeError(f"malformed field: {exc}") from None
    event = _decode_compact(raw, run_id, seq)
    if event.portable() != line:
        raise EventDecodeError("bytes are not in canonical form")
    return event


def _event(
    body: dict[str, Any], *, usage: Any, version: int, prev_hash: str, checksum: str,
    raw: bytes, data: bytes | None = None,
) -> Event:  # fmt: skip
    return Event(
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
            input_tokens=_int(usage[0]), output_tokens=_int(usage[1]), cost_usd=_float(usage[2])
        ),
        schema_version=version,
        prev_hash=prev_hash,
        checksum=checksum,
        stored=raw,
        body=data,
    )


def _float(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return float(value)


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
