"""Leases taken from outside a running loop: whose process is dead, and a brief lease for
a decision made about a run (an approval, new limits, an operator's pin)."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .._clock import Clock
from ..errors import LeaseHeld, UsageError
from ._base import Store
from ._journal import RunJournal

__all__ = ["BRIEF_LEASE_TTL_S", "brief_journal", "holder_is_dead"]

BRIEF_LEASE_TTL_S = 30.0
"""How long a decision's lease lasts if its process dies holding it (it is released as
soon as the decision is journaled, normally within milliseconds)."""


def holder_is_dead(owner: str) -> bool:
    """True only when `owner` is a worker on this host whose process no longer exists."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


@asynccontextmanager
async def brief_journal(
    store: Store,
    run_id: str,
    *,
    role: str,
    clock: Clock | None = None,
    ttl_s: float = BRIEF_LEASE_TTL_S,
) -> AsyncIterator[RunJournal]:
    """The run's journal under a short lease of this process's own, released on the way
    out. A dead holder's lease (same host) is taken over; a live one makes the run busy.

    The owner is `host:pid:ROLE`, like a worker id, so a resume can tell when this process
    has died holding it. A worker passes its own lease time as `ttl_s`: if it is killed
    mid-decision, the run must be free again as soon as its other runs are, not after
    the default."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{role}"
    holder = (await store.get_run(run_id)).lease_owner
    takeover = holder if holder and holder_is_dead(holder) else None
    try:
        lease = await store.acquire_lease(run_id, owner=owner, ttl_s=ttl_s, takeover_from=takeover)
    except LeaseHeld:
        raise UsageError(
            f"run {run_id} is busy (a worker holds it); try again in a moment"
        ) from None
    try:
        journal, _ = await RunJournal.open(store, lease, clock=clock)
        yield journal
    finally:
        await store.release_lease(lease)
