"""A request's messages as a read-only view over the context cache's append-only lists.

A run waiting on its model holds its request, and so the request's messages. Were they a
fresh tuple per step (as long as the whole context), every young garbage collection while
runs wait would follow one reference per message per waiting run: with 100 runs live that
made the collector cost 6x what it costs one run alone. A view is a handful of references
whatever the context's length, and it is built in O(1) instead of copying the context.

It behaves as the tuple it replaces: iteration, `len`, indexing, slicing (to a tuple),
`in`, `index`, `count`, `+` with a tuple, and it equals (and hashes as) the tuple of the
same messages. It stays valid because what it views is never changed, only extended.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain, islice
from typing import Any, overload

from ._base import Message

__all__ = ["MessageView"]


class MessageView(Sequence[Message]):
    """Messages `parts[0][start:stop] + parts[1][start:stop] + …`, read-only.

    Each part is `(items, start, stop)`; whoever builds a view promises never to change
    `items[start:stop]` afterwards (appending past `stop` is fine).
    """

    __slots__ = ("_len", "_parts")

    def __init__(self, *parts: tuple[Sequence[Message], int, int]) -> None:
        kept = tuple(p for p in parts if p[2] > p[1])
        self._parts = kept
        self._len = sum(stop - start for _, start, stop in kept)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Message]:
        return chain.from_iterable(islice(items, start, stop) for items, start, stop in self._parts)

    @overload
    def __getitem__(self, index: int) -> Message: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[Message, ...]: ...

    def __getitem__(self, index: int | slice) -> Message | tuple[Message, ...]:
        if isinstance(index, slice):
            return self._slice(index)
        i = index.__index__()
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError("message index out of range")
        for items, start, stop in self._parts:
            if i < stop - start:
                return items[start + i]
            i -= stop - start
        raise AssertionError("unreachable: the parts' lengths add up to the view's")

    def _slice(self, index: slice) -> tuple[Message, ...]:
        """O(length of the slice), not of the view: readers take the new messages with
        `messages[seen:]` per turn."""
        start, stop, step = index.indices(self._len)
        if step != 1:
            return tuple(self)[index]
        got: list[Message] = []
        offset = 0
        for items, first, last in self._parts:
            n = last - first
            lo, hi = max(start - offset, 0), min(stop - offset, n)
            if lo < hi:
                got += items[first + lo : first + hi]
            offset += n
            if offset >= stop:
                break
        return tuple(got)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MessageView | tuple):
            return len(self) == len(other) and tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __add__(self, other: object) -> tuple[Message, ...]:
        if isinstance(other, MessageView | tuple):
            return (*self, *other)
        return NotImplemented

    def __radd__(self, other: object) -> tuple[Message, ...]:
        if isinstance(other, tuple):
            return (*other, *self)
        return NotImplemented

    def __repr__(self) -> str:
        return f"MessageView({tuple(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle (and copy) the messages only, not the lists the view reads from.
        return (_from_tuple, (tuple(self),))


def _from_tuple(messages: tuple[Message, ...]) -> MessageView:
    return MessageView((messages, 0, len(messages)))
