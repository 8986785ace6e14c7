"""The model's context: journal events turned into chat messages, and compaction.

State keeps the context as journal seqs; this module materialises them (with a cache so
the hot path reads nothing it wrote itself) and plans compactions that cut only on whole
call/result pairs and never touch the mission, the task or pinned facts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import CorruptionError
from ..events import Event, EventDecodeError
from ..journal import Store
from ..journal._integrity import verify_row
from ..models import Message, ToolCall, estimate_tokens
from ..state import RunState

__all__ = ["ContextCache", "message_of", "plan_compaction", "summarize"]


def message_of(event: Event) -> Message:
    p = event.payload
    kind = event.type
    if kind == "message.system":
        return Message(role="system", content=p["content"])
    if kind == "message.user":
        return Message(role="user", content=p["content"])
    if kind == "model.completed":
        return Message(
            role="assistant",
            content=p["content"],
            tool_calls=tuple(ToolCall(**c) for c in p["tool_calls"]),
        )
    if kind in ("tool.completed", "tool.failed", "tool.unknown"):
        return Message(
            role="tool",
            content=result_content(event),
            tool_call_id=p["call_id"],
            name=p["name"],
        )
    if kind == "context.compacted":
        return Message(role="user", content=p["content"])
    raise CorruptionError(event.run_id, event.seq, f"{kind} cannot be part of the model context")


def result_content(event: Event) -> str:
    """What the model sees of a tool result: the output, clipped if long, then the runway."""
    p = event.payload
    output: str = p["output"]
    limit: int = p.get("max_chars", 8_000)
    if len(output) > limit:
        output = (
            output[:limit] + f"\n[... {len(output) - limit} more characters truncated; "
            f"the full output is journaled as event {event.id}]"
        )
    status = p.get("status")
    return f"{output}\n{status}" if status else output


CONTEXT_TYPES = frozenset(
    {"message.system", "message.user", "model.completed", "tool.completed", "tool.failed",
     "tool.unknown", "context.compacted"}
)  # fmt: skip
"""Event types the fold puts into the model context."""


class ContextCache:
    """Messages by seq for one run; filled by the writer as it appends.

    The hot path is incremental: `build` and `token_count` cost O(new messages) per turn,
    not O(context), until a compaction (or a fresh load) rebuilds them once.
    """

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.messages: dict[int, Message] = {}
        self.tokens: dict[int, int] = {}
        self._seqs: tuple[int, ...] = ()
        """The context the lists below were built for."""
        self._final: list[Message] = []
        """Messages up to and including the last assistant turn, results in call order."""
        self._tail: list[Message] = []
        """Messages after the last assistant turn (its results, in arrival order)."""
        self._total = 0

    def add(self, events: Iterable[Event], state: RunState) -> None:
        for event in events:
            if event.type in CONTEXT_TYPES:
                message = message_of(event)
                self.messages[event.seq] = message
                self.tokens[event.seq] = estimate_tokens((message,))

    async def load(self, state: RunState) -> None:
        """Read and verify whatever context events the cache does not hold yet."""
        missing = [seq for seq in state.context if seq not in self.messages]
        if not missing:
            return
        rows = await self.store.read_rows_at(self.run_id, missing)
        found = {}
        for row in rows:
            try:
                found[row.seq] = verify_row(row)
            except EventDecodeError as exc:
                raise CorruptionError(
                    self.run_id, row.seq, str(exc), repair="repair: tether fork"
                ) from None
        for seq in missing:
            if seq not in found:
                raise CorruptionError(self.run_id, seq, "a context event is missing")
        self.add(found.values(), state)

    def _sync(self, state: RunState) -> None:
        context, seen = state.context, self._seqs
        if context is seen:
            return
        n = len(seen)
        grew = len(context) >= n and (
            n == 0 or (context[n - 1] == seen[-1] and context[0] == seen[0])
        )
        if not grew:  # a compaction (or a first build): start over once
            self._final, self._tail, self._total, n = [], [], 0, 0
        for seq in context[n:]:
            message = self.messages[seq]
            self._total += self.tokens[seq]
            if message.role == "assistant":
                self._final.extend(_in_call_order(self._tail, self._final))
                self._final.append(message)
                self._tail = []
            else:
                self._tail.append(message)
        self._seqs = context

    def build(self, state: RunState) -> tuple[Message, ...]:
        """The context in order, tool results sorted to follow their calls' order."""
        self._sync(state)
        return (*self._final, *_in_call_order(self._tail, self._final))

    def token_count(self, state: RunState) -> int:
        self._sync(state)
        return self._total

    def forget(self, keep: Iterable[int]) -> None:
        keep_set = set(keep)
        for seq in [s for s in self.messages if s not in keep_set]:
            del self.messages[seq]
            self.tokens.pop(seq, None)


def _in_call_order(tail: list[Message], final: list[Message]) -> list[Message]:
    """The tail with its leading tool results in the order the last assistant called them."""
    if not tail or not final or final[-1].role != "assistant":
        return tail
    order = {c.id: i for i, c in enumerate(final[-1].tool_calls)}
    results = [m for m in tail if m.role == "tool"]
    if len(results) < 2:
        return tail
    others = [m for m in tail if m.role != "tool"]
    results.sort(key=lambda m: order.get(m.tool_call_id or "", len(order)))
    return results + others if tail[0].role == "tool" else tail


def plan_compaction(
    state: RunState, cache: ContextCache, *, budget_tokens: int, keep_recent: int = 2
) -> list[int]:
    """Seqs of old turns to replace by a summary so the context fits `budget_tokens`.

    Cuts whole turns only (an assistant message with all its tool results), oldest first,
    keeps the last `keep_recent` turns and every pinned event.
    """
    turns: list[list[int]] = []
    for seq in state.context:
        if seq in state.pinned:
            continue
        message = cache.messages[seq]
        if message.role == "assistant" or not turns:
            turns.append([seq])
        else:
            turns[-1].append(seq)
    total = cache.token_count(state)
    removed: list[int] = []
    for turn in turns[: max(0, len(turns) - keep_recent)]:
        if total <= budget_tokens:
            break
        removed.extend(turn)
        total -= sum(cache.tokens[s] for s in turn)
    return removed


SUMMARY_HEADER = "Summary of earlier work (older turns were compacted; the journal keeps them):"


def summarize(messages: Sequence[Message]) -> str:
    """An extractive summary of compacted turns: what was called and what came back.

    Deterministic and model-free, so compaction cannot fail for lack of room to summarise.
    """
    lines = [SUMMARY_HEADER]
    for message in messages:
        if message.role == "assistant":
            if message.content.strip():
                lines.append(f"- you said: {_clip(message.content, 200)}")
            for call in message.tool_calls:
                lines.append(f"- you called {call.name}({_clip(call.arguments, 120)})")
        elif message.role == "tool":
            first = message.content.split("\n[", 1)[0]
            lines.append(f"  -> {message.name}: {_clip(first, 160)}")
        elif message.role == "user" and message.content.startswith(SUMMARY_HEADER):
            lines.extend(message.content.splitlines()[1:])
    return "\n".join(lines)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
