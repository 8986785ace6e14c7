"""`tether chaos`: drive an agent many times under a seeded fault plan and check invariants.

Each run lives in its own folder with its own SQLite store. Its processes are real: a
child (`_child.py`) drives the run under the run's fault plan, which SIGKILLs it at drawn
journal positions; the harness then resumes the run in a fresh child, until the run ends.
After the run, the harness checks the invariants on the journal and the effect log, then
damages a copy of the store and checks that the damage is detected. See `docs/TESTING.md`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..chaos import FAULT_KINDS, MCP_FAULT_KINDS
from ..journal import SQLiteStore, new_run_id, read_events
from ..state import RunState, fold
from ._damage import copy_store, damage_copy, delete_committed, undetected
from ._effects import read_effects
from ._plan import ChaosPlan, RunPlan

__all__ = ["REPORTED_KINDS", "ChaosReport", "ChaosTarget", "RunOutcome", "run_chaos"]

REPORTED_KINDS = (*FAULT_KINDS, "event_damage", "snapshot_damage", "missing_event_damage",
                  "tiny_budget")  # fmt: skip
"""Every kind of fault `tether chaos` injects; the report counts each (and
`MCP_FAULT_KINDS` too when the agent has tools from MCP servers)."""
TERMINAL = ("completed", "stopped", "failed", "cancelled")
UNEXPECTED = "the run stopped on an unexpected"  # the loop guard's reason (loop/_guard.py)


@dataclass(frozen=True, kw_only=True)
class ChaosTarget:
    """What to run: an agent spec (`module:attr`, `file.py:attr`), its arguments and a task.

    A string argument may contain `{run_dir}`, replaced by the run's own folder (where a
    tool can keep its world, as the demo keeps its workspace)."""

    agent_spec: str
    task: str
    agent_args: dict[str, Any] = field(default_factory=dict)

    def args_for(self, run_dir: Path) -> dict[str, Any]:
        return {k: v.replace("{run_dir}", str(run_dir)) if isinstance(v, str) else v
                for k, v in self.agent_args.items()}  # fmt: skip


@dataclass(kw_only=True)
class RunOutcome:
    index: int
    run_id: str
    status: str = ""
    reason: str = ""
    processes: int = 0
    kills: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    damage: str | None = None
    budget: str | None = None
    reruns: int = 0
    """Idempotent calls executed again under the same key (allowed: their outcome was lost)."""
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.index, "run_id": self.run_id, "ok": self.ok, "status": self.status,
            "reason": self.reason, "processes": self.processes, "kills": self.kills,
            "faults": dict(sorted(self.faults.items())), "damage": self.damage,
            "budget": self.budget, "idempotent_reruns": self.reruns,
            "violations": self.violations, "seconds": round(self.seconds, 3),
        }  # fmt: skip


@dataclass(kw_only=True)
class ChaosReport:
    seed: int
    plan: ChaosPlan
    runs: list[RunOutcome]
    seconds: float
    clean_length: int
    """Events in a fault-free reference run (kills are drawn within this span)."""
    source_tools: int = 0
    """Tools the agent's sources (MCP servers) offered in the reference run."""

    @property
    def reported_kinds(self) -> tuple[str, ...]:
        """The kinds the report always counts: MCP faults only for an agent with MCP tools."""
        return (*REPORTED_KINDS, *MCP_FAULT_KINDS) if self.source_tools else REPORTED_KINDS

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.runs)

    @property
    def failed(self) -> list[RunOutcome]:
        return [r for r in self.runs if not r.ok]

    def fault_counts(self) -> dict[str, int]:
        total: collections.Counter[str] = collections.Counter()
        for r in self.runs:
            total.update(r.faults)
        kinds = self.reported_kinds
        extra = {kind: n for kind, n in sorted(total.items()) if kind not in kinds}
        return {**{kind: total[kind] for kind in kinds}, **extra}

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "seed": self.seed, "runs": len(self.runs),
            "failed_runs": [r.index for r in self.failed], "faults": self.fault_counts(),
            "seconds": round(self.seconds, 3), "clean_length": self.clean_length,
            "source_tools": self.source_tools, "plan": self.plan.to_json(),
            "results": [r.to_json() for r in self.runs],
        }  # fmt: skip


class _Runner:
    def __init__(self, target: ChaosTarget, plan: ChaosPlan, seed: int, workdir: Path) -> None:
        self.target, self.plan, self.seed, self.workdir = target, plan, seed, workdir

    def child(
        self, run_dir: Path, run_id: str, run: RunPlan | None, kill: tuple[str, int] | None
    ) -> subprocess.CompletedProcess[str]:
        faults = run.faults.to_json() if run else {}
        if kill is not None:
            faults[f"kill_{kill[0]}_seq"] = kill[1]
        config = {
            "store": str(run_dir / "t.db"), "run_id": run_id,
            "agent_spec": self.target.agent_spec, "agent_args": self.target.args_for(run_dir),
            "task": self.target.task, "limits": run.limits if run else {}, "faults": faults,
            "daily_usd": run.daily_usd if run else None,
            "faults_log": str(run_dir / "faults.log"),
            "effects_log": str(run_dir / "effects.jsonl"),
            "snapshot_every": self.plan.snapshot_every,
        }  # fmt: skip
        path = run_dir / "child.json"
        path.write_text(json.dumps(config))
        try:
            return subprocess.run(
                [sys.executable, "-m", "tether.testing._child", str(path)],
                capture_output=True, text=True, timeout=self.plan.run_timeout_s,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:  # run() killed the child it started
            return subprocess.CompletedProcess(exc.cmd, -1, "", "hung: timed out")

    def calibrate(self) -> tuple[int, int]:
        """Length of a fault-free run, so kills can be drawn within it, and how many tools
        the agent's sources offered in it."""
        run_dir = self.workdir / "reference"
        run_dir.mkdir(parents=True, exist_ok=True)
        run_id = new_run_id()
        done = self.child(run_dir, run_id, None, None)
        return max(3, _head(run_dir / "t.db", run_id)), _source_tools(done.stdout)

    def run(self, index: int, clean_length: int) -> RunOutcome:
        """One run, checked; a failure of the harness itself is reported as the run's."""
        started = time.monotonic()
        try:
            return self._run(index, clean_length, started)
        except Exception as exc:
            outcome = RunOutcome(index=index, run_id="", seconds=time.monotonic() - started)
            outcome.violations.append(f"the harness failed: {type(exc).__name__}: {exc}")
            return outcome

    def _run(self, index: int, clean_length: int, started: float) -> RunOutcome:
        run = self.plan.draw(self.seed, index)
        run_dir = self.workdir / f"run-{index}"
        run_dir.mkdir(parents=True, exist_ok=True)
        outcome = RunOutcome(index=index, run_id=new_run_id())
        if run.limits or run.daily_usd is not None:
            shown = {**run.limits, **({"daily_usd": run.daily_usd} if run.daily_usd else {})}
            outcome.budget = ", ".join(f"{k}={v}" for k, v in shown.items())
            outcome.faults["tiny_budget"] += 1
        rng = random.Random(run.kill_rng_seed)
        span = max(2, clean_length // (run.kills + 1))
        final: subprocess.CompletedProcess[str] | None = None
        while final is None:
            kill = None
            if outcome.kills < run.kills:
                head = _head(run_dir / "t.db", outcome.run_id)
                side = "before" if rng.random() < self.plan.kill_before_share else "after"
                kill = (side, max(1, head) + rng.randint(1, span))
            done = self.child(run_dir, outcome.run_id, run, kill)
            outcome.processes += 1
            if done.returncode == -signal.SIGKILL and kill is not None:
                outcome.kills += 1
                if run.delete_committed and outcome.kills == 1:
                    deleted = delete_committed(run_dir / "t.db", outcome.run_id, rng)
                    if deleted is not None:
                        outcome.faults["deleted_committed_event"] += 1
                        outcome.damage = f"live:{deleted.kind}@{deleted.seq}"
                continue
            final = done
        outcome.faults.update(_fault_log(run_dir / "faults.log"))
        if final.returncode != 0:
            text = (final.stdout + final.stderr).strip().splitlines()
            outcome.violations.append(
                f"process exited {final.returncode}: " + (text[-1] if text else "(no output)")
            )
        elif "Traceback (most recent call last)" in final.stderr:
            outcome.violations.append("an exception was printed: " + final.stderr.strip()[-300:])
        asyncio.run(self.check(run_dir, run, outcome))
        outcome.seconds = time.monotonic() - started
        return outcome

    async def check(self, run_dir: Path, run: RunPlan, outcome: RunOutcome) -> None:
        violations, outcome.reruns = _effects(run_dir / "effects.jsonl")
        outcome.violations += violations
        db = run_dir / "t.db"
        if not db.exists():
            outcome.violations.append("no store was written")
            return
        store = SQLiteStore(db)
        try:
            events = await read_events(store, outcome.run_id)
        except Exception as exc:
            outcome.violations.append(f"the journal cannot be read: {type(exc).__name__}: {exc}")
            return
        finally:
            await store.close()
        state = fold(events)
        outcome.status, outcome.reason = state.status, state.reason or ""
        outcome.violations += _terminal(state) + _spend(state, run.daily_usd)
        if run.damage is not None and events:
            copy = copy_store(db, run_dir / "damaged")
            damage = damage_copy(copy, outcome.run_id, run.damage, random.Random(run.kill_rng_seed))
            if damage is not None:
                outcome.damage = f"{damage.kind}@{damage.seq}"
                outcome.faults[f"{damage.kind}_damage"] += 1
                missed = await undetected(copy, outcome.run_id, damage)
                if missed is not None:
                    outcome.violations.append(f"damage not detected ({damage.what}): {missed}")


def _head(db: Path, run_id: str) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT head_seq FROM runs WHERE run_id=?", (run_id,)).fetchone()
    except sqlite3.Error:
        return 0
    finally:
        con.close()
    return int(row[0]) if row else 0


def _source_tools(stdout: str) -> int:
    """`source_tools` of a child's outcome line (0 when it printed none)."""
    lines = stdout.strip().splitlines()
    try:
        outcome = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return 0
    found = outcome.get("source_tools", 0) if isinstance(outcome, dict) else 0
    return found if isinstance(found, int) else 0


def _fault_log(path: Path) -> collections.Counter[str]:
    if not path.exists():
        return collections.Counter()
    return collections.Counter(line for line in path.read_text().splitlines() if line)


def _terminal(state: RunState) -> list[str]:
    if state.status not in TERMINAL:
        return [f"the run ended {state.status!r}, not in a terminal status"]
    if not state.reason:
        return [f"the run ended {state.status} without a reason"]
    if state.reason.startswith(UNEXPECTED):
        return [f"an unhandled exception ended the run: {state.reason}"]
    return []


def _spend(state: RunState, daily_usd: float | None) -> list[str]:
    limits, found = state.limits, []
    if daily_usd is not None and state.cost_usd > daily_usd + 1e-9:
        found.append(f"${state.cost_usd:.6f} spent with a daily budget of ${daily_usd}")
    if limits.get("max_steps") is not None and state.cycle > limits["max_steps"]:
        found.append(f"{state.cycle} steps taken with a limit of {limits['max_steps']}")
    if limits.get("max_tokens") is not None and state.tokens > limits["max_tokens"]:
        found.append(f"{state.tokens} tokens used with a limit of {limits['max_tokens']}")
    cost = limits.get("max_cost_usd")
    if cost is not None and state.cost_usd > cost + 1e-9:
        found.append(f"${state.cost_usd:.6f} spent with a limit of ${cost}")
    return found


def _effects(log: Path) -> tuple[list[str], int]:
    """Violations (an effect applied twice under one key, a non-idempotent call repeated),
    and how many idempotent calls were re-run (allowed)."""
    effects: collections.Counter[tuple[str, str]] = collections.Counter()
    runs: collections.Counter[tuple[str, str, bool]] = collections.Counter()
    for e in read_effects(log):
        if e.kind == "effect":
            effects[(e.tool, e.key)] += 1
        else:
            runs[(e.tool, e.key, e.idempotent)] += 1
    found = [f"effect of {tool} applied {n} times under key {key}"
             for (tool, key), n in sorted(effects.items()) if n > 1]  # fmt: skip
    found += [f"non-idempotent {tool} ran {n} times under key {key}"
              for (tool, key, idem), n in sorted(runs.items()) if n > 1 and not idem]  # fmt: skip
    reruns = sum(n - 1 for (_, _, idem), n in runs.items() if idem and n > 1)
    return found, reruns


def run_chaos(
    target: ChaosTarget,
    plan: ChaosPlan,
    *,
    workdir: Path,
    seed: int = 0,
    runs: int = 20,
    only: int | None = None,
    duration_s: float | None = None,
    jobs: int = 1,
    on_run: Callable[[RunOutcome], None] | None = None,
) -> ChaosReport:
    """Drive `target` `runs` times (or only run `only`, or for `duration_s`) and check
    every run's invariants. Runs are numbered from 1; run I's plan depends only on
    (seed, I), so any run can be reproduced alone."""
    started = time.monotonic()
    runner = _Runner(target, plan, seed, workdir)
    clean, source_tools = runner.calibrate()
    soak_from = time.monotonic()

    def indices() -> Iterator[int]:
        if only is not None:
            yield only
            return
        n = 0
        while (duration_s is None and n < runs) or (
            duration_s is not None and (n == 0 or time.monotonic() - soak_from < duration_s)
        ):
            n += 1
            yield n

    outcomes: list[RunOutcome] = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        pending = collections.deque[Any]()
        for index in indices():
            pending.append(pool.submit(runner.run, index, clean))
            while len(pending) >= max(1, jobs) or (pending and pending[0].done()):
                outcome = pending.popleft().result()
                outcomes.append(outcome)
                if on_run is not None:
                    on_run(outcome)
        for future in pending:
            outcome = future.result()
            outcomes.append(outcome)
            if on_run is not None:
                on_run(outcome)
    outcomes.sort(key=lambda r: r.index)
    return ChaosReport(seed=seed, plan=plan, runs=outcomes, seconds=time.monotonic() - started,
                       clean_length=clean, source_tools=source_tools)  # fmt: skip
