"""The demo's side effects: an append-only effects log keyed by idempotency key.

Each effect and its key are one line written with one `write()`, so a crash leaves
either the whole effect or none of it; a re-run with the same key finds the line and
changes nothing. The report is derived from the log and replaced atomically and durably.
Each run has its own workspace (the CLI's `OUT/RUN_ID`), so runs never share effects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["Workspace"]


class Workspace:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log = folder / ".tether-demo" / "effects.jsonl"

    def effects(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text("utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash never counted as applied
        return out

    def applied(self, key: str) -> dict[str, Any] | None:
        for effect in self.effects():
            if effect["key"] == key:
                return effect
        return None

    def apply(self, key: str, tool: str, data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Record an effect once per key; returns (the effect, whether it is new)."""
        existing = self.applied(key)
        if existing is not None:
            return existing, False
        effect = {"key": key, "tool": tool, **data}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(effect, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return effect, True

    def of(self, tool: str) -> list[dict[str, Any]]:
        return [e for e in self.effects() if e["tool"] == tool]

    def write_report(self, text: str) -> Path:
        """Replace report.md durably: a reader (or a power cut) sees the old report or the
        new one, never a torn one. The rename is the publication; the folder's fsync
        makes it survive a power loss."""
        path = self.folder / "report.md"
        tmp = path.with_suffix(".md.tmp")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            data = memoryview(text.encode("utf-8"))
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        folder = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        return path
