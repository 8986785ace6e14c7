"""Same call, different data; and results that have gone stale.

A tool declared idempotent or read-only should answer the same call the same way within a
run. When it does not (a retry after a timeout returned other numbers, a source changed
under the agent), the agent would otherwise reason over two versions of the truth without
knowing: `SameCallDifferentData` journals both in a `health.inconsistent` event and tells
the model the results differ, which one is newer and what changed.

`Freshness` tracks results of tools that declare `fresh_for_s`: once one is older than
that, its message in the model's context is marked stale (at context-build time; the
journal is not rewritten), the runway line counts the stale results, the model is told
once (in the result it reads next) and a `health.stale` event records it.
"""

from __future__ import annotations

import difflib
import hashlib
import heapq
import json
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from ..events import Event
from ._base import CONTINUE, AfterTool, Health, Policy, Verdict

__all__ = ["Freshness", "SameCallDifferentData", "call_key"]

MAX_KEYS = 1_000
"""Distinct (tool, arguments) pairs remembered: a bound on memory, not on correctness
for any realistic run (the oldest are forgotten first)."""

CLIP = 2_000


@lru_cache(maxsize=1_024)
def call_key(name: str, arguments: str) -> str:
    """One spelling of a call (`name` and its arguments as sorted JSON), so equal calls
    compare equal; cached, since each call is keyed by several policies."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
        arguments = json.dumps(value, sort_keys=True, separators=(",", ":"))
    except ValueError:
        pass
    return f"{name}\x00{arguments}"


_LAST: list[str] = ["", hashlib.sha256(b"").hexdigest()]


def _digest(text: str) -> str:
    """sha256 of a result's text. A result is digested by several policies, as it is
    checked and again as it is journaled: the last one is remembered (pure, so shared)."""
    last = _LAST
    if text is last[0] or text == last[0]:
        return last[1]
    digest = hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()
    last[0], last[1] = text, digest
    return digest


def _clip(text: str) -> str:
    return text if len(text) <= CLIP else text[:CLIP] + f"… [{len(text) - CLIP} more chars]"


def _changes(before: str, after: str, limit: int = 12) -> str:
    """The lines that changed, at most `limit` of them."""
    lines = [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    shown = "\n".join(lines[:limit])
    return shown + (f"\n… {len(lines) - limit} more changed lines" if len(lines) > limit else "")


_Seen = tuple[int, str, str, str]
"""(seq, ts, digest, clipped output) of a call's last result. A plain tuple of atomic
values, which the collector stops tracking: a run keeps up to `MAX_KEYS` of them, and
with many runs in a process, objects it must traverse made every collection dearer."""


class _Calls:
    """call_id → (tool, arguments) of calls whose results have not come yet."""

    def __init__(self) -> None:
        self.open: dict[str, str] = {}

    def observe(self, event: Event) -> str | None:
        """The key of the call this result answers (None for other events)."""
        p = event.payload
        if event.type == "tool.requested":
            self.open[p["call_id"]] = call_key(p["name"], str(p.get("arguments", "")))
            return None
        if event.type in ("tool.completed", "tool.failed", "tool.unknown"):
            return self.open.pop(p["call_id"], None)
        return None


class SameCallDifferentData(Policy):
    """Flags a read-only or idempotent call whose result differs from the same earlier call."""

    name = "consistency"
    window = 200
    observes = frozenset({"tool.requested", "tool.completed", "tool.failed", "tool.unknown"})

    def __init__(self) -> None:
        self.calls = _Calls()
        self.seen: OrderedDict[str, _Seen] = OrderedDict()

    def observe(self, event: Event) -> None:
        key = self.calls.observe(event)
        if key is None or event.type != "tool.completed":
            return
        output = str(event.payload.get("output", ""))
        self.seen[key] = (event.seq, event.ts, _digest(output), _clip(output))
        self.seen.move_to_end(key)
        while len(self.seen) > MAX_KEYS:
            self.seen.popitem(last=False)

    async def after_tool(self, result: AfterTool) -> Verdict:
        tool = result.tool
        if tool is None or not (tool.idempotent or tool.read_only) or not result.outcome.ok:
            return CONTINUE
        earlier = self.seen.get(call_key(result.name, result.arguments))
        output = result.outcome.output
        if earlier is None or earlier[2] == _digest(output):
            return CONTINUE
        earlier_seq, earlier_ts, _, earlier_output = earlier
        changed = _changes(earlier_output, _clip(output))
        return Verdict.tell(
            f"⚠ Inconsistent data: this result of {result.name} differs from the result of "
            f"the same call at {earlier_ts} (event {earlier_seq}). This one is newer. What "
            f"changed:\n{changed}\nDo not mix the two: say which you rely on and why.",
            health=Health(
                kind="inconsistent",
                message=f"{result.name} returned different data for the same arguments",
                evidence={
                    "tool": result.name,
                    "arguments": result.arguments,
                    "earlier_seq": earlier_seq,
                    "earlier_ts": earlier_ts,
                    "earlier_output": earlier_output,
                    "newer_output": _clip(output),
                    "changes": changed,
                },
            ),
        )


class Freshness(Policy):
    """Marks the results that have outlived their declared freshness, in the context the
    model sees and in its runway line, and tells it once (`health.stale`).

    An index of fresh results ordered by when they go stale (a heap) is checked before
    each model call and after each result: O(1) when nothing crossed its bound, O(log n)
    per result that did. The journal is never rewritten: the mark is added to the
    result's message when the context is built (see `ContextCache.mark`).
    """

    name = "freshness"
    window = 200
    observes = frozenset({"tool.completed", "health.stale"})

    def __init__(self) -> None:
        self.live: list[tuple[float, int, float, str]] = []
        """Heap of (stale at, seq, fresh for, tool) of results still fresh."""
        self.stale: dict[int, str] = {}
        """Seq → its mark, for results gone stale (newest MAX_KEYS)."""
        self.due: dict[int, str] = {}
        """Stale results the agent has not been told about yet (seq → label)."""
        self.unmarked: dict[int, str] = {}
        """Marks not yet handed to the loop's context."""

    def observe(self, event: Event) -> None:
        kind = event.type
        if kind == "tool.completed":
            fresh_for = event.payload.get("fresh_for_s")
            if fresh_for is None:
                return
            at = datetime.fromisoformat(event.ts).timestamp()
            fresh = float(fresh_for)
            heapq.heappush(self.live, (at + fresh, event.seq, fresh, str(event.payload["name"])))
            if len(self.live) > MAX_KEYS:
                self.live.remove(min(self.live, key=lambda r: r[1]))
                heapq.heapify(self.live)
        elif kind == "health.stale":
            for seq in event.payload.get("seqs", []):
                self.due.pop(seq, None)

    def expire(self, now: float) -> None:
        """Move the results whose freshness has run out from `live` to `stale`."""
        live = self.live
        while live and live[0][0] < now:
            _, seq, fresh, name = heapq.heappop(live)
            mark = (
                f"⚠ STALE: this result of {name} is older than its freshness "
                f"({fresh:g}s); call again before relying on it."
            )
            self.stale[seq] = mark
            self.unmarked[seq] = mark
            self.due[seq] = f"{name} (event {seq}, fresh for {fresh:g}s)"
            while len(self.stale) > MAX_KEYS:
                self.stale.pop(next(iter(self.stale)))

    def context_marks(self, now: float) -> Mapping[int, str]:
        self.expire(now)
        if not self.unmarked:
            return {}
        marks, self.unmarked = self.unmarked, {}
        return marks

    def checkpoint(self) -> Any:
        return {"live": [list(r) for r in self.live], "stale": list(self.stale),
                "due": self.due}  # fmt: skip

    def restore(self, state: Any) -> None:
        self.live = [(float(a), int(b), float(c), str(d)) for a, b, c, d in state["live"]]
        heapq.heapify(self.live)
        # Marks live in the context the loop builds, not in the journal: give them again.
        self.stale = {int(seq): "⚠ STALE: this result is older than its freshness; call "
                      "again before relying on it." for seq in state["stale"]}  # fmt: skip
        self.unmarked = dict(self.stale)
        self.due = {int(k): str(v) for k, v in state["due"].items()}

    async def after_tool(self, result: AfterTool) -> Verdict:
        tool = result.tool
        data: dict[str, Any] = (
            {"fresh_for_s": tool.fresh_for_s}
            if tool is not None and tool.fresh_for_s is not None and result.outcome.ok
            else {}
        )
        if not self.live and not self.due and not self.stale:
            return Verdict(data=data) if data else CONTINUE
        self.expire(result.now)
        if self.stale:
            data["runway"] = f" · {len(self.stale)} stale"
        if not self.due:
            return Verdict(data=data) if data else CONTINUE
        due = list(self.due.items())
        listed = "; ".join(label for _, label in due[:5])
        more = f" and {len(due) - 5} more" if len(due) > 5 else ""
        return Verdict.tell(
            f"⚠ Stale (marked in your context): {listed}{more}. Call again before relying on them.",
            data=data,
            health=Health(
                kind="stale",
                message=f"{len(due)} result(s) outlived their freshness",
                evidence={"seqs": [seq for seq, _ in due], "results": [lb for _, lb in due]},
            ),
        )
