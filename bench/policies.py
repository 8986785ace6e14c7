"""Policy seam benchmark: what the seam and the default health policies cost per step.

The same scripted agent as `bench/loop.py` in spirit (a model that calls `fetch(i)` N
times, O(1) work per turn, a ~1 KB tool result), driven on the in-memory store (so the
loop's own CPU is what is timed, not the disk) in three builds:

- **before the seam:** the source tree before the policy seam (`--base`, default
  `0133a685f8`), extracted with `git archive`;
- **seam, no health policies:** this tree with `Agent(policies=())` (the loop's own
  policies only: limits, runway, approvals);
- **default policies, previous:** the default policies in the tree this branch started
  from (`--previous`, default: the merge base with `main`), to show a change's effect;
- **seam, default policies:** this tree with the defaults (truncation, breakers,
  consistency, freshness, monitors).

Each measurement runs in a fresh child process; rounds are interleaved so drift hits every
build alike. The figure is CPU time of the process per step (not wall time: the machines
this runs on are shared, and the loop on the memory store is CPU-bound). Prints a table of
microseconds per step (median of the rounds) and writes the `policies` section of
bench/RESULTS.md (unless `--quick`).

    .venv/bin/python bench/policies.py            # 1,000 steps x 5 rounds (~1 min)
    .venv/bin/python bench/policies.py --quick    # 200 steps x 2 rounds, writes nothing
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _args import at_least  # noqa: E402

CHILD = r"""
import asyncio, json, sys, time
from tether import Agent, Limits, Runtime, tool
from tether.journal import MemoryStore
from tether.models import ModelRequest, ModelResponse, ModelUsage, ScriptedModel, ToolCall

n, modes, repeat = int(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3])
text = ("lorem data " * 100)[:1024]

@tool(idempotent=True)
async def fetch(i: int) -> str:
    "Fetch one page."
    return f"page {i}: {text}"

class Model(ScriptedModel):
    def __init__(self):
        super().__init__(["unused"], context_window=10_000_000)
    def count_tokens(self, messages, tools=()):
        return 40 * len(messages) + 20 * len(tools)
    async def complete(self, request, *, on_text=None):
        done = (len(request.messages) - 2) // 2
        calls = () if done >= n else (
            ToolCall(id=f"call_{done}", name="fetch", arguments=json.dumps({"i": done})),
        )
        return ModelResponse(
            content="done" if not calls else "", tool_calls=calls,
            finish_reason="tool_calls" if calls else "stop", model="bench",
            usage=ModelUsage(input_tokens=40 * len(request.messages), output_tokens=10),
        )

def agent(mode):
    kw = {"policies": ()} if mode == "empty" else {}
    return Agent(name="bench", instructions="Fetch every page.", tools=[fetch], model=Model(),
                 limits=Limits(max_steps=n + 5), **kw)

async def once(mode):
    rt = Runtime(MemoryStore(), ledger=False)
    a = agent(mode)
    start = time.process_time()
    result = await rt.start(a, "go")
    took = time.process_time() - start
    assert result.status == "completed" and result.steps == n + 1, result
    return took / (n + 1) * 1e6

INSIDE = [0.0, 0]

def timed(cls, name):
    # CPU time inside one policy method, and how many calls (to take the timer's cost out).
    import inspect
    f, clock, inside = cls.__dict__[name], time.process_time, INSIDE
    if inspect.iscoroutinefunction(f):
        async def w(self, *a):
            t = clock(); r = await f(self, *a); inside[0] += clock() - t; inside[1] += 1
            return r
    else:
        def w(self, *a):
            t = clock(); r = f(self, *a); inside[0] += clock() - t; inside[1] += 1
            return r
    setattr(cls, name, w)

if "inside" in modes:
    from tether.policies import default_policies
    hooks = ("observe", "hidden_tools", "before_model", "after_model", "before_tool",
             "after_tool", "before_answer", "context_marks")
    for cls in {type(p) for p in default_policies()}:
        for name in hooks:
            if name in cls.__dict__:
                timed(cls, name)

async def main():
    if modes == ["inside"]:
        # What the timer itself adds to a call: timed around a method that does nothing.
        class Idle:
            def observe(self, event):
                return None
        timed(Idle, "observe")
        idle = Idle()
        INSIDE[:] = [0.0, 0]
        for _ in range(20_000):
            idle.observe(None)
        per_call = INSIDE[0] / INSIDE[1]
        await once("default")
        out = {"inside": []}
        for _ in range(repeat):
            INSIDE[:] = [0.0, 0]
            await once("default")
            out["inside"].append((INSIDE[0] - INSIDE[1] * per_call) / (n + 1) * 1e6)
        print(json.dumps(out))
        return
    for mode in modes:  # warm-up: imports, caches
        await once(mode)
    out = {mode: [] for mode in modes}
    for _ in range(repeat):  # interleaved in one process: same conditions for each
        for mode in modes:
            out[mode].append(await once(mode))
    print(json.dumps(out))

asyncio.run(main())
"""


def base_tree(rev: str, into: Path) -> Path:
    """The `src` folder of `rev`, extracted into `into`."""
    archive = into / "base.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "archive", rev, "src"], cwd=ROOT, stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def measure(src: Path, n: int, modes: list[str], repeat: int) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), ",".join(modes), str(repeat)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"child failed ({modes}, {src}):\n{done.stderr[-2000:]}")
    result: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=at_least(10), default=1_000)
    parser.add_argument("--rounds", type=at_least(1), default=5)
    parser.add_argument("--repeat", type=at_least(1), default=3, help="paired runs per process")
    parser.add_argument("--base", default="0133a685f8", help="commit before the seam")
    parser.add_argument("--previous", default=None, help="commit whose default policies "
                        "are compared (default: the merge base with main)")  # fmt: skip
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds, args.repeat = 200, 1, 2
    base = args.base
    previous = args.previous or subprocess.run(
        ["git", "merge-base", "HEAD", "main"], cwd=ROOT, capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    builds = {"before the seam": "base", "previous": "previous", "this tree": "here"}
    figures: dict[tuple[str, str], list[float]] = {}
    costs: dict[str, list[float]] = {"previous": [], "this tree": []}
    inside: dict[str, list[float]] = {"previous": [], "this tree": []}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "base").mkdir()
        (Path(tmp) / "previous").mkdir()
        trees = {
            "base": base_tree(base, Path(tmp) / "base"),
            "previous": base_tree(previous, Path(tmp) / "previous"),
            "here": ROOT / "src",
        }
        for r in range(args.rounds):
            for name, tree in builds.items():
                modes = ["default"] if tree == "base" else ["empty", "default"]
                got = measure(trees[tree], args.steps, modes, args.repeat)
                for mode, values in got.items():
                    figures.setdefault((name, mode), []).extend(values)
                if tree != "base":
                    # The health policies' cost: each default run against the run without
                    # them just before it, in the same process.
                    pairs = zip(got["empty"], got["default"], strict=True)
                    costs[name].extend(d - e for e, d in pairs)
                    inside[name].extend(
                        measure(trees[tree], args.steps, ["inside"], args.repeat)["inside"]
                    )
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    med = {key: statistics.median(v) for key, v in figures.items()}
    ref = med[("before the seam", "default")]
    labels = {
        ("before the seam", "default"): "before the seam",
        ("previous", "empty"): "previous: seam, no health policies",
        ("previous", "default"): "previous: seam, default policies",
        ("this tree", "empty"): "this tree: seam, no health policies",
        ("this tree", "default"): "this tree: seam, default policies",
    }
    rows = [
        f"| {label} | {med[key]:,.0f} | {min(figures[key]):,.0f}-{max(figures[key]):,.0f} | "
        f"{med[key] - ref:+,.0f} |"
        for key, label in labels.items()
    ]
    cost_rows = [
        f"| {name} | {statistics.median(v):,.0f} | "
        f"{statistics.median(v) / med[(name, 'empty')]:.0%} | "
        f"{statistics.median(inside[name]):,.1f} | "
        f"{min(inside[name]):,.1f}-{max(inside[name]):,.1f} |"
        for name, v in costs.items()
    ]
    body = "\n".join([
        "## Loop: the policy seam",
        "",
        f"{args.steps:,} steps on the in-memory store; {args.rounds} rounds, each running "
        f"every build in a fresh process, {args.repeat} paired runs per process (after a "
        f"warm-up); {platform.python_implementation()} {platform.python_version()} on "
        f"{platform.machine()}, {os.cpu_count()} CPUs, {dt.date.today().isoformat()}. "
        f"Before the seam: `{base[:10]}`; previous: `{previous[:10]}`. "
        "Reproduce: `python bench/policies.py`.",
        "",
        "| build | CPU µs per step (median) | range | vs before the seam |",
        "|---|---:|---:|---:|",
        *rows,
        "",
        "The default health policies' own cost, two ways: each run with them against the "
        "run without them just before it in the same process (the loop's own work and the "
        "machine's load vary between runs by more than the policies cost, so this is "
        "coarse), and the CPU time spent inside their methods (every hook and `observe` "
        "of each default policy timed with `time.process_time`, less the timer's own cost "
        "measured around a method that does nothing; the same instrument for both trees):",
        "",
        "| tree | paired difference, CPU µs per step (median) | vs the loop without them "
        "| inside the policies, CPU µs per step (median) | range |",
        "|---|---:|---:|---:|---:|",
        *cost_rows,
        "",
        "A step is one model turn and its tool call. Only the policies that override a hook "
        "are called at it, and `observe` only for the event types a policy names. The "
        "default health policies do real work per result (hashing it once for all of them, "
        "keying the call, updating the monitor's running totals), O(1) per event and per "
        "check: nothing grows with the run or rescans the monitor's window.",
    ])  # fmt: skip
    print(body)
    if not args.quick:
        from _results import write_section

        write_section("policies", body)


if __name__ == "__main__":
    main()
