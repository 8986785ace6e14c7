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


def test_huge_step_token_and_time_limits_keep_the_runway_line_short() -> None:
    huge = Limits(max_steps=10**300, max_tokens=10**300, max_time_s=1e300, max_cost_usd=1e308)
    line = runway(RunState(), huge, elapsed_s=5.0, context_fill=0.1).line
    assert line == (
        "[step 0/1e+300 · tokens 0/1e+300 · $0.0000/$1e+308 · 5s/2.78e+296h · context 10%]"
    )
    usual = Limits(max_steps=80, max_tokens=200_000, max_time_s=1800, max_cost_usd=1.0)
    line = runway(RunState(), usual, elapsed_s=5.0, context_fill=0.1).line
    assert line == "[step 0/80 · tokens 0/200.0k · $0.0000/$1.00 · 5s/30m · context 10%]"


def test_limits_too_big_for_a_float_are_shown_not_a_crash() -> None:
    huge = Limits(max_steps=10**400, max_tokens=25 * 10**399)
    line = runway(RunState(), huge, elapsed_s=5.0, context_fill=None).line
    assert line == "[step 0/1e+400 · tokens 0/2.5e+400 · $0.0000 · 5s]"
