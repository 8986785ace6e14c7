"""The v2 event envelope: a compact body, raw digests, and nothing the row already binds.

Stored bytes: `0x02`, the previous event's SHA-256 (32 bytes), this event's SHA-256 (32
bytes), then a canonical JSON body with short keys. The checksum is SHA-256 over
`v2_salt(run_id, seq) + prev + body`: the run id and seq live in the row (its key), not in
the blob, yet a row carried to another run or seq no longer verifies. What v1 spelled out
is either derived or omitted when it is the default:

    t  type                 (always)
    ts timestamp            microseconds since the epoch, or the text when it is not in
                            the journal's own ISO format (then it round-trips as given)
    c  correlation id       the part after the run id (`/c2`), or `C` with the whole id
                            when it does not start with the run id
    k  causation id         the seq (an int) when it is `run_id:seq`, else `K`, the text
    w  visibility           omitted for `user_hidden` (a constant of the format, not the
                            per-type default, which may change)
    a  actor                omitted for `runtime`
    p  payload              omitted when empty
    u  usage                `[input_tokens, output_tokens, cost_usd]`, omitted when None

A body decodes only if encoding its fields again gives the same bytes, so every event has
exactly one stored form (as in v1, whose bytes must be canonical JSON).

v3 (`_envelope_v3`, what new events are sealed in) keeps this body and its rules; it stores
the body deflated and only 8 bytes of the previous checksum.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ._canonical import canonical_json, canonical_text, json_str

if TYPE_CHECKING:
    from .events import Usage

V2_TAG = b"\x02"
V2_HEAD = 65
"""Bytes before the JSON body: the tag and the two digests."""

_EPOCH_NAIVE = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
_KEYS = frozenset({"t", "ts", "c", "C", "k", "K", "w", "a", "p", "u"})


def v2_salt(run_id: str, seq: int) -> bytes:
    """The hashed prefix that binds an event to its run and place."""
    return f"tether.v2\0{run_id}\0{seq}\0".encode()


@functools.lru_cache(maxsize=256)
def ts_micros(ts: str) -> int | None:
    """`ts` as microseconds since the epoch, when it is in the journal's ISO format exactly
    (`2026-01-02T03:04:05.123456Z`) and so can be rebuilt from the number."""
    if len(ts) != 27 or ts[-1] != "Z" or ts[10] != "T":
        return None
    text = ts[:-1]
    try:
        d = datetime.fromisoformat(text)
    except ValueError:
        return None
    # fromisoformat reads other forms too (week dates, offsets): only the one that
    # formats back to the same text is this format.
    if d.tzinfo is not None or d.isoformat(timespec="microseconds") != text:
        return None
    return (d - _EPOCH_NAIVE) // _US


@functools.lru_cache(maxsize=256)
def micros_ts(us: int) -> str:
    return (_EPOCH_NAIVE + timedelta(microseconds=us)).isoformat(timespec="microseconds") + "Z"


def v2_body(
    run_id: str,
    type_: str,
    ts: str,
    correlation_id: str | None,
    causation_id: str | None,
    visibility: str,
    actor: str,
    payload: dict[str, Any],
    usage: Usage | None,
) -> dict[str, Any]:
    """The JSON body of a v2 event (see the module docstring)."""
    body: dict[str, Any] = {"t": type_}
    us = ts_micros(ts)
    body["ts"] = ts if us is None else us
    if correlation_id is not None:
        if correlation_id.startswith(run_id) and len(correlation_id) > len(run_id):
            body["c"] = correlation_id[len(run_id) :]
        else:
            body["C"] = correlation_id
    if causation_id is not None:
        seq = _own_seq(run_id, causation_id)
        if seq is None:
            body["K"] = causation_id
        else:
            body["k"] = seq
    if visibility != "user_hidden":
        body["w"] = visibility
    if actor != "runtime":
        body["a"] = actor
    if payload:
        body["p"] = payload
    if usage is not None:
        body["u"] = [usage.input_tokens, usage.output_tokens, usage.cost_usd]
    return body


def v2_body_bytes(
    run_id: str,
    type_: str,
    ts: str,
    correlation_id: str | None,
    causation_id: str | None,
    visibility: str,
    actor: str,
    payload: dict[str, Any],
    usage: Usage | None,
) -> bytes:
    """`canonical_json(v2_body(...))`, written out directly: the body's keys are few and
    known, so only the payload goes through the JSON encoder (once, with no dict built
    around it to sort). Any field of an unexpected type takes the general path, so the
    bytes are always those."""
    if not (type(type_) is str and type(actor) is str and type(visibility) is str):
        return canonical_json(
            v2_body(
                run_id, type_, ts, correlation_id, causation_id, visibility, actor, payload,
                usage,
            )
        )  # fmt: skip
    # Keys in sorted order: C K a c k p t ts u w.
    parts = ["{"]
    corr = None
    if correlation_id is not None:
        if correlation_id.startswith(run_id) and len(correlation_id) > len(run_id):
            corr = correlation_id[len(run_id) :]
        else:
            parts.append('"C":' + json_str(correlation_id) + ",")
    seq = None
    if causation_id is not None:
        seq = _own_seq(run_id, causation_id)
        if seq is None:
            parts.append('"K":' + json_str(causation_id) + ",")
    if actor != "runtime":
        parts.append('"a":' + json_str(actor) + ",")
    if corr is not None:
        parts.append('"c":' + json_str(corr) + ",")
    if seq is not None:
        parts.append(f'"k":{seq},')
    if payload:
        parts.append('"p":' + canonical_text(payload) + ",")
    parts.append('"t":' + json_str(type_))
    us = ts_micros(ts)
    parts.append(f',"ts":{us}' if us is not None else ',"ts":' + json_str(ts))
    if usage is not None:
        parts.append(
            ',"u":' + canonical_text([usage.input_tokens, usage.output_tokens, usage.cost_usd])
        )
    if visibility != "user_hidden":
        parts.append(',"w":' + json_str(visibility))
    parts.append("}")
    return "".join(parts).encode()


def _own_seq(run_id: str, event_id: str) -> int | None:
    head, sep, tail = event_id.rpartition(":")
    if head != run_id or not sep or not tail.isdigit() or tail != str(int(tail)):
        return None
    seq = int(tail)
    return seq if seq >= 1 else None


def v2_fields(run_id: str, body: Any) -> dict[str, Any]:
    """The envelope fields of a parsed v2 body; TypeError/ValueError/KeyError when malformed
    (the caller still checks the body is canonical by encoding these fields again)."""
    if not isinstance(body, dict) or not set(body) <= _KEYS or "t" not in body:
        raise ValueError("envelope has missing or unknown fields")
    ts = body["ts"]
    if isinstance(ts, int) and not isinstance(ts, bool):
        ts = micros_ts(ts)
    elif not isinstance(ts, str):
        raise TypeError("ts is neither a number nor a string")
    corr: Any = body.get("C")
    if "c" in body:
        if not isinstance(body["c"], str):
            raise TypeError("correlation is not a string")
        corr = run_id + body["c"]
    cause: Any = body.get("K")
    if "k" in body:
        k = body["k"]
        if not isinstance(k, int) or isinstance(k, bool):
            raise TypeError("causation is not a seq")
        cause = f"{run_id}:{k}"
    usage = body.get("u")
    if usage is not None and (not isinstance(usage, list) or len(usage) != 3):
        raise TypeError("usage is not [input, output, cost]")
    return {
        "type": body["t"],
        "ts": ts,
        "correlation_id": corr,
        "causation_id": cause,
        "visibility": body.get("w", "user_hidden"),
        "actor": body.get("a", "runtime"),
        "payload": body.get("p", {}),
        "usage": usage,
    }
