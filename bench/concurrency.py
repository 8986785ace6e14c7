"""Concurrency benchmark: 100 runs at once in one process against one run alone.

The loop benchmark's workload (`bench/loop.py`'s agent: a scripted O(1) model calling a
tool that returns ~1 KB, N steps, then an answer), run two ways in one store, with the
default settings (`Runtime("sqlite:///…")`: WAL, synchronous NORMAL, the budget ledger in
the file), each measurement in a fresh child process:

- **alone**: 100 runs of N steps, one after the other (`await runtime.start(...)`), so each
  run has the process to itself;
- **concurrent**: 100 runs of N steps started together (`asyncio.gather` of
  `runtime.start`), one event loop, one store.

Both do the same work per step, including each run's creation and its end (one run of N
steps per N steps either way). A step costing the same in both means nothing in the
runtime grows with the number of live runs: no lock convoy, no commit per run per step
that could be shared, no O(runs) scan per step. The same pair runs on `memory://` (no
store cost), so what the store adds to any difference is visible beside it. CPU is
process time (every thread); the machine is shared, so the figures that hold are the
same-round ratios (the two layouts run back to back, the order alternating per round),
their median over the rounds and their spread. memory:// is a reference, not the target:
it runs in the first rounds only.

`--instructions` adds the one figure a shared host cannot move: instructions per step
(callgrind) concurrent over alone, from 100 runs of a short and of a longer length in each
layout (the difference cancels start-up, the runs' creation and their end).

    .venv/bin/python bench/concurrency.py                 # ~10 min unloaded, rewrites its section
    .venv/bin/python bench/concurrency.py --quick         # seconds, writes nothing
    .venv/bin/python bench/concurrency.py --instructions  # + ~15 min under callgrind

`--profile DIR` saves a cProfile of each layout; `--strict` exits 1 when the target is
missed; `--json PATH` saves the raw figures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import re
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from _args import at_least  # noqa: E402
from _compare_agents import FINAL_ANSWER, TASK, emit, peak_rss_mb  # noqa: E402
from _results import RESULTS_PATH, write_section  # noqa: E402

import loop  # noqa: E402  (the loop benchmark's agent, child runner and code pinning)

SECTION = "concurrency"
CONCURRENT = 100
"""Runs started together in the concurrent layout."""
STEPS = 200
"""Steps per run (each is a model turn and its tool call)."""
ALONE_RUNS = 100
"""Runs one after the other in the alone layout: as many as run together, so both layouts
do the same steps and leave the same store behind."""
ROUNDS = 5
"""Rounds of the target (SQLite) cases: a median of 5 and its spread, in ~10 minutes."""
REFERENCE_ROUNDS = 2
"""Rounds of the memory:// reference cases (the first ones)."""
INSTRUCTION_STEPS = (10, 30)
"""Steps per run of the two callgrind measurements whose difference `--instructions` uses."""
TARGET_RATIO = 0.95
"""Concurrent steps/s over alone steps/s must be at least this."""
CPU_TOLERANCE = 0.05
"""Concurrent CPU per step may exceed alone CPU per step by at most this fraction."""
CHILD_TIMEOUT_S = 900.0


# == the child ===========================================================================


def yield_each_call(model: Any) -> None:
    """Make the model give the event loop a turn on every call (`asyncio.sleep(0)`), as a
    real model's network wait does: without it a step never waits, so runs started together
    simply take turns run by run and never interleave step by step."""
    complete = model.complete

    async def yielding(request: Any, *, on_text: Any = None) -> Any:
        await asyncio.sleep(0)
        return await complete(request, on_text=on_text)

    model.complete = yielding


async def measure(spec: dict[str, Any]) -> dict[str, Any]:
    from tether import Runtime

    n, together, batches = spec["n"], spec["together"], spec["batches"]
    url = "memory://" if spec["store"] == "memory" else f"sqlite:///{spec['db']}"
    runtime = Runtime(url)
    agents = [loop.tether_agent(n, "bench", [], [0.0, 0.0]) for _ in range(together * batches)]
    if spec.get("yielding"):
        for agent in agents:
            yield_each_call(agent.model)
    profiler = cProfile.Profile() if spec.get("profile") else None
    gc.collect()
    collector = [0, 0.0]  # collections, CPU seconds spent in them
    started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.process_time()
        else:
            collector[0] += 1
            collector[1] += time.process_time() - started[0]

    gc.callbacks.append(on_gc)
    t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
    if profiler:
        profiler.enable()
    results = []
    for b in range(batches):
        batch = agents[b * together : (b + 1) * together]
        results += await asyncio.gather(*(runtime.start(a, TASK) for a in batch))
    if profiler:
        profiler.disable()
    t1, c1, m1 = time.perf_counter(), time.process_time(), time.thread_time()
    gc.callbacks.remove(on_gc)
    await runtime.close()
    if profiler:
        profiler.dump_stats(spec["profile"])
    wrong = [
        r for r in results if (r.status, r.steps, r.answer) != ("completed", n + 1, FINAL_ANSWER)
    ]
    if wrong:
        raise SystemExit(f"{len(wrong)} runs did not finish as scripted, e.g. {wrong[0]}")
    steps = n * len(results)
    return {
        "steps": steps,
        "runs": len(results),
        "wall_s": t1 - t0,
        "cpu_s": c1 - c0,
        "main_thread_cpu_s": m1 - m0,
        "collections": collector[0],
        "collector_cpu_s": collector[1],
        "peak_rss_mb": peak_rss_mb(),
    }


def child_main(spec_json: str) -> int:
    emit("result", asyncio.run(measure(json.loads(spec_json))))
    return 0


# == the parent ==========================================================================


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def med(xs: list[float]) -> float:
    return statistics.median(xs)


class Bench:
    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.count = 0
        env = dict(os.environ)
        env[loop.CODE_ENV] = str(CODE["path"])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(CODE["path"]), env.get("PYTHONPATH", "")) if p
        )
        self.env = env

    def run(
        self,
        store: str,
        mode: str,
        layout: str,
        profile: Path | None = None,
        *,
        steps: int | None = None,
        callgrind: bool = False,
    ) -> dict[str, Any]:
        a = self.args
        n = steps or a.steps
        together, batches = (a.concurrent, 1) if layout == "concurrent" else (1, a.alone_runs)
        self.count += 1
        db = self.folder / f"{self.count:03d}-{store}-{layout}.db"
        out = self.folder / f"{self.count:03d}.callgrind"
        spec = {
            "store": store,
            "n": n,
            "together": together,
            "batches": batches,
            "db": str(db),
            "profile": str(profile) if profile else None,
            "yielding": mode == "yielding",
        }
        tool = "callgrind " if callgrind else ""
        log(f"  {tool}{store:6} {mode:8} {layout:10} ({together} x {batches} runs of {n} steps)")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
        if callgrind:
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd]
        child = loop.run_child(
            cmd, timeout=CHILD_TIMEOUT_S * (20 if callgrind else 1), env=self.env
        )
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-synclog")):
            p.unlink(missing_ok=True)
        if child["status"] != "ok":
            raise RuntimeError(f"child failed ({child['status']}):\n{child['error']}")
        res = child["result"]
        if callgrind:
            res["instructions"] = callgrind_total(out)
            out.unlink()
            log(f"    -> {res['instructions']:,} instructions")
            return res
        res["steps_per_s"] = res["steps"] / res["wall_s"]
        res["cpu_ms_per_step"] = res["cpu_s"] / res["steps"] * 1000
        res["gc_ms_per_step"] = res["collector_cpu_s"] / res["steps"] * 1000
        res["load"] = (child["load_before"], child["load_after"])
        log(
            f"    -> {res['steps_per_s']:,.0f} steps/s, {res['cpu_ms_per_step']:.3f} ms CPU/step"
            f" (load {child['load_before']:.1f})"
        )
        return res


MODES = ("direct", "yielding")
"""`direct`: the scripted model answers without waiting; `yielding`: it gives the event
loop one turn per call (see `yield_each_call`), so the runs interleave step by step."""


def cases(args: argparse.Namespace, round_: int | None = None) -> list[str]:
    """The cases (all, or those that run in round `round_`: memory:// in the first only)."""
    return [
        f"{store}/{mode}"
        for store in args.stores
        for mode in args.modes
        if round_ is None or store == "sqlite" or round_ < args.reference_rounds
    ]


def callgrind_total(path: Path) -> int:
    """The instructions a callgrind output file counted (its `totals:` line)."""
    found = re.search(r"^totals:\s+(\d+)", path.read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no totals in {path}")
    return int(found.group(1))


def spread(xs: list[float]) -> float:
    """Half the range of the middle rounds (all but the highest and the lowest from 5 on):
    how far one round's ratio strays from another's when the host is calm."""
    ys = sorted(xs)[1:-1] if len(xs) >= 5 else sorted(xs)
    return (ys[-1] - ys[0]) / 2 if ys else 0.0


def instructions_per_step(bench: Bench, store: str, mode: str) -> dict[str, float]:
    """Instructions per step of each layout: the difference of two run lengths, per step."""
    short, long = INSTRUCTION_STEPS
    out: dict[str, float] = {}
    for layout in ("alone", "concurrent"):
        counts = [
            bench.run(store, mode, layout, steps=n, callgrind=True)["instructions"]
            for n in (short, long)
        ]
        runs = bench.args.concurrent if layout == "concurrent" else bench.args.alone_runs
        out[layout] = (counts[1] - counts[0]) / (runs * (long - short))
    out["ratio"] = out["concurrent"] / out["alone"]
    return out


def run_plan(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    bench = Bench(args, folder)
    rounds: dict[str, list[dict[str, Any]]] = {c: [] for c in cases(args)}
    for i in range(args.rounds):
        for case in cases(args, i):
            store, mode = case.split("/")
            order = ("alone", "concurrent") if i % 2 == 0 else ("concurrent", "alone")
            pair = {layout: bench.run(store, mode, layout) for layout in order}
            rounds[case].append(pair)
    out: dict[str, Any] = {"machine": loop.machine(), "rounds": rounds, "summary": {}}
    for case, pairs in rounds.items():
        sps = [p["concurrent"]["steps_per_s"] / p["alone"]["steps_per_s"] for p in pairs]
        cpu = [p["concurrent"]["cpu_ms_per_step"] / p["alone"]["cpu_ms_per_step"] for p in pairs]
        out["summary"][case] = {
            "alone_steps_per_s": med([p["alone"]["steps_per_s"] for p in pairs]),
            "concurrent_steps_per_s": med([p["concurrent"]["steps_per_s"] for p in pairs]),
            "alone_cpu_ms": med([p["alone"]["cpu_ms_per_step"] for p in pairs]),
            "concurrent_cpu_ms": med([p["concurrent"]["cpu_ms_per_step"] for p in pairs]),
            "alone_rss_mb": med([p["alone"]["peak_rss_mb"] for p in pairs]),
            "concurrent_rss_mb": med([p["concurrent"]["peak_rss_mb"] for p in pairs]),
            "alone_gc_ms": med([p["alone"]["gc_ms_per_step"] for p in pairs]),
            "concurrent_gc_ms": med([p["concurrent"]["gc_ms_per_step"] for p in pairs]),
            "sps_ratio": med(sps),
            "cpu_ratio": med(cpu),
            "sps_spread": spread(sps),
            "cpu_spread": spread(cpu),
            "sps_ratios": sps,
            "cpu_ratios": cpu,
        }
    if args.instructions:
        for case in cases(args):
            store, mode = case.split("/")
            if store == "sqlite" or args.reference_rounds:
                out["summary"][case]["instructions"] = instructions_per_step(bench, store, mode)
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        for case in cases(args):
            store, mode = case.split("/")
            for layout in ("alone", "concurrent"):
                path = args.profile / f"{store}-{mode}-{layout}.pstats"
                bench.run(store, mode, layout, profile=path)
    return out


def report(results: dict[str, Any], args: argparse.Namespace, command: str) -> tuple[str, bool]:
    m = results["machine"]
    a = args
    names = {"sqlite": "SQLite (WAL, NORMAL)", "memory": "memory://"}
    lines = [
        f"`{command}` · {m['date']} on {m['cpu']} ({m['nproc']} cores, shared), load "
        f"{', '.join(f'{x:.1f}' for x in m['load_start'])}, Python {m['python']}, "
        f"SQLite {m['sqlite']}.",
        "",
        f"The loop benchmark's agent (O(1) scripted model, ~1 KB tool result, no model "
        f"latency), {a.steps} steps per run, default `Runtime` settings. **Alone**: "
        f"{a.alone_runs} runs one after the other; **concurrent**: {a.concurrent} runs "
        "started together (`asyncio.gather` of `Runtime.start`) in one process and one "
        f"store. Each measurement in a fresh process; median of {a.rounds} rounds "
        f"(memory://, a reference: {min(a.rounds, a.reference_rounds)}), the two "
        "layouts back to back in each round (order alternating); ratios are per round, "
        "then the median ± half the range of the middle rounds (all but the extremes from "
        "5 rounds on). CPU is process time (all threads); *GC* is the CPU the cyclic "
        "garbage collector took (timed from `gc.callbacks`). Model **direct**: the scripted "
        "model answers without waiting, so a step never gives the event loop a turn and runs "
        "started together take turns run by run; **yielding**: it awaits `asyncio.sleep(0)` "
        "once per call (no latency, but a turn of the event loop, as a real model's network "
        "wait gives), so the 100 runs interleave step by step: the case that shows contention.",
        *(
            [
                "",
                f"*Instructions*: instructions per step (callgrind), concurrent over alone, "
                f"from runs of {INSTRUCTION_STEPS[0]} and {INSTRUCTION_STEPS[1]} steps "
                "in each layout (the difference cancels start-up, the runs' creation and end); "
                "the host's load cannot move it.",
            ]
            if a.instructions
            else []
        ),
        "",
        "| store | model | alone steps/s | concurrent steps/s | steps/s ratio | alone CPU ms/step "
        "| concurrent CPU ms/step | CPU ratio | instructions ratio "
        "| GC ms/step alone / concurrent "
        "| peak RSS alone / concurrent | ratios per round (steps/s / CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ok, judged = True, 0
    for case in cases(a):
        store, mode = case.split("/")
        s = results["summary"][case]
        per_round = "; ".join(
            f"{x:.2f}× / {y:.2f}×" for x, y in zip(s["sps_ratios"], s["cpu_ratios"], strict=True)
        )
        ins = s.get("instructions")
        ins_text = (
            f"**{ins['ratio']:.3f}×** ({ins['alone'] / 1e6:.2f} / {ins['concurrent'] / 1e6:.2f} M)"
            if ins
            else "–"
        )
        lines.append(
            f"| {names[store]} | {mode} | {s['alone_steps_per_s']:,.0f} | "
            f"{s['concurrent_steps_per_s']:,.0f} | "
            f"**{s['sps_ratio']:.2f}×** ± {s['sps_spread']:.2f} | "
            f"{s['alone_cpu_ms']:.3f} | {s['concurrent_cpu_ms']:.3f} | "
            f"**{s['cpu_ratio']:.2f}×** ± {s['cpu_spread']:.2f} | {ins_text} | "
            f"{s['alone_gc_ms']:.3f} / {s['concurrent_gc_ms']:.3f} | "
            f"{s['alone_rss_mb']:.0f} / "
            f"{s['concurrent_rss_mb']:.0f} MB | {per_round} |"
        )
        if store == "sqlite":
            judged += 1
            ok = ok and s["sps_ratio"] >= TARGET_RATIO and s["cpu_ratio"] <= 1 + CPU_TOLERANCE
    # A verdict needs both SQLite cases: a run of other cases (--stores, --modes) has none.
    ok = ok and judged == 2
    verdict = ("met" if ok else "MISSED") if judged == 2 else "not judged (needs both SQLite cases)"
    lines += [
        "",
        f"Target (SQLite, both models): steps/s ratio ≥ {TARGET_RATIO:.2f}× and CPU ratio ≤ "
        f"{1 + CPU_TOLERANCE:.2f}× — {verdict}. Steps/s is wall time, which "
        "a shared machine's other load moves; the CPU ratio is the steadier figure.",
    ]
    return "\n".join(lines), ok


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smoke run; writes nothing")
    p.add_argument("--code", choices=("worktree", "head"), default="worktree")
    p.add_argument("--steps", type=at_least(1), default=STEPS)
    p.add_argument("--concurrent", type=at_least(2), default=CONCURRENT)
    p.add_argument("--alone-runs", type=at_least(1), default=ALONE_RUNS)
    p.add_argument("--rounds", type=at_least(1), default=ROUNDS)
    p.add_argument("--reference-rounds", type=at_least(1), default=REFERENCE_ROUNDS)
    p.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions per step with callgrind (needs valgrind)",
    )
    p.add_argument("--stores", nargs="+", default=["sqlite", "memory"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--profile", type=Path, help="save a cProfile of each layout in this folder")
    p.add_argument("--json", type=Path)
    p.add_argument("--results", type=Path, help="write the section into this file instead")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    p.add_argument("--dir", help="folder for the temporary stores")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.concurrent, args.alone_runs, args.rounds = 50, 10, 2, 1
    if args.instructions and shutil.which("valgrind") is None:
        p.error("--instructions needs valgrind on PATH")
    return args


CODE: dict[str, Any] = dict(loop.CODE)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(argv[1])
    args = parse_args(argv)
    CODE.update(loop._pin_code(args.code))
    with tempfile.TemporaryDirectory(prefix="tether-bench-conc-", dir=args.dir) as tmp:
        results = run_plan(args, Path(tmp))
    command = " ".join([".venv/bin/python", "bench/concurrency.py", *map(shlex.quote, argv)])
    body, ok = report(results, args, command)
    print(body)
    print(f"\ncode: {CODE['label']} ({CODE['fingerprint']})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if not args.no_write and (args.results is not None or not args.quick):
        target = write_section(
            SECTION,
            "## Concurrency: 100 runs in one process against one alone\n\n" + body,
            args.results or RESULTS_PATH,
        )
        print(f"\nwrote section '{SECTION}' of {target}")
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
