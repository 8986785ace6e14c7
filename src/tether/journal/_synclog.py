"""The sync log: a second, fsynced record of every commit a side effect waited for.

Why a file outside the database: SQLite recovers a WAL that was damaged or cut short
by falling back to the last commit it can read, silently. A commit that was synced
before a non-idempotent call ran (DESIGN invariant 1) can vanish that way, and the
journal alone then looks like a run that never made the call: a resume would make it
again. The log names each such commit (run, seq, checksum) in a file of its own, synced
before the effect runs. When the newest records name events the database no longer
has, the database lost committed data: those runs are refused, never re-run.

Records are lines with their own CRC; a torn last line (a crash mid-write, before its
sync, so before any effect) is skipped. Reading goes newest-first and stops after a run
of records that are all present, so its cost does not grow with the store.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError

_BLOCK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Synced:
    """One commit an effect waited for: the last event it wrote."""

    run_id: str
    seq: int
    checksum: str


def _line(record: Synced) -> bytes:
    body = f"{record.run_id} {record.seq} {record.checksum}"
    return f"{body} {zlib.crc32(body.encode()):08x}\n".encode()


def _parse(line: bytes) -> Synced | None:
    try:
        body, _, crc = line.decode().rpartition(" ")
        if not body or int(crc, 16) != zlib.crc32(body.encode()):
            return None
        run_id, seq, checksum = body.split(" ")
        return Synced(run_id=run_id, seq=int(seq), checksum=checksum)
    except ValueError:  # also UnicodeDecodeError
        return None


class SyncLog:
    """Append-only, fsynced lines beside a store file (`<store>-synclog`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def record(self, run_id: str, seq: int, checksum: str) -> None:
        """Append one record and make it durable before returning."""
        try:
            if self._fd is None:
                created = not self.path.exists()
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
                if created:
                    _sync_dir(self.path.parent)
            os.write(self._fd, _line(Synced(run_id, seq, checksum)))
            os.fsync(self._fd)
        except OSError as exc:
            raise StoreError(
                f"could not record a synced commit in {self.path} ({exc.strerror or exc}): "
                "the call it guards was not made"
            ) from None

    def newest_first(self) -> Iterator[Synced]:
        """Readable records from the end backwards; damaged lines are skipped."""
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot read the sync log {self.path}: {exc}") from None
        with f:
            end = f.seek(0, os.SEEK_END)
            rest = b""
            while end > 0:
                start = max(0, end - _BLOCK)
                f.seek(start)
                chunk = f.read(end - start) + rest
                end = start
                lines = chunk.split(b"\n")
                # The first piece may be the end of a line that starts in an earlier block.
                rest = lines.pop(0) if start > 0 else b""
                for line in reversed(lines):
                    if line:
                        found = _parse(line)
                        if found is not None:
                            yield found

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _sync_dir(folder: Path) -> None:
    """A new file's name is durable only once its folder is synced."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


SETTLE = 64
"""Records found present in a row before the scan stops. Commits of several processes
can reach the log in a slightly different order than the database: a lost commit can
sit behind a few present ones, never behind this many."""


def lost_records(log: SyncLog, present: Callable[[Synced], bool]) -> list[Synced]:
    """Records, newest first, of synced commits the database no longer holds."""
    lost: list[Synced] = []
    streak = 0
    for record in log.newest_first():
        if present(record):
            streak += 1
            if streak >= SETTLE:
                break
        else:
            streak = 0
            lost.append(record)
    return lost
