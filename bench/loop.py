"""Loop benchmark: what a durable agent step costs over the same loop kept in memory.

One scripted agent, the same everywhere: a model that calls the tool `fetch(i)` N times
(deciding from the number of messages only, so O(1) per turn) and then answers; the tool
returns a 1,024-character text. One step = one model turn + its tool call.

1. Tether: `Runtime("memory://")` (the in-memory store: the same loop, nothing on disk)
   and `Runtime("sqlite:///…")` with the default settings (WAL, synchronous NORMAL), at
   100, 1,000 and 3,000 steps. The durable overhead per step is (SQLite time - memory
   time) / N from paired runs; bytes per step is the database file after
   `PRAGMA wal_checkpoint(TRUNCATE)`, / N, at each N (it must be flat). Also: the
   power-loss-safe store (`?synchronous=full`) at 1,000 steps, and the stock
   `ScriptedModel` (whose token estimate is O(context) per turn) at 100 and 300.
2. LangGraph (if installed): a "model" node and a "tools" node looping N times, compiled
   with `SqliteSaver` on a temporary file (one thread id), with `InMemorySaver`, and with
   no checkpointer. Its checkpoints copy the whole growing message list, so 3,000 steps
   runs under a time limit and reports how far it got.
3. DBOS (if installed): the loop as one workflow whose model turns and tool calls are
   `@DBOS.step()`s, on SQLite with DBOS's defaults and with WAL + synchronous NORMAL
   (Tether's durability level); its baseline is the same loop without DBOS.

Every measurement runs in a fresh child process; the comparison agents are in
`bench/_compare_agents.py`. Nothing in `src/tether` imports langgraph or dbos.

Run from the repository root (`pip install -e ".[bench]"` for the comparisons):

    .venv/bin/python bench/loop.py            # full run (~5 min), rewrites bench/RESULTS.md
    .venv/bin/python bench/loop.py --quick    # smoke run (seconds, Tether only), writes nothing

`--profile` adds a cProfile of the Tether memory and SQLite runs (and where they differ);
`--json PATH` saves the raw figures; `--strict` exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import cProfile
import datetime as dt
import gc
import hashlib
import inspect
import io
import json
import math
import os
import platform
import pstats
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SRC = REPO / "src"
CODE_ENV = "TETHER_BENCH_CODE"
"""Set for child processes: the frozen copy of the package they import."""


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=True)
    return done.stdout.decode()


def _pin_code(source: str) -> dict[str, Any]:
    """Copy `src/tether` (working tree or git HEAD) to a private folder and import it from
    there, so engineers editing the shared checkout mid-run cannot mix two versions."""
    folder = Path(tempfile.mkdtemp(prefix="tether-bench-code-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    try:
        commit = _git("rev-parse", "--short", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    dirty = False
    if source == "head":
        data = subprocess.run(
            ["git", "-C", str(REPO), "archive", "HEAD", "src/tether"],
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(folder, filter="data")
        path = folder / "src"
    else:
        shutil.copytree(
            SRC / "tether", folder / "tether", ignore=shutil.ignore_patterns("__pycache__")
        )
        path = folder
        try:
            dirty = bool(_git("status", "--porcelain", "--", "src/tether").strip())
        except (OSError, subprocess.CalledProcessError):
            dirty = False
    digest = hashlib.sha256()
    for file in sorted((path / "tether").rglob("*.py")):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
    label = f"git HEAD {commit}" if source == "head" else f"working tree at {commit}"
    if dirty:
        label += " + uncommitted changes under src/tether"
    return {"path": str(path), "label": label, "fingerprint": digest.hexdigest()[:12]}


if os.environ.get(CODE_ENV):  # a child: the parent already pinned the code
    CODE = {"path": os.environ[CODE_ENV], "label": "child", "fingerprint": "-"}
elif __name__ == "__main__":
    _pre = argparse.ArgumentParser(add_help=False)
    _pre.add_argument("--code", choices=("worktree", "head"), default="worktree")
    CODE = _pin_code(_pre.parse_known_args()[0].code)
else:  # imported (e.g. by a test): use the checkout as it is
    CODE = {"path": str(SRC), "label": "working tree (live)", "fingerprint": "-"}
sys.path.insert(0, str(CODE["path"]))
sys.path.insert(0, str(BENCH_DIR))

import _compare_agents as workload  # noqa: E402  (never imports langgraph or dbos)
from _args import at_least, numbers, seconds  # noqa: E402
from _results import RESULTS_PATH, write_section  # noqa: E402

SECTION = "loop"
MAIN_N = 1000
TARGET_OVERHEAD_MS = 0.3
FLAT_TOLERANCE = 0.10
"""Tether's bytes per step may differ by at most this fraction from 1,000 steps up."""
CONTEXT_WINDOW = 1_000_000_000
"""Big enough that no compaction ever happens (3,000 steps are ~1.3M tokens)."""
CHILD_TIMEOUT_S = 600.0
STOCK_SIZES = (100, 300)
"""Run lengths for the stock ScriptedModel (memory:// only; it is O(context) per turn)."""


# == the Tether child ====================================================================


def tether_agent(
    n: int,
    model_kind: str,
    stamps: list[float],
    model_time: list[float],
    *,
    idempotent: bool = True,
) -> Any:
    """The benchmark agent: one async tool returning ~1 KB, a scripted model, no limits.

    With `idempotent=False` the tool is declared to have effects, so each call's
    write-ahead record is synced before it runs (the sync boundary)."""
    from tether import Agent, Limits, tool
    from tether.models import (
        ModelRequest,
        ModelResponse,
        ModelUsage,
        ScriptedModel,
        ToolCall,
        Turn,
        call,
        estimate_text_tokens,
        estimate_tokens,
    )

    texts = workload.outputs(n)

    @tool(idempotent=idempotent)
    async def fetch(i: int) -> str:
        """Fetch one page of results.

        Args:
            i: the page number
        """
        return texts[i]

    def script(request: ModelRequest) -> Turn | str:
        done = (len(request.messages) - 2) // 2  # mission, task, then (call, result) pairs
        if done >= n:
            return workload.FINAL_ANSWER
        return call("fetch", {"i": done})

    depth = [0]
    perf, cpu = time.perf_counter, time.process_time

    @contextlib.contextmanager
    def model_clock() -> Iterator[None]:
        """Time spent in the model: `complete` and the runtime's own `count_tokens` calls
        (for budget estimates), not counting a call made from inside another twice."""
        if depth[0]:
            yield
            return
        depth[0] += 1
        w, c = perf(), cpu()
        try:
            yield
        finally:
            depth[0] -= 1
            model_time[0] += perf() - w
            model_time[1] += cpu() - c

    class StockModel(ScriptedModel):
        """The stock ScriptedModel, timed."""

        def count_tokens(self, messages: Any, tools: Any = ()) -> int:
            with model_clock():
                return super().count_tokens(messages, tools)

        async def complete(self, request: ModelRequest, *, on_text: Any = None) -> ModelResponse:
            stamps.append(perf())
            with model_clock():
                return await super().complete(request, on_text=on_text)

    class BenchModel(ScriptedModel):
        """ScriptedModel with O(1) work per turn, so the loop's own cost is what is timed.

        The stock model estimates tokens over the whole request (for every `complete`,
        and for every budget estimate the runtime asks for) and counts the assistant
        messages on every call: O(context) per turn. This one keeps the same estimate
        incrementally (this run's context only grows: no compaction) and numbers its
        calls from the message count; its answers and its usage are the same.
        """

        def __init__(self) -> None:
            super().__init__(script, context_window=CONTEXT_WINDOW)
            self._counted = 0
            self._tokens = 0
            self._tool_tokens: dict[tuple[str, ...], int] = {}

        def count_tokens(self, messages: Any, tools: Any = ()) -> int:
            with model_clock():
                key = tuple(t.name for t in tools)
                if key not in self._tool_tokens:
                    self._tool_tokens[key] = estimate_tokens((), tools)
                if len(messages) < self._counted:
                    # A part of the context (the runtime counts each new message once
                    # as it arrives): counted on its own, the running total kept.
                    return estimate_tokens(messages) + self._tool_tokens[key]
                self._tokens += estimate_tokens(messages[self._counted :])
                self._counted = len(messages)
                return self._tokens + self._tool_tokens[key]

        async def complete(self, request: ModelRequest, *, on_text: Any = None) -> ModelResponse:
            stamps.append(perf())
            with model_clock():
                return self._answer(request)

        def _answer(self, request: ModelRequest) -> ModelResponse:
            self.calls += 1
            input_tokens = self.count_tokens(request.messages, request.tools)
            turn = self._turn(request)
            cycle = (len(request.messages) - 2) // 2 + 1
            calls = tuple(
                ToolCall(id=f"call_{cycle}_{i}", name=name, arguments=json.dumps(args))
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

    model = (
        BenchModel() if model_kind == "bench" else StockModel(script, context_window=CONTEXT_WINDOW)
    )
    return Agent(
        name="loop-bench",
        instructions="Fetch the result pages you are asked for, then answer.",
        tools=[fetch],
        model=model,
        limits=Limits(max_steps=None),
    )


class Timed:
    """Times every coroutine method of the object it wraps (wall and CPU), per method name.

    Wrapped around the store and the budget ledger of both the memory and the SQLite runs,
    it measures the durable work of a step directly, inside the run, where the end-to-end
    difference of two runs also carries whatever else the machine was doing. Costs ~2 µs
    per call, the same in both runs.
    """

    def __init__(self, inner: Any, sink: dict[str, list[float]]) -> None:
        self._inner = inner
        self._sink = sink

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        sink = self._sink
        perf, cpu = time.perf_counter, time.process_time

        async def timed(*args: Any, **kwargs: Any) -> Any:
            w, c = perf(), cpu()
            try:
                return await attr(*args, **kwargs)
            finally:
                rec = sink.setdefault(name, [0, 0.0, 0.0])
                rec[0] += 1
                rec[1] += perf() - w
                rec[2] += cpu() - c

        self.__dict__[name] = timed
        return timed


async def tether_run(spec: dict[str, Any]) -> dict[str, Any]:
    from tether import Runtime
    from tether.journal import open_store

    n = spec["n"]
    if spec["store"] == "memory":
        url = "memory://"
    else:
        url = f"sqlite:///{spec['db']}" + ("?synchronous=full" if spec["sync"] == "full" else "")
    stamps: list[float] = []
    model_time = [0.0, 0.0]
    agent = tether_agent(
        n, spec["model"], stamps, model_time, idempotent=spec.get("effects") != "non-idempotent"
    )
    store_calls: dict[str, list[float]] = {}
    ledger_calls: dict[str, list[float]] = {}
    runtime = Runtime(Timed(open_store(url), store_calls))
    if getattr(runtime, "ledger", None) is not None:
        runtime.ledger = Timed(runtime.ledger, ledger_calls)
    store_calls.clear()  # opening and migrating are not part of the run
    profiler = cProfile.Profile() if spec.get("profile") else None
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    result = await runtime.start(agent, workload.TASK)
    if profiler:
        profiler.disable()
    t1, c1 = time.perf_counter(), time.process_time()
    await runtime.close()
    if profiler:
        profiler.dump_stats(spec["profile"])
    if (
        result.status != "completed"
        or result.steps != n + 1
        or result.answer != workload.FINAL_ANSWER
    ):
        raise SystemExit(f"the Tether run did not finish as scripted: {result}")
    return {
        "steps": n,
        "wall_s": t1 - t0,
        "cpu_s": c1 - c0,
        **workload.step_profile(stamps, t1),
        "peak_rss_mb": workload.peak_rss_mb(),
        "input_tokens": result.input_tokens,
        "model_s": model_time[0],
        "model_cpu_s": model_time[1],
        "store_calls": store_calls,
        "ledger_calls": ledger_calls,
        "settings": {"url": url.split("///")[0] + ("///…" if "///" in url else "")},
    }


def child_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    workload.emit("result", asyncio.run(tether_run(spec)))
    return 0


# == the parent: running children =========================================================


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_child(
    cmd: list[str], *, timeout: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one measurement; returns its result, or what it got to when cut or failed."""
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out: list[str] = []
    err: list[str] = []

    def pump(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    threads = [
        threading.Thread(target=pump, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, err), daemon=True),
    ]
    for t in threads:
        t.start()
    load_before = os.getloadavg()[0]
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()  # our own child, by its pid
        proc.wait()
    for t in threads:
        t.join(timeout=10)
    result: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    for line in out:
        if line.startswith("@@result "):
            result = json.loads(line[len("@@result ") :])
        elif line.startswith("@@progress "):
            progress = json.loads(line[len("@@progress ") :])
    status = (
        "ok"
        if result is not None and proc.returncode == 0
        else ("timeout" if timed_out else "failed")
    )
    return {
        "status": status,
        "result": result,
        "progress": progress,
        "error": "".join(err[-15:]).strip() if status == "failed" else "",
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def checkpoint(path: Path) -> None:
    """Fold the WAL back into the database, on a connection of our own."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        if mode == "wal":
            busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if busy:
                raise RuntimeError(f"could not checkpoint {path}: another connection is active")
    finally:
        db.close()


def file_bytes(path: Path) -> int:
    """Database + WAL + rollback journal, after a checkpoint."""
    checkpoint(path)
    return sum(
        p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-journal")) if p.exists()
    )


def tether_file_detail(path: Path) -> dict[str, Any]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        events, event_bytes = db.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM event_rows"
        ).fetchone()
        snaps, snap_bytes = db.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM snapshots"
        ).fetchone()
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        pages = page_parts(db)
    finally:
        db.close()
    return {
        "events": events,
        "event_bytes": event_bytes,
        "snapshots": snaps,
        "snapshot_bytes": snap_bytes,
        "free_bytes": free * page_size,
        "page_size": page_size,
        "pages": pages,
    }


def page_summary(detail: dict[str, Any], n: int) -> str:
    pages = detail.get("pages") or {}
    if not pages:
        return "-"

    def per(group: str, key: str = "bytes") -> str:
        return fmt_bytes(pages.get(group, {}).get(key, 0) / n)

    return (
        f"{per('events')} ({per('events', 'unused')}) · {per('event key')} · "
        f"{per('audit copy + indexes')} · {per('other')} ({detail.get('page_size', 0):,} B pages)"
    )


def page_parts(db: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """Bytes of pages by b-tree group (SQLite's `dbstat`, when the build has it): where a
    step's bytes go beyond the blobs (row and index overhead, space left unused in pages)."""
    groups = {
        "events": ("event_rows", "events"),
        "event key": ("sqlite_autoindex_event_rows_1", "sqlite_autoindex_events_1"),
    }
    out: dict[str, dict[str, int]] = {}
    try:
        found = db.execute(
            "SELECT name, SUM(pgsize), SUM(payload), SUM(unused) FROM dbstat GROUP BY name"
        ).fetchall()
    except sqlite3.Error:
        return out
    for name, size, payload, unused in found:
        group = next((g for g, names in groups.items() if name in names), None)
        if group is None:
            group = "audit copy + indexes" if name.startswith("audit_") else "other"
        part = out.setdefault(group, {"bytes": 0, "payload": 0, "unused": 0})
        part["bytes"] += size
        part["payload"] += payload
        part["unused"] += unused
    return out


class Bench:
    """Runs the measurements and keeps every raw figure."""

    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.runs: list[dict[str, Any]] = []
        self.count = 0
        env = dict(os.environ)
        env[CODE_ENV] = str(CODE["path"])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(CODE["path"]), env.get("PYTHONPATH", "")) if p
        )
        env.pop("PYTHONPROFILEIMPORTTIME", None)
        self.env = env

    def db_path(self, name: str) -> Path:
        self.count += 1
        return self.folder / f"{self.count:03d}-{name}.db"

    def record(self, run: dict[str, Any], db: Path | None) -> dict[str, Any]:
        res = run["result"] or {}
        steps = res.get("steps") or (run["progress"] or {}).get("steps") or 0
        run["steps"] = steps
        run["n_done"] = steps
        if res:
            run["ms_per_step"] = res["wall_s"] / steps * 1000
            run["cpu_ms_per_step"] = res["cpu_s"] / steps * 1000
        elif run["progress"]:
            p = run["progress"]
            run["ms_per_step"] = p["wall_s"] / steps * 1000
            run["cpu_ms_per_step"] = p["cpu_s"] / steps * 1000
        if db is not None and db.exists() and steps:
            run["db_bytes"] = file_bytes(db)
            run["bytes_per_step"] = run["db_bytes"] / steps
            if run["system"] == "tether":
                run["detail"] = tether_file_detail(db)
            for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")):
                p.unlink(missing_ok=True)  # LangGraph files reach gigabytes
        self.runs.append(run)
        shown = f"{run.get('ms_per_step', math.nan):.3f} ms/step" if steps else run["status"]
        extra = f", {run['bytes_per_step']:,.0f} B/step" if "bytes_per_step" in run else ""
        note = "" if run["status"] == "ok" else f" [{run['status']} after {steps} steps]"
        log(f"    -> {shown}{extra}{note}")
        if run["status"] == "failed":
            log("    " + run["error"].replace("\n", "\n    "))
        return run

    # -- Tether ---------------------------------------------------------------------

    def tether(
        self,
        store: str,
        n: int,
        *,
        sync: str = "normal",
        model: str = "bench",
        round_no: int = 0,
        profile: Path | None = None,
        effects: str = "idempotent",
    ) -> dict[str, Any]:
        db = self.db_path(f"tether-{store}-{n}") if store == "sqlite" else None
        spec = {
            "store": store,
            "n": n,
            "db": str(db) if db else None,
            "sync": sync,
            "model": model,
            "profile": str(profile) if profile else None,
            "effects": effects,
        }
        log(
            f"  tether {store}{'/' + sync if store == 'sqlite' else ''} model={model} {effects} "
            f"n={n:,}{f' round {round_no + 1}' if round_no is not None else ' (cProfile)'} ..."
        )
        run = run_child(
            [sys.executable, str(BENCH_DIR / "loop.py"), "--child", json.dumps(spec)],
            timeout=CHILD_TIMEOUT_S,
            env=self.env,
        )
        if run["status"] != "ok":
            raise RuntimeError(f"Tether child failed ({run['status']}):\n{run['error']}")
        run.update(
            system="tether", store=store, sync=sync, model=model, n=n, round=round_no,
            effects=effects,
        )  # fmt: skip
        return self.record(run, db)

    # -- comparisons -----------------------------------------------------------------

    def langgraph(
        self, saver: str, n: int, *, durability: str | None, timeout: float
    ) -> dict[str, Any]:
        db = self.db_path(f"langgraph-{saver}-{n}") if saver == "sqlite" else None
        cmd = [
            sys.executable,
            str(BENCH_DIR / "_compare_agents.py"),
            "langgraph",
            "--n",
            str(n),
            "--saver",
            saver,
        ]
        if db:
            cmd += ["--db", str(db)]
        if durability:
            cmd += ["--durability", durability]
        log(f"  langgraph saver={saver} durability={durability or 'default'} n={n:,} ...")
        run = run_child(cmd, timeout=timeout, env=self.env)
        run.update(
            system="langgraph",
            saver=saver,
            durability=durability or "default",
            n=n,
            timeout_s=timeout,
        )
        return self.record(run, db)

    def dbos(self, sqlite_mode: str, n: int, *, timeout: float) -> dict[str, Any]:
        db = self.db_path(f"dbos-{sqlite_mode}-{n}")
        cmd = [
            sys.executable,
            str(BENCH_DIR / "_compare_agents.py"),
            "dbos",
            "--n",
            str(n),
            "--db",
            str(db),
            "--sqlite",
            sqlite_mode,
        ]
        log(f"  dbos sqlite={sqlite_mode} n={n:,} ...")
        run = run_child(cmd, timeout=timeout, env=self.env)
        run.update(system="dbos", sqlite=sqlite_mode, n=n, timeout_s=timeout)
        return self.record(run, db)

    # -- queries ---------------------------------------------------------------------

    def find(self, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.runs if all(r.get(k) == v for k, v in match.items())]


# == the plan ============================================================================


def run_plan(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    bench = Bench(args, folder)
    r: dict[str, Any] = {"machine": machine(), "config": {}}
    sizes, rounds = args.sizes, args.rounds
    r["config"] = {
        "quick": args.quick,
        "sizes": sizes,
        "rounds": rounds,
        "main_n": args.main_n,
        "compare": args.compare,
        "lg_timeout_s": args.lg_timeout,
        "filesystem": filesystem_of(folder),
        "tool_chars": workload.TOOL_CHARS,
    }
    t_start = time.perf_counter()

    # 1. Tether: memory and SQLite in pairs, the order alternating, so drift hits both.
    log("Tether")
    for n in sizes:
        k = rounds if n <= args.main_n else 1
        for i in range(k):
            order = ("memory", "sqlite") if i % 2 == 0 else ("sqlite", "memory")
            for store in order:
                bench.tether(store, n, round_no=i)
    if not args.quick:
        bench.tether("sqlite", args.main_n, sync="full", round_no=0)
        # The stock ScriptedModel's whole-context estimate is quadratic per run (~100 ms a
        # step at 1,000 steps), so it runs short, in memory, beside the O(1) model.
        for n in STOCK_SIZES:
            if n not in sizes:
                bench.tether("memory", n, round_no=0)
            bench.tether("memory", n, model="stock", round_no=0)

    # 2-3. Comparisons, each skipped with a reason when its package is missing.
    r["skipped"] = {}
    if args.compare:
        ok, why = workload.available("langgraph")
        if ok:
            log("LangGraph")
            lg_sizes = [n for n in sizes if n <= args.main_n]
            for n in lg_sizes:
                bench.langgraph("none", n, durability=None, timeout=CHILD_TIMEOUT_S)
                bench.langgraph("memory", n, durability="sync", timeout=CHILD_TIMEOUT_S)
                bench.langgraph("sqlite", n, durability="sync", timeout=CHILD_TIMEOUT_S)
            bench.langgraph("sqlite", min(sizes), durability=None, timeout=CHILD_TIMEOUT_S)
            for n in (n for n in sizes if n > args.main_n):
                bench.langgraph("sqlite", n, durability="sync", timeout=args.lg_timeout)
        else:
            r["skipped"]["langgraph"] = why
            log(f"LangGraph skipped: {why}")
        ok, why = workload.available("dbos")
        if ok:
            log("DBOS")
            for n in (n for n in sizes if n <= args.main_n):
                bench.dbos("default", n, timeout=CHILD_TIMEOUT_S)
            for n in sizes:
                bench.dbos("wal-normal", n, timeout=CHILD_TIMEOUT_S)
        else:
            r["skipped"]["dbos"] = why
            log(f"DBOS skipped: {why}")
    else:
        r["skipped"] = {
            "langgraph": "comparisons off (--quick or --no-compare)",
            "dbos": "comparisons off (--quick or --no-compare)",
        }

    if args.profile:
        log("cProfile of the Tether runs ...")
        paths = {}
        for store in ("memory", "sqlite"):
            paths[store] = folder / f"profile-{store}.pstats"
            bench.tether(store, args.main_n, round_no=None, profile=paths[store])
        bench.runs = [
            x for x in bench.runs if x.get("round") is not None or x["system"] != "tether"
        ]
        r["profile"] = profile_report(paths, args.main_n)

    r["runs"] = bench.runs
    r["elapsed_s"] = time.perf_counter() - t_start
    r["machine"]["load_end"] = os.getloadavg()
    r["summary"] = summarize(bench, args)
    return r


# == summarising =========================================================================


def med(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def durable_parts(run: dict[str, Any]) -> dict[str, tuple[float, float, float]]:
    """(calls, wall ms, CPU ms) per step of each store and ledger method, timed in the run."""
    res, n = run["result"], run["steps"]
    out = {}
    for prefix, calls in (("store", res["store_calls"]), ("ledger", res["ledger_calls"])):
        for name, (count, wall, cpu) in calls.items():
            if name != "close":  # after the clock stopped
                out[f"{prefix}.{name}"] = (count / n, wall / n * 1000, cpu / n * 1000)
    return out


def durable_ms(run: dict[str, Any]) -> tuple[float, float]:
    parts = durable_parts(run).values()
    return sum(p[1] for p in parts), sum(p[2] for p in parts)


def breakdown(mem: list[dict[str, Any]], sql: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where a step's time goes in the memory and the SQLite runs (medians over runs)."""
    names = sorted({k for r in mem + sql for k in durable_parts(r)})
    rows = []

    def stat(runs: list[dict[str, Any]], name: str, i: int) -> float:
        return med([durable_parts(r).get(name, (0.0, 0.0, 0.0))[i] for r in runs])

    for name in names:
        calls = max(stat(sql, name, 0), stat(mem, name, 0))
        if calls < 0.005:
            continue  # once per run (create, lease, load): shown in the total only
        rows.append(
            {
                "part": name,
                "calls": calls,
                "memory": (stat(mem, name, 1), stat(mem, name, 2)),
                "sqlite": (stat(sql, name, 1), stat(sql, name, 2)),
            }
        )
    total = {
        k: (med([durable_ms(r)[0] for r in runs]), med([durable_ms(r)[1] for r in runs]))
        for k, runs in (("memory", mem), ("sqlite", sql))
    }
    rows.append({"part": "store + ledger, all calls", "calls": math.nan, **total})
    model = {
        k: (
            med([r["result"]["model_s"] / r["steps"] * 1000 for r in runs]),
            med([r["result"]["model_cpu_s"] / r["steps"] * 1000 for r in runs]),
        )
        for k, runs in (("memory", mem), ("sqlite", sql))
    }
    rows.append({"part": "model.complete (the scripted model)", "calls": 1.0, **model})
    rest = {
        k: (
            med([r["ms_per_step"] for r in runs]) - total[k][0] - model[k][0],
            med([r["cpu_ms_per_step"] for r in runs]) - total[k][1] - model[k][1],
        )
        for k, runs in (("memory", mem), ("sqlite", sql))
    }
    rows.append(
        {
            "part": "everything else: the loop (context, fold, seal, tools, asyncio)",
            "calls": math.nan,
            **rest,
        }
    )
    whole = {
        k: (med([r["ms_per_step"] for r in runs]), med([r["cpu_ms_per_step"] for r in runs]))
        for k, runs in (("memory", mem), ("sqlite", sql))
    }
    rows.append({"part": "whole step", "calls": math.nan, **whole})
    return rows


def summarize(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    s: dict[str, Any] = {"tether": {}, "rows": []}
    rows = s["rows"]

    # Tether per size: medians over rounds, and the overhead from each round's pair.
    for n in args.sizes:
        mem = bench.find(system="tether", store="memory", model="bench", n=n)
        sql = bench.find(system="tether", store="sqlite", sync="normal", model="bench", n=n)
        pairs = [(m, q) for m in mem for q in sql if m["round"] == q["round"]]
        over = [q["ms_per_step"] - m["ms_per_step"] for m, q in pairs]
        over_cpu = [q["cpu_ms_per_step"] - m["cpu_ms_per_step"] for m, q in pairs]
        inside = [durable_ms(q)[0] - durable_ms(m)[0] for m, q in pairs]
        inside_cpu = [durable_ms(q)[1] - durable_ms(m)[1] for m, q in pairs]
        t = {
            "n": n,
            "rounds": len(pairs),
            "memory_ms": med([m["ms_per_step"] for m in mem]),
            "memory_cpu_ms": med([m["cpu_ms_per_step"] for m in mem]),
            "sqlite_ms": med([q["ms_per_step"] for q in sql]),
            "sqlite_cpu_ms": med([q["cpu_ms_per_step"] for q in sql]),
            "overhead_ms": med(over),
            "overhead_min": min(over) if over else math.nan,
            "overhead_max": max(over) if over else math.nan,
            "overhead_cpu_ms": med(over_cpu),
            "inside_ms": med(inside),
            "inside_cpu_ms": med(inside_cpu),
            "inside_min": min(inside) if inside else math.nan,
            "inside_max": max(inside) if inside else math.nan,
            "parts": breakdown(mem, sql) if mem and sql else [],
            "bytes_per_step": med([q["bytes_per_step"] for q in sql]),
            "db_bytes": med([q["db_bytes"] for q in sql]),
            "detail": sql[0]["detail"] if sql else {},
            "memory_tenths": tenths(mem),
            "sqlite_tenths": tenths(sql),
        }
        s["tether"][n] = t
        rows.append(
            row(
                "Tether",
                "memory:// (in-memory store)",
                n,
                t["memory_ms"],
                t["memory_cpu_ms"],
                None,
                None,
                mem,
                rounds=len(mem),
            )
        )
        rows.append(
            row(
                "Tether",
                "SQLite, WAL + synchronous=NORMAL (default)",
                n,
                t["sqlite_ms"],
                t["sqlite_cpu_ms"],
                t["overhead_ms"],
                t["bytes_per_step"],
                sql,
                rounds=len(sql),
                spread=(t["overhead_min"], t["overhead_max"]) if len(over) > 1 else None,
            )
        )

    main = s["tether"].get(args.main_n)
    full = bench.find(system="tether", sync="full", n=args.main_n)
    if full and main:
        f = full[0]
        s["tether_full"] = {
            "ms": f["ms_per_step"],
            "overhead_ms": f["ms_per_step"] - main["memory_ms"],
            "bytes_per_step": f["bytes_per_step"],
        }
        rows.append(
            row(
                "Tether",
                "SQLite, WAL + synchronous=FULL (power-loss safe)",
                args.main_n,
                f["ms_per_step"],
                f["cpu_ms_per_step"],
                s["tether_full"]["overhead_ms"],
                f["bytes_per_step"],
                full,
            )
        )
    s["tether_stock"] = []
    for n in STOCK_SIZES:
        stock = bench.find(system="tether", store="memory", model="stock", n=n)
        mine = bench.find(system="tether", store="memory", model="bench", n=n, round=0)
        if not stock or not mine:
            continue
        x, y = stock[0], mine[0]
        s["tether_stock"].append(
            {
                "n": n,
                "stock_ms": x["ms_per_step"],
                "stock_model_ms": x["result"]["model_s"] / n * 1000,
                "stock_last_tenth_ms": x["result"]["last_tenth_ms"],
                "bench_ms": y["ms_per_step"],
                "bench_model_ms": y["result"]["model_s"] / n * 1000,
            }
        )
        if n not in args.sizes:
            rows.append(
                row("Tether", "memory:// (in-memory store)", n, *ms_pair(y), None, None, mine)
            )
        rows.append(
            row("Tether, stock ScriptedModel", "memory://", n, *ms_pair(x), None, None, stock)
        )

    # LangGraph
    lg: dict[str, Any] = {}
    for n in sorted({x["n"] for x in bench.find(system="langgraph")}):
        none = bench.find(system="langgraph", saver="none", n=n)
        memo = bench.find(system="langgraph", saver="memory", n=n)
        sql = bench.find(system="langgraph", saver="sqlite", durability="sync", n=n)
        asy = bench.find(system="langgraph", saver="sqlite", durability="default", n=n)
        base_none = none[0]["ms_per_step"] if none and none[0]["status"] == "ok" else None
        base_mem = memo[0]["ms_per_step"] if memo and memo[0]["status"] == "ok" else None
        entry: dict[str, Any] = {"n": n}
        if none:
            entry["none_ms"] = base_none
            rows.append(row("LangGraph", "no checkpointer", n, *ms_pair(none[0]), None, None, none))
        if memo:
            entry["memory_ms"] = base_mem
            rows.append(
                row(
                    "LangGraph",
                    "InMemorySaver, durability=sync",
                    n,
                    *ms_pair(memo[0]),
                    diff(memo[0], base_none),
                    None,
                    memo,
                    baseline="no checkpointer",
                )
            )
        if sql:
            q = sql[0]
            entry.update(
                sqlite_ms=q.get("ms_per_step"),
                status=q["status"],
                steps_done=q["steps"],
                bytes_per_step=q.get("bytes_per_step"),
                overhead_vs_memory=diff(q, base_mem),
                overhead_vs_none=diff(q, base_none),
            )
            label = "SqliteSaver, durability=sync"
            if q["status"] != "ok":
                label += (
                    f" — {q['status']}: {q['steps']:,} of {n:,} steps in {q['timeout_s']:.0f} s"
                )
            rows.append(
                row(
                    "LangGraph",
                    label,
                    n,
                    *ms_pair(q),
                    entry["overhead_vs_memory"],
                    q.get("bytes_per_step"),
                    sql,
                    baseline="InMemorySaver",
                )
            )
        if asy:
            q = asy[0]
            entry["async_ms"] = q.get("ms_per_step")
            rows.append(
                row(
                    "LangGraph",
                    "SqliteSaver, durability=async (its default)",
                    n,
                    *ms_pair(q),
                    diff(q, base_mem),
                    q.get("bytes_per_step"),
                    asy,
                    baseline="InMemorySaver",
                )
            )
        lg[n] = entry
    s["langgraph"] = lg

    # DBOS
    db: dict[str, Any] = {}
    for n in sorted({x["n"] for x in bench.find(system="dbos")}):
        entry = {"n": n}
        for mode, label in (
            ("default", "SQLite, DBOS defaults (rollback journal, synchronous=FULL)"),
            ("wal-normal", "SQLite, WAL + synchronous=NORMAL (as Tether)"),
        ):
            found = bench.find(system="dbos", sqlite=mode, n=n)
            if not found:
                continue
            q = found[0]
            plain = q["result"]["plain_loop_s"] / n * 1000 if q["result"] else None
            over = q["ms_per_step"] - plain if plain is not None and "ms_per_step" in q else None
            entry[mode] = {
                "ms": q.get("ms_per_step"),
                "overhead_ms": over,
                "plain_ms": plain,
                "bytes_per_step": q.get("bytes_per_step"),
                "status": q["status"],
            }
            if q["status"] != "ok":
                label += f" — {q['status']} after {q['steps']:,} steps"
            rows.append(
                row(
                    "DBOS",
                    label,
                    n,
                    *ms_pair(q),
                    over,
                    q.get("bytes_per_step"),
                    found,
                    baseline="same loop without DBOS",
                )
            )
        db[n] = entry
    s["dbos"] = db

    s["ratios"] = ratios(s, args.main_n)
    s["checks"] = checks(s, args)
    return s


def ms_pair(run: dict[str, Any]) -> tuple[float | None, float | None]:
    return run.get("ms_per_step"), run.get("cpu_ms_per_step")


def diff(run: dict[str, Any], base: float | None) -> float | None:
    if base is None or run.get("status") != "ok" or "ms_per_step" not in run:
        return None
    return run["ms_per_step"] - base


def tenths(runs: list[dict[str, Any]]) -> tuple[float, float]:
    ok = [x["result"] for x in runs if x.get("result")]
    return (med([x["first_tenth_ms"] for x in ok]), med([x["last_tenth_ms"] for x in ok]))


def row(
    system: str,
    store: str,
    n: int,
    ms: float | None,
    cpu: float | None,
    overhead: float | None,
    bps: float | None,
    runs: list[dict[str, Any]],
    *,
    rounds: int = 1,
    spread: tuple[float, float] | None = None,
    baseline: str | None = None,
) -> dict[str, Any]:
    first, last = tenths(runs)
    rss = max((x["result"]["peak_rss_mb"] for x in runs if x.get("result")), default=math.nan)
    return {
        "system": system,
        "store": store,
        "n": n,
        "ms": ms,
        "cpu_ms": cpu,
        "overhead_ms": overhead,
        "bytes_per_step": bps,
        "rounds": rounds,
        "spread": spread,
        "first_tenth_ms": first,
        "last_tenth_ms": last,
        "peak_rss_mb": rss,
        "baseline": baseline or ("memory:// store" if system.startswith("Tether") else None),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b <= 0 or a <= 0:
        return None
    return a / b


def ratios(s: dict[str, Any], n: int) -> list[dict[str, Any]]:
    t = s["tether"].get(n)
    if t is None:
        return []
    out: list[dict[str, Any]] = []

    def add(what: str, a: float | None, b: float | None, note: str = "") -> None:
        out.append({"what": what, "a": a, "b": b, "ratio": ratio(a, b), "note": note})

    lg = s["langgraph"].get(n, {})
    if lg:
        ok = lg.get("status") == "ok"
        add(
            "LangGraph SqliteSaver / Tether SQLite: ms per step",
            lg.get("sqlite_ms") if ok else None,
            t["sqlite_ms"],
        )
        add(
            "LangGraph (SqliteSaver - InMemorySaver) / Tether (SQLite - memory): durable overhead",
            lg.get("overhead_vs_memory"),
            t["overhead_ms"],
        )
        add(
            "LangGraph (SqliteSaver - no checkpointer) / Tether (SQLite - memory)",
            lg.get("overhead_vs_none"),
            t["overhead_ms"],
        )
        add(
            "LangGraph SqliteSaver / Tether SQLite: bytes per step",
            lg.get("bytes_per_step") if ok else None,
            t["bytes_per_step"],
        )
    d = s["dbos"].get(n, {})
    if d.get("default"):
        add(
            "DBOS (defaults) / Tether SQLite (default): ms per step",
            d["default"]["ms"],
            t["sqlite_ms"],
            "DBOS fsyncs every commit, Tether's default does not",
        )
        full = s.get("tether_full")
        if full:
            add(
                "DBOS (defaults) / Tether SQLite synchronous=FULL: ms per step (both fsync)",
                d["default"]["ms"],
                full["ms"],
            )
    if d.get("wal-normal"):
        add(
            "DBOS (WAL + NORMAL) / Tether SQLite (default): ms per step, same durability",
            d["wal-normal"]["ms"],
            t["sqlite_ms"],
        )
        add(
            "DBOS (WAL + NORMAL) - its plain loop / Tether (SQLite - memory): durable overhead",
            d["wal-normal"]["overhead_ms"],
            t["overhead_ms"],
        )
    if d.get("default"):
        add(
            "DBOS / Tether SQLite: bytes per step",
            d["default"]["bytes_per_step"],
            t["bytes_per_step"],
        )
    return out


def checks(s: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    t = s["tether"].get(args.main_n) or s["tether"][max(s["tether"])]
    big = [
        s["tether"][n]["bytes_per_step"] for n in s["tether"] if n >= min(1000, max(s["tether"]))
    ]
    spread = max(big) / min(big) - 1 if big else math.nan
    s["bytes_spread"] = spread
    return {
        "overhead": t["overhead_ms"] <= TARGET_OVERHEAD_MS,
        "flat": spread <= FLAT_TOLERANCE,
    }


# == profile =============================================================================


def profile_report(paths: dict[str, Path], n: int, top: int = 18) -> dict[str, Any]:
    """Top functions of the SQLite run, and the functions whose own time grew the most
    from the memory run to the SQLite run (where the durable overhead goes)."""
    stats = {k: pstats.Stats(str(p)) for k, p in paths.items()}

    def own(st: pstats.Stats) -> dict[str, tuple[float, int, float]]:
        out = {}
        for (file, line, fn), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
            short = (
                file.replace(str(CODE["path"]) + "/", "")
                .replace(sysconfig.get_paths()["stdlib"], "stdlib")
                .replace(sys.prefix, "venv")
            )
            out[f"{short}:{line}({fn})"] = (tt, nc, ct)
        return out

    mem, sql = own(stats["memory"]), own(stats["sqlite"])
    total = {k: sum(v[0] for v in d.values()) for k, d in (("memory", mem), ("sqlite", sql))}
    grew = sorted(
        ((k, sql[k][0] - mem.get(k, (0.0, 0, 0.0))[0], sql[k][1]) for k in sql),
        key=lambda x: -x[1],
    )[:top]
    text = io.StringIO()
    st = stats["sqlite"]
    st.stream = text  # type: ignore[attr-defined]
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    return {
        "n": n,
        "total_s": total,
        "grew": [
            {"function": k, "extra_ms_per_step": d / n * 1000, "calls": c} for k, d, c in grew
        ],
        "sqlite_top": [
            {
                "function": k,
                "own_ms_per_step": v[0] / n * 1000,
                "calls": v[1],
                "cum_ms_per_step": v[2] / n * 1000,
            }
            for k, v in sorted(sql.items(), key=lambda kv: -kv[1][0])[:top]
        ],
        "text": text.getvalue(),
    }


# == machine =============================================================================


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu": cpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "packages": workload.versions(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_start": os.getloadavg(),
        "code": CODE["label"],
        "fingerprint": CODE["fingerprint"],
    }


def filesystem_of(path: Path) -> str:
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                mount = parts[1].replace("\\040", " ")
                if (str(path).startswith(mount.rstrip("/") + "/") or str(path) == mount) and len(
                    mount
                ) > len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


# == report ==============================================================================


def fmt_ms(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def fmt_bytes(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:,.0f}"


def fmt_ratio(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2f}x" if v < 10 else f"{v:,.0f}x"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def build_tables(r: dict[str, Any]) -> dict[str, list[list[str]]]:
    s = r["summary"]
    tables: dict[str, list[list[str]]] = {}
    rows = [
        [
            "system",
            "store / settings",
            "N steps",
            "ms/step",
            "CPU ms/step",
            "durable overhead ms/step",
            "overhead baseline",
            "bytes/step",
            "ms/step first → last tenth",
            "peak RSS MB",
        ]
    ]
    for x in s["rows"]:
        over = fmt_ms(x["overhead_ms"])
        if x["spread"]:
            over += f" ({fmt_ms(x['spread'][0])} … {fmt_ms(x['spread'][1])})"
        n = f"{x['n']:,}" + (f" (x{x['rounds']})" if x["rounds"] > 1 else "")
        rows.append(
            [
                x["system"],
                x["store"],
                n,
                fmt_ms(x["ms"]),
                fmt_ms(x["cpu_ms"]),
                over,
                x["baseline"] if x["overhead_ms"] is not None else "-",
                fmt_bytes(x["bytes_per_step"]),
                f"{fmt_ms(x['first_tenth_ms'])} → {fmt_ms(x['last_tenth_ms'])}",
                f"{x['peak_rss_mb']:.0f}" if math.isfinite(x["peak_rss_mb"]) else "-",
            ]
        )
    tables["main"] = rows

    rows = [["at N = " + f"{r['config']['main_n']:,}", "numerator", "denominator", "ratio", "note"]]
    for x in s["ratios"]:
        a = fmt_bytes(x["a"]) if "bytes" in x["what"] else fmt_ms(x["a"])
        b = fmt_bytes(x["b"]) if "bytes" in x["what"] else fmt_ms(x["b"])
        rows.append([x["what"], a, b, fmt_ratio(x["ratio"]), x["note"]])
    tables["ratios"] = rows

    rows = [
        [
            "N steps",
            "database bytes",
            "bytes/step",
            "event rows",
            "event bytes/step",
            "snapshots kept (bytes)",
            "free pages bytes",
            "pages/step: events (unused) · event key · audit copy + indexes · other",
        ]
    ]
    prev = None
    for n, t in sorted(s["tether"].items()):
        d = t["detail"]
        rows.append(
            [
                f"{n:,}",
                fmt_bytes(t["db_bytes"]),
                fmt_bytes(t["bytes_per_step"]),
                f"{d.get('events', 0):,} ({d.get('events', 0) / n:.2f}/step)",
                fmt_bytes(d.get("event_bytes", 0) / n),
                f"{d.get('snapshots', 0)} ({d.get('snapshot_bytes', 0):,})",
                fmt_bytes(d.get("free_bytes")),
                page_summary(d, n),
            ]
        )
        if prev is not None:
            pn, pt = prev
            marginal = (t["db_bytes"] - pt["db_bytes"]) / (n - pn)
            rows[-1][2] += f" (marginal {fmt_bytes(marginal)})"
        prev = (n, t)
    tables["bytes"] = rows

    t = s["tether"].get(r["config"]["main_n"]) or s["tether"][max(s["tether"])]
    rows = [
        [
            "part of a step",
            "calls/step",
            "memory:// ms/step (CPU)",
            "SQLite ms/step (CPU)",
            "SQLite - memory ms/step (CPU)",
        ]
    ]

    def pair(v: tuple[float, float]) -> str:
        return f"{fmt_ms(v[0])} ({fmt_ms(v[1])})"

    for x in t["parts"]:
        d = (x["sqlite"][0] - x["memory"][0], x["sqlite"][1] - x["memory"][1])
        calls = f"{x['calls']:.2f}" if math.isfinite(x["calls"]) else ""
        rows.append([x["part"], calls, pair(x["memory"]), pair(x["sqlite"]), pair(d)])
    tables["parts"] = rows
    return tables


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row_ in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row_)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(rows: list[list[str]]) -> str:
    def line(row_: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in row_) + " |"

    return "\n".join([line(rows[0]), "|" + "---|" * len(rows[0]), *map(line, rows[1:])])


def checks_summary(r: dict[str, Any]) -> list[tuple[str, str, bool]]:
    s, cfg = r["summary"], r["config"]
    t = s["tether"].get(cfg["main_n"]) or s["tether"][max(s["tether"])]
    sizes = [n for n in s["tether"] if n >= min(1000, max(s["tether"]))]
    return [
        (
            f"Tether durable overhead per step at {t['n']:,} steps <= {TARGET_OVERHEAD_MS} ms "
            "(median of paired runs, SQLite default - memory://)",
            f"{fmt_ms(t['overhead_ms'])} ms end to end (CPU {fmt_ms(t['overhead_cpu_ms'])}); "
            f"{fmt_ms(t['inside_ms'])} ms inside the store and ledger (CPU "
            f"{fmt_ms(t['inside_cpu_ms'])})",
            s["checks"]["overhead"],
        ),
        (
            f"Tether bytes per step flat (within {FLAT_TOLERANCE:.0%} over "
            f"{', '.join(f'{n:,}' for n in sorted(sizes))} steps)",
            f"spread {s['bytes_spread']:.1%}",
            s["checks"]["flat"],
        ),
    ]


def describe(r: dict[str, Any]) -> dict[str, str]:
    m, cfg = r["machine"], r["config"]
    pk = {k: v for k, v in m["packages"].items() if v}
    loads = [x.get("load_before") for x in r["runs"]] + [x.get("load_after") for x in r["runs"]]
    loads = [x for x in loads if x is not None]
    return {
        "machine": (
            f"{m['nproc']} CPUs ({m['cpu']}), {m['os']}, Python {m['python']}, SQLite "
            f"{m['sqlite']}; temporary files on {cfg['filesystem']}; 1-minute load average "
            f"{min(loads):.1f}-{max(loads):.1f} during the run (other work shared the machine)"
            if loads
            else f"{m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, SQLite {m['sqlite']}"
        ),
        "packages": ", ".join(f"{k} {v}" for k, v in pk.items())
        or "none of the comparison packages",
        "workload": (
            f"N steps, each one model turn calling `fetch(i)` + the tool call, whose result is "
            f"{cfg['tool_chars']:,} characters of text; then one final answering turn. "
            "The scripted model decides from the number of messages only (O(1) per turn); in "
            "Tether it is a `ScriptedModel` subclass whose token count is kept incrementally "
            "(the stock `ScriptedModel` re-estimates the whole context every turn: its rows "
            "are marked), with a 10^9-token window so no compaction happens, "
            "`Limits(max_steps=None)`, and an async `@tool` (no thread hop)"
        ),
        "method": (
            "every measurement is a fresh child process; the clock (time.perf_counter, and "
            "time.process_time for CPU) runs around the whole run only (Tether: "
            "`Runtime.start`, so run creation, the lease and the final answer are included; "
            "LangGraph: `graph.stream`; DBOS: the workflow call), after setup and a "
            "gc.collect(); ms/step = time / N. Tether memory/SQLite runs are paired rounds in "
            "alternating order and the overhead is the median of the per-round differences "
            "(min … max in brackets); figures of one run have no brackets. bytes/step = the "
            "database file after `PRAGMA wal_checkpoint(TRUNCATE)` on a separate connection "
            "(+ any WAL or rollback journal left) / N. First → last tenth: mean interval "
            "between model calls over the first and the last 10% of the steps (how a step's "
            "cost grows with the run)"
        ),
    }


def markdown(r: dict[str, Any], tables: dict[str, list[list[str]]], command: str) -> str:
    m, d, s, cfg = r["machine"], describe(r), r["summary"], r["config"]
    out = [
        "## Agent loop: durable cost per step, bytes per step, vs LangGraph and DBOS",
        "",
        f"Measured {m['date']} on {m['code']} (fingerprint {m['fingerprint']}) in "
        f"{r['elapsed_s']:.0f} s{'; QUICK smoke run' if cfg['quick'] else ''}.",
        "",
        f"- **Machine:** {d['machine']}.",
        f"- **Comparison packages:** {d['packages']}.",
        f"- **Workload:** {d['workload']}.",
        f"- **Method:** {d['method']}.",
        f"- **Reproduce:** `{command}` (from the repository root; "
        '`.venv/bin/pip install -e ".[bench]"` first for the comparisons).',
        "",
        "| target | measured | result |",
        "|---|---|---|",
        *[f"| {name} | {value} | {verdict(ok)} |" for name, value, ok in checks_summary(r)],
        "",
        "### Cost per step",
        "",
        md_table(tables["main"]),
        "",
    ]
    if s["ratios"]:
        out += [f"### Ratios at {cfg['main_n']:,} steps", "", md_table(tables["ratios"]), ""]
    for system, why in r["skipped"].items():
        out += [f"- {system} skipped: {why}."]
    if r["skipped"]:
        out += [""]
    out += [
        f"### Tether: where a step's time goes at {cfg['main_n']:,} steps",
        "",
        "Every store and budget-ledger call timed inside the runs (medians over the "
        "rounds); this is the durable work itself, less exposed to the rest of the "
        "machine than the difference of two whole runs:",
        "",
        md_table(tables["parts"]),
        "",
        "### Tether: storage per step (SQLite default store)",
        "",
        md_table(tables["bytes"]),
        "",
        "### What the figures say",
        "",
        *[f"- {line}" for line in findings(r)],
    ]
    if r.get("profile"):
        p = r["profile"]
        rows = [["function (own time)", "SQLite - memory ms/step", "calls in the SQLite run"]]
        rows += [
            [x["function"], f"{x['extra_ms_per_step']:.4f}", f"{x['calls']:,}"]
            for x in p["grew"][:12]
        ]
        rows2 = [["function", "own ms/step", "cumulative ms/step", "calls"]]
        rows2 += [
            [
                x["function"],
                f"{x['own_ms_per_step']:.4f}",
                f"{x['cum_ms_per_step']:.3f}",
                f"{x['calls']:,}",
            ]
            for x in p["sqlite_top"][:12]
        ]
        out += [
            "",
            f"### cProfile of the Tether runs at {p['n']:,} steps",
            "",
            "Where the durable overhead goes (own time of each function in the SQLite run "
            "minus the memory run; cProfile slows everything down, so compare shares, not "
            "absolute times; functions that do the same work in both runs, such as the "
            "context code, show up here only through noise and cache effects):",
            "",
            md_table(rows),
            "",
            "Top own time in the SQLite run:",
            "",
            md_table(rows2),
        ]
    return "\n".join(out)


def findings(r: dict[str, Any]) -> list[str]:
    s, cfg = r["summary"], r["config"]
    n = cfg["main_n"]
    out: list[str] = []
    t = s["tether"].get(n)
    if t is None:
        return out
    met = s["checks"]["overhead"]
    parts = {x["part"]: x for x in t["parts"]}
    appends = parts.get("store.append", {}).get("calls", math.nan)
    ledger = sum(x["calls"] for k, x in parts.items() if k.startswith("ledger."))
    events = t["detail"].get("events", 0) / n
    out.append(
        f"Tether's durable overhead at {n:,} steps is {fmt_ms(t['overhead_ms'])} ms per step "
        f"end to end (CPU {fmt_ms(t['overhead_cpu_ms'])} ms) and {fmt_ms(t['inside_ms'])} ms "
        f"timed inside the store and ledger calls: the target of {TARGET_OVERHEAD_MS} ms is "
        f"{'met' if met else 'missed'}. A step journals {events:.1f} events in "
        f"{appends:.1f} appends (one SQLite transaction each)"
        + (
            f", and the budget ledger adds {ledger:.1f} calls (each its own write transaction)"
            if ledger
            else "; the model call's reservation and its settlement are written inside those "
            "transactions (`Store.append(also=...)`), and the turn's last tool result rides "
            "in the next step's first one"
        )
        + ". Those commits write no audit index page (SQLite copies the indexed columns "
        "into `audit_rows` 512 events at a time, from the values the writer sealed) and "
        "never checkpoint the WAL (a background thread does): they write the events (schema "
        "6: run key, seq and the v3 envelope's bytes only, the body deflated), their "
        "`(run, seq)` key, the run's row and the ledger's rows."
    )
    sizes = sorted(s["tether"])
    growth = ", ".join(
        " → ".join(fmt_ms(v) for v in s["tether"][k]["memory_tenths"]) + f" ms at {k:,}"
        for k in sizes
    )
    first, last = s["tether"][sizes[-1]]["memory_tenths"][:2]
    if last <= 1.3 * first:
        out.append(
            "The loop itself (memory:// store) costs the same per step early and late in a "
            f"run (first → last tenth: {growth}): the model context is kept incrementally "
            "(`ContextCache`), so a step does not grow with the context."
        )
    else:
        out.append(
            "The loop itself (memory:// store) is not O(1) per step: a step's time grows with "
            f"the context (first → last tenth: {growth}). This is the same with or without "
            "SQLite, so it cancels out of the durable overhead but dominates the total time "
            "per step of long runs."
        )
    stock = s.get("tether_stock")
    if stock:
        figures = "; ".join(
            f"{fmt_ms(x['stock_model_ms'])} ms/step in the model and {fmt_ms(x['stock_ms'])} "
            f"ms/step in all at {x['n']:,} steps (O(1) model: {fmt_ms(x['bench_model_ms'])} and "
            f"{fmt_ms(x['bench_ms'])})"
            for x in stock
        )
        out.append(
            "The stock `ScriptedModel` re-estimates the whole context's tokens in every "
            "`complete` and for every budget estimate the runtime asks for (memory:// runs): "
            f"{figures}. That cost grows with the context, so it soon dominates a step: it "
            "is why every other Tether figure uses the O(1) model. It is model cost, the same "
            "with or without the journal."
        )
    full = s.get("tether_full")
    if full:
        commits = appends + ledger
        out.append(
            f"With `?synchronous=full` (an fsync per commit, safe against power loss) a step "
            f"costs {fmt_ms(full['ms'])} ms ({fmt_ms(full['overhead_ms'])} ms over memory, one "
            f"run): {commits:.0f} commits per step, each waiting for the disk."
        )
    spread = s["bytes_spread"]
    small = min(s["tether"])
    out.append(
        f"Bytes per step are {'flat' if s['checks']['flat'] else 'NOT flat'} ({spread:.1%} "
        "apart from 1,000 steps up): the journal stores each event once and keeps only the "
        f"newest two snapshots; the {small:,}-step figure also carries the schema's fixed pages."
    )
    lg = s["langgraph"]
    if lg:
        parts = []
        for k, e in sorted(lg.items()):
            if e.get("sqlite_ms") is not None:
                state = (
                    ""
                    if e.get("status") == "ok"
                    else f" ({e['status']}, {e['steps_done']:,} steps)"
                )
                parts.append(
                    f"{fmt_ms(e['sqlite_ms'])} ms/step and {fmt_bytes(e.get('bytes_per_step'))} "
                    f"B/step at {k:,}{state}"
                )
        small_lg = lg[min(lg)]
        versus = (
            f" ({fmt_ms(small_lg.get('async_ms'))} vs {fmt_ms(small_lg.get('sqlite_ms'))} "
            f"ms/step at {min(lg):,} steps)"
            if small_lg.get("async_ms") is not None
            else ""
        )
        out.append(
            "LangGraph's checkpoints hold the whole message list, so both its time and its "
            "storage per step grow with the run (quadratic in total): " + "; ".join(parts) + ". "
            'Its runs use `durability="sync"` (each checkpoint written before the next step, '
            "as Tether does); its default, `async`, hands the writes to a background thread "
            "that the run waits for at the end, so it saves little in total" + versus + "."
        )
    dbos = s["dbos"]
    if dbos:
        e = dbos.get(n, {})
        if e.get("default") and e.get("wal-normal"):
            cpu = next(
                (
                    x["cpu_ms"]
                    for x in s["rows"]
                    if x["system"] == "DBOS" and x["n"] == n and "defaults" in x["store"]
                ),
                None,
            )
            out.append(
                f"DBOS on SQLite with its defaults costs {fmt_ms(e['default']['ms'])} ms/step "
                f"(of which {fmt_ms(cpu)} ms CPU: the rest is waiting for fsyncs, as it uses a "
                "rollback journal with synchronous=FULL and commits every step function); with "
                f"WAL + synchronous=NORMAL it costs {fmt_ms(e['wal-normal']['ms'])} ms/step. "
                "Its storage per step stays flat: it keeps step outputs, not the conversation."
            )
    return out


def print_report(r: dict[str, Any], tables: dict[str, list[list[str]]], command: str) -> None:
    d, m = describe(r), r["machine"]
    print()
    print("Tether loop benchmark" + ("  [QUICK smoke run]" if r["config"]["quick"] else ""))
    print(f"  machine:  {d['machine']}")
    print(f"  packages: {d['packages']}")
    print(f"  date:     {m['date']}; took {r['elapsed_s']:.0f} s")
    print(f"  code:     {m['code']} (fingerprint {m['fingerprint']})")
    print(f"  command:  {command}")
    print()
    print("Cost per step")
    print(text_table(tables["main"]))
    if r["summary"]["ratios"]:
        print()
        print(f"Ratios at {r['config']['main_n']:,} steps")
        print(text_table(tables["ratios"]))
    for system, why in r["skipped"].items():
        print(f"\n{system} skipped: {why}")
    print()
    n = r["config"]["main_n"]
    print(f"Tether: where a step's time goes at {n:,} steps (timed inside the runs)")
    print(text_table(tables["parts"]))
    print()
    print("Tether storage per step (SQLite default store)")
    print(text_table(tables["bytes"]))
    print()
    for line in findings(r):
        print(f"- {line}")
    print()
    print("Targets")
    for name, value, ok in checks_summary(r):
        print(f"  {verdict(ok)}  {name}: {value}")


# == main ================================================================================


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: small N, Tether only; writes no results unless --results is given",
    )
    p.add_argument(
        "--sizes",
        type=numbers(10),
        help="run lengths, comma separated (default 100,1000,3000; quick 50,200)",
    )
    p.add_argument(
        "--main-n",
        type=at_least(10),
        help="the run length the targets and ratios are judged at (default 1000; quick: the "
        "largest size)",
    )
    p.add_argument(
        "--rounds",
        type=at_least(1),
        help="paired Tether rounds at each N up to --main-n (default 5; quick 1)",
    )
    p.add_argument(
        "--no-compare", dest="compare", action="store_false", help="skip LangGraph and DBOS"
    )
    p.add_argument(
        "--lg-timeout",
        type=seconds,
        default=40.0,
        help="seconds allowed to LangGraph runs longer than --main-n (default 40)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the Tether memory and SQLite runs at --main-n",
    )
    p.add_argument(
        "--code",
        choices=("worktree", "head"),
        default="worktree",
        help="measure a frozen copy of the working tree's src/tether (default) or of git HEAD's",
    )
    p.add_argument(
        "--dir", type=Path, help="parent of the temporary folder (default: the system temp dir)"
    )
    p.add_argument(
        "--results",
        type=Path,
        help=f"results file to update (default {RESULTS_PATH.relative_to(REPO)})",
    )
    p.add_argument(
        "--no-write", action="store_true", help="print only; do not touch the results file"
    )
    p.add_argument("--json", type=Path, help="also save the raw figures as JSON")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument(
        "--sync-boundary",
        action="store_true",
        help="measure only what syncing before effects costs: paired rounds of a workload of "
        "idempotent calls and one of non-idempotent calls (writes its own section)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.sizes = sorted(set(args.sizes or ([50, 200] if quick else [100, 1000, 3000])))
    args.main_n = args.main_n or (max(args.sizes) if quick else MAIN_N)
    if args.main_n not in args.sizes:
        p.error(f"--main-n {args.main_n} must be one of --sizes")
    args.rounds = args.rounds or (1 if quick else 5)
    if quick:
        args.compare = False
    return args


def command_line(argv: list[str]) -> str:
    python = (
        ".venv/bin/python" if Path(sys.executable).parent.parent == REPO / ".venv" else "python"
    )
    keep, skip = [], False
    for a in argv:  # output-only options are not part of the reproduction
        if skip or a in ("--no-write", "--strict") or a.startswith("--json="):
            skip = False
            continue
        if a == "--json":
            skip = True
            continue
        keep.append(a)
    return " ".join([python, "bench/loop.py", *map(shlex.quote, keep)])


SYNC_SECTION = "loop-sync-boundary"


def sync_boundary(args: argparse.Namespace, argv: list[str]) -> int:
    """The cost of the sync boundary (issue: exactly-once under lost commits): the same
    loop on SQLite NORMAL with an idempotent tool (no sync) and a non-idempotent one (each
    call's write-ahead record synced first), against memory, in rounds whose order
    alternates, plus SQLite FULL (every commit synced) for scale."""
    n = args.main_n
    plan = [
        ("memory", "normal", "idempotent"),
        ("sqlite", "normal", "idempotent"),
        ("sqlite", "normal", "non-idempotent"),
        ("sqlite", "full", "idempotent"),
    ]
    figures: dict[tuple[str, str, str], list[tuple[float, float]]] = {k: [] for k in plan}
    with tempfile.TemporaryDirectory(prefix="tether-bench-sync-", dir=args.dir) as tmp:
        bench = Bench(args, Path(tmp))
        for i in range(args.rounds):
            for store, sync, effects in plan if i % 2 == 0 else list(reversed(plan)):
                run = bench.tether(store, n, sync=sync, effects=effects, round_no=i)
                figures[(store, sync, effects)].append((run["ms_per_step"], run["cpu_ms_per_step"]))
    base_wall = med([w for w, _ in figures[plan[0]]])
    base_cpu = med([c for _, c in figures[plan[0]]])
    rows = []
    for key in plan:
        wall = med([w for w, _ in figures[key]])
        cpu = med([c for _, c in figures[key]])
        rows.append((key, wall, cpu, wall - base_wall, cpu - base_cpu))
    m = machine()
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['nproc']} cores), load "
        f"{', '.join(f'{x:.1f}' for x in m['load_start'])}, SQLite {m['sqlite']}; "
        f"{n:,} steps, median of {args.rounds} rounds (order alternating), each in a fresh "
        "process. Command: `" + command_line(argv) + "`",
        "",
        "| store | workload | ms/step (wall) | CPU ms/step | durable overhead (wall) "
        "| durable overhead (CPU) |",
        "|---|---|---|---|---|---|",
    ]
    for (store, sync, effects), wall, cpu, dwall, dcpu in rows:
        where = "memory" if store == "memory" else f"SQLite {sync.upper()}"
        lines.append(
            f"| {where} | {effects} calls | {wall:.3f} | {cpu:.3f} | {dwall:+.3f} ms "
            f"| {dcpu:+.3f} ms |"
        )
    idem = next(r for r in rows if r[0] == ("sqlite", "normal", "idempotent"))
    eff = next(r for r in rows if r[0] == ("sqlite", "normal", "non-idempotent"))
    lines += [
        "",
        f"Non-idempotent calls minus idempotent ones: {eff[1] - idem[1]:+.3f} ms of wall "
        f"time per step ({eff[2] - idem[2]:+.3f} ms CPU), the price of two syncs before "
        "each call with effects: the WAL's, and the sync log's beside the store (which lets "
        "a resume refuse a run whose synced commit a damaged WAL lost). Idempotent calls and "
        "model calls keep the cheap path "
        "(their commits are synced only by checkpoints), so a workload of idempotent calls "
        "pays nothing for it. The sync is wall time spent waiting for the disk, so this "
        "figure depends on the disk more than any other here.",
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        target = write_section(SYNC_SECTION, "## Loop: the sync boundary\n\n" + body,
                               args.results or RESULTS_PATH)  # fmt: skip
        print(f"\nwrote section '{SYNC_SECTION}' of {target}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(argv[1])
    args = parse_args(argv)
    if args.sync_boundary:
        return sync_boundary(args, argv)
    with tempfile.TemporaryDirectory(prefix="tether-bench-loop-", dir=args.dir) as tmp:
        results = run_plan(args, Path(tmp))
    command = command_line(argv)
    tables = build_tables(results)
    print_report(results, tables, command)
    if args.profile:
        print()
        print(f"cProfile of the Tether SQLite run at {args.main_n:,} steps")
        print(results["profile"]["text"])
        print("Own time that grew from the memory run to the SQLite run (ms per step):")
        for x in results["profile"]["grew"]:
            print(f"  {x['extra_ms_per_step']:8.4f}  {x['calls']:>8,}  {x['function']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"\nraw figures: {args.json}")
    if not args.no_write and (args.results is not None or not args.quick):
        target = write_section(
            SECTION, markdown(results, tables, command), args.results or RESULTS_PATH
        )
        print(f"\nwrote section '{SECTION}' of {target}")
    return 1 if args.strict and not all(results["summary"]["checks"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
