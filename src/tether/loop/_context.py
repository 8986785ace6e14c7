"""The model's context: journal events turned into chat messages, and compaction plans.

State keeps the context as journal seqs; this module materialises them (with a cache so
the hot path reads nothing it wrote itself), adds the pinned facts after the mission and
the task, and plans compactions that cut only on whole call/result pairs and never touch
the mission, the task or pinned facts. The summary itself is written in `_summary.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from ..errors import CorruptionError
from ..events import Event, EventDecodeError, Visibility
from ..journal import Store
from ..journal._integrity import verify_row
from ..models import Message, ToolCall, estimate_tokens
from ..models._messages import MessageView
from ..state import ContextSeqs, RunState
from ._pins import facts_message

__all__ = ["SUMMARY_HEADER", "ContextCache", "is_summary", "message_of", "plan_compaction"]


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
        # The head enters the context; the rest stays in the journal as an artifact.
        output = output[:limit] + (
            f"\n[... {len(output) - limit:,} more characters of {len(output):,} not shown; "
            f'read them with read_artifact(handle="{event.id}", offset={limit})]'
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

    def __init__(
        self,
        store: Store,
        run_id: str,
        count: Callable[[tuple[Message, ...]], int] = estimate_tokens,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.count = count
        """The model's own token count (its tokenizer where it has one), one message at a
        time: each message is counted once, when it arrives, never again per turn."""
        self.messages: dict[int, Message] = {}
        self.tokens: dict[int, int] = {}
        self.visibility: dict[int, Visibility] = {}
        self.scale = 1.0
        """Provider's count over ours for the last call (at least 1): corrects estimates."""
        self._seqs = ContextSeqs()
        """The context the lists below were built for."""
        self._final: list[Message] = []
        """Messages up to and including the last assistant turn, results in call order.
        Like `_tail`, only ever extended or replaced: built requests view both."""
        self._tail: list[Message] = []
        """Messages after the last assistant turn (its results, in arrival order)."""
        self._total = 0
        self._facts_key: object = None
        self._facts_cached = (Message(role="user", content=""), 0)
        self.marks: dict[int, str] = {}
        """Notes added to messages after they were journaled (a result gone stale)."""

    def add(self, events: Iterable[Event], state: RunState) -> None:
        for event in events:
            if event.type in CONTEXT_TYPES:
                message = message_of(event)
                self.messages[event.seq] = message
                self.tokens[event.seq] = self.count((message,))
                self.visibility[event.seq] = event.visibility

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

    def mark(self, seq: int, note: str) -> None:
        """Add `note` to the message of `seq` in every later build (once; the journal keeps
        the event as it was). O(context) once per mark, never per step."""
        old = self.messages.get(seq)
        if old is None or seq in self.marks:
            return
        new = dataclasses.replace(old, content=f"{old.content}\n{note}")
        self.marks[seq] = note
        self.messages[seq] = new
        delta = self.count((new,)) - self.tokens[seq]
        self.tokens[seq] += delta
        # Copied, never changed in place: requests already built view these lists.
        for name in ("_final", "_tail"):
            built: list[Message] = getattr(self, name)
            for i, message in enumerate(built):
                if message is old:
                    setattr(self, name, [*built[:i], new, *built[i + 1 :]])
                    self._total += delta
                    return

    def _sync(self, state: RunState) -> None:
        context, seen = state.context, self._seqs
        if context is seen:
            return
        n = len(seen)
        if not context.extends(seen):  # a compaction (or a first build): start over once
            self._final, self._tail, self._total, n = [], [], 0, 0
        for seq in context.since(n):
            message = self.messages[seq]
            self._total += self.tokens[seq]
            if message.role == "assistant":
                self._final.extend(_in_call_order(self._tail, self._final))
                self._final.append(message)
                self._tail = []
            else:
                self._tail.append(message)
        self._seqs = context

    def build(self, state: RunState) -> MessageView:
        """The context in order: the pinned messages, the pinned facts, the summary and the
        recent turns, tool results sorted to follow their calls' order.

        A view, built in O(1) and a few references for the garbage collector whatever the
        context's length, over lists this cache only ever extends or replaces.
        """
        self._sync(state)
        facts = self._facts(state)
        final, tail = self._final, _in_call_order(self._tail, self._final)
        nf, nt = len(final), len(tail)
        if facts is None:
            return MessageView((final, 0, nf), (tail, 0, nt))
        at, pinned = _pinned_prefix(state), ((facts[0],), 0, 1)
        if at <= nf:
            return MessageView((final, 0, at), pinned, (final, at, nf), (tail, 0, nt))
        return MessageView((final, 0, nf), (tail, 0, at - nf), pinned, (tail, at - nf, nt))

    def token_count(self, state: RunState) -> int:
        """Tokens of the context: our estimate, scaled by what the provider last counted."""
        return int(self.estimate(state) * self.scale)

    def estimate(self, state: RunState) -> int:
        """Our own estimate of the context's tokens, kept up to date as messages come."""
        self._sync(state)
        facts = self._facts(state)
        return self._total + (facts[1] if facts is not None else 0)

    def turn_width(self, state: RunState) -> int:
        """How many tools the last assistant turn called (at least 1)."""
        self._sync(state)
        last = self._final[-1] if self._final else None
        return max(1, len(last.tool_calls)) if last is not None else 1

    def raw_tokens(self, seqs: Iterable[int]) -> int:
        return sum(self.tokens[s] for s in seqs)

    def calibrate(self, estimated: int, counted: int) -> None:
        """Correct later estimates by the provider's count of the last request.

        Only upwards, and at most threefold: an estimate below the provider's count lets a
        request overflow, one above it only compacts a little early.
        """
        if estimated > 0 and counted > 0:
            self.scale = min(3.0, max(1.0, counted / estimated))

    def _facts(self, state: RunState) -> tuple[Message, int] | None:
        if not state.facts:
            return None
        key = state.facts
        if self._facts_key is not key:
            message = facts_message(state.facts)
            self._facts_cached = (message, self.count((message,)))
            self._facts_key = key
        return self._facts_cached

    def forget(self, keep: Iterable[int]) -> None:
        keep_set = set(keep)
        for seq in [s for s in self.messages if s not in keep_set]:
            del self.messages[seq]
            self.marks.pop(seq, None)
            self.tokens.pop(seq, None)
            self.visibility.pop(seq, None)


def _pinned_prefix(state: RunState) -> int:
    """How many messages at the start of the context are pinned (mission, task)."""
    pinned = state.pinned
    n = 0
    for seq in state.context:
        if seq not in pinned:
            break
        n += 1
    return n


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
    state: RunState,
    cache: ContextCache,
    *,
    budget_tokens: int,
    summary_tokens: int,
    keep_recent: int = 1,
) -> list[int]:
    """Seqs of old turns (and the previous summary) to fold into a new summary so that the
    context, with a summary of `summary_tokens`, fits `budget_tokens`.

    Cuts whole turns only (an assistant message with all its tool results), oldest first
    and only as many as the budget needs, keeps the last `keep_recent` turns (the model has
    yet to answer the last one) and every pinned event. Keeping more by default would fail
    a run whose last two turns of wide parallel calls do not fit the window together. The
    previous summary is always folded in, so there is one summary, and it converges.
    """
    pinned = set(state.pinned)
    turns: list[list[int]] = []
    summary: list[int] = []
    for seq in state.context:
        if seq in pinned:
            continue
        message = cache.messages[seq]
        if not turns and not summary and is_summary(message):
            summary.append(seq)
        elif message.role == "assistant" or not turns:
            turns.append([seq])
        else:
            turns[-1].append(seq)
    scale = cache.scale
    total = cache.token_count(state) - int(cache.raw_tokens(summary) * scale)
    total += summary_tokens
    removed: list[int] = list(summary)
    for turn in turns[: max(0, len(turns) - keep_recent)]:
        if total <= budget_tokens:
            break
        removed.extend(turn)
        total -= int(cache.raw_tokens(turn) * scale)
    return removed if len(removed) > len(summary) else []


SUMMARY_HEADER = "Summary of earlier work (older turns were compacted; the journal keeps them):"


def is_summary(message: Message) -> bool:
    return message.role == "user" and message.content.startswith(SUMMARY_HEADER)
