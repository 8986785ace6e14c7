"""Number options: a non-finite value (nan, inf) is a one-line usage error, never a
traceback or a limit that silently stops limiting."""

from __future__ import annotations

import math

import typer
from rich.console import Console

__all__ = ["finite", "money"]

_err = Console(stderr=True, highlight=False, soft_wrap=True)


def finite(ctx: typer.Context, param: typer.CallbackParam, value: float | None) -> float | None:
    """Option callback: refuse nan and ±inf with exit code 2."""
    if value is not None and not math.isfinite(value):
        name = max(param.opts, key=len) if param.opts else param.name
        _err.print(f"[red]error:[/red] {name} must be a finite number, not {value}")
        raise typer.Exit(2)
    return value


def money(value: float) -> str:
    """USD for people: four decimals, and huge amounts in scientific notation rather
    than hundreds of digits."""
    if abs(value) >= 1e12:
        return f"${value:.4g}"
    return f"${value:,.4f}" if abs(value) >= 1e6 else f"${value:.4f}"
