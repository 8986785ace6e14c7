"""Invariant 1 under SIGKILL: a killed writer loses at most its in-flight append.

A real writer process (crash_writer.py) appends a 200-event journal to SQLite and prints
each seq once its append has returned. It is killed at every append position 1..200 (at
one of four phases of the append, rotating), inside the snapshot writes, and at ~20
random instants. After every kill the store is reopened and must hold every reported
event, no partial append, a verifying chain, and accept a new writer.

To keep 240 kills fast, one writer process per kill is forked from a "zygote" that has
already imported Tether (`crash_writer.py --serve`); a few kills also use a freshly
started interpreter, killed by the parent when it reads line N.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tether._clock import FakeClock
from tether.errors import RunNotFound
from tether.events import Event
from tether.journal import (
    RunJournal,
    SQLiteStore,
    create_run,
    load_run,
    read_events,
    verify_run,
)
from tether.state import fold

from .crash_writer import RUN_ID, SNAPSHOT_EVERY, TOTAL, batches, expected
from .helpers import note

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL (POSIX)"),
]

WRITER = Path(__file__).with_name("crash_writer.py")
ROTATION = ("mid-transaction", "before-commit", "after-commit", "after-print")
BATCHES = [[1], *batches()]
BATCH_OF = {seq: batch for batch in BATCHES for seq in batch}
BATCH_ENDS = {batch[-1] for batch in BATCHES}
SEED = 20261124


@dataclass
class Case:
    name: str
    kill_at: int = 0
    phase: str = "before-commit"
    delay_s: float = -1.0
    db: Path = Path()
    status: int | None = None
    elapsed_s: float = 0.0
    reported: list[int] = field(default_factory=list)


def _snapshot_due(batch: list[int]) -> bool:
    return batch[-1] // SNAPSHOT_EVERY > (batch[0] - 1) // SNAPSHOT_EVERY


def _planned() -> list[Case]:
    cases = [Case(f"kill@{n}:{ROTATION[n % 4]}", n, ROTATION[n % 4]) for n in range(1, TOTAL + 1)]
    cases += [
        Case(f"kill@{b[-1]}:in-snapshot", b[-1], "in-snapshot")
        for b in BATCHES[1:]
        if _snapshot_due(b)
    ]
    return cases


def _drive(share: list[Case], tmp: Path, done: queue.Queue[Case | BaseException]) -> None:
    """One zygote process works through its share of the cases, one fork per case."""
    try:
        with subprocess.Popen(
            [sys.executable, str(WRITER), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=tmp,
        ) as proc:
            assert proc.stdin is not None and proc.stdout is not None
            for case in share:
                out = case.db.with_suffix(".out")
                proc.stdin.write(f"{case.db} {out} {case.kill_at} {case.phase} {case.delay_s}\n")
                proc.stdin.flush()
                answer = proc.stdout.readline().split()
                assert answer[:1] == ["DONE"], f"zygote died: {answer}"
                case.status, case.elapsed_s = int(answer[1]), float(answer[2])
                # A writer killed at once may not have opened its output yet.
                case.reported = [int(x) for x in out.read_text().split()] if out.exists() else []
                done.put(case)
            proc.stdin.close()
    except BaseException as exc:  # pragma: no cover - re-raised by the consumer
        done.put(exc)


def _run_all(cases: list[Case], tmp: Path, *, workers: int = 2) -> Iterator[Case]:
    """Kill writers in `workers` zygotes; yield each case as soon as its writer is dead."""
    for i, case in enumerate(cases):
        case.db = tmp / f"case-{i:03d}.db"
    done: queue.Queue[Case | BaseException] = queue.Queue()
    threads = [
        threading.Thread(target=_drive, args=(cases[i::workers], tmp, done), daemon=True)
        for i in range(workers)
    ]
    for t in threads:
        t.start()
    for _ in cases:
        item = done.get(timeout=120)
        if isinstance(item, BaseException):
            raise item
        yield item
    for t in threads:
        t.join()


def _killed(status: int | None) -> bool:
    return status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def _check_content(events: list[Event]) -> None:
    for event in events:
        assert event.run_id == RUN_ID
        if event.seq == 1:
            assert event.type == "run.created"
            continue
        want = expected(event.seq)
        assert (event.type, event.payload, event.correlation_id, event.usage) == (
            want.type,
            want.payload,
            want.correlation_id,
            want.usage,
        ), f"event {event.seq} is not what the writer appended"


async def _recover(db: Path, reported: list[int]) -> int:
    """Reopen after a kill; check everything the invariant promises. Returns the head."""
    # The dead writer's lease is still live; the recovering worker's clock is past it.
    store = SQLiteStore(db, clock=FakeClock(time.time() + 7200))
    try:
        assert reported == list(range(1, len(reported) + 1)), "writer reported out of order"
        try:
            record = await store.get_run(RUN_ID)
        except RunNotFound:
            # Killed inside create_run: nothing may have been reported, and a new writer
            # can start the run from scratch.
            assert reported == []
            await create_run(store, agent="again", task="t", run_id=RUN_ID)
            assert (await verify_run(store, RUN_ID)).ok
            return 0
        head = record.head_seq
        assert head >= len(reported), f"reported seq {len(reported)} lost; head {head}"
        assert head in BATCH_ENDS, f"head {head} splits an append: {BATCH_OF[head]}"

        report = await verify_run(store, RUN_ID)
        if not report.ok:  # only a torn tail is acceptable, and the next writer cuts it
            assert all("tail" in p.what for p in report.problems), report.problems
        events = await read_events(store, RUN_ID, until_seq=head) if report.ok else []
        if report.ok:
            assert [e.seq for e in events] == list(range(1, head + 1))
            _check_content(events)
            loaded = await load_run(store, RUN_ID)
            assert loaded.torn_tail is None and loaded.state == fold(events)

        lease = await store.acquire_lease(RUN_ID, owner="recovery", ttl_s=60)
        journal, _ = await RunJournal.open(store, lease, snapshot_every=SNAPSHOT_EVERY)
        await journal.append(note(1), note(2))
        after = await verify_run(store, RUN_ID)
        assert after.ok, after.problems
        return head
    finally:
        await store.close()


def _expected_head(case: Case) -> int:
    batch = BATCH_OF[case.kill_at]
    if case.phase in ("mid-transaction", "before-commit"):
        return batch[0] - 1
    return batch[-1]


async def _check_case(case: Case) -> None:
    try:
        if case.phase == "in-snapshot":
            # The snapshot write died and rolled back; the append before it is durable.
            store = SQLiteStore(case.db)
            seqs = [s for s, _ in await store.read_snapshots(RUN_ID)]
            await store.close()
            assert all(seq < case.kill_at for seq in seqs), seqs
        head = await _recover(case.db, case.reported)
        if case.kill_at:
            assert _killed(case.status), f"writer was not killed (status {case.status})"
            assert head == _expected_head(case)
            if case.phase == "after-print":
                assert case.reported == list(range(1, head + 1))
            else:
                assert case.reported == list(range(1, BATCH_OF[case.kill_at][0]))
    except AssertionError as exc:
        raise AssertionError(f"{case.name}: {exc}") from exc


@contextmanager
def _scratch(tmp_path: Path) -> Iterator[Path]:
    """Where the killed writers' stores live: tmpfs when there is one.

    SIGKILL ends a process, not the machine: committed pages are in the OS page cache
    either way, so a RAM-backed folder tests the same thing without paying for fsyncs.
    """
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    folder = Path(tempfile.mkdtemp(prefix="tether-crash-", dir=base))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.timeout(180)
def test_sigkill_at_every_append_position_and_at_random_instants(tmp_path: Path) -> None:
    with _scratch(tmp_path) as scratch:
        # Unkilled runs first; they also measure how long writing the whole journal takes.
        baselines = list(
            _run_all([Case(f"no kill #{i}") for i in range(3)], _mkdir(scratch / "baseline"))
        )
        for baseline in baselines:
            assert baseline.status == 0 and baseline.reported == list(range(1, TOTAL + 1))
            asyncio.run(_check_case(baseline))
        full_s = sorted(b.elapsed_s for b in baselines)[1]

        rng = random.Random(SEED)
        cases = _planned()
        cases += [
            Case(f"random#{i}", delay_s=round(rng.uniform(0.0, 0.9 * full_s), 4)) for i in range(20)
        ]

        async def recover_as_they_die() -> None:
            # Recovery (this process) overlaps with the kills (the zygotes' children).
            for case in _run_all(cases, _mkdir(scratch / "cases")):
                await _check_case(case)
                case.db.unlink()

        asyncio.run(recover_as_they_die())
    random_killed = sum(_killed(c.status) for c in cases if c.delay_s >= 0)
    print(f"{random_killed}/20 random kills landed before the writer finished")
    assert random_killed >= 5, f"only {random_killed} random kills landed before the end"


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("kill_on_line", [1, 2, 57, 133, 199])
def test_a_fresh_writer_process_killed_on_reading_line_n(tmp_path: Path, kill_on_line: int) -> None:
    db = tmp_path / "t.db"
    # Paced, and holding on when done, so a parent slowed by a loaded machine still kills
    # a live writer, mostly mid-run, rather than one that already finished and exited.
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), "--pace", "0.002", "--hold"],
        stdout=subprocess.PIPE,
        stdin=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    reported: list[int] = []
    for line in proc.stdout:
        reported.append(int(line))
        if len(reported) == kill_on_line:
            proc.send_signal(signal.SIGKILL)
            break
    rest, _ = proc.communicate(timeout=30)
    reported += [int(x) for x in rest.split()]
    assert proc.returncode == -signal.SIGKILL
    head = asyncio.run(_recover(db, reported))
    assert head >= kill_on_line


def test_a_fresh_writer_process_that_kills_itself_before_a_commit(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    done = subprocess.run(
        [sys.executable, str(WRITER), str(db), "--kill-at", "77", "--phase", "before-commit"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    reported = [int(x) for x in done.stdout.split()]
    assert reported == list(range(1, BATCH_OF[77][0]))
    assert asyncio.run(_recover(db, reported)) == BATCH_OF[77][0] - 1
