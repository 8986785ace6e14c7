"""open_store(url): pick a backend from the URL scheme."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .._clock import Clock
from ..errors import InvalidStoreURL, StoreUnavailable, UsageError
from ._base import Store

DEFAULT_STORE_URL = "sqlite:///./tether.db"


def store_url_from_env(url: str | None = None) -> str:
    """An explicit URL, else `TETHER_STORE`, else the default file in the working folder.

    An empty URL is a mistake (an unset shell variable), never the default."""
    if url is not None and not url.strip():
        raise InvalidStoreURL("the store URL is empty: give --store URL or leave the option out")
    env = os.environ.get("TETHER_STORE")
    if env is not None and not env.strip() and url is None:
        raise InvalidStoreURL("TETHER_STORE is set but empty: unset it or give a store URL")
    return url or env or DEFAULT_STORE_URL


def open_store(url: str | None = None, *, clock: Clock | None = None, create: bool = True) -> Store:
    """Open the store at `url`: `sqlite:///path.db`, `memory://`,
    `postgresql://user@host:port/db[?schema=NAME]` (connected on first use).

    With `create` (for writers) a missing SQLite file is made; readers pass False and get
    a UsageError instead. A SQLite store this process cannot write is opened read-only,
    so every reader works on it; a write then raises StoreUnavailable.
    """
    url = store_url_from_env(url)
    scheme = url.partition("://")[0].lower()
    if scheme == "memory":
        from ._memory import MemoryStore

        return MemoryStore(clock=clock)
    if scheme == "sqlite":
        from ._sqlite import SQLiteStore, Synchronous

        if not url.startswith("sqlite:///"):
            raise InvalidStoreURL(
                f"bad store URL {url!r}: write sqlite:///relative/path.db or "
                "sqlite:////absolute/path.db"
            )
        parts = urlsplit(url)
        path = url[len("sqlite:///") :].split("?", 1)[0]
        if not path:
            raise InvalidStoreURL(f"bad store URL {url!r}: no file path after sqlite:///")
        options = parse_qs(parts.query)
        sync = options.pop("synchronous", ["normal"])[-1].lower()
        if sync not in ("normal", "full"):
            raise InvalidStoreURL(f"bad store URL {url!r}: synchronous must be normal or full")
        if options:
            raise InvalidStoreURL(f"bad store URL {url!r}: unknown option {sorted(options)[0]!r}")
        mode: Synchronous = "full" if sync == "full" else "normal"
        file = Path(path)
        writable = not file.exists() or (
            os.access(file, os.W_OK) and os.access(file.parent or Path("."), os.W_OK)
        )
        if writable:
            try:
                return SQLiteStore(file, synchronous=mode, clock=clock, create=create)
            except StoreUnavailable:
                if not file.is_file():
                    raise
        return SQLiteStore(file, synchronous=mode, clock=clock, read_only=True)
    if scheme in ("postgres", "postgresql"):
        try:
            from ._postgres import PostgresStore
        except ImportError as exc:
            raise UsageError(
                f"the PostgreSQL store needs psycopg ({exc}): "
                "pip install 'tether-runtime[postgres]'"
            ) from None
        return PostgresStore(url, clock=clock)
    raise InvalidStoreURL(
        f"unknown store URL {url!r}: use sqlite:///path.db (default {DEFAULT_STORE_URL}), "
        "postgresql://user@host/db or memory://"
    )
