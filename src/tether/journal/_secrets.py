"""Registered secrets recorded in the store, so every later reader redacts them.

`register_secret` in the process that drives a run (or `TETHER_SECRETS` in its
environment) would otherwise protect only that process: a `tether show` elsewhere, without
the value, would print it. So a writer records its secrets in the store before it journals
anything that may hold them, and every store loads the recorded values into the reading
process's redactor when it is opened (and again when more were recorded, see
`COUNT_SECRETS`). The values sit in the same file as the journal,
which holds them unredacted for the audit view anyway: nothing is exposed that was not.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

from .._redact import process_secrets, secrets_generation

SECRET_KEY_PREFIX = "secret "
"""`tether_meta` keys of recorded secrets: the prefix and the value's SHA-256."""
SECRET_KEYS_END = "secret!"
"""Just past every key with the prefix (`!` follows the space): a range the key's index
serves, where LIKE would scan."""
COUNT_SECRETS = "SELECT count(*) FROM tether_meta WHERE key >= {m} AND key < {m}"
"""How many secrets a store records: a reader that has seen fewer loads them again, after
every read of events, so a long-lived reader (the console) redacts the secrets of runs
written after it opened the store. Secrets are only ever added, and a writer records
them before the events that may hold them, so a count read after the events is enough."""

_kept: weakref.WeakKeyDictionary[Any, tuple[int, frozenset[str]]] = weakref.WeakKeyDictionary()


def secret_key(value: str) -> str:
    return SECRET_KEY_PREFIX + hashlib.sha256(value.encode()).hexdigest()


def damaged_secrets(rows: list[Any]) -> str | None:
    """What is wrong with the recorded secrets `(key, value)`, or None.

    Each key holds its value's SHA-256, so a damaged value is found: readers would no
    longer redact the real secret, and views would show it."""
    bad = [
        str(key)[len(SECRET_KEY_PREFIX) :][:12]
        for key, value in rows
        if not isinstance(value, str) or secret_key(value) != key
    ]
    if not bad:
        return None
    return (
        f"{len(bad)} recorded secret{'s' if len(bad) > 1 else ''} damaged "
        f"(sha256 {', '.join(bad[:3])}…): views no longer redact "
        f"{'them' if len(bad) > 1 else 'it'}; register the secret again in a process that "
        "writes to this store, or restore the store from a backup"
    )


async def keep_secrets(store: Any) -> None:
    """Record in `store` the secrets this process knows and it does not; constant time
    when nothing was registered since the last call."""
    save = getattr(store, "store_secrets", None)
    if save is None:
        return
    generation = secrets_generation()
    kept = _kept.get(store)
    if kept is not None and kept[0] == generation:
        return
    values = process_secrets()
    new = values - (kept[1] if kept is not None else frozenset())
    if new:
        await save(sorted(new))
    _kept[store] = (generation, values | (kept[1] if kept is not None else frozenset()))
