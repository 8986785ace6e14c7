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
    .venv/bin/python bench/workers.py --throughput-only   # section 1 only, writes nothing
    .venv/bin/python bench/workers.py --throughput-only --strace        # + system calls
    .venv/bin/python bench/workers.py --throughput-only --instructions  # + callgrind

Section 1 also reports, per step and by worker count, what the host's load cannot move:
the PostgreSQL server's transactions and rows (each round has a database to itself, so
its statistics are the round's), and with the flags the workers' system calls and
instructions; beside them the serving CPU split into user and kernel time and the
workers' context switches (`tether worker --json`).

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
import resource
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
import _worker_counters as counters  # noqa: E402
from _args import at_least, numbers, seconds  # noqa: E402

SECTION = "workers"
DEFAULT_PG = os.environ.get("TETHER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
TARGET_OVERHEAD_MS = 2.0
TARGET_LIMITS_MS = 1.5
"""Durable overhead per step with budget limits set (the ledger's work joins the appends)."""
TARGET_FLAT = 0.15
"""Worker CPU per step with 1, 2 or 4 worker processes: within 15% of each other."""
INSTRUCTION_RUNS = 20
INSTRUCTION_LENGTHS = (10, 30)
"""`--instructions`: runs and the two run lengths whose difference is counted."""
DRIVE_LENGTHS = (150, 450)
"""`--instructions`, section 2: the two lengths of the in-process run counted."""
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
                # A part of the context (the runtime counts each new message once as it
                # arrives): counted on its own, the running total kept. Restarting the
                # total here made every turn recount the whole context.
                return estimate_tokens(messages) + estimate_tokens((), tools)
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


def unix_socket_url(base: str, directory: str | None) -> str | None:
    """`base` reaching the same server through its Unix socket in `directory` (None: the
    first of the usual directories that has the server's socket), or None if there is none."""
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    port = parts.port or 5432
    found = [
        d
        for d in ([directory] if directory else ["/var/run/postgresql", "/run/postgresql", "/tmp"])
        if os.path.exists(os.path.join(d, f".s.PGSQL.{port}"))
    ]
    if not found or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    user = f"{parts.username}@" if parts.username else ""
    query = f"host={found[0]}&port={port}" + (f"&{parts.query}" if parts.query else "")
    return f"postgresql://{user}{parts.path}?{query}"


def unreachable(base: str) -> str | None:
    """Why the server at `base` cannot be used (None: it can), in one line."""
    import psycopg

    try:
        with psycopg.connect(base, connect_timeout=10) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return " ".join(str(exc).split())
    return None


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
        await store.run_ids()  # connect and migrate, even with nothing to submit
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


USAGE = ("user_s", "sys_s", "voluntary_switches", "involuntary_switches")
"""What each worker reports (`--json`) of its serving window besides `cpu_s`."""


def throughput_round(
    base: str, workers: int, runs: int, n: int, latency: float, *, trace: bool = False
) -> dict[str, Any]:
    with counters.own_database(base) as db:
        schema = new_schema()
        url = schema_url(db, schema, pool_max=8)
        run_ids = asyncio.run(submit_runs(url, runs, n))
        server0 = counters.server_counters(db)
        env = worker_env(TETHER_CHAOS=f"model_latency={latency}")
        concurrency = math.ceil(runs / workers)
        load0 = os.getloadavg()[0]
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall0 = time.perf_counter()
        traces = [TRACE_DIR / f"w{os.getpid()}_{i}.txt" for i in range(workers)]
        procs = [
            subprocess.Popen(
                (counters.strace_prefix(traces[i]) if trace else [])
                + worker_command(url, concurrency),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for i in range(workers)
        ]
        outputs = [p.communicate(timeout=600) for p in procs]
        wall = time.perf_counter() - wall0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        if any(p.returncode for p in procs):
            raise SystemExit(f"a worker failed: {[e.decode() for _, e in outputs]}")
        # Each worker's own account (`--json`): the CPU it spent serving, from the start of
        # its claim loop to the end of its hand-back, so start-up and exit are not in it.
        stats = [json.loads(o.decode().strip().splitlines()[-1]) for o, _ in outputs]
        server1 = counters.server_counters(db)
        steps, span, statuses = asyncio.run(journal_span(url, run_ids))
        if statuses != ["completed"] * runs:
            raise SystemExit(f"not every run completed: {sorted(set(statuses))}")
        calls: dict[str, int] = {}
        for path in traces if trace else []:
            for name, count in counters.strace_calls(path).items():
                calls[name] = calls.get(name, 0) + count
            path.unlink()
        return {
            "workers": workers,
            "concurrency": concurrency,
            "steps": steps,
            "span_s": span,
            "wall_s": wall,
            "steps_per_s": steps / span,
            "cpu_s": cpu,
            "serve_cpu_s": sum(x["cpu_s"] for x in stats),
            **{f"serve_{k}": sum(x[k] for x in stats) for k in USAGE},
            "server": {k: server1[k] - server0[k] for k in server1},
            "syscalls": calls,
            "load_start": load0,
            "load_end": os.getloadavg()[0],
        }


TRACE_DIR = Path(os.environ.get("TMPDIR", "/tmp"))


PYCACHE = Path(os.environ.get("TMPDIR", "/tmp")) / f"tether-bench-pycache-{os.getuid()}"


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of a worker process: bytecode cached (in a directory of the
    bench's, outside the tree), as an installed package has it. Without it (some
    environments set PYTHONDONTWRITEBYTECODE), every worker compiles Tether's sources
    again at start: CPU per process, not per step, but it swamps a per-step figure."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("TETHER_STORE", "PYTHONDONTWRITEBYTECODE")
    }
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return {**env, **extra}


def worker_command(url: str, concurrency: int) -> list[str]:
    return [
        sys.executable, "-m", "tether", "worker", "--store", url, "--until-idle",
        "--concurrency", str(concurrency), "--log-level", "warning",
        "--agent", f"{BENCH_DIR / 'workers.py'}:bench_agent", "--json",
    ]  # fmt: skip


def idle_worker_cpu(base: str) -> float:
    """CPU seconds of a `tether worker --until-idle` process that finds no work: start-up
    (imports, pool, schema check, ledger, first sweep) and exit, the per-process part of
    the throughput rounds' CPU."""
    schema = new_schema()
    url = schema_url(base, schema, pool_max=8)
    try:
        asyncio.run(submit_runs(url, 0, 1))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            worker_command(url, 1), env=worker_env(), capture_output=True, timeout=120
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode:
            raise SystemExit(f"an idle worker failed: {done.stderr.decode()[-2000:]}")
        return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    finally:
        drop_schema(base, schema)


def idle_worker_syscalls(base: str) -> dict[str, int]:
    """System calls of a `tether worker --until-idle` that finds no work (under `strace
    -f -c`): start-up and exit, taken out per process from the traced rounds' counts."""
    schema = new_schema()
    url = schema_url(base, schema, pool_max=8)
    out = TRACE_DIR / f"idle{os.getpid()}.txt"
    try:
        asyncio.run(submit_runs(url, 0, 1))
        done = subprocess.run(
            counters.strace_prefix(out) + worker_command(url, 1),
            env=worker_env(),
            capture_output=True,
            timeout=120,
        )
        if done.returncode:
            raise SystemExit(f"an idle worker failed: {done.stderr.decode()[-2000:]}")
        return counters.strace_calls(out)
    finally:
        out.unlink(missing_ok=True)
        drop_schema(base, schema)


def instructions_per_step(
    base: str, workers: int, runs: int, lengths: tuple[int, int], latency: float
) -> float:
    """User-space instructions a step costs W worker processes (callgrind), counted the
    way the host's load cannot move: the same runs with two lengths, the difference
    divided by the steps more, so start-up, exit and per-run work cancel."""
    totals = []
    for n in lengths:
        with counters.own_database(base) as db:
            url = schema_url(db, new_schema(), pool_max=8)
            asyncio.run(submit_runs(url, runs, n))
            outs = [TRACE_DIR / f"cg{os.getpid()}_{i}.out" for i in range(workers)]
            procs = [
                subprocess.Popen(
                    counters.callgrind_prefix(out) + worker_command(url, math.ceil(runs / workers)),
                    env=worker_env(TETHER_CHAOS=f"model_latency={latency}"),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                for out in outs
            ]
            done = [p.communicate(timeout=3600) for p in procs]
            if any(p.returncode for p in procs):
                raise SystemExit(f"a worker failed: {[e.decode()[-2000:] for _, e in done]}")
            totals.append(sum(counters.callgrind_total(out) for out in outs))
            for out in outs:
                out.unlink()
    return (totals[1] - totals[0]) / (runs * (lengths[1] - lengths[0]))


def drive_instructions(spec: dict[str, Any], lengths: tuple[int, int]) -> float:
    """User-space instructions a step costs the process driving one run in process
    (`child_drive` under callgrind): runs of two lengths, the difference divided by the
    steps more, so imports, connecting, migrating and the run's creation cancel."""
    totals = []
    for n in lengths:
        out = TRACE_DIR / f"cgdrive{os.getpid()}_{n}.out"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", "drive"]
        done = subprocess.run(
            [*counters.callgrind_prefix(out), *command, json.dumps({**spec, "n": n})],
            capture_output=True, text=True, timeout=3600, cwd=REPO,
        )  # fmt: skip
        if done.returncode:
            raise SystemExit(f"a counted drive failed:\n{done.stderr[-4000:]}")
        totals.append(counters.callgrind_total(out))
        out.unlink()
    return (totals[1] - totals[0]) / (lengths[1] - lengths[0])


def step_costs(
    rounds: list[dict[str, Any]], workers: int, idle_calls: dict[str, int]
) -> dict[str, Any]:
    """Medians over the rounds of what a step cost: the workers' serving CPU split into
    user and kernel time (ms), their context switches, the server's transactions and rows,
    and (traced rounds) the workers' system calls with an idle worker's taken out per
    process."""

    def med(f: Any) -> float:
        return statistics.median(f(x) / x["steps"] for x in rounds)

    figures: dict[str, Any] = {
        "user_ms": med(lambda x: x["serve_user_s"] * 1000),
        "sys_ms": med(lambda x: x["serve_sys_s"] * 1000),
        "vcsw": med(lambda x: x["serve_voluntary_switches"]),
        "ivcsw": med(lambda x: x["serve_involuntary_switches"]),
        "server": {k: med(lambda x, k=k: x["server"][k]) for k in counters.SERVER_COUNTERS},
    }
    if all(x["syscalls"] for x in rounds):
        names = set(idle_calls).union(*(x["syscalls"] for x in rounds))
        net = {
            name: med(lambda x, n=name: x["syscalls"].get(n, 0) - workers * idle_calls.get(n, 0))
            for name in names
        }
        figures["syscalls"] = med(
            lambda x: sum(x["syscalls"].values()) - workers * sum(idle_calls.values())
        )
        figures["syscalls_by_name"] = {
            k: round(v, 3) for k, v in sorted(net.items(), key=lambda kv: -kv[1]) if abs(v) >= 0.05
        }
    return figures


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


def grows_text(t: list[dict[str, Any]]) -> list[str]:
    """What grows with the number of workers and what does not, from the per-step table
    (the fewest and the most workers measured)."""
    lo, hi = t[0].get("per_step", {}), t[-1].get("per_step", {})
    if not lo or not hi:
        return []
    w_lo, w_hi = t[0]["workers"], t[-1]["workers"]
    s_lo, s_hi = lo["server"], hi["server"]

    def pair(a: float, b: float, digits: int = 2, unit: str = "") -> str:
        return f"{fmt(a, digits)}{unit} with {w_lo} worker(s), {fmt(b, digits)}{unit} with {w_hi}"

    written = [
        sum(x[k] for k in ("tup_inserted", "tup_updated", "tup_deleted")) for x in (s_lo, s_hi)
    ]
    lines = [
        "What grows with the number of workers, counted (the table above): the rows the "
        f"server writes per step do not ({pair(*written, 1)}), nor nearly its transactions "
        f"({pair(s_lo['xact_commit'], s_hi['xact_commit'])}: each worker's claim-loop passes "
        "and sweeps add a few per run, none per step). The rows it reads grow "
        f"({pair(s_lo['tup_returned'], s_hi['tup_returned'], 1)}), nearly all from its "
        "catalogs: every new server connection reads them once to fill its caches, and W "
        "workers open W pools (up to 8 connections each here) - a per-connection cost, "
        "paid once by a long-lived worker (measured per table: runs and ledger tables add "
        "about 3 rows per step, the catalogs the rest). The workers' kernel time per step: "
        f"{pair(lo['sys_ms'], hi['sys_ms'], 3, ' ms')} (of their serving CPU: "
        f"{pair(*(100 * x['sys_ms'] / (x['sys_ms'] + x['user_ms']) for x in (lo, hi)), 0, '%')}"
        ").",
    ]
    if "syscalls" in lo and "syscalls" in hi:
        waits = [x["syscalls_by_name"].get("epoll_wait", math.nan) for x in (lo, hi)]
        pids = [x["syscalls_by_name"].get("getpid", math.nan) for x in (lo, hi)]
        lines[-1] += (
            f" Their system calls per step grow ({pair(lo['syscalls'], hi['syscalls'], 1)}, "
            "under strace, which slows every call and so exaggerates this), nearly all "
            f"`epoll_wait` ({pair(*waits, 1)}): each pass of a process's event loop makes "
            "one, and a process driving fewer runs finds fewer of them ready at each pass "
            "(less batching); each costs a microsecond or two. The largest count, flat, is "
            f"`getpid` ({pair(*pids, 1)}): Python 3.11's `asyncio.get_running_loop` makes "
            "one per call (3.12 does not)."
        )
    if "instructions" in lo and "instructions" in hi:
        lines[-1] += (
            " User-space instructions per step (callgrind, the difference of runs of "
            f"{' and '.join(map(str, INSTRUCTION_LENGTHS))} steps so start-up and per-run "
            f"work cancel): {pair(lo['instructions'] / 1e6, hi['instructions'] / 1e6)} "
            "million (valgrind's slowdown stretches the time-based work, sweeps and "
            "renewals, most with more processes)."
        )
    lines += [
        "",
        "Python's own work per step does not grow either: profiled in one process "
        "(cProfile), a step makes 4,178 function calls driving 100 runs and 4,093 driving "
        "25 (the share of one of 4 workers); an earlier callgrind count gave 5.69 M "
        "instructions per step with 1 worker and 5.90 M with 4. No worker spins while the "
        "server is busy: it waits in epoll. What rises is the price of the same work: CPU "
        "time per instruction when more processes than CPUs preempt each other "
        f"(involuntary switches per step: {pair(lo['ivcsw'], hi['ivcsw'])}) and share "
        "caches; on a machine with a CPU per process it would not.",
    ]
    return lines


def step_table(t: list[dict[str, Any]]) -> list[str]:
    """Section 1's per-step account by worker count: the serving CPU split into user and
    kernel time, context switches, and counts the host's load cannot move."""
    nan = math.nan

    def cell(row: dict[str, Any], key: str, digits: int = 2, scale: float = 1.0) -> str:
        value = row.get("per_step", {}).get(key)
        return "-" if value is None else fmt(value / scale, digits)

    lines = [
        "Per step while serving, all workers together (medians of the rounds): the serving "
        "CPU split into user and kernel time; the workers' context switches (voluntary: it "
        "waited; involuntary: preempted); the PostgreSQL server's transactions and rows "
        "(`pg_stat_database` of a database each round has to itself); the workers' system "
        "calls (`--strace`, an idle worker's taken out per process) and user-space "
        "instructions (`--instructions`, callgrind, the difference of two run lengths).",
        "",
        "| workers | user ms | kernel ms | voluntary switches | involuntary switches "
        "| server transactions | rows read (returned / fetched) | rows written "
        "| system calls | of them epoll_wait | M instructions |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in t:
        step = row.get("per_step", {})
        server = step.get("server", {})
        written = sum(server.get(k, nan) for k in ("tup_inserted", "tup_updated", "tup_deleted"))
        waits = step.get("syscalls_by_name", {}).get("epoll_wait")
        lines.append(
            f"| {row['workers']} | {cell(row, 'user_ms', 3)} | {cell(row, 'sys_ms', 3)} | "
            f"{cell(row, 'vcsw')} | {cell(row, 'ivcsw')} | "
            f"{fmt(server.get('xact_commit', nan), 2)} | "
            f"{fmt(server.get('tup_returned', nan), 1)} / {fmt(server.get('tup_fetched', nan), 1)} "
            f"| {fmt(written, 1)} | {cell(row, 'syscalls', 1)} | "
            f"{'-' if waits is None else fmt(waits, 1)} | {cell(row, 'instructions', 2, 1e6)} |"
        )
    return lines


def instruction_row(throughput: list[dict[str, Any]]) -> list[str]:
    """The flatness target's row in instructions (`--instructions`), if they were counted:
    the work per step, which the CPUs' sharing cannot move. An extra row: the goal is CPU's."""
    counts = [row.get("per_step", {}).get("instructions") for row in throughput]
    if not counts or any(c is None for c in counts):
        return []
    spread = max(counts) / min(counts) - 1
    return [
        f"| the same in user-space instructions per step (callgrind, `--instructions`; an "
        f"extra row, the goal is CPU time's): the work, which CPUs shared by more processes "
        f"than they have cannot move | {' / '.join(f'{c / 1e6:.2f}' for c in counts)} M "
        f"(spread {spread:.0%}) | {'PASS' if spread <= TARGET_FLAT else 'FAIL'} |"
    ]


def drive_instruction_rows(
    counted: dict[str, float] | None, o: dict[str, Any], lim: dict[str, Any]
) -> list[str]:
    """Section 2's rows in instructions (`--instructions`): the driving process's work per
    step on PostgreSQL beyond memory://'s, beside the CPU time it took in the same runs."""
    if not counted:
        return []
    rows = []
    for label, mem, pg, mem_cpu, pg_cpu in (
        ("ledger off", "mem", "pg", o["mem_cpu_ms"], o["pg_cpu_ms"]),
        ("with limits", "mem_limits", "pg_limits", lim.get("mem_cpu", math.nan),
         lim.get("pg_cpu", math.nan)),
    ):  # fmt: skip
        extra, cpu = counted[pg] - counted[mem], pg_cpu - mem_cpu
        rows.append(
            f"| user-space instructions per step of the driving process, {label} (callgrind, "
            f"`--instructions`; runs of {DRIVE_LENGTHS[0]} and {DRIVE_LENGTHS[1]} steps): "
            f"memory:// → PostgreSQL | {counted[mem] / 1e6:.2f} M → {counted[pg] / 1e6:.2f} M "
            f"(+{extra / 1e6:.2f} M, {extra / counted[mem]:.0%}) | CPU +{fmt(cpu)} "
            f"(+{cpu / (mem_cpu or math.nan):.0%}) |"
        )
    return rows


def reproduce_flags(args: argparse.Namespace) -> str:
    """The options of this run that differ from the defaults, as typed (the server aside)."""
    parser = build_parser()
    flags = "".join(
        f" --{name} {','.join(map(str, value)) if isinstance(value, list) else value}"
        for name in ("runs", "steps", "latency", "workers", "rounds", "n", "pairs")
        if (value := getattr(args, name)) != parser.get_default(name)
    )
    return flags + (" --instructions" if args.instructions else "")


def report(figures: dict[str, Any], args: argparse.Namespace) -> str:
    t = figures["throughput"]
    o = figures["overhead"]
    nan = {"mem": math.nan, "pg": math.nan, "overhead_ms": math.nan}
    led = {**nan, **figures.get("ledger", {})}
    lim = {**nan, **figures.get("limits", {})}
    unix = figures.get("limits_unix")
    lim_off = figures.get("limits_off")
    r = figures["resume"]
    cpus = [row["cpu_ms"] for row in t]
    nets = [row.get("net_cpu_ms", math.nan) for row in t]
    serves = [row.get("serve_cpu_ms", math.nan) for row in t]
    spread = max(cpus) / min(cpus) - 1
    net_spread = max(nets) / min(nets) - 1
    serve_spread = max(serves) / min(serves) - 1
    limits_ok = lim["overhead_ms"] <= TARGET_LIMITS_MS
    limits_cpu = (lim.get("pg_cpu", math.nan) - lim.get("mem_cpu", math.nan)) - (
        o["pg_cpu_ms"] - o["mem_cpu_ms"]
    )
    flat_ok = spread <= TARGET_FLAT
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
        f"- **Reproduce:** `.venv/bin/python bench/workers.py{reproduce_flags(args)}` (from "
        "the repository root; `--postgres URL` for another server).",
        "",
        "| target | measured | result |",
        "|---|---|---|",
        f"| durable overhead per step on PostgreSQL <= {TARGET_OVERHEAD_MS:g} ms "
        f"({args.n:,} steps, median of paired runs vs memory://) | {fmt(o['overhead_ms'])} ms "
        f"({fmt(o['store_ms'])} ms inside store calls) | {'PASS' if overhead_ok else 'FAIL'} |",
        f"| durable overhead per step on PostgreSQL with budget limits set <= "
        f"{TARGET_LIMITS_MS:g} ms (median of paired runs vs memory:// with the same limits) | "
        f"{fmt(lim['overhead_ms'])} ms | {'PASS' if limits_ok else 'FAIL'} |",
        f"| worker CPU per step with {', '.join(str(row['workers']) for row in t)} worker "
        f"processes within {TARGET_FLAT:.0%} of each other: all CPU of the worker processes / "
        f"steps | {' / '.join(fmt(c) for c in cpus)} ms (spread {spread:.0%}) | "
        f"{'PASS' if flat_ok else 'FAIL'} |",
        f"| the same after start-up, estimated: an idle worker's CPU, measured apart, taken "
        f"out per process | {' / '.join(fmt(c) for c in nets)} ms (spread {net_spread:.0%}) | "
        f"{'PASS' if net_spread <= TARGET_FLAT else 'FAIL'} |",
        f"| the same while serving: each worker's own CPU from the start of its claim loop to "
        f"the end of its hand-back (`tether worker --json`), start-up and exit not in it | "
        f"{' / '.join(fmt(c) for c in serves)} ms (spread {serve_spread:.0%}) | "
        f"{'PASS' if serve_spread <= TARGET_FLAT else 'FAIL'} |",
        *instruction_row(t),
        "",
        f"### 1. Throughput: {args.runs} concurrent runs, {args.steps} tool steps each, "
        f"{args.latency * 1000:g} ms model latency",
        "",
        "Each worker is a `tether worker --until-idle` process with concurrency "
        "runs/workers; steps/s counts every step of every run between the first event a "
        f"worker journaled and the last completion (median of {args.rounds} rounds).",
        "",
        "| workers | concurrency each | steps | seconds | steps/s | vs 1 worker "
        "| rounds (steps/s) | worker CPU ms/step | after start-up | while serving "
        "| start-up + exit per process (s) | rounds (CPU ms/step; while serving) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base = t[0]["steps_per_s"]
    for row in t:
        lines.append(
            f"| {row['workers']} | {row['concurrency']} | {row['steps']:,} | "
            f"{fmt(row['span_s'], 2)} | {fmt(row['steps_per_s'], 0)} | "
            f"{row['steps_per_s'] / base:.2f}x | "
            f"{', '.join(fmt(x, 0) for x in row['rounds'])} | {fmt(row['cpu_ms'])} | "
            f"{fmt(row.get('net_cpu_ms', math.nan))} | "
            f"{fmt(row.get('serve_cpu_ms', math.nan))} | "
            f"{fmt(row.get('startup_s', math.nan), 2)} | "
            f"{', '.join(fmt(x) for x in row.get('cpu_rounds', []))}; "
            f"{', '.join(fmt(x) for x in row.get('serve_rounds', []))} |"
        )
    lines += ["", *step_table(t)]
    lines += [
        "",
        "Worker CPU is the user + system time of the worker processes (the script waits for "
        "them, so it is their `RUSAGE_CHILDREN`), divided by every step they drove; the PostgreSQL "
        "server's CPU is not in it. *After start-up* subtracts, per worker, the CPU of a "
        "`tether worker --until-idle` that finds no work (imports, pool, schema check, "
        "ledger, sweep, exit), measured in the same run: "
        f"{fmt(figures.get('idle_cpu_s', math.nan), 2)} s "
        "(median of one per round). That is an estimate, made alone: W processes starting "
        "at once on 2 CPUs beside the server each spend their own amount. *While serving* "
        "needs no estimate: each worker reports the CPU it spent from the start of its claim "
        "loop to the end of its hand-back (`tether worker --json`, `cpu_s`), and the table "
        "shows what that leaves per process for start-up and exit. Workers run with Python's "
        "bytecode cache, as an installed package does (the bench unsets "
        "`PYTHONDONTWRITEBYTECODE` for them and caches under a directory of its own); the "
        "first worker, which compiled the "
        f"sources, took {fmt(figures.get('first_idle_cpu_s', math.nan), 2)} s.",
        "",
        "What grew with the number of workers, and what was done about it: each step's "
        "reservation and settlement ran on the ledger's own connection from a thread "
        "(`asyncio.to_thread`, two more transactions per step): they now ride in the "
        "step's appends (see the rows with the ledger below), so a worker's per-step work is "
        "its appends, whatever the number of workers. Each worker's start-up sweep read the "
        "first event of every queued run to find runs of agents it lacks: it now reads only "
        "those whose agent (in the run's row) it does not have. Each pass of a worker's claim "
        "loop asked the OS whether the holder of every lease of every other worker was alive "
        "(a kill and a read of /proc per lease): it now asks once per holder. Each process "
        "walked every object its imports built in full collections and again at exit: the "
        "command line now freezes them (`gc.freeze`), 0.15 s less CPU per process.",
        "",
        *grows_text(t),
    ]
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
        f"| the same with the budget ledger on, memory:// → PostgreSQL (a model call's "
        "reservation and settlement ride in the step's appends; "
        f"{led.get('appends_per_step', 0):.2f} appends/step) | "
        f"{fmt(led['mem'])} → {fmt(led['pg'])} (overhead "
        f"{fmt(led['overhead_ms'])}, median of pairs; CPU {fmt(led.get('mem_cpu', math.nan))} → "
        f"{fmt(led.get('pg_cpu', math.nan))}) | - |",
        f"| **the same with limits set** (hourly and daily on `global`, per-run on the agent; "
        f"never reached, but every check sums them: on PostgreSQL the server does, in the "
        f"append's statement) | {fmt(lim['mem'])} → {fmt(lim['pg'])} (overhead "
        f"**{fmt(lim['overhead_ms'])}** ({fmt(lim.get('overhead_min', math.nan))} … "
        f"{fmt(lim.get('overhead_max', math.nan))}), median of pairs; CPU "
        f"{fmt(lim.get('mem_cpu', math.nan))} → {fmt(lim.get('pg_cpu', math.nan))}, "
        f"{fmt(lim.get('cpu_overhead_ms', math.nan))} more per step) | - |",
        *(
            [
                f"| the same with limits, through the server's Unix socket instead of TCP "
                f"127.0.0.1 (an extra row: the goal is TCP's) | {fmt(unix['mem'])} → "
                f"{fmt(unix['pg'])} (overhead {fmt(unix['overhead_ms'])} "
                f"({fmt(unix['overhead_min'])} … {fmt(unix['overhead_max'])}), median of pairs; "
                f"CPU {fmt(unix['mem_cpu'])} → {fmt(unix['pg_cpu'])}) | - |"
            ]
            if unix
            else []
        ),
        *(
            [
                f"| the same with limits on a store URL with `synchronous=normal` (an opt-in, "
                f"as SQLite's default: only the commits an effect waits for are flushed, none "
                f"here; an extra row) | {fmt(lim_off['mem'])} → {fmt(lim_off['pg'])} "
                f"(overhead {fmt(lim_off['overhead_ms'])} ({fmt(lim_off['overhead_min'])} … "
                f"{fmt(lim_off['overhead_max'])}), median of pairs; CPU "
                f"{fmt(lim_off['mem_cpu'])} → {fmt(lim_off['pg_cpu'])}) | - |"
            ]
            if lim_off
            else []
        ),
        f"| what limits add on PostgreSQL beyond the journal, same run: overhead with "
        f"limits - overhead with the ledger off (medians) | "
        f"{fmt(lim['overhead_ms'] - o['overhead_ms'])} | "
        f"{fmt(limits_cpu)} |",
        *drive_instruction_rows(figures.get("drive_instructions"), o, lim),
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
        "`synchronous_commit=off` is shown only to separate the disk's share. Neither it nor "
        "`synchronous=normal` is Tether's default on PostgreSQL: with them the commits at a "
        "sync boundary (before a call with effects, a run's creation and its end) still "
        "wait for the flush, but a database crash could lose the newest other appends, "
        "which are then redone, as after a power cut on SQLite's default.",
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--postgres", default=DEFAULT_PG)
    p.add_argument("--quick", action="store_true", help="small sizes; writes nothing")
    p.add_argument("--runs", type=at_least(1), default=100)
    p.add_argument("--steps", type=at_least(1), default=20)
    p.add_argument("--latency", type=seconds, default=0.02)
    p.add_argument("--workers", type=numbers(1), default=[1, 2, 4], help="comma separated")
    p.add_argument("--rounds", type=at_least(1), default=3)
    p.add_argument(
        "--n", type=at_least(10), default=1000, help="steps of the overhead and resume runs"
    )
    p.add_argument("--pairs", type=at_least(1), default=5)
    p.add_argument(
        "--unix-socket",
        help="directory of the server's Unix socket for the extra row (default: found)",
    )
    p.add_argument("--no-write", action="store_true")
    p.add_argument(
        "--instructions",
        action="store_true",
        help=f"also count the workers' instructions per step under callgrind "
        f"({INSTRUCTION_RUNS} runs of {' and of '.join(map(str, INSTRUCTION_LENGTHS))} steps "
        "per worker count; minutes)",
    )
    p.add_argument(
        "--strace",
        action="store_true",
        help="count the workers' system calls per step (strace -f -c; slower, so steps/s "
        "and CPU time of such a run are not comparable)",
    )
    p.add_argument(
        "--throughput-only",
        action="store_true",
        help="run section 1 only and print its figures as JSON; writes nothing",
    )
    p.add_argument("--json", type=Path, help="also save the raw figures here")
    p.add_argument(
        "--report-from", type=Path, help="render (and write) a saved --json run; measure nothing"
    )
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        kind, spec = args.child
        result = asyncio.run(CHILDREN[kind](json.loads(spec)))
        print("@@result " + json.dumps(result), flush=True)
        return 0
    if args.quick:
        args.runs, args.steps, args.workers, args.rounds = 10, 5, [1, 2], 1
        args.n, args.pairs, args.no_write = 100, 1, True
    if args.report_from:
        saved = json.loads(args.report_from.read_text())
        for key, value in saved.pop("args").items():
            setattr(args, key, value)
        return publish(saved, args)

    base = args.postgres
    problem = unreachable(base)
    if problem:
        print(f"workers.py: cannot use PostgreSQL at {base}: {problem}\n"
              "Start the server or pass --postgres URL.", file=sys.stderr)  # fmt: skip
        return 2
    start = time.perf_counter()
    loads = [os.getloadavg()[0]]
    figures: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "code": git_label(),
        "machine": machine(),
        "pg_version": server_version(base),
    }

    # 1. throughput (a worker that finds no work first, so the bytecode cache is warm)
    figures["first_idle_cpu_s"] = idle_worker_cpu(base)
    rows = []
    counts = sorted(set(args.workers))
    per: dict[int, list[dict[str, Any]]] = {w: [] for w in counts}
    idle_calls = idle_worker_syscalls(base) if args.strace else {}
    for r in range(args.rounds):
        for w in counts if r % 2 == 0 else reversed(counts):
            result = throughput_round(
                base, w, args.runs, args.steps, args.latency, trace=args.strace
            )
            per[w].append(result)
            loads.append(result["load_end"])
            print(f"throughput: {w} worker(s) round {r + 1}: {result['steps_per_s']:.0f} steps/s",
                  file=sys.stderr)  # fmt: skip
    idle = [idle_worker_cpu(base) for _ in range(args.rounds)]
    figures["idle_cpu_s"] = statistics.median(idle)
    for w in counts:
        rounds = per[w]
        best = sorted(rounds, key=lambda x: x["steps_per_s"])[len(rounds) // 2]
        cpu = [x["cpu_s"] / x["steps"] * 1000 for x in rounds]
        net = [(x["cpu_s"] - w * figures["idle_cpu_s"]) / x["steps"] * 1000 for x in rounds]
        serving = [x["serve_cpu_s"] / x["steps"] * 1000 for x in rounds]
        rows.append(
            {
                **best,
                "rounds": [x["steps_per_s"] for x in rounds],
                "cpu_ms": statistics.median(cpu),
                "cpu_rounds": cpu,
                "net_cpu_ms": statistics.median(net),
                "serve_cpu_ms": statistics.median(serving),
                "serve_rounds": serving,
                "startup_s": statistics.median((x["cpu_s"] - x["serve_cpu_s"]) / w for x in rounds),
                "per_step": step_costs(rounds, w, idle_calls),
            }
        )
        print(f"workers {w}: CPU {statistics.median(cpu):.3f} ms/step "
              f"({statistics.median(net):.3f} after start-up, "
              f"{statistics.median(serving):.3f} while serving)", file=sys.stderr)  # fmt: skip
    if args.instructions:
        for row in rows:
            w = row["workers"]
            row["per_step"]["instructions"] = instructions_per_step(
                base, w, INSTRUCTION_RUNS, INSTRUCTION_LENGTHS, args.latency
            )
            print(f"workers {w}: {row['per_step']['instructions'] / 1e6:.2f} M instructions "
                  "per step", file=sys.stderr)  # fmt: skip
    figures["throughput"] = rows
    if args.throughput_only:
        keys = ("workers", "steps_per_s", "cpu_ms", "net_cpu_ms", "serve_cpu_ms", "startup_s",
                "cpu_rounds", "serve_rounds", "per_step")  # fmt: skip
        shown = [{k: row[k] for k in keys} for row in rows]
        print(json.dumps({"idle_cpu_s": figures["idle_cpu_s"], "rows": shown}, indent=1))
        return 0

    # 2. durable overhead: memory, PostgreSQL, PostgreSQL without the disk flush, and both
    # with the budget ledger on (without and with limits set), in
    # rotating order, each run in a fresh process
    schema = new_schema()
    url = schema_url(base, schema)
    nosync = url + "&options=-csynchronous_commit%3Doff"
    lim_schema = new_schema()
    lim_url = schema_url(base, lim_schema)
    # An extra row: the same with limits on the opt-in `synchronous=normal` (a schema of its
    # own): only the commits an effect waits for are flushed, none in this workload.
    lim_off_schema = new_schema()
    lim_nosync = schema_url(base, lim_off_schema, synchronous="normal")
    # An extra row, not the goal's figure: the same server through its Unix socket.
    unix_base = unix_socket_url(base, args.unix_socket)
    unix_schema = new_schema()
    try:
        # (url, ledger, limits) of each kind; the limits kinds run last in each round (they
        # leave their limits in the store, so the PostgreSQL ones get a schema of their own).
        kinds: dict[str, tuple[str, bool, bool]] = {
            "mem": ("memory://", False, False),
            "pg": (url, False, False),
            "off": (nosync, False, False),
            "mem_ledger": ("memory://", True, False),
            "pg_ledger": (url, True, False),
            "mem_limits": ("memory://", True, True),
            "pg_limits": (lim_url, True, True),
            "off_limits": (lim_nosync, True, True),
        }
        if unix_base is not None:
            kinds["unix_limits"] = (schema_url(unix_base, unix_schema), True, True)
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
        steps = args.n + 1
        for i in range(args.pairs):
            plain = ["mem", "pg", "off"]
            order = [*plain[i % 3 :], *plain[: i % 3], "mem_ledger", "pg_ledger"]
            limited = ["mem_limits", "pg_limits", "off_limits"]
            limited += ["unix_limits"] if unix_base else []
            order += limited if i % 2 == 0 else limited[::-1]
            for kind in order:
                u, ledger, limits = kinds[kind]
                spec = {"url": u, "n": args.n, "ledger": ledger, "limits": limits}
                runs[kind].append(child("drive", spec))
            loads.append(os.getloadavg()[0])
            d = (runs["pg"][-1]["wall_s"] - runs["mem"][-1]["wall_s"]) / steps * 1000
            dl = (runs["pg_limits"][-1]["wall_s"] - runs["mem_limits"][-1]["wall_s"]) / steps * 1000
            print(f"overhead round {i + 1}: {d:.3f} ms/step, with limits {dl:.3f}", file=sys.stderr)

        def per_step(kind: str, key: str) -> float:
            return statistics.median(x[key] for x in runs[kind]) / steps * 1000

        def diffs(kind: str, base_kind: str = "mem", key: str = "wall_s") -> list[float]:
            return [
                (q[key] - m[key]) / steps * 1000
                for q, m in zip(runs[kind], runs[base_kind], strict=True)
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
        for kind, pg in [
            ("ledger", "pg_ledger"),
            ("limits", "pg_limits"),
            ("limits_off", "off_limits"),
            *([("limits_unix", "unix_limits")] if unix_base else []),
        ]:
            mem = "mem_limits" if kind.startswith("limits_") else f"mem_{kind}"
            figures[kind] = {
                "mem": per_step(mem, "wall_s"),
                "pg": per_step(pg, "wall_s"),
                "mem_cpu": per_step(mem, "cpu_s"),
                "pg_cpu": per_step(pg, "cpu_s"),
                "overhead_ms": statistics.median(diffs(pg, mem)),
                "overhead_min": min(diffs(pg, mem)),
                "overhead_max": max(diffs(pg, mem)),
                "cpu_overhead_ms": statistics.median(diffs(pg, mem, "cpu_s")),
                "appends_per_step": statistics.median(
                    x["store_calls"].get("append", 0) / steps for x in runs[pg]
                ),
                "store_calls_per_step": statistics.median(
                    sum(x["store_calls"].values()) / steps for x in runs[pg]
                ),
            }
        if args.instructions:
            counted = {}
            for kind in ("mem", "pg", "mem_limits", "pg_limits"):
                u, ledger, limits = kinds[kind]
                spec = {"url": u, "ledger": ledger, "limits": limits}
                counted[kind] = drive_instructions(spec, DRIVE_LENGTHS)
                print(f"instructions per step, {kind}: {counted[kind] / 1e6:.2f} M",
                      file=sys.stderr)  # fmt: skip
            figures["drive_instructions"] = counted
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
        drop_schema(base, lim_schema)
        drop_schema(base, lim_off_schema)
        drop_schema(base, unix_schema)

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
