"""Bit flips in what a SQLite store committed (schema 6: `event_rows`, `run_keys`, `runs`),
against real processes: the run is refused, never cut and re-run.

A run whose tools change an outside world is driven in its own process (to its end, or
SIGKILLed part way), its WAL checkpointed into the file, and one bit of the file flipped:
inside one of the last 33 committed events' bytes (what resume used to cut as a "torn
tail" and then redo), or inside each stored copy of the run id (its `runs` and `run_keys`
rows, their index entries, the ledger's run row). A fresh process resumes it, and
`tether doctor` checks it.

Every case: no payment runs again and `doctor` reports the damage. A damaged event is
refused naming the run and the first bad seq; a damaged copy of the id is refused naming
the run wherever the resume reads or writes through it.
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

from tether.journal import sqlite_functions

from .scenario import effects
from .test_power_loss import scenario

pytestmark = [pytest.mark.chaos, pytest.mark.slow]


def template(folder: Path, kill_at: int | None) -> str:
    folder.mkdir()
    done = scenario("run", str(folder), "normal", *([str(kill_at)] if kill_at else []))
    assert done.returncode == (-9 if kill_at else 0), done.stderr[-2000:]
    db = sqlite3.connect(folder / "t.db")
    sqlite_functions(db)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return done.stdout.split()[0]


def spots_of(path: Path, needle: bytes) -> list[int]:
    data = path.read_bytes()
    spots = []
    at = data.find(needle)
    while at >= 0:
        spots.append(at)
        at = data.find(needle, at + 1)
    assert spots, "the bytes to damage are not in the file"
    return spots


def table_at(path: Path, spot: str | int) -> str:
    """The table or index holding byte `spot` of the file (before any flip)."""
    if not isinstance(spot, int):
        return ""
    db = sqlite3.connect(path)
    try:
        (page_size,) = db.execute("PRAGMA page_size").fetchone()
        row = db.execute(
            "SELECT name FROM dbstat WHERE pageno=?", (spot // page_size + 1,)
        ).fetchone()
    finally:
        db.close()
    return str(row[0]) if row else "?"


def flip_in(path: Path, needle: bytes, rng: random.Random, spot: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    at = rng.choice(spots_of(path, needle)) if spot is None else spot
    at += rng.randrange(len(needle))
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
    # Every stored copy of the run id (the run index row and its key, the journal key
    # row and its key, the ledger's run row), and three random spots in the tail.
    cases: list[tuple[str, str | int]] = [
        (name, where) for name in runs for where in ("tail", "tail", "tail")
    ]
    for name in runs:
        cases += [(name, at) for at in spots_of(runs[name][0] / "t.db", ids[name].encode())]
    assert len(cases) >= 2 * (3 + 4), cases
    for n, (name, where) in enumerate(cases):
        source, run_id = runs[name][0], ids[name]
        folder = tmp_path / f"case{n}"
        shutil.copytree(source, folder)
        db_path = folder / "t.db"
        db = sqlite3.connect(db_path)
        sqlite_functions(db)
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
            assert isinstance(where, int)
            flip_in(db_path, run_id.encode(), rng, spot=where)
        before = Counter(e["n"] for e in effects(folder) if e["tool"] == "pay")
        resumed = scenario("resume", str(folder), "normal", run_id)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        outcome = json.loads(resumed.stdout.strip().splitlines()[-1])
        case = (name, where, table_at(source / "t.db", where), outcome)
        if where == "tail" or (
            name == "killed" and not table_at(source / "t.db", where).startswith("budget_")
        ):
            # A damaged event, or a damaged copy of the id the resume must write through.
            assert outcome.get("error") == "CorruptionError", case
            assert run_id in outcome["message"], case
            if where == "tail":
                assert " seq " in outcome["message"], case
        else:
            # A finished run's resume writes nothing: a copy it does not read (the journal
            # key's own text, the ledger's row) may be damaged without harm to the run.
            # The ledger's rows naming the run (its spend, an open hold) are not checked
            # against the journal on resume (that reads the whole journal): doctor below
            # must report them.
            assert outcome.get("error") == "CorruptionError" or outcome.get("status") == (
                "completed"
            ), case
        after = Counter(e["n"] for e in effects(folder) if e["tool"] == "pay")
        refused = "error" in outcome
        # Refused: nothing ran. Resumed: the rest of the run ran, but no payment twice.
        assert after == before if refused else set(before) <= set(after), (case, after)
        assert all(c == 1 for c in after.values()), (case, after)
        checked = doctor(folder)
        assert checked.returncode == 1, (case, checked.stdout[-2000:], checked.stderr[-2000:])
        report = json.loads(checked.stdout)
        assert not report["ok"], case
        shutil.rmtree(folder)
