"""Rewrite one named section of bench/RESULTS.md, leaving every other section alone.

Each benchmark owns the text between its markers::

    <!-- bench:NAME -->
    ...
    <!-- /bench:NAME -->

`write_section(NAME, body)` replaces that text (or appends the section if it is not there
yet, or creates the file with a title and an intro if the file is missing). Writers are
serialised with an exclusive lock on the file's folder and the file is replaced
atomically, so benchmarks run at the same time never lose each other's sections.

Also usable from a shell: `python bench/_results.py NAME [PATH] < body.md`.
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["RESULTS_PATH", "read_section", "write_section"]

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"

TITLE = "# Benchmark results"
INTRO = (
    "Figures measured by the scripts in `bench/`, one section per benchmark. Each section "
    "is rewritten in place by its own script (between its `<!-- bench:NAME -->` markers) "
    "and states the machine, the date and the command that reproduces it; the text "
    "outside the markers is kept as is. Numbers from different machines or days are not "
    "directly comparable: rerun the command to compare."
)

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def _markers(name: str) -> tuple[str, str]:
    if not _NAME.fullmatch(name):
        raise ValueError(f"bad section name {name!r}: use lowercase letters, digits, _ . -")
    return f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"


def _find(lines: list[str], marker: str) -> list[int]:
    return [i for i, line in enumerate(lines) if line.strip() == marker]


def _locate(lines: list[str], name: str, path: Path) -> tuple[int, int] | None:
    """(start line, end line) of the section's markers, None if absent; refuses damage."""
    start_marker, end_marker = _markers(name)
    starts, ends = _find(lines, start_marker), _find(lines, end_marker)
    if not starts and not ends:
        return None
    if len(starts) != 1 or len(ends) != 1 or ends[0] < starts[0]:
        raise ValueError(
            f"{path}: the markers of section {name!r} are damaged "
            f"({len(starts)} start, {len(ends)} end); fix the file by hand"
        )
    return starts[0], ends[0]


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def read_section(name: str, path: str | Path = RESULTS_PATH) -> str | None:
    """The body of section `name` (without its markers), or None if it is not there."""
    path = Path(path)
    if not path.exists():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    where = _locate(lines, name, path)
    if where is None:
        return None
    return "\n".join(lines[where[0] + 1 : where[1]]).strip("\n")


def write_section(name: str, body: str, path: str | Path = RESULTS_PATH) -> Path:
    """Replace (or add) section `name` of the results file with `body`; returns the path."""
    path = Path(path)
    start_marker, end_marker = _markers(name)
    body = body.strip("\n")
    body_lines = body.splitlines()
    if _find(body_lines, start_marker) or _find(body_lines, end_marker):
        raise ValueError(f"the body of section {name!r} must not contain its own markers")
    block = [start_marker, *body_lines, end_marker]
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent):
        if path.exists():
            lines = path.read_text(encoding="utf-8").splitlines()
        else:
            lines = [TITLE, "", INTRO]
        where = _locate(lines, name, path)
        if where is None:
            while lines and not lines[-1].strip():
                lines.pop()
            lines = [*lines, "", *block]
        else:
            lines = lines[: where[0]] + block + lines[where[1] + 1 :]
        text = "\n".join(lines) + "\n"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            if path.exists():
                os.chmod(tmp, path.stat().st_mode & 0o777)
            else:
                os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return path


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print("usage: python bench/_results.py NAME [PATH] < body.md", file=sys.stderr)
        return 2
    target = write_section(argv[0], sys.stdin.read(), *(argv[1:]))
    print(f"wrote section {argv[0]!r} of {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
