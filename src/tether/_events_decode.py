"""Verified decoding: stored bytes (any envelope) or an export line back into an `Event`.

Kept apart from sealing because every read of every store comes through here, and its
rule is its own: nothing is guessed or defaulted, so damaged bytes fail with a message
instead of loading as some other event (see `tether.events` for the envelopes)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ._canonical import canonical_json
from ._envelope import V2_HEAD, V2_TAG, v2_body_bytes, v2_fields, v2_salt
from ._envelope_v3 import V3_TAGS, pack_v3, unpack_v3, v3_digest
from ._events_sealed import VISIBILITIES, Event, Usage, Visibility


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
