"""Bit flips in what a SQLite store committed (schema 6: `event_rows`, `run_keys`, `runs`),
against real processes: the run is refused, never cut and re-run.

A run whose tools change an outside world is driven in its own process (to its end, or
SIGKILLed part way), its WAL checkpointed into the file, and one bit of the file flipped:
inside one of the last 33 committed events' bytes (what resume used to cut as a "torn
tail" and then redo), or inside a stored copy of the run id (its `run_keys` and `runs`
rows). A fresh process resumes it, and `tether doctor` checks it.

Every case: the resume is refused naming the run and the first bad seq, `doctor` reports
the run, and no payment ran again.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from .scenario import effects
from .test_power_loss import scenario

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def template(folder: Path, kill_at: int | None) -> str:
    folder.mkdir()
    done = scenario("run", str(folder), "normal", *([str(kill_at)] if kill_at else []))
    assert done.returncode == (-9 if kill_at else 0), done.stderr[-2000:]
    db = sqlite3.connect(folder / "t.db")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return done.stdout.split()[0]


def _ledger_pages(path: Path) -> tuple[set[int], int]:
    """The budget ledger's pages (its row of a run holds the run id too) and the page size."""
    db = sqlite3.connect(path)
    try:
        found = db.execute("SELECT pageno FROM dbstat WHERE name LIKE 'budget%'")
        return {int(n) for (n,) in found}, int(db.execute("PRAGMA page_size").fetchone()[0])
    finally:
        db.close()


def flip_in(path: Path, needle: bytes, rng: random.Random, *, ledger: bool = True) -> None:
    """Flip a bit of one copy of `needle`; `ledger=False` leaves the ledger's copies alone:
    a run's spend row is checked by `doctor` against the journal, not by a resume, and
    whether a seeded pick lands there moves with every change of the file's layout."""
    skip, page_size = (set(), 1) if ledger else _ledger_pages(path)
    data = bytearray(path.read_bytes())
    spots = []
    at = data.find(needle)
    while at >= 0:
        if at // page_size + 1 not in skip:
            spots.append(at)
        at = data.find(needle, at + 1)
    assert spots, "the bytes to damage are not in the file"
    at = rng.choice(spots) + rng.randrange(len(needle))
    data[at] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def doctor(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "tether",
            "doctor",
            "--json",
            "--store",
            f"sqlite:///{folder / 't.db'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def test_a_bit_flipped_in_committed_rows_refuses_the_run_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    rng = random.Random("committed")
    runs = {
        "completed": (tmp_path / "completed", None),
        "killed": (tmp_path / "killed", rng.randrange(30, 60)),
    }
    ids = {name: template(folder, kill) for name, (folder, kill) in runs.items()}
    cases = [(name, where) for name in runs for where in ("tail", "tail", "tail", "run id")]
    for n, (name, where) in enumerate(cases):
        source, run_id = runs[name][0], ids[name]
        folder = tmp_path / f"case{n}"
        shutil.copytree(source, folder)
        db_path = folder / "t.db"
        db = sqlite3.connect(db_path)
        blobs = [
            r[0]
            for r in db.execute(
                "SELECT data FROM events WHERE run_id=? ORDER BY seq DESC LIMIT 33", (run_id,)
            )
        ]
        db.close()
        if where == "tail":
            flip_in(db_path, rng.choice(blobs), rng)
        else:
            flip_in(db_path, run_id.encode(), rng, ledger=False)
        before = Counter(e["n"] for e in effects(folder) if e["tool"] == "pay")
        resumed = scenario("resume", str(folder), "normal", run_id)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        outcome = json.loads(resumed.stdout.strip().splitlines()[-1])
        case = (name, where, outcome)
        assert outcome.get("error") == "CorruptionError", case
        assert run_id in outcome["message"] and " seq " in outcome["message"], case
        after = Counter(e["n"] for e in effects(folder) if e["tool"] == "pay")
        assert after == before and all(c == 1 for c in after.values()), (case, after)
        checked = doctor(folder)
        assert checked.returncode == 1, (case, checked.stdout[-2000:], checked.stderr[-2000:])
        report = json.loads(checked.stdout)
        assert not report["ok"], case
        shutil.rmtree(folder)
