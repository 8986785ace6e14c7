"""What this process spent over a window: CPU split into user and kernel time, and how
often it gave up the CPU (voluntary context switches: it waited) or had it taken
(involuntary: preempted).

Why split: a worker's CPU per step can grow with the number of worker processes without
its own instructions growing; the kernel's share (syscalls, wakeups) and preemptions say
whether the work grew or only the price of the same work on a crowded machine.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

__all__ = ["ProcessUsage"]


@dataclass(frozen=True)
class ProcessUsage:
    """`getrusage(RUSAGE_SELF)` at one instant (every thread of the process)."""

    user_s: float
    sys_s: float
    voluntary_switches: int
    involuntary_switches: int

    @classmethod
    def now(cls) -> ProcessUsage:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return cls(ru.ru_utime, ru.ru_stime, ru.ru_nvcsw, ru.ru_nivcsw)

    def since(self, start: ProcessUsage) -> ProcessUsage:
        """The usage between `start` and this instant."""
        return ProcessUsage(
            self.user_s - start.user_s,
            self.sys_s - start.sys_s,
            self.voluntary_switches - start.voluntary_switches,
            self.involuntary_switches - start.involuntary_switches,
        )
