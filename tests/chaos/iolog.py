"""Build the I/O recorder (`iolog.c`) and rebuild files as a power cut leaves them."""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("iolog.c")


def build(folder: Path) -> Path | None:
    """Compile the recorder; None when there is no C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    out = folder / "iolog.so"
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(SOURCE), "-ldl", "-lpthread"],
        check=True,
        capture_output=True,
    )
    return out


@dataclass(frozen=True, slots=True)
class Op:
    op: str
    """O open, W write, T truncate, S sync, U unlink."""
    path: str
    offset: int
    data: bytes


def read_log(path: Path) -> list[Op]:
    data = path.read_bytes()
    ops: list[Op] = []
    i = 0
    while i < len(data):
        op = chr(data[i])
        (plen,) = struct.unpack_from("<H", data, i + 1)
        name = data[i + 3 : i + 3 + plen].decode()
        offset, length = struct.unpack_from("<qI", data, i + 3 + plen)
        start = i + 3 + plen + 12
        ops.append(Op(op, name, offset, data[start : start + length]))
        i = start + length
    return ops


def _apply(content: bytearray | None, op: Op) -> bytearray | None:
    if op.op == "U":
        return None
    content = bytearray() if content is None else content
    if op.op == "W":
        end = op.offset + len(op.data)
        if len(content) < end:
            content.extend(b"\0" * (end - len(content)))
        content[op.offset : end] = op.data
    elif op.op == "T":
        del content[op.offset :]
        if len(content) < op.offset:
            content.extend(b"\0" * (op.offset - len(content)))
    return content


def power_cut(
    ops: list[Op], cut: int, *, durable: str, rng: random.Random, keep_unsynced: float
) -> dict[str, bytes | None]:
    """Each file as a power cut after `ops[:cut]` leaves it.

    Files whose path contains `durable` (the outside world) keep everything written.
    The others keep what their last sync made durable, plus each later write with
    probability `keep_unsynced` (the page cache may have written it back, or not).
    """
    synced: dict[str, bytearray | None] = {}
    live: dict[str, bytearray | None] = {}
    pending: dict[str, list[Op]] = {}
    for op in ops[:cut]:
        if op.op == "O":
            live.setdefault(op.path, None)
            synced.setdefault(op.path, None)
            pending.setdefault(op.path, [])
            if live[op.path] is None:
                live[op.path] = bytearray()
            continue
        live[op.path] = _apply(live.get(op.path), op)
        if op.op == "S":
            current = live[op.path]
            synced[op.path] = None if current is None else bytearray(current)
            pending[op.path] = []
        elif op.op == "U":
            synced[op.path] = None  # SQLite unlinks only files it no longer needs
            pending[op.path] = []
        else:
            pending.setdefault(op.path, []).append(op)
    out: dict[str, bytes | None] = {}
    for path, content in live.items():
        if durable in path:
            out[path] = None if content is None else bytes(content)
            continue
        base = synced.get(path)
        state = None if base is None else bytearray(base)
        for op in pending.get(path, []):
            if rng.random() < keep_unsynced:
                state = _apply(state, op)
        out[path] = None if state is None else bytes(state)
    return out


def materialise(files: dict[str, bytes | None], source: Path, target: Path) -> None:
    """Write the rebuilt files into `target`, under their names in `source`."""
    target.mkdir(parents=True, exist_ok=True)
    for path, content in files.items():
        name = Path(path).relative_to(source.resolve())
        if str(name) in ("", ".") or content is None or str(name).endswith("-shm"):
            continue  # shared-memory index: rebuilt by SQLite after a reboot
        (target / name).write_bytes(content)
