"""Verification of stored journals and snapshots, written once for every backend.

Fails closed: bytes that do not verify are reported with the run, the seq and what
failed, and are never turned into a default value.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..events import Event as Event
from ..events import EventDecodeError, canonical_json, decode_event
from ..state import FOLD_VERSION, RunState
from ._base import StoredRow
from ._index import audit_columns

ProblemKind = Literal["event", "missing", "chain", "head", "index", "snapshot", "lost"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Problem:
    kind: ProblemKind
    seq: int | None
    what: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "seq": self.seq, "what": self.what}


def verify_row(row: StoredRow) -> Event:
    """Decode one stored event and check its indexed columns agree with its bytes."""
    event = decode_event(row.raw, run_id=row.run_id, seq=row.seq)
    if (event.run_id, event.seq, event.type, event.correlation_id) != (
        row.run_id,
        row.seq,
        row.type,
        row.correlation_id,
    ):
        raise EventDecodeError("indexed columns disagree with the stored event")
    if row.audit is not None and row.audit != audit_columns(event):
        raise EventDecodeError("indexed audit columns disagree with the stored event")
    return event


@dataclass(kw_only=True, slots=True)
class Walk:
    """The result of walking a stored range: the verified prefix and the first fault."""

    events: list[Event] = field(default_factory=list)
    fault: Problem | None = None
    valid_after_fault: bool = False
    """True when some event after the fault verifies by itself: the damage is mid-journal."""

    @property
    def tail_only(self) -> bool:
        return self.fault is not None and not self.valid_after_fault


def walk(rows: Sequence[StoredRow], *, start_seq: int, prev_hash: str) -> Walk:
    """Verify rows as a contiguous chain that starts at `start_seq` after `prev_hash`."""
    result = Walk()
    expected_seq, expected_prev = start_seq, prev_hash
    for row in rows:
        if result.fault is not None:
            try:
                verify_row(row)
                result.valid_after_fault = True
                break
            except EventDecodeError:
                continue
        if row.seq != expected_seq:
            result.fault = Problem(
                kind="missing", seq=expected_seq, what=f"event {expected_seq} is missing"
            )
            # The row we are holding is itself a later event; check whether it is good.
            try:
                verify_row(row)
                result.valid_after_fault = True
                break
            except EventDecodeError:
                continue
        try:
            event = verify_row(row)
        except EventDecodeError as exc:
            result.fault = Problem(kind="event", seq=row.seq, what=str(exc))
            continue
        if not event.follows(expected_prev):
            result.fault = Problem(
                kind="chain",
                seq=row.seq,
                what="hash chain broken: prev_hash does not match the previous event",
            )
            result.valid_after_fault = True  # the event itself verifies
            break
        result.events.append(event)
        expected_seq, expected_prev = event.seq + 1, event.checksum
    return result


SNAPSHOT_FORMAT = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class Snapshot:
    run_id: str
    seq: int
    head_hash: str
    """Checksum of the event at `seq`: ties the snapshot to one exact journal prefix."""
    state: RunState


def seal_snapshot(state: RunState) -> bytes:
    body = {
        "format": SNAPSHOT_FORMAT,
        "fold_version": FOLD_VERSION,
        "run_id": state.run_id,
        "seq": state.last_seq,
        "head_hash": state.last_hash,
        "state": state.to_json(),
    }
    data = canonical_json(body)
    checksum = hashlib.sha256(data).hexdigest()
    return data[:-1] + b',"checksum":"' + checksum.encode() + b'"}'


class StaleSnapshot(Exception):
    """A valid snapshot written by another fold version: skipped, not corrupt."""


def open_snapshot(run_id: str, seq: int, raw: bytes) -> Snapshot:
    """Verify a stored snapshot; EventDecodeError when damaged, StaleSnapshot when outdated."""
    try:
        body = json.loads(raw)
        checksum = body.pop("checksum")
        data = canonical_json(body)
    except (ValueError, RecursionError, AttributeError, KeyError, TypeError) as exc:
        # ValueError covers JSONDecodeError, UnicodeDecodeError and NaN/Infinity.
        raise EventDecodeError(f"undecodable snapshot ({exc.__class__.__name__})") from None
    if not isinstance(checksum, str) or hashlib.sha256(data).hexdigest() != checksum:
        raise EventDecodeError("snapshot checksum mismatch")
    if data[:-1] + b',"checksum":"' + checksum.encode() + b'"}' != raw:
        raise EventDecodeError("snapshot bytes are not in canonical form")
    if body.get("format") != SNAPSHOT_FORMAT or body.get("fold_version") != FOLD_VERSION:
        raise StaleSnapshot(f"snapshot at seq {seq} was written by another version")
    if body.get("run_id") != run_id or body.get("seq") != seq:
        raise EventDecodeError("snapshot belongs to another run or position")
    try:
        state = RunState.from_json(body["state"])
    except (KeyError, TypeError, ValueError) as exc:
        raise EventDecodeError(f"snapshot state is malformed: {exc}") from None
    if state.last_seq != seq or state.last_hash != body["head_hash"]:
        raise EventDecodeError("snapshot state disagrees with its position")
    return Snapshot(run_id=run_id, seq=seq, head_hash=body["head_hash"], state=state)
