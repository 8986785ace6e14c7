"""Resource awareness: the runway line that ends every tool result (DESIGN invariant 6).

Agents ignore remaining turns written once into a prompt; a line in every result, with
an escalating warning, is where they look while deciding what to do next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..agent import Limits
from ..state import RunState

__all__ = ["Runway", "Warning", "limit_reached", "runway"]

Warning = Literal["ok", "warn", "wrap_up"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Runway:
    line: str
    level: Warning
    tightest: str | None
    """The resource with the least left, when a limit is set."""
    left: float | None
    """Fraction of that resource left (0..1)."""


# Limits may be huge (1e308 is a legal cost, any int a legal step count); the line the
# model reads every step must stay short, so big figures go to three significant digits.


def _sci(n: float) -> str:
    """Three significant digits for any number, also an int too big for a float."""
    if isinstance(n, int) and n >= 10**308:
        digits = str(n)
        mantissa = f"{digits[0]}.{digits[1:3]}".rstrip("0").rstrip(".")
        return f"{mantissa}e+{len(digits) - 1}"
    return f"{float(n):.3g}"


def _fmt_count(n: float) -> str:
    return str(int(n)) if n < 1e9 else _sci(n)


def _fmt_tokens(n: float) -> str:
    if n >= 1e12:
        return _sci(n)
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 1_000:
        return f"{n / 1_000:.1f}k"
    return str(int(n))


def _fmt_usd(amount: float) -> str:
    return f"${amount:.2f}" if amount < 1e9 else f"${amount:.3g}"


def _fmt_time(seconds: float) -> str:
    if seconds >= 3600 * 1e6:
        return f"{seconds / 3600:.3g}h"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f}h"
    if seconds >= 60:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:.0f}s"


def runway(
    state: RunState, limits: Limits, *, elapsed_s: float, context_fill: float | None
) -> Runway:
    """The status line for a tool result produced now, with its warning level."""
    parts: list[str] = []
    left: dict[str, float] = {}
    step = state.steps
    if limits.max_steps:
        parts.append(f"step {step}/{_fmt_count(limits.max_steps)}")
        left["steps"] = 1 - step / limits.max_steps
    else:
        parts.append(f"step {step}")
    if limits.max_tokens:
        parts.append(f"tokens {_fmt_tokens(state.tokens)}/{_fmt_tokens(limits.max_tokens)}")
        left["tokens"] = 1 - state.tokens / limits.max_tokens
    else:
        parts.append(f"tokens {_fmt_tokens(state.tokens)}")
    if limits.max_cost_usd:
        parts.append(f"${state.cost_usd:.4f}/{_fmt_usd(limits.max_cost_usd)}")
        left["cost"] = 1 - state.cost_usd / limits.max_cost_usd
    else:
        parts.append(f"${state.cost_usd:.4f}")
    if limits.max_time_s:
        parts.append(f"{_fmt_time(elapsed_s)}/{_fmt_time(limits.max_time_s)}")
        left["time"] = 1 - elapsed_s / limits.max_time_s
    else:
        parts.append(_fmt_time(elapsed_s))
    if context_fill is not None:
        parts.append(f"context {context_fill:.0%}")
    line = "[" + " · ".join(parts) + "]"
    if not left:
        return Runway(line=line, level="ok", tightest=None, left=None)
    tightest = min(left, key=lambda k: left[k])
    fraction = max(0.0, left[tightest])
    if fraction <= limits.wrap_up_at:
        line += (
            f"\n⚠ WRAP UP NOW: {fraction:.0%} of your {tightest} budget is left. "
            "Stop exploring and give your final answer with what you have."
        )
        return Runway(line=line, level="wrap_up", tightest=tightest, left=fraction)
    if fraction <= limits.warn_at:
        line += (
            f"\n⚠ {fraction:.0%} of your {tightest} budget is left: "
            "plan your wrap-up and prioritise what matters most."
        )
        return Runway(line=line, level="warn", tightest=tightest, left=fraction)
    return Runway(line=line, level="ok", tightest=tightest, left=fraction)


def limit_reached(state: RunState, limits: Limits, *, elapsed_s: float) -> tuple[str, str] | None:
    """(limit name, human reason) when a limit stops further work, else None."""
    if limits.max_steps is not None and state.steps >= limits.max_steps:
        return "steps", f"step limit reached ({state.steps}/{limits.max_steps} steps)"
    if limits.max_tokens is not None and state.tokens >= limits.max_tokens:
        return "tokens", f"token limit reached ({state.tokens}/{limits.max_tokens} tokens)"
    if limits.max_cost_usd is not None and state.cost_usd >= limits.max_cost_usd:
        return "cost", (
            f"cost limit reached (${state.cost_usd:.4f}/{_fmt_usd(limits.max_cost_usd)})"
        )
    if limits.max_time_s is not None and elapsed_s >= limits.max_time_s:
        return "time", f"time limit reached ({elapsed_s:.0f}s/{limits.max_time_s:.0f}s)"
    return None
