"""The store as one run driven by a worker sees it: fenced by the lease the worker claimed.

Why a wrapper: a worker that cannot renew its lease must stop writing before the lease
can expire, or a takeover would find two writers. The guard renews, gives up with a
margin, and refuses writes locally from then on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from ._clock import Clock
from .errors import LeaseLost, StoreError
from .events import Event
from .journal import Lease, RunSummary, Store
from .journal._wrapper import StoreWrapper

__all__ = ["LeaseGuard"]

log = logging.getLogger("tether.worker")


class LeaseGuard(StoreWrapper):
    """The store as one driven run sees it: under the lease its worker claimed.

    A watchdog (`watch`) renews the lease every third of its life; when renewal keeps
    failing it gives up `margin_s` before the lease could expire, and from then on every
    append, snapshot and cut is refused here, before it reaches the store. The loop's own
    acquire and renew calls are answered from the claimed lease, so it is never re-taken.
    """

    def __init__(
        self,
        inner: Store,
        lease: Lease,
        *,
        ttl_s: float,
        clock: Clock,
        retry_s: float | None = None,
    ) -> None:
        super().__init__(inner)
        self.lease = lease
        self.ttl_s = ttl_s
        self.margin_s = ttl_s / 4
        self.retry_s = retry_s if retry_s is not None else max(0.05, ttl_s / 15)
        self.clock = clock
        self.fenced: str | None = None
        self.released = False

    def _mine(self, lease: Lease) -> bool:
        return lease.run_id == self.lease.run_id and lease.owner == self.lease.owner

    def _check(self) -> None:
        if self.fenced is None and self.clock.time() > self.lease.expires_at - self.margin_s / 2:
            self.fenced = "the lease was not renewed in time"
        if self.fenced is not None:
            raise LeaseLost(f"run {self.lease.run_id}: {self.fenced}; this worker stopped writing")

    async def acquire_lease(
        self, run_id: str, *, owner: str, ttl_s: float, takeover_from: str | None = None
    ) -> Lease:
        if run_id == self.lease.run_id and owner == self.lease.owner:
            self._check()
            return self.lease
        return await self.inner.acquire_lease(
            run_id, owner=owner, ttl_s=ttl_s, takeover_from=takeover_from
        )

    async def renew_lease(self, lease: Lease, *, ttl_s: float) -> Lease:
        if self._mine(lease):
            self._check()
            return self.lease
        return await self.inner.renew_lease(lease, ttl_s=ttl_s)

    async def release_lease(self, lease: Lease) -> None:
        if self._mine(lease):
            self.released = True
            lease = self.lease
        await self.inner.release_lease(lease)

    async def append(
        self,
        lease: Lease,
        events: Sequence[Event],
        *,
        summary: RunSummary,
        also: Callable[[], None] | None = None,
        sync: bool = False,
    ) -> None:
        if self._mine(lease):
            self._check()
        await self.inner.append(lease, events, summary=summary, also=also, sync=sync)

    async def put_snapshot(
        self, lease: Lease, run_id: str, seq: int, raw: bytes, *, keep: int
    ) -> None:
        if self._mine(lease):
            self._check()
        await self.inner.put_snapshot(lease, run_id, seq, raw, keep=keep)

    async def truncate(
        self,
        lease: Lease,
        run_id: str,
        *,
        keep_through: int,
        head_hash: str,
        then: Sequence[Event] = (),
        summary: RunSummary | None = None,
    ) -> None:
        if self._mine(lease):
            self._check()
        await self.inner.truncate(
            lease, run_id, keep_through=keep_through, head_hash=head_hash, then=then,
            summary=summary,
        )  # fmt: skip

    async def watch(self) -> str | None:
        """Renew until released (None) or until it must give up (returns why)."""
        run_id = self.lease.run_id
        while not self.released:
            await asyncio.sleep(self.ttl_s / 3)
            deadline = self.lease.expires_at - self.margin_s
            failure: BaseException | None = None
            while not self.released:
                remaining = deadline - self.clock.time()
                if remaining <= 0:
                    self.fenced = (
                        f"could not renew the lease for {self.ttl_s - self.margin_s:.1f}s "
                        f"({failure}); stopped before it could expire"
                    )
                    return self.fenced
                try:
                    self.lease = await asyncio.wait_for(
                        self.inner.renew_lease(self.lease, ttl_s=self.ttl_s), timeout=remaining
                    )
                    if failure is not None:
                        log.info("renewed lease run=%s after %s", run_id, failure)
                    break
                except LeaseLost as exc:
                    self.fenced = f"the lease was taken over ({exc})"
                    return self.fenced
                except (StoreError, OSError, TimeoutError) as exc:
                    failure = exc if str(exc) else TimeoutError("renewal timed out")
                    log.warning(
                        "renewing lease run=%s failed (%s); retrying for %.1fs more",
                        run_id, failure, max(0.0, deadline - self.clock.time()),
                    )  # fmt: skip
                    await asyncio.sleep(min(self.retry_s, max(0.0, deadline - self.clock.time())))
        return None


# -- the worker -----------------------------------------------------------------------------
