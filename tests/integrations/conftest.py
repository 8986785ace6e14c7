"""Fixtures for the integration tests: real MCP servers from PyPI, the optional extras."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI


def need(*modules: str) -> None:
    """Skip the test or module unless every module is importable; in CI, fail instead."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if not missing:
        return
    reason = f"needs {missing}: pip install -e '.[dev]'"
    if IN_CI:
        pytest.fail(f"CI requires this test to run, but it {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A repository with one commit and one new file staged for the next."""
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q")
    git("config", "user.email", "test@example.invalid")
    git("config", "user.name", "test")
    (repo / "README").write_text("hello\n")
    git("add", "README")
    git("commit", "-q", "-m", "initial")
    (repo / "notes.txt").write_text("a note\n")
    return repo


def commits(repo: Path) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(repo), "log", "--format=%s"], check=True, capture_output=True, text=True
    )
    return out.stdout.split("\n")[:-1]


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the test agents' tools append to (see agents_under_test.py)."""
    path = tmp_path / "effects.txt"
    path.touch()
    monkeypatch.setenv("TETHER_TEST_EFFECTS", str(path))
    return path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def tether_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed `tether` command, as a user runs it."""
    tether = Path(sys.executable).with_name("tether")
    return subprocess.run([str(tether), *args], capture_output=True, text=True, timeout=60)
