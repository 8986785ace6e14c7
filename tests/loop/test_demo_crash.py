"""SIGKILL a real `tether demo` at many points, resume it, and compare with a clean run.

Claims: every interrupted run completes after `tether resume`; its report is
byte-identical to an uninterrupted run's; every side-effecting tool applied its effect
exactly once (counted by the tool's own effects log, outside the journal).
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tether.journal import SQLiteStore, read_events

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

TETHER = [sys.executable, "-m", "tether"]
WRITE_TOOLS = ("note", "draft", "publish")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TETHER_CHAOS", None)
    env.update(extra)
    return env


def _demo(folder: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TETHER, "demo", "--yes", "--quiet", "--json", "--out", str(folder / "out")],
        cwd=folder,
        env=_env(TETHER_STORE=f"sqlite:///{folder}/t.db", **env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _only_run(folder: Path) -> str:
    out = subprocess.run(
        [*TETHER, "ls", "--json", "--store", f"sqlite:///{folder}/t.db"],
        capture_output=True,
        text=True,
        check=True,
    )
    runs = json.loads(out.stdout)
    assert len(runs) == 1, runs
    return str(runs[0]["run_id"])


def _resume(folder: Path, run_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *TETHER,
            "resume",
            run_id,
            "--yes",
            "--quiet",
            "--json",
            "--store",
            f"sqlite:///{folder}/t.db",
        ],
        cwd=folder,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _workspace(folder: Path) -> Path:
    """The run's own workspace: OUT/RUN_ID."""
    (workspace,) = (folder / "out").iterdir()
    return workspace


def _effects(folder: Path) -> list[dict[str, object]]:
    log = _workspace(folder) / ".tether-demo" / "effects.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


async def _journal(folder: Path, run_id: str) -> list[dict[str, object]]:
    store = SQLiteStore(folder / "t.db")
    try:
        return [
            {"seq": e.seq, "type": e.type, **e.payload} for e in await read_events(store, run_id)
        ]
    finally:
        await store.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[dict[str, object]]]:
    folder = tmp_path_factory.mktemp("reference")
    done = _demo(folder)
    assert done.returncode == 0, done.stderr
    import asyncio

    events = asyncio.run(_journal(folder, _only_run(folder)))
    return (_workspace(folder) / "report.md").read_bytes(), events


def _kill_points(events: list[dict[str, object]]) -> list[tuple[str, int]]:
    """Chosen journal positions: around every kind of write-tool call, plus a spread."""
    points: set[tuple[str, int]] = set()
    for e in events:
        if e["type"] == "tool.requested" and e["name"] in WRITE_TOOLS:
            points.add(("kill_after_seq", int(str(e["seq"]))))  # requested, not yet run
        if e["type"] == "tool.completed" and e["name"] in WRITE_TOOLS:
            points.add(("kill_before_seq", int(str(e["seq"]))))  # ran, result not journaled
    chosen = sorted(points, key=lambda p: p[1])
    rng = random.Random(1234)
    picked = rng.sample(chosen, min(14, len(chosen)))
    last = int(str(events[-1]["seq"]))
    picked += [("kill_after_seq", s) for s in (2, 3, 5, last - 1)]
    picked += [("kill_after_seq", rng.randrange(4, last)) for _ in range(4)]
    return sorted(set(picked), key=lambda p: p[1])


def _check_recovered(folder: Path, reference_report: bytes) -> None:
    run_id = _only_run(folder)
    resumed = _resume(folder, run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "completed"
    assert _workspace(folder).name == run_id
    assert (_workspace(folder) / "report.md").read_bytes() == reference_report
    effects = _effects(folder)
    keys = [e["key"] for e in effects]
    assert len(keys) == len(set(keys)), "an effect was applied twice"
    import asyncio

    events = asyncio.run(_journal(folder, run_id))
    completed = collections.Counter(
        e["name"] for e in events if e["type"] == "tool.completed" and e["name"] in WRITE_TOOLS
    )
    applied = collections.Counter(str(e["tool"]) for e in effects if e["tool"] in WRITE_TOOLS)
    assert applied == completed, (applied, completed)
    doctor = subprocess.run(
        [*TETHER, "doctor", "--store", f"sqlite:///{folder}/t.db"], capture_output=True, text=True
    )
    assert doctor.returncode == 0, doctor.stdout


def test_demo_survives_kills_at_chosen_journal_positions(
    tmp_path: Path, reference: tuple[bytes, list[dict[str, object]]]
) -> None:
    report, events = reference
    points = _kill_points(events)
    assert len(points) >= 20
    for n, (kind, seq) in enumerate(points):
        folder = tmp_path / f"p{n}"
        folder.mkdir()
        killed = _demo(folder, TETHER_CHAOS=f"{kind}={seq}")
        assert killed.returncode == -signal.SIGKILL, (kind, seq, killed.stderr)
        _check_recovered(folder, report)


def test_demo_survives_kills_at_random_instants(
    tmp_path: Path, reference: tuple[bytes, list[dict[str, object]]]
) -> None:
    report, _ = reference
    rng = random.Random(99)
    for n in range(12):
        folder = tmp_path / f"r{n}"
        folder.mkdir()
        proc = subprocess.Popen(
            [*TETHER, "demo", "--yes", "--quiet", "--json", "--out", str(folder / "out")],
            cwd=folder,
            env=_env(TETHER_STORE=f"sqlite:///{folder}/t.db", TETHER_CHAOS="model_latency=0.01"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Wait until the run exists, then kill somewhere inside it.
        deadline = time.monotonic() + 60
        while not (folder / "t.db").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.05, 0.9))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.returncode == 0:
            continue  # it finished first; nothing to recover
        try:
            _only_run(folder)
        except AssertionError:
            continue  # killed before the run was created: nothing to resume
        _check_recovered(folder, report)
