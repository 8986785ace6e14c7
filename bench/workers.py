"""Workers benchmark: throughput of `tether worker` processes on PostgreSQL, and the durable
cost of a step on PostgreSQL.

The workload is the loop benchmark's (`bench/_compare_agents.py`): a scripted model that
decides from the number of messages only (O(1) per turn) and calls `fetch(i)` N times,
whose result is a deterministic 1,024-character text, then answers. One step = one model
turn (a cycle): N tool steps and the final answer.

1. Throughput: 100 runs of 20 tool steps are submitted, then 1, 2 or 4 `tether worker
   --until-idle` processes drive them all at once (concurrency 100/W each) with a 20 ms
   simulated model latency (`TETHER_CHAOS=model_latency=0.02`). Steps per second = every
   step of every run / (last `run.completed` - first event a worker wrote), read from the
   journals, so process start-up is not counted.
2. Durable overhead per step: one 1,000-step run driven in process by `Runtime.start`
   on `memory://` and on PostgreSQL, in paired rounds (each a fresh child process); the
   overhead is the median of (PostgreSQL - memory) / N. Both runtimes have the budget
   ledger off, so the difference is the journal's; the same runs with the ledger on (on
   PostgreSQL its own transactions beside the appends), without and with limits set, are
   reported beside it. The time
   spent inside store calls is also measured directly. The raw floor (one autocommit
   INSERT of a 1.2 KB row over the same connection pool) is measured beside it.
3. Resume: a 2,000-step run is stopped after 1,000 steps; a fresh process opens the store
   and resumes it, and the time until its next model request is journaled is measured
   (lease, snapshot + verified tail, `run.resumed`, the context rebuilt).

Run from the repository root, with the PostgreSQL server of the test suite:

    .venv/bin/python bench/workers.py            # full run (~3 min), rewrites bench/RESULTS.md
    .venv/bin/python bench/workers.py --quick    # smoke run (seconds), writes nothing

`--postgres URL` picks the server (default: TETHER_TEST_POSTGRES or the local `test`
database); every measurement uses a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import _compare_agents as workload  # noqa: E402  (light: never imports langgraph or dbos)

SECTION = "workers"
DEFAULT_PG = os.environ.get("TETHER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
TARGET_OVERHEAD_MS = 2.0
REFERENCES = [
    ("DBOS on PostgreSQL", "3.9 ms per step; ~2.6 s to resume a 1,000-step workflow"),
    ("LangGraph, PostgreSQL checkpointer", "43 ms per step"),
    ("a synchronous PostgreSQL commit over loopback", "about 0.2 ms"),
]
"""Given in the issue for the same transcript on the same kind of machine (not measured here)."""


# -- the agent (also served to `tether worker --agent bench/workers.py:bench_agent`) --------


def bench_agent(n: int = 20) -> Any:
    """The loop benchmark's agent: `fetch(i)` N times (1,024 characters each), then answer."""
    import json as _json

    from tether import Agent, Limits, tool
    from tether.models import (
        ModelRequest,
        ModelResponse,
        ModelUsage,
        ScriptedModel,
        ToolCall,
        call,
        estimate_text_tokens,
        estimate_tokens,
    )

    texts = workload.outputs(n)

    @tool(idempotent=True)
    async def fetch(i: int) -> str:
        """Fetch one page of results.

        Args:
            i: the page number
        """
        return texts[i]

    def script(request: ModelRequest) -> Any:
        done = (len(request.messages) - 2) // 2  # mission, task, then (call, result) pairs
        if done >= n:
            return workload.FINAL_ANSWER
        return call("fetch", {"i": done})

    class BenchModel(ScriptedModel):
        """O(1) work per turn: the token estimate is kept incrementally (no compaction)."""

        def __init__(self) -> None:
            super().__init__(script, context_window=1_000_000_000)
            self._counted = 0
            self._tokens = 0

        def count_tokens(self, messages: Any, tools: Any = ()) -> int:
            if len(messages) < self._counted:
                self._counted = self._tokens = 0
            self._tokens += estimate_tokens(messages[self._counted :])
            self._counted = len(messages)
            return self._tokens + estimate_tokens((), tools)

        async def complete(self, request: ModelRequest, *, on_text: Any = None) -> ModelResponse:
            input_tokens = self.count_tokens(request.messages, request.tools)
            turn = self._turn(request)
            cycle = (len(request.messages) - 2) // 2 + 1
            calls = tuple(
                ToolCall(id=f"call_{cycle}_{i}", name=name, arguments=_json.dumps(args))
                for i, (name, args) in enumerate(turn.calls)
            )
            output_tokens = estimate_text_tokens(turn.text) + sum(
                estimate_text_tokens(c.name + c.arguments) for c in calls
            )
            return ModelResponse(
                content=turn.text,
                tool_calls=calls,
                finish_reason="tool_calls" if calls else "stop",
                usage=ModelUsage(input_tokens=input_tokens, output_tokens=output_tokens),
                model=self.name,
            )

    return Agent(
        name="loop-bench",
        instructions="Fetch the result pages you are asked for, then answer.",
        tools=[fetch],
        model=BenchModel(),
        limits=Limits(max_steps=None, max_time_s=None, max_cost_usd=None),
    )


# -- PostgreSQL schemas ------------------------------------------------------------------


def schema_url(base: str, schema: str, **options: Any) -> str:
    extra = "".join(f"&{k}={v}" for k, v in options.items())
    return f"{base}{'&' if '?' in base else '?'}schema={schema}{extra}"


def new_schema() -> str:
    return f"bench_{os.getpid()}_{secrets.token_hex(3)}"


def drop_schema(base: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def server_version(base: str) -> str:
    import psycopg

    with psycopg.connect(base) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


# -- 1. throughput -------------------------------------------------------------------------


async def submit_runs(url: str, runs: int, n: int) -> list[str]:
    from tether.journal import open_store
    from tether.worker import submit_run

    store = open_store(url)
    try:
        agent = bench_agent(n)
        return [
            await submit_run(
                store,
                agent,
                workload.TASK,
                agent_spec="bench/workers.py:bench_agent",
                agent_args={"n": n},
            )
            for _ in range(runs)
        ]
    finally:
        await store.close()


async def journal_span(url: str, run_ids: list[str]) -> tuple[int, float, list[str]]:
    """(steps, seconds from the first worker-written event to the last completion, statuses)."""
    from datetime import datetime

    from tether.journal import open_store, read_events

    store = open_store(url)
    try:
        first, last, steps, statuses = math.inf, 0.0, 0, []
        for run_id in run_ids:
            events = await read_events(store, run_id)
            record = await store.get_run(run_id)
            statuses.append(record.summary.status)
            steps += record.summary.steps
            first = min(first, datetime.fromisoformat(events[1].ts).timestamp())
            last = max(last, datetime.fromisoformat(events[-1].ts).timestamp())
        return steps, last - first, statuses
    finally:
        await store.close()


def throughput_round(base: str, workers: int, runs: int, n: int, latency: float) -> dict[str, Any]:
    schema = new_schema()
    url = schema_url(base, schema, pool_max=8)
    try:
        run_ids = asyncio.run(submit_runs(url, runs, n))
        env = {k: v for k, v in os.environ.items() if k != "TETHER_STORE"}
        env["TETHER_CHAOS"] = f"model_latency={latency}"
        concurrency = math.ceil(runs / workers)
        load0 = os.getloadavg()[0]
        wall0 = time.perf_counter()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tether",
                    "worker",
                    "--store",
                    url,
                    "--until-idle",
                    "--concurrency",
                    str(concurrency),
                    "--log-level",
                    "warning",
                    "--agent",
                    f"{BENCH_DIR / 'workers.py'}:bench_agent",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for _ in range(workers)
        ]
        errors = [p.communicate(timeout=600)[1].decode() for p in procs]
        wall = time.perf_counter() - wall0
        if any(p.returncode for p in procs):
            raise SystemExit(f"a worker failed: {errors}")
        steps, span, statuses = asyncio.run(journal_span(url, run_ids))
        if statuses != ["completed"] * runs:
            raise SystemExit(f"not every run completed: {sorted(set(statuses))}")
        return {
            "workers": workers,
            "concurrency": concurrency,
            "steps": steps,
            "span_s": span,
            "wall_s": wall,
            "steps_per_s": steps / span,
            "load_start": load0,
            "load_end": os.getloadavg()[0],
        }
    finally:
        drop_schema(base, schema)


# -- 2 and 3: children ---------------------------------------------------------------------


class Timed:
    """Times every coroutine method of a store (wall), per method name."""

    def __init__(self, inner: Any, sink: dict[str, list[float]]) -> None:
        self._inner = inner
        self._sink = sink
        self.url = inner.url

    def __getattr__(self, name: str) -> Any:
        import inspect

        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        sink = self._sink

        async def timed(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            finally:
                rec = sink.setdefault(name, [0, 0.0])
                rec[0] += 1
                rec[1] += time.perf_counter() - t

        self.__dict__[name] = timed
        return timed


class _Stop(BaseException):
    pass


async def child_drive(spec: dict[str, Any]) -> dict[str, Any]:
    """One run of N steps under Runtime.start, timed end to end (and inside the store)."""
    import gc

    from tether import Runtime
    from tether.journal import open_store

    n = spec["n"]
    calls: dict[str, list[float]] = {}
    store = Timed(open_store(spec["url"]), calls)
    agent = bench_agent(n)
    runtime = Runtime(store, ledger=bool(spec.get("ledger")))
    if runtime.ledger is not None:
        await runtime.ledger.limits()  # open the ledger's tables before the clock starts
    if spec.get("limits"):
        from tether.budget import BudgetLimits

        # Limits that every check reads and sums but no call reaches.
        await runtime.set_budget("global", BudgetLimits(hourly=1e6, daily=1e7))
        await runtime.set_budget(f"agent:{agent.name}", BudgetLimits(per_run=1e6))
    await store.run_ids()  # connect and migrate before the clock starts
    calls.clear()
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    result = await runtime.start(agent, workload.TASK)
    t1, c1 = time.perf_counter(), time.process_time()
    await runtime.close()
    if result.status != "completed" or result.steps != n + 1:
        raise SystemExit(f"the run did not finish as scripted: {result}")
    inside = sum(v[1] for v in calls.values())
    return {
        "n": n,
        "wall_s": t1 - t0,
        "cpu_s": c1 - c0,
        "store_s": inside,
        "store_calls": {k: v[0] for k, v in calls.items()},
    }


async def child_floor(spec: dict[str, Any]) -> dict[str, Any]:
    """Autocommit INSERT of a 1.2 KB bytea row through a psycopg pool: the commit floor."""
    from tether.journal._postgres import PostgresStore

    store = PostgresStore(spec["url"])
    await store.run_ids()
    pool = await store._ready()
    blob = os.urandom(1200)
    times = []
    async with pool.connection() as conn:
        await conn.execute("DROP TABLE IF EXISTS floor")
        await conn.execute("CREATE TABLE floor (i BIGINT PRIMARY KEY, d BYTEA)")
    for i in range(spec["n"]):
        t = time.perf_counter()
        async with pool.connection() as conn:
            await conn.execute("INSERT INTO floor (i, d) VALUES (%s, %s)", (i, blob))
        times.append(time.perf_counter() - t)
    await store.close()
    times = times[len(times) // 10 :]  # warm-up
    return {"median_ms": statistics.median(times) * 1000, "n": len(times)}


async def child_prepare_resume(spec: dict[str, Any]) -> dict[str, Any]:
    """Drive a 2N-step run and stop it at a step boundary after N steps."""
    from tether import Runtime
    from tether.journal import open_store

    n = spec["n"]
    runtime = Runtime(open_store(spec["url"]), ledger=False)
    agent = bench_agent(2 * n)
    run_id = await runtime.create(agent, workload.TASK)

    def stop(progress: Any) -> None:
        state = progress.state
        if state.steps >= n and not state.pending_calls and state.open_model_request is None:
            raise _Stop

    with contextlib.suppress(_Stop):
        await runtime.resume(agent, run_id, observer=stop)
    record = await runtime.store.get_run(run_id)
    await runtime.close()
    return {"run_id": run_id, "steps": record.summary.steps, "events": record.head_seq}


async def child_resume(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: open the store and resume; time until the next step is journaled."""
    t0 = time.perf_counter()
    from tether import Runtime
    from tether.journal import load_run, open_store

    agent = bench_agent(2 * spec["n"])
    t_import = time.perf_counter()
    runtime = Runtime(open_store(spec["url"]), ledger=False)
    marks: dict[str, float] = {}

    def observe(progress: Any) -> None:
        # The first append after `run.resumed` is the run's next step being journaled.
        if progress.event == "run.resumed":
            marks["resumed"] = time.perf_counter()
        elif "resumed" in marks and progress.event != "tool.started":
            marks["next"] = time.perf_counter()
            raise _Stop

    t1 = time.perf_counter()
    with contextlib.suppress(_Stop):
        await runtime.resume(agent, spec["run_id"], observer=observe)
    t2 = marks["next"]
    t3 = time.perf_counter()
    loaded = await load_run(runtime.store, spec["run_id"])
    t4 = time.perf_counter()
    await runtime.close()
    return {
        "resume_s": t2 - t1,
        "resumed_event_s": marks["resumed"] - t1,
        "imports_s": t_import - t0,
        "load_again_s": t4 - t3,
        "snapshot_seq": loaded.snapshot_seq,
        "replayed": loaded.replayed,
    }


CHILDREN = {
    "drive": child_drive,
    "floor": child_floor,
    "prepare_resume": child_prepare_resume,
    "resume": child_resume,
}


def child(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(spec)],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )  # fmt: skip
    for line in done.stdout.splitlines():
        if line.startswith("@@result "):
            result: dict[str, Any] = json.loads(line[len("@@result ") :])
            return result
    raise SystemExit(f"child {kind} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


# -- the report ----------------------------------------------------------------------------


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} CPUs ({cpu}), {system}, Python {platform.python_version()}"


def git_label() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src/tether"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return f"git HEAD {head}" + (" + uncommitted changes under src/tether" if dirty else "")


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:,.{digits}f}"


def report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    t = figures["throughput"]
    o = figures["overhead"]
    led = figures.get("ledger", {"mem": math.nan, "pg": math.nan})
    lim = figures.get("limits", {"mem": math.nan, "pg": math.nan})
    r = figures["resume"]
    flush = figures["floor"]["median_ms"] - figures["floor_off"]["median_ms"]
    rest = (
        o["overhead_ms"]
        - o["commits_per_step"] * flush
        - o["commits_per_step"] * figures["floor_off"]["median_ms"]
    )
    overhead_ok = o["overhead_ms"] <= TARGET_OVERHEAD_MS
    lines = [
        "## Workers on PostgreSQL: throughput, durable cost per step, resume",
        "",
        f"Measured {figures['when']} on {figures['code']} in {figures['elapsed_s']:.0f} s.",
        "",
        f"- **Machine:** {figures['machine']}; PostgreSQL {figures['pg_version']} on the same "
        f"machine over loopback (TCP 127.0.0.1, default settings: synchronous_commit on); "
        f"1-minute load average {figures['load'][0]:.1f}-{figures['load'][1]:.1f} during the "
        "run (other work shared the machine).",
        "- **Workload:** the loop benchmark's (`bench/_compare_agents.py`): a scripted model "
        "deciding from the message count (O(1) per turn) calls `fetch(i)` N times, each "
        "result 1,024 characters, then answers. A step is a model turn (a cycle): N tool "
        "steps + the final answer. Each tool step is 2 appends, one round trip each on "
        "PostgreSQL: the previous turn's tool.completed + cycle.started + model.requested, "
        "then model.completed + tool.requested (the turn's last tool result is staged and "
        "rides in the next step's first append).",
        "- **Reproduce:** `.venv/bin/python bench/workers.py` (from the repository root; "
        "`--postgres URL` for another server).",
        "",
        "| target | measured | result |",
        "|---|---|---|",
        f"| durable overhead per step on PostgreSQL <= {TARGET_OVERHEAD_MS:g} ms "
        f"({args.n:,} steps, median of paired runs vs memory://) | {fmt(o['overhead_ms'])} ms "
        f"({fmt(o['store_ms'])} ms inside store calls) | {'PASS' if overhead_ok else 'FAIL'} |",
        "",
        f"### 1. Throughput: {args.runs} concurrent runs, {args.steps} tool steps each, "
        f"{args.latency * 1000:g} ms model latency",
        "",
        "Each worker is a `tether worker --until-idle` process with concurrency "
        "runs/workers; steps/s counts every step of every run between the first event a "
        f"worker journaled and the last completion (median of {args.rounds} rounds).",
        "",
        "| workers | concurrency each | steps | seconds | steps/s | vs 1 worker "
        "| rounds (steps/s) |",
        "|---|---|---|---|---|---|---|",
    ]
    base = t[0]["steps_per_s"]
    for row in t:
        lines.append(
            f"| {row['workers']} | {row['concurrency']} | {row['steps']:,} | "
            f"{fmt(row['span_s'], 2)} | {fmt(row['steps_per_s'], 0)} | "
            f"{row['steps_per_s'] / base:.2f}x | "
            f"{', '.join(fmt(x, 0) for x in row['rounds'])} |"
        )
    lines += [
        "",
        f"With {os.cpu_count()} CPUs shared by the workers, the PostgreSQL server and this "
        "script, throughput is bounded by CPU, not by the store: a step costs the worker "
        f"about {fmt(o['pg_cpu_ms'], 2)} ms of CPU (measured below), and the ideal with "
        f"{args.runs} runs at {args.latency * 1000:g} ms latency and no CPU cost would be "
        f"{args.runs / args.latency:,.0f} steps/s.",
        "",
        f"### 2. Durable cost per step ({args.n:,} steps, {args.pairs} paired rounds, each run "
        "in a fresh process)",
        "",
        "| measure | ms/step | CPU ms/step |",
        "|---|---|---|",
        f"| memory:// (same loop, nothing stored), ledger off | {fmt(o['mem_ms'])} | "
        f"{fmt(o['mem_cpu_ms'])} |",
        f"| PostgreSQL, ledger off | {fmt(o['pg_ms'])} | {fmt(o['pg_cpu_ms'])} |",
        f"| **durable overhead** (PostgreSQL - memory, median of pairs; min … max) | "
        f"**{fmt(o['overhead_ms'])}** ({fmt(o['overhead_min'])} … {fmt(o['overhead_max'])}) | - |",
        f"| of which inside PostgreSQL store calls ({o['store_calls_per_step']:.2f} calls/step, "
        f"{o['commits_per_step']:.2f} of them appends) | {fmt(o['store_ms'])} | - |",
        f"| the same with the budget ledger on, memory:// → PostgreSQL (the ledger's reserve "
        f"and settle are two more transactions per step there; median of "
        f"{max(1, args.pairs // 2)} runs each) | {fmt(led['mem'])} → {fmt(led['pg'])} "
        f"(overhead {fmt(led['pg'] - led['mem'])}) | - |",
        f"| the same with limits set (hourly and daily on `global`, per-run on the agent; "
        f"never reached, but every check reads and sums them) | {fmt(lim['mem'])} → "
        f"{fmt(lim['pg'])} (overhead {fmt(lim['pg'] - lim['mem'])}) | - |",
        f"| raw floor: one autocommit INSERT of 1.2 KB through the pool | "
        f"{fmt(figures['floor']['median_ms'])} per commit | - |",
        f"| PostgreSQL with `synchronous_commit=off` (no disk flush at commit) | "
        f"{fmt(o['off_ms'])} | {fmt(o['off_cpu_ms'])} |",
        f"| overhead without the flush (median of pairs) | {fmt(o['off_overhead_ms'])} "
        f"({fmt(o['off_store_ms'])} inside store calls) | - |",
        f"| raw floor without the flush | {fmt(figures['floor_off']['median_ms'])} per commit "
        "| - |",
        "",
        "Where the overhead goes, from the two floors (medians; the split is derived, not timed):",
        "",
        "| part | ms/step |",
        "|---|---|",
        f"| disk flush at commit: {o['commits_per_step']:.2f} appends x {fmt(flush)} ms "
        f"(floor - floor without the flush) | {fmt(o['commits_per_step'] * flush)} |",
        f"| driver round trip of a commit without the flush: {o['commits_per_step']:.2f} x "
        f"{fmt(figures['floor_off']['median_ms'])} ms | "
        f"{fmt(o['commits_per_step'] * figures['floor_off']['median_ms'])} |",
        f"| the rest: the append statement (head move + insert + indexes), parameters, "
        f"snapshots, scheduling | {fmt(rest)} |",
        "",
        "`synchronous_commit=off` is shown only to separate the disk's share: it is not a "
        "safe setting for Tether (a database crash could lose acknowledged appends).",
        "",
        "### 3. Resume a 1,000-step run",
        "",
        f"A run of {2 * args.n:,} steps stopped at a step boundary after {r['steps']:,} steps "
        f"({r['events']:,} events); a fresh process opens the store and resumes it. Time from "
        "`Runtime.resume` to the first event of its next step (lease, newest snapshot + "
        "verified tail, `run.resumed`, the model context rebuilt from the journal), median of "
        f"{args.rounds} processes:",
        "",
        "| measure | seconds |",
        "|---|---|",
        f"| resume until the run's next step is journaled | {fmt(r['resume_s'])} |",
        f"| of which until `run.resumed` is journaled | {fmt(r['resumed_event_s'])} |",
        f"| load_run again, warm (snapshot at seq {r['snapshot_seq']}, {r['replayed']} events "
        f"replayed) | {fmt(r['load_again_s'])} |",
        "",
        "### Reference figures (given, not measured here)",
        "",
        "For the same transcript on the same kind of machine:",
        "",
    ]
    lines += [f"- {name}: {what}." for name, what in REFERENCES]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--postgres", default=DEFAULT_PG)
    p.add_argument("--quick", action="store_true", help="small sizes; writes nothing")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--latency", type=float, default=0.02)
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n", type=int, default=1000, help="steps of the overhead and resume runs")
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--json", type=Path, help="also save the raw figures here")
    p.add_argument(
        "--report-from", type=Path, help="render (and write) a saved --json run; measure nothing"
    )
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        kind, spec = args.child
        result = asyncio.run(CHILDREN[kind](json.loads(spec)))
        print("@@result " + json.dumps(result), flush=True)
        return 0
    if args.quick:
        args.runs, args.steps, args.workers, args.rounds = 10, 5, "1,2", 1
        args.n, args.pairs, args.no_write = 100, 1, True
    if args.report_from:
        saved = json.loads(args.report_from.read_text())
        for key, value in saved.pop("args").items():
            setattr(args, key, value)
        return publish(saved, args)

    base = args.postgres
    start = time.perf_counter()
    loads = [os.getloadavg()[0]]
    figures: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "code": git_label(),
        "machine": machine(),
        "pg_version": server_version(base),
    }

    # 1. throughput
    rows = []
    counts = [int(w) for w in args.workers.split(",")]
    per: dict[int, list[dict[str, Any]]] = {w: [] for w in counts}
    for r in range(args.rounds):
        for w in counts if r % 2 == 0 else reversed(counts):
            result = throughput_round(base, w, args.runs, args.steps, args.latency)
            per[w].append(result)
            loads.append(result["load_end"])
            print(f"throughput: {w} worker(s) round {r + 1}: {result['steps_per_s']:.0f} steps/s",
                  file=sys.stderr)  # fmt: skip
    for w in counts:
        rounds = per[w]
        best = sorted(rounds, key=lambda x: x["steps_per_s"])[len(rounds) // 2]
        rows.append({**best, "rounds": [x["steps_per_s"] for x in rounds]})
    figures["throughput"] = rows

    # 2. durable overhead: memory, PostgreSQL, and PostgreSQL without the disk flush, in
    # rotating order, each run in a fresh process
    schema = new_schema()
    url = schema_url(base, schema)
    nosync = url + "&options=-csynchronous_commit%3Doff"
    try:
        kinds = {"memory://": "mem", url: "pg", nosync: "off"}
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds.values()}
        for i in range(args.pairs):
            order = list(kinds)[i % 3 :] + list(kinds)[: i % 3]
            for u in order:
                runs[kinds[u]].append(child("drive", {"url": u, "n": args.n}))
            loads.append(os.getloadavg()[0])
            steps = args.n + 1
            d = (runs["pg"][-1]["wall_s"] - runs["mem"][-1]["wall_s"]) / steps * 1000
            print(f"overhead round {i + 1}: {d:.3f} ms/step", file=sys.stderr)
        steps = args.n + 1

        def per_step(kind: str, key: str) -> float:
            return statistics.median(x[key] for x in runs[kind]) / steps * 1000

        def diffs(kind: str) -> list[float]:
            return [
                (q["wall_s"] - m["wall_s"]) / steps * 1000
                for q, m in zip(runs[kind], runs["mem"], strict=True)
            ]

        figures["overhead"] = {
            "mem_ms": per_step("mem", "wall_s"),
            "mem_cpu_ms": per_step("mem", "cpu_s"),
            "pg_ms": per_step("pg", "wall_s"),
            "pg_cpu_ms": per_step("pg", "cpu_s"),
            "off_ms": per_step("off", "wall_s"),
            "off_cpu_ms": per_step("off", "cpu_s"),
            "overhead_ms": statistics.median(diffs("pg")),
            "overhead_min": min(diffs("pg")),
            "overhead_max": max(diffs("pg")),
            "off_overhead_ms": statistics.median(diffs("off")),
            "store_ms": per_step("pg", "store_s"),
            "off_store_ms": per_step("off", "store_s"),
            "store_calls_per_step": statistics.median(
                sum(x["store_calls"].values()) / steps for x in runs["pg"]
            ),
            "commits_per_step": statistics.median(
                x["store_calls"].get("append", 0) / steps for x in runs["pg"]
            ),
        }
        # The budget ledger on (in both): on PostgreSQL it is its own connection and its
        # own transactions (reserve, settle), outside the journal's appends.
        with_ledger = {
            kind: [
                child("drive", {"url": u, "n": args.n, "ledger": True})
                for _ in range(max(1, args.pairs // 2))
            ]
            for kind, u in (("mem", "memory://"), ("pg", url))
        }
        figures["ledger"] = {
            kind: statistics.median(x["wall_s"] for x in xs) / steps * 1000
            for kind, xs in with_ledger.items()
        }
        # And with limits set (last: they stay in the store): each check reads the limits,
        # the window sums and the run's usage.
        with_limits = {
            kind: [
                child("drive", {"url": u, "n": args.n, "ledger": True, "limits": True})
                for _ in range(max(1, args.pairs // 2))
            ]
            for kind, u in (("mem", "memory://"), ("pg", url))
        }
        figures["limits"] = {
            kind: statistics.median(x["wall_s"] for x in xs) / steps * 1000
            for kind, xs in with_limits.items()
        }
        figures["floor"] = child("floor", {"url": url, "n": 2000})
        figures["floor_off"] = child("floor", {"url": nosync, "n": 2000})

        # 3. resume
        prepared = child("prepare_resume", {"url": url, "n": args.n})
        resumes = [
            child("resume", {"url": url, "n": args.n, "run_id": prepared["run_id"]})
            for _ in range(args.rounds)
        ]
        mid = sorted(resumes, key=lambda x: x["resume_s"])[len(resumes) // 2]
        figures["resume"] = {**mid, "steps": prepared["steps"], "events": prepared["events"]}
    finally:
        drop_schema(base, schema)

    loads.append(os.getloadavg()[0])
    figures["load"] = (min(loads), max(loads))
    figures["elapsed_s"] = time.perf_counter() - start
    figures["args"] = {
        k: getattr(args, k) for k in ("runs", "steps", "latency", "rounds", "n", "pairs")
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    figures.pop("args")
    return publish(figures, args)


def publish(figures: dict[str, Any], args: argparse.Namespace) -> int:
    body = report(figures, args)
    print(body)
    if not args.no_write:
        from _results import write_section

        path = write_section(SECTION, body)
        print(f"wrote section {SECTION!r} of {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
