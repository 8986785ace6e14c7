"""The agent loop and the runtime that starts, resumes and lists runs."""

from ._awareness import Runway, limit_reached, runway
from ._pins import pin_fact, unpin_fact
from ._runner import Progress, RunResult, drive_run
from ._runtime import Runtime

__all__ = [
    "Progress",
    "RunResult",
    "Runtime",
    "Runway",
    "drive_run",
    "limit_reached",
    "pin_fact",
    "runway",
    "unpin_fact",
]
