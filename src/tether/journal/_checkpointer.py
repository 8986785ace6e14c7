"""WAL checkpoints on a background thread, so a step's commit does not pay for them.

SQLite's automatic checkpoint runs inside the commit that crosses its threshold: every
thousand pages or so one commit also copies the WAL into the database file and syncs
it, which was about a third of what a durable step cost. Here the store's connection
never checkpoints by itself; every few commits it wakes a thread that runs a PASSIVE
checkpoint on a connection of its own (sqlite3 releases the GIL while SQLite works, so
the copy runs beside the event loop, not in it).

A PASSIVE checkpoint never blocks the writer, so under a steady stream of commits it
rarely catches the WAL's very end (frames keep arriving while it copies), and SQLite
only rewinds a WAL that was copied to the end: the WAL would grow for ever. So when the
thread finds the WAL long, or the thread falls behind (or died), the writer runs one
checkpoint itself between two transactions: it copies only the frames the thread has not
copied yet, and the next write starts the WAL over.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

WAKE_EVERY_COMMITS = 128
"""Commits between two background checkpoints (a step commits twice, 4 to 5 pages each).
A checkpoint copies each page once however often it changed (the newest version), and
each wake costs the writer a few GIL hand-offs, so not every commit; but a WAL that is
checkpointed rarely only grows (see INLINE_AFTER_FRAMES)."""

INLINE_AFTER_FRAMES = 1024
"""A WAL found this long (8 MB of 8 KB pages) has not been rewound: the writer finishes it,
and the next commit starts the WAL over. Writing over a short WAL's pages costs the kernel
less than extending a long one (no new blocks, no fresh page cache pages): measured on the
loop bench's 1,000 steps (2 vCPUs, in-process paired rounds, CPU inside the store calls),
every 128 commits and 1,024 frames beat every 512 and 8,192 by 0.05 to 0.15 ms a step,
and beat 64/512 and 256/2,048 too."""

INLINE_AFTER_COMMITS = 1024
"""Commits with no background checkpoint done: the thread is stalled, the writer takes over."""

IDLE_EXIT_S = 10.0
"""The thread ends after this long with nothing to do; the next commit starts another."""


class BackgroundCheckpointer:
    """Checkpoints one SQLite file's WAL off the writer's thread."""

    def __init__(self, path: Path, *, synchronous: str, busy_timeout_s: float) -> None:
        self._path = path
        self._synchronous = synchronous
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._commits = 0
        self._done_at = 0  # the commit count the last finished checkpoint covered
        self._wal_frames = 0  # the WAL's length when the thread last checkpointed it
        self.inline_runs = 0

    def committed(self, db: sqlite3.Connection) -> None:
        """Call after each commit on the writer's connection, outside any transaction."""
        self._commits += 1
        if self._wal_frames > INLINE_AFTER_FRAMES or (
            self._commits - self._done_at > INLINE_AFTER_COMMITS
        ):
            self._inline(db)
        elif self._commits % WAKE_EVERY_COMMITS == 0:
            self._kick()

    def _inline(self, db: sqlite3.Connection) -> None:
        self.inline_runs += 1
        self._wal_frames = 0
        self._done_at = self._commits
        with contextlib.suppress(sqlite3.Error):  # busy: another process is checkpointing
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _kick(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._wake.set()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._serve, name=f"tether-checkpoint:{self._path.name}", daemon=True
                )
                self._thread.start()

    def _serve(self) -> None:
        try:
            db = sqlite3.connect(
                self._path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self._busy_timeout_s,
            )
        except sqlite3.Error:
            return  # the writer's own fallback keeps the WAL bounded
        try:
            db.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            while True:
                self._wake.wait(IDLE_EXIT_S)
                with self._lock:  # a commit's kick and an idle exit cannot cross
                    if self._closed or not self._wake.is_set():
                        if self._thread is threading.current_thread():
                            self._thread = None
                        return
                    self._wake.clear()
                covers = self._commits
                try:
                    _, log, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error:
                    continue  # busy with another checkpoint, or the file went away
                if copied >= 0:  # -1: not in WAL mode
                    self._wal_frames = log
                    self._done_at = covers
        finally:
            db.close()

    def close(self) -> None:
        """Stop the thread; the store's own close then checkpoints what is left."""
        with self._lock:
            self._closed = True
            self._wake.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._busy_timeout_s)
