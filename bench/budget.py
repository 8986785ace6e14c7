"""Budget benchmark: the cost of check + reserve + settle per call on the SQLite ledger.

Every model call reserves its estimated cost against every applicable limit before it is
made and settles it afterwards; this measures that pair on the default SQLite store with
limits set on three scopes (global, agent, tenant) and a busy day of history in the
buckets. Target on a 2-core machine: <= 0.2 ms per call (median).

    .venv/bin/python bench/budget.py            # full run, rewrites bench/RESULTS.md
    .venv/bin/python bench/budget.py --quick    # smoke run, writes nothing
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent / "src"))
sys.path.insert(0, str(BENCH))

from _results import write_section  # noqa: E402

from tether._clock import FakeClock  # noqa: E402
from tether.budget import BudgetLimits, Reservation, ledger_for  # noqa: E402
from tether.journal import SQLiteStore  # noqa: E402

TARGET_MS = 0.2


async def measure(calls: int, history_minutes: int) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="tether-bench-budget-"))
    clock = FakeClock(start=1_800_000_000.0)
    store = SQLiteStore(folder / "b.db", clock=clock)
    ledger = ledger_for(store, clock=clock)
    await ledger.set_limits("global", BudgetLimits(per_call=5.0, hourly=1e6, daily=1e7))
    await ledger.set_limits("agent:bench", BudgetLimits(per_run=1e6, daily=1e7))
    await ledger.set_limits("tenant:acme", BudgetLimits(hourly=1e6, daily=1e7))
    # A day of history: one call a minute, so every window sum reads full buckets.
    for _ in range(history_minutes):
        held = await ledger.reserve(run_id="old", agent="bench", tenant="acme", estimate_usd=0.01)
        assert isinstance(held, Reservation)
        await ledger.settle(held, 0.008)
        clock.advance(60)
    timings: list[float] = []
    reserve_t: list[float] = []
    for i in range(calls):
        start = time.perf_counter()
        held = await ledger.reserve(
            run_id=f"r{i % 50}", agent="bench", tenant="acme", estimate_usd=0.002
        )
        mid = time.perf_counter()
        assert isinstance(held, Reservation)
        await ledger.settle(held, 0.0015)
        end = time.perf_counter()
        timings.append((end - start) * 1000)
        reserve_t.append((mid - start) * 1000)
        if i % 20 == 0:
            clock.advance(1)
    await store.close()
    timings.sort()
    return {
        "median": statistics.median(timings),
        "p99": timings[int(len(timings) * 0.99) - 1],
        "reserve_median": statistics.median(reserve_t),
        "calls": calls,
        "history": history_minutes,
    }


def machine() -> str:
    load = os.getloadavg()[0]
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH
    ).stdout.strip()
    return (
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; "
        f"load average {load:.2f} at the start; git HEAD {head or 'unknown'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run, writes nothing")
    args = parser.parse_args()
    calls, history = (300, 60) if args.quick else (5_000, 1_440)
    figures = asyncio.run(measure(calls, history))
    verdict = "PASS" if figures["median"] <= TARGET_MS else "FAIL"
    print(f"check + reserve + settle: median {figures['median']:.3f} ms, "
          f"p99 {figures['p99']:.3f} ms (reserve alone {figures['reserve_median']:.3f} ms) "
          f"over {calls} calls; target <= {TARGET_MS} ms: {verdict}")  # fmt: skip
    if args.quick:
        return 0
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    def row(label: str, median: float, p99: float | None, target: str, result: str) -> str:
        tail = f"{p99:.3f}" if p99 is not None else "-"
        return f"| {label} | {median:.3f} | {tail} | {target} | {result} |"

    body = f"""## Budget: check + reserve + settle per call (SQLite ledger)

Measured {now}. Machine: {machine()}.

Method: limits on three scopes (global per-call/hourly/daily, agent per-run/daily, tenant
hourly/daily), so each reservation checks five windows; {history:,} minutes of settled
history in the buckets first (each daily sum reads the minute buckets before the first
whole hour and up to 25 hourly roll-ups, and the open holds); then {calls:,} timed calls of
`Ledger.reserve` + `Ledger.settle` (two write transactions), spread over 50 runs.
`time.perf_counter` around each pair.

| measure | median ms | p99 ms | target | result |
|---|---|---|---|---|
{row("check + reserve + settle", figures["median"], figures["p99"], f"<= {TARGET_MS}", verdict)}
{row("check + reserve alone", figures["reserve_median"], None, "-", "-")}

Reproduce: `.venv/bin/python bench/budget.py` from the repository root.
"""
    write_section("budget", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
