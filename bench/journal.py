"""Journal benchmark: durable append cost, storage per step, and cold load time.

Measures the default SQLite store (WAL) in a temporary folder:

1. durable append cost per step (one `RunJournal.append` = one transaction), median /
   p99 / max, with synchronous NORMAL (the default) and FULL;
2. the raw SQLite commit floor measured the same way (plain INSERT of a blob + COMMIT);
3. bytes per step at several run lengths (database + WAL after a checkpoint, / steps);
4. the time to load the latest state of a long run in a fresh process;
5. reference figures for other systems (given, not measured here).

Run from the repository root:

    .venv/bin/python bench/journal.py            # full run, rewrites bench/RESULTS.md
    .venv/bin/python bench/journal.py --quick    # smoke run (seconds), writes nothing

`--profile` adds a cProfile of the append path; `--json PATH` saves the raw figures;
`--strict` exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import cProfile
import datetime as dt
import gc
import hashlib
import io
import itertools
import json
import math
import os
import platform
import pstats
import random
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SRC = REPO / "src"
MEASURED_CODE = [
    "src/tether/events.py", "src/tether/_events_sealed.py", "src/tether/_events_decode.py",
    "src/tether/_clock.py", "src/tether/errors.py", "src/tether/journal", "src/tether/state",
]  # fmt: skip
"""The code this benchmark exercises: its fingerprint and any uncommitted change are reported."""


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=True)
    return done.stdout.decode()


def _pin_code(source: str) -> dict[str, Any]:
    """Copy the package to a private folder and import it from there.

    The checkout is shared: code changing under a run would mix two versions (a parent
    writing snapshots with one fold, a child reading them with another). The benchmark
    and its child processes therefore all run one frozen copy: the working tree's
    `src/tether` (default) or git HEAD's (`--code head`).
    """
    folder = Path(tempfile.mkdtemp(prefix="tether-bench-code-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    try:
        commit = _git("rev-parse", "--short", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    if source == "head":
        data = subprocess.run(
            ["git", "-C", str(REPO), "archive", "HEAD", "src/tether"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(folder, filter="data")
        path, dirty = folder / "src", False
    else:
        shutil.copytree(
            SRC / "tether", folder / "tether", ignore=shutil.ignore_patterns("__pycache__")
        )
        path = folder
        try:
            dirty = bool(_git("status", "--porcelain", "--", *MEASURED_CODE).strip())
        except (OSError, subprocess.CalledProcessError):
            dirty = False
    digest = hashlib.sha256()
    for name in MEASURED_CODE:
        item = path / Path(name).relative_to("src")
        for file in sorted(item.rglob("*.py")) if item.is_dir() else [item]:
            digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
    label = f"git HEAD {commit}" if source == "head" else f"working tree at {commit}"
    if dirty:
        label += " + uncommitted changes to the measured code"
    return {"path": path, "label": label, "fingerprint": digest.hexdigest()[:12]}


if __name__ == "__main__":
    _pre = argparse.ArgumentParser(add_help=False)
    _pre.add_argument("--code", choices=("worktree", "head"), default="worktree")
    CODE = _pin_code(_pre.parse_known_args()[0].code)
else:  # imported (e.g. by a test): use the checkout as it is
    CODE = {"path": SRC, "label": "working tree (live)", "fingerprint": "-"}
sys.path.insert(0, str(CODE["path"]))
sys.path.insert(0, str(BENCH_DIR))

from _args import at_least, numbers, seconds  # noqa: E402
from _results import RESULTS_PATH, write_section  # noqa: E402

from tether._clock import iso  # noqa: E402
from tether.events import EventDraft  # noqa: E402
from tether.journal import (  # noqa: E402
    DEFAULT_SNAPSHOT_EVERY,
    RunJournal,
    create_run,
    open_store,
    seal_snapshot,
    summary_of,
)
from tether.state import fold  # noqa: E402

SECTION = "journal"
MODES = ("normal", "full")

# Targets (milliseconds, on the 2-core reference machine).
TARGET_APPEND_MS = {"normal": 0.15, "full": 0.40}
TARGET_LOAD_MS = 50.0
FLAT_TOLERANCE = 0.10
"""Bytes per step may differ by at most this fraction between the run lengths >= 1,000."""

PREVIOUS_FLOOR_MS = {"normal": 0.02, "full": 0.13}
"""Raw commit floor measured earlier on the reference machine (for comparison only)."""

REFERENCE = [
    # (system, figure, value) -- given to us, NOT measured by this script.
    ("LangGraph, SQLite checkpointer", "per step at 1,000 steps", "17 ms"),
    ("LangGraph, SQLite checkpointer", "per step at 3,000 steps", "54 ms"),
    ("LangGraph, SQLite checkpointer", "database at 3,000 steps (grows quadratically)", "14.8 GB"),
    ("LangGraph, SQLite checkpointer", "load latest state at 1,000 steps", "~76 ms"),
    ("DBOS on SQLite", "per step", "2-3.4 ms"),
    ("DBOS on SQLite", "resume a 1,000-step workflow", "~1.5 s"),
]

OUTPUT_CHARS = 1100
RAW_BLOB_BYTES = 1200
_WORD_LIST = (
    "the of and to in is for on with as by that from at this result page search source agent "
    "value table error file line token model journal step report data found returned status "
    "query match count index record field date price north sample test batch cache write read "
    "commit latency median figure"
)
_WORDS = _WORD_LIST.split()


# -- the step -----------------------------------------------------------------------


def tool_output(i: int, chars: int = OUTPUT_CHARS) -> str:
    """Deterministic, realistic-looking tool output text of exactly `chars` characters."""
    rng = random.Random(i)
    words: list[str] = [f"[result {i}]"]
    size = len(words[0])
    while size < chars:
        word = rng.choice(_WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:chars]


def step_draft(i: int, run_id: str, seq: int) -> EventDraft:
    """Step `i` of the benchmark: one `tool.completed` event answering the call at seq-1."""
    return EventDraft(
        type="tool.completed",
        payload={
            "call_id": f"call_{i:08d}",
            "name": "web_search",
            "output": tool_output(i),
            "is_error": False,
        },
        correlation_id=f"cycle_{i:08d}",
        causation_id=f"{run_id}:{seq - 1}",
    )


def step_shape() -> dict[str, int]:
    """Sizes of one benchmark step: its payload JSON and its sealed stored row."""
    draft = step_draft(1, "run_0000000000000000", 2)
    sealed = draft.seal(
        run_id="run_0000000000000000", seq=2, prev_hash="0" * 64, ts=iso(time.time())
    )
    payload = json.dumps(draft.payload, separators=(",", ":")).encode()
    return {
        "output_chars": OUTPUT_CHARS,
        "payload_bytes": len(payload),
        "row_bytes": len(sealed.raw),
    }


# -- statistics ---------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Dist:
    """A distribution of per-step times in milliseconds."""

    n: int
    median: float
    p99: float
    max: float
    mean: float
    round_medians: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, seconds: list[float], rounds: list[list[float]] | None = None) -> Dist:
        ms = sorted(s * 1000 for s in seconds)
        return cls(
            n=len(ms),
            median=statistics.median(ms),
            p99=percentile(ms, 99),
            max=ms[-1],
            mean=statistics.fmean(ms),
            round_medians=[statistics.median(r) * 1000 for r in rounds or []],
        )


# -- 1. durable append --------------------------------------------------------------


@dataclass
class AppendRound:
    times: list[float]
    snapshot_times: list[float]
    plain_times: list[float]


def url_for(path: Path, mode: str) -> str:
    return f"sqlite:///{path}" + ("" if mode == "normal" else f"?synchronous={mode}")


async def new_journal(url: str) -> tuple[Any, RunJournal]:
    store = open_store(url)
    state = await create_run(store, agent="bench", task="benchmark the journal", model="m")
    lease = await store.acquire_lease(state.run_id, owner="bench", ttl_s=3600)
    journal, _ = await RunJournal.open(store, lease)
    return store, journal


async def append_round(folder: Path, mode: str, warmup: int, iterations: int) -> AppendRound:
    """Time every `RunJournal.append` of one fresh run; the first `warmup` are dropped."""
    store, journal = await new_journal(url_for(folder / f"append-{mode}.db", mode))
    try:
        first = journal.state.last_seq + 1
        drafts = [step_draft(i, journal.run_id, first + i) for i in range(warmup + iterations)]
        every = journal.snapshot_every
        times: list[float] = []
        snap: list[bool] = []
        clock = time.perf_counter
        for draft in drafts:
            before = journal.state.last_seq
            t0 = clock()
            await journal.append(draft)
            t1 = clock()
            times.append(t1 - t0)
            snap.append(bool(every) and journal.state.last_seq // every > before // every)
        if journal.state.last_seq != first + warmup + iterations - 1:
            raise AssertionError("the journal head is not where the benchmark put it")
        times, snap = times[warmup:], snap[warmup:]
        return AppendRound(
            times=times,
            snapshot_times=[t for t, s in zip(times, snap, strict=True) if s],
            plain_times=[t for t, s in zip(times, snap, strict=True) if not s],
        )
    finally:
        await store.close()


async def append_breakdown(folder: Path, mode: str, warmup: int, iterations: int) -> dict[str, Any]:
    """Median cost of each part of an append, done by hand the way RunJournal.append does."""
    store, journal = await new_journal(url_for(folder / f"parts-{mode}.db", mode))
    try:
        lease, state, clock = journal.lease, journal.state, journal.clock
        first = state.last_seq + 1
        parts: dict[str, list[float]] = {"seal": [], "fold": [], "summary": [], "store": []}
        snapshots: list[tuple[float, float, int, int]] = []
        perf = time.perf_counter
        for i in range(warmup + iterations):
            draft = step_draft(i, journal.run_id, first + i)
            t0 = perf()
            event = draft.seal(
                run_id=journal.run_id,
                seq=state.last_seq + 1,
                prev_hash=state.last_hash,
                ts=iso(clock.time()),
            )
            t1 = perf()
            new_state = fold([event], state)
            t2 = perf()
            summary = summary_of(new_state)
            t3 = perf()
            await store.append(lease, [event], summary=summary)
            t4 = perf()
            if i >= warmup:
                for name, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    parts[name].append(value)
            every = journal.snapshot_every
            if every and new_state.last_seq // every > state.last_seq // every:
                # What RunJournal.append does on these steps: seal and store a snapshot.
                t5 = perf()
                raw = seal_snapshot(new_state)
                t6 = perf()
                await store.put_snapshot(
                    lease, journal.run_id, new_state.last_seq, raw, keep=journal.keep_snapshots
                )
                t7 = perf()
                snapshots.append((t6 - t5, t7 - t6, len(raw), new_state.last_seq))
            state = new_state
        out: dict[str, Any] = {k: statistics.median(v) * 1000 for k, v in parts.items()}
        last = snapshots[-1] if snapshots else (math.nan, math.nan, 0, 1)
        out["snapshot_seal"] = last[0] * 1000
        out["snapshot_store"] = last[1] * 1000
        out["snapshot_bytes"] = last[2]
        out["at_steps"] = last[3] - 1  # steps = seq - 1 (seq 1 is run.created)
        return out
    finally:
        await store.close()


def _page_kb() -> int:
    from tether.journal._sqlite import PAGE_SIZE

    return PAGE_SIZE // 1024


async def wal_pages_per_append(folder: Path, steps: int = 100) -> float:
    """Pages (the store's page size) each append writes to the WAL (no snapshot among them):
    write amplification."""
    path = folder / "wal-pages.db"
    store, journal = await new_journal(url_for(path, "normal"))
    try:
        checkpoint(path)
        first = journal.state.last_seq + 1
        # Stay under the 1,000-page auto-checkpoint, which would rewind the WAL.
        for i in range(steps):
            await journal.append(step_draft(i, journal.run_id, first + i))
        return wal_frames(path) / steps
    finally:
        await store.close()


# -- 2. raw SQLite floor --------------------------------------------------------------


def raw_round(folder: Path, mode: str, warmup: int, iterations: int) -> list[float]:
    """Plain sqlite3: BEGIN IMMEDIATE; INSERT a RAW_BLOB_BYTES blob; COMMIT, per iteration."""
    path = folder / f"raw-{mode}.db"
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={mode.upper()}")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        blobs = [random.Random(i).randbytes(RAW_BLOB_BYTES) for i in range(64)]
        times: list[float] = []
        perf = time.perf_counter
        for i in range(warmup + iterations):
            blob = blobs[i % 64]
            t0 = perf()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (data) VALUES (?)", (blob,))
            db.execute("COMMIT")
            t1 = perf()
            times.append(t1 - t0)
        return times[warmup:]
    finally:
        db.close()


# -- 3. bytes per step ----------------------------------------------------------------


def checkpoint(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise RuntimeError(f"could not checkpoint {path}: a reader or writer is active")
    finally:
        db.close()


def wal_frames(path: Path) -> int:
    """Frames in the WAL of `path` (each: a 24-byte header and one page)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        page_size: int = db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()
    wal = Path(f"{path}-wal")
    return (wal.stat().st_size - 32) // (page_size + 24) if wal.exists() else 0


def file_bytes(path: Path) -> dict[str, int]:
    wal = Path(f"{path}-wal")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        snapshots = db.execute("SELECT count(*), coalesce(sum(length(data)), 0) FROM snapshots")
        snap_count, snap_bytes = snapshots.fetchone()
        rows = db.execute("SELECT coalesce(sum(length(data)), 0) FROM event_rows").fetchone()[0]
    finally:
        db.close()
    return {
        "db": path.stat().st_size,
        "wal": wal.stat().st_size if wal.exists() else 0,
        "free_bytes": free * page_size,
        "snapshots": snap_count,
        "snapshot_bytes": snap_bytes,
        "event_bytes": rows,
    }


async def grow_run(path: Path, steps: int) -> tuple[str, RunJournal, Any]:
    """A run of `steps` benchmark steps (plus its run.created event); the store stays open."""
    store, journal = await new_journal(url_for(path, "normal"))
    first = journal.state.last_seq + 1
    for i in range(steps):
        await journal.append(step_draft(i, journal.run_id, first + i))
    return journal.run_id, journal, store


async def bytes_per_step(folder: Path, sizes: list[int]) -> tuple[list[dict[str, Any]], Path, str]:
    """Storage per step at each size; returns the figures and the largest run (closed)."""
    results: list[dict[str, Any]] = []
    largest: tuple[Path, str] | None = None
    for n in sizes:
        path = folder / f"size-{n}.db"
        run_id, journal, store = await grow_run(path, n)
        await store.release_lease(journal.lease)
        await store.close()
        checkpoint(path)
        sizes_now = file_bytes(path)
        total = sizes_now["db"] + sizes_now["wal"]
        results.append(
            {
                "steps": n,
                "total_bytes": total,
                "bytes_per_step": total / n,
                **sizes_now,
            }
        )
        largest = (path, run_id)
    assert largest is not None
    return results, largest[0], largest[1]


# -- 4. load in a fresh process ---------------------------------------------------------

_CHILD = r"""
import sys, time
t_start = time.perf_counter()
import asyncio, json
from tether.journal import load_run, open_store
t_imported = time.perf_counter()

async def main():
    t0 = time.perf_counter()
    store = open_store(sys.argv[1])
    t1 = time.perf_counter()
    loaded = await load_run(store, sys.argv[2])
    t2 = time.perf_counter()
    await store.close()
    return t0, t1, t2, loaded

t0, t1, t2, loaded = asyncio.run(main())
print(json.dumps({
    "import_ms": (t_imported - t_start) * 1000,
    "open_ms": (t1 - t0) * 1000,
    "load_ms": (t2 - t1) * 1000,
    "open_load_ms": (t2 - t0) * 1000,
    "last_seq": loaded.state.last_seq,
    "snapshot_seq": loaded.snapshot_seq,
    "replayed": loaded.replayed,
    "notes": loaded.notes,
}))
"""


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = (str(CODE["path"]), env.get("PYTHONPATH", ""))
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    return env


def load_fresh(path: Path, run_id: str, repeats: int, expect_seq: int) -> dict[str, Any]:
    """Load the run in `repeats` fresh interpreters; time inside each and around each."""
    url = url_for(path, "normal")
    cmd = [sys.executable, "-c", _CHILD, url, run_id]
    env = child_env()
    samples: list[dict[str, Any]] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = (time.perf_counter() - t0) * 1000
        if done.returncode != 0:
            raise RuntimeError(f"load child failed:\n{done.stderr}")
        sample = json.loads(done.stdout.strip().splitlines()[-1])
        if sample["last_seq"] != expect_seq:
            raise AssertionError(f"child loaded seq {sample['last_seq']}, expected {expect_seq}")
        sample["wall_ms"] = wall
        samples.append(sample)

    def stat(key: str) -> dict[str, float]:
        values = sorted(s[key] for s in samples)
        return {"median": statistics.median(values), "max": values[-1], "min": values[0]}

    return {
        "repeats": repeats,
        "head_seq": expect_seq,
        "snapshot_seq": samples[0]["snapshot_seq"],
        "replayed": samples[0]["replayed"],
        "notes": sorted({note for s in samples for note in s["notes"]}),
        **{k: stat(k) for k in ("open_load_ms", "open_ms", "load_ms", "import_ms", "wall_ms")},
    }


async def extend_run(path: Path, run_id: str, steps: int) -> int:
    """Append `steps` more steps to a closed run; returns the new head seq."""
    store = open_store(url_for(path, "normal"))
    try:
        lease = await store.acquire_lease(run_id, owner="bench-extend", ttl_s=3600)
        journal, _ = await RunJournal.open(store, lease)
        first = journal.state.last_seq + 1
        for i in range(steps):
            await journal.append(step_draft(10_000_000 + i, run_id, first + i))
        await store.release_lease(lease)
        return journal.state.last_seq
    finally:
        await store.close()


async def full_replay_ms(path: Path, run_id: str) -> float:
    """In-process load with the snapshots ignored: verify and fold the whole journal."""
    from tether.journal import read_events

    store = open_store(url_for(path, "normal"))
    try:
        t0 = time.perf_counter()
        events = await read_events(store, run_id)
        fold(events)
        return (time.perf_counter() - t0) * 1000
    finally:
        await store.close()


# -- profile --------------------------------------------------------------------------


async def profile_appends(folder: Path, steps: int, top: int = 25) -> str:
    store, journal = await new_journal(url_for(folder / "profile.db", "normal"))
    try:
        first = journal.state.last_seq + 1
        drafts = [step_draft(i, journal.run_id, first + i) for i in range(steps)]
        profiler = cProfile.Profile()
        profiler.enable()
        for draft in drafts:
            await journal.append(draft)
        profiler.disable()
    finally:
        await store.close()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# -- machine ----------------------------------------------------------------------------


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
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "code": CODE["label"],
        "fingerprint": CODE["fingerprint"],
    }


def filesystem_of(path: Path) -> str:
    """The filesystem type holding `path` (longest matching mount point), best effort."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                mount = parts[1].replace("\\040", " ")
                inside = str(path).startswith(mount.rstrip("/") + "/") or str(path) == mount
                if inside and len(mount) > len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


# -- report ---------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


PARTS = {
    "seal": "seal: canonical JSON + SHA-256 + Event",
    "fold": "fold: apply the event to RunState",
    "summary": "summary_of(state)",
    "store": "store.append: BEGIN IMMEDIATE, UPDATE runs, INSERT, COMMIT",
}


def build_tables(r: dict[str, Any]) -> dict[str, list[list[str]]]:
    tables: dict[str, list[list[str]]] = {}
    rows = [["measure", "median ms", "p99 ms", "max ms", "mean ms", "median over floor ms",
             "target", "result"]]  # fmt: skip
    for mode in MODES:
        d = r["append"][mode]
        rows.append(
            [
                f"Tether append, WAL + synchronous={mode.upper()}",
                ms(d["median"]), ms(d["p99"]), ms(d["max"]), ms(d["mean"]),
                ms(d["median"] - r["raw"][mode]["median"]),
                f"median <= {TARGET_APPEND_MS[mode]}",
                verdict(r["checks"][f"append_{mode}"]),
            ]
        )  # fmt: skip
    for mode in MODES:
        d = r["raw"][mode]
        rows.append(
            [
                f"raw sqlite3 INSERT {RAW_BLOB_BYTES} B + COMMIT, {mode.upper()}",
                ms(d["median"]), ms(d["p99"]), ms(d["max"]), ms(d["mean"]), "-",
                f"(earlier: ~{PREVIOUS_FLOOR_MS[mode]})", "floor",
            ]
        )  # fmt: skip
    tables["append"] = rows

    first = r["append"]["normal"]
    early = "{:,}-{:,}".format(*first["early_steps"])
    late = "{:,}-{:,}".format(*first["late_steps"])
    rows = [["mode", "steps without snapshot: median / p99 ms", "snapshot steps: n, median ms",
             f"median at steps {early} / {late} ms", "round medians ms"]]  # fmt: skip
    for mode in MODES:
        d = r["append"][mode]
        rows.append(
            [
                mode.upper(),
                f"{ms(d['plain_median'])} / {ms(d['plain_p99'])}",
                f"{d['snapshot_n']}, {ms(d['snapshot_median'])}" if d["snapshot_n"] else "0, -",
                f"{ms(d['early_median'])} / {ms(d['late_median'])}",
                ", ".join(ms(x) for x in d["round_medians"]),
            ]
        )
    tables["append_detail"] = rows

    parts = r["breakdown"]
    rows = [["part of one append (median)", *[m.upper() + " ms" for m in MODES]]]
    for key, label in PARTS.items():
        rows.append([label, *[ms(parts[m][key]) for m in MODES]])
    rows.append(["sum of the parts", *[ms(sum(parts[m][k] for k in PARTS)) for m in MODES]])
    rows.append(
        [
            f"snapshot at {parts['normal']['at_steps']:,} steps "
            f"({parts['normal']['snapshot_bytes']:,} B, every {DEFAULT_SNAPSHOT_EVERY} events): "
            "seal + put_snapshot",
            *[f"{ms(parts[m]['snapshot_seal'])} + {ms(parts[m]['snapshot_store'])}" for m in MODES],
        ]
    )
    tables["breakdown"] = rows

    rows = [["steps", "db + WAL bytes", "bytes / step", "event rows / step", "snapshots (bytes)",
             "free pages bytes"]]  # fmt: skip
    for s in r["storage"]:
        rows.append(
            [
                f"{s['steps']:,}",
                f"{s['total_bytes']:,}",
                f"{s['bytes_per_step']:,.0f}",
                f"{s['event_bytes'] / s['steps']:,.0f}",
                f"{s['snapshots']} ({s['snapshot_bytes']:,})",
                f"{s['free_bytes']:,}",
            ]
        )
    tables["storage"] = rows

    rows = [["fresh process, run of", "open_store + load_run ms (median / max)",
             "of which load_run ms", "import tether.journal ms", "whole subprocess wall ms",
             "loaded from", "target", "result"]]  # fmt: skip
    for key in ("typical", "worst"):
        d = r["load"][key]
        rows.append(
            [
                f"{d['head_seq'] - 1:,} steps",
                f"{ms(d['open_load_ms']['median'])} / {ms(d['open_load_ms']['max'])}",
                ms(d["load_ms"]["median"]),
                ms(d["import_ms"]["median"]),
                f"{ms(d['wall_ms']['median'])} / {ms(d['wall_ms']['max'])}",
                f"snapshot @{d['snapshot_seq']:,} + {d['replayed']} events"
                if d["snapshot_seq"]
                else f"full replay of {d['replayed']:,} events (no usable snapshot)",
                f"median <= {TARGET_LOAD_MS:g}",
                verdict(d["open_load_ms"]["median"] <= TARGET_LOAD_MS),
            ]
        )
    tables["load"] = rows
    notes = sorted({n for key in ("typical", "worst") for n in r["load"][key]["notes"]})
    tables["load_notes"] = [["notes from load_run"], *[[n] for n in notes]]

    tables["reference"] = [["system (reference, NOT measured here)", "figure", "value"]] + [
        list(row) for row in REFERENCE
    ]
    return tables


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def md_table(rows: list[list[str]]) -> str:
    def line(row: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"

    return "\n".join([line(rows[0]), "|" + "---|" * len(rows[0]), *map(line, rows[1:])])


def checks_summary(r: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, passed) for each target."""
    c, a, load = r["checks"], r["append"], r["load"]
    per_step = ", ".join(f"{s['steps']:,}: {s['bytes_per_step']:,.0f}" for s in r["storage"])
    return [
        (
            f"append median, NORMAL <= {TARGET_APPEND_MS['normal']} ms",
            f"{ms(a['normal']['median'])} ms",
            c["append_normal"],
        ),
        (
            f"append median, FULL <= {TARGET_APPEND_MS['full']} ms",
            f"{ms(a['full']['median'])} ms",
            c["append_full"],
        ),
        (
            f"bytes/step flat (bytes a step adds, between consecutive sizes, within "
            f"{FLAT_TOLERANCE:.0%})",
            f"{per_step} B; added per step "
            + ", ".join(f"{m:,.0f}" for m in r["storage_marginal"])
            + f" B (spread {r['storage_spread']:.1%})",
            c["storage_flat"],
        ),
        (
            f"fresh-process load (open_store + load_run) <= {TARGET_LOAD_MS:g} ms",
            " / ".join(
                f"{ms(load[k]['open_load_ms']['median'])} ms ({load[k]['head_seq'] - 1:,} steps)"
                for k in ("typical", "worst")
            ),
            c["load"],
        ),
    ]


BUSY_CPUS = 0.25
"""Other processes using more CPU than this (on average) make the figures suspect."""


def busy(m: dict[str, Any]) -> str:
    other = m.get("other_cpus")
    if other is None:
        return "CPU use by other processes unknown"
    text = f"other processes used {other:.2f} of {m['nproc']} CPUs on average during the run"
    if other > BUSY_CPUS:
        text += " (BUSY MACHINE: figures are inflated; rerun on a quiet machine)"
    return text


def describe(r: dict[str, Any]) -> dict[str, str]:
    m, cfg, shape = r["machine"], r["config"], r["step"]
    return {
        "machine": (
            f"{m['nproc']} CPUs ({m['cpu']}), {m['os']}, Python {m['python']}, "
            f"SQLite {m['sqlite']}; temp dir on {cfg['filesystem']}; " + busy(m)
        ),
        "step": (
            f"one `tool.completed` event per step (call_id, name, is_error and a "
            f"{shape['output_chars']:,}-character output): payload {shape['payload_bytes']:,} B "
            f"of JSON, stored as a sealed row of {shape['row_bytes']:,} B (v3 envelope: deflated "
            f"body, 8-byte chain link, checksum and CRC); one `RunJournal.append` = one "
            f"transaction per step, "
            f"snapshot every {DEFAULT_SNAPSHOT_EVERY} events (the default)"
        ),
        "method": (
            f"{cfg['rounds']} round(s) x {cfg['iterations']:,} timed appends per mode, each "
            f"round a fresh store after {cfg['warmup']} untimed warm-up appends; "
            "time.perf_counter around each call; percentiles are nearest-rank over all "
            "rounds; GC left on"
        ),
    }


def markdown(r: dict[str, Any], tables: dict[str, list[list[str]]], command: str) -> str:
    m, d = r["machine"], describe(r)
    out = [
        "## Journal: durable append, storage per step, cold load",
        "",
        f"Measured {m['date']} on {m['code']} (measured code fingerprint "
        f"{m['fingerprint']}){'; QUICK smoke run' if r['config']['quick'] else ''}.",
        "",
        f"- **Machine:** {d['machine']}.",
        f"- **Step:** {d['step']}.",
        f"- **Method:** {d['method']}.",
        f"- **Reproduce:** `{command}` (from the repository root).",
        "",
        "| target | measured | result |",
        "|---|---|---|",
        *[f"| {name} | {got} | {verdict(ok)} |" for name, got, ok in checks_summary(r)],
        "",
        "### 1-2. Durable append cost per step, and the raw SQLite commit floor",
        "",
        md_table(tables["append"]),
        "",
        "Where the spread comes from (steps that wrote a snapshot vs the rest; early vs late "
        "steps of each run; round to round):",
        "",
        md_table(tables["append_detail"]),
        "",
        "Where the median goes (the parts of `RunJournal.append`, timed separately):",
        "",
        md_table(tables["breakdown"]),
        "",
        f"Each append writes {r['wal_pages_per_append']:.1f} pages of {_page_kb()} KB to the WAL "
        f"(a {r['step']['row_bytes']:,} B row): the events table, its two indexes, the `runs` "
        "row and its status index, and the database header when the file grows.",
        "",
        "### 3. Bytes per step (database + WAL after `wal_checkpoint(TRUNCATE)`, / steps)",
        "",
        md_table(tables["storage"]),
        "",
        "The bytes a step adds (between consecutive sizes: "
        + ", ".join(f"{m:,.0f}" for m in r["storage_marginal"])
        + f" B) vary by {r['storage_spread']:.1%} (limit {FLAT_TOLERANCE:.0%}); the "
        "average per step also carries the fixed cost of the schema pages, which falls as "
        "the run grows. Only the newest two snapshots are kept, so their share does not "
        "add up.",
        "",
        "### 4. Load the latest state in a fresh process",
        "",
        md_table(tables["load"]),
        "",
        *([md_table(tables["load_notes"]), ""] if len(tables["load_notes"]) > 1 else []),
        "Inside the child, `time.perf_counter` around `open_store` + `load_run`; the wall "
        "time is the whole `python -c` subprocess seen from the parent (interpreter start, "
        "imports, load, exit). The OS page cache is warm (the file was just written). "
        f"The worst case has the longest tail a load can replay ({DEFAULT_SNAPSHOT_EVERY - 1} "
        f"events after the newest snapshot). For scale: verifying and folding all "
        f"{r['load']['worst']['head_seq']:,} events with no snapshot takes "
        f"{ms(r['load']['full_replay_ms'])} ms in-process.",
        "",
        "### 5. Reference figures from other systems (given, NOT measured by this script)",
        "",
        md_table(tables["reference"]),
        "",
        "These were measured elsewhere on the same kind of 2-core machine and are quoted "
        "for context only; this script does not run those systems.",
    ]
    return "\n".join(out)


def print_report(r: dict[str, Any], tables: dict[str, list[list[str]]], command: str) -> None:
    d = describe(r)
    print()
    print("Tether journal benchmark" + ("  [QUICK smoke run]" if r["config"]["quick"] else ""))
    print(f"  machine: {d['machine']}")
    print(f"  date:    {r['machine']['date']}")
    print(f"  code:    {r['machine']['code']} (fingerprint {r['machine']['fingerprint']})")
    print(f"  step:    {d['step']}")
    print(f"  method:  {d['method']}")
    print(f"  command: {command}")
    sections = [
        ("1-2. Durable append per step, and the raw SQLite commit floor", "append"),
        ("     Snapshot steps vs the rest", "append_detail"),
        ("     Parts of one append (medians)", "breakdown"),
        ("3. Bytes per step (db + WAL after checkpoint)", "storage"),
        ("4. Load latest state in a fresh process", "load"),
        *([("", "load_notes")] if len(tables["load_notes"]) > 1 else []),
        ("5. REFERENCE figures from other systems -- given, NOT measured by this script",
         "reference"),
    ]  # fmt: skip
    for title, key in sections:
        print()
        print(title)
        print(text_table(tables[key]))
    print()
    print(f"WAL pages ({_page_kb()} KB) written per append: {r['wal_pages_per_append']:.2f}")
    print(
        f"bytes added per step, spread between sizes: {r['storage_spread']:.1%}; full replay "
        f"without snapshots ({r['load']['worst']['head_seq']:,} events, in-process): "
        f"{ms(r['load']['full_replay_ms'])} ms"
    )
    print()
    print("Targets")
    for name, got, ok in checks_summary(r):
        print(f"  {verdict(ok)}  {name}: {got}")


# -- main -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = p.add_argument
    add(
        "--quick",
        action="store_true",
        help="smoke run: few iterations, small runs; writes no results unless --results is given",
    )
    add("--iterations", type=at_least(1), help="timed appends per round and mode (3000; quick 200)")
    add("--warmup", type=at_least(0), help="untimed appends before each round (300; quick 30)")
    add("--rounds", type=at_least(1), help="fresh-store rounds per mode (3; quick 1)")
    add(
        "--sizes",
        type=numbers(1),
        help="run lengths for bytes/step, comma separated (100,1000,10000; quick 100,1000)",
    )
    add("--load-repeats", type=at_least(1), help="fresh processes per load figure (7; quick 2)")
    add(
        "--code",
        choices=("worktree", "head"),
        default="worktree",
        help="measure a frozen copy of the working tree's src/tether (default) or git HEAD's",
    )
    add(
        "--wait-quiet",
        type=seconds,
        default=0,
        metavar="SECONDS",
        help="first wait up to SECONDS for other processes to leave the CPUs idle",
    )
    add("--dir", type=Path, help="parent of the temporary folder (default: system temp dir)")
    add(
        "--results",
        type=Path,
        help=f"results file to update (default {RESULTS_PATH.relative_to(REPO)})",
    )
    add("--no-write", action="store_true", help="print only; do not touch the results file")
    add("--json", type=Path, help="also save the raw figures as JSON")
    add("--profile", action="store_true", help="print a cProfile of the append path")
    add("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    quick = args.quick
    # Types refuse a careless value; only an option not given takes its default.
    if args.iterations is None:
        args.iterations = 200 if quick else 3000
    if args.warmup is None:
        args.warmup = 30 if quick else 300
    if args.rounds is None:
        args.rounds = 1 if quick else 3
    args.sizes = sorted(set(args.sizes or ([100, 1000] if quick else [100, 1000, 10000])))
    if args.load_repeats is None:
        args.load_repeats = 2 if quick else 7
    return args


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    r: dict[str, Any] = {
        "machine": machine(),
        "step": step_shape(),
        "config": {
            "quick": args.quick,
            "iterations": args.iterations,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "sizes": args.sizes,
            "load_repeats": args.load_repeats,
            "filesystem": filesystem_of(folder),
            "snapshot_every": DEFAULT_SNAPSHOT_EVERY,
        },
    }

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    # 1 + 2: rounds interleave the modes and the floor, so drift hits all of them alike.
    appends: dict[str, list[AppendRound]] = {m: [] for m in MODES}
    raws: dict[str, list[list[float]]] = {m: [] for m in MODES}
    for n in range(args.rounds):
        for mode in MODES:
            log(f"round {n + 1}/{args.rounds}: append, {mode} ...")
            round_dir = folder / f"round{n}"
            round_dir.mkdir(exist_ok=True)
            appends[mode].append(await append_round(round_dir, mode, args.warmup, args.iterations))
            log(f"round {n + 1}/{args.rounds}: raw sqlite, {mode} ...")
            raws[mode].append(raw_round(round_dir, mode, args.warmup, args.iterations))
    r["append"], r["raw"] = {}, {}
    for mode in MODES:
        rounds = appends[mode]
        dist = Dist.of([t for x in rounds for t in x.times], [x.times for x in rounds])
        plain = Dist.of([t for x in rounds for t in x.plain_times])
        snaps = [t for x in rounds for t in x.snapshot_times]
        third = max(1, args.iterations // 3)
        early = [t for x in rounds for t in x.times[:third]]
        late = [t for x in rounds for t in x.times[-third:]]
        r["append"][mode] = {
            "early_median": statistics.median(early) * 1000,
            "late_median": statistics.median(late) * 1000,
            "early_steps": (args.warmup + 1, args.warmup + third),
            "late_steps": (
                args.warmup + args.iterations - third + 1,
                args.warmup + args.iterations,
            ),
            **asdict(dist),
            "plain_median": plain.median,
            "plain_p99": plain.p99,
            "snapshot_n": len(snaps),
            "snapshot_median": statistics.median(snaps) * 1000 if snaps else math.nan,
        }
        r["raw"][mode] = asdict(Dist.of([t for x in raws[mode] for t in x], raws[mode]))

    log("append breakdown ...")
    r["breakdown"] = {
        mode: await append_breakdown(folder, mode, args.warmup, args.iterations) for mode in MODES
    }
    r["wal_pages_per_append"] = await wal_pages_per_append(folder)

    # 3
    log(f"bytes per step at {', '.join(f'{n:,}' for n in args.sizes)} steps ...")
    storage, big_path, big_run = await bytes_per_step(folder, args.sizes)
    r["storage"] = storage
    # Flat means a step adds the same bytes early and late: compare the marginal bytes per
    # step between consecutive sizes (the schema's fixed pages cancel out; an average per
    # step would fall with the run as they are spread over more steps).
    marginal = [
        (b["total_bytes"] - a["total_bytes"]) / (b["steps"] - a["steps"])
        for a, b in itertools.pairwise(storage)
    ] or [storage[-1]["bytes_per_step"]]
    r["storage_marginal"] = marginal
    r["storage_spread"] = max(marginal) / min(marginal) - 1

    # 4: the largest run as built (tail of 1 event), then grown to the longest tail.
    biggest = max(args.sizes)
    log(f"fresh-process load of the {biggest:,}-step run ...")
    r["load"] = {"typical": load_fresh(big_path, big_run, args.load_repeats, biggest + 1)}
    head = biggest + 1
    to_worst = (DEFAULT_SNAPSHOT_EVERY - 1) - head % DEFAULT_SNAPSHOT_EVERY
    if to_worst > 0:
        head = await extend_run(big_path, big_run, to_worst)
    checkpoint(big_path)
    log(f"fresh-process load of the {head - 1:,}-step run (longest tail) ...")
    r["load"]["worst"] = load_fresh(big_path, big_run, args.load_repeats, head)
    r["load"]["full_replay_ms"] = await full_replay_ms(big_path, big_run)

    r["checks"] = {
        f"append_{m}": r["append"][m]["median"] <= TARGET_APPEND_MS[m] for m in MODES
    } | {
        "storage_flat": r["storage_spread"] <= FLAT_TOLERANCE,
        "load": all(
            r["load"][k]["open_load_ms"]["median"] <= TARGET_LOAD_MS for k in ("typical", "worst")
        ),
    }

    if args.profile:
        log("profiling the append path (cProfile) ...")
        r["profile"] = await profile_appends(folder, args.iterations)
    return r


OUTPUT_ONLY = ("--no-write", "--strict", "--profile", "--json", "--results", "--wait-quiet")


def command_line(argv: list[str]) -> str:
    """The command that reproduces the figures (output-only options left out)."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(REPO))
    except ValueError:
        shown = str(script)
    in_venv = Path(sys.executable).parent.parent == REPO / ".venv"
    python = ".venv/bin/python" if in_venv else "python"
    keep: list[str] = []
    skip_value = False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg in ("--json", "--results", "--wait-quiet"):
            skip_value = True
        elif arg.split("=")[0] not in (
            "--no-write",
            "--strict",
            "--profile",
            "--json",
            "--results",
        ):
            keep.append(arg)
    return " ".join([python, shown, *map(shlex.quote, keep)])


class OtherLoad:
    """CPU used by other processes while the benchmark ran, from /proc/stat (Linux)."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except (OSError, ValueError):
            return None
        busy = sum(fields[:3]) + sum(fields[5:8])  # user nice system, irq softirq steal
        mine = os.times()
        own = mine.user + mine.system + mine.children_user + mine.children_system
        return time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), own

    def cpus(self) -> float | None:
        """Average CPUs' worth of work done by other processes since construction."""
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        other = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return max(0.0, other / wall) if wall > 0 else None


def wait_quiet(limit_s: float, window_s: float = 3.0) -> None:
    """Return once other processes used < BUSY_CPUS over a window, or after `limit_s`."""
    deadline = time.monotonic() + limit_s
    while True:
        probe = OtherLoad()
        time.sleep(window_s)
        other = probe.cpus()
        if other is None or other < BUSY_CPUS:
            return
        if time.monotonic() >= deadline:
            print(f"machine still busy ({other:.2f} CPUs) after {limit_s:.0f}s; running anyway",
                  file=sys.stderr)  # fmt: skip
            return
        print(f"waiting for a quiet machine (other processes: {other:.2f} CPUs) ...",
              file=sys.stderr, flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.wait_quiet > 0:
        wait_quiet(args.wait_quiet)
    load = OtherLoad()
    with tempfile.TemporaryDirectory(prefix="tether-bench-journal-", dir=args.dir) as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    results["machine"]["other_cpus"] = load.cpus()
    gc.collect()
    command = command_line(argv)
    tables = build_tables(results)
    print_report(results, tables, command)
    if args.profile:
        print()
        print("cProfile of the append path (synchronous NORMAL)")
        print(results["profile"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"\nraw figures: {args.json}")
    write = not args.no_write and (args.results is not None or not args.quick)
    if write:
        text = markdown(results, tables, command)
        target = write_section(SECTION, text, args.results or RESULTS_PATH)
        print(f"\nwrote section '{SECTION}' of {target}")
    return 1 if args.strict and not all(results["checks"].values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
