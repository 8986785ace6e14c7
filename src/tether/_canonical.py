"""Canonical JSON: the one byte encoding checksums are computed over.

Sorted keys, no whitespace, UTF-8 as is (no `\\u` escapes), no NaN or Infinity. The
envelope encodes every event with it, so the encoder is called directly: `json.dumps`
and `JSONEncoder.encode` rebuild the C encoder and its options on every call.
"""

from __future__ import annotations

import json
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

__all__ = ["canonical_json", "canonical_text", "json_str"]

_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
"""The reference: what the fast path below must always agree with (and its fallback)."""

json_str = encode_basestring
"""A `str` as canonical JSON text (quoted, escaped as `ensure_ascii=False` does)."""

_FAST = (
    None
    if c_make_encoder is None
    else c_make_encoder(
        None, _ENCODER.default, encode_basestring, None, ":", ",", True, False, False
    )
)
"""The C encoder with `_ENCODER`'s options and no cycle check (a cycle recurses until
RecursionError, and is then encoded again by `_ENCODER`, which names it)."""


def canonical_text(value: Any) -> str:
    """`value` as canonical JSON text."""
    if _FAST is not None:
        try:
            return "".join(_FAST(value, 0))
        except RecursionError:
            pass  # a cycle (ValueError from the checked encoder) or a value nested too deep
    return _ENCODER.encode(value)


def canonical_json(value: Any) -> bytes:
    """The one byte encoding that checksums are computed over."""
    return canonical_text(value).encode()
