"""The loop's own policies, on the same seam as the health defences.

Run limits (stop before a turn that would not fit), approvals (pause before a gated call)
and the runway line (the status that ends every tool result, DESIGN invariant 6) are
policies like any user's. Budget *reservations* are not a hook: they commit atomically
with the events of the call they pay for, so they stay in `_budgeting.py`.
"""

from __future__ import annotations

from ..agent import Agent
from ..policies._base import CONTINUE, AfterTool, BeforeModel, BeforeTool, Policy, Verdict
from ._awareness import limit_reached, runway
from ._pins import pin_status

__all__ = ["ApprovalPolicy", "LimitsPolicy", "RunwayPolicy"]


class LimitsPolicy(Policy):
    """Stops the run (with a wrap-up turn) before a cycle a limit forbids."""

    name = "limits"

    async def before_model(self, call: BeforeModel) -> Verdict:
        state, limits = call.state, call.limits
        reached = limit_reached(state, limits, elapsed_s=call.elapsed_s)
        if reached is not None:
            return Verdict(action="stop", message=reached[1], data={"limit": reached[0]})
        if (
            limits.max_tokens is not None
            and state.tokens + call.next_turn_tokens > limits.max_tokens
        ):
            return Verdict(
                action="stop",
                message=(
                    f"token limit reached ({state.tokens}/{limits.max_tokens} tokens; "
                    "the next turn would not fit)"
                ),
                data={"limit": "tokens"},
            )
        if (
            limits.max_cost_usd is not None
            and state.cost_usd + call.next_turn_cost_usd > limits.max_cost_usd
        ):
            return Verdict(
                action="stop",
                message=(
                    f"cost limit reached (${state.cost_usd:.4f} spent of "
                    f"${limits.max_cost_usd:.2f}; the next turn may cost "
                    f"~${call.next_turn_cost_usd:.4f})"
                ),
                data={"limit": "cost"},
            )
        return CONTINUE


class ApprovalPolicy(Policy):
    """Pauses for a human before a call its tool (or the agent's cost rule) gates."""

    name = "approvals"

    def __init__(self, agent: Agent) -> None:
        self.threshold = agent.approval_cost_usd

    async def before_tool(self, call: BeforeTool) -> Verdict:
        tool = call.tool
        if self.threshold is not None and tool.cost_usd > self.threshold:
            return Verdict.pause(call.reason)
        if tool.needs_approval(dict(call.arguments), call.state):
            return Verdict.pause(call.reason)
        return CONTINUE


class RunwayPolicy(Policy):
    """Ends every tool result with the runway line and its warning level."""

    name = "runway"

    def __init__(self, agent: Agent) -> None:
        self.pin_tokens = agent.pin_tokens

    async def after_tool(self, result: AfterTool) -> Verdict:
        status = runway(
            result.state, result.limits, elapsed_s=result.elapsed_s,
            context_fill=result.context_fill,
        )  # fmt: skip
        line = status.line
        if result.state.facts:
            line = f"{line} · {pin_status(result.state, self.pin_tokens)}"
        return Verdict.tell(line, data={"level": status.level})
