"""In-memory store: the reference semantics of the Store contract, for tests and demos."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .._clock import Clock, SystemClock
from .._redact import remember_stored_secrets
from ..errors import LeaseHeld, LeaseLost, RunNotFound, UsageError
from ..events import Event
from ..state import RunStatus
from ._base import (
    DEFAULT_QUEUE,
    RUNNABLE_STATUSES,
    Claim,
    Lease,
    RunRecord,
    RunSummary,
    StoredRow,
    TokenRecord,
    check_continues,
    row_of,
)
from ._index import RowQuery, row_matches, sort_key


@dataclass
class _Run:
    record: RunRecord
    rows: list[StoredRow] = field(default_factory=list)
    snapshots: dict[int, bytes] = field(default_factory=dict)
    queue: str | None = None


class MemoryStore:
    """Keeps everything in dicts; bytes are stored exactly so corruption tests can poke them."""

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.url = "memory://"
        self._clock = clock or SystemClock()
        self._runs: dict[str, _Run] = {}
        self._ledger_tables: object | None = None
        self._secrets: set[str] = set()
        self._tokens: dict[str, TokenRecord] = {}
        self._doctor: dict[str, Any] | None = None

    async def record_doctor(self, result: dict[str, Any]) -> None:
        """Keep the last `doctor` result for the console."""
        self._doctor = dict(result)

    async def last_doctor(self) -> dict[str, Any] | None:
        return self._doctor

    async def store_secrets(self, values: Sequence[str]) -> None:
        """Recorded like the other stores' (see `_secrets`); readers share this process."""
        self._secrets.update(values)
        remember_stored_secrets(values)

    def _run(self, run_id: str) -> _Run:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFound(run_id) from None

    async def create_run(
        self,
        first: Event,
        *,
        agent: str,
        tenant: str | None,
        parent_run_id: str | None,
        summary: RunSummary,
        created_at: str | None = None,
    ) -> None:
        if first.run_id in self._runs:
            raise UsageError(f"run {first.run_id!r} already exists")
        record = RunRecord(
            run_id=first.run_id,
            agent=agent,
            tenant=tenant,
            parent_run_id=parent_run_id,
            created_at=created_at or first.ts,
            head_seq=first.seq,
            head_hash=first.checksum,
            lease_owner=None,
            lease_epoch=0,
            lease_expires_at=None,
            summary=summary,
        )
        self._runs[first.run_id] = _Run(record=record, rows=[row_of(first)])

    async def get_run(self, run_id: str) -> RunRecord:
        return self._run(run_id).record

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        limit: int = 100,
        agent: str | None = None,
        tenant: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[RunRecord]:
        records = [
            r.record for r in self._runs.values()
            if (status is None or r.record.summary.status == status)
            and (agent is None or r.record.agent == agent)
            and (tenant is None or r.record.tenant == tenant)
            and (since is None or r.record.created_at >= since)
            and (until is None or r.record.created_at < until)
        ]  # fmt: skip
        records.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return records[:limit]

    async def acquire_lease(
        self, run_id: str, *, owner: str, ttl_s: float, takeover_from: str | None = None
    ) -> Lease:
        run = self._run(run_id)
        rec = run.record
        now = self._clock.time()
        if (
            rec.lease_owner is not None
            and rec.lease_owner not in (owner, takeover_from)
            and rec.lease_expires_at is not None
            and rec.lease_expires_at > now
        ):
            raise LeaseHeld(f"run {run_id} is leased by {rec.lease_owner} until it expires")
        lease = Lease(run_id=run_id, owner=owner, epoch=rec.lease_epoch + 1, expires_at=now + ttl_s)
        run.record = replace(
            rec, lease_owner=owner, lease_epoch=lease.epoch, lease_expires_at=lease.expires_at
        )
        return lease

    def _check_lease(self, lease: Lease) -> _Run:
        run = self._run(lease.run_id)
        if run.record.lease_epoch != lease.epoch or run.record.lease_owner != lease.owner:
            raise LeaseLost(
                f"run {lease.run_id}: lease epoch {lease.epoch} is stale "
                f"(current {run.record.lease_epoch})"
            )
        return run

    async def renew_lease(self, lease: Lease, *, ttl_s: float) -> Lease:
        run = self._check_lease(lease)
        renewed = replace(lease, expires_at=self._clock.time() + ttl_s)
        run.record = replace(run.record, lease_expires_at=renewed.expires_at)
        return renewed

    async def release_lease(self, lease: Lease) -> None:
        run = self._runs.get(lease.run_id)
        if run and run.record.lease_epoch == lease.epoch and run.record.lease_owner == lease.owner:
            run.record = replace(run.record, lease_owner=None, lease_expires_at=None)
            if run.queue is not None and run.record.summary.status in RUNNABLE_STATUSES:
                self._wake()

    async def append(
        self,
        lease: Lease,
        events: Sequence[Event],
        *,
        summary: RunSummary,
        also: Callable[[], None] | None = None,
        sync: bool = False,
    ) -> None:
        if not events:
            if also is not None:
                raise UsageError("append(also=...) needs at least one event")
            return
        run = self._check_lease(lease)
        check_continues(run.record.head_seq, run.record.head_hash, events, lease.run_id)
        if also is not None:
            if self._ledger_tables is None:
                raise UsageError("append(also=...) runs only this store's own ledger work")
            also()  # one event loop thread and no await before the write: atomic with it
        run.rows.extend(row_of(e) for e in events)
        run.record = replace(
            run.record, head_seq=events[-1].seq, head_hash=events[-1].checksum, summary=summary
        )

    async def read_rows(
        self, run_id: str, *, after_seq: int = 0, until_seq: int | None = None
    ) -> list[StoredRow]:
        run = self._runs.get(run_id)
        rows = run.rows if run is not None else []
        return [r for r in rows if r.seq > after_seq and (until_seq is None or r.seq <= until_seq)]

    async def read_rows_at(self, run_id: str, seqs: Sequence[int]) -> list[StoredRow]:
        wanted = set(seqs)
        run = self._runs.get(run_id)
        return [r for r in run.rows if r.seq in wanted] if run is not None else []

    async def query_rows(self, query: RowQuery) -> list[StoredRow]:
        runs = [self._runs[query.run_id]] if query.run_id in self._runs else []
        if query.run_id is None:
            runs = list(self._runs.values())
        found = [r for run in runs for r in run.rows if row_matches(r, query)]
        found.sort(key=sort_key(query), reverse=query.newest_first)
        return found if query.limit is None else found[: query.limit]

    async def put_snapshot(
        self, lease: Lease, run_id: str, seq: int, raw: bytes, *, keep: int
    ) -> None:
        run = self._check_lease(lease)
        run.snapshots[seq] = raw
        for old in sorted(run.snapshots)[:-keep]:
            del run.snapshots[old]

    async def read_snapshots(self, run_id: str) -> list[tuple[int, bytes]]:
        run = self._runs.get(run_id)
        snaps = run.snapshots if run is not None else {}
        return [(seq, snaps[seq]) for seq in sorted(snaps, reverse=True)]

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
        run = self._check_lease(lease)
        check_continues(keep_through, head_hash, then, lease.run_id)
        if then and summary is None:
            raise UsageError("truncate(then=...) needs the run's new summary")
        added = [row_of(e) for e in then]  # before anything changes: all or nothing
        run.rows = [r for r in run.rows if r.seq <= keep_through] + added
        run.snapshots = {s: b for s, b in run.snapshots.items() if s <= keep_through}
        run.record = replace(run.record, head_seq=keep_through, head_hash=head_hash)
        if then and summary is not None:
            run.record = replace(
                run.record, head_seq=then[-1].seq, head_hash=then[-1].checksum, summary=summary
            )

    def joins_ledger(self, tables: object) -> bool:
        """Whether `append(also=...)` can run these ledger tables' work atomically."""
        return tables is not None and tables is self._ledger_tables

    def ledger_tables(self) -> object:
        """The budget ledger's tables for this store (one per store object)."""
        if self._ledger_tables is None:
            from ..budget._tables import MemoryLedgerTables

            self._ledger_tables = MemoryLedgerTables()
        return self._ledger_tables

    async def run_ids(self) -> list[str]:
        return list(self._runs)

    # -- console access tokens (TokenStore) -------------------------------------------

    async def put_token(self, record: TokenRecord) -> None:
        if record.token_id in self._tokens:
            raise UsageError(f"token {record.token_id!r} already exists")
        self._tokens[record.token_id] = record

    async def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        return next((t for t in self._tokens.values() if t.token_hash == token_hash), None)

    async def list_tokens(self) -> list[TokenRecord]:
        return sorted(self._tokens.values(), key=lambda t: (t.created_at, t.token_id))

    async def revoke_token(self, token_id: str, *, at: str) -> bool:
        found = self._tokens.get(token_id)
        if found is None or found.revoked_at is not None:
            return False
        self._tokens[token_id] = replace(found, revoked_at=at)
        return True

    async def close(self) -> None:
        return None

    # -- the work queue ---------------------------------------------------------------

    _work: asyncio.Event | None = None
    _work_loop: asyncio.AbstractEventLoop | None = None

    def _wake(self) -> None:
        if self._work is not None:
            self._work.set()

    async def enqueue(self, run_id: str, *, queue: str = DEFAULT_QUEUE) -> None:
        self._run(run_id).queue = queue
        self._wake()

    def _claimable(self, run: _Run, now: float, takeover_from: Sequence[str]) -> bool:
        rec = run.record
        return (
            rec.lease_owner is None
            or rec.lease_expires_at is None
            or rec.lease_expires_at <= now
            or rec.lease_owner in takeover_from
        )

    async def claim_runnable(
        self,
        *,
        owner: str,
        ttl_s: float,
        limit: int = 1,
        queue: str = DEFAULT_QUEUE,
        agents: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        takeover_from: Sequence[str] = (),
    ) -> list[Claim]:
        now = self._clock.time()
        candidates = sorted(
            (
                run
                for run in self._runs.values()
                if run.queue == queue
                and run.record.summary.status in RUNNABLE_STATUSES
                and (agents is None or run.record.agent in agents)
                and run.record.run_id not in exclude
                and self._claimable(run, now, takeover_from)
            ),
            key=lambda run: (run.record.created_at, run.record.run_id),
        )
        claims: list[Claim] = []
        for run in candidates[: max(0, limit)]:
            rec = run.record
            lease = Lease(
                run_id=rec.run_id, owner=owner, epoch=rec.lease_epoch + 1, expires_at=now + ttl_s
            )
            claims.append(
                Claim(
                    lease=lease,
                    previous_owner=rec.lease_owner,
                    previous_expires_at=rec.lease_expires_at,
                )
            )
            run.record = replace(
                rec, lease_owner=owner, lease_epoch=lease.epoch, lease_expires_at=lease.expires_at
            )
        return claims

    async def queue_leases(self, *, queue: str = DEFAULT_QUEUE, limit: int = 1000) -> list[Lease]:
        leases = [
            Lease(
                run_id=run.record.run_id,
                owner=run.record.lease_owner,
                epoch=run.record.lease_epoch,
                expires_at=run.record.lease_expires_at or 0.0,
            )
            for run in self._runs.values()
            if run.queue == queue
            and run.record.summary.status in RUNNABLE_STATUSES
            and run.record.lease_owner is not None
        ]
        return sorted(leases, key=lambda lease: (lease.expires_at, lease.run_id))[:limit]

    async def wait_for_work(self, *, queue: str = DEFAULT_QUEUE, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        if self._work is None or self._work_loop is not loop:
            self._work, self._work_loop = asyncio.Event(), loop
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), timeout=max(0.0, timeout_s))
        self._work.clear()

    # Test hooks: reach under the contract to damage stored bytes.
    def _pokerow_of(self, run_id: str, seq: int, raw: bytes | None) -> None:
        run = self._run(run_id)
        if raw is None:
            run.rows = [r for r in run.rows if r.seq != seq]
        else:
            run.rows = [replace(r, raw=raw) if r.seq == seq else r for r in run.rows]
