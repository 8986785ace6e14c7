"""The chaos plan: what `tether chaos` injects across its runs, and one run's draw of it.

A `ChaosPlan` holds rates and shares; `ChaosPlan.draw(seed, index)` turns it into one
run's `RunPlan` (its process fault plan, how many SIGKILLs, which damage, which tiny
budget). The draw depends only on the seed and the run's index, so `--seed S --run I`
reproduces a run exactly. Plans load from TOML or JSON files with the same keys.
"""

from __future__ import annotations

import json
import math
import random
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..chaos import FaultPlan
from ..errors import UsageError

__all__ = ["BUDGET_KINDS", "DAMAGE_KINDS", "ChaosPlan", "RunPlan"]

DAMAGE_KINDS = ("event", "snapshot", "missing_event")
"""`event`: one byte of a stored event flipped; `snapshot`: one byte of a stored snapshot
flipped; `missing_event`: a committed event deleted from the middle of the journal."""
BUDGET_KINDS = ("steps", "cost", "tokens", "ledger")
"""Tiny limits: the run's steps, cost or tokens, or a daily budget in the store's ledger."""


@dataclass(frozen=True, kw_only=True)
class ChaosPlan:
    """Rates and shares for a chaos campaign (every key may be given in a plan file)."""

    tool_fail_rate: float = 0.05
    tool_latency: float = 0.001
    tool_corrupt_rate: float = 0.05
    model_fail_rate: float = 0.03
    model_latency: float = 0.001
    model_malformed_rate: float = 0.03
    mcp_fail_rate: float = 0.05
    """Calls of an MCP server's tool answered with the server's error result."""
    mcp_timeout_rate: float = 0.05
    """Calls of an MCP server's tool whose answer is withheld or cut off: a timeout."""
    mcp_disconnect_rate: float = 0.05
    """Calls of an MCP server's tool during which the server exits (its session severed)."""
    max_kills: int = 3
    """SIGKILLs per run, at most (each followed by a resume in a fresh process)."""
    kill_share: float = 0.8
    """Share of runs that are killed at all."""
    kill_before_share: float = 0.5
    """Share of kills made just before an append (the rest just after one is durable)."""
    damage_share: float = 1.0
    """Share of runs whose store is copied and damaged after the run (one damage each)."""
    damage: tuple[str, ...] = DAMAGE_KINDS
    tiny_budget_share: float = 0.25
    """Share of runs given a tiny step, cost or token limit, or a tiny daily budget."""
    delete_committed_share: float = 0.0
    """Share of killed runs in which, after the first kill, a committed event is deleted
    from the live store before the resume. Tether must refuse such a run, so any share
    above 0 makes the campaign fail: a plan to check that the harness catches it."""
    snapshot_every: int = 25
    """Snapshot interval of the runs (small, so snapshots exist to damage)."""
    run_timeout_s: float = 120.0
    """A process taking longer than this is a hung run (an invariant failure)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith(("_rate", "_share")) and not 0 <= value <= 1:
                raise UsageError(f"{f.name} must be a chance between 0 and 1, not {value}")
        if not 0 <= self.max_kills <= 100:
            raise UsageError(f"max_kills must be 0..100, not {self.max_kills}")
        if self.snapshot_every < 2:
            raise UsageError("snapshot_every must be 2 or more")
        if not (0 <= self.tool_latency < math.inf and 0 <= self.model_latency < math.inf):
            raise UsageError("latencies must be finite seconds ≥ 0")
        if not 0 < self.run_timeout_s < math.inf:
            raise UsageError("run_timeout_s must be a positive number of seconds")
        unknown = sorted(set(self.damage) - set(DAMAGE_KINDS))
        if unknown:
            raise UsageError(f"unknown damage {unknown}: known are {', '.join(DAMAGE_KINDS)}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ChaosPlan:
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise UsageError(
                    f"unknown chaos plan key {key!r}: known keys are {', '.join(sorted(known))}"
                )
            default = getattr(cls(), key)
            if isinstance(default, tuple):
                if not isinstance(value, list | tuple) or not all(
                    isinstance(v, str) for v in value
                ):
                    raise UsageError(f"chaos plan key {key!r} must be a list of names")
                value = tuple(value)
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"chaos plan key {key!r} must be a number, not {value!r}")
            elif isinstance(default, int) and not isinstance(default, bool):
                if value != int(value):
                    raise UsageError(f"chaos plan key {key!r} must be a whole number")
                value = int(value)
            values[key] = value
        return cls(**values)

    @classmethod
    def load(cls, path: Path) -> ChaosPlan:
        """A plan file: TOML (`.toml`) or JSON (anything else)."""
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the chaos plan {path}: {exc.strerror}") from None
        try:
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"the chaos plan {path} does not parse: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"the chaos plan {path} must be a table/object of keys")
        return cls.from_mapping(data)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def draw(self, seed: int, index: int) -> RunPlan:
        """Run `index`'s plan: a function of the seed and the index only."""
        rng = random.Random(f"tether-chaos:{seed}:{index}")
        faults = FaultPlan(
            seed=rng.randrange(2**31),
            model_latency=self.model_latency,
            model_fail_rate=self.model_fail_rate,
            model_malformed_rate=self.model_malformed_rate,
            tool_latency=self.tool_latency,
            tool_fail_rate=self.tool_fail_rate,
            tool_corrupt_rate=self.tool_corrupt_rate,
            mcp_fail_rate=self.mcp_fail_rate,
            mcp_timeout_rate=self.mcp_timeout_rate,
            mcp_disconnect_rate=self.mcp_disconnect_rate,
        )
        kills = (
            rng.randint(1, self.max_kills)
            if self.max_kills and rng.random() < self.kill_share
            else 0
        )
        damage = (
            self.damage[index % len(self.damage)]
            if self.damage and rng.random() < self.damage_share
            else None
        )
        budget: dict[str, Any] = {}
        ledger: float | None = None
        if rng.random() < self.tiny_budget_share:
            kind = BUDGET_KINDS[rng.randrange(len(BUDGET_KINDS))]
            tiny: dict[str, dict[str, Any]] = {
                "steps": {"max_steps": rng.randint(2, 6)},
                "cost": {"max_cost_usd": round(rng.uniform(0.002, 0.01), 4)},
                "tokens": {"max_tokens": rng.randint(8_000, 40_000)},
            }
            if kind == "ledger":
                ledger = round(rng.uniform(0.002, 0.01), 4)
            else:
                budget = tiny[kind]
        delete = kills > 0 and rng.random() < self.delete_committed_share
        return RunPlan(index=index, faults=faults, kills=kills, damage=damage, limits=budget,
                       daily_usd=ledger, delete_committed=delete,
                       kill_rng_seed=rng.randrange(2**31))  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class RunPlan:
    """One run's share of a chaos plan."""

    index: int
    faults: FaultPlan
    kills: int
    damage: str | None
    limits: dict[str, Any]
    """Limit overrides (a tiny budget), or empty."""
    daily_usd: float | None = None
    """A tiny daily budget for the store's ledger (scope `global`), or None."""
    delete_committed: bool = False
    kill_rng_seed: int
    """Seeds where the kills land, relative to how far the run has got."""
