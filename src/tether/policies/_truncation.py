"""Truncated answers are not answers.

A final answer cut off at the output limit (`finish_reason == "length"`) is never
published as complete: the model is asked to continue where it stopped, a bounded number
of times, and the pieces are joined; past the bound the run ends `stopped` with the
joined text labelled partial.
"""

from __future__ import annotations

from typing import Any

from ..events import Event
from ._base import CONTINUE, AfterModel, Health, Policy, Verdict

__all__ = ["TruncatedAnswers"]

CONTINUE_PROMPT = (
    "Your answer was cut off at the output limit. Continue exactly where it stopped, "
    "without repeating anything: your next answer is appended to it."
)


class TruncatedAnswers(Policy):
    """Continue a cut-off final answer up to `max_continuations` times, then stop."""

    name = "truncation"
    window = 50
    observes = frozenset({"model.completed"})

    def __init__(self, *, max_continuations: int = 2) -> None:
        self.max_continuations = max_continuations
        self.pieces: list[str] = []

    def observe(self, event: Event) -> None:
        if event.type != "model.completed":
            return
        p = event.payload
        if p.get("finish_reason") == "length" and not p.get("tool_calls"):
            self.pieces.append(str(p.get("content", "")))
        elif self.pieces:
            self.pieces = []

    def checkpoint(self) -> Any:
        return {"pieces": self.pieces}

    def restore(self, state: Any) -> None:
        self.pieces = [str(p) for p in state["pieces"]]

    async def after_model(self, answer: AfterModel) -> Verdict:
        response = answer.response
        if response.tool_calls:
            return CONTINUE
        if response.finish_reason != "length":
            if self.pieces:
                return Verdict(data={"answer_prefix": "".join(self.pieces)})
            return CONTINUE
        evidence = {
            "pieces": len(self.pieces) + 1,
            "output_tokens": response.usage.output_tokens,
        }
        if len(self.pieces) >= self.max_continuations:
            reason = (
                f"the model's answer was cut off at its output limit {len(self.pieces) + 1} times"
            )
            return Verdict(
                action="stop",
                message=reason,
                health=Health(kind="truncated", message=reason, evidence=evidence),
                data={"limit": "truncated", "answer_prefix": "".join(self.pieces)},
            )
        return Verdict.tell(
            CONTINUE_PROMPT,
            health=Health(
                kind="truncated",
                message="a final answer was cut off at the output limit; asked to continue",
                evidence=evidence,
            ),
        )
