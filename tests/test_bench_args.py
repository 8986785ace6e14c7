"""The benchmark scripts refuse a careless option with one line and exit status 2, before
any measurement starts (and `bench/workers.py` says when it cannot reach PostgreSQL),
instead of a traceback minutes into a run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"

CARELESS = [
    ("loop.py", ["--sizes", "5"], "--sizes: 5 is less than 10"),
    ("loop.py", ["--sizes", "100,abc"], "--sizes: 'abc' is not a whole number"),
    ("loop.py", ["--rounds", "0"], "--rounds: 0 is less than 1"),
    ("loop.py", ["--lg-timeout", "inf"], "--lg-timeout: inf is not a finite number"),
    ("journal.py", ["--iterations", "0"], "--iterations: 0 is less than 1"),
    ("journal.py", ["--sizes", "1,,2"], "is not a comma-separated list of numbers"),
    ("concurrency.py", ["--concurrent", "1"], "--concurrent: 1 is less than 2"),
    ("concurrency.py", ["--rounds", "-3"], "--rounds: -3 is less than 1"),
    ("workers.py", ["--workers", "0"], "--workers: 0 is less than 1"),
    ("workers.py", ["--latency", "nan"], "--latency: nan is not a finite number"),
    ("workers.py", ["--steps", "abc"], "--steps: 'abc' is not a whole number"),
    ("soak.py", ["--steps", "0"], "--steps: 0 is less than 10"),
    ("policies.py", ["--repeat", "0"], "--repeat: 0 is less than 1"),
    ("audit.py", ["--runs", "0"], "--runs: 0 is less than 1"),
    ("web.py", ["--samples", "-3"], "--samples: -3 is less than 1"),
]


def _run(script: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args, "--no-write"] if script != "soak.py"
        else [sys.executable, str(BENCH / script), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(("script", "args", "says"), CARELESS)
def test_a_careless_option_is_one_line_and_exit_2(script: str, args: list[str], says: str) -> None:
    done = _run(script, args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script}: error: argument") and says in last, done.stderr


def test_workers_bench_says_when_postgres_cannot_be_reached() -> None:
    done = _run("workers.py", ["--quick", "--postgres", "postgresql://nobody@127.0.0.1:1/none"])
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "cannot use PostgreSQL at postgresql://nobody@127.0.0.1:1/none" in done.stderr
    assert "--postgres URL" in done.stderr
