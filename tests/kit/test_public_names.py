"""The public names of `tether.testing`, pinned: dropping or renaming one breaks this test,
not a user's test suite."""

from __future__ import annotations

import tether.testing

PUBLIC = [
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


def test_the_public_names_are_pinned() -> None:
    assert tether.testing.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(tether.testing, name) is not None


def test_every_fault_kind_a_process_injects_is_reported() -> None:
    assert set(tether.testing.FAULT_KINDS) <= set(tether.testing.REPORTED_KINDS)
