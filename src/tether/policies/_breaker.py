"""Circuit breakers per tool: stop hammering a tool that keeps failing.

closed → open after `failures` consecutive failures (timeouts and exceptions; a model's
bad arguments are not the tool's fault) → half-open once the backoff has passed, when the
tool is offered again for one trial call → closed if it works, open again (with twice the
backoff, up to a cap) if it fails. Every change of state is a `health.breaker` event that
carries the breakers' checkpoint, so a resume restores them in O(1), however long ago a
breaker opened.

While open, the tool is hidden from the model's tool list (the model was told why when it
opened) and a call to it fails fast without running.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ..errors import UsageError
from ..events import Event
from ..state import RunState
from ._base import CONTINUE, AfterTool, BeforeModel, BeforeTool, Health, Policy, Verdict

__all__ = ["CircuitBreaker"]

State = Literal["closed", "open", "half_open"]

FAILURES = frozenset({"timeout", "exception"})
"""Outcomes that count against a tool (not bad arguments, refusals or rejections)."""


@dataclass(kw_only=True, slots=True)
class _Circuit:
    state: State = "closed"
    failures: int = 0
    opened_at: float = 0.0
    backoff_s: float = 0.0


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


class CircuitBreaker(Policy):
    """One breaker per tool (or per tool in `tools`, when given)."""

    name = "breaker"
    window = 200
    observes = frozenset({"health.breaker", "tool.completed", "tool.failed"})

    def __init__(
        self,
        *,
        failures: int = 3,
        backoff_s: float = 60.0,
        max_backoff_s: float = 900.0,
        tools: Collection[str] | None = None,
    ) -> None:
        # Three in a row: one failure is noise and retries absorb transient ones; three
        # consecutive calls that all failed mean the tool, not the call, is the problem.
        if failures < 1 or backoff_s <= 0 or max_backoff_s < backoff_s:
            raise UsageError("breaker: need failures >= 1 and 0 < backoff_s <= max_backoff_s")
        self.failures = failures
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.tools = frozenset(tools) if tools is not None else None
        self.circuits: dict[str, _Circuit] = {}
        self.opened = 0
        """How many breakers are open (hidden_tools has nothing to do while none is)."""

    def covers(self, name: str) -> bool:
        return self.tools is None or name in self.tools

    def circuit(self, name: str) -> _Circuit:
        return self.circuits.setdefault(name, _Circuit())

    def observe(self, event: Event) -> None:
        p = event.payload
        if event.type == "health.breaker":
            c = self.circuit(p["tool"])
            self.opened += (p["state"] == "open") - (c.state == "open")
            c.state = p["state"]
            c.failures = p.get("failures", 0) if c.state != "closed" else 0
            if c.state == "open":
                c.opened_at = _epoch(event.ts)
                c.backoff_s = float(p["backoff_s"])
        elif event.type in ("tool.completed", "tool.failed") and self.covers(p["name"]):
            c = self.circuit(p["name"])
            if p.get("error") in FAILURES:
                c.failures += 1
            elif p.get("error") is None:
                c.failures = 0

    def checkpoint(self) -> Any:
        return {
            name: [c.state, c.failures, c.opened_at, c.backoff_s]
            for name, c in self.circuits.items()
        }

    def restore(self, state: Any) -> None:
        self.circuits = {
            str(name): _Circuit(state=s, failures=int(f), opened_at=float(at), backoff_s=float(b))
            for name, (s, f, at, b) in state.items()
        }
        self.opened = sum(1 for c in self.circuits.values() if c.state == "open")

    def is_open(self, name: str, now: float) -> bool:
        c = self.circuits.get(name)
        return c is not None and c.state == "open" and now < c.opened_at + c.backoff_s

    def hidden_tools(self, state: RunState) -> Mapping[str, str]:
        # Asked several times a step: nothing to parse or build while every breaker is
        # closed, the usual case.
        if not self.opened or not state.updated_at:
            return {}
        now = _epoch(state.updated_at)
        return {
            name: f"{name} failed {c.failures} times in a row (circuit breaker open)"
            for name, c in self.circuits.items()
            if self.is_open(name, now)
        }

    async def before_model(self, call: BeforeModel) -> Verdict:
        # A backoff that has passed: the tool is offered again, for one trial call.
        for name, c in self.circuits.items():
            if c.state == "open" and call.now >= c.opened_at + c.backoff_s:
                return Verdict.ok(health=self.half_open(name, c))
        return CONTINUE

    async def before_tool(self, call: BeforeTool) -> Verdict:
        name = call.tool.name
        c = self.circuits.get(name)
        if c is None or c.state != "open":
            return CONTINUE
        left = c.opened_at + c.backoff_s - call.now
        if left <= 0:
            return Verdict.ok(health=self.half_open(name, c))
        return Verdict.refuse(
            f"{name} is unavailable: it failed {c.failures} times in a row and its circuit "
            f"breaker is open for another {left:.0f}s. It was not called. Use other tools "
            "or sources meanwhile."
        )

    def half_open(self, name: str, c: _Circuit) -> Health:
        return Health(
            kind="breaker",
            message=f"{name}: backoff over, offered again for a trial call",
            evidence={
                "tool": name, "state": "half_open", "failures": c.failures,
                "backoff_s": c.backoff_s,
            },
        )  # fmt: skip

    async def after_tool(self, result: AfterTool) -> Verdict:
        name = result.name
        if result.tool is None or not self.covers(name):
            return CONTINUE
        error = result.outcome.error
        c = self.circuit(name)
        if error in FAILURES:
            failures = c.failures + 1
            if c.state == "half_open":
                return self.open(name, failures, min(2 * c.backoff_s, self.max_backoff_s),
                                 trial=True)  # fmt: skip
            if c.state == "closed" and failures >= self.failures:
                return self.open(name, failures, self.backoff_s, trial=False)
        elif error is None and c.state != "closed":
            return Verdict.ok(
                health=Health(
                    kind="breaker",
                    message=f"{name} worked again: circuit breaker closed",
                    evidence={"tool": name, "state": "closed", "failures": 0},
                )
            )
        return CONTINUE

    def open(self, name: str, failures: int, backoff_s: float, *, trial: bool) -> Verdict:
        why = "its trial call failed" if trial else f"it failed {failures} times in a row"
        return Verdict.tell(
            f"⚠ {name} is disabled for {backoff_s:.0f}s: {why} (circuit breaker open). It is "
            "removed from your tools until then; use other tools or sources, and do not "
            "retry it now.",
            health=Health(
                kind="breaker",
                message=f"{name}: circuit breaker opened ({why})",
                evidence={
                    "tool": name,
                    "state": "open",
                    "failures": failures,
                    "backoff_s": backoff_s,
                },
            ),
        )
