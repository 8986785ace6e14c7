"""Degradation monitors: signs over a sliding window of cycles that a run is going bad.

An agent rarely fails loudly; it keeps producing output while its work gets worse. Over
the last `window` cycles the monitor watches five signals:

- **error rate:** the share of tool calls that failed;
- **loop:** the same call with the same arguments *and the same result*, again and again
  (outcomes are compared, so polling that makes progress is not flagged);
- **no new information:** consecutive cycles whose every result was already seen;
- **malformed calls:** invalid JSON, unknown tools, arguments that do not validate;
- **cost rising:** the recent cycles cost much more each than the earlier ones.

A finding is a `health.monitor` event with its evidence, and the configured action:
`tell` the agent (in the result it reads next), `pause` for an operator (a durable
interrupt once the turn's calls are done) or `stop` the run (a wrap-up turn, then a
labelled partial answer). A signal that fired stays quiet for a window, so one episode is
one finding; when each signal last fired is checkpointed with the finding.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import UsageError
from ..events import Event
from ._base import CONTINUE, AfterTool, Health, Policy, Verdict
from ._consistency import _digest as output_digest
from ._consistency import call_key

__all__ = ["DegradationMonitor", "MonitorAction"]

MonitorAction = Literal["tell", "pause", "stop"]

MALFORMED = frozenset({"unknown_tool", "malformed_arguments", "invalid_arguments"})
NOT_RUN = frozenset({"refused", "rejected", "budget_denied"})
"""Outcomes of calls that were never made: not the tool's errors."""


def _drop(counts: dict[Any, int], key: Any) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


def _label(key: str) -> str:
    """`name(arguments)` for people, from a call key."""
    name, _, arguments = key.partition("\x00")
    return f"{name}({arguments})"


def _digest(text: str) -> str:
    return output_digest(text)[:16]


@dataclass(kw_only=True, slots=True)
class _Cycle:
    number: int
    cost_usd: float = 0.0
    results: list[tuple[str, str, str | None]] = field(default_factory=list)
    """(call key, output digest, error kind) of each result."""
    learned: bool = False
    """Whether one of its results was new to the window when it came."""

    @property
    def new(self) -> bool:
        return self.learned or not self.results


class DegradationMonitor(Policy):
    """Watches a sliding window of cycles; thresholds are per agent (pass your own)."""

    name = "monitor"
    window = 200
    observes = frozenset({"cycle.started", "model.completed", "tool.requested", "tool.completed",
                          "tool.failed", "tool.unknown", "health.monitor"})  # fmt: skip

    def __init__(
        self,
        *,
        cycles: int = 10,
        error_rate: float = 0.5,
        min_calls: int = 4,
        repeats: int = 3,
        stale_cycles: int = 4,
        malformed: int = 3,
        cost_growth: float = 3.0,
        action: MonitorAction = "tell",
        actions: dict[str, MonitorAction] | None = None,
    ) -> None:
        # Defaults, and why: ten cycles is long enough to see a trend and short enough to
        # react within minutes; half the calls failing over four or more is not noise; a
        # third identical call with an identical answer is a loop (two can be a check);
        # four cycles learning nothing is stalling; three malformed calls means the model
        # has lost track of the tools; a threefold rise in cost per cycle is a runaway
        # context or a runaway model, not variance.
        if cycles < 2 or min_calls < 1 or repeats < 2 or stale_cycles < 1 or malformed < 1:
            raise UsageError("monitor: cycles >= 2, repeats >= 2, other counts >= 1")
        if not 0 < error_rate <= 1 or cost_growth <= 1:
            raise UsageError("monitor: 0 < error_rate <= 1 and cost_growth > 1")
        self.cycles = cycles
        self.error_rate = error_rate
        self.min_calls = min_calls
        self.repeats = repeats
        self.stale_cycles = stale_cycles
        self.malformed = malformed
        self.cost_growth = cost_growth
        self.action: MonitorAction = action
        self.actions = dict(actions or {})
        self.recent: deque[_Cycle] = deque()
        # Running totals over `recent`, kept as cycles come and go, so a check is O(1)
        # (plus a walk of at most `cycles` cycles), never a rescan of the window's results.
        self.made = 0
        self.failed = 0
        self.bad = 0
        self.same: dict[tuple[str, str], int] = {}
        self.digests: dict[str, int] = {}
        self.open_calls: dict[str, str] = {}
        self.fired: dict[str, int] = {}
        """Signal → cycle it last fired in."""

    # -- folding the journal ------------------------------------------------------------

    def observe(self, event: Event) -> None:
        p = event.payload
        kind = event.type
        if kind == "cycle.started":
            if len(self.recent) == self.cycles:
                self.count(self.recent.popleft().results, -1)
            self.recent.append(_Cycle(number=int(p.get("cycle", 0))))
        elif kind == "model.completed" and event.usage is not None and self.recent:
            self.recent[-1].cost_usd += event.usage.cost_usd
        elif kind == "tool.requested":
            self.open_calls[p["call_id"]] = call_key(p["name"], str(p.get("arguments", "")))
        elif kind in ("tool.completed", "tool.failed", "tool.unknown"):
            key = self.open_calls.pop(p["call_id"], f"{p['name']}\x00?")
            if self.recent:
                result = (key, _digest(str(p["output"])), p.get("error"))
                cycle = self.recent[-1]
                if result[2] is None and result[1] not in self.digests:
                    cycle.learned = True
                cycle.results.append(result)
                self.count([result], 1)
        elif kind == "health.monitor":
            for finding in p.get("findings") or [p]:
                self.fired[finding["signal"]] = self.current

    def count(self, results: list[tuple[str, str, str | None]], sign: int) -> None:
        """Add results to the window's totals (or take them out)."""
        for key, digest, error in results:
            if error is None:
                self.made += sign
                same, digests = self.same, self.digests
                if sign > 0:
                    same[(key, digest)] = same.get((key, digest), 0) + 1
                    digests[digest] = digests.get(digest, 0) + 1
                else:
                    _drop(same, (key, digest))
                    _drop(digests, digest)
                continue
            if error not in NOT_RUN:
                self.made += sign
                self.failed += sign
            if error in MALFORMED:
                self.bad += sign

    def checkpoint(self) -> Any:
        return {"fired": self.fired}

    def restore(self, state: Any) -> None:
        self.fired = {str(k): int(v) for k, v in state["fired"].items()}

    @property
    def current(self) -> int:
        return self.recent[-1].number if self.recent else 0

    # -- the signals --------------------------------------------------------------------

    def findings(self, current: tuple[str, str, str | None]) -> list[Health]:
        key, digest, error = current
        found: list[Health] = []
        made = self.made + (error not in NOT_RUN)
        failed = self.failed + (error not in NOT_RUN and error is not None)
        if made >= self.min_calls and failed / made >= self.error_rate:
            kinds = Counter(str(r[2]) for c in self.recent for r in c.results
                            if r[2] is not None and r[2] not in NOT_RUN)  # fmt: skip
            if error is not None and error not in NOT_RUN:
                kinds[str(error)] += 1
            found.append(self.health(
                "error_rate", f"{failed} of the last {made} tool calls failed",
                calls=made, failed=failed, kinds=dict(kinds),
            ))  # fmt: skip
        if error is None:
            same = self.same.get((key, digest), 0) + 1
            if same >= self.repeats:
                found.append(self.health(
                    "loop",
                    f"{_label(key)} was called {same} times with the same arguments and got "
                    "the same result each time",
                    call=_label(key), times=same,
                ))  # fmt: skip
        stalled = self.stalled(current)
        if stalled >= self.stale_cycles:
            found.append(self.health(
                "no_progress", f"the last {stalled} cycles brought no new information",
                cycles=stalled,
            ))  # fmt: skip
        bad = self.bad + (error in MALFORMED)
        if bad >= self.malformed:
            calls = [_label(r[0]) for c in self.recent for r in c.results if r[2] in MALFORMED]
            if error in MALFORMED:
                calls.append(_label(key))
            found.append(self.health(
                "malformed",
                f"{bad} malformed tool calls (bad JSON, unknown tools or arguments)",
                count=bad, calls=calls[-5:],
            ))  # fmt: skip
        rising = self.cost_rise()
        if rising is not None:
            found.append(rising)
        return [h for h in found if self.quiet(str(h.evidence["signal"]))]

    def stalled(self, current: tuple[str, str, str | None]) -> int:
        """How many of the latest cycles (the current one included) added no new result."""
        run = 0
        for index, cycle in enumerate(reversed(self.recent)):
            new = cycle.new
            if index == 0:
                new = cycle.learned or (current[2] is None and current[1] not in self.digests)
            if new:
                break
            run += 1
        return run

    def cost_rise(self) -> Health | None:
        costs = [c.cost_usd for c in self.recent]
        if len(costs) < self.cycles or not any(costs):
            return None
        half = len(costs) // 2
        early, late = sum(costs[:half]) / half, sum(costs[half:]) / (len(costs) - half)
        if early <= 0 or late / early < self.cost_growth:
            return None
        return self.health(
            "cost_rising",
            f"cost per cycle rose {late / early:.1f}x (${early:.4f} → ${late:.4f})",
            early_usd=early, late_usd=late,
        )  # fmt: skip

    def quiet(self, signal: str) -> bool:
        last = self.fired.get(signal)
        return last is None or self.current - last >= self.cycles

    def health(self, signal: str, message: str, **evidence: object) -> Health:
        return Health(kind="monitor", message=message, evidence={"signal": signal, **evidence})

    # -- hooks --------------------------------------------------------------------------

    async def after_tool(self, result: AfterTool) -> Verdict:
        current = (
            call_key(result.name, result.arguments),
            _digest(result.outcome.output),
            result.outcome.error,
        )
        found = self.findings(current)
        if not found:
            return CONTINUE
        worst = found[0]
        action = self.actions.get(str(worst.evidence["signal"]), self.action)
        text = "; ".join(h.message for h in found)
        health = Health(
            kind="monitor",
            message=text,
            evidence={**worst.evidence, "findings": [dict(h.evidence) for h in found]},
        )
        advice = (
            f"⚠ Health monitor: {text}. Change your approach: try other sources or tools, "
            "or give your final answer with what you have."
        )
        if action == "stop":
            return Verdict(action="stop", message=text, health=health,
                           data={"limit": "health"})  # fmt: skip
        if action == "pause":
            return Verdict(action="pause", message=f"paused by the health monitor: {text}",
                           health=health)  # fmt: skip
        return Verdict.tell(advice, health=health)
