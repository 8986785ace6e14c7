"""A worker process for test_fencing.py: fights another process for one run's lease.

`python fence_worker.py DB RUN_ID NAME ATTEMPTS`. Prints `ready`, waits for a line on
stdin, then makes ATTEMPTS append attempts. Leases have a TTL of 0, so the other worker
can take the run over at any instant; a worker that finds itself fenced out takes the
lease back and reloads the journal. Reports, one line each, flushed:

- `ok EPOCH SEQ CHECKSUM` for every event an append it made returned;
- `lost EPOCH` when an append was refused with LeaseLost;
- `conflict EPOCH` when an append was refused with AppendConflict.
"""

from __future__ import annotations

import asyncio
import sys

from tether.errors import AppendConflict, LeaseHeld, LeaseLost
from tether.events import EventDraft
from tether.journal import RunJournal, SQLiteStore


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(db: str, run_id: str, name: str, attempts: int) -> None:
    store = SQLiteStore(db)
    say("ready")
    sys.stdin.readline()
    journal: RunJournal | None = None
    for attempt in range(attempts):
        if journal is None:
            try:
                lease = await store.acquire_lease(run_id, owner=name, ttl_s=0.0)
            except LeaseHeld:  # clocks of two processes can tie; try again
                continue
            try:
                journal, _ = await RunJournal.open(store, lease, snapshot_every=10)
            except LeaseLost:  # taken over while we loaded
                journal = None
                continue
        epoch = journal.lease.epoch
        drafts = [
            EventDraft(type="note", payload={"writer": name, "attempt": attempt, "i": i})
            for i in range(1 + attempt % 2)
        ]
        try:
            events = await journal.append(*drafts)
        except LeaseLost:
            say(f"lost {epoch}")
            journal = None
            continue
        except AppendConflict:
            say(f"conflict {epoch}")
            journal = None
            continue
        for event in events:
            say(f"ok {epoch} {event.seq} {event.checksum}")
        await asyncio.sleep(0)
    await store.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
