"""Power loss and WAL damage against a real process: exactly-once where it matters.

A run whose tools change an outside world is driven in its own process under an I/O
recorder. Its files are then rebuilt as power cuts at random points would leave them
(what was synced, plus a random part of what was not), in both SQLite sync modes, and
the run is resumed from each in a fresh process. Separately, a run is SIGKILLed at a
random point and its WAL truncated or bit-flipped before the resume.

Across every case: no non-idempotent effect applied twice, no idempotent effect applied
under two keys, and every run either finishes or is refused; a run lost whole never had
an effect.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ..conftest import require
from .iolog import build, materialise, power_cut, read_log
from .scenario import TURNS, effects

pytestmark = pytest.mark.chaos

SCENARIO = Path(__file__).with_name("scenario.py")
SEEDS = range(10)


def scenario(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCENARIO), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})},
    )


def check_world(folder: Path, outcome: dict[str, object], case: str) -> None:
    world = effects(folder)
    if outcome.get("error") == "RunNotFound":
        # Run creation is synced before anything runs: a run lost whole did nothing.
        assert world == [], (case, world)
        return
    assert outcome.get("status") == "completed" or outcome.get("error") == "CorruptionError", (
        case, outcome,
    )  # fmt: skip
    pays = Counter(e["n"] for e in world if e["tool"] == "pay")
    assert all(count == 1 for count in pays.values()), (case, "a payment ran twice", pays)
    keys: dict[object, set[object]] = {}
    for e in world:
        if e["tool"] == "note":
            keys.setdefault(e["n"], set()).add(e["key"])
    assert all(len(k) == 1 for k in keys.values()), (case, "a note got two keys", keys)
    if outcome.get("status") == "completed":
        assert sorted(keys) == list(range(TURNS)), (case, keys)
        # A payment missing from the world was in flight at the cut: the model was told
        # its outcome is unknown (it is never silently dropped, nor repeated).
        missing = set(range(1, TURNS, 2)) - set(pays)
        unknown = outcome.get("unknown") or []
        assert len(missing) <= unknown.count("pay"), (case, pays, unknown)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = build(tmp_path_factory.mktemp("iolog"))
    require(built is not None, "a C compiler is needed to build the I/O recorder")
    assert built is not None
    return built


@pytest.mark.parametrize("sync", ["normal", "full"])
def test_power_cuts_never_repeat_an_effect(tmp_path: Path, recorder: Path, sync: str) -> None:
    traced = tmp_path / "traced"
    traced.mkdir()
    log = tmp_path / "io.log"
    done = scenario(
        "run", str(traced), sync,
        env={"LD_PRELOAD": str(recorder), "IOLOG_PATH": str(log), "IOLOG_MATCH": str(traced)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.split()[0]
    ops = read_log(log)
    assert any(o.op == "S" and o.path.endswith("-wal") for o in ops), "no WAL sync recorded"
    rng = random.Random(f"power-{sync}")
    cuts = sorted(rng.sample(range(1, len(ops) + 1), k=min(12, len(ops))))
    for n, cut in enumerate(cuts):
        keep = (0.0, 0.5, 1.0)[n % 3]
        files = power_cut(ops, cut, durable="world", rng=rng, keep_unsynced=keep)
        case_dir = tmp_path / f"cut{n}"
        materialise(files, traced, case_dir)
        resumed = scenario("resume", str(case_dir), sync, run_id)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        outcome = json.loads(resumed.stdout.strip().splitlines()[-1])
        check_world(case_dir, outcome, f"{sync} cut {cut}/{len(ops)} keep {keep}")


def damage_wal(path: Path, rng: random.Random, how: str) -> str:
    data = bytearray(path.read_bytes())
    if len(data) <= 32:
        return "WAL empty"
    if how == "truncate":
        at = rng.randrange(32, len(data))
        path.write_bytes(bytes(data[:at]))
        return f"truncated to {at}/{len(data)}"
    at = rng.randrange(32, len(data))
    data[at] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return f"bit flipped at {at}/{len(data)}"


def wal_case(folder: Path, rng: random.Random, how: str, *, keep_synclog: bool = True) -> str:
    """SIGKILL a run at a random point, damage its WAL, resume it; the outcome as JSON."""
    kill_at = rng.randrange(8, 80)
    done = scenario("run", str(folder), "normal", str(kill_at))
    run_id = done.stdout.split()[0]
    if done.returncode != -9:
        return ""  # the run ended before the kill point
    wal = Path(f"{folder / 't.db'}-wal")
    Path(f"{folder / 't.db'}-shm").unlink(missing_ok=True)
    if not keep_synclog:
        Path(f"{folder / 't.db'}-synclog").unlink(missing_ok=True)
    what = damage_wal(wal, rng, how) if wal.exists() else "no WAL"
    checked = subprocess.run(
        [sys.executable, "-m", "tether", "doctor", "--store", f"sqlite:///{folder / 't.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert "Traceback" not in checked.stdout + checked.stderr, checked.stderr[-2000:]
    resumed = scenario("resume", str(folder), "normal", run_id)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    outcome = json.loads(resumed.stdout.strip().splitlines()[-1])
    case = f"killed after seq {kill_at}, {what}"
    # doctor and resume agree: a run resume refuses is one doctor reports, and a store
    # doctor calls intact is one resume goes on with.
    if outcome.get("error") == "CorruptionError":
        assert checked.returncode == 1, (case, outcome, checked.stdout[-2000:])
    if checked.returncode == 0:
        assert outcome.get("status") == "completed", (case, outcome)
    return json.dumps({**outcome, "case": case})


def repeated(folder: Path) -> tuple[Counter[object], dict[object, set[object]]]:
    world = effects(folder)
    pays = Counter(e["n"] for e in world if e["tool"] == "pay")
    keys: dict[object, set[object]] = {}
    for e in world:
        if e["tool"] == "note":
            keys.setdefault(e["n"], set()).add(e["key"])
    return Counter({n: c for n, c in pays.items() if c > 1}), {
        n: k for n, k in keys.items() if len(k) > 1
    }


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_damaged_wal_after_sigkill_never_repeats_an_effect(tmp_path: Path, how: str) -> None:
    """A WAL that lost commits synced before a payment: the sync log names them, so the
    run is refused instead of paying again (or a note applied under a second key)."""
    rng = random.Random(f"wal-{how}")
    refused = 0
    for seed in SEEDS:
        folder = tmp_path / f"{how}{seed}"
        folder.mkdir()
        found = wal_case(folder, rng, how)
        if not found:
            continue
        outcome = json.loads(found)
        twice, two_keys = repeated(folder)
        assert not twice, (outcome["case"], "a payment ran twice", twice)
        assert not two_keys, (outcome["case"], "a note got two keys", two_keys)
        assert outcome.get("status") == "completed" or outcome.get("error") in (
            "CorruptionError", "StoreError",
        ), outcome  # fmt: skip
        refused += "sync log" in str(outcome.get("message"))
    assert refused, "no case lost a synced commit: the test did not reach what it guards"
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_without_the_sync_log_a_damaged_wal_repeats_a_payment(tmp_path: Path) -> None:
    """The same damage with the sync log removed pays twice: what the log prevents."""
    rng = random.Random("wal-truncate")
    for seed in SEEDS:
        folder = tmp_path / f"nolog{seed}"
        folder.mkdir()
        if wal_case(folder, rng, "truncate", keep_synclog=False) and repeated(folder)[0]:
            return
    pytest.fail("no case repeated a payment without the sync log")
