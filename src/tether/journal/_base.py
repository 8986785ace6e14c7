"""The Store port: durable I/O for journals, snapshots, run index and leases.

Backends only move bytes and enforce the append contract atomically (lease epoch,
expected next seq, expected predecessor hash). Sealing, verification, folding and
repair live above them (`_journal.py`, `_integrity.py`), written once for every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..errors import AppendConflict
from ..events import Event
from ..state import RunState, RunStatus
from ._index import AuditColumns, audit_columns

__all__ = [
    "DEFAULT_QUEUE",
    "RUNNABLE_STATUSES",
    "Claim",
    "Lease",
    "RunRecord",
    "RunSummary",
    "Store",
    "StoredRow",
    "TokenRecord",
    "TokenStore",
    "check_continues",
    "row_of",
    "summary_of",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class Lease:
    """The right to append to one run, fenced by a monotonically increasing epoch."""

    run_id: str
    owner: str
    epoch: int
    expires_at: float


DEFAULT_QUEUE = "default"
"""The work queue `tether submit` uses and `tether worker` serves unless told otherwise."""

RUNNABLE_STATUSES: tuple[RunStatus, ...] = ("queued", "running")
"""A run of a queue in one of these statuses, with no live lease, may be claimed."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Claim:
    """A run a worker claimed from a queue, and the lease (with a new epoch) it now holds."""

    lease: Lease
    previous_owner: str | None
    """The holder whose lease was taken over (it had expired, or its holder is dead)."""
    previous_expires_at: float | None
    """When that lease expired (or would have)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSummary:
    """Columns of the run index derived from the fold, refreshed with every append."""

    status: RunStatus
    steps: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    updated_at: str


def summary_of(state: RunState) -> RunSummary:
    return RunSummary(
        status=state.status,
        steps=state.steps,
        input_tokens=state.input_tokens,
        output_tokens=state.output_tokens,
        cost_usd=state.cost_usd,
        updated_at=state.updated_at,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class RunRecord:
    """One row of the run index: the queryable face of a journal."""

    run_id: str
    agent: str
    tenant: str | None
    parent_run_id: str | None
    created_at: str
    head_seq: int
    head_hash: str
    lease_owner: str | None
    lease_epoch: int
    lease_expires_at: float | None
    summary: RunSummary


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredRow:
    """An event as a backend returns it: the stored bytes and the indexed columns beside them.

    The columns are copies kept for queries; verification checks they agree with the bytes.
    """

    run_id: str
    seq: int
    type: str
    correlation_id: str | None
    raw: bytes
    audit: AuditColumns | None = None
    """Indexed copies of `ts`, `actor`, the tool name and `visibility` for audit queries;
    None when the backend keeps none (it then answers no audit query)."""


@runtime_checkable
class Store(Protocol):
    """What every backend (memory, SQLite, PostgreSQL) provides, with the same semantics."""

    url: str

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
        """Insert the run's index row and its first event atomically; UsageError if it exists.

        Durable against power loss (a run whose effects begin must not vanish).
        `created_at` is the listing time when it is not the first event's (a fork)."""
        ...

    async def get_run(self, run_id: str) -> RunRecord:
        """The run's index row; RunNotFound if there is none."""
        ...

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
        """Newest first; only runs with every given status, agent and tenant, created at or
        after `since` and before `until` (journal timestamps)."""
        ...

    async def acquire_lease(
        self, run_id: str, *, owner: str, ttl_s: float, takeover_from: str | None = None
    ) -> Lease:
        """Take the run's lease with a new epoch; LeaseHeld if another owner's is live.

        `takeover_from` names a holder known to be dead (its process is gone): its lease
        is taken at once instead of waiting for it to expire.
        """
        ...

    async def renew_lease(self, lease: Lease, *, ttl_s: float) -> Lease:
        """Extend a lease; LeaseLost if its epoch is no longer current."""
        ...

    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up; a no-op if it was already lost."""
        ...

    async def append(
        self,
        lease: Lease,
        events: Sequence[Event],
        *,
        summary: RunSummary,
        also: Callable[[], None] | None = None,
        sync: bool = False,
    ) -> None:
        """Append sealed events in one transaction.

        Refused with LeaseLost unless `lease.epoch` is the run's current epoch, and with
        AppendConflict unless the first event's seq and prev_hash continue the stored head.
        On refusal nothing is written.

        `also` runs inside that transaction once the fence has passed (the budget ledger's
        reserve or settle, so a step costs one commit, not three); if it raises, nothing is
        written and its exception propagates. Only stores whose `joins_ledger` is true for
        the ledger's tables accept it; the others raise UsageError.

        `sync` makes this commit durable against power loss whatever the store's sync
        setting (the write-ahead record of an effect in the outside world); other commits
        may be durable only against a process crash, as the store is configured.

        No events is no transaction: nothing is checked and nothing is written.
        """
        ...

    async def read_rows(
        self, run_id: str, *, after_seq: int = 0, until_seq: int | None = None
    ) -> list[StoredRow]:
        """Stored events with `after_seq < seq <= until_seq`, in seq order, unverified
        (none for an unknown run: `get_run` says whether a run exists)."""
        ...

    async def read_rows_at(self, run_id: str, seqs: Sequence[int]) -> list[StoredRow]:
        """Stored events at the given seqs (missing ones are simply absent), unverified."""
        ...

    async def put_snapshot(
        self, lease: Lease, run_id: str, seq: int, raw: bytes, *, keep: int
    ) -> None:
        """Store a sealed snapshot and drop all but the newest `keep`; fenced like append."""
        ...

    async def read_snapshots(self, run_id: str) -> list[tuple[int, bytes]]:
        """Stored snapshots as (seq, bytes), newest first, unverified (none for an
        unknown run)."""
        ...

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
        """Cut a damaged tail: delete events after `keep_through` and snapshots past it.

        `then` (with the run's new `summary`) is appended in the same transaction, so the
        event that reports the cut (`journal.repaired`) can never be lost without it."""
        ...

    async def run_ids(self) -> list[str]:
        """Every run in the store, oldest first."""
        ...

    # -- the work queue (DESIGN: Scale) -------------------------------------------------

    async def enqueue(self, run_id: str, *, queue: str = DEFAULT_QUEUE) -> None:
        """Submit the run to `queue`, so workers serving it may claim it; RunNotFound.

        Runs that were never enqueued are driven by the process that started them and are
        never claimed by workers.
        """
        ...

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
        """Lease up to `limit` runnable runs of `queue` to `owner`, oldest first, atomically.

        Runnable: status queued or running, and no lease, an expired one, or one held by a
        holder named in `takeover_from` (known dead). Each claim bumps the run's epoch,
        fencing the previous holder. `agents` (names) restricts the runs claimed to agents
        the caller can drive; runs in `exclude` are skipped. Concurrent claimers never
        receive the same run (`FOR UPDATE SKIP LOCKED` on PostgreSQL).
        """
        ...

    async def queue_leases(self, *, queue: str = DEFAULT_QUEUE, limit: int = 1000) -> list[Lease]:
        """Leases (live or expired) held on runnable runs of `queue`, soonest expiry first."""
        ...

    async def wait_for_work(self, *, queue: str = DEFAULT_QUEUE, timeout_s: float) -> None:
        """Return when a run of `queue` may have become runnable, or after `timeout_s`.

        PostgreSQL listens for notifications; the memory store is woken in process; SQLite
        simply sleeps (its workers poll with backoff). Never raises for a store outage.
        """
        ...

    async def close(self) -> None: ...


# -- console access tokens (`tether token`, `tether serve`) ------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class TokenRecord:
    """A console access token as stored: its hash, never the token itself."""

    token_id: str
    name: str
    role: str
    token_hash: str
    """sha256 of the token (tokens are 256 random bits, so a fast hash suffices)."""
    created_at: str
    expires_at: str | None
    revoked_at: str | None


@runtime_checkable
class TokenStore(Protocol):
    """A store that keeps console tokens (memory, SQLite, PostgreSQL)."""

    async def put_token(self, record: TokenRecord) -> None:
        """Insert a new token; UsageError if its id exists."""
        ...

    async def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        """The token with this hash, revoked or not; None when there is none."""
        ...

    async def list_tokens(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        ...

    async def revoke_token(self, token_id: str, *, at: str) -> bool:
        """Mark the token revoked at `at`; False when no unrevoked token has this id."""
        ...


def row_of(event: Event) -> StoredRow:
    return StoredRow(
        run_id=event.run_id,
        seq=event.seq,
        type=event.type,
        correlation_id=event.correlation_id,
        raw=event.raw,
        audit=audit_columns(event),
    )


def check_continues(
    head_seq: int, head_hash: str | None, events: Sequence[Event], run_id: str
) -> None:
    """The append contract, shared by every backend: events must extend the stored head
    (`head_hash` None: one not read here, so only the events' own chain is checked)."""
    expected_seq, expected_hash = head_seq + 1, head_hash
    for event in events:
        if (
            event.run_id != run_id
            or event.seq != expected_seq
            or (expected_hash is not None and not event.follows(expected_hash))
        ):
            raise AppendConflict(
                f"run {run_id}: expected seq {expected_seq} after the stored head, "
                f"got seq {event.seq}; another writer appended first"
            )
        expected_seq, expected_hash = event.seq + 1, event.checksum
