"""Token counts from the model server's own tokenizer (llama.cpp's `POST /tokenize`).

Why: a local model's tokenizer is nothing like tiktoken's, and the conservative estimate
runs well over it on prose (the budget then reserves too much and compaction starts
early). llama.cpp answers `/tokenize` in about a millisecond beside its chat endpoint, so
`count_tokens` (synchronous, called once per new message: the context caches counts)
asks it. Each text is counted once (an LRU cache). A server without the endpoint is
remembered after the first failure and the estimate is used from then on; a transient
failure falls back to the estimate for that count only.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

log = logging.getLogger("tether.models")

CACHE_SIZE = 16_384
TIMEOUT_S = 2.0


def tokenize_url(base_url: str) -> str:
    """`http://host:port/v1` (the chat API) -> `http://host:port/tokenize`."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    return f"{root}/tokenize"


class ServerTokenizer:
    """Counts text with the server's `/tokenize`; None when it cannot (use an estimate)."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout_s: float = TIMEOUT_S):
        self.url = tokenize_url(base_url)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout_s = timeout_s
        self._client: Any = None
        self._cache: OrderedDict[str, int] = OrderedDict()
        self.available: bool | None = None
        """None until the first answer; False once the server showed it has no tokenizer."""

    def count(self, text: str) -> int | None:
        if self.available is False:
            return None
        if not text:
            return 0
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            return cached
        from . import _base

        if not _base.ALLOW_MODEL_REQUESTS:
            return None  # tests that forbid real requests count with the estimate
        n = self._ask(text)
        if n is None:
            return None
        self._cache[text] = n
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return n

    def _ask(self, text: str) -> int | None:
        import httpx

        try:
            if self._client is None:
                self._client = httpx.Client(timeout=self._timeout_s, headers=self._headers)
            response = self._client.post(self.url, json={"content": text, "add_special": False})
            if response.status_code in (404, 405, 501):
                self._give_up(f"HTTP {response.status_code}")
                return None
            response.raise_for_status()
            tokens = response.json()["tokens"]
            if not isinstance(tokens, list):
                raise TypeError("tokens is not a list")
        except httpx.HTTPError as exc:
            if self.available is None:
                self._give_up(type(exc).__name__)
            return None
        except (ValueError, KeyError, TypeError) as exc:
            self._give_up(f"unexpected answer ({exc})")
            return None
        self.available = True
        return len(tokens)

    def _give_up(self, why: str) -> None:
        self.available = False
        log.info("%s cannot count tokens (%s): using the conservative estimate", self.url, why)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
