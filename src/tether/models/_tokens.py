"""Token estimates for models without a tokenizer: deliberately on the high side.

Budgets reserve against these estimates and compaction plans with them, so an estimate
below the provider's count would let a call overspend or overflow. Characters per token
alone is not safe: small models' tokenizers split every digit and most punctuation
(measured against llama.cpp with Gemma 3: JSON and numbers ran 45% over a 3-chars rule).
So words count one token per three letters, and every digit and symbol counts as one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache

from ._base import Message, ToolSpec

LETTERS_PER_TOKEN = 3
MESSAGE_OVERHEAD = 16
"""Role markers and separators each chat format adds per message (13 measured on Gemma)."""

_WORDS = re.compile(r"[^\W\d_]+")
_SHAPE = bytes(0x61 if _WORDS.fullmatch(chr(i)) else 0x20 for i in range(256))
"""Latin-1 letters (as the regex sees them) to `a`, every other byte to a space."""


@lru_cache(maxsize=16_384)
def estimate_text_tokens(text: str) -> int:
    # Cached: a context is re-counted every turn and strings keep their hash.
    try:
        # The regex's counts, in C and without a string per word (8x faster on a 1 KB
        # tool result, which every step counts once): Latin-1 covers ASCII and the
        # runway line's separators.
        shape = text.encode("latin-1").translate(_SHAPE)
    except UnicodeEncodeError:
        found = _WORDS.findall(text)
        words = len(found)
        letters = len("".join(found))
    else:
        letters = shape.count(b"a")
        words = shape.count(b" a") + (shape[:1] == b"a")
    # Letters in runs of up to three per token; every other non-space character alone.
    others = len(text) - letters - text.count(" ") - text.count("\n")
    return words + max(0, letters - words * LETTERS_PER_TOKEN) // LETTERS_PER_TOKEN + max(0, others)


def estimate_tokens(messages: Sequence[Message], tools: tuple[ToolSpec, ...] = ()) -> int:
    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD + estimate_text_tokens(message.content)
        for call in message.tool_calls:
            total += MESSAGE_OVERHEAD + estimate_text_tokens(call.name + call.arguments)
    for tool in tools:
        total += MESSAGE_OVERHEAD + estimate_text_tokens(
            tool.name + tool.description + json.dumps(tool.parameters, separators=(",", ":"))
        )
    return total
