"""Run state as a pure fold over the journal: `state = fold(events, initial)`.

Usage is counted from the event that did the spending (`model.completed`, a priced
`tool.completed`), never from bookkeeping events, so nothing is counted twice.
"""

from ._fold import apply, fold
from ._model import (
    FOLD_VERSION,
    RUN_STATUSES,
    TERMINAL_STATUSES,
    ContextSeqs,
    Fact,
    PendingCall,
    RunState,
    RunStatus,
)

__all__ = [
    "FOLD_VERSION",
    "RUN_STATUSES",
    "TERMINAL_STATUSES",
    "ContextSeqs",
    "Fact",
    "PendingCall",
    "RunState",
    "RunStatus",
    "apply",
    "fold",
]
