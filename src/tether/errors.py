"""Tether's error tree: one root, split by whose problem it is.

```
TetherError
├── UsageError                 the caller's mistake: fix the input and try again
│   ├── RunNotFound
│   └── InvalidStoreURL
├── RunError                   something went wrong while a run was being driven or stored
│   ├── StoreError
│   │   ├── StoreUnavailable   cannot be used now (locked, read-only, disk full): not damage
│   │   ├── AppendConflict     the journal moved on: another writer appended first
│   │   ├── LeaseLost          the lease epoch is stale: this writer was fenced out
│   │   ├── LeaseHeld          another worker holds a live lease on the run
│   │   └── CorruptionError    stored bytes failed verification (names run, seq, what)
│   │       └── LedgerCorruption   a budget ledger row failed verification (names it)
│   └── ModelError
│       ├── ModelUnavailable   transient provider failure that outlived its retries
│       └── ContextOverflow    the request does not fit the model's window
└── ToolSignal                 raised by tools on purpose
    ├── ToolRetry              ask the model to try the call again, with a message
    └── HumanInputRequired     put a question to a human; the answer becomes the result

SimulatedCrash(BaseException)  injected by chaos; a tool's `except Exception` cannot swallow it
```
"""

from __future__ import annotations

__all__ = [
    "AppendConflict",
    "ApprovalNeeded",
    "ContextOverflow",
    "CorruptionError",
    "HumanInputRequired",
    "InvalidStoreURL",
    "LeaseHeld",
    "LeaseLost",
    "LedgerCorruption",
    "ModelError",
    "ModelUnavailable",
    "RunError",
    "RunNotFound",
    "SimulatedCrash",
    "StoreError",
    "StoreUnavailable",
    "TetherError",
    "ToolRetry",
    "ToolSignal",
    "UsageError",
]


class TetherError(Exception):
    """Root of every error Tether raises on purpose."""


class UsageError(TetherError):
    """The caller asked for something impossible; the message says what to change."""


class RunNotFound(UsageError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run {run_id!r} in this store")
        self.run_id = run_id


class InvalidStoreURL(UsageError):
    pass


class RunError(TetherError):
    """A failure while driving or storing a run."""


class StoreError(RunError):
    pass


class StoreUnavailable(StoreError):
    """The store cannot be used right now (locked, read-only, out of space, unreadable
    files): nothing says its data is damaged, only that it could not be checked or written."""


class AppendConflict(StoreError):
    """The expected next `seq` was taken: another writer appended first."""


class LeaseLost(StoreError):
    """This writer's lease epoch is stale, so it may not append (fencing)."""


class LeaseHeld(StoreError):
    """Another worker holds an unexpired lease on the run."""


class CorruptionError(StoreError):
    """Stored data failed verification; never silently replaced by a default."""

    def __init__(self, run_id: str, seq: int | None, what: str, *, repair: str = "") -> None:
        where = f"run {run_id}" + (f" at seq {seq}" if seq is not None else "")
        message = f"corruption in {where}: {what}"
        if repair:
            message += f" ({repair})"
        super().__init__(message)
        self.run_id = run_id
        self.seq = seq
        self.what = what
        self.repair = repair


class LedgerCorruption(CorruptionError):
    """A budget ledger row (a scope's limits, an open hold) failed verification: refused,
    never obeyed or counted with other values."""

    def __init__(self, where: str, what: str, *, repair: str) -> None:
        StoreError.__init__(self, f"corruption in {where}: {what} ({repair})")
        self.run_id = ""
        self.seq = None
        self.where = where
        self.what = what
        self.repair = repair


class ModelError(RunError):
    pass


class ModelUnavailable(ModelError):
    """A transient provider failure (rate limit, 5xx, network) outlived its retries."""


class ContextOverflow(ModelError):
    """The request is larger than the model's context window; retrying cannot help."""


class ToolSignal(TetherError):
    """Base of the exceptions a tool raises on purpose to steer the loop."""


class ToolRetry(ToolSignal):
    """Raised by a tool to send the model a message and let it try again."""


class HumanInputRequired(ToolSignal):
    """Raised by a tool (see `tether.approvals.ask_human`) to ask a human mid-run."""

    def __init__(self, question: str) -> None:
        super().__init__(question)
        self.question = question


class ApprovalNeeded(ToolSignal):
    """Raised by a tool, before it takes any effect, when this call needs a human's
    approval (a rule only the tool can decide). The run waits durably; once approved the
    call runs again with `ToolContext.approved` set, and a rejection becomes its result."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SimulatedCrash(BaseException):
    """Injected by `tether.chaos` to stop a process at a chosen point."""
