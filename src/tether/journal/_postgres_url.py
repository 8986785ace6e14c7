"""Store URLs of the PostgreSQL store: Tether's own options split from libpq's, and the
URL as it may be shown (without its password)."""

from __future__ import annotations

import re
from typing import Literal, NamedTuple
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ..errors import InvalidStoreURL

SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_OUR_OPTIONS = ("schema", "pool_min", "pool_max", "synchronous")


class PostgresURL(NamedTuple):
    """A store URL's parts: libpq's connection string and Tether's own options."""

    libpq: str
    schema: str | None
    pool_min: int
    pool_max: int
    synchronous: Literal["normal", "full"]
    """`full` (the default): every commit waits for the WAL flush. `normal`: only the
    commits at a sync boundary do, as on SQLite's default (see `_postgres_writes`)."""


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def parse_postgres_url(url: str) -> PostgresURL:
    """The parts of a store URL; InvalidStoreURL if it is bad."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgres", "postgresql"):
        raise InvalidStoreURL(f"bad store URL {redact(url)!r}: not postgresql://")
    ours: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _OUR_OPTIONS:
            ours[key] = value
        else:
            rest.append((key, value))
    schema = ours.get("schema") or None
    if schema is not None and not SCHEMA_NAME.fullmatch(schema):
        raise InvalidStoreURL(
            f"bad store URL {redact(url)!r}: schema must be lowercase letters, digits and _"
        )
    try:
        pool_min = int(ours.get("pool_min", "1"))
        pool_max = int(ours.get("pool_max", "10"))
    except ValueError:
        raise InvalidStoreURL(
            f"bad store URL {redact(url)!r}: pool_min and pool_max are numbers"
        ) from None
    if not 0 <= pool_min <= pool_max or pool_max < 1:
        raise InvalidStoreURL(f"bad store URL {redact(url)!r}: need 0 <= pool_min <= pool_max")
    synchronous = ours.get("synchronous", "full").lower()
    if synchronous not in ("normal", "full"):
        raise InvalidStoreURL(f"bad store URL {redact(url)!r}: synchronous must be normal or full")
    libpq = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(rest, quote_via=quote)))
    return PostgresURL(
        libpq, schema, pool_min, pool_max, "normal" if synchronous == "normal" else "full"
    )
