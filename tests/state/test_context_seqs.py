"""`ContextSeqs` behaves as the immutable list of its seqs, however its views share storage."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.state import ContextSeqs

_ops = st.lists(st.tuples(st.integers(0, 5), st.integers(1, 50)), max_size=30)


def _views(start: list[int], ops: list[tuple[int, int]]) -> list[tuple[ContextSeqs, list[int]]]:
    """Views appended from earlier ones (some from older views: a branching fold)."""
    views = [(ContextSeqs(start), list(start))]
    for back, seq in ops:
        view, items = views[max(0, len(views) - 1 - back)]
        views.append((view.appended(seq), [*items, seq]))
    return views


@settings(max_examples=200)
@given(st.lists(st.integers(1, 50), max_size=5), _ops, st.data())
def test_every_view_reads_as_its_list(
    start: list[int], ops: list[tuple[int, int]], data: st.DataObject
) -> None:
    views = _views(start, ops)
    for view, items in views:
        assert list(view) == items and len(view) == len(items) and view == items
        for seq in range(0, 52):
            assert (seq in view) == (seq in items)
        for i in range(-len(items) - 1, len(items) + 1):
            if -len(items) <= i < len(items):
                assert view[i] == items[i]
        a = data.draw(st.none() | st.integers(-8, 8))
        b = data.draw(st.none() | st.integers(-8, 8))
        c = data.draw(st.none() | st.integers(-3, 3).filter(lambda x: x != 0))
        assert view[a:b:c] == items[a:b:c]
        n = data.draw(st.integers(0, len(items)))
        assert view.since(n) == items[n:]


@settings(max_examples=200)
@given(st.lists(st.integers(1, 50), max_size=5), _ops)
def test_extends_is_true_for_a_prefix_it_grew_from(
    start: list[int], ops: list[tuple[int, int]]
) -> None:
    views = _views(start, ops)
    for older, old_items in views:
        for newer, new_items in views:
            if new_items[: len(old_items)] == old_items:
                assert newer.extends(older)
            elif len(old_items) > len(new_items):
                assert not newer.extends(older)


def test_extends_sees_a_compaction() -> None:
    seqs = ContextSeqs([1, 2, 3, 4]).appended(5)
    compacted = ContextSeqs([1, 2, 9])
    assert not compacted.extends(seqs)
    assert not ContextSeqs([1, 2, 9, 10, 11, 12]).extends(seqs)
    assert ContextSeqs([1, 2, 3, 4, 5, 6]).extends(seqs)
    assert seqs.extends(ContextSeqs())
