"""A sealed event, the record that sealing (`tether.events`) and decoding
(`_events_decode`) both build: here, below both, so neither has to import the other."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from ._canonical import canonical_json
from ._envelope import V2_HEAD
from ._envelope_v3 import LINK_HEX, pack_v3, unpack_v3

Visibility = Literal["visible", "user_hidden", "always_hidden"]
VISIBILITIES: tuple[Visibility, ...] = get_args(Visibility)


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
