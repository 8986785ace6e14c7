"""Chaos and replay: how long `tether chaos --demo --runs 20 --seed 1` takes (the CI test
runs exactly this campaign; the aim is under 60 s on two cores), and how long a replay of
each golden incident takes.

Reported: wall seconds and CPU seconds of the campaign (the harness plus every child
process it started), processes and SIGKILLs, the mean seconds per run; per incident, the
events replayed and the wall seconds of `replay()` in this process.

    .venv/bin/python bench/chaos.py            # rewrites the `chaos` section of bench/RESULTS.md
    .venv/bin/python bench/chaos.py --no-write # prints only
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tether.demo import demo_agent
from tether.testing import replay

ROOT = Path(__file__).resolve().parent.parent
INCIDENTS = sorted((ROOT / "tests" / "golden" / "incidents").glob("*.jsonl"))
COMMAND = ["chaos", "--demo", "--runs", "20", "--seed", "1", "--json"]


def campaign() -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run([sys.executable, "-m", "tether", *COMMAND, "--keep", folder],
                              capture_output=True, text=True, check=False)  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"the campaign failed:\n{done.stdout[-2000:]}{done.stderr}")
    report = json.loads(done.stdout)
    results = report["results"]
    return {
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "processes": sum(r["processes"] for r in results) + 1,  # + the reference run
        "kills": report["faults"]["kill"],
        "mean_run_s": sum(r["seconds"] for r in results) / len(results),
    }


async def replays() -> list[tuple[str, int, float]]:
    rows = []
    for path in INCIDENTS:
        started = time.perf_counter()
        report = await replay(demo_agent("unused"), path)
        assert report.ok, report.divergence
        rows.append((path.name, report.replayed_events, time.perf_counter() - started))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    c = campaign()
    r = asyncio.run(replays())
    load = os.getloadavg()[0]
    lines = [
        "## Chaos: the demo campaign and replays", "",
        f"{datetime.date.today()} · {platform.python_version()} · {os.cpu_count()} cores · "
        f"load average {load:.1f} when it ended (other processes share the machine) · "
        "`.venv/bin/python bench/chaos.py`", "",
        f"`tether {' '.join(COMMAND[:-1])}`: **{c['wall_s']:.1f} s** wall, "
        f"{c['cpu_s']:.1f} s CPU over {int(c['processes'])} processes "
        f"({int(c['kills'])} of them SIGKILLed), {c['mean_run_s']:.2f} s per run on average "
        "(two runs at a time). Each process pays about 0.5 s to import Python and Tether.", "",
        "| golden incident | events | replay |", "|---|---|---|",
        *(f"| `{name}` | {events} | {seconds * 1000:.0f} ms |" for name, events, seconds in r),
    ]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        sys.path.insert(0, str(Path(__file__).parent))
        from _results import write_section

        write_section("chaos", text)


if __name__ == "__main__":
    main()
