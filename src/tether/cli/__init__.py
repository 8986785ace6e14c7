"""The `tether` command line."""

from . import (
    _audit,  # noqa: F401  (registers `tether show`, `why`, `audit`, `export`)
    _budget,  # noqa: F401  (registers `tether budget`)
    _workers,  # noqa: F401  (registers `tether worker`, `submit`)
)
from ._app import app

__all__ = ["app", "main"]


def main() -> None:
    app()
