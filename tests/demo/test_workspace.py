"""The demo's effects: the report is replaced durably, and effects are keyed by the call's
idempotency key, whatever that key is made of."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tether.demo._workspace import Workspace


def test_the_report_is_synced_renamed_and_its_folder_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace(tmp_path / "run_1")
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        calls.append("fsync folder" if stat.S_ISDIR(mode) else "fsync file")
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        calls.append(f"rename {Path(src).name} -> {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = ws.write_report("# One\n" + "x" * 200_000)
    assert calls == ["fsync file", "rename report.md.tmp -> report.md", "fsync folder"]
    assert path.read_text() == "# One\n" + "x" * 200_000
    ws.write_report("# Two\n")
    assert path.read_text() == "# Two\n"
    assert sorted(p.name for p in ws.folder.iterdir()) == ["report.md"]


def test_effects_are_applied_once_per_key_of_any_shape(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    key = "run_1/c3/0"  # not run_id:seq: the workspace never parses the key
    first, new = ws.apply(key, "note", {"fact": "a"})
    again, new_again = ws.apply(key, "note", {"fact": "b"})
    assert new and not new_again and again == first == {"key": key, "tool": "note", "fact": "a"}
    assert [e["fact"] for e in ws.of("note")] == ["a"]
