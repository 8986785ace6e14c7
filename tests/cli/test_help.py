"""The help screens: every paragraph wraps to the terminal, not to the source's lines."""

from __future__ import annotations

from typing import Any

import typer
from typer.testing import CliRunner

from tether.cli import app

runner = CliRunner()


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found: list[tuple[tuple[str, ...], Any]] = []
    for name, command in group.commands.items():
        found.append(((*path, name), command))
        if hasattr(command, "commands"):  # a group (typer's own click)
            found.extend(_commands(command, (*path, name)))
    return found


def test_no_help_paragraph_keeps_the_source_line_breaks() -> None:
    """Typer prints a docstring's line breaks after its first paragraph as they are, so the
    terminal's wrapping would cut each source line in two."""
    root = typer.main.get_command(app)
    commands = _commands(root)
    assert len(commands) > 20
    for path, command in commands:
        for paragraph in (command.help or "").split("\n\n"):
            assert "\n" not in paragraph.strip(), f"tether {' '.join(path)}: {paragraph!r}"
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)


def test_the_help_screen_lists_the_run_commands_first_in_their_order() -> None:
    """Commands are listed in the order their modules register them: `tether.cli` imports
    the modules of a run's life (start, inspect, repair, decide) first, in this order."""
    root: Any = typer.main.get_command(app)
    names = list(root.commands)
    assert names[:9] == [
        "demo", "run", "resume", "ls", "doctor", "fork", "approvals", "approve", "reject"
    ]  # fmt: skip
    assert names.index("reject") < names.index("show")
