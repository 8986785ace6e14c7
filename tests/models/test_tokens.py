"""The token estimate's Latin-1 fast path counts exactly what the word regex counts."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.models._tokens import LETTERS_PER_TOKEN, estimate_text_tokens

_WORDS = re.compile(r"[^\W\d_]+")


def reference(text: str) -> int:
    """The estimate as first written: one regex match per word."""
    words = _WORDS.findall(text)
    letters = sum(len(w) for w in words)
    others = len(text) - letters - text.count(" ") - text.count("\n")
    return (
        len(words)
        + max(0, letters - len(words) * LETTERS_PER_TOKEN) // LETTERS_PER_TOKEN
        + max(0, others)
    )


@settings(max_examples=500)
@given(st.text(alphabet=st.characters(max_codepoint=255)))
def test_latin1_fast_path_matches_the_regex(text: str) -> None:
    assert estimate_text_tokens.__wrapped__(text) == reference(text)


@settings(max_examples=300)
@given(st.text())
def test_any_text_matches_the_regex(text: str) -> None:
    assert estimate_text_tokens.__wrapped__(text) == reference(text)


EDGES = ["", " ", "a", "_a_", "abc1def", "x\ny z", "é", "naïve café", "日本語", "a" * 10,
         "x² ½ ª º µ ß ÿ × ÷", "step 3 · tokens 1.2k · ⚠"]  # fmt: skip


def test_edges() -> None:
    for text in EDGES:
        assert estimate_text_tokens.__wrapped__(text) == reference(text), text


def test_a_tools_spec_is_built_once() -> None:
    """Every model request offers the specs: one object per tool, not one per request."""
    from tether import tool

    @tool
    def fetch(i: int) -> str:
        """Fetch a page."""
        return str(i)

    assert fetch.spec is fetch.spec
    assert fetch.spec.name == "fetch" and fetch.spec.parameters is fetch.parameters
    assert fetch.is_sync
