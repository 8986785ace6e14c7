"""The runway line stays short whatever the limits are."""

from __future__ import annotations

from tether.agent import Limits
from tether.loop import runway
from tether.state import RunState


def test_a_huge_cost_limit_keeps_the_runway_line_short() -> None:
    line = runway(
        RunState(cycle=3, cost_usd=0.01), Limits(max_cost_usd=1e308), elapsed_s=2.0,
        context_fill=None,
    ).line  # fmt: skip
    assert "$0.0100/$1e+308" in line and len(line) < 80
    usual = runway(RunState(), Limits(max_cost_usd=1.0), elapsed_s=0.0, context_fill=None).line
    assert "$0.0000/$1.00" in usual
