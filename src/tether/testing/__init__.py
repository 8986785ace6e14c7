"""Tether's public test kit: fakes, run helpers, replays of recorded runs, and chaos.

- `MemoryStore`, `ScriptedModel` (with `Turn` and `call`), `FakeClock`: a run with no
  disk, no network and no wall clock.
- `run_to_end` / `run_to_pause`: drive an agent and get its `RunResult`.
- `replay` / `assert_replays`: re-drive an agent on the model answers and tool results an
  exported journal recorded (no model, no tool is called) and name the first divergence.
- `FaultPlan` (one process's faults), `ChaosPlan`, `ChaosTarget` and `run_chaos` (what
  `tether chaos` runs), and `record_effect` for tools that want their effects counted.
"""

from .._clock import FakeClock
from ..chaos import FAULT_KINDS, FaultPlan
from ..journal import MemoryStore
from ..models import ScriptedModel, Turn, call
from ._chaos import REPORTED_KINDS, ChaosReport, ChaosTarget, RunOutcome, run_chaos
from ._drive import run_to_end, run_to_pause
from ._effects import record_effect
from ._plan import ChaosPlan
from ._replay import Divergence, ReplayError, ReplayReport, assert_replays, replay

__all__ = [
    "FAULT_KINDS",
    "REPORTED_KINDS",
    "ChaosPlan",
    "ChaosReport",
    "ChaosTarget",
    "Divergence",
    "FakeClock",
    "FaultPlan",
    "MemoryStore",
    "ReplayError",
    "ReplayReport",
    "RunOutcome",
    "ScriptedModel",
    "Turn",
    "assert_replays",
    "call",
    "record_effect",
    "replay",
    "run_chaos",
    "run_to_end",
    "run_to_pause",
]
