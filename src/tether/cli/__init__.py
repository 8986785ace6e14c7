"""The `tether` command line."""

import gc
import inspect
import re
import sys

import typer

# isort: off
# The help screen lists commands in the order they register: these first, in this order.
from . import _demo, _runs, _doctor, _approvals, _show  # noqa: F401

# isort: on
from . import (
    _audit,  # noqa: F401  (registers `tether why`, `audit`, `export`)
    _budget,  # noqa: F401  (registers `tether budget`)
    _chaos,  # noqa: F401  (registers `tether chaos`)
    _pins,  # noqa: F401  (registers `tether pin`, `unpin`)
    _replay,  # noqa: F401  (registers `tether replay`)
    _serve,  # noqa: F401  (registers `tether serve`)
    _tokens,  # noqa: F401  (registers `tether token`)
    _workers,  # noqa: F401  (registers `tether worker`, `submit`)
)
from ._app import app

__all__ = ["app", "main"]


def _unwrapped(doc: str) -> str:
    """A docstring's paragraphs each on one line, for the help screen to wrap.

    Typer keeps the docstring's own line breaks after the first paragraph, so the terminal's
    wrapping cut every source line in two.
    """
    return "\n\n".join(re.sub(r"\s*\n\s*", " ", p) for p in inspect.cleandoc(doc).split("\n\n"))


def _unwrap_help(group: typer.Typer) -> None:
    for command in group.registered_commands:
        doc = command.help or inspect.getdoc(command.callback)
        if doc:
            command.help = _unwrapped(doc)
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _unwrap_help(sub.typer_instance)


_unwrap_help(app)


def _undecodable_argument(argv: list[str]) -> int | None:
    """The position of the first argument that is not valid UTF-8, if any.

    Python hands bytes it cannot decode to the program as lone surrogates, which no store
    can encode: such a task or id failed deep inside with a traceback."""
    for index, arg in enumerate(argv, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return index
    return None


def main() -> None:
    bad = _undecodable_argument(sys.argv[1:])
    if bad is not None:
        print(
            f"error: argument {bad} is not valid UTF-8 text; check the terminal's encoding",
            file=sys.stderr,
        )
        raise SystemExit(2)
    # What the imports built lives as long as the process: out of the collector's way,
    # no full collection walks it again, nor the interpreter's exit (about 0.15 s of CPU
    # less per command; a worker process spends that on some 50 steps).
    gc.freeze()
    app()
