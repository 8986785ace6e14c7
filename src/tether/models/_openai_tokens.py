"""Token counts for `OpenAIModel`: tiktoken when the model's encoding loads offline, a
server's own `/tokenize` (`_server_tokens`), else the conservative estimate (`_tokens`).

Each text is counted on its own, with the chat format's per-message overhead added, so
the sum is an upper bound of what the server counts for the whole request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ._base import Message, ToolSpec
from ._tokens import MESSAGE_OVERHEAD

__all__ = ["count_or_none", "count_with_encoding", "encoding_for"]

TIKTOKEN_LOAD_TIMEOUT = 3.0
"""Seconds to wait for tiktoken to load an encoding before using the estimate instead."""


_encodings: dict[str, Any] = {}
"""Encoding name -> tiktoken Encoding, or None when it could not be loaded (not retried)."""
_encodings_lock = threading.Lock()


def _load_encoding(encoding_name: str) -> Any:
    """tiktoken's encoding, loaded in a daemon thread so a download attempt can never hang us.

    tiktoken fetches encodings from the internet on first use and caches them (in
    TIKTOKEN_CACHE_DIR, or a temp dir); without network and cache this fails or stalls."""
    import tiktoken

    result: list[Any] = []

    def load() -> None:
        try:
            result.append(tiktoken.get_encoding(encoding_name))
        except BaseException:  # any failure, including the network's, means "no encoding"
            result.append(None)

    thread = threading.Thread(target=load, name=f"tiktoken-{encoding_name}", daemon=True)
    thread.start()
    thread.join(TIKTOKEN_LOAD_TIMEOUT)
    return result[0] if result else None


def encoding_for(model: str) -> Any:
    try:
        import tiktoken
    except ImportError:
        return None
    try:
        encoding_name = tiktoken.encoding_name_for_model(model)
    except KeyError:  # not an OpenAI model: its tokenizer is unknown
        return None
    with _encodings_lock:
        if encoding_name not in _encodings:
            try:
                _encodings[encoding_name] = _load_encoding(encoding_name)
            except Exception:
                _encodings[encoding_name] = None
        return _encodings[encoding_name]


def count_with_encoding(
    encoding: Any, messages: Sequence[Message], tools: tuple[ToolSpec, ...]
) -> int:
    def n(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))

    return _count_with(n, messages, tools)


class _Uncounted(Exception):
    """Internal: the server could not count one of the texts."""


def count_or_none(
    count: Callable[[str], int | None], messages: Sequence[Message], tools: tuple[ToolSpec, ...]
) -> int | None:
    def n(text: str) -> int:
        got = count(text)
        if got is None:
            raise _Uncounted
        return got

    try:
        return _count_with(n, messages, tools)
    except _Uncounted:
        return None


def _count_with(
    n: Callable[[str], int], messages: Sequence[Message], tools: tuple[ToolSpec, ...]
) -> int:
    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD + n(message.content)
        for call in message.tool_calls:
            total += MESSAGE_OVERHEAD + n(call.name) + n(call.arguments)
    for tool in tools:
        total += MESSAGE_OVERHEAD + n(
            tool.name + tool.description + json.dumps(tool.parameters, separators=(",", ":"))
        )
    return total
