"""Byte damage to a copy of a run's SQLite store, and the check that Tether detects it.

The copy is damaged through SQLite (so the file stays a valid database and the damage is
in the stored event or snapshot bytes themselves, where a flipped disk bit lands after
SQLite's own checks pass), then opened as a store: `verify_run` must report it and, for
damage to events, loading the run must be refused rather than resumed on it.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ..errors import CorruptionError
from ..journal import SQLiteStore, load_run, read_events, sqlite_functions, verify_run
from ..state import fold

__all__ = ["Damage", "copy_store", "damage_copy", "delete_committed", "undetected"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Damage:
    kind: str
    """`event`, `snapshot` or `missing_event` (see `_plan.DAMAGE_KINDS`)."""
    seq: int
    what: str


def copy_store(db: Path, folder: Path) -> Path:
    """Copy the database and every file beside it that belongs to it (`-wal`, `-shm`, the
    sync log): a closed or killed store's whole state."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in db.parent.glob(f"{db.name}*"):
        if source.is_file():
            shutil.copyfile(source, folder / source.name)
    return folder / db.name


def _flip(blob: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(blob))
    return blob[:at] + bytes([blob[at] ^ (1 << rng.randrange(8))]) + blob[at + 1 :]


def damage_copy(db: Path, run_id: str, kind: str, rng: random.Random) -> Damage | None:
    """Damage one thing of `kind` in the copy at `db`; None when there is nothing of that
    kind to damage (a run too short to have a snapshot or a middle)."""
    con = sqlite3.connect(db)
    sqlite_functions(con)  # the `events` view reads bodies through it
    try:
        if kind == "snapshot":
            rows = con.execute(
                "SELECT seq, data FROM snapshots WHERE run_id=? ORDER BY seq", (run_id,)
            ).fetchall()
            if not rows:
                return None
            seq, blob = rows[rng.randrange(len(rows))]
            con.execute("UPDATE snapshots SET data=? WHERE run_id=? AND seq=?",
                        (_flip(bytes(blob), rng), run_id, seq))  # fmt: skip
            con.commit()
            return Damage(kind=kind, seq=seq, what=f"one bit of the snapshot at seq {seq} flipped")
        (head,) = con.execute("SELECT head_seq FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if head < 3:
            return None
        seq = rng.randint(2, head - 1)
        if kind == "missing_event":
            con.execute("DELETE FROM events WHERE run_id=? AND seq=?", (run_id, seq))
            con.commit()
            return Damage(kind=kind, seq=seq, what=f"committed event {seq} deleted")
        (blob,) = con.execute(
            "SELECT data FROM events WHERE run_id=? AND seq=?", (run_id, seq)
        ).fetchone()
        con.execute("UPDATE events SET data=? WHERE run_id=? AND seq=?",
                    (_flip(bytes(blob), rng), run_id, seq))  # fmt: skip
        con.commit()
        return Damage(kind=kind, seq=seq, what=f"one bit of event {seq} flipped")
    finally:
        con.close()


def delete_committed(db: Path, run_id: str, rng: random.Random) -> Damage | None:
    """Delete a committed event from the middle of the *live* store's journal: what a
    store that broke its durability promise would leave (a plan to test the harness)."""
    return damage_copy(db, run_id, "missing_event", rng)


async def undetected(db: Path, run_id: str, damage: Damage) -> str | None:
    """None when Tether detected the damage; otherwise what it missed."""
    store = SQLiteStore(db)
    try:
        report = await verify_run(store, run_id)
        if damage.kind == "snapshot":
            if not any(p.kind == "snapshot" and p.seq == damage.seq for p in report.problems):
                return f"doctor did not report the damaged snapshot at seq {damage.seq}"
            loaded = await load_run(store, run_id)
            if loaded.state != fold(await read_events(store, run_id)):
                return "the run loaded from a damaged snapshot"
            return None
        if not any(p.seq is not None and damage.seq <= p.seq <= damage.seq + 1
                   for p in report.problems):  # fmt: skip
            return f"doctor did not report the damage at seq {damage.seq}: {report.problems}"
        # A load reads the newest snapshot and the events after it (bounded work), so
        # damage older than that snapshot is doctor's to find; newer damage must be refused.
        newest = max((seq for seq, _ in await store.read_snapshots(run_id)), default=0)
        try:
            await load_run(store, run_id)
        except CorruptionError:
            return None
        if damage.seq <= newest:
            return None
        return f"the run loaded although {damage.what}"
    finally:
        await store.close()
