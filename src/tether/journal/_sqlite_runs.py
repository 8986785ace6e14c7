"""Runs, leases and the work queue in the SQLite store: the `runs` table's rows, checked by
name when damaged, and the lease fence every write goes through."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import Any

from ..errors import CorruptionError, LeaseHeld, LeaseLost, RunNotFound
from ..state import RUN_STATUSES, RunStatus
from ._base import DEFAULT_QUEUE, RUNNABLE_STATUSES, Claim, Lease, RunRecord, RunSummary
from ._index import runs_where
from ._sqlite_meta import SQLiteMeta

_RUN_COLUMNS = (
    "run_id, agent, tenant, parent_run_id, created_at, updated_at, status, steps, "
    "input_tokens, output_tokens, cost_usd, head_seq, head_hash, lease_owner, lease_epoch, "
    "lease_expires_at"
)
_RUN_COLUMN_NAMES = [c.strip() for c in _RUN_COLUMNS.split(",")]
_TEXT, _OPT_TEXT = (str,), (str, type(None))
_RUN_COLUMN_KINDS: list[tuple[type, ...]] = [
    _TEXT, _TEXT, _OPT_TEXT, _OPT_TEXT, _TEXT, _TEXT, _TEXT, (int,), (int,), (int,),
    (int, float), (int,), _TEXT, _OPT_TEXT, (int,), (int, float, type(None)),
]  # fmt: skip


def _short(row: Sequence[Any] | None) -> str:
    return "nothing" if row is None else f"{row[0]!r:.60}"


def _lease_columns(run_id: str, row: Sequence[Any]) -> tuple[str | None, int, float | None]:
    """A run's lease columns, refused by name when damaged (see `SQLiteStore._record`)."""
    holder, epoch, expires = row
    if (
        not isinstance(holder, str | None)
        or not isinstance(epoch, int)
        or isinstance(epoch, bool)
        or not isinstance(expires, int | float | None)
    ):
        raise CorruptionError(
            run_id,
            None,
            f"its lease columns are damaged (owner={holder!r:.40}, epoch={epoch!r:.40})",
            repair="tether doctor shows what else is damaged; restore the store from a backup",
        )
    return holder, epoch, expires


class SQLiteRuns(SQLiteMeta):
    """The runs, leases and queue part of `SQLiteStore`."""

    def _run_key(self, db: sqlite3.Connection, run_id: str) -> int:
        """The run's integer key in `event_rows` (schema 6); fixed once given, so cached."""
        key = self._run_keys.get(run_id)
        if key is None:
            row = db.execute("SELECT key FROM run_keys WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            # The lookup reads only the index; the table's own copy of the id must agree,
            # or a flipped byte there would go unnoticed until the index is rebuilt.
            named = db.execute("SELECT run_id FROM run_keys WHERE key=?", (row[0],)).fetchone()
            if named is None or named[0] != run_id:
                raise CorruptionError(
                    run_id, None,
                    f"its journal key row is damaged (it names {_short(named)})",
                    repair="tether doctor shows what else is damaged; restore the store "
                    "from a backup",
                )  # fmt: skip
            key = self._run_keys[run_id] = int(row[0])
        return key

    def _record(
        self, row: Sequence[Any], stored_id: Any = None, asked: str | None = None
    ) -> RunRecord:
        # SQLite keeps any value in any column: a damaged page or a stray write can put
        # text where a count belongs. Refuse it by name rather than fail somewhere later.
        if asked is not None and stored_id != asked:
            # Found through the index under `asked`, yet the row names another run.
            raise CorruptionError(
                asked, None,
                f"its run index row is damaged (it names {_short((stored_id,))})",
                repair="tether doctor shows what else is damaged; restore the store from a backup",
            )  # fmt: skip
        wrong = [
            name
            for name, value, kinds in zip(_RUN_COLUMN_NAMES, row, _RUN_COLUMN_KINDS, strict=True)
            if not isinstance(value, kinds) or isinstance(value, bool)
        ]
        if wrong or row[6] not in RUN_STATUSES:
            what = ", ".join(f"{n}={row[_RUN_COLUMN_NAMES.index(n)]!r:.40}" for n in wrong)
            raise CorruptionError(
                str(row[0]),
                None,
                f"its run index row is damaged ({what or f'status={row[6]!r:.40}'})",
                repair="tether doctor shows what else is damaged; restore the store from a backup",
            )
        return RunRecord(
            run_id=row[0],
            agent=row[1],
            tenant=row[2],
            parent_run_id=row[3],
            created_at=row[4],
            summary=RunSummary(
                updated_at=row[5],
                status=row[6],
                steps=row[7],
                input_tokens=row[8],
                output_tokens=row[9],
                cost_usd=row[10],
            ),
            head_seq=row[11],
            head_hash=row[12],
            lease_owner=row[13],
            lease_epoch=row[14],
            lease_expires_at=row[15],
        )

    async def get_run(self, run_id: str) -> RunRecord:
        # The id is read back from the table row itself (a rowid lookup), not from the
        # index the search used: a flipped byte in the row must not pass unseen.
        rows = self._read(
            f"SELECT {_RUN_COLUMNS}, (SELECT r.run_id FROM runs AS r NOT INDEXED "
            "WHERE r.rowid = runs.rowid) FROM runs WHERE run_id=?",
            (run_id,),
        )
        if not rows:
            if await self.lost_synced_commits(run_id):
                raise CorruptionError(
                    run_id, 1,
                    "the store lost this run: the sync log shows its commits were synced "
                    "before side effects, so they may have happened",
                    repair="restore the store from a backup",
                )  # fmt: skip
            if self._read("SELECT 1 FROM run_keys WHERE run_id=?", (run_id,)):
                raise CorruptionError(
                    run_id, None,
                    "its journal is in the store but its run index row cannot be found "
                    "(the `runs` table or its index is damaged)",
                    repair="tether doctor shows what else is damaged; restore the store "
                    "from a backup",
                )  # fmt: skip
            raise RunNotFound(run_id)
        return self._record(rows[0][:-1], rows[0][-1], run_id)

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
        where, params = runs_where(
            status=status, agent=agent, tenant=tenant, since=since, until=until
        )
        rows = self._read(
            f"SELECT {_RUN_COLUMNS} FROM runs{where} ORDER BY created_at DESC, run_id DESC LIMIT ?",
            (*params, limit),
        )
        return [self._record(r) for r in rows]

    async def run_ids(self) -> list[str]:
        return [r[0] for r in self._read("SELECT run_id FROM runs ORDER BY created_at, run_id")]

    async def acquire_lease(
        self, run_id: str, *, owner: str, ttl_s: float, takeover_from: str | None = None
    ) -> Lease:
        self._last_status.pop(run_id, None)  # others may have written since: set it again
        now = self._clock.time()
        with self._write() as db:
            row = db.execute(
                "SELECT lease_owner, lease_epoch, lease_expires_at FROM runs WHERE run_id=?",
                (run_id,),
            ).fetchone()
            if row is None:
                raise RunNotFound(run_id)
            holder, epoch, expires = _lease_columns(run_id, row)
            live = holder is not None and expires is not None and expires > now
            if live and holder not in (owner, takeover_from):
                left = (expires or now) - now
                raise LeaseHeld(f"run {run_id} is leased by {holder} for {left:.0f}s more")
            lease = Lease(run_id=run_id, owner=owner, epoch=epoch + 1, expires_at=now + ttl_s)
            db.execute(
                "UPDATE runs SET lease_owner=?, lease_epoch=?, lease_expires_at=? WHERE run_id=?",
                (owner, lease.epoch, lease.expires_at, run_id),
            )
        return lease

    def _check_lease(self, db: sqlite3.Connection, lease: Lease) -> tuple[int, str]:
        row = db.execute(
            "SELECT lease_owner, lease_epoch, head_seq, head_hash FROM runs WHERE run_id=?",
            (lease.run_id,),
        ).fetchone()
        if row is None:
            raise RunNotFound(lease.run_id)
        if row[1] != lease.epoch or row[0] != lease.owner:
            raise LeaseLost(
                f"run {lease.run_id}: lease epoch {lease.epoch} is stale (current {row[1]})"
            )
        return row[2], row[3]

    async def renew_lease(self, lease: Lease, *, ttl_s: float) -> Lease:
        expires = self._clock.time() + ttl_s
        with self._write() as db:
            self._check_lease(db, lease)
            db.execute("UPDATE runs SET lease_expires_at=? WHERE run_id=?", (expires, lease.run_id))
        return Lease(run_id=lease.run_id, owner=lease.owner, epoch=lease.epoch, expires_at=expires)

    async def release_lease(self, lease: Lease) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE runs SET lease_owner=NULL, lease_expires_at=NULL "
                "WHERE run_id=? AND lease_epoch=? AND lease_owner=?",
                (lease.run_id, lease.epoch, lease.owner),
            )

    async def enqueue(self, run_id: str, *, queue: str = DEFAULT_QUEUE) -> None:
        with self._write() as db:
            if db.execute("UPDATE runs SET queue=? WHERE run_id=?", (queue, run_id)).rowcount != 1:
                raise RunNotFound(run_id)

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
        if limit < 1 or (agents is not None and not agents):
            return []
        now = self._clock.time()
        dead = f" OR lease_owner IN ({','.join('?' * len(takeover_from))})" if takeover_from else ""
        where = [
            "queue=?",
            f"status IN ({','.join('?' * len(RUNNABLE_STATUSES))})",
            f"(lease_owner IS NULL OR lease_expires_at IS NULL OR lease_expires_at<=?{dead})",
        ]
        params: list[Any] = [queue, *RUNNABLE_STATUSES, now, *takeover_from]
        if agents is not None:
            where.append(f"agent IN ({','.join('?' * len(agents))})")
            params.extend(agents)
        if exclude:
            where.append(f"run_id NOT IN ({','.join('?' * len(exclude))})")
            params.extend(exclude)
        claims: list[Claim] = []
        # BEGIN IMMEDIATE serialises claimers (in every process), like SKIP LOCKED does.
        with self._write() as db:
            rows = db.execute(
                "SELECT run_id, lease_owner, lease_epoch, lease_expires_at FROM runs WHERE "
                + " AND ".join(where)
                + " ORDER BY created_at, run_id LIMIT ?",
                (*params, limit),
            ).fetchall()
            for run_id, *columns in rows:
                holder, epoch, expires = _lease_columns(run_id, columns)
                lease = Lease(run_id=run_id, owner=owner, epoch=epoch + 1, expires_at=now + ttl_s)
                db.execute(
                    "UPDATE runs SET lease_owner=?, lease_epoch=?, lease_expires_at=? "
                    "WHERE run_id=?",
                    (owner, lease.epoch, lease.expires_at, run_id),
                )
                claims.append(
                    Claim(lease=lease, previous_owner=holder, previous_expires_at=expires)
                )
        return claims

    async def queue_leases(self, *, queue: str = DEFAULT_QUEUE, limit: int = 1000) -> list[Lease]:
        rows = self._read(
            "SELECT run_id, lease_owner, lease_epoch, lease_expires_at FROM runs "
            f"WHERE queue=? AND status IN ({','.join('?' * len(RUNNABLE_STATUSES))}) "
            "AND lease_owner IS NOT NULL ORDER BY lease_expires_at, run_id LIMIT ?",
            (queue, *RUNNABLE_STATUSES, limit),
        )
        return [Lease(run_id=r[0], owner=r[1], epoch=r[2], expires_at=r[3] or 0.0) for r in rows]

    async def wait_for_work(self, *, queue: str = DEFAULT_QUEUE, timeout_s: float) -> None:
        # Other processes cannot signal through the file: workers poll with backoff.
        await asyncio.sleep(max(0.0, timeout_s))
