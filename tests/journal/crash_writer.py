"""A real writer process for test_crash.py: appends a 200-event journal to an SQLite store.

Run as `python crash_writer.py DB [--kill-at N --phase PHASE]`, or `--serve` to fork one
writer per request (see `serve`). It prints each seq on its
own line (flushed) after the append that wrote it returned. With `--kill-at N` it sends
itself SIGKILL during the append that writes seq N, at PHASE:

- `mid-transaction`: the run row is updated, the event rows not yet inserted;
- `before-commit`:   everything written, COMMIT not yet issued;
- `after-commit`:    committed, but the append has not returned (nothing printed);
- `after-print`:     committed and reported;
- `in-snapshot`:     inside the snapshot write that follows the append (if one is due).

The journal's content is a pure function of seq (`expected(seq)`), appended in batches of
1-3 events (`batches()`), so the parent can check every byte it finds against the plan.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from tether.events import EventDraft, Usage
from tether.journal import RunJournal, SQLiteStore, create_run

RUN_ID = "run_crash0001"
TOTAL = 200
SNAPSHOT_EVERY = 16
PHASES = ("mid-transaction", "before-commit", "after-commit", "after-print", "in-snapshot")
_SIZES = (1, 1, 2, 1, 3, 1, 2)


def expected(seq: int) -> EventDraft:
    """The event at `seq` (2..TOTAL): cycles of seven events, two tool calls each."""
    n, step = divmod(seq - 2, 7)
    cid = f"cycle-{n}"
    if step == 0:
        return EventDraft(type="cycle.started", payload={"n": n}, correlation_id=cid)
    if step == 1:
        return EventDraft(type="model.requested", payload={"n": n}, correlation_id=cid)
    if step == 2:
        return EventDraft(
            type="model.completed",
            payload={"n": n, "text": "x" * (n % 50)},
            correlation_id=cid,
            usage=Usage(input_tokens=100 + n, output_tokens=10, cost_usd=0.001),
        )
    if step in (3, 4):
        return EventDraft(
            type="tool.requested",
            payload={"call_id": f"{n}-{step}", "name": "search"},
            correlation_id=cid,
        )
    return EventDraft(
        type="tool.completed",
        payload={"call_id": f"{n}-{step - 2}", "output": "y" * (n % 30)},
        correlation_id=cid,
    )


def batches() -> list[list[int]]:
    """Seqs 2..TOTAL grouped into the appends that write them."""
    out: list[list[int]] = []
    seq, i = 2, 0
    while seq <= TOTAL:
        size = min(_SIZES[i % len(_SIZES)], TOTAL - seq + 1)
        out.append(list(range(seq, seq + size)))
        seq += size
        i += 1
    return out


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class _KillSwitch:
    """Wraps the store's sqlite3 connection to die at one statement of one append."""

    def __init__(self, db: Any, phase: str) -> None:
        self._db = db
        self._phase = phase
        self.armed = False
        self._snapshot_written = False

    def execute(self, sql: str, *args: Any) -> Any:
        if self.armed:
            if self._phase == "mid-transaction" and sql.startswith("INSERT INTO event_rows"):
                _die()
            if sql == "COMMIT" and self._phase == "before-commit":
                _die()
            if sql == "COMMIT" and self._phase == "in-snapshot" and self._snapshot_written:
                _die()
            if sql.startswith("INSERT OR REPLACE INTO snapshots"):
                self._snapshot_written = True
        result = self._db.execute(sql, *args)
        if self.armed and sql == "COMMIT" and self._phase == "after-commit":
            _die()
        return result

    def executemany(self, sql: str, *args: Any) -> Any:
        if self.armed and self._phase == "mid-transaction":
            _die()
        return self._db.executemany(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def _report(*seqs: int) -> None:
    for seq in seqs:
        sys.stdout.write(f"{seq}\n")
    sys.stdout.flush()


async def main(
    path: str, kill_at: int | None, phase: str, *, pace_s: float = 0.0, hold: bool = False
) -> None:
    store = SQLiteStore(path)
    switch = _KillSwitch(store._db, phase)
    store._db = switch  # type: ignore[assignment]

    switch.armed = kill_at == 1
    await create_run(store, agent="crash-writer", task="write 200 events", run_id=RUN_ID)
    _report(1)
    if switch.armed and phase == "after-print":
        _die()
    lease = await store.acquire_lease(RUN_ID, owner=f"writer-{os.getpid()}", ttl_s=3600)
    journal, _ = await RunJournal.open(store, lease, snapshot_every=SNAPSHOT_EVERY)
    for batch in batches():
        switch.armed = kill_at in batch
        await journal.append(*(expected(seq) for seq in batch))
        _report(*batch)
        if switch.armed and phase == "after-print":
            _die()
        if pace_s:
            await asyncio.sleep(pace_s)  # so a parent killing on line N catches it mid-run
    if hold:
        await asyncio.to_thread(sys.stdin.read)  # done: wait to be killed (or for EOF)
    await store.close()


def serve() -> None:
    """Fork one writer per request line, so 200+ kills do not pay 200+ interpreter starts.

    Each stdin line is `DB OUT KILL_AT PHASE DELAY_S` (KILL_AT 0: never; DELAY_S < 0: no
    timed kill). The forked writer's stdout goes to OUT. With DELAY_S >= 0 this process
    SIGKILLs the writer after that delay (a kill at a random instant). Answers one line
    per request: `DONE <waitpid status> <seconds the writer lived>`.
    """
    import time

    for line in sys.stdin:
        db, out, kill_at, phase, delay = line.split()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the writer
            code = 0
            try:
                fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
                asyncio.run(main(db, int(kill_at) or None, phase))
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        if float(delay) >= 0:
            time.sleep(float(delay))
            os.kill(pid, signal.SIGKILL)  # unreaped, so the pid cannot have been reused
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(f"DONE {status} {time.monotonic() - started:.6f}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("db", nargs="?")
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--phase", choices=PHASES, default="before-commit")
    parser.add_argument("--serve", action="store_true", help="fork writers on request")
    parser.add_argument("--pace", type=float, default=0.0, help="seconds between appends")
    parser.add_argument("--hold", action="store_true", help="when done, wait for stdin EOF")
    args = parser.parse_args()
    if args.serve:
        serve()
    else:
        asyncio.run(main(args.db, args.kill_at, args.phase, pace_s=args.pace, hold=args.hold))
