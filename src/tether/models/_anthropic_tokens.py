"""Token counts from Anthropic's count-tokens endpoint (`messages.count_tokens`).

Opt-in (`AnthropicModel(count_tokens_api=True)`): each count is a request, free but rate
limited, and `count_tokens` is synchronous, so it runs on the SDK's synchronous client.
The context asks once per new message (it caches counts) and this module caches each text,
so a long run asks about each message once. Every text is counted as a request of its
own, so each count carries one request's overhead: the sum stays an upper bound of the
count for the whole request, which is what budgets and compaction need. An endpoint that
refuses (no key, unknown model) is remembered and the estimate used from then on.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from ._base import Message, ToolSpec

log = logging.getLogger("tether.models")

CACHE_SIZE = 16_384


class AnthropicTokenCounter:
    """Counts with the API; None when it cannot (the caller estimates instead)."""

    def __init__(
        self,
        sdk: ModuleType,
        model: str,
        *,
        api_key: str | None,
        base_url: str | None,
        http_client: Any = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._sdk = sdk
        self._model = model
        self._options: dict[str, Any] = {
            "api_key": api_key, "base_url": base_url, "max_retries": 0, "timeout": timeout_s,
        }  # fmt: skip
        if http_client is not None:
            self._options["http_client"] = http_client
        self._client: Any = None
        self._cache: OrderedDict[str, int] = OrderedDict()
        self.available: bool | None = None

    def count(self, messages: Sequence[Message], tools: tuple[ToolSpec, ...]) -> int | None:
        from . import _base

        if self.available is False or not _base.ALLOW_MODEL_REQUESTS:
            return None
        total = 0
        for message in messages:
            for text in (message.content, *(c.name + c.arguments for c in message.tool_calls)):
                got = self._text(text)
                if got is None:
                    return None
                total += got
        if tools:
            got = self._tools(tools)
            if got is None:
                return None
            total += got
        return total

    def _text(self, text: str) -> int | None:
        key = "t" + text
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        return self._ask(key, [{"role": "user", "content": text or "."}], None)

    def _tools(self, tools: tuple[ToolSpec, ...]) -> int | None:
        wire = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in tools
        ]
        key = "s" + repr(wire)
        if key in self._cache:
            return self._cache[key]
        return self._ask(key, [{"role": "user", "content": "."}], wire)

    def _ask(self, key: str, messages: list[dict[str, Any]], tools: Any) -> int | None:
        sdk = self._sdk
        try:
            if self._client is None:
                self._client = sdk.Anthropic(**self._options)
            kwargs: dict[str, Any] = {"model": self._model, "messages": messages}
            if tools:
                kwargs["tools"] = tools
            n = int(self._client.messages.count_tokens(**kwargs).input_tokens)
        except (sdk.AuthenticationError, sdk.PermissionDeniedError, sdk.NotFoundError) as exc:
            self.available = False
            log.info("the count-tokens API refused (%s): using the conservative estimate", exc)
            return None
        except (sdk.APIError, TypeError, ValueError, AttributeError):
            return None  # transient or odd: estimate this once
        self.available = True
        self._cache[key] = n
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return n

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
