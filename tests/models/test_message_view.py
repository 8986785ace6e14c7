"""`MessageView` behaves as the tuple of its messages (it replaced one in `ModelRequest`)."""

from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.models import Message, MessageView, ModelRequest

POOL = [Message(role="user", content=f"m{i}") for i in range(6)]
"""Few distinct messages, so that `in`, `index` and `count` meet repeats."""

messages = st.lists(st.sampled_from(POOL), max_size=6)


@st.composite
def views(draw: st.DrawFn) -> tuple[MessageView, tuple[Message, ...]]:
    """A view over random parts (some empty, some sharing a list) and the tuple it means."""
    shared = draw(messages)
    parts, expected = [], []
    for _ in range(draw(st.integers(0, 4))):
        items = shared if draw(st.booleans()) else draw(messages)
        start = draw(st.integers(0, len(items)))
        stop = draw(st.integers(start, len(items)))
        parts.append((items, start, stop))
        expected += items[start:stop]
    return MessageView(*parts), tuple(expected)


indexes = st.integers(-8, 8)
slices = st.builds(
    slice, st.none() | indexes, st.none() | indexes, st.none() | st.sampled_from([-2, -1, 1, 2, 3])
)


@given(views(), indexes, slices)
def test_a_view_reads_as_its_tuple(
    pair: tuple[MessageView, tuple[Message, ...]], i: int, s: slice
) -> None:
    view, expected = pair
    assert len(view) == len(expected)
    assert list(view) == list(expected)
    assert list(reversed(view)) == list(reversed(expected))
    assert view[s] == expected[s]
    assert isinstance(view[s], tuple)
    if -len(expected) <= i < len(expected):
        assert view[i] is expected[i]
    else:
        with pytest.raises(IndexError):
            view[i]
    for m in POOL:
        assert (m in view) == (m in expected)
        assert view.count(m) == expected.count(m)
        if m in expected:
            assert view.index(m) == expected.index(m)


@given(views(), views())
def test_a_view_equals_and_hashes_as_its_tuple(
    a: tuple[MessageView, tuple[Message, ...]], b: tuple[MessageView, tuple[Message, ...]]
) -> None:
    (view, expected), (other, other_expected) = a, b
    assert view == expected and expected == view
    assert (view != expected) is False
    assert hash(view) == hash(expected)
    assert (view == other) == (expected == other_expected)
    assert (view == other_expected) == (expected == other_expected)
    assert (other_expected != view) == (other_expected != expected)
    assert view + other_expected == expected + other_expected
    assert other_expected + view == other_expected + expected
    assert view + other == expected + other_expected


@given(views())
def test_a_view_pickles_and_copies_as_its_messages(
    pair: tuple[MessageView, tuple[Message, ...]],
) -> None:
    view, expected = pair
    for again in (pickle.loads(pickle.dumps(view)), copy.copy(view), copy.deepcopy(view)):
        assert again == expected


def test_a_view_is_not_a_list_nor_mutable() -> None:
    view = MessageView((POOL, 0, 2))
    assert view != list(POOL[:2])  # as a tuple is not equal to a list
    with pytest.raises(TypeError):
        view[0] = POOL[3]  # type: ignore[index]
    with pytest.raises(TypeError):
        view + list(POOL)  # type: ignore[operator]


def test_requests_with_a_view_or_a_tuple_of_the_same_messages_are_equal() -> None:
    view = ModelRequest(messages=MessageView((POOL, 1, 4)))
    plain = ModelRequest(messages=tuple(POOL[1:4]))
    assert view == plain and plain == view
    assert hash(view) == hash(plain)
    assert view != ModelRequest(messages=tuple(POOL[1:3]))


def test_a_slice_reads_only_what_it_returns() -> None:
    """Readers take each turn's new messages with `messages[seen:]`: it must cost the new
    messages, not a copy of the whole context (the view never iterates its lists)."""

    class Whole(list[Message]):
        def __iter__(self):  # type: ignore[no-untyped-def]
            raise AssertionError("the whole list was read")

    items = Whole(POOL)
    view = MessageView((items, 0, 6), (items, 1, 6))
    assert view[9:] == tuple(POOL[4:])
    assert view[2:8] == (*POOL[2:6], *POOL[1:3])
