"""Large tool outputs as artifacts: the context gets a head and a handle, the model reads on.

An artifact is the tool result event itself: stored once, in the journal, under the same
checksum and hash chain as every event, and addressed by its event id (`RUN_ID:SEQ`).
`read_artifact` reads a slice of it back, verified.
"""

from __future__ import annotations

from typing import Any

from ..events import EventDecodeError, Visibility, parse_event_id
from ..journal import Store
from ..journal._integrity import verify_row
from ..tools import Tool, ToolContext, ToolRetry, tool

__all__ = [
    "ARTIFACT_TOOLS", "MAX_READ_CHARS", "RESULT_TYPES", "read_artifact", "source_visibility",
]  # fmt: skip

MAX_READ_CHARS = 16_000
"""Characters one `read_artifact` call returns at most: a slice must not flood the context."""

RESULT_TYPES = ("tool.completed", "tool.failed", "tool.unknown")


@tool(name="read_artifact", idempotent=True, max_output_chars=MAX_READ_CHARS)
async def read_artifact(
    handle: str, offset: int = 0, length: int = 8_000, *, ctx: ToolContext
) -> str:
    """Read part of a tool output that was too long to show in full.

    Args:
        handle: The handle given where the output was cut (RUN_ID:SEQ).
        offset: The first character to read (0-based).
        length: How many characters to read (at most 16000).
    """
    try:
        run_id, seq = parse_event_id(handle.strip())
    except ValueError:
        raise ToolRetry(f"{handle!r} is not an artifact handle (RUN_ID:SEQ)") from None
    if run_id != ctx.run_id:
        raise ToolRetry(f"{handle!r} belongs to another run")
    if ctx.store is None:
        raise ToolRetry("artifacts cannot be read here (no store)")
    if offset < 0 or length < 1:
        raise ToolRetry("offset must be 0 or more and length at least 1")
    output, _ = await _artifact(ctx.store, run_id, seq, handle)
    return output[offset : offset + min(length, MAX_READ_CHARS)]


async def _artifact(store: Store, run_id: str, seq: int, handle: str) -> tuple[str, Visibility]:
    """The output of the result event at `seq` and its audience, verified."""
    key = (id(store), run_id, seq)
    if _last and _last[0] == key:
        return _last[1], _last[2]
    rows = await store.read_rows_at(run_id, [seq])
    if not rows:
        raise ToolRetry(f"there is no artifact {handle!r}")
    try:
        event = verify_row(rows[0])
    except EventDecodeError as exc:
        # Damage is never served as data.
        raise ToolRetry(f"artifact {handle!r} fails verification: {exc}") from None
    if event.type not in RESULT_TYPES:
        raise ToolRetry(f"{handle!r} is not a tool output")
    output = str(event.payload["output"])
    # A committed event never changes, and an agent reads an artifact slice by slice:
    # keep the last one verified rather than decode megabytes for every slice.
    _last[:] = [key, output, event.visibility]
    return output, event.visibility


async def source_visibility(store: Store, run_id: str, handle: str) -> Visibility:
    """The audience of a `read_artifact` result: that of the output it read a slice of, so
    an `always_hidden` output never reaches an operator through a read of it."""
    try:
        seq = parse_event_id(handle.strip())[1]
        return (await _artifact(store, run_id, seq, handle))[1]
    except (ValueError, ToolRetry):
        return "always_hidden"  # nothing was read; if in doubt, the most private


_last: list[Any] = []


ARTIFACT_TOOLS: dict[str, Tool] = {read_artifact.name: read_artifact}
