"""The run journal: an append-only, checksummed, hash-chained event log per run.

`open_store(url)` picks a backend; `create_run`, `RunJournal`, `load_run`, `verify_run`
and `fork_run` work the same on every backend.
"""

from ._base import Lease, RunRecord, RunSummary, Store, StoredRow, summary_of
from ._factory import DEFAULT_STORE_URL, open_store, store_url_from_env
from ._fork import DiscardedCall, calls_after, fork_run
from ._integrity import Problem, Snapshot, seal_snapshot
from ._journal import (
    DEFAULT_KEEP_SNAPSHOTS,
    DEFAULT_SNAPSHOT_EVERY,
    Loaded,
    RunJournal,
    create_run,
    load_run,
    new_run_id,
    read_events,
)
from ._memory import MemoryStore
from ._schema import sqlite_functions
from ._sqlite import SQLiteStore
from ._verify_run import RunReport, verify_run

__all__ = [
    "DEFAULT_KEEP_SNAPSHOTS",
    "DEFAULT_SNAPSHOT_EVERY",
    "DEFAULT_STORE_URL",
    "DiscardedCall",
    "Lease",
    "Loaded",
    "MemoryStore",
    "Problem",
    "RunJournal",
    "RunRecord",
    "RunReport",
    "RunSummary",
    "SQLiteStore",
    "Snapshot",
    "Store",
    "StoredRow",
    "calls_after",
    "create_run",
    "fork_run",
    "load_run",
    "new_run_id",
    "open_store",
    "read_events",
    "seal_snapshot",
    "sqlite_functions",
    "store_url_from_env",
    "summary_of",
    "verify_run",
]
