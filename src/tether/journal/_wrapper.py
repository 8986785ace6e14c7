"""The base of stores that wrap another to change a few methods (fencing, telemetry, fault
injection, replayed crashes): everything they do not override is the inner store's."""

from __future__ import annotations

from typing import Any

from ._base import Store

__all__ = ["StoreWrapper"]


class StoreWrapper:
    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
